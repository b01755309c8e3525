//! The steady mixed load: each worker goes through [`MIX`], a request at a
//! time; every answer goes to the ledger, and every login's to its token's
//! entry.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey};
use loadtest::key_server::{EC1_KID, EC1_PEM, RSA2_KID, RSA2_PEM};
use serde_json::{Value, json};
use sso_login::replay::ReplayStore;
use testkit::tokens::{sign, sso_claims};

use crate::JWT_SECRET;
use crate::ledger::{GcgcToken, Ledger, Outcome, replay_store};
use crate::stack::Stack;

const LOGIN: &str = "/api/v1/auth/login/sso";
const CONVERSATIONS: &str = "/api/v1/conversations/";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A fresh GCGC token: 200, or 503.
    Login,
    /// A token that logged in already: 401, or 503.
    Replay,
    List,
    Create,
    Ready,
    /// A token that got a 503 (or no answer), again until it logs in.
    Retry,
}

pub const LOAD_KINDS: [Kind; 5] = [
    Kind::Login,
    Kind::Replay,
    Kind::List,
    Kind::Create,
    Kind::Ready,
];
/// The mix each worker goes through: logins weigh most.
const MIX: [Kind; 8] = [
    Kind::Login,
    Kind::List,
    Kind::Login,
    Kind::Replay,
    Kind::Create,
    Kind::Login,
    Kind::List,
    Kind::Ready,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Login => "login",
            Kind::Replay => "replay",
            Kind::List => "list",
            Kind::Create => "create",
            Kind::Ready => "ready",
            Kind::Retry => "retry",
        }
    }

    /// The answer that means it worked.
    pub fn success(self) -> u16 {
        match self {
            Kind::Login | Kind::List | Kind::Ready | Kind::Retry => 200,
            Kind::Replay => 401,
            Kind::Create => 201,
        }
    }

    /// Answers a request of this kind may get while a dependency fails. A
    /// retried token may meet its own earlier claim, still held (401), until
    /// that claim is abandoned.
    pub fn allowed(self, status: u16) -> bool {
        status == self.success() || status == 503 || (self == Kind::Retry && status == 401)
    }
}

pub struct Load {
    client: reqwest::Client,
    /// The sso-login instances, as a load balancer knows them.
    pub sso: Vec<RwLock<SsoEndpoint>>,
    health_url: String,
    conversations_url: String,
    user_ids: Vec<i64>,
    api_tokens: Vec<String>,
    ec1: EncodingKey,
    rsa2: EncodingKey,
    /// Once the key endpoint published rsa2, half the new tokens use it.
    pub rotated: AtomicBool,
    pub phase: AtomicUsize,
    counter: AtomicU64,
    pub stop: AtomicBool,
    pub ledger: Mutex<Ledger>,
    /// The key derivation of sso-login itself, to name a token's record.
    pub replay_store: ReplayStore,
    /// The database, where each login's record is read.
    pub pg_url: String,
}

/// An instance's address, and a client of its own: a killed instance's
/// connections go with it.
#[derive(Clone)]
pub struct SsoEndpoint {
    url: String,
    client: reqwest::Client,
}

impl SsoEndpoint {
    pub fn new(url: String) -> reqwest::Result<Self> {
        Ok(Self {
            url,
            client: crate::http_client()?,
        })
    }
}

pub struct Answer {
    pub status: Option<u16>,
    retry_after: bool,
    /// An error's `detail`.
    detail: Option<String>,
}

impl Answer {
    /// No answer: the error's chain says why.
    fn none(error: &dyn std::error::Error) -> Self {
        let mut why = error.to_string();
        let mut source = error.source();
        while let Some(e) = source {
            why.push_str(&format!(": {e}"));
            source = e.source();
        }
        Self {
            status: None,
            retry_after: false,
            detail: Some(why),
        }
    }
}

impl Load {
    /// The load on `stack`'s functions, as its users, with the ledger empty.
    pub fn new(stack: &Stack) -> anyhow::Result<Self> {
        Ok(Self {
            client: crate::http_client()?,
            sso: stack
                .sso
                .iter()
                .map(|f| Ok(RwLock::new(SsoEndpoint::new(f.url())?)))
                .collect::<anyhow::Result<_>>()?,
            health_url: stack.health.url(),
            conversations_url: stack.conversations.url(),
            api_tokens: stack
                .user_ids
                .iter()
                .map(|id| testkit::tokens::api_token(JWT_SECRET, *id))
                .collect(),
            user_ids: stack.user_ids.clone(),
            ec1: EncodingKey::from_ec_pem(EC1_PEM)?,
            rsa2: EncodingKey::from_rsa_pem(RSA2_PEM)?,
            rotated: AtomicBool::new(false),
            phase: AtomicUsize::new(0),
            counter: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            ledger: Mutex::default(),
            replay_store: replay_store(&stack.redis.url(), &stack.keys.url),
            pg_url: stack.pg.url(),
        })
    }

