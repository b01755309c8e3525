//! The conversations' queries. One query text serves PostgreSQL and the
//! embedded SQLite, except create: one statement on PostgreSQL, a
//! transaction on SQLite (no data-modifying CTE there). Each
//! route is one statement, one round trip, to PostgreSQL;
//! every operation is bounded in time. The statement that reads first also
//! reads whether the caller's token still stands (signed out or not:
//! [`shared::token_standing_sql!`]), so that check costs no round trip. The SQLite arms and statements exist
//! only in builds with the embedded database ([`by_backend!`]).

use shared::clock::unix_micros;
use shared::db::{Database, DbError, PgRow, PgToSql, PgType, bounded};
use shared::tokens::{AuthUser, Standing};
use shared::{ApiError, by_backend, embedded_db_only, token_standing_sql};

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

/// The conversations a member sees (`$page`: conditions on the membership
/// `m` and its conversation `c`, order, limit), one row each, with its
/// members' ids in order (`$members`: how the dialect aggregates them),
/// beside whether the caller's token stands (`$standing`). Always one row
/// at least: the standing, with no conversation when there is none (or
/// the token does not stand, when none is read). `$order` orders the rows
/// as `$page` picked them.
macro_rules! with_members {
    ($members:literal, $standing:expr, $page:literal, $order:literal) => {
        concat!(
            "SELECT s.standing, p.id, p.title, p.created_by, p.created_at, p.last_activity_at, \
             p.member_ids FROM (SELECT ",
            $standing,
            " AS standing) s LEFT JOIN (\
             SELECT c.id, c.title, c.created_by, c.created_at, c.last_activity_at, ",
            $members,
            " AS member_ids, m.last_activity_at AS page_activity \
             FROM conversation_members m \
             JOIN conversations c ON c.id = m.conversation_id \
             WHERE ",
            $page,
            ") p ON s.standing = 0 ",
            $order
        )
    };
}

/// One statement in the two dialects, which differ in the members' column:
/// an array on PostgreSQL; SQLite has none, so ids joined by commas.
macro_rules! in_both_dialects {
    ($standing:expr, $page:literal, $order:literal) => {
        Statement {
            postgres: with_members!(
                "ARRAY(SELECT mm.user_id FROM conversation_members mm \
                 WHERE mm.conversation_id = c.id ORDER BY mm.user_id)",
                $standing,
                $page,
                $order
            ),
            sqlite: with_members!(
                "(SELECT group_concat(mm.user_id, ',' ORDER BY mm.user_id) \
                 FROM conversation_members mm WHERE mm.conversation_id = c.id)",
                $standing,
                $page,
                $order
            ),
        }
    };
}

struct Statement {
    postgres: &'static str,
    // Read only in builds with the embedded database.
    #[allow(dead_code)]
    sqlite: &'static str,
}

/// A page of a member's conversations with their members: $1 user, $2 and
/// $3 the (activity, id) the page starts after, $4 the number of
/// conversations; $5 and $6 the caller's token's generation and jti. The
/// page is the next $4 entries of the memberships'
/// (user, activity, conversation) index, which carries each conversation's
/// activity (migration 0002): its cost does not grow with the number of
/// conversations the member is in. One row per conversation, not one per
/// member: a third of the rows to send and decode for three members.
const LIST: Statement = in_both_dialects!(
    token_standing_sql!("$1", "$5", "$6"),
    "m.user_id = $1 \
     AND (m.last_activity_at, m.conversation_id) < ($2, $3) \
     ORDER BY m.last_activity_at DESC, m.conversation_id DESC \
     LIMIT $4",
    "ORDER BY p.page_activity DESC, p.id DESC"
);

/// [`LIST`] on PostgreSQL. (The SQL texts are public for `make bench`,
/// whose pgbench reference runs them as they are.)
pub const LIST_SQL: &str = LIST.postgres;

/// One conversation, if the user is its member: $1 conversation, $2 user;
/// $3 and $4 the caller's token's generation and jti.
const GET: Statement = in_both_dialects!(
    token_standing_sql!("$2", "$3", "$4"),
    "c.id = $1 AND m.user_id = $2",
    ""
);

/// What a statement that checks the caller's token found: whether the
/// token stands, and (only if it does) what was read.
pub type Checked<T> = (Standing, T);

embedded_db_only! {
    /// A [`with_members`] row as SQLite returns it (members joined by commas).
    type SqliteRow = (
        i32,
        Option<i64>,
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<String>,
    );
}

