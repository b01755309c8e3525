//! PostgreSQL as RDS and ApsaraDB serve it: TLS with a certificate signed by
//! the provider's CA, verified (`sslmode=verify-full` with
//! `DATABASE_CA_CERT_PATH`), so that nobody between the function and the
//! database can pose as the database.

use http::StatusCode;
use shared::db::{Database, DbError};
use tests::services::{PgServer, TestCa, clear_redis_prefix, uuid_simple};
use tests::tokens::sso_claims as claims;
use tests::*;

use crate::sso::{SHARED_REDIS, SSO_SECRET, gcgc, login_at};

/// A database opened from the configuration, as a function opens it.
async fn open(vars: &[(&str, &str)]) -> Database {
    Database::open(&test_config(vars).database).await.unwrap()
}

/// Whether the pool's connection is TLS (from the server's side).
pub(crate) async fn is_encrypted(db: &Database) -> bool {
    let Database::Postgres(pool) = db else {
        unreachable!()
    };
    on_pool_session(
        pool,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await
}

#[tokio::test]
async fn verify_full_with_the_providers_ca_connects_by_address_by_name_and_through_database_host() {
    let pg = PgServer::start_tls();
    let ca = pg.ca_cert_path();
    let ca = ca.to_str().unwrap();
    let port = pg.port;
    // No sslmode in the URL: the CA bundle makes it verify-full.
    let by_address = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let by_name = format!("postgres://postgres@localhost:{port}/postgres?sslmode=verify-full");
    // A URL naming another host (the database behind a proxy), redirected by DATABASE_HOST.
    let elsewhere = format!("postgres://postgres@db.invalid:{port}/postgres");
    for vars in [
        vec![("DATABASE_URL", by_address.as_str())],
        vec![("DATABASE_URL", by_name.as_str())],
        vec![
            ("DATABASE_URL", elsewhere.as_str()),
            ("DATABASE_HOST", "localhost"),
        ],
    ] {
        let mut vars = vars.clone();
        vars.push(("DATABASE_CA_CERT_PATH", ca));
        let db = open(&vars).await;
        db.ping().await.unwrap_or_else(|e| panic!("{vars:?}: {e}"));
        assert!(is_encrypted(&db).await, "{vars:?}");
    }
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_that_names_another_host() {
    let pg = PgServer::start_tls_for(&["db.internal.example"]);
    let ca = pg.ca_cert_path();
    let url = pg.url();
    let vars = |mode: &'static str| {
        let url = format!("{url}?sslmode={mode}");
        let ca = ca.to_str().unwrap().to_owned();
        async move { open(&[("DATABASE_URL", &url), ("DATABASE_CA_CERT_PATH", &ca)]).await }
    };
    let refused = vars("verify-full").await.ping().await.unwrap_err();
    assert!(matches!(refused, DbError::Unavailable), "{refused:?}");
    // The chain is right; only the name was wrong.
    vars("verify-ca").await.ping().await.unwrap();
}

/// sso-login with a database whose certificate another CA signed: it starts
/// (the pool is lazy), refuses each login with a 503, and leaves nothing
/// behind: no user, no mark on the token.
#[tokio::test]
async fn verify_full_with_another_ca_is_a_503_at_request_time_that_writes_nothing() {
    let pg = PgServer::start_tls();
    let url = format!("{}?sslmode=verify-full", pg.url());
    let right_ca = pg.ca_cert_path();
    let another_ca = TestCa::new();
    let prefix = format!("tms-test-{}:", uuid_simple());
    let app_trusting = |ca: &std::path::Path| {
        let (config, settings) = test_sections(&[
            ("SSO_JWT_SECRET", SSO_SECRET),
            ("REDIS_URL", SHARED_REDIS),
            ("REDIS_KEY_PREFIX", &prefix),
            ("DATABASE_URL", &url),
            ("DATABASE_CA_CERT_PATH", ca.to_str().unwrap()),
        ]);
        async move { spawn_app(sso_login::build(&config, settings).await.unwrap(), &config).await }
    };
    let database = open(&[
        ("DATABASE_URL", &url),
        ("DATABASE_CA_CERT_PATH", right_ca.to_str().unwrap()),
    ])
    .await;
    database.migrate().await.unwrap();

    let refusing = app_trusting(&another_ca.cert_path()).await;
    let token = gcgc(&claims("wrong-db-ca"));
    let r = login_at(&refusing.client, &refusing.address, &token).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    let Database::Postgres(pool) = &database else {
        unreachable!()
    };
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut sql_session(pool).await)
        .await
        .unwrap();
    assert_eq!(users, 0);

    // The claim was released: the same token logs in, once, where the CA is right.
    let trusting = app_trusting(&right_ca).await;
    let r = login_at(&trusting.client, &trusting.address, &token).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let r = login_at(&trusting.client, &trusting.address, &token).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    clear_redis_prefix(SHARED_REDIS, &prefix);
}
