//! The database pool, its migrations and its errors: PostgreSQL in
//! production; for local runs and tests, an embedded SQLite file by default
//! (the `embedded-db` feature, which deploy builds leave out: production
//! requires PostgreSQL, so a deployed function links no SQLite). Each
//! function owns its own queries (one query text serves both backends
//! through [`on_pool!`]: the schema keeps types that both read alike); this
//! module only opens the pool, bounds each operation in time and tells what
//! an error means.
//!
//! Serverless-minded: the PostgreSQL pool ([`PgConnectionPool`]) opens its
//! connections lazily on first use, keeps them across invocations, checks a
//! connection before use only when it may have died unseen, reuses one only
//! when its last operation ran to the end, and every operation is bounded,
//! so a database that is down or hung is a 503 within about a second.

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::config::{CaBundle, Config};

#[cfg(feature = "embedded-db")]
mod embedded;
#[cfg(feature = "embedded-db")]
pub use embedded::{SQLITE_MIGRATIONS, run_sqlite};
mod postgres_pool;
pub use postgres_pool::{Lease, PgConnectionPool};

/// The migrations of each database, in order: `migrations/<database>/`,
/// one file per version, each listed here (a test checks the list against
/// the folders). Listed by hand rather than with `sqlx::migrate!`, whose
/// macro crate compiles sqlx's drivers a second time in every build.
const POSTGRES_MIGRATION_FILES: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "members by activity",
        include_str!("../migrations/postgres/0002_members_by_activity.sql"),
    ),
    (
        3,
        "sso logins",
        include_str!("../migrations/postgres/0003_sso_logins.sql"),
    ),
    (
        4,
        "sso logins by expiry",
        include_str!("../migrations/postgres/0004_sso_logins_by_expiry.sql"),
    ),
];

pub static POSTGRES_MIGRATIONS: LazyLock<Migrator> =
    LazyLock::new(|| migrator(POSTGRES_MIGRATION_FILES));

