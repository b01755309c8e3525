//! GCGC tokens as the identity provider issues them: what `tms-token sso`
//! and `tms-verify` mint for a deployment, and what the tests, the bench
//! and chaos mint through `testkit::tokens` (which re-exports this module:
//! one way of minting, and the operators' programs need no test crate).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use shared::clock::unix_secs;

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

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn an_sso_token_carries_its_claims_signed_with_the_secret() {
        let claims = with_issuer_and_audience(sso_claims("alice"), Some("gcgc"), Some("tms"));
        let token = sso_token("a-shared-secret", &claims);
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&["gcgc"]);
        validation.set_audience(&["tms"]);
        let decoded = jsonwebtoken::decode::<Value>(
            &token,
            &DecodingKey::from_secret(b"a-shared-secret"),
            &validation,
        )
        .expect("verifies with the same secret");
        assert_eq!(decoded.claims["sub"], "alice");
        assert_eq!(decoded.claims["email"], "alice@example.com");
        assert_eq!(decoded.claims["jti"], claims["jti"]);
        assert!(decoded.claims["exp"].as_u64() > decoded.claims["iat"].as_u64());
    }
}
