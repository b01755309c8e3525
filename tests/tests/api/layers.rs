//! Every shared HTTP layer, over real HTTP against the application served on a
//! random port.

use axum::Router;
use axum::routing::{get, post};
use http::StatusCode;
use serde_json::Value;
use shared::{ApiError, ApiJson};
use tests::*;

async fn protected() -> Result<&'static str, ApiError> {
    Err(ApiError::unauthorized("Not authenticated"))
}

async fn boom() -> &'static str {
    panic!("boom: the handler has a bug")
}

async fn bug() -> Result<&'static str, ApiError> {
    Err(anyhow::anyhow!("connection string postgres://u:hunter2@db").into())
}

async fn echo(ApiJson(body): ApiJson<Value>) -> ApiJson<Value> {
    ApiJson(body)
}

#[derive(serde::Deserialize, serde::Serialize)]
struct Typed {
    title: String,
}

async fn typed(ApiJson(body): ApiJson<Typed>) -> ApiJson<Typed> {
    ApiJson(body)
}

fn routes() -> Router {
    Router::new()
        .route("/protected", get(protected))
        .route("/boom", get(boom))
        .route("/bug", get(bug))
        .route("/echo", post(echo))
        .route("/typed", post(typed))
}

async fn app() -> TestApp {
    spawn_app(routes(), &test_config(&[])).await
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

fn assert_cors_allowed(r: &reqwest::Response, origin: &str) {
    assert_eq!(
        header(r, "access-control-allow-origin"),
        Some(origin),
        "{:?}",
        r.headers()
    );
    assert_eq!(header(r, "access-control-allow-credentials"), Some("true"));
    let vary = header(r, "vary").unwrap_or_default().to_ascii_lowercase();
    assert!(vary.contains("origin"), "Vary: {vary}");
}

async fn detail(r: reqwest::Response) -> String {
    let body: Value = r.json().await.expect("a JSON error body");
    body["detail"].as_str().expect("detail").to_owned()
}

#[tokio::test]
async fn cors_headers_are_on_401_404_and_500() {
    let app = app().await;
    for (path, status) in [
        ("/protected", StatusCode::UNAUTHORIZED),
        ("/nowhere", StatusCode::NOT_FOUND),
        ("/boom", StatusCode::INTERNAL_SERVER_ERROR),
        ("/bug", StatusCode::INTERNAL_SERVER_ERROR),
    ] {
        let r = app
            .client
            .get(app.url(path))
            .header("Origin", ALLOWED_ORIGIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert_cors_allowed(&r, ALLOWED_ORIGIN);
        assert!(header(&r, "x-request-id").is_some());
        assert!(detail(r).await.len() > 3);
    }
}

#[tokio::test]
async fn a_401_keeps_its_status_and_asks_for_a_bearer_token() {
    let app = app().await;
    let r = app.client.get(app.url("/protected")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&r, "www-authenticate"), Some("Bearer"));
    assert_eq!(detail(r).await, "Not authenticated");
}

#[tokio::test]
async fn every_allowed_origin_is_echoed_and_another_never_is() {
    let app = app().await;
    let r = app
        .client
        .get(app.url("/nowhere"))
        .header("Origin", OTHER_ALLOWED_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_cors_allowed(&r, OTHER_ALLOWED_ORIGIN);
    let r = app
        .client
        .get(app.url("/protected"))
        .header("Origin", DISALLOWED_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn preflight_from_an_allowed_origin_is_204_without_authentication() {
    let app = app().await;
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/protected"))
        .header("Origin", ALLOWED_ORIGIN)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_cors_allowed(&r, ALLOWED_ORIGIN);
    let methods = header(&r, "access-control-allow-methods")
        .unwrap()
        .to_ascii_uppercase();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let headers = header(&r, "access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    assert_eq!(header(&r, "access-control-max-age"), Some("600"));
    assert!(header(&r, "x-request-id").is_some());
}

#[tokio::test]
async fn preflight_from_a_disallowed_origin_gets_no_allow_origin() {
    let app = app().await;
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/protected"))
        .header("Origin", DISALLOWED_ORIGIN)
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    assert_ne!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn another_host_gets_400_invalid_host_header() {
    let app = spawn_app(
        routes(),
        &test_config(&[("ALLOWED_HOSTS", "127.0.0.1,*.example.com")]),
    )
    .await;
    for (host, allowed) in [
        ("evil.example", false),
        ("example.com", false),
        ("api.example.com", true),
        ("API.Example.com:8443", true),
        ("127.0.0.1:1234", true),
    ] {
        let r = app
            .client
            .get(app.url("/protected"))
            .header("Host", host)
            .header("Origin", ALLOWED_ORIGIN)
            .send()
            .await
            .unwrap();
        if allowed {
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{host}");
        } else {
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{host}");
            assert_cors_allowed(&r, ALLOWED_ORIGIN);
            assert_eq!(detail(r).await, "Invalid host header");
        }
    }
}

#[tokio::test]
async fn a_preflight_with_another_host_is_refused_too() {
    let app = app().await;
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/protected"))
        .header("Host", "evil.example")
        .header("Origin", ALLOWED_ORIGIN)
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_cors_allowed(&r, ALLOWED_ORIGIN);
    assert_eq!(detail(r).await, "Invalid host header");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_with_or_without_content_length() {
    let app = spawn_app(routes(), &test_config(&[("MAX_BODY_BYTES", "2048")])).await;
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(4096));
    let r = app
        .client
        .post(app.url("/echo"))
        .header("Content-Type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(detail(r).await.to_lowercase().contains("large"));

    // Chunked: no Content-Length to refuse up front, the limit trips while reading.
    let chunks: Vec<Result<String, std::io::Error>> = big
        .as_bytes()
        .chunks(512)
        .map(|c| Ok(String::from_utf8(c.to_vec()).unwrap()))
        .collect();
    let stream = futures_util::stream::iter(chunks);
    let r = app
        .client
        .post(app.url("/echo"))
        .header("Content-Type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(detail(r).await.to_lowercase().contains("large"));

    let r = app
        .client
        .post(app.url("/echo"))
        .header("Content-Type", "application/json")
        .body("{\"x\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn json_rejections_are_415_and_422_with_a_detail() {
    let app = app().await;
    let r = app
        .client
        .post(app.url("/echo"))
        .body("{\"x\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(detail(r).await.contains("application/json"));
    let r = app
        .client
        .post(app.url("/echo"))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail(r).await.contains("Malformed JSON"));
    let r = app
        .client
        .post(app.url("/typed"))
        .header("Content-Type", "application/json")
        .body("{\"title\": 5}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail(r).await.contains("title"));
}

#[tokio::test]
async fn a_panic_is_a_json_500_with_the_request_id_and_no_cause() {
    let app = app().await;
    for path in ["/boom", "/bug"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let request_id = header(&r, "x-request-id").unwrap().to_owned();
        let text = r.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["detail"], "Internal Server Error");
        assert_eq!(body["request_id"], request_id.as_str());
        assert!(
            !text.contains("boom") && !text.contains("hunter2"),
            "{text}"
        );
    }
    // The instance survives the panic.
    let r = app.client.get(app.url("/protected")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn request_ids_are_generated_or_taken_from_fc() {
    let app = spawn_app(routes(), &test_config(FC_INSTANCE_VARS)).await;
    let a = app.client.get(app.url("/nowhere")).send().await.unwrap();
    let b = app.client.get(app.url("/nowhere")).send().await.unwrap();
    let (a, b) = (
        header(&a, "x-request-id").unwrap().to_owned(),
        header(&b, "x-request-id").unwrap().to_owned(),
    );
    assert_ne!(a, b);
    let r = app
        .client
        .get(app.url("/nowhere"))
        .header("x-fc-request-id", "1-6571a2b3-abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-request-id"), Some("1-6571a2b3-abcdef"));
    // An id that is not plain is not copied into headers and logs.
    let r = app
        .client
        .get(app.url("/nowhere"))
        .header("x-fc-request-id", "a b\"c")
        .send()
        .await
        .unwrap();
    assert_ne!(header(&r, "x-request-id"), Some("a b\"c"));
}

#[tokio::test]
async fn a_trailing_slash_does_not_matter_and_never_redirects() {
    let app = app().await;
    for path in ["/echo", "/echo/"] {
        let r = app
            .client
            .post(app.url(path))
            .header("Content-Type", "application/json")
            .body("{\"a\":1}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/echo/"))
        .header("Origin", ALLOWED_ORIGIN)
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405_with_allow() {
    let app = app().await;
    let r = app
        .client
        .delete(app.url("/echo"))
        .header("Origin", ALLOWED_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(header(&r, "allow").unwrap().contains("POST"));
    assert_cors_allowed(&r, ALLOWED_ORIGIN);
    assert_eq!(detail(r).await, "Method Not Allowed");
}
