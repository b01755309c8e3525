//! The sso-login function: `POST /api/v1/auth/login/sso` exchanges a GCGC
//! token for an API token, once. Verify, then claim (atomically, in the replay
//! store), then create or update the user, then issue the token. A login that
//! fails after its claim releases it, so the user can retry; a login that
//! succeeded never does. No token is issued without a successful claim.

use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use shared::db::{Database, User};
use shared::replay::{ReplayStore, replay_key};
use shared::sso::{LEEWAY_SECS, SsoClaims, SsoVerifier};
use shared::tokens::{ApiTokens, now_secs};
use shared::{ApiError, ApiJson, Config, StartError};

#[derive(Clone, FromRef)]
pub struct AppState {
    pub verifier: SsoVerifier,
    pub replay: ReplayStore,
    pub db: Database,
    pub tokens: ApiTokens,
    pub key_prefix: KeyPrefix,
}

#[derive(Clone)]
pub struct KeyPrefix(pub String);

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/auth/login/sso", post(login))
        .with_state(state)
}

/// The function's routes for its configuration: `JWT_SECRET`, the SSO keys,
/// `REDIS_URL` and `DATABASE_URL`.
pub async fn build(config: &Config) -> Result<Router, StartError> {
    let state = AppState {
        verifier: SsoVerifier::from_config(config)?,
        tokens: ApiTokens::from_config(config)?,
        replay: ReplayStore::from_config(config)?,
        db: Database::open(config).await?,
        key_prefix: KeyPrefix(config.redis_key_prefix.clone()),
    };
    Ok(routes(state))
}

#[derive(Debug, Deserialize)]
pub struct LoginBody {
    token: String,
}

#[derive(Debug, Serialize)]
pub struct LoginResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    user: UserBody,
}

/// The user as the web app reads it (the upstream id stays inside).
#[derive(Debug, Serialize)]
pub struct UserBody {
    id: i64,
    email: Option<String>,
    name: Option<String>,
}

impl From<User> for UserBody {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            email: user.email,
            name: user.name,
        }
    }
}

async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<ApiJson<LoginResponse>, ApiError> {
    let token = body.token.trim();
    if token.is_empty() {
        return Err(ApiError::unauthorized("Invalid SSO token"));
    }
    // An invalid token burns nothing: verification comes first.
    let claims = state.verifier.verify(token).await?;
    // From the claim on, the login runs to its end even if the client goes
    // away: a dropped request must not leave a mark that no login used.
    let token = token.to_owned();
    tokio::spawn(async move { claim_and_issue(&state, &token, claims).await })
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("login task failed: {e}")))?
        .map(ApiJson)
}

async fn claim_and_issue(
    state: &AppState,
    token: &str,
    claims: SsoClaims,
) -> Result<LoginResponse, ApiError> {
    // The mark lives as long as the token could still be accepted.
    let ttl = Duration::from_secs(claims.exp.saturating_sub(now_secs()) + LEEWAY_SECS);
    let key = replay_key(&state.key_prefix.0, claims.jti.as_deref(), token);
    let claim = state.replay.claim(&key, ttl).await?;

    let outcome = async {
        let user = state
            .db
            .upsert_user(&claims.sub, claims.email.as_deref(), claims.name.as_deref())
            .await?;
        let issued = state.tokens.issue(user.id)?;
        Ok::<_, ApiError>(LoginResponse {
            access_token: issued.token,
            token_type: "bearer",
            expires_in: issued.expires_in,
            user: user.into(),
        })
    }
    .await;
    match outcome {
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
