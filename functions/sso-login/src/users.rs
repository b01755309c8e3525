//! The user a login creates or updates from its token's claims.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shared::by_backend;
use shared::clock::{LEEWAY_SECS, unix_micros, unix_secs};
use shared::db::{Database, DbError, PgError, PgRow, PgType, STATEMENT_TIMEOUT, bounded};

use crate::replay::Claim;

/// A user as the login answers it (the upstream id stays inside).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    pub email: Option<String>,
    pub name: Option<String>,
    /// The user's sign-out generation, which its API tokens carry (see
    /// migration 0005); not part of the answer.
    #[serde(skip)]
    #[schema(ignore)]
    pub token_generation: i64,
}

/// The upsert of [`upsert_user`] (public for `make bench`'s pgbench reference).
/// $1 external id, $2 email, $3 name, $4 now.
pub const UPSERT_SQL: &str = "INSERT INTO users (external_id, email, name, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $4) \
     ON CONFLICT (external_id) DO UPDATE \
     SET email = excluded.email, name = excluded.name, updated_at = excluded.updated_at \
     RETURNING id, email, name, token_generation";

/// Creates the user of an external (SSO) id, or updates its email and name.
pub async fn upsert_user(
    db: &Database,
    external_id: &str,
    email: Option<&str>,
    name: Option<&str>,
) -> Result<User, DbError> {
    let now = unix_micros();
    bounded(async {
        by_backend!(db,
            postgres(pool) => pool.run(async |session| {
                let row = session
                    .query_one(
                        UPSERT_SQL,
                        &[
                            (&external_id, PgType::TEXT),
                            (&email, PgType::TEXT),
                            (&name, PgType::TEXT),
                            (&now, PgType::INT8),
                        ],
                    )
                    .await?;
                pg_user(&row)
            }).await.map_err(DbError::from),
            sqlite(pool) => shared::db::run_sqlite(pool, async |conn| {
                let row = sqlx::query(UPSERT_SQL)
                    .bind(external_id)
                    .bind(email)
                    .bind(name)
                    .bind(now)
                    .fetch_one(conn)
                    .await?;
                sqlite_user(&row)
            }).await.map_err(DbError::from),
        )
    })
    .await
}

/// The user a PostgreSQL statement returned (`id, email, name, token_generation`).
fn pg_user(row: &PgRow) -> Result<User, PgError> {
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        token_generation: row.try_get("token_generation")?,
    })
}

shared::embedded_db_only! {
    /// The user a SQLite statement returned (`id, email, name, token_generation`).
    fn sqlite_user(row: &sqlx::sqlite::SqliteRow) -> Result<User, sqlx::Error> {
        use sqlx::Row;
        Ok(User {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            name: row.try_get("name")?,
            token_generation: row.try_get("token_generation")?,
        })
    }
}

/// A login's record in the database: which GCGC token it used, and with
/// which claim ([`crate::replay::Claim`]).
#[derive(Debug, Clone)]
pub struct LoginRecord<'a> {
    /// The replay key without the deployment's prefix (`sso:jti:<sha-256>`).
    pub token_key: &'a str,
    /// The claim's own value: only this login may delete the row.
    pub attempt: &'a str,
    /// The token's own `exp` (seconds since the epoch): the first part of
    /// the record's key, so records are ordered by expiry. Read from the
    /// token, not from the leeway allowed past it, so a token always has
    /// the same key.
    pub token_exp: i64,
}

/// What the login statement found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The token is now used; the user was created or updated.
    Login(User),
    /// A login had already recorded this token: a replay that the replay
    /// store no longer knew about (evicted, failed over, restarted).
    AlreadyUsed,
    /// The statement ran after its deadline (the caller had stopped
    /// waiting): nothing was written.
    TooLate,
}

/// How long after it was sent the login statement may still write: past
/// this, the caller has given up ([`shared::db::OPERATION_TIMEOUT`]) and a
/// late statement (a frozen database, a queue in a pooler) writes nothing,
/// so its login's token is not used up by a login that answered 503. Read
/// on the database's clock against the function's: the margin over the
/// caller's wait allows for their skew.
pub const RECORD_DEADLINE: Duration = Duration::from_millis(1500);

/// Records the login of a token and creates or updates its user, in one
/// statement and one round trip on PostgreSQL: the record and the user are
/// written together or not at all, and a token already recorded writes
/// nothing (`AlreadyUsed`). Expired records are deleted apart, by
/// [`sweep_expired`], off the login's path: a per-login delete cost each
/// login about as much as the record itself (`docs/architecture.md`).
/// $1 external id, $2 email, $3 name, $4 now, $5 token key, $6 attempt,
/// $7 token exp (seconds), $8 deadline (microseconds, as $4).
pub const LOGIN_SQL: &str = "WITH clock AS MATERIALIZED ( \
       SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint < $8 AS in_time \
     ), used AS ( \
       INSERT INTO sso_logins (token_exp, token_key, attempt) \
       SELECT $7, $5, $6 FROM clock WHERE clock.in_time \
       ON CONFLICT (token_exp, token_key) DO NOTHING \
       RETURNING 1 \
     ), upserted AS ( \
       INSERT INTO users (external_id, email, name, created_at, updated_at) \
       SELECT $1, $2, $3, $4, $4 WHERE EXISTS (SELECT 1 FROM used) \
       ON CONFLICT (external_id) DO UPDATE \
       SET email = excluded.email, name = excluded.name, updated_at = excluded.updated_at \
       RETURNING id, email, name, token_generation \
     ) \
     SELECT clock.in_time, u.id, u.email, u.name, u.token_generation \
     FROM clock LEFT JOIN upserted u ON true";

