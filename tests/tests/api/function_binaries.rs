//! The function binaries as processes: FC's port, start-up errors, the access log.

use serde_json::Value;
use tests::*;

#[tokio::test]
async fn health_answers_on_the_fc_port_with_the_fc_request_id() {
    let (process, base) = start_function("health", &[]).await;
    let r = client()
        .get(format!("{base}/health"))
        .header("x-fc-request-id", "fc-req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "fc-req-42");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let r = client()
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    process.stop().await;
}

#[tokio::test]
async fn a_bad_setting_stops_the_function_with_one_line_naming_it() {
    for (variable, value) in [
        ("ALLOWED_ORIGINS", "*"),
        ("JWT_EXPIRATION_HOURS", "forever"),
        ("APP_ENV", "production"),
        ("FC_CUSTOM_LISTEN_PORT", "nine"),
    ] {
        let mut vars = test_vars(&[(variable, value)]);
        if variable != "FC_CUSTOM_LISTEN_PORT" {
            vars.insert("FC_CUSTOM_LISTEN_PORT".into(), free_port().to_string());
        }
        let (code, stderr) = Process::start("health", &vars).exit().await;
        assert_eq!(code, Some(1), "{variable}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("invalid configuration"))
            .unwrap_or_else(|| panic!("no config line for {variable}: {stderr}"));
        let expected = if variable == "APP_ENV" {
            "REDIS_URL"
        } else {
            variable
        };
        assert!(line.contains(expected), "{line}");
    }
}

#[tokio::test]
async fn the_access_log_is_json_with_route_status_latency_and_id_and_no_token() {
    let (process, base) = start_function("health", &[]).await;
    let token = "eyJhbGciOiJIUzI1NiJ9.secret-bearer-token.sig";
    let r = client()
        .get(format!("{base}/health/"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let stderr = process.stop().await;
    assert!(
        !stderr.contains(token) && !stderr.contains("secret-bearer"),
        "{stderr}"
    );
    let line: Value = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["request_id"] == request_id.as_str())
        .unwrap_or_else(|| panic!("no access line for {request_id}: {stderr}"));
    assert_eq!(line["route"], "/health");
    assert_eq!(line["status"], 200);
    assert_eq!(line["method"], "GET");
    assert!(line["latency_ms"].as_f64().is_some());
    for l in stderr.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<Value>(l).is_ok(),
            "not a JSON line: {l}"
        );
    }
}
