//! Sessions that end (SPEC.md, "Ending sessions"): sign out and sign out
//! everywhere, refused on every instance at once and on every backend,
//! durable past a Redis flush; the operator's command; and the API token
//! key rotating, step by step as docs/deploy.md tells it, with nobody
//! signed out.

use http::StatusCode;
use serde_json::{Value, json};
use shared::clock::unix_secs;
use shared::db::Database;
use shared::tokens::ApiTokens;
use tests::services::{RedisServer, TestDb, uuid_simple};
use tests::*;

use crate::conversations::{Backend, on_every_backend};
use crate::sso::{SHARED_REDIS, gcgc};

pub(crate) const SIGN_OUT: &str = "/api/v1/auth/logout";
pub(crate) const SIGN_OUT_EVERYWHERE: &str = "/api/v1/auth/logout/all";
const CONVERSATIONS: &str = "/api/v1/conversations/";

/// Instances of sso-login and conversations on one database and one Redis
/// (with a key prefix of its own), as a deployment's fleet shares them.
struct Deployment {
    instances: Vec<TestApp>,
    db: TestDb,
    redis_url: String,
    prefix: String,
}

impl Deployment {
    async fn start(backend: Backend, instances: usize) -> Self {
        Self::on(backend.database().await, SHARED_REDIS, instances, &[]).await
    }

    async fn on(db: TestDb, redis_url: &str, instances: usize, extra: &[(&str, &str)]) -> Self {
        let prefix = format!("tms-test-{}:", uuid_simple());
        let mut deployment = Self {
            instances: Vec::new(),
            db,
            redis_url: redis_url.to_owned(),
            prefix,
        };
        for _ in 0..instances {
            let instance = deployment.instance_with(extra).await;
            deployment.instances.push(instance);
        }
        deployment
    }

    /// One more instance of this deployment, with `extra` settings.
    async fn instance_with(&self, extra: &[(&str, &str)]) -> TestApp {
        crate::sso::spawn_instance(&self.redis_url, &self.prefix, &self.db, extra).await
    }

    /// An API token for `sub`, by a login with a fresh GCGC token at `instance`.
    async fn login(&self, instance: usize, sub: &str) -> String {
        login_at(&self.instances[instance], sub).await
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        tests::services::clear_redis_prefix(&self.redis_url, &self.prefix);
    }
}

