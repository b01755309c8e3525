//! The API tokens' keys and lifetime: for the functions that issue or check
//! API tokens (sso-login, conversations).

use std::time::Duration;

use super::{Config, ConfigError, Secret, Section, Vars, parse_list, setting};

/// `JWT_SECRET`, `JWT_PREVIOUS_SECRETS`, `JWT_EXPIRATION_HOURS`.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// `JWT_SECRET`: signs and verifies.
    pub secret: Secret,
    /// `JWT_PREVIOUS_SECRETS` (comma list): earlier keys, which still verify
    /// the tokens they signed (a key rotation), never sign.
    pub previous_secrets: Vec<Secret>,
    pub expiration: Duration,
}

pub const MIN_JWT_SECRET_BYTES: usize = 32;
const DEFAULT_EXPIRATION_HOURS: u64 = 720;

impl JwtSettings {
    /// Every key that verifies: the current one first.
    pub fn keys(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.secret).chain(&self.previous_secrets)
    }
}

impl Section for JwtSettings {
    fn reads(name: &str) -> bool {
        name.starts_with("JWT_")
    }

    fn from_vars(vars: &Vars, _: &Config) -> Result<Self, ConfigError> {
        let secret = match setting(vars, "JWT_SECRET") {
            None => {
                return Err(ConfigError::new(
                    "JWT_SECRET",
                    format!("required (at least {MIN_JWT_SECRET_BYTES} bytes)"),
                ));
            }
            Some(s) if s.len() < MIN_JWT_SECRET_BYTES => {
                return Err(ConfigError::new(
                    "JWT_SECRET",
                    format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
                ));
            }
            Some(s) => Secret::new(s),
        };
        let previous_secrets = parse_list(setting(vars, "JWT_PREVIOUS_SECRETS").unwrap_or(""))
            .map(|s| {
                if s.len() < MIN_JWT_SECRET_BYTES {
                    Err(ConfigError::new(
                        "JWT_PREVIOUS_SECRETS",
                        format!("each secret must be at least {MIN_JWT_SECRET_BYTES} bytes"),
                    ))
                } else {
                    Ok(Secret::new(s))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hours: u64 = match setting(vars, "JWT_EXPIRATION_HOURS") {
            None => DEFAULT_EXPIRATION_HOURS,
            Some(v) => v
                .parse()
                .ok()
                .filter(|h| (1..=24 * 366).contains(h))
                .ok_or_else(|| {
                    ConfigError::new(
                        "JWT_EXPIRATION_HOURS",
                        format!("expected a whole number of hours from 1 to 8784, got `{v}`"),
                    )
                })?,
        };
        Ok(Self {
            secret,
            previous_secrets,
            expiration: Duration::from_secs(hours * 3600),
        })
    }
}
