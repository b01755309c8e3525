//! SSO login with single-use GCGC tokens, against real Redis: races, faults,
//! two instances, JWKS, and the deployment checklist end to end.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use shared::clock::unix_secs as now_secs;
use shared::db::Database;
use shared::tokens::ApiTokens;
use tests::services::{PgServer, RedisServer, TestDb, uuid_simple};
use tests::tokens::{sign as gcgc_with, sso_claims as claims, sso_token};
use tests::*;
use tokio::sync::RwLock;

pub(crate) const SSO_SECRET: &str = "test-sso-secret-0123456789abcdef0123456789";
pub(crate) const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

pub(crate) fn gcgc(claims: &Value) -> String {
    sso_token(SSO_SECRET, claims)
}

/// An sso-login (and conversations) app on a random port, with its own key
/// prefix on the given Redis and its own database.
pub(crate) struct Sso {
    app: TestApp,
    pub(crate) prefix: String,
    redis_url: String,
    _db: TestDb,
}

impl Sso {
    pub(crate) async fn start(redis_url: &str, db: TestDb, extra: &[(&str, &str)]) -> Self {
        let prefix = format!("tms-test-{}:", uuid_simple());
        Self::start_with_prefix(redis_url, prefix, db, extra).await
    }

    /// Another instance of the same deployment: the same Redis and prefix.
    async fn another_instance(&self, redis_url: &str) -> Self {
        Self::start_with_prefix(redis_url, self.prefix.clone(), TestDb::sqlite(), &[]).await
    }

    async fn start_with_prefix(
        redis_url: &str,
        prefix: String,
        db: TestDb,
        extra: &[(&str, &str)],
    ) -> Self {
        let app = spawn_instance(redis_url, &prefix, &db, extra).await;
        Self {
            app,
            prefix,
            redis_url: redis_url.to_owned(),
            _db: db,
        }
    }

    /// On the machine's Redis, with PostgreSQL behind a transaction pooler
    /// (as a fleet reaches it): the suite runs through the pooler.
    async fn shared(extra: &[(&str, &str)]) -> Self {
        Self::start(SHARED_REDIS, TestDb::pooled().await, extra).await
    }

    /// Verifying GCGC tokens with the keys of a JWKS document, and no secret.
    async fn with_jwks(url: &str) -> Self {
        Self::shared(&[("SSO_JWKS_URL", url), ("SSO_JWT_SECRET", "")]).await
    }

    pub(crate) async fn login(&self, token: &str) -> reqwest::Response {
        login_at(&self.app.client, &self.app.address, token).await
    }

    async fn keys(&self) -> Vec<String> {
        keys_at(&self.redis_url, &self.prefix).await
    }