/// Deletes a login's record, only its own ($1 token exp, $2 token key, $3
/// attempt): a login that issued nothing gives its token back.
pub const FORGET_SQL: &str =
    "DELETE FROM sso_logins WHERE token_exp = $1 AND token_key = $2 AND attempt = $3";

/// Records a login (see [`LOGIN_SQL`]). The embedded database has no
/// writing `WITH`: there the same writes run in one transaction.
pub async fn record_login(
    db: &Database,
    record: &LoginRecord<'_>,
    external_id: &str,
    email: Option<&str>,
    name: Option<&str>,
) -> Result<Recorded, DbError> {
    let now = unix_micros();
    let deadline = now + RECORD_DEADLINE.as_micros() as i64;
    bounded(async {
        shared::by_backend!(db,
            postgres(pool) => pool.run(async |session| {
                let row = session
                    .query_one(
                        LOGIN_SQL,
                        &[
                            (&external_id, PgType::TEXT),
                            (&email, PgType::TEXT),
                            (&name, PgType::TEXT),
                            (&now, PgType::INT8),
                            (&record.token_key, PgType::TEXT),
                            (&record.attempt, PgType::TEXT),
                            (&record.token_exp, PgType::INT8),
                            (&deadline, PgType::INT8),
                        ],
                    )
                    .await?;
                if !row.try_get::<_, bool>("in_time")? {
                    return Ok(Recorded::TooLate);
                }
                Ok(match row.try_get::<_, Option<i64>>("id")? {
                    Some(_) => Recorded::Login(pg_user(&row)?),
                    None => Recorded::AlreadyUsed,
                })
            }).await.map_err(DbError::from),
            sqlite(pool) => shared::db::run_sqlite(pool, async |conn| {
                use sqlx::Connection;
                let mut tx = conn.begin().await?;
                let inserted = sqlx::query(
                    "INSERT INTO sso_logins (token_exp, token_key, attempt) VALUES ($1, $2, $3) \
                     ON CONFLICT (token_exp, token_key) DO NOTHING",
                )
                .bind(record.token_exp)
                .bind(record.token_key)
                .bind(record.attempt)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    return Ok(Recorded::AlreadyUsed);
                }
                let row = sqlx::query(UPSERT_SQL)
                    .bind(external_id)
                    .bind(email)
                    .bind(name)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                let user = sqlite_user(&row)?;
                tx.commit().await?;
                Ok(Recorded::Login(user))
            }).await.map_err(DbError::from),
        )
    })
    .await
}

/// How far the function's and the database's clocks may be apart.
pub const CLOCK_MARGIN: Duration = Duration::from_secs(1);
/// After this long from its sending, a login statement has ended, written
/// or not: it started by its deadline ([`RECORD_DEADLINE`], on the
/// database's clock) or wrote nothing, and the server ends any statement
/// after [`STATEMENT_TIMEOUT`], lock waits included.
pub const STATEMENT_SETTLED_AFTER: Duration = RECORD_DEADLINE
    .saturating_add(STATEMENT_TIMEOUT)
    .saturating_add(CLOCK_MARGIN);
/// How long a record that must be forgotten is retried while the database
/// does not answer: a login that did not complete leaves its token usable
/// again within 60 s of the database answering.
const FORGET_RETRY_FOR: Duration = Duration::from_secs(60);
const FORGET_RETRY_EVERY: Duration = Duration::from_millis(250);

/// Forgets a login's record in the background from `not_before` on (when
/// its statement can no longer write), retrying while the database does
/// not answer: the login issued nothing, so its token must not stay used.
pub fn forget_login_later(db: Database, claim: &Claim, not_before: Instant) {
    let record = claim.record();
    let (token_exp, token_key, attempt) = (
        record.token_exp,
        record.token_key.to_owned(),
        record.attempt.to_owned(),
    );
    tokio::spawn(async move {
        tokio::time::sleep_until(not_before.into()).await;
        let started = Instant::now();
        let record = LoginRecord {
            token_key: &token_key,
            attempt: &attempt,
            token_exp,
        };
        loop {
            match forget_login(&db, &record).await {
                Ok(()) => return,
                Err(e) if started.elapsed() > FORGET_RETRY_FOR => {
                    tracing::warn!(error = %e, "a login's record could not be forgotten; its token stays used");
                    return;
                }
                Err(_) => tokio::time::sleep(FORGET_RETRY_EVERY).await,
            }
        }
    });
}

