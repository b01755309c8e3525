//! Typed configuration, read from the environment once at start and validated.
//!
//! A missing or invalid variable stops the function before it serves anything,
//! with one line naming the variable, so a bad deploy fails its canary instead
//! of answering 500s (instead of a hand-edited `.env` on a server).
//!
//! Read in sections, each variable by one of them: [`Config`] holds what
//! every function uses (the environment, the platform and where to listen,
//! the edge layer, the database, the metrics' namespace), and a function asks
//! for the other [`Section`]s it uses: API tokens ([`JwtSettings`]), GCGC
//! verification ([`SsoSettings`]), the replay store ([`RedisSettings`]). So
//! health carries no SSO settings, and a setting only one function reads
//! stops only that function when it is wrong.

use std::collections::HashMap;

pub use crate::ca_bundle::CaBundle;
pub use crate::config_error::ConfigError;
pub use crate::db::{DatabaseSettings, DatabaseUrl};
pub use crate::redis_client::RedisSettings;
pub use crate::secret::Secret;

mod database;
mod edge;
mod jwt;
mod platform;
mod redis_store;
mod sso;

pub use edge::HttpSettings;
pub use jwt::{JwtSettings, MIN_JWT_SECRET_BYTES};
pub use platform::{FC_PORT_VAR, ListenAddr, Platform};
pub use sso::{SsoKeys, SsoSettings};

/// The process's variables, as read (after their secrets are resolved).
pub type Vars = HashMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

/// What every function uses.
#[derive(Debug, Clone)]
pub struct Config {
    pub app_env: AppEnv,
    /// `ALLOWED_ORIGINS`, `ALLOWED_HOSTS`, `MAX_BODY_BYTES`: the edge layer's.
    pub http: HttpSettings,
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

/// A part of the settings that only some functions use, read from the same
/// variables as [`Config`] (given, for what depends on `APP_ENV`). A
/// function's `build` names the sections it takes; a tuple of sections is one.
pub trait Section: Sized {
    fn from_vars(vars: &Vars, config: &Config) -> Result<Self, ConfigError>;

    /// Whether this section reads the setting `name`. A function reads a
    /// setting's secret (`*_SECRET_ARN`, [`crate::secrets`]) at start only
    /// when [`Config`] or one of its sections reads the setting: no start
    /// waits for, nor needs the permission to read, a secret it never uses.
    fn reads(name: &str) -> bool;
}

impl Section for () {
    fn from_vars(_: &Vars, _: &Config) -> Result<Self, ConfigError> {
        Ok(())
    }

    fn reads(_: &str) -> bool {
        false
    }
}

impl<A: Section, B: Section> Section for (A, B) {
    fn from_vars(vars: &Vars, config: &Config) -> Result<Self, ConfigError> {
        Ok((A::from_vars(vars, config)?, B::from_vars(vars, config)?))
    }

    fn reads(name: &str) -> bool {
        A::reads(name) || B::reads(name)
    }
}

impl<A: Section, B: Section, C: Section> Section for (A, B, C) {
    fn from_vars(vars: &Vars, config: &Config) -> Result<Self, ConfigError> {
        Ok((
            A::from_vars(vars, config)?,
            B::from_vars(vars, config)?,
            C::from_vars(vars, config)?,
        ))
    }

    fn reads(name: &str) -> bool {
        A::reads(name) || B::reads(name) || C::reads(name)
    }
}

/// Whether this build has the embedded database (SQLite) for local runs:
/// the `embedded-db` feature, which deploy builds leave out.
pub const EMBEDDED_DB: bool = cfg!(feature = "embedded-db");
const DEFAULT_METRICS_NAMESPACE: &str = "TmsChat";

impl Config {
    /// Reads the process environment, and the secrets its `*_SECRET_ARN`
    /// variables name from AWS Secrets Manager.
    pub async fn load() -> Result<Self, ConfigError> {
        Self::load_with::<()>().await.map(|(config, ())| config)
    }

