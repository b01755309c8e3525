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
//!
//! The modules: `stack` (what the run starts), `load` (the requests and
//! their mix), `faults` (each fault and its lifting), `ledger` (every
//! request's outcome and every token's history, and their records in Redis
//! and PostgreSQL), `retries` (the refused tokens retried until they log
//! in), `report` (a row per phase, the invariants' summary).

#![warn(clippy::too_many_lines)]

mod faults;
mod ledger;
mod load;
mod report;
mod retries;
mod stack;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use loadtest::env_number;

use crate::faults::Fault;
use crate::load::Load;
use crate::report::{HEADER, Phase, PhaseFigures, Report};
use crate::retries::{Settled, settle};
use crate::stack::Stack;

const JWT_SECRET: &str = "chaos-jwt-secret-0123456789abcdef0123456789";
const REDIS_KEY_PREFIX: &str = "tms-chaos:";
/// A client that waits longer than this has met a hang, not a fast 503.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The run's sizes, from the environment and the arguments.
struct Settings {
    fault_secs: u64,
    workers: usize,
    bin_dir: PathBuf,
    /// Where the functions' logs go; kept when an invariant breaks.
    logs: PathBuf,
}

impl Settings {
    fn read() -> anyhow::Result<Self> {
        let short = std::env::args().any(|a| a == "--short");
        let fault_secs = if short {
            2
        } else {
            env_number("CHAOS_SECONDS_PER_FAULT", 2)?.max(1)
        };
        Ok(Self {
            fault_secs,
            workers: env_number("CHAOS_WORKERS", 12)?.clamp(1, 64) as usize,
            bin_dir: PathBuf::from(
                std::env::var("CHAOS_BIN_DIR").unwrap_or_else(|_| "target/debug".into()),
            ),
            logs: std::env::temp_dir().join(format!("tms-chaos-{}", uuid::Uuid::new_v4().simple())),
        })
    }

    fn fault_time(&self) -> Duration {
        Duration::from_secs(self.fault_secs)
    }
}

/// The whole run: a baseline phase, a phase per fault, the report. Returns
/// how many invariants broke.
async fn run() -> anyhow::Result<usize> {
    let settings = Settings::read()?;
    std::fs::create_dir_all(&settings.logs)?;
    println!(
        "chaos: {} s per fault, {} requests in flight, binaries from {}, logs in {}",
        settings.fault_secs,
        settings.workers,
        settings.bin_dir.display(),
        settings.logs.display()
    );
    let mut stack = Stack::start(&settings.bin_dir, &settings.logs).await?;
    let load = Arc::new(Load::new(&stack)?);
    println!("{HEADER}");
    let mut phases = vec![Phase::new("no fault (baseline)")];
    let worker_tasks: Vec<_> = (0..settings.workers)
        .map(|w| tokio::spawn(Arc::clone(&load).work(w)))
        .collect();

    tokio::time::sleep(settings.fault_time().max(Duration::from_secs(2))).await;
    finish_phase(&load, &mut phases, None, None).await;
    for fault in Fault::ALL {
        stack = fault_phase(fault, stack, &load, &mut phases, settings.fault_time()).await?;
    }

    load.stop.store(true, Ordering::SeqCst);
    for task in worker_tasks {
        task.await?;
    }
    // Tokens refused during the last settling: retried with the load stopped.
    let last = phases.len() - 1;
    let late = settle(Arc::clone(&load), None).await;
    phases[last].settled.extend(late);

    let broken = report(&load, &phases, &settings).await?;
    drop(stack);
    Ok(broken)
}

/// One fault's phase: the fault, its lifting, the load going on for a
/// while, the phase's row.
async fn fault_phase(
    fault: Fault,
    stack: Stack,
    load: &Arc<Load>,
    phases: &mut Vec<Phase>,
    fault_time: Duration,
) -> anyhow::Result<Stack> {
    if let Fault::SlowKeys = fault {
        stack.keys.wait_past_fetch_rate_limit().await;
    }
    phases.push(Phase::new(fault.name()));
    load.phase.store(phases.len() - 1, Ordering::SeqCst);
    let phase = phases.last_mut().expect("a phase");
    phase.started = Instant::now();
    let stack = fault
        .inject_and_lift(stack, load, phase, fault_time)
        .await?;
    let lifted = Instant::now();
    phase.lifted = Some(lifted);
    // The 503'd tokens are retried from the lifting on, while the load
    // goes on for a while (at least a few seconds: an abandoned claim is
    // taken over after 3 s).
    let begun = tokio::spawn(settle(Arc::clone(load), Some(lifted)));
    tokio::time::sleep((fault_time / 2).max(Duration::from_secs(4))).await;
    finish_phase(load, phases, Some(lifted), Some(begun)).await;
    Ok(stack)
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

/// Prints the report, with every issued token checked in the database;
/// the functions' logs are removed when nothing broke. How many
/// invariants broke.
async fn report(load: &Load, phases: &[Phase], settings: &Settings) -> anyhow::Result<usize> {
    let recorded = ledger::records(load).await?;
    let report = Report::new(load, phases, &recorded);
    report.print(settings.fault_secs, settings.workers);
    let broken = report.broken();
    if broken == 0 {
        let _ = std::fs::remove_dir_all(&settings.logs);
    } else {
        println!(
            "function logs (RUST_LOG=warn) kept in {}",
            settings.logs.display()
        );
    }
    Ok(broken)
}
