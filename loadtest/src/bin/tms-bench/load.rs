//! The load runs: wrk against a function, pgbench of a route's own SQL,
//! each with everyone's CPU counted meanwhile; the best of alternating
//! runs; the login bodies wrk sends; p50s and medians.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use loadtest::function_process::FunctionProcess;
use loadtest::timeval_duration;
use serde_json::json;
use testkit::services::PgServer;

use crate::processes::{Cpu, Watch, cpu_us_per_request, settled_children};
use crate::report::Budget;
use crate::{Bench, CONCURRENCY, LOGIN_USERS, ROUNDS, RUN_SECS, SSO_SECRET};

/// Login bodies per one-connection run (a fresh token each; more than two
/// seconds of logins at 0.13 ms).
pub const ONE_CONNECTION_TOKENS: u32 = 15_000;
/// wrk's login script: each request sends the next body of the file named
/// after `--` (a fresh token each).
pub const LOGIN_LUA: &str = "-- Each request sends the next body of the file named after `--`: a fresh token each.\n\
     local bodies, count, at = {}, 0, 0\n\
     function init(args)\n  for line in io.lines(args[1]) do count = count + 1; bodies[count] = line end\nend\n\
     function request()\n  at = at % count + 1\n  \
     return wrk.format(\"POST\", nil, {[\"Content-Type\"] = \"application/json\"}, bodies[at])\nend\n";

/// One load run: wrk against a function, or pgbench.
#[derive(Clone, Copy)]
pub struct Load {
    pub per_sec: f64,
    pub p50_ms: f64,
    pub done: u64,
    pub failed: u64,
    pub cpu: Cpu,
}

impl Bench<'_> {
    /// Runs a reference and a function load alternately, keeps the best of each.
    pub fn pair(
        &self,
        mut reference: impl FnMut() -> anyhow::Result<Load>,
        mut function: impl FnMut() -> anyhow::Result<Load>,
    ) -> anyhow::Result<(Load, Load)> {
        function()?; // warm-up
        let mut best = None;
        for _ in 0..ROUNDS {
            let r = reference()?;
            let f = function()?;
            best = Some(best_of(best, r, f));
        }
        Ok(best.expect("rounds"))
    }

    /// A database route's lines in the CPU budgets: the function, its
    /// pgbench reference as fast as pgbench goes, and the same reference
    /// run again at the function's rate (`-R`), since PostgreSQL spends
    /// more per statement below its saturation (its backends sleep and
    /// wake between statements). The paced run runs twice and keeps the one
    /// where PostgreSQL spent less per statement (as the pairs keep their
    /// best run). A note compares PostgreSQL's CPU per request in the three.
    pub fn database_budget(
        &mut self,
        name: &str,
        function: Load,
        reference: Load,
        reference_script: &Path,
    ) -> anyhow::Result<()> {
        let postgres_us = |load: &Load| cpu_us_per_request(load, load.cpu.postgres);
        let paced = cheapest_of(
            || {
                pgbench(
                    &self.pg,
                    reference_script,
                    CONCURRENCY,
                    RUN_SECS,
                    Some(function.per_sec),
                    self.watch(None),
                )
            },
            postgres_us,
        )?;
        self.notes.push(format!(
            "{name}: PostgreSQL's CPU per request {:.1} us from the function at {:.0}/s; from pgbench of the same SQL \
             at that rate {:.1} us ({:.0}/s), as fast as pgbench goes {:.1} us ({:.0}/s)",
            postgres_us(&function),
            function.per_sec,
            postgres_us(&paced),
            paced.per_sec,
            postgres_us(&reference),
            reference.per_sec,
        ));
        self.budgets.push(Budget {
            name: name.into(),
            function,
            references: vec![
                ("its reference", reference),
                ("its reference at the function's rate", paced),
            ],
        });
        Ok(())
    }

    /// wrk from one connection: a second to warm up, then two measured; the
    /// p50 (ms). `fresh_tokens`: each run gets login bodies of its own.
    pub fn one_connection(
        &mut self,
        what: &str,
        url: &str,
        headers: &[String],
        script: Option<&Path>,
        fresh_tokens: bool,
        served: &FunctionProcess,
    ) -> anyhow::Result<f64> {
        let mut last = None;
        for secs in [1, 2] {
            let arg = if fresh_tokens {
                self.tokens(ONE_CONNECTION_TOKENS)?
            } else {
                PathBuf::new()
            };
            let watch = self.watch(Some(served));
            last = Some(wrk(
                url,
                1,
                secs,
                headers,
                script.map(|s| (s, &arg)),
                watch,
            )?);
        }
        let load = last.expect("runs");
        if load.failed > 0 {
            self.notes.push(format!(
                "{what}: {} of {} answers were not 2xx",
                load.failed, load.done
            ));
        }
        Ok(load.p50_ms)
    }

    /// A file of fresh login bodies, one per line.
    pub fn tokens(&mut self, count: u32) -> anyhow::Result<PathBuf> {
        let path = self.work.join(format!("tokens-{}.txt", self.tokens_minted));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for _ in 0..count {
            let sub = format!("bench-sso-{}", self.tokens_minted as u32 % LOGIN_USERS);
            let token = testkit::tokens::sso_token(SSO_SECRET, &testkit::tokens::sso_claims(&sub));
            writeln!(out, "{}", json!({ "token": token }))?;
            self.tokens_minted += 1;
        }
        out.flush()?;
        Ok(path)
    }
}

