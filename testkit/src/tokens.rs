//! Every token the tests, the bench and chaos mint: GCGC tokens as the
//! identity provider issues them (`tools::sso_token`, re-exported: the
//! operators' `tms-token` and `tms-verify` mint them the same way), and API
//! tokens as sso-login does.

pub use tools::sso_token::{sign, sso_claims, sso_token, with_issuer_and_audience};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use shared::tokens::ApiTokens;

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
