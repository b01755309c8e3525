//! A function binary serving plain HTTP on a port of its own, as on FC:
//! started by `testkit::program_command` with exactly the variables given,
//! its stderr (the access log) appended to a file, killed when dropped. The
//! bench, chaos and the fleet start their functions this way.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use testkit::free_port;

pub struct FunctionProcess {
    bin: PathBuf,
    pub port: u16,
    vars: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl FunctionProcess {
    /// `bin` started on a free port with `vars` (a later one of the same
    /// name wins), its stderr appended to `log`.
    pub fn start<K: Into<String>, V: Into<String>>(
        bin: PathBuf,
        vars: impl IntoIterator<Item = (K, V)>,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let mut function = Self {
            bin,
            port: free_port(),
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            log,
            child: None,
        };
        function.spawn()?;
        Ok(function)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = testkit::program_command(&self.bin, self.vars.clone(), Some(self.port))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (its make target builds it)",
                    self.bin.display()
                )
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// Started again, cold, on a new address, as a platform's new instance:
    /// the old port's leftovers (TIME_WAIT) are not the function's.
    pub fn restart_on_new_port(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.port = free_port();
        self.spawn()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn bin(&self) -> &std::path::Path {
        &self.bin
    }

    pub fn log(&self) -> &std::path::Path {
        &self.log
    }

    /// How long until it answers HTTP (any answer), within `limit`. Not a
    /// bare TCP connect: a connect to a free port of the ephemeral range can
    /// connect to itself (TCP simultaneous open), which looks like a
    /// listener that is not there.
    pub async fn until_serving(
        &self,
        client: &reqwest::Client,
        limit: Duration,
    ) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if client.get(format!("{}/", self.url())).send().await.is_ok() {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// SIGKILL: no shutdown of any kind, as when the platform reclaims it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
