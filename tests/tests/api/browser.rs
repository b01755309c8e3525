//! The seed's promise, "no CORS errors in the browser console", checked in a
//! real browser: headless Chromium loads a page from an allowed origin and
//! runs the web app's requests against every function (as `tms-local` serves
//! them); the same page from a disallowed origin is blocked.
//!
//! Chromium comes from scripts/browser.sh (`make test` runs it).

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tests::services::{TestDb, uuid_simple};
use tests::tokens::{api_token, sso_claims, sso_token};
use tests::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;

const SSO_SECRET: &str = "test-sso-secret-0123456789abcdef0123456789";
/// The page logs this last; everything it logged before is in the log then.
const DONE_MARKER: &str = "tms-browser-test: done";
/// Chromium starts slowly on a loaded machine; the requests themselves take
/// milliseconds.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// The web app's requests, in the order a user makes them. The page posts
/// what it could read of each response (or the error of its fetch) to its own
/// server, then logs `done_marker`.
const PAGE_SCRIPT: &str = r#"
const results = [];
async function call(name, path, { method = "GET", token, body } = {}) {
  const headers = {};
  if (token !== undefined) headers["Authorization"] = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let result;
  try {
    const response = await fetch(config.api + path, {
      method,
      headers,
      credentials: "include",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    result = {
      name,
      status: response.status,
      location: response.headers.get("location"),
      www_authenticate: response.headers.get("www-authenticate"),
      body: response.status === 204 ? null : await response.json(),
    };
  } catch (error) {
    result = { name, error: `${error.name}: ${error.message}` };
  }
  results.push(result);
  return result;
}
(async () => {
  try {
    const login_path = "/api/v1/auth/login/sso";
    await call("health", "/health");
    const login = await call("login", login_path, { method: "POST", body: { token: config.sso_token } });
    await call("replay", login_path, { method: "POST", body: { token: config.sso_token } });
    await call("invalid token", login_path, { method: "POST", body: { token: "not-a-jwt" } });
    // A page whose login is blocked is given a valid API token, so that only
    // CORS can block its other requests.
    const api_token = config.api_token ?? login.body?.access_token;
    const created = await call("create", "/api/v1/conversations", {
      method: "POST",
      token: api_token,
      body: { title: "Browser check", member_ids: [] },
    });
    await call("list", "/api/v1/conversations", { token: api_token });
    await call("fetch", `/api/v1/conversations/${created.body?.id}`, { token: api_token });
    // The errors the app shows its users, each from another layer.
    await call("list without token", "/api/v1/conversations");
    await call("unknown conversation", "/api/v1/conversations/999999999", { token: api_token });
    await call("empty title", "/api/v1/conversations", {
      method: "POST",
      token: api_token,
      body: { title: "", member_ids: [] },
    });
    await call("too large", login_path, { method: "POST", body: { token: "x".repeat(100000) } });
    // Signing out (a preflighted POST: it carries Authorization), then the
    // token is refused.
    await call("sign out", "/api/v1/auth/logout", { method: "POST", token: api_token });
    await call("list after sign out", "/api/v1/conversations", { token: api_token });
    await fetch("/results", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(results),
    });
  } finally {
    console.log(config.done_marker);
  }
})();
"#;

const STEPS: [&str; 13] = [
    "health",
    "login",
    "replay",
    "invalid token",
    "create",
    "list",
    "fetch",
    "list without token",
    "unknown conversation",
    "empty title",
    "too large",
    "sign out",
    "list after sign out",
];

/// A page on its own origin that runs `PAGE_SCRIPT` against `api`.
struct Page {
    origin: String,
    results: Arc<Mutex<Option<Value>>>,
}

impl Page {
    /// Serves the page; `config` is what its script reads.
    fn serve(listener: TcpListener, origin: String, config: Value) -> Self {
        let html = format!(
            "<!doctype html><html><head><title>TMS chat browser check</title></head><body>\
             <script>const config = {config};\n{PAGE_SCRIPT}</script></body></html>"
        );
        let results = Arc::new(Mutex::new(None));
        let router = Router::new()
            .route("/", get(move || async move { Html(html) }))
            .route("/results", post(store_results))
            .with_state(results.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { origin, results }
    }

    fn results(&self) -> Value {
        self.results
            .lock()
            .unwrap()
            .clone()
            .expect("the page posted its results")
    }
}

async fn store_results(
    State(results): State<Arc<Mutex<Option<Value>>>>,
    axum::Json(body): axum::Json<Value>,
) {
    *results.lock().unwrap() = Some(body);
}

/// What Chromium showed while it ran a page.
struct BrowserLog {
    /// The console messages, as Chromium logs them.
    console: Vec<String>,
    /// The network log's failed preflights.
    preflight_errors: usize,
}

/// Opens `url` in headless Chromium until the page logs `DONE_MARKER`.
async fn open_in_chromium(url: String) -> BrowserLog {
    let dir = std::env::temp_dir().join(format!("tms-browser-{}", uuid_simple()));
    let net_log = dir.join("net-log.json");
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Nothing leaves the machine: any host other than ours does not resolve.
            "--no-proxy-server",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--log-net-log={}", net_log.display()))
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group: stopping the group stops every Chromium process.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start chromium ({e}): install it with scripts/browser.sh (apt-get install chromium)")
        });

    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut console = Vec::new();
    let mut stderr_tail = Vec::new();
    let read = tokio::time::timeout(BROWSER_TIMEOUT, async {
        while let Some(line) = lines.next_line().await.expect("read chromium's stderr") {
            if line.contains(":CONSOLE") {
                let done = line.contains(DONE_MARKER);
                console.push(line);
                if done {
                    return true;
                }
            } else {
                stderr_tail.push(line);
            }
        }
        false
    })
    .await;
    let group = -(child.id().expect("chromium runs") as i32);
    services::signal(group, "TERM");
    // The whole group, not only the browser's process: the network
    // service writes the net log, and may still be finishing it after the
    // browser has exited (a log cut short was seen under `cargo test`).
    let group_gone = async {
        let _ = child.wait().await;
        while services::is_alive(group) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), group_gone)
        .await
        .is_err()
    {
        services::signal(group, "KILL");
    }
    let preflight_errors = count_net_log_events(&net_log, "CORS_PREFLIGHT_ERROR");
    let _ = std::fs::remove_dir_all(&dir);
    let last_stderr = &stderr_tail[stderr_tail.len().saturating_sub(20)..];
    assert!(
        read == Ok(true),
        "{url} did not finish in chromium within {BROWSER_TIMEOUT:?}; console: {console:#?}; stderr: {last_stderr:#?}"
    );
    BrowserLog {
        console,
        preflight_errors,
    }
}