    /// The TTL of a completed (done) mark. The completion is sent as the
    /// login answers, not awaited by it: this waits for it to land.
    async fn done_mark_ttl(&self, key: &str) -> i64 {
        let client = redis::Client::open(self.redis_url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let started = Instant::now();
        loop {
            let (value, ttl): (Option<String>, i64) = redis::pipe()
                .get(key)
                .ttl(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            if value.as_deref().is_some_and(|v| v.starts_with("done:"))
                || started.elapsed() > Duration::from_secs(5)
            {
                assert!(
                    value.unwrap_or_default().starts_with("done:"),
                    "never completed"
                );
                return ttl;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// An instance of sso-login and conversations on this Redis (with this key
/// prefix) and database, with `extra` settings.
pub(crate) async fn spawn_instance(
    redis_url: &str,
    prefix: &str,
    db: &TestDb,
    extra: &[(&str, &str)],
) -> TestApp {
    let mut vars = vec![
        ("SSO_JWT_SECRET", SSO_SECRET),
        ("REDIS_URL", redis_url),
        ("REDIS_KEY_PREFIX", prefix),
    ];
    vars.extend(db.vars());
    vars.extend_from_slice(extra);
    let (config, settings): (_, sso_login::Settings) = test_sections(&vars);
    let jwt = settings.jwt.clone();
    let routes = sso_login::build(&config, settings)
        .await
        .unwrap()
        .merge(conversations::build(&config, jwt).await.unwrap());
    spawn_app(routes, &config).await
}

/// The keys under `prefix` on the Redis at `url`.
async fn keys_at(url: &str, prefix: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

impl Drop for Sso {
    fn drop(&mut self) {
        tests::services::clear_redis_prefix(&self.redis_url, &self.prefix);
    }
}

pub(crate) async fn login_at(
    client: &reqwest::Client,
    base: &str,
    token: &str,
) -> reqwest::Response {
    client
        .post(format!("{base}/api/v1/auth/login/sso"))
        .header("Origin", ALLOWED_ORIGIN)
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap()
}

pub(crate) async fn detail(r: reqwest::Response) -> String {
    r.json::<Value>().await.unwrap()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Retries a login until it answers 200, for a few seconds at most.
pub(crate) async fn logs_in_eventually(sso: &Sso, token: &str) -> (StatusCode, String) {
    let mut last = (StatusCode::IM_A_TEAPOT, String::new());
    for _ in 0..40 {
        let r = sso.login(token).await;
        let status = r.status();
        last = (status, r.text().await.unwrap_or_default());
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// The token logs in within a few seconds, and is single-use again after.
pub(crate) async fn logs_in_once_eventually(sso: &Sso, token: &str) {
    let (status, body) = logs_in_eventually(sso, token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = sso.login(token).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "and it is single-use again"
    );
}

#[tokio::test]
async fn a_token_logs_in_once_and_the_replay_is_401() {
    let sso = Sso::shared(&[]).await;
    let c = claims("user-1");
    let token = gcgc(&c);
    let r = sso.login(&token).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["access-control-allow-origin"], ALLOWED_ORIGIN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 720 * 3600);
    assert_eq!(body["user"]["email"], "user-1@example.com");
    assert_eq!(body["user"]["name"], "Test User");
    let mut fields: Vec<&String> = body["user"].as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        ["email", "id", "name"],
        "the user as the contract gives it"
    );
    let api = ApiTokens::new(TEST_JWT_SECRET.as_bytes(), Duration::from_secs(720 * 3600));
    let api_claims = api.verify(body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(api_claims.sub, body["user"]["id"].to_string());
    assert_eq!(api_claims.exp - api_claims.iat, 720 * 3600, "720 hours");

    let r = sso.login(&token).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(detail(r).await, "Token has already been used");

    // The same user logging in again with a new token is the same user, updated.
    let mut again = claims("user-1");
    again["name"] = "Renamed".into();
    let body: Value = sso.login(&gcgc(&again)).await.json().await.unwrap();
    assert_eq!(body["user"]["name"], "Renamed");
}

#[tokio::test]
async fn of_fifty_concurrent_logins_with_one_token_exactly_one_wins() {
    let sso = Sso::shared(&[]).await;
    let token = gcgc(&claims("racer"));
    let requests = (0..50).map(|_| sso.login(&token));
    let responses = futures_util::future::join_all(requests).await;
    let mut ok = 0;
    for r in responses {
        match r.status() {
            StatusCode::OK => ok += 1,
            StatusCode::UNAUTHORIZED => assert_eq!(detail(r).await, "Token has already been used"),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn the_mark_is_a_hashed_key_that_expires_with_the_token() {
    let sso = Sso::shared(&[]).await;
    let mut c = claims("ttl");
    c["exp"] = (now_secs() + 7200).into();
    let token = gcgc(&c);
    assert_eq!(sso.login(&token).await.status(), StatusCode::OK);
    let keys = sso.keys().await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    assert!(key.starts_with(&format!("{}sso:jti:", sso.prefix)), "{key}");
    assert!(!key.contains(c["jti"].as_str().unwrap()) && !key.contains(&token));
    let ttl = sso.done_mark_ttl(key).await;
    assert!((7200 - 10..=7200 + 30 + 5).contains(&ttl), "TTL {ttl}");

    // Without a jti, the key comes from a hash of the whole token.
    let mut no_jti = claims("no-jti");
    no_jti.as_object_mut().unwrap().remove("jti");
    assert_eq!(sso.login(&gcgc(&no_jti)).await.status(), StatusCode::OK);
    let keys = sso.keys().await;
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("{}sso:token:", sso.prefix))),
        "{keys:?}"
    );
}

#[tokio::test]
async fn invalid_tokens_and_bodies_are_refused_and_burn_nothing() {
    let sso = Sso::shared(&[
        ("SSO_ISSUER", "https://gcgc.example.com"),
        ("SSO_AUDIENCE", "tms-chat"),
    ])
    .await;
    let now = now_secs();
    let good = |sub: &str| {
        let mut c = claims(sub);
        c["iss"] = "https://gcgc.example.com".into();
        c["aud"] = "tms-chat".into();
        c
    };
    let with = |key: &str, value: Value| {
        let mut c = good("u");
        c[key] = value;
        c
    };
    let without = |key: &str| {
        let mut c = good("u");
        c.as_object_mut().unwrap().remove(key);
        c
    };
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let hs = |c: &Value| gcgc(c);
    let cases: Vec<(&str, String)> = vec![
        ("expired", hs(&with("exp", (now - 3600).into()))),
        ("not yet valid", hs(&with("nbf", (now + 3600).into()))),
        (
            "issued in the future",
            hs(&with("iat", (now + 3600).into())),
        ),
        (
            "lives too long",
            hs(&with("exp", (now + 90 * 24 * 3600).into())),
        ),
        (
            "wrong issuer",
            hs(&with("iss", "https://evil.example".into())),
        ),
        ("wrong audience", hs(&with("aud", "other".into()))),
        ("no exp", hs(&without("exp"))),
        ("no issuer, though one is configured", hs(&without("iss"))),
        ("no audience, though one is configured", hs(&without("aud"))),
        ("no sub", hs(&without("sub"))),
        (
            "bad signature",
            gcgc_with(
                &good("u"),
                Algorithm::HS256,
                &EncodingKey::from_secret(b"another-secret-0123456789abcdef01234"),
                None,
            ),
        ),
        (
            "HS512 is not expected",
            gcgc_with(
                &good("u"),
                Algorithm::HS512,
                &EncodingKey::from_secret(SSO_SECRET.as_bytes()),
                None,
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&good("u"))
            ),
        ),
        ("garbage", "not-a-jwt".into()),
        ("empty", "".into()),
    ];
    for (name, token) in &cases {
        let r = sso.login(token).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert!(!detail(r).await.is_empty());
    }
    for (body, content_type, status) in [
        ("{}", "application/json", StatusCode::UNPROCESSABLE_ENTITY),
        (
            "{\"token\": 5}",
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "{\"token\": ",
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "token=abc",
            "application/x-www-form-urlencoded",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        let r = sso
            .app
            .client
            .post(sso.app.url("/api/v1/auth/login/sso"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
        assert!(!detail(r).await.is_empty());
    }
    assert_eq!(sso.keys().await, Vec::<String>::new(), "nothing was marked");
    // And a valid token still works.
    assert_eq!(sso.login(&hs(&good("u"))).await.status(), StatusCode::OK);
}

/// The serverless case: two instances, one Redis, one database behind a
/// transaction pooler.
#[tokio::test]
async fn a_replay_on_another_instance_is_blocked() {
    let db = TestDb::pooled().await;
    let prefix = format!("tms-test-{}:", uuid_simple());
    let mut vars = vec![
        ("SSO_JWT_SECRET", SSO_SECRET),
        ("REDIS_URL", SHARED_REDIS),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
    ];
    vars.extend(db.vars());
    let (first, first_url) = start_function("sso-login", &vars).await;
    let (second, second_url) = start_function("sso-login", &vars).await;
    let token = gcgc(&claims("two-instances"));
    let c = client();
    assert_eq!(
        login_at(&c, &first_url, &token).await.status(),
        StatusCode::OK
    );
    let r = login_at(&c, &second_url, &token).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(detail(r).await, "Token has already been used");
    first.stop().await;
    let logs = second.stop().await;
    tests::services::clear_redis_prefix(SHARED_REDIS, &prefix);
    assert!(!logs.contains(&token), "the token reached a log");
}

#[tokio::test]
async fn a_stopped_redis_is_a_fast_503_and_the_token_works_once_it_is_back() {
    let mut redis = RedisServer::start();
    let sso = Sso::start(&redis.url(), TestDb::pooled().await, &[]).await;
    let token = gcgc(&claims("redis-down"));
    redis.stop();
    let started = Instant::now();
    let r = sso.login(&token).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a bound against hangs: {:?}",
        started.elapsed()
    );
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(
        r.json::<Value>()
            .await
            .unwrap()
            .get("access_token")
            .is_none()
    );

    redis.resume_serving();
    logs_in_once_eventually(&sso, &token).await;
}

#[tokio::test]
async fn a_hung_redis_is_a_fast_503_and_its_late_claim_is_released() {
    let redis = RedisServer::start();
    let sso = Sso::start(&redis.url(), TestDb::pooled().await, &[]).await;
    // A first login opens the connection while Redis is healthy.
    assert_eq!(
        sso.login(&gcgc(&claims("warm"))).await.status(),
        StatusCode::OK
    );
    let token = gcgc(&claims("redis-hung"));
    redis.hang();
    let started = Instant::now();
    let r = sso.login(&token).await;
    let took = started.elapsed();
    redis.unhang();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        took < Duration::from_secs(5),
        "a bound against hangs: {took:?}"
    );

    // Redis woke up and may have applied the queued SET: the refused user is not locked out.
    logs_in_once_eventually(&sso, &token).await;
}

/// A proxy in front of Redis that, once armed, passes the next command that
/// carries a `done:` value (the completion of a claim), then cuts every
/// connection and refuses new ones for its outage: Redis applied the
/// completion, its reply is lost, and nothing gets through until the outage
/// ends (as when Redis is killed or frozen right after it). With no outage,
/// only the connection that carried the completion breaks.
struct ReplyLosingProxy {
    url: String,
    /// Redis itself, past the proxy.
    upstream_url: String,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

impl ReplyLosingProxy {
    async fn start(upstream: u16, outage: Duration) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let outage_until = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let in_outage = {
            let outage_until = outage_until.clone();
            move || {
                outage_until
                    .lock()
                    .unwrap()
                    .is_some_and(|t| Instant::now() < t)
            }
        };
        let proxy_armed = armed.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if in_outage() {
                    continue; // dropped: the connection closes at once
                }
                let Ok(mut redis) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let (armed, outage_until, in_outage) =
                    (proxy_armed.clone(), outage_until.clone(), in_outage.clone());
                tokio::spawn(async move {
                    let (mut from_client, mut from_redis) = ([0u8; 16384], [0u8; 16384]);
                    loop {
                        tokio::select! {
                            n = client.read(&mut from_client) => {
                                let Ok(n @ 1..) = n else { break };
                                if in_outage() || redis.write_all(&from_client[..n]).await.is_err() {
                                    break;
                                }
                                let completion = from_client[..n].windows(5).any(|w| w == b"done:");
                                if completion && armed.swap(false, Ordering::SeqCst) {
                                    // Redis applies it; its reply is never passed on.
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    *outage_until.lock().unwrap() = Some(Instant::now() + outage);
                                    break;
                                }
                            }
                            n = redis.read(&mut from_redis) => {
                                let Ok(n @ 1..) = n else { break };
                                if in_outage() || client.write_all(&from_redis[..n]).await.is_err() {
                                    break;
                                }
                            }
                            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                                if in_outage() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
        Self {
            url,
            upstream_url: format!("redis://127.0.0.1:{upstream}"),
            armed,
        }
    }
}

/// An instance behind a [`ReplyLosingProxy`], warmed up: a first login
/// loads the completion script into Redis, so that the armed completion
/// runs there instead of asking for the script.
async fn sso_behind(proxy: &ReplyLosingProxy) -> Sso {
    let sso = Sso::start(&proxy.url, TestDb::pooled().await, &[]).await;
    assert_eq!(
        sso.login(&gcgc(&claims("warm"))).await.status(),
        StatusCode::OK
    );
    done_marks_reach(&proxy.upstream_url, &sso.prefix, 1).await;
    sso
}

/// The done marks under the instance's prefix, read past any proxy.
async fn done_marks(redis_url: &str, prefix: &str) -> usize {
    let keys = keys_at(redis_url, prefix).await;
    if keys.is_empty() {
        return 0;
    }
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let marks: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    marks
        .iter()
        .flatten()
        .filter(|m| m.starts_with("done:"))
        .count()
}

/// Waits until `count` done marks are there: a login's completion is sent
/// as it answers, not awaited by the answer.
async fn done_marks_reach(redis_url: &str, prefix: &str, count: usize) {
    let started = Instant::now();
    while done_marks(redis_url, prefix).await < count {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the completion never landed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(done_marks(redis_url, prefix).await, count);
}

/// Retries a login as a client does after a 503, and returns the first
/// answer that is not a 503.
async fn first_answer_but_503(sso: &Sso, token: &str) -> (StatusCode, String) {
    let started = Instant::now();
    loop {
        let r = sso.login(token).await;
        if r.status() != StatusCode::SERVICE_UNAVAILABLE
            || started.elapsed() > Duration::from_secs(10)
        {
            return (r.status(), r.text().await.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Redis applied a completion whose reply was lost, and stays unreachable
/// for a second: the login was recorded in the database with the user, so
/// it answers 200 (the record, not the mark, makes the token used), and the
/// token is refused afterwards on every instance, once Redis is back too.
#[tokio::test]
async fn a_completion_whose_reply_is_lost_still_logs_in_once() {
    let redis = RedisServer::start();
    let proxy = ReplyLosingProxy::start(redis.port, Duration::from_millis(1250)).await;
    let sso = sso_behind(&proxy).await;
    let other = sso.another_instance(&proxy.url).await;
    let token = gcgc(&claims("reply-lost"));
    let marks = done_marks(&proxy.upstream_url, &sso.prefix).await;
    proxy.armed.store(true, Ordering::SeqCst);
    let r = sso.login(&token).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    // The completion was applied.
    done_marks_reach(&proxy.upstream_url, &sso.prefix, marks + 1).await;
    for instance in [&sso, &other] {
        let (status, body) = first_answer_but_503(instance, &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
}

/// The connection breaks after Redis applied a completion, but Redis is
/// reachable: the completion is sent once more on a fresh connection, which
/// recognises its own done mark, and replays are refused by Redis itself.
#[tokio::test]
async fn a_completion_whose_connection_breaks_succeeds_on_a_fresh_one() {
    let redis = RedisServer::start();
    let proxy = ReplyLosingProxy::start(redis.port, Duration::ZERO).await;
    let sso = sso_behind(&proxy).await;
    let token = gcgc(&claims("connection-breaks"));
    proxy.armed.store(true, Ordering::SeqCst);
    let r = sso.login(&token).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let started = Instant::now();
    while proxy.armed.load(Ordering::SeqCst) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no completion sent"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The warm-up's mark and this one, completed past the broken connection.
    done_marks_reach(&proxy.upstream_url, &sso.prefix, 2).await;
    assert_eq!(sso.login(&token).await.status(), StatusCode::UNAUTHORIZED);
}

/// A proxy in front of Redis that, once armed, holds back Redis's replies
/// from the moment it passes a completion (a command carrying a `done:`
/// value) until [`HELD_FOR`] has passed: shorter than the function's Redis
/// timeout, so a login that waited for the completion would still succeed,
/// only after the hold.
struct ReplyHoldingProxy {
    url: String,
    /// Holds the reply to the next command carrying `marker` once set.
    armed: Arc<std::sync::atomic::AtomicBool>,
    /// Whether the held reply has reached the function.
    delivered: Arc<std::sync::atomic::AtomicBool>,
}

const HELD_FOR: Duration = Duration::from_millis(350);

impl ReplyHoldingProxy {
    /// `marker`: what the held command carries (`done:` the completion,
    /// `pending:` the claim).
    async fn start(upstream: &str, marker: &'static [u8]) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = upstream.trim_start_matches("redis://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let delivered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (proxy_armed, proxy_delivered) = (armed.clone(), delivered.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(mut redis) = tokio::net::TcpStream::connect(upstream.as_str()).await else {
                    continue;
                };
                let (armed, delivered) = (proxy_armed.clone(), proxy_delivered.clone());
                tokio::spawn(async move {
                    let (mut from_client, mut from_redis) = ([0u8; 16384], [0u8; 16384]);
                    let mut held_since = None;
                    loop {
                        tokio::select! {
                            n = client.read(&mut from_client) => {
                                let Ok(n @ 1..) = n else { break };
                                if redis.write_all(&from_client[..n]).await.is_err() {
                                    break;
                                }
                                let marked = from_client[..n].windows(marker.len()).any(|w| w == marker);
                                if marked && armed.swap(false, Ordering::SeqCst) {
                                    held_since = Some(Instant::now());
                                }
                            }
                            n = redis.read(&mut from_redis) => {
                                let Ok(n @ 1..) = n else { break };
                                if let Some(since) = held_since.take() {
                                    tokio::time::sleep_until((since + HELD_FOR).into()).await;
                                    delivered.store(true, Ordering::SeqCst);
                                }
                                if client.write_all(&from_redis[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
        Self {
            url,
            armed,
            delivered,
        }
    }
}

/// The login's critical path is its claim and its record: the completion
/// of the mark is sent as it answers, and the answer does not wait for
/// Redis's reply to it (a round trip fewer; issue 25). The mark is done
/// once that reply comes, and replays are refused all along.
#[tokio::test]
async fn a_login_answers_without_waiting_for_its_completion() {
    let proxy = ReplyHoldingProxy::start(SHARED_REDIS, b"done:").await;
    let sso = Sso::start(&proxy.url, TestDb::sqlite(), &[]).await;
    // A first login loads the completion script, so the armed one is EVALSHA.
    assert_eq!(
        sso.login(&gcgc(&claims("warm"))).await.status(),
        StatusCode::OK
    );
    done_marks_reach(SHARED_REDIS, &sso.prefix, 1).await;

    let token = gcgc(&claims("two-round-trips"));
    proxy.armed.store(true, Ordering::SeqCst);
    let r = sso.login(&token).await;
    let answered_before_the_reply = !proxy.delivered.load(Ordering::SeqCst);
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    assert!(
        answered_before_the_reply,
        "the login waited for the completion's reply"
    );
    // Before the completion's reply, and after it, the token is used.
    assert_eq!(sso.login(&token).await.status(), StatusCode::UNAUTHORIZED);
    done_marks_reach(SHARED_REDIS, &sso.prefix, 2).await;
    assert_eq!(sso.login(&token).await.status(), StatusCode::UNAUTHORIZED);
    tests::services::clear_redis_prefix(SHARED_REDIS, &sso.prefix);
}

/// A client that leaves mid-login does not undo it: the login runs to its
/// end (its record, its API token, its mark). A request whose client left
/// gets no access line, so the login writes one line of its own, with the
/// request's id and its user.
#[tokio::test]
async fn a_login_whose_client_left_runs_to_its_end_and_says_so() {
    let proxy = ReplyHoldingProxy::start(SHARED_REDIS, b"pending:").await;
    let db = TestDb::sqlite();
    let prefix = format!("tms-test-{}:", uuid_simple());
    let (process, base) = start_function(
        "sso-login",
        &[
            ("SSO_JWT_SECRET", SSO_SECRET),
            ("REDIS_URL", &proxy.url),
            ("REDIS_KEY_PREFIX", &prefix),
            ("DATABASE_URL", &db.url),
        ],
    )
    .await;
    let token = gcgc(&claims("client-left"));
    let login = || {
        client()
            .post(format!("{base}/api/v1/auth/login/sso"))
            .json(&json!({ "token": token }))
    };
    proxy.armed.store(true, Ordering::SeqCst);
    // The claim's reply is held longer than this client waits.
    let left = login().timeout(Duration::from_millis(100)).send().await;
    assert!(left.is_err_and(|e| e.is_timeout()));
    while !proxy.delivered.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The login ran to its end: its record is written, and the token is
    // used. (Its mark stays pending: the claim's reply came as late as the
    // proxy held it, too late for the completion's budget.)
    let Database::Sqlite(records) = Database::open_sqlite(&db.url).await.unwrap() else {
        unreachable!("a sqlite: URL")
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sso_logins")
        .fetch_one(&records)
        .await
        .unwrap()
        == 0
    {
        assert!(Instant::now() < deadline, "the login was not recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let replay = login().send().await.unwrap();
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    let stderr = process.stop().await;
    assert!(!stderr.contains(&token), "the token reached the log");
    let completed: Vec<Value> = json_lines(&stderr)
        .filter(|l| l["message"] == "login completed after its client left")
        .collect();
    assert_eq!(completed.len(), 1, "{stderr}");
    let request_id = completed[0]["request_id"].as_str().unwrap();
    assert!(
        uuid::Uuid::parse_str(request_id).is_ok(),
        "{}",
        completed[0]
    );
    let users: Vec<i64> = json_lines(&stderr)
        .filter_map(|l| l["user_id"].as_i64())
        .collect();
    assert_eq!(
        users,
        [completed[0]["user_id"].as_i64().unwrap()],
        "{stderr}"
    );
    tests::services::clear_redis_prefix(SHARED_REDIS, &prefix);
}

#[tokio::test]
async fn a_database_failure_after_the_claim_releases_it() {
    let mut pg = PgServer::start();
    Database::open_postgres(&pg.url(), 2)
        .unwrap()
        .migrate()
        .await
        .unwrap();
    let prefix = format!("tms-test-{}:", uuid_simple());
    let (config, settings) = test_sections(&[
        ("SSO_JWT_SECRET", SSO_SECRET),
        ("REDIS_URL", SHARED_REDIS),
        ("REDIS_KEY_PREFIX", &prefix),
        ("DATABASE_URL", &pg.url()),
    ]);
    let app = spawn_app(sso_login::build(&config, settings).await.unwrap(), &config).await;
    let token = gcgc(&claims("db-down"));
    pg.stop();
    let r = login_at(&app.client, &app.address, &token).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    pg.resume_serving();
    let r = login_at(&app.client, &app.address, &token).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the claim was released: {}",
        r.text().await.unwrap()
    );
    let r = login_at(&app.client, &app.address, &token).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    tests::services::clear_redis_prefix(SHARED_REDIS, &prefix);
}

/// The deployment checklist over HTTP: SSO login → API token → conversations load
/// → the same SSO token again → 401.
#[tokio::test]
async fn sso_login_then_conversations_then_replay() {
    let sso = Sso::shared(&[]).await;
    let token = gcgc(&claims("e2e"));
    let body: Value = sso.login(&token).await.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap();
    let r = sso
        .app
        .client
        .post(sso.app.url("/api/v1/conversations/"))
        .bearer_auth(access)
        .json(&json!({"title": "first"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = sso
        .app
        .client
        .get(sso.app.url("/api/v1/conversations/"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["items"][0]["title"],
        "first"
    );
    let r = sso
        .app
        .client
        .get(sso.app.url("/api/v1/conversations/"))
        .bearer_auth("invalid_token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = sso.login(&token).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// A JWKS document served by the test, which it can rotate.
struct Jwks {
    url: String,
    keys: Arc<RwLock<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

pub(crate) fn rsa1_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(include_bytes!("../../fixtures/keys/rsa1.pem")).unwrap()
}

pub(crate) fn jwk(name: &str) -> Value {
    let all: Value = serde_json::from_str(include_str!("../../fixtures/keys/jwks.json")).unwrap();
    all[name].clone()
}

impl Jwks {
    async fn serve(initial: Vec<Value>) -> Self {
        let keys = Arc::new(RwLock::new(initial));
        let fetches = Arc::new(AtomicUsize::new(0));
        let router = Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get({
                let (keys, fetches) = (keys.clone(), fetches.clone());
                move || async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    axum::Json(json!({ "keys": *keys.read().await }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, keys, fetches }
    }
}

#[tokio::test]
async fn jwks_keys_verify_rs256_and_es256_rotate_and_refuse_confusion() {
    let jwks = Jwks::serve(vec![jwk("rsa1"), jwk("ec1")]).await;
    let sso = Sso::with_jwks(&jwks.url).await;
    let rsa1 = rsa1_key();
    let rsa2 = EncodingKey::from_rsa_pem(include_bytes!("../../fixtures/keys/rsa2.pem")).unwrap();
    let ec1 = EncodingKey::from_ec_pem(include_bytes!("../../fixtures/keys/ec1.pem")).unwrap();

    let r = sso
        .login(&gcgc_with(
            &claims("rs"),
            Algorithm::RS256,
            &rsa1,
            Some("rsa-2026-01"),
        ))
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let r = sso
        .login(&gcgc_with(
            &claims("es"),
            Algorithm::ES256,
            &ec1,
            Some("ec-2026-01"),
        ))
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());

    // Algorithm confusion: HS256 keyed with the RSA public key, and algorithm swaps.
    let public_pem = include_bytes!("../../fixtures/keys/rsa1.pub.pem");
    let confused = gcgc_with(
        &claims("hs"),
        Algorithm::HS256,
        &EncodingKey::from_secret(public_pem),
        Some("rsa-2026-01"),
    );
    assert_eq!(
        sso.login(&confused).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let swapped = gcgc_with(&claims("swap"), Algorithm::RS256, &rsa1, Some("ec-2026-01"));
    assert_eq!(sso.login(&swapped).await.status(), StatusCode::UNAUTHORIZED);
    let no_kid = gcgc_with(&claims("nokid"), Algorithm::RS256, &rsa1, None);
    assert_eq!(sso.login(&no_kid).await.status(), StatusCode::UNAUTHORIZED);

    // Rotation: a new key is published; a token signed with it is accepted
    // once the cache may refetch, and unknown kids do not hammer the server.
    let fetches_before = jwks.fetches.load(Ordering::SeqCst);
    let rotated = gcgc_with(
        &claims("rotated"),
        Algorithm::RS256,
        &rsa2,
        Some("rsa-2026-02"),
    );
    for _ in 0..5 {
        let r = sso
            .login(&gcgc_with(
                &claims("unknown"),
                Algorithm::RS256,
                &rsa2,
                Some("rsa-2026-02"),
            ))
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert!(
        jwks.fetches.load(Ordering::SeqCst) - fetches_before <= 1,
        "refetches are rate-limited"
    );
    jwks.keys.write().await.push(jwk("rsa2"));
    tokio::time::sleep(sso_login::verify::JWKS_MIN_REFRESH + Duration::from_millis(200)).await;
    let r = sso.login(&rotated).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn an_unreachable_jwks_is_503_not_401() {
    let dead = format!("http://127.0.0.1:{}/jwks.json", free_port());
    let sso = Sso::with_jwks(&dead).await;
    let rsa1 = rsa1_key();
    // Not only the request that tried the fetch: until a fetch succeeds, a
    // valid token is "unavailable", never "unknown signing key".
    for _ in 0..2 {
        let token = gcgc_with(&claims("rs"), Algorithm::RS256, &rsa1, Some("rsa-2026-01"));
        assert_eq!(
            sso.login(&token).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    assert_eq!(sso.keys().await, Vec::<String>::new());
}
