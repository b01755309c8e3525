//! `DATABASE_URL`, and what the deployment adds to it, read once into a
//! [`PgTarget`]: where the server is, who connects, how its certificate is
//! checked and whether a transaction-mode pooler stands in front of it.
//! Both drivers connect from it: tokio-postgres for the functions' requests
//! ([`super::PgConnectionPool`]), sqlx for the migrations.

use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::ca_bundle::CaBundle;

/// How the server's TLS is required and checked (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// TLS if the server offers it, unverified (libpq's default).
    Prefer,
    /// TLS, unverified.
    Require,
    /// TLS, the certificate chained to a trusted CA, any name.
    VerifyCa,
    /// TLS, the certificate chained to a trusted CA and naming the host.
    VerifyFull,
}

/// What stands between the functions and PostgreSQL (`DATABASE_POOLER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooler {
    /// A connection is a server session of its own: statements are prepared
    /// once per connection and the timeout is a startup parameter.
    #[default]
    None,
    /// A transaction-mode pooler (PgBouncer, RDS Proxy, ApsaraDB's proxy):
    /// consecutive transactions of one connection may reach different
    /// server sessions, so the functions keep no session state. No named
    /// prepared statement (each statement is parsed, bound and run in one
    /// message, on the unnamed statement) and no startup parameter beyond
    /// the application's name (the timeout is set in each transaction).
    Transaction,
}

impl Pooler {
    /// `DATABASE_POOLER`'s value: `none` or `transaction`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "none" => Some(Self::None),
            "transaction" => Some(Self::Transaction),
            _ => None,
        }
    }
}

/// What a deployment adds to a `DATABASE_URL` (whose secret it may not own).
#[derive(Debug, Default, Clone, Copy)]
pub struct PgEndpoint<'a> {
    /// `DATABASE_CA_CERT_PATH`: the CA (RDS, ApsaraDB) that signs the server's certificate.
    pub ca: Option<&'a CaBundle>,
    /// `DATABASE_HOST`: the host to connect to instead of the URL's, such as
    /// an RDS Proxy endpoint in front of the database the URL names.
    pub host: Option<&'a str>,
    /// `DATABASE_POOLER`.
    pub pooler: Pooler,
}

/// One PostgreSQL server and how to reach it.
#[derive(Clone)]
pub struct PgTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<String>,
    pub dbname: String,
    pub ssl_mode: SslMode,
    /// PEM certificates trusted besides the public roots.
    pub ca_pem: Option<Arc<[u8]>>,
    pub pooler: Pooler,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches a log.
        write!(
            f,
            "PgTarget({}@{}:{}/{}, {:?}, pooler {:?})",
            self.user, self.host, self.port, self.dbname, self.ssl_mode, self.pooler
        )
    }
}

/// The URL's query parameters that are understood (others stop the start:
/// a setting silently ignored is worse than none).
const KNOWN_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "application_name",
    "connect_timeout",
];

