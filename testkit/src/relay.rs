//! A TCP relay on a free port, for what a network does to a connection:
//! an endpoint whose server changes (ElastiCache's primary endpoint after a
//! failover), a link whose one direction goes silent (asynchronous
//! replication's window).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Relays each connection to `127.0.0.1:<upstream>` (read when the
/// connection is made).
pub struct Relay {
    pub port: u16,
    upstream: Arc<AtomicU16>,
    cut: Arc<AtomicBool>,
}

impl Relay {
    /// Starts relaying on the current Tokio runtime.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("relay address").port();
        let upstream = Arc::new(AtomicU16::new(upstream));
        let cut = Arc::new(AtomicBool::new(false));
        let (to, silent) = (Arc::clone(&upstream), Arc::clone(&cut));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let target = to.load(Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue; // dropped: the client sees the connection close
                };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                    let _ = to_server.shutdown().await;
                });
                let silent = Arc::clone(&silent);
                tokio::spawn(async move {
                    let mut buffer = [0u8; 16384];
                    loop {
                        let Ok(n @ 1..) = from_server.read(&mut buffer).await else {
                            let _ = to_client.shutdown().await;
                            return;
                        };
                        if !silent.load(Ordering::SeqCst)
                            && to_client.write_all(&buffer[..n]).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            port,
            upstream,
            cut,
        }
    }

    /// New connections go to `upstream` from now on (existing ones stay
    /// with their server until it closes them).
    pub fn point_to(&self, upstream: u16) {
        self.upstream.store(upstream, Ordering::SeqCst);
    }

    /// From now on what the servers send is dropped: the clients, still
    /// connected, hear nothing more.
    pub fn silence_servers(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}
