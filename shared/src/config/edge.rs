//! The edge layer's settings: CORS, the host check, the body limit.

use http::HeaderValue;

use super::{ConfigError, Vars, parse_list, setting};
use crate::host::HostPattern;

/// What the edge layer (`http`) checks of every request.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// `ALLOWED_ORIGINS`: the browser origins CORS lets in.
    pub allowed_origins: Vec<HeaderValue>,
    /// `ALLOWED_HOSTS`: the `Host` headers served (any other is a 400).
    pub allowed_hosts: Vec<HostPattern>,
    /// `MAX_BODY_BYTES`: a larger body is a 413.
    pub max_body_bytes: usize,
}

const DEFAULT_ORIGINS: &str = "http://localhost:3000";
const DEFAULT_HOSTS: &str = "localhost,127.0.0.1";
const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

pub(super) fn from_vars(vars: &Vars) -> Result<HttpSettings, ConfigError> {
    let allowed_origins =
        parse_origins(setting(vars, "ALLOWED_ORIGINS").unwrap_or(DEFAULT_ORIGINS))?;
    let allowed_hosts = parse_list(setting(vars, "ALLOWED_HOSTS").unwrap_or(DEFAULT_HOSTS))
        .map(|h| HostPattern::parse(h).map_err(|p| ConfigError::new("ALLOWED_HOSTS", p)))
        .collect::<Result<Vec<_>, _>>()?;
    if allowed_hosts.is_empty() {
        return Err(ConfigError::new(
            "ALLOWED_HOSTS",
            "must list at least one host",
        ));
    }
    let max_body_bytes = match setting(vars, "MAX_BODY_BYTES") {
        None => DEFAULT_MAX_BODY_BYTES,
        Some(v) => v.parse().ok().filter(|n| *n >= 1024).ok_or_else(|| {
            ConfigError::new(
                "MAX_BODY_BYTES",
                format!("expected a number of bytes, at least 1024, got `{v}`"),
            )
        })?,
    };
    Ok(HttpSettings {
        allowed_origins,
        allowed_hosts,
        max_body_bytes,
    })
}

fn parse_origins(value: &str) -> Result<Vec<HeaderValue>, ConfigError> {
    let err = |problem: String| ConfigError::new("ALLOWED_ORIGINS", problem);
    let mut origins = Vec::new();
    for origin in parse_list(value) {
        if origin == "*" {
            return Err(err(
                "`*` cannot be used: credentials are allowed, so origins must be listed".into(),
            ));
        }
        let Some((scheme, rest)) = origin.split_once("://") else {
            return Err(err(format!(
                "`{origin}` is not an origin like https://example.com"
            )));
        };
        if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains('/') {
            return Err(err(format!(
                "`{origin}` is not an origin like https://example.com (no path, no trailing slash)"
            )));
        }
        origins.push(
            HeaderValue::from_str(origin)
                .map_err(|_| err(format!("`{origin}` is not a valid header value")))?,
        );
    }
    if origins.is_empty() {
        return Err(err("must list at least one origin".into()));
    }
    Ok(origins)
}
