//! Metrics in the access log: on Lambda each request's line is CloudWatch
//! Embedded Metric Format; on FC the same figures are plain fields. And FC's
//! request id header is trusted on FC only.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use shared::db::Database;
use sso_login::users::upsert_user;
use tests::lambda::LambdaRuntime;
use tests::services::TestDb;
use tests::tokens::{api_token, sso_claims, sso_token};
use tests::*;

const SSO_SECRET: &str = "metrics-sso-secret-0123456789abcdef0123456789";
const LOGIN: &str = "/api/v1/auth/login/sso";

fn login_event(token: &str) -> Value {
    let mut event: Value =
        serde_json::from_str(include_str!("../../fixtures/apigw-http-v2.json")).unwrap();
    event["rawPath"] = LOGIN.into();
    event["rawQueryString"] = "".into();
    event["requestContext"]["http"]["path"] = LOGIN.into();
    event["requestContext"]["http"]["method"] = "POST".into();
    event["headers"]["content-type"] = "application/json".into();
    let body = json!({ "token": token }).to_string();
    event["headers"]["content-length"] = body.len().to_string().into();
    event["body"] = body.into();
    event
}

/// The one JSON line of stderr that logs `request_id`.
fn line_of(stderr: &str, request_id: &str) -> Value {
    let lines: Vec<Value> = json_lines(stderr)
        .filter(|v| v["request_id"] == request_id && v["target"] == "access")
        .collect();
    assert_eq!(lines.len(), 1, "one line for {request_id}: {stderr}");
    lines.into_iter().next().unwrap()
}

