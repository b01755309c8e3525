//! An identity provider's key endpoint (JWKS), served in-process from the
//! test keys of tests/fixtures/keys: what chaos's and the fleet's sso-login
//! instances verify GCGC tokens with.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The fixture's public keys, by name (`rsa1`, `rsa2`, `ec1`).
const JWKS: &str = include_str!("../../tests/fixtures/keys/jwks.json");
/// The private half of `ec1`, and its `kid`.
pub const EC1_PEM: &[u8] = include_bytes!("../../tests/fixtures/keys/ec1.pem");
pub const EC1_KID: &str = "ec-2026-01";
/// The private half of `rsa2`, and its `kid`.
pub const RSA2_PEM: &[u8] = include_bytes!("../../tests/fixtures/keys/rsa2.pem");
pub const RSA2_KID: &str = "rsa-2026-02";

pub struct KeyServer {
    pub url: String,
    /// How long each answer waits (chaos's slow-key fault).
    pub latency_ms: Arc<AtomicU64>,
    /// Fetches so far (the fleet: at most one per instance).
    pub fetches: Arc<AtomicUsize>,
    published: Arc<Mutex<Vec<Value>>>,
    last_fetch: Arc<Mutex<Option<Instant>>>,
}

impl KeyServer {
    /// Serves the fixture's keys named `names` on a free port of 127.0.0.1.
    pub async fn serve(names: &[&str]) -> anyhow::Result<Self> {
        let published = Arc::new(Mutex::new(
            names
                .iter()
                .map(|name| fixture_key(name))
                .collect::<Vec<_>>(),
        ));
        let latency_ms = Arc::new(AtomicU64::new(0));
        let fetches = Arc::new(AtomicUsize::new(0));
        let last_fetch = Arc::new(Mutex::new(None));
        let router = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get({
                let (published, latency_ms, fetches, last_fetch) = (
                    published.clone(),
                    latency_ms.clone(),
                    fetches.clone(),
                    last_fetch.clone(),
                );
                move || async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    *last_fetch.lock().expect("last fetch") = Some(Instant::now());
                    let latency = latency_ms.load(Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(latency)).await;
                    let keys = published.lock().expect("keys").clone();
                    axum::Json(json!({ "keys": keys }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(Self {
            url,
            latency_ms,
            fetches,
            published,
            last_fetch,
        })
    }

    /// Publishes one more of the fixture's keys (a rotation).
    pub fn publish(&self, name: &str) {
        self.published.lock().expect("keys").push(fixture_key(name));
    }

    /// Waits until no instance fetched the keys for longer than sso-login's
    /// rate limit on fetches: a key published earlier is refused as unknown
    /// until then, by design (see docs/chaos.md); chaos's slow-key fault
    /// measures the slow endpoint, not that window.
    pub async fn wait_past_fetch_rate_limit(&self) {
        loop {
            let last = *self.last_fetch.lock().expect("last fetch");
            let since = last.map_or(Duration::MAX, |t| t.elapsed());
            let window = sso_login::verify::JWKS_MIN_REFRESH + Duration::from_millis(200);
            if since >= window {
                return;
            }
            tokio::time::sleep(window - since).await;
        }
    }
}

fn fixture_key(name: &str) -> Value {
    let all: Value = serde_json::from_str(JWKS).expect("the JWKS fixture");
    assert!(all[name].is_object(), "no key {name} in the JWKS fixture");
    all[name].clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_the_named_keys_counts_fetches_and_publishes_a_rotation() {
        let keys = KeyServer::serve(&["ec1"]).await.unwrap();
        let kids = || async {
            let document: Value = reqwest::get(&keys.url).await.unwrap().json().await.unwrap();
            document["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(kids().await, [EC1_KID]);
        keys.publish("rsa2");
        assert_eq!(kids().await, [EC1_KID, RSA2_KID]);
        assert_eq!(keys.fetches.load(Ordering::SeqCst), 2);
    }
}
