//! The conversations function: the caller's conversations, listed newest
//! activity first with an opaque cursor, created, and fetched. A caller sees
//! only conversations it is a member of; any other is 404 (no leaking of ids).
//! The handlers are here; the cursor in [`cursor`], the queries in [`store`].

pub mod cursor;
pub mod store;

use axum::Router;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use shared::db::{Database, DbError};
use shared::tokens::{ApiTokens, AuthUser};
use shared::{ApiError, ApiJson, Config, StartError};

use crate::store::{Conversation, PageAfter};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_MEMBERS: usize = 100;

#[derive(Clone, FromRef)]
pub struct AppState {
    pub db: Database,
    pub tokens: ApiTokens,
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/conversations", get(list).post(create))
        .route("/api/v1/conversations/{id}", get(fetch))
        .with_state(state)
}

/// The function's routes for its configuration (`JWT_SECRET`, `DATABASE_URL`).
pub async fn build(config: &Config) -> Result<Router, StartError> {
    let tokens = ApiTokens::from_config(config)?;
    let db = Database::open(config).await?;
    Ok(routes(AppState { db, tokens }))
}

/// A conversation as the web app reads it.
#[derive(Debug, Serialize)]
pub struct ConversationBody {
    pub id: i64,
    pub title: String,
    pub member_ids: Vec<i64>,
    pub created_by: i64,
    pub created_at: String,
    pub last_activity_at: String,
}

impl From<Conversation> for ConversationBody {
    fn from(c: Conversation) -> Self {
        Self {
            id: c.id,
            title: c.title,
            member_ids: c.member_ids,
            created_by: c.created_by,
            created_at: rfc3339(c.created_at),
            last_activity_at: rfc3339(c.last_activity_at),
        }
    }
}

fn rfc3339(micros: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[derive(Debug, Serialize)]
pub struct Page {
    pub items: Vec<ConversationBody>,
    pub next_cursor: Option<String>,
}

/// Query parameters arrive as text, so a bad one is a clear 422, not a rejection.
#[derive(Debug, Deserialize)]
pub struct ListParams {
    limit: Option<String>,
    cursor: Option<String>,
}

async fn list(
    State(db): State<Database>,
    user: AuthUser,
    Query(params): Query<ListParams>,
) -> Result<ApiJson<Page>, ApiError> {
    let limit = match params.limit.as_deref() {
        None | Some("") => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::Unprocessable(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}"
                ))
            })?,
    };
    let after = match params.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            cursor::decode(c).ok_or_else(|| ApiError::Unprocessable("Invalid cursor".into()))?,
        ),
    };
    // One extra row tells whether another page follows.
    let mut rows = store::list(&db, user.user_id, after, limit + 1)
        .await
        .map_err(store_error)?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|c| {
            cursor::encode(PageAfter {
                last_activity_at: c.last_activity_at,
                id: c.id,
            })
        })
    } else {
        None
    };
    Ok(ApiJson(Page {
        items: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    title: String,
    #[serde(default)]
    member_ids: Vec<i64>,
}

async fn create(
    State(db): State<Database>,
    user: AuthUser,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let title = body.title.trim();
    if title.is_empty() {
        return Err(ApiError::Unprocessable("title must not be empty".into()));
    }
    if title.contains('\0') {
        // PostgreSQL cannot store NUL in text; neither backend accepts it.
        return Err(ApiError::Unprocessable(
            "title must not contain NUL characters".into(),
        ));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(ApiError::Unprocessable(format!(
            "title must be at most {MAX_TITLE_CHARS} characters"
        )));
    }
    if body.member_ids.len() > MAX_MEMBERS {
        return Err(ApiError::Unprocessable(format!(
            "at most {MAX_MEMBERS} member_ids"
        )));
    }
    let mut referenced = body.member_ids.clone();
    referenced.push(user.user_id);
    let unknown = store::unknown_users(&db, &referenced)
        .await
        .map_err(store_error)?;
    if unknown.contains(&user.user_id) {
        // A valid token for a user that no longer exists.
        return Err(ApiError::unauthorized("Could not validate credentials"));
    }
    if !unknown.is_empty() {
        let list: Vec<String> = unknown.iter().map(i64::to_string).collect();
        return Err(ApiError::Unprocessable(format!(
            "Unknown member_ids: {}",
            list.join(", ")
        )));
    }
    let conversation = store::create(&db, user.user_id, title, &body.member_ids)
        .await
        .map_err(store_error)?;
    let mut headers = HeaderMap::new();
    if let Ok(location) =
        HeaderValue::from_str(&format!("/api/v1/conversations/{}", conversation.id))
    {
        headers.insert(header::LOCATION, location);
    }
    Ok((
        StatusCode::CREATED,
        headers,
        ApiJson(ConversationBody::from(conversation)),
    )
        .into_response())
}

async fn fetch(
    State(db): State<Database>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<ApiJson<ConversationBody>, ApiError> {
    // A malformed id names no conversation the caller can see.
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound)?;
    let conversation = store::get(&db, user.user_id, id)
        .await
        .map_err(store_error)?
        .ok_or(ApiError::NotFound)?;
    Ok(ApiJson(conversation.into()))
}

/// What a store error means to the caller of these routes.
fn store_error(e: DbError) -> ApiError {
    match e {
        // A member was deleted between the check and the insert.
        DbError::MissingReference => ApiError::Unprocessable("A member does not exist".into()),
        DbError::InvalidData(_) => {
            ApiError::Unprocessable("The conversation contains text that cannot be stored".into())
        }
        other => other.into(),
    }
}
