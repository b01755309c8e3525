//! The Redis that users actually get: a cluster endpoint (ElastiCache
//! Serverless, cluster mode, Tair direct mode: `redis+cluster://`) and TLS
//! signed by the provider's own CA (`rediss://` with `REDIS_CA_CERT_PATH`).
//! Single use holds on each, and each fails closed.

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;
use sso_login::replay::ReplayStore;
use sso_login::verify::SsoVerifier;
use tests::services::{RedisCluster, RedisServer, TestCa, TestDb};
use tests::tokens::sso_claims as claims;
use tests::*;

use crate::sso::{SSO_SECRET, Sso, detail, gcgc, logs_in_once_eventually};

/// Fifty logins with one token at once: exactly one wins, the others are
/// replays; and the token stays used.
async fn exactly_one_of_fifty_wins(sso: &Sso) {
    let token = gcgc(&claims("racer"));
    let responses = futures_util::future::join_all((0..50).map(|_| sso.login(&token))).await;
    let mut ok = 0;
    for r in responses {
        match r.status() {
            StatusCode::OK => ok += 1,
            StatusCode::UNAUTHORIZED => assert_eq!(detail(r).await, "Token has already been used"),
            other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
        }
    }
    assert_eq!(ok, 1);
    let r = sso.login(&token).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(detail(r).await, "Token has already been used");
}

/// A login refused because the replay store cannot be used: a 503 that
/// came fast and issued nothing.
async fn refused_fast_with_503(sso: &Sso, token: &str) {
    let started = Instant::now();
    let r = sso.login(token).await;
    let took = started.elapsed();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        took < Duration::from_secs(5),
        "a bound against hangs: {took:?}"
    );
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert!(body.get("access_token").is_none(), "{body}");
}

/// The replay key of a token, as sso-login derives it under this prefix.
async fn replay_key(sso: &Sso, token: &str) -> String {
    let (config, settings): (_, sso_login::Settings) = test_sections(&[
        ("SSO_JWT_SECRET", SSO_SECRET),
        ("REDIS_KEY_PREFIX", &sso.prefix),
    ]);
    let verified = SsoVerifier::from_settings(&settings.sso, config.app_env)
        .verify(token)
        .await
        .unwrap();
    ReplayStore::from_settings(&settings.redis)
        .unwrap()
        .key(&verified)
}

/// `/health/ready` of the health binary: its status and its Redis check.
async fn readiness(base: &str) -> (StatusCode, Value) {
    let r = client()
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    (status, body["checks"]["redis"].clone())
}

#[tokio::test]
async fn on_a_cluster_exactly_one_of_fifty_concurrent_logins_wins_and_health_pings_it() {
    let cluster = RedisCluster::start();
    let sso = Sso::start(&cluster.url(), TestDb::sqlite(), &[]).await;
    exactly_one_of_fifty_wins(&sso).await;
    // Tokens whose keys live on different masters each log in once.
    for n in 0..6 {
        let token = gcgc(&claims(&format!("spread-{n}")));
        assert_eq!(sso.login(&token).await.status(), StatusCode::OK);
        assert_eq!(sso.login(&token).await.status(), StatusCode::UNAUTHORIZED);
    }

    let (health, base) = start_function("health", &[("REDIS_URL", &cluster.url())]).await;
    assert_eq!(readiness(&base).await, (StatusCode::OK, "ok".into()));
    health.stop().await;
}

#[tokio::test]
async fn a_stopped_cluster_master_is_a_fast_503_and_the_token_works_once_it_is_back() {
    let mut cluster = RedisCluster::start();
    let sso = Sso::start(&cluster.url(), TestDb::sqlite(), &[]).await;
    let (health, base) = start_function("health", &[("REDIS_URL", &cluster.url())]).await;
    // The connection is open while the cluster is healthy.
    assert_eq!(
        sso.login(&gcgc(&claims("warm"))).await.status(),
        StatusCode::OK
    );
    let token = gcgc(&claims("master-down"));
    let owner = cluster.master_of(&replay_key(&sso, &token).await);
    cluster.masters[owner].stop();

    refused_fast_with_503(&sso, &token).await;
    // Readiness reports it once the cluster has noticed (its node timeout).
    cluster.wait_until_failed();
    let (status, redis) = readiness(&base).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(redis, "unavailable");

    // Without replicas its slots are down until it returns on its port.
    cluster.masters[owner].resume_serving();
    cluster.wait_until_ok();
    logs_in_once_eventually(&sso, &token).await;
    assert_eq!(readiness(&base).await, (StatusCode::OK, "ok".into()));
    health.stop().await;
}

