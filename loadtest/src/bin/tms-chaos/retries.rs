//! The tokens that got a 503 or no answer, retried until they log in: "a
//! login that did not complete leaves its token usable again within 60 s".

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ledger::record_of;
use crate::load::{Kind, Load};

/// "A login that did not complete leaves its token usable again within 60 s."
const RETRY_LIMIT: Duration = Duration::from_secs(60);
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// What became of a token that got a 503 or no answer.
#[derive(Clone, Debug)]
pub enum Settled {
    /// It logged in, this long after it could (the fault lifted, or its
    /// last refusal), after this many refusals as "already used".
    /// `waited` counts from its first retry: the retrier's own schedule
    /// (a queue of thousands after a long outage) is not the function's.
    LoggedIn {
        after: Duration,
        waited: Duration,
        held: u32,
    },
    /// Its first login completed but the answer was lost (the instance
    /// died): 401 "already used", and the database holds its record.
    AnswerLost,
    /// 401 while the database holds its record, though no login answered
    /// 200 or went unanswered: the user is locked out.
    LockedOut { jti: String, mark: String },
    /// Not logged in within 60 s.
    NotWithin { jti: String },
}

/// Retries every token that got a 503 (or no answer) and has not logged in,
/// each until it does, for 60 s at most from `since` (the fault's lifting),
/// or from its own last refusal when that was later.
pub async fn settle(load: Arc<Load>, since: Option<Instant>) -> Vec<Settled> {
    // Taken: each token is settled once, whatever becomes of it.
    let pending: Vec<(String, String, Instant)> = {
        let mut ledger = load.ledger.lock().expect("ledger");
        ledger
            .tokens
            .iter_mut()
            .filter(|(_, t)| t.issued == 0)
            .filter_map(|(jti, t)| {
                let refused = t.refused_at.take()?;
                let from = since.map_or(refused, |s| s.max(refused));
                Some((jti.clone(), t.token.clone(), from))
            })
            .collect()
    };
    let limit = Arc::new(tokio::sync::Semaphore::new(8));
    let tasks: Vec<_> = pending
        .into_iter()
        .enumerate()
        .map(|(i, (jti, token, from))| {
            let (load, limit) = (Arc::clone(&load), Arc::clone(&limit));
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await.expect("semaphore");
                retry_until_logged_in(&load, i, &jti, &token, from).await
            })
        })
        .collect();
    let mut settled = Vec::new();
    for task in tasks {
        settled.push(task.await.expect("retry task"));
    }
    settled
}

async fn retry_until_logged_in(
    load: &Load,
    i: usize,
    jti: &str,
    token: &str,
    from: Instant,
) -> Settled {
    let mut held = 0;
    let mut attempt = i;
    let first_retry = Instant::now();
    while from.elapsed() < RETRY_LIMIT {
        attempt += 1;
        let answer = load
            .post_login(Kind::Retry, jti, token, attempt % load.sso.len())
            .await;
        match answer.status {
            Some(200) => {
                return Settled::LoggedIn {
                    after: from.elapsed(),
                    waited: first_retry.elapsed(),
                    held,
                };
            }
            Some(401) => {
                held += 1;
                let unanswered = load.ledger.lock().expect("ledger").tokens[jti].unanswered;
                match record_of(load, jti).await {
                    Some(_) if unanswered => return Settled::AnswerLost,
                    Some(attempt) => {
                        return Settled::LockedOut {
                            jti: jti.into(),
                            mark: format!("recorded under attempt {attempt}"),
                        };
                    }
                    // Its own earlier claim, still held in Redis: retry.
                    None => {}
                }
            }
            _ => {}
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
    Settled::NotWithin { jti: jti.into() }
}
