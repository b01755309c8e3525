//! The platform's real conditions: instances killed mid-login (SIGKILL),
//! Redis frozen across the kill, a slow identity provider with logins in
//! flight, and many requests at once in one plain-HTTP instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use http::StatusCode;
use jsonwebtoken::Algorithm;
use serde_json::json;
use shared::db::Database;
use tests::services::{PgServer, RedisServer, TestDb, clear_redis_prefix, uuid_simple};
use tests::tokens::{sign, sso_claims, sso_token};
use tests::*;

use crate::sso::{jwk, rsa1_key};

const SSO_SECRET: &str = "platform-sso-secret-0123456789abcdef0123";
const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

async fn login(client: &reqwest::Client, base: &str, token: &str) -> reqwest::Response {
    client
        .post(format!("{base}/api/v1/auth/login/sso"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap()
}

/// The marks under `prefix` once every one is done, or as they are after
/// 5 s: a login's completion is sent as it answers, not awaited by it.
async fn completed_marks(redis_url: &str, prefix: &str) -> Vec<(String, String)> {
    let started = Instant::now();
    loop {
        let marks = marks(redis_url, prefix).await;
        if marks.iter().all(|(_, v)| v.starts_with("done:")) || started.elapsed().as_secs() > 5 {
            return marks;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Retries a login until it answers 200, for up to 15 s (an abandoned claim
/// is taken over after 3 s; the contract allows 60).
async fn logs_in_within(client: &reqwest::Client, base: &str, token: &str) -> (StatusCode, String) {
    let mut last = (StatusCode::IM_A_TEAPOT, String::new());
    for _ in 0..75 {
        let r = login(client, base, token).await;
        last = (r.status(), r.text().await.unwrap_or_default());
        if last.0 == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

/// The replay marks under `prefix`, with their values.
async fn marks(redis_url: &str, prefix: &str) -> Vec<(String, String)> {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut out = Vec::new();
    for key in keys {
        let value: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        out.extend(value.map(|v| (key, v)));
    }
    out
}

async fn wait_for_pending_mark(redis_url: &str, prefix: &str) {
    for _ in 0..100 {
        if marks(redis_url, prefix)
            .await
            .iter()
            .any(|(_, v)| v.starts_with("pending:"))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the login never claimed its token");
}

fn sso_vars<'a>(redis_url: &'a str, prefix: &'a str, db_url: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("SSO_JWT_SECRET", SSO_SECRET),
        ("REDIS_URL", redis_url),
        ("REDIS_KEY_PREFIX", prefix),
        ("DATABASE_URL", db_url),
    ]
}

#[tokio::test]
async fn an_instance_killed_between_claim_and_completion_leaves_the_token_usable_elsewhere() {
    let pg = PgServer::start();
    Database::open_postgres(&pg.url(), 1)
        .unwrap()
        .migrate()
        .await
        .unwrap();
    let prefix = format!("tms-test-{}:", uuid_simple());
    let db_url = pg.url();
    let vars = sso_vars(SHARED_REDIS, &prefix, &db_url);
    let (first, first_url) = start_function("sso-login", &vars).await;
    let client = client();
    let token = sso_token(SSO_SECRET, &sso_claims("killed-mid-login"));

    // The database hangs, so the login stays between its claim and its completion.
    pg.hang();
    let in_flight = tokio::spawn({
        let (client, url, token) = (client.clone(), first_url.clone(), token.clone());
        async move {
            client
                .post(format!("{url}/api/v1/auth/login/sso"))
                .json(&json!({"token": token}))
                .send()
                .await
        }
    });
    wait_for_pending_mark(SHARED_REDIS, &prefix).await;
    // The platform kills the instance there: nothing it held in memory survives.
    let mut first = first;
    first.child.kill().await.unwrap();
    assert!(
        in_flight.await.unwrap().is_err(),
        "the killed instance answered nothing"
    );
    pg.unhang();

    let (second, second_url) = start_function("sso-login", &vars).await;
    let (status, body) = logs_in_within(&client, &second_url, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = login(&client, &second_url, &token).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "and single-use again");
    let marks = completed_marks(SHARED_REDIS, &prefix).await;
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert!(marks[0].1.starts_with("done:"), "{marks:?}");
    second.stop().await;
    clear_redis_prefix(SHARED_REDIS, &prefix);
}

#[tokio::test]
async fn a_late_claim_from_a_frozen_redis_after_the_instance_died_does_not_lock_the_user_out() {
    let redis = RedisServer::start();
    let db = TestDb::sqlite();
    let prefix = format!("tms-test-{}:", uuid_simple());
    let redis_url = redis.url();
    let vars = sso_vars(&redis_url, &prefix, &db.url);
    let (mut first, first_url) = start_function("sso-login", &vars).await;
    let client = client();
    // A first login opens the instance's Redis connection while Redis is healthy.
    let warm = sso_token(SSO_SECRET, &sso_claims("warm"));
    assert_eq!(
        login(&client, &first_url, &warm).await.status(),
        StatusCode::OK
    );
    // Its completion lands before Redis freezes (it is not awaited by the answer).
    let warm_marks = completed_marks(&redis_url, &prefix).await;
    assert!(
        warm_marks.iter().all(|(_, v)| v.starts_with("done:")),
        "{warm_marks:?}"
    );

    let token = sso_token(SSO_SECRET, &sso_claims("frozen-across-the-kill"));
    redis.hang();
    let in_flight = tokio::spawn({
        let (client, url, token) = (client.clone(), first_url.clone(), token.clone());
        async move { login(&client, &url, &token).await.status() }
    });
    // The claim's SET now sits in the frozen server's socket buffer.
    tokio::time::sleep(Duration::from_millis(150)).await;
    first.child.kill().await.unwrap();
    let _ = in_flight.await;
    redis.unhang();

    // Redis woke and applied the dead instance's claim, after its caller was gone.
    let late: Vec<_> = marks(&redis_url, &prefix)
        .await
        .into_iter()
        .filter(|(_, v)| v.starts_with("pending:"))
        .collect();
    assert_eq!(late.len(), 1, "the late SET landed: {late:?}");

    let (second, second_url) = start_function("sso-login", &vars).await;
    let (status, body) = logs_in_within(&client, &second_url, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        login(&client, &second_url, &token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    second.stop().await;
}

/// A JWKS endpoint that holds each response for `delay`, saying while it does.
struct SlowJwks {
    url: String,
    fetching: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
}

impl SlowJwks {
    async fn serve(delay: Duration) -> Self {
        let keys = json!({ "keys": [jwk("rsa1")] });
        let fetching = Arc::new(AtomicBool::new(false));
        let fetches = Arc::new(AtomicUsize::new(0));
        let router = Router::new().route(
            "/jwks.json",
            axum::routing::get({
                let (fetching, fetches) = (fetching.clone(), fetches.clone());
                move || async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    fetching.store(true, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    fetching.store(false, Ordering::SeqCst);
                    axum::Json(keys)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url,
            fetching,
            fetches,
        }
    }
}

fn rs256(sub: &str, kid: &str) -> String {
    sign(&sso_claims(sub), Algorithm::RS256, &rsa1_key(), Some(kid))
}

async fn jwks_app(jwks_url: &str) -> TestApp {
    let prefix = format!("tms-test-{}:", uuid_simple());
    let (config, settings) = test_sections(&[
        ("SSO_JWKS_URL", jwks_url),
        ("REDIS_URL", SHARED_REDIS),
        ("REDIS_KEY_PREFIX", &prefix),
    ]);
    spawn_app(sso_login::build(&config, settings).await.unwrap(), &config).await
}

#[tokio::test]
async fn logins_with_a_known_key_never_wait_for_a_key_refetch() {
    let jwks = SlowJwks::serve(Duration::from_millis(1200)).await;
    let app = jwks_app(&jwks.url).await;
    // The first login fetches the key set (slowly) and caches it.
    let r = login(&app.client, &app.address, &rs256("first", "rsa-2026-01")).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());

    // An unknown kid starts a refetch that the endpoint holds.
    tokio::time::sleep(sso_login::verify::JWKS_MIN_REFRESH).await;
    let refetch = tokio::spawn({
        let (client, base) = (app.client.clone(), app.address.clone());
        async move {
            login(&client, &base, &rs256("rotated", "rsa-unknown"))
                .await
                .status()
        }
    });
    while !jwks.fetching.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Meanwhile, logins whose key is known all finish.
    let logins = (0..20).map(|i| {
        let token = rs256(&format!("known-{i}"), "rsa-2026-01");
        let (client, base) = (app.client.clone(), app.address.clone());
        async move { login(&client, &base, &token).await.status() }
    });
    let statuses = futures_util::future::join_all(logins).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert!(
        jwks.fetching.load(Ordering::SeqCst),
        "every known-key login finished while the refetch was still held"
    );
    assert_eq!(refetch.await.unwrap(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_key_fetch_follows_no_redirect() {
    let jwks = SlowJwks::serve(Duration::ZERO).await;
    // An endpoint that sends the fetch elsewhere, even to the real keys.
    let target = jwks.url.clone();
    let router = Router::new().route(
        "/moved",
        axum::routing::get(move || async move { (StatusCode::FOUND, [("location", target)]) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let moved = format!("http://{}/moved", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let app = jwks_app(&moved).await;
    let r = login(
        &app.client,
        &app.address,
        &rs256("redirected", "rsa-2026-01"),
    )
    .await;
    // No keys to be had: the key server is failing (503), and the keys behind
    // the redirect were never fetched.
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_storm_of_unknown_kids_costs_the_identity_provider_one_fetch() {
    let jwks = SlowJwks::serve(Duration::from_millis(200)).await;
    let app = jwks_app(&jwks.url).await;
    let storm = (0..40).map(|i| {
        let token = rs256(&format!("storm-{i}"), &format!("kid-{i}"));
        let (client, base) = (app.client.clone(), app.address.clone());
        async move { login(&client, &base, &token).await.status() }
    });
    let statuses = futures_util::future::join_all(storm).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    // The same unknown kids again: answered from memory.
    for i in 0..5 {
        let r = login(
            &app.client,
            &app.address,
            &rs256("again", &format!("kid-{i}")),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn one_instance_serves_256_concurrent_requests_from_its_pool() {
    let db = TestDb::postgres().await;
    let (function, base) = start_function(
        "conversations",
        &[("DATABASE_URL", db.url.as_str()), ("DB_POOL_SIZE", "16")],
    )
    .await;
    let pool = Database::open_postgres(&db.url, 1).unwrap();
    let user = sso_login::users::upsert_user(&pool, "pool-user", None, None)
        .await
        .unwrap();
    let token = tests::tokens::api_token(TEST_JWT_SECRET, user.id);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let requests = (0..256).map(|i| {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        async move {
            let r = if i % 4 == 0 {
                client
                    .post(format!("{base}/api/v1/conversations/"))
                    .bearer_auth(&token)
                    .json(&json!({ "title": format!("pool {i}") }))
                    .send()
                    .await
            } else {
                client
                    .get(format!("{base}/api/v1/conversations/"))
                    .bearer_auth(&token)
                    .send()
                    .await
            };
            r.map(|r| r.status()).map_err(|e| format!("{e:?}"))
        }
    });
    let outcomes = futures_util::future::join_all(requests).await;
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| !matches!(o, Ok(s) if s.is_success()))
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    // The pool grew past the two connections it used to be capped at, and no
    // further than its setting.
    let Database::Postgres(admin) = &pool else {
        unreachable!()
    };
    // The function's sessions: not this test's own two.
    let test_pool_pid: i32 = on_pool_session(admin, "SELECT pg_backend_pid()").await;
    let connections: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'tms-chat' \
         AND pid <> pg_backend_pid() AND pid <> $1",
    )
    .bind(test_pool_pid)
    .fetch_one(&mut sql_session(admin).await)
    .await
    .unwrap();
    assert!((3..=16).contains(&connections), "{connections} connections");
    function.stop().await;
}
