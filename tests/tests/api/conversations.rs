//! The conversations function: one behavioural suite, run on every backend
//! (PostgreSQL through a real connection, PostgreSQL through a PgBouncer in
//! transaction mode, and the embedded SQLite file).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use conversations::store::Created;
use http::StatusCode;
use serde_json::{Value, json};
use shared::Config;
use shared::config::JwtSettings;
use shared::db::Database;
use shared::tokens::{ApiTokens, AuthUser, Standing};
use sso_login::users::{User, upsert_user};
use tests::services::{PgServer, TestDb};
use tests::*;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Backend {
    Postgres,
    /// PostgreSQL behind a transaction-mode pooler (`DATABASE_POOLER=transaction`).
    Pooled,
    Sqlite,
}

struct Fixture {
    app: TestApp,
    db: Database,
    tokens: ApiTokens,
    _db_guard: TestDb,
}

impl Backend {
    /// A database of its own on this backend.
    pub(crate) async fn database(self) -> TestDb {
        match self {
            Self::Postgres => TestDb::postgres().await,
            Self::Pooled => TestDb::pooled().await,
            Self::Sqlite => TestDb::sqlite(),
        }
    }
}

impl Fixture {
    async fn new(backend: Backend) -> Self {
        let guard = backend.database().await;
        let settings = test_sections(&guard.vars());
        Self::on(guard, settings).await
    }

    /// The function with these settings, on `guard`'s database.
    async fn on(guard: TestDb, (config, jwt): (Config, JwtSettings)) -> Self {
        let tokens = ApiTokens::from_settings(&jwt);
        let routes = conversations::build(&config, jwt).await.expect("build");
        let app = spawn_app(routes, &config).await;
        let db = Database::open(&config.database).await.expect("open");
        Self {
            app,
            db,
            tokens,
            _db_guard: guard,
        }
    }

    async fn user(&self, name: &str) -> (User, String) {
        let user = upsert_user(
            &self.db,
            &format!("ext-{name}-{}", tests::services::uuid_simple()),
            Some(&format!("{name}@example.com")),
            Some(name),
        )
        .await
        .unwrap();
        let token = self
            .tokens
            .issue(user.id, user.token_generation)
            .unwrap()
            .token;
        (user, token)
    }

    async fn create(&self, token: &str, title: &str, members: &[i64]) -> reqwest::Response {
        self.app
            .client
            .post(self.app.url("/api/v1/conversations/"))
            .bearer_auth(token)
            .json(&json!({ "title": title, "member_ids": members }))
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.app
            .client
            .get(self.app.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.expect("JSON body")
}

/// The ids of a page's conversations, in its order.
fn item_ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["id"].as_i64().expect("an id"))
        .collect()
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Postgres).await })*
        }
        mod pooled {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Pooled).await })*
        }
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Sqlite).await })*
        }
    };
}

pub(crate) use on_every_backend;

on_every_backend!(
    create_then_fetch_with_location,
    members_only_see_their_conversations,
    list_is_newest_first_with_limits,
    pages_have_no_duplicates_or_gaps_while_rows_are_added,
    bad_create_bodies_are_rejected_clearly,
    malformed_and_unknown_ids_are_404,
    a_change_of_activity_moves_the_conversation_in_every_members_list,
);

async fn create_then_fetch_with_location(backend: Backend) {
    let f = Fixture::new(backend).await;
    let (alice, token) = f.user("alice").await;
    let (bob, _) = f.user("bob").await;
    let r = f.create(&token, "  Release planning  ", &[bob.id]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let created = json_of(r).await;
    assert_eq!(created["title"], "Release planning");
    assert_eq!(created["created_by"], alice.id);
    let mut members: Vec<i64> = created["member_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    members.sort();
    assert_eq!(members, {
        let mut m = vec![alice.id, bob.id];
        m.sort();
        m
    });
    assert_eq!(location, format!("/api/v1/conversations/{}", created["id"]));
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));

    let r = f.get(&token, &location).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json_of(r).await, created);
    // Without the trailing slash too, and no redirect.
    let r = f.get(&token, "/api/v1/conversations").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json_of(r).await["items"][0]["id"], created["id"]);
}

