//! Single use that survives the replay store losing marks, against real
//! Redis processes left at a managed Redis's defaults: eviction at
//! maxmemory, a failover to a replica that never received the mark, a
//! restart without persistence. The login's record in the database refuses
//! each replay that Redis no longer knows. And the functions tell the
//! operator which of the store's settings can lose or refuse marks.

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;
use shared::clock::{unix_micros, unix_secs};
use shared::db::Database;
use sso_login::users::{LOGIN_SQL, LoginRecord, Recorded, record_login, sweep_expired};
use testkit::relay::Relay;
use tests::services::{PgServer, RedisServer, TestDb, uuid_simple, write_other_data};
use tests::tokens::sso_claims as claims;
use tests::*;

use crate::sso::{SSO_SECRET, gcgc, login_at};

/// An sso-login instance of a deployment: its Redis, its key prefix, its database.
async fn instance(redis_url: &str, prefix: &str, db_url: &str) -> TestApp {
    let (config, settings) = test_sections(&[
        ("SSO_JWT_SECRET", SSO_SECRET),
        ("REDIS_URL", redis_url),
        ("REDIS_KEY_PREFIX", prefix),
        ("DATABASE_URL", db_url),
    ]);
    spawn_app(sso_login::build(&config, settings).await.unwrap(), &config).await
}

async fn login(app: &TestApp, token: &str) -> (StatusCode, String) {
    let r = login_at(&app.client, &app.address, token).await;
    (r.status(), r.text().await.unwrap_or_default())
}

/// A login's answer once a broken Redis connection has been replaced: a
/// client retries a 503.
async fn answer_but_503(app: &TestApp, token: &str) -> (StatusCode, String) {
    let started = Instant::now();
    loop {
        let (status, body) = login(app, token).await;
        if status != StatusCode::SERVICE_UNAVAILABLE || started.elapsed() > Duration::from_secs(10)
        {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_refused_as_used((status, body): (StatusCode, String), what: &str) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
    assert!(
        body.contains("Token has already been used"),
        "{what}: {body}"
    );
}

fn keys(redis: &RedisServer, prefix: &str) -> Vec<String> {
    redis
        .command(redis::cmd("KEYS").arg(format!("{prefix}*")))
        .unwrap()
}

fn info_field(redis: &RedisServer, section: &str, field: &str) -> String {
    let info: String = redis.command(redis::cmd("INFO").arg(section)).unwrap();
    info.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("{field}:"))
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

fn tokens(label: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| gcgc(&claims(&format!("{label}-{i}-{}", uuid_simple()))))
        .collect()
}

/// Writes other expiring keys (as an application sharing the Redis would)
/// until Redis has evicted every mark under `prefix`.
fn fill_until_marks_are_evicted(redis: &RedisServer, prefix: &str) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    for batch in 0..400 {
        write_other_data(&mut conn, batch, 250, 3600).unwrap();
        if keys(redis, prefix).is_empty() {
            return;
        }
    }
    panic!("the marks under {prefix} were never evicted");
}

