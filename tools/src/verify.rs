//! `verify`: the deployment checklist (health, a 401 that stays a 401, SSO
//! login, conversations, a refused replay, CORS, sign-out) as a program, run against a deployed
//! base URL (or a local run). Each item prints as passed or failed; any
//! failure makes the exit code non-zero.

use std::time::Duration;

use crate::sso_token;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

/// Where each function answers: one base URL, or one per function.
#[derive(Debug, Clone)]
pub struct Targets {
    pub health: String,
    pub sso: String,
    pub conversations: String,
}

/// What the checks need, read from the environment by [`Settings::from_env`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub targets: Targets,
    /// Mints a GCGC token (staging), with the configured issuer and audience.
    pub sso_secret: Option<String>,
    pub sso_issuer: Option<String>,
    pub sso_audience: Option<String>,
    /// A single-use GCGC token handed in instead (production).
    pub sso_test_token: Option<String>,
    /// An origin the deployment allows.
    pub origin: String,
}

pub const DISALLOWED_ORIGIN: &str = "https://verify-disallowed.invalid";

impl Settings {
    pub fn from_env() -> Result<Self, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let base = var("BASE_URL").map(|b| b.trim_end_matches('/').to_owned());
        let pick = |name: &str| {
            var(name)
                .map(|u| u.trim_end_matches('/').to_owned())
                .or_else(|| base.clone())
                .ok_or_else(|| format!("set BASE_URL (or {name})"))
        };
        let origin = var("VERIFY_ORIGIN")
            .or_else(|| {
                var("ALLOWED_ORIGINS").and_then(|o| {
                    o.split(',')
                        .map(str::trim)
                        .find(|o| !o.is_empty())
                        .map(str::to_owned)
                })
            })
            .unwrap_or_else(|| "http://localhost:3000".into());
        Ok(Self {
            targets: Targets {
                health: pick("HEALTH_URL")?,
                sso: pick("SSO_URL")?,
                conversations: pick("CONV_URL")?,
            },
            sso_secret: var("SSO_JWT_SECRET"),
            sso_issuer: var("SSO_ISSUER"),
            sso_audience: var("SSO_AUDIENCE"),
            sso_test_token: var("SSO_TEST_TOKEN"),
            origin,
        })
    }
}

/// One checklist item's outcome.
#[derive(Debug, Clone)]
pub struct Item {
    pub name: &'static str,
    pub result: Result<(), String>,
}

/// Runs the checklist, printing each item as it goes; returns all outcomes.
pub async fn run(settings: &Settings) -> Vec<Item> {
    let client = Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client");
    let checks = Checks {
        client,
        settings: settings.clone(),
    };
    let mut items = Vec::new();
    let mut record = |name: &'static str, result: Result<(), String>| {
        match &result {
            Ok(()) => println!("[x] {name}: passed"),
            Err(why) => println!("[ ] {name}: FAILED: {why}"),
        }
        items.push(Item { name, result });
    };

    record("Health endpoint returns 200 OK", checks.health().await);
    record(
        "401 errors return as 401 (not 500)",
        checks.invalid_token().await,
    );
    let token = checks.sso_token();
    let login = match &token {
        Ok(t) => checks.login(t).await,
        Err(e) => Err(e.clone()),
    };
    record(
        "SSO authentication works",
        login.as_ref().map(|_| ()).map_err(Clone::clone),
    );
    record(
        "Conversations load without errors",
        match &login {
            Ok(access) => checks.conversations(access).await,
            Err(_) => Err("no API token: SSO login failed".into()),
        },
    );
    record(
        "Replay attack protection works (same token can't be used twice)",
        match (&token, &login) {
            (Ok(t), Ok(_)) => checks.replay(t).await,
            _ => Err("cannot check: the first SSO login failed".into()),
        },
    );
    record(
        "No CORS errors (allowed origin echoed, others refused)",
        checks.cors().await,
    );
    // Last: it ends the token the items above used.
    record(
        "Sign-out works (a signed-out token is refused)",
        match &login {
            Ok(access) => checks.sign_out(access).await,
            Err(_) => Err("no API token: SSO login failed".into()),
        },
    );
    items
}

struct Checks {
    client: Client,
    settings: Settings,
}

async fn body_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

impl Checks {
    fn url(&self, base: &str, path: &str) -> String {
        format!("{base}{path}")
    }

