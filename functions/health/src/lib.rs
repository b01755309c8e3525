//! The health function: `GET /health` (liveness) and `GET /health/ready`
//! (pings every configured dependency at once, each within
//! [`PING_TIMEOUT`]; 503 naming the ones that failed). With Redis, it also
//! reads the replay store's settings (`INFO`): each one that can lose
//! single-use marks is a warning (in the body, a log line and a metric),
//! and one that refuses the claims themselves fails readiness.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use shared::config::RedisSettings;
use shared::db::Database;
use shared::metrics::WarningMetric;
use shared::redis_client::RedisClient;
use shared::redis_settings;
use shared::{Config, StartError};
use utoipa::{OpenApi, ToSchema};

/// How long one dependency may take to answer a readiness ping.
pub const PING_TIMEOUT: Duration = Duration::from_millis(800);

/// The dependencies `/health/ready` pings.
#[derive(Clone)]
pub struct Dependencies {
    pub database: Database,
    pub redis: Option<Arc<RedisClient>>,
    /// Where the replay store's findings go as warning lines and metrics.
    pub reporter: Arc<redis_settings::Reporter>,
}

/// The health routes, pinging the given dependencies.
pub fn routes(dependencies: Dependencies) -> Router {
    // Behind an `Arc`: axum clones a route's state for every request, /health's too.
    Router::new()
        .route("/health", get(live))
        .route("/health/ready", get(ready))
        .with_state(Arc::new(dependencies))
}

/// The routes' OpenAPI description (the shared layers' part comes from
/// [`shared::openapi::SharedLayers`]).
#[derive(OpenApi)]
#[openapi(paths(live, ready))]
pub struct ApiDoc;

/// The function runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    #[schema(example = "ok")]
    status: String,
    version: String,
}

/// Every configured dependency answered: each one is "ok"
/// (`replay_store`: "ok", or "at risk" with its `warnings`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    status: String,
    checks: BTreeMap<String, String>,
    /// Each replay store setting that can lose single-use marks: the
    /// setting, what it does, the fix.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// Not ready: `detail` names the dependencies that failed; `checks` tells
/// each one's state ("ok", "unavailable", and for `replay_store` also
/// "at risk" or "refuses claims").
#[derive(Debug, Serialize, ToSchema)]
pub struct NotReady {
    detail: String,
    checks: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// The function's routes for its configuration: the database, and Redis
/// when `REDIS_URL` names one.
pub async fn build(config: &Config, redis: RedisSettings) -> Result<Router, StartError> {
    let redis = match &redis.url {
        Some(url) => Some(Arc::new(RedisClient::new(
            url.expose(),
            redis.ca_cert.as_ref(),
        )?)),
        None => None,
    };
    let reporter = Arc::new(redis_settings::Reporter::new(WarningMetric::new(config)));
    if let Some(redis) = &redis {
        redis_settings::report_at_start(Arc::clone(redis), Arc::clone(&reporter));
    }
    Ok(routes(Dependencies {
        database: Database::open(&config.database).await?,
        redis,
        reporter,
    }))
}

/// Liveness
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "health",
    responses((status = 200, description = "The function runs", body = Liveness))
)]
async fn live() -> Json<Liveness> {
    Json(Liveness {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// A ping's outcome: `None` when the dependency answered.
async fn ping(check: impl Future<Output = Result<(), String>>) -> Option<String> {
    match tokio::time::timeout(PING_TIMEOUT, check).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(format!("no answer within {} ms", PING_TIMEOUT.as_millis())),
    }
}

/// Readiness: pings the database and Redis
#[utoipa::path(
    get,
    path = "/health/ready",
    operation_id = "ready",
    tag = "health",
    responses(
        (status = 200, description = "Every dependency answered", body = Readiness),
        (status = 503, description = "A dependency did not answer in time", body = NotReady),
    )
)]
async fn ready(State(deps): State<Arc<Dependencies>>) -> Response {
    let database = ping(async { deps.database.ping().await.map_err(|e| e.to_string()) });
    let redis = async {
        match &deps.redis {
            Some(redis) => Some(tokio::join!(ping(redis.ping()), store_findings(redis))),
            None => None,
        }
    };
    let (database, redis) = tokio::join!(database, redis);
    let (redis, findings) = redis.map_or((None, None), |(ping, findings)| (Some(ping), findings));
    let results = [("database", Some(database)), ("redis", redis)];
    let mut checks = BTreeMap::new();
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
        checks.insert(name.to_owned(), state.to_owned());
    }
    let mut warnings = Vec::new();
    if let Some(findings) = findings {
        deps.reporter.report(&findings);
        let state = if findings.iter().any(|f| f.refuses_claims) {
            failed.push("replay_store");
            "refuses claims"
        } else if findings.is_empty() {
            "ok"
        } else {
            "at risk"
        };
        checks.insert("replay_store".to_owned(), state.to_owned());
        warnings = findings.into_iter().map(|f| f.message).collect();
    }
    if failed.is_empty() {
        let status = "ready".to_owned();
        return Json(Readiness {
            status,
            checks,
            warnings,
        })
        .into_response();
    }
    let detail = format!("Not ready: {} unavailable", failed.join(", "));
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(NotReady {
            detail,
            checks,
            warnings,
        }),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The replay store's findings, `None` when its settings could not be read
/// (the ping tells whether Redis answers at all).
async fn store_findings(redis: &RedisClient) -> Option<Vec<redis_settings::Finding>> {
    match tokio::time::timeout(PING_TIMEOUT, redis_settings::read(redis)).await {
        Ok(Ok(settings)) => Some(redis_settings::findings(&settings)),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the replay store's settings could not be read");
            None
        }
        Err(_) => None,
    }
}
