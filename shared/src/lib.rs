//! What every TMS chat function stands on, and nothing more: configuration
//! (and its secrets), the error type, the HTTP layers (CORS, host check,
//! request id, access log), API tokens, the database pool and migrations,
//! the Redis connection and what its settings do to the single-use marks,
//! and the runtime that serves a function on Lambda, on
//! FC and locally. What a function does lives in its own crate.

pub mod clock;
pub mod config;
pub mod cors;
pub mod db;
pub mod error;
pub mod host;
pub mod http;
pub mod log_writer;
pub mod metrics;
pub mod openapi;
pub mod redis_client;
pub mod redis_settings;
pub mod runtime;
pub mod secrets;
pub mod tokens;

pub use config::{Config, ConfigError};
pub use error::{ApiError, ApiJson, ApiQuery, ErrorBody};
pub use http::{App, app};
pub use metrics::Outcome;
pub use runtime::StartError;
pub use tracing;