    /// `GET /api/v1/conversations/` on the conversations function.
    fn list_conversations(&self) -> reqwest::RequestBuilder {
        self.client.get(self.url(
            &self.settings.targets.conversations,
            "/api/v1/conversations/",
        ))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
        request
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))
    }

    async fn health(&self) -> Result<(), String> {
        let r = self
            .send(
                self.client
                    .get(self.url(&self.settings.targets.health, "/health")),
            )
            .await?;
        match r.status() {
            StatusCode::OK => Ok(()),
            other => Err(format!("got {other}")),
        }
    }

    async fn invalid_token(&self) -> Result<(), String> {
        let r = self
            .send(
                self.list_conversations()
                    .header("Authorization", "Bearer invalid_token"),
            )
            .await?;
        let challenge = r.headers().get("www-authenticate").is_some();
        match r.status() {
            StatusCode::UNAUTHORIZED if challenge => Ok(()),
            StatusCode::UNAUTHORIZED => Err("401 without WWW-Authenticate".into()),
            other => Err(format!("got {other}, expected 401")),
        }
    }

    fn sso_token(&self) -> Result<String, String> {
        if let Some(token) = &self.settings.sso_test_token {
            return Ok(token.clone());
        }
        let Some(secret) = &self.settings.sso_secret else {
            return Err("set SSO_JWT_SECRET (staging) or SSO_TEST_TOKEN to check SSO".into());
        };
        let claims = sso_token::with_issuer_and_audience(
            sso_token::sso_claims("verify-checklist"),
            self.settings.sso_issuer.as_deref(),
            self.settings.sso_audience.as_deref(),
        );
        Ok(sso_token::sso_token(secret, &claims))
    }

    async fn post_login(&self, token: &str) -> Result<(StatusCode, Value), String> {
        let r = self
            .send(
                self.client
                    .post(self.url(&self.settings.targets.sso, "/api/v1/auth/login/sso"))
                    .json(&json!({ "token": token })),
            )
            .await?;
        Ok(body_of(r).await)
    }

    async fn login(&self, token: &str) -> Result<String, String> {
        let (status, body) = self.post_login(token).await?;
        if status != StatusCode::OK {
            return Err(format!("got {status}: {}", body["detail"]));
        }
        if body["token_type"] != "bearer" {
            return Err("no bearer token_type".into());
        }
        body["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "no access_token in the answer".into())
    }

    async fn conversations(&self, access: &str) -> Result<(), String> {
        let r = self
            .send(self.list_conversations().bearer_auth(access))
            .await?;
        let (status, body) = body_of(r).await;
        if status != StatusCode::OK {
            return Err(format!("got {status}: {}", body["detail"]));
        }
        if !body["items"].is_array() {
            return Err("the answer has no items list".into());
        }
        Ok(())
    }

    async fn replay(&self, token: &str) -> Result<(), String> {
        let (status, body) = self.post_login(token).await?;
        match status {
            StatusCode::UNAUTHORIZED => Ok(()),
            other => Err(format!("the second use got {other}: {}", body["detail"])),
        }
    }

    /// Signs the token out from the web app's origin, then finds it refused
    /// by the conversations function as an ended token.
    async fn sign_out(&self, access: &str) -> Result<(), String> {
        let r = self
            .send(
                self.client
                    .post(self.url(&self.settings.targets.sso, "/api/v1/auth/logout"))
                    .header("Origin", &self.settings.origin)
                    .bearer_auth(access),
            )
            .await?;
        let (status, body) = body_of(r).await;
        if status != StatusCode::NO_CONTENT {
            return Err(format!("the sign-out got {status}: {}", body["detail"]));
        }
        let r = self
            .send(self.list_conversations().bearer_auth(access))
            .await?;
        let (status, body) = body_of(r).await;
        match status {
            StatusCode::UNAUTHORIZED if body["detail"] == "Token has been revoked" => Ok(()),
            other => Err(format!(
                "the signed-out token then got {other}: {}",
                body["detail"]
            )),
        }
    }

    async fn cors(&self) -> Result<(), String> {
        let origin = &self.settings.origin;
        let header = |r: &reqwest::Response, name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // On an error too: a 401 without CORS headers is a "CORS error" in the browser.
        let r = self
            .send(self.list_conversations().header("Origin", origin))
            .await?;
        if header(&r, "access-control-allow-origin").as_deref() != Some(origin) {
            return Err(format!("{origin} is not echoed on a {}", r.status()));
        }
        if header(&r, "access-control-allow-credentials").as_deref() != Some("true") {
            return Err("no Access-Control-Allow-Credentials: true".into());
        }
        let preflight = self
            .send(
                self.client
                    .request(
                        Method::OPTIONS,
                        self.url(&self.settings.targets.sso, "/api/v1/auth/login/sso"),
                    )
                    .header("Origin", origin)
                    .header("Access-Control-Request-Method", "POST")
                    .header("Access-Control-Request-Headers", "content-type"),
            )
            .await?;
        if !preflight.status().is_success()
            || header(&preflight, "access-control-allow-origin").as_deref() != Some(origin)
        {
            return Err(format!(
                "the preflight got {} without the origin",
                preflight.status()
            ));
        }
        let other = self
            .send(
                self.client
                    .get(self.url(&self.settings.targets.health, "/health"))
                    .header("Origin", DISALLOWED_ORIGIN),
            )
            .await?;
        if header(&other, "access-control-allow-origin").is_some() {
            return Err(format!(
                "{DISALLOWED_ORIGIN} got Access-Control-Allow-Origin"
            ));
        }
        Ok(())
    }
}
