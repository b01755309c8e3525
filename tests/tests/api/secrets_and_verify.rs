//! Operations: secrets read from AWS Secrets Manager at start (against moto's
//! server, a real Secrets-Manager-compatible endpoint), and `verify`, the
//! deployment checklist as a program, against local runs healthy and broken.

use std::collections::HashMap;

use http::StatusCode;
use serde_json::{Value, json};
use shared::tokens::ApiTokens;
use tests::services::{RedisServer, SecretsManager, TestDb, uuid_simple};
use tests::*;

const SM_JWT_SECRET: &str = "jwt-secret-from-secrets-manager-0123456789";
const SM_SSO_SECRET: &str = "sso-secret-from-secrets-manager-0123456789";

fn gcgc(secret: &str, sub: &str) -> String {
    tests::tokens::sso_token(secret, &tests::tokens::sso_claims(sub))
}

/// A local Secrets Manager holding each `(ARN variable, value)` as a new
/// secret, and a function's variables that read them from it (the AWS
/// variables, each ARN variable, and no `JWT_SECRET` of the test defaults).
async fn secrets_manager_holding(
    secrets: &[(&'static str, &str)],
) -> (SecretsManager, Vec<(&'static str, String)>) {
    let sm = SecretsManager::start();
    let mut vars = sm.aws_vars();
    vars.push(("JWT_SECRET", String::new()));
    for (arn_var, value) in secrets {
        let name = format!("tms/{}-{}", arn_var.to_lowercase(), uuid_simple());
        vars.push((arn_var, sm.create(&name, value).await));
    }
    (sm, vars)
}

#[tokio::test]
async fn secrets_come_from_secrets_manager_at_start_and_never_reach_a_log() {
    let (_sm, vars) = secrets_manager_holding(&[
        ("JWT_SECRET_ARN", SM_JWT_SECRET),
        ("SSO_JWT_SECRET_ARN", SM_SSO_SECRET),
    ])
    .await;
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (process, base) = start_function("sso-login", &vars).await;

    let r = client()
        .post(format!("{base}/api/v1/auth/login/sso"))
        .json(&json!({ "token": gcgc(SM_SSO_SECRET, "sm-user") }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let issued_with = ApiTokens::new(
        SM_JWT_SECRET.as_bytes(),
        std::time::Duration::from_secs(3600),
    );
    assert!(
        issued_with
            .verify(body["access_token"].as_str().unwrap())
            .is_ok(),
        "signed with the secret from Secrets Manager"
    );
    let logs = process.stop().await;
    assert!(
        !logs.contains(SM_JWT_SECRET) && !logs.contains(SM_SSO_SECRET),
        "{logs}"
    );

    // A secret that cannot be read stops the function, naming the variable.
    let bad: Vec<(&str, &str)> = vars
        .iter()
        .copied()
        .filter(|(k, _)| *k != "JWT_SECRET_ARN")
        .chain([(
            "JWT_SECRET_ARN",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:missing-AbCdEf",
        )])
        .collect();
    refused_start(
        "sso-login",
        &bad,
        "JWT_SECRET_ARN",
        "cannot read the secret",
    )
    .await;
}

/// `function` refuses to start with `vars` (over the test defaults): exit
/// code 1, and its configuration line names `variable` and says `reason`.
/// Its stderr.
async fn refused_start(
    function: &str,
    vars: &[(&str, &str)],
    variable: &str,
    reason: &str,
) -> String {
    let mut vars = test_vars(vars);
    vars.insert("FC_CUSTOM_LISTEN_PORT".into(), free_port().to_string());
    let (code, stderr) = Process::start(function, &vars).exit().await;
    assert_eq!(code, Some(1), "{stderr}");
    let line = format!("invalid configuration: {variable}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&line) && l.contains(reason)),
        "{reason}: {stderr}"
    );
    stderr
}

/// docs/deploy.md's rotation of the API token key in Secrets Manager, step
/// by step: the new value staged `AWSPENDING` verifies before it signs; made
/// `AWSCURRENT`, it signs while the old one (`AWSPREVIOUS`) still verifies;
/// the `AWSPREVIOUS` label removed, the old key's tokens end. Each step is
/// a new instance (a new version), as the procedure's deploys make them.
#[tokio::test]
async fn the_api_token_key_rotates_in_secrets_manager_without_signing_anyone_out() {
    const OLD: &str = SM_JWT_SECRET;
    const NEW: &str = "jwt-secret-after-rotation-0123456789abcdef";
    let (sm, vars) = secrets_manager_holding(&[("JWT_SECRET_ARN", OLD)]).await;
    let arn = vars
        .iter()
        .find(|(k, _)| *k == "JWT_SECRET_ARN")
        .unwrap()
        .1
        .clone();
    let db = TestDb::postgres().await;
    let mut vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    vars.extend(db.vars());
    let database = shared::db::Database::open(&test_config(&db.vars()).database)
        .await
        .unwrap();
    let user = sso_login::users::upsert_user(&database, "rotating", None, None)
        .await
        .unwrap();
    let token_of = |key: &str| {
        ApiTokens::new(key.as_bytes(), std::time::Duration::from_secs(3600))
            .issue(user.id, user.token_generation)
            .unwrap()
            .token
    };
    let (old_token, new_token) = (token_of(OLD), token_of(NEW));
    let http = reqwest::Client::new();
    let stages = async || -> Value {
        sm.call(&http, "DescribeSecret", json!({ "SecretId": arn }))
            .await
            .unwrap()["VersionIdsToStages"]
            .clone()
    };
    let version_with = |stages: &Value, stage: &str| -> String {
        stages
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, s)| s.as_array().unwrap().iter().any(|s| s == stage))
            .map(|(v, _)| v.clone())
            .unwrap()
    };
    let old_version = version_with(&stages().await, "AWSCURRENT");
    // What an instance of this step takes: (old token, new token).
    let instance_takes = async || -> (StatusCode, StatusCode) {
        let (process, base) = start_function("conversations", &vars).await;
        let status = async |token: &str| {
            client()
                .get(format!("{base}/api/v1/conversations/"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        };
        let taken = (status(&old_token).await, status(&new_token).await);
        let logs = process.stop().await;
        assert!(!logs.contains(OLD) && !logs.contains(NEW), "{logs}");
        taken
    };
    let ok = StatusCode::OK;
    let refused = StatusCode::UNAUTHORIZED;
    assert_eq!(instance_takes().await, (ok, refused), "before");

    // 1. The new value, staged AWSPENDING: it verifies, the old one signs.
    sm.call(
        &http,
        "PutSecretValue",
        json!({ "SecretId": arn, "SecretString": NEW, "VersionStages": ["AWSPENDING"] }),
    )
    .await
    .unwrap();
    assert_eq!(instance_takes().await, (ok, ok), "step 1");

    // 2. The new value made AWSCURRENT: the old one is AWSPREVIOUS.
    let new_version = version_with(&stages().await, "AWSPENDING");
    sm.call(
        &http,
        "UpdateSecretVersionStage",
        json!({ "SecretId": arn, "VersionStage": "AWSCURRENT",
                "MoveToVersionId": new_version, "RemoveFromVersionId": old_version }),
    )
    .await
    .unwrap();
    assert_eq!(version_with(&stages().await, "AWSPREVIOUS"), old_version);
    assert_eq!(instance_takes().await, (ok, ok), "step 2");

    // 3. AWSPREVIOUS removed from the old value: its tokens end.
    sm.call(
        &http,
        "UpdateSecretVersionStage",
        json!({ "SecretId": arn, "VersionStage": "AWSPREVIOUS", "RemoveFromVersionId": old_version }),
    )
    .await
    .unwrap();
    assert_eq!(instance_takes().await, (refused, ok), "step 3");
    database.close().await;
}

/// Secrets Manager over HTTPS, as on AWS: the TLS handshake names the
/// endpoint's host, the certificate is checked against the webpki roots
/// and `AWS_CA_BUNDLE`'s CA (a private endpoint's), and the signed request
/// goes through. Without the bundle the test CA is unknown and the start
/// stops, naming the variable and the certificate problem.
#[tokio::test]
async fn secrets_manager_over_https_is_trusted_through_aws_ca_bundle() {
    let sm = SecretsManager::start();
    let arn = sm
        .create(
            &format!("tms/database-url-{}", uuid_simple()),
            "sqlite::memory:",
        )
        .await;
    let ca = tests::services::TestCa::new();
    let https = sm.behind_tls(&ca.issue(&["localhost"])).await;
    let bundle = ca.cert_path().to_string_lossy().into_owned();
    let mut vars: Vec<(&str, String)> = sm
        .aws_vars()
        .into_iter()
        .filter(|(k, _)| *k != "AWS_ENDPOINT_URL")
        .collect();
    vars.extend([
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", https),
        ("DATABASE_URL", String::new()),
        ("DATABASE_URL_SECRET_ARN", arn),
    ]);
    let trusting: Vec<(&str, &str)> = vars
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain([("AWS_CA_BUNDLE", bundle.as_str())])
        .collect();
    let (process, base) = start_function("health", &trusting).await;
    let r = client().get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let logs = process.stop().await;
    assert!(logs.contains("read from AWS Secrets Manager"), "{logs}");

    let untrusting: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    refused_start(
        "health",
        &untrusting,
        "DATABASE_URL_SECRET_ARN",
        "certificate",
    )
    .await;
}

async fn run_verify(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Process::start("tms-verify", &vars).exit_with_stdout().await
}

#[tokio::test]
async fn verify_passes_the_whole_checklist_against_a_local_run() {
    let db = TestDb::sqlite();
    let prefix = format!("tms-test-{}:", uuid_simple());
    let port = free_port().to_string();
    let mut vars = test_vars(&[
        ("SSO_JWT_SECRET", SM_SSO_SECRET),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("REDIS_KEY_PREFIX", &prefix),
        ("DATABASE_URL", &db.url),
        ("LISTEN_HOST", "127.0.0.1"),
        ("PORT", &port),
    ]);
    vars.remove("FC_CUSTOM_LISTEN_PORT");
    let local = Process::start("tms-local", &vars);
    wait_for_port(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let base = format!("http://127.0.0.1:{port}");
    let (code, out) = run_verify(&[
        ("BASE_URL", &base),
        ("SSO_JWT_SECRET", SM_SSO_SECRET),
        ("VERIFY_ORIGIN", ALLOWED_ORIGIN),
    ])
    .await;
    local.stop().await;
    tests::services::clear_redis_prefix("redis://127.0.0.1:6379", &prefix);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("[x]")).count(),
        7,
        "{out}"
    );
    assert!(out.contains("Replay attack protection works"));
    assert!(out.contains("[x] Sign-out works"), "{out}");
}

#[tokio::test]
async fn verify_fails_the_right_items_when_redis_is_down() {
    let mut redis = RedisServer::start();
    let db = TestDb::sqlite();
    let redis_url = redis.url();
    let common = [
        ("SSO_JWT_SECRET", SM_SSO_SECRET),
        ("REDIS_URL", redis_url.as_str()),
        ("DATABASE_URL", db.url.as_str()),
    ];
    // One URL per function, as separately deployed functions have.
    let (health, health_url) = start_function("health", &common).await;
    let (sso, sso_url) = start_function("sso-login", &common).await;
    let (conv, conv_url) = start_function("conversations", &common).await;
    redis.stop();
    let (code, out) = run_verify(&[
        ("HEALTH_URL", &health_url),
        ("SSO_URL", &sso_url),
        ("CONV_URL", &conv_url),
        ("SSO_JWT_SECRET", SM_SSO_SECRET),
        ("VERIFY_ORIGIN", ALLOWED_ORIGIN),
    ])
    .await;
    for p in [health, sso, conv] {
        p.stop().await;
    }
    assert_eq!(code, Some(1), "{out}");
    let line = |start: &str| {
        out.lines()
            .find(|l| l.contains(start))
            .unwrap_or_else(|| panic!("{start}: {out}"))
            .to_owned()
    };
    assert!(line("Health endpoint").starts_with("[x]"), "{out}");
    assert!(line("401 errors").starts_with("[x]"), "{out}");
    assert!(
        line("SSO authentication").starts_with("[ ]") && line("SSO authentication").contains("503"),
        "{out}"
    );
    assert!(line("Conversations load").starts_with("[ ]"), "{out}");
    assert!(line("Replay attack").starts_with("[ ]"), "{out}");
    assert!(line("No CORS errors").starts_with("[x]"), "{out}");
    assert!(line("Sign-out works").starts_with("[ ]"), "{out}");
}

#[tokio::test]
async fn a_login_through_the_lambda_runtime_api_keeps_its_status() {
    let runtime = tests::lambda::LambdaRuntime::start().await;
    let process = runtime.start_function("sso-login", &[("SSO_JWT_SECRET", SM_SSO_SECRET)]);
    let mut event: Value =
        serde_json::from_str(include_str!("../../fixtures/apigw-http-v2.json")).unwrap();
    event["rawPath"] = "/api/v1/auth/login/sso".into();
    event["requestContext"]["http"]["path"] = "/api/v1/auth/login/sso".into();
    event["requestContext"]["http"]["method"] = "POST".into();
    event["headers"]["content-type"] = "application/json".into();
    let token = gcgc(SM_SSO_SECRET, "lambda-user");
    let body = json!({ "token": token }).to_string();
    event["headers"]["content-length"] = body.len().to_string().into();
    event["body"] = body.into();
    let (first, _) = runtime.invoke(event.clone()).await;
    let (second, _) = runtime.invoke(event).await;
    process.stop().await;
    assert_eq!(first["statusCode"], 200, "{first}");
    assert_eq!(second["statusCode"], 401, "{second}");
    let body: Value = serde_json::from_str(second["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["detail"], "Token has already been used");
}

/// A TCP gate in front of `upstream`: each new connection's first bytes
/// (a request) are held until `expected` connections are waiting at once,
/// or for at most `wait`; then everything flows. Returns its address and
/// the most requests that waited at once.
async fn gate(
    upstream: String,
    expected: usize,
    wait: std::time::Duration,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let waiting = Arc::new(AtomicUsize::new(0));
    let held_at_once = Arc::new(AtomicUsize::new(0));
    let (open, _) = tokio::sync::watch::channel(false);
    let open = Arc::new(open);
    let (waiting_, held_) = (Arc::clone(&waiting), Arc::clone(&held_at_once));
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (waiting, held, open, upstream) = (
                Arc::clone(&waiting_),
                Arc::clone(&held_),
                Arc::clone(&open),
                upstream.clone(),
            );
            tokio::spawn(async move {
                let mut first = vec![0u8; 65536];
                let Ok(n @ 1..) = client.read(&mut first).await else {
                    return;
                };
                let now_waiting = waiting.fetch_add(1, Ordering::SeqCst) + 1;
                held.fetch_max(now_waiting, Ordering::SeqCst);
                if now_waiting >= expected {
                    open.send_replace(true);
                }
                let mut opened = open.subscribe();
                let _ = tokio::time::timeout(wait, opened.wait_for(|open| *open)).await;
                open.send_replace(true);
                waiting.fetch_sub(1, Ordering::SeqCst);
                let mut server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                server.write_all(&first[..n]).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (address, held_at_once)
}

/// Start-up reads its secrets at once, not one after another: every
/// version it needs (JWT_SECRET_ARN's three: current, previous, pending;
/// the SSO secret's one) is asked for before the first answer comes, so a
/// start waits for one round trip to Secrets Manager, not four.
#[tokio::test]
async fn start_up_asks_for_every_secret_at_once() {
    let (sm, vars) = secrets_manager_holding(&[
        ("JWT_SECRET_ARN", SM_JWT_SECRET),
        ("SSO_JWT_SECRET_ARN", SM_SSO_SECRET),
    ])
    .await;
    let upstream = sm.endpoint.trim_start_matches("http://").to_owned();
    let (gate_url, held_at_once) = gate(upstream, 4, std::time::Duration::from_secs(2)).await;
    let mut vars: Vec<(&str, &str)> = vars
        .iter()
        .filter(|(k, _)| *k != "AWS_ENDPOINT_URL")
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    vars.push(("AWS_ENDPOINT_URL", &gate_url));
    // The function binary: the test crate's own build reads no secrets.
    let (process, base) = start_function("sso-login", &vars).await;
    let r = client()
        .post(format!("{base}/api/v1/auth/login/sso"))
        .json(&json!({ "token": gcgc(SM_SSO_SECRET, "all-at-once-user") }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let logs = process.stop().await;
    assert!(logs.contains("read from AWS Secrets Manager"), "{logs}");
    assert_eq!(
        held_at_once.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "the four reads were sent together"
    );
}

/// The reads are signed as AWS checks them: moto with its access control on
/// recomputes each request's SigV4 signature (botocore's signer) and checks
/// the session token and the role's policy. With the temporary credentials
/// of an assumed role, the form Lambda gives, health reads its database URL;
/// a wrong secret key or session token stops it with the service's reason.
#[tokio::test]
async fn secrets_are_read_with_the_roles_credentials_and_a_signature_aws_checks() {
    // The setup's four calls go unsigned: the secret, then the role's three.
    let sm = SecretsManager::start_checking_signatures(4);
    let arn = sm
        .create(
            &format!("tms/database-url-{}", uuid_simple()),
            "sqlite::memory:",
        )
        .await;
    let role = sm.role_reading_secrets().await;
    let with = |key: &str, token: &str| -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", sm.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", role.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", key.into()),
            ("AWS_SESSION_TOKEN", token.into()),
            ("DATABASE_URL", String::new()),
            ("DATABASE_URL_SECRET_ARN", arn.clone()),
        ]
    };
    let good = with(&role.secret_access_key, &role.session_token);
    let vars: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (process, base) = start_function("health", &vars).await;
    let r = client().get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let logs = process.stop().await;
    assert!(logs.contains("read from AWS Secrets Manager"), "{logs}");
    assert!(
        !logs.contains(&role.secret_access_key) && !logs.contains(&role.session_token),
        "{logs}"
    );

    let refused = [
        (
            with("not-the-secret-key", &role.session_token),
            "SignatureDoesNotMatch",
        ),
        (
            with(&role.secret_access_key, "not-the-session-token"),
            "InvalidClientTokenId",
        ),
    ];
    for (vars, reason) in refused {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let stderr = refused_start("health", &vars, "DATABASE_URL_SECRET_ARN", reason).await;
        assert!(!stderr.contains(&role.session_token), "{stderr}");
    }
}
