//! Nothing a client sends is a 5xx, on either database. Property tests send
//! arbitrary Unicode, control characters (NUL included), lone surrogate
//! escapes, huge numbers, deep nesting, odd query strings, path ids, methods,
//! hosts and `Authorization` headers to every route, on PostgreSQL and on
//! SQLite, and check that no answer is a 5xx and that every error is JSON
//! `{"detail"}`; and that storable text round-trips identically on both.
//!
//! One app per backend serves every function (as `make run` does) and is
//! reused across the cases of a property; a failing case is shrunk and
//! printed by proptest.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{HeaderMap, Method, StatusCode};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::Value;
use shared::clock::unix_secs;
use shared::db::Database;
use shared::tokens::ApiTokens;
use sso_login::users::upsert_user;
use tests::services::{TestDb, clear_redis_prefix, uuid_simple};
use tests::tokens::hs256_from_json_text;
use tests::*;

/// Cases per property; each case runs on both backends.
const CASES: u32 = 96;
const SSO_SECRET: &str = "test-sso-secret-0123456789abcdef0123456789";
const SHARED_REDIS: &str = "redis://127.0.0.1:6379";
const JWT_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
const CONVERSATIONS: &str = "/api/v1/conversations/";
const LOGIN: &str = "/api/v1/auth/login/sso";

/// Every route a client can call, with a path id where it takes one.
const ROUTES: &[&str] = &[
    "/health",
    "/health/ready",
    LOGIN,
    CONVERSATIONS,
    "/api/v1/conversations/1",
];

/// Every function on one backend, with a user and its API token.
struct Target {
    backend: &'static str,
    app: TestApp,
    token: String,
    redis_prefix: String,
    _db: TestDb,
}

impl Target {
    async fn start(backend: &'static str, db: TestDb) -> Self {
        let redis_prefix = format!("tms-test-{}:", uuid_simple());
        let (config, settings): (_, sso_login::Settings) = test_sections(&[
            ("DATABASE_URL", &db.url),
            ("SSO_JWT_SECRET", SSO_SECRET),
            ("REDIS_URL", SHARED_REDIS),
            ("REDIS_KEY_PREFIX", &redis_prefix),
        ]);
        let tokens = ApiTokens::from_settings(&settings.jwt);
        let routes = tools::all_routes(&config, settings).await.expect("build");
        let mut app = spawn_app(routes, &config).await;
        // A connection per request: the property is about each answer, and
        // a kept-alive connection that the server closed after refusing a
        // body it did not read (a 415) may be reused by the client in the
        // same instant, which fails the next request before it is sent.
        app.client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let database = Database::open(&config.database).await.expect("open");
        let user = upsert_user(&database, "ext-owner", Some("owner@example.com"), None)
            .await
            .expect("a user");
        upsert_user(&database, "ext-member", None, None)
            .await
            .expect("another user");
        let token = tokens.issue(user.id, user.token_generation).unwrap().token;
        Self {
            backend,
            app,
            token,
            redis_prefix,
            _db: db,
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        clear_redis_prefix(SHARED_REDIS, &self.redis_prefix);
    }
}

/// Both backends, and the runtime that serves them between cases.
struct Backends {
    runtime: tokio::runtime::Runtime,
    targets: Vec<Target>,
}

impl Backends {
    fn start() -> Self {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let targets = runtime.block_on(async {
            vec![
                Target::start("postgres", TestDb::postgres().await).await,
                Target::start("sqlite", TestDb::sqlite()).await,
            ]
        });
        Self { runtime, targets }
    }

    /// Checks `property` for [`CASES`] values of `strategy`, each on every backend.
    fn check<S: Strategy>(
        &self,
        strategy: S,
        property: impl AsyncFn(&Target, &S::Value) -> Result<(), TestCaseError>,
    ) {
        let mut runner = TestRunner::new(RunnerConfig {
            cases: CASES,
            failure_persistence: None,
            ..RunnerConfig::default()
        });
        let outcome = runner.run(&strategy, |value| {
            self.runtime.block_on(async {
                for target in &self.targets {
                    property(target, &value).await.map_err(|e| match e {
                        TestCaseError::Fail(why) => {
                            TestCaseError::fail(format!("on {}: {why}", target.backend))
                        }
                        reject => reject,
                    })?;
                }
                Ok(())
            })
        });
        if let Err(e) = outcome {
            panic!("{e}");
        }
    }
}

/// A response, read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

async fn send(request: reqwest::RequestBuilder) -> Result<Answer, TestCaseError> {
    let response = request
        .send()
        .await
        .map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|e| TestCaseError::fail(format!("no body: {e}")))?
        .to_vec();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// The contract for any request: not a 5xx; an error is JSON `{"detail"}`
/// (with `WWW-Authenticate` on a 401 and `Allow` on a 405).
fn well_behaved(answer: &Answer, method: &Method) -> Result<(), TestCaseError> {
    let body = String::from_utf8_lossy(&answer.body);
    prop_assert!(answer.status.as_u16() < 500, "{} {}", answer.status, body);
    if answer.status.is_client_error() && method != Method::HEAD {
        let content_type = answer
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok());
        prop_assert_eq!(content_type, Some("application/json"), "{}", body);
        let json: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| TestCaseError::fail(format!("error body is not JSON ({e}): {body}")))?;
        prop_assert!(json["detail"].is_string(), "no detail: {}", body);
    }
    if answer.status == StatusCode::UNAUTHORIZED {
        prop_assert!(answer.headers.contains_key("www-authenticate"));
    }
    if answer.status == StatusCode::METHOD_NOT_ALLOWED {
        prop_assert!(answer.headers.contains_key("allow"));
    }
    Ok(())
}

