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
    // Each function is stopped by a setting of a section it reads: the
    // common ones (any function), Redis (health), the API tokens'
    // (conversations), the GCGC keys' (sso-login).
    let production = [
        ("APP_ENV", "production"),
        ("DATABASE_URL", "postgres://127.0.0.1:1/tms"),
    ];
    /// The function, its settings beside the tests', the variable named.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("health", &[("ALLOWED_ORIGINS", "*")], "ALLOWED_ORIGINS"),
        (
            "health",
            &[("FC_CUSTOM_LISTEN_PORT", "nine")],
            "FC_CUSTOM_LISTEN_PORT",
        ),
        ("health", &[("REDIS_URL", "http://cache")], "REDIS_URL"),
        ("health", &production, "REDIS_URL"),
        (
            "conversations",
            &[("JWT_EXPIRATION_HOURS", "forever")],
            "JWT_EXPIRATION_HOURS",
        ),
        (
            "sso-login",
            &[("SSO_JWKS_URL", "ftp://idp")],
            "SSO_JWKS_URL",
        ),
        (
            "sso-login",
            &[("SSO_JWT_SECRET", TEST_JWT_SECRET)],
            "SSO_JWT_SECRET",
        ),
    ];
    for (function, pairs, variable) in cases {
        let mut vars = test_vars(pairs);
        vars.entry("FC_CUSTOM_LISTEN_PORT".into())
            .or_insert_with(|| free_port().to_string());
        let (code, stderr) = Process::start(function, &vars).exit().await;
        assert_eq!(code, Some(1), "{function} {pairs:?}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("invalid configuration"))
            .unwrap_or_else(|| panic!("no config line for {function} {pairs:?}: {stderr}"));
        assert!(line.contains(variable), "{line}");
    }
}

#[tokio::test]
async fn each_function_serves_its_requests_on_one_thread() {
    // shared::runtime::main: one thread runs the requests and the stores'
    // connections. Beside it only threads that serve no request: the log
    // writer and SQLite's driver (the tests' database). Any runtime with
    // workers has a thread more, whatever its threads are named; tokio's
    // blocking pool starts none here (every address is an IP: no lookup).
    let not_serving = |thread: &str| thread == "log-writer" || thread.starts_with("sqlx-sqlite");
    for (function, vars) in [
        ("health", vec![]),
        (
            "sso-login",
            vec![(
                "SSO_JWT_SECRET",
                "sso-secret-for-the-thread-test-0123456789",
            )],
        ),
        ("conversations", vec![]),
    ] {
        let (process, base) = start_function(function, &vars).await;
        // Served, whatever the route answers: the function is at work.
        let r = client().get(format!("{base}/health")).send().await.unwrap();
        assert!(
            r.status() == 200 || r.status() == 404,
            "{function}: {}",
            r.status()
        );
        let pid = process.child.id().expect("running");
        // A thread that ends between the listing and the read is skipped.
        let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|comm| comm.trim().to_owned())
            .collect();
        process.stop().await;
        let serving: Vec<&String> = threads.iter().filter(|t| !not_serving(t)).collect();
        assert_eq!(serving, [function], "{function}'s threads: {threads:?}");
    }
}

#[tokio::test]
async fn health_reads_no_setting_of_the_api_tokens_or_the_gcgc_keys() {
    // Settings that would stop sso-login or conversations: health has no
    // use for them, so they cannot stop it. Nor are their secrets read (the
    // ARNs name secrets on an endpoint where nothing listens).
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let (process, base) = start_function(
        "health",
        &[
            ("JWT_SECRET", "short"),
            ("JWT_EXPIRATION_HOURS", "forever"),
            ("SSO_JWKS_URL", "ftp://idp"),
            ("SSO_JWT_SECRET", "short"),
            (
                "JWT_SECRET_ARN",
                "arn:aws:secretsmanager:us-east-1:1:secret:tms/jwt",
            ),
            (
                "SSO_JWT_SECRET_ARN",
                "arn:aws:secretsmanager:us-east-1:1:secret:tms/sso",
            ),
            ("AWS_ENDPOINT_URL", &unreachable),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    )
    .await;
    let r = client().get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    process.stop().await;
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
    let line: Value = json_lines(&stderr)
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
