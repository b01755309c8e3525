//! Throwaway Redis servers and clusters, and what tests write into a shared Redis.

use super::*;

/// Writes one batch of `count` 1 KB keys with an expiry of `ttl_secs`
/// (`other-app:<batch>:<i>`), as another application sharing a Redis
/// would: what fills a Redis up until it evicts.
pub fn write_other_data(
    conn: &mut ::redis::Connection,
    batch: u64,
    count: usize,
    ttl_secs: u64,
) -> ::redis::RedisResult<()> {
    let value = "x".repeat(1024);
    let mut pipe = ::redis::pipe();
    for i in 0..count {
        pipe.cmd("SET")
            .arg(format!("other-app:{batch}:{i}"))
            .arg(&value)
            .arg("EX")
            .arg(ttl_secs)
            .ignore();
    }
    pipe.query(conn)
}

/// A throwaway Redis server of the test's own, on a free port.
pub struct RedisServer {
    pub port: u16,
    bin: PathBuf,
    child: Option<Child>,
    /// What makes it more than a plain server: TLS, a cluster node.
    args: Vec<OsString>,
    /// The CA that signed its certificate, when it speaks TLS only.
    ca_cert: Option<PathBuf>,
    /// That CA, when the server owns it (a cluster's nodes share their cluster's).
    _own_ca: Option<TestCa>,
    /// A cluster node's own directory (its `nodes.conf` survives a restart).
    dir: Option<PathBuf>,
}

impl RedisServer {
    /// A server that keeps nothing: a restart starts empty.
    pub fn start() -> Self {
        Self::start_with(Vec::new(), None, None)
    }

    /// A plain server with more settings, such as a managed Redis's
    /// defaults (`["--maxmemory", "4mb", "--maxmemory-policy", "volatile-lru"]`)
    /// or a replica's (`["--replicaof", "127.0.0.1", "6379"]`).
    pub fn start_with_settings(settings: &[&str]) -> Self {
        Self::start_with(settings.iter().map(Into::into).collect(), None, None)
    }

    /// A command to this one server (`INFO`, `REPLICAOF NO ONE`).
    pub fn command<T: ::redis::FromRedisValue>(
        &self,
        cmd: &::redis::Cmd,
    ) -> ::redis::RedisResult<T> {
        self.query(cmd)
    }

    /// A server that speaks TLS only, as managed Redis does, with a
    /// certificate for `localhost` and `127.0.0.1` signed by a CA of its own
    /// ([`RedisServer::ca_cert_path`]); clients need no certificate.
    pub fn start_tls() -> Self {
        let ca = TestCa::new();
        let mut server = Self::start_with(tls_args(&ca), Some(ca.cert_path()), None);
        server._own_ca = Some(ca);
        server
    }

    /// A server that writes every change to its append-only file before
    /// answering, so that a restart, even after SIGKILL, keeps every key (as a
    /// managed Redis with persistence does).
    pub fn start_durable() -> Self {
        let dir = std::env::temp_dir().join(format!("tms-redis-{}", uuid_simple()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        // Later options override the plain server's `--appendonly no`.
        let args = ["--appendonly", "yes", "--appendfsync", "always"]
            .into_iter()
            .map(Into::into)
            .collect();
        Self::start_with(args, None, Some(dir))
    }

    /// A node of a cluster, not yet joined ([`RedisCluster`] joins them),
    /// speaking TLS only (also to its peers) when a CA is given.
    fn start_cluster_node(ca: Option<&TestCa>) -> Self {
        let dir = std::env::temp_dir().join(format!("tms-redis-node-{}", uuid_simple()));
        std::fs::create_dir_all(&dir).expect("node dir");
        // The bus port by default is the port + 10000, which may not exist.
        let bus_port = free_port().to_string();
        let mut args: Vec<OsString> =
            ["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"]
                .into_iter()
                .chain(["--cluster-port", &bus_port])
                .map(Into::into)
                .collect();
        if let Some(ca) = ca {
            args.extend(tls_args(ca));
            args.extend(["--tls-cluster".into(), "yes".into()]);
        }
        Self::start_with(args, ca.map(TestCa::cert_path), Some(dir))
    }

    fn start_with(args: Vec<OsString>, ca_cert: Option<PathBuf>, dir: Option<PathBuf>) -> Self {
        let bin = find_binary("redis-server", &[]);
        let mut server = Self {
            port: free_port(),
            bin,
            child: None,
            args,
            ca_cert,
            _own_ca: None,
            dir,
        };
        server.resume_serving();
        server
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca_cert.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA that signed the server's certificate (TLS servers only).
    pub fn ca_cert_path(&self) -> PathBuf {
        self.ca_cert.clone().expect("a TLS server")
    }

    pub fn pid(&self) -> i32 {
        running_pid(&self.child)
    }

    /// Starts (again) on the same port, empty (it keeps nothing on disk but
    /// a cluster node's membership).
    pub fn resume_serving(&mut self) {
        let port = self.port.to_string();
        let ports = match self.ca_cert {
            Some(_) => vec!["--port", "0", "--tls-port", &port],
            None => vec!["--port", &port],
        };
        let child = Command::new(&self.bin)
            .args(ports)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.clone().unwrap_or_else(std::env::temp_dir))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        wait_for_tcp(self.port, Duration::from_secs(10));
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, "KILL");
            let _ = child.wait();
        }
    }

