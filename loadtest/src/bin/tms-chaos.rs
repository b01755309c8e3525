//! `make chaos`: the functions under a steady mixed load while their
//! dependencies fail, one fault after another, with the single-use rule of
//! SSO logins checked throughout.
//!
//! Everything runs on 127.0.0.1 and is the program's own: a durable Redis
//! (every write reaches its append-only file before the answer, as a managed
//! Redis with persistence), a PostgreSQL, an identity provider's key endpoint
//! (JWKS, in-process, its latency adjustable), and the function binaries in
//! plain-HTTP mode (FC's): health, conversations, and two sso-login instances
//! sharing Redis and PostgreSQL, so a token is replayed and retried "from any
//! instance". Both instances verify with the JWKS, as production does; the
//! slow-key fault publishes a new key at the same time, so logins signed with
//! it need a fetch from the slow endpoint while the others must not wait.
//!
//! Per fault it prints the answers by status class, latencies, the time to
//! recover, and what became of the GCGC tokens that got a 503 or no answer
//! (each is retried from the fault's lifting on, on either instance, until it
//! logs in, for at most 60 s). It exits non-zero when an
//! invariant breaks: a 5xx other than 503, a 503 without `Retry-After`, an
//! answer no request of its kind may get (a replay let in, a fresh token
//! refused), a token issued twice, an issued token whose Redis key does not
//! hold a `done:` mark, a 503'd token that cannot log in within 60 s, a
//! request left without an answer (but by the instance that was killed), or a
//! kind of request that does not recover after a fault.
//!
//! `CHAOS_SECONDS_PER_FAULT` (default 2, and always 2 with `--short`: the CI
//! run, about a minute),
//! `CHAOS_WORKERS` (requests in flight, default 12), `CHAOS_BIN_DIR` (default
//! target/debug, built by `cargo build --workspace --bins`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use loadtest::env_number;
use serde_json::{Value, json};
use shared::Config;
use sqlx::Connection;
use sso_login::replay::ReplayStore;
use sso_login::verify::{SsoClaims, VerifiedToken};
use testkit::free_port;
use testkit::relay::Relay;
use testkit::services::{PgServer, RedisServer, write_other_data};
use testkit::tokens::{sign, sso_claims};

const JWT_SECRET: &str = "chaos-jwt-secret-0123456789abcdef0123456789";
const REDIS_KEY_PREFIX: &str = "tms-chaos:";
const LOGIN: &str = "/api/v1/auth/login/sso";
const CONVERSATIONS: &str = "/api/v1/conversations/";
/// A client that waits longer than this has met a hang, not a fast 503.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Answers slower than this are counted: the contract wants a 503 "within
/// about a second".
const SLOW: Duration = Duration::from_millis(1500);
/// "A login that did not complete leaves its token usable again within 60 s."
const RETRY_LIMIT: Duration = Duration::from_secs(60);
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// The identity provider's latency during the slow-key fault.
const SLOW_KEYS: Duration = Duration::from_secs(1);
const USERS: usize = 8;
const SSO_INSTANCES: usize = 2;

const JWKS: &str = include_str!("../../../tests/fixtures/keys/jwks.json");
const EC1_PEM: &[u8] = include_bytes!("../../../tests/fixtures/keys/ec1.pem");
const RSA2_PEM: &[u8] = include_bytes!("../../../tests/fixtures/keys/rsa2.pem");

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // On Ctrl-C the run is dropped, and with it every process it started.
    let broken = rt.block_on(async {
        tokio::select! {
            broken = run() => broken.map(Some),
            _ = tokio::signal::ctrl_c() => Ok(None),
        }
    })?;
    let Some(broken) = broken else {
        eprintln!("chaos: interrupted");
        std::process::exit(130);
    };
    if broken > 0 {
        eprintln!("chaos: {broken} invariant(s) broken");
        std::process::exit(1);
    }
    Ok(())
}

fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