fn migrator(files: &[(i64, &str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        files
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.to_owned().into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Longest a whole database operation may take before the caller gets a 503.
pub const OPERATION_TIMEOUT: Duration = Duration::from_millis(1000);
/// The server's own bound on a statement (`statement_timeout`): it gives
/// up on one the function has stopped waiting for. A statement sent before
/// a deadline has ended, written or not, by that deadline plus this.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest to wait for a (new or pooled) connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(800);
/// A pooled connection idle longer than this is pinged before use.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);
/// For this long after one of a pool's connections broke, every idle
/// connection of that pool is pinged before use: the cause (a restart, a
/// network cut) has likely broken its siblings too.
const PING_ALL_AFTER_FAILURE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub enum Database {
    Postgres(PgConnectionPool),
    #[cfg(feature = "embedded-db")]
    Sqlite(sqlx::SqlitePool),
}

/// A `match` on the database's backend: `postgres(pool) => ...` and
/// `sqlite(pool) => ...`. Builds without `embedded-db` have no SQLite
/// variant, and the SQLite arm is dropped unread, so a function's code
/// reads the same in both builds; which arms exist is decided here, by
/// this crate's features, whatever the calling crate's are.
#[cfg(feature = "embedded-db")]
#[macro_export]
macro_rules! by_backend {
    ($db:expr, postgres($pg:pat) => $on_pg:expr, sqlite($lite:pat) => $on_lite:expr $(,)?) => {
        match $db {
            $crate::db::Database::Postgres($pg) => $on_pg,
            $crate::db::Database::Sqlite($lite) => $on_lite,
        }
    };
}
#[cfg(not(feature = "embedded-db"))]
#[macro_export]
macro_rules! by_backend {
    ($db:expr, postgres($pg:pat) => $on_pg:expr, sqlite($lite:pat) => $on_lite:expr $(,)?) => {
        match $db {
            $crate::db::Database::Postgres($pg) => $on_pg,
        }
    };
}

/// Items that only builds with the embedded database have (a store's
/// SQLite-only statements), kept or dropped with [`by_backend!`]'s arm.
#[cfg(feature = "embedded-db")]
#[macro_export]
macro_rules! embedded_db_only {
    ($($item:item)*) => { $($item)* };
}
#[cfg(not(feature = "embedded-db"))]
#[macro_export]
macro_rules! embedded_db_only {
    ($($item:item)*) => {};
}

/// Runs the same body against whichever database this is, with `$conn`
/// bound to a connection of its pool (`&mut PgConnection` or
/// `&mut SqliteConnection`): one query text, two drivers. `?` in the body
/// ends the body, as in a function.
#[macro_export]
macro_rules! on_pool {
    ($db:expr, $conn:ident => $body:expr) => {
        $crate::by_backend!($db,
            postgres(pool) => pool.run(async |$conn| $body).await,
            sqlite(pool) => $crate::db::run_sqlite(pool, async |$conn| $body).await,
        )
    };
}

impl Database {
    /// Opens the configured database. PostgreSQL connects lazily, on first
    /// use, and is migrated by `make migrate`; the embedded file is created
    /// and migrated here.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        #[cfg(feature = "embedded-db")]
        if let Some(url) = embedded::url(config) {
            let db = Self::open_sqlite(&url).await?;
            db.migrate().await?;
            return Ok(db);
        }
        // Config::load refused a SQLite or missing URL in builds without one.
        let Some(url) = &config.database_url else {
            anyhow::bail!("DATABASE_URL is unset and this build has no embedded database");
        };
        let endpoint = PgEndpoint {
            ca: config.database_ca_cert.as_ref(),
            host: config.database_host.as_deref(),
        };
        Self::open_postgres_at(url.expose(), config.db_pool_size, endpoint)
    }

    pub fn open_postgres(url: &str, pool_size: u32) -> anyhow::Result<Self> {
        Self::open_postgres_at(url, pool_size, PgEndpoint::default())
    }

    /// [`Database::open_postgres`], with what the deployment adds to the URL.
    pub fn open_postgres_at(
        url: &str,
        pool_size: u32,
        endpoint: PgEndpoint<'_>,
    ) -> anyhow::Result<Self> {
        let options = postgres_options(url, endpoint)?
            .application_name("tms-chat")
            .options([(
                "statement_timeout",
                STATEMENT_TIMEOUT.as_millis().to_string(),
            )]);
        // As many connections as the instance serves requests at once
        // (`DB_POOL_SIZE`): one on Lambda, the instance concurrency on FC.
        Ok(Self::Postgres(PgConnectionPool::new(options, pool_size)))
    }

    /// Applies the migrations that ship with the code. On PostgreSQL the
    /// migrator holds an advisory lock, so two runs at once are safe.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        crate::by_backend!(self,
            // The migrator's connection is not kept: it held the advisory lock.
            postgres(pool) => POSTGRES_MIGRATIONS.run(&mut *pool.acquire().await?).await?,
            sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
        );
        Ok(())
    }

    /// Closes the pool's connections (tests and tools that are done with it).
    pub async fn close(&self) {
        crate::by_backend!(self,
            postgres(pool) => pool.close().await,
            sqlite(pool) => pool.close().await,
        )
    }

    pub fn backend(&self) -> &'static str {
        crate::by_backend!(self,
            postgres(_) => "postgres",
            sqlite(_) => "sqlite",
        )
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        bounded(async {
            on_pool!(self, conn => sqlx::query("SELECT 1").execute(conn).await.map(|_| ()))
        })
        .await
    }
}

/// What a deployment adds to a `DATABASE_URL` (whose secret it may not own).
#[derive(Debug, Default, Clone, Copy)]
pub struct PgEndpoint<'a> {
    /// `DATABASE_CA_CERT_PATH`: the CA (RDS, ApsaraDB) that signs the server's certificate.
    pub ca: Option<&'a CaBundle>,
    /// `DATABASE_HOST`: the host to connect to instead of the URL's, such as
    /// an RDS Proxy endpoint in front of the database the URL names.
    pub host: Option<&'a str>,
}

