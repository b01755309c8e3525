//! docs/openapi.json is what the code generates, and every operation in it
//! is routed (never the fallback 404 or a 405) and answers a status it documents.

use http::Method;
use serde_json::{Value, json};
use shared::db::Database;
use sso_login::users::upsert_user;
use tests::services::TestDb;
use tests::*;

const REGENERATE: &str =
    "`make openapi` (cargo run -p tools --bin tms-openapi > docs/openapi.json)";

#[test]
fn the_committed_document_is_what_the_code_generates() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == tools::openapi_json(),
        "docs/openapi.json differs from what the code generates: regenerate it with {REGENERATE}"
    );
}

#[tokio::test]
async fn every_documented_operation_is_served_with_a_documented_status() {
    let db = TestDb::sqlite();
    let (config, settings) = test_sections(&[
        ("DATABASE_URL", &db.url),
        (
            "SSO_JWT_SECRET",
            "test-sso-secret-0123456789abcdef0123456789",
        ),
    ]);
    let app = spawn_app(tools::all_routes(&config, settings).await.unwrap(), &config).await;
    let database = Database::open(&config.database).await.unwrap();
    let user = upsert_user(&database, "ext-openapi", None, None)
        .await
        .unwrap();
    let token = tests::tokens::api_token(TEST_JWT_SECRET, user.id);
    let doc: Value = serde_json::from_str(&tools::openapi_json()).unwrap();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let documented: Vec<&String> =
                operation["responses"].as_object().unwrap().keys().collect();
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // A sign-out ends its token: it gets one of its own, and the
            // other operations keep theirs.
            let token = if path.contains("logout") {
                tests::tokens::api_token(TEST_JWT_SECRET, user.id)
            } else {
                token.clone()
            };
            let mut request = app
                .client
                .request(method.clone(), app.url(&path.replace("{id}", "1")))
                .bearer_auth(&token);
            // In path order, the conversation created here is the one fetched after.
            if path.contains("login") {
                request = request.json(&json!({ "token": "not a GCGC token" }));
            } else if method == Method::POST {
                request = request.json(&json!({ "title": "Documented" }));
            }
            let status = request.send().await.unwrap().status();
            assert!(
                documented.contains(&&status.as_u16().to_string())
                    && ![404, 405].contains(&status.as_u16())
                    && (!path.contains("logout") || status == 204),
                "{method} {path}: {status}; documented: {documented:?}"
            );
            operations += 1;
        }
    }
    assert_eq!(operations, 8, "one operation per route of the contract");
}
