//! The Lambda path: the health binary driven through the Lambda runtime API
//! with real event payloads, as API Gateway (HTTP API v2, REST v1), an ALB and
//! a Function URL send them.

use serde_json::Value;
use tests::lambda::LambdaRuntime;

fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture JSON")
}

/// A response header, whichever of `headers` / `multiValueHeaders` carries it.
fn header(response: &Value, name: &str) -> Option<String> {
    let find = |map: &Value| {
        map.as_object().and_then(|m| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| match v {
                    Value::Array(values) => values[0].as_str().unwrap_or_default().to_owned(),
                    other => other.as_str().unwrap_or_default().to_owned(),
                })
        })
    };
    find(&response["headers"]).or_else(|| find(&response["multiValueHeaders"]))
}

fn body(response: &Value) -> Value {
    serde_json::from_str(response["body"].as_str().expect("a text body")).expect("a JSON body")
}

async fn invoke_health(events: &[Value]) -> Vec<(Value, String)> {
    let runtime = LambdaRuntime::start().await;
    // The SAM template sets this too, so REST API stages do not prefix paths.
    let process = runtime.start_function(
        "health",
        &[("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true")],
    );
    let mut out = Vec::new();
    for event in events {
        out.push(runtime.invoke(event.clone()).await);
    }
    process.stop().await;
    out
}

#[tokio::test]
async fn health_answers_every_event_source_with_request_id_and_cors() {
    let fixtures = [
        "apigw-http-v2.json",
        "apigw-rest-v1.json",
        "alb.json",
        "function-url.json",
    ];
    let events: Vec<Value> = fixtures.iter().map(|f| fixture(f)).collect();
    for ((response, request_id), name) in invoke_health(&events).await.iter().zip(fixtures) {
        assert_eq!(response["statusCode"], 200, "{name}: {response}");
        assert_eq!(
            header(response, "x-request-id").as_deref(),
            Some(request_id.as_str()),
            "{name}"
        );
        assert_eq!(
            header(response, "access-control-allow-origin").as_deref(),
            Some("https://tms-chat.example.com"),
            "{name}: {response}"
        );
        assert_eq!(
            header(response, "access-control-allow-credentials").as_deref(),
            Some("true")
        );
        assert_eq!(body(response)["status"], "ok", "{name}");
    }
}

#[tokio::test]
async fn errors_and_preflights_keep_their_status_through_lambda() {
    let mut not_found = fixture("apigw-http-v2.json");
    not_found["rawPath"] = "/api/v1/nowhere".into();
    not_found["requestContext"]["http"]["path"] = "/api/v1/nowhere".into();

    let mut preflight = fixture("apigw-http-v2.json");
    preflight["requestContext"]["http"]["method"] = "OPTIONS".into();
    preflight["headers"]["access-control-request-method"] = "POST".into();

    let mut bad_host = fixture("apigw-rest-v1.json");
    bad_host["headers"]["Host"] = "evil.example".into();
    bad_host["multiValueHeaders"]["Host"] = serde_json::json!(["evil.example"]);

    let mut wrong_method = fixture("alb.json");
    wrong_method["httpMethod"] = "DELETE".into();

    let responses = invoke_health(&[not_found, preflight, bad_host, wrong_method]).await;

    let (r, _) = &responses[0];
    assert_eq!(r["statusCode"], 404, "{r}");
    assert_eq!(body(r)["detail"], "Not Found");
    assert!(header(r, "access-control-allow-origin").is_some());

    let (r, _) = &responses[1];
    assert_eq!(r["statusCode"], 204, "{r}");
    assert!(
        header(r, "access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );

    let (r, _) = &responses[2];
    assert_eq!(r["statusCode"], 400, "{r}");
    assert_eq!(body(r)["detail"], "Invalid host header");

    let (r, _) = &responses[3];
    assert_eq!(r["statusCode"], 405, "{r}");
    assert!(header(r, "allow").unwrap().contains("GET"));
}
