//! The Redis connection: one connection, opened lazily, reused across
//! invocations, reopened after any failure, with connect and response
//! timeouts well under a second so that a down or hung Redis is a fast 503.
//!
//! `REDIS_URL` says what kind of Redis it is, because managed ones differ:
//! - `redis://` / `rediss://`: one server, or a proxy in front of a cluster
//!   (ElastiCache cluster mode disabled, Tair/Redis proxy mode): one
//!   multiplexed connection.
//! - `redis+cluster://` / `rediss+cluster://`: a cluster endpoint the client
//!   must route by slot itself (ElastiCache Serverless, ElastiCache cluster
//!   mode enabled, Tair/Redis direct mode): a cluster connection, seeded by
//!   the one address in the URL.
//!
//! `rediss` is TLS (rustls): verified against the system's roots, or against
//! the CA bundle of `REDIS_CA_CERT_PATH` when the provider signs with its own.
//! Callers see one [`RedisConnection`] either way.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, TlsCertificates, Value};
use tokio::sync::Mutex;

use crate::ca_bundle::CaBundle;

/// The replay store's settings (`REDIS_URL`, `REDIS_KEY_PREFIX`,
/// `REDIS_CA_CERT_PATH`), parsed and checked with the rest of the configuration.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Unset: the in-process store (one instance only, local use).
    pub url: Option<crate::secret::Secret>,
    /// Before every key this deployment writes.
    pub key_prefix: String,
    /// The CA that signs a `rediss` server's certificate, when it is not
    /// one of the system's roots.
    pub ca_cert: Option<CaBundle>,
}

/// Connecting and each command.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(400);

/// Without Nagle: every write is a whole command. With it, a command sent
/// while an earlier one's reply is outstanding (the login's completion, not
/// awaited) waits for that reply's ACK, adding a round trip to the next
/// login on a multiplexed connection.
fn tcp_settings() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

/// The URL schemes that select a cluster connection.
pub const CLUSTER_SCHEMES: [&str; 2] = ["redis+cluster://", "rediss+cluster://"];

pub struct RedisClient {
    client: Client,
    connection: Mutex<Option<RedisConnection>>,
}

// One per instance, made at start: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Client {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// A connection to a single Redis or to a cluster; cheap to clone (clones
/// share the underlying connection).
#[derive(Clone)]
pub enum RedisConnection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

impl RedisClient {
    /// `ca`: the CA bundle that signs the server's certificate, when it is
    /// not one of the system's roots (`rediss` URLs only).
    pub fn new(url: &str, ca: Option<&CaBundle>) -> anyhow::Result<Self> {
        let invalid = |e: redis::RedisError| match ca {
            Some(ca) => anyhow::anyhow!(
                "REDIS_URL with REDIS_CA_CERT_PATH `{}` makes no TLS client: {}",
                ca.path,
                e.category()
            ),
            None => anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {}", e.category()),
        };
        let cluster_seed = CLUSTER_SCHEMES
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme).map(|rest| (scheme, rest)))
            // The cluster client takes node URLs: the seed without `+cluster`.
            .map(|(scheme, rest)| format!("{}{rest}", scheme.replace("+cluster", "")));
        let certificates = ca.map(|ca| TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.pem.to_vec()),
        });
        let client = match (cluster_seed, certificates) {
            (Some(seed), certificates) => {
                let mut builder = redis::cluster::ClusterClient::builder([seed])
                    .tcp_settings(tcp_settings())
                    .connection_timeout(REDIS_TIMEOUT)
                    .response_timeout(REDIS_TIMEOUT);
                if let Some(certificates) = certificates {
                    builder = builder.certs(certificates);
                }
                Client::Cluster(builder.build().map_err(invalid)?)
            }
            (None, certificates) => {
                let info = url
                    .into_connection_info()
                    .map_err(invalid)?
                    .set_tcp_settings(tcp_settings());
                let client = match certificates {
                    Some(certificates) => redis::Client::build_with_tls(info, certificates),
                    None => redis::Client::open(info),
                };
                Client::Single(client.map_err(invalid)?)
            }
        };
        Ok(Self {
            client,
            connection: Mutex::default(),
        })
    }

    /// The shared connection, opened if there is none.
    pub async fn connection(&self) -> Result<RedisConnection, redis::RedisError> {
        // Concurrent requests wait for one connect at most as long as they
        // would wait for Redis itself, never in a queue of connects.
        let mut slot = tokio::time::timeout(REDIS_TIMEOUT, self.connection.lock())
            .await
            .map_err(|_| timed_out())?;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        // Boxed: a connect's future is kilobytes, and inline it would make
        // every command's future as large (copied and allocated on each
        // request); it runs once per connection.
        let conn = Box::pin(self.open()).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// A new connection (to the server, or to the cluster).
    async fn open(&self) -> Result<RedisConnection, redis::RedisError> {
        Ok(match &self.client {
            Client::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT));
                RedisConnection::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
            // A cluster connect is several round trips (the seed, its slot
            // map, every master): bounded as a whole.
            Client::Cluster(client) => RedisConnection::Cluster(
                tokio::time::timeout(REDIS_TIMEOUT, client.get_async_connection())
                    .await
                    .map_err(|_| timed_out())??,
            ),
        })
    }

    /// After a failure the connection may be dead or stuck: open a new one next time.
    pub async fn forget_connection(&self) {
        *self.connection.lock().await = None;
    }

    /// Whether Redis answers a `PING` (for `/health/ready`). A cluster must
    /// also serve every slot: each master it is connected to answers, and
    /// the cluster itself says `cluster_state:ok` (it notices a master that
    /// is gone, which the client may not have connected to).
    pub async fn ping(&self) -> Result<(), String> {
        let result = async {
            let mut conn = self.connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await?;
            if let RedisConnection::Cluster(_) = conn {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn)
                    .await?;
                if !info.contains("cluster_state:ok") {
                    return Ok(Some("cluster_state is not ok"));
                }
            }
            Ok::<_, redis::RedisError>(None)
        }
        .await;
        if result.is_err() {
            self.forget_connection().await;
        }
        match result {
            Ok(None) => Ok(()),
            Ok(Some(problem)) => Err(problem.to_owned()),
            Err(e) => Err(e.category().to_owned()),
        }
    }
}

fn timed_out() -> redis::RedisError {
    std::io::Error::from(std::io::ErrorKind::TimedOut).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command's future waits for the shared connection first: the
    /// connect (a TLS handshake, a cluster's slot map) is boxed, so that
    /// its kilobytes are not carried by every command's future, allocated
    /// and moved whole on each request (2,152 bytes with it inline, 256
    /// without).
    #[test]
    fn the_connection_future_carries_no_connect() {
        const LIMIT: usize = 512;
        // Its type's size: the same for every kind of Redis URL.
        let client = RedisClient::new("redis://127.0.0.1:6379", None).unwrap();
        let size = std::mem::size_of_val(&client.connection());
        assert!(size <= LIMIT, "{size} bytes");
    }

    #[test]
    fn a_ca_bundle_that_is_no_certificate_is_refused_at_start_naming_it() {
        let ca = CaBundle {
            path: "/opt/broken.pem".into(),
            pem: b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"
                .as_slice()
                .into(),
        };
        for url in ["rediss://cache:6379", "rediss+cluster://cache:6379"] {
            let err = RedisClient::new(url, Some(&ca))
                .err()
                .expect(url)
                .to_string();
            assert!(
                err.contains("REDIS_CA_CERT_PATH `/opt/broken.pem`"),
                "{err}"
            );
        }
        assert!(RedisClient::new("redis+cluster://cache:6379", None).is_ok());
    }
}
