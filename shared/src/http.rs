//! The HTTP layers every function gets, in one place and in the order a
//! request meets them: request id and access log, `{"detail"}` bodies for
//! every error, CORS on every response, the host check, preflight answers,
//! caught panics, the body limit; then the function's routes (JSON 404 for
//! any other path). Trailing slashes are trimmed before routing, without a
//! redirect (a redirect breaks CORS preflights).

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use http::header::{self, HeaderName};
use tower::{Layer, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};

use crate::config::{Config, Platform};
use crate::cors::{self, Cors};
use crate::error::{ApiError, detail_response};
use crate::host::{self, HostCheck};
use crate::metrics::{AccessEntry, AccessLog, Outcome};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Alibaba Function Compute passes its request id in this header (trusted
/// only when running on FC: elsewhere any client can send it).
pub const FC_REQUEST_ID: HeaderName = HeaderName::from_static("x-fc-request-id");

/// A function's routes with every shared layer around them: what the runtime serves.
pub type App = NormalizePath<Router>;

/// Wraps a function's routes in the shared layers. They sit inside the
/// router (`Router::layer`), so they apply to the fallback and to 405s too
/// and can see the matched route.
pub fn app(routes: Router, config: &Config) -> App {
    let layers = ServiceBuilder::new()
        .layer(middleware::from_fn_with_state(Edge::new(config), edge))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(RequestBodyLimitLayer::new(config.http.max_body_bytes))
        .layer(DefaultBodyLimit::max(config.http.max_body_bytes));
    let router = routes
        .fallback(|| async { ApiError::NotFound })
        .layer(layers);
    NormalizePathLayer::trim_trailing_slash().layer(router)
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
/// tower-http's 413, ...); an [`ApiError`]'s own JSON passes untouched.
fn detail_body_for_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let detail = status.canonical_reason().unwrap_or("Error");
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, detail_response(status, detail).into_body())
}

/// What [`edge`] decided at start.
struct Edge {
    /// `x-fc-request-id` is FC's own only behind FC; elsewhere a client's.
    trust_fc_request_id: bool,
    access_log: AccessLog,
    cors: Cors,
    hosts: HostCheck,
}

impl Edge {
    fn new(config: &Config) -> Arc<Self> {
        Arc::new(Self {
            trust_fc_request_id: matches!(config.platform, Platform::Fc { .. }),
            access_log: AccessLog::new(config),
            cors: Cors::new(&config.http.allowed_origins),
            hosts: HostCheck::new(&config.http.allowed_hosts),
        })
    }
}

/// What every request meets before the routes, in this order, in one
/// middleware (one boxed future per request, not one per step):
/// 1. a request id (`X-Request-Id`, and for the 500 bodies inside);
/// 2. the host check: any other `Host` gets 400 "Invalid host header";
/// 3. preflights (`OPTIONS`) answered 204, before routing and authentication;
/// 4. then the routes; on the way out, every error gets a `{"detail"}` body,
///    every response its CORS headers (the host check's 400 included), and
///    the request its one access log line: route, status, latency, request
///    id, its user once known, and the figures that are metrics (`metrics.rs`). Never a header or
///    a body.
async fn edge(State(edge): State<Arc<Edge>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id_of(&request, edge.trust_fc_request_id);
    let method = request.method().clone();
    // Both reference-counted: no copy of the path per request.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let uri = request.uri().clone();
    let allowed_origin = edge.cors.allowed_origin(&request);
    let preflight = cors::is_preflight(&request);

    let (response, user_id) = if !edge.hosts.allows(&request) {
        (host::refusal(), None)
    } else if preflight {
        (cors::preflight_response(), None)
    } else {
        crate::request_scope::scope(request_id.clone(), next.run(request)).await
    };
    let mut response = detail_body_for_errors(response);
    cors::add_headers(&mut response, allowed_origin, preflight);

    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    edge.access_log.write(&AccessEntry {
        request_id: &request_id,
        method: method.as_str(),
        route: route.as_ref().map_or("-", MatchedPath::as_str),
        path: uri.path(),
        status: response.status().as_u16(),
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        outcome: response.extensions().get::<Outcome>().copied(),
        user_id,
        cold_start: edge.access_log.take_cold_start(),
    });
    response
}

/// The platform's request id (Lambda's context; FC's header, on FC only),
/// else a new one.
fn request_id_of(request: &Request, trust_fc_request_id: bool) -> Arc<str> {
    if let Some(ctx) = request
        .extensions()
        .get::<lambda_http::lambda_runtime::Context>()
        && !ctx.request_id.is_empty()
    {
        return ctx.request_id.as_str().into();
    }
    if let Some(id) = request
        .headers()
        .get(FC_REQUEST_ID)
        .filter(|_| trust_fc_request_id)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane_id(v))
    {
        return id.into();
    }
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    (&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text)).into()
}

/// A platform id is copied into logs and headers: keep it short and plain.
fn is_sane_id(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
