//! `make bench`: every function against what this machine allows, in one
//! run, as one table (figure, function, reference, ratio, target, met).
//! Throughput is compared with its ceiling or floor measured in the same run
//! at the same concurrency: `/health` with a bare axum server (`tms-ceiling`),
//! each database-bound route with pgbench running the route's own SQL. The
//! load generator shares the machine with what it loads, and so do other
//! users of a shared machine: ratios of one run, not absolute figures, are
//! what can be compared. Prints, never asserts.
//!
//! sso-login is also held to the sum of its parts (axum, its statement, its
//! Redis commands, each alone); every route's one-connection p50 is also
//! measured with a latency-injecting proxy in front of Redis and
//! PostgreSQL (`loadtest::latency_proxy`), and priced on Lambda from it
//! (`loadtest::lambda_cost`).
//!
//! It starts its own PostgreSQL and Redis on free ports (testkit) and the
//! release binaries in `BENCH_BIN_DIR` (default target/release); wrk and
//! pgbench come from the system (scripts/bench.sh installs wrk).
//!
//! The modules: `scenarios` (one per part of the table: what runs, against
//! what), `served` (a function started for a scenario), `load` (wrk and
//! pgbench runs), `processes` (the CPU each process spent during a run,
//! from /proc), `report` (the rows, the table, the CPU budgets).

#![warn(clippy::too_many_lines)]

mod load;
mod processes;
mod report;
mod scenarios;
mod served;

use std::path::PathBuf;
use std::time::Instant;

use testkit::services::{PgServer, RedisServer};

use crate::report::{Budget, Row};

const JWT_SECRET: &str = "bench-jwt-secret-0123456789abcdef0123456789";
const SSO_SECRET: &str = "bench-sso-secret-0123456789abcdef0123456789";
/// wrk's connections and pgbench's clients: FC serves this many requests at
/// once per instance, with as many database connections.
const CONCURRENCY: u32 = 32;
/// Seconds of each measured load run.
const RUN_SECS: u32 = 3;
/// Each pair (reference, function) is run this many times, alternating; the
/// best of each side is kept (noise from other processes only slows).
const ROUNDS: usize = 2;
/// Distinct users that the logins (and their pgbench reference) upsert.
const LOGIN_USERS: u32 = 1000;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let bin_dir =
        PathBuf::from(std::env::var("BENCH_BIN_DIR").unwrap_or_else(|_| "target/release".into()));
    // BENCH_WORK_DIR: kept afterwards, with the functions' logs (make
    // profile counts their requests there). Give a new or empty directory:
    // the logs are appended to.
    let kept = std::env::var_os("BENCH_WORK_DIR").map(PathBuf::from);
    let work = kept
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("tms-bench-{}", std::process::id())));
    std::fs::create_dir_all(&work)?;
    let result = Bench::new(&rt, bin_dir, work.clone()).and_then(|mut b| b.run());
    if kept.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

struct Bench<'a> {
    rt: &'a tokio::runtime::Runtime,
    bin_dir: PathBuf,
    work: PathBuf,
    pg: PgServer,
    redis: RedisServer,
    rows: Vec<Row>,
    /// The CPU budget table's runs.
    budgets: Vec<Budget>,
    peak_rss_kib: Vec<(&'static str, u64)>,
    notes: Vec<String>,
    /// Lines printed after the CPU table (the Lambda costs).
    appendix: Vec<String>,
    /// Bare axum's req/s at the load's concurrency (the /health scenario).
    ceiling_per_sec: f64,
    tokens_minted: usize,
}

impl<'a> Bench<'a> {
    fn new(
        rt: &'a tokio::runtime::Runtime,
        bin_dir: PathBuf,
        work: PathBuf,
    ) -> anyhow::Result<Self> {
        for name in xtask::functions::of_this_workspace()
            .into_iter()
            .chain(["tms-ceiling".to_owned()])
        {
            anyhow::ensure!(
                bin_dir.join(&name).exists(),
                "{} is missing: run `make bench`, which builds it",
                bin_dir.join(&name).display()
            );
        }
        let pg = PgServer::start();
        let redis = RedisServer::start();
        rt.block_on(async {
            let db = shared::db::Database::open_postgres(&pg.url(), 1)?;
            db.migrate().await?;
            db.close().await;
            anyhow::Ok(())
        })?;
        Ok(Self {
            rt,
            bin_dir,
            work,
            pg,
            redis,
            rows: Vec::new(),
            budgets: Vec::new(),
            peak_rss_kib: Vec::new(),
            notes: Vec::new(),
            appendix: Vec::new(),
            ceiling_per_sec: f64::NAN,
            tokens_minted: 0,
        })
    }

    fn run(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        report::print_machine();
        println!(
            "load: wrk, 1 thread, {CONCURRENCY} connections; pgbench, {CONCURRENCY} clients, prepared; \
             {RUN_SECS} s per run, best of {ROUNDS} alternating runs; all on this machine's loopback"
        );
        // `/health` always runs: the one-connection bounds start from its p50.
        let health_p50 = self.health()?;
        if only("login") {
            self.login(health_p50)?;
        }
        if only("conversations") {
            self.conversations(health_p50)?;
        }
        if only("pooled") {
            self.pooled()?;
        }
        if only("latency") {
            self.under_latency()?;
        }
        if only("start-up") {
            self.start_up()?;
        }
        if only("sizes") {
            self.sizes_and_memory()?;
        }
        self.print_table();
        self.print_budgets();
        for line in &self.appendix {
            println!("{line}");
        }
        for note in &self.notes {
            println!("note: {note}");
        }
        println!("bench took {:.0} s", started.elapsed().as_secs_f64());
        Ok(())
    }

    fn write(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.work.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// Whether `scenario` runs: `BENCH_ONLY` (e.g. `login,conversations`)
/// narrows a run to some scenarios, for a quick look while changing them.
fn only(scenario: &str) -> bool {
    std::env::var("BENCH_ONLY")
        .map(|list| list.split(',').any(|s| s.trim() == scenario))
        .unwrap_or(true)
}