/// An API token for `sub`, by a login with a fresh GCGC token at `app`.
async fn login_at(app: &TestApp, sub: &str) -> String {
    let r = crate::sso::login_at(
        &app.client,
        &app.address,
        &gcgc(&tests::tokens::sso_claims(sub)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// `POST path` with the token, from the web app's origin.
async fn post(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("Origin", ALLOWED_ORIGIN)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// `GET path` with the token.
async fn get(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Creates a conversation with the token.
async fn create(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .post(app.url(CONVERSATIONS))
        .bearer_auth(token)
        .json(&json!({ "title": "after sign-out?" }))
        .send()
        .await
        .unwrap()
}

/// The 401 of an ended token: its detail, and RFC 6750's `invalid_token`.
async fn assert_revoked(r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\"",
        "{what}"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["detail"], "Token has been revoked", "{what}");
}

/// Every protected route of every instance refuses the token as ended.
async fn assert_refused_everywhere(deployment: &Deployment, token: &str, what: &str) {
    for (i, app) in deployment.instances.iter().enumerate() {
        assert_revoked(
            get(app, CONVERSATIONS, token).await,
            &format!("{what}: list at {i}"),
        )
        .await;
        assert_revoked(
            get(app, "/api/v1/conversations/1", token).await,
            &format!("{what}: get at {i}"),
        )
        .await;
        assert_revoked(create(app, token).await, &format!("{what}: create at {i}")).await;
        assert_revoked(
            post(app, SIGN_OUT, token).await,
            &format!("{what}: sign out at {i}"),
        )
        .await;
        assert_revoked(
            post(app, SIGN_OUT_EVERYWHERE, token).await,
            &format!("{what}: sign out everywhere at {i}"),
        )
        .await;
    }
}

/// Every protected route of every instance takes the token.
async fn assert_works_everywhere(deployment: &Deployment, token: &str, what: &str) {
    for (i, app) in deployment.instances.iter().enumerate() {
        assert_eq!(
            get(app, CONVERSATIONS, token).await.status(),
            StatusCode::OK,
            "{what}: list at {i}"
        );
        let created = create(app, token).await;
        assert_eq!(
            created.status(),
            StatusCode::CREATED,
            "{what}: create at {i}"
        );
        let id = created.json::<Value>().await.unwrap()["id"]
            .as_i64()
            .unwrap();
        let path = format!("{CONVERSATIONS}{id}");
        assert_eq!(
            get(app, &path, token).await.status(),
            StatusCode::OK,
            "{what}: get at {i}"
        );
    }
}

on_every_backend!(
    a_sign_out_ends_that_token_on_every_instance_and_no_other,
    signing_out_everywhere_ends_every_earlier_token_and_a_new_login_works,
);

async fn a_sign_out_ends_that_token_on_every_instance_and_no_other(backend: Backend) {
    let deployment = Deployment::start(backend, 2).await;
    let ended = deployment.login(0, "alice").await;
    let kept = deployment.login(1, "alice").await;
    let other_user = deployment.login(0, "bob").await;
    assert_works_everywhere(&deployment, &ended, "before").await;

    let r = post(&deployment.instances[0], SIGN_OUT, &ended).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["access-control-allow-origin"], ALLOWED_ORIGIN);
    assert!(r.bytes().await.unwrap().is_empty(), "204: no body");

    // At once on the instance that did not serve the sign-out: nothing is
    // cached per instance.
    assert_refused_everywhere(&deployment, &ended, "the signed-out token").await;
    assert_works_everywhere(&deployment, &kept, "the user's other token").await;
    assert_works_everywhere(&deployment, &other_user, "another user's token").await;
}

async fn signing_out_everywhere_ends_every_earlier_token_and_a_new_login_works(backend: Backend) {
    let deployment = Deployment::start(backend, 2).await;
    let first = deployment.login(0, "carol").await;
    let second = deployment.login(1, "carol").await;
    let other_user = deployment.login(1, "dave").await;

    let r = post(&deployment.instances[1], SIGN_OUT_EVERYWHERE, &first).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["access-control-allow-origin"], ALLOWED_ORIGIN);
    assert_refused_everywhere(&deployment, &first, "the token that signed out everywhere").await;
    assert_refused_everywhere(&deployment, &second, "another earlier token").await;
    assert_works_everywhere(&deployment, &other_user, "another user's token").await;

    // Signing in again, at once (within the same second, on either
    // instance): a new GCGC token gives a working token; the old ones stay
    // refused.
    let again = deployment.login(0, "carol").await;
    let again_elsewhere = deployment.login(1, "carol").await;
    assert_works_everywhere(&deployment, &again, "a token issued after").await;
    assert_works_everywhere(&deployment, &again_elsewhere, "another token issued after").await;
    assert_refused_everywhere(&deployment, &first, "the first token, after a new login").await;
    assert_refused_everywhere(&deployment, &second, "the second token, after a new login").await;

    // And once more: the new generation ends the same way.
    let r = post(&deployment.instances[0], SIGN_OUT_EVERYWHERE, &again).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_refused_everywhere(
        &deployment,
        &again_elsewhere,
        "a token of the second generation",
    )
    .await;
}

/// Without a valid token, a sign-out is a 401 like every protected route's,
/// with CORS so the browser can read it; the preflight needs no token.
#[tokio::test]
async fn signing_out_needs_a_valid_token_and_answers_the_browser() {
    let deployment = Deployment::start(Backend::Sqlite, 1).await;
    let app = &deployment.instances[0];
    for path in [SIGN_OUT, SIGN_OUT_EVERYWHERE] {
        let r = app
            .client
            .post(app.url(path))
            .header("Origin", ALLOWED_ORIGIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}: no token");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_eq!(r.headers()["access-control-allow-origin"], ALLOWED_ORIGIN);
        let forged = tests::tokens::api_token("another-secret-0123456789abcdef0123456789", 1);
        let r = post(app, path, &forged).await;
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{path}: another key's token"
        );
        assert_eq!(r.headers()["access-control-allow-origin"], ALLOWED_ORIGIN);

        let preflight = app
            .client
            .request(http::Method::OPTIONS, app.url(path))
            .header("Origin", ALLOWED_ORIGIN)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
            .await
            .unwrap();
        assert_eq!(
            preflight.status(),
            StatusCode::NO_CONTENT,
            "{path}: preflight"
        );
        let allowed = preflight.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap();
        assert!(allowed.contains("POST"), "{path}: {allowed}");
        let get = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}: GET");
    }
    // A token whose user is gone is refused too, and changes nothing.
    let ghost = tests::tokens::api_token(TEST_JWT_SECRET, 987_654);
    let r = post(app, SIGN_OUT, &ghost).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// Of many sign-outs of one token at once, on two instances, exactly one
/// ends it; the others find it ended. The same for sign out everywhere.
#[tokio::test]
async fn of_concurrent_sign_outs_with_one_token_exactly_one_succeeds() {
    let deployment = Deployment::start(Backend::Pooled, 2).await;
    for path in [SIGN_OUT, SIGN_OUT_EVERYWHERE] {
        let token = deployment.login(0, "erin").await;
        let attempts = (0..20).map(|i| post(&deployment.instances[i % 2], path, &token));
        let statuses: Vec<StatusCode> = futures_util::future::join_all(attempts)
            .await
            .iter()
            .map(|r| r.status())
            .collect();
        let won = statuses
            .iter()
            .filter(|s| **s == StatusCode::NO_CONTENT)
            .count();
        let refused = statuses
            .iter()
            .filter(|s| **s == StatusCode::UNAUTHORIZED)
            .count();
        assert_eq!((won, refused), (1, 19), "{path}: {statuses:?}");
    }
}

/// The record of a sign-out is the database's: flushing Redis (a restart
/// without persistence, a failover, an eviction) brings no token back.
#[tokio::test]
async fn a_sign_out_survives_a_redis_flush() {
    let redis = RedisServer::start();
    let deployment = Deployment::on(TestDb::pooled().await, &redis.url(), 1, &[]).await;
    let ended = deployment.login(0, "frank").await;
    let everywhere = deployment.login(0, "grace").await;
    assert_eq!(
        post(&deployment.instances[0], SIGN_OUT, &ended)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        post(&deployment.instances[0], SIGN_OUT_EVERYWHERE, &everywhere)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let _: () = redis.command(&redis::cmd("FLUSHALL")).unwrap();
    assert_refused_everywhere(&deployment, &ended, "after FLUSHALL").await;
    assert_refused_everywhere(&deployment, &everywhere, "after FLUSHALL, everywhere").await;
}

/// The operator's command ends every session of one user, by external id,
/// against the deployment's database; it names an unknown user and fails.
/// On both databases.
#[tokio::test]
async fn the_operator_command_ends_one_users_sessions_on_postgres() {
    the_operator_command_ends_one_users_sessions(Backend::Postgres).await;
}

#[tokio::test]
async fn the_operator_command_ends_one_users_sessions_on_sqlite() {
    the_operator_command_ends_one_users_sessions(Backend::Sqlite).await;
}

async fn the_operator_command_ends_one_users_sessions(backend: Backend) {
    let deployment = Deployment::start(backend, 1).await;
    let leaver = deployment.login(0, "leaver").await;
    let stayer = deployment.login(0, "stayer").await;
    let run = |external_id: &str| {
        let mut vars: Vec<(String, String)> = deployment
            .db
            .vars()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        vars.push(("JWT_SECRET".into(), TEST_JWT_SECRET.into()));
        std::process::Command::new(workspace_bin("tms-sign-out"))
            .arg(external_id)
            .env_clear()
            .envs(vars)
            .output()
            .unwrap()
    };
    let done = run("leaver");
    let said =
        String::from_utf8_lossy(&done.stdout).into_owned() + &String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{said}");
    assert!(said.contains("leaver"), "{said}");
    assert_refused_everywhere(&deployment, &leaver, "after the operator's command").await;
    assert_works_everywhere(&deployment, &stayer, "another user").await;
    // The user signs in again later: that works.
    let back = deployment.login(0, "leaver").await;
    assert_works_everywhere(&deployment, &back, "a login after the command").await;

    let unknown = run("nobody-by-that-id");
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(1), "{said}");
    assert!(
        said.contains("no user") && said.contains("nobody-by-that-id"),
        "{said}"
    );
}

/// Expired sign-out records are swept with the logins' (a token past its
/// `exp` is refused by verification; its record is no longer needed), and
/// a live one is kept.
#[tokio::test]
async fn expired_sign_out_records_are_swept() {
    for test_db in [TestDb::postgres().await, TestDb::sqlite()] {
        let db = Database::open(&test_config(&test_db.vars()).database)
            .await
            .unwrap();
        let now = unix_secs() as i64;
        let script = format!(
            "INSERT INTO revoked_tokens (jti, user_id, token_exp) VALUES \
             ('expired-1', 1, {}), ('expired-2', 1, {}), ('live', 1, {})",
            now - 3600,
            now - 120,
            now + 3600
        );
        run_script(&db, &script).await;
        let deleted = sso_login::users::sweep_expired(&db, unix_secs())
            .await
            .unwrap();
        assert_eq!(deleted, 2, "{}", test_db.url);
        let left: i64 =
            run_script(&db, "DELETE FROM revoked_tokens WHERE jti = 'live'").await as i64;
        assert_eq!(left, 1, "the live record stays: {}", test_db.url);
        db.close().await;
    }
}

/// docs/deploy.md, "Rotating the API token key", step by step, with the
/// instances of each step beside those of the one before (a deploy
/// replaces a fleet gradually): no token is refused until the old key is
/// removed, and then only the old key's.
#[tokio::test]
async fn the_api_token_key_rotates_without_signing_anyone_out() {
    const OLD: &str = TEST_JWT_SECRET;
    const NEW: &str = "rotated-jwt-secret-abcdef0123456789abcdef012345";
    let mut deployment = Deployment::start(Backend::Pooled, 1).await;
    let before = deployment.login(0, "rotating").await;

    // Step 1: the new key verifies everywhere first (JWT_PREVIOUS_SECRETS=new).
    let step1 = deployment
        .instance_with(&[("JWT_SECRET", OLD), ("JWT_PREVIOUS_SECRETS", NEW)])
        .await;
    deployment.instances.push(step1);
    let during_step1 = login_at(&deployment.instances[1], "rotating").await;
    assert_works_everywhere(&deployment, &before, "step 1: a token of before").await;
    assert_works_everywhere(&deployment, &during_step1, "step 1: a token of step 1").await;
    deployment.instances.remove(0);

    // Step 2: the new key signs, the old one still verifies.
    let step2 = deployment
        .instance_with(&[("JWT_SECRET", NEW), ("JWT_PREVIOUS_SECRETS", OLD)])
        .await;
    deployment.instances.push(step2);
    let signed_new = login_at(&deployment.instances[1], "rotating").await;
    assert_eq!(
        jsonwebtoken::decode_header(&signed_new)
            .unwrap()
            .kid
            .as_deref(),
        Some(shared::tokens::key_id(NEW.as_bytes()).as_str()),
        "step 2 signs with the new key, and says so"
    );
    for token in [&before, &during_step1, &signed_new] {
        // The step-1 instance (still running) and the step-2 one take all.
        assert_works_everywhere(&deployment, token, "step 2").await;
    }
    deployment.instances.remove(0);

    // Step 3, when the old key's tokens may end: it is removed.
    let step3 = deployment.instance_with(&[("JWT_SECRET", NEW)]).await;
    deployment.instances = vec![step3];
    assert_works_everywhere(&deployment, &signed_new, "step 3: the new key's token").await;
    for token in [&before, &during_step1] {
        let r = get(&deployment.instances[0], CONVERSATIONS, token).await;
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "step 3: the old key's token ends"
        );
        assert_eq!(
            r.json::<Value>().await.unwrap()["detail"],
            "Could not validate credentials"
        );
    }
}

