//! The clients: each sends one request at a time until the run's end, a
//! quarter logins with fresh GCGC tokens (each to the next sso-login
//! instance), a quarter creates, half lists; and the server's sessions,
//! sampled meanwhile.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey};
use loadtest::function_process::FunctionProcess;
use loadtest::key_server::{EC1_KID, EC1_PEM};
use serde_json::json;
use testkit::tokens::{api_token, sign, sso_claims};

use crate::instances::Fleet;
use crate::{JWT_SECRET, USERS};

/// Where the clients send, and what they share.
pub struct Targets {
    sso: Vec<String>,
    conversations: Vec<String>,
    ec1: EncodingKey,
    sent: AtomicUsize,
    used_sso: Mutex<HashSet<usize>>,
}

/// What one client saw: each answer's status, latency and whether it had
/// `Retry-After`; and its requests without an answer (hangs).
pub struct Seen {
    pub answers: Vec<(u16, Duration, bool)>,
    pub hangs: usize,
}

impl Targets {
    pub fn of(fleet: &Fleet) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            sso: fleet.sso.iter().map(FunctionProcess::url).collect(),
            conversations: fleet
                .conversations
                .iter()
                .map(FunctionProcess::url)
                .collect(),
            ec1: EncodingKey::from_ec_pem(EC1_PEM)?,
            sent: AtomicUsize::new(0),
            used_sso: Mutex::default(),
        }))
    }

    /// The sso-login instances that were sent a login.
    pub fn sso_instances_used(&self) -> usize {
        self.used_sso.lock().expect("used").len()
    }

    /// The request numbered `n`: a login, a create or a list.
    fn request(&self, client: &reqwest::Client, n: usize) -> reqwest::RequestBuilder {
        let user = (n as i64 % USERS) + 1;
        let conversations = &self.conversations[n % self.conversations.len()];
        match n % 4 {
            0 => {
                let instance = (n / 4) % self.sso.len();
                self.used_sso.lock().expect("used").insert(instance);
                let token = sign(
                    &sso_claims(&format!("fleet-sso-{n}")),
                    Algorithm::ES256,
                    &self.ec1,
                    Some(EC1_KID),
                );
                client
                    .post(format!("{}/api/v1/auth/login/sso", self.sso[instance]))
                    .json(&json!({ "token": token }))
            }
            2 => client
                .post(format!("{conversations}/api/v1/conversations/"))
                .bearer_auth(api_token(JWT_SECRET, user))
                .json(&json!({ "title": format!("fleet {n}") })),
            _ => client
                .get(format!("{conversations}/api/v1/conversations/"))
                .bearer_auth(api_token(JWT_SECRET, user)),
        }
    }
}

/// `clients` clients at once until `until`: what each saw.
pub async fn clients(
    client: &reqwest::Client,
    targets: &Arc<Targets>,
    clients: usize,
    until: Instant,
) -> anyhow::Result<Vec<Seen>> {
    let tasks = (0..clients).map(|_| {
        let (client, targets) = (client.clone(), Arc::clone(targets));
        tokio::spawn(async move { one_client(&client, &targets, until).await })
    });
    let mut seen = Vec::new();
    for result in futures_util::future::join_all(tasks).await {
        seen.push(result?);
    }
    Ok(seen)
}

async fn one_client(client: &reqwest::Client, targets: &Targets, until: Instant) -> Seen {
    let mut seen = Seen {
        answers: Vec::new(),
        hangs: 0,
    };
    while Instant::now() < until {
        let n = targets.sent.fetch_add(1, Ordering::Relaxed);
        let request = targets.request(client, n);
        let started = Instant::now();
        match request.send().await {
            Ok(r) => seen.answers.push((
                r.status().as_u16(),
                started.elapsed(),
                r.headers().contains_key("retry-after"),
            )),
            Err(_) => seen.hangs += 1,
        }
    }
    seen
}

/// The most client sessions the server held at once until `until`
/// (sampled every 100 ms; the tool's own not counted).
pub async fn peak_sessions(admin: &mut sqlx::PgConnection, until: Instant) -> i64 {
    let mut peak = 0i64;
    while Instant::now() < until {
        let now: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut *admin)
        .await
        .unwrap_or(0);
        peak = peak.max(now);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    peak
}
