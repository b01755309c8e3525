//! The sso-login function: `POST /api/v1/auth/login/sso` exchanges a GCGC
//! token for an API token, once; `POST /api/v1/auth/logout` and
//! `/api/v1/auth/logout/all` end API tokens early ([`sessions`]). A login reads top to bottom in [`login`]:
//! verify the token ([`verify`]), claim it in the replay store ([`replay`]),
//! record the login and create or update the user ([`users`]), issue the API
//! token, complete the claim (not awaited). No API token is issued without a
//! recorded login; a login that fails after its claim gives it back so the
//! user can retry.

pub mod replay;
pub mod sessions;
pub mod users;
pub mod verify;

use std::time::Instant;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use shared::config::{ConfigError, JwtSettings, RedisSettings, Section, SsoSettings, Vars};
use shared::db::{Database, DbError};
use shared::metrics::WarningMetric;
use shared::redis_settings;
use shared::tokens::{ApiTokens, AuthUser};
use shared::{ApiError, ApiJson, Config, ErrorBody, Outcome, StartError};
use utoipa::{OpenApi, ToSchema};

use crate::replay::{ClaimError, ReplayStore};
use crate::users::{Recorded, User};
use crate::verify::{SsoVerifier, VerifiedToken, VerifyError};

pub const ROUTE: &str = "/api/v1/auth/login/sso";
/// Sign out: ends the presented API token.
pub const SIGN_OUT_ROUTE: &str = "/api/v1/auth/logout";
/// Sign out everywhere: ends every API token of the caller issued so far.
pub const SIGN_OUT_EVERYWHERE_ROUTE: &str = "/api/v1/auth/logout/all";

/// What a login amounted to, as the access log and the metrics name it.
pub mod outcome {
    use shared::Outcome;

    pub const SUCCEEDED: Outcome = Outcome::new("login_succeeded");
    pub const INVALID_TOKEN: Outcome = Outcome::new("login_invalid_token");
    pub const REPLAY_BLOCKED: Outcome = Outcome::new("login_replay_blocked");
    /// A replay that Redis let through and the database's record refused:
    /// the replay store lost a mark. Counted apart, for the operator.
    pub const REPLAY_BLOCKED_BY_DATABASE: Outcome =
        Outcome::new("login_replay_blocked_by_database");
    pub const REPLAY_STORE_UNAVAILABLE: Outcome = Outcome::new("login_replay_store_unavailable");
    pub const DATABASE_UNAVAILABLE: Outcome = Outcome::new("login_database_unavailable");
    pub const KEYS_UNAVAILABLE: Outcome = Outcome::new("login_keys_unavailable");
    pub const SIGNED_OUT: Outcome = Outcome::new("signed_out");
    pub const SIGNED_OUT_EVERYWHERE: Outcome = Outcome::new("signed_out_everywhere");
}

#[derive(Clone, FromRef)]
pub struct AppState {
    pub verifier: SsoVerifier,
    pub replay: ReplayStore,
    pub db: Database,
    pub tokens: ApiTokens,
    pub sweeps: users::Sweeps,
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route(ROUTE, post(login))
        .route(SIGN_OUT_ROUTE, post(sign_out))
        .route(SIGN_OUT_EVERYWHERE_ROUTE, post(sign_out_everywhere))
        .with_state(state)
}

/// The route's OpenAPI description (the shared layers' part comes from
/// [`shared::openapi::SharedLayers`]).
#[derive(OpenApi)]
#[openapi(paths(login, sign_out, sign_out_everywhere))]
pub struct ApiDoc;

/// The sections of the settings a login uses: the API tokens' keys, the
/// GCGC keys (none of them one of the former) and the replay store.
#[derive(Debug, Clone)]
pub struct Settings {
    pub jwt: JwtSettings,
    pub sso: SsoSettings,
    pub redis: RedisSettings,
}

impl Section for Settings {
    fn from_vars(vars: &Vars, config: &Config) -> Result<Self, ConfigError> {
        let (jwt, sso, redis): (JwtSettings, SsoSettings, RedisSettings) =
            Section::from_vars(vars, config)?;
        sso.check_apart_from(&jwt)?;
        Ok(Self { jwt, sso, redis })
    }

    fn reads(name: &str) -> bool {
        <(JwtSettings, SsoSettings, RedisSettings)>::reads(name)
    }
}