    /// [`Config::load`] with the sections `S`.
    pub async fn load_with<S: Section>() -> Result<(Self, S), ConfigError> {
        Self::load_from(std::env::vars().collect()).await
    }

    /// [`Config::load_with`] of these variables: their secrets read, then parsed.
    pub async fn load_from<S: Section>(mut vars: Vars) -> Result<(Self, S), ConfigError> {
        crate::secrets::resolve(&mut vars, |name| Self::reads(name) || S::reads(name)).await?;
        Self::with_sections(&vars)
    }

    /// The settings and the sections `S` of a given set of variables (no
    /// secrets read), for tests and tools that must not touch the process
    /// environment.
    pub fn with_sections<S: Section>(vars: &Vars) -> Result<(Self, S), ConfigError> {
        let config = Self::from_vars(vars)?;
        let sections = S::from_vars(vars, &config)?;
        Ok((config, sections))
    }

    /// Whether what every function uses reads the setting `name` (the
    /// database's URL, of the settings a secret may hold): see
    /// [`Section::reads`].
    pub fn reads(name: &str) -> bool {
        name == "DATABASE_URL"
    }

    /// What every function uses, of these variables: the same rules as
    /// [`Config::load`] (without its secrets).
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let app_env = match setting(vars, "APP_ENV").unwrap_or("development") {
            "development" | "dev" | "local" | "staging" | "test" => AppEnv::Development,
            "production" | "prod" => AppEnv::Production,
            other => {
                return Err(ConfigError::new(
                    "APP_ENV",
                    format!("expected `development` or `production`, got `{other}`"),
                ));
            }
        };
        let platform = Platform::from_vars(vars);
        Ok(Self {
            app_env,
            http: edge::from_vars(vars)?,
            database: database::from_vars(vars, app_env, &platform)?,
            listen: platform::listen_from_vars(vars)?,
            platform,
            metrics_namespace: metrics_namespace(vars)?,
        })
    }
}

/// `METRICS_NAMESPACE`, by CloudWatch's rule for a namespace (`AWS/` is
/// reserved for AWS's own).
fn metrics_namespace(vars: &Vars) -> Result<String, ConfigError> {
    let value = setting(vars, "METRICS_NAMESPACE").unwrap_or(DEFAULT_METRICS_NAMESPACE);
    let valid = (1..=255).contains(&value.len())
        && !value.starts_with("AWS/")
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_/#: ".contains(&b));
    if !valid {
        return Err(ConfigError::new(
            "METRICS_NAMESPACE",
            "expected at most 255 of A-Z a-z 0-9 . - _ / # : and spaces, not starting with AWS/",
        ));
    }
    Ok(value.to_owned())
}

/// The one reading of a variable (trimmed; empty counts as unset).
fn setting<'a>(vars: &'a Vars, name: &str) -> Option<&'a str> {
    crate::secrets::setting(vars, name)
}

