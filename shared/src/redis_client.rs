//! The Redis connection: one multiplexed connection, opened lazily, reused
//! across invocations, reopened after any failure, with connect and response
//! timeouts well under a second so that a down or hung Redis is a fast 503.
//! `rediss://` URLs use TLS (rustls, the system's roots).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

/// Connecting and each command.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(400);

pub struct RedisClient {
    client: redis::Client,
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl RedisClient {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {}", e.category()))?;
        Ok(Self {
            client,
            connection: Mutex::default(),
        })
    }

    /// The shared connection, opened if there is none.
    pub async fn connection(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        // Concurrent requests wait for one connect at most as long as they
        // would wait for Redis itself, never in a queue of connects.
        let mut slot = tokio::time::timeout(REDIS_TIMEOUT, self.connection.lock())
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// After a failure the connection may be dead or stuck: open a new one next time.
    pub async fn forget_connection(&self) {
        *self.connection.lock().await = None;
    }

    /// Whether Redis answers a `PING` (for `/health/ready`).
    pub async fn ping(&self) -> Result<(), String> {
        let result = async {
            let mut conn = self.connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        }
        .await;
        if result.is_err() {
            self.forget_connection().await;
        }
        result.map(|_| ()).map_err(|e| e.category().to_owned())
    }
}
