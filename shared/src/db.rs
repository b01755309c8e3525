//! The database pool, its migrations and its errors: PostgreSQL in
//! production; for local runs and tests, an embedded SQLite file by default
//! (the `embedded-db` feature, which deploy builds leave out: production
//! requires PostgreSQL, so a deployed function links no SQLite). Each
//! function owns its own queries, one arm per backend ([`by_backend!`]; the
//! schema keeps types that both read alike, so the SQL text is mostly
//! shared); this module only opens the pool, bounds each operation in time
//! and tells what an error means.
//!
//! Two drivers, each where it fits: tokio-postgres for the functions'
//! statements (one message per statement on the unnamed statement, which a
//! transaction-mode pooler needs; see [`PgSession`]), sqlx for SQLite and
//! for the migrations (its migrator, on a session of their own, without
//! the requests' timeout).
//!
//! Serverless-minded: the PostgreSQL pool ([`PgConnectionPool`]) opens its
//! connections lazily on first use, keeps them across invocations, checks a
//! connection before use only when it may have died unseen, reuses one only
//! when its last operation ran to the end, and every operation is bounded,
//! so a database that is down or hung is a 503 within about a second.

use std::sync::LazyLock;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{ConnectOptions, Connection, SqlSafeStr};

use crate::ca_bundle::CaBundle;
use crate::secret::Secret;

#[cfg(feature = "embedded-db")]
mod embedded;
#[cfg(feature = "embedded-db")]
pub use embedded::run_sqlite;
mod postgres_pool;
mod postgres_target;
mod postgres_tls;
pub use postgres_pool::{Lease, PgConnectionPool, PgError, PgSession};
pub use postgres_target::{PgEndpoint, PgTarget, Pooler, SslMode};
pub use tokio_postgres::Row as PgRow;
/// The parameter types a statement binds ([`PgSession::query`]).
pub use tokio_postgres::types::{FromSql as PgFromSql, ToSql as PgToSql, Type as PgType};

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
    (
        5,
        "sessions that end",
        include_str!("../migrations/postgres/0005_sessions_that_end.sql"),
    ),
];

pub static POSTGRES_MIGRATIONS: LazyLock<Migrator> =
    LazyLock::new(|| migrator(POSTGRES_MIGRATION_FILES));

#[cfg(feature = "embedded-db")]
pub static SQLITE_MIGRATIONS: LazyLock<Migrator> =
    LazyLock::new(|| migrator(embedded::MIGRATION_FILES));

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
/// The migrations' bound on one statement: generous (a full-table update,
/// an index built on millions of rows), but not endless.
pub const MIGRATION_STATEMENT_TIMEOUT: Duration = Duration::from_secs(3600);
/// The migrations' bound on waiting for a lock: a migration queued behind
/// a long transaction would hold up every request queued behind it, so it
/// gives up soon instead and can be run again.
pub const MIGRATION_LOCK_TIMEOUT: Duration = Duration::from_secs(10);
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

/// `DATABASE_URL`, judged once (by the configuration) into what it names.
#[derive(Debug, Clone)]
pub enum DatabaseUrl {
    /// `postgres://` or `postgresql://`.
    Postgres(Secret),
    /// `sqlite:` (builds with the embedded database only).
    Embedded(String),
}

/// The database settings (`DATABASE_URL`, `DATABASE_CA_CERT_PATH`,
/// `DATABASE_HOST`, `DATABASE_POOLER`, `DB_POOL_SIZE`), parsed and checked
/// with the rest of the configuration.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// Unset: the embedded file (builds with the embedded database only).
    pub url: Option<DatabaseUrl>,
    /// The CA that signs PostgreSQL's certificate, verified with
    /// `sslmode=verify-full` (see `db::postgres_target`).
    pub ca_cert: Option<CaBundle>,
    /// Connect there instead of to the URL's host (an RDS Proxy endpoint).
    pub host: Option<String>,
    /// `transaction` when a transaction-mode pooler (PgBouncer, RDS Proxy,
    /// ApsaraDB's proxy) stands in front of the database: the functions
    /// then keep no session state on it.
    pub pooler: Pooler,
    /// Connections per instance: as many as the instance serves requests at once.
    pub pool_size: u32,
}