/// The function's routes for its configuration and its [`Settings`].
pub async fn build(config: &Config, settings: Settings) -> Result<Router, StartError> {
    let state = AppState {
        verifier: SsoVerifier::from_settings(&settings.sso, config.app_env),
        tokens: ApiTokens::from_settings(&settings.jwt),
        replay: ReplayStore::from_settings(&settings.redis)?,
        db: Database::open(&config.database).await?,
        sweeps: users::Sweeps::default(),
    };
    // What the replay store's settings can do to the marks, told at start
    // (in the background; it also opens the connection the first login uses).
    if let Some(redis) = state.replay.redis_client() {
        redis_settings::report_at_start(
            redis,
            std::sync::Arc::new(redis_settings::Reporter::new(WarningMetric::new(config))),
        );
    }
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
) -> Result<(Outcome, ApiJson<LoginResponse>), LoginError> {
    let token = body.token.trim();
    if token.is_empty() {
        return Err(VerifyError::Invalid.into());
    }
    // An invalid token burns nothing: verification comes first.
    let token = state.verifier.verify(token).await?;
    // From the claim on, the login runs to its end even if the client goes
    // away, so that its claim is completed or given back, not left hanging.
    // Boxed: tokio moves a task's future by value (into the task, and its
    // stage when it ends): a pointer rather than the whole login's state.
    let request_id = shared::request_scope::current_id();
    let (answer, answered) = tokio::sync::oneshot::channel();
    tokio::spawn(Box::pin(async move {
        let result = claim_and_issue(&state, &token).await;
        if let Err(Ok(response)) = answer.send(result) {
            // No access line is written for a request whose client left:
            // this line is the login's trace (its record and its API token
            // exist all the same).
            tracing::warn!(
                request_id = request_id.as_deref().unwrap_or("-"),
                user_id = response.user.id,
                "login completed after its client left"
            );
        }
    }));
    let response = answered.await.map_err(|_| {
        ApiError::Internal(anyhow::anyhow!("the login's task ended without an answer"))
    })??;
    shared::request_scope::names_user(response.user.id);
    Ok((outcome::SUCCEEDED, ApiJson(response)))
}

async fn claim_and_issue(
    state: &AppState,
    token: &VerifiedToken,
) -> Result<LoginResponse, LoginError> {
    let claim = state.replay.claim(token).await?;
    let claims = &token.claims;
    let sent = Instant::now();
    let recorded = users::record_login(
        &state.db,
        &claim.record(),
        &claims.sub,
        claims.email.as_deref(),
        claims.name.as_deref(),
    )
    .await;
    let user = match recorded {
        Ok(Recorded::Login(user)) => user,
        Ok(Recorded::AlreadyUsed) => {
            // Redis let a used token through: its mark was lost (evicted, a
            // failover, a restart). The claim is given back rather than
            // kept: the record may be an unanswered login's, about to be
            // forgotten, and a done mark would then lock the token out.
            tracing::warn!(
                "replay refused by the database's record: the replay store had lost the token's mark"
            );
            state.replay.release(&claim).await;
            return Err(LoginError::UsedPerDatabase);
        }
        Ok(Recorded::TooLate) => {
            state.replay.release(&claim).await;
            return Err(LoginError::User(DbError::Unavailable));
        }
        Err(e) => {
            // The statement may still have written (its answer lost, or it
            // ran after the caller stopped waiting, up to its deadline):
            // the record is forgotten once that can no longer happen.
            users::forget_login_later(
                state.db.clone(),
                &claim,
                sent + users::STATEMENT_SETTLED_AFTER,
            );
            state.replay.release(&claim).await;
            return Err(LoginError::User(e));
        }
    };
    let issued = match state.tokens.issue(user.id, user.token_generation) {
        Ok(issued) => issued,
        Err(e) => {
            users::forget_login_later(state.db.clone(), &claim, Instant::now());
            state.replay.release(&claim).await;
            return Err(e.into());
        }
    };
    // The record makes the token used; the done mark lets Redis alone refuse
    // its replays. Without it (Redis failed just now) they reach the record.
    // Not sent before the record commits: a done mark outlives an instance
    // that dies before its record is written, and would lock the token out.
    // Not awaited: it decides nothing, so the login answers after two round
    // trips (the claim, the record), not three. Until it lands, the pending
    // claim refuses replays as well (docs/architecture.md, "The login's
    // critical path").
    let replay = state.replay.clone();
    tokio::spawn(async move {
        if let Err(e) = replay.complete(&claim).await {
            tracing::warn!(error = %e, "login recorded; the replay store's mark was not completed");
        }
    });
    state.sweeps.sweep_if_due(&state.db);
    Ok(LoginResponse {
        access_token: issued.token,
        token_type: "bearer",
        expires_in: issued.expires_in,
        user,
    })
}