async fn members_only_see_their_conversations(backend: Backend) {
    let f = Fixture::new(backend).await;
    let (_alice, alice_token) = f.user("alice").await;
    let (bob, bob_token) = f.user("bob").await;
    let (_carol, carol_token) = f.user("carol").await;
    let shared = json_of(f.create(&alice_token, "alice+bob", &[bob.id]).await).await;
    let private = json_of(f.create(&alice_token, "alice only", &[]).await).await;

    let carol_list = json_of(f.get(&carol_token, "/api/v1/conversations/").await).await;
    assert_eq!(carol_list["items"], json!([]));
    assert_eq!(carol_list["next_cursor"], Value::Null);
    for c in [&shared, &private] {
        let r = f
            .get(&carol_token, &format!("/api/v1/conversations/{}", c["id"]))
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "no leaking of ids");
        assert_eq!(json_of(r).await["detail"], "Not Found");
    }
    let bob_list = json_of(f.get(&bob_token, "/api/v1/conversations/").await).await;
    let ids: Vec<&Value> = bob_list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["id"])
        .collect();
    assert_eq!(ids, vec![&shared["id"]]);
    let r = f
        .get(
            &bob_token,
            &format!("/api/v1/conversations/{}", private["id"]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

async fn list_is_newest_first_with_limits(backend: Backend) {
    let f = Fixture::new(backend).await;
    let (_, token) = f.user("alice").await;
    let mut created = Vec::new();
    for i in 0..25 {
        created.push(
            json_of(f.create(&token, &format!("c{i}"), &[]).await).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let page = json_of(f.get(&token, "/api/v1/conversations/").await).await;
    let ids = item_ids(&page);
    assert_eq!(ids.len(), 20, "default limit");
    let newest_first: Vec<i64> = created.iter().rev().take(20).copied().collect();
    assert_eq!(ids, newest_first);
    assert!(page["next_cursor"].is_string());

    let r = f.get(&token, "/api/v1/conversations/?limit=100").await;
    assert_eq!(json_of(r).await["items"].as_array().unwrap().len(), 25);
    for bad in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=abc",
        "cursor=%21%21",
        &format!("cursor={}", URL_SAFE_NO_PAD.encode("x:y")),
    ] {
        let r = f
            .get(&token, &format!("/api/v1/conversations/?{bad}"))
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert!(json_of(r).await["detail"].is_string());
    }
}

async fn pages_have_no_duplicates_or_gaps_while_rows_are_added(backend: Backend) {
    let f = Fixture::new(backend).await;
    let (_, token) = f.user("alice").await;
    let mut original = Vec::new();
    for i in 0..23 {
        original.push(
            json_of(f.create(&token, &format!("c{i}"), &[]).await).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/conversations/?limit=5&cursor={c}"),
            None => "/api/v1/conversations/?limit=5".to_owned(),
        };
        let page = json_of(f.get(&token, &path).await).await;
        seen.extend(item_ids(&page));
        // Someone adds conversations between two page loads.
        f.create(&token, "added while paging", &[]).await;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates: {seen:?}");
    let expected: Vec<i64> = original.iter().rev().copied().collect();
    assert_eq!(seen, expected, "no gaps, newest first");
}

/// The list reads each membership's copy of its conversation's activity
/// (migration 0002): whatever changes a conversation's activity moves it in
/// every member's list, on every backend (the database keeps the copy).
async fn a_change_of_activity_moves_the_conversation_in_every_members_list(backend: Backend) {
    let f = Fixture::new(backend).await;
    let (alice, alice_token) = f.user("alice").await;
    let (bob, bob_token) = f.user("bob").await;
    let mut ids = Vec::new();
    for title in ["oldest", "middle", "newest"] {
        let r = f.create(&alice_token, title, &[bob.id]).await;
        ids.push(json_of(r).await["id"].as_i64().unwrap());
    }
    let later = shared::clock::unix_micros() + 1_000_000;
    let updated = run_script(
        &f.db,
        &format!(
            "UPDATE conversations SET last_activity_at = {later} WHERE id = {}",
            ids[0]
        ),
    )
    .await;
    assert_eq!(updated, 1);
    for (user, token) in [(alice.id, &alice_token), (bob.id, &bob_token)] {
        let page = json_of(f.get(token, "/api/v1/conversations?limit=2").await).await;
        let listed = item_ids(&page);
        assert_eq!(
            listed,
            [ids[0], ids[2]],
            "user {user}: the active one first"
        );
        let cursor = page["next_cursor"].as_str().expect("a next page");
        let rest = json_of(
            f.get(
                token,
                &format!("/api/v1/conversations?limit=2&cursor={cursor}"),
            )
            .await,
        )
        .await;
        assert_eq!(
            rest["items"][0]["id"].as_i64(),
            Some(ids[1]),
            "then the rest"
        );
        assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    }
}

async fn bad_create_bodies_are_rejected_clearly(backend: Backend) {
    let f = Fixture::new(backend).await;
    let (_, token) = f.user("alice").await;
    let long = "x".repeat(201);
    for (body, status) in [
        (json!({ "title": "" }), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({ "title": "   " }), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({ "title": long }), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({ "title": "x", "member_ids": [987654321] }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({ "title": 5 }), StatusCode::UNPROCESSABLE_ENTITY),
        // PostgreSQL refuses NUL in text: the client's data, never a 500.
        (
            json!({ "title": "a\u{0}b" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "member_ids": [] }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "title": "x", "member_ids": ["a"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "title": "x", "member_ids": (0..101).collect::<Vec<i64>>() }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let r = f
            .app
            .client
            .post(f.app.url("/api/v1/conversations"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
        assert!(json_of(r).await["detail"].as_str().unwrap().len() > 3);
    }
    let r = f
        .app
        .client
        .post(f.app.url("/api/v1/conversations"))
        .bearer_auth(&token)
        .body("{\"title\":\"x\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = f
        .app
        .client
        .post(f.app.url("/api/v1/conversations"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"title\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Nothing was half-written.
    let list = json_of(f.get(&token, "/api/v1/conversations/").await).await;
    assert_eq!(list["items"], json!([]));
}

async fn malformed_and_unknown_ids_are_404(backend: Backend) {
    let f = Fixture::new(backend).await;
    let (_, token) = f.user("alice").await;
    for id in [
        "abc",
        "99999999999999999999999",
        "-1",
        "0",
        "123456",
        "1.5",
        "%00",
    ] {
        let r = f.get(&token, &format!("/api/v1/conversations/{id}")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{id}");
        assert_eq!(json_of(r).await["detail"], "Not Found");
    }
}

fn encode_hs256(claims: &Value, secret: &str) -> String {
    tests::tokens::sso_token(secret, claims)
}

#[tokio::test]
async fn every_authentication_failure_is_401_with_www_authenticate() {
    let f = Fixture::new(Backend::Sqlite).await;
    let (user, good) = f.user("alice").await;
    let now = shared::clock::unix_secs();
    let claims = |exp: u64, iss: &str, aud: &str| json!({ "sub": user.id.to_string(), "exp": exp, "iat": now, "iss": iss, "aud": aud, "jti": "j" });
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims(now + 3600, "tms-chat", "tms-chat-api"))
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("wrong scheme", Some(format!("Basic {good}"))),
        ("empty token", Some("Bearer ".into())),
        ("garbage", Some("Bearer invalid_token".into())),
        (
            "bad signature",
            Some(format!(
                "Bearer {}",
                encode_hs256(
                    &claims(now + 3600, "tms-chat", "tms-chat-api"),
                    "another-secret-0123456789abcdef0123"
                )
            )),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                encode_hs256(
                    &claims(now - 3600, "tms-chat", "tms-chat-api"),
                    TEST_JWT_SECRET
                )
            )),
        ),
        (
            "wrong audience",
            Some(format!(
                "Bearer {}",
                encode_hs256(&claims(now + 3600, "tms-chat", "other"), TEST_JWT_SECRET)
            )),
        ),
        ("alg none", Some(format!("Bearer {alg_none}"))),
        (
            "not utf-8 sub",
            Some(format!(
                "Bearer {}",
                encode_hs256(
                    &json!({ "sub": "not-a-number", "exp": now + 3600, "iss": "tms-chat", "aud": "tms-chat-api" }),
                    TEST_JWT_SECRET
                )
            )),
        ),
    ];
    for path in ["/api/v1/conversations/", "/api/v1/conversations/1"] {
        for (name, header) in &cases {
            let mut request = f
                .app
                .client
                .get(f.app.url(path))
                .header("Origin", ALLOWED_ORIGIN);
            if let Some(h) = header {
                request = request.header("Authorization", h);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name} on {path}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer", "{name}");
            assert_eq!(
                r.headers()["access-control-allow-origin"],
                ALLOWED_ORIGIN,
                "{name}"
            );
            let detail = json_of(r).await["detail"].as_str().unwrap().to_owned();
            assert!(!detail.is_empty());
            if *name == "expired" {
                assert_eq!(detail, "Token has expired");
            }
        }
    }
    let r = f
        .app
        .client
        .post(f.app.url("/api/v1/conversations/"))
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = f.get(&good, "/api/v1/conversations/").await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// A PostgreSQL that the test itself started, then stops and hangs: 503 fast,
/// never a hang or a 500, and recovery without a restart of the function.
#[tokio::test]
async fn a_database_down_or_hung_is_a_fast_503_then_recovers() {
    let mut pg = PgServer::start();
    let url = pg.url();
    Database::open_postgres(&url, 2)
        .unwrap()
        .migrate()
        .await
        .unwrap();
    let (config, jwt) = test_sections::<JwtSettings>(&[("DATABASE_URL", &url)]);
    let tokens = ApiTokens::from_settings(&jwt);
    let app = spawn_app(conversations::build(&config, jwt).await.unwrap(), &config).await;
    let db = Database::open(&config.database).await.unwrap();
    let user = upsert_user(&db, "ext-fault", None, None).await.unwrap();
    let token = tokens.issue(user.id, user.token_generation).unwrap().token;
    let list = || async {
        let started = Instant::now();
        let r = app
            .client
            .get(app.url("/api/v1/conversations/"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        (
            r.status(),
            r.headers().get("retry-after").is_some(),
            started.elapsed(),
        )
    };
    assert_eq!(list().await.0, StatusCode::OK);

    pg.stop();
    for _ in 0..3 {
        let (status, retry_after, took) = list().await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(retry_after);
        // A bound against hangs, not a speed target (the benchmark measures speed).
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }

    pg.resume_serving();
    assert_eq!(list().await.0, StatusCode::OK, "recovers without a restart");

    pg.hang();
    let (status, _, took) = list().await;
    pg.unhang();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let mut recovered = false;
    for _ in 0..20 {
        if list().await.0 == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "recovers once the database answers again");
}

/// Members in the table that [`migrations_complete_on_a_large_table_without_the_request_timeout`]
/// migrates: `MIGRATION_TEST_MEMBERS` (`make migrate-large`: a million).
fn migration_test_members() -> i64 {
    std::env::var("MIGRATION_TEST_MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// `make migrate` on a database in use: migration 0002 rewrites every
/// membership and builds an index over them, which on a large table takes
/// longer than a request may (the functions' 5 s `statement_timeout`).
/// The migrations run with timeouts of their own: a statement that takes
/// longer than the requests' bound (a trigger here makes 0002's update
/// sleep past it) completes.
#[tokio::test]
async fn migrations_complete_on_a_large_table_without_the_request_timeout() {
    let target = TestDb::postgres_unmigrated().await;
    let members = migration_test_members();
    let conversations = (members / 1000).max(1);
    let mut admin = tests::services::connect(&target.url).await.unwrap();
    let first = sqlx::migrate::Migrator::with_migrations(
        shared::db::POSTGRES_MIGRATIONS
            .migrations
            .iter()
            .filter(|m| m.version == 1)
            .cloned()
            .collect(),
    );
    first.run(&mut admin).await.unwrap();
    let filled = Instant::now();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO users (external_id, created_at, updated_at) \
           SELECT 'member-' || g, 0, 0 FROM generate_series(1, 1000) g; \
         INSERT INTO conversations (title, created_by, created_at, last_activity_at) \
           SELECT 'c' || g, 1, g, g FROM generate_series(1, {conversations}) g; \
         INSERT INTO conversation_members (conversation_id, user_id, joined_at) \
           SELECT c.id, u.id, 0 FROM conversations c CROSS JOIN users u; \
         CREATE FUNCTION slower_than_a_request() RETURNS trigger LANGUAGE plpgsql AS $$ \
           BEGIN PERFORM pg_sleep({slow}); RETURN NULL; END $$; \
         CREATE TRIGGER slower_than_a_request BEFORE UPDATE ON conversation_members \
           FOR EACH STATEMENT EXECUTE FUNCTION slower_than_a_request();",
        slow = shared::db::STATEMENT_TIMEOUT.as_secs_f64() + 0.5,
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let filled = filled.elapsed();

    let started = Instant::now();
    let vars = test_vars(&[("DATABASE_URL", &target.url)]);
    let (code, stderr) = Process::start("tms-migrate", &vars)
        .exit_within(Duration::from_secs(600))
        .await;
    let migrated = started.elapsed();
    assert_eq!(code, Some(0), "{stderr}");
    eprintln!(
        "{} members: filled in {:.1} s, migrated in {:.1} s",
        conversations * 1000,
        filled.as_secs_f64(),
        migrated.as_secs_f64()
    );
    let (rows, followed): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE m.last_activity_at = c.last_activity_at) \
         FROM conversation_members m JOIN conversations c ON c.id = m.conversation_id",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        (rows, followed),
        (conversations * 1000, conversations * 1000)
    );
    let _ = sqlx::Connection::close(admin).await;
}

/// `make migrate` in a deploy pipeline: two runs at once both succeed.
#[tokio::test]
async fn two_migrations_at_once_both_succeed() {
    let target = TestDb::postgres_unmigrated().await;
    let vars = test_vars(&[("DATABASE_URL", &target.url)]);
    let first = Process::start("tms-migrate", &vars);
    let second = Process::start("tms-migrate", &vars);
    for run in [first, second] {
        let (code, stderr) = run.exit().await;
        assert_eq!(code, Some(0), "{stderr}");
    }
    let db = Database::open_postgres(&target.url, 2).unwrap();
    let user = upsert_user(&db, "ext-after-migrate", None, None)
        .await
        .unwrap();
    assert!(
        conversations::store::list(&db, &caller(&user), None, 1)
            .await
            .unwrap()
            .1
            .is_empty()
    );
    db.close().await;
}

/// Managed databases (RDS, ApsaraDB) want TLS: `sslmode=require` connects
/// over TLS, and the connection really is encrypted.
#[tokio::test]
async fn postgres_over_tls_with_sslmode_require() {
    let pg = PgServer::start_tls();
    let db = Database::open_postgres(&format!("{}?sslmode=require", pg.url()), 2).unwrap();
    db.migrate().await.unwrap();
    assert!(
        crate::managed_postgres::is_encrypted(&db).await,
        "the connection is TLS"
    );
    let user = upsert_user(&db, "ext-tls", None, None).await.unwrap();
    assert!(
        conversations::store::list(&db, &caller(&user), None, 10)
            .await
            .unwrap()
            .1
            .is_empty()
    );
}

/// What the release before migration 0002 sent to create a conversation
/// (its members without their copy of the activity): the pipeline migrates
/// before it deploys, and a rollback runs that release on the new schema.
const PREVIOUS_RELEASE_CREATE_SQL: &str = "WITH conversation AS ( \
       INSERT INTO conversations (title, created_by, created_at, last_activity_at) \
       VALUES ($1, $2, $3, $3) RETURNING id \
     ), members AS ( \
       INSERT INTO conversation_members (conversation_id, user_id, joined_at) \
       SELECT conversation.id, member, $3 FROM conversation, unnest($4::bigint[]) AS member \
     ) \
     SELECT id FROM conversation";

async fn create_as_previous_release(
    connection: &mut sqlx::PgConnection,
    title: &str,
    by: i64,
    at: i64,
    members: &[i64],
) -> i64 {
    sqlx::query_scalar(PREVIOUS_RELEASE_CREATE_SQL)
        .bind(title)
        .bind(by)
        .bind(at)
        .bind(members)
        .fetch_one(connection)
        .await
        .unwrap()
}

/// A user as a release before migration 0005 created it (no sign-out
/// generation yet: 0 once migrated).
async fn user_as_previous_release(connection: &mut sqlx::PgConnection, external_id: &str) -> User {
    let id = sqlx::query_scalar(
        "INSERT INTO users (external_id, created_at, updated_at) VALUES ($1, 0, 0) RETURNING id",
    )
    .bind(external_id)
    .fetch_one(connection)
    .await
    .unwrap();
    User {
        id,
        email: None,
        name: None,
        token_generation: 0,
    }
}

/// Migration 0002 is safe to deploy and to roll back: rows written before
/// it are listed in their place after it, and the previous release, run on
/// the migrated schema, still creates conversations (no 500), listed in
/// their place too.
#[tokio::test]
async fn the_previous_release_works_before_and_after_migration_0002() {
    let target = TestDb::postgres_unmigrated().await;
    let mut connection = tests::services::connect(&target.url).await.unwrap();
    shared::db::POSTGRES_MIGRATIONS
        .run_to(1, &mut connection)
        .await
        .unwrap();
    let db = Database::open_postgres(&target.url, 2).unwrap();
    let alice = user_as_previous_release(&mut connection, "ext-alice-0002").await;
    let bob = user_as_previous_release(&mut connection, "ext-bob-0002").await;
    let now = shared::clock::unix_micros();
    let before = create_as_previous_release(
        &mut connection,
        "before",
        alice.id,
        now - 3_000_000,
        &[alice.id, bob.id],
    )
    .await;

    shared::db::POSTGRES_MIGRATIONS
        .run(&mut connection)
        .await
        .unwrap();
    let current = create_in_store(&db, &alice, "current", &[bob.id]).await.id;
    let rolled_back = create_as_previous_release(
        &mut connection,
        "rolled back",
        bob.id,
        now + 3_000_000,
        &[alice.id, bob.id],
    )
    .await;

    for user in [&alice, &bob] {
        let listed: Vec<i64> = conversations::store::list(&db, &caller(user), None, 10)
            .await
            .unwrap()
            .1
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(
            listed,
            [rolled_back, current, before],
            "user {}: newest activity first",
            user.id
        );
    }
    let copies_differ: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM conversation_members m JOIN conversations c ON c.id = m.conversation_id \
         WHERE m.last_activity_at <> c.last_activity_at",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap();
    assert_eq!(
        copies_differ, 0,
        "every membership carries its conversation's activity"
    );
    db.close().await;
}

/// A page costs the page, not the member's whole history: for a member of
/// 3,000 conversations among 6,000, PostgreSQL reads about a page of rows
/// (the memberships' index of migration 0002, in order), not all of the
/// member's conversations to sort them, nor everyone's newer ones to find
/// the member's.
#[tokio::test]
async fn a_page_reads_a_page_of_rows_not_the_members_history() {
    let target = TestDb::postgres().await;
    let db = Database::open_postgres(&target.url, 2).unwrap();
    let member = upsert_user(&db, "ext-busy-member", None, None)
        .await
        .unwrap();
    let other = upsert_user(&db, "ext-newer-other", None, None)
        .await
        .unwrap();
    let mut connection = tests::services::connect(&target.url).await.unwrap();
    // The member's conversations at activity 1..3000, the other's newer.
    for (user, first) in [(member.id, 1_i64), (other.id, 3001)] {
        sqlx::query(
            "WITH c AS ( \
               INSERT INTO conversations (title, created_by, created_at, last_activity_at) \
               SELECT 'c' || n, $1, n, n FROM generate_series($2::bigint, $2 + 2999) n \
               RETURNING id, last_activity_at) \
             INSERT INTO conversation_members (conversation_id, user_id, joined_at, last_activity_at) \
             SELECT id, $1, last_activity_at, last_activity_at FROM c",
        )
        .bind(user)
        .bind(first)
        .execute(&mut connection)
        .await
        .unwrap();
    }
    sqlx::query("ANALYZE")
        .execute(&mut connection)
        .await
        .unwrap();
    // Small tables invite sequential scans, whatever the query; this is
    // about which rows the query makes the server read.
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut connection)
        .await
        .unwrap();

    for after in [i64::MAX, 1500] {
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {}",
            conversations::store::LIST_SQL
        )))
        .bind(member.id)
        .bind(after)
        .bind(after)
        .bind(21_i64)
        .bind(member.token_generation)
        .bind(uuid::Uuid::new_v4().to_string())
        .fetch_all(&mut connection)
        .await
        .unwrap();
        // Rows returned by the scans, and rows they read and threw away.
        let rows_read: u64 = plan
            .iter()
            .filter(|line| line.contains(" Scan "))
            .map(|line| actual_rows(line))
            .sum::<u64>()
            + plan
                .iter()
                .filter_map(|line| line.trim().strip_prefix("Rows Removed by "))
                .filter_map(|rest| rest.split(": ").nth(1)?.trim().parse::<u64>().ok())
                .sum::<u64>();
        assert!(
            plan.iter()
                .any(|line| line.contains("Index Cond: ((user_id = ")
                    && line.contains("AND (ROW(last_activity_at, conversation_id) < ROW(")),
            "the page starts in the index, not in a filter:\n{}",
            plan.join("\n")
        );
        assert!(
            rows_read <= 4 * 21,
            "{rows_read} rows read for a page of 21:\n{}",
            plan.join("\n")
        );
    }
    db.close().await;
}

/// Rows times loops of one line of `EXPLAIN ANALYZE`'s text.
fn actual_rows(line: &str) -> u64 {
    let field = |name: &str| -> u64 {
        line.split(name)
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    field("rows=") * field("loops=")
}

/// The embedded database's migration 0002 fills the activity of members
/// that a binary of the previous release inserts (a developer's file opened
/// by an older build after a newer one migrated it).
#[tokio::test]
async fn sqlite_memberships_inserted_without_activity_get_their_conversations() {
    let file = TestDb::sqlite();
    let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&file.url)
        .unwrap()
        .create_if_missing(true);
    let mut connection = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
        .await
        .unwrap();
    shared::db::SQLITE_MIGRATIONS
        .run_to(1, &mut connection)
        .await
        .unwrap();
    shared::db::SQLITE_MIGRATIONS
        .run(&mut connection)
        .await
        .unwrap();
    let db = Database::open_sqlite(&file.url).await.unwrap();
    let alice = upsert_user(&db, "ext-alice-sqlite", None, None)
        .await
        .unwrap();
    let newer = create_in_store(&db, &alice, "newer", &[]).await;
    // As the previous release wrote it: the members without the column.
    let older: i64 = sqlx::query_scalar(
        "INSERT INTO conversations (title, created_by, created_at, last_activity_at) \
         VALUES ('older', $1, $2, $2) RETURNING id",
    )
    .bind(alice.id)
    .bind(newer.last_activity_at - 1_000_000)
    .fetch_one(&mut connection)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO conversation_members (conversation_id, user_id, joined_at) VALUES ($1, $2, $3)",
    )
    .bind(older)
    .bind(alice.id)
    .bind(newer.last_activity_at - 1_000_000)
    .execute(&mut connection)
    .await
    .unwrap();
    let copied: i64 = sqlx::query_scalar(
        "SELECT last_activity_at FROM conversation_members WHERE conversation_id = $1",
    )
    .bind(older)
    .fetch_one(&mut connection)
    .await
    .unwrap();
    assert_eq!(copied, newer.last_activity_at - 1_000_000);
    let listed: Vec<i64> = conversations::store::list(&db, &caller(&alice), None, 10)
        .await
        .unwrap()
        .1
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, [newer.id, older], "newest activity first");
}

/// Several that open a fresh embedded file at once (`make run` and `make
/// token`, started together on a new machine) all migrate it: none fails on
/// another's half-applied migrations, and each migration is applied once.
/// Four pools of one process here: the lock (`flock`) is per open file, so
/// they exclude each other as processes do.
#[tokio::test]
async fn sqlite_files_migrated_by_several_at_once_are_migrated_once() {
    let file = TestDb::sqlite();
    let open = || async {
        let db = Database::open_sqlite(&file.url).await?;
        db.migrate().await?;
        anyhow::Ok(db)
    };
    // In one task: each waits on SQLite's own threads, so the four overlap.
    let opened = tokio::join!(open(), open(), open(), open());
    let dbs = [opened.0, opened.1, opened.2, opened.3].map(|db| db.unwrap());
    let Database::Sqlite(pool) = &dbs[0] else {
        unreachable!("a sqlite: URL")
    };
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await
            .unwrap();
    let shipped: Vec<i64> = shared::db::SQLITE_MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(applied, shipped);
    for db in dbs {
        db.close().await;
    }
}

/// A conversation `by` creates through the store, as the route does.
async fn create_in_store(
    db: &Database,
    by: &User,
    title: &str,
    members: &[i64],
) -> conversations::store::Conversation {
    match conversations::store::create(db, &caller(by), title, members)
        .await
        .unwrap()
    {
        (Standing::Stands, Created::Conversation(conversation)) => conversation,
        other => panic!("not created: {other:?}"),
    }
}

/// The caller of the store's functions that a fresh token of `user` makes.
fn caller(user: &User) -> AuthUser {
    AuthUser {
        user_id: user.id,
        jti: uuid::Uuid::new_v4().to_string(),
        generation: user.token_generation,
        exp: u64::MAX / 2,
    }
}

/// Each route is one statement, one round trip to PostgreSQL once its
/// statement is prepared: create too, with the token's standing and the
/// members' check in its statement; and a create refused for an unknown
/// member writes nothing.
#[tokio::test]
async fn each_route_is_one_round_trip_to_postgresql() {
    use std::sync::atomic::Ordering;
    let guard = TestDb::postgres().await;
    let direct = shared::db::PgTarget::parse(&guard.url, Default::default()).unwrap();
    let direct_port = direct.port;
    let (proxied, seen) = crate::postgres_pool::counting_proxy(direct).await;
    // Without TLS, so that the proxy reads the messages.
    let url = guard.url.replace(
        &format!("127.0.0.1:{direct_port}/"),
        &format!("127.0.0.1:{}/", proxied.port),
    ) + "?sslmode=disable";
    assert_ne!(url, guard.url);
    let f = Fixture::on(guard, test_sections(&[("DATABASE_URL", &url)])).await;
    let (_, token) = f.user("alice").await;
    let (bob, _) = f.user("bob").await;
    let round_trips = async |request: reqwest::Response, status: StatusCode| {
        assert_eq!(request.status(), status);
        seen.requests.swap(0, Ordering::Relaxed)
    };
    // Each statement once, to prepare it on the connection.
    let created = f.create(&token, "warm", &[bob.id]).await;
    let id = json_of(created).await["id"].as_i64().unwrap();
    f.create(&token, "refused", &[987654321]).await;
    f.get(&token, "/api/v1/conversations/").await;
    f.get(&token, &format!("/api/v1/conversations/{id}")).await;
    seen.requests.store(0, Ordering::Relaxed);

    let create = f.create(&token, "one", &[bob.id]).await;
    assert_eq!(round_trips(create, StatusCode::CREATED).await, 1, "create");
    let refused = f.create(&token, "unknown", &[bob.id, 987654321]).await;
    assert_eq!(
        round_trips(refused, StatusCode::UNPROCESSABLE_ENTITY).await,
        1
    );
    let list = f.get(&token, "/api/v1/conversations/").await;
    assert_eq!(round_trips(list, StatusCode::OK).await, 1, "list");
    let one = f.get(&token, &format!("/api/v1/conversations/{id}")).await;
    assert_eq!(round_trips(one, StatusCode::OK).await, 1, "get");

    let titles: Vec<String> = sqlx::query_scalar("SELECT title FROM conversations ORDER BY id")
        .fetch_all(&mut tests::services::connect(&url).await.unwrap())
        .await
        .unwrap();
    assert_eq!(titles, ["warm", "one"], "the refused creates wrote nothing");
}
