//! The replay store: marks a GCGC token as used, atomically, so that of any
//! number of concurrent logins with one token exactly one succeeds, and does
//! so without keeping anything that the rule needs in an instance's memory
//! (instances are frozen, killed and recycled at any moment; a hung Redis
//! may apply a command long after the caller gave up).
//!
//! A login marks its token in two steps:
//! 1. [`ReplayStore::claim`]: `SET key pending:<unique> NX PX <PENDING_TTL>`.
//!    The token is taken; no other login can have it.
//! 2. [`ReplayStore::complete`], once the database has recorded the login
//!    (`crate::users::record_login`, which decides), sent as the API token is
//!    issued and not awaited by the answer: an atomic compare-and-set turns
//!    this claim's own pending value into `done:<unique>` with the token's
//!    remaining lifetime. It only succeeds while its sender still counts on
//!    it (the sender says how long; Redis measures the claim's age on its
//!    own clock), so a late command (an instance frozen in between) can
//!    never make a mark permanent. Until it lands, the pending claim refuses
//!    the token's replays just the same.
//!
//! A claim that was never completed (the instance died, Redis hung, the
//! database failed, the client left) is *abandoned* once it is older than
//! [`ABANDONED_AFTER`]: the next login with the token takes it over, from any
//! instance, and it expires by itself anyway. A login that fails after its
//! claim releases it at once (compare-and-delete on its own value). If that
//! fails too, the release is retried in the background for
//! [`RELEASE_RETRY_FOR`]: a completion that Redis applied but whose reply was
//! lost (Redis killed or frozen right after it) leaves a done mark that no
//! takeover frees, and no API token was issued under it. Such a mark is
//! given back before anything else once Redis answers again: the instance
//! keeps its unreleased claims, retries them every
//! [`RELEASE_RETRY_EVERY`], and releases a token's own unreleased claim
//! before it claims that token again; a login on another instance that
//! finds a done mark looks once more after [`DONE_RECHECK_AFTER`], so a
//! retry that reaches Redis first is not told the token was used. (A
//! frozen Lambda instance retries when it next runs.)
//!
//! Without `REDIS_URL`, an in-process store with the same rules: it protects
//! one instance only, and says so at start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use shared::clock::{LEEWAY_SECS, unix_secs};
use shared::config::RedisSettings;
use shared::redis_client::{REDIS_TIMEOUT, RedisClient};

use crate::verify::VerifiedToken;

/// How long a claim may take to complete: the login's database work (bounded
/// at one second) and the signing, with room to spare. Past this its owner
/// can no longer complete it, and another login may take it over.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(3);
/// An abandoned claim that nobody takes over expires by itself after this.
pub const PENDING_TTL: Duration = Duration::from_secs(60);
/// Room for the completion's reply to arrive before the caller stops waiting.
const REPLY_MARGIN: Duration = Duration::from_millis(100);
/// How long a release that failed is retried in the background, and how often.
pub const RELEASE_RETRY_FOR: Duration = PENDING_TTL;
pub const RELEASE_RETRY_EVERY: Duration = Duration::from_millis(50);
/// How long a login that found a done mark waits before it looks again: a
/// mark whose completion's reply was lost is given back within a few
/// [`RELEASE_RETRY_EVERY`] of Redis answering again. Only refusals wait.
pub const DONE_RECHECK_AFTER: Duration = Duration::from_millis(300);

mod memory;
mod redis;

use memory::MemoryStore;
pub use redis::COMPLETE;
use redis::RedisBackend;

/// A claim this login holds.
#[derive(Debug, Clone)]
pub struct Claim {
    key: String,
    /// The key without the deployment's prefix: the token's name in the
    /// database's record of logins, whatever `REDIS_KEY_PREFIX` becomes.
    token_key: String,
    unique: String,
    /// The token's own `exp` (seconds since the epoch).
    token_exp: i64,
    /// How long the completed mark lasts: the token's remaining life.
    full_ttl: Duration,
    /// When the claim's reply arrived (Redis applied it no later than that).
    claimed_at: Instant,
}

