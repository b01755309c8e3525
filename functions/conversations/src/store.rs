//! The conversations' queries. One query text serves PostgreSQL and the
//! embedded SQLite, except create: one statement on PostgreSQL, a
//! transaction on SQLite (no data-modifying CTE there). Each
//! route is one round trip to PostgreSQL where one statement can do it;
//! every operation is bounded in time. The SQLite arms and statements exist
//! only in builds with the embedded database ([`by_backend!`]).

use shared::clock::unix_micros;
use shared::db::{Database, DbError, PgType, bounded, placeholders};
use shared::{by_backend, embedded_db_only};

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
/// members' ids in order (`$members`: how the dialect aggregates them).
macro_rules! with_members {
    ($members:literal, $page:literal) => {
        concat!(
            "SELECT c.id, c.title, c.created_by, c.created_at, c.last_activity_at, ",
            $members,
            " FROM conversation_members m \
             JOIN conversations c ON c.id = m.conversation_id \
             WHERE ",
            $page
        )
    };
}

/// One statement in the two dialects, which differ in the members' column:
/// an array on PostgreSQL; SQLite has none, so ids joined by commas.
macro_rules! in_both_dialects {
    ($page:literal) => {
        Statement {
            postgres: with_members!(
                "ARRAY(SELECT mm.user_id FROM conversation_members mm \
                 WHERE mm.conversation_id = c.id ORDER BY mm.user_id)",
                $page
            ),
            sqlite: with_members!(
                "(SELECT group_concat(mm.user_id, ',' ORDER BY mm.user_id) \
                 FROM conversation_members mm WHERE mm.conversation_id = c.id)",
                $page
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
/// conversations. The page is the next $4 entries of the memberships'
/// (user, activity, conversation) index, which carries each conversation's
/// activity (migration 0002): its cost does not grow with the number of
/// conversations the member is in. One row per conversation, not one per
/// member: a third of the rows to send and decode for three members.
const LIST: Statement = in_both_dialects!(
    "m.user_id = $1 \
     AND (m.last_activity_at, m.conversation_id) < ($2, $3) \
     ORDER BY m.last_activity_at DESC, m.conversation_id DESC \
     LIMIT $4"
);

/// [`LIST`] on PostgreSQL. (The SQL texts are public for `make bench`,
/// whose pgbench reference runs them as they are.)
pub const LIST_SQL: &str = LIST.postgres;

/// One conversation, if the user is its member: $1 conversation, $2 user.
const GET: Statement = in_both_dialects!("c.id = $1 AND m.user_id = $2");

/// The conversations `statement` selects, each with its members.
async fn conversations(
    db: &Database,
    statement: &Statement,
    params: &[i64],
) -> Result<Vec<Conversation>, DbError> {
    bounded(async {
        by_backend!(db,
            postgres(pool) => pool
                .run(async |session| {
                    let typed: Vec<_> = params
                        .iter()
                        .map(|p| (p as &(dyn shared::db::PgToSql + Sync), PgType::INT8))
                        .collect();
                    let rows = session.query(statement.postgres, &typed).await?;
                    rows.iter()
                        .map(|row| -> Result<Conversation, shared::db::PgError> {
                            Ok(conversation((
                                row.try_get(0)?,
                                row.try_get(1)?,
                                row.try_get(2)?,
                                row.try_get(3)?,
                                row.try_get(4)?,
                                row.try_get(5)?,
                            )))
                        })
                        .collect()
                })
                .await
                .map_err(DbError::from),
            sqlite(pool) => {
                let rows: Vec<(i64, String, i64, i64, i64, String)> =
                    shared::db::run_sqlite(pool, async |conn| {
                        let mut query = sqlx::query_as(statement.sqlite);
                        for param in params {
                            query = query.bind(param);
                        }
                        query.fetch_all(conn).await
                    })
                    .await
                    .map_err(DbError::from)?;
                Ok(rows
                    .into_iter()
                    .map(|(id, title, by, created, active, members)| {
                        let members = members.split(',').filter_map(|m| m.parse().ok()).collect();
                        conversation((id, title, by, created, active, members))
                    })
                    .collect())
            },
        )
    })
    .await
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

/// Which of `count` user ids ($1 ... $count) exist.
pub fn users_sql(count: usize) -> String {
    format!(
        "SELECT id FROM users WHERE id IN ({})",
        placeholders(1, count)
    )
}

/// The ids among `ids` that name no user.
pub async fn unknown_users(db: &Database, ids: &[i64]) -> Result<Vec<i64>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = users_sql(ids.len());
    let found: Vec<i64> = bounded(async {
        by_backend!(db,
            postgres(pool) => pool.run(async |session| {
                let typed: Vec<_> = ids
                    .iter()
                    .map(|id| (id as &(dyn shared::db::PgToSql + Sync), PgType::INT8))
                    .collect();
                let rows = session.query(&sql, &typed).await?;
                Ok(rows
                    .iter()
                    .map(|row| row.try_get(0))
                    .collect::<Result<Vec<i64>, _>>()?)
            }).await.map_err(DbError::from),
            sqlite(pool) => shared::db::run_sqlite(pool, async |conn| {
                // Audited: `sql` holds only `$N` placeholders, never values.
                let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()));
                for id in ids {
                    query = query.bind(id);
                }
                query.fetch_all(conn).await
            }).await.map_err(DbError::from),
        )
    })
    .await?;
    Ok(ids
        .iter()
        .copied()
        .filter(|id| !found.contains(id))
        .collect())
}

/// PostgreSQL: the conversation and its members in one statement (atomic
/// on its own: one round trip, no BEGIN/COMMIT). $1 title, $2 creator,
/// $3 now, $4 the member ids (bigint[]).
pub const CREATE_SQL: &str = "WITH conversation AS ( \
       INSERT INTO conversations (title, created_by, created_at, last_activity_at) \
       VALUES ($1, $2, $3, $3) RETURNING id \
     ), members AS ( \
       INSERT INTO conversation_members (conversation_id, user_id, joined_at, last_activity_at) \
       SELECT conversation.id, member, $3, $3 FROM conversation, unnest($4::bigint[]) AS member \
     ) \
     SELECT id FROM conversation";

embedded_db_only! {
    /// SQLite (no data-modifying CTE, no arrays): the conversation, then its
    /// members in one multi-row INSERT, in a transaction. $1 title, $2 creator, $3 now.
    const SQLITE_CREATE_SQL: &str = "INSERT INTO conversations (title, created_by, created_at, last_activity_at) \
         VALUES ($1, $2, $3, $3) RETURNING id";

    /// SQLite: `count` members of one conversation: $1 conversation, $2 now,
    /// $3 ... the user ids.
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

/// Creates a conversation with its members (the creator among them), atomically.
pub async fn create(
    db: &Database,
    creator: i64,
    title: &str,
    member_ids: &[i64],
) -> Result<Conversation, DbError> {
    let now = unix_micros();
    let mut members: Vec<i64> = member_ids.to_vec();
    members.push(creator);
    members.sort_unstable();
    members.dedup();
    let id: i64 = bounded(async {
        by_backend!(db,
            postgres(pool) => pool.run(async |session| {
                let row = session
                    .query_one(
                        CREATE_SQL,
                        &[
                            (&title, PgType::TEXT),
                            (&creator, PgType::INT8),
                            (&now, PgType::INT8),
                            (&members, PgType::INT8_ARRAY),
                        ],
                    )
                    .await?;
                Ok(row.try_get(0)?)
            }).await.map_err(DbError::from),
            sqlite(pool) => async {
                let mut tx = pool.begin().await?;
                let id: i64 = sqlx::query_scalar(SQLITE_CREATE_SQL)
                    .bind(title)
                    .bind(creator)
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
                Ok(id)
            }.await.map_err(|e: sqlx::Error| DbError::from(e)),
        )
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
pub async fn list(
    db: &Database,
    user: i64,
    after: Option<PageAfter>,
    limit: u32,
) -> Result<Vec<Conversation>, DbError> {
    // No cursor: start above every real row.
    let after = after.unwrap_or(PageAfter {
        last_activity_at: i64::MAX,
        id: i64::MAX,
    });
    let params = [user, after.last_activity_at, after.id, i64::from(limit)];
    conversations(db, &LIST, &params).await
}

/// The conversation, if `user` is a member of it.
pub async fn get(db: &Database, user: i64, id: i64) -> Result<Option<Conversation>, DbError> {
    Ok(conversations(db, &GET, &[id, user]).await?.pop())
}
