//! Programs for developers and operators, beside the functions.

pub mod verify;

use axum::Router;
use shared::{Config, StartError};

/// Every function's routes on one router: what `make run` serves locally.
pub async fn all_routes(config: &Config) -> Result<Router, StartError> {
    Ok(health::build(config)
        .await?
        .merge(conversations::build(config).await?)
        .merge(sso_login::build(config).await?))
}
