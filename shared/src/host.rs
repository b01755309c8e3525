//! The `Host` header check (`ALLOWED_HOSTS`), with Starlette's semantics: an
//! exact name, `*.example.com` for its subdomains (not the apex), or `*`. The port
//! is ignored and names compare case-insensitively.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::header::HOST;

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Subdomains(String),
}

impl HostPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let p = pattern.trim().to_ascii_lowercase();
        if p == "*" {
            return Ok(Self::Any);
        }
        let (wild, name) = match p.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, p.as_str()),
        };
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '[' | ']'));
        if !valid {
            return Err(format!(
                "`{pattern}` is not a host name, `*.domain` or `*` (no scheme, no port, `*` only as the first label)"
            ));
        }
        Ok(if wild {
            Self::Subdomains(format!(".{name}"))
        } else {
            Self::Exact(name.to_owned())
        })
    }

    pub fn matches(&self, host: &str) -> bool {
        // Patterns are stored lower-cased; the host is compared without
        // being copied (this runs on every request).
        match self {
            Self::Any => true,
            Self::Exact(name) => host.eq_ignore_ascii_case(name),
            Self::Subdomains(suffix) => {
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

/// The host part of a `Host` header value, without the port (as sent).
fn host_part(value: &str) -> &str {
    let value = value.trim();
    if value.starts_with('[') {
        // [v6]:port
        match value.find(']') {
            Some(end) => &value[..=end],
            None => value,
        }
    } else {
        value.split(':').next().unwrap_or_default()
    }
}

/// The host part of a `Host` header value, lower-cased, without the port.
pub fn host_without_port(value: &str) -> String {
    host_part(value).to_ascii_lowercase()
}

pub fn is_allowed(patterns: &[HostPattern], host_header: Option<&str>) -> bool {
    if patterns.contains(&HostPattern::Any) {
        return true;
    }
    let Some(host) = host_header.map(host_part) else {
        return false;
    };
    patterns.iter().any(|p| p.matches(host))
}

/// The allowed hosts.
#[derive(Clone)]
pub struct HostCheck {
    hosts: Arc<[HostPattern]>,
}

impl HostCheck {
    pub fn new(hosts: &[HostPattern]) -> Self {
        Self {
            hosts: hosts.into(),
        }
    }

    /// Whether the request's `Host` (or its URI's authority) is allowed.
    pub fn allows(&self, request: &Request) -> bool {
        let header = request.headers().get(HOST).and_then(|v| v.to_str().ok());
        match header {
            Some(host) => is_allowed(&self.hosts, Some(host)),
            None => is_allowed(&self.hosts, request.uri().authority().map(|a| a.as_str())),
        }
    }
}

/// What any other host gets.
pub fn refusal() -> Response {
    ApiError::BadRequest("Invalid host header".into()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(patterns: &[&str], host: &str) -> bool {
        let patterns: Vec<_> = patterns
            .iter()
            .map(|p| HostPattern::parse(p).unwrap())
            .collect();
        is_allowed(&patterns, Some(host))
    }

    #[test]
    fn starlette_semantics() {
        assert!(allowed(&["example.com"], "example.com"));
        assert!(allowed(&["example.com"], "Example.COM:8443"));
        assert!(!allowed(&["example.com"], "www.example.com"));
        assert!(allowed(&["*.example.com"], "api.example.com"));
        assert!(allowed(&["*.example.com"], "a.b.example.com:443"));
        assert!(!allowed(&["*.example.com"], "example.com"));
        assert!(!allowed(&["*.example.com"], "evilexample.com"));
        assert!(allowed(&["*"], "anything.at.all"));
        assert!(allowed(&["localhost", "127.0.0.1"], "127.0.0.1:8000"));
        assert!(allowed(&["[::1]"], "[::1]:8000"));
        assert!(!allowed(&["localhost"], "evil.example"));
        assert!(!is_allowed(
            &[HostPattern::parse("localhost").unwrap()],
            None
        ));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for p in [
            "",
            "http://example.com",
            "a.*.com",
            "exa mple.com",
            "*example.com",
        ] {
            assert!(HostPattern::parse(p).is_err(), "{p}");
        }
    }
}
