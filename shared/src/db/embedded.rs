//! The embedded database: a SQLite file for local runs and tests, used
//! when `DATABASE_URL` is unset or `sqlite:`. Only in builds with shared's
//! `embedded-db` feature: a default feature of the functions (local use),
//! which their deploy builds (make build-lambda, make build-fc) leave out,
//! since production requires PostgreSQL. It names nothing of `db`: the
//! parent opens it with these pieces (`Database::open_sqlite`).

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
};

/// Generous: opening and migrating the file happens at start, where a
/// loaded machine may take longer; requests are bounded by `bounded` anyway.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// The file used when `DATABASE_URL` is unset, in the temporary directory.
const FILE_NAME: &str = "tms-chat.sqlite3";
/// After the database's path: the file whose lock a process opening or
/// migrating the database holds.
const LOCK_SUFFIX: &str = "-migrations.lock";

/// As `db`'s PostgreSQL migration files, for `migrations/sqlite/`.
pub(super) const MIGRATION_FILES: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "members by activity",
        include_str!("../../migrations/sqlite/0002_members_by_activity.sql"),
    ),
    (
        3,
        "sso logins",
        include_str!("../../migrations/sqlite/0003_sso_logins.sql"),
    ),
    (
        4,
        "sso logins by expiry",
        include_str!("../../migrations/sqlite/0004_sso_logins_by_expiry.sql"),
    ),
    (
        5,
        "sessions that end",
        include_str!("../../migrations/sqlite/0005_sessions_that_end.sql"),
    ),
];

/// The file used when `DATABASE_URL` is unset, in the temporary directory.
pub(super) fn default_url() -> String {
    tracing::warn!("DATABASE_URL is unset: using an embedded SQLite file, for local use only");
    format!(
        "sqlite://{}",
        std::env::temp_dir().join(FILE_NAME).display()
    )
}

/// `PgConnectionPool::run`'s counterpart for the embedded database.
pub async fn run_sqlite<T>(
    pool: &SqlitePool,
    operation: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T, sqlx::Error>,
) -> Result<T, sqlx::Error> {
    let mut connection = pool.acquire().await?;
    operation(&mut connection).await
}

/// Held while this process migrates the file: sqlx's migrator takes no lock
/// on SQLite, and two processes that open a fresh file at once (`make run`
/// and `make token` started together) would both apply its first
/// migrations, and one would fail ("table already exists"). Waits up to
/// `wait` for another holder. None for a database in memory (no file:
/// [`open`] connects at once, which creates a file database's file).
pub(super) async fn lock_for_migrations(
    pool: &SqlitePool,
    wait: Duration,
) -> anyhow::Result<Option<File>> {
    let database = pool.connect_options().get_filename().to_owned();
    if !database.is_file() {
        return Ok(None);
    }
    hold_lock_beside(&database, wait, "migrating")
        .await
        .map(Some)
}

/// An advisory lock (`flock`) on a file beside `database`, shared by
/// whoever opens or migrates it: never on the database itself, since
/// closing any descriptor of that file would drop the POSIX locks SQLite
/// holds on it in this process. `doing`: what this process is about to do
/// (for the error when another holds the lock too long).
async fn hold_lock_beside(database: &Path, wait: Duration, doing: &str) -> anyhow::Result<File> {
    let mut path = database.as_os_str().to_owned();
    path.push(LOCK_SUFFIX);
    let path = PathBuf::from(path);
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let deadline = Instant::now() + wait;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(TryLockError::WouldBlock) => anyhow::bail!(
                "cannot start {doing} the embedded database: something else (another process or pool) has held {} for over {wait:?}",
                path.display()
            ),
            Err(TryLockError::Error(e)) => {
                anyhow::bail!("cannot lock {}: {e}", path.display())
            }
        }
    }
}

/// The pool of the SQLite database at `url`, created if missing; a write
/// waits up to `busy_timeout` for another's lock.
pub(super) async fn open(url: &str, busy_timeout: Duration) -> anyhow::Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid SQLite URL: {e}"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .foreign_keys(true)
        .busy_timeout(busy_timeout);
    // An in-memory database lives as long as its one connection.
    let in_memory = url.contains(":memory:");
    // The first connection to a fresh file turns it to WAL, which SQLite
    // may refuse at once ("database is locked") while another process
    // opens or migrates it: one at a time, under the migrations' lock.
    let _opening = if in_memory {
        None
    } else {
        Some(hold_lock_beside(options.get_filename(), OPEN_TIMEOUT, "opening").await?)
    };
    SqlitePoolOptions::new()
        .max_connections(if in_memory { 1 } else { 4 })
        .min_connections(u32::from(in_memory))
        .idle_timeout((!in_memory).then_some(Duration::from_secs(600)))
        .max_lifetime((!in_memory).then_some(Duration::from_secs(1800)))
        .acquire_timeout(OPEN_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the embedded database {url}: {e}"))
}
