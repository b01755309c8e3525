//! Typed configuration, read from the environment once at start and validated.
//!
//! A missing or invalid variable stops the function before it serves anything,
//! with one line naming the variable, so a bad deploy fails its canary instead
//! of answering 500s (instead of a hand-edited `.env` on a server).

use std::collections::HashMap;
use std::time::Duration;

use http::HeaderValue;

pub use crate::ca_bundle::CaBundle;
pub use crate::config_error::ConfigError;
pub use crate::db::{DatabaseSettings, DatabaseUrl};
use crate::host::HostPattern;
pub use crate::redis_client::RedisSettings;
pub use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

/// Where the function runs, decided once at start from the variables each
/// platform sets in its instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platform {
    /// AWS Lambda: `AWS_LAMBDA_RUNTIME_API` is set (by Lambda, or by
    /// `cargo lambda watch`); `function` is `AWS_LAMBDA_FUNCTION_NAME`.
    Lambda { function: String },
    /// Alibaba Function Compute: FC sets `FC_FUNCTION_NAME` and `FC_REGION`
    /// in every instance (2.0 and 3.0, every runtime) and refuses `FC_*`
    /// names in a function's own environment, so a deploy cannot fake them.
    Fc { function: String },
    /// Anywhere else: local runs, tests.
    Local,
}

impl Platform {
    /// The platform these variables say the process runs on (the variables
    /// each platform sets; an empty value counts as unset).
    pub fn from_vars(vars: &HashMap<String, String>) -> Self {
        let get = |name: &str| crate::secrets::setting(vars, name);
        if get("AWS_LAMBDA_RUNTIME_API").is_some() {
            Self::Lambda {
                function: get("AWS_LAMBDA_FUNCTION_NAME")
                    .unwrap_or("unknown")
                    .to_owned(),
            }
        } else if let (Some(function), Some(_)) = (get("FC_FUNCTION_NAME"), get("FC_REGION")) {
            Self::Fc {
                function: function.to_owned(),
            }
        } else {
            Self::Local
        }
    }

    /// The platform's name of this function, if it has one.
    pub fn function(&self) -> Option<&str> {
        match self {
            Self::Lambda { function } | Self::Fc { function } => Some(function),
            Self::Local => None,
        }
    }
}

/// FC passes the port a custom runtime must listen on in this variable.
pub const FC_PORT_VAR: &str = "FC_CUSTOM_LISTEN_PORT";

/// The address to serve plain HTTP on, as far as the settings give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListenAddr {
    pub host: Option<std::net::IpAddr>,
    pub port: Option<u16>,
}

impl ListenAddr {
    /// This address, with `default`'s host or port where the settings give none.
    pub fn or(self, default: std::net::SocketAddr) -> std::net::SocketAddr {
        std::net::SocketAddr::new(
            self.host.unwrap_or(default.ip()),
            self.port.unwrap_or(default.port()),
        )
    }
}

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

/// How upstream (GCGC) SSO tokens are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsoKeys {
    Secret(Secret),
    JwksUrl(String),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub app_env: AppEnv,
    /// `JWT_SECRET`; required by the functions that issue or check API tokens.
    pub jwt_secret: Option<Secret>,
    /// `JWT_PREVIOUS_SECRETS` (comma list): earlier API token keys, which
    /// still verify the tokens they signed (a key rotation), never sign.
    pub jwt_previous_secrets: Vec<Secret>,
    pub jwt_expiration: Duration,
    /// `ALLOWED_ORIGINS`, `ALLOWED_HOSTS`, `MAX_BODY_BYTES`: the edge layer's.
    pub http: HttpSettings,
    /// `SSO_*`: how GCGC tokens are verified (sso-login).
    pub sso: SsoSettings,
    /// `REDIS_*`: the replay store.
    pub redis: RedisSettings,
    /// `DATABASE_*` and `DB_POOL_SIZE`: what [`crate::db::Database::open`] opens.
    pub database: DatabaseSettings,
    pub platform: Platform,
    /// Where to serve plain HTTP (not on Lambda): `LISTEN_HOST`, and `PORT`
    /// or FC's `FC_CUSTOM_LISTEN_PORT`; each server has its own defaults.
    pub listen: ListenAddr,
    /// CloudWatch namespace of the metrics the access log carries on Lambda
    /// (`METRICS_NAMESPACE`).
    pub metrics_namespace: String,
}

