//! Wall-clock time as the tokens and the database store it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Clock skew tolerated between the identity provider, the instances and
/// Redis, on every `exp`, `nbf` and `iat` this system checks.
pub const LEEWAY_SECS: u64 = 30;

/// Seconds since the Unix epoch: JWT `exp`/`iat`.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Microseconds since the Unix epoch: the database's timestamps.
pub fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64
}
