//! Real services for the tests. A test that only reads and writes gets its own
//! database on the machine's PostgreSQL (created here, dropped after); a test
//! that kills or hangs a dependency starts its own throwaway server on a free
//! port and stops it by its PID, never touching the shared ones.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shared::db::Database;
use sqlx::Connection as _;

use crate::free_port;

/// The machine's PostgreSQL, where each test creates (and drops) its own database.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// One connection for the test kit's own work (creating, migrating and
/// dropping test databases): not the functions' pool, whose 800 ms bound is
/// for serving requests, not for a machine busy running every test at once.
pub async fn connect(url: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
    tokio::time::timeout(Duration::from_secs(30), sqlx::PgConnection::connect(url))
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

/// A database that exists for one test only.
pub struct TestDb {
    /// How the code under test reaches it (through the pooler, if any).
    pub url: String,
    drop_as: Option<(String, String)>,
    file: Option<PathBuf>,
    /// The transaction pooler in front of it ([`TestDb::pooled`]).
    pooler: Option<PgBouncer>,
}

impl TestDb {
    /// A fresh, migrated PostgreSQL database on the machine's server.
    pub async fn postgres() -> Self {
        let db = Self::postgres_unmigrated().await;
        let mut connection = connect(&db.url)
            .await
            .expect("connect to the test database");
        shared::db::POSTGRES_MIGRATIONS
            .run(&mut connection)
            .await
            .expect("migrate the test database");
        let _ = connection.close().await;
        db
    }

    /// A fresh, empty PostgreSQL database on the machine's server.
    pub async fn postgres_unmigrated() -> Self {
        let admin_url = admin_database_url();
        let name = format!("tms_test_{}", uuid_simple());
        let created = async {
            let mut admin = connect(&admin_url).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await?;
            admin.close().await
        };
        created.await.unwrap_or_else(|e| {
            panic!("cannot create a test database on {admin_url} (is PostgreSQL running? scripts/services.sh starts it): {e}")
        });
        let url = replace_db_name(&admin_url, &name);
        Self {
            url,
            drop_as: Some((admin_url, name)),
            file: None,
            pooler: None,
        }
    }

    /// [`TestDb::postgres`] behind a PgBouncer of its own in transaction
    /// mode (two server sessions), as a fleet reaches its database.
    pub async fn pooled() -> Self {
        let mut db = Self::postgres().await;
        let pooler = PgBouncer::in_front_of(&db.url, 2);
        db.url = pooler.url_for(&db.url);
        db.pooler = Some(pooler);
        db
    }

    /// The functions' settings for this database: its URL and, behind a
    /// pooler, `DATABASE_POOLER=transaction`.
    pub fn vars(&self) -> Vec<(&'static str, &str)> {
        let mut vars = vec![("DATABASE_URL", self.url.as_str())];
        if self.pooler.is_some() {
            vars.push(("DATABASE_POOLER", "transaction"));
        }
        vars
    }

    /// The pooler in front of this database, if any.
    pub fn pooler(&self) -> Option<&PgBouncer> {
        self.pooler.as_ref()
    }

    /// A fresh embedded database file (migrated when the app opens it).
    pub fn sqlite() -> Self {
        let path = std::env::temp_dir().join(format!("tms-test-{}.sqlite3", uuid_simple()));
        Self {
            url: format!("sqlite://{}", path.display()),
            drop_as: None,
            file: Some(path),
            pooler: None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // The pooler first: it holds server sessions to the database.
        drop(self.pooler.take());
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
                    if let Ok(mut admin) = connect(&admin_url).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut admin)
                        .await;
                        let _ = admin.close().await;
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

/// Sends a signal (`"STOP"`, `"CONT"`, `"TERM"`, `"KILL"`, `"INT"`,
/// `"QUIT"`) to a process, or to a process group when `pid` is negative.
pub fn signal(pid: i32, sig: &str) {
    let number = match sig {
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "TERM" => libc::SIGTERM,
        "KILL" => libc::SIGKILL,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        other => panic!("signal {other} is not one the tests send"),
    };
    // SAFETY: kill(2) takes plain integers; a process already gone is ESRCH.
    unsafe { libc::kill(pid, number) };
}

fn find_binary(name: &str, dirs: &[PathBuf]) -> PathBuf {
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.exists() {
            return candidate;
        }
    }
    if let Ok(path) = which::which(name) {
        return path;
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
    // SAFETY: geteuid cannot fail; getpwnam returns NULL or a pointer to a
    // static entry, read at once (the tests call this before any threads
    // of theirs could call getpwnam too).
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let entry = libc::getpwnam(c"postgres".as_ptr());
        if entry.is_null() {
            return None;
        }
        Some(((*entry).pw_uid, (*entry).pw_gid))
    }
}

/// A certificate authority of the test's own, as RDS, ApsaraDB or a managed
/// Redis have theirs: a CA certificate (what a client is given to trust) and
/// the server certificates it signs (rcgen, ECDSA P-256), PEM files in a temp dir.
pub struct TestCa {
    dir: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A server certificate and its key, PEM files.
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let dir = std::env::temp_dir().join(format!("tms-ca-{}", uuid_simple()));
        std::fs::create_dir_all(&dir).expect("ca dir");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "TMS test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        std::fs::write(dir.join("ca.crt"), cert.pem()).expect("write CA certificate");
        Self {
            dir,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// The CA certificate (PEM): what a client trusts.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A server certificate naming `hosts` (DNS names or IP addresses) in
    /// its subject alternative names, signed by this CA. It may also serve
    /// as a client certificate: Redis cluster nodes present theirs to peers.
    pub fn issue(&self, hosts: &[&str]) -> ServerCert {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
        let names: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("host names");
        params.distinguished_name.push(DnType::CommonName, hosts[0]);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        let name = uuid_simple();
        let issued = ServerCert {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("write certificate");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write key");
        issued
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A throwaway PostgreSQL server of the test's own, on a free port, stopped or
/// hung by its PID.
pub struct PgServer {
    pub port: u16,
    /// `-c name=value` settings it runs with, beyond the test kit's own.
    settings: Vec<String>,
    dir: PathBuf,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    child: Option<Child>,
    ca: Option<TestCa>,
}

impl PgServer {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A server with settings of its own (`name=value`, as `postgres -c`),
    /// such as a small `max_connections`.
    pub fn start_with_settings(settings: &[&str]) -> Self {
        let mut server = Self::start();
        server.stop();
        server.settings = settings.iter().map(|s| (*s).to_owned()).collect();
        server.resume_serving();
        server
    }

    /// A server that also speaks TLS, as managed databases do, with a
    /// certificate for `localhost` and `127.0.0.1` signed by a CA of its own
    /// ([`PgServer::ca_cert_path`]).
    pub fn start_tls() -> Self {
        Self::start_tls_for(&["localhost", "127.0.0.1"])
    }

    /// [`PgServer::start_tls`] with a certificate that names only `hosts`.
    pub fn start_tls_for(hosts: &[&str]) -> Self {
        Self::start_with(Some(hosts))
    }

    /// The CA that signed the server's certificate (TLS servers only).
    pub fn ca_cert_path(&self) -> PathBuf {
        self.ca.as_ref().expect("a TLS server").cert_path()
    }

    fn start_with(tls_hosts: Option<&[&str]>) -> Self {
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
        let ca = tls_hosts.map(|_| TestCa::new());
        if let (Some(ca), Some(hosts)) = (&ca, tls_hosts) {
            let data = dir.join("data");
            let issued = ca.issue(hosts);
            std::fs::copy(&issued.cert, data.join("server.crt")).expect("copy cert");
            std::fs::copy(&issued.key, data.join("server.key")).expect("copy key");
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
            settings: Vec::new(),
            dir,
            bin,
            user,
            child: None,
            ca,
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
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
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

/// A throwaway PgBouncer (Debian's package, 1.18) in transaction mode, on
/// a free port, in front of a PostgreSQL on `127.0.0.1:<upstream_port>`:
/// every database of that server, as the same name, through at most
/// `server_connections` server sessions per database. Transaction mode
/// gives consecutive transactions of one client to whichever server
/// session is free: what breaks named prepared statements and session
/// settings, as RDS Proxy's multiplexing and ApsaraDB's proxy do.
pub struct PgBouncer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PgBouncer {
    /// In front of the server that `url` names. It refuses startup
    /// parameters as a stock PgBouncer does (`statement_timeout` among
    /// them), except sqlx's `extra_float_digits`, which the tests' own
    /// sessions send (the functions use tokio-postgres, which does not).
    pub fn in_front_of(url: &str, server_connections: u32) -> Self {
        let target = shared::db::PgTarget::parse(url, shared::db::PgEndpoint::default())
            .expect("a PostgreSQL URL");
        Self::start(&target.host, target.port, &target.user, server_connections)
    }

    pub fn start(host: &str, upstream_port: u16, user: &str, server_connections: u32) -> Self {
        let bin = find_binary("pgbouncer", &[PathBuf::from("/usr/sbin")]);
        let dir = std::env::temp_dir().join(format!("tms-pgbouncer-{}", uuid_simple()));
        std::fs::create_dir_all(&dir).expect("pgbouncer dir");
        let port = free_port();
        let config = format!(
            "[databases]\n\
             * = host={host} port={upstream_port} user={user}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = any\n\
             pool_mode = transaction\n\
             default_pool_size = {server_connections}\n\
             max_client_conn = 2000\n\
             server_reset_query =\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {log}\n",
            log = dir.join("pgbouncer.log").display(),
        );
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(&ini, config).expect("write pgbouncer.ini");
        // PgBouncer refuses to run as root: as PostgreSQL's user then.
        let user = postgres_user();
        if let Some((uid, gid)) = user {
            for path in [&dir, &ini] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown pgbouncer");
            }
        }
        let mut cmd = Command::new(bin);
        cmd.arg(&ini).stdout(Stdio::null()).stderr(Stdio::null());
        as_user(&mut cmd, user);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start pgbouncer ({e}): scripts/services.sh installs it (apt-get install pgbouncer)")
        });
        wait_for_tcp(port, Duration::from_secs(20));
        Self {
            port,
            dir,
            child: Some(child),
        }
    }

    /// `url` (a database on the upstream server) reached through the pooler.
    pub fn url_for(&self, url: &str) -> String {
        let name = url.rsplit('/').next().expect("a database name");
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// What PgBouncer wrote to its log (its refusals and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, "INT");
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes one batch of `count` 1 KB keys with an expiry of `ttl_secs`
/// (`other-app:<batch>:<i>`), as another application sharing a Redis
/// would: what fills a Redis up until it evicts.
pub fn write_other_data(
    conn: &mut redis::Connection,
    batch: u64,
    count: usize,
    ttl_secs: u64,
) -> redis::RedisResult<()> {
    let value = "x".repeat(1024);
    let mut pipe = redis::pipe();
    for i in 0..count {
        pipe.cmd("SET")
            .arg(format!("other-app:{batch}:{i}"))
            .arg(&value)
            .arg("EX")
            .arg(ttl_secs)
            .ignore();
    }
    pipe.query(conn)
}

/// A throwaway Redis server of the test's own, on a free port.
pub struct RedisServer {
    pub port: u16,
    bin: PathBuf,
    child: Option<Child>,
    /// What makes it more than a plain server: TLS, a cluster node.
    args: Vec<OsString>,
    /// The CA that signed its certificate, when it speaks TLS only.
    ca_cert: Option<PathBuf>,
    /// That CA, when the server owns it (a cluster's nodes share their cluster's).
    _own_ca: Option<TestCa>,
    /// A cluster node's own directory (its `nodes.conf` survives a restart).
    dir: Option<PathBuf>,
}

impl RedisServer {
    /// A server that keeps nothing: a restart starts empty.
    pub fn start() -> Self {
        Self::start_with(Vec::new(), None, None)
    }

    /// A plain server with more settings, such as a managed Redis's
    /// defaults (`["--maxmemory", "4mb", "--maxmemory-policy", "volatile-lru"]`)
    /// or a replica's (`["--replicaof", "127.0.0.1", "6379"]`).
    pub fn start_with_settings(settings: &[&str]) -> Self {
        Self::start_with(settings.iter().map(Into::into).collect(), None, None)
    }

    /// A command to this one server (`INFO`, `REPLICAOF NO ONE`).
    pub fn command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        self.query(cmd)
    }

    /// A server that speaks TLS only, as managed Redis does, with a
    /// certificate for `localhost` and `127.0.0.1` signed by a CA of its own
    /// ([`RedisServer::ca_cert_path`]); clients need no certificate.
    pub fn start_tls() -> Self {
        let ca = TestCa::new();
        let mut server = Self::start_with(tls_args(&ca), Some(ca.cert_path()), None);
        server._own_ca = Some(ca);
        server
    }

    /// A server that writes every change to its append-only file before
    /// answering, so that a restart, even after SIGKILL, keeps every key (as a
    /// managed Redis with persistence does).
    pub fn start_durable() -> Self {
        let dir = std::env::temp_dir().join(format!("tms-redis-{}", uuid_simple()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        // Later options override the plain server's `--appendonly no`.
        let args = ["--appendonly", "yes", "--appendfsync", "always"]
            .into_iter()
            .map(Into::into)
            .collect();
        Self::start_with(args, None, Some(dir))
    }

    /// A node of a cluster, not yet joined ([`RedisCluster`] joins them),
    /// speaking TLS only (also to its peers) when a CA is given.
    fn start_cluster_node(ca: Option<&TestCa>) -> Self {
        let dir = std::env::temp_dir().join(format!("tms-redis-node-{}", uuid_simple()));
        std::fs::create_dir_all(&dir).expect("node dir");
        // The bus port by default is the port + 10000, which may not exist.
        let bus_port = free_port().to_string();
        let mut args: Vec<OsString> =
            ["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"]
                .into_iter()
                .chain(["--cluster-port", &bus_port])
                .map(Into::into)
                .collect();
        if let Some(ca) = ca {
            args.extend(tls_args(ca));
            args.extend(["--tls-cluster".into(), "yes".into()]);
        }
        Self::start_with(args, ca.map(TestCa::cert_path), Some(dir))
    }

    fn start_with(args: Vec<OsString>, ca_cert: Option<PathBuf>, dir: Option<PathBuf>) -> Self {
        let bin = find_binary("redis-server", &[]);
        let mut server = Self {
            port: free_port(),
            bin,
            child: None,
            args,
            ca_cert,
            _own_ca: None,
            dir,
        };
        server.resume_serving();
        server
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca_cert.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA that signed the server's certificate (TLS servers only).
    pub fn ca_cert_path(&self) -> PathBuf {
        self.ca_cert.clone().expect("a TLS server")
    }

    pub fn pid(&self) -> i32 {
        running_pid(&self.child)
    }

    /// Starts (again) on the same port, empty (it keeps nothing on disk but
    /// a cluster node's membership).
    pub fn resume_serving(&mut self) {
        let port = self.port.to_string();
        let ports = match self.ca_cert {
            Some(_) => vec!["--port", "0", "--tls-port", &port],
            None => vec!["--port", &port],
        };
        let child = Command::new(&self.bin)
            .args(ports)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.clone().unwrap_or_else(std::env::temp_dir))
            .args(&self.args)
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

    /// A command sent to this one server, not to a cluster.
    fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let client = match &self.ca_cert {
            Some(ca) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(ca)?),
                },
            )?,
            None => redis::Client::open(self.url())?,
        };
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        cmd.query(&mut conn)
    }
}

/// Serving TLS only with a certificate from `ca` for this host; no client certificates.
fn tls_args(ca: &TestCa) -> Vec<OsString> {
    let cert = ca.issue(&["localhost", "127.0.0.1"]);
    let mut args: Vec<OsString> = vec!["--tls-cert-file".into(), cert.cert.into()];
    args.extend(["--tls-key-file".into(), cert.key.into()]);
    args.extend(["--tls-ca-cert-file".into(), ca.cert_path().into()]);
    args.extend(["--tls-auth-clients".into(), "no".into()]);
    args
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A throwaway Redis cluster of three masters and no replicas, as a cluster
/// endpoint (ElastiCache Serverless, cluster mode, Tair direct mode) is to
/// its clients. Without replicas a stopped master's slots stay down until it
/// comes back ([`RedisServer::resume_serving`] on the same port).
pub struct RedisCluster {
    pub masters: Vec<RedisServer>,
    ca: Option<TestCa>,
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A cluster that speaks TLS only, to clients and between its nodes, with
    /// certificates signed by a CA of its own ([`RedisCluster::ca_cert_path`]),
    /// as ElastiCache Serverless is.
    pub fn start_tls() -> Self {
        Self::start_with(Some(TestCa::new()))
    }

    fn start_with(ca: Option<TestCa>) -> Self {
        let masters: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_cluster_node(ca.as_ref()))
            .collect();
        // Bounded: a cluster that cannot form would make it wait forever.
        let mut create = Command::new("timeout");
        create.arg("30").arg(find_binary("redis-cli", &[]));
        if let Some(ca) = &ca {
            create.arg("--tls").arg("--cacert").arg(ca.cert_path());
        }
        let out = create
            .arg("--cluster")
            .arg("create")
            .args(masters.iter().map(|m| format!("127.0.0.1:{}", m.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { masters, ca };
        cluster.wait_until_ok();
        cluster
    }

    /// The CA that signed the nodes' certificates (TLS clusters only).
    pub fn ca_cert_path(&self) -> PathBuf {
        self.ca.as_ref().expect("a TLS cluster").cert_path()
    }

    /// The URL a client is given: the cluster scheme and one seed node.
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        format!("{scheme}://127.0.0.1:{}", self.masters[0].port)
    }

    /// Which master serves `key` now (the one that answers it instead of
    /// redirecting).
    pub fn master_of(&self, key: &str) -> usize {
        self.masters
            .iter()
            .position(|m| {
                m.query::<Option<String>>(redis::cmd("GET").arg(key))
                    .is_ok()
            })
            .expect("a master serves the key")
    }

    /// Waits until every running master says `cluster_state:ok` (all slots
    /// served), as after a create or a master's return.
    pub fn wait_until_ok(&self) {
        self.wait_for_state("ok");
    }

    /// Waits until the running masters have seen a stopped one fail
    /// (`cluster_state:fail`: its slots are not served).
    pub fn wait_until_failed(&self) {
        self.wait_for_state("fail");
    }

    fn wait_for_state(&self, state: &str) {
        let wanted = format!("cluster_state:{state}");
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let all = self.masters.iter().filter(|m| m.child.is_some()).all(|m| {
                m.query::<String>(redis::cmd("CLUSTER").arg("INFO"))
                    .is_ok_and(|info| info.contains(&wanted))
            });
            if all {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the Redis cluster did not reach {wanted}");
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

    /// Creates a secret; returns its ARN. A plain call of the service's JSON
    /// protocol (moto does not check signatures), so that the test kit
    /// needs no AWS SDK: only the functions read secrets.
    pub async fn create(&self, name: &str, value: &str) -> String {
        let created = self
            .call(
                &reqwest::Client::new(),
                "CreateSecret",
                serde_json::json!({ "Name": name, "SecretString": value }),
            )
            .await
            .expect("create secret");
        created["ARN"].as_str().expect("arn").to_owned()
    }

    /// One call of the service's JSON protocol, such as `GetSecretValue`.
    pub async fn call(
        &self,
        client: &reqwest::Client,
        action: &str,
        body: serde_json::Value,
    ) -> reqwest::Result<serde_json::Value> {
        client
            .post(&self.endpoint)
            .header("X-Amz-Target", format!("secretsmanager.{action}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body(body.to_string())
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
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
