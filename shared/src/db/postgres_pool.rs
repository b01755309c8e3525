//! The PostgreSQL connection pool: tokio-postgres sessions ([`PgSession`]),
//! kept by the instance across requests and invocations.
//!
//! A connection goes back to the pool only when its operation ran to the
//! end (an answer, or an error the server sent: the protocol is in step);
//! one that was cancelled (a timeout, a client that left) or broke is
//! dropped instead, so no connection is reused while the server may still
//! be running a statement the caller gave up on. (sqlx's `PgPool` pinged
//! every connection as it went back for the same reason: a round trip each
//! that cost more of a login's CPU than the upsert itself.)
//!
//! Connections open lazily on first use; one idle for a while (a frozen
//! instance, a server that closes idle sessions) or taken soon after
//! another of the pool's connections broke (a restarted server drops them
//! all) is pinged before use and replaced if that fails; waiting for a
//! connection is bounded; idle ones are closed after five minutes, all
//! after thirty.
//!
//! How a statement is sent depends on what stands in front of the server
//! ([`Pooler`]): directly, each connection prepares a statement once and
//! then runs it in one round trip; behind a transaction-mode pooler nothing
//! is named and nothing is set for the session (see [`PgSession::query`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, Statement};

use super::postgres_target::{PgTarget, Pooler};
use super::postgres_tls::PgTls;
use super::{
    ACQUIRE_TIMEOUT, PING_ALL_AFTER_FAILURE, PING_WHEN_IDLE_FOR, STATEMENT_TIMEOUT, ends_session,
};

/// An idle connection older than this (since it was last used) is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A connection older than this is closed rather than reused (the server
/// side's memory, a failover's DNS change).
const MAX_LIFETIME: Duration = Duration::from_secs(1800);
/// How often idle connections past [`IDLE_TIMEOUT`] are looked for.
const REAP_EVERY: Duration = Duration::from_secs(60);
/// Statements a connection keeps prepared (direct mode): the functions
/// have a handful, plus one per member count of a conversation's check.
const MAX_PREPARED: usize = 64;

/// What went wrong in the pool, or in an operation on one of its sessions.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No connection was free or could be opened in time.
    #[error("no database connection within the acquire timeout")]
    PoolTimedOut,
    #[error("the database pool is closed")]
    PoolClosed,
    /// Opening a connection failed (refused, TLS, authentication, too many connections).
    #[error("cannot connect to the database: {0}")]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// A statement failed; the server's error if it sent one.
    #[error(transparent)]
    Query(#[from] tokio_postgres::Error),
    /// A statement that always answers one row answered none.
    #[error("the statement returned no row")]
    NoRow,
}

impl PgError {
    /// Whether the connection is still in step with its server after this
    /// error: the server answered (an error of the statement itself, not of
    /// the session).
    fn leaves_connection_usable(&self) -> bool {
        match self {
            Self::Query(e) => e.code().is_some_and(|code| !ends_session(code.code())),
            Self::NoRow => true,
            _ => false,
        }
    }

    /// Whether this error says the connection (or the way to the server)
    /// broke, rather than a busy pool or a refused statement.
    fn breaks_connection(&self) -> bool {
        match self {
            Self::Connect(_) => true,
            Self::Query(e) => match e.code() {
                Some(code) => ends_session(code.code()),
                None => e.is_closed() || io_error_within(e),
            },
            Self::PoolTimedOut | Self::PoolClosed | Self::NoRow => false,
        }
    }
}

/// Whether an I/O error is among `error`'s causes.
pub(super) fn io_error_within(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<std::io::Error>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// One server session (through a pooler: one client connection to it).
pub struct PgSession {
    client: Client,
    pooler: Pooler,
    /// Statements prepared on this session, with their text (direct mode
    /// only). A list, not a map: a few statements, told apart by their
    /// lengths first, where a map hashed the whole text of each statement
    /// run (about 2,000 instructions a login: `PgSession::run` 9,531 → 7,561
    /// by `make instructions`' callgrind tree).
    prepared: Vec<(String, Statement)>,
}

/// Behind a transaction-mode pooler, what a session would set once is set
/// in each transaction: the server's bound on a statement.
static BEGIN_WITH_TIMEOUT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "BEGIN; SET LOCAL statement_timeout = {}",
        STATEMENT_TIMEOUT.as_millis()
    )
});

