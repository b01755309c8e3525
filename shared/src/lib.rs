//! What every TMS chat function stands on. Each concern lives here once:
//! configuration (and its secrets), the error type, the HTTP layers and the
//! host check, API tokens, GCGC token verification, the replay store, the
//! data layer, readiness probes, and the runtime that serves a function on
//! Lambda, on FC and locally.

pub mod config;
pub mod db;
pub mod error;
pub mod host;
pub mod http;
pub mod probe;
pub mod replay;
pub mod runtime;
pub mod secrets;
pub mod sso;
pub mod tokens;

pub use config::{Config, ConfigError};
pub use error::{ApiError, ApiJson};
pub use http::{App, app};
pub use runtime::StartError;
pub use tracing;