// ---- What a client may send ------------------------------------------------

/// Any Unicode scalar, with control characters (NUL most of all), invisible
/// and odd characters far more often than chance would bring them.
fn odd_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        2 => (0u32..0x20).prop_map(|c| char::from_u32(c).expect("a control character")),
        1 => Just('\0'),
        2 => select(vec![
            '\u{7f}', '\u{85}', '\u{a0}', '\u{200b}', '\u{2028}', '\u{feff}', '\u{fffd}',
            '\u{ffff}', '\u{10ffff}', '\u{1f600}', 'é', '"', '\\', '\'', ' ', '%', '/', '?',
            '#', '&', '=', '+', ':',
        ]),
        3 => proptest::char::range('a', 'z'),
    ]
}

fn text() -> impl Strategy<Value = String> {
    vec(odd_char(), 0..24).prop_map(String::from_iter)
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

/// Numbers as JSON text that no `i64` or `f64` holds, and some that are not JSON.
const ODD_NUMBERS: &[&str] = &[
    "1e400",
    "-1e400",
    "1e-400",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "0",
    "-0",
    "1.0",
    "1.5",
    "-1",
    "1E+2",
    "0x10",
    "01",
    ".5",
    "NaN",
    "Infinity",
    "1_000",
];

/// String literals that serde_json refuses, or that decode to something odd.
const ODD_STRINGS: &[&str] = &[
    r#""\ud800""#,
    r#""\udc00""#,
    r#""\ud800\u0041""#,
    r#""\udbff\udfff""#,
    r#""\u0000""#,
    r#""a\u0000b""#,
    r#""\uffff""#,
    r#""\x41""#,
    r#""unterminated"#,
    "\"raw\tcontrol\u{1}\"",
    "\"raw\u{0}nul\"",
];

fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        select(ODD_NUMBERS).prop_map(str::to_owned),
        (1usize..400).prop_map(|zeros| format!("1{}", "0".repeat(zeros))),
    ]
}

