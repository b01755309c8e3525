use loadtest::function_process::FunctionProcess;

use crate::load::wrk;
use crate::report::Budget;
use crate::{Bench, CONCURRENCY, RUN_SECS};

impl Bench<'_> {
    /// `/health` with every layer and the access log against bare axum.
    /// Returns health's one-connection p50 (ms).
    pub fn health(&mut self) -> anyhow::Result<f64> {
        println!("== /health against the bare axum ceiling");
        let ceiling = self.serve("tms-ceiling", &[])?;
        // As deployed: PostgreSQL configured (a deploy build has no embedded
        // database), connected to only when a request needs it.
        let pg_url = self.pg.url();
        let health = self.serve("health", &[("DATABASE_URL", &pg_url)])?;
        let url = |s: &FunctionProcess| format!("http://127.0.0.1:{}/health", s.port);
        let run = |s: &FunctionProcess, connections: u32, secs: u32| {
            wrk(&url(s), connections, secs, &[], None, self.watch(Some(s)))
        };
        let (reference, function) = self.pair(
            || run(&ceiling, CONCURRENCY, RUN_SECS),
            || run(&health, CONCURRENCY, RUN_SECS),
        )?;
        let one = run(&health, 1, 2)?;
        let one_ceiling = run(&ceiling, 1, 2)?;
        self.throughput("/health req/s", function, reference, "bare axum", 0.8);
        self.ceiling_per_sec = reference.per_sec;
        println!(
            "   one connection p50: health {:.3} ms, ceiling {:.3} ms",
            one.p50_ms, one_ceiling.p50_ms
        );
        self.budgets.push(Budget {
            name: "/health".into(),
            function,
            references: vec![("its reference", reference)],
        });
        self.note_rss("health", &health);
        Ok(one.p50_ms)
    }
}