/// Events of `event_type` in a NetLog file. Chromium writes one event per
/// line and, stopped by a signal, leaves the file unterminated: each line is
/// read alone.
fn count_net_log_events(path: &Path, event_type: &str) -> usize {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("chromium wrote no network log at {}: {e}", path.display()));
    let mut lines = text.lines();
    let constants: Value = lines
        .next()
        .and_then(|first| serde_json::from_str(&format!("{}}}", first.trim_end_matches(','))).ok())
        .expect("the network log starts with its constants");
    let type_id = constants["constants"]["logEventTypes"][event_type]
        .as_u64()
        .unwrap_or_else(|| panic!("the network log knows no {event_type} events"));
    lines
        .filter_map(|line| serde_json::from_str::<Value>(line.trim_end_matches(',')).ok())
        .filter(|event| event["type"].as_u64() == Some(type_id))
        .count()
}

/// A listener on 127.0.0.1 and the origin a browser sees for it.
async fn page_listener(host: &str) -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    (listener, format!("http://{host}:{port}"))
}

fn step<'a>(results: &'a Value, name: &str) -> &'a Value {
    results
        .as_array()
        .expect("the results are a list")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no result for {name:?} in {results:#}"))
}

fn cors_messages(log: &BrowserLog) -> Vec<&String> {
    log.console.iter().filter(|l| l.contains("CORS")).collect()
}

