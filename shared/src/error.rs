//! One error type for every handler. The status is decided here and nowhere
//! else, and it is kept end to end: a 401 stays a 401 (a generic handler that
//! turned every exception into a 500 is what this replaces). A 500 is only
//! ever a real bug: its cause goes to the log with the request id, and the
//! client sees "Internal Server Error" and the request id.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token that was ended early (signed out): RFC 6750's
    /// `invalid_token`, so that a client knows to sign in again.
    #[error("Token has been revoked")]
    TokenRevoked,
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
            Self::Unauthorized(_) | Self::TokenRevoked => StatusCode::UNAUTHORIZED,
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

/// Every error's body: `{"detail": ...}`, the shape the web app reads; a
/// 500 adds the request id to quote when reporting it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `{"detail": ...}` with this status.
pub fn detail_response(status: StatusCode, detail: &str) -> Response {
    let body = ErrorBody {
        detail: detail.to_owned(),
        request_id: None,
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            Self::Internal(cause) => {
                let request_id = crate::request_scope::current_id();
                let request_id = request_id.as_deref().unwrap_or("-");
                tracing::error!(request_id, cause = %format!("{cause:#}"), "internal error");
                let body = ErrorBody {
                    detail: INTERNAL_DETAIL.to_owned(),
                    request_id: Some(request_id.to_owned()),
                };
                (status, Json(body)).into_response()
            }
            Self::Unauthorized(detail) => {
                let mut response = detail_response(status, &detail);
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
            Self::TokenRevoked => {
                let mut response = detail_response(status, &self.to_string());
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
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

/// What a database error means to a client, where the caller has nothing
/// more specific to say: data the database refused is the client's (422),
/// a database that is down is a 503, anything else a bug (500).
impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable => Self::unavailable("Database"),
            DbError::InvalidData(_) => Self::Unprocessable(
                "The request contains text or numbers that cannot be stored".into(),
            ),
            DbError::MissingReference => {
                Self::Unprocessable("A referenced record does not exist".into())
            }
            DbError::Duplicate => Self::Conflict("Already exists".into()),
            DbError::Other(e) => Self::Internal(anyhow::anyhow!(e).context("database")),
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

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::Unprocessable(format!("Invalid query string: {}", rejection.body_text()))
    }
}

/// `Query` whose rejections are [`ApiError`]s: a query string that does not
/// fit the parameters (a repeated one, say) is a 422 that says why.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);
