//! What the targets share, made once per process: sso-login's and
//! conversations' real routes inside the shared layers, on an in-memory
//! SQLite database with two users, served in-process (`oneshot`); the
//! token checkers; and the tokens that `{token}` and `{sso}` stand for.
//! `{token}` is issued afresh for each input, at the caller's sign-out
//! generation of the moment: an input that signs out (or out everywhere)
//! ends its own token, not the next input's.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::body::Body;
use http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE, ORIGIN};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use lambda_http::LambdaEvent;
use lambda_http::request::LambdaRequest;
use shared::db::Database;
use shared::runtime::LambdaHandler;
use shared::tokens::ApiTokens;
use shared::{App, Config};
use sso_login::replay::ReplayStore;
use sso_login::verify::SsoVerifier;
use tower::ServiceExt as _;

const API_SECRET: &str = "fuzz-api-jwt-secret-0123456789abcdef";
const SSO_SECRET: &str = "fuzz-sso-jwt-secret-0123456789abcdef";
/// The external id of the user whose token `{token}` is.
const CALLER: &str = "fuzz-caller";
const TOKEN: &[u8] = b"{token}";

pub struct Fixture {
    pub runtime: tokio::runtime::Runtime,
    pub config: Config,
    pub app: App,
    pub api_tokens: ApiTokens,
    pub sso: SsoVerifier,
    /// What the placeholders of an input stand for, but `{token}`.
    placeholders: Vec<(&'static [u8], Vec<u8>)>,
    db: Database,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(Fixture::new)
}

impl Fixture {
    fn new() -> Self {
        let_lambda_conversion_panics_unwind();
        let vars: HashMap<String, String> = [
            ("JWT_SECRET", API_SECRET),
            ("SSO_JWT_SECRET", SSO_SECRET),
            ("DATABASE_URL", "sqlite::memory:"),
            (
                "ALLOWED_ORIGINS",
                "http://localhost:3000,https://tms-chat.example.com",
            ),
            (
                "ALLOWED_HOSTS",
                "localhost,127.0.0.1,tms-chat.example.com,*.execute-api.us-east-1.amazonaws.com,*.lambda-url.us-east-1.on.aws",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (config, settings): (Config, sso_login::Settings) =
            Config::with_sections(&vars).expect("the fuzz configuration is valid");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let api_tokens = ApiTokens::from_settings(&settings.jwt);
        let sso = SsoVerifier::from_settings(&settings.sso, config.app_env);
        let replay = ReplayStore::from_settings(&settings.redis).expect("in-process replay store");
        let (db, _caller) = runtime.block_on(async {
            let db = Database::open(&config.database)
                .await
                .expect("in-memory SQLite");
            let caller = sso_login::users::upsert_user(&db, CALLER, None, None)
                .await
                .expect("a user");
            // A second user, for `member_ids` that exist.
            sso_login::users::upsert_user(&db, "fuzz-member", None, None)
                .await
                .expect("a user");
            (db, caller)
        });
        let routes = conversations::routes(conversations::AppState {
            db: db.clone(),
            tokens: api_tokens.clone(),
        })
        .merge(sso_login::routes(sso_login::AppState {
            verifier: sso.clone(),
            replay,
            db: db.clone(),
            tokens: api_tokens.clone(),
            sweeps: Default::default(),
        }));
        let app = shared::app(routes, &config);

        let now = shared::clock::unix_secs();
        let placeholders: Vec<(&'static [u8], Vec<u8>)> = vec![
            (b"{kid}", api_tokens.signing_key_id().as_bytes().to_vec()),
            (
                b"{sso}",
                testkit::tokens::sso_token(
                    SSO_SECRET,
                    &testkit::tokens::sso_claims("fuzz-sso-user"),
                )
                .into_bytes(),
            ),
            (b"{now}", now.to_string().into_bytes()),
            (b"{exp}", (now + 3600).to_string().into_bytes()),
        ];
        Self {
            runtime,
            config,
            app,
            api_tokens,
            sso,
            placeholders,
            db,
        }
    }

    pub fn api_secret(&self) -> &'static [u8] {
        API_SECRET.as_bytes()
    }

    pub fn sso_secret(&self) -> &'static [u8] {
        SSO_SECRET.as_bytes()
    }

    /// The input with its placeholders replaced.
    pub fn substitute(&self, data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        if find(&out, TOKEN).is_some() {
            out = replace(&out, TOKEN, self.fresh_token().as_bytes());
        }
        for (placeholder, value) in &self.placeholders {
            out = replace(&out, placeholder, value);
        }
        out
    }

    /// A new API token of the caller, at its current sign-out generation
    /// (the upsert answers it, as at a login).
    fn fresh_token(&self) -> String {
        let caller = self
            .runtime
            .block_on(sso_login::users::upsert_user(&self.db, CALLER, None, None))
            .expect("the caller");
        self.api_tokens
            .issue(caller.id, caller.token_generation)
            .expect("an API token")
            .token
    }