/// JSON text (mostly valid, some not): any value, nested a few levels.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        1 => Just("null".to_owned()),
        1 => any::<bool>().prop_map(|b| b.to_string()),
        1 => number_text(),
        2 => text().prop_map(|t| json_string(&t)),
        1 => select(ODD_STRINGS).prop_map(str::to_owned),
    ];
    let key = prop_oneof![
        select(vec!["title", "member_ids", "token", "sub"]).prop_map(str::to_owned),
        text(),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(|items| format!("[{}]", items.join(","))),
            vec((key.clone(), inner), 0..6).prop_map(|fields| {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", json_string(k)))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

/// Arrays and objects nested far deeper than any parser should follow.
fn deeply_nested() -> impl Strategy<Value = String> {
    (1usize..5000, any::<bool>()).prop_map(|(depth, arrays)| {
        if arrays {
            format!("{}{}", "[".repeat(depth), "]".repeat(depth))
        } else {
            format!(r#"{}1{}"#, r#"{"title":"#.repeat(depth), "}".repeat(depth))
        }
    })
}

/// A body for a JSON route: shaped like a create or a login, or anything.
fn json_body() -> impl Strategy<Value = String> {
    let member_ids = prop_oneof![
        3 => vec(prop_oneof![number_text(), select(vec!["1", "2"]).prop_map(str::to_owned)], 0..5)
            .prop_map(|ids| format!("[{}]", ids.join(","))),
        1 => json_text(),
    ];
    prop_oneof![
        3 => (json_text(), member_ids.clone())
            .prop_map(|(t, m)| format!(r#"{{"title":{t},"member_ids":{m}}}"#)),
        3 => (text(), member_ids).prop_map(|(t, m)| {
            format!(r#"{{"title":{},"member_ids":{m}}}"#, json_string(&t))
        }),
        1 => json_text().prop_map(|t| format!(r#"{{"token":{t}}}"#)),
        2 => json_text(),
        1 => deeply_nested(),
        1 => text(),
    ]
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    option::weighted(
        0.9,
        prop_oneof![
            4 => Just("application/json"),
            1 => select(vec![
                "application/json; charset=utf-8",
                "APPLICATION/JSON",
                "application/problem+json",
                "application/json; charset=latin1",
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data",
                "application/jsonx",
                "",
            ]),
        ],
    )
}

/// `%XX` for every byte but the unreserved ones: any bytes, as a URL carries them.
fn percent_encoded(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Any bytes (invalid UTF-8 included) or any text, percent-encoded.
fn url_text() -> impl Strategy<Value = String> {
    prop_oneof![
        vec(any::<u8>(), 0..24).prop_map(|b| percent_encoded(&b)),
        text().prop_map(|t| percent_encoded(t.as_bytes())),
    ]
}

/// A cursor of the right shape with any values, or one of another shape.
fn cursor_text() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        text(),
        number_text()
    ];
    (part.clone(), part, any::<bool>()).prop_map(|(activity, id, url_safe)| {
        let raw = format!("{activity}:{id}");
        if url_safe {
            URL_SAFE_NO_PAD.encode(raw)
        } else {
            percent_encoded(STANDARD.encode(raw).as_bytes())
        }
    })
}

fn query_string() -> impl Strategy<Value = String> {
    let key = select(vec!["limit", "cursor", "LIMIT", "limit[]", "x", ""]);
    let value = prop_oneof![
        number_text().prop_map(|n| percent_encoded(n.as_bytes())),
        cursor_text(),
        url_text(),
    ];
    prop_oneof![
        4 => vec((key, value), 0..4).prop_map(|pairs| {
            let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            pairs.join("&")
        }),
        1 => url_text(),
        1 => select(vec!["&&&", "=", "limit", "%", "%zz", "limit=%FF", "a=b=c", "limit=1&limit=2"])
            .prop_map(str::to_owned),
    ]
}

fn path_id() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        number_text().prop_map(|n| percent_encoded(n.as_bytes())),
        select(vec!["1", "2", "0", "-1", "%2F", "..", "1%00", "1 "])
            .prop_map(|s| percent_encoded(s.as_bytes())),
        url_text(),
    ]
}

/// What an `Authorization` header may carry: the target's own token behind
/// odd schemes and suffixes, tokens signed with the right key but odd claims,
/// or any bytes a header can hold.
#[derive(Debug, Clone)]
enum Credentials {
    Raw(Vec<u8>),
    Own {
        scheme: &'static str,
        suffix: &'static str,
    },
}

impl Credentials {
    fn header(&self, target: &Target) -> Vec<u8> {
        match self {
            Self::Raw(bytes) => bytes.clone(),
            Self::Own { scheme, suffix } => format!("{scheme}{}{suffix}", target.token).into(),
        }
    }
}

/// An API token's claims with any `sub` and, now and then, any other claim.
fn api_claims() -> impl Strategy<Value = String> {
    let now = unix_secs();
    let sub = prop_oneof![
        json_text(),
        number_text().prop_map(|n| json_string(&n)),
        text().prop_map(|t| json_string(&t)),
    ];
    let exp = prop_oneof![
        3 => Just((now + 3600).to_string()),
        1 => number_text(),
    ];
    (sub, exp).prop_map(move |(sub, exp)| {
        format!(r#"{{"sub":{sub},"exp":{exp},"iat":{now},"iss":"tms-chat","aud":"tms-chat-api","jti":"x"}}"#)
    })
}

fn credentials() -> impl Strategy<Value = Credentials> {
    let header_byte = prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')];
    prop_oneof![
        2 => vec(header_byte, 0..64).prop_map(Credentials::Raw),
        2 => (
            select(vec!["Bearer ", "bearer ", "BEARER  ", "Bearer\t", "Basic ", "Token ", "Bearer", " Bearer ", ""]),
            select(vec!["", " ", "x", ".", "\t", ".x", " extra"]),
        )
            .prop_map(|(scheme, suffix)| Credentials::Own { scheme, suffix }),
        2 => api_claims().prop_map(|claims| {
            let token = hs256_from_json_text(TEST_JWT_SECRET, JWT_HEADER, &claims);
            Credentials::Raw(format!("Bearer {token}").into())
        }),
        1 => text().prop_map(|t| Credentials::Raw(format!("Bearer {}", t.escape_default()).into())),
    ]
}

/// A GCGC token signed with the right secret whose claims hold anything.
/// Most are well-formed enough to log in, so the claims reach the database.
fn sso_token() -> impl Strategy<Value = String> {
    prop_oneof![3 => any_claims_token(), 1 => valid_token_with_any_text()]
}

/// A token that verifies, with arbitrary text in `sub`, `email` and `name`:
/// what reaches the database (a case in four). Most fields are free of
/// control characters (which refuse a token), so that enough logins
/// succeed in every run: with `text()` alone a run saw none about once in 20.
fn valid_token_with_any_text() -> impl Strategy<Value = String> {
    let now = unix_secs();
    let field = || {
        prop_oneof![
            3 => text().prop_map(|t| t.chars().filter(|c| !c.is_control()).collect()),
            1 => text(),
        ]
    };
    (field(), field(), field()).prop_map(move |(sub, email, name): (String, String, String)| {
        let claims = format!(
            r#"{{"sub":{},"email":{},"name":{},"iat":{now},"exp":{}}}"#,
            json_string(&format!("u{sub}")),
            json_string(&email),
            json_string(&name),
            now + 3600
        );
        hs256_from_json_text(SSO_SECRET, JWT_HEADER, &claims)
    })
}

fn any_claims_token() -> impl Strategy<Value = String> {
    let now = unix_secs();
    let text_claim = prop_oneof![
        4 => text().prop_map(|t| json_string(&t)),
        1 => json_text(),
    ];
    let time_claim = prop_oneof![
        4 => Just((now + 3600).to_string()),
        1 => Just(now.to_string()),
        1 => number_text(),
        1 => json_text(),
    ];
    let header = prop_oneof![
        8 => Just(JWT_HEADER.to_owned()),
        1 => text().prop_map(|kid| format!(r#"{{"alg":"HS256","kid":{}}}"#, json_string(&kid))),
        1 => select(vec![r#"{"alg":"none"}"#, r#"{"alg":"HS512"}"#, r#"{"alg":"RS256"}"#, "{}", ""])
            .prop_map(str::to_owned),
        1 => json_text(),
    ];
    let claims = (
        option::weighted(0.95, text_claim.clone()),
        option::weighted(0.95, time_claim.clone()),
        option::weighted(0.3, time_claim.clone()),
        option::weighted(0.2, time_claim),
        option::of(text_claim.clone()),
        option::of(text_claim.clone()),
        option::of(text_claim),
        option::weighted(0.2, (text(), json_text())),
    );
    (header, claims).prop_map(|(header, (sub, exp, iat, nbf, jti, email, name, other))| {
        let mut fields: Vec<String> = [
            ("sub", sub),
            ("exp", exp),
            ("iat", iat),
            ("nbf", nbf),
            ("jti", jti),
            ("email", email),
            ("name", name),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{}:{v}", json_string(k))))
        .collect();
        if let Some((k, v)) = other {
            fields.push(format!("{}:{v}", json_string(&k)));
        }
        hs256_from_json_text(SSO_SECRET, &header, &format!("{{{}}}", fields.join(",")))
    })
}

fn method() -> impl Strategy<Value = Method> {
    select(vec![
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "FOO",
    ])
    .prop_map(|m| Method::from_bytes(m.as_bytes()).expect("a method"))
}

// ---- The properties ----------------------------------------------------------

#[test]
fn json_bodies_to_the_post_routes_are_never_5xx() {
    let backends = Backends::start();
    backends.check(
        (
            select(vec![CONVERSATIONS, LOGIN]),
            content_type(),
            json_body(),
        ),
        async |target, (route, content_type, body)| {
            let mut request = target
                .app
                .client
                .post(target.app.url(route))
                .bearer_auth(&target.token)
                .body(body.clone());
            if let Some(content_type) = content_type {
                request = request.header("content-type", *content_type);
            }
            well_behaved(&send(request).await?, &Method::POST)
        },
    );
}

#[test]
fn gcgc_tokens_with_any_claims_are_never_5xx() {
    let backends = Backends::start();
    let logged_in = AtomicUsize::new(0);
    backends.check(sso_token(), async |target, token| {
        let body = serde_json::json!({ "token": token });
        let request = target.app.client.post(target.app.url(LOGIN)).json(&body);
        let answer = send(request).await?;
        well_behaved(&answer, &Method::POST)?;
        if answer.status == StatusCode::OK {
            logged_in.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    // Enough of the tokens were valid for their claims to reach the database.
    assert!(logged_in.into_inner() > 0, "no token logged in");
}

#[test]
fn odd_query_strings_are_never_5xx_and_a_bad_list_query_is_422() {
    let backends = Backends::start();
    backends.check(
        (select(ROUTES), query_string()),
        async |target, (route, query)| {
            let url = format!("{}?{query}", target.app.url(route));
            let method = if *route == LOGIN {
                Method::POST
            } else {
                Method::GET
            };
            let request = target
                .app
                .client
                .request(method.clone(), url)
                .bearer_auth(&target.token);
            let answer = send(request).await?;
            well_behaved(&answer, &method)?;
            if *route == CONVERSATIONS {
                // A query the list cannot read is a 422 that says why, never a bare 400.
                prop_assert!(
                    [StatusCode::OK, StatusCode::UNPROCESSABLE_ENTITY].contains(&answer.status),
                    "{}",
                    answer.status
                );
            }
            Ok(())
        },
    );
}

#[test]
fn odd_path_ids_are_never_5xx_and_a_malformed_one_is_404() {
    let backends = Backends::start();
    backends.check(
        (path_id(), option::of(Just("/"))),
        async |target, (id, trailing)| {
            let path = format!("{CONVERSATIONS}{id}{}", trailing.unwrap_or_default());
            let request = target
                .app
                .client
                .get(target.app.url(&path))
                .bearer_auth(&target.token);
            let answer = send(request).await?;
            well_behaved(&answer, &Method::GET)?;
            // Any malformed id (invalid UTF-8 too) names no conversation: 404.
            prop_assert!(
                [StatusCode::OK, StatusCode::NOT_FOUND].contains(&answer.status),
                "{}",
                answer.status
            );
            Ok(())
        },
    );
}

#[test]
fn odd_authorization_headers_are_never_5xx() {
    let backends = Backends::start();
    backends.check(
        (select(ROUTES), credentials()),
        async |target, (route, credentials)| {
            let method = if *route == LOGIN {
                Method::POST
            } else {
                Method::GET
            };
            let header = credentials.header(target);
            let request = target
                .app
                .client
                .request(method.clone(), target.app.url(route))
                .header("authorization", header.as_slice());
            well_behaved(&send(request).await?, &method)
        },
    );
}

#[test]
fn any_method_host_and_origin_on_any_route_is_never_5xx() {
    let backends = Backends::start();
    let host = option::weighted(
        0.5,
        prop_oneof![
            select(vec![
                "evil.example",
                "localhost:1",
                "127.0.0.1",
                "",
                "[::1]",
                "localhost."
            ])
            .prop_map(str::to_owned),
            vec(prop_oneof![0x21u8..0x7f], 0..24)
                .prop_map(|b| String::from_utf8(b).expect("ASCII")),
        ],
    );
    let origin = option::of(select(vec![ALLOWED_ORIGIN, DISALLOWED_ORIGIN, "null", "*"]));
    backends.check(
        (select(ROUTES), method(), host, origin),
        async |target, (route, method, host, origin)| {
            let mut request = target
                .app
                .client
                .request(method.clone(), target.app.url(route))
                .bearer_auth(&target.token);
            if let Some(host) = host {
                request = request.header("host", host.as_str());
            }
            if let Some(origin) = origin {
                request = request.header("origin", *origin);
            }
            well_behaved(&send(request).await?, method)
        },
    );
}

/// Text both databases can store: no NUL, something left after trimming,
/// at most the title's length.
fn storable_title() -> impl Strategy<Value = String> {
    let storable_char = odd_char().prop_filter("not NUL", |c| *c != '\0');
    vec(storable_char, 1..60)
        .prop_map(String::from_iter)
        .prop_filter("not blank", |t| !t.trim().is_empty())
}

#[test]
fn storable_titles_round_trip_identically_on_both_backends() {
    let backends = Backends::start();
    backends.check(storable_title(), async |target, title| {
        let request = target
            .app
            .client
            .post(target.app.url(CONVERSATIONS))
            .bearer_auth(&target.token)
            .json(&serde_json::json!({ "title": title }));
        let created = send(request).await?;
        prop_assert_eq!(created.status, StatusCode::CREATED);
        let location = created.headers["location"].to_str().unwrap().to_owned();
        let request = target
            .app
            .client
            .get(target.app.url(&location))
            .bearer_auth(&target.token);
        let fetched = send(request).await?;
        prop_assert_eq!(fetched.status, StatusCode::OK);
        let fetched: Value = serde_json::from_slice(&fetched.body).unwrap();
        prop_assert_eq!(fetched["title"].as_str(), Some(title.trim()));
        Ok(())
    });
}
