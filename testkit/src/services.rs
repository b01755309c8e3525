//! Real services for the tests. A test that only reads and writes gets its own
//! database on the machine's PostgreSQL (created here, dropped after); a test
//! that kills or hangs a dependency starts its own throwaway server on a free
//! port and stops it by its PID, never touching the shared ones.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shared::db::Database;

use crate::free_port;

/// The machine's PostgreSQL, where each test creates (and drops) its own database.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for one test only.
pub struct TestDb {
    pub url: String,
    drop_as: Option<(String, String)>,
    file: Option<PathBuf>,
}

impl TestDb {
    /// A fresh, migrated PostgreSQL database on the machine's server.
    pub async fn postgres() -> Self {
        let db = Self::postgres_unmigrated().await;
        let pool = Database::open_postgres(&db.url, 2).expect("test url");
        pool.migrate().await.expect("migrate the test database");
        if let Database::Postgres(p) = pool {
            p.close().await;
        }
        db
    }

    /// A fresh, empty PostgreSQL database on the machine's server.
    pub async fn postgres_unmigrated() -> Self {
        let admin_url = admin_database_url();
        let name = format!("tms_test_{}", uuid_simple());
        let admin = Database::open_postgres(&admin_url, 1).expect("admin url");
        let Database::Postgres(pool) = &admin else {
            unreachable!()
        };
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(pool)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot create a test database on {admin_url} (is PostgreSQL running? scripts/services.sh starts it): {e}")
            });
        pool.close().await;
        let url = replace_db_name(&admin_url, &name);
        Self {
            url,
            drop_as: Some((admin_url, name)),
            file: None,
        }
    }

    /// A fresh embedded database file (migrated when the app opens it).
    pub fn sqlite() -> Self {
        let path = std::env::temp_dir().join(format!("tms-test-{}.sqlite3", uuid_simple()));
        Self {
            url: format!("sqlite://{}", path.display()),
            drop_as: None,
            file: Some(path),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(path) = &self.file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
        if let Some((admin_url, name)) = self.drop_as.take() {
            // Drop runs inside a test's runtime: do the async work on a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    if let Ok(Database::Postgres(pool)) = Database::open_postgres(&admin_url, 1) {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&pool)
                        .await;
                        pool.close().await;
                    }
                });
            })
            .join();
        }
    }
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

pub fn uuid_simple() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Sends a signal to a process, or to a process group when `pid` is negative.
pub fn signal(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), "--".into(), pid.to_string()])
        .status();
}

fn find_binary(name: &str, dirs: &[PathBuf]) -> PathBuf {
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.exists() {
            return candidate;
        }
    }
    if let Ok(out) = Command::new("which").arg(name).output()
        && out.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    panic!(
        "{name} not found: scripts/services.sh installs it (apt-get install postgresql redis-server)"
    )
}

fn postgres_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.reverse();
    dirs
}

