//! A function (or the ceiling) started for a scenario, serving plain HTTP
//! on a port of its own, with the bench's settings.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use loadtest::function_process::FunctionProcess;

use crate::{Bench, CONCURRENCY, JWT_SECRET};

impl Bench<'_> {
    /// `name` from the bench's binaries with the bench's settings and
    /// `vars`, its access log in the work directory, once it answers.
    pub fn serve(&self, name: &str, vars: &[(&str, &str)]) -> anyhow::Result<FunctionProcess> {
        let mut all = common_vars();
        all.push(("JWT_SECRET", JWT_SECRET.into()));
        all.push(("DB_POOL_SIZE", db_pool_size()));
        all.extend(vars.iter().map(|(k, v)| (*k, v.to_string())));
        // The access log goes to a file, as a platform's log pipe takes it.
        let served = FunctionProcess::start(
            self.bin_dir.join(name),
            all,
            self.work.join(format!("{name}.log")),
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while http_status(served.port, "/").is_none() {
            anyhow::ensure!(Instant::now() < deadline, "{name} did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(served)
    }
}

/// What every program the bench starts gets.
pub fn common_vars() -> Vec<(&'static str, String)> {
    vec![
        ("LISTEN_HOST", "127.0.0.1".into()),
        ("ALLOWED_HOSTS", "127.0.0.1,localhost".into()),
        ("RUST_LOG", "info".into()),
    ]
}

/// The functions' `DB_POOL_SIZE`: the load's concurrency unless
/// `BENCH_DB_POOL_SIZE` says otherwise (to compare pool sizes).
pub(crate) fn db_pool_size() -> String {
    std::env::var("BENCH_DB_POOL_SIZE").unwrap_or_else(|_| CONCURRENCY.to_string())
}

/// A GET over a fresh connection: the status, or None if nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
