//! The conversations function: the caller's conversations, listed newest
//! activity first with an opaque cursor, created, and fetched. A caller sees
//! only conversations it is a member of; any other is 404 (no leaking of ids).
//! The handlers are here; the cursor in [`cursor`], the queries in [`store`].

pub mod cursor;
pub mod store;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use shared::clock::Rfc3339;
use shared::config::JwtSettings;
use shared::db::Database;
use shared::tokens::{ApiTokens, AuthUser};
use shared::{ApiError, ApiJson, ApiQuery, Config, ErrorBody, Outcome, StartError};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::store::{Conversation, PageAfter};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_MEMBERS: usize = 100;

/// What a request amounted to, as the access log and the metrics name it.
pub mod outcome {
    use shared::Outcome;

    pub const LISTED: Outcome = Outcome::new("conversations_listed");
    pub const CREATED: Outcome = Outcome::new("conversation_created");
}

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

/// The routes' OpenAPI description (the shared layers' part comes from
/// [`shared::openapi::SharedLayers`]).
#[derive(OpenApi)]
#[openapi(paths(list, create, fetch))]
pub struct ApiDoc;

/// The function's routes for its configuration and the API tokens' keys.
pub async fn build(config: &Config, jwt: JwtSettings) -> Result<Router, StartError> {
    let tokens = ApiTokens::from_settings(&jwt);
    let db = Database::open(&config.database).await?;
    Ok(routes(AppState { db, tokens }))
}

/// A conversation as the web app reads it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationBody {
    pub id: i64,
    pub title: String,
    /// Every member, the creator included.
    pub member_ids: Vec<i64>,
    pub created_by: i64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Rfc3339,
    #[schema(value_type = String, format = DateTime)]
    pub last_activity_at: Rfc3339,
}

impl From<Conversation> for ConversationBody {
    fn from(c: Conversation) -> Self {
        Self {
            id: c.id,
            title: c.title,
            member_ids: c.member_ids,
            created_by: c.created_by,
            created_at: Rfc3339::from_unix_micros(c.created_at),
            last_activity_at: Rfc3339::from_unix_micros(c.last_activity_at),
        }
    }
}

/// A page of the caller's conversations, newest activity first.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page {
    pub items: Vec<ConversationBody>,
    /// The `cursor` of the next page; null on the last one.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Query parameters arrive as text, so a bad one is a clear 422, not a rejection.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    // Described by `page_size`.
    #[param(schema_with = page_size)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page; the first page when absent or empty.
    cursor: Option<String>,
}

/// `limit` as [`list`] reads it: a whole number from 1 to [`MAX_LIMIT`], or empty.
fn page_size() -> Schema {
    OneOfBuilder::new()
        .description(Some(format!(
            "Page size from 1 to {MAX_LIMIT}; {DEFAULT_LIMIT} when absent or empty"
        )))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(MAX_LIMIT)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([""])),
        )
        .build()
        .into()
}

/// The caller's conversations
#[utoipa::path(
    get,
    path = "/api/v1/conversations/",
    operation_id = "list_conversations",
    tag = "conversations",
    params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of conversations", body = Page),
        (status = 401, description = "Missing, malformed, expired, badly signed or ended API token (\"Token has been revoked\")", body = ErrorBody),
        (status = 422, description = "`limit` or `cursor` is invalid, or given twice", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
async fn list(
    State(db): State<Database>,
    user: AuthUser,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<(Outcome, ApiJson<Page>), ApiError> {
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
    let (standing, mut rows) = store::list(&db, &user, after, limit + 1).await?;
    standing.check()?;
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
    Ok((
        outcome::LISTED,
        ApiJson(Page {
            items: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        }),
    ))
}

/// A new conversation; the caller becomes a member.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// Trimmed; then 1 to 200 characters, without NUL.
    #[schema(min_length = 1)]
    title: String,
    /// Users to add beside the caller.
    #[serde(default)]
    #[schema(max_items = 100)]
    member_ids: Vec<i64>,
}

/// Create a conversation
#[utoipa::path(
    post,
    path = "/api/v1/conversations/",
    operation_id = "create_conversation",
    tag = "conversations",
    request_body = CreateBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = ConversationBody,
            headers(("Location" = String, description = "The new conversation's URL path")),
            links(("GetConversation" = (
                operation_id = "get_conversation",
                parameters(("id" = "$response.body#/id")),
                description = "The conversation just created"
            )))),
        (status = 401, description = "Missing, malformed, expired, badly signed or ended API token (\"Token has been revoked\"), or its user is gone", body = ErrorBody),
        (status = 422, description = "Invalid title or member_ids, unknown members, or text that cannot be stored", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
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
    let (standing, created) = store::create(&db, &user, title, &body.member_ids).await?;
    // A signed-out token, or a valid one of a user that no longer exists.
    standing.check()?;
    let conversation = match created {
        store::Created::Conversation(conversation) => conversation,
        store::Created::UnknownMembers(unknown) => {
            let list: Vec<String> = unknown.iter().map(i64::to_string).collect();
            return Err(ApiError::Unprocessable(format!(
                "Unknown member_ids: {}",
                list.join(", ")
            )));
        }
    };
    let mut headers = HeaderMap::new();
    if let Ok(location) =
        HeaderValue::from_str(&format!("/api/v1/conversations/{}", conversation.id))
    {
        headers.insert(header::LOCATION, location);
    }
    Ok((
        StatusCode::CREATED,
        headers,
        outcome::CREATED,
        ApiJson(ConversationBody::from(conversation)),
    )
        .into_response())
}

/// One of the caller's conversations
#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}",
    operation_id = "get_conversation",
    tag = "conversations",
    params(("id" = i64, Path, description = "The conversation's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The conversation", body = ConversationBody),
        (status = 401, description = "Missing, malformed, expired, badly signed or ended API token (\"Token has been revoked\")", body = ErrorBody),
        (status = 404, description = "No such conversation among the caller's (a malformed id too)", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
async fn fetch(
    State(db): State<Database>,
    user: AuthUser,
    id: Result<Path<String>, PathRejection>,
) -> Result<ApiJson<ConversationBody>, ApiError> {
    // A malformed id (not even UTF-8, say) names no conversation the caller can see.
    let id: i64 = id
        .ok()
        .and_then(|Path(id)| id.parse().ok())
        .ok_or(ApiError::NotFound)?;
    let (standing, conversation) = store::get(&db, &user, id).await?;
    standing.check()?;
    Ok(ApiJson(conversation.ok_or(ApiError::NotFound)?.into()))
}
