//! The list's cursor, opaque to clients: base64url (no padding) of
//! "activity:id", the last row of the page before.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::store::PageAfter;

pub fn encode(after: PageAfter) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", after.last_activity_at, after.id))
}

/// The position a cursor names; `None` for anything a client made up.
pub fn decode(cursor: &str) -> Option<PageAfter> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let (activity, id) = text.split_once(':')?;
    Some(PageAfter {
        last_activity_at: activity.parse().ok()?,
        id: id.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let after = PageAfter {
            last_activity_at: 1_764_000_000_000_000,
            id: 42,
        };
        assert_eq!(decode(&encode(after)), Some(after));
        for bad in ["", "!!!", "bm9wZQ", &URL_SAFE_NO_PAD.encode("1:x")] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