/// Of [`ROUNDS`] runs of `run`, the one with the least `cost`: a paced
/// run's figure (other processes only ever add to a run's costs).
pub fn cheapest_of(
    mut run: impl FnMut() -> anyhow::Result<Load>,
    cost: impl Fn(&Load) -> f64,
) -> anyhow::Result<Load> {
    let mut cheapest: Option<Load> = None;
    for _ in 0..ROUNDS {
        let load = run()?;
        if cheapest.is_none_or(|c| cost(&load) < cost(&c)) {
            cheapest = Some(load);
        }
    }
    Ok(cheapest.expect("rounds"))
}

pub fn best_of(best: Option<(Load, Load)>, reference: Load, function: Load) -> (Load, Load) {
    match best {
        None => (reference, function),
        Some((r, f)) => (
            if reference.per_sec > r.per_sec {
                reference
            } else {
                r
            },
            if function.per_sec > f.per_sec {
                function
            } else {
                f
            },
        ),
    }
}

/// Runs a load generator to its end and counts everyone's CPU meanwhile.
fn measured(mut command: Command, watch: &Watch) -> anyhow::Result<(String, Cpu)> {
    let backends = settled_children(watch.postgres, usize::MAX);
    let before = watch.snapshot();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut out)?;
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)?;
    // wait4 reaps it with its own CPU usage.
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our own unreaped child; both pointers are valid.
    let reaped = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    anyhow::ensure!(reaped > 0, "wait4 failed");
    // pgbench's sessions end with it: their backends' time is counted once
    // the postmaster has reaped them (a backend between exit and reaping is
    // in neither its live children nor its children's time).
    settled_children(watch.postgres, backends);
    let after = watch.snapshot();
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{command:?} failed: {out}{err}"
    );
    let load_secs =
        (timeval_duration(usage.ru_utime) + timeval_duration(usage.ru_stime)).as_secs_f64();
    Ok((out, after.since(&before, load_secs)))
}

pub fn wrk(
    url: &str,
    connections: u32,
    secs: u32,
    headers: &[String],
    script: Option<(&Path, &PathBuf)>,
    watch: Watch,
) -> anyhow::Result<Load> {
    let mut command = Command::new("wrk");
    command
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--latency",
        ])
        .env_clear();
    for header in headers {
        command.args(["-H", header]);
    }
    if let Some((script, _)) = script {
        command.arg("-s").arg(script);
    }
    command.arg(url);
    if let Some((_, arg)) = script
        && !arg.as_os_str().is_empty()
    {
        command.arg("--").arg(arg);
    }
    let (out, cpu) = measured(command, &watch)?;
    wrk_load(&out, cpu)
}

/// wrk's report, read.
fn wrk_load(out: &str, cpu: Cpu) -> anyhow::Result<Load> {
    let number_after = |label: &str| -> Option<f64> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.trim_end_matches(',').parse().ok())
    };
    let per_sec =
        number_after("Requests/sec:").ok_or_else(|| anyhow::anyhow!("wrk said: {out}"))?;
    let done = out
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let failed = number_after("Non-2xx or 3xx responses:").unwrap_or(0.0) as u64;
    let p50_ms = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("50%"))
        .and_then(|v| duration_ms(v.trim()))
        .unwrap_or(f64::NAN);
    Ok(Load {
        per_sec,
        p50_ms,
        done,
        failed,
        cpu,
    })
}

/// wrk's durations: "812.00us", "1.23ms", "1.01s".
fn duration_ms(text: &str) -> Option<f64> {
    for (unit, scale) in [("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("m", 60e3)] {
        if let Some(v) = text.strip_suffix(unit) {
            return v.parse::<f64>().ok().map(|v| v * scale);
        }
    }
    None
}

/// pgbench of `script` from `clients` connections for `secs`: as fast as
/// it can, or at `rate` statements per second (`-R`: what PostgreSQL
/// spends per statement at a function's rate rather than at its own
/// saturation).
pub fn pgbench(
    pg: &PgServer,
    script: &Path,
    clients: u32,
    secs: u32,
    rate: Option<f64>,
    watch: Watch,
) -> anyhow::Result<Load> {
    let mut command = Command::new("pgbench");
    command
        .args(["-n", "-M", "prepared", "-j", "1"])
        .args(["-c", &clients.to_string(), "-T", &secs.to_string()])
        .args(rate.map(|r| format!("-R{:.0}", r.max(1.0))))
        .arg("-f")
        .arg(script)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
            "postgres",
        ]);
    let (out, cpu) = measured(command, &watch)?;
    let per_sec = out
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("pgbench said: {out}"))?;
    let done = out
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let failed = out
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Load {
        per_sec,
        p50_ms: f64::NAN,
        done,
        failed,
        cpu,
    })
}

/// `$N` placeholders of a query replaced by pgbench expressions (`:var`,
/// literals): the same statement, prepared by pgbench.
pub fn pgbench_sql(sql: &str, params: &[&str]) -> String {
    let mut text = sql.to_owned();
    for (i, param) in params.iter().enumerate().rev() {
        text = text.replace(&format!("${}", i + 1), param);
    }
    text
}

/// p50 of `op` over `runs` calls, in ms.
pub async fn p50(
    runs: usize,
    mut op: impl AsyncFnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs + runs / 10 {
        let started = Instant::now();
        op(i).await?;
        if i >= runs / 10 {
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

pub fn median(samples: impl Iterator<Item = anyhow::Result<f64>>) -> anyhow::Result<f64> {
    let mut v = samples.collect::<anyhow::Result<Vec<f64>>>()?;
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}