/// (a) ElastiCache's and Memorystore's default, and its all-keys sibling:
/// at maxmemory Redis evicts the marks. Every replay is refused by the
/// database's record, and fresh logins never get a 500 meanwhile.
#[tokio::test]
async fn evicting_policies_never_let_a_used_token_log_in_again() {
    for policy in ["volatile-lru", "allkeys-lru"] {
        let redis =
            RedisServer::start_with_settings(&["--maxmemory", "4mb", "--maxmemory-policy", policy]);
        let db = TestDb::postgres().await;
        let prefix = format!("evict-{policy}:");
        let app = instance(&redis.url(), &prefix, &db.url).await;
        let used = tokens(policy, 20);
        for token in &used {
            let (status, body) = login(&app, token).await;
            assert_eq!(status, StatusCode::OK, "{policy}: {body}");
        }
        for token in &used {
            assert_refused_as_used(login(&app, token).await, "a replay Redis knows");
        }
        fill_until_marks_are_evicted(&redis, &prefix);
        assert!(
            info_field(&redis, "stats", "evicted_keys")
                .parse::<u64>()
                .unwrap()
                > 0
        );
        for token in &used {
            assert_refused_as_used(login(&app, token).await, "a replay Redis forgot");
        }
        for token in &tokens(&format!("{policy}-fresh"), 20) {
            let (status, body) = login(&app, token).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{policy}: a fresh login on a full Redis: {body}"
            );
        }
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (b) A primary and a replica: a login whose mark never reached the
/// replica, the primary killed right after the answer, the replica
/// promoted and the function pointed at it. The replay is refused.
#[tokio::test]
async fn a_failover_to_a_replica_that_missed_the_mark_refuses_the_replay() {
    let mut primary = RedisServer::start();
    // The replica replicates through a relay whose primary side can go
    // silent: asynchronous replication's window, held open.
    let link = Relay::start(primary.port).await;
    let link_port = link.port.to_string();
    let replica = RedisServer::start_with_settings(&["--replicaof", "127.0.0.1", &link_port]);
    wait_until("the replica is in sync", || {
        info_field(&replica, "replication", "master_link_status") == "up"
    })
    .await;
    let db = TestDb::postgres().await;
    let prefix = "failover:";
    let app = instance(&primary.url(), prefix, &db.url).await;
    let replicated = gcgc(&claims("failover-replicated"));
    assert_eq!(login(&app, &replicated).await.0, StatusCode::OK);
    wait_until("the first mark reaches the replica", || {
        keys(&replica, prefix).len() == 1
    })
    .await;

    link.silence_servers();
    let lost = gcgc(&claims("failover-lost"));
    assert_eq!(login(&app, &lost).await.0, StatusCode::OK);
    primary.stop();
    replica
        .command::<()>(redis::cmd("REPLICAOF").arg("NO").arg("ONE"))
        .unwrap();
    assert_eq!(
        keys(&replica, prefix).len(),
        1,
        "the promoted replica never received the second login's mark"
    );

    let after_failover = instance(&replica.url(), prefix, &db.url).await;
    assert_refused_as_used(
        login(&after_failover, &replicated).await,
        "a mark that was replicated",
    );
    assert_refused_as_used(login(&after_failover, &lost).await, "a mark that was lost");
    let fresh = gcgc(&claims("failover-fresh"));
    assert_eq!(login(&after_failover, &fresh).await.0, StatusCode::OK);
}

/// (c) A Redis without persistence restarts empty: the replays of the
/// logins before it are refused.
#[tokio::test]
async fn a_restart_without_persistence_refuses_the_replays() {
    let mut redis = RedisServer::start();
    let db = TestDb::postgres().await;
    let app = instance(&redis.url(), "restart:", &db.url).await;
    let used = tokens("restart", 5);
    for token in &used {
        assert_eq!(login(&app, token).await.0, StatusCode::OK);
    }
    redis.stop();
    redis.resume_serving();
    assert!(keys(&redis, "restart:").is_empty(), "restarted empty");
    for token in &used {
        assert_refused_as_used(
            answer_but_503(&app, token).await,
            "a replay after the restart",
        );
    }
    // Concurrent replays of a token Redis forgot: the record refuses every
    // one, whichever reaches it first, and none is a 5xx.
    redis.stop();
    redis.resume_serving();
    let replays = futures_util::future::join_all((0..20).map(|_| login(&app, &used[0]))).await;
    for replay in replays {
        assert_refused_as_used(replay, "one of 20 concurrent replays");
    }
}

/// The replay key's prefix is Redis's business: a deployment that changes
/// `REDIS_KEY_PREFIX` does not re-open the tokens used before.
#[tokio::test]
async fn a_changed_key_prefix_does_not_reopen_a_used_token() {
    // On both databases: the embedded one records logins in a transaction.
    for db in [TestDb::postgres().await, TestDb::sqlite()] {
        let before = instance(
            crate::sso::SHARED_REDIS,
            &format!("before-{}:", uuid_simple()),
            &db.url,
        )
        .await;
        let after = instance(
            crate::sso::SHARED_REDIS,
            &format!("after-{}:", uuid_simple()),
            &db.url,
        )
        .await;
        let token = gcgc(&claims("prefix-change"));
        assert_eq!(login(&before, &token).await.0, StatusCode::OK, "{}", db.url);
        assert_refused_as_used(login(&after, &token).await, "under the new prefix");
    }
}

/// Migration 0004 keeps every record of 0003: a token recorded before it
/// (its expiry then stored as exp + 30 s, in microseconds) is still refused
/// after it, keyed by its own `exp`. On both databases.
#[tokio::test]
async fn records_written_before_migration_0004_still_refuse_their_tokens() {
    macro_rules! migration {
        ($db:literal, $file:literal) => {
            include_str!(concat!("../../../shared/migrations/", $db, "/", $file))
        };
    }
    let exp = unix_secs() as i64 + 3600;
    let old_row = format!(
        "INSERT INTO sso_logins (token_key, attempt, expires_at) VALUES ('sso:jti:before', 'old', {})",
        (exp + 30) * 1_000_000
    );
    let postgres = TestDb::postgres_unmigrated().await;
    let sqlite = TestDb::sqlite();
    let before_0004 = [
        (
            &postgres,
            [
                migration!("postgres", "0001_init.sql"),
                migration!("postgres", "0002_members_by_activity.sql"),
                migration!("postgres", "0003_sso_logins.sql"),
            ],
            [
                migration!("postgres", "0004_sso_logins_by_expiry.sql"),
                migration!("postgres", "0005_sessions_that_end.sql"),
            ],
        ),
        (
            &sqlite,
            [
                migration!("sqlite", "0001_init.sql"),
                migration!("sqlite", "0002_members_by_activity.sql"),
                migration!("sqlite", "0003_sso_logins.sql"),
            ],
            [
                migration!("sqlite", "0004_sso_logins_by_expiry.sql"),
                migration!("sqlite", "0005_sessions_that_end.sql"),
            ],
        ),
    ];
    for (test_db, earlier, [migration_0004, later]) in before_0004 {
        let db = if test_db.url.starts_with("sqlite") {
            Database::open_sqlite(&test_db.url).await.unwrap()
        } else {
            Database::open_postgres(&test_db.url, 1).unwrap()
        };
        let mut script = earlier.join("\n");
        script.push_str(&format!(";\n{old_row};\n{migration_0004};\n{later}"));
        run_script(&db, &script).await;
        let replay = record_as(&db, "sso:jti:before", "new", exp, "ext-before").await;
        assert_eq!(replay, Recorded::AlreadyUsed, "{}", test_db.url);
        let other = record_as(&db, "sso:jti:after", "new", exp, "ext-after").await;
        assert!(matches!(other, Recorded::Login(_)), "{other:?}");
        db.close().await;
    }
}

/// The embedded database's record: once, and swept when expired.
#[tokio::test]
async fn the_embedded_database_records_once_and_sweeps() {
    let file = TestDb::sqlite();
    let db = Database::open_sqlite(&file.url).await.unwrap();
    db.migrate().await.unwrap();
    let later = unix_secs() as i64 + 3600;
    let first = record_as(&db, "sso:jti:s", "one", later, "ext-s").await;
    assert!(matches!(first, Recorded::Login(_)), "{first:?}");
    let replay = record_as(&db, "sso:jti:s", "two", later, "ext-s").await;
    assert_eq!(replay, Recorded::AlreadyUsed);
    for i in 0..3 {
        let key = format!("sso:jti:old-{i}");
        record_as(&db, &key, "old", 1, "ext-old").await;
    }
    assert_eq!(sweep_expired(&db, unix_secs()).await.unwrap(), 3);
    let again = record_as(&db, "sso:jti:s", "three", later, "ext-s").await;
    assert_eq!(again, Recorded::AlreadyUsed, "the live record stays");
    db.close().await;
}

/// The database froze while the login's statement was on its way: the
/// login answers 503, and once the database runs again the late statement
/// writes nothing (its deadline passed), so the retry logs in.
#[tokio::test]
async fn a_login_statement_that_runs_after_its_deadline_writes_nothing() {
    let pg = PgServer::start();
    let db = Database::open_postgres(&pg.url(), 2).unwrap();
    db.migrate().await.unwrap();
    let prefix = format!("late-{}:", uuid_simple());
    let app = instance(crate::sso::SHARED_REDIS, &prefix, &pg.url()).await;
    assert_eq!(
        login(&app, &gcgc(&claims("late-warm"))).await.0,
        StatusCode::OK
    );
    let token = gcgc(&claims("late"));
    pg.hang();
    let (status, _) = login(&app, &token).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Past the statement's deadline, before the record's forgetting (7.5 s):
    // the retry succeeds by the deadline alone.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    pg.unhang();
    let (status, body) = answer_but_503(&app, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_refused_as_used(login(&app, &token).await, "after the retry");
    tests::services::clear_redis_prefix(crate::sso::SHARED_REDIS, &prefix);
}

/// A statement that started in time, then waited on a lock past the
/// caller's patience, commits its record after the login answered 503. The
/// login forgets its record only once the statement can no longer be
/// running (its deadline plus the server's statement_timeout), so the
/// token is used up only until then, not for good.
#[tokio::test]
async fn a_statement_held_on_a_lock_past_the_answer_leaves_the_token_usable_again() {
    let test_db = TestDb::postgres().await;
    let prefix = format!("locked-{}:", uuid_simple());
    let app = instance(crate::sso::SHARED_REDIS, &prefix, &test_db.url).await;
    assert_eq!(
        login(&app, &gcgc(&claims("locked-user"))).await.0,
        StatusCode::OK
    );
    let db = Database::open_postgres(&test_db.url, 2).unwrap();
    let Database::Postgres(pool) = &db else {
        unreachable!()
    };
    // Another transaction holds the user's row.
    let mut holder = sql_session(pool).await;
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT 1 FROM users WHERE external_id = 'locked-user' FOR UPDATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let token = gcgc(&claims("locked-user"));
    let sent = Instant::now();
    let (status, _) = login(&app, &token).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the statement waits on the lock"
    );
    // Past the statement's deadline and the old forgetting (2.5 s), the lock
    // goes and the waiting statement commits its record.
    tokio::time::sleep(Duration::from_millis(3000).saturating_sub(sent.elapsed())).await;
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    drop(holder);
    let recorded = async || -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM sso_logins")
            .fetch_one(&mut sql_session(pool).await)
            .await
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while recorded().await < 2 {
        assert!(
            Instant::now() < deadline,
            "the late statement committed its record"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_refused_as_used(login(&app, &token).await, "while the record stands");
    // Once the statement cannot be running any more, its record is forgotten.
    let mut last = (StatusCode::IM_A_TEAPOT, String::new());
    while sent.elapsed() < sso_login::users::STATEMENT_SETTLED_AFTER + Duration::from_secs(5) {
        last = login(&app, &token).await;
        if last.0 == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(last.0, StatusCode::OK, "usable again: {}", last.1);
    assert_refused_as_used(login(&app, &token).await, "and single-use again");
    db.close().await;
    tests::services::clear_redis_prefix(crate::sso::SHARED_REDIS, &prefix);
}

/// [`record_login`] of a user without email or name; panics on an error.
async fn record_as(
    db: &Database,
    token_key: &str,
    attempt: &str,
    token_exp: i64,
    external_id: &str,
) -> Recorded {
    record_login(
        db,
        &record(token_key, attempt, token_exp),
        external_id,
        None,
        None,
    )
    .await
    .unwrap()
}

fn record<'a>(token_key: &'a str, attempt: &'a str, token_exp: i64) -> LoginRecord<'a> {
    LoginRecord {
        token_key,
        attempt,
        token_exp,
    }
}

/// The statement itself: a token is recorded once; after its deadline it
/// writes nothing.
#[tokio::test]
async fn the_login_statement_records_once_and_refuses_late() {
    let test_db = TestDb::postgres().await;
    let db = Database::open_postgres(&test_db.url, 1).unwrap();
    let later = unix_secs() as i64 + 3600;
    let first = record_as(&db, "sso:jti:a", "one", later, "ext-a").await;
    assert!(matches!(first, Recorded::Login(_)), "{first:?}");
    let replay = record_as(&db, "sso:jti:a", "two", later, "ext-a").await;
    assert_eq!(replay, Recorded::AlreadyUsed);

    let Database::Postgres(pool) = &db else {
        unreachable!()
    };
    let mut conn = sql_session(pool).await;
    let late = sqlx::query(LOGIN_SQL)
        .bind("ext-late")
        .bind(None::<String>)
        .bind(None::<String>)
        .bind(unix_micros())
        .bind("sso:jti:late")
        .bind("late")
        .bind(later)
        .bind(unix_micros() - 1)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!sqlx::Row::get::<bool, _>(&late, "in_time"));
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
    assert_eq!(
        count("SELECT count(*) FROM sso_logins WHERE token_key = 'sso:jti:late'")
            .fetch_one(&mut conn)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM users WHERE external_id = 'ext-late'")
            .fetch_one(&mut conn)
            .await
            .unwrap(),
        0,
        "nothing written"
    );

    drop(conn);
    db.close().await;
}

/// Expired records are swept in batches, off the login's path: a sweep
/// deletes every expired record and no live one, and an instance's first
/// login starts one.
#[tokio::test]
async fn expired_records_are_swept_and_live_ones_kept() {
    let test_db = TestDb::postgres().await;
    let db = Database::open_postgres(&test_db.url, 1).unwrap();
    let Database::Postgres(pool) = &db else {
        unreachable!()
    };
    let later = unix_secs() as i64 + 3600;
    let mut conn = sql_session(pool).await;
    // More than one batch of expired records, and a live one.
    sqlx::query(
        "INSERT INTO sso_logins (token_exp, token_key, attempt) \
         SELECT g, 'sso:jti:expired-' || g, 'old' FROM generate_series(1, 1234) g",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);
    let live = record_as(&db, "sso:jti:live", "one", later, "ext-live").await;
    assert!(matches!(live, Recorded::Login(_)), "{live:?}");
    let remaining = async |db: &Database| -> (i64, i64) {
        let Database::Postgres(pool) = db else {
            unreachable!()
        };
        let mut conn = sql_session(pool).await;
        sqlx::query_as(
            "SELECT count(*) FILTER (WHERE token_exp < 10000), count(*) FILTER (WHERE token_exp >= 10000) \
             FROM sso_logins",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap()
    };
    assert_eq!(
        remaining(&db).await,
        (1234, 1),
        "the login deleted no record"
    );
    assert_eq!(sweep_expired(&db, unix_secs()).await.unwrap(), 1234);
    assert_eq!(
        remaining(&db).await,
        (0, 1),
        "every expired record, and only those"
    );
    assert_eq!(sweep_expired(&db, unix_secs()).await.unwrap(), 0);

    // Through the function: its first login sweeps, in the background.
    let mut conn = sql_session(pool).await;
    sqlx::query(
        "INSERT INTO sso_logins (token_exp, token_key, attempt) VALUES (1, 'sso:jti:old', 'old')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);
    let prefix = format!("sweep-{}:", uuid_simple());
    let app = instance(crate::sso::SHARED_REDIS, &prefix, &test_db.url).await;
    assert_eq!(
        login(&app, &gcgc(&claims("sweeper"))).await.0,
        StatusCode::OK
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while remaining(&db).await.0 > 0 {
        assert!(
            Instant::now() < deadline,
            "the first login swept the expired record"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(remaining(&db).await.1, 2, "the live records stay");
    db.close().await;
    tests::services::clear_redis_prefix(crate::sso::SHARED_REDIS, &prefix);
}

/// Code deployed before its migration (0003 not applied): a login is a
/// 503 that the client may retry, not a 500, and it issues nothing.
#[tokio::test]
async fn a_database_behind_the_code_is_a_503_not_a_500() {
    let test_db = TestDb::postgres().await;
    let db = Database::open_postgres(&test_db.url, 1).unwrap();
    let Database::Postgres(pool) = &db else {
        unreachable!()
    };
    sqlx::query("DROP TABLE sso_logins")
        .execute(&mut sql_session(pool).await)
        .await
        .unwrap();
    let prefix = format!("behind-{}:", uuid_simple());
    let app = instance(crate::sso::SHARED_REDIS, &prefix, &test_db.url).await;
    let token = gcgc(&claims("behind"));
    let (status, body) = login(&app, &token).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("Database"), "{body}");
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE external_id = 'behind'")
        .fetch_one(&mut sql_session(pool).await)
        .await
        .unwrap();
    assert_eq!(users, 0, "nothing written");
    db.close().await;
    tests::services::clear_redis_prefix(crate::sso::SHARED_REDIS, &prefix);
}

/// `/health/ready` of the health binary on the given Redis.
async fn readiness(redis_url: &str) -> (StatusCode, Value) {
    let (health, base) = start_function("health", &[("REDIS_URL", redis_url)]).await;
    let r = client()
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap();
    let answer = (r.status(), r.json::<Value>().await.unwrap());
    let stderr = health.stop().await;
    // Every finding is also a warning line with its metric.
    for warning in answer.1["warnings"].as_array().into_iter().flatten() {
        let line = json_lines(&stderr)
            .find(|l| l["message"] == *warning)
            .unwrap_or_else(|| panic!("no log line for {warning}: {stderr}"));
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["replay_store_at_risk"], 1);
    }
    answer
}

fn warnings(body: &Value) -> Vec<String> {
    body["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| w.as_str().unwrap().to_owned())
        .collect()
}

/// Readiness reads the store's settings (INFO, as on ElastiCache, where
/// CONFIG is disabled) and names each one that can lose marks, with its
/// fix; the database's record makes up for those, so it stays ready.
#[tokio::test]
async fn readiness_names_each_setting_that_can_lose_marks_and_its_fix() {
    let managed_default = RedisServer::start_with_settings(&[
        "--maxmemory",
        "64mb",
        "--maxmemory-policy",
        "volatile-lru",
    ]);
    let (status, body) = readiness(&managed_default.url()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["replay_store"], "at risk");
    let found = warnings(&body);
    assert!(
        found
            .iter()
            .any(|w| w.contains("maxmemory-policy volatile-lru") && w.contains("noeviction")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|w| w.starts_with("appendonly no")),
        "{found:?}"
    );

    let durable = RedisServer::start_with_settings(&[
        "--maxmemory",
        "64mb",
        "--maxmemory-policy",
        "noeviction",
        "--appendonly",
        "yes",
    ]);
    let (status, body) = readiness(&durable.url()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["replay_store"], "ok");
    assert!(warnings(&body).is_empty(), "{body}");
}

/// A store that refuses the claims themselves fails readiness: a full
/// `noeviction` Redis, and a read-only replica.
#[tokio::test]
async fn readiness_fails_where_the_store_refuses_claims() {
    let full = RedisServer::start_with_settings(&[
        "--maxmemory",
        "2mb",
        "--maxmemory-policy",
        "noeviction",
    ]);
    let value = "x".repeat(16 * 1024);
    for i in 0..1000 {
        let set = full.command::<()>(redis::cmd("SET").arg(format!("filler:{i}")).arg(&value));
        if set.is_err() {
            break;
        }
    }
    let (status, body) = readiness(&full.url()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["replay_store"], "refuses claims");
    assert!(
        body["detail"].as_str().unwrap().contains("replay_store"),
        "{body}"
    );

    let primary = RedisServer::start();
    let port = primary.port.to_string();
    let replica = RedisServer::start_with_settings(&["--replicaof", "127.0.0.1", &port]);
    let (status, body) = readiness(&replica.url()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        warnings(&body).iter().any(|w| w.starts_with("role slave")),
        "{body}"
    );
}

/// At start, sso-login reads the store's settings and warns of each one
/// that can lose marks, as a log line and a metric, before any request.
#[tokio::test]
async fn sso_login_warns_at_start_of_a_store_that_can_lose_marks() {
    let redis = RedisServer::start_with_settings(&[
        "--maxmemory",
        "64mb",
        "--maxmemory-policy",
        "allkeys-lru",
    ]);
    let (sso, _) = start_function(
        "sso-login",
        &[("REDIS_URL", &redis.url()), ("SSO_JWT_SECRET", SSO_SECRET)],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stderr = sso.stop().await;
    let line = json_lines(&stderr)
        .find(|l| l["setting"] == "maxmemory-policy")
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["replay_store_at_risk"], 1);
    assert!(line["message"].as_str().unwrap().contains("allkeys-lru"));
}
