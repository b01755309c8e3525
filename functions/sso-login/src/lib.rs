//! The sso-login function: `POST /api/v1/auth/login/sso` exchanges a GCGC
//! token for an API token, once. A login reads top to bottom in [`login`]:
//! verify the token ([`verify`]), claim it in the replay store ([`replay`]),
//! create or update the user ([`users`]), complete the claim, issue the API
//! token. No API token is issued without a completed claim; a login that
//! fails after its claim gives it back so the user can retry.

pub mod replay;
pub mod users;
pub mod verify;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use shared::db::{Database, DbError};
use shared::tokens::ApiTokens;
use shared::{ApiError, ApiJson, Config, ErrorBody, StartError};
use utoipa::{OpenApi, ToSchema};

use crate::replay::{ClaimError, ReplayStore};
use crate::users::User;
use crate::verify::{SsoVerifier, VerifiedToken, VerifyError};

pub const ROUTE: &str = "/api/v1/auth/login/sso";

#[derive(Clone, FromRef)]
pub struct AppState {
    pub verifier: SsoVerifier,
    pub replay: ReplayStore,
    pub db: Database,
    pub tokens: ApiTokens,
}

pub fn routes(state: AppState) -> Router {
    Router::new().route(ROUTE, post(login)).with_state(state)
}

/// The route's OpenAPI description (the shared layers' part comes from
/// [`shared::openapi::SharedLayers`]).
#[derive(OpenApi)]
#[openapi(paths(login))]
pub struct ApiDoc;

/// The function's routes for its configuration: `JWT_SECRET`, the SSO keys,
/// `REDIS_URL` and `DATABASE_URL`.
pub async fn build(config: &Config) -> Result<Router, StartError> {
    let state = AppState {
        verifier: SsoVerifier::from_config(config)?,
        tokens: ApiTokens::from_config(config)?,
        replay: ReplayStore::from_config(config)?,
        db: Database::open(config).await?,
    };
    Ok(routes(state))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginBody {
    /// The GCGC token (a JWT) from the identity provider; usable once.
    token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// The API token, for `Authorization: Bearer`.
    access_token: String,
    #[schema(value_type = String, example = "bearer")]
    token_type: &'static str,
    /// Seconds until the API token expires.
    expires_in: u64,
    user: User,
}

/// Exchange a GCGC token for an API token, once
#[utoipa::path(
    post,
    path = "/api/v1/auth/login/sso",
    operation_id = "login_sso",
    tag = "sso-login",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 401, description = "Invalid, expired or already used token (\"Token has already been used\")", body = ErrorBody),
        (status = 503, description = "The replay protection store, the database or the identity provider's keys are unavailable", body = ErrorBody),
    )
)]
async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<ApiJson<LoginResponse>, ApiError> {
    let token = body.token.trim();
    if token.is_empty() {
        return Err(VerifyError::Invalid.into());
    }
    // An invalid token burns nothing: verification comes first.
    let token = state.verifier.verify(token).await?;
    // From the claim on, the login runs to its end even if the client goes
    // away, so that its claim is completed or given back, not left hanging.
    tokio::spawn(async move { claim_and_issue(&state, &token).await })
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("login task failed: {e}")))?
        .map(ApiJson)
}

async fn claim_and_issue(
    state: &AppState,
    token: &VerifiedToken,
) -> Result<LoginResponse, ApiError> {
    let claim = state.replay.claim(token).await?;
    let issued = async {
        let claims = &token.claims;
        let user = users::upsert_user(
            &state.db,
            &claims.sub,
            claims.email.as_deref(),
            claims.name.as_deref(),
        )
        .await
        .map_err(user_error)?;
        // The token is signed first; it leaves only once the claim is complete.
        let issued = state.tokens.issue(user.id)?;
        state.replay.complete(&claim).await?;
        Ok::<_, ApiError>(LoginResponse {
            access_token: issued.token,
            token_type: "bearer",
            expires_in: issued.expires_in,
            user,
        })
    }
    .await;
    match issued {
        Ok(response) => {
            tracing::info!(user_id = response.user.id, "sso login");
            Ok(response)
        }
        Err(e) => {
            // The user did not get in: let them retry with the same token.
            state.replay.release(&claim).await;
            Err(e)
        }
    }
}

impl From<VerifyError> for ApiError {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::KeysUnavailable => ApiError::unavailable("Identity provider keys"),
            refused => ApiError::unauthorized(refused.to_string()),
        }
    }
}

impl From<ClaimError> for ApiError {
    fn from(e: ClaimError) -> Self {
        match e {
            ClaimError::AlreadyUsed => ApiError::unauthorized(e.to_string()),
            ClaimError::Unavailable => ApiError::unavailable("Replay protection store"),
        }
    }
}

/// The user's fields come from the token's claims: data the database refuses
/// makes the token invalid, not the request malformed.
fn user_error(e: DbError) -> ApiError {
    match e {
        DbError::InvalidData(_) => VerifyError::Invalid.into(),
        other => other.into(),
    }
}
