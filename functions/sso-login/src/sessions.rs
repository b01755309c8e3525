//! Sessions that end early: sign out (one token, by its `jti`, until its own
//! `exp`) and sign out everywhere (every token of the user issued so far:
//! the user's sign-out generation moves past theirs). Both are one statement
//! that also checks the presented token still stands, so signing out with
//! an ended token is a 401 like any other use of it. The records live in
//! the database, which every instance reads on every protected request:
//! a sign-out holds everywhere at once and survives a Redis flush.

use shared::db::{Database, DbError, PgType, bounded};
use shared::tokens::{AuthUser, Standing};
use shared::{ApiError, by_backend, token_standing_sql};

/// Ends one token: $1 user, $2 generation, $3 jti (the standing's
/// parameters, [`AuthUser::standing_params`]), $4 the token's `exp`.
/// A row when it ended it; none when the token had already ended (or its
/// user is gone), and then nothing changed.
pub const SIGN_OUT_SQL: &str = concat!(
    "INSERT INTO revoked_tokens (jti, user_id, token_exp) SELECT $3, $1, $4 WHERE ",
    token_standing_sql!("$1", "$2", "$3"),
    " = 0 ON CONFLICT (jti) DO NOTHING RETURNING 1"
);

/// Ends every token of a user issued up to now: $1 the presented token's
/// user, $2 its generation, $3 its jti. A row when it did; none when the
/// presented token had already ended (or its user is gone). Two at once
/// with one token: the second re-reads the row the first updated, and
/// finds its token ended.
pub const SIGN_OUT_EVERYWHERE_SQL: &str = "UPDATE users SET token_generation = token_generation + 1 \
     WHERE id = $1 AND token_generation <= $2 \
     AND NOT EXISTS (SELECT 1 FROM revoked_tokens r WHERE r.jti = $3) \
     RETURNING token_generation";

/// Ends every token of the user with this external id (the operator's
/// command, for a user who leaves): its internal id, if there is such a user.
pub const END_SESSIONS_OF_SQL: &str = "UPDATE users SET token_generation = token_generation + 1 \
     WHERE external_id = $1 RETURNING id";

/// Whether a token stands: $1 user, $2 generation, $3 jti.
const STANDING_SQL: &str = concat!("SELECT ", token_standing_sql!("$1", "$2", "$3"));

/// Signs out the presented token. Ok when it ended it; the 401 of an ended
/// token (or of a user that is gone) otherwise.
pub async fn sign_out(db: &Database, caller: &AuthUser) -> Result<(), ApiError> {
    let exp = i64::try_from(caller.exp).unwrap_or(i64::MAX);
    if changed(db, SIGN_OUT_SQL, caller, Some(exp)).await? {
        Ok(())
    } else {
        refusal(db, caller).await
    }
}

/// Signs out every token of the caller issued so far, the presented one
/// included. Ok when it did; the 401 of an ended token otherwise.
pub async fn sign_out_everywhere(db: &Database, caller: &AuthUser) -> Result<(), ApiError> {
    if changed(db, SIGN_OUT_EVERYWHERE_SQL, caller, None).await? {
        Ok(())
    } else {
        refusal(db, caller).await
    }
}

/// Ends every session of the user with `external_id`: its id, or None when
/// there is no such user.
pub async fn end_sessions_of(db: &Database, external_id: &str) -> Result<Option<i64>, DbError> {
    bounded(async {
        by_backend!(db,
            postgres(pool) => pool.run(async |session| {
                let rows = session.query(END_SESSIONS_OF_SQL, &[(&external_id, PgType::TEXT)]).await?;
                Ok(match rows.first() {
                    Some(row) => Some(row.try_get(0)?),
                    None => None,
                })
            }).await.map_err(DbError::from),
            sqlite(pool) => shared::db::run_sqlite(pool, async |conn| {
                sqlx::query_scalar(END_SESSIONS_OF_SQL)
                    .bind(external_id)
                    .fetch_optional(conn)
                    .await
            }).await.map_err(DbError::from),
        )
    })
    .await
}

/// Runs a sign-out statement on the caller's token ($1 user, $2
/// generation, $3 jti, and $4 `exp` when given): whether it returned a row, that
/// is, changed something.
async fn changed(
    db: &Database,
    sql: &'static str,
    caller: &AuthUser,
    exp: Option<i64>,
) -> Result<bool, DbError> {
    bounded(async {
        by_backend!(db,
            postgres(pool) => pool.run(async |session| {
                let mut params = caller.standing_params().to_vec();
                if let Some(exp) = &exp {
                    params.push((exp, PgType::INT8));
                }
                Ok(!session.query(sql, &params).await?.is_empty())
            }).await.map_err(DbError::from),
            sqlite(pool) => shared::db::run_sqlite(pool, async |conn| {
                let mut query = sqlx::query(sql)
                    .bind(caller.user_id)
                    .bind(caller.generation)
                    .bind(caller.jti.as_str());
                if let Some(exp) = exp {
                    query = query.bind(exp);
                }
                Ok(query.fetch_optional(conn).await?.is_some())
            }).await.map_err(DbError::from),
        )
    })
    .await
}

/// Why a sign-out changed nothing (a refusal only: the path of a working
/// sign-out is its one statement).
async fn refusal(db: &Database, caller: &AuthUser) -> Result<(), ApiError> {
    let standing: i32 = bounded(async {
        by_backend!(db,
            postgres(pool) => pool.run(async |session| {
                let row = session
                    .query_one(STANDING_SQL, &caller.standing_params())
                    .await?;
                Ok(row.try_get(0)?)
            }).await.map_err(DbError::from),
            sqlite(pool) => shared::db::run_sqlite(pool, async |conn| {
                sqlx::query_scalar(STANDING_SQL)
                    .bind(caller.user_id)
                    .bind(caller.generation)
                    .bind(caller.jti.as_str())
                    .fetch_one(conn)
                    .await
            }).await.map_err(DbError::from),
        )
    })
    .await?;
    match Standing::from_sql(standing)? {
        // Ended between the statement and this one's reading, or a
        // concurrent sign-out of the same token won: ended either way.
        Standing::Stands | Standing::Ended => Err(ApiError::TokenRevoked),
        gone => gone.check(),
    }
}
