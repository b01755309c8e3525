//! A row per phase as it ends, and the report at the end: every phase's
//! row again, what the faults did, the totals, and each invariant with the
//! number of times it broke.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::ledger::{Ledger, Outcome};
use crate::load::{Kind, LOAD_KINDS, Load};
use crate::retries::Settled;

/// Answers slower than this are counted: the contract wants a 503 "within
/// about a second".
const SLOW: Duration = Duration::from_millis(1500);

pub const HEADER: &str = "| phase | fault s | requests | 2xx | 401 | other 4xx | 503 | other 5xx | no answer | p50 | max | > 1.5 s | 503'd tokens logged in | retries refused as held | recovery (slowest kind) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

pub struct Phase {
    pub name: &'static str,
    pub started: Instant,
    pub lifted: Option<Instant>,
    /// The sso-login instance killed, and when.
    pub killed: Option<(usize, Instant)>,
    pub settled: Vec<Settled>,
    /// What the fault did, in figures (keys evicted, marks lost).
    pub note: Option<String>,
}

impl Phase {
    pub fn new(name: &'static str) -> Self {
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

/// The figures of one phase.
pub struct PhaseFigures {
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
    pub fn of(index: usize, phase: &Phase, ledger: &Ledger) -> Self {
        let outcomes: Vec<&Outcome> = ledger
            .outcomes
            .iter()
            .filter(|o| o.phase == index)
            .collect();
        let mut latencies: Vec<Duration> =
            outcomes.iter().map(|o| o.finished - o.started).collect();
        latencies.sort();
        let at = |q: f64| {
            latencies
                .get(((latencies.len().max(1) - 1) as f64 * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        let mut figures = Self {
            requests: outcomes.len(),
            by_class: BTreeMap::new(),
            other_5xx: 0,
            bare_503: 0,
            wrong: Vec::new(),
            unanswered: Vec::new(),
            p50: at(0.5),
            max: at(1.0),
            slow: latencies.iter().filter(|l| **l > SLOW).count(),
            recovery: match phase.lifted {
                None => Vec::new(),
                Some(lifted) => LOAD_KINDS
                    .iter()
                    .map(|&kind| (kind, recovery(&outcomes, kind, lifted)))
                    .collect(),
            },
        };
        for o in &outcomes {
            figures.count(phase, o);
        }
        figures
    }

    /// One outcome in its status class, and in the invariant it breaks if any.
    fn count(&mut self, phase: &Phase, o: &Outcome) {
        let class = match o.status {
            None => "no answer",
            Some(s) if (200..300).contains(&s) => "2xx",
            Some(401) => "401",
            Some(s) if (400..500).contains(&s) => "4xx",
            Some(503) => "503",
            Some(_) => "5xx",
        };
        *self.by_class.entry(class).or_insert(0) += 1;
        match o.status {
            Some(503) if !o.retry_after => self.bare_503 += 1,
            Some(s) if s >= 500 && s != 503 => self.other_5xx += 1,
            Some(s) if !o.kind.allowed(s) => {
                self.wrong.push(format!(
                    "{}: {} answered {s} {:?} after {} ms",
                    phase.name,
                    o.kind.name(),
                    o.detail.as_deref().unwrap_or_default(),
                    (o.finished - o.started).as_millis()
                ));
            }
            None if !dropped_by_kill(phase, o) => self.unanswered.push(format!(
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

    fn slowest_recovery(&self) -> Option<(Kind, Option<Duration>)> {
        // A kind that did not recover comes first.
        self.recovery
            .iter()
            .copied()
            .max_by_key(|(_, r)| r.map_or(Duration::MAX, |d| d))
    }

    pub fn line(&self, phase: &Phase) -> String {
        let class = |c: &str| self.by_class.get(c).copied().unwrap_or(0);
        let lifted_in = phase
            .lifted
            .map_or(String::from("-"), |l| secs(l - phase.started));
        let recovery = match self.slowest_recovery() {
            None => "-".to_owned(),
            Some((kind, Some(d))) => format!("{} ({})", secs(d), kind.name()),
            Some((kind, None)) => format!("NOT RECOVERED ({})", kind.name()),
        };
        let (retried, held) = retried(&phase.settled);
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

/// A phase's 503'd tokens: how many logged in, of how many, how long the
/// slowest took; and how many retries were refused as held.
fn retried(settled: &[Settled]) -> (String, u32) {
    let logged_in: Vec<(Duration, Duration)> = settled
        .iter()
        .filter_map(|s| match s {
            Settled::LoggedIn { after, waited, .. } => Some((*waited, *after)),
            _ => None,
        })
        .collect();
    let held: u32 = settled
        .iter()
        .map(|s| match s {
            Settled::LoggedIn { held, .. } => *held,
            _ => 0,
        })
        .sum();
    let lost = settled
        .iter()
        .filter(|s| matches!(s, Settled::AnswerLost))
        .count();
    let retried = format!(
        "{} / {}{}{}",
        logged_in.len(),
        settled.len(),
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
    (retried, held)
}

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

pub struct Report {
    rows: Vec<String>,
    /// What each fault that says so did, in figures.
    notes: Vec<String>,
    checks: Vec<(String, usize)>,
    totals: String,
}

impl Report {
    pub fn new(load: &Load, phases: &[Phase], recorded: &HashMap<String, bool>) -> Self {
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
        let settled: Vec<&Settled> = phases.iter().flat_map(|p| &p.settled).collect();
        let checks = Checks {
            ledger: &ledger,
            phases,
            figures: &figures,
        };
        let issued = ledger.tokens.values().filter(|t| t.issued > 0).count();
        let totals = format!(
            "{} requests, {} GCGC tokens minted, {} issued (each checked in the database), {} retried after a 503 or no answer",
            checks.sum(|f| f.requests),
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
            checks: checks.all(recorded, &settled),
            totals,
        }
    }

    pub fn print(&self, fault_secs: u64, workers: usize) {
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

    pub fn broken(&self) -> usize {
        self.checks.iter().filter(|(_, n)| *n > 0).count()
    }
}

/// The invariants, each as (what it is, with up to five examples; how many
/// times it broke), from the whole run.
struct Checks<'a> {
    ledger: &'a Ledger,
    phases: &'a [Phase],
    figures: &'a [PhaseFigures],
}

impl Checks<'_> {
    fn all(&self, recorded: &HashMap<String, bool>, settled: &[&Settled]) -> Vec<(String, usize)> {
        let wrong: Vec<String> = self.figures.iter().flat_map(|f| f.wrong.clone()).collect();
        let unanswered: Vec<String> = self
            .figures
            .iter()
            .flat_map(|f| f.unanswered.clone())
            .collect();
        vec![
            ("5xx other than 503".into(), self.sum(|f| f.other_5xx)),
            ("503 without Retry-After".into(), self.sum(|f| f.bare_503)),
            counted("answers no request of its kind may get", &wrong),
            self.issued_twice(),
            unrecorded(recorded),
            self.not_logged_in(settled),
            counted(
                "requests without an answer (but by the killed instance)",
                &unanswered,
            ),
            self.not_recovered(),
        ]
    }

    fn sum(&self, figure: impl Fn(&PhaseFigures) -> usize) -> usize {
        self.figures.iter().map(figure).sum()
    }

    fn issued_twice(&self) -> (String, usize) {
        let jtis: Vec<String> = self
            .ledger
            .tokens
            .iter()
            .filter(|(_, t)| t.issued > 1)
            .map(|(jti, _)| jti.clone())
            .collect();
        counted("tokens issued twice", &jtis)
    }

    fn not_logged_in(&self, settled: &[&Settled]) -> (String, usize) {
        let tokens: Vec<String> = settled
            .iter()
            .filter_map(|s| match s {
                Settled::LockedOut { jti, mark } => Some(format!(
                    "jti {jti} locked out by {mark:?}: {}",
                    history(self.ledger, self.phases, jti)
                )),
                Settled::NotWithin { jti } => Some(format!(
                    "jti {jti} not within 60 s: {}",
                    history(self.ledger, self.phases, jti)
                )),
                _ => None,
            })
            .collect();
        counted("503'd tokens not logged in within 60 s", &tokens)
    }

    fn not_recovered(&self) -> (String, usize) {
        let kinds: Vec<String> = self
            .phases
            .iter()
            .zip(self.figures)
            .flat_map(|(p, f)| {
                f.recovery
                    .iter()
                    .filter(|(_, r)| r.is_none())
                    .map(move |(k, _)| format!("{}: {}", p.name, k.name()))
            })
            .collect();
        counted("kinds that did not recover", &kinds)
    }
}

fn unrecorded(recorded: &HashMap<String, bool>) -> (String, usize) {
    let jtis: Vec<String> = recorded
        .iter()
        .filter(|(_, recorded)| !**recorded)
        .map(|(jti, _)| jti.clone())
        .collect();
    counted("issued tokens without a record in the database", &jtis)
}

/// An invariant's line: what it is and up to five of the `items` that
/// broke it; and their number.
fn counted(what: &str, items: &[String]) -> (String, usize) {
    let shown: Vec<&str> = items.iter().take(5).map(String::as_str).collect();
    if shown.is_empty() {
        (what.to_owned(), 0)
    } else {
        (format!("{what} ({})", shown.join("; ")), items.len())
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
