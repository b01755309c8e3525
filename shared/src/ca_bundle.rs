//! A CA bundle that a setting names (`DATABASE_CA_CERT_PATH`,
//! `REDIS_CA_CERT_PATH`), read and checked once at start.

use std::fmt;

use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};

use crate::config_error::ConfigError;

/// A CA bundle (PEM) that a setting names, read once at start: the provider's
/// CA (RDS, ApsaraDB, a private one) is not among the system's roots.
#[derive(Clone)]
pub struct CaBundle {
    pub path: String,
    pub pem: std::sync::Arc<[u8]>,
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaBundle({})", self.path)
    }
}

impl CaBundle {
    pub(crate) fn read(variable: &'static str, path: &str) -> Result<Self, ConfigError> {
        let pem = std::fs::read(path)
            .map_err(|e| ConfigError::new(variable, format!("cannot read `{path}`: {e}")))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(ConfigError::new(
                variable,
                format!("`{path}` holds no PEM certificate"),
            ));
        }
        Ok(Self {
            path: path.to_owned(),
            pem: pem.into(),
        })
    }
}

/// What the TLS clients here trust: the public roots (webpki's: AWS's,
/// Alibaba's and the other public CAs) and the certificates of `extra_pem`,
/// a deployment's CA bundle. `Err` is the bundle's certificate problem.
pub fn public_roots_and(extra_pem: Option<&[u8]>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in CertificateDer::pem_slice_iter(extra_pem.unwrap_or_default()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    Ok(roots)
}
