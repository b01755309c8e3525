//! A PgBouncer in transaction mode in front of a PostgreSQL.

use super::*;

/// A throwaway PgBouncer (Debian's package, 1.18) in transaction mode, on
/// a free port, in front of a PostgreSQL on `127.0.0.1:<upstream_port>`:
/// every database of that server, as the same name, through at most
/// `server_connections` server sessions per database. Transaction mode
/// gives consecutive transactions of one client to whichever server
/// session is free: what breaks named prepared statements and session
/// settings, as RDS Proxy's multiplexing and ApsaraDB's proxy do.
pub struct PgBouncer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PgBouncer {
    /// In front of the server that `url` names. It refuses startup
    /// parameters as a stock PgBouncer does (`statement_timeout` among
    /// them), except sqlx's `extra_float_digits`, which the tests' own
    /// sessions send (the functions use tokio-postgres, which does not).
    pub fn in_front_of(url: &str, server_connections: u32) -> Self {
        let target = shared::db::PgTarget::parse(url, shared::db::PgEndpoint::default())
            .expect("a PostgreSQL URL");
        Self::start(&target.host, target.port, &target.user, server_connections)
    }

    pub fn start(host: &str, upstream_port: u16, user: &str, server_connections: u32) -> Self {
        let bin = find_binary("pgbouncer", &[PathBuf::from("/usr/sbin")]);
        let dir = std::env::temp_dir().join(format!("tms-pgbouncer-{}", uuid_simple()));
        std::fs::create_dir_all(&dir).expect("pgbouncer dir");
        let port = free_port();
        let config = format!(
            "[databases]\n\
             * = host={host} port={upstream_port} user={user}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = any\n\
             pool_mode = transaction\n\
             default_pool_size = {server_connections}\n\
             max_client_conn = 2000\n\
             server_reset_query =\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {log}\n",
            log = dir.join("pgbouncer.log").display(),
        );
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(&ini, config).expect("write pgbouncer.ini");
        // PgBouncer refuses to run as root: as PostgreSQL's user then.
        let user = postgres_user();
        if let Some((uid, gid)) = user {
            for path in [&dir, &ini] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown pgbouncer");
            }
        }
        let mut cmd = Command::new(bin);
        cmd.arg(&ini).stdout(Stdio::null()).stderr(Stdio::null());
        as_user(&mut cmd, user);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start pgbouncer ({e}): scripts/services.sh installs it (apt-get install pgbouncer)")
        });
        wait_for_tcp(port, Duration::from_secs(20));
        Self {
            port,
            dir,
            child: Some(child),
        }
    }

    /// `url` (a database on the upstream server) reached through the pooler.
    pub fn url_for(&self, url: &str) -> String {
        let name = url.rsplit('/').next().expect("a database name");
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// What PgBouncer wrote to its log (its refusals and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, "INT");
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
