//! Verification of the upstream identity provider's ("GCGC") tokens: HS256
//! with `SSO_JWT_SECRET`, or RS256/ES256 keys from `SSO_JWKS_URL` (cached,
//! refetched on an unknown `kid` at most every few seconds, so rotation works).
//! `exp` is required, `nbf`/`iat` are honoured, `iss`/`aud` checked when
//! configured. `alg: none`, algorithm confusion and unexpected algorithms are
//! refused. Every refusal is a 401; an unreachable key server is a 503.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use crate::config::{Config, ConfigError, SsoKeys};
use crate::error::ApiError;
use crate::tokens::now_secs;

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 30;
/// GCGC tokens live up to 30 days; one that claims to live longer is refused,
/// which also bounds how long a replay mark is kept.
pub const MAX_LIFETIME_SECS: u64 = 31 * 24 * 3600;
/// An unknown `kid` refetches the key set at most this often.
pub const JWKS_MIN_REFRESH: Duration = Duration::from_secs(5);
/// Keys are refetched when older than this, so a key the provider withdrew
/// stops being trusted.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
const JWKS_TIMEOUT: Duration = Duration::from_millis(1500);

/// The claims a login reads from a verified GCGC token.
#[derive(Debug, Clone, Deserialize)]
pub struct SsoClaims {
    pub sub: String,
    pub exp: u64,
    #[serde(default)]
    pub iat: Option<u64>,
    #[serde(default)]
    pub jti: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Clone)]
pub struct SsoVerifier(Arc<Inner>);

struct Inner {
    keys: Keys,
    issuer: Option<String>,
    audience: Option<String>,
}

enum Keys {
    Secret(DecodingKey),
    Jwks(JwksCache),
}

fn invalid() -> ApiError {
    ApiError::unauthorized("Invalid SSO token")
}

impl SsoVerifier {
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let keys = match config.require_sso_keys()? {
            SsoKeys::Secret(secret) => {
                Keys::Secret(DecodingKey::from_secret(secret.expose().as_bytes()))
            }
            SsoKeys::JwksUrl(url) => Keys::Jwks(JwksCache::new(url.clone())),
        };
        Ok(Self(Arc::new(Inner {
            keys,
            issuer: config.sso_issuer.clone(),
            audience: config.sso_audience.clone(),
        })))
    }

    /// Verifies a GCGC token; returns its claims.
    pub async fn verify(&self, token: &str) -> Result<SsoClaims, ApiError> {
        // An unknown or absent `alg` (including "none") fails to parse here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        let (algorithm, key) = match &self.0.keys {
            Keys::Secret(key) => (Algorithm::HS256, key.clone()),
            Keys::Jwks(cache) => {
                let kid = header.kid.as_deref().ok_or_else(invalid)?;
                cache.key(kid).await?
            }
        };
        // Exactly the key's algorithm: an HS256 token "signed" with an RSA
        // public key, or any other swap, is refused.
        if header.alg != algorithm {
            return Err(invalid());
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        // A configured issuer or audience must be in the token, not merely
        // match when present.
        let mut required = vec!["exp", "sub"];
        match &self.0.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.0.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let claims = jsonwebtoken::decode::<SsoClaims>(token, &key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::unauthorized("Token has expired"),
                ErrorKind::ImmatureSignature => ApiError::unauthorized("Token is not valid yet"),
                _ => invalid(),
            })?
            .claims;
        let now = now_secs();
        if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECS) {
            return Err(ApiError::unauthorized("Token is not valid yet"));
        }
        if claims.exp.saturating_sub(now) > MAX_LIFETIME_SECS {
            return Err(ApiError::unauthorized("Token lifetime is too long"));
        }
        if claims.sub.trim().is_empty() {
            return Err(invalid());
        }
        Ok(claims)
    }
}

/// The identity provider's signing keys, fetched from `SSO_JWKS_URL`.
struct JwksCache {
    url: String,
    client: reqwest::Client,
    keys: RwLock<HashMap<String, (Algorithm, DecodingKey)>>,
    state: Mutex<FetchState>,
}

#[derive(Default)]
struct FetchState {
    /// The last fetch attempt, and whether it succeeded.
    last_attempt: Option<(Instant, bool)>,
    last_success: Option<Instant>,
}

impl JwksCache {
    fn new(url: String) -> Self {
        let client = reqwest::Client::builder()
            .timeout(JWKS_TIMEOUT)
            .connect_timeout(JWKS_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            url,
            client,
            keys: RwLock::default(),
            state: Mutex::default(),
        }
    }

    async fn key(&self, kid: &str) -> Result<(Algorithm, DecodingKey), ApiError> {
        let stale = |state: &FetchState| {
            state
                .last_success
                .is_none_or(|t| t.elapsed() >= JWKS_MAX_AGE)
        };
        if let Some(found) = self.keys.read().await.get(kid).cloned()
            && !stale(&*self.state.lock().await)
        {
            return Ok(found);
        }
        // An unknown kid (a rotation) or an old key set: fetch again, one
        // request at a time and at most every JWKS_MIN_REFRESH.
        let mut state = self.state.lock().await;
        let known = self.keys.read().await.get(kid).cloned();
        if known.is_some() && !stale(&state) {
            return known.ok_or_else(invalid);
        }
        let may_fetch = state
            .last_attempt
            .is_none_or(|(t, _)| t.elapsed() >= JWKS_MIN_REFRESH);
        if may_fetch {
            match self.fetch().await {
                Ok(keys) => {
                    *self.keys.write().await = keys;
                    state.last_attempt = Some((Instant::now(), true));
                    state.last_success = Some(Instant::now());
                }
                Err(e) => {
                    state.last_attempt = Some((Instant::now(), false));
                    // A stale but known key still verifies while the server is away.
                    if let Some(found) = known {
                        return Ok(found);
                    }
                    return Err(e);
                }
            }
        } else if let Some((_, false)) = state.last_attempt {
            // The key server failed a moment ago: say so, not "unknown key".
            return known.ok_or_else(|| ApiError::unavailable("Identity provider keys"));
        }
        self.keys
            .read()
            .await
            .get(kid)
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("Unknown signing key"))
    }

    async fn fetch(&self) -> Result<HashMap<String, (Algorithm, DecodingKey)>, ApiError> {
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<serde_json::Value>,
        }
        let unavailable = |e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, "cannot fetch the SSO signing keys");
            ApiError::unavailable("Identity provider keys")
        };
        let set: Set = self
            .client
            .get(&self.url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| unavailable(&e))?
            .json()
            .await
            .map_err(|e| unavailable(&e))?;
        // One odd key does not spoil the others.
        let keys: HashMap<_, _> = set
            .keys
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let algorithm = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                        Algorithm::ES256
                    }
                    _ => return None,
                };
                // A key published for another algorithm is not used for this one.
                let agrees = match jwk.common.key_algorithm {
                    None => true,
                    Some(KeyAlgorithm::RS256) => algorithm == Algorithm::RS256,
                    Some(KeyAlgorithm::ES256) => algorithm == Algorithm::ES256,
                    Some(_) => false,
                };
                if !agrees {
                    return None;
                }
                let key = DecodingKey::from_jwk(&jwk).ok()?;
                Some((kid, (algorithm, key)))
            })
            .collect();
        tracing::info!(keys = keys.len(), "fetched the SSO signing keys");
        Ok(keys)
    }
}
