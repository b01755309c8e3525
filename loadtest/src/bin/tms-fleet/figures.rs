//! What a mode's run saw, the rules it is held to, and the table.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::load::Seen;
use crate::{HANG, Mode};

#[derive(Default)]
pub struct Figures {
    mode: &'static str,
    cold_starts: Vec<Duration>,
    pub jwks_fetches: usize,
    pub sso_instances_used: usize,
    latencies: Vec<Duration>,
    statuses: BTreeMap<u16, usize>,
    hangs: usize,
    unavailable_latencies: Vec<Duration>,
    unavailable_without_retry_after: usize,
    pub peak_server_sessions: i64,
}

impl Figures {
    pub fn new(mode: Mode, cold_starts: Vec<Duration>) -> Self {
        Self {
            mode: mode.name(),
            cold_starts,
            ..Self::default()
        }
    }

    /// What one client saw.
    pub fn add(&mut self, seen: Seen) {
        self.hangs += seen.hangs;
        for (status, latency, retry_after) in seen.answers {
            *self.statuses.entry(status).or_default() += 1;
            self.latencies.push(latency);
            if status == 503 {
                self.unavailable_latencies.push(latency);
                if !retry_after {
                    self.unavailable_without_retry_after += 1;
                }
            }
        }
    }

    fn count(&self, pick: impl Fn(u16) -> bool) -> usize {
        self.statuses
            .iter()
            .filter(|(s, _)| pick(**s))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn broken_rules(&self, mode: Mode, instances: usize) -> Vec<String> {
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

pub fn print_table(rows: &[Figures]) {
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