/// Tokens issued before keys had ids (no `kid`) still verify, with the key
/// or a previous one, so the release that adds ids signs nobody out.
#[test]
fn a_token_without_a_key_id_still_verifies() {
    use std::time::Duration;
    let old = tests::tokens::hs256_from_json_text(
        TEST_JWT_SECRET,
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &json!({
            "sub": "7", "exp": unix_secs() + 60, "iat": unix_secs(),
            "iss": shared::tokens::API_ISSUER, "aud": shared::tokens::API_AUDIENCE,
            "jti": uuid::Uuid::new_v4().to_string(),
        })
        .to_string(),
    );
    let hour = Duration::from_secs(3600);
    let same_key = ApiTokens::new(TEST_JWT_SECRET.as_bytes(), hour);
    assert_eq!(same_key.verify(&old).unwrap().generation, 0);
    let rotated = ApiTokens::with_previous(
        b"rotated-jwt-secret-abcdef0123456789abcdef012345",
        &[TEST_JWT_SECRET.as_bytes()],
        hour,
    );
    assert_eq!(rotated.verify(&old).unwrap().sub, "7");
    let removed = ApiTokens::new(b"rotated-jwt-secret-abcdef0123456789abcdef012345", hour);
    assert!(removed.verify(&old).is_err());
}
