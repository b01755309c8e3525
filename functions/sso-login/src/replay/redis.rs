//! The replay store on Redis: the claim by `SET NX`, the completion, the
//! takeover and the release by Lua scripts (the `.lua` files beside this one).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shared::config::CaBundle;
use shared::redis_client::RedisClient;

use super::*;

/// Takes a key over from an abandoned pending claim (or recognises a retry
/// of this very claim). KEYS[1] key; ARGV: new pending value, pending TTL
/// (ms), age after which a pending claim is abandoned (ms). Returns 1 when
/// taken, 0 when another login holds it, -1 when a login completed it.
const TAKE_OVER: &str = include_str!("take_over.lua");

/// Completes a claim: its own pending value becomes the done value with the
/// full TTL, only if the claim is no older than the caller's budget; a
/// claim it already completed (a retry whose first reply was lost) is
/// recognised. KEYS[1] key; ARGV: pending value, done value, pending TTL
/// (ms), budget (ms), full TTL (s).
pub const COMPLETE: &str = include_str!("complete.lua");

/// Deletes the key only while it holds one of this claim's own values.
const RELEASE: &str = include_str!("release.lua");

pub(super) struct RedisBackend {
    pub(super) redis: Arc<RedisClient>,
    take_over: ::redis::Script,
    complete: ::redis::Script,
    release: ::redis::Script,
    /// Claims whose release failed, by key, with when it first failed.
    unreleased: Mutex<HashMap<String, (Claim, Instant)>>,
    /// Whether the task that retries [`Self::unreleased`] is running.
    release_worker: AtomicBool,
}

/// Who holds a token's key after a claim attempt.
enum Holder {
    ThisClaim,
    /// Another login, still running.
    AnotherLogin,
    /// A completed login (or one whose completion's reply was lost).
    Done,
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl RedisBackend {
    pub(super) fn new(url: &str, ca: Option<&CaBundle>) -> anyhow::Result<Self> {
        Ok(Self {
            redis: Arc::new(RedisClient::new(url, ca)?),
            take_over: ::redis::Script::new(TAKE_OVER),
            complete: ::redis::Script::new(COMPLETE),
            release: ::redis::Script::new(RELEASE),
            unreleased: Mutex::default(),
            release_worker: AtomicBool::new(false),
        })
    }

    fn unreleased(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Claim, Instant)>> {
        self.unreleased.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) async fn claim(&self, claim: &Claim) -> Result<(), ClaimError> {
        // This token's own earlier claim, not yet given back: that first, or
        // the user would be told that their own failed login used the token.
        let earlier = self.unreleased().get(&claim.key).map(|(c, _)| c.clone());
        if let Some(earlier) = earlier {
            if let Err(e) = self.try_release(&earlier).await {
                tracing::warn!(error = %e, "replay store unreachable");
                self.redis.forget_connection().await;
                return Err(ClaimError::Unavailable);
            }
            self.forget_unreleased(&earlier);
        }
        match self.claim_once(claim).await? {
            Holder::ThisClaim => Ok(()),
            Holder::AnotherLogin => Err(ClaimError::AlreadyUsed),
            Holder::Done => {
                // Maybe a mark whose completion's reply was lost, about to be
                // given back by the instance that knows nothing was issued.
                tokio::time::sleep(DONE_RECHECK_AFTER).await;
                match self.claim_once(claim).await? {
                    Holder::ThisClaim => Ok(()),
                    _ => Err(ClaimError::AlreadyUsed),
                }
            }
        }
    }

    async fn claim_once(&self, claim: &Claim) -> Result<Holder, ClaimError> {
        // Once more on a fresh connection is safe: the same value.
        let result = self
            .once_more_if_the_connection_broke(|| self.try_claim(claim))
            .await;
        match result {
            Ok(holder) => Ok(holder),
            Err(e) => {
                // If the SET lands later, it is abandoned and taken over.
                tracing::warn!(error = %e, "replay claim failed");
                self.redis.forget_connection().await;
                Err(ClaimError::Unavailable)
            }
        }
    }

    /// Runs `command` (which takes the shared connection), and once more on
    /// a fresh connection when it fails other than by a timeout: a
    /// connection that died while the instance was idle or frozen, or that
    /// broke after Redis applied the command (each replay command
    /// recognises its own earlier effect). A timeout is not retried: Redis
    /// is slow, and the caller's bound holds.
    async fn once_more_if_the_connection_broke<T, Command>(
        &self,
        command: impl Fn() -> Command,
    ) -> ::redis::RedisResult<T>
    where
        Command: Future<Output = ::redis::RedisResult<T>>,
    {
        match command().await {
            Err(e) if !e.is_timeout() => {
                tracing::debug!(error = %e, "replay store connection broken; once more on a fresh one");
                self.redis.forget_connection().await;
                command().await
            }
            result => result,
        }
    }

    /// The fast path is one `SET NX`; only a key that is already there needs
    /// the script (a replay, a race, an abandoned claim, or this claim's own
    /// retry).
    async fn try_claim(&self, claim: &Claim) -> Result<Holder, ::redis::RedisError> {
        let conn = &mut self.redis.connection().await?;
        let set: Option<String> = ::redis::cmd("SET")
            .arg(&claim.key)
            .arg(claim.pending_value())
            .arg("NX")
            .arg("PX")
            .arg(millis(PENDING_TTL))
            .query_async(conn)
            .await?;
        if set.is_some() {
            return Ok(Holder::ThisClaim);
        }
        let taken: i64 = self
            .take_over
            .key(&claim.key)
            .arg(claim.pending_value())
            .arg(millis(PENDING_TTL))
            .arg(millis(ABANDONED_AFTER))
            .invoke_async(conn)
            .await?;
        Ok(match taken {
            1 => Holder::ThisClaim,
            0 => Holder::AnotherLogin,
            _ => Holder::Done,
        })
    }

    pub(super) async fn complete(&self, claim: &Claim) -> Result<(), ClaimError> {
        let result = self
            .once_more_if_the_connection_broke(|| self.try_complete(claim))
            .await;
        match result {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::warn!("replay claim could not be completed in time");
                Err(ClaimError::Unavailable)
            }
            Err(e) => {
                tracing::warn!(error = %e, "replay claim completion failed");
                self.redis.forget_connection().await;
                Err(ClaimError::Unavailable)
            }
        }
    }