/// A comma list, trimmed, without empty items.
fn parse_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A test's variables, as given.
#[cfg(test)]
fn exact_vars(pairs: &[(&str, &str)]) -> Vars {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A test's variables. Builds without the embedded database need a
/// `DATABASE_URL`: one is added where the test gives none.
#[cfg(test)]
pub(crate) fn vars(pairs: &[(&str, &str)]) -> Vars {
    let mut vars = exact_vars(pairs);
    if !EMBEDDED_DB {
        vars.entry("DATABASE_URL".into())
            .or_insert_with(|| "postgres://db/tms".into());
    }
    vars
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

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

    /// The settings and every section of these variables, the sections'
    /// own required settings given where `pairs` leave them out, and the
    /// rule between the API and GCGC keys checked (as sso-login does).
    fn all_sections(
        pairs: &[(&str, &str)],
    ) -> Result<(Config, (JwtSettings, SsoSettings, RedisSettings)), ConfigError> {
        let mut vars = vars(pairs);
        vars.entry("JWT_SECRET".into())
            .or_insert_with(|| "default-jwt-secret-0123456789abcdef".into());
        if !vars.contains_key("SSO_JWKS_URL") {
            vars.entry("SSO_JWT_SECRET".into())
                .or_insert_with(|| "default-sso-secret-0123456789abcdef".into());
        }
        let (config, (jwt, sso, redis)) =
            Config::with_sections::<(JwtSettings, SsoSettings, RedisSettings)>(&vars)?;
        sso.check_apart_from(&jwt)?;
        Ok((config, (jwt, sso, redis)))
    }

    #[test]
    fn defaults_follow_the_contract() {
        let (c, (jwt, _, redis)) = all_sections(&[]).unwrap();
        assert_eq!(c.app_env, AppEnv::Development);
        assert_eq!(jwt.expiration, Duration::from_secs(720 * 3600));
        assert_eq!(
            c.http.allowed_origins,
            vec![HeaderValue::from_static("http://localhost:3000")]
        );
        assert_eq!(c.http.allowed_hosts.len(), 2);
        assert_eq!(c.http.max_body_bytes, 64 * 1024);
        assert_eq!(c.database.pool_size, database::SERVER_POOL_SIZE);
        assert!(redis.url.is_none());
        // Unset means the embedded database; builds without it need one
        // (the test's variables give it there).
        assert_eq!(c.database.url.is_none(), EMBEDDED_DB);
    }

    #[test]
    fn each_section_is_read_only_by_the_functions_that_ask_for_it() {
        // Health's sections: no API or GCGC keys needed, none read.
        let health = Config::with_sections::<RedisSettings>(&vars(&[
            ("JWT_SECRET", "short"),
            ("SSO_JWKS_URL", "ftp://x"),
        ]));
        assert!(health.is_ok());
        // The functions that need them are stopped by their absence.
        let jwt = Config::with_sections::<JwtSettings>(&vars(&[])).unwrap_err();
        assert_eq!(jwt.variable, "JWT_SECRET");
        assert!(jwt.problem.contains("required"), "{jwt}");
        let sso = Config::with_sections::<SsoSettings>(&vars(&[])).unwrap_err();
        assert_eq!(sso.variable, "SSO_JWT_SECRET");
        // Conversations in production has no use for Redis.
        let production = [
            ("APP_ENV", "production"),
            ("DATABASE_URL", "postgres://db/tms"),
            ("JWT_SECRET", SECRET),
        ];
        assert!(Config::with_sections::<JwtSettings>(&vars(&production)).is_ok());
        let redis = Config::with_sections::<RedisSettings>(&vars(&production)).unwrap_err();
        assert_eq!(redis.variable, "REDIS_URL");
    }

    /// `reads` says what `from_vars` reads: of the settings a secret may
    /// hold, a bad value stops exactly the settings that claim to read it.
    /// (A section that read a setting it does not claim would start without
    /// its secret; one that claimed a setting it does not read would wait
    /// for a secret it never uses.)
    #[test]
    fn each_section_reads_the_secrets_it_says_it_reads() {
        let good = [
            ("JWT_SECRET", SECRET),
            ("SSO_JWT_SECRET", "default-sso-secret-0123456789abcdef"),
            ("DATABASE_URL", "postgres://db/tms"),
        ];
        assert!(all_sections(&good).is_ok());
        let config = Config::from_vars(&vars(&good)).unwrap();
        let stopped_by = |section: fn(&Vars, &Config) -> bool, vars: &Vars| section(vars, &config);
        fn fails<S: Section>(vars: &Vars, config: &Config) -> bool {
            S::from_vars(vars, config).is_err()
        }
        for (_, name) in crate::secrets::SECRET_VARIABLES {
            let mut bad = vars(&good);
            bad.insert(name.to_owned(), "x".to_owned());
            let cases = [
                (
                    Config::reads(name),
                    Config::from_vars(&bad).is_err(),
                    "Config",
                ),
                (
                    JwtSettings::reads(name),
                    stopped_by(fails::<JwtSettings>, &bad),
                    "JwtSettings",
                ),
                (
                    SsoSettings::reads(name),
                    stopped_by(fails::<SsoSettings>, &bad),
                    "SsoSettings",
                ),
                (
                    RedisSettings::reads(name),
                    stopped_by(fails::<RedisSettings>, &bad),
                    "RedisSettings",
                ),
            ];
            let readers: Vec<&str> = cases.iter().filter(|c| c.0).map(|c| c.2).collect();
            assert_eq!(readers.len(), 1, "{name} is read by {readers:?}");
            for (reads, stopped, section) in cases {
                assert_eq!(reads, stopped, "{section} and {name}");
            }
        }
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
            let err = all_sections(pairs).unwrap_err();
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
        let err = all_sections(&[
            ("APP_ENV", "production"),
            ("DATABASE_URL", "postgres://db/tms"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "REDIS_URL");
        let err = all_sections(&[
            ("APP_ENV", "production"),
            ("REDIS_URL", "rediss://cache:6380"),
            ("DATABASE_URL", "sqlite://x.db"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        let ok = all_sections(&[
            ("APP_ENV", "production"),
            ("REDIS_URL", "rediss://cache:6380"),
            ("DATABASE_URL", "postgres://db/tms?sslmode=require"),
            ("JWT_SECRET", SECRET),
        ]);
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
            all_sections(&pairs).map(|(_, (_, sso, _))| sso)
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
        assert_eq!(ok.audience.as_deref(), Some("tms-chat"));

        // Development keeps them optional, and so does an HS256 secret (it is ours alone).
        let dev = [("SSO_JWKS_URL", "https://idp.example.com/jwks.json")];
        assert!(all_sections(&dev).is_ok());
        let secret = all_sections(&[
            ("APP_ENV", "production"),
            ("REDIS_URL", "rediss://cache:6380"),
            ("DATABASE_URL", "postgres://db/tms"),
            ("SSO_JWT_SECRET", SECRET),
        ]);
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
        let redis = |pairs: &[(&str, &str)]| {
            Config::with_sections::<RedisSettings>(&vars(pairs)).map(|(_, redis)| redis)
        };
        for url in ["redis+cluster://cache:6379", "rediss+cluster://cache:6379"] {
            let r = redis(&[("REDIS_URL", url)]).unwrap();
            assert_eq!(r.url.unwrap().expose(), url);
        }
        for url in ["rediss://cache:6379", "rediss+cluster://cache:6379"] {
            let r = redis(&[("REDIS_URL", url), ("REDIS_CA_CERT_PATH", pem)]);
            assert_eq!(r.unwrap().ca_cert.unwrap().path, pem);
        }
        // A CA for a connection without TLS would silently not be used.
        for url in ["redis://cache:6379", "redis+cluster://cache:6379"] {
            let err = redis(&[("REDIS_URL", url), ("REDIS_CA_CERT_PATH", pem)]);
            assert_eq!(err.unwrap_err().variable, "REDIS_CA_CERT_PATH");
        }
        let c = Config::from_vars(&vars(&[("DATABASE_CA_CERT_PATH", pem)])).unwrap();
        assert!(format!("{c:?}").contains(&format!("CaBundle({pem})")));
        let _ = std::fs::remove_file(pem);
    }

    #[test]
    fn lists_are_trimmed_and_secrets_never_print() {
        let (c, sections) = all_sections(&[
            (
                "ALLOWED_ORIGINS",
                " https://a.example.com, https://b.example.com ,",
            ),
            ("JWT_SECRET", SECRET),
            ("JWT_EXPIRATION_HOURS", "24"),
        ])
        .unwrap();
        assert_eq!(c.http.allowed_origins.len(), 2);
        assert_eq!(sections.0.expiration, Duration::from_secs(24 * 3600));
        assert!(!format!("{c:?} {sections:?}").contains(SECRET));
    }
}