    pub async fn work(self: Arc<Self>, worker: usize) {
        let mut step = worker;
        while !self.stop.load(Ordering::SeqCst) {
            let kind = MIX[step % MIX.len()];
            step += 1;
            let n = self.counter.fetch_add(1, Ordering::SeqCst) as usize;
            match kind {
                Kind::Login => self.login(n).await,
                Kind::Replay => self.replay(n).await,
                Kind::List => self.list(n).await,
                Kind::Create => self.create(n).await,
                Kind::Ready => self.ready().await,
                Kind::Retry => unreachable!("retries are not part of the mix"),
            }
            // A steady load, not a flood: the machine is shared.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn sso_endpoint(&self, instance: usize) -> SsoEndpoint {
        self.sso[instance].read().expect("endpoint").clone()
    }

    fn gcgc_token(&self, n: usize) -> (String, Value) {
        let claims = sso_claims(&format!("chaos-user-{}", n % 50));
        let token = if self.rotated.load(Ordering::SeqCst) && n % 2 == 1 {
            sign(&claims, Algorithm::RS256, &self.rsa2, Some(RSA2_KID))
        } else {
            sign(&claims, Algorithm::ES256, &self.ec1, Some(EC1_KID))
        };
        (token, claims)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        match request.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let retry_after = r.headers().contains_key(reqwest::header::RETRY_AFTER);
                // A body cut short is an answer that did not arrive.
                match r.bytes().await {
                    Ok(body) => Answer {
                        status: Some(status),
                        retry_after,
                        detail: (status >= 400)
                            .then(|| serde_json::from_slice::<Value>(&body).ok())
                            .flatten()
                            .and_then(|v| v["detail"].as_str().map(str::to_owned)),
                    },
                    Err(e) => Answer::none(&e),
                }
            }
            Err(e) => Answer::none(&e),
        }
    }

    fn record(
        &self,
        ledger: &mut Ledger,
        kind: Kind,
        login: Option<(usize, &str)>,
        started: Instant,
        answer: &Answer,
    ) {
        ledger.outcomes.push(Outcome {
            phase: self.phase.load(Ordering::SeqCst),
            kind,
            instance: login.map(|(i, _)| i),
            jti: login.map(|(_, jti)| jti.to_owned()),
            started,
            finished: Instant::now(),
            status: answer.status,
            retry_after: answer.retry_after,
            detail: answer.detail.clone(),
        });
    }

    /// One login with `token` on `instance`; the token's ledger entry follows.
    pub async fn post_login(&self, kind: Kind, jti: &str, token: &str, instance: usize) -> Answer {
        let endpoint = self.sso_endpoint(instance);
        let started = Instant::now();
        let answer = self
            .send(
                endpoint
                    .client
                    .post(format!("{}{LOGIN}", endpoint.url))
                    .json(&json!({ "token": token })),
            )
            .await;
        let mut ledger = self.ledger.lock().expect("ledger");
        self.record(&mut ledger, kind, Some((instance, jti)), started, &answer);
        let entry = ledger.tokens.get_mut(jti).expect("a minted token");
        match answer.status {
            Some(200) => {
                entry.issued += 1;
                entry.refused_at = None;
                let used = (jti.to_owned(), entry.token.clone());
                ledger.used.push(used);
            }
            // A fresh token refused is retried later; a retry goes on by itself.
            Some(503) if entry.issued == 0 && kind == Kind::Login => {
                entry.refused_at = Some(Instant::now());
            }
            None => {
                entry.unanswered = true;
                if entry.issued == 0 && kind == Kind::Login {
                    entry.refused_at = Some(Instant::now());
                }
            }
            _ => {}
        }
        answer
    }

    async fn login(&self, n: usize) {
        let (token, claims) = self.gcgc_token(n);
        let jti = claims["jti"].as_str().expect("jti").to_owned();
        self.ledger.lock().expect("ledger").tokens.insert(
            jti.clone(),
            GcgcToken {
                token: token.clone(),
                claims,
                issued: 0,
                refused_at: None,
                unanswered: false,
            },
        );
        // Not n % 2: that would send every rotated-key token to one instance.
        self.post_login(Kind::Login, &jti, &token, (n / 2) % self.sso.len())
            .await;
    }

    async fn replay(&self, n: usize) {
        let (jti, token) = {
            let ledger = self.ledger.lock().expect("ledger");
            if ledger.used.is_empty() {
                return;
            }
            // Mostly recent tokens, some old ones.
            let len = ledger.used.len();
            let back = if n.is_multiple_of(4) {
                n % len
            } else {
                n % len.min(16)
            };
            ledger.used[len - 1 - back].clone()
        };
        // On either instance, whichever it logged in on.
        self.post_login(Kind::Replay, &jti, &token, (n / 2) % self.sso.len())
            .await;
    }

    async fn list(&self, n: usize) {
        let started = Instant::now();
        let request = self
            .client
            .get(format!(
                "{}{CONVERSATIONS}?limit=20",
                self.conversations_url
            ))
            .bearer_auth(&self.api_tokens[n % self.api_tokens.len()]);
        let answer = self.send(request).await;
        self.record(
            &mut self.ledger.lock().expect("ledger"),
            Kind::List,
            None,
            started,
            &answer,
        );
    }

    async fn create(&self, n: usize) {
        let started = Instant::now();
        let caller = n % self.user_ids.len();
        let member = self.user_ids[(caller + 1) % self.user_ids.len()];
        let request = self
            .client
            .post(format!("{}{CONVERSATIONS}", self.conversations_url))
            .bearer_auth(&self.api_tokens[caller])
            .json(&json!({ "title": format!("chaos {n}"), "member_ids": [member] }));
        let answer = self.send(request).await;
        self.record(
            &mut self.ledger.lock().expect("ledger"),
            Kind::Create,
            None,
            started,
            &answer,
        );
    }

    async fn ready(&self) {
        let started = Instant::now();
        let answer = self
            .send(self.client.get(format!("{}/health/ready", self.health_url)))
            .await;
        self.record(
            &mut self.ledger.lock().expect("ledger"),
            Kind::Ready,
            None,
            started,
            &answer,
        );
    }
}