impl Claim {
    /// The database's record of this login ([`crate::users::record_login`]).
    pub fn record(&self) -> crate::users::LoginRecord<'_> {
        crate::users::LoginRecord {
            token_key: &self.token_key,
            attempt: &self.unique,
            token_exp: self.token_exp,
        }
    }

    fn pending_value(&self) -> String {
        format!("pending:{}", self.unique)
    }
    fn done_value(&self) -> String {
        format!("done:{}", self.unique)
    }
    /// How long, counted from the claim, Redis may apply a completion sent
    /// now: as long as the caller will still be waiting for its reply.
    /// `None` when that is too late: another login may already have taken
    /// the token over.
    fn completion_budget(&self) -> Option<Duration> {
        let budget = (self.claimed_at.elapsed() + REDIS_TIMEOUT).saturating_sub(REPLY_MARGIN);
        (budget <= ABANDONED_AFTER).then_some(budget)
    }
}

#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum ClaimError {
    #[error("Token has already been used")]
    AlreadyUsed,
    #[error("replay store unavailable")]
    Unavailable,
}

#[derive(Clone)]
pub struct ReplayStore {
    backend: Backend,
    key_prefix: Arc<str>,
}

#[derive(Clone)]
enum Backend {
    Redis(Arc<RedisBackend>),
    Memory(Arc<MemoryStore>),
}

impl ReplayStore {
    pub fn from_settings(redis: &RedisSettings) -> anyhow::Result<Self> {
        let backend = match &redis.url {
            Some(url) => Backend::Redis(Arc::new(RedisBackend::new(
                url.expose(),
                redis.ca_cert.as_ref(),
            )?)),
            None => {
                tracing::warn!(
                    "REDIS_URL is unset: the in-process replay store protects this one instance only"
                );
                Backend::Memory(Arc::default())
            }
        };
        Ok(Self {
            backend,
            key_prefix: redis.key_prefix.as_str().into(),
        })
    }

    /// The replay key of a token: from `jti` when present, else from the
    /// token's signed part (header and payload: an (EC)DSA signature can be
    /// rewritten into another valid one, which must not make a used token
    /// look new); hashed either way, so neither a raw token nor an unbounded
    /// id is stored.
    pub fn key(&self, token: &VerifiedToken) -> String {
        format!("{}{}", self.key_prefix, token_key(token))
    }

    /// The Redis connection, when the store is Redis.
    pub fn redis_client(&self) -> Option<Arc<RedisClient>> {
        match &self.backend {
            Backend::Redis(redis) => Some(Arc::clone(&redis.redis)),
            Backend::Memory(_) => None,
        }
    }

    /// Takes the token for this login. `AlreadyUsed` if it was used, or
    /// another login holds it right now.
    pub async fn claim(&self, token: &VerifiedToken) -> Result<Claim, ClaimError> {
        // The mark lives as long as the token could still be accepted.
        let remaining = token.claims.exp.saturating_sub(unix_secs()) + LEEWAY_SECS;
        let token_key = token_key(token);
        let mut claim = Claim {
            key: format!("{}{token_key}", self.key_prefix),
            token_key,
            unique: uuid::Uuid::new_v4().simple().to_string(),
            token_exp: token.claims.exp.min(i64::MAX as u64) as i64,
            full_ttl: Duration::from_secs(remaining.max(1)),
            claimed_at: Instant::now(),
        };
        match &self.backend {
            Backend::Redis(redis) => redis.claim(&claim).await?,
            Backend::Memory(memory) => memory.claim(&claim)?,
        }
        claim.claimed_at = Instant::now();
        Ok(claim)
    }

    /// Makes the claim permanent for the token's life, once the login is
    /// recorded. `Err`: the mark stays pending (refusing replays until it
    /// expires), and the database's record refuses them after that.
    pub async fn complete(&self, claim: &Claim) -> Result<(), ClaimError> {
        match &self.backend {
            Backend::Redis(redis) => redis.complete(claim).await,
            Backend::Memory(memory) => memory.complete(claim),
        }
    }

    /// Gives back a claim of a login that failed, so the user can retry at
    /// once. Best effort: an abandoned claim is taken over anyway.
    pub async fn release(&self, claim: &Claim) {
        match &self.backend {
            Backend::Redis(redis) => redis.release(claim).await,
            Backend::Memory(memory) => memory.release(claim),
        }
    }
}

