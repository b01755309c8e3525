//! Verification of the upstream identity provider's ("GCGC") tokens: HS256
//! with `SSO_JWT_SECRET`, or RS256/ES256 keys from `SSO_JWKS_URL`. `exp` and
//! `sub` are required, `nbf`/`iat` honoured, `iss`/`aud` required and checked
//! when configured. `alg: none`, algorithm confusion and unexpected
//! algorithms are refused, and so are claims that the database could not
//! store (NUL), since they come from the token.
//!
//! The key set is cached. A refetch (an unknown `kid`, or keys older than
//! [`JWKS_MAX_AGE`]) runs once at a time and never blocks a login whose key is
//! known: such a login reads a snapshot of the keys, and an old snapshot is
//! refreshed in the background. Unknown `kid`s are remembered for a while, so
//! a storm of them costs the identity provider at most one fetch per
//! [`JWKS_MIN_REFRESH`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use shared::clock::{LEEWAY_SECS, unix_secs};
use shared::config::{AppEnv, SsoKeys, SsoSettings};

/// GCGC tokens live up to 30 days; one that claims to live longer is refused,
/// which also bounds how long a replay mark is kept.
pub const MAX_LIFETIME_SECS: u64 = 31 * 24 * 3600;
/// Key set fetches happen at most this often (an unknown `kid` asks for one).
pub const JWKS_MIN_REFRESH: Duration = Duration::from_secs(5);
/// Keys are refetched when older than this, so a key the provider withdrew
/// stops being trusted.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// How long an unknown `kid` is answered from memory, without a fetch.
pub const UNKNOWN_KID_MEMORY: Duration = JWKS_MIN_REFRESH;
const JWKS_TIMEOUT: Duration = Duration::from_millis(1500);
/// Unknown `kid`s remembered at most (a bound against memory exhaustion).
const MAX_UNKNOWN_KIDS: usize = 1024;

/// Why a GCGC token was refused. Each is a 401, but for keys that cannot be
/// fetched (503: the client may retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("Invalid SSO token")]
    Invalid,
    #[error("Token has expired")]
    Expired,
    #[error("Token is not valid yet")]
    NotYetValid,
    #[error("Token lifetime is too long")]
    LifetimeTooLong,
    #[error("Unknown signing key")]
    UnknownKey,
    #[error("Identity provider keys unavailable")]
    KeysUnavailable,
}

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

/// A token that passed verification: its claims, and its signed part (header
/// and payload), which identifies a token without a `jti`.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub claims: SsoClaims,
    pub signed_part: String,
}

#[derive(Clone)]
pub struct SsoVerifier(Arc<Inner>);

struct Inner {
    keys: Keys,
    /// The checks of the keys' algorithms (HS256 for the secret; RS256 and
    /// ES256 from a key set), each built once.
    validations: Vec<Validation>,
}

enum Keys {
    Secret(DecodingKey),
    Jwks(Arc<JwksCache>),
}

impl SsoVerifier {
    /// The verifier the settings describe (`production`: a JWKS is fetched over HTTPS only).
    pub fn from_settings(sso: &SsoSettings, app_env: AppEnv) -> Self {
        let (keys, algorithms) = match &sso.keys {
            SsoKeys::Secret(secret) => {
                shared::hmac_keys::prepare(secret.expose().as_bytes());
                let key = DecodingKey::from_secret(secret.expose().as_bytes());
                (Keys::Secret(key), &[Algorithm::HS256][..])
            }
            SsoKeys::JwksUrl(url) => {
                let cache = JwksCache::new(url.clone(), app_env == AppEnv::Production);
                (
                    Keys::Jwks(Arc::new(cache)),
                    &[Algorithm::RS256, Algorithm::ES256][..],
                )
            }
        };
        let validations = algorithms
            .iter()
            .map(|algorithm| validation(*algorithm, sso))
            .collect();
        Self(Arc::new(Inner { keys, validations }))
    }

    /// Verifies a GCGC token.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        // Exactly the key's algorithm: an HS256 token "signed" with an RSA
        // public key, or any other swap, is refused. An unknown or absent
        // `alg` (including "none") fails to parse.
        let (algorithm, key) = match &self.0.keys {
            // The validation's one algorithm is the secret's: jsonwebtoken
            // refuses any other `alg` as it reads the header.
            Keys::Secret(key) => (Algorithm::HS256, Cow::Borrowed(key)),
            Keys::Jwks(cache) => {
                let header =
                    jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Invalid)?;
                let kid = header.kid.as_deref().ok_or(VerifyError::Invalid)?;
                let (algorithm, key) = cache.key(kid).await?;
                if header.alg != algorithm {
                    return Err(VerifyError::Invalid);
                }
                (algorithm, Cow::Owned(key))
            }
        };
        let validation = self
            .0
            .validations
            .iter()
            .find(|v| v.algorithms == [algorithm])
            .ok_or(VerifyError::Invalid)?;
        let claims = jsonwebtoken::decode::<SsoClaims>(token, &key, validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => VerifyError::Expired,
                ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
                _ => VerifyError::Invalid,
            })?
            .claims;
        let now = unix_secs();
        if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECS) {
            return Err(VerifyError::NotYetValid);
        }
        if claims.exp.saturating_sub(now) > MAX_LIFETIME_SECS {
            return Err(VerifyError::LifetimeTooLong);
        }
        let texts = [
            Some(&claims.sub),
            claims.email.as_ref(),
            claims.name.as_ref(),
        ];
        // NUL cannot be stored in PostgreSQL text: such a token is not one we accept.
        if claims.sub.trim().is_empty() || texts.into_iter().flatten().any(|t| t.contains('\0')) {
            return Err(VerifyError::Invalid);
        }
        let signed_part = token
            .rsplit_once('.')
            .map_or(token, |(signed, _)| signed)
            .to_owned();
        Ok(VerifiedToken {
            claims,
            signed_part,
        })
    }
}

