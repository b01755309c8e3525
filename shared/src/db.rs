//! The data layer: users, conversations and members, on PostgreSQL in
//! production and on an embedded SQLite file by default. One set of queries
//! serves both (the schema keeps types that both read alike), so both backends
//! behave the same.
//!
//! Serverless-minded: the PostgreSQL pool opens its connection lazily on first
//! use, keeps it across invocations, checks it before use (a dropped
//! connection is replaced, not served), and every operation is bounded, so a
//! database that is down or hung is a 503 within about a second.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::config::Config;
use crate::error::ApiError;
use crate::probe::{PingFuture, Probe};

pub static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
pub static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Longest a whole database operation may take before the caller gets a 503.
pub const OPERATION_TIMEOUT: Duration = Duration::from_millis(1000);
/// Longest to wait for a (new or pooled) connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(800);
const EMBEDDED_FILE: &str = "tms-chat.sqlite3";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub external_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: i64,
    pub title: String,
    pub created_by: i64,
    /// Microseconds since the Unix epoch.
    pub created_at: i64,
    pub last_activity_at: i64,
    pub member_ids: Vec<i64>,
}

/// Where a page of conversations starts: just after this (activity, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageAfter {
    pub last_activity_at: i64,
    pub id: i64,
}

#[derive(Clone)]
pub enum Database {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs the same body against whichever pool this is: one query text, two drivers.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Database::Postgres($pool) => $body,
            Database::Sqlite($pool) => $body,
        }
    };
}

/// A conversation as [`member_conversations!`] selects it; members come separately.
type ConversationRow = (i64, String, i64, i64, i64);

/// Conversations joined with their memberships, filtered by `$conditions`.
macro_rules! member_conversations {
    ($conditions:literal) => {
        concat!(
            "SELECT c.id, c.title, c.created_by, c.created_at, c.last_activity_at \
             FROM conversations c \
             JOIN conversation_members m ON m.conversation_id = c.id \
             WHERE ",
            $conditions
        )
    };
}

pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64
}

/// The `DATABASE_URL` to use: the configured one, or the embedded file.
pub fn database_url(config: &Config) -> String {
    match &config.database_url {
        Some(url) => url.expose().to_owned(),
        None => format!(
            "sqlite://{}",
            std::env::temp_dir().join(EMBEDDED_FILE).display()
        ),
    }
}

