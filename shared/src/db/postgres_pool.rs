//! The PostgreSQL connection pool: sqlx's `PgConnection`s, kept by the
//! instance across requests and invocations.
//!
//! Why not sqlx's `PgPool`: it pings every connection as it goes back to
//! the pool (a round trip each, not configurable), because a query that was
//! cancelled half-way may leave its connection mid-protocol. Under load
//! that ping cost more of a login's CPU than the upsert itself. Here a
//! connection goes back only when its operation ran to the end (an answer,
//! or an error the server sent: the protocol is in step); one that was
//! cancelled (a timeout, a client that left) or broke is dropped instead.
//! That is what the ping guarded, known without a round trip.
//!
//! Otherwise as before: connections open lazily on first use; one idle for
//! a while (a frozen instance, a server that closes idle sessions) or taken
//! soon after another of the pool's connections broke (a restarted server
//! drops them all) is pinged before use and replaced if that fails; waiting
//! for a connection is bounded; idle ones are closed after five minutes, all
//! after thirty.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{
    ACQUIRE_TIMEOUT, PING_ALL_AFTER_FAILURE, PING_WHEN_IDLE_FOR, breaks_connection, ends_session,
};

/// An idle connection older than this (since it was last used) is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A connection older than this is closed rather than reused (the server
/// side's memory, a failover's DNS change).
const MAX_LIFETIME: Duration = Duration::from_secs(1800);
/// How often idle connections past [`IDLE_TIMEOUT`] are looked for.
const REAP_EVERY: Duration = Duration::from_secs(60);

/// Up to `size` connections to one server, shared by the instance's requests.
#[derive(Clone)]
pub struct PgConnectionPool {
    shared: Arc<Shared>,
}

struct Shared {
    options: PgConnectOptions,
    /// One permit per connection the pool may hold, idle or leased.
    permits: Arc<Semaphore>,
    /// Idle connections, the most recently used last (taken first: it is the
    /// likeliest to be alive and needs no ping).
    idle: Mutex<Vec<Idle>>,
    closed: AtomicBool,
    reaper_started: AtomicBool,
    /// When the pool was made: the origin of [`Self::last_failure_ms`].
    created: Instant,
    /// When one of this pool's connections last broke (milliseconds after
    /// [`Self::created`], plus one; 0: never). The pool's own: another
    /// pool in the process (another test, another database) has other
    /// connections, which that failure says nothing about.
    last_failure_ms: AtomicU64,
}

struct Idle {
    connection: PgConnection,
    opened: Instant,
    since: Instant,
}

/// A connection lent to one operation. Dropped without [`Lease::release`],
/// its connection is closed, not reused.
pub struct Lease {
    connection: Option<PgConnection>,
    opened: Instant,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl PgConnectionPool {
    /// A pool of at most `size` connections (at least one); none opened yet.
    pub fn new(options: PgConnectOptions, size: u32) -> Self {
        Self {
            shared: Arc::new(Shared {
                options,
                permits: Arc::new(Semaphore::new(size.max(1) as usize)),
                idle: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
                reaper_started: AtomicBool::new(false),
                created: Instant::now(),
                last_failure_ms: AtomicU64::new(0),
            }),
        }
    }

    /// A connection: an idle one, or a new one if none is idle and the pool
    /// has room. Waits at most [`ACQUIRE_TIMEOUT`] (`PoolTimedOut`).
    pub async fn acquire(&self) -> Result<Lease, sqlx::Error> {
        tokio::time::timeout(ACQUIRE_TIMEOUT, self.acquire_unbounded())
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
    }

    async fn acquire_unbounded(&self) -> Result<Lease, sqlx::Error> {
        let permit = Arc::clone(&self.shared.permits)
            .acquire_owned()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(sqlx::Error::PoolClosed);
        }
        self.start_reaper();
        while let Some(idle) = self.shared.take_idle() {
            if idle.expired() {
                close_in_background(idle.connection);
                continue;
            }
            let mut connection = idle.connection;
            if (idle.since.elapsed() > PING_WHEN_IDLE_FOR || self.shared.failed_lately())
                && let Err(e) = connection.ping().await
            {
                // Broken while idle: the next one, or a new one.
                self.shared.note_failure(&e);
                continue;
            }
            return Ok(self.lease(connection, idle.opened, permit));
        }
        let connection = self
            .shared
            .options
            .connect()
            .await
            .inspect_err(|e| self.shared.note_failure(e))?;
        Ok(self.lease(connection, Instant::now(), permit))
    }

