//! The table: its rows (a figure, the function's value, the reference's,
//! their ratio, the target), the CPU budgets after it, and the machine's
//! description before the run.

use loadtest::function_process::FunctionProcess;

use crate::Bench;
use crate::load::Load;
use crate::processes::{cpu_us_per_request, status_kib};

/// A run's line in the CPU budgets, with its references' lines under it.
pub struct Budget {
    pub name: String,
    pub function: Load,
    /// (what it is, its load).
    pub references: Vec<(&'static str, Load)>,
}

/// A row of the table.
pub struct Row {
    pub figure: String,
    pub function: String,
    pub reference: String,
    pub ratio: f64,
    pub target: Target,
}

#[derive(Clone, Copy)]
pub enum Target {
    /// function / reference at least this.
    AtLeast(f64),
    /// function / reference at most this.
    AtMost(f64),
}

impl Target {
    fn met(self, ratio: f64) -> bool {
        match self {
            Target::AtLeast(t) => ratio >= t,
            Target::AtMost(t) => ratio <= t,
        }
    }
    fn text(self) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {t:.2}"),
            Target::AtMost(t) => format!("<= {t:.2}"),
        }
    }
}

impl Bench<'_> {
    pub fn throughput(
        &mut self,
        figure: &str,
        function: Load,
        reference: Load,
        what: &str,
        target: f64,
    ) {
        if function.failed > 0 {
            self.notes.push(format!(
                "{figure}: {} of {} answers were not 2xx",
                function.failed, function.done
            ));
        }
        self.rows.push(Row {
            figure: figure.into(),
            function: format!("{:.0}", function.per_sec),
            reference: format!("{:.0} ({what})", reference.per_sec),
            ratio: function.per_sec / reference.per_sec,
            target: Target::AtLeast(target),
        });
    }

    /// One-connection p50 against /health's p50 plus twice the route's own
    /// Redis and PostgreSQL round trips, each measured alone.
    pub fn latency(&mut self, figure: &str, p50: f64, health_p50: f64, alone: (f64, String)) {
        let bound = health_p50 + 2.0 * alone.0;
        self.rows.push(Row {
            figure: figure.into(),
            function: format!("{p50:.3} ms"),
            reference: format!(
                "{bound:.3} ms (health {health_p50:.3} + 2 x {:.3}: {})",
                alone.0, alone.1
            ),
            ratio: p50 / bound,
            target: Target::AtMost(1.0),
        });
    }

    pub fn limit(&mut self, figure: &str, ms: f64, limit_ms: f64) {
        self.rows.push(Row {
            figure: figure.into(),
            function: format!("{ms:.2} ms"),
            reference: format!("{limit_ms:.0} ms"),
            ratio: ms / limit_ms,
            target: Target::AtMost(1.0),
        });
    }

    pub fn note_rss(&mut self, name: &'static str, served: &FunctionProcess) {
        self.peak_rss_kib
            .push((name, status_kib(served.pid(), "VmHWM:")));
    }

    pub fn print_table(&self) {
        println!();
        println!(
            "{:<58} | {:>14} | {:<56} | {:>6} | {:>7} | met",
            "figure", "function", "reference", "ratio", "target"
        );
        println!("{}", "-".repeat(160));
        for row in &self.rows {
            println!(
                "{:<58} | {:>14} | {:<56} | {:>6.2} | {:>7} | {}",
                row.figure,
                row.function,
                row.reference,
                row.ratio,
                row.target.text(),
                if row.target.met(row.ratio) {
                    "yes"
                } else {
                    "NO"
                }
            );
        }
    }

    pub fn print_budgets(&self) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        println!();
        println!(
            "CPU per request (us), from /proc utime+stime over each best run (at the function's rate: \
             PostgreSQL's cheapest); the machine's {cores:.0} cores give {:.0} us of CPU per second",
            cores * 1e6
        );
        println!(
            "{:<40} | {:>8} | {:>8} | {:>6} | {:>8} | {:>8} | {:>8} | {:>9} | {:>9}",
            "run",
            "req/s",
            "function",
            "redis",
            "postgres",
            "load gen",
            "ours",
            "others",
            "if alone"
        );
        for budget in &self.budgets {
            print_budget(&budget.name, &budget.function, cores);
            for (what, load) in &budget.references {
                print_budget(&format!("  {what}"), load, cores);
            }
        }
        println!(
            "('if alone': requests per second the {cores:.0} cores could serve if only these processes ran, at this CPU per request; \
             'others': CPU of other processes on the machine during the run, per request)"
        );
    }
}

/// A line of the CPU budgets: each process's CPU per request of `load`.
fn print_budget(name: &str, load: &Load, cores: f64) {
    let per = |ticks: u64| cpu_us_per_request(load, ticks);
    let c = load.cpu;
    let ours = c.function + c.redis + c.postgres + c.load_generator;
    // Everything else the machine ran meanwhile (other users' builds).
    let others = c.machine_busy.saturating_sub(ours);
    println!(
        "{:<40} | {:>8.0} | {:>8.1} | {:>6.1} | {:>8.1} | {:>8.1} | {:>8.1} | {:>9.1} | {:>9.0}",
        name,
        load.per_sec,
        per(c.function),
        per(c.redis),
        per(c.postgres),
        per(c.load_generator),
        per(ours),
        per(others),
        cores * 1e6 / per(ours).max(0.001),
    );
}

pub fn print_machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "machine: {model}, {cores} cores, Linux {}; load average at start {}",
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
