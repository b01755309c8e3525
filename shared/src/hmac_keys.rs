//! HS256 keys prepared once per process rather than once per token.
//!
//! jsonwebtoken makes an HMAC key from the secret's bytes for every token it
//! signs or verifies: the key's two padded blocks hashed, then dropped.
//! That was about 5,200 instructions a token (`make instructions`), and a
//! login verifies one token and signs another. [`prepare`] keeps the
//! prepared key of each secret this process signs or verifies with (the API
//! tokens' secrets, the identity provider's shared secret), and the crypto
//! provider installed here hands jsonwebtoken those keys. Everything else
//! (any other algorithm, a secret never prepared) goes to jsonwebtoken's own
//! aws-lc provider, unchanged: a token verifies or fails exactly as before.

use std::sync::{Arc, LazyLock, RwLock};

use aws_lc_rs::hmac;
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, aws_lc};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};

/// Secrets kept at most: a process has a few (the signing one, the
/// previous ones of a rotation, the identity provider's); a bound keeps a
/// test process that makes many from growing the list.
const MAX_KEYS: usize = 16;

/// A secret, and its key prepared.
struct PreparedKey {
    secret: Box<[u8]>,
    key: Arc<hmac::Key>,
}

static KEYS: RwLock<Vec<PreparedKey>> = RwLock::new(Vec::new());

static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    signer_factory,
    verifier_factory,
    ..aws_lc::DEFAULT_PROVIDER.clone()
});

/// Whether jsonwebtoken took this module's provider: only a process's
/// first use of jsonwebtoken can install one (its first [`prepare`] comes
/// before, as the functions build their keys at start). If another was
/// installed first, tokens are made as before, with no key prepared.
static INSTALLED: LazyLock<bool> = LazyLock::new(|| PROVIDER.install_default().is_ok());

/// Prepares `secret`'s HS256 key for every later token signed or verified
/// with it in this process.
pub fn prepare(secret: &[u8]) {
    if *INSTALLED {
        keep(secret);
    }
}

/// Keeps `secret`'s prepared key (once, and up to [`MAX_KEYS`]).
fn keep(secret: &[u8]) {
    let mut keys = KEYS.write().unwrap_or_else(|p| p.into_inner());
    if keys.len() < MAX_KEYS && !keys.iter().any(|k| *k.secret == *secret) {
        keys.push(PreparedKey {
            secret: secret.into(),
            key: Arc::new(hmac::Key::new(hmac::HMAC_SHA256, secret)),
        });
    }
}

fn prepared(secret: &[u8]) -> Option<Arc<hmac::Key>> {
    let keys = KEYS.read().unwrap_or_else(|p| p.into_inner());
    keys.iter()
        .find(|k| *k.secret == *secret)
        .map(|k| Arc::clone(&k.key))
}

struct PreparedHs256(Arc<hmac::Key>);

impl signature::Signer<Vec<u8>> for PreparedHs256 {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(hmac::sign(&self.0, message).as_ref().to_vec())
    }
}

impl JwtSigner for PreparedHs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl signature::Verifier<Vec<u8>> for PreparedHs256 {
    fn verify(&self, message: &[u8], tag: &Vec<u8>) -> Result<(), signature::Error> {
        // Constant time, as jsonwebtoken's own.
        hmac::verify(&self.0, message, tag).map_err(signature::Error::from_source)
    }
}

impl JwtVerifier for PreparedHs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

// Only an HMAC key of HS256: jsonwebtoken's own refuses an RSA or EC key
// for HMAC (their bytes could equal a prepared secret), and so does this.
fn signer_factory(
    algorithm: &Algorithm,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    if *algorithm == Algorithm::HS256
        && key.family() == AlgorithmFamily::Hmac
        && let Some(key) = prepared(key.as_bytes())
    {
        return Ok(Box::new(PreparedHs256(key)));
    }
    (aws_lc::DEFAULT_PROVIDER.signer_factory)(algorithm, key)
}