/// A token's replay key without the deployment's prefix: from `jti` when
/// present, else from the token's signed part (see [`ReplayStore::key`]).
fn token_key(token: &VerifiedToken) -> String {
    // `{:x}` of the digest: its hex in one write, not a string per byte.
    match token.claims.jti.as_deref().filter(|j| !j.is_empty()) {
        Some(jti) => format!("sso:jti:{:x}", Sha256::digest(jti)),
        None => format!("sso:token:{:x}", Sha256::digest(&token.signed_part)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::SsoClaims;

    fn token(jti: Option<&str>, signed_part: &str) -> VerifiedToken {
        VerifiedToken {
            claims: SsoClaims {
                sub: "u".into(),
                exp: unix_secs() + 3600,
                iat: None,
                jti: jti.map(str::to_owned),
                email: None,
                name: None,
            },
            signed_part: signed_part.into(),
        }
    }

    fn memory_store() -> ReplayStore {
        ReplayStore {
            backend: Backend::Memory(Arc::default()),
            key_prefix: "tms:".into(),
        }
    }

    #[test]
    fn keys_are_hashed_and_prefixed() {
        let store = memory_store();
        let by_jti = store.key(&token(Some("abc-123"), "eyJhbGciOiJIUzI1NiJ9.payload"));
        let by_token = store.key(&token(None, "eyJhbGciOiJIUzI1NiJ9.payload"));
        assert!(by_jti.starts_with("tms:sso:jti:") && by_jti.len() == "tms:sso:jti:".len() + 64);
        assert!(by_token.starts_with("tms:sso:token:"));
        assert!(!by_jti.contains("abc-123") && !by_token.contains("payload"));
        // The marks and the database's records already written use these
        // names: SHA-256 in lowercase hex, never another spelling.
        assert_eq!(
            by_jti,
            "tms:sso:jti:5942d94f524882e0f29bf0a1e5a6dcc952eea1c0c21dd3588a3fc7db9716db0c"
        );
        assert_eq!(
            by_token,
            "tms:sso:token:7c1b543af11f4e390b0a795ea0bb25d5c6fdced0d433df460b6684be9eaacfec"
        );
        assert_eq!(
            store.key(&token(Some(""), "eyJhbGciOiJIUzI1NiJ9.payload")),
            by_token
        );
    }

    #[tokio::test]
    async fn memory_store_is_single_use_completes_and_releases_only_its_own() {
        let store = memory_store();
        let t = token(Some("j"), "x.y");
        let a = store.claim(&t).await.unwrap();
        assert_eq!(store.claim(&t).await.unwrap_err(), ClaimError::AlreadyUsed);
        // Another claim's values cannot release it.
        let mut other = a.clone();
        other.unique = "other".into();
        store.release(&other).await;
        assert_eq!(store.claim(&t).await.unwrap_err(), ClaimError::AlreadyUsed);
        store.release(&a).await;
        let b = store.claim(&t).await.unwrap();
        store.complete(&b).await.unwrap();
        assert_eq!(store.claim(&t).await.unwrap_err(), ClaimError::AlreadyUsed);
        // A completed mark is not taken over, however old.
        if let Backend::Memory(m) = &store.backend {
            m.age(&b.key, ABANDONED_AFTER * 2);
        }
        assert_eq!(store.claim(&t).await.unwrap_err(), ClaimError::AlreadyUsed);
    }

    #[tokio::test]
    async fn an_abandoned_claim_is_taken_over_and_its_owner_cannot_complete_it() {
        let store = memory_store();
        let t = token(Some("k"), "x.y");
        let mut abandoned = store.claim(&t).await.unwrap();
        if let Backend::Memory(m) = &store.backend {
            m.age(&abandoned.key, ABANDONED_AFTER * 2);
        }
        abandoned.claimed_at -= ABANDONED_AFTER * 2;
        let fresh = store.claim(&t).await.unwrap();
        assert_eq!(
            store.complete(&abandoned).await.unwrap_err(),
            ClaimError::Unavailable
        );
        store.complete(&fresh).await.unwrap();
    }
}
