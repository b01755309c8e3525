//! The health function: `GET /health` (liveness) and `GET /health/ready`
//! (pings every configured dependency, 503 naming the ones that failed).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use shared::db::{Database, DatabaseProbe};
use shared::probe::{Probe, check_all};
use shared::replay::{RedisProbe, RedisStore};
use shared::{Config, StartError};

/// How long one dependency may take to answer a readiness ping.
pub const PING_TIMEOUT: Duration = Duration::from_millis(800);

#[derive(Clone)]
struct Probes(Arc<[Arc<dyn Probe>]>);

/// The health routes, pinging the given dependencies.
pub fn routes(probes: Vec<Arc<dyn Probe>>) -> Router {
    Router::new()
        .route("/health", get(live))
        .route("/health/ready", get(ready))
        .with_state(Probes(probes.into()))
}

/// The function's routes for its configuration: a probe for each external
/// dependency that the configuration names.
pub async fn build(config: &Config) -> Result<Router, StartError> {
    let db = Database::open(config).await?;
    let mut probes: Vec<Arc<dyn Probe>> = vec![Arc::new(DatabaseProbe(db))];
    if let Some(url) = &config.redis_url {
        probes.push(Arc::new(RedisProbe(Arc::new(RedisStore::new(
            url.expose(),
        )?))));
    }
    Ok(routes(probes))
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

async fn ready(State(Probes(probes)): State<Probes>) -> Response {
    let results = check_all(&probes, PING_TIMEOUT).await;
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| r.name)
        .collect();
    let checks: serde_json::Map<String, serde_json::Value> = results
        .iter()
        .map(|r| {
            let state = match &r.error {
                None => json!("ok"),
                Some(e) => {
                    shared::tracing::warn!(dependency = r.name, error = %e, "readiness check failed");
                    json!("unavailable")
                }
            };
            (r.name.to_owned(), state)
        })
        .collect();
    if failed.is_empty() {
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "checks": checks })),
        )
            .into_response()
    } else {
        let detail = format!("Not ready: {} unavailable", failed.join(", "));
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "detail": detail, "checks": checks })),
        )
            .into_response();
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        response
    }
}