/// The uid/gid to run PostgreSQL as: it refuses root.
fn postgres_user() -> Option<(u32, u32)> {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .ok()?
        .stdout
        .starts_with(b"0");
    if !is_root {
        return None;
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// A throwaway PostgreSQL server of the test's own, on a free port, stopped or
/// hung by its PID.
pub struct PgServer {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PgServer {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A server that also speaks TLS, with a self-signed certificate, as
    /// managed databases do (`sslmode=require`).
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        let dirs = postgres_bin_dirs();
        let initdb = find_binary("initdb", &dirs);
        let bin = find_binary("postgres", &dirs);
        let dir = std::env::temp_dir().join(format!("tms-pg-{}", uuid_simple()));
        std::fs::create_dir_all(&dir).expect("pg dir");
        let user = postgres_user();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown pg dir");
        }
        let mut init = Command::new(initdb);
        init.args(["-D"])
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_user(&mut init, user);
        let out = init.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if tls {
            let data = dir.join("data");
            let out = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-keyout",
                ])
                .arg(data.join("server.key"))
                .arg("-out")
                .arg(data.join("server.crt"))
                .output()
                .expect("openssl is needed for the TLS test");
            assert!(
                out.status.success(),
                "openssl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for file in ["server.key", "server.crt"] {
                let path = data.join(file);
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .expect("chmod");
                if let Some((uid, gid)) = user {
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown key");
                }
            }
            let conf = data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
            text.push_str(
                "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            );
            std::fs::write(&conf, text).expect("write postgresql.conf");
        }
        let mut server = Self {
            port: free_port(),
            dir,
            bin,
            user,
            child: None,
        };
        server.resume_serving();
        server
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The postmaster's PID.
    pub fn pid(&self) -> i32 {
        running_pid(&self.child)
    }

    /// Starts (again) on the same port and data.
    pub fn resume_serving(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_user(&mut cmd, self.user);
        self.child = Some(cmd.spawn().expect("start postgres"));
        wait_for_tcp(self.port, Duration::from_secs(20));
        // Accepting TCP is not yet accepting logins: wait for a real answer.
        let url = self.url();
        for _ in 0..100 {
            let ok = std::thread::spawn({
                let url = url.clone();
                move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        match Database::open_postgres(&url, 1) {
                            Ok(db) => db.ping().await.is_ok(),
                            Err(_) => false,
                        }
                    })
                }
            })
            .join()
            .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("throwaway PostgreSQL did not come up");
    }

    /// Fast shutdown (SIGINT), waiting until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, "INT");
            let _ = child.wait();
        }
    }

    /// Freezes every process of the server: the postmaster and its children
    /// (each backend is in a session of its own, so a process group won't do).
    pub fn hang(&self) {
        signal(self.pid(), "STOP");
        let _ = Command::new("pkill")
            .args(["-STOP", "-P", &self.pid().to_string()])
            .status();
    }

    pub fn unhang(&self) {
        let _ = Command::new("pkill")
            .args(["-CONT", "-P", &self.pid().to_string()])
            .status();
        signal(self.pid(), "CONT");
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.unhang();
        }
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, "QUIT");
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The PID of a server that runs. Only while it runs: signalling "0" would
/// reach the test's own process group.
fn running_pid(child: &Option<Child>) -> i32 {
    child
        .as_ref()
        .map(|c| c.id() as i32)
        .expect("the server is running")
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        std::os::unix::process::CommandExt::uid(cmd, uid);
        std::os::unix::process::CommandExt::gid(cmd, gid);
    }
}

/// A throwaway Redis server of the test's own, on a free port.
pub struct RedisServer {
    pub port: u16,
    bin: PathBuf,
    child: Option<Child>,
    /// Where a durable server keeps its append-only file.
    durable_dir: Option<PathBuf>,
}

impl RedisServer {
    /// A server that keeps nothing: a restart starts empty.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A server that writes every change to its append-only file before
    /// answering, so that a restart, even after SIGKILL, keeps every key (as a
    /// managed Redis with persistence does).
    pub fn start_durable() -> Self {
        let dir = std::env::temp_dir().join(format!("tms-redis-{}", uuid_simple()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        Self::start_with(Some(dir))
    }

    fn start_with(durable_dir: Option<PathBuf>) -> Self {
        let bin = find_binary("redis-server", &[]);
        let mut server = Self {
            port: free_port(),
            bin,
            child: None,
            durable_dir,
        };
        server.resume_serving();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> i32 {
        running_pid(&self.child)
    }

    /// Starts (again) on the same port: empty, or with every key a durable
    /// server had.
    pub fn resume_serving(&mut self) {
        let persistence = match &self.durable_dir {
            Some(_) => ["--appendonly", "yes", "--appendfsync", "always"],
            None => ["--appendonly", "no", "--appendfsync", "no"],
        };
        let child = Command::new(&self.bin)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(persistence)
            .arg("--dir")
            .arg(self.durable_dir.clone().unwrap_or_else(std::env::temp_dir))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        wait_for_tcp(self.port, Duration::from_secs(10));
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, "KILL");
            let _ = child.wait();
        }
    }

    pub fn hang(&self) {
        signal(self.pid(), "STOP");
    }

    pub fn unhang(&self) {
        signal(self.pid(), "CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.durable_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn wait_for_tcp(port: u16, limit: Duration) {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on 127.0.0.1:{port} after {limit:?}");
}

/// A local AWS Secrets Manager (moto's server, from PyPI), on a free port.
pub struct SecretsManager {
    pub endpoint: String,
    child: Child,
}

impl SecretsManager {
    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed for the Secrets Manager tests (scripts/services.sh installs moto)");
        wait_for_tcp(port, Duration::from_secs(30));
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    /// The variables that point aws-config at this server.
    pub fn aws_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ]
    }

    /// Creates a secret; returns its ARN.
    pub async fn create(&self, name: &str, value: &str) -> String {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .load()
            .await;
        aws_sdk_secretsmanager::Client::new(&config)
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .expect("create secret")
            .arn()
            .expect("arn")
            .to_owned()
    }
}

impl Drop for SecretsManager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes the keys a test wrote under its own prefix on a shared Redis
/// (they would expire with their tokens anyway).
pub fn clear_redis_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut conn)
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query(&mut conn);
    }
}