#[tokio::test]
async fn over_tls_with_the_providers_ca_exactly_one_of_fifty_concurrent_logins_wins() {
    let redis = RedisServer::start_tls();
    let ca = redis.ca_cert_path();
    let sso = Sso::start(
        &redis.url(),
        TestDb::sqlite(),
        &[("REDIS_CA_CERT_PATH", ca.to_str().unwrap())],
    )
    .await;
    exactly_one_of_fifty_wins(&sso).await;
}

#[tokio::test]
async fn tls_signed_by_another_ca_fails_closed_with_503_and_the_right_ca_works() {
    let redis = RedisServer::start_tls();
    let url = redis.url();
    let another_ca = TestCa::new();
    let token = gcgc(&claims("wrong-ca"));
    for ca in [Some(another_ca.cert_path()), None] {
        // Another CA, or the system's roots: neither signed this server.
        let vars: Vec<(&str, &str)> = ca
            .iter()
            .map(|path| ("REDIS_CA_CERT_PATH", path.to_str().unwrap()))
            .collect();
        let refusing = Sso::start(&url, TestDb::sqlite(), &vars).await;
        refused_fast_with_503(&refusing, &token).await;
        let mut health_vars = vars.clone();
        health_vars.push(("REDIS_URL", &url));
        let (health, base) = start_function("health", &health_vars).await;
        let (status, check) = readiness(&base).await;
        assert_eq!(
            (status, check),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable".into())
        );
        health.stop().await;
    }

    // The right CA: the token logs in, once.
    let ca = redis.ca_cert_path();
    let trusting = Sso::start(
        &url,
        TestDb::sqlite(),
        &[("REDIS_CA_CERT_PATH", ca.to_str().unwrap())],
    )
    .await;
    assert_eq!(trusting.login(&token).await.status(), StatusCode::OK);
    assert_eq!(
        trusting.login(&token).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

/// ElastiCache Serverless as it is: a cluster endpoint that speaks TLS only.
#[tokio::test]
async fn on_a_tls_cluster_with_the_providers_ca_exactly_one_of_fifty_wins_and_another_ca_is_503() {
    let cluster = RedisCluster::start_tls();
    let url = cluster.url();
    let ca = cluster.ca_cert_path();
    let sso = Sso::start(
        &url,
        TestDb::sqlite(),
        &[("REDIS_CA_CERT_PATH", ca.to_str().unwrap())],
    )
    .await;
    exactly_one_of_fifty_wins(&sso).await;

    let another_ca = TestCa::new();
    let refusing = Sso::start(
        &url,
        TestDb::sqlite(),
        &[(
            "REDIS_CA_CERT_PATH",
            another_ca.cert_path().to_str().unwrap(),
        )],
    )
    .await;
    refused_fast_with_503(&refusing, &gcgc(&claims("tls-cluster-wrong-ca"))).await;
}

/// Nagle off on every connection to Redis, single or cluster: with it, a
/// command sent while the not-awaited completion of the last login is
/// unanswered waits for that reply's ACK, a round trip added to the next
/// login (`make bench`'s latency rows).
#[tokio::test]
async fn connections_to_redis_send_each_command_at_once() {
    let single = RedisServer::start();
    let cluster = RedisCluster::start();
    cluster.wait_until_ok();
    for url in [single.url(), cluster.url()] {
        let client = shared::redis_client::RedisClient::new(&url, None).unwrap();
        client.ping().await.unwrap();
        let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
        let nodelay = nodelay_of_sockets_to(port);
        assert!(!nodelay.is_empty(), "{url}: no connection found");
        assert!(nodelay.iter().all(|on| *on), "{url}: Nagle on: {nodelay:?}");
    }
}