/// The connect options of a `DATABASE_URL`. With a CA bundle the server is
/// verified: its certificate must chain to the bundle (or a public root) and
/// name the host (`sslmode=verify-full`, also when the URL gives no
/// `sslmode`; an explicit `verify-ca` skips the name only). A weaker
/// `sslmode` would not use the bundle at all, so it stops the start, as does
/// a second CA in the URL.
pub fn postgres_options(url: &str, endpoint: PgEndpoint<'_>) -> anyhow::Result<PgConnectOptions> {
    let mut options = PgConnectOptions::from_str(url)
        .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))?;
    if let Some(host) = endpoint.host {
        options = options.host(host);
    }
    let Some(ca) = endpoint.ca else {
        return Ok(options);
    };
    let params: Vec<&str> = url
        .split_once('?')
        .map(|(_, query)| {
            query
                .split('&')
                .filter_map(|p| p.split('=').next())
                .collect()
        })
        .unwrap_or_default();
    let given = |names: &[&str]| params.iter().any(|p| names.contains(p));
    if given(&["sslrootcert", "ssl-root-cert", "ssl-ca"]) {
        anyhow::bail!(
            "DATABASE_CA_CERT_PATH: the DATABASE_URL names a CA too (sslrootcert); give it in one place"
        );
    }
    let ssl_mode = if given(&["sslmode", "ssl-mode"]) {
        options.get_ssl_mode()
    } else {
        PgSslMode::VerifyFull
    };
    if !matches!(ssl_mode, PgSslMode::VerifyFull | PgSslMode::VerifyCa) {
        anyhow::bail!(
            "DATABASE_CA_CERT_PATH: the DATABASE_URL's sslmode would not verify the server with it: use sslmode=verify-full"
        );
    }
    Ok(options
        .ssl_mode(ssl_mode)
        .ssl_root_cert_from_pem(ca.pem.to_vec()))
}

/// `$first, $first+1, ...`: bound parameters for an `IN` list, never values.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What went wrong with a database operation, as its callers need to tell.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Down, unreachable, overloaded or too slow: the client may retry (503).
    #[error("database unavailable")]
    Unavailable,
    /// The database refused the values themselves (PostgreSQL's SQLSTATE class
    /// 22, such as NUL in text or a number out of range; a CHECK constraint;
    /// SQLite's too-big / mismatch / range codes). The client sent them.
    #[error("the database refused the data: {0}")]
    InvalidData(String),
    /// A row the operation refers to does not exist (a foreign key).
    #[error("a referenced row does not exist")]
    MissingReference,
    /// A unique key is taken.
    #[error("already exists")]
    Duplicate,
    /// Anything else: a bug.
    #[error(transparent)]
    Other(sqlx::Error),
}

impl From<sqlx::Error> for DbError {
    fn from(error: sqlx::Error) -> Self {
        use sqlx::Error as E;
        use sqlx::error::ErrorKind;
        let unavailable = match &error {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => true,
            E::Protocol(_) => true,
            E::Database(db) => {
                let code = db.code().unwrap_or_default();
                // PostgreSQL: the session ended (see `ends_session`), too
                // many connections (53300); SQLite: busy (5), locked (6).
                ends_session(&code)
                    || code == "53300"
                    || sqlite_primary_code(&code).is_some_and(|c| c == 5 || c == 6)
            }
            _ => false,
        };
        if unavailable {
            tracing::warn!(error = %error, "database unavailable");
            return Self::Unavailable;
        }
        if let E::Database(db) = &error
            && schema_behind(&db.code().unwrap_or_default())
        {
            // Code deployed before its migrations: not ready yet (503, and
            // the operator is told what to run), not a bug in the request.
            tracing::error!(error = %error, "the database's schema is behind the code: apply the migrations (make migrate)");
            return Self::Unavailable;
        }
        let E::Database(db) = &error else {
            // A value that the driver cannot even encode (e.g. a string with
            // NUL for PostgreSQL's text protocol) is the client's data too.
            if let E::Encode(e) = &error {
                return Self::InvalidData(e.to_string());
            }
            return Self::Other(error);
        };
        match db.kind() {
            ErrorKind::ForeignKeyViolation => return Self::MissingReference,
            ErrorKind::UniqueViolation => return Self::Duplicate,
            ErrorKind::CheckViolation => return Self::InvalidData(db.message().to_owned()),
            _ => {}
        }
        let code = db.code().unwrap_or_default();
        // SQLite: too big (18), datatype mismatch (20), out of range (25).
        let sqlite_data = sqlite_primary_code(&code).is_some_and(|c| matches!(c, 18 | 20 | 25));
        if code.starts_with("22") && code.len() == 5 || sqlite_data {
            return Self::InvalidData(db.message().to_owned());
        }
        Self::Other(error)
    }
}

/// Whether `error` means its connection broke (not a busy pool or server):
/// I/O, TLS, the protocol, or the server ending the session.
fn breaks_connection(error: &sqlx::Error) -> bool {
    use sqlx::Error as E;
    match error {
        E::Io(_) | E::Tls(_) | E::Protocol(_) => true,
        E::Database(db) => ends_session(&db.code().unwrap_or_default()),
        _ => false,
    }
}

/// A PostgreSQL SQLSTATE that ends the session: a connection exception
/// (class 08) or the server shutting down (57P0x). Its connection is gone.
fn ends_session(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P")
}