impl PgTarget {
    /// Reads a `postgres://user:password@host:port/database?sslmode=...` URL.
    /// With a CA bundle the server is verified: its certificate must chain
    /// to the bundle (or a public root) and name the host
    /// (`sslmode=verify-full`, also when the URL gives no `sslmode`; an
    /// explicit `verify-ca` skips the name only). A weaker `sslmode` would
    /// not use the bundle at all, so it stops the start, as does a second CA
    /// in the URL.
    pub fn parse(url: &str, endpoint: PgEndpoint<'_>) -> anyhow::Result<Self> {
        let invalid =
            |why: &str| anyhow::anyhow!("DATABASE_URL is not a valid PostgreSQL URL: {why}");
        let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(invalid("expected postgres:// or postgresql://"));
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| invalid("not UTF-8 once percent-decoded"))
        };
        let url_host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("no host"))?;
        let host = match endpoint.host {
            Some(host) => host.to_owned(),
            None => decode(url_host.trim_start_matches('[').trim_end_matches(']'))?,
        };
        let user = match parsed.username() {
            "" => "postgres".to_owned(),
            user => decode(user)?,
        };
        let password = parsed.password().map(decode).transpose()?;
        let dbname = match parsed.path().trim_start_matches('/') {
            "" => user.clone(),
            name => decode(name)?,
        };
        let mut ssl_mode = None;
        let mut root_cert = None;
        for (name, value) in parsed.query_pairs() {
            match &*name {
                "sslmode" | "ssl-mode" => {
                    ssl_mode = Some(match &*value {
                        "disable" => SslMode::Disable,
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => return Err(invalid(&format!("unknown sslmode `{other}`"))),
                    })
                }
                "sslrootcert" | "ssl-root-cert" | "ssl-ca" => root_cert = Some(value.into_owned()),
                // The functions name themselves; a connect timeout is theirs.
                "application_name" | "connect_timeout" => {}
                other => {
                    return Err(invalid(&format!(
                        "unknown parameter `{other}` (known: {})",
                        KNOWN_PARAMS.join(", ")
                    )));
                }
            }
        }
        let ca_pem: Option<Arc<[u8]>> = match (endpoint.ca, root_cert) {
            (Some(_), Some(_)) => anyhow::bail!(
                "DATABASE_CA_CERT_PATH: the DATABASE_URL names a CA too (sslrootcert); give it in one place"
            ),
            (Some(ca), None) => {
                let mode = ssl_mode.unwrap_or(SslMode::VerifyFull);
                if !matches!(mode, SslMode::VerifyFull | SslMode::VerifyCa) {
                    anyhow::bail!(
                        "DATABASE_CA_CERT_PATH: the DATABASE_URL's sslmode would not verify the server with it: use sslmode=verify-full"
                    );
                }
                ssl_mode = Some(mode);
                Some(Arc::clone(&ca.pem))
            }
            (None, Some(path)) => Some(
                std::fs::read(&path)
                    .map_err(|e| anyhow::anyhow!("DATABASE_URL's sslrootcert `{path}`: {e}"))?
                    .into(),
            ),
            (None, None) => None,
        };
        Ok(Self {
            host,
            port: parsed.port().unwrap_or(5432),
            user,
            password,
            dbname,
            ssl_mode: ssl_mode.unwrap_or(SslMode::Prefer),
            ca_pem,
            pooler: endpoint.pooler,
        })
    }

    /// The same server for tokio-postgres (the functions' requests).
    pub(super) fn tokio_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name("tms-chat")
            .ssl_mode(match self.ssl_mode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
        if let Some(password) = &self.password {
            config.password(password);
        }
        if self.pooler == Pooler::None {
            // Behind a pooler this is set per transaction instead: PgBouncer
            // refuses unknown startup parameters, RDS Proxy pins them.
            config.options(format!(
                "-c statement_timeout={}",
                super::STATEMENT_TIMEOUT.as_millis()
            ));
        }
        config
    }

    /// The same server for sqlx (the migrations, tools and tests).
    pub fn sqlx_options(&self) -> PgConnectOptions {
        let mut options = PgConnectOptions::new_without_pgpass()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .database(&self.dbname)
            .application_name("tms-chat")
            .ssl_mode(match self.ssl_mode {
                SslMode::Disable => PgSslMode::Disable,
                SslMode::Prefer => PgSslMode::Prefer,
                SslMode::Require => PgSslMode::Require,
                SslMode::VerifyCa => PgSslMode::VerifyCa,
                SslMode::VerifyFull => PgSslMode::VerifyFull,
            });
        if let Some(password) = &self.password {
            options = options.password(password);
        }
        if let Some(pem) = &self.ca_pem {
            options = options.ssl_root_cert_from_pem(pem.to_vec());
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> CaBundle {
        CaBundle {
            path: "/opt/ca.pem".into(),
            pem: b"-----BEGIN CERTIFICATE-----".as_slice().into(),
        }
    }

    #[test]
    fn a_ca_bundle_means_the_server_is_verified() {
        let url = "postgres://u@db.example.com/tms";
        let ca = ca();
        let with_ca = PgEndpoint {
            ca: Some(&ca),
            ..PgEndpoint::default()
        };
        let mode = |url: &str| PgTarget::parse(url, with_ca).map(|t| t.ssl_mode);
        assert_eq!(mode(url).unwrap(), SslMode::VerifyFull);
        let full = format!("{url}?sslmode=verify-full");
        assert_eq!(mode(&full).unwrap(), SslMode::VerifyFull);
        let ca_only = format!("{url}?sslmode=verify-ca");
        assert_eq!(mode(&ca_only).unwrap(), SslMode::VerifyCa);
        for weaker in ["require", "prefer", "disable"] {
            let err = mode(&format!("{url}?sslmode={weaker}")).unwrap_err();
            assert!(
                err.to_string().starts_with("DATABASE_CA_CERT_PATH"),
                "{err}"
            );
        }
        let twice = mode(&format!("{url}?sslmode=verify-full&sslrootcert=/x.pem")).unwrap_err();
        assert!(
            twice.to_string().starts_with("DATABASE_CA_CERT_PATH"),
            "{twice}"
        );
        // Without a bundle the URL is taken as it is.
        let plain =
            PgTarget::parse(&format!("{url}?sslmode=require"), PgEndpoint::default()).unwrap();
        assert_eq!(plain.ssl_mode, SslMode::Require);
        assert_eq!(plain.host, "db.example.com");
        let default = PgTarget::parse(url, PgEndpoint::default()).unwrap();
        assert_eq!(default.ssl_mode, SslMode::Prefer);
    }

    #[test]
    fn database_host_replaces_the_urls_host_only() {
        let proxy = PgEndpoint {
            host: Some("tms.proxy-abc.eu-west-1.rds.amazonaws.com"),
            ..PgEndpoint::default()
        };
        let target = PgTarget::parse("postgres://u:p%40ss@db.example.com:5433/tms", proxy).unwrap();
        assert_eq!(target.host, "tms.proxy-abc.eu-west-1.rds.amazonaws.com");
        assert_eq!(target.port, 5433);
        assert_eq!(target.dbname, "tms");
        assert_eq!(target.user, "u");
        assert_eq!(target.password.as_deref(), Some("p@ss"));
        assert!(!format!("{target:?}").contains("p@ss"));
    }

    #[test]
    fn an_unknown_parameter_or_scheme_stops_the_start() {
        let err =
            PgTarget::parse("postgres://u@h/db?sslmod=require", PgEndpoint::default()).unwrap_err();
        assert!(
            err.to_string().contains("unknown parameter `sslmod`"),
            "{err}"
        );
        let err = PgTarget::parse("mysql://u@h/db", PgEndpoint::default()).unwrap_err();
        assert!(err.to_string().contains("postgres://"), "{err}");
        let err = PgTarget::parse("postgres://u@h/db?sslmode=sometimes", PgEndpoint::default())
            .unwrap_err();
        assert!(err.to_string().contains("sslmode"), "{err}");
    }

    #[test]
    fn behind_a_pooler_no_startup_parameter_but_the_name() {
        let direct = PgTarget::parse("postgres://u@h/db", PgEndpoint::default()).unwrap();
        assert!(direct.tokio_config().get_options().is_some());
        let pooled = PgTarget::parse(
            "postgres://u@h/db",
            PgEndpoint {
                pooler: Pooler::Transaction,
                ..PgEndpoint::default()
            },
        )
        .unwrap();
        assert_eq!(pooled.tokio_config().get_options(), None);
        assert_eq!(
            pooled.tokio_config().get_application_name(),
            Some("tms-chat")
        );
    }
}
