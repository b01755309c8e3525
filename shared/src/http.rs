//! The HTTP layers every function gets, in one place: request id and access
//! log, JSON errors, CORS on every response, the host check, caught panics, the
//! body limit, JSON 404/405 and trailing-slash tolerance.

use std::any::Any;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderName};
use http::{HeaderValue, Method, StatusCode};
use serde_json::json;
use tower::Layer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};

use crate::config::Config;
use crate::error::{ApiError, INTERNAL_DETAIL, InternalCause, detail_response};
use crate::host::{HostCheck, check_host};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Alibaba Function Compute passes its request id in this header.
pub const FC_REQUEST_ID: HeaderName = HeaderName::from_static("x-fc-request-id");
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// A function's routes with every shared layer around them: what the runtime serves.
pub type App = NormalizePath<Router>;

/// The request id of the current request, in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Wraps a function's routes in the shared layers. The layers sit inside the
/// router (`Router::layer`), so they apply to fallbacks too and can see the
/// matched route; trailing slashes are trimmed before routing, without a
/// redirect (a redirect breaks CORS preflights).
pub fn app(routes: Router, config: &Config) -> App {
    let host_check = HostCheck {
        hosts: config.allowed_hosts.clone().into(),
        origins: config.allowed_origins.clone().into(),
    };
    // Listed innermost first: the request meets them bottom to top.
    let router = routes
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(cors(&config.allowed_origins))
        .layer(middleware::from_fn_with_state(host_check, check_host))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(observe));
    NormalizePathLayer::trim_trailing_slash().layer(router)
}

fn cors(origins: &[HeaderValue]) -> CorsLayer {
    // Exact origins only, with credentials: `*` is refused by the config.
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([
            REQUEST_ID,
            header::LOCATION,
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
        ])
        .max_age(PREFLIGHT_MAX_AGE)
}

fn panic_response(payload: Box<dyn Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    ApiError::Internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}

/// Every error response is `{"detail": ...}`, whoever made it (axum's 405,
/// tower-http's 413, ...), and a preflight answers 204.
async fn json_errors(request: Request, next: Next) -> Response {
    let is_options = request.method() == Method::OPTIONS;
    let mut response = next.run(request).await;
    let status = response.status();
    if is_options && status == StatusCode::OK {
        // tower-http answers preflights with 200 and an empty body.
        *response.status_mut() = StatusCode::NO_CONTENT;
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let (mut parts, _) = response.into_parts();
        let detail = status.canonical_reason().unwrap_or("Error");
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Response::from_parts(parts, detail_response(status, detail).into_body());
    }
    response
}

/// Request id, the access log line, and the request id in a 500's body.
async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id_of(&request);
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let path = request.uri().path().to_owned();

    let mut response = next.run(request).await;

    if let Some(InternalCause(cause)) = response.extensions_mut().remove::<InternalCause>() {
        tracing::error!(request_id = %request_id, %method, route = route.as_deref().unwrap_or("-"), cause = %cause, "internal error");
        let (parts, _) = response.into_parts();
        let body =
            Body::from(json!({ "detail": INTERNAL_DETAIL, "request_id": request_id }).to_string());
        response = Response::from_parts(parts, body);
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    tracing::info!(
        target: "access",
        request_id = %request_id,
        %method,
        route = route.as_deref().unwrap_or("-"),
        path = %path,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// The platform's request id (Lambda's context, FC's header), else a new one.
fn request_id_of(request: &Request) -> String {
    if let Some(ctx) = request
        .extensions()
        .get::<lambda_http::lambda_runtime::Context>()
        && !ctx.request_id.is_empty()
    {
        return ctx.request_id.clone();
    }
    request
        .headers()
        .get(FC_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// A platform id is copied into logs and headers: keep it short and plain.
fn is_sane_id(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
