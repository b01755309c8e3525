//! The conversations' queries. One query text serves PostgreSQL and the
//! embedded SQLite ([`on_pool!`]); every operation is bounded in time.

use shared::clock::unix_micros;
use shared::db::{Database, DbError, bounded, placeholders};
use shared::on_pool;

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

/// The ids among `ids` that name no user.
pub async fn unknown_users(db: &Database, ids: &[i64]) -> Result<Vec<i64>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT id FROM users WHERE id IN ({})",
        placeholders(1, ids.len())
    );
    let found: Vec<i64> = bounded(async {
        on_pool!(db, pool => {
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
        on_pool!(db, pool => {
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
    let rows: Vec<ConversationRow> = bounded(async {
        on_pool!(db, pool => {
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
    with_members(db, rows).await
}

/// The conversation, if `user` is a member of it.
pub async fn get(db: &Database, user: i64, id: i64) -> Result<Option<Conversation>, DbError> {
    let rows: Vec<ConversationRow> = bounded(async {
        on_pool!(db, pool => {
            sqlx::query_as(member_conversations!("c.id = $1 AND m.user_id = $2"))
            .bind(id)
            .bind(user)
            .fetch_all(pool)
            .await
        })
    })
    .await?;
    Ok(with_members(db, rows).await?.pop())
}

async fn with_members(
    db: &Database,
    rows: Vec<ConversationRow>,
) -> Result<Vec<Conversation>, DbError> {
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
        on_pool!(db, pool => {
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
