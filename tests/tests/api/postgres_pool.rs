//! The PostgreSQL pool (`shared::db::PgConnectionPool`): a connection is
//! reused without a round trip of its own, and only when its last operation
//! ran to the end; behind a transaction pooler nothing is named.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shared::db::{PgConnectionPool, PgEndpoint, PgError, PgTarget, Pooler};
use sqlx::Connection;
use tests::on_pool_session;
use tests::services::admin_database_url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn target_with(pooler: Pooler) -> PgTarget {
    let url = admin_database_url();
    let separator = if url.contains('?') { '&' } else { '?' };
    PgTarget::parse(
        &format!("{url}{separator}sslmode=disable"),
        PgEndpoint {
            pooler,
            ..PgEndpoint::default()
        },
    )
    .unwrap()
}

fn target() -> PgTarget {
    target_with(Pooler::None)
}

fn pool_of(target: PgTarget) -> PgConnectionPool {
    PgConnectionPool::new(target, 1).unwrap()
}

async fn backend_pid(pool: &PgConnectionPool) -> i32 {
    on_pool_session(pool, "SELECT pg_backend_pid()").await
}

/// What a [`counting_proxy`] saw clients send.
#[derive(Default)]
pub(crate) struct Seen {
    /// Sync and simple Query messages: each ends a request the client then
    /// waits for (a query, or a ping), unless it sends more first.
    pub(crate) requests: AtomicUsize,
    /// Parse messages that name their statement.
    named: AtomicUsize,
    /// The startup messages' parameters.
    startup: std::sync::Mutex<Vec<String>>,
}

/// A TCP proxy in front of the machine's PostgreSQL that counts the
/// requests clients send and the statements they name.
pub(crate) async fn counting_proxy(upstream: PgTarget) -> (PgTarget, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let target = format!("{}:{}", upstream.host, upstream.port);
    let counter = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(&target).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            });
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                // The startup message has no type byte; every later one has.
                let mut buffer: Vec<u8> = Vec::new();
                let mut typed = false;
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n @ 1..) = client_read.read(&mut chunk).await else {
                        return;
                    };
                    if server_write.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    loop {
                        let header = usize::from(typed);
                        let Some(len) = buffer.get(header..header + 4) else {
                            break;
                        };
                        let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
                        if buffer.len() < header + len {
                            break;
                        }
                        if !typed {
                            counter
                                .startup
                                .lock()
                                .unwrap()
                                .push(String::from_utf8_lossy(&buffer[..len]).into_owned());
                        }
                        if typed && matches!(buffer[0], b'S' | b'Q') {
                            counter.requests.fetch_add(1, Ordering::Relaxed);
                        }
                        // Parse: its statement's name comes first ("" unnamed).
                        if typed && buffer[0] == b'P' && buffer.get(5) != Some(&0) {
                            counter.named.fetch_add(1, Ordering::Relaxed);
                        }
                        buffer.drain(..header + len);
                        typed = true;
                    }
                }
            });
        }
    });
    let mut proxied = upstream;
    proxied.host = "127.0.0.1".into();
    proxied.port = port;
    (proxied, seen)
}

#[tokio::test]
async fn a_pooled_connection_is_reused_with_one_round_trip_per_query() {
    let (proxied, seen) = counting_proxy(target()).await;
    let pool = pool_of(proxied);
    let first = backend_pid(&pool).await;
    // The first use prepares the statement (a round trip of its own); from
    // then on, each query is exactly one round trip: no ping before the
    // connection is used, none as it goes back to the pool.
    assert_eq!(backend_pid(&pool).await, first);
    let before = seen.requests.load(Ordering::Relaxed);
    for _ in 0..20 {
        assert_eq!(backend_pid(&pool).await, first, "the same connection");
    }
    assert_eq!(
        seen.requests.load(Ordering::Relaxed) - before,
        20,
        "round trips"
    );
    pool.close().await;
}

/// Behind a transaction pooler a statement is never named (another client
/// may get the server session next) and no timeout is a startup parameter:
/// each operation is BEGIN with the timeout, the statement on the unnamed
/// statement, COMMIT, sent together; and the timeout holds.
#[tokio::test]
async fn behind_a_transaction_pooler_nothing_is_named_and_the_timeout_is_per_transaction() {
    let (proxied, seen) = counting_proxy(target_with(Pooler::Transaction)).await;
    let pool = pool_of(proxied);
    for _ in 0..5 {
        backend_pid(&pool).await;
    }
    assert_eq!(seen.named.load(Ordering::Relaxed), 0, "no named statement");
    let before = seen.requests.load(Ordering::Relaxed);
    backend_pid(&pool).await;
    assert_eq!(
        seen.requests.load(Ordering::Relaxed) - before,
        3,
        "BEGIN, the statement, COMMIT"
    );
    let timeout: String =
        on_pool_session(&pool, "SELECT current_setting('statement_timeout')").await;
    assert_eq!(timeout, "5s", "set for the transaction");
    // Nothing for the session: no timeout among the startup parameters
    // (PgBouncer refuses them, RDS Proxy pins them).
    let startup = seen.startup.lock().unwrap().join("|");
    assert!(startup.contains("tms-chat"), "{startup}");
    assert!(!startup.contains("statement_timeout"), "{startup}");
    pool.close().await;

    // Directly, statements are prepared (named) once per session, and the
    // timeout is the session's own.
    let (proxied, seen) = counting_proxy(target()).await;
    let pool = pool_of(proxied);
    backend_pid(&pool).await;
    backend_pid(&pool).await;
    assert_eq!(seen.named.load(Ordering::Relaxed), 1);
    let startup = seen.startup.lock().unwrap().join("|");
    assert!(startup.contains("statement_timeout=5000"), "{startup}");
    pool.close().await;
}

