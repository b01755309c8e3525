//! Every request's outcome and every GCGC token's history, and where a
//! token's login is recorded: its replay key in Redis, its row in
//! PostgreSQL's record of logins.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use shared::Config;
use shared::config::RedisSettings;
use sqlx::Connection;
use sso_login::replay::ReplayStore;
use sso_login::verify::{SsoClaims, VerifiedToken};

use crate::load::{Kind, Load};
use crate::{JWT_SECRET, REDIS_KEY_PREFIX};

/// One request's outcome.
pub struct Outcome {
    pub phase: usize,
    pub kind: Kind,
    /// The sso-login instance it went to.
    pub instance: Option<usize>,
    /// The GCGC token's, for logins.
    pub jti: Option<String>,
    pub started: Instant,
    pub finished: Instant,
    /// `None`: no answer (connection refused or reset, or the client timeout).
    pub status: Option<u16>,
    pub retry_after: bool,
    pub detail: Option<String>,
}

/// Everything a GCGC token went through.
pub struct GcgcToken {
    pub token: String,
    pub claims: Value,
    /// 200 answers for it, retries included: more than one is a token issued twice.
    pub issued: u32,
    /// A 503 or no answer, not yet logged in since.
    pub refused_at: Option<Instant>,
    /// A request with it got no answer: its login may have completed unseen.
    pub unanswered: bool,
}

#[derive(Default)]
pub struct Ledger {
    pub outcomes: Vec<Outcome>,
    pub tokens: HashMap<String, GcgcToken>,
    /// Tokens that logged in (jti, token), for replays.
    pub used: Vec<(String, String)>,
}

/// The Redis key sso-login uses for a token, from its own derivation.
pub fn replay_key(store: &ReplayStore, token: &GcgcToken) -> String {
    let claims: SsoClaims = serde_json::from_value(token.claims.clone()).expect("claims");
    let signed_part = token
        .token
        .rsplit_once('.')
        .map_or(token.token.as_str(), |(s, _)| s)
        .to_owned();
    store.key(&VerifiedToken {
        claims,
        signed_part,
    })
}

/// sso-login's replay store as the run's instances configure it.
pub fn replay_store(redis_url: &str, jwks_url: &str) -> ReplayStore {
    let vars: HashMap<String, String> = [
        ("JWT_SECRET", JWT_SECRET),
        ("REDIS_URL", redis_url),
        ("REDIS_KEY_PREFIX", REDIS_KEY_PREFIX),
        ("SSO_JWKS_URL", jwks_url),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let (_, redis): (Config, RedisSettings) =
        Config::with_sections(&vars).expect("chaos configuration");
    ReplayStore::from_settings(&redis).expect("replay store")
}

/// A token's key in the database's record of logins: its replay key
/// without the deployment's prefix, as sso-login writes it.
fn record_key(load: &Load, jti: &str) -> String {
    let ledger = load.ledger.lock().expect("ledger");
    let key = replay_key(&load.replay_store, &ledger.tokens[jti]);
    key.strip_prefix(REDIS_KEY_PREFIX)
        .unwrap_or(&key)
        .to_owned()
}

/// The attempt (claim) under which the database recorded a token's login,
/// read straight from PostgreSQL; `None` when there is no record or the
/// database did not answer.
pub async fn record_of(load: &Load, jti: &str) -> Option<String> {
    let key = record_key(load, jti);
    let read = async {
        let mut conn = sqlx::PgConnection::connect(&load.pg_url).await?;
        sqlx::query_scalar::<_, String>("SELECT attempt FROM sso_logins WHERE token_key = $1")
            .bind(key)
            .fetch_optional(&mut conn)
            .await
    };
    tokio::time::timeout(Duration::from_secs(1), read)
        .await
        .ok()?
        .ok()?
}

/// Every issued token's jti → whether the database holds its record.
pub async fn records(load: &Load) -> anyhow::Result<HashMap<String, bool>> {
    let jtis: Vec<String> = {
        let ledger = load.ledger.lock().expect("ledger");
        ledger
            .tokens
            .iter()
            .filter(|(_, t)| t.issued > 0)
            .map(|(jti, _)| jti.clone())
            .collect()
    };
    let keys: Vec<(String, String)> = jtis
        .into_iter()
        .map(|jti| {
            let key = record_key(load, &jti);
            (jti, key)
        })
        .collect();
    let mut conn = sqlx::PgConnection::connect(&load.pg_url).await?;
    let mut found = HashMap::new();
    for chunk in keys.chunks(500) {
        let recorded: Vec<String> =
            sqlx::query_scalar("SELECT token_key FROM sso_logins WHERE token_key = ANY($1)")
                .bind(chunk.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>())
                .fetch_all(&mut conn)
                .await?;
        for (jti, key) in chunk {
            found.insert(jti.clone(), recorded.contains(key));
        }
    }
    Ok(found)
}