/// The conversations `statement` selects, each with its members, and
/// whether the caller's token stands. `params` are the statement's
/// numbers, followed by the token's generation and jti.
async fn conversations(
    db: &Database,
    statement: &Statement,
    params: &[i64],
    caller: &AuthUser,
) -> Result<Checked<Vec<Conversation>>, ApiError> {
    let (standing, rows) = bounded(async {
        by_backend!(db,
            postgres(pool) => pool
                .run(async |session| {
                    let mut typed: Vec<(&(dyn PgToSql + Sync), PgType)> =
                        params.iter().map(|p| (p as _, PgType::INT8)).collect();
                    typed.push((&caller.generation, PgType::INT8));
                    typed.push((&caller.jti, PgType::TEXT));
                    let rows = session.query(statement.postgres, &typed).await?;
                    let standing: i32 = match rows.first() {
                        Some(row) => row.try_get(0)?,
                        None => -1,
                    };
                    let conversations = rows
                        .iter()
                        .filter_map(|row| pg_conversation(row).transpose())
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((standing, conversations))
                })
                .await
                .map_err(DbError::from),
            sqlite(pool) => {
                let rows: Vec<SqliteRow> = shared::db::run_sqlite(pool, async |conn| {
                    let mut query = sqlx::query_as(statement.sqlite);
                    for param in params {
                        query = query.bind(param);
                    }
                    query
                        .bind(caller.generation)
                        .bind(caller.jti.as_str())
                        .fetch_all(conn)
                        .await
                })
                .await
                .map_err(DbError::from)?;
                let standing = rows.first().map_or(-1, |row| row.0);
                let conversations = rows
                    .into_iter()
                    .filter_map(|(_, id, title, by, created, active, members)| {
                        let members = members
                            .unwrap_or_default()
                            .split(',')
                            .filter_map(|m| m.parse().ok())
                            .collect();
                        Some(conversation((id?, title?, by?, created?, active?, members)))
                    })
                    .collect();
                Ok((standing, conversations))
            },
        )
    })
    .await
    .map_err(ApiError::from)?;
    Ok((Standing::from_sql(standing)?, rows))
}

/// The conversation of a PostgreSQL [`with_members`] row, if it holds one.
fn pg_conversation(row: &PgRow) -> Result<Option<Conversation>, shared::db::PgError> {
    let Some(id) = row.try_get::<_, Option<i64>>(1)? else {
        return Ok(None);
    };
    Ok(Some(conversation((
        id,
        row.try_get(2)?,
        row.try_get(3)?,
        row.try_get(4)?,
        row.try_get(5)?,
        row.try_get(6)?,
    ))))
}

fn conversation(
    (id, title, created_by, created_at, last_activity_at, member_ids): (
        i64,
        String,
        i64,
        i64,
        i64,
        Vec<i64>,
    ),
) -> Conversation {
    Conversation {
        id,
        title,
        created_by,
        created_at,
        last_activity_at,
        member_ids,
    }
}

/// What a create did: the conversation it made, or nothing, because these
/// member ids (as the request gave them) name no user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    Conversation(Conversation),
    UnknownMembers(Vec<i64>),
}

/// PostgreSQL: the caller's token's standing, the members that name no
/// user and, only when the token stands and every member exists, the
/// conversation with its members: one statement, one round trip, atomic
/// on its own (no BEGIN/COMMIT). $1 creator, $2 generation, $3 jti,
/// $4 title, $5 now, $6 the members, the creator among them (bigint[]).
/// One row: the standing, the unknown members (NULL: none), the new
/// conversation's id (NULL: nothing written).
pub const CREATE_SQL: &str = concat!(
    "WITH s AS (SELECT ",
    token_standing_sql!("$1", "$2", "$3"),
    " AS standing), \
     unknown AS ( \
       SELECT array_agg(w.id) AS ids FROM unnest($6::bigint[]) AS w(id) \
       WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = w.id) \
     ), conversation AS ( \
       INSERT INTO conversations (title, created_by, created_at, last_activity_at) \
       SELECT $4, $1, $5, $5 FROM s, unknown WHERE s.standing = 0 AND unknown.ids IS NULL \
       RETURNING id \
     ), members AS ( \
       INSERT INTO conversation_members (conversation_id, user_id, joined_at, last_activity_at) \
       SELECT conversation.id, member, $5, $5 FROM conversation, unnest($6::bigint[]) AS member \
     ) \
     SELECT s.standing, unknown.ids, (SELECT id FROM conversation) FROM s, unknown"
);

embedded_db_only! {
    /// SQLite (no data-modifying CTE, no arrays), in a transaction: whether
    /// the caller's token stands ($1 user, $2 generation, $3 jti) and which
    /// of `count` user ids ($4 ... $(count+3)) exist: one row with the
    /// standing, then one per user found (none when it does not stand).
    fn sqlite_users_sql(count: usize) -> String {
        format!(
            "SELECT s.standing, u.id FROM (SELECT {} AS standing) s \
             LEFT JOIN users u ON s.standing = 0 AND u.id IN ({})",
            token_standing_sql!("$1", "$2", "$3"),
            shared::db::placeholders(4, count)
        )
    }

    /// SQLite: then the conversation, $1 title, $2 creator, $3 now.
    const SQLITE_CREATE_SQL: &str = "INSERT INTO conversations (title, created_by, created_at, last_activity_at) \
         VALUES ($1, $2, $3, $3) RETURNING id";

    /// SQLite: and its `count` members in one multi-row INSERT: $1
    /// conversation, $2 now, $3 ... the user ids.
    fn sqlite_add_members_sql(count: usize) -> String {
        let rows: Vec<String> = (3..3 + count)
            .map(|i| format!("($1, ${i}, $2, $2)"))
            .collect();
        format!(
            "INSERT INTO conversation_members (conversation_id, user_id, joined_at, last_activity_at) VALUES {}",
            rows.join(", ")
        )
    }
}