/// The checks of a token signed with `algorithm`, by the settings.
fn validation(algorithm: Algorithm, sso: &SsoSettings) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    // A configured issuer or audience must be in the token, not merely
    // match when present.
    let mut required = vec!["exp", "sub"];
    match &sso.issuer {
        Some(iss) => {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        None => validation.iss = None,
    }
    match &sso.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

type KeyMap = HashMap<String, (Algorithm, DecodingKey)>;

/// The identity provider's signing keys, fetched from `SSO_JWKS_URL`.
struct JwksCache {
    url: String,
    client: reqwest::Client,
    /// The last fetched key set. Readers clone the `Arc` and let go at once:
    /// this lock is never held across an await.
    snapshot: RwLock<Arc<Snapshot>>,
    /// Held by the one request that fetches; only requests with an unknown
    /// `kid` ever wait for it.
    fetch: Arc<tokio::sync::Mutex<FetchState>>,
    unknown_kids: StdMutex<HashMap<String, Instant>>,
}

#[derive(Default)]
struct Snapshot {
    keys: KeyMap,
    fetched_at: Option<Instant>,
}

#[derive(Default)]
struct FetchState {
    /// The last fetch attempt, and whether it succeeded.
    last_attempt: Option<(Instant, bool)>,
}

impl JwksCache {
    fn new(url: String, https_only: bool) -> Self {
        let client = reqwest::Client::builder()
            .timeout(JWKS_TIMEOUT)
            .connect_timeout(JWKS_TIMEOUT)
            // The keys decide who logs in: never from wherever a redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(https_only)
            .build()
            .unwrap_or_default();
        Self {
            url,
            client,
            snapshot: RwLock::default(),
            fetch: Arc::default(),
            unknown_kids: StdMutex::default(),
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(|p| p.into_inner()))
    }

    async fn key(self: &Arc<Self>, kid: &str) -> Result<(Algorithm, DecodingKey), VerifyError> {
        let snapshot = self.snapshot();
        if let Some(found) = snapshot.keys.get(kid) {
            if snapshot
                .fetched_at
                .is_none_or(|t| t.elapsed() >= JWKS_MAX_AGE)
            {
                self.refresh_in_background();
            }
            return Ok(found.clone());
        }
        if self.recently_unknown(kid) {
            return Err(VerifyError::UnknownKey);
        }
        // An unknown kid (a rotation, or nothing): one fetch at a time.
        let mut state = self.fetch.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(found) = self.snapshot().keys.get(kid) {
            return Ok(found.clone());
        }
        let may_fetch = state
            .last_attempt
            .is_none_or(|(t, _)| t.elapsed() >= JWKS_MIN_REFRESH);
        if may_fetch {
            self.fetch_into(&mut state).await?;
        } else if let Some((_, false)) = state.last_attempt {
            // The key server failed a moment ago: say so, not "unknown key".
            return Err(VerifyError::KeysUnavailable);
        }
        drop(state);
        match self.snapshot().keys.get(kid) {
            Some(found) => Ok(found.clone()),
            None => {
                self.remember_unknown(kid);
                Err(VerifyError::UnknownKey)
            }
        }
    }

    /// Fetches and installs a new key set (the caller holds the fetch lock).
    async fn fetch_into(&self, state: &mut FetchState) -> Result<(), VerifyError> {
        let fetched = self.fetch_keys().await;
        state.last_attempt = Some((Instant::now(), fetched.is_ok()));
        let keys = fetched?;
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Snapshot {
            keys,
            fetched_at: Some(Instant::now()),
        });
        self.unknown_kids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }

    /// An old key set is refreshed off the login's path; a stale but known
    /// key still verifies meanwhile (and while the key server is away).
    fn refresh_in_background(self: &Arc<Self>) {
        let Ok(mut state) = Arc::clone(&self.fetch).try_lock_owned() else {
            return; // a fetch is already running
        };
        if state
            .last_attempt
            .is_some_and(|(t, _)| t.elapsed() < JWKS_MIN_REFRESH)
        {
            return;
        }
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            let _ = cache.fetch_into(&mut state).await;
        });
    }

    fn recently_unknown(&self, kid: &str) -> bool {
        self.unknown_kids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(kid)
            .is_some_and(|t| t.elapsed() < UNKNOWN_KID_MEMORY)
    }

    fn remember_unknown(&self, kid: &str) {
        let mut unknown = self.unknown_kids.lock().unwrap_or_else(|p| p.into_inner());
        if unknown.len() >= MAX_UNKNOWN_KIDS {
            unknown.retain(|_, t| t.elapsed() < UNKNOWN_KID_MEMORY);
            if unknown.len() >= MAX_UNKNOWN_KIDS {
                unknown.clear();
            }
        }
        // Only a bounded prefix of a client-chosen kid is kept.
        let kid: String = kid.chars().take(128).collect();
        unknown.insert(kid, Instant::now());
    }

    async fn fetch_keys(&self) -> Result<KeyMap, VerifyError> {
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<serde_json::Value>,
        }
        let unavailable = |e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, "cannot fetch the SSO signing keys");
            VerifyError::KeysUnavailable
        };
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        if !response.status().is_success() {
            return Err(unavailable(&format!("status {}", response.status())));
        }
        let set: Set = response.json().await.map_err(|e| unavailable(&e))?;
        // One odd key does not spoil the others.
        let keys: KeyMap = set
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
