//! Tokens from fuzz input. Random bytes seldom make a JWT whose signature
//! holds, so an input may describe one instead, and reach the header and
//! claims checks behind the signature:
//!
//! ```text
//! jwt sign b64=url         <- options: `sign` (HS256 with the target's secret),
//! {"alg":"HS256"}             `b64=` url | urlpad | std | stdpad (header and claims)
//! {"sub":"1","exp":{exp}}  <- the claims, any bytes
//! <signature>              <- used as is; after `sign`, appended to the real one
//! ```
//!
//! Any other input is the token itself (when it is UTF-8).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};

const PREFIX: &[u8] = b"jwt ";

pub fn assemble(data: &[u8], secret: &[u8]) -> Option<String> {
    let Some(described) = data.strip_prefix(PREFIX) else {
        return std::str::from_utf8(data).ok().map(str::to_owned);
    };
    let mut lines = described.splitn(4, |&b| b == b'\n');
    let options = std::str::from_utf8(lines.next()?).ok()?;
    let header = lines.next().unwrap_or_default();
    let claims = lines.next().unwrap_or_default();
    let signature = std::str::from_utf8(lines.next().unwrap_or_default()).ok()?;

    let engine = match options.split(' ').find_map(|o| o.strip_prefix("b64=")) {
        Some("urlpad") => &URL_SAFE,
        Some("std") => &STANDARD_NO_PAD,
        Some("stdpad") => &STANDARD,
        _ => &URL_SAFE_NO_PAD,
    };
    let signing_input = format!("{}.{}", engine.encode(header), engine.encode(claims));
    let signature = if options.split(' ').any(|o| o == "sign") {
        let key = EncodingKey::from_secret(secret);
        let real = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::HS256)
            .expect("HMAC signing cannot fail");
        real + signature
    } else {
        signature.to_owned()
    };
    Some(format!("{signing_input}.{signature}"))
}