#[tokio::test]
async fn browser_reads_every_response_from_an_allowed_origin_and_none_from_another() {
    // `localhost` and `127.0.0.1` are different origins, and both are hosts
    // the functions accept.
    let (allowed_listener, allowed_origin) = page_listener("localhost").await;
    let (disallowed_listener, disallowed_origin) = page_listener("127.0.0.1").await;
    // One database for every function, as `tms-local` has.
    let db = TestDb::sqlite();
    let (config, settings) = test_sections(&[
        ("DATABASE_URL", db.url.as_str()),
        ("ALLOWED_ORIGINS", allowed_origin.as_str()),
        ("SSO_JWT_SECRET", SSO_SECRET),
    ]);
    let functions = spawn_app(tools::all_routes(&config, settings).await.unwrap(), &config).await;

    let allowed = Page::serve(
        allowed_listener,
        allowed_origin.clone(),
        json!({
            "api": functions.address,
            "sso_token": sso_token(SSO_SECRET, &sso_claims("browser-user")),
            "done_marker": DONE_MARKER,
        }),
    );
    let disallowed = Page::serve(
        disallowed_listener,
        disallowed_origin.clone(),
        json!({
            "api": functions.address,
            "sso_token": sso_token(SSO_SECRET, &sso_claims("browser-intruder")),
            "api_token": api_token(TEST_JWT_SECRET, 1),
            "done_marker": DONE_MARKER,
        }),
    );
    let (allowed_log, disallowed_log) = tokio::join!(
        open_in_chromium(format!("{}/", allowed.origin)),
        open_in_chromium(format!("{}/", disallowed.origin)),
    );

    // From the allowed origin: no CORS error anywhere, every status and body readable.
    assert_eq!(cors_messages(&allowed_log), Vec::<&String>::new());
    assert_eq!(
        allowed_log.preflight_errors, 0,
        "failed preflights in the network log"
    );
    let results = allowed.results();
    for name in STEPS {
        assert!(
            step(&results, name)["error"].is_null(),
            "{name}: {:#}",
            step(&results, name)
        );
    }
    let health = step(&results, "health");
    assert_eq!(
        (health["status"].as_u64(), health["body"]["status"].as_str()),
        (Some(200), Some("ok"))
    );
    let login = step(&results, "login");
    assert_eq!(login["status"], 200, "{login:#}");
    assert_eq!(login["body"]["token_type"], "bearer");
    assert!(login["body"]["access_token"].is_string());
    let replay = step(&results, "replay");
    assert_eq!(
        (replay["status"].as_u64(), replay["body"]["detail"].as_str()),
        (Some(401), Some("Token has already been used"))
    );
    let invalid = step(&results, "invalid token");
    assert_eq!(invalid["status"], 401);
    assert!(invalid["body"]["detail"].is_string());
    let create = step(&results, "create");
    assert_eq!(create["status"], 201, "{create:#}");
    assert_eq!(create["body"]["title"], "Browser check");
    let id = &create["body"]["id"];
    assert_eq!(
        create["location"].as_str(),
        Some(format!("/api/v1/conversations/{id}").as_str()),
        "Location is readable by the page"
    );
    let list = step(&results, "list");
    assert_eq!(list["status"], 200);
    assert_eq!(list["body"]["items"][0]["id"], *id);
    let fetched = step(&results, "fetch");
    assert_eq!(fetched["status"], 200);
    assert_eq!(fetched["body"]["id"], *id);
    let unauthenticated = step(&results, "list without token");
    assert_eq!(unauthenticated["status"], 401);
    assert_eq!(unauthenticated["www_authenticate"], "Bearer");
    for (name, status) in [
        ("unknown conversation", 404),
        ("empty title", 422),
        ("too large", 413),
    ] {
        let result = step(&results, name);
        assert_eq!(result["status"], status, "{result:#}");
        assert!(result["body"]["detail"].is_string(), "{result:#}");
    }
    let signed_out = step(&results, "sign out");
    assert_eq!(signed_out["status"], 204, "{signed_out:#}");
    let refused = step(&results, "list after sign out");
    assert_eq!(refused["status"], 401, "{refused:#}");
    assert_eq!(refused["body"]["detail"], "Token has been revoked");
    assert_eq!(
        refused["www_authenticate"],
        "Bearer error=\"invalid_token\""
    );

    // From a disallowed origin: every fetch rejects, and the console says why.
    let results = disallowed.results();
    for name in STEPS {
        assert_eq!(
            step(&results, name)["error"],
            "TypeError: Failed to fetch",
            "{name} from {disallowed_origin}"
        );
    }
    let blocked = format!("from origin '{disallowed_origin}' has been blocked by CORS policy");
    assert_eq!(
        disallowed_log
            .console
            .iter()
            .filter(|l| l.contains(&blocked))
            .count(),
        STEPS.len(),
        "one CORS error per request in the console: {:#?}",
        disallowed_log.console
    );
    assert!(
        disallowed_log.preflight_errors > 0,
        "the network log shows the failed preflights"
    );
}
