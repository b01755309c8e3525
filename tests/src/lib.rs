//! Test support: spawn the real application on a random port (zero2prod's
//! `spawn_app`), run the function binaries as processes, and drive them through
//! a Lambda runtime API emulator.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use shared::Config;
use shared::config::Section;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

pub mod lambda;

pub use testkit::{free_port, services, tokens};

pub const TEST_JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123456789";
pub const ALLOWED_ORIGIN: &str = "http://localhost:3000";
pub const OTHER_ALLOWED_ORIGIN: &str = "https://tms-chat.example.com";
pub const DISALLOWED_ORIGIN: &str = "https://evil.example";

/// What FC sets in every instance: the function then trusts `x-fc-request-id`.
pub const FC_INSTANCE_VARS: &[(&str, &str)] = &[
    ("FC_FUNCTION_NAME", "tms-chat-test"),
    ("FC_REGION", "cn-hangzhou"),
];

/// The variables every test starts from; `extra` adds to or overrides them.
pub fn test_vars(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = [
        ("JWT_SECRET", TEST_JWT_SECRET),
        // Nothing on disk, nothing shared between tests.
        ("DATABASE_URL", "sqlite::memory:"),
        ("ALLOWED_ORIGINS", "http://localhost:3000,https://tms-chat.example.com"),
        (
            "ALLOWED_HOSTS",
            "localhost,127.0.0.1,tms-chat.example.com,*.execute-api.us-east-1.amazonaws.com,*.lambda-url.us-east-1.on.aws",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    vars
}

pub fn test_config(extra: &[(&str, &str)]) -> Config {
    Config::from_vars(&test_vars(extra)).expect("test configuration is valid")
}

/// The configuration and the sections `S` (a function's settings) of the
/// test variables with `extra`.
pub fn test_sections<S: Section>(extra: &[(&str, &str)]) -> (Config, S) {
    Config::with_sections(&test_vars(extra)).expect("test configuration is valid")
}

/// The application served in-process on a random port.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }
}

/// A client that never follows redirects: a redirect is a bug here.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Serves `routes` inside the shared layers, as a function would.
pub async fn spawn_app(routes: Router, config: &Config) -> TestApp {
    let app = shared::app(routes, config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(shared::runtime::serve_http(listener, app));
    TestApp {
        address: format!("http://{addr}"),
        client: client(),
    }
}

/// `TCP_NODELAY` of each of this process's TCP sockets connected to a port
/// on 127.0.0.1 (nextest runs each test in a process of its own).
pub fn nodelay_of_sockets_to(port: u16) -> Vec<bool> {
    use std::os::fd::{BorrowedFd, RawFd};
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let Some(fd) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: the fd was open when listed; a duplicate is inspected
        // (or dup fails, when it has been closed since).
        let Ok(owned) = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned() else {
            continue;
        };
        let stream = std::net::TcpStream::from(owned);
        if let Ok(peer) = stream.peer_addr()
            && peer.port() == port
            && peer.ip().is_loopback()
        {
            found.push(stream.nodelay().expect("TCP_NODELAY"));
        }
    }
    found
}

/// A workspace binary, built by `cargo build --workspace --bins` (`make test` does).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test binary>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, as `make test` does)",
        path.display()
    );
    path
}

/// A child process that is killed when dropped. Its stderr is read as it
/// comes (a full pipe would block the process's logging, and with it the
/// process), and handed over when it stops.
pub struct Process {
    pub child: Child,
    stdout: tokio::task::JoinHandle<String>,
    stderr: tokio::task::JoinHandle<String>,
}

/// Reads a child's pipe to its end, in the background.
fn drain(
    pipe: Option<impl tokio::io::AsyncRead + Unpin + Send + 'static>,
) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes).await;
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

impl Process {
    /// Starts a workspace binary with exactly these variables (plus `PATH`).
    pub fn start(name: &str, vars: &HashMap<String, String>) -> Self {
        Self::start_on(name, vars, None)
    }

    /// [`Process::start`], serving plain HTTP on `port` when one is given.
    pub fn start_on(name: &str, vars: &HashMap<String, String>, port: Option<u16>) -> Self {
        let mut command = Command::from(testkit::program_command(&workspace_bin(name), vars, port));
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn function binary");
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// Stops the process (SIGTERM, then SIGKILL) and returns what it wrote to stderr.
    pub async fn stop(mut self) -> String {
        if let Some(pid) = self.child.id() {
            testkit::services::signal(pid as i32, "TERM");
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        self.stderr.await.unwrap_or_default()
    }

    /// Waits (10 s at most) for the process to exit by itself; returns its
    /// code and stderr.
    pub async fn exit(self) -> (Option<i32>, String) {
        self.exit_within(Duration::from_secs(10)).await
    }

    /// [`Process::exit`], waiting up to `limit`.
    pub async fn exit_within(mut self, limit: Duration) -> (Option<i32>, String) {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("process exits")
            .expect("wait");
        (status.code(), self.stderr.await.unwrap_or_default())
    }

    /// Waits for the process to exit by itself; returns its code and stdout.
    pub async fn exit_with_stdout(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().await.expect("wait");
        (status.code(), self.stdout.await.unwrap_or_default())
    }
}

/// Waits until something accepts connections on `addr`.
pub async fn wait_for_port(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on {addr} after 5 s");
}

/// Starts a function binary serving plain HTTP on a free port, as on FC.
pub async fn start_function(name: &str, extra: &[(&str, &str)]) -> (Process, String) {
    let mut vars: Vec<(&str, &str)> = FC_INSTANCE_VARS.to_vec();
    vars.extend_from_slice(extra);
    start_server(name, &vars).await
}

/// Starts a function binary serving plain HTTP on a free port, not on FC
/// (as locally).
pub async fn start_server(name: &str, extra: &[(&str, &str)]) -> (Process, String) {
    let port = free_port();
    let process = Process::start_on(name, &test_vars(extra), Some(port));
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port))).await;
    (process, format!("http://127.0.0.1:{port}"))
}

/// The one value `sql` answers, read on a session of the pool itself (its
/// TLS, its backend, its settings), as the code under test would.
pub async fn on_pool_session<T>(pool: &shared::db::PgConnectionPool, sql: &str) -> T
where
    T: for<'a> shared::db::PgFromSql<'a>,
{
    pool.run(async |session| Ok(session.query_one(sql, &[]).await?.try_get(0)?))
        .await
        .unwrap()
}

/// A session of the test's own (sqlx) to the database `pool` connects to,
/// for its setup, its checks and the locks it holds: never one of the
/// pool's, which serve the code under test.
pub async fn sql_session(pool: &shared::db::PgConnectionPool) -> sqlx::PgConnection {
    use sqlx::ConnectOptions;
    pool.target().sqlx_options().connect().await.unwrap()
}

/// Runs a test's own SQL script (no parameters) on either database, on a
/// session of its own; returns the rows it wrote.
pub async fn run_script(db: &shared::db::Database, script: &str) -> u64 {
    let script = sqlx::AssertSqlSafe(script.to_owned());
    shared::by_backend!(db,
        postgres(pool) => sqlx::raw_sql(script)
            .execute(&mut sql_session(pool).await)
            .await
            .unwrap()
            .rows_affected(),
        sqlite(pool) => sqlx::raw_sql(script).execute(pool).await.unwrap().rows_affected(),
    )
}

/// The JSON lines of a process's stderr (its log), anything else skipped.
pub fn json_lines(stderr: &str) -> impl Iterator<Item = serde_json::Value> + '_ {
    stderr.lines().filter_map(|l| serde_json::from_str(l).ok())
}