async fn run() -> anyhow::Result<usize> {
    let short = std::env::args().any(|a| a == "--short");
    let fault_secs = if short {
        2
    } else {
        env_number("CHAOS_SECONDS_PER_FAULT", 2)?.max(1)
    };
    let fault_time = Duration::from_secs(fault_secs);
    let workers = env_number("CHAOS_WORKERS", 12)?.clamp(1, 64) as usize;
    let bin_dir =
        PathBuf::from(std::env::var("CHAOS_BIN_DIR").unwrap_or_else(|_| "target/debug".into()));
    let logs = std::env::temp_dir().join(format!("tms-chaos-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&logs)?;

    println!(
        "chaos: {fault_secs} s per fault, {workers} requests in flight, binaries from {}, logs in {}",
        bin_dir.display(),
        logs.display()
    );
    let mut redis = tokio::task::spawn_blocking(RedisServer::start_durable).await?;
    // Its replica, for the failover: it replicates through a relay whose
    // primary side can go silent (a replica that lags), and the functions
    // reach Redis through an endpoint that a failover moves to the replica
    // (as ElastiCache's primary endpoint does).
    let replication = Relay::start(redis.port).await;
    let replica_of = [
        "--replicaof".to_owned(),
        "127.0.0.1".into(),
        replication.port.to_string(),
    ];
    let replica = tokio::task::spawn_blocking(move || {
        RedisServer::start_with_settings(&replica_of.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await?;
    let endpoint = Relay::start(redis.port).await;
    let endpoint_url = format!("redis://127.0.0.1:{}", endpoint.port);
    let mut pg = tokio::task::spawn_blocking(PgServer::start).await?;
    let db = shared::db::Database::open_postgres(&pg.url(), 2)?;
    db.migrate().await?;
    let mut user_ids = Vec::new();
    for i in 0..USERS {
        let user =
            sso_login::users::upsert_user(&db, &format!("chaos-member-{i}"), None, None).await?;
        user_ids.push(user.id);
    }
    db.close().await;
    let keys = KeyServer::serve().await?;

    let common = [
        ("JWT_SECRET", JWT_SECRET.to_owned()),
        ("ALLOWED_HOSTS", "127.0.0.1,localhost".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        ("DATABASE_URL", pg.url()),
    ];
    let with_redis = [
        ("REDIS_URL", endpoint_url.clone()),
        ("REDIS_KEY_PREFIX", REDIS_KEY_PREFIX.to_owned()),
    ];
    let mut sso = Vec::new();
    for i in 0..SSO_INSTANCES {
        let mut vars = common.to_vec();
        vars.extend(with_redis.iter().cloned());
        vars.push(("SSO_JWKS_URL", keys.url.clone()));
        sso.push(Function::start(&bin_dir, "sso-login", i, vars, &logs)?);
    }
    let mut health_vars = common.to_vec();
    health_vars.extend(with_redis.iter().cloned());
    let health = Function::start(&bin_dir, "health", 0, health_vars, &logs)?;
    let conversations = Function::start(&bin_dir, "conversations", 0, common.to_vec(), &logs)?;
    for f in sso.iter().chain([&health, &conversations]) {
        f.wait_serving().await?;
    }

    let load = Arc::new(Load {
        client: http_client()?,
        sso: sso
            .iter()
            .map(|f| Ok(std::sync::RwLock::new(SsoEndpoint::new(f.url())?)))
            .collect::<anyhow::Result<_>>()?,
        health_url: health.url(),
        conversations_url: conversations.url(),
        api_tokens: user_ids
            .iter()
            .map(|id| testkit::tokens::api_token(JWT_SECRET, *id))
            .collect(),
        user_ids,
        ec1: EncodingKey::from_ec_pem(EC1_PEM)?,
        rsa2: EncodingKey::from_rsa_pem(RSA2_PEM)?,
        rotated: AtomicBool::new(false),
        phase: AtomicUsize::new(0),
        counter: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        ledger: Mutex::default(),
        replay_store: replay_store(&redis.url(), &keys.url),
        pg_url: pg.url(),
    });
    let mut replica = Some(replica);
    println!("{HEADER}");
    let mut phases = vec![Phase::new("no fault (baseline)")];
    let worker_tasks: Vec<_> = (0..workers)
        .map(|w| tokio::spawn(Arc::clone(&load).work(w)))
        .collect();

    tokio::time::sleep(fault_time.max(Duration::from_secs(2))).await;
    finish_phase(&load, &mut phases, None, None).await;

    let faults = [
        Fault::RedisStopped,
        Fault::RedisFrozen,
        Fault::RedisEvicting,
        Fault::RedisFailover,
        Fault::PostgresStopped,
        Fault::PostgresFrozen,
        Fault::SsoInstanceKilled,
        Fault::SlowKeys,
    ];
    for fault in faults {
        if let Fault::SlowKeys = fault {
            keys.wait_past_fetch_rate_limit().await;
        }
        phases.push(Phase::new(fault.name()));
        load.phase.store(phases.len() - 1, Ordering::SeqCst);
        let phase = phases.last_mut().expect("a phase");
        phase.started = Instant::now();
        // The fault and its lifting: blocking work (a server's restart waits
        // for it to answer) runs off the load's threads.
        match fault {
            Fault::RedisStopped => {
                redis.stop();
                tokio::time::sleep(fault_time).await;
                redis = tokio::task::spawn_blocking(move || {
                    redis.resume_serving();
                    redis
                })
                .await?;
            }
            Fault::RedisFrozen => {
                redis.hang();
                tokio::time::sleep(fault_time).await;
                redis.unhang();
            }
            Fault::RedisEvicting => {
                let (server, evicted) = tokio::task::spawn_blocking(move || {
                    let evicted = evict_under_other_data(&redis, fault_time);
                    (redis, evicted)
                })
                .await?;
                redis = server;
                let marks = marks_on(&load, &redis);
                let gone = marks.iter().filter(|m| !**m).count();
                phase.note = Some(format!(
                    "{}; {gone} of the {} issued tokens' marks gone",
                    evicted?,
                    marks.len()
                ));
            }
            Fault::RedisFailover => {
                let promoted = replica.take().expect("one failover");
                // The replica hears nothing more: the marks of this
                // phase's logins never reach it.
                replication.silence_servers();
                tokio::time::sleep(fault_time).await;
                let (on_primary, on_replica) =
                    (marks_on(&load, &redis), marks_on(&load, &promoted));
                let total = on_primary.iter().filter(|m| **m).count();
                let lost = on_primary
                    .iter()
                    .zip(&on_replica)
                    .filter(|(p, r)| **p && !**r)
                    .count();
                redis.stop();
                promoted.command::<()>(redis::cmd("REPLICAOF").arg("NO").arg("ONE"))?;
                endpoint.point_to(promoted.port);
                redis = promoted;
                phase.note = Some(format!(
                    "the promoted replica lacked {lost} of the {total} issued tokens' marks"
                ));
            }
            Fault::PostgresStopped => {
                pg = tokio::task::spawn_blocking(move || {
                    pg.stop();
                    pg
                })
                .await?;
                tokio::time::sleep(fault_time).await;
                pg = tokio::task::spawn_blocking(move || {
                    pg.resume_serving();
                    pg
                })
                .await?;
            }
            Fault::PostgresFrozen => {
                pg.hang();
                tokio::time::sleep(fault_time).await;
                pg.unhang();
            }
            Fault::SsoInstanceKilled => {
                // Mid-load: logins are in flight on it. It stays away for
                // the fault's time, then a new one starts cold.
                // Stamped first: requests in flight fail during the kill.
                phase.killed = Some((0, Instant::now()));
                sso[0].kill();
                tokio::time::sleep(fault_time).await;
                // On a new address, as a platform's new instance: the old
                // port's leftovers (TIME_WAIT) are not the function's.
                sso[0].port = free_port();
                sso[0].spawn()?;
                sso[0].wait_serving().await?;
                *load.sso[0].write().expect("endpoint") = SsoEndpoint::new(sso[0].url())?;
            }
            Fault::SlowKeys => {
                keys.latency_ms
                    .store(SLOW_KEYS.as_millis() as u64, Ordering::SeqCst);
                keys.publish_rotated_key();
                load.rotated.store(true, Ordering::SeqCst);
                tokio::time::sleep(fault_time).await;
                keys.latency_ms.store(0, Ordering::SeqCst);
            }
        }
        let lifted = Instant::now();
        phase.lifted = Some(lifted);
        // The 503'd tokens are retried from the lifting on, while the load
        // goes on for a while (at least a few seconds: an abandoned claim is
        // taken over after 3 s).
        let begun = tokio::spawn(settle(Arc::clone(&load), Some(lifted)));
        tokio::time::sleep((fault_time / 2).max(Duration::from_secs(4))).await;
        finish_phase(&load, &mut phases, Some(lifted), Some(begun)).await;
    }

    load.stop.store(true, Ordering::SeqCst);
    for task in worker_tasks {
        task.await?;
    }
    // Tokens refused during the last settling: retried with the load stopped.
    let last = phases.len() - 1;
    let late = settle(Arc::clone(&load), None).await;
    phases[last].settled.extend(late);

    let recorded = records(&load).await?;
    let report = Report::new(&load, &phases, &recorded);
    report.print(fault_secs, workers);
    let broken = report.broken();
    if broken == 0 {
        let _ = std::fs::remove_dir_all(&logs);
    } else {
        println!("function logs (RUST_LOG=warn) kept in {}", logs.display());
    }
    drop(sso);
    drop(health);
    drop(conversations);
    Ok(broken)
}

/// Ends the current phase: waits for the retries of its 503'd tokens begun
/// at the lifting, retries those refused since, and prints its row.
async fn finish_phase(
    load: &Arc<Load>,
    phases: &mut [Phase],
    lifted: Option<Instant>,
    begun: Option<tokio::task::JoinHandle<Vec<Settled>>>,
) {
    let mut settled = match begun {
        Some(task) => task.await.expect("retries"),
        None => Vec::new(),
    };
    settled.extend(settle(Arc::clone(load), lifted).await);
    let index = phases.len() - 1;
    let phase = &mut phases[index];
    phase.settled = settled;
    let ledger = load.ledger.lock().expect("ledger");
    let row = PhaseFigures::of(index, phase, &ledger);
    println!("{}", row.line(phase));
}

#[derive(Clone, Copy)]
enum Fault {
    RedisStopped,
    RedisFrozen,
    /// A managed Redis's default eviction (`volatile-lru`) at a
    /// `maxmemory` that other data fills: marks are evicted.
    RedisEvicting,
    /// The primary killed while its replica lagged; the replica promoted
    /// and the endpoint moved to it: the latest marks are lost.
    RedisFailover,
    PostgresStopped,
    PostgresFrozen,
    SsoInstanceKilled,
    SlowKeys,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::RedisStopped => "Redis stopped (SIGKILL, restarted)",
            Fault::RedisFrozen => "Redis frozen (SIGSTOP, SIGCONT)",
            Fault::RedisEvicting => "Redis evicting (volatile-lru, full)",
            Fault::RedisFailover => "Redis failover to a lagging replica",
            Fault::PostgresStopped => "PostgreSQL stopped (restarted)",
            Fault::PostgresFrozen => "PostgreSQL frozen (SIGSTOP, SIGCONT)",
            Fault::SsoInstanceKilled => "sso-login instance SIGKILLed, restarted",
            Fault::SlowKeys => "key endpoint at 1 s, key rotated",
        }
    }
}

struct Phase {
    name: &'static str,
    started: Instant,
    lifted: Option<Instant>,
    /// The sso-login instance killed, and when.
    killed: Option<(usize, Instant)>,
    settled: Vec<Settled>,
    /// What the fault did, in figures (keys evicted, marks lost).
    note: Option<String>,
}

impl Phase {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            started: Instant::now(),
            lifted: None,
            killed: None,
            settled: Vec::new(),
            note: None,
        }
    }
}

/// The identity provider's key endpoint, served in-process.
struct KeyServer {
    url: String,
    latency_ms: Arc<AtomicU64>,
    published: Arc<Mutex<Vec<Value>>>,
    last_fetch: Arc<Mutex<Option<Instant>>>,
}

impl KeyServer {
    async fn serve() -> anyhow::Result<Self> {
        let all: Value = serde_json::from_str(JWKS)?;
        let published = Arc::new(Mutex::new(vec![all["rsa1"].clone(), all["ec1"].clone()]));
        let latency_ms = Arc::new(AtomicU64::new(0));
        let last_fetch = Arc::new(Mutex::new(None));
        let router = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get({
                let (published, latency_ms, last_fetch) =
                    (published.clone(), latency_ms.clone(), last_fetch.clone());
                move || async move {
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
            published,
            last_fetch,
        })
    }

    /// Waits until no instance fetched the keys for longer than sso-login's
    /// rate limit on fetches: a key published earlier is refused as unknown
    /// until then, by design (see docs/chaos.md); this fault measures the
    /// slow endpoint, not that window.
    async fn wait_past_fetch_rate_limit(&self) {
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

    fn publish_rotated_key(&self) {
        let all: Value = serde_json::from_str(JWKS).expect("fixture");
        self.published
            .lock()
            .expect("keys")
            .push(all["rsa2"].clone());
    }
}

/// A function binary serving plain HTTP, as on FC; killed when dropped.
struct Function {
    bin: PathBuf,
    port: u16,
    vars: Vec<(&'static str, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Function {
    fn start(
        bin_dir: &Path,
        name: &str,
        instance: usize,
        vars: Vec<(&'static str, String)>,
        logs: &Path,
    ) -> anyhow::Result<Self> {
        let mut function = Self {
            bin: bin_dir.join(name),
            port: free_port(),
            vars,
            log: logs.join(format!("{name}-{instance}.log")),
            child: None,
        };
        function.spawn()?;
        Ok(function)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = testkit::program_command(
            &self.bin,
            self.vars.iter().map(|(k, v)| (k, v)),
            Some(self.port),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} (`cargo build --workspace --bins` builds it)",
                self.bin.display()
            )
        })?;
        self.child = Some(child);
        Ok(())
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Until it answers HTTP. Not a bare TCP connect: a connect to a free
    /// port of the ephemeral range can connect to itself (TCP simultaneous
    /// open), which looks like a listener that is not there.
    async fn wait_serving(&self) -> anyhow::Result<()> {
        let client = http_client()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if client.get(format!("{}/", self.url())).send().await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!(
            "{} does not listen on {} (its log: {})",
            self.bin.display(),
            self.port,
            self.log.display()
        )
    }

    /// SIGKILL: no shutdown of any kind, as when the platform reclaims it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
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

const LOAD_KINDS: [Kind; 5] = [
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
    fn name(self) -> &'static str {
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
    fn success(self) -> u16 {
        match self {
            Kind::Login | Kind::List | Kind::Ready | Kind::Retry => 200,
            Kind::Replay => 401,
            Kind::Create => 201,
        }
    }

    /// Answers a request of this kind may get while a dependency fails. A
    /// retried token may meet its own earlier claim, still held (401), until
    /// that claim is abandoned.
    fn allowed(self, status: u16) -> bool {
        status == self.success() || status == 503 || (self == Kind::Retry && status == 401)
    }
}

/// One request's outcome.
struct Outcome {
    phase: usize,
    kind: Kind,
    /// The sso-login instance it went to.
    instance: Option<usize>,
    /// The GCGC token's, for logins.
    jti: Option<String>,
    started: Instant,
    finished: Instant,
    /// `None`: no answer (connection refused or reset, or the client timeout).
    status: Option<u16>,
    retry_after: bool,
    detail: Option<String>,
}

/// Everything a GCGC token went through.
struct GcgcToken {
    token: String,
    claims: Value,
    /// 200 answers for it, retries included: more than one is a token issued twice.
    issued: u32,
    /// A 503 or no answer, not yet logged in since.
    refused_at: Option<Instant>,
    /// A request with it got no answer: its login may have completed unseen.
    unanswered: bool,
}

#[derive(Default)]
struct Ledger {
    outcomes: Vec<Outcome>,
    tokens: HashMap<String, GcgcToken>,
    /// Tokens that logged in (jti, token), for replays.
    used: Vec<(String, String)>,
}

struct Load {
    client: reqwest::Client,
    /// The sso-login instances, as a load balancer knows them.
    sso: Vec<std::sync::RwLock<SsoEndpoint>>,
    health_url: String,
    conversations_url: String,
    user_ids: Vec<i64>,
    api_tokens: Vec<String>,
    ec1: EncodingKey,
    rsa2: EncodingKey,
    /// Once the key endpoint published rsa2, half the new tokens use it.
    rotated: AtomicBool,
    phase: AtomicUsize,
    counter: AtomicU64,
    stop: AtomicBool,
    ledger: Mutex<Ledger>,
    /// The key derivation of sso-login itself, to name a token's record.
    replay_store: ReplayStore,
    /// The database, where each login's record is read.
    pg_url: String,
}

/// An instance's address, and a client of its own: a killed instance's
/// connections go with it.
#[derive(Clone)]
struct SsoEndpoint {
    url: String,
    client: reqwest::Client,
}

impl SsoEndpoint {
    fn new(url: String) -> reqwest::Result<Self> {
        Ok(Self {
            url,
            client: http_client()?,
        })
    }
}

struct Answer {
    status: Option<u16>,
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
    async fn work(self: Arc<Self>, worker: usize) {
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
            sign(&claims, Algorithm::RS256, &self.rsa2, Some("rsa-2026-02"))
        } else {
            sign(&claims, Algorithm::ES256, &self.ec1, Some("ec-2026-01"))
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
    async fn post_login(&self, kind: Kind, jti: &str, token: &str, instance: usize) -> Answer {
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

/// What became of a token that got a 503 or no answer.
#[derive(Clone, Debug)]
enum Settled {
    /// It logged in, this long after it could (the fault lifted, or its
    /// last refusal), after this many refusals as "already used".
    /// `waited` counts from its first retry: the retrier's own schedule
    /// (a queue of thousands after a long outage) is not the function's.
    LoggedIn {
        after: Duration,
        waited: Duration,
        held: u32,
    },
    /// Its first login completed but the answer was lost (the instance
    /// died): 401 "already used", and the database holds its record.
    AnswerLost,
    /// 401 while the database holds its record, though no login answered
    /// 200 or went unanswered: the user is locked out.
    LockedOut { jti: String, mark: String },
    /// Not logged in within 60 s.
    NotWithin { jti: String },
}

/// Retries every token that got a 503 (or no answer) and has not logged in,
/// each until it does, for 60 s at most from `since` (the fault's lifting),
/// or from its own last refusal when that was later.
async fn settle(load: Arc<Load>, since: Option<Instant>) -> Vec<Settled> {
    // Taken: each token is settled once, whatever becomes of it.
    let pending: Vec<(String, String, Instant)> = {
        let mut ledger = load.ledger.lock().expect("ledger");
        ledger
            .tokens
            .iter_mut()
            .filter(|(_, t)| t.issued == 0)
            .filter_map(|(jti, t)| {
                let refused = t.refused_at.take()?;
                let from = since.map_or(refused, |s| s.max(refused));
                Some((jti.clone(), t.token.clone(), from))
            })
            .collect()
    };
    let limit = Arc::new(tokio::sync::Semaphore::new(8));
    let tasks: Vec<_> = pending
        .into_iter()
        .enumerate()
        .map(|(i, (jti, token, from))| {
            let (load, limit) = (Arc::clone(&load), Arc::clone(&limit));
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await.expect("semaphore");
                retry_until_logged_in(&load, i, &jti, &token, from).await
            })
        })
        .collect();
    let mut settled = Vec::new();
    for task in tasks {
        settled.push(task.await.expect("retry task"));
    }
    settled
}

async fn retry_until_logged_in(
    load: &Load,
    i: usize,
    jti: &str,
    token: &str,
    from: Instant,
) -> Settled {
    let mut held = 0;
    let mut attempt = i;
    let first_retry = Instant::now();
    while from.elapsed() < RETRY_LIMIT {
        attempt += 1;
        let answer = load
            .post_login(Kind::Retry, jti, token, attempt % load.sso.len())
            .await;
        match answer.status {
            Some(200) => {
                return Settled::LoggedIn {
                    after: from.elapsed(),
                    waited: first_retry.elapsed(),
                    held,
                };
            }
            Some(401) => {
                held += 1;
                let unanswered = load.ledger.lock().expect("ledger").tokens[jti].unanswered;
                match record_of(load, jti).await {
                    Some(_) if unanswered => return Settled::AnswerLost,
                    Some(attempt) => {
                        return Settled::LockedOut {
                            jti: jti.into(),
                            mark: format!("recorded under attempt {attempt}"),
                        };
                    }
                    // Its own earlier claim, still held in Redis: retry.
                    None => {}
                }
            }
            _ => {}
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
    Settled::NotWithin { jti: jti.into() }
}

/// The Redis key sso-login uses for a token, from its own derivation.
fn replay_key(store: &ReplayStore, token: &GcgcToken) -> String {
    let claims: SsoClaims = serde_json::from_value(token.claims.clone()).expect("claims");
    let signed_part = token
        .token
        .rsplit_once('.')
        .map_or(token.token.as_str(), |(s, _)| s)
        .to_owned();
    store.key(&VerifiedToken {
        claims,
        signed_part,
    })
}

fn replay_store(redis_url: &str, jwks_url: &str) -> ReplayStore {
    let vars: HashMap<String, String> = [
        ("JWT_SECRET", JWT_SECRET),
        ("REDIS_URL", redis_url),
        ("REDIS_KEY_PREFIX", REDIS_KEY_PREFIX),
        ("SSO_JWKS_URL", jwks_url),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    ReplayStore::from_config(&Config::from_vars(&vars).expect("chaos configuration"))
        .expect("replay store")
}

/// Sets a managed Redis's default eviction on `redis` with little room to
/// spare, and writes other expiring data (another application sharing the
/// Redis) for `time`; then takes the limit away. Returns what it evicted.
fn evict_under_other_data(redis: &RedisServer, time: Duration) -> anyhow::Result<String> {
    let info = |field: &str| -> anyhow::Result<u64> {
        let text: String = redis.command(&redis::cmd("INFO"))?;
        Ok(text
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{field}:")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_default())
    };
    let config_set = |name: &str, value: &str| -> anyhow::Result<()> {
        redis.command::<()>(redis::cmd("CONFIG").arg("SET").arg(name).arg(value))?;
        Ok(())
    };
    let evicted_before = info("evicted_keys")?;
    let limit = info("used_memory")? + 2 * 1024 * 1024;
    config_set("maxmemory-policy", "volatile-lru")?;
    config_set("maxmemory", &limit.to_string())?;
    let client = redis::Client::open(redis.url())?;
    let mut conn = client.get_connection()?;
    let started = Instant::now();
    let mut batch = 0u64;
    while started.elapsed() < time {
        write_other_data(&mut conn, batch, 200, 600)?;
        batch += 1;
    }
    config_set("maxmemory", "0")?;
    let evicted = info("evicted_keys")? - evicted_before;
    Ok(format!(
        "{evicted} keys evicted at maxmemory {limit} bytes while {} MB of other data were written",
        batch * 200 / 1024
    ))
}

/// For each token issued so far, whether `server` holds its mark.
fn marks_on(load: &Load, server: &RedisServer) -> Vec<bool> {
    let keys: Vec<String> = {
        let ledger = load.ledger.lock().expect("ledger");
        ledger
            .tokens
            .values()
            .filter(|t| t.issued > 0)
            .map(|t| replay_key(&load.replay_store, t))
            .collect()
    };
    keys.chunks(500)
        .flat_map(|chunk| {
            server
                .command::<Vec<Option<String>>>(redis::cmd("MGET").arg(chunk))
                .unwrap_or_else(|_| vec![None; chunk.len()])
        })
        .map(|v| v.is_some())
        .collect()
}

/// A token's key in the database's record of logins: its replay key
/// without the deployment's prefix, as sso-login writes it.
fn record_key(load: &Load, jti: &str) -> String {
    let ledger = load.ledger.lock().expect("ledger");
    let key = replay_key(&load.replay_store, &ledger.tokens[jti]);
    key.strip_prefix(REDIS_KEY_PREFIX)
        .unwrap_or(&key)
        .to_owned()
}

/// The attempt (claim) under which the database recorded a token's login,
/// read straight from PostgreSQL; `None` when there is no record or the
/// database did not answer.
async fn record_of(load: &Load, jti: &str) -> Option<String> {
    let key = record_key(load, jti);
    let read = async {
        let mut conn = sqlx::PgConnection::connect(&load.pg_url).await?;
        sqlx::query_scalar::<_, String>("SELECT attempt FROM sso_logins WHERE token_key = $1")
            .bind(key)
            .fetch_optional(&mut conn)
            .await
    };
    tokio::time::timeout(Duration::from_secs(1), read)
        .await
        .ok()?
        .ok()?
}

/// Every issued token's jti → whether the database holds its record.
async fn records(load: &Load) -> anyhow::Result<HashMap<String, bool>> {
    let jtis: Vec<String> = {
        let ledger = load.ledger.lock().expect("ledger");
        ledger
            .tokens
            .iter()
            .filter(|(_, t)| t.issued > 0)
            .map(|(jti, _)| jti.clone())
            .collect()
    };
    let keys: Vec<(String, String)> = jtis
        .into_iter()
        .map(|jti| {
            let key = record_key(load, &jti);
            (jti, key)
        })
        .collect();
    let mut conn = sqlx::PgConnection::connect(&load.pg_url).await?;
    let mut found = HashMap::new();
    for chunk in keys.chunks(500) {
        let recorded: Vec<String> =
            sqlx::query_scalar("SELECT token_key FROM sso_logins WHERE token_key = ANY($1)")
                .bind(chunk.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>())
                .fetch_all(&mut conn)
                .await?;
        for (jti, key) in chunk {
            found.insert(jti.clone(), recorded.contains(key));
        }
    }
    Ok(found)
}

/// The figures of one phase.
struct PhaseFigures {
    requests: usize,
    by_class: BTreeMap<&'static str, usize>,
    other_5xx: usize,
    /// 503s without `Retry-After`.
    bare_503: usize,
    /// Answers no request of its kind may get.
    wrong: Vec<String>,
    /// Requests without an answer, but those the killed instance dropped.
    unanswered: Vec<String>,
    p50: Duration,
    max: Duration,
    slow: usize,
    /// Per kind: from the lifting to the first success after which no
    /// request of that kind failed; `None`: it did not recover.
    recovery: Vec<(Kind, Option<Duration>)>,
}

impl PhaseFigures {
    fn of(index: usize, phase: &Phase, ledger: &Ledger) -> Self {
        let outcomes: Vec<&Outcome> = ledger
            .outcomes
            .iter()
            .filter(|o| o.phase == index)
            .collect();
        let mut by_class = BTreeMap::new();
        let (mut other_5xx, mut bare_503) = (0, 0);
        let (mut wrong, mut unanswered) = (Vec::new(), Vec::new());
        let mut latencies = Vec::new();
        for o in &outcomes {
            latencies.push(o.finished - o.started);
            let class = match o.status {
                None => "no answer",
                Some(s) if (200..300).contains(&s) => "2xx",
                Some(401) => "401",
                Some(s) if (400..500).contains(&s) => "4xx",
                Some(503) => "503",
                Some(_) => "5xx",
            };
            *by_class.entry(class).or_insert(0) += 1;
            match o.status {
                Some(503) if !o.retry_after => bare_503 += 1,
                Some(s) if s >= 500 && s != 503 => other_5xx += 1,
                Some(s) if !o.kind.allowed(s) => {
                    wrong.push(format!(
                        "{}: {} answered {s} {:?} after {} ms",
                        phase.name,
                        o.kind.name(),
                        o.detail.as_deref().unwrap_or_default(),
                        (o.finished - o.started).as_millis()
                    ));
                }
                None if !dropped_by_kill(phase, o) => unanswered.push(format!(
                    "{}: {} on instance {:?}, sent {}, after {} ms: {}",
                    phase.name,
                    o.kind.name(),
                    o.instance,
                    relative_to_lift(phase, o.started),
                    (o.finished - o.started).as_millis(),
                    o.detail.as_deref().unwrap_or_default()
                )),
                _ => {}
            }
        }
        latencies.sort();
        let at = |q: f64| {
            latencies
                .get(((latencies.len().max(1) - 1) as f64 * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        let recovery = match phase.lifted {
            None => Vec::new(),
            Some(lifted) => LOAD_KINDS
                .iter()
                .map(|&kind| (kind, recovery(&outcomes, kind, lifted)))
                .collect(),
        };
        Self {
            requests: outcomes.len(),
            by_class,
            other_5xx,
            bare_503,
            wrong,
            unanswered,
            p50: at(0.5),
            max: at(1.0),
            slow: latencies.iter().filter(|l| **l > SLOW).count(),
            recovery,
        }
    }

    fn slowest_recovery(&self) -> Option<(Kind, Option<Duration>)> {
        // A kind that did not recover comes first.
        self.recovery
            .iter()
            .copied()
            .max_by_key(|(_, r)| r.map_or(Duration::MAX, |d| d))
    }

    fn line(&self, phase: &Phase) -> String {
        let class = |c: &str| self.by_class.get(c).copied().unwrap_or(0);
        let lifted_in = phase
            .lifted
            .map_or(String::from("-"), |l| secs(l - phase.started));
        let recovery = match self.slowest_recovery() {
            None => "-".to_owned(),
            Some((kind, Some(d))) => format!("{} ({})", secs(d), kind.name()),
            Some((kind, None)) => format!("NOT RECOVERED ({})", kind.name()),
        };
        let logged_in: Vec<(Duration, Duration)> = phase
            .settled
            .iter()
            .filter_map(|s| match s {
                Settled::LoggedIn { after, waited, .. } => Some((*waited, *after)),
                _ => None,
            })
            .collect();
        let held: u32 = phase
            .settled
            .iter()
            .map(|s| match s {
                Settled::LoggedIn { held, .. } => *held,
                _ => 0,
            })
            .sum();
        let lost = phase
            .settled
            .iter()
            .filter(|s| matches!(s, Settled::AnswerLost))
            .count();
        let retried = format!(
            "{} / {}{}{}",
            logged_in.len(),
            phase.settled.len(),
            logged_in.iter().max().map_or(String::new(), |(waited, _)| {
                let after = logged_in.iter().map(|(_, a)| a).max().copied();
                format!(
                    ", max {} from the first retry ({} after the lift)",
                    secs(*waited),
                    secs(after.unwrap_or_default())
                )
            }),
            if lost > 0 {
                format!(", {lost} answer lost")
            } else {
                String::new()
            }
        );
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ms | {} ms | {} | {} | {} | {} |",
            phase.name,
            lifted_in,
            self.requests,
            class("2xx"),
            class("401"),
            class("4xx"),
            class("503"),
            class("5xx"),
            class("no answer"),
            self.p50.as_millis(),
            self.max.as_millis(),
            self.slow,
            retried,
            held,
            recovery,
        )
    }
}

const HEADER: &str = "| phase | fault s | requests | 2xx | 401 | other 4xx | 503 | other 5xx | no answer | p50 | max | > 1.5 s | 503'd tokens logged in | retries refused as held | recovery (slowest kind) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// A request that got no answer because it went to the instance that was
/// killed, while it was away.
fn dropped_by_kill(phase: &Phase, o: &Outcome) -> bool {
    match (phase.killed, phase.lifted) {
        (Some((instance, killed_at)), Some(lifted)) => {
            o.instance == Some(instance) && o.finished >= killed_at && o.started <= lifted
        }
        _ => false,
    }
}

fn recovery(outcomes: &[&Outcome], kind: Kind, lifted: Instant) -> Option<Duration> {
    let mut after: Vec<&&Outcome> = outcomes
        .iter()
        .filter(|o| o.kind == kind && o.started >= lifted)
        .collect();
    after.sort_by_key(|o| o.started);
    let ok = |o: &Outcome| o.status == Some(kind.success());
    let since = after.iter().rposition(|o| !ok(o)).map_or(0, |i| i + 1);
    after[since..]
        .iter()
        .map(|o| o.finished)
        .min()
        .map(|first| first.saturating_duration_since(lifted))
}

struct Report {
    rows: Vec<String>,
    /// What each fault that says so did, in figures.
    notes: Vec<String>,
    checks: Vec<(String, usize)>,
    totals: String,
}

impl Report {
    fn new(load: &Load, phases: &[Phase], recorded: &HashMap<String, bool>) -> Self {
        let ledger = load.ledger.lock().expect("ledger");
        let figures: Vec<PhaseFigures> = phases
            .iter()
            .enumerate()
            .map(|(i, p)| PhaseFigures::of(i, p, &ledger))
            .collect();
        let rows = phases
            .iter()
            .zip(&figures)
            .map(|(p, f)| f.line(p))
            .collect();
        let sum = |f: &dyn Fn(&PhaseFigures) -> usize| figures.iter().map(f).sum::<usize>();
        let issued_twice: Vec<&String> = ledger
            .tokens
            .iter()
            .filter(|(_, t)| t.issued > 1)
            .map(|(jti, _)| jti)
            .collect();
        let unrecorded: Vec<&String> = recorded
            .iter()
            .filter(|(_, recorded)| !**recorded)
            .map(|(jti, _)| jti)
            .collect();
        let settled: Vec<&Settled> = phases.iter().flat_map(|p| &p.settled).collect();
        let not_logged_in: Vec<&Settled> = settled
            .iter()
            .copied()
            .filter(|s| matches!(s, Settled::LockedOut { .. } | Settled::NotWithin { .. }))
            .collect();
        let wrong: Vec<&String> = figures.iter().flat_map(|f| &f.wrong).collect();
        let unanswered: Vec<String> = figures
            .iter()
            .flat_map(|f| f.unanswered.iter().cloned())
            .collect();
        let not_recovered: Vec<String> = phases
            .iter()
            .zip(&figures)
            .flat_map(|(p, f)| {
                f.recovery
                    .iter()
                    .filter(|(_, r)| r.is_none())
                    .map(move |(k, _)| format!("{}: {}", p.name, k.name()))
            })
            .collect();
        let detail = |items: &[String]| -> String {
            let shown: Vec<&str> = items.iter().take(5).map(String::as_str).collect();
            if shown.is_empty() {
                String::new()
            } else {
                format!(" ({})", shown.join("; "))
            }
        };
        let strings = |v: &[&String]| v.iter().map(|s| (*s).clone()).collect::<Vec<_>>();
        let checks = vec![
            ("5xx other than 503".into(), sum(&|f| f.other_5xx)),
            ("503 without Retry-After".into(), sum(&|f| f.bare_503)),
            (
                format!(
                    "answers no request of its kind may get{}",
                    detail(&strings(&wrong))
                ),
                wrong.len(),
            ),
            (
                format!("tokens issued twice{}", detail(&strings(&issued_twice))),
                issued_twice.len(),
            ),
            (
                format!(
                    "issued tokens without a record in the database{}",
                    detail(&strings(&unrecorded))
                ),
                unrecorded.len(),
            ),
            (
                format!(
                    "503'd tokens not logged in within 60 s{}",
                    detail(
                        &not_logged_in
                            .iter()
                            .map(|s| match s {
                                Settled::LockedOut { jti, mark } => format!(
                                    "jti {jti} locked out by {mark:?}: {}",
                                    history(&ledger, phases, jti)
                                ),
                                Settled::NotWithin { jti } => format!(
                                    "jti {jti} not within 60 s: {}",
                                    history(&ledger, phases, jti)
                                ),
                                _ => String::new(),
                            })
                            .collect::<Vec<_>>()
                    )
                ),
                not_logged_in.len(),
            ),
            (
                format!(
                    "requests without an answer (but by the killed instance){}",
                    detail(&unanswered)
                ),
                unanswered.len(),
            ),
            (
                format!("kinds that did not recover{}", detail(&not_recovered)),
                not_recovered.len(),
            ),
        ];
        let issued = ledger.tokens.values().filter(|t| t.issued > 0).count();
        let totals = format!(
            "{} requests, {} GCGC tokens minted, {} issued (each checked in the database), {} retried after a 503 or no answer",
            sum(&|f| f.requests),
            ledger.tokens.len(),
            issued,
            settled.len()
        );
        let notes = phases
            .iter()
            .filter_map(|p| Some(format!("{}: {}", p.name, p.note.as_ref()?)))
            .collect();
        Self {
            rows,
            notes,
            checks,
            totals,
        }
    }

    fn print(&self, fault_secs: u64, workers: usize) {
        println!();
        println!("## chaos: {fault_secs} s per fault, {workers} requests in flight");
        println!();
        println!("{HEADER}");
        for row in &self.rows {
            println!("{row}");
        }
        println!();
        for note in &self.notes {
            println!("{note}");
        }
        println!();
        println!("{}", self.totals);
        println!();
        for (check, count) in &self.checks {
            let verdict = if *count == 0 { "ok" } else { "BROKEN" };
            println!("- {check}: {count} — {verdict}");
        }
    }

    fn broken(&self) -> usize {
        self.checks.iter().filter(|(_, n)| *n > 0).count()
    }
}

/// Every request with one token: what a reproduction needs.
fn history(ledger: &Ledger, phases: &[Phase], jti: &str) -> String {
    ledger
        .outcomes
        .iter()
        .filter(|o| o.jti.as_deref() == Some(jti))
        .map(|o| {
            let phase = &phases[o.phase];
            let at = |t: Instant| relative_to_lift(phase, t);
            format!(
                "[{}, {} on instance {:?}, sent {}, answered {:?} {:?} in {} ms]",
                phase.name,
                o.kind.name(),
                o.instance,
                at(o.started),
                o.status,
                o.detail.as_deref().unwrap_or_default(),
                (o.finished - o.started).as_millis()
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn relative_to_lift(phase: &Phase, t: Instant) -> String {
    match phase.lifted {
        Some(lifted) if t >= lifted => format!("{} after the lift", secs(t - lifted)),
        Some(lifted) => format!("{} before the lift", secs(lifted - t)),
        None => format!(
            "{} into the phase",
            secs(t.saturating_duration_since(phase.started))
        ),
    }
}
