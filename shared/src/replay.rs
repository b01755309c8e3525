//! The replay store: marks a GCGC token as used, atomically, so that of any
//! number of concurrent logins with one token exactly one succeeds.
//!
//! Redis for real (`REDIS_URL`; `rediss://` for TLS): the claim is one
//! `SET key value NX EX ttl`, with a value unique to this claim. A claim is
//! released only by a compare-and-delete on that value (one Lua script), so no
//! other request's mark is ever removed. A claim whose outcome is unknown (the
//! store timed out: a hung Redis may still apply the `SET` when it wakes) is
//! kept aside and released once Redis answers again.
//!
//! Without `REDIS_URL`, an in-process store with expiry: it protects one
//! instance only, and says so at start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::config::Config;
use crate::error::ApiError;
use crate::probe::{PingFuture, Probe};

/// Connecting and each command: well under a second, so a down or hung Redis
/// is a 503 within about a second.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(400);
/// How long, once Redis answers again, a late `SET` may still take to land: a
/// pending release keeps trying (on later requests) for this long.
const LATE_WRITE_WINDOW: Duration = Duration::from_secs(30);
/// Pending releases retried per login, so a backlog does not slow one login down.
const RELEASES_PER_REQUEST: usize = 8;
/// At most this many unknown claims are remembered.
const MAX_PENDING: usize = 1024;

const COMPARE_AND_DELETE: &str = r#"
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
"#;

/// A successful claim: the key and the value unique to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: String,
    pub value: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClaimError {
    #[error("Token has already been used")]
    AlreadyUsed,
    #[error("replay store unavailable")]
    Unavailable,
}

impl From<ClaimError> for ApiError {
    fn from(e: ClaimError) -> Self {
        match e {
            ClaimError::AlreadyUsed => ApiError::unauthorized("Token has already been used"),
            ClaimError::Unavailable => ApiError::unavailable("Replay protection store"),
        }
    }
}

/// The replay key of a token: from `jti` when present, else from the token's
/// signed part; hashed either way, so neither a raw token nor an unbounded id
/// is stored.
pub fn replay_key(prefix: &str, jti: Option<&str>, token: &str) -> String {
    let hex = |bytes: &[u8]| {
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    match jti.filter(|j| !j.is_empty()) {
        Some(jti) => format!("{prefix}sso:jti:{}", hex(jti.as_bytes())),
        // Header and payload only: an (EC)DSA signature can be rewritten into
        // another valid one, which must not make a used token look new.
        None => {
            let signed_part = token.rsplit_once('.').map_or(token, |(signed, _)| signed);
            format!("{prefix}sso:token:{}", hex(signed_part.as_bytes()))
        }
    }
}

#[derive(Clone)]
pub enum ReplayStore {
    Redis(Arc<RedisStore>),
    Memory(Arc<MemoryStore>),
}

impl ReplayStore {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        match &config.redis_url {
            Some(url) => Ok(Self::Redis(Arc::new(RedisStore::new(url.expose())?))),
            None => {
                tracing::warn!(
                    "REDIS_URL is unset: the in-process replay store protects this one instance only"
                );
                Ok(Self::Memory(Arc::default()))
            }
        }
    }

    /// Marks `key` as used for `ttl`. `AlreadyUsed` if it already was.
    pub async fn claim(&self, key: &str, ttl: Duration) -> Result<Claim, ClaimError> {
        let claim = Claim {
            key: key.to_owned(),
            value: uuid::Uuid::new_v4().to_string(),
        };
        let ttl = ttl.max(Duration::from_secs(1));
        match self {
            Self::Redis(store) => store.claim(claim, ttl).await,
            Self::Memory(store) => store.claim(claim, ttl),
        }
    }

    /// Releases a claim of this request's (a login that failed after it).
    pub async fn release(&self, claim: &Claim) {
        match self {
            Self::Redis(store) => store.release(claim).await,
            Self::Memory(store) => store.release(claim),
        }
    }
}

/// A claim whose outcome is unknown, waiting to be released.
struct Pending {
    claim: Claim,
    /// When Redis first answered a release attempt that found nothing to delete.
    answered_since: Option<Instant>,
}

