//! The request being served, for what its handling writes: its id (a 500's
//! body and its log line) and the user it names (its access line). Set
//! by the edge layer (`http`), read by the errors (`error`), told the user
//! by whoever learns it (the API token's check, a login): its own module,
//! so that none of them imports another.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;

struct ServedRequest {
    id: Arc<str>,
    user_id: Cell<Option<i64>>,
}

tokio::task_local! {
    static CURRENT: ServedRequest;
}

/// Runs `future` as the handling of the request `id`: its output, and the
/// user the request named, if any ([`names_user`]).
pub async fn scope<F: Future>(id: Arc<str>, future: F) -> (F::Output, Option<i64>) {
    let served = ServedRequest {
        id,
        user_id: Cell::new(None),
    };
    let mut scoped = pin!(CURRENT.scope(served, future));
    let output = scoped.as_mut().await;
    let user_id = scoped.take_value().and_then(|served| served.user_id.get());
    (output, user_id)
}

/// The id of the request being served (for a 500's body and its log line).
pub fn current_id() -> Option<Arc<str>> {
    CURRENT.try_with(|served| Arc::clone(&served.id)).ok()
}

/// Names the request's user: the one whose API token it carries (whether
/// the route then serves the token or refuses it as ended) or the one a
/// login signed in. Its access line carries the id, so that one line tells
/// who, what and how it ended. Only in the request's own task (a task it
/// spawns has no request).
pub fn names_user(user_id: i64) {
    let _ = CURRENT.try_with(|served| served.user_id.set(Some(user_id)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_scope_returns_the_user_its_request_named() {
        let (id, user) = scope("req-1".into(), async {
            names_user(7);
            current_id()
        })
        .await;
        assert_eq!(id.as_deref(), Some("req-1"));
        assert_eq!(user, Some(7));

        let ((), user) = scope("req-2".into(), async {}).await;
        assert_eq!(user, None, "a request that names no user");
        // Outside a request: nothing to name, and no panic.
        names_user(8);
        assert_eq!(current_id(), None);
    }
}
