//! The health function: `GET /health` (liveness) and `GET /health/ready`
//! (pings every configured dependency at once, each within
//! [`PING_TIMEOUT`]; 503 naming the ones that failed).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use shared::db::Database;
use shared::redis_client::RedisClient;
use shared::{Config, StartError};

/// How long one dependency may take to answer a readiness ping.
pub const PING_TIMEOUT: Duration = Duration::from_millis(800);

/// The dependencies `/health/ready` pings.
#[derive(Clone)]
pub struct Dependencies {
    pub database: Database,
    pub redis: Option<Arc<RedisClient>>,
}

/// The health routes, pinging the given dependencies.
pub fn routes(dependencies: Dependencies) -> Router {
    Router::new()
        .route("/health", get(live))
        .route("/health/ready", get(ready))
        .with_state(dependencies)
}

/// The function's routes for its configuration: the database, and Redis
/// when `REDIS_URL` names one.
pub async fn build(config: &Config) -> Result<Router, StartError> {
    let redis = match &config.redis_url {
        Some(url) => Some(Arc::new(RedisClient::new(
            url.expose(),
            config.redis_ca_cert.as_ref(),
        )?)),
        None => None,
    };
    Ok(routes(Dependencies {
        database: Database::open(config).await?,
        redis,
    }))
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// A ping's outcome: `None` when the dependency answered.
async fn ping(check: impl Future<Output = Result<(), String>>) -> Option<String> {
    match tokio::time::timeout(PING_TIMEOUT, check).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(format!("no answer within {} ms", PING_TIMEOUT.as_millis())),
    }
}

async fn ready(State(deps): State<Dependencies>) -> Response {
    let database = ping(async { deps.database.ping().await.map_err(|e| e.to_string()) });
    let redis = async {
        match &deps.redis {
            Some(redis) => Some(ping(redis.ping()).await),
            None => None,
        }
    };
    let (database, redis) = tokio::join!(database, redis);
    let results = [("database", Some(database)), ("redis", redis)];
    let mut checks = serde_json::Map::new();
    let mut failed = Vec::new();
    for (name, outcome) in results {
        let Some(error) = outcome else { continue };
        let state = match error {
            None => "ok",
            Some(e) => {
                tracing::warn!(dependency = name, error = %e, "readiness check failed");
                failed.push(name);
                "unavailable"
            }
        };
        checks.insert(name.to_owned(), json!(state));
    }
    if failed.is_empty() {
        return Json(json!({ "status": "ready", "checks": checks })).into_response();
    }
    let detail = format!("Not ready: {} unavailable", failed.join(", "));
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "detail": detail, "checks": checks })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
