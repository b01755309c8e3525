use std::path::PathBuf;

use conversations::store;
use loadtest::function_process::FunctionProcess;
use testkit::services::PgBouncer;

use super::conversations_data::{
    BENCH_JTI, ConversationsData, conversations_data, create_sql, list_round_trips,
};
use crate::load::{pgbench, pgbench_sql, wrk};
use crate::{Bench, CONCURRENCY, JWT_SECRET, RUN_SECS};

/// An API token's header for `user`.
fn bearer(user: i64) -> String {
    format!(
        "Authorization: Bearer {}",
        testkit::tokens::api_token(JWT_SECRET, user)
    )
}

impl Bench<'_> {
    pub fn conversations(&mut self, health_p50: f64) -> anyhow::Result<()> {
        println!("== conversations against pgbench of their queries");
        let pg_url = self.pg.url();
        let data = self.rt.block_on(conversations_data(&pg_url))?;
        let conv = self.serve("conversations", &[("DATABASE_URL", &pg_url)])?;
        self.list(&conv, &data, health_p50)?;
        self.create(&conv, &data)?;
        self.note_rss("conversations", &conv);
        Ok(())
    }

    /// list: its one query (a page of conversations with their members),
    /// every value a parameter, as the function binds them (a literal
    /// user id would let PostgreSQL plan for that user once).
    /// The token's standing too (generation 0, a jti never signed out),
    /// as the function reads it in the same statement.
    fn list(
        &mut self,
        conv: &FunctionProcess,
        data: &ConversationsData,
        health_p50: f64,
    ) -> anyhow::Result<()> {
        let list_url = format!(
            "http://127.0.0.1:{}/api/v1/conversations?limit=20",
            conv.port
        );
        let list_headers = [bearer(data.lister)];
        let list_sql = pgbench_sql(
            store::LIST_SQL,
            &[":user", ":max", ":max", ":limit", "0", BENCH_JTI],
        );
        let list_reference = self.write(
            "list.sql",
            &format!(
                "\\set user {}\n\\set max 9223372036854775807\n\\set limit 21\n{list_sql};\n",
                data.lister
            ),
        )?;
        let list = |connections: u32, secs: u32| {
            wrk(
                &list_url,
                connections,
                secs,
                &list_headers,
                None,
                self.watch(Some(conv)),
            )
        };
        list(CONCURRENCY, 1)?;
        let (reference, function) = self.pair(
            || {
                pgbench(
                    &self.pg,
                    &list_reference,
                    CONCURRENCY,
                    RUN_SECS,
                    None,
                    self.watch(None),
                )
            },
            || list(CONCURRENCY, RUN_SECS),
        )?;
        // Before create's thousands of rows change what the list reads.
        let one = list(1, 2)?;
        self.throughput(
            "conversations list req/s",
            function,
            reference,
            "pgbench its query",
            0.6,
        );
        self.database_budget("conversations list", function, reference, &list_reference)?;
        let alone = self.rt.block_on(list_round_trips(&self.pg.url(), data))?;
        self.latency(
            "conversations list p50, 1 connection",
            one.p50_ms,
            health_p50,
            alone,
        );
        Ok(())
    }

    fn create(&mut self, conv: &FunctionProcess, data: &ConversationsData) -> anyhow::Result<()> {
        let create_url = format!("http://127.0.0.1:{}/api/v1/conversations", conv.port);
        let create_headers = [bearer(data.creator)];
        let create_script = self.create_script(data)?;
        let create_reference = self.write("create.sql", &create_sql(data))?;
        let (reference, function) = self.pair(
            || {
                pgbench(
                    &self.pg,
                    &create_reference,
                    CONCURRENCY,
                    RUN_SECS,
                    None,
                    self.watch(None),
                )
            },
            || {
                wrk(
                    &create_url,
                    CONCURRENCY,
                    RUN_SECS,
                    &create_headers,
                    Some((&create_script, &PathBuf::new())),
                    self.watch(Some(conv)),
                )
            },
        )?;
        self.throughput(
            "conversations create req/s",
            function,
            reference,
            "pgbench its SQL",
            0.6,
        );
        self.database_budget(
            "conversations create",
            function,
            reference,
            &create_reference,
        )?;
        Ok(())
    }

    /// What `DATABASE_POOLER=transaction` costs: the conversations list
    /// through a PgBouncer in transaction mode (unnamed statements, the
    /// timeout in a transaction of its own, one round trip) against the
    /// same function connected directly (prepared statements).
    pub fn pooled(&mut self) -> anyhow::Result<()> {
        println!("== conversations list through PgBouncer (transaction mode) against direct");
        let (pg_url, data) = self.database_with_conversations("bench_pooled")?;
        let bouncer = PgBouncer::start("127.0.0.1", self.pg.port, "postgres", CONCURRENCY);
        let pooled_url = bouncer.url_for(&pg_url);
        let direct = self.serve("conversations", &[("DATABASE_URL", &pg_url)])?;
        let pooled = self.serve(
            "conversations",
            &[
                ("DATABASE_URL", &pooled_url),
                ("DATABASE_POOLER", "transaction"),
            ],
        )?;
        let headers = [bearer(data.lister)];
        let list = |s: &FunctionProcess, connections: u32, secs: u32| {
            let url = format!("http://127.0.0.1:{}/api/v1/conversations?limit=20", s.port);
            wrk(&url, connections, secs, &headers, None, self.watch(Some(s)))
        };
        for served in [&direct, &pooled] {
            list(served, CONCURRENCY, 1)?;
        }
        let (reference, function) = self.pair(
            || list(&direct, CONCURRENCY, RUN_SECS),
            || list(&pooled, CONCURRENCY, RUN_SECS),
        )?;
        let one_direct = list(&direct, 1, 2)?;
        let one_pooled = list(&pooled, 1, 2)?;
        self.throughput(
            "conversations list req/s, pooled",
            function,
            reference,
            "the same, direct",
            0.5,
        );
        println!(
            "   one connection p50: direct {:.3} ms, through PgBouncer {:.3} ms (a hop more, and BEGIN/SET LOCAL/COMMIT around the statement)",
            one_direct.p50_ms, one_pooled.p50_ms
        );
        Ok(())
    }
}
