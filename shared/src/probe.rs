//! Readiness probes: each external dependency says whether it answers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub type PingFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// A dependency that `/health/ready` pings.
pub trait Probe: Send + Sync {
    /// What the 503 names: "redis", "database".
    fn name(&self) -> &'static str;
    fn ping(&self) -> PingFuture<'_>;
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub name: &'static str,
    pub error: Option<String>,
}

/// Pings every probe at once, each bounded by `timeout`.
pub async fn check_all(probes: &[Arc<dyn Probe>], timeout: Duration) -> Vec<ProbeResult> {
    let pings = probes.iter().map(|probe| async move {
        let error = match tokio::time::timeout(timeout, probe.ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("no answer within {} ms", timeout.as_millis())),
        };
        ProbeResult {
            name: probe.name(),
            error,
        }
    });
    futures_util::future::join_all(pings).await
}