#[tokio::test]
async fn a_connection_idle_for_a_while_is_pinged_before_use() {
    let (proxied, seen) = counting_proxy(target()).await;
    let pool = pool_of(proxied);
    backend_pid(&pool).await;
    backend_pid(&pool).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = seen.requests.load(Ordering::Relaxed);
    backend_pid(&pool).await;
    assert_eq!(
        seen.requests.load(Ordering::Relaxed) - before,
        2,
        "a ping, then the query"
    );
    pool.close().await;
}

#[tokio::test]
async fn a_cancelled_operations_connection_is_dropped_not_reused() {
    let pool = pool_of(target());
    let first = backend_pid(&pool).await;
    // The caller gives up while the server is still busy with the query: the
    // connection is mid-protocol and must not serve the next operation.
    let sleeping = pool.run(async |session| Ok(session.query("SELECT pg_sleep(3)", &[]).await?));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), sleeping)
            .await
            .is_err()
    );
    assert_eq!(pool.idle_count(), 0);
    let started = Instant::now();
    let next = backend_pid(&pool).await;
    assert_ne!(next, first, "a new connection, not the cancelled one");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "did not wait for the cancelled query: {:?}",
        started.elapsed()
    );
    pool.close().await;
}

#[tokio::test]
async fn an_error_from_the_server_keeps_the_connection() {
    let pool = pool_of(target());
    let first = backend_pid(&pool).await;
    let refused = pool
        .run(async |session| {
            Ok(session
                .query("SELECT 1 / (pg_backend_pid() - pg_backend_pid())", &[])
                .await?)
        })
        .await;
    assert!(
        matches!(&refused, Err(PgError::Query(e)) if e.code().map(|c| c.code()) == Some("22012")),
        "{refused:?}"
    );
    // The server answered: the protocol is in step, the connection is kept.
    assert_eq!(pool.idle_count(), 1);
    assert_eq!(backend_pid(&pool).await, first);
    pool.close().await;
}

#[tokio::test]
async fn waiting_for_a_connection_is_bounded_and_a_closed_pool_refuses() {
    let pool = pool_of(target());
    let held = pool.acquire().await.unwrap();
    let started = Instant::now();
    let waited = pool.acquire().await;
    assert!(
        matches!(waited, Err(PgError::PoolTimedOut)),
        "{:?}",
        waited.err()
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    held.release();
    assert_eq!(pool.idle_count(), 1);
    pool.close().await;
    assert_eq!(pool.idle_count(), 0);
    assert!(matches!(
        pool.acquire().await.err(),
        Some(PgError::PoolClosed)
    ));
}

/// Ends a server session from outside, as a restart or a network cut would.
async fn terminate_backend(pid: i32) {
    let mut admin = sqlx::PgConnection::connect_with(&target().sqlx_options())
        .await
        .unwrap();
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(ended, "backend {pid} ended");
    admin.close().await.unwrap();
}

#[tokio::test]
async fn a_broken_connection_makes_its_own_pool_ping_and_no_other() {
    let (broken_target, broken_seen) = counting_proxy(target()).await;
    let (other_target, other_seen) = counting_proxy(target()).await;
    let broken = pool_of(broken_target);
    let other = pool_of(other_target);
    backend_pid(&other).await;
    let pid = backend_pid(&broken).await;
    terminate_backend(pid).await;
    // The next query fails on the ended session, or (when the session's end
    // reached the client first) runs on a new one: never on the dead one.
    let next = broken
        .run(async |session| Ok(session.query("SELECT pg_backend_pid()", &[]).await?))
        .await;
    if let Ok(rows) = next {
        assert_ne!(rows[0].get::<_, i32>(0), pid, "not on the ended session");
    }
    // Either way, the pool whose connection broke checks its connections
    // before use for a while: the cause may have broken them all.
    backend_pid(&broken).await;
    let before = broken_seen.requests.load(Ordering::Relaxed);
    backend_pid(&broken).await;
    assert_eq!(
        broken_seen.requests.load(Ordering::Relaxed) - before,
        2,
        "a ping, then the query"
    );
    // Another pool in the same process is not slowed by that failure.
    let before = other_seen.requests.load(Ordering::Relaxed);
    for _ in 0..20 {
        backend_pid(&other).await;
    }
    assert_eq!(
        other_seen.requests.load(Ordering::Relaxed) - before,
        20,
        "one round trip per query"
    );
    broken.close().await;
    other.close().await;
}

/// Nagle off on the pool's connections, as on Redis's: every message is a
/// whole request, sent at once.
#[tokio::test]
async fn pooled_connections_send_each_request_at_once() {
    // Through a proxy of its own: no other connection of this process
    // (`cargo test` runs tests side by side) goes to its port.
    let (proxied, _) = counting_proxy(target()).await;
    let port = proxied.port;
    let pool = pool_of(proxied);
    backend_pid(&pool).await;
    let nodelay = tests::nodelay_of_sockets_to(port);
    assert_eq!(nodelay, [true], "the pool's one connection, without Nagle");
}