    /// Serves a request, checking the response.
    pub fn serve(&self, request: Request<Body>) {
        let described = format!("{} {}", request.method(), request.uri());
        let origins: Vec<Vec<u8>> = request
            .headers()
            .get_all(ORIGIN)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect();
        let response: Response<Body> = self
            .runtime
            .block_on(self.app.clone().oneshot(request))
            .unwrap_or_else(|never| match never {});
        let headers = response.headers();
        self.check_response(&described, &origins, response.status(), |name| {
            headers.get(name).map(|v| v.as_bytes().to_vec())
        });
    }

    /// Serves a Lambda event as the Lambda runtime does, checking the
    /// response the runtime would hand back (JSON, in the event's format).
    pub fn serve_lambda_event(&self, text: &str) {
        let Ok(event) = serde_json::from_str::<LambdaRequest>(text) else {
            return; // lambda_http answers the runtime API with an error, not a panic
        };
        let event_json: serde_json::Value = serde_json::from_str(text).expect("it parsed once");
        let mut context = lambda_http::Context::default();
        context.request_id = "fuzz-request".into();
        let response = self
            .runtime
            .block_on(LambdaHandler::new(self.app.clone()).call(LambdaEvent::new(event, context)))
            .unwrap_or_else(|never| match never {});
        let response = serde_json::to_value(&response).expect("a Lambda response is JSON");
        let status = response["statusCode"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or_else(|| panic!("no status code in {response}"));
        let described = format!(
            "event {}",
            event_json["rawPath"]
                .as_str()
                .or(event_json["path"].as_str())
                .unwrap_or("-")
        );
        self.check_response(
            &described,
            &json_headers(&event_json, "origin"),
            status,
            |name| json_headers(&response, name.as_str()).into_iter().next(),
        );
    }

    /// What every response of every function promises: no 5xx, an
    /// `X-Request-Id`, JSON errors, and CORS headers only for an allowed
    /// origin that the request carried.
    fn check_response(
        &self,
        described: &str,
        origins: &[Vec<u8>],
        status: StatusCode,
        header: impl Fn(&HeaderName) -> Option<Vec<u8>>,
    ) {
        assert!(!status.is_server_error(), "{described}: {status}");
        assert!(
            header(&shared::http::REQUEST_ID).is_some(),
            "{described}: no X-Request-Id"
        );
        if status.is_client_error() {
            let content_type = header(&CONTENT_TYPE);
            assert!(
                content_type
                    .as_ref()
                    .is_some_and(|t| t.starts_with(b"application/json")),
                "{described}: {status} with {content_type:?}"
            );
        }
        if let Some(allowed) = header(&ACCESS_CONTROL_ALLOW_ORIGIN) {
            assert!(
                origins.contains(&allowed),
                "{described}: {allowed:?} was not asked for"
            );
            assert!(
                self.config
                    .http
                    .allowed_origins
                    .iter()
                    .any(|o| o.as_bytes() == allowed),
                "{described}: {allowed:?} is not an allowed origin"
            );
        }
    }
}

/// The values of a header in a Lambda event or response (`headers` and
/// `multiValueHeaders`, names in any case).
fn json_headers(message: &serde_json::Value, name: &str) -> Vec<Vec<u8>> {
    let mut values = Vec::new();
    for map in ["headers", "multiValueHeaders"] {
        let Some(map) = message[map].as_object() else {
            continue;
        };
        for (key, value) in map {
            if !key.eq_ignore_ascii_case(name) {
                continue;
            }
            match value {
                serde_json::Value::String(v) => values.push(v.as_bytes().to_vec()),
                serde_json::Value::Array(vs) => values.extend(
                    vs.iter()
                        .filter_map(|v| v.as_str())
                        .map(|v| v.as_bytes().to_vec()),
                ),
                _ => {}
            }
        }
    }
    values
}

/// `LambdaHandler` turns a panic of lambda_http's event conversion into a
/// 400, but libFuzzer's panic hook aborts before the unwind gets there: such
/// panics pass silently, any other goes to the hook that was there (which
/// aborts under libFuzzer, and prints in the replay test).
fn let_lambda_conversion_panics_unwind() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_conversion = info.location().is_some_and(|l| {
            l.file().contains("/lambda_http-") || l.file().contains("/aws_lambda_events-")
        });
        if !in_conversion {
            previous(info);
        }
    }));
}

/// A request written as text: `METHOD target`, then `name: value` lines, a
/// blank line, and the body. Lines that are no valid header are skipped;
/// `None` when there is no valid request line.
pub fn request_from_text(data: &[u8]) -> Option<Request<Body>> {
    let (head, body) = match find(data, b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let request_line = std::str::from_utf8(lines.next()?).ok()?;
    let (method, target) = request_line.trim_end_matches('\r').split_once(' ')?;
    let mut builder = Request::builder().method(method).uri(target);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(line[..colon].trim_ascii());
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            builder = builder.header(name, value);
        }
    }
    builder.body(Body::from(body.to_vec())).ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn replace(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while let Some(at) = find(rest, from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}
