//! Every token the tools and the tests mint, in one place: GCGC tokens as
//! the identity provider issues them, and API tokens as sso-login does.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use shared::clock::unix_secs;
use shared::tokens::ApiTokens;

/// A GCGC token's usual claims: `sub`, `iat`, `exp` in an hour, a fresh `jti`,
/// and an email and a name.
pub fn sso_claims(sub: &str) -> Value {
    let now = unix_secs();
    json!({
        "sub": sub,
        "iat": now,
        "exp": now + 3600,
        "jti": uuid::Uuid::new_v4().to_string(),
        "email": format!("{sub}@example.com"),
        "name": "Test User",
    })
}

/// `claims` signed with `key` for `alg`, with a `kid` header when given.
pub fn sign(claims: &Value, alg: Algorithm, key: &EncodingKey, kid: Option<&str>) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign a token")
}

/// A GCGC token signed with a shared secret (HS256), as `SSO_JWT_SECRET` verifies.
pub fn sso_token(secret: &str, claims: &Value) -> String {
    sign(
        claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
        None,
    )
}

/// A token whose header and payload are exactly these JSON texts, signed
/// HS256 with `secret`: for claims no `serde_json::Value` can hold (a lone
/// surrogate escape, `1e400`, deep nesting, duplicate keys).
pub fn hs256_from_json_text(secret: &str, header: &str, payload: &str) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let key = EncodingKey::from_secret(secret.as_bytes());
    let signature = jsonwebtoken::crypto::sign(signed.as_bytes(), &key, Algorithm::HS256)
        .expect("sign a token");
    format!("{signed}.{signature}")
}

/// An API token for `user_id`, as sso-login issues it (`JWT_SECRET`, an
/// hour) to a user who never signed out everywhere (generation 0).
pub fn api_token(jwt_secret: &str, user_id: i64) -> String {
    ApiTokens::new(jwt_secret.as_bytes(), std::time::Duration::from_secs(3600))
        .issue(user_id, 0)
        .expect("sign an API token")
        .token
}

/// `claims` with `iss` and `aud` set where given (what a deployment that
/// checks them requires).
pub fn with_issuer_and_audience(
    mut claims: Value,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Value {
    if let Some(iss) = issuer {
        claims["iss"] = iss.into();
    }
    if let Some(aud) = audience {
        claims["aud"] = aud.into();
    }
    claims
}
