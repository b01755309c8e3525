//! The data the conversations routes run on, and their SQL as pgbench and
//! a lone connection send it.

use std::path::PathBuf;

use conversations::store;
use serde_json::json;
use sqlx::Connection;

use crate::Bench;
use crate::load::{p50, pgbench_sql};

pub struct ConversationsData {
    /// A user with [`LISTER_CONVERSATIONS`] conversations of 3 members,
    /// their activity spread among everyone else's.
    pub lister: i64,
    /// Who creates conversations, with `others` as members.
    pub creator: i64,
    pub others: Vec<i64>,
}

/// The data the conversations routes run on: a database in use, not a few
/// rows. With a handful of rows every plan is a sequential scan, and the
/// statistics a plan is chosen by change under the bench's own writes.
const PEOPLE: i64 = 2000;
const OTHER_CONVERSATIONS: i64 = 20_000;
const LISTER_CONVERSATIONS: i64 = 100;

/// The jti of the references' token, as a SQL literal: one that was never
/// signed out, so the standing check finds nothing, as for most requests.
pub const BENCH_JTI: &str = "'00000000-0000-4000-8000-000000000000'";

impl Bench<'_> {
    /// A database of its own on the bench's PostgreSQL, migrated, with the
    /// conversations scenario's data: its URL.
    pub fn database_with_conversations(
        &self,
        name: &str,
    ) -> anyhow::Result<(String, ConversationsData)> {
        let url = format!("postgres://postgres@127.0.0.1:{}/{name}", self.pg.port);
        let data = self.rt.block_on(async {
            let mut admin = sqlx::PgConnection::connect(&self.pg.url()).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await?;
            let db = shared::db::Database::open_postgres(&url, 1)?;
            db.migrate().await?;
            db.close().await;
            conversations_data(&url).await
        })?;
        Ok((url, data))
    }

    /// wrk's script for conversations' create: the same body each time.
    pub fn create_script(&self, data: &ConversationsData) -> anyhow::Result<PathBuf> {
        let body = json!({ "title": "bench", "member_ids": data.others }).to_string();
        self.write(
            "create.lua",
            &format!(
                "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = '{body}'\n"
            ),
        )
    }
}

/// Seeds [`PEOPLE`] users in [`OTHER_CONVERSATIONS`] conversations of 3
/// members, and the lister's, then `VACUUM ANALYZE`s: the statistics and
/// visibility map a running database's autovacuum keeps, the same for the
/// reference and the function.
pub async fn conversations_data(pg_url: &str) -> anyhow::Result<ConversationsData> {
    let db = shared::db::Database::open_postgres(pg_url, 2)?;
    let user = async |name: &str| {
        anyhow::Ok(
            sso_login::users::upsert_user(&db, name, None, None)
                .await?
                .id,
        )
    };
    let data = ConversationsData {
        lister: user("bench-lister").await?,
        creator: user("bench-creator").await?,
        others: vec![user("bench-member-1").await?, user("bench-member-2").await?],
    };
    db.close().await;

    let mut pg = sqlx::PgConnection::connect(pg_url).await?;
    seed(&mut pg, &data).await?;
    sqlx::query("VACUUM ANALYZE").execute(&mut pg).await?;
    let mine: i64 =
        sqlx::query_scalar("SELECT count(*) FROM conversation_members WHERE user_id = $1")
            .bind(data.lister)
            .fetch_one(&mut pg)
            .await?;
    anyhow::ensure!(
        mine == LISTER_CONVERSATIONS,
        "the lister has {mine} conversations, not {LISTER_CONVERSATIONS}"
    );
    pg.close().await?;
    Ok(data)
}

/// The people, and everyone's conversations with their members.
async fn seed(pg: &mut sqlx::PgConnection, data: &ConversationsData) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO users (external_id, created_at, updated_at) \
         SELECT 'bench-person-' || n, 0, 0 FROM generate_series(0, $1::bigint - 1) n",
    )
    .bind(PEOPLE)
    .execute(&mut *pg)
    .await?;
    let first_person: i64 =
        sqlx::query_scalar("SELECT id FROM users WHERE external_id = 'bench-person-0'")
            .fetch_one(&mut *pg)
            .await?;
    // Activity one second apart, the newest now; every `step`th
    // conversation is the lister's (with `others`), spread over the whole
    // history; each other one has three people.
    let all = OTHER_CONVERSATIONS + LISTER_CONVERSATIONS;
    sqlx::query(
        "INSERT INTO conversations (title, created_by, created_at, last_activity_at) \
         SELECT 'conversation ' || n, \
                CASE WHEN n % $3 = 0 THEN $2 ELSE $4 + n % $5 END, \
                $1 - n * 1000000, $1 - n * 1000000 \
         FROM generate_series(1, $6::bigint) n",
    )
    .bind(shared::clock::unix_micros())
    .bind(data.lister)
    .bind(all / LISTER_CONVERSATIONS)
    .bind(first_person)
    .bind(PEOPLE)
    .bind(all)
    .execute(&mut *pg)
    .await?;
    sqlx::query(
        "INSERT INTO conversation_members (conversation_id, user_id, joined_at, last_activity_at) \
         SELECT c.id, CASE WHEN c.created_by = $1 THEN (ARRAY[$1, $2, $3])[k + 1] \
                           ELSE $4 + (c.created_by - $4 + k * 7) % $5 END, \
                c.created_at, c.last_activity_at \
         FROM conversations c, generate_series(0, 2) k",
    )
    .bind(data.lister)
    .bind(data.others[0])
    .bind(data.others[1])
    .bind(first_person)
    .bind(PEOPLE)
    .execute(&mut *pg)
    .await?;
    Ok(())
}

/// Conversations' create as the function sends it: one statement (the
/// token's standing, the members' check, the conversation and its members).
pub fn create_sql(data: &ConversationsData) -> String {
    let mut members: Vec<i64> = data.others.clone();
    members.push(data.creator);
    members.sort_unstable();
    let array = format!(
        "'{{{}}}'",
        members
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    // $1 creator, $2 generation, $3 jti, $4 title, $5 now, $6 members.
    let creator = data.creator.to_string();
    let mut script = String::from("\\set now 1764000000000000\n");
    script += &pgbench_sql(
        store::CREATE_SQL,
        &[&creator, "0", BENCH_JTI, "'bench'", ":now", &array],
    );
    script += ";\n";
    script
}

/// A row of [`store::LIST_SQL`]: the token's standing, then a conversation
/// (none when the page is empty).
type ListRow = (
    i32,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<Vec<i64>>,
);

/// The list's own query, alone from one connection.
pub async fn list_round_trips(
    pg_url: &str,
    data: &ConversationsData,
) -> anyhow::Result<(f64, String)> {
    let mut pg = sqlx::PgConnection::connect(pg_url).await?;
    let page = p50(500, async |_| {
        let _: Vec<ListRow> = sqlx::query_as(store::LIST_SQL)
            .bind(data.lister)
            .bind(i64::MAX)
            .bind(i64::MAX)
            .bind(21_i64)
            .bind(0_i64)
            .bind(BENCH_JTI.trim_matches('\''))
            .fetch_all(&mut pg)
            .await?;
        Ok(())
    })
    .await?;
    Ok((page, format!("its query {page:.3}")))
}