fn verifier_factory(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    if *algorithm == Algorithm::HS256
        && key.family() == AlgorithmFamily::Hmac
        && let Ok(secret) = key.try_get_as_bytes()
        && let Some(key) = prepared(secret)
    {
        return Ok(Box::new(PreparedHs256(key)));
    }
    (aws_lc::DEFAULT_PROVIDER.verifier_factory)(algorithm, key)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::errors::ErrorKind;
    use jsonwebtoken::{Header, Validation};
    use serde::{Deserialize, Serialize};

    use super::*;

    const PREPARED: &[u8] = b"hmac-keys-test-prepared-0123456789abcdef";
    const OTHER: &[u8] = b"hmac-keys-test-not-prepared-0123456789ab";

    /// The provider's signer and verifier, called as jsonwebtoken calls
    /// them: a prepared key signs exactly what jsonwebtoken's own key signs,
    /// and verifies only what that key signed.
    #[test]
    fn a_prepared_key_signs_and_verifies_as_jsonwebtokens_own() {
        keep(PREPARED);
        assert!(prepared(PREPARED).is_some() && prepared(OTHER).is_none());
        let reference = |secret: &[u8]| {
            (aws_lc::DEFAULT_PROVIDER.signer_factory)(
                &Algorithm::HS256,
                &EncodingKey::from_secret(secret),
            )
            .unwrap()
        };
        let message = b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI3In0";
        let by_prepared = signer_factory(&Algorithm::HS256, &EncodingKey::from_secret(PREPARED))
            .unwrap()
            .try_sign(message)
            .unwrap();
        assert_eq!(by_prepared, reference(PREPARED).try_sign(message).unwrap());
        let verifier =
            verifier_factory(&Algorithm::HS256, &DecodingKey::from_secret(PREPARED)).unwrap();
        assert!(verifier.verify(message, &by_prepared).is_ok());
        let by_other = reference(OTHER).try_sign(message).unwrap();
        assert!(verifier.verify(message, &by_other).is_err());
        let mut forged = by_prepared.clone();
        forged[0] ^= 1;
        assert!(verifier.verify(message, &forged).is_err());
        assert!(verifier.verify(b"another message", &by_prepared).is_err());
        // An RSA or EC key whose bytes are a prepared secret is no HMAC key.
        assert!(verifier_factory(&Algorithm::HS256, &DecodingKey::from_rsa_der(PREPARED)).is_err());
        assert!(signer_factory(&Algorithm::HS256, &EncodingKey::from_ec_der(PREPARED)).is_err());
        // Another algorithm with the same secret is jsonwebtoken's own.
        let hs384 = signer_factory(&Algorithm::HS384, &EncodingKey::from_secret(PREPARED)).unwrap();
        assert_eq!(hs384.algorithm(), Algorithm::HS384);
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Claims {
        sub: String,
        exp: u64,
    }

    /// In a process whose first use of jsonwebtoken comes after [`prepare`]
    /// (a function's start), the provider is installed and tokens go
    /// through it. Run in a process of its own: the other tests of this
    /// binary may have used jsonwebtoken first.
    #[test]
    fn the_provider_is_installed_when_prepare_comes_first() {
        const CHILD: &str = "HMAC_KEYS_TEST_CHILD";
        // The test's name as the harness knows it: without the crate's.
        let module = module_path!().split_once("::").unwrap().1;
        let name = format!("{module}::the_provider_is_installed_when_prepare_comes_first");
        if std::env::var_os(CHILD).is_none() {
            let output = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", &name, "--nocapture", "--test-threads=1"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success() && stdout.contains("1 passed"),
                "the test in a process of its own: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            return;
        }
        prepare(PREPARED);
        assert!(*INSTALLED);
        assert!(prepared(PREPARED).is_some());
        let claims = Claims {
            sub: "7".into(),
            exp: crate::clock::unix_secs() + 60,
        };
        let header = Header::new(Algorithm::HS256);
        let token =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(PREPARED)).unwrap();
        let validation = Validation::new(Algorithm::HS256);
        let decode = |secret: &[u8]| {
            jsonwebtoken::decode::<Claims>(&token, &DecodingKey::from_secret(secret), &validation)
        };
        assert_eq!(decode(PREPARED).unwrap().claims, claims);
        assert_eq!(
            decode(OTHER).unwrap_err().into_kind(),
            ErrorKind::InvalidSignature
        );
    }
}
