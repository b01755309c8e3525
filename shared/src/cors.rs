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

use axum::extract::Request;
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

impl Cors {
    /// The request's `Origin` when it is allowed: what its response echoes.
    pub fn allowed_origin(&self, request: &Request) -> Option<HeaderValue> {
        request
            .headers()
            .get(ORIGIN)
            .filter(|origin| self.origins.contains(origin))
            .cloned()
    }
}

/// Whether a request is a preflight: every `OPTIONS` is one, answered by
/// [`preflight_response`] before routing and authentication.
pub fn is_preflight(request: &Request) -> bool {
    request.method() == Method::OPTIONS
}

/// The answer to a preflight ([`add_headers`] adds what the browser needs).
pub fn preflight_response() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// The CORS headers of a response: `Vary` on every one; the rest only for
/// an allowed origin (errors and 5xx included).
pub fn add_headers(response: &mut Response, allowed_origin: Option<HeaderValue>, preflight: bool) {
    let answered_preflight = preflight && response.status() == StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.append(VARY, VARY_ON);
    let Some(origin) = allowed_origin else {
        return;
    };
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    if answered_preflight {
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
        headers.insert(ACCESS_CONTROL_MAX_AGE, MAX_AGE);
    } else {
        headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_HEADERS);
    }
}
