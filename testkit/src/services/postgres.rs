//! A throwaway PostgreSQL server on a free port.

use super::*;

/// A throwaway PostgreSQL server of the test's own, on a free port, stopped or
/// hung by its PID.
pub struct PgServer {
    pub port: u16,
    /// `-c name=value` settings it runs with, beyond the test kit's own.
    settings: Vec<String>,
    dir: PathBuf,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    child: Option<Child>,
    ca: Option<TestCa>,
}

impl PgServer {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A server with settings of its own (`name=value`, as `postgres -c`),
    /// such as a small `max_connections`.
    pub fn start_with_settings(settings: &[&str]) -> Self {
        let mut server = Self::start();
        server.stop();
        server.settings = settings.iter().map(|s| (*s).to_owned()).collect();
        server.resume_serving();
        server
    }

    /// A server that also speaks TLS, as managed databases do, with a
    /// certificate for `localhost` and `127.0.0.1` signed by a CA of its own
    /// ([`PgServer::ca_cert_path`]).
    pub fn start_tls() -> Self {
        Self::start_tls_for(&["localhost", "127.0.0.1"])
    }

    /// [`PgServer::start_tls`] with a certificate that names only `hosts`.
    pub fn start_tls_for(hosts: &[&str]) -> Self {
        Self::start_with(Some(hosts))
    }

    /// The CA that signed the server's certificate (TLS servers only).
    pub fn ca_cert_path(&self) -> PathBuf {
        self.ca.as_ref().expect("a TLS server").cert_path()
    }

    fn start_with(tls_hosts: Option<&[&str]>) -> Self {
        let dirs = postgres_bin_dirs();
        let initdb = find_binary("initdb", &dirs);
        let bin = find_binary("postgres", &dirs);
        let dir = std::env::temp_dir().join(format!("tms-pg-{}", uuid_simple()));
        std::fs::create_dir_all(&dir).expect("pg dir");
        let user = postgres_user();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown pg dir");
        }
        let mut init = Command::new(initdb);
        init.args(["-D"])
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_user(&mut init, user);
        let out = init.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ca = tls_hosts.map(|_| TestCa::new());
        if let (Some(ca), Some(hosts)) = (&ca, tls_hosts) {
            let data = dir.join("data");
            let issued = ca.issue(hosts);
            std::fs::copy(&issued.cert, data.join("server.crt")).expect("copy cert");
            std::fs::copy(&issued.key, data.join("server.key")).expect("copy key");
            for file in ["server.key", "server.crt"] {
                let path = data.join(file);
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .expect("chmod");
                if let Some((uid, gid)) = user {
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown key");
                }
            }
            let conf = data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
            text.push_str(
                "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            );
            std::fs::write(&conf, text).expect("write postgresql.conf");
        }
        let mut server = Self {
            port: free_port(),
            settings: Vec::new(),
            dir,
            bin,
            user,
            child: None,
            ca,
        };
        server.resume_serving();
        server
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The postmaster's PID.
    pub fn pid(&self) -> i32 {
        running_pid(&self.child)
    }

    /// Starts (again) on the same port and data.
    pub fn resume_serving(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_user(&mut cmd, self.user);
        self.child = Some(cmd.spawn().expect("start postgres"));
        wait_for_tcp(self.port, Duration::from_secs(20));
        // Accepting TCP is not yet accepting logins: wait for a real answer.
        let url = self.url();
        for _ in 0..100 {
            let ok = std::thread::spawn({
                let url = url.clone();
                move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        match Database::open_postgres(&url, 1) {
                            Ok(db) => db.ping().await.is_ok(),
                            Err(_) => false,
                        }
                    })
                }
            })
            .join()
            .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("throwaway PostgreSQL did not come up");
    }

    /// Fast shutdown (SIGINT), waiting until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, "INT");
            let _ = child.wait();
        }
    }

    /// Freezes every process of the server: the postmaster and its children
    /// (each backend is in a session of its own, so a process group won't do).
    pub fn hang(&self) {
        signal(self.pid(), "STOP");
        let _ = Command::new("pkill")
            .args(["-STOP", "-P", &self.pid().to_string()])
            .status();
    }

    pub fn unhang(&self) {
        let _ = Command::new("pkill")
            .args(["-CONT", "-P", &self.pid().to_string()])
            .status();
        signal(self.pid(), "CONT");
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.unhang();
        }
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, "QUIT");
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
