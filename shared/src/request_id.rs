//! The id of the request being served, for whatever the request's handling
//! writes (a 500's body and its log line). Set by the edge layer (`http`),
//! read by the errors (`error`): its own module, so that neither imports the
//! other.

use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    static CURRENT_REQUEST_ID: Arc<str>;
}

/// Runs `future` as the handling of the request `id`.
pub async fn scope<F: Future>(id: Arc<str>, future: F) -> F::Output {
    CURRENT_REQUEST_ID.scope(id, future).await
}

/// The id of the request being served (for a 500's body and its log line).
pub fn current() -> Option<Arc<str>> {
    CURRENT_REQUEST_ID.try_with(Arc::clone).ok()
}