pub const MIN_JWT_SECRET_BYTES: usize = 32;
/// Whether this build has the embedded database (SQLite) for local runs:
/// the `embedded-db` feature, which deploy builds leave out.
pub const EMBEDDED_DB: bool = cfg!(feature = "embedded-db");
/// Why a build without it refuses an unset or `sqlite:` `DATABASE_URL`.
const NO_EMBEDDED_DB: &str = "this build has no embedded database (built with --no-default-features, as make build-lambda and make build-fc build deployed functions)";
const DEFAULT_ORIGINS: &str = "http://localhost:3000";
const DEFAULT_HOSTS: &str = "localhost,127.0.0.1";
const DEFAULT_EXPIRATION_HOURS: u64 = 720;
const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
const DEFAULT_REDIS_KEY_PREFIX: &str = "tms:";
/// Lambda sends an instance one request at a time.
const LAMBDA_POOL_SIZE: u32 = 1;
/// A plain-HTTP server (FC, local) serves many at once; FC's templates set
/// `DB_POOL_SIZE` to the instance concurrency.
const SERVER_POOL_SIZE: u32 = 10;
const MAX_POOL_SIZE: u32 = 100;
const DEFAULT_METRICS_NAMESPACE: &str = "TmsChat";

impl Config {
    /// Reads the process environment, and the secrets its `*_SECRET_ARN`
    /// variables name from AWS Secrets Manager.
    pub async fn load() -> Result<Self, ConfigError> {
        Self::load_from(std::env::vars().collect()).await
    }

    /// [`Config::load`] of these variables: their secrets read, then parsed.
    pub async fn load_from(mut vars: HashMap<String, String>) -> Result<Self, ConfigError> {
        crate::secrets::resolve(&mut vars).await?;
        Self::from_vars(&vars)
    }

    /// Reads a given set of variables: the same rules as [`Config::load`] (without its secrets),
    /// for tests and tools that must not touch the process environment.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| crate::secrets::setting(vars, name);

        let app_env = match get("APP_ENV").unwrap_or("development") {
            "development" | "dev" | "local" | "staging" | "test" => AppEnv::Development,
            "production" | "prod" => AppEnv::Production,
            other => {
                return Err(ConfigError::new(
                    "APP_ENV",
                    format!("expected `development` or `production`, got `{other}`"),
                ));
            }
        };

        let jwt_secret = match get("JWT_SECRET") {
            Some(s) if s.len() < MIN_JWT_SECRET_BYTES => {
                return Err(ConfigError::new(
                    "JWT_SECRET",
                    format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
                ));
            }
            other => other.map(Secret::new),
        };
        let jwt_previous_secrets = parse_list(get("JWT_PREVIOUS_SECRETS").unwrap_or(""))
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

