//! Programs for developers and operators, beside the functions.

pub mod sso_token;
pub mod verify;

use axum::Router;
use shared::{Config, StartError};
use utoipa::{Modify, OpenApi};

/// Every function's routes on one router: what `make run` serves locally.
/// sso-login's sections hold the others' (Redis for health, the API
/// tokens' keys for conversations).
pub async fn all_routes(
    config: &Config,
    settings: sso_login::Settings,
) -> Result<Router, StartError> {
    Ok(health::build(config, settings.redis.clone())
        .await?
        .merge(conversations::build(config, settings.jwt.clone()).await?)
        .merge(sso_login::build(config, settings).await?))
}

/// The OpenAPI 3.1 document of every route, from the annotations beside the
/// handlers and the shared layers' part: what `tms-openapi` prints and
/// docs/openapi.json holds.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = health::ApiDoc::openapi()
        .merge_from(sso_login::ApiDoc::openapi())
        .merge_from(conversations::ApiDoc::openapi());
    doc.info = utoipa::openapi::InfoBuilder::new()
        .title("TMS chat API")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "The TMS chat back end: health, sso-login and conversations. \
             Every error is JSON {\"detail\"}; every response has X-Request-Id. \
             A method a path does not take is 405 with Allow; an unknown path is 404; \
             OPTIONS on any path is a CORS preflight (204).",
        ))
        .build();
    shared::openapi::SharedLayers.modify(&mut doc);
    doc
}

/// [`openapi`] as docs/openapi.json holds it: pretty JSON and a final newline.
pub fn openapi_json() -> String {
    let json = openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    format!("{json}\n")
}