impl PgSession {
    /// Runs one statement ($1, $2, ... bound to `params`, each with its
    /// type) and returns its rows.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        Ok(self.run(sql, params).await?.0)
    }

    /// Runs a statement that always answers one row, and returns it.
    pub async fn query_one(
        &mut self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Row, PgError> {
        self.query(sql, params)
            .await?
            .into_iter()
            .next()
            .ok_or(PgError::NoRow)
    }

    /// Runs one statement and returns how many rows it wrote.
    pub async fn execute(
        &mut self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<u64, tokio_postgres::Error> {
        Ok(self.run(sql, params).await?.1)
    }

    /// Directly: the statement prepared once per session (named), then
    /// bound and run in one round trip. Behind a transaction pooler: one
    /// round trip too, with nothing named and nothing left on the session:
    /// `BEGIN` with the statement timeout, the statement as Parse, Bind and
    /// Execute on the unnamed statement, and `COMMIT`, sent together
    /// (pipelined) and answered together. The transaction keeps the three
    /// on one server session; the pooler may hand the next one elsewhere.
    async fn run(
        &mut self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<(Vec<Row>, u64), tokio_postgres::Error> {
        match self.pooler {
            Pooler::None => {
                let known = self.prepared.iter().find(|(text, _)| text == sql);
                let statement = match known {
                    Some((_, statement)) => statement.clone(),
                    None => {
                        let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
                        // Boxed, as a connect is (`acquire_unbounded`): once per
                        // statement and session, and large.
                        let statement = Box::pin(self.client.prepare_typed(sql, &types)).await?;
                        if self.prepared.len() >= MAX_PREPARED {
                            self.prepared.clear();
                        }
                        self.prepared.push((sql.to_owned(), statement.clone()));
                        statement
                    }
                };
                let values = params.iter().map(|(value, _)| *value);
                let stream = self.client.query_raw(&statement, values).await?;
                collect(stream).await
            }
            Pooler::Transaction => {
                let client = &self.client;
                // join! polls each in order, and each sends its messages
                // on its first poll: they leave in this order, together.
                // Boxed: the three futures together are larger than the
                // direct path, whose future would carry their size.
                let (begin, rows, commit) = Box::pin(async {
                    tokio::join!(
                        client.batch_execute(&BEGIN_WITH_TIMEOUT),
                        async {
                            let typed = params.iter().map(|(value, ty)| (*value, ty.clone()));
                            let stream = client.query_typed_raw(sql, typed).await?;
                            collect(stream).await
                        },
                        // After a failed statement this ends the transaction
                        // as a rollback.
                        client.batch_execute("COMMIT"),
                    )
                })
                .await;
                begin?;
                let rows = rows?;
                commit?;
                Ok(rows)
            }
        }
    }

    /// A round trip that proves the session alive.
    async fn ping(&self) -> Result<(), tokio_postgres::Error> {
        self.client.simple_query("").await.map(|_| ())
    }
}

/// The rows of a statement and how many it wrote.
async fn collect(
    stream: tokio_postgres::RowStream,
) -> Result<(Vec<Row>, u64), tokio_postgres::Error> {
    use futures_util::TryStreamExt;
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::new();
    while let Some(row) = stream.try_next().await? {
        rows.push(row);
    }
    let written = stream.rows_affected().unwrap_or(0);
    Ok((rows, written))
}

/// Up to `size` connections to one server, shared by the instance's requests.
#[derive(Clone)]
pub struct PgConnectionPool {
    shared: Arc<Shared>,
}

struct Shared {
    target: PgTarget,
    tls: PgTls,
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
    connection: PgSession,
    opened: Instant,
    since: Instant,
}

/// A connection lent to one operation. Dropped without [`Lease::release`],
/// its connection is closed, not reused.
pub struct Lease {
    connection: Option<PgSession>,
    opened: Instant,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl PgConnectionPool {
    /// A pool of at most `size` connections (at least one) to `target`;
    /// none opened yet.
    pub fn new(target: PgTarget, size: u32) -> anyhow::Result<Self> {
        let tls = PgTls::new(&target)?;
        Ok(Self {
            shared: Arc::new(Shared {
                target,
                tls,
                permits: Arc::new(Semaphore::new(size.max(1) as usize)),
                idle: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
                reaper_started: AtomicBool::new(false),
                created: Instant::now(),
                last_failure_ms: AtomicU64::new(0),
            }),
        })
    }

    /// What this pool connects to.
    pub fn target(&self) -> &PgTarget {
        &self.shared.target
    }

    /// A connection: an idle one, or a new one if none is idle and the pool
    /// has room. Waits at most [`ACQUIRE_TIMEOUT`] (`PoolTimedOut`).
    pub async fn acquire(&self) -> Result<Lease, PgError> {
        tokio::time::timeout(ACQUIRE_TIMEOUT, self.acquire_unbounded())
            .await
            .unwrap_or(Err(PgError::PoolTimedOut))
    }

    async fn acquire_unbounded(&self) -> Result<Lease, PgError> {
        let permit = Arc::clone(&self.shared.permits)
            .acquire_owned()
            .await
            .map_err(|_| PgError::PoolClosed)?;
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(PgError::PoolClosed);
        }
        self.start_reaper();
        while let Some(idle) = self.shared.take_idle() {
            if idle.expired() {
                continue;
            }
            let connection = idle.connection;
            if connection.client.is_closed() {
                // Dropped while idle (a restarted server, a cut): as much a
                // sign that the others may be broken as a failed ping.
                self.shared.note_broken();
                continue;
            }
            if (idle.since.elapsed() > PING_WHEN_IDLE_FOR || self.shared.failed_lately())
                && let Err(e) = Box::pin(connection.ping()).await
            {
                // Broken while idle: the next one, or a new one.
                self.shared.note_failure(&PgError::Query(e));
                continue;
            }
            return Ok(self.lease(connection, idle.opened, permit));
        }
        // Boxed: a connect's future (TCP, TLS, startup) is kilobytes, and
        // inline it would make every operation's future as large, copied
        // and allocated on each request; it runs once per connection.
        let connection = Box::pin(self.shared.connect())
            .await
            .inspect_err(|e| self.shared.note_failure(e))?;
        Ok(self.lease(connection, Instant::now(), permit))
    }

    fn lease(&self, connection: PgSession, opened: Instant, permit: OwnedSemaphorePermit) -> Lease {
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
        operation: impl AsyncFnOnce(&mut PgSession) -> Result<T, PgError>,
    ) -> Result<T, PgError> {
        let mut lease = self.acquire().await?;
        let result = operation(&mut lease).await;
        match &result {
            Err(e) if !e.leaves_connection_usable() => self.shared.note_failure(e),
            _ => lease.release(),
        }
        result
    }

    /// Closes the idle connections and refuses new operations; leased
    /// connections close as their operations end.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.permits.close();
        // Dropping a session's client ends its connection (Terminate).
        drop(std::mem::take(
            &mut *self.shared.idle.lock().expect("pool lock"),
        ));
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
                drop(expired);
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

    /// Opens a session: TCP (no Nagle: every message is a whole request),
    /// TLS as the target says, then the startup; its connection runs as a
    /// task of its own until the session is dropped.
    async fn connect(&self) -> Result<PgSession, PgError> {
        let target = &self.target;
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| PgError::Connect(e.into()))?;
        let _ = tcp.set_nodelay(true);
        let (client, connection) = target
            .tokio_config()
            .connect_raw(tcp, self.tls.clone())
            .await
            .map_err(|e| PgError::Connect(e.into()))?;
        tokio::spawn(async move {
            // Its end (a closed socket, a server that went away) shows as
            // the client's errors; nothing to report here.
            let _ = connection.await;
        });
        Ok(PgSession {
            client,
            pooler: target.pooler,
            prepared: Vec::new(),
        })
    }

    /// Remembers when `error` broke one of this pool's connections.
    fn note_failure(&self, error: &PgError) {
        if error.breaks_connection() {
            self.note_broken();
        }
    }

    /// Remembers that one of this pool's connections broke just now.
    fn note_broken(&self) {
        self.last_failure_ms
            .store(self.millis_since_created(), Ordering::Relaxed);
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
        if self.shared.closed.load(Ordering::Acquire)
            || self.opened.elapsed() > MAX_LIFETIME
            || connection.client.is_closed()
        {
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
    type Target = PgSession;
    fn deref(&self) -> &PgSession {
        self.connection.as_ref().expect("leased connection")
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgSession {
        self.connection.as_mut().expect("leased connection")
    }
}

#[cfg(test)]
mod tests {
    use super::super::postgres_target::PgEndpoint;
    use super::*;

    /// Every request's future is allocated and moved whole: what is rare
    /// (a connect, a prepare, a ping) or of the other mode (the pooler's
    /// transaction) is boxed, so that its kilobytes are not carried by each
    /// operation (2,760 bytes with them inline, 1,384 without).
    #[test]
    fn an_operation_future_carries_no_connect_and_no_prepare() {
        const LIMIT: usize = 1536;
        // Its type's size: the same for every target and pooler.
        let target =
            PgTarget::parse("postgres://u@127.0.0.1:5432/db", PgEndpoint::default()).unwrap();
        let pool = PgConnectionPool::new(target, 1).unwrap();
        let operation =
            pool.run(async |session| session.query_one("SELECT 1", &[]).await.map(drop));
        let size = std::mem::size_of_val(&operation);
        assert!(size <= LIMIT, "{size} bytes");
    }
}
