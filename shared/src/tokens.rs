//! API tokens: HS256 JWTs signed with `JWT_SECRET`, and the extractor that
//! every protected route takes. Every way a token can be wrong is a 401 with
//! `WWW-Authenticate: Bearer`, never a 500.
//!
//! Keys rotate without signing anyone out: each token names its key in the
//! header's `kid` (a fingerprint of the secret, never the secret), and the
//! `JWT_PREVIOUS_SECRETS` still verify the tokens they signed until they are
//! removed. Whether a token was ended early (signed out) is the database's
//! to say, in the route's own statement: see [`TOKEN_STANDING_SQL`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use http::header::AUTHORIZATION;
use http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::{LEEWAY_SECS, unix_secs};
use crate::config::JwtSettings;
use crate::db::{PgToSql, PgType};
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
    /// The user's sign-out generation when the token was issued: "sign out
    /// everywhere" moves the user's past it, ending every token issued
    /// before. Tokens from before sign-out existed have none: generation 0.
    #[serde(default)]
    pub generation: i64,
}

/// Issues and checks API tokens. Cheap to clone.
#[derive(Clone)]
pub struct ApiTokens(Arc<Keys>);

struct Keys {
    /// `JWT_SECRET`'s: signs and verifies.
    signing: SigningKey,
    /// `JWT_PREVIOUS_SECRETS`': verify only, in the order given.
    previous: Vec<VerifyingKey>,
    validation: Validation,
    lifetime: Duration,
}

struct SigningKey {
    encoding: EncodingKey,
    verifying: VerifyingKey,
}

struct VerifyingKey {
    kid: String,
    decoding: DecodingKey,
}

impl VerifyingKey {
    fn new(secret: &[u8]) -> Self {
        Self {
            kid: key_id(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }
}

/// A key's `kid`: the start of a SHA-256 of the secret, under a label of
/// its own, so that it names the key without revealing anything usable
/// about it (the secret is at least 32 random bytes).
pub fn key_id(secret: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(b"tms-chat api token key id\0")
        .chain_update(secret)
        .finalize();
    let mut hex = format!("{digest:x}");
    hex.truncate(16);
    hex
}

/// A freshly issued API token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
}

impl ApiTokens {
    /// Signs with `secret` alone.
    pub fn new(secret: &[u8], lifetime: Duration) -> Self {
        Self::with_previous(secret, &[], lifetime)
    }

    /// Signs with `secret`; `previous` secrets only verify (a key rotation).
    pub fn with_previous(secret: &[u8], previous: &[&[u8]], lifetime: Duration) -> Self {
        for key in std::iter::once(&secret).chain(previous) {
            crate::hmac_keys::prepare(key);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[API_ISSUER]);
        validation.set_audience(&[API_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.leeway = LEEWAY_SECS;
        Self(Arc::new(Keys {
            signing: SigningKey {
                encoding: EncodingKey::from_secret(secret),
                verifying: VerifyingKey::new(secret),
            },
            previous: previous
                .iter()
                .filter(|p| **p != secret)
                .map(|p| VerifyingKey::new(p))
                .collect(),
            validation,
            lifetime,
        }))
    }

    /// The keys and lifetime the settings give.
    pub fn from_settings(jwt: &JwtSettings) -> Self {
        let previous: Vec<&[u8]> = jwt
            .previous_secrets
            .iter()
            .map(|s| s.expose().as_bytes())
            .collect();
        Self::with_previous(jwt.secret.expose().as_bytes(), &previous, jwt.expiration)
    }

    /// The `kid` of the key that signs.
    pub fn signing_key_id(&self) -> &str {
        &self.0.signing.verifying.kid
    }

    /// A token for `user_id`, at the user's current sign-out `generation`.
    pub fn issue(&self, user_id: i64, generation: i64) -> Result<IssuedToken, ApiError> {
        let iat = unix_secs();
        let expires_in = self.0.lifetime.as_secs();
        let claims = ApiClaims {
            sub: user_id.to_string(),
            exp: iat + expires_in,
            iat,
            iss: API_ISSUER.into(),
            aud: API_AUDIENCE.into(),
            jti: uuid::Uuid::new_v4().to_string(),
            generation,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.0.signing.verifying.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.0.signing.encoding)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("cannot sign an API token: {e}")))?;
        Ok(IssuedToken { token, expires_in })
    }

