//! The in-process replay store, when `REDIS_URL` is unset.

use std::collections::HashMap;
use std::sync::Mutex;
#[cfg(test)]
use std::time::Duration;
use std::time::Instant;

use super::{ABANDONED_AFTER, Claim, ClaimError, PENDING_TTL};

/// The in-process store: the same rules over a map. One instance only.
#[derive(Default)]
pub(super) struct MemoryStore {
    marks: Mutex<HashMap<String, Mark>>,
}

struct Mark {
    value: String,
    set_at: Instant,
    expires_at: Instant,
}

impl MemoryStore {
    fn marks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Mark>> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn claim(&self, claim: &Claim) -> Result<(), ClaimError> {
        let mut marks = self.marks();
        let now = Instant::now();
        // Expired marks go as the map grows, so it stays bounded by the live ones.
        if marks.len() >= 1024 && marks.len().is_power_of_two() {
            marks.retain(|_, m| m.expires_at > now);
        }
        let free = match marks.get(&claim.key) {
            None => true,
            Some(m) if m.expires_at <= now => true,
            Some(m) => {
                m.value.starts_with("pending:") && now.duration_since(m.set_at) > ABANDONED_AFTER
            }
        };
        if !free {
            return Err(ClaimError::AlreadyUsed);
        }
        marks.insert(
            claim.key.clone(),
            Mark {
                value: claim.pending_value(),
                set_at: now,
                expires_at: now + PENDING_TTL,
            },
        );
        Ok(())
    }

    pub(super) fn complete(&self, claim: &Claim) -> Result<(), ClaimError> {
        let budget = claim.completion_budget().ok_or(ClaimError::Unavailable)?;
        let mut marks = self.marks();
        let now = Instant::now();
        match marks.get_mut(&claim.key) {
            Some(m)
                if m.value == claim.pending_value()
                    && m.expires_at > now
                    && now.duration_since(m.set_at) <= budget =>
            {
                m.value = claim.done_value();
                m.expires_at = now + claim.full_ttl;
                Ok(())
            }
            _ => Err(ClaimError::Unavailable),
        }
    }

    pub(super) fn release(&self, claim: &Claim) {
        let mut marks = self.marks();
        if marks
            .get(&claim.key)
            .is_some_and(|m| m.value == claim.pending_value() || m.value == claim.done_value())
        {
            marks.remove(&claim.key);
        }
    }

    /// Makes a mark look `by` older (tests of takeovers).
    #[cfg(test)]
    pub(super) fn age(&self, key: &str, by: Duration) {
        if let Some(mark) = self.marks().get_mut(key) {
            mark.set_at -= by;
        }
    }
}
