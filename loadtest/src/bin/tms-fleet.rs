//! `make fleet`: a fleet, not a process. Many instances of each database
//! function (sso-login and conversations), each a process with a pool of
//! one connection as on Lambda, all started at once, share one PostgreSQL
//! with a small `max_connections`, one Redis and one identity provider's
//! JWKS, under a mixed load (logins, lists, creates). Run twice: connected
//! directly, then through a PgBouncer in transaction mode
//! (`DATABASE_POOLER=transaction`). Prints one table; exits non-zero when
//! an outcome breaks the rules:
//! - directly, requests beyond the connection budget get a fast 503 with
//!   `Retry-After`: never a 500, never a hang;
//! - through the pooler, every request succeeds;
//! - each instance fetches the JWKS at most once (its secrets, read from
//!   the environment here, are read once at start by construction).
//!
//! FLEET_INSTANCES (per function, default 50), FLEET_SECONDS (of load,
//! default 10), FLEET_MAX_CONNECTIONS (the server's, default 30),
//! FLEET_CLIENTS (requests at once, default 100).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use jsonwebtoken::{Algorithm, EncodingKey};
use loadtest::env_number;
use serde_json::{Value, json};
use sqlx::Connection;
use testkit::free_port;
use testkit::services::{PgBouncer, PgServer, RedisServer};
use testkit::tokens::{api_token, sign, sso_claims};

const JWKS: &str = include_str!("../../../tests/fixtures/keys/jwks.json");
const EC1_PEM: &[u8] = include_bytes!("../../../tests/fixtures/keys/ec1.pem");
const JWT_SECRET: &str = "fleet-api-token-key-of-at-least-32-bytes!";
/// Users the load acts as (created before the fleet starts).
const USERS: i64 = 200;
/// A request without an answer by then is a hang.
const HANG: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    Pooled,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Pooled => "PgBouncer (transaction)",
        }
    }
}

struct Settings {
    instances: usize,
    seconds: u64,
    max_connections: u32,
    clients: usize,
}

