//! A certificate authority of the test's own (rcgen).

use super::*;

/// A certificate authority of the test's own, as RDS, ApsaraDB or a managed
/// Redis have theirs: a CA certificate (what a client is given to trust) and
/// the server certificates it signs (rcgen, ECDSA P-256), PEM files in a temp dir.
pub struct TestCa {
    dir: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A server certificate and its key, PEM files.
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let dir = std::env::temp_dir().join(format!("tms-ca-{}", uuid_simple()));
        std::fs::create_dir_all(&dir).expect("ca dir");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "TMS test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        std::fs::write(dir.join("ca.crt"), cert.pem()).expect("write CA certificate");
        Self {
            dir,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// The CA certificate (PEM): what a client trusts.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A server certificate naming `hosts` (DNS names or IP addresses) in
    /// its subject alternative names, signed by this CA. It may also serve
    /// as a client certificate: Redis cluster nodes present theirs to peers.
    pub fn issue(&self, hosts: &[&str]) -> ServerCert {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
        let names: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("host names");
        params.distinguished_name.push(DnType::CommonName, hosts[0]);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        let name = uuid_simple();
        let issued = ServerCert {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("write certificate");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write key");
        issued
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