        let hours: u64 = match get("JWT_EXPIRATION_HOURS") {
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

        let allowed_origins = parse_origins(get("ALLOWED_ORIGINS").unwrap_or(DEFAULT_ORIGINS))?;
        let allowed_hosts = parse_list(get("ALLOWED_HOSTS").unwrap_or(DEFAULT_HOSTS))
            .map(|h| HostPattern::parse(h).map_err(|p| ConfigError::new("ALLOWED_HOSTS", p)))
            .collect::<Result<Vec<_>, _>>()?;
        if allowed_hosts.is_empty() {
            return Err(ConfigError::new(
                "ALLOWED_HOSTS",
                "must list at least one host",
            ));
        }

        let sso_keys = match (get("SSO_JWT_SECRET"), get("SSO_JWKS_URL")) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "SSO_JWKS_URL",
                    "set either SSO_JWT_SECRET or SSO_JWKS_URL, not both",
                ));
            }
            (Some(s), None) if s.len() < MIN_JWT_SECRET_BYTES => {
                return Err(ConfigError::new(
                    "SSO_JWT_SECRET",
                    format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
                ));
            }
            (Some(s), None) => Some(SsoKeys::Secret(Secret::new(s))),
            (None, Some(url)) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(ConfigError::new(
                        "SSO_JWKS_URL",
                        "must be an http(s):// URL",
                    ));
                }
                Some(SsoKeys::JwksUrl(url.to_owned()))
            }
            (None, None) => None,
        };

        let redis_url = match get("REDIS_URL") {
            Some(u)
                if !(u.starts_with("redis://")
                    || u.starts_with("rediss://")
                    || crate::redis_client::CLUSTER_SCHEMES
                        .iter()
                        .any(|s| u.starts_with(s))) =>
            {
                return Err(ConfigError::new(
                    "REDIS_URL",
                    "must start with redis://, rediss://, redis+cluster:// or rediss+cluster://",
                ));
            }
            other => other.map(Secret::new),
        };
        let redis_ca_cert = get("REDIS_CA_CERT_PATH")
            .map(|path| CaBundle::read("REDIS_CA_CERT_PATH", path))
            .transpose()?;
        if redis_ca_cert.is_some()
            && !redis_url
                .as_ref()
                .is_some_and(|u| u.expose().starts_with("rediss"))
        {
            return Err(ConfigError::new(
                "REDIS_CA_CERT_PATH",
                "needs a TLS REDIS_URL (rediss:// or rediss+cluster://)",
            ));
        }

        let database_url = match get("DATABASE_URL") {
            Some(u) if u.starts_with("sqlite:") && !EMBEDDED_DB => {
                return Err(ConfigError::new(
                    "DATABASE_URL",
                    format!("must start with postgres:// or postgresql://: {NO_EMBEDDED_DB}"),
                ));
            }
            Some(u)
                if !(u.starts_with("postgres://")
                    || u.starts_with("postgresql://")
                    || u.starts_with("sqlite:")) =>
            {
                return Err(ConfigError::new(
                    "DATABASE_URL",
                    "must start with postgres://, postgresql:// or sqlite:",
                ));
            }
            Some(u) if u.starts_with("sqlite:") => Some(DatabaseUrl::Embedded(u.to_owned())),
            other => other.map(|u| DatabaseUrl::Postgres(Secret::new(u))),
        };
        let database_ca_cert = get("DATABASE_CA_CERT_PATH")
            .map(|path| CaBundle::read("DATABASE_CA_CERT_PATH", path))
            .transpose()?;
        let database_host = match get("DATABASE_HOST") {
            Some(h) if h.contains(|c: char| c.is_whitespace() || "/:@?".contains(c)) => {
                return Err(ConfigError::new(
                    "DATABASE_HOST",
                    "must be a host name only, like tms.proxy-xxxx.eu-west-1.rds.amazonaws.com",
                ));
            }
            other => other.map(str::to_owned),
        };
        let database_pooler = match get("DATABASE_POOLER") {
            None => crate::db::Pooler::default(),
            Some(v) => crate::db::Pooler::parse(v).ok_or_else(|| {
                ConfigError::new(
                    "DATABASE_POOLER",
                    format!(
                        "expected `none` or `transaction` (a transaction-mode pooler), got `{v}`"
                    ),
                )
            })?,
        };

        if app_env == AppEnv::Production {
            if redis_url.is_none() {
                return Err(ConfigError::new(
                    "REDIS_URL",
                    "required when APP_ENV=production (the in-process replay store protects one instance only)",
                ));
            }
            if !matches!(database_url, Some(DatabaseUrl::Postgres(_))) {
                return Err(ConfigError::new(
                    "DATABASE_URL",
                    "a postgres:// URL is required when APP_ENV=production",
                ));
            }
        }
        if database_url.is_none() && !EMBEDDED_DB {
            return Err(ConfigError::new(
                "DATABASE_URL",
                format!("required (postgres://...): {NO_EMBEDDED_DB}"),
            ));
        }

        if let Some(SsoKeys::JwksUrl(url)) = &sso_keys
            && app_env == AppEnv::Production
            && !url.starts_with("https://")
        {
            return Err(ConfigError::new(
                "SSO_JWKS_URL",
                "must be https:// when APP_ENV=production (the keys decide who logs in)",
            ));
        }
        if let Some(SsoKeys::Secret(sso)) = &sso_keys
            && (jwt_secret.as_ref() == Some(sso) || jwt_previous_secrets.contains(sso))
        {
            // Else an API token would pass for a GCGC token at login.
            return Err(ConfigError::new(
                "SSO_JWT_SECRET",
                "must differ from JWT_SECRET and from each of JWT_PREVIOUS_SECRETS",
            ));
        }

        if let Some(SsoKeys::JwksUrl(_)) = &sso_keys
            && app_env == AppEnv::Production
        {
            // Keys published for every client of the identity provider: without
            // an issuer and audience check, a token minted for another
            // application of the same provider would log in here.
            for (variable, value) in [
                ("SSO_AUDIENCE", get("SSO_AUDIENCE")),
                ("SSO_ISSUER", get("SSO_ISSUER")),
            ] {
                if value.is_none() {
                    return Err(ConfigError::new(
                        variable,
                        "required when APP_ENV=production and SSO_JWKS_URL is set (else tokens the identity provider issued for other applications are accepted)",
                    ));
                }
            }
        }

        let max_body_bytes = match get("MAX_BODY_BYTES") {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(v) => v.parse().ok().filter(|n| *n >= 1024).ok_or_else(|| {
                ConfigError::new(
                    "MAX_BODY_BYTES",
                    format!("expected a number of bytes, at least 1024, got `{v}`"),
                )
            })?,
        };

        let platform = Platform::from_vars(vars);
        let listen = ListenAddr {
            host: get("LISTEN_HOST")
                .map(|v| {
                    v.parse().map_err(|_| {
                        ConfigError::new(
                            "LISTEN_HOST",
                            format!("expected an IP address, got `{v}`"),
                        )
                    })
                })
                .transpose()?,
            port: ["PORT", FC_PORT_VAR]
                .into_iter()
                .find_map(|var| Some((var, get(var)?)))
                .map(|(var, v)| {
                    v.parse().map_err(|_| {
                        ConfigError::new(var, format!("expected a port number, got `{v}`"))
                    })
                })
                .transpose()?,
        };

        let metrics_namespace = get("METRICS_NAMESPACE")
            .unwrap_or(DEFAULT_METRICS_NAMESPACE)
            .to_owned();
        if !is_cloudwatch_namespace(&metrics_namespace) {
            return Err(ConfigError::new(
                "METRICS_NAMESPACE",
                "expected at most 255 of A-Z a-z 0-9 . - _ / # : and spaces, not starting with AWS/",
            ));
        }

        // Lambda sends an instance as many requests at once as
        // AWS_LAMBDA_MAX_CONCURRENCY says (Managed Instances), else one.
        let lambda_concurrency = get("AWS_LAMBDA_MAX_CONCURRENCY")
            .and_then(|v| v.parse::<u32>().ok())
            .map(|n| n.clamp(LAMBDA_POOL_SIZE, MAX_POOL_SIZE));
        let db_pool_size = match get("DB_POOL_SIZE") {
            None if matches!(platform, Platform::Lambda { .. }) => {
                lambda_concurrency.unwrap_or(LAMBDA_POOL_SIZE)
            }
            None => SERVER_POOL_SIZE,
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| (1..=MAX_POOL_SIZE).contains(n))
                .ok_or_else(|| {
                    ConfigError::new(
                        "DB_POOL_SIZE",
                        format!(
                            "expected a number of connections from 1 to {MAX_POOL_SIZE}, got `{v}`"
                        ),
                    )
                })?,
        };

        Ok(Self {
            app_env,
            jwt_secret,
            jwt_previous_secrets,
            jwt_expiration: Duration::from_secs(hours * 3600),
            http: HttpSettings {
                allowed_origins,
                allowed_hosts,
                max_body_bytes,
            },
            sso: SsoSettings {
                keys: sso_keys,
                issuer: get("SSO_ISSUER").map(str::to_owned),
                audience: get("SSO_AUDIENCE").map(str::to_owned),
            },
            redis: RedisSettings {
                url: redis_url,
                key_prefix: get("REDIS_KEY_PREFIX")
                    .unwrap_or(DEFAULT_REDIS_KEY_PREFIX)
                    .to_owned(),
                ca_cert: redis_ca_cert,
            },
            database: DatabaseSettings {
                url: database_url,
                ca_cert: database_ca_cert,
                host: database_host,
                pooler: database_pooler,
                pool_size: db_pool_size,
            },
            platform,
            listen,
            metrics_namespace,
        })
    }

    /// `JWT_SECRET`, for the functions that issue or check API tokens.
    pub fn require_jwt_secret(&self) -> Result<&Secret, ConfigError> {
        self.jwt_secret
            .as_ref()
            .ok_or_else(|| ConfigError::new("JWT_SECRET", "required (at least 32 bytes)"))
    }
}

