//! Every parser of outside input, as one fuzz target each: a plain function
//! of the raw bytes that panics when the input breaks a rule of the contract
//! (a panic, a 5xx, a CORS header for an origin that is not allowed, an error
//! that is not a 401 where a 401 is due). cargo-fuzz runs them on nightly
//! (`fuzz/fuzz_targets/`, `make fuzz`); `tests/corpus_replay.rs` runs them on
//! every file of `fuzz/corpus/<target>/` in `make test`.
//!
//! Seeds stay readable text: `{token}` in an input becomes a valid API token,
//! `{sso}` a valid GCGC token, `{now}` and `{exp}` the current time and an
//! hour later, so that a committed seed reaches the code behind the checks
//! on any day.

mod app;
mod jwt;

use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, StatusCode};
use shared::host::{self, HostPattern};
use shared::tokens::{self, API_AUDIENCE, API_ISSUER};
use sso_login::verify::VerifyError;

use crate::app::{Fixture, fixture};

/// A fuzz target: any bytes in, a panic when they break a rule.
pub type Target = fn(&[u8]);

/// Each target by its name: the cargo-fuzz binary and the corpus folder are named alike.
pub const TARGETS: &[(&str, Target)] = &[
    ("authorization", authorization),
    ("api_token", api_token),
    ("sso_token", sso_token),
    ("cursor", cursor),
    ("host", host),
    ("http_request", http_request),
    ("lambda_event", lambda_event),
];

/// An `Authorization` header value: `bearer_token`, then the API token check.
/// Every refusal is a 401.
pub fn authorization(data: &[u8]) {
    let fixture = fixture();
    let data = fixture.substitute(data);
    let Ok(value) = HeaderValue::from_bytes(&data) else {
        return; // not a header value: hyper or the platform refuses it first
    };
    let (parts, ()) = Request::builder()
        .header(AUTHORIZATION, value)
        .body(())
        .expect("a request with one valid header")
        .into_parts();
    match tokens::bearer_token(&parts) {
        Ok(token) => {
            assert!(!token.is_empty() && token.trim() == token, "{token:?}");
            check_api_token(fixture, token);
        }
        Err(e) => assert_eq!(e.status(), StatusCode::UNAUTHORIZED, "{e:?}"),
    }
}

/// An API token (`ApiTokens::verify`): raw text, or a token assembled from
/// a header, claims and a signature (see [`jwt`]).
pub fn api_token(data: &[u8]) {
    let fixture = fixture();
    let data = fixture.substitute(data);
    if let Some(token) = jwt::assemble(&data, fixture.api_secret()) {
        check_api_token(fixture, &token);
    }
}

fn check_api_token(fixture: &Fixture, token: &str) {
    match fixture.api_tokens.verify(token) {
        Ok(claims) => {
            assert_eq!(claims.iss, API_ISSUER);
            assert_eq!(claims.aud, API_AUDIENCE);
        }
        Err(e) => assert_eq!(e.status(), StatusCode::UNAUTHORIZED, "{e:?}"),
    }
}

/// A GCGC token (`SsoVerifier::verify` with an HS256 secret): what passes has
/// claims the database can store; what fails is a 401.
pub fn sso_token(data: &[u8]) {
    let fixture = fixture();
    let data = fixture.substitute(data);
    let Some(token) = jwt::assemble(&data, fixture.sso_secret()) else {
        return;
    };
    match fixture.runtime.block_on(fixture.sso.verify(&token)) {
        Ok(verified) => {
            let claims = &verified.claims;
            assert!(!claims.sub.trim().is_empty());
            let texts = [
                Some(&claims.sub),
                claims.email.as_ref(),
                claims.name.as_ref(),
            ];
            assert!(!texts.into_iter().flatten().any(|t| t.contains('\0')));
            assert!(token.starts_with(&verified.signed_part));
        }
        Err(e) => {
            // A secret needs no key server: never "keys unavailable" (503).
            assert_ne!(e, VerifyError::KeysUnavailable);
            let status = shared::ApiError::from(e).status();
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{e:?}");
        }
    }
}

/// The conversation list's cursor: what decodes encodes back to itself, and
/// any position survives the round trip.
pub fn cursor(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(after) = conversations::cursor::decode(text)
    {
        assert_eq!(
            conversations::cursor::decode(&conversations::cursor::encode(after)),
            Some(after)
        );
    }
    if let (Some(activity), Some(id)) = (data.get(..8), data.get(8..16)) {
        let after = conversations::store::PageAfter {
            last_activity_at: i64::from_le_bytes(activity.try_into().expect("8 bytes")),
            id: i64::from_le_bytes(id.try_into().expect("8 bytes")),
        };
        assert_eq!(
            conversations::cursor::decode(&conversations::cursor::encode(after)),
            Some(after)
        );
    }
}

/// `ALLOWED_HOSTS` patterns (the first line, comma-separated) and a `Host`
/// value (the rest): parsing and matching never panic, `*` allows any host,
/// and a `*.domain` match is a strict subdomain.
pub fn host(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (patterns, host_value) = text.split_once('\n').unwrap_or((text, ""));
    let patterns: Vec<HostPattern> = patterns
        .split(',')
        .filter_map(|p| HostPattern::parse(p).ok())
        .collect();
    let name = host::host_without_port(host_value);
    assert_eq!(name, name.to_ascii_lowercase());
    for pattern in &patterns {
        if let HostPattern::Subdomains(suffix) = pattern
            && pattern.matches(&name)
        {
            assert!(name.len() > suffix.len() && name.ends_with(suffix.as_str()));
        }
    }
    // The header is normalised once, the same way for every pattern.
    let allowed = host::is_allowed(&patterns, Some(host_value));
    assert_eq!(allowed, patterns.iter().any(|p| p.matches(&name)));
    assert!(host::is_allowed(&[HostPattern::Any], Some(host_value)));
}

/// A request, as text (`METHOD target`, header lines, a blank line, the body),
/// through the real layers and routes of sso-login and conversations.
pub fn http_request(data: &[u8]) {
    let fixture = fixture();
    let data = fixture.substitute(data);
    if let Some(request) = app::request_from_text(&data) {
        fixture.serve(request);
    }
}

/// A Lambda event (API Gateway REST v1, HTTP v2, ALB, Function URL), served
/// as the Lambda runtime does: no 5xx in the response it hands back.
pub fn lambda_event(data: &[u8]) {
    let fixture = fixture();
    let data = fixture.substitute(data);
    if let Ok(text) = std::str::from_utf8(&data) {
        // The runtime API hands over JSON, which is UTF-8.
        fixture.serve_lambda_event(text);
    }
}
