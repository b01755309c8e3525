//! API tokens: HS256 JWTs signed with `JWT_SECRET`, and the extractor that
//! every protected route takes. Every way a token can be wrong is a 401 with
//! `WWW-Authenticate: Bearer`, never a 500.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use http::header::AUTHORIZATION;
use http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::clock::{LEEWAY_SECS, unix_secs};
use crate::config::{Config, ConfigError};
use crate::error::ApiError;

pub const API_ISSUER: &str = "tms-chat";
pub const API_AUDIENCE: &str = "tms-chat-api";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiClaims {
    pub sub: String,
    pub exp: u64,
    pub iat: u64,
    pub iss: String,
    pub aud: String,
    pub jti: String,
}

/// Issues and checks API tokens. Cheap to clone.
#[derive(Clone)]
pub struct ApiTokens(Arc<Keys>);

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    lifetime: Duration,
}

/// A freshly issued API token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
}

impl ApiTokens {
    pub fn new(secret: &[u8], lifetime: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[API_ISSUER]);
        validation.set_audience(&[API_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.leeway = LEEWAY_SECS;
        Self(Arc::new(Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            lifetime,
        }))
    }

    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let secret = config.require_jwt_secret()?;
        Ok(Self::new(secret.expose().as_bytes(), config.jwt_expiration))
    }

    pub fn issue(&self, user_id: i64) -> Result<IssuedToken, ApiError> {
        let iat = unix_secs();
        let expires_in = self.0.lifetime.as_secs();
        let claims = ApiClaims {
            sub: user_id.to_string(),
            exp: iat + expires_in,
            iat,
            iss: API_ISSUER.into(),
            aud: API_AUDIENCE.into(),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.0.encoding)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("cannot sign an API token: {e}")))?;
        Ok(IssuedToken { token, expires_in })
    }

    pub fn verify(&self, token: &str) -> Result<ApiClaims, ApiError> {
        jsonwebtoken::decode::<ApiClaims>(token, &self.0.decoding, &self.0.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::unauthorized("Token has expired"),
                _ => ApiError::unauthorized("Could not validate credentials"),
            })
    }
}

/// The authenticated caller of a protected route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    pub user_id: i64,
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("Not authenticated"))?
        .to_str()
        .map_err(|_| ApiError::unauthorized("Invalid authorization header"))?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("Invalid authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::unauthorized("Invalid authentication scheme"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::unauthorized("Not authenticated"));
    }
    Ok(token)
}

impl<S> FromRequestParts<S> for AuthUser
where
    ApiTokens: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts)?;
        let claims = ApiTokens::from_ref(state).verify(token)?;
        let user_id = claims
            .sub
            .parse()
            .map_err(|_| ApiError::unauthorized("Could not validate credentials"))?;
        Ok(Self { user_id })
    }
}
