//! The PostgreSQL pool (`shared::db::PgConnectionPool`): a connection is
//! reused without a round trip of its own, and only when its last operation
//! ran to the end.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shared::db::PgConnectionPool;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use tests::services::admin_database_url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn options() -> PgConnectOptions {
    PgConnectOptions::from_str(&admin_database_url())
        .unwrap()
        .ssl_mode(PgSslMode::Disable)
}

async fn backend_pid(pool: &PgConnectionPool) -> i32 {
    pool.run(async |conn: &mut PgConnection| {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await
    })
    .await
    .unwrap()
}

/// A TCP proxy in front of the machine's PostgreSQL that counts the Sync
/// messages clients send: one per extended-protocol round trip (a query, or
/// a ping).
async fn counting_proxy(upstream: PgConnectOptions) -> (PgConnectOptions, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let syncs = Arc::new(AtomicUsize::new(0));
    let target = format!("{}:{}", upstream.get_host(), upstream.get_port());
    let counter = Arc::clone(&syncs);
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
                        if typed && buffer[0] == b'S' {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        buffer.drain(..header + len);
                        typed = true;
                    }
                }
            });
        }
    });
    (upstream.host("127.0.0.1").port(port), syncs)
}

#[tokio::test]
async fn a_pooled_connection_is_reused_with_one_round_trip_per_query() {
    let (options, syncs) = counting_proxy(options()).await;
    let pool = PgConnectionPool::new(options, 1);
    let first = backend_pid(&pool).await;
    // The first use prepares the statement (a round trip of its own); from
    // then on, each query is exactly one round trip: no ping before the
    // connection is used, none as it goes back to the pool.
    assert_eq!(backend_pid(&pool).await, first);
    let before = syncs.load(Ordering::Relaxed);
    for _ in 0..20 {
        assert_eq!(backend_pid(&pool).await, first, "the same connection");
    }
    assert_eq!(syncs.load(Ordering::Relaxed) - before, 20, "round trips");
    pool.close().await;
}

#[tokio::test]
async fn a_connection_idle_for_a_while_is_pinged_before_use() {
    let (options, syncs) = counting_proxy(options()).await;
    let pool = PgConnectionPool::new(options, 1);
    backend_pid(&pool).await;
    backend_pid(&pool).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = syncs.load(Ordering::Relaxed);
    backend_pid(&pool).await;
    assert_eq!(
        syncs.load(Ordering::Relaxed) - before,
        2,
        "a ping, then the query"
    );
    pool.close().await;
}

#[tokio::test]
async fn a_cancelled_operations_connection_is_dropped_not_reused() {
    let pool = PgConnectionPool::new(options(), 1);
    let first = backend_pid(&pool).await;
    // The caller gives up while the server is still busy with the query: the
    // connection is mid-protocol and must not serve the next operation.
    let sleeping = pool
        .run(async |conn: &mut PgConnection| sqlx::query("SELECT pg_sleep(3)").execute(conn).await);
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
    let pool = PgConnectionPool::new(options(), 1);
    let first = backend_pid(&pool).await;
    let refused = pool
        .run(async |conn: &mut PgConnection| {
            sqlx::query_scalar::<_, i32>("SELECT 1 / (pg_backend_pid() - pg_backend_pid())")
                .fetch_one(conn)
                .await
        })
        .await;
    assert!(
        matches!(&refused, Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("22012")),
        "{refused:?}"
    );
    // The server answered: the protocol is in step, the connection is kept.
    assert_eq!(pool.idle_count(), 1);
    assert_eq!(backend_pid(&pool).await, first);
    pool.close().await;
}

#[tokio::test]
async fn waiting_for_a_connection_is_bounded_and_a_closed_pool_refuses() {
    let pool = PgConnectionPool::new(options(), 1);
    let held = pool.acquire().await.unwrap();
    let started = Instant::now();
    let waited = pool.acquire().await;
    assert!(
        matches!(waited, Err(sqlx::Error::PoolTimedOut)),
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
        Some(sqlx::Error::PoolClosed)
    ));
}

/// Ends a server session from outside, as a restart or a network cut would.
async fn terminate_backend(pid: i32) {
    let mut admin = PgConnection::connect_with(&options()).await.unwrap();
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
    let (broken_options, broken_syncs) = counting_proxy(options()).await;
    let (other_options, other_syncs) = counting_proxy(options()).await;
    let broken = PgConnectionPool::new(broken_options, 1);
    let other = PgConnectionPool::new(other_options, 1);
    backend_pid(&other).await;
    let pid = backend_pid(&broken).await;
    terminate_backend(pid).await;
    assert!(
        broken
            .run(async |conn: &mut PgConnection| sqlx::query("SELECT 1").execute(conn).await)
            .await
            .is_err(),
        "the ended session fails its next query"
    );
    // The pool whose connection broke checks its connections before use
    // for a while: the cause may have broken them all.
    backend_pid(&broken).await;
    let before = broken_syncs.load(Ordering::Relaxed);
    backend_pid(&broken).await;
    assert_eq!(
        broken_syncs.load(Ordering::Relaxed) - before,
        2,
        "a ping, then the query"
    );
    // Another pool in the same process is not slowed by that failure.
    let before = other_syncs.load(Ordering::Relaxed);
    for _ in 0..20 {
        backend_pid(&other).await;
    }
    assert_eq!(
        other_syncs.load(Ordering::Relaxed) - before,
        20,
        "one round trip per query"
    );
    broken.close().await;
    other.close().await;
}