    pub fn hang(&self) {
        signal(self.pid(), "STOP");
    }

    pub fn unhang(&self) {
        signal(self.pid(), "CONT");
    }

    /// A command sent to this one server, not to a cluster.
    fn query<T: ::redis::FromRedisValue>(&self, cmd: &::redis::Cmd) -> ::redis::RedisResult<T> {
        let client = match &self.ca_cert {
            Some(ca) => ::redis::Client::build_with_tls(
                self.url(),
                ::redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(ca)?),
                },
            )?,
            None => ::redis::Client::open(self.url())?,
        };
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        cmd.query(&mut conn)
    }
}

/// Serving TLS only with a certificate from `ca` for this host; no client certificates.
fn tls_args(ca: &TestCa) -> Vec<OsString> {
    let cert = ca.issue(&["localhost", "127.0.0.1"]);
    let mut args: Vec<OsString> = vec!["--tls-cert-file".into(), cert.cert.into()];
    args.extend(["--tls-key-file".into(), cert.key.into()]);
    args.extend(["--tls-ca-cert-file".into(), ca.cert_path().into()]);
    args.extend(["--tls-auth-clients".into(), "no".into()]);
    args
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A throwaway Redis cluster of three masters and no replicas, as a cluster
/// endpoint (ElastiCache Serverless, cluster mode, Tair direct mode) is to
/// its clients. Without replicas a stopped master's slots stay down until it
/// comes back ([`RedisServer::resume_serving`] on the same port).
pub struct RedisCluster {
    pub masters: Vec<RedisServer>,
    ca: Option<TestCa>,
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A cluster that speaks TLS only, to clients and between its nodes, with
    /// certificates signed by a CA of its own ([`RedisCluster::ca_cert_path`]),
    /// as ElastiCache Serverless is.
    pub fn start_tls() -> Self {
        Self::start_with(Some(TestCa::new()))
    }

    fn start_with(ca: Option<TestCa>) -> Self {
        let masters: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_cluster_node(ca.as_ref()))
            .collect();
        // Bounded: a cluster that cannot form would make it wait forever.
        let mut create = Command::new("timeout");
        create.arg("30").arg(find_binary("redis-cli", &[]));
        if let Some(ca) = &ca {
            create.arg("--tls").arg("--cacert").arg(ca.cert_path());
        }
        let out = create
            .arg("--cluster")
            .arg("create")
            .args(masters.iter().map(|m| format!("127.0.0.1:{}", m.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { masters, ca };
        cluster.wait_until_ok();
        cluster
    }

    /// The CA that signed the nodes' certificates (TLS clusters only).
    pub fn ca_cert_path(&self) -> PathBuf {
        self.ca.as_ref().expect("a TLS cluster").cert_path()
    }

    /// The URL a client is given: the cluster scheme and one seed node.
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        format!("{scheme}://127.0.0.1:{}", self.masters[0].port)
    }

    /// Which master serves `key` now (the one that answers it instead of
    /// redirecting).
    pub fn master_of(&self, key: &str) -> usize {
        self.masters
            .iter()
            .position(|m| {
                m.query::<Option<String>>(::redis::cmd("GET").arg(key))
                    .is_ok()
            })
            .expect("a master serves the key")
    }

    /// Waits until every running master says `cluster_state:ok` (all slots
    /// served), as after a create or a master's return.
    pub fn wait_until_ok(&self) {
        self.wait_for_state("ok");
    }

    /// Waits until the running masters have seen a stopped one fail
    /// (`cluster_state:fail`: its slots are not served).
    pub fn wait_until_failed(&self) {
        self.wait_for_state("fail");
    }

    fn wait_for_state(&self, state: &str) {
        let wanted = format!("cluster_state:{state}");
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let all = self.masters.iter().filter(|m| m.child.is_some()).all(|m| {
                m.query::<String>(::redis::cmd("CLUSTER").arg("INFO"))
                    .is_ok_and(|info| info.contains(&wanted))
            });
            if all {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the Redis cluster did not reach {wanted}");
    }
}

/// Removes the keys a test wrote under its own prefix on a shared Redis
/// (they would expire with their tokens anyway).
pub fn clear_redis_prefix(url: &str, prefix: &str) {
    let Ok(client) = ::redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
        return;
    };
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut conn)
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<i64, _> = ::redis::cmd("DEL").arg(&keys).query(&mut conn);
    }
}