/// Deletes this login's own record: it issued nothing.
pub async fn forget_login(db: &Database, record: &LoginRecord<'_>) -> Result<(), DbError> {
    bounded(async {
        by_backend!(db,
            postgres(pool) => pool.run(async |session| {
                Ok(session
                    .execute(
                        FORGET_SQL,
                        &[
                            (&record.token_exp, PgType::INT8),
                            (&record.token_key, PgType::TEXT),
                            (&record.attempt, PgType::TEXT),
                        ],
                    )
                    .await
                    .map(|_| ())?)
            }).await.map_err(DbError::from),
            sqlite(pool) => shared::db::run_sqlite(pool, async |conn| {
                sqlx::query(FORGET_SQL)
                    .bind(record.token_exp)
                    .bind(record.token_key)
                    .bind(record.attempt)
                    .execute(conn)
                    .await
                    .map(|_| ())
            }).await.map_err(DbError::from),
        )
    })
    .await
}

/// Deletes up to $2 records of tokens whose `exp` is before $1 (seconds
/// since the epoch), the oldest first, along the key's order; concurrent
/// sweeps of other instances skip the rows this one holds.
pub const SWEEP_SQL: &str = "DELETE FROM sso_logins WHERE (token_exp, token_key) IN ( \
       SELECT token_exp, token_key FROM sso_logins WHERE token_exp < $1 \
       ORDER BY token_exp LIMIT $2 FOR UPDATE SKIP LOCKED)";
/// [`SWEEP_SQL`] for the signed-out tokens (migration 0005): a token past
/// its `exp` is refused by verification, its record is no longer needed.
pub const SWEEP_REVOKED_SQL: &str = "DELETE FROM revoked_tokens WHERE jti IN ( \
       SELECT jti FROM revoked_tokens WHERE token_exp < $1 \
       ORDER BY token_exp LIMIT $2 FOR UPDATE SKIP LOCKED)";
/// Records deleted by one statement of a sweep: short, under the
/// operation's timeout, whatever the table's size.
const SWEEP_BATCH: i64 = 500;
/// Statements per sweep and table: what is left over waits for the next sweep.
const SWEEP_BATCHES: usize = 20;

/// Deletes the records of tokens that verification refuses by `now`
/// (seconds since the epoch): their `exp` plus the leeway is past. Both
/// kinds: the logins of GCGC tokens, the sign-outs of API tokens. In short
/// batches; returns how many it deleted.
pub async fn sweep_expired(db: &Database, now: u64) -> Result<u64, DbError> {
    let before = now.saturating_sub(LEEWAY_SECS) as i64;
    let mut deleted = 0;
    for sql in [SWEEP_SQL, SWEEP_REVOKED_SQL] {
        for _ in 0..SWEEP_BATCHES {
            let batch = sweep_batch(db, sql, before).await?;
            deleted += batch;
            if batch < SWEEP_BATCH as u64 {
                break;
            }
        }
    }
    Ok(deleted)
}

/// One statement of a sweep.
async fn sweep_batch(db: &Database, sql: &'static str, before: i64) -> Result<u64, DbError> {
    bounded(async {
        shared::by_backend!(db,
            postgres(pool) => pool.run(async |session| {
                Ok(session
                    .execute(sql, &[(&before, PgType::INT8), (&SWEEP_BATCH, PgType::INT8)])
                    .await?)
            }).await.map_err(DbError::from),
            // The embedded database has one writer: nothing to skip, and
            // no FOR UPDATE to say so.
            sqlite(pool) => shared::db::run_sqlite(pool, async |conn| {
                let sql = sql.replace(" FOR UPDATE SKIP LOCKED", "");
                // Audited: one of the constant statements above, shortened.
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(before)
                    .bind(SWEEP_BATCH)
                    .execute(conn)
                    .await
            }).await.map(|done| done.rows_affected()).map_err(DbError::from),
        )
    })
    .await
}

/// How often an instance sweeps expired records: its first login does,
/// then one login in this interval. Each sweep is a few short statements
/// off the login's path; the fleet's instances share the work.
pub const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// When this instance next sweeps ([`sweep_expired`]). In memory on
/// purpose: a sweep missed (a frozen or recycled instance) only leaves
/// expired rows for the next one, and no rule depends on it.
#[derive(Clone, Default)]
pub struct Sweeps {
    next: Arc<Mutex<Option<Instant>>>,
}

impl Sweeps {
    /// Starts a sweep in the background if one is due.
    pub fn sweep_if_due(&self, db: &Database) {
        let now = Instant::now();
        {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            if next.is_some_and(|at| now < at) {
                return;
            }
            *next = Some(now + SWEEP_EVERY);
        }
        let db = db.clone();
        tokio::spawn(async move {
            match sweep_expired(&db, unix_secs()).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "expired login records swept"),
                Err(e) => tracing::warn!(error = %e, "expired login records not swept (next time)"),
            }
        });
    }
}