/// Creates a conversation with its members (the creator among them),
/// atomically, if the caller's token stands and every member is a user.
pub async fn create(
    db: &Database,
    caller: &AuthUser,
    title: &str,
    member_ids: &[i64],
) -> Result<Checked<Created>, ApiError> {
    let now = unix_micros();
    let mut members: Vec<i64> = member_ids.to_vec();
    members.push(caller.user_id);
    members.sort_unstable();
    members.dedup();
    // (standing, the members that name no user, the new id)
    let (standing, unknown, id): (i32, Vec<i64>, Option<i64>) = bounded(async {
        by_backend!(db,
            postgres(pool) => pool.run(async |session| {
                let mut typed = caller.standing_params().to_vec();
                typed.extend([
                    (&title as _, PgType::TEXT),
                    (&now as _, PgType::INT8),
                    (&members as _, PgType::INT8_ARRAY),
                ]);
                let row = session.query_one(CREATE_SQL, &typed).await?;
                let unknown: Option<Vec<i64>> = row.try_get(1)?;
                Ok((row.try_get(0)?, unknown.unwrap_or_default(), row.try_get(2)?))
            }).await.map_err(DbError::from),
            sqlite(pool) => async {
                let mut tx = pool.begin().await?;
                // Audited: only `$N` placeholders, never values.
                let mut check = sqlx::query_as(sqlx::AssertSqlSafe(sqlite_users_sql(members.len())))
                    .bind(caller.user_id)
                    .bind(caller.generation)
                    .bind(caller.jti.as_str());
                for member in &members {
                    check = check.bind(member);
                }
                let rows: Vec<(i32, Option<i64>)> = check.fetch_all(&mut *tx).await?;
                let standing = rows.first().map_or(-1, |row| row.0);
                let found: Vec<i64> = rows.iter().filter_map(|row| row.1).collect();
                let unknown: Vec<i64> =
                    members.iter().copied().filter(|m| !found.contains(m)).collect();
                if standing != 0 || !unknown.is_empty() {
                    return Ok((standing, unknown, None));
                }
                let id: i64 = sqlx::query_scalar(SQLITE_CREATE_SQL)
                    .bind(title)
                    .bind(caller.user_id)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                // Audited: only `$N` placeholders, never values.
                let sql = sqlite_add_members_sql(members.len());
                let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(now);
                for member in &members {
                    insert = insert.bind(member);
                }
                insert.execute(&mut *tx).await?;
                tx.commit().await?;
                Ok((standing, unknown, Some(id)))
            }.await.map_err(|e: sqlx::Error| DbError::from(e)),
        )
    })
    .await
    .map_err(create_error)?;
    let standing = Standing::from_sql(standing)?;
    let created = match id {
        Some(id) => Created::Conversation(Conversation {
            id,
            title: title.to_owned(),
            created_by: caller.user_id,
            created_at: now,
            last_activity_at: now,
            member_ids: members,
        }),
        // As the request named them, in its order.
        None => Created::UnknownMembers(
            member_ids
                .iter()
                .copied()
                .filter(|id| unknown.contains(id))
                .collect(),
        ),
    };
    Ok((standing, created))
}

fn create_error(e: DbError) -> ApiError {
    match e {
        // A member was deleted as the statement ran: its foreign key.
        DbError::MissingReference => ApiError::Unprocessable("A member does not exist".into()),
        DbError::InvalidData(_) => {
            ApiError::Unprocessable("The conversation contains text that cannot be stored".into())
        }
        other => other.into(),
    }
}

/// A page of the conversations the caller is a member of, newest activity
/// first, if its token stands.
pub async fn list(
    db: &Database,
    caller: &AuthUser,
    after: Option<PageAfter>,
    limit: u32,
) -> Result<Checked<Vec<Conversation>>, ApiError> {
    // No cursor: start above every real row.
    let after = after.unwrap_or(PageAfter {
        last_activity_at: i64::MAX,
        id: i64::MAX,
    });
    let params = [
        caller.user_id,
        after.last_activity_at,
        after.id,
        i64::from(limit),
    ];
    conversations(db, &LIST, &params, caller).await
}

/// The conversation, if the caller is a member of it, and whether its
/// token stands.
pub async fn get(
    db: &Database,
    caller: &AuthUser,
    id: i64,
) -> Result<Checked<Option<Conversation>>, ApiError> {
    let (standing, mut found) = conversations(db, &GET, &[id, caller.user_id], caller).await?;
    Ok((standing, found.pop()))
}
