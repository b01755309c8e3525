//! Wall-clock time as the tokens and the database store it.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

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

/// A time as RFC 3339 text in UTC (`2026-11-27T08:01:02.1234Z`: the
/// fraction without trailing zeros), serialized from the stack, without a
/// `String` per timestamp: the access line's, the response bodies'. A time
/// RFC 3339 cannot write (a year past 9999) serializes as "", so the line
/// or the body is never lost for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339(Option<time::OffsetDateTime>);

impl Rfc3339 {
    /// From microseconds since the Unix epoch: the database's timestamps.
    pub fn from_unix_micros(micros: i64) -> Self {
        Self(time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).ok())
    }
}

impl From<SystemTime> for Rfc3339 {
    fn from(at: SystemTime) -> Self {
        Self(Some(at.into()))
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // "2026-11-27T08:01:02.123456789Z" is 30 bytes.
        let mut text = [0u8; 40];
        let mut cursor = std::io::Cursor::new(&mut text[..]);
        let written = match self
            .0
            .map(|t| t.format_into(&mut cursor, &time::format_description::well_known::Rfc3339))
        {
            Some(Ok(_)) => cursor.position() as usize,
            _ => 0,
        };
        serializer.serialize_str(std::str::from_utf8(&text[..written]).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(at: Rfc3339) -> String {
        serde_json::to_value(at)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn database_times_are_rfc_3339_utc_without_trailing_zeros() {
        assert_eq!(
            text(Rfc3339::from_unix_micros(1_764_000_000_000_100)),
            "2025-11-24T16:00:00.0001Z"
        );
        assert_eq!(
            text(Rfc3339::from_unix_micros(1_764_000_000_000_000)),
            "2025-11-24T16:00:00Z"
        );
        assert_eq!(text(Rfc3339::from_unix_micros(0)), "1970-01-01T00:00:00Z");
        assert_eq!(
            text(Rfc3339::from_unix_micros(-1)),
            "1969-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn a_time_rfc_3339_cannot_write_is_empty_not_an_error() {
        assert_eq!(text(Rfc3339::from_unix_micros(i64::MAX)), "");
        assert_eq!(text(Rfc3339::from_unix_micros(i64::MIN)), "");
    }
}