/// Redis, through one multiplexed connection that is opened lazily, reused
/// across invocations, and reopened after any failure.
pub struct RedisStore {
    client: redis::Client,
    connection: Mutex<Option<redis::aio::MultiplexedConnection>>,
    script: redis::Script,
    pending: StdMutex<Vec<Pending>>,
}

impl RedisStore {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {}", e.category()))?;
        Ok(Self {
            client,
            connection: Mutex::default(),
            script: redis::Script::new(COMPARE_AND_DELETE),
            pending: StdMutex::default(),
        })
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, redis::RedisError> {
        // Concurrent requests wait for one connect at most as long as they
        // would wait for Redis itself, never in a queue of connects.
        let timed_out =
            || redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        let mut slot = tokio::time::timeout(REDIS_TIMEOUT, self.connection.lock())
            .await
            .map_err(|_| timed_out())?;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// After a failure the connection may be dead or stuck: open a new one next time.
    async fn forget_connection(&self) {
        *self.connection.lock().await = None;
    }

    /// `SET key value NX EX ttl`: true if this claim holds the key now. A
    /// repeat of the same claim (same unique value) is recognised as its own.
    async fn try_claim(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        claim: &Claim,
        ttl: Duration,
    ) -> Result<bool, redis::RedisError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(&claim.key)
            .arg(&claim.value)
            .arg("NX")
            .arg("EX")
            .arg(ttl.as_secs())
            .query_async(conn)
            .await?;
        if set.is_some() {
            return Ok(true);
        }
        let holder: Option<String> = redis::cmd("GET").arg(&claim.key).query_async(conn).await?;
        Ok(holder.as_deref() == Some(claim.value.as_str()))
    }

    async fn claim(&self, claim: Claim, ttl: Duration) -> Result<Claim, ClaimError> {
        let mut conn = match self.connection().await {
            Ok(conn) => conn,
            Err(e) => {
                // Nothing was sent: no mark can land later.
                tracing::warn!(error = %e, "replay store unreachable");
                return Err(ClaimError::Unavailable);
            }
        };
        self.release_pending(&mut conn).await;
        let mut result = self.try_claim(&mut conn, &claim, ttl).await;
        if let Err(e) = &result
            && !e.is_timeout()
        {
            // A connection that died while the instance was idle or frozen:
            // once more on a fresh one. The same value makes the retry safe.
            self.forget_connection().await;
            if let Ok(mut fresh) = self.connection().await {
                result = self.try_claim(&mut fresh, &claim, ttl).await;
            }
        }
        match result {
            Ok(true) => Ok(claim),
            Ok(false) => Err(ClaimError::AlreadyUsed),
            Err(e) => {
                // The SET may have been applied, or may be applied later.
                tracing::warn!(error = %e, "replay claim outcome unknown; will release it");
                self.forget_connection().await;
                self.remember(claim);
                Err(ClaimError::Unavailable)
            }
        }
    }

    async fn release(&self, claim: &Claim) {
        let outcome = match self.connection().await {
            Ok(mut conn) => self.compare_and_delete(&mut conn, claim).await,
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "cannot release a replay claim now; will retry");
            self.forget_connection().await;
            self.remember(claim.clone());
        }
    }

    async fn compare_and_delete(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        claim: &Claim,
    ) -> Result<i64, redis::RedisError> {
        self.script
            .key(&claim.key)
            .arg(&claim.value)
            .invoke_async(conn)
            .await
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, claim: Claim) {
        let mut pending = self.pending();
        if pending.len() >= MAX_PENDING {
            pending.remove(0);
        }
        pending.push(Pending {
            claim,
            answered_since: None,
        });
    }

    /// Releases claims whose outcome was unknown, a few per request. One is
    /// done once it deleted its own mark, or once Redis has been answering
    /// for longer than a late write could take to land.
    async fn release_pending(&self, conn: &mut redis::aio::MultiplexedConnection) {
        let due: Vec<Pending> = {
            let mut pending = self.pending();
            let n = pending.len().min(RELEASES_PER_REQUEST);
            pending.drain(..n).collect()
        };
        let mut keep = Vec::new();
        let mut due = due.into_iter();
        while let Some(mut entry) = due.next() {
            match self.compare_and_delete(conn, &entry.claim).await {
                Ok(deleted) if deleted > 0 => {
                    tracing::info!("released a replay claim of unknown outcome");
                }
                Ok(_) => {
                    let since = *entry.answered_since.get_or_insert_with(Instant::now);
                    if since.elapsed() < LATE_WRITE_WINDOW {
                        keep.push(entry);
                    }
                }
                Err(_) => {
                    // Redis is failing again: keep this one and all the rest.
                    keep.push(entry);
                    keep.extend(due.by_ref());
                }
            }
        }
        self.pending().extend(keep);
    }

    pub async fn ping(&self) -> Result<(), String> {
        let result = async {
            let mut conn = self.connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        }
        .await;
        if result.is_err() {
            self.forget_connection().await;
        }
        result.map(|_| ()).map_err(|e| e.category().to_owned())
    }
}

