//! The database's settings, which every function uses.

use super::{
    AppEnv, CaBundle, ConfigError, DatabaseSettings, DatabaseUrl, EMBEDDED_DB, Platform, Secret,
    Vars, setting,
};
use crate::db::Pooler;

/// Why a build without it refuses an unset or `sqlite:` `DATABASE_URL`.
const NO_EMBEDDED_DB: &str = "this build has no embedded database (built with --no-default-features, as make build-lambda and make build-fc build deployed functions)";
/// Lambda sends an instance one request at a time.
const LAMBDA_POOL_SIZE: u32 = 1;
/// A plain-HTTP server (FC, local) serves many at once; FC's templates set
/// `DB_POOL_SIZE` to the instance concurrency.
pub(super) const SERVER_POOL_SIZE: u32 = 10;
const MAX_POOL_SIZE: u32 = 100;

pub(super) fn from_vars(
    vars: &Vars,
    app_env: AppEnv,
    platform: &Platform,
) -> Result<DatabaseSettings, ConfigError> {
    Ok(DatabaseSettings {
        url: url(vars, app_env)?,
        ca_cert: setting(vars, "DATABASE_CA_CERT_PATH")
            .map(|path| CaBundle::read("DATABASE_CA_CERT_PATH", path))
            .transpose()?,
        host: host(vars)?,
        pooler: pooler(vars)?,
        pool_size: pool_size(vars, platform)?,
    })
}

/// `DATABASE_URL`, judged once into what it names.
fn url(vars: &Vars, app_env: AppEnv) -> Result<Option<DatabaseUrl>, ConfigError> {
    let url = match setting(vars, "DATABASE_URL") {
        Some(u) if u.starts_with("sqlite:") && !EMBEDDED_DB => {
            return Err(ConfigError::new(
                "DATABASE_URL",
                format!("must start with postgres:// or postgresql://: {NO_EMBEDDED_DB}"),
            ));
        }
        Some(u) if u.starts_with("sqlite:") => Some(DatabaseUrl::Embedded(u.to_owned())),
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            Some(DatabaseUrl::Postgres(Secret::new(u)))
        }
        Some(_) => {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "must start with postgres://, postgresql:// or sqlite:",
            ));
        }
        None if !EMBEDDED_DB => {
            return Err(ConfigError::new(
                "DATABASE_URL",
                format!("required (postgres://...): {NO_EMBEDDED_DB}"),
            ));
        }
        None => None,
    };
    if app_env == AppEnv::Production && !matches!(url, Some(DatabaseUrl::Postgres(_))) {
        return Err(ConfigError::new(
            "DATABASE_URL",
            "a postgres:// URL is required when APP_ENV=production",
        ));
    }
    Ok(url)
}

fn host(vars: &Vars) -> Result<Option<String>, ConfigError> {
    match setting(vars, "DATABASE_HOST") {
        Some(h) if h.contains(|c: char| c.is_whitespace() || "/:@?".contains(c)) => {
            Err(ConfigError::new(
                "DATABASE_HOST",
                "must be a host name only, like tms.proxy-xxxx.eu-west-1.rds.amazonaws.com",
            ))
        }
        other => Ok(other.map(str::to_owned)),
    }
}

fn pooler(vars: &Vars) -> Result<Pooler, ConfigError> {
    match setting(vars, "DATABASE_POOLER") {
        None => Ok(Pooler::default()),
        Some(v) => Pooler::parse(v).ok_or_else(|| {
            ConfigError::new(
                "DATABASE_POOLER",
                format!("expected `none` or `transaction` (a transaction-mode pooler), got `{v}`"),
            )
        }),
    }
}

fn pool_size(vars: &Vars, platform: &Platform) -> Result<u32, ConfigError> {
    // Lambda sends an instance as many requests at once as
    // AWS_LAMBDA_MAX_CONCURRENCY says (Managed Instances), else one.
    let lambda_concurrency = setting(vars, "AWS_LAMBDA_MAX_CONCURRENCY")
        .and_then(|v| v.parse::<u32>().ok())
        .map(|n| n.clamp(LAMBDA_POOL_SIZE, MAX_POOL_SIZE));
    match setting(vars, "DB_POOL_SIZE") {
        None if matches!(platform, Platform::Lambda { .. }) => {
            Ok(lambda_concurrency.unwrap_or(LAMBDA_POOL_SIZE))
        }
        None => Ok(SERVER_POOL_SIZE),
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
            }),
    }
}