impl Database {
    /// The embedded database at `url`, created if missing (not migrated).
    #[cfg(feature = "embedded-db")]
    pub async fn open_sqlite(url: &str) -> anyhow::Result<Self> {
        Ok(Self::Sqlite(embedded::open(url, ACQUIRE_TIMEOUT).await?))
    }

    /// Opens the configured database. PostgreSQL connects lazily, on first
    /// use, and is migrated by `make migrate`; the embedded file is created
    /// and migrated here.
    pub async fn open(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        #[cfg(feature = "embedded-db")]
        {
            let embedded = match &settings.url {
                Some(DatabaseUrl::Embedded(url)) => Some(url.clone()),
                Some(DatabaseUrl::Postgres(_)) => None,
                None => Some(embedded::default_url()),
            };
            if let Some(url) = embedded {
                let db = Self::open_sqlite(&url).await?;
                db.migrate().await?;
                return Ok(db);
            }
        }
        // The settings refused a SQLite or missing URL in builds without one.
        let Some(DatabaseUrl::Postgres(url)) = &settings.url else {
            anyhow::bail!(
                "DATABASE_URL names no PostgreSQL and this build has no embedded database"
            );
        };
        let endpoint = PgEndpoint {
            ca: settings.ca_cert.as_ref(),
            host: settings.host.as_deref(),
            pooler: settings.pooler,
        };
        Self::open_postgres_at(url.expose(), settings.pool_size, endpoint)
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
        let target = PgTarget::parse(url, endpoint)?;
        // As many connections as the instance serves requests at once
        // (`DB_POOL_SIZE`): one on Lambda, the instance concurrency on FC.
        Ok(Self::Postgres(PgConnectionPool::new(target, pool_size)?))
    }

    /// Applies the migrations that ship with the code. On PostgreSQL they
    /// run on a session of their own (the migrator holds an advisory lock
    /// for the session, so two runs at once are safe; through a
    /// transaction pooler, point `DATABASE_HOST` at the database itself),
    /// with their own generous statement timeout and a short lock timeout
    /// instead of the requests' 5 s. On an embedded file, under a lock that
    /// other processes migrating it wait for (`lock_for_migrations`).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        crate::by_backend!(self,
            postgres(pool) => {
                let options = pool.target().sqlx_options().options([
                    ("statement_timeout", MIGRATION_STATEMENT_TIMEOUT.as_millis().to_string()),
                    ("lock_timeout", MIGRATION_LOCK_TIMEOUT.as_millis().to_string()),
                ]);
                let mut connection = options.connect().await?;
                let applied = POSTGRES_MIGRATIONS.run(&mut connection).await;
                let _ = connection.close().await;
                applied?
            },
            sqlite(pool) => {
                let _migrating =
                    embedded::lock_for_migrations(pool, MIGRATION_LOCK_TIMEOUT).await?;
                SQLITE_MIGRATIONS.run(pool).await?
            },
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
            crate::by_backend!(self,
                postgres(pool) => pool
                    .run(async |session| {
                        session.query("SELECT 1", &[]).await?;
                        Ok(())
                    })
                    .await
                    .map_err(DbError::from),
                sqlite(pool) => run_sqlite(pool, async |conn| {
                    sqlx::query("SELECT 1").execute(conn).await.map(|_| ())
                })
                .await
                .map_err(DbError::from),
            )
        })
        .await
    }
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
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl DbError {
    /// What a SQLSTATE (PostgreSQL's, or SQLite's numeric code) the server
    /// sent says about the operation, if it says more than "a bug".
    fn from_code(code: &str, message: &str) -> Option<Self> {
        // PostgreSQL: the session ended (see `ends_session`), too many
        // connections (53300), a statement cancelled by its timeout
        // (57014); SQLite: busy (5), locked (6).
        if ends_session(code)
            || code == "53300"
            || code == "57014"
            || sqlite_primary_code(code).is_some_and(|c| c == 5 || c == 6)
        {
            tracing::warn!(code, message, "database unavailable");
            return Some(Self::Unavailable);
        }
        if schema_behind(code) {
            // Code deployed before its migrations: not ready yet (503, and
            // the operator is told what to run), not a bug in the request.
            tracing::error!(
                code,
                message,
                "the database's schema is behind the code: apply the migrations (make migrate)"
            );
            return Some(Self::Unavailable);
        }
        match code {
            "23503" => return Some(Self::MissingReference),
            "23505" => return Some(Self::Duplicate),
            "23514" => return Some(Self::InvalidData(message.to_owned())),
            _ => {}
        }
        // SQLite: too big (18), datatype mismatch (20), out of range (25).
        let sqlite_data = sqlite_primary_code(code).is_some_and(|c| matches!(c, 18 | 20 | 25));
        if code.starts_with("22") && code.len() == 5 || sqlite_data {
            return Some(Self::InvalidData(message.to_owned()));
        }
        None
    }
}

