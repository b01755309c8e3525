//! A TCP proxy that delays what it forwards, each way: the network between
//! a function and its stores in the cloud (0.3 to 1 ms a round trip within
//! one zone), on loopback. `make bench` puts one in front of its Redis and
//! one in front of its PostgreSQL (BENCHMARKS.md).
//!
//! Each chunk read from one side is written to the other at its arrival
//! plus the delay, in order: a pipeline, as a link is (the delay adds
//! latency, it does not hold a connection to one chunk per delay). Tokio
//! reads; tokio's timers tick in milliseconds, too coarse for a delay of
//! half of one, so each direction of a connection has a thread of its own
//! that sleeps (with the finest timer slack) until just before a chunk is
//! due, then spins to its deadline and writes it. Connecting is not
//! delayed (the functions keep their connections).

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// How long before a deadline a writer stops sleeping and spins: more than
/// a sleep's overshoot with 1 ns of timer slack on a busy machine.
const SPIN_BEFORE: Duration = Duration::from_micros(80);

/// A chunk and when it is due on the other side.
type Due = (Instant, Vec<u8>);

/// Listens on a free port of 127.0.0.1 and forwards each connection to its
/// target, `delay` later each way. Stops accepting when dropped.
pub struct LatencyProxy {
    pub port: u16,
    pub delay: Duration,
    accept: JoinHandle<()>,
}

impl LatencyProxy {
    /// Starts on the current tokio runtime.
    pub async fn start(target: SocketAddr, delay: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    // A target that refuses: the client sees its connection close.
                    if let Ok(server) = TcpStream::connect(target).await {
                        let _ = relay(client, server, delay);
                    }
                });
            }
        });
        Ok(Self {
            port,
            delay,
            accept,
        })
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn relay(client: TcpStream, server: TcpStream, delay: Duration) -> std::io::Result<()> {
    // Every chunk leaves as soon as it is due: no Nagle on either side.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (from_client, to_client) = client.into_split();
    let (from_server, to_server) = server.into_split();
    forward(from_client, to_server, delay)?;
    forward(from_server, to_client, delay)
}

/// One direction: a task reads and stamps each chunk with its deadline, a
/// thread writes it then.
fn forward(mut from: OwnedReadHalf, to: OwnedWriteHalf, delay: Duration) -> std::io::Result<()> {
    let (due, chunks) = mpsc::channel::<Due>();
    let runtime = Handle::current();
    std::thread::Builder::new()
        .name("latency-proxy".into())
        .spawn(move || release(chunks, to, runtime))?;
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        // Until end of stream or an error; dropping `due` ends the writer.
        while let Ok(n @ 1..) = from.read(&mut buffer).await {
            let at = Instant::now() + delay;
            if due.send((at, buffer[..n].to_vec())).is_err() {
                return; // the other side is gone
            }
        }
    });
    Ok(())
}

/// Writes each chunk at its deadline, in order; shuts the write side down
/// once the read side has ended and everything before is written.
fn release(chunks: mpsc::Receiver<Due>, mut to: OwnedWriteHalf, runtime: Handle) {
    fine_timer_slack();
    while let Ok((at, chunk)) = chunks.recv() {
        wait_until(at);
        if runtime.block_on(to.write_all(&chunk)).is_err() {
            return;
        }
    }
    let _ = runtime.block_on(to.shutdown());
}

/// Sleeps until shortly before `deadline`, then spins to it.
pub fn wait_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > SPIN_BEFORE {
            std::thread::sleep(left - SPIN_BEFORE);
        } else {
            std::hint::spin_loop();
        }
    }
}

/// This thread's sleeps end when asked, not up to 50 µs later (Linux's
/// default timer slack).
fn fine_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a value and changes this thread only.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// The delay each way from `BENCH_LATENCY_MS` (milliseconds, fractions
/// allowed), or `default_ms`.
pub fn delay_from_env(default_ms: f64) -> anyhow::Result<Duration> {
    let ms = match std::env::var("BENCH_LATENCY_MS") {
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .map_err(|_| anyhow::anyhow!("BENCH_LATENCY_MS must be a number of ms, got `{v}`"))?,
        Err(_) => default_ms,
    };
    anyhow::ensure!(
        ms.is_finite() && ms >= 0.0,
        "BENCH_LATENCY_MS must be at least 0"
    );
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = conn.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delays_each_way_in_order_without_serialising() {
        let delay = Duration::from_millis(5);
        let proxy = LatencyProxy::start(echo().await, delay).await.unwrap();
        let mut conn = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
        conn.set_nodelay(true).unwrap();
        // One round trip: two delays.
        let started = Instant::now();
        conn.write_all(b"a").await.unwrap();
        let mut one = [0u8; 1];
        conn.read_exact(&mut one).await.unwrap();
        let rtt = started.elapsed();
        assert!(rtt >= 2 * delay, "{rtt:?}");
        assert!(rtt < 2 * delay + Duration::from_millis(20), "{rtt:?}");
        // Ten chunks 1 ms apart: all back within about one round trip of
        // the last, in order (serialised, they would take 100 ms).
        let started = Instant::now();
        for i in 0..10u8 {
            conn.write_all(&[b'0' + i]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut ten = [0u8; 10];
        conn.read_exact(&mut ten).await.unwrap();
        assert_eq!(&ten, b"0123456789");
        assert!(
            started.elapsed() < Duration::from_millis(60),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn waits_until_a_deadline_under_a_millisecond() {
        let deadline = Instant::now() + Duration::from_micros(300);
        wait_until(deadline);
        let late = Instant::now() - deadline;
        assert!(late < Duration::from_millis(5), "{late:?}");
    }
}