/// The in-process default: a map with expiry. One instance only.
#[derive(Default)]
pub struct MemoryStore {
    marks: StdMutex<HashMap<String, (String, Instant)>>,
}

impl MemoryStore {
    fn claim(&self, claim: Claim, ttl: Duration) -> Result<Claim, ClaimError> {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Expired marks go as the map grows, so it stays bounded by the live ones.
        if marks.len() >= 1024 && marks.len().is_power_of_two() {
            marks.retain(|_, (_, until)| *until > now);
        }
        match marks.get(&claim.key) {
            Some((_, until)) if *until > now => Err(ClaimError::AlreadyUsed),
            _ => {
                marks.insert(claim.key.clone(), (claim.value.clone(), now + ttl));
                Ok(claim)
            }
        }
    }

    fn release(&self, claim: &Claim) {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        if marks
            .get(&claim.key)
            .is_some_and(|(value, _)| *value == claim.value)
        {
            marks.remove(&claim.key);
        }
    }
}

/// `/health/ready`'s check of Redis.
pub struct RedisProbe(pub Arc<RedisStore>);

impl Probe for RedisProbe {
    fn name(&self) -> &'static str {
        "redis"
    }
    fn ping(&self) -> PingFuture<'_> {
        Box::pin(self.0.ping())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hashed_and_prefixed() {
        let token = "eyJhbGciOiJIUzI1NiJ9.payload.sig";
        let by_jti = replay_key("tms:", Some("abc-123"), token);
        let by_token = replay_key("tms:", None, token);
        assert!(by_jti.starts_with("tms:sso:jti:") && by_jti.len() == "tms:sso:jti:".len() + 64);
        assert!(by_token.starts_with("tms:sso:token:"));
        assert!(!by_jti.contains("abc-123") && !by_token.contains("payload"));
        assert_eq!(replay_key("tms:", Some(""), token), by_token);
        // Another signature over the same header and payload is the same token.
        assert_eq!(
            replay_key("tms:", None, "eyJhbGciOiJIUzI1NiJ9.payload.other"),
            by_token
        );
    }

    #[tokio::test]
    async fn memory_store_is_single_use_with_expiry_and_own_release() {
        let store = ReplayStore::Memory(Arc::default());
        let a = store.claim("k", Duration::from_secs(60)).await.unwrap();
        assert_eq!(
            store.claim("k", Duration::from_secs(60)).await,
            Err(ClaimError::AlreadyUsed)
        );
        // Someone else's claim value cannot release it.
        store
            .release(&Claim {
                key: "k".into(),
                value: "other".into(),
            })
            .await;
        assert_eq!(
            store.claim("k", Duration::from_secs(60)).await,
            Err(ClaimError::AlreadyUsed)
        );
        store.release(&a).await;
        assert!(store.claim("k", Duration::from_secs(60)).await.is_ok());

        if let ReplayStore::Memory(m) = &store {
            m.marks
                .lock()
                .unwrap()
                .insert("old".into(), ("v".into(), Instant::now()));
        }
        assert!(
            store.claim("old", Duration::from_secs(60)).await.is_ok(),
            "an expired mark is free"
        );
    }
}