/// The settings of GCGC token verification (`SSO_JWT_SECRET` or
/// `SSO_JWKS_URL`, `SSO_ISSUER`, `SSO_AUDIENCE`).
#[derive(Debug, Clone)]
pub struct SsoSettings {
    pub keys: Option<SsoKeys>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl SsoSettings {
    /// How GCGC tokens are verified, for sso-login.
    pub fn require_keys(&self) -> Result<&SsoKeys, ConfigError> {
        self.keys.as_ref().ok_or_else(|| {
            ConfigError::new(
                "SSO_JWT_SECRET",
                "SSO_JWT_SECRET or SSO_JWKS_URL is required",
            )
        })
    }
}

/// CloudWatch's rule for a namespace (`AWS/` is reserved for AWS's own).
fn is_cloudwatch_namespace(value: &str) -> bool {
    (1..=255).contains(&value.len())
        && !value.starts_with("AWS/")
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_/#: ".contains(&b))
}

fn parse_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
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

/// A test's variables, as given.
#[cfg(test)]
fn exact_vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A test's variables. Builds without the embedded database need a
/// `DATABASE_URL`: one is added where the test gives none.
#[cfg(test)]
pub(crate) fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    let mut vars = exact_vars(pairs);
    if !EMBEDDED_DB {
        vars.entry("DATABASE_URL".into())
            .or_insert_with(|| "postgres://db/tms".into());
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_database_is_there_only_in_builds_that_have_it() {
        let unset = Config::from_vars(&exact_vars(&[]));
        let sqlite = Config::from_vars(&exact_vars(&[("DATABASE_URL", "sqlite::memory:")]));
        if EMBEDDED_DB {
            assert!(unset.unwrap().database.url.is_none());
            assert!(sqlite.is_ok());
        } else {
            for err in [unset.unwrap_err(), sqlite.unwrap_err()] {
                assert_eq!(err.variable, "DATABASE_URL");
                assert!(err.to_string().contains("no embedded database"), "{err}");
            }
        }
        let postgres = Config::from_vars(&exact_vars(&[("DATABASE_URL", "postgres://db/tms")]));
        assert!(postgres.is_ok());
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn defaults_follow_the_contract() {
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!(c.app_env, AppEnv::Development);
        assert_eq!(c.jwt_expiration, Duration::from_secs(720 * 3600));
        assert_eq!(
            c.http.allowed_origins,
            vec![HeaderValue::from_static("http://localhost:3000")]
        );
        assert_eq!(c.http.allowed_hosts.len(), 2);
        assert_eq!(c.http.max_body_bytes, 64 * 1024);
        assert_eq!(c.database.pool_size, SERVER_POOL_SIZE);
        assert!(c.redis.url.is_none());
        // Unset means the embedded database; builds without it need one
        // (the test's variables give it there).
        assert_eq!(c.database.url.is_none(), EMBEDDED_DB);
        assert_eq!(c.require_jwt_secret().unwrap_err().variable, "JWT_SECRET");
        assert_eq!(c.sso.require_keys().unwrap_err().variable, "SSO_JWT_SECRET");
    }

    #[test]
    fn previous_api_token_keys_are_a_comma_list() {
        let c = Config::from_vars(&vars(&[(
            "JWT_PREVIOUS_SECRETS",
            " previous-jwt-secret-0123456789abcdef , ,older-jwt-secret-0123456789abcdef012",
        )]))
        .unwrap();
        let listed: Vec<&str> = c.jwt_previous_secrets.iter().map(Secret::expose).collect();
        assert_eq!(
            listed,
            [
                "previous-jwt-secret-0123456789abcdef",
                "older-jwt-secret-0123456789abcdef012"
            ]
        );
        assert!(
            !format!("{c:?}").contains("previous-jwt-secret"),
            "never shown"
        );
    }

    #[test]
    fn each_bad_variable_is_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("JWT_SECRET", "short")], "JWT_SECRET"),
            (&[("JWT_EXPIRATION_HOURS", "abc")], "JWT_EXPIRATION_HOURS"),
            (&[("JWT_EXPIRATION_HOURS", "0")], "JWT_EXPIRATION_HOURS"),
            (&[("ALLOWED_ORIGINS", "*")], "ALLOWED_ORIGINS"),
            (&[("ALLOWED_ORIGINS", "example.com")], "ALLOWED_ORIGINS"),
            (
                &[("ALLOWED_ORIGINS", "https://example.com/")],
                "ALLOWED_ORIGINS",
            ),
            (&[("ALLOWED_HOSTS", "bad host")], "ALLOWED_HOSTS"),
            (&[("ALLOWED_HOSTS", "a.*.com")], "ALLOWED_HOSTS"),
            (&[("APP_ENV", "prdo")], "APP_ENV"),
            (&[("REDIS_URL", "http://x")], "REDIS_URL"),
            (&[("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
            (&[("JWT_PREVIOUS_SECRETS", "short")], "JWT_PREVIOUS_SECRETS"),
            (
                &[(
                    "JWT_PREVIOUS_SECRETS",
                    "previous-jwt-secret-0123456789abcdef,short",
                )],
                "JWT_PREVIOUS_SECRETS",
            ),
            (&[("SSO_JWT_SECRET", "short")], "SSO_JWT_SECRET"),
            (&[("SSO_JWKS_URL", "ftp://x")], "SSO_JWKS_URL"),
            (&[("MAX_BODY_BYTES", "ten")], "MAX_BODY_BYTES"),
            (&[("DB_POOL_SIZE", "0")], "DB_POOL_SIZE"),
            (&[("DB_POOL_SIZE", "many")], "DB_POOL_SIZE"),
            (&[("DATABASE_POOLER", "pgbouncer")], "DATABASE_POOLER"),
            (&[("REDIS_URL", "redis+sentinel://x")], "REDIS_URL"),
            (
                &[
                    ("REDIS_URL", "rediss://x"),
                    ("REDIS_CA_CERT_PATH", "/nonexistent.pem"),
                ],
                "REDIS_CA_CERT_PATH",
            ),
            (
                &[("DATABASE_CA_CERT_PATH", "/nonexistent.pem")],
                "DATABASE_CA_CERT_PATH",
            ),
            (
                &[("DATABASE_CA_CERT_PATH", "Cargo.toml")],
                "DATABASE_CA_CERT_PATH",
            ),
            (
                &[("DATABASE_HOST", "postgres://proxy:5432")],
                "DATABASE_HOST",
            ),
            (
                &[("JWT_SECRET", SECRET), ("SSO_JWT_SECRET", SECRET)],
                "SSO_JWT_SECRET",
            ),
            (
                &[("JWT_PREVIOUS_SECRETS", SECRET), ("SSO_JWT_SECRET", SECRET)],
                "SSO_JWT_SECRET",
            ),
            (
                &[
                    ("APP_ENV", "production"),
                    ("REDIS_URL", "rediss://cache:6380"),
                    ("DATABASE_URL", "postgres://db/tms"),
                    ("SSO_JWKS_URL", "http://idp.example.com/jwks.json"),
                ],
                "SSO_JWKS_URL",
            ),
        ];
        for (pairs, variable) in cases {
            let err = Config::from_vars(&vars(pairs)).unwrap_err();
            assert_eq!(err.variable, *variable, "{pairs:?}");
            assert!(err.to_string().contains(variable), "{err}");
        }
    }

    #[test]
    fn the_pool_fits_the_platform() {
        let lambda = Config::from_vars(&vars(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")]));
        assert_eq!(lambda.unwrap().database.pool_size, 1);
        let managed = Config::from_vars(&vars(&[
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
            ("AWS_LAMBDA_MAX_CONCURRENCY", "8"),
        ]));
        assert_eq!(managed.unwrap().database.pool_size, 8);
        let fc = Config::from_vars(&vars(&[("DB_POOL_SIZE", "20")])).unwrap();
        assert_eq!(fc.database.pool_size, 20);
    }

    #[test]
    fn production_requires_redis_and_postgres() {
        let err = Config::from_vars(&vars(&[("APP_ENV", "production")])).unwrap_err();
        assert_eq!(err.variable, "REDIS_URL");
        let err = Config::from_vars(&vars(&[
            ("APP_ENV", "production"),
            ("REDIS_URL", "rediss://cache:6380"),
            ("DATABASE_URL", "sqlite://x.db"),
        ]))
        .unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        let ok = Config::from_vars(&vars(&[
            ("APP_ENV", "production"),
            ("REDIS_URL", "rediss://cache:6380"),
            ("DATABASE_URL", "postgres://db/tms?sslmode=require"),
            ("JWT_SECRET", SECRET),
        ]));
        assert!(ok.is_ok());
    }

    #[test]
    fn production_with_a_jwks_url_requires_audience_and_issuer() {
        let production = [
            ("APP_ENV", "production"),
            ("REDIS_URL", "rediss://cache:6380"),
            ("DATABASE_URL", "postgres://db/tms"),
            ("SSO_JWKS_URL", "https://idp.example.com/jwks.json"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = production.to_vec();
            pairs.extend_from_slice(extra);
            Config::from_vars(&vars(&pairs))
        };
        let err = with(&[]).unwrap_err();
        assert_eq!(err.variable, "SSO_AUDIENCE");
        assert!(err.to_string().contains("SSO_AUDIENCE"), "{err}");
        let err = with(&[("SSO_AUDIENCE", "tms-chat")]).unwrap_err();
        assert_eq!(err.variable, "SSO_ISSUER");
        let err = with(&[("SSO_ISSUER", "https://idp.example.com")]).unwrap_err();
        assert_eq!(err.variable, "SSO_AUDIENCE");
        // Empty counts as unset, as everywhere else.
        let err = with(&[
            ("SSO_AUDIENCE", " "),
            ("SSO_ISSUER", "https://idp.example.com"),
        ]);
        assert_eq!(err.unwrap_err().variable, "SSO_AUDIENCE");
        let ok = with(&[
            ("SSO_AUDIENCE", "tms-chat"),
            ("SSO_ISSUER", "https://idp.example.com"),
        ])
        .unwrap();
        assert_eq!(ok.sso.audience.as_deref(), Some("tms-chat"));

        // Development keeps them optional, and so does an HS256 secret (it is ours alone).
        let dev = [("SSO_JWKS_URL", "https://idp.example.com/jwks.json")];
        assert!(Config::from_vars(&vars(&dev)).is_ok());
        let secret = Config::from_vars(&vars(&[
            ("APP_ENV", "production"),
            ("REDIS_URL", "rediss://cache:6380"),
            ("DATABASE_URL", "postgres://db/tms"),
            ("SSO_JWT_SECRET", SECRET),
        ]));
        assert!(secret.is_ok());
    }

    #[test]
    fn the_platform_is_told_by_the_variables_it_sets() {
        let platform = |pairs: &[(&str, &str)]| Config::from_vars(&vars(pairs)).unwrap().platform;
        assert_eq!(
            platform(&[
                ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
                ("AWS_LAMBDA_FUNCTION_NAME", "tms-sso-login"),
            ]),
            Platform::Lambda {
                function: "tms-sso-login".into()
            }
        );
        assert_eq!(
            platform(&[
                ("FC_FUNCTION_NAME", "tms-chat-health"),
                ("FC_REGION", "cn-hangzhou")
            ]),
            Platform::Fc {
                function: "tms-chat-health".into()
            }
        );
        // FC's port alone is not FC: tests and local runs set it too.
        assert_eq!(
            platform(&[("FC_CUSTOM_LISTEN_PORT", "9000")]),
            Platform::Local
        );
        assert_eq!(platform(&[("FC_FUNCTION_NAME", "x")]), Platform::Local);
        assert_eq!(platform(&[]), Platform::Local);
        assert_eq!(Platform::Local.function(), None);
    }

    #[test]
    fn the_database_url_is_judged_once_into_what_it_names() {
        let url = |value: &str| {
            Config::from_vars(&vars(&[("DATABASE_URL", value)])).map(|c| c.database.url)
        };
        assert!(matches!(
            url("postgresql://db/tms"),
            Ok(Some(DatabaseUrl::Postgres(u))) if u.expose() == "postgresql://db/tms"
        ));
        match url("sqlite:/tmp/tms.db") {
            Ok(Some(DatabaseUrl::Embedded(u))) => assert!(EMBEDDED_DB && u == "sqlite:/tmp/tms.db"),
            Err(e) => assert!(!EMBEDDED_DB && e.variable == "DATABASE_URL", "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(url("mysql://db/tms").unwrap_err().variable, "DATABASE_URL");
    }

    #[test]
    fn the_listen_address_is_read_once_with_each_servers_defaults_beside() {
        let listen = |pairs: &[(&str, &str)]| Config::from_vars(&vars(pairs)).map(|c| c.listen);
        let default: std::net::SocketAddr = "0.0.0.0:9000".parse().unwrap();
        assert_eq!(listen(&[]).unwrap().or(default), default);
        assert_eq!(
            listen(&[
                ("LISTEN_HOST", "127.0.0.1"),
                ("FC_CUSTOM_LISTEN_PORT", "9123")
            ])
            .unwrap()
            .or(default),
            "127.0.0.1:9123".parse().unwrap()
        );
        // PORT first: FC's variable only when PORT is unset.
        let both = listen(&[("PORT", "8001"), ("FC_CUSTOM_LISTEN_PORT", "9123")]);
        assert_eq!(both.unwrap().port, Some(8001));
        for (variable, value) in [
            ("LISTEN_HOST", "localhost"),
            ("PORT", "http"),
            ("FC_CUSTOM_LISTEN_PORT", "nine"),
        ] {
            let err = listen(&[(variable, value)]).unwrap_err();
            assert_eq!(err.variable, variable);
            assert!(err.problem.contains(value), "{err}");
        }
    }

    #[test]
    fn the_metrics_namespace_follows_cloudwatch_rules() {
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!(c.metrics_namespace, "TmsChat");
        let c = Config::from_vars(&vars(&[("METRICS_NAMESPACE", "TMS/prod-stack")])).unwrap();
        assert_eq!(c.metrics_namespace, "TMS/prod-stack");
        let long = "x".repeat(256);
        for bad in ["AWS/Lambda", "tms\\chat", "täms", long.as_str()] {
            let err = Config::from_vars(&vars(&[("METRICS_NAMESPACE", bad)])).unwrap_err();
            assert_eq!(err.variable, "METRICS_NAMESPACE", "{bad}");
        }
    }

    #[test]
    fn managed_redis_urls_and_ca_bundles() {
        let pem = std::env::temp_dir().join(format!("tms-config-ca-{}.pem", std::process::id()));
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let pem = pem.to_str().unwrap();
        for url in ["redis+cluster://cache:6379", "rediss+cluster://cache:6379"] {
            let c = Config::from_vars(&vars(&[("REDIS_URL", url)])).unwrap();
            assert_eq!(c.redis.url.unwrap().expose(), url);
        }
        for url in ["rediss://cache:6379", "rediss+cluster://cache:6379"] {
            let c = Config::from_vars(&vars(&[("REDIS_URL", url), ("REDIS_CA_CERT_PATH", pem)]));
            assert_eq!(c.unwrap().redis.ca_cert.unwrap().path, pem);
        }
        // A CA for a connection without TLS would silently not be used.
        for url in ["redis://cache:6379", "redis+cluster://cache:6379"] {
            let err = Config::from_vars(&vars(&[("REDIS_URL", url), ("REDIS_CA_CERT_PATH", pem)]));
            assert_eq!(err.unwrap_err().variable, "REDIS_CA_CERT_PATH");
        }
        let c = Config::from_vars(&vars(&[("DATABASE_CA_CERT_PATH", pem)])).unwrap();
        assert!(format!("{c:?}").contains(&format!("CaBundle({pem})")));
        let _ = std::fs::remove_file(pem);
    }

    #[test]
    fn lists_are_trimmed_and_secrets_never_print() {
        let c = Config::from_vars(&vars(&[
            (
                "ALLOWED_ORIGINS",
                " https://a.example.com, https://b.example.com ,",
            ),
            ("JWT_SECRET", SECRET),
            ("JWT_EXPIRATION_HOURS", "24"),
        ]))
        .unwrap();
        assert_eq!(c.http.allowed_origins.len(), 2);
        assert_eq!(c.jwt_expiration, Duration::from_secs(24 * 3600));
        assert!(!format!("{c:?}").contains(SECRET));
    }
}
