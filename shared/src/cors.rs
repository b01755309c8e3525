//! CORS for the web app: exact origins (`ALLOWED_ORIGINS`) with credentials.
//! An allowed `Origin` is echoed on every response, errors and 5xx included
//! (an error without CORS headers shows in the browser as a "CORS error");
//! a preflight (`OPTIONS`) answers 204 without authentication. A disallowed
//! origin never gets `Access-Control-Allow-Origin`.
//!
//! Written here rather than taken from tower-http because the host check must
//! run inside CORS (its 400 gets these headers) and still see preflights,
//! which tower-http's layer answers itself.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ORIGIN,
    VARY,
};
use http::{HeaderValue, Method, StatusCode};

const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET,POST,PUT,PATCH,DELETE,OPTIONS");
const ALLOW_HEADERS: HeaderValue = HeaderValue::from_static("authorization,content-type");
const EXPOSE_HEADERS: HeaderValue =
    HeaderValue::from_static("x-request-id,location,retry-after,www-authenticate");
/// Browsers cache a preflight this long (seconds).
const MAX_AGE: HeaderValue = HeaderValue::from_static("600");
/// The response depends on these request headers: caches must key on them.
const VARY_ON: HeaderValue = HeaderValue::from_static(
    "origin, access-control-request-method, access-control-request-headers",
);

/// The allowed origins. `*` never gets here: the configuration refuses it
/// together with credentials.
#[derive(Clone)]
pub struct Cors {
    origins: Arc<[HeaderValue]>,
}

impl Cors {
    pub fn new(origins: &[HeaderValue]) -> Self {
        Self {
            origins: origins.into(),
        }
    }
}

/// Middleware: the CORS headers on every response to an allowed origin.
pub async fn add_headers(State(cors): State<Cors>, request: Request, next: Next) -> Response {
    let allowed_origin = request
        .headers()
        .get(ORIGIN)
        .filter(|origin| cors.origins.contains(origin))
        .cloned();
    let is_preflight = request.method() == Method::OPTIONS;
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.append(VARY, VARY_ON);
    let Some(origin) = allowed_origin else {
        return response;
    };
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    if is_preflight && response.status() == StatusCode::NO_CONTENT {
        let headers = response.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
        headers.insert(ACCESS_CONTROL_MAX_AGE, MAX_AGE);
    } else {
        response
            .headers_mut()
            .insert(ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_HEADERS);
    }
    response
}

/// Middleware: every `OPTIONS` is a preflight, answered 204 before routing and
/// authentication (the CORS layer around it adds what the browser needs).
pub async fn answer_preflight(request: Request, next: Next) -> Response {
    if request.method() == Method::OPTIONS {
        return StatusCode::NO_CONTENT.into_response();
    }
    next.run(request).await
}