    /// `Ok(false)`: too late, or the claim is no longer this login's.
    async fn try_complete(&self, claim: &Claim) -> Result<bool, ::redis::RedisError> {
        let Some(budget) = claim.completion_budget() else {
            return Ok(false);
        };
        let conn = &mut self.redis.connection().await?;
        let completed: i64 = self
            .complete
            .key(&claim.key)
            .arg(claim.pending_value())
            .arg(claim.done_value())
            .arg(millis(PENDING_TTL))
            .arg(millis(budget))
            .arg(claim.full_ttl.as_secs())
            .invoke_async(conn)
            .await?;
        Ok(completed == 1)
    }

    pub(super) async fn release(self: &Arc<Self>, claim: &Claim) {
        let Err(e) = self.try_release(claim).await else {
            return;
        };
        tracing::warn!(error = %e, "cannot release a replay claim; retrying in the background");
        self.redis.forget_connection().await;
        self.unreleased()
            .insert(claim.key.clone(), (claim.clone(), Instant::now()));
        if !self.release_worker.swap(true, Ordering::AcqRel) {
            let backend = Arc::clone(self);
            tokio::spawn(async move { backend.release_until_done().await });
        }
    }

    /// Retries every unreleased claim until each is released or is older
    /// than [`RELEASE_RETRY_FOR`], then stops.
    async fn release_until_done(&self) {
        loop {
            tokio::time::sleep(RELEASE_RETRY_EVERY).await;
            let claims: Vec<(Claim, Instant)> = self.unreleased().values().cloned().collect();
            if claims.is_empty() {
                self.release_worker.store(false, Ordering::Release);
                // A release queued in between found the worker still running.
                if self.unreleased().is_empty() || self.release_worker.swap(true, Ordering::AcqRel)
                {
                    return;
                }
                continue;
            }
            for (claim, since) in claims {
                if since.elapsed() > RELEASE_RETRY_FOR {
                    tracing::warn!(
                        "replay claim not released; a done mark would lock its token out"
                    );
                    self.forget_unreleased(&claim);
                    continue;
                }
                if self.try_release(&claim).await.is_err() {
                    // Still unreachable: all of them wait for the next round.
                    self.redis.forget_connection().await;
                    break;
                }
                tracing::info!("replay claim released after a retry");
                self.forget_unreleased(&claim);
            }
        }
    }

    /// Drops an unreleased claim, unless a later claim of the token took its place.
    fn forget_unreleased(&self, claim: &Claim) {
        let mut unreleased = self.unreleased();
        if unreleased
            .get(&claim.key)
            .is_some_and(|(c, _)| c.unique == claim.unique)
        {
            unreleased.remove(&claim.key);
        }
    }

    async fn try_release(&self, claim: &Claim) -> Result<i64, ::redis::RedisError> {
        let mut conn = self.redis.connection().await?;
        self.release
            .key(&claim.key)
            .arg(claim.pending_value())
            .arg(claim.done_value())
            .invoke_async::<i64>(&mut conn)
            .await
    }
}
