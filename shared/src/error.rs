//! One error type for every handler. The status is decided here and nowhere
//! else, and it is kept end to end: a 401 stays a 401 (the seed's 401→500 bug,
//! designed away). A 500 is only ever a real bug; its cause goes to the log, the
//! client sees "Internal Server Error" and the request id.

use std::time::Duration;

use axum::Json;
use axum::extract::FromRequest;
use axum::extract::rejection::JsonRejection;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("Not Found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("Request body too large")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    /// A dependency is down or too slow: the client may retry.
    #[error("{what} unavailable")]
    Unavailable {
        what: &'static str,
        retry_after: Duration,
    },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The cause of a 500, carried in the response's extensions from the handler to
/// the access log, which logs it with the request id. It never reaches the client.
#[derive(Debug, Clone)]
pub struct InternalCause(pub String);

pub const INTERNAL_DETAIL: &str = "Internal Server Error";

impl ApiError {
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::Unauthorized(detail.into())
    }

    pub fn unavailable(what: &'static str) -> Self {
        Self::Unavailable {
            what,
            retry_after: Duration::from_secs(1),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// `{"detail": ...}`, the error shape the web app reads.
pub fn detail_response(status: StatusCode, detail: &str) -> Response {
    (status, Json(json!({ "detail": detail }))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            Self::Internal(cause) => {
                let mut response = detail_response(status, INTERNAL_DETAIL);
                response
                    .extensions_mut()
                    .insert(InternalCause(format!("{cause:#}")));
                response
            }
            Self::Unauthorized(detail) => {
                let mut response = detail_response(status, &detail);
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
            Self::Unavailable { retry_after, .. } => {
                let mut response = detail_response(status, &self.to_string());
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
                response
            }
            other => detail_response(status, &other.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType(
                "Expected a request body with Content-Type: application/json".into(),
            ),
            JsonRejection::JsonSyntaxError(e) => {
                Self::Unprocessable(format!("Malformed JSON body: {}", e.body_text()))
            }
            JsonRejection::JsonDataError(e) => {
                Self::Unprocessable(format!("Invalid request body: {}", e.body_text()))
            }
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge
            }
            other => Self::BadRequest(other.body_text()),
        }
    }
}

/// `Json` whose rejections are [`ApiError`]s: 415 without a JSON content type,
/// 422 for malformed or mistyped bodies, 413 over the size limit.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}
