//! The replay store's connection: the section of the functions that use
//! Redis (sso-login, and health, which reports on it).

use super::{AppEnv, CaBundle, Config, ConfigError, RedisSettings, Secret, Section, Vars, setting};
use crate::redis_client::CLUSTER_SCHEMES;

const DEFAULT_REDIS_KEY_PREFIX: &str = "tms:";

impl Section for RedisSettings {
    fn reads(name: &str) -> bool {
        name.starts_with("REDIS_")
    }

    fn from_vars(vars: &Vars, config: &Config) -> Result<Self, ConfigError> {
        let url = match setting(vars, "REDIS_URL") {
            Some(u)
                if !(u.starts_with("redis://")
                    || u.starts_with("rediss://")
                    || CLUSTER_SCHEMES.iter().any(|s| u.starts_with(s))) =>
            {
                return Err(ConfigError::new(
                    "REDIS_URL",
                    "must start with redis://, rediss://, redis+cluster:// or rediss+cluster://",
                ));
            }
            None if config.app_env == AppEnv::Production => {
                return Err(ConfigError::new(
                    "REDIS_URL",
                    "required when APP_ENV=production (the in-process replay store protects one instance only)",
                ));
            }
            other => other.map(Secret::new),
        };
        let ca_cert = setting(vars, "REDIS_CA_CERT_PATH")
            .map(|path| CaBundle::read("REDIS_CA_CERT_PATH", path))
            .transpose()?;
        if ca_cert.is_some()
            && !url
                .as_ref()
                .is_some_and(|u| u.expose().starts_with("rediss"))
        {
            // A CA for a connection without TLS would silently not be used.
            return Err(ConfigError::new(
                "REDIS_CA_CERT_PATH",
                "needs a TLS REDIS_URL (rediss:// or rediss+cluster://)",
            ));
        }
        Ok(Self {
            url,
            key_prefix: setting(vars, "REDIS_KEY_PREFIX")
                .unwrap_or(DEFAULT_REDIS_KEY_PREFIX)
                .to_owned(),
            ca_cert,
        })
    }
}