    /// The token's claims, if one of the keys signed it and it is in date.
    /// The header's `kid` picks the key; a token without one (issued before
    /// keys had ids) is tried against each key; an unknown `kid` (a key
    /// removed) is refused.
    pub fn verify(&self, token: &str) -> Result<ApiClaims, ApiError> {
        let invalid = || ApiError::unauthorized("Could not validate credentials");
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        let keys = &self.0;
        let mut candidates = std::iter::once(&keys.signing.verifying).chain(&keys.previous);
        let decode = |key: &VerifyingKey| {
            jsonwebtoken::decode::<ApiClaims>(token, &key.decoding, &keys.validation)
        };
        let result = match header.kid.as_deref() {
            Some(kid) => decode(candidates.find(|k| k.kid == kid).ok_or_else(invalid)?),
            // Each key in turn, until one's signature holds (its answer is
            // then the token's: expired, say) or none is left.
            None => candidates
                .map(decode)
                .find(|r| !matches!(r, Err(e) if *e.kind() == ErrorKind::InvalidSignature))
                .unwrap_or_else(|| Err(ErrorKind::InvalidSignature.into())),
        };
        result.map(|data| data.claims).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => ApiError::unauthorized("Token has expired"),
            _ => invalid(),
        })
    }
}

/// Whether a token still stands, as the database knows it, for a route's
/// own statement to select beside its data (no round trip of its own).
/// A SQL expression, the same in both dialects: 0 the token stands, 1 it
/// was ended (signed out, or its user signed out everywhere after it was
/// issued), 2 its user does not exist. `$user`, `$generation` (bigint)
/// and `$jti` (text) are the statement's placeholders for the token's
/// [`AuthUser`] fields.
#[macro_export]
macro_rules! token_standing_sql {
    ($user:literal, $generation:literal, $jti:literal) => {
        concat!(
            "COALESCE((SELECT CASE WHEN u.token_generation > ",
            $generation,
            " OR EXISTS (SELECT 1 FROM revoked_tokens r WHERE r.jti = ",
            $jti,
            ") THEN 1 ELSE 0 END FROM users u WHERE u.id = ",
            $user,
            "), 2)"
        )
    };
}

/// [`token_standing_sql!`] with $1 user, $2 generation, $3 jti (for tests
/// and documentation).
pub const TOKEN_STANDING_SQL: &str = token_standing_sql!("$1", "$2", "$3");

/// What [`token_standing_sql!`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Stands,
    Ended,
    NoSuchUser,
}

impl Standing {
    /// The statement's value; anything else is a bug in the statement.
    pub fn from_sql(value: i32) -> Result<Self, ApiError> {
        match value {
            0 => Ok(Self::Stands),
            1 => Ok(Self::Ended),
            2 => Ok(Self::NoSuchUser),
            other => Err(ApiError::Internal(anyhow::anyhow!(
                "token standing {other} from the database"
            ))),
        }
    }

    /// Ok for a token that stands; the 401 of one that does not.
    pub fn check(self) -> Result<(), ApiError> {
        match self {
            Self::Stands => Ok(()),
            Self::Ended => Err(ApiError::TokenRevoked),
            // A valid token of a user that no longer exists.
            Self::NoSuchUser => Err(ApiError::unauthorized("Could not validate credentials")),
        }
    }
}

/// The authenticated caller of a protected route: whose token it is, and
/// what the database needs to tell whether it was ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub user_id: i64,
    pub jti: String,
    pub generation: i64,
    /// The token's own `exp` (seconds since the epoch).
    pub exp: u64,
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