/// End this API token
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    operation_id = "logout",
    tag = "sso-login",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out: the token is refused from now until its own expiry, on every instance"),
        (status = 401, description = "Missing, malformed, expired, badly signed or already ended API token (\"Token has been revoked\")", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
async fn sign_out(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<(StatusCode, Outcome, ()), ApiError> {
    sessions::sign_out(&state.db, &caller).await?;
    state.sweeps.sweep_if_due(&state.db);
    Ok((StatusCode::NO_CONTENT, outcome::SIGNED_OUT, ()))
}

/// End every API token of the caller issued so far (sign out everywhere)
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout/all",
    operation_id = "logout_all",
    tag = "sso-login",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out everywhere: every token of the caller issued up to now is refused; tokens issued afterwards work"),
        (status = 401, description = "Missing, malformed, expired, badly signed or already ended API token (\"Token has been revoked\")", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
async fn sign_out_everywhere(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<(StatusCode, Outcome, ()), ApiError> {
    sessions::sign_out_everywhere(&state.db, &caller).await?;
    Ok((StatusCode::NO_CONTENT, outcome::SIGNED_OUT_EVERYWHERE, ()))
}

/// Why a login failed, kept apart up to the response so that each failure
/// has both its status (`From<LoginError> for ApiError`) and its outcome.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Claim(#[from] ClaimError),
    /// Used, by the database's record of logins (Redis had lost the mark).
    #[error("used, per the database's record of logins")]
    UsedPerDatabase,
    #[error(transparent)]
    User(DbError),
    #[error(transparent)]
    Other(#[from] ApiError),
}

impl LoginError {
    fn outcome(&self) -> Option<Outcome> {
        match self {
            Self::Verify(VerifyError::KeysUnavailable) => Some(outcome::KEYS_UNAVAILABLE),
            Self::Verify(_) | Self::User(DbError::InvalidData(_)) => Some(outcome::INVALID_TOKEN),
            Self::Claim(ClaimError::AlreadyUsed) => Some(outcome::REPLAY_BLOCKED),
            Self::UsedPerDatabase => Some(outcome::REPLAY_BLOCKED_BY_DATABASE),
            Self::Claim(ClaimError::Unavailable) => Some(outcome::REPLAY_STORE_UNAVAILABLE),
            Self::User(DbError::Unavailable) => Some(outcome::DATABASE_UNAVAILABLE),
            // A bug: the 5xx figures count it.
            Self::User(_) | Self::Other(_) => None,
        }
    }
}

impl IntoResponse for LoginError {
    fn into_response(self) -> Response {
        (self.outcome(), ApiError::from(self)).into_response()
    }
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::Verify(e) => e.into(),
            LoginError::Claim(e) => e.into(),
            LoginError::UsedPerDatabase => ClaimError::AlreadyUsed.into(),
            LoginError::User(e) => user_error(e),
            LoginError::Other(e) => e,
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

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn each_failure_has_its_status_and_outcome() {
        let cases = [
            (
                LoginError::Verify(VerifyError::Expired),
                StatusCode::UNAUTHORIZED,
                Some(outcome::INVALID_TOKEN),
            ),
            (
                LoginError::Verify(VerifyError::UnknownKey),
                StatusCode::UNAUTHORIZED,
                Some(outcome::INVALID_TOKEN),
            ),
            (
                LoginError::Verify(VerifyError::KeysUnavailable),
                StatusCode::SERVICE_UNAVAILABLE,
                Some(outcome::KEYS_UNAVAILABLE),
            ),
            (
                LoginError::Claim(ClaimError::AlreadyUsed),
                StatusCode::UNAUTHORIZED,
                Some(outcome::REPLAY_BLOCKED),
            ),
            (
                LoginError::UsedPerDatabase,
                StatusCode::UNAUTHORIZED,
                Some(outcome::REPLAY_BLOCKED_BY_DATABASE),
            ),
            (
                LoginError::Claim(ClaimError::Unavailable),
                StatusCode::SERVICE_UNAVAILABLE,
                Some(outcome::REPLAY_STORE_UNAVAILABLE),
            ),
            (
                LoginError::User(DbError::Unavailable),
                StatusCode::SERVICE_UNAVAILABLE,
                Some(outcome::DATABASE_UNAVAILABLE),
            ),
            (
                LoginError::User(DbError::InvalidData("NUL in text".into())),
                StatusCode::UNAUTHORIZED,
                Some(outcome::INVALID_TOKEN),
            ),
            (
                LoginError::Other(ApiError::Internal(anyhow::anyhow!("a bug"))),
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
            ),
        ];
        for (error, status, expected) in cases {
            let label = format!("{error:?}");
            let response = error.into_response();
            assert_eq!(response.status(), status, "{label}");
            assert_eq!(
                response.extensions().get::<Outcome>().copied(),
                expected,
                "{label}"
            );
        }
    }
}
