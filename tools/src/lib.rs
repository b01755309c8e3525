//! Programs for developers and operators, beside the functions.

pub mod sso_token;
pub mod verify;

/// The deploy units, in functions/LIST's order (the one list the Makefile,
/// the scripts and the template tests read too).
pub fn function_names() -> Vec<&'static str> {
    include_str!("../../functions/LIST")
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|name| !name.is_empty())
        .collect()
}

use axum::Router;
use shared::{Config, StartError};
use utoipa::{Modify, OpenApi};

/// Every function's routes on one router: what `make run` serves locally.
pub async fn all_routes(config: &Config) -> Result<Router, StartError> {
    Ok(health::build(config)
        .await?
        .merge(conversations::build(config).await?)
        .merge(sso_login::build(config).await?))
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

#[cfg(test)]
mod function_list_tests {
    #[test]
    fn function_names_are_the_crates_of_functions_list() {
        let names = super::function_names();
        assert!(names.contains(&"sso-login"), "{names:?}");
        for name in names {
            let manifest = format!(
                "{}/../functions/{name}/Cargo.toml",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(&manifest).expect(&manifest);
            assert!(text.contains(&format!("name = \"{name}\"")), "{manifest}");
        }
    }
}