    fn lease(
        &self,
        connection: PgConnection,
        opened: Instant,
        permit: OwnedSemaphorePermit,
    ) -> Lease {
        Lease {
            connection: Some(connection),
            opened,
            shared: Arc::clone(&self.shared),
            _permit: permit,
        }
    }

    /// Runs `operation` on a connection, then keeps the connection for the
    /// next one if `operation` ran to the end with the protocol in step.
    pub async fn run<T>(
        &self,
        operation: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let mut lease = self.acquire().await?;
        let result = operation(&mut *lease).await;
        match &result {
            Err(e) if !leaves_connection_usable(e) => self.shared.note_failure(e),
            _ => lease.release(),
        }
        result
    }

    /// Closes the idle connections and refuses new operations; leased
    /// connections close as their operations end.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.permits.close();
        let idle = std::mem::take(&mut *self.shared.idle.lock().expect("pool lock"));
        for idle in idle {
            let _ = idle.connection.close().await;
        }
    }

    /// Connections kept for reuse, not leased now.
    pub fn idle_count(&self) -> usize {
        self.shared.idle.lock().expect("pool lock").len()
    }

    /// Closes idle connections past [`IDLE_TIMEOUT`] while the pool lives,
    /// so an instance without traffic does not hold the server's sessions.
    fn start_reaper(&self) {
        if self.shared.reaper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let shared: Weak<Shared> = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REAP_EVERY).await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let expired: Vec<Idle> = {
                    let mut idle = shared.idle.lock().expect("pool lock");
                    let (expired, kept) = std::mem::take(&mut *idle)
                        .into_iter()
                        .partition(Idle::expired);
                    *idle = kept;
                    expired
                };
                for idle in expired {
                    close_in_background(idle.connection);
                }
            }
        });
    }
}

impl Idle {
    /// Idle too long, or open too long: closed rather than reused.
    fn expired(&self) -> bool {
        self.since.elapsed() > IDLE_TIMEOUT || self.opened.elapsed() > MAX_LIFETIME
    }
}

impl Shared {
    fn take_idle(&self) -> Option<Idle> {
        self.idle.lock().expect("pool lock").pop()
    }

    fn millis_since_created(&self) -> u64 {
        self.created.elapsed().as_millis() as u64 + 1
    }

    /// Remembers when `error` broke one of this pool's connections.
    fn note_failure(&self, error: &sqlx::Error) {
        if breaks_connection(error) {
            self.last_failure_ms
                .store(self.millis_since_created(), Ordering::Relaxed);
        }
    }

    fn failed_lately(&self) -> bool {
        match self.last_failure_ms.load(Ordering::Relaxed) {
            0 => false,
            at => {
                self.millis_since_created().saturating_sub(at)
                    < PING_ALL_AFTER_FAILURE.as_millis() as u64
            }
        }
    }
}

impl Lease {
    /// Gives the connection back for reuse: its operation ran to the end.
    pub fn release(mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        if self.shared.closed.load(Ordering::Acquire) || self.opened.elapsed() > MAX_LIFETIME {
            close_in_background(connection);
            return;
        }
        // Pushed before the permit drops (with `self`), so a waiter finds it.
        self.shared.idle.lock().expect("pool lock").push(Idle {
            connection,
            opened: self.opened,
            since: Instant::now(),
        });
    }
}

impl std::ops::Deref for Lease {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.connection.as_ref().expect("leased connection")
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.connection.as_mut().expect("leased connection")
    }
}

/// Whether a connection is still in step with its server after `error`: the
/// server answered (an error of the query itself, not of the connection), or
/// the driver refused the values or the row before or after the round trip.
/// Anything else (I/O, TLS, protocol, the server shutting the session down)
/// leaves it unusable.
fn leaves_connection_usable(error: &sqlx::Error) -> bool {
    use sqlx::Error as E;
    match error {
        E::Database(db) => !ends_session(&db.code().unwrap_or_default()),
        E::RowNotFound
        | E::ColumnNotFound(_)
        | E::ColumnIndexOutOfBounds { .. }
        | E::ColumnDecode { .. }
        | E::Decode(_)
        | E::Encode(_)
        | E::TypeNotFound { .. } => true,
        _ => false,
    }
}

/// Says goodbye to the server (a `Terminate` message) without making the
/// caller wait; outside a runtime the socket just closes.
fn close_in_background(connection: PgConnection) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), connection.close()).await;
        });
    }
}
