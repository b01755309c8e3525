//! The user a login creates or updates from its token's claims.

use shared::clock::unix_micros;
use shared::db::{Database, DbError, bounded};
use shared::on_pool;
use sqlx::Row;

/// A user as the login answers it (the upstream id stays inside).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    pub email: Option<String>,
    pub name: Option<String>,
}

/// The upsert of [`upsert_user`] (public for `make bench`'s pgbench reference).
/// $1 external id, $2 email, $3 name, $4 now.
pub const UPSERT_SQL: &str = "INSERT INTO users (external_id, email, name, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $4) \
     ON CONFLICT (external_id) DO UPDATE \
     SET email = excluded.email, name = excluded.name, updated_at = excluded.updated_at \
     RETURNING id, email, name";

/// Creates the user of an external (SSO) id, or updates its email and name.
pub async fn upsert_user(
    db: &Database,
    external_id: &str,
    email: Option<&str>,
    name: Option<&str>,
) -> Result<User, DbError> {
    let now = unix_micros();
    bounded(async {
        on_pool!(db, conn => {
            let row = sqlx::query(UPSERT_SQL)
                .bind(external_id)
                .bind(email)
                .bind(name)
                .bind(now)
                .fetch_one(conn)
                .await?;
            Ok(User {
                id: row.try_get("id")?,
                email: row.try_get("email")?,
                name: row.try_get("name")?,
            })
        })
    })
    .await
}