impl AuthUser {
    /// The parameters of [`TOKEN_STANDING_SQL`] in its order ($1 user, $2
    /// generation, $3 jti), as PostgreSQL binds them: every statement that
    /// reads a token's standing takes them first.
    pub fn standing_params(&self) -> [(&(dyn PgToSql + Sync), PgType); 3] {
        [
            (&self.user_id, PgType::INT8),
            (&self.generation, PgType::INT8),
            (&self.jti, PgType::TEXT),
        ]
    }
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
        // Our tokens' ids are UUIDs: anything else (NUL included) is not one
        // of ours and never reaches a statement.
        if uuid::Uuid::try_parse(&claims.jti).is_err() {
            return Err(ApiError::unauthorized("Could not validate credentials"));
        }
        // Whatever the route answers now (an ended token's 401 too), its
        // access line says whose token it was: signed and unexpired, so no
        // client can make it name someone else.
        crate::request_scope::names_user(user_id);
        Ok(Self {
            user_id,
            jti: claims.jti,
            generation: claims.generation,
            exp: claims.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"current-api-token-key-0123456789abcdef";
    const OLD: &[u8] = b"previous-api-token-key-0123456789abcdef";
    const HOUR: Duration = Duration::from_secs(3600);

    fn detail(e: ApiError) -> String {
        e.to_string()
    }

    #[test]
    fn a_token_names_its_key_without_revealing_it() {
        let tokens = ApiTokens::new(KEY, HOUR);
        let token = tokens.issue(7, 3).unwrap().token;
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key_id(KEY).as_str()));
        assert_eq!(tokens.signing_key_id(), key_id(KEY));
        // Tokens already issued carry it: it never changes for a key.
        assert_eq!(key_id(KEY), "36a79983f5cc0433");
        assert_ne!(key_id(KEY), key_id(OLD));
        assert!(!token.contains(std::str::from_utf8(KEY).unwrap()));
        let claims = tokens.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.generation), ("7", 3));
    }

    #[test]
    fn previous_keys_verify_and_never_sign() {
        let before = ApiTokens::new(OLD, HOUR).issue(1, 0).unwrap().token;
        let rotated = ApiTokens::with_previous(KEY, &[OLD], HOUR);
        assert_eq!(rotated.verify(&before).unwrap().sub, "1");
        let after = rotated.issue(1, 0).unwrap().token;
        assert_eq!(
            jsonwebtoken::decode_header(&after).unwrap().kid,
            Some(key_id(KEY)),
            "the current key signs"
        );
        // The old key removed: its tokens end, the new ones stand.
        let removed = ApiTokens::new(KEY, HOUR);
        assert_eq!(
            detail(removed.verify(&before).unwrap_err()),
            "Could not validate credentials"
        );
        assert!(removed.verify(&after).is_ok());
        // A previous key equal to the current one is the current one.
        let same = ApiTokens::with_previous(KEY, &[KEY], HOUR);
        assert!(same.0.previous.is_empty());
    }

    #[test]
    fn a_kid_cannot_lend_a_token_another_keys_trust() {
        // Signed with an unknown key but naming the current key's kid: the
        // signature decides.
        let forged = {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(key_id(KEY));
            let claims = ApiClaims {
                sub: "1".into(),
                exp: crate::clock::unix_secs() + 60,
                iat: crate::clock::unix_secs(),
                iss: API_ISSUER.into(),
                aud: API_AUDIENCE.into(),
                jti: uuid::Uuid::new_v4().to_string(),
                generation: 0,
            };
            jsonwebtoken::encode(
                &header,
                &claims,
                &EncodingKey::from_secret(b"someone-elses-key-0123456789abcdef"),
            )
            .unwrap()
        };
        let tokens = ApiTokens::with_previous(KEY, &[OLD], HOUR);
        assert_eq!(
            detail(tokens.verify(&forged).unwrap_err()),
            "Could not validate credentials"
        );
        // An unknown kid is refused without trying every key.
        let unknown = ApiTokens::new(b"a-third-key-0123456789abcdef0123456789", HOUR)
            .issue(1, 0)
            .unwrap()
            .token;
        assert_eq!(
            detail(tokens.verify(&unknown).unwrap_err()),
            "Could not validate credentials"
        );
    }

    #[test]
    fn an_expired_token_of_a_previous_key_says_so() {
        let old = ApiTokens::new(OLD, HOUR);
        let claims = ApiClaims {
            sub: "1".into(),
            exp: crate::clock::unix_secs() - 3600,
            iat: crate::clock::unix_secs() - 7200,
            iss: API_ISSUER.into(),
            aud: API_AUDIENCE.into(),
            jti: uuid::Uuid::new_v4().to_string(),
            generation: 0,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key_id(OLD));
        let expired = jsonwebtoken::encode(&header, &claims, &old.0.signing.encoding).unwrap();
        let rotated = ApiTokens::with_previous(KEY, &[OLD], HOUR);
        assert_eq!(
            detail(rotated.verify(&expired).unwrap_err()),
            "Token has expired"
        );
    }

    #[test]
    fn standing_maps_to_its_401_and_nothing_else() {
        assert!(Standing::from_sql(0).unwrap().check().is_ok());
        let ended = Standing::from_sql(1).unwrap().check().unwrap_err();
        assert!(matches!(ended, ApiError::TokenRevoked));
        let gone = Standing::from_sql(2).unwrap().check().unwrap_err();
        assert_eq!(detail(gone), "Could not validate credentials");
        assert!(matches!(Standing::from_sql(7), Err(ApiError::Internal(_))));
        assert!(TOKEN_STANDING_SQL.contains("revoked_tokens r WHERE r.jti = $3"));
    }
}