impl From<PgError> for DbError {
    fn from(error: PgError) -> Self {
        let statement_error = match error {
            PgError::PoolTimedOut | PgError::PoolClosed | PgError::Connect(_) => {
                tracing::warn!(error = %error, "database unavailable");
                return Self::Unavailable;
            }
            PgError::NoRow => return Self::Other(Box::new(error)),
            PgError::Query(e) => e,
        };
        if let Some(db) = statement_error.as_db_error() {
            return Self::from_code(db.code().code(), db.message())
                .unwrap_or_else(|| Self::Other(Box::new(statement_error)));
        }
        if statement_error.is_closed() || postgres_pool::io_error_within(&statement_error) {
            tracing::warn!(error = %statement_error, "database unavailable");
            return Self::Unavailable;
        }
        Self::Other(Box::new(statement_error))
    }
}

impl From<sqlx::Error> for DbError {
    fn from(error: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &error {
            E::PoolTimedOut
            | E::PoolClosed
            | E::Io(_)
            | E::Tls(_)
            | E::WorkerCrashed
            | E::Protocol(_) => {
                tracing::warn!(error = %error, "database unavailable");
                Self::Unavailable
            }
            E::Database(db) => {
                // SQLite's constraint codes are its own: sqlx tells their kind.
                use sqlx::error::ErrorKind;
                match db.kind() {
                    ErrorKind::ForeignKeyViolation => return Self::MissingReference,
                    ErrorKind::UniqueViolation => return Self::Duplicate,
                    ErrorKind::CheckViolation => return Self::InvalidData(db.message().to_owned()),
                    _ => {}
                }
                let code = db.code().unwrap_or_default();
                Self::from_code(&code, db.message()).unwrap_or_else(|| Self::Other(Box::new(error)))
            }
            // A value that the driver cannot even encode is the client's data too.
            E::Encode(e) => Self::InvalidData(e.to_string()),
            _ => Self::Other(Box::new(error)),
        }
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
pub async fn bounded<T, E>(operation: impl Future<Output = Result<T, E>>) -> Result<T, DbError>
where
    DbError: From<E>,
{
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

    /// The embedded database is a leaf: `db` opens it with its pieces, and it
    /// names nothing of `db` (or of the crate) back.
    #[test]
    fn the_embedded_database_names_nothing_of_its_parent() {
        let text = include_str!("db/embedded.rs");
        for path in ["super::", "crate::"] {
            assert!(!text.contains(path), "db/embedded.rs names {path}");
        }
    }

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
}
