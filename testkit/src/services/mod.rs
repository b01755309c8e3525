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

mod ca;
mod pgbouncer;
mod postgres;
mod redis;
mod secrets_manager;

pub use ca::{ServerCert, TestCa};
pub use pgbouncer::PgBouncer;
pub use postgres::PgServer;
pub use redis::{RedisCluster, RedisServer, clear_redis_prefix, write_other_data};
pub use secrets_manager::{RoleCredentials, SecretsManager};

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
    /// The embedded database's directory ([`TestDb::sqlite`]).
    sqlite_dir: Option<PathBuf>,
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
            sqlite_dir: None,
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

    /// A fresh embedded database file (migrated when the app opens it), in
    /// a directory of its own with the files SQLite and the migrations put
    /// beside it.
    pub fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!("tms-test-{}", uuid_simple()));
        std::fs::create_dir(&dir).expect("a directory for the test's SQLite file");
        Self {
            url: format!("sqlite://{}", dir.join("tms.sqlite3").display()),
            drop_as: None,
            sqlite_dir: Some(dir),
            pooler: None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // The pooler first: it holds server sessions to the database.
        drop(self.pooler.take());
        if let Some(dir) = &self.sqlite_dir {
            let _ = std::fs::remove_dir_all(dir);
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

/// Whether `pid` (or, negative, any process of that group) still exists.
pub fn is_alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks; a process gone is ESRCH.
    unsafe { libc::kill(pid, 0) == 0 }
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
