//! How GCGC tokens are verified: sso-login's section.

use super::jwt::MIN_JWT_SECRET_BYTES;
use super::{AppEnv, Config, ConfigError, JwtSettings, Secret, Section, Vars, setting};

/// How upstream (GCGC) SSO tokens are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsoKeys {
    Secret(Secret),
    JwksUrl(String),
}

/// `SSO_JWT_SECRET` or `SSO_JWKS_URL`, `SSO_ISSUER`, `SSO_AUDIENCE`.
#[derive(Debug, Clone)]
pub struct SsoSettings {
    pub keys: SsoKeys,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl Section for SsoSettings {
    fn reads(name: &str) -> bool {
        name.starts_with("SSO_")
    }

    fn from_vars(vars: &Vars, config: &Config) -> Result<Self, ConfigError> {
        let production = config.app_env == AppEnv::Production;
        let keys = keys(vars, production)?;
        let issuer = setting(vars, "SSO_ISSUER").map(str::to_owned);
        let audience = setting(vars, "SSO_AUDIENCE").map(str::to_owned);
        if matches!(keys, SsoKeys::JwksUrl(_)) && production {
            // Keys published for every client of the identity provider: without
            // an issuer and audience check, a token minted for another
            // application of the same provider would log in here.
            for (variable, value) in [("SSO_AUDIENCE", &audience), ("SSO_ISSUER", &issuer)] {
                if value.is_none() {
                    return Err(ConfigError::new(
                        variable,
                        "required when APP_ENV=production and SSO_JWKS_URL is set (else tokens the identity provider issued for other applications are accepted)",
                    ));
                }
            }
        }
        Ok(Self {
            keys,
            issuer,
            audience,
        })
    }
}

impl SsoSettings {
    /// Where both are used (sso-login): the GCGC secret is none of the API
    /// token keys, else an API token would pass for a GCGC token at login.
    pub fn check_apart_from(&self, jwt: &JwtSettings) -> Result<(), ConfigError> {
        match &self.keys {
            SsoKeys::Secret(sso) if jwt.keys().any(|key| key == sso) => Err(ConfigError::new(
                "SSO_JWT_SECRET",
                "must differ from JWT_SECRET and from each of JWT_PREVIOUS_SECRETS",
            )),
            _ => Ok(()),
        }
    }
}

fn keys(vars: &Vars, production: bool) -> Result<SsoKeys, ConfigError> {
    match (
        setting(vars, "SSO_JWT_SECRET"),
        setting(vars, "SSO_JWKS_URL"),
    ) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            "SSO_JWKS_URL",
            "set either SSO_JWT_SECRET or SSO_JWKS_URL, not both",
        )),
        (None, None) => Err(ConfigError::new(
            "SSO_JWT_SECRET",
            "SSO_JWT_SECRET or SSO_JWKS_URL is required",
        )),
        (Some(s), None) if s.len() < MIN_JWT_SECRET_BYTES => Err(ConfigError::new(
            "SSO_JWT_SECRET",
            format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
        )),
        (Some(s), None) => Ok(SsoKeys::Secret(Secret::new(s))),
        (None, Some(url)) if !(url.starts_with("https://") || url.starts_with("http://")) => Err(
            ConfigError::new("SSO_JWKS_URL", "must be an http(s):// URL"),
        ),
        (None, Some(url)) if production && !url.starts_with("https://") => Err(ConfigError::new(
            "SSO_JWKS_URL",
            "must be https:// when APP_ENV=production (the keys decide who logs in)",
        )),
        (None, Some(url)) => Ok(SsoKeys::JwksUrl(url.to_owned())),
    }
}