/// A PostgreSQL SQLSTATE of a table or column that does not exist
/// (42P01, 42703): the migrations that the code needs were not applied.
fn schema_behind(code: &str) -> bool {
    code == "42P01" || code == "42703"
}

/// SQLite reports (extended) result codes as decimal numbers; PostgreSQL's
/// SQLSTATEs are five characters, so a short number is SQLite's.
fn sqlite_primary_code(code: &str) -> Option<u32> {
    (code.len() < 5)
        .then(|| code.parse::<u32>().ok())
        .flatten()
        .map(|c| c & 0xff)
}

/// Bounds a database operation in time and tells what its error means: a
/// database that cannot be reached or answered in time is `Unavailable`.
pub async fn bounded<T>(
    operation: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, DbError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, operation).await {
        Ok(result) => result.map_err(DbError::from),
        Err(_) => {
            tracing::warn!("database operation timed out");
            Err(DbError::Unavailable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_listed_in_order() {
        #[cfg_attr(not(feature = "embedded-db"), allow(unused_mut))]
        let mut databases = vec![("postgres", POSTGRES_MIGRATION_FILES)];
        #[cfg(feature = "embedded-db")]
        databases.push(("sqlite", embedded::MIGRATION_FILES));
        for (database, files) in databases {
            let folder = format!("{}/migrations/{database}", env!("CARGO_MANIFEST_DIR"));
            let mut on_disk: Vec<(i64, String, String)> = std::fs::read_dir(&folder)
                .unwrap()
                .map(|entry| {
                    let path = entry.unwrap().path();
                    let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
                    let (version, description) = name.split_once('_').unwrap();
                    let sql = std::fs::read_to_string(&path).unwrap();
                    (version.parse().unwrap(), description.replace('_', " "), sql)
                })
                .collect();
            on_disk.sort();
            let listed: Vec<(i64, String, String)> = files
                .iter()
                .map(|&(v, d, sql)| (v, d.to_owned(), sql.to_owned()))
                .collect();
            assert_eq!(listed, on_disk, "{folder}");
        }
    }

    fn ca() -> CaBundle {
        CaBundle {
            path: "/opt/ca.pem".into(),
            pem: b"-----BEGIN CERTIFICATE-----".as_slice().into(),
        }
    }

    #[test]
    fn a_ca_bundle_means_the_server_is_verified() {
        let url = "postgres://u@db.example.com/tms";
        let ca = ca();
        let with_ca = PgEndpoint {
            ca: Some(&ca),
            host: None,
        };
        let mode = |url: &str| postgres_options(url, with_ca).map(|o| o.get_ssl_mode());
        assert!(matches!(mode(url).unwrap(), PgSslMode::VerifyFull));
        let full = format!("{url}?sslmode=verify-full");
        assert!(matches!(mode(&full).unwrap(), PgSslMode::VerifyFull));
        let ca_only = format!("{url}?sslmode=verify-ca");
        assert!(matches!(mode(&ca_only).unwrap(), PgSslMode::VerifyCa));
        for weaker in ["require", "prefer", "disable"] {
            let err = mode(&format!("{url}?sslmode={weaker}")).unwrap_err();
            assert!(
                err.to_string().starts_with("DATABASE_CA_CERT_PATH"),
                "{err}"
            );
        }
        let twice = mode(&format!("{url}?sslmode=verify-full&sslrootcert=/x.pem")).unwrap_err();
        assert!(
            twice.to_string().starts_with("DATABASE_CA_CERT_PATH"),
            "{twice}"
        );
        // Without a bundle the URL is taken as it is.
        let plain =
            postgres_options(&format!("{url}?sslmode=require"), PgEndpoint::default()).unwrap();
        assert!(matches!(plain.get_ssl_mode(), PgSslMode::Require));
        assert_eq!(plain.get_host(), "db.example.com");
    }

    #[test]
    fn database_host_replaces_the_urls_host_only() {
        let proxy = PgEndpoint {
            ca: None,
            host: Some("tms.proxy-abc.eu-west-1.rds.amazonaws.com"),
        };
        let options = postgres_options("postgres://u:p@db.example.com:5433/tms", proxy).unwrap();
        assert_eq!(
            options.get_host(),
            "tms.proxy-abc.eu-west-1.rds.amazonaws.com"
        );
        assert_eq!(options.get_port(), 5433);
        assert_eq!(options.get_database(), Some("tms"));
        assert_eq!(options.get_username(), "u");
    }
}