/// Checks `line` against the EMF specification: `_aws` with a Timestamp in
/// milliseconds and metric directives whose every metric is a number member
/// and every dimension a string member.
fn assert_emf(line: &Value) {
    let aws = &line["_aws"];
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let timestamp = aws["Timestamp"].as_u64().expect("Timestamp is an integer");
    assert!(
        timestamp <= now_ms && now_ms - timestamp < 600_000,
        "Timestamp {timestamp} is not milliseconds of now ({now_ms})"
    );
    let directives = aws["CloudWatchMetrics"].as_array().expect("directives");
    assert!(!directives.is_empty());
    for directive in directives {
        assert!(
            directive["Namespace"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
        );
        let sets = directive["Dimensions"].as_array().expect("dimension sets");
        for set in sets {
            let set = set.as_array().expect("a dimension set is an array");
            assert!((1..=30).contains(&set.len()));
            for name in set {
                let name = name.as_str().expect("a dimension name");
                assert!(line[name].is_string(), "dimension {name} in {line}");
            }
        }
        let metrics = directive["Metrics"].as_array().expect("metrics");
        assert!((1..=100).contains(&metrics.len()));
        for metric in metrics {
            let name = metric["Name"].as_str().expect("a metric name");
            assert!(line[name].is_number(), "metric {name} in {line}");
            assert!(metric["Unit"].is_string());
        }
    }
}

/// The access fields that stay whatever the platform.
fn assert_access_fields(line: &Value, status: u16) {
    assert_eq!(line["method"], "POST");
    assert_eq!(line["route"], LOGIN);
    assert_eq!(line["path"], LOGIN);
    assert_eq!(line["status"], status);
    assert!(line["latency_ms"].is_number());
}

#[tokio::test]
async fn on_lambda_each_login_writes_one_emf_line_with_its_outcome() {
    let runtime = LambdaRuntime::start().await;
    let process = runtime.start_function(
        "sso-login",
        &[
            ("SSO_JWT_SECRET", SSO_SECRET),
            ("METRICS_NAMESPACE", "TMS/test-stack"),
        ],
    );
    let token = sso_token(SSO_SECRET, &sso_claims("emf-user"));
    let (success, success_id) = runtime.invoke(login_event(&token)).await;
    let (replay, replay_id) = runtime.invoke(login_event(&token)).await;
    let (invalid, invalid_id) = runtime.invoke(login_event("not-a-token")).await;
    let stderr = process.stop().await;
    assert!(!stderr.contains(&token), "the token reached the log");

    for ((response, request_id), (status, outcome)) in [
        (&success, &success_id),
        (&replay, &replay_id),
        (&invalid, &invalid_id),
    ]
    .into_iter()
    .zip([
        (200, "login_succeeded"),
        (401, "login_replay_blocked"),
        (401, "login_invalid_token"),
    ]) {
        assert_eq!(response["statusCode"], status, "{response}");
        let line = line_of(&stderr, request_id);
        assert_emf(&line);
        assert_access_fields(&line, status);
        assert_eq!(line["outcome"], outcome, "{line}");
        assert_eq!(line["function"], "sso-login");
        assert_eq!(line["requests"], 1);
        assert_eq!(line["http_4xx"], u8::from(status == 401));
        assert_eq!(line["http_5xx"], 0);
        let namespaces: Vec<&Value> = line["_aws"]["CloudWatchMetrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| &d["Namespace"])
            .collect();
        assert!(namespaces.iter().all(|n| *n == "TMS/test-stack"));
        // Logins by outcome: `requests` by function and outcome.
        assert!(
            line["_aws"]
                .to_string()
                .contains(r#"["function","outcome"]"#),
            "{line}"
        );
    }
    // The line says who signed in (no line of its own does): the user of
    // the answer; the refusals name nobody.
    let body: Value = serde_json::from_str(success["body"].as_str().unwrap()).unwrap();
    let success_line = line_of(&stderr, &success_id);
    assert_eq!(success_line["user_id"], body["user"]["id"]);
    for request_id in [&replay_id, &invalid_id] {
        assert!(line_of(&stderr, request_id).get("user_id").is_none());
    }
    assert!(
        json_lines(&stderr)
            .filter(|line| line.get("user_id").is_some())
            .all(|line| line["target"] == "access"),
        "a login's user in a line besides its access line: {stderr}"
    );
    // The first request of the instance is its cold start, and only that one.
    assert_eq!(success_line["cold_start"], 1);
    assert_eq!(line_of(&stderr, &replay_id)["cold_start"], 0);
}

#[tokio::test]
async fn on_fc_the_figures_are_fields_and_fc_request_ids_are_trusted() {
    let (process, base) = start_function("sso-login", &[("SSO_JWT_SECRET", SSO_SECRET)]).await;
    let r = client()
        .post(format!("{base}{LOGIN}"))
        .header("x-fc-request-id", "fc-req-login-1")
        .json(&json!({ "token": "not-a-token" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-request-id"], "fc-req-login-1");
    let stderr = process.stop().await;
    let line = line_of(&stderr, "fc-req-login-1");
    assert!(line.get("_aws").is_none(), "no EMF off Lambda: {line}");
    assert_access_fields(&line, 401);
    assert_eq!(line["outcome"], "login_invalid_token");
    assert_eq!(line["function"], FC_INSTANCE_VARS[0].1);
    assert_eq!(line["http_4xx"], 1);
}

#[tokio::test]
async fn off_fc_a_clients_fc_request_id_is_ignored() {
    let (process, base) = start_server("health", &[]).await;
    let r = client()
        .get(format!("{base}/health"))
        .header("x-fc-request-id", "forged-by-a-client")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&request_id).is_ok(), "{request_id}");
    let stderr = process.stop().await;
    assert!(!stderr.contains("forged-by-a-client"), "{stderr}");
    let line = line_of(&stderr, &request_id);
    assert_eq!(line["route"], "/health");
}

#[tokio::test]
async fn conversations_created_and_listed_are_outcomes_with_their_caller() {
    let db = TestDb::postgres().await;
    let pool = Database::open_postgres(&db.url, 1).unwrap();
    let user = upsert_user(&pool, "metrics-conversations", None, None)
        .await
        .unwrap();
    let (process, base) = start_function("conversations", &[("DATABASE_URL", &db.url)]).await;
    let bearer = format!("Bearer {}", api_token(TEST_JWT_SECRET, user.id));
    let created = client()
        .post(format!("{base}/api/v1/conversations/"))
        .header("Authorization", &bearer)
        .json(&json!({ "title": "metrics" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // A GET of `path`, with the caller's token or none: its status and request id.
    let get = async |path: &str, bearer: Option<&str>| {
        let mut request = client().get(format!("{base}{path}"));
        if let Some(bearer) = bearer {
            request = request.header("Authorization", bearer);
        }
        let r = request.send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        (r.status(), id)
    };
    let (listed, listed_id) = get("/api/v1/conversations", Some(&bearer)).await;
    assert_eq!(listed, 200);
    let (missing, missing_id) = get("/api/v1/conversations/999999", Some(&bearer)).await;
    assert_eq!(missing, 404);
    let (anonymous, anonymous_id) = get("/api/v1/conversations", None).await;
    assert_eq!(anonymous, 401);
    // Signed out everywhere: the token is refused, and its line says whose.
    sso_login::sessions::end_sessions_of(&pool, "metrics-conversations")
        .await
        .unwrap();
    let (ended, ended_id) = get("/api/v1/conversations", Some(&bearer)).await;
    assert_eq!(ended, 401);
    let created_id = created.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let stderr = process.stop().await;
    // Each line names the caller whose token passed, whatever the answer.
    for request_id in [&created_id, &listed_id, &missing_id, &ended_id] {
        assert_eq!(line_of(&stderr, request_id)["user_id"], user.id);
    }
    assert!(line_of(&stderr, &anonymous_id).get("user_id").is_none());
    let created = line_of(&stderr, &created_id);
    assert_eq!(created["outcome"], "conversation_created", "{created}");
    assert_eq!(created["route"], "/api/v1/conversations");
    assert_eq!(created["status"], 201);
    let listed = line_of(&stderr, &listed_id);
    assert_eq!(listed["outcome"], "conversations_listed", "{listed}");
    assert_eq!(listed["method"], "GET");
}