impl Database {
    /// Opens the configured database. PostgreSQL connects lazily, on first
    /// use, and is migrated by `make migrate`; the embedded file is created
    /// and migrated here.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let url = database_url(config);
        if url.starts_with("sqlite:") {
            if config.database_url.is_none() {
                tracing::warn!(
                    "DATABASE_URL is unset: using an embedded SQLite file, for local use only"
                );
            }
            let db = Self::open_sqlite(&url).await?;
            db.migrate().await?;
            Ok(db)
        } else {
            Self::open_postgres(&url)
        }
    }

    pub fn open_postgres(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))?
            .application_name("tms-chat")
            // The server gives up on a statement the function has stopped waiting for.
            .options([("statement_timeout", "5000")]);
        // One connection serves an instance (Lambda sends it one request at
        // a time); a second may open only while the first is busy or being
        // checked after a cancelled query, so a stuck one cannot block all.
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(true)
            .idle_timeout(Some(Duration::from_secs(300)))
            .max_lifetime(Some(Duration::from_secs(1800)))
            .connect_lazy_with(options);
        Ok(Self::Postgres(pool))
    }

    pub async fn open_sqlite(url: &str) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid SQLite URL: {e}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(ACQUIRE_TIMEOUT);
        // An in-memory database lives as long as its one connection.
        let in_memory = url.contains(":memory:");
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { 4 })
            .min_connections(u32::from(in_memory))
            .idle_timeout((!in_memory).then_some(Duration::from_secs(600)))
            .max_lifetime((!in_memory).then_some(Duration::from_secs(1800)))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the embedded database {url}: {e}"))?;
        Ok(Self::Sqlite(pool))
    }

    /// Applies the migrations that ship with the code. On PostgreSQL the
    /// migrator holds an advisory lock, so two runs at once are safe.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Self::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
            Self::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    pub async fn ping(&self) -> Result<(), ApiError> {
        bounded(async {
            on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
        })
        .await
    }

    /// Creates the user of an external (SSO) id, or updates its email and name.
    pub async fn upsert_user(
        &self,
        external_id: &str,
        email: Option<&str>,
        name: Option<&str>,
    ) -> Result<User, ApiError> {
        const SQL: &str = "INSERT INTO users (external_id, email, name, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (external_id) DO UPDATE \
             SET email = excluded.email, name = excluded.name, updated_at = excluded.updated_at \
             RETURNING id, external_id, email, name";
        let now = now_micros();
        bounded(async {
            on_pool!(self, pool => {
                let row = sqlx::query(SQL)
                    .bind(external_id)
                    .bind(email)
                    .bind(name)
                    .bind(now)
                    .fetch_one(pool)
                    .await?;
                Ok(User {
                    id: row.try_get("id")?,
                    external_id: row.try_get("external_id")?,
                    email: row.try_get("email")?,
                    name: row.try_get("name")?,
                })
            })
        })
        .await
    }

    /// The ids among `ids` that name no user.
    pub async fn unknown_users(&self, ids: &[i64]) -> Result<Vec<i64>, ApiError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id FROM users WHERE id IN ({})",
            placeholders(1, ids.len())
        );
        let found: Vec<i64> = bounded(async {
            on_pool!(self, pool => {
                // Audited: `sql` holds only `$N` placeholders, never values.
                let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()));
                for id in ids {
                    query = query.bind(id);
                }
                query.fetch_all(pool).await
            })
        })
        .await?;
        Ok(ids
            .iter()
            .copied()
            .filter(|id| !found.contains(id))
            .collect())
    }

    /// Creates a conversation with its members (the creator among them), in one transaction.
    pub async fn create_conversation(
        &self,
        creator: i64,
        title: &str,
        member_ids: &[i64],
    ) -> Result<Conversation, ApiError> {
        let now = now_micros();
        let mut members: Vec<i64> = member_ids.to_vec();
        members.push(creator);
        members.sort_unstable();
        members.dedup();
        let id: i64 = bounded(async {
            on_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO conversations (title, created_by, created_at, last_activity_at) \
                     VALUES ($1, $2, $3, $3) RETURNING id",
                )
                .bind(title)
                .bind(creator)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                for member in &members {
                    sqlx::query(
                        "INSERT INTO conversation_members (conversation_id, user_id, joined_at) \
                         VALUES ($1, $2, $3)",
                    )
                    .bind(id)
                    .bind(member)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(id)
            })
        })
        .await?;
        Ok(Conversation {
            id,
            title: title.to_owned(),
            created_by: creator,
            created_at: now,
            last_activity_at: now,
            member_ids: members,
        })
    }

    /// A page of the conversations `user` is a member of, newest activity first.
    pub async fn list_conversations(
        &self,
        user: i64,
        after: Option<PageAfter>,
        limit: u32,
    ) -> Result<Vec<Conversation>, ApiError> {
        // No cursor: start above every real row.
        let after = after.unwrap_or(PageAfter {
            last_activity_at: i64::MAX,
            id: i64::MAX,
        });
        let rows: Vec<ConversationRow> = bounded(async {
            on_pool!(self, pool => {
                sqlx::query_as(member_conversations!(
                    "m.user_id = $1 \
                     AND (c.last_activity_at < $2 OR (c.last_activity_at = $2 AND c.id < $3)) \
                     ORDER BY c.last_activity_at DESC, c.id DESC \
                     LIMIT $4"
                ))
                .bind(user)
                .bind(after.last_activity_at)
                .bind(after.id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
            })
        })
        .await?;
        self.with_members(rows).await
    }

    /// The conversation, if `user` is a member of it.
    pub async fn get_conversation(
        &self,
        user: i64,
        id: i64,
    ) -> Result<Option<Conversation>, ApiError> {
        let rows: Vec<ConversationRow> = bounded(async {
            on_pool!(self, pool => {
                sqlx::query_as(member_conversations!("c.id = $1 AND m.user_id = $2"))
                .bind(id)
                .bind(user)
                .fetch_all(pool)
                .await
            })
        })
        .await?;
        Ok(self.with_members(rows).await?.pop())
    }

    async fn with_members(
        &self,
        rows: Vec<ConversationRow>,
    ) -> Result<Vec<Conversation>, ApiError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let sql = format!(
            "SELECT conversation_id, user_id FROM conversation_members \
             WHERE conversation_id IN ({}) ORDER BY user_id",
            placeholders(1, ids.len())
        );
        let pairs: Vec<(i64, i64)> = bounded(async {
            on_pool!(self, pool => {
                // Audited: `sql` holds only `$N` placeholders, never values.
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
                for id in &ids {
                    query = query.bind(id);
                }
                query.fetch_all(pool).await
            })
        })
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, title, created_by, created_at, last_activity_at)| Conversation {
                    id,
                    title,
                    created_by,
                    created_at,
                    last_activity_at,
                    member_ids: pairs.iter().filter(|p| p.0 == id).map(|p| p.1).collect(),
                },
            )
            .collect())
    }
}

/// `$first, $first+1, ...`: bound parameters for an `IN` list, never values.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Bounds a database operation in time and maps its errors: a database that
/// cannot be reached or answered in time is a 503, not a 500.
async fn bounded<T>(
    operation: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, operation).await {
        Ok(result) => result.map_err(map_error),
        Err(_) => {
            tracing::warn!("database operation timed out");
            Err(ApiError::unavailable("Database"))
        }
    }
}

fn map_error(error: sqlx::Error) -> ApiError {
    use sqlx::Error as E;
    let unavailable = match &error {
        E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => true,
        E::Protocol(_) => true,
        E::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL: connection exceptions (08), shutting down (57P0x),
            // too many connections (53300); SQLite: busy (5), locked (6).
            code.starts_with("08")
                || code.starts_with("57P")
                || code == "53300"
                || code == "5"
                || code == "6"
        }
        _ => false,
    };
    if unavailable {
        tracing::warn!(error = %error, "database unavailable");
        return ApiError::unavailable("Database");
    }
    if let E::Database(db) = &error {
        // A row referred to went away meanwhile, or a unique key is taken:
        // the client's request conflicts with the data, not a bug.
        match db.kind() {
            sqlx::error::ErrorKind::ForeignKeyViolation => {
                return ApiError::Unprocessable("A referenced user does not exist".into());
            }
            sqlx::error::ErrorKind::UniqueViolation => {
                return ApiError::Conflict("Already exists".into());
            }
            _ => {}
        }
    }
    ApiError::Internal(anyhow::Error::new(error).context("database"))
}

/// `/health/ready`'s check of the database.
pub struct DatabaseProbe(pub Database);

impl Probe for DatabaseProbe {
    fn name(&self) -> &'static str {
        "database"
    }
    fn ping(&self) -> PingFuture<'_> {
        Box::pin(async move { self.0.ping().await.map_err(|e| e.to_string()) })
    }
}