fn main() -> anyhow::Result<()> {
    let settings = Settings {
        instances: env_number("FLEET_INSTANCES", 50)? as usize,
        seconds: env_number("FLEET_SECONDS", 10)?,
        max_connections: env_number("FLEET_MAX_CONNECTIONS", 30)? as u32,
        clients: env_number("FLEET_CLIENTS", 100)? as usize,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let ok = runtime.block_on(run(&settings))?;
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

async fn run(settings: &Settings) -> anyhow::Result<bool> {
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("the tool's directory")?
        .to_path_buf();
    let logs = std::env::temp_dir().join(format!("tms-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;
    let max_connections = format!("max_connections={}", settings.max_connections);
    let pg = PgServer::start_with_settings(&[&max_connections]);
    let db = shared::db::Database::open_postgres(&pg.url(), 1)?;
    db.migrate().await?;
    db.close().await;
    let mut admin = sqlx::PgConnection::connect(&pg.url()).await?;
    sqlx::query(
        "INSERT INTO users (external_id, created_at, updated_at) \
         SELECT 'fleet-seed-' || g, 0, 0 FROM generate_series(1, $1) g",
    )
    .bind(USERS)
    .execute(&mut admin)
    .await?;
    let redis = RedisServer::start();
    let keys = KeyServer::serve().await?;

    println!(
        "fleet: {} instances of sso-login and of conversations (pool of 1 each), PostgreSQL max_connections {}, {} clients for {} s per mode",
        settings.instances, settings.max_connections, settings.clients, settings.seconds
    );
    let mut rows = Vec::new();
    let mut ok = true;
    for mode in [Mode::Direct, Mode::Pooled] {
        // Room for the tool's own session and the superuser's reserve.
        let bouncer = (mode == Mode::Pooled).then(|| {
            PgBouncer::start(
                "127.0.0.1",
                pg.port,
                "postgres",
                settings.max_connections - 5,
            )
        });
        let url = match &bouncer {
            Some(b) => b.url_for(&pg.url()),
            None => pg.url(),
        };
        keys.fetches.store(0, Ordering::SeqCst);
        let figures = fleet(
            settings,
            mode,
            &url,
            &redis.url(),
            &keys,
            &bin_dir,
            &logs,
            &mut admin,
        )
        .await?;
        let broken = figures.broken_rules(mode, settings.instances);
        for rule in &broken {
            eprintln!("fleet ({}): {rule}", mode.name());
        }
        ok &= broken.is_empty();
        rows.push(figures);
    }
    print_table(&rows);
    println!("(instance logs: {})", logs.display());
    Ok(ok)
}

/// The identity provider's JWKS, counting its fetches.
struct KeyServer {
    url: String,
    fetches: Arc<AtomicUsize>,
}

impl KeyServer {
    async fn serve() -> anyhow::Result<Self> {
        let all: Value = serde_json::from_str(JWKS)?;
        let document = json!({ "keys": [all["ec1"].clone()] });
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&fetches);
        let router = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let document = document.clone();
                async move { axum::Json(document) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(Self { url, fetches })
    }
}

/// One function process serving plain HTTP; killed when dropped.
struct Instance {
    port: u16,
    child: Child,
}

impl Instance {
    fn spawn(bin: &Path, vars: &[(&str, String)], log: PathBuf) -> anyhow::Result<Self> {
        let port = free_port();
        let child = testkit::program_command(bin, vars.iter().map(|(k, v)| (k, v)), Some(port))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .with_context(|| format!("cannot start {} (make fleet builds it)", bin.display()))?;
        Ok(Self { port, child })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Until the instance answers HTTP (any answer): its cold start.
async fn until_serving(client: &reqwest::Client, url: &str) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if client.get(format!("{url}/")).send().await.is_ok() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[derive(Default)]
struct Figures {
    mode: &'static str,
    cold_starts: Vec<Duration>,
    jwks_fetches: usize,
    sso_instances_used: usize,
    latencies: Vec<Duration>,
    statuses: std::collections::BTreeMap<u16, usize>,
    hangs: usize,
    unavailable_latencies: Vec<Duration>,
    unavailable_without_retry_after: usize,
    peak_server_sessions: i64,
}

impl Figures {
    fn count(&self, pick: impl Fn(u16) -> bool) -> usize {
        self.statuses
            .iter()
            .filter(|(s, _)| pick(**s))
            .map(|(_, n)| n)
            .sum()
    }

    fn broken_rules(&self, mode: Mode, instances: usize) -> Vec<String> {
        let mut broken = Vec::new();
        if self.cold_starts.len() < 2 * instances {
            broken.push(format!(
                "{} of {} instances started",
                self.cold_starts.len(),
                2 * instances
            ));
        }
        if self.jwks_fetches > self.sso_instances_used {
            broken.push(format!(
                "{} JWKS fetches for {} instances",
                self.jwks_fetches, self.sso_instances_used
            ));
        }
        if self.hangs > 0 {
            broken.push(format!(
                "{} requests hung (no answer in {HANG:?})",
                self.hangs
            ));
        }
        let errors = self.count(|s| s >= 500 && s != 503);
        if errors > 0 {
            broken.push(format!("{errors} answers 5xx other than 503"));
        }
        if self.unavailable_without_retry_after > 0 {
            broken.push(format!(
                "{} 503s without Retry-After",
                self.unavailable_without_retry_after
            ));
        }
        if let Some(p99) = percentile(&self.unavailable_latencies, 0.99)
            && p99 > Duration::from_millis(1500)
        {
            broken.push(format!("503s are slow: p99 {p99:?}"));
        }
        if mode == Mode::Pooled {
            let failed = self.count(|s| !(200..300).contains(&s));
            if failed > 0 {
                broken.push(format!("{failed} requests failed through the pooler"));
            }
        }
        broken
    }
}

fn percentile(values: &[Duration], q: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort();
    Some(sorted[((sorted.len() - 1) as f64 * q).round() as usize])
}

fn millis(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1000.0))
}

#[allow(clippy::too_many_arguments)]
async fn fleet(
    settings: &Settings,
    mode: Mode,
    database_url: &str,
    redis_url: &str,
    keys: &KeyServer,
    bin_dir: &Path,
    logs: &Path,
    admin: &mut sqlx::PgConnection,
) -> anyhow::Result<Figures> {
    let prefix = format!("fleet-{}:", free_port());
    let mut vars: Vec<(&str, String)> = vec![
        ("JWT_SECRET", JWT_SECRET.into()),
        ("SSO_JWKS_URL", keys.url.clone()),
        ("REDIS_URL", redis_url.into()),
        ("REDIS_KEY_PREFIX", prefix),
        ("DATABASE_URL", database_url.into()),
        ("DB_POOL_SIZE", "1".into()),
        ("RUST_LOG", "warn".into()),
    ];
    if mode == Mode::Pooled {
        vars.push(("DATABASE_POOLER", "transaction".into()));
    }
    let client = reqwest::Client::builder()
        .timeout(HANG)
        .pool_max_idle_per_host(4)
        .build()?;
    // Every instance at once, as a burst of traffic scales a function out.
    let mut sso = Vec::new();
    let mut conversations = Vec::new();
    for i in 0..settings.instances {
        let log = |name: &str| {
            logs.join(format!(
                "{}-{name}-{i}.log",
                mode.name().split(' ').next().unwrap_or("fleet")
            ))
        };
        sso.push(Instance::spawn(
            &bin_dir.join("sso-login"),
            &vars,
            log("sso-login"),
        )?);
        conversations.push(Instance::spawn(
            &bin_dir.join("conversations"),
            &vars,
            log("conversations"),
        )?);
    }
    let starts = futures_util::future::join_all(sso.iter().chain(conversations.iter()).map(|i| {
        let (client, url) = (&client, i.url());
        async move { until_serving(client, &url).await }
    }))
    .await;
    let mut figures = Figures {
        mode: mode.name(),
        cold_starts: starts.into_iter().flatten().collect(),
        ..Figures::default()
    };

    let sso_urls: Arc<Vec<String>> = Arc::new(sso.iter().map(Instance::url).collect());
    let conversation_urls: Arc<Vec<String>> =
        Arc::new(conversations.iter().map(Instance::url).collect());
    let ec1 = Arc::new(EncodingKey::from_ec_pem(EC1_PEM)?);
    let sent = Arc::new(AtomicUsize::new(0));
    let used_sso: Arc<std::sync::Mutex<std::collections::HashSet<usize>>> = Arc::default();
    let until = Instant::now() + Duration::from_secs(settings.seconds);
    let workers = (0..settings.clients).map(|_| {
        let (client, sso_urls, conversation_urls, ec1, sent, used_sso) = (
            client.clone(),
            Arc::clone(&sso_urls),
            Arc::clone(&conversation_urls),
            Arc::clone(&ec1),
            Arc::clone(&sent),
            Arc::clone(&used_sso),
        );
        tokio::spawn(async move {
            let mut seen: Vec<(u16, Duration, bool)> = Vec::new();
            let mut hangs = 0;
            while Instant::now() < until {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                let user = (n as i64 % USERS) + 1;
                let request = match n % 4 {
                    0 => {
                        let instance = (n / 4) % sso_urls.len();
                        used_sso.lock().expect("used").insert(instance);
                        let token = sign(
                            &sso_claims(&format!("fleet-sso-{n}")),
                            Algorithm::ES256,
                            &ec1,
                            Some("ec-2026-01"),
                        );
                        client
                            .post(format!("{}/api/v1/auth/login/sso", sso_urls[instance]))
                            .json(&json!({ "token": token }))
                    }
                    2 => client
                        .post(format!(
                            "{}/api/v1/conversations/",
                            conversation_urls[n % conversation_urls.len()]
                        ))
                        .bearer_auth(api_token(JWT_SECRET, user))
                        .json(&json!({ "title": format!("fleet {n}") })),
                    _ => client
                        .get(format!(
                            "{}/api/v1/conversations/",
                            conversation_urls[n % conversation_urls.len()]
                        ))
                        .bearer_auth(api_token(JWT_SECRET, user)),
                };
                let started = Instant::now();
                match request.send().await {
                    Ok(r) => seen.push((
                        r.status().as_u16(),
                        started.elapsed(),
                        r.headers().contains_key("retry-after"),
                    )),
                    Err(_) => hangs += 1,
                }
            }
            (seen, hangs)
        })
    });
    let sessions = async {
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
    };
    let (results, peak) = tokio::join!(futures_util::future::join_all(workers), sessions);
    figures.peak_server_sessions = peak;
    for result in results {
        let (seen, hangs) = result?;
        figures.hangs += hangs;
        for (status, latency, retry_after) in seen {
            *figures.statuses.entry(status).or_default() += 1;
            figures.latencies.push(latency);
            if status == 503 {
                figures.unavailable_latencies.push(latency);
                if !retry_after {
                    figures.unavailable_without_retry_after += 1;
                }
            }
        }
    }
    figures.jwks_fetches = keys.fetches.load(Ordering::SeqCst);
    figures.sso_instances_used = used_sso.lock().expect("used").len();
    Ok(figures)
}

fn print_table(rows: &[Figures]) {
    println!();
    println!(
        "| mode | instances started | cold start p50 / max (ms) | JWKS fetches / instances that logged in | requests | p50 (ms) | p99 (ms) | statuses | 503 p99 (ms) | peak server sessions |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for f in rows {
        let statuses: Vec<String> = f
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .chain((f.hangs > 0).then(|| format!("no answer: {}", f.hangs)))
            .collect();
        println!(
            "| {} | {} | {} / {} | {} / {} | {} | {} | {} | {} | {} | {} |",
            f.mode,
            f.cold_starts.len(),
            millis(percentile(&f.cold_starts, 0.5)),
            millis(f.cold_starts.iter().max().copied()),
            f.jwks_fetches,
            f.sso_instances_used,
            f.latencies.len() + f.hangs,
            millis(percentile(&f.latencies, 0.5)),
            millis(percentile(&f.latencies, 0.99)),
            statuses.join(", "),
            millis(percentile(&f.unavailable_latencies, 0.99)),
            f.peak_server_sessions,
        );
    }
}
