use std::path::{Path, PathBuf};
use std::time::Duration;

use loadtest::function_process::FunctionProcess;
use loadtest::login_store_work::StoreWork;
use loadtest::{login_store_work, redis_load, statement_sharing};
use sqlx::Connection;

use crate::load::{
    LOGIN_LUA, Load, ONE_CONNECTION_TOKENS, best_of, cheapest_of, p50, pgbench, pgbench_sql, wrk,
};
use crate::processes::{
    cpu_us_per_request_of, function_cpu_us, function_system_us, settled_children,
};
use crate::report::{Row, Target};
use crate::served::db_pool_size;
use crate::{Bench, CONCURRENCY, LOGIN_USERS, ROUNDS, RUN_SECS, SSO_SECRET};

/// GCGC tokens minted per second of a login run (each is single-use).
const TOKENS_PER_SEC: u32 = 25_000;

/// Milliseconds each connection of the paced /health run waits between an
/// answer and its next request (wrk's `delay()`: whole milliseconds).
const PACE_MS: u32 = 2;

/// Connections shared by the load's senders in the sharing note: four
/// senders each.
const SHARED_CONNECTIONS: usize = CONCURRENCY as usize / 4;

impl Bench<'_> {
    pub fn login(&mut self, health_p50: f64) -> anyhow::Result<()> {
        println!("== sso-login against pgbench of its statement (the record and the upsert)");
        let (pg_url, redis_url) = (self.pg.url(), self.redis.url());
        let sso = self.serve(
            "sso-login",
            &[
                ("DATABASE_URL", &pg_url),
                ("REDIS_URL", &redis_url),
                ("SSO_JWT_SECRET", SSO_SECRET),
            ],
        )?;
        let url = format!("http://127.0.0.1:{}{}", sso.port, sso_login::ROUTE);
        let script = self.write("login.lua", LOGIN_LUA)?;
        // Warm-up: the pool's connections open, the statements are prepared.
        let warm = self.tokens(TOKENS_PER_SEC)?;
        wrk(
            &url,
            CONCURRENCY,
            1,
            &[],
            Some((&script, &warm)),
            self.watch(Some(&sso)),
        )?;
        let reference_script = self.login_reference_script()?;
        let (reference, function) = self.login_rounds(&url, &script, &reference_script, &sso)?;
        self.login_floor(function, reference)?;
        self.database_budget("sso-login", function, reference, &reference_script)?;
        self.login_cpu(function)?;
        self.login_statement_sharing(function)?;

        let tokens = self.tokens(ONE_CONNECTION_TOKENS)?;
        let one = wrk(
            &url,
            1,
            2,
            &[],
            Some((&script, &tokens)),
            self.watch(Some(&sso)),
        )?;
        let alone = self.rt.block_on(login_round_trips(&pg_url, &redis_url))?;
        self.latency("sso-login p50, 1 connection", one.p50_ms, health_p50, alone);
        self.note_rss("sso-login", &sso);
        Ok(())
    }

    /// pgbench's script of the login's statement: the record of a fresh
    /// token and the upsert.
    fn login_reference_script(&self) -> anyhow::Result<PathBuf> {
        let upsert = pgbench_sql(
            sso_login::users::LOGIN_SQL,
            &[
                "'bench-sso-' || :n",
                "'bench-sso-' || :n || '@example.com'",
                "'Test User'",
                ":now",
                "'bench-' || :client_id || '-' || :k", // no colon: pgbench would read one as a variable
                "'attempt'",
                "extract(epoch FROM now())::bigint + 3600", // the token's exp: a fresh token's
                "9000000000000000000",
            ],
        );
        self.write(
            "login.sql",
            &format!(
                "\\set n random(0, {})\n\\set k random(0, 9000000000000000000)\n\\set now 1764000000000000\n{upsert};\n",
                LOGIN_USERS - 1
            ),
        )
    }

    /// pgbench of the login's statement and the logins, alternately: the
    /// best of each. Not `pair`: each run needs tokens of its own.
    fn login_rounds(
        &mut self,
        url: &str,
        script: &Path,
        reference_script: &Path,
        sso: &FunctionProcess,
    ) -> anyhow::Result<(Load, Load)> {
        let mut best: Option<(Load, Load)> = None;
        for _ in 0..ROUNDS {
            let reference = pgbench(
                &self.pg,
                reference_script,
                CONCURRENCY,
                RUN_SECS,
                None,
                self.watch(None),
            )?;
            let tokens = self.tokens(TOKENS_PER_SEC * RUN_SECS)?;
            let function = wrk(
                url,
                CONCURRENCY,
                RUN_SECS,
                &[],
                Some((script, &tokens)),
                self.watch(Some(sso)),
            )?;
            best = Some(best_of(best, reference, function));
        }
        Ok(best.expect("rounds"))
    }

    /// sso-login's throughput against the sum of its parts, each alone at
    /// the load's concurrency in this run: bare axum (the /health
    /// scenario's ceiling), pgbench of its statement, and each of its Redis
    /// commands (a Rust client, one connection per client). A login's time
    /// on the machine is at least the sum of its parts' times.
    fn login_floor(&mut self, function: Load, upsert: Load) -> anyhow::Result<()> {
        let axum = self.ceiling_per_sec;
        // A Redis database of its own, emptied after.
        let url = format!("{}/1", self.redis.url());
        let run = Duration::from_secs(RUN_SECS.into());
        let (claim, complete, wrapped) = self.rt.block_on(async {
            let clients = CONCURRENCY as usize;
            let claims = redis_load::claims(&url, "bench-floor", clients, run).await?;
            let (completions, wrapped) =
                redis_load::completions(&url, "bench-floor", &claims, run).await?;
            let mut conn = redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?;
            let () = redis::cmd("FLUSHDB").query_async(&mut conn).await?;
            anyhow::Ok((claims.per_sec, completions.per_sec, wrapped))
        })?;
        if wrapped {
            self.notes.push(
                "the completions' run outran the claims' keys: some completions took the script's shorter path"
                    .into(),
            );
        }
        let floor_of = |redis_secs: f64| 1.0 / (1.0 / axum + 1.0 / upsert.per_sec + redis_secs);
        // k = 2: the claim and the completion, each at its own rate.
        let floor = floor_of(1.0 / claim + 1.0 / complete);
        let minimal = floor_of(1.0 / claim);
        println!(
            "   alone at {CONCURRENCY} connections: bare axum {axum:.0}/s, pgbench login statement {:.0}/s, \
             SET NX PX {claim:.0}/s, EVALSHA complete {complete:.0}/s",
            upsert.per_sec
        );
        println!(
            "   sso-login {:.0}/s: {:.2} of pgbench of its statement alone; {:.2} of the minimal login's floor \
             (one HTTP request, one Redis command, one upsert: {minimal:.0}/s)",
            function.per_sec,
            function.per_sec / upsert.per_sec,
            function.per_sec / minimal
        );
        let reference = Load {
            per_sec: floor,
            ..upsert
        };
        self.throughput(
            "sso-login req/s",
            function,
            reference,
            "its parts: axum, upsert, SET NX, EVALSHA",
            0.85,
        );
        Ok(())
    }

    /// The function's own CPU per login against its CPU per /health
    /// request, both from this run's best load runs; then what of it the
    /// login's store work alone takes (a note).
    fn login_cpu(&mut self, login: Load) -> anyhow::Result<()> {
        let Some(health) = self
            .budgets
            .iter()
            .find_map(|b| (b.name == "/health").then_some(b.function))
        else {
            return Ok(());
        };
        let (per_login, per_health) = (function_cpu_us(&login), function_cpu_us(&health));
        self.rows.push(Row {
            figure: "sso-login: function CPU per login / per /health".into(),
            function: format!("{per_login:.1} us"),
            reference: format!("{per_health:.1} us (its CPU per /health request)"),
            ratio: per_login / per_health,
            target: Target::AtMost(3.0),
        });
        let redis_url = format!("{}/2", self.redis.url());
        let pg_url = self.pg.url();
        let store_work = |complete: bool| {
            login_store_work::Run {
                pg_url: &pg_url,
                redis_url: &redis_url,
                key_prefix: "bench-store:",
                clients: CONCURRENCY,
                pool_size: db_pool_size().parse()?,
                users: LOGIN_USERS,
                run: Duration::from_secs(RUN_SECS.into()),
                complete,
            }
            .measure()
        };
        let stores = store_work(true)?;
        let without_completion = store_work(false)?;
        // A Redis database of its own, emptied after (as the floor's).
        let mut redis = redis::Client::open(redis_url.as_str())?.get_connection()?;
        let () = redis::cmd("FLUSHDB").query(&mut redis)?;
        let floor = stores.cpu_us_per_login + per_health;
        self.notes.push(format!(
            "sso-login's CPU per login, {per_login:.1} us: its store work alone {:.1} us ({} logins' claim, \
             record and completion by its own code, {CONCURRENCY} at a time on one thread, no HTTP, no tokens; \
             {:.1} us without the completion) + /health's {per_health:.1} us (an HTTP exchange) = {floor:.1} us, \
             {:.2} x /health besides verifying and signing tokens; the rest, {:.1} us, is the tokens, the JSON \
             and the login's task (from unrounded figures)",
            stores.cpu_us_per_login,
            stores.logins,
            without_completion.cpu_us_per_login,
            floor / per_health,
            per_login - floor,
        ));
        self.login_cpu_user_and_kernel(&login, &health, &stores);
        self.health_at_the_logins_rate(&login)?;
        Ok(())
    }

    /// The login's CPU and /health's apart, user space and kernel (a note),
    /// and an estimate of what a login spends before its tokens: its kernel
    /// part, /health's user space (an HTTP exchange) and the store work's
    /// (its stores' clients; `stores`, the login's store work alone).
    fn login_cpu_user_and_kernel(&mut self, login: &Load, health: &Load, stores: &StoreWork) {
        let (per_login, per_health) = (function_cpu_us(login), function_cpu_us(health));
        let (login_system, health_system) = (function_system_us(login), function_system_us(health));
        let (login_user, health_user) = (per_login - login_system, per_health - health_system);
        let stores_user = stores.cpu_us_per_login - stores.system_us_per_login;
        // An estimate, not a bound: the store work's user space has its
        // loop's own bits, and a wake-up's user space is in both parts.
        let before_tokens = login_system + health_user + stores_user;
        self.notes.push(format!(
            "sso-login's CPU apart, user space and kernel (stime: system calls and wake-ups; Linux splits \
             a process's CPU by its ticks): a login {per_login:.1} us, {login_system:.1} of it the kernel's \
             ({:.0} %, {:.2} x /health's whole CPU), {login_user:.1} in user space; a /health request \
             {per_health:.1} us, {health_system:.1} of it the kernel's ({:.0} %), {health_user:.1} in user \
             space; the store work alone {:.1} us, {:.1} of it the kernel's, {stores_user:.1} in user space. \
             The login's kernel part + /health's user space (its HTTP exchange) + the store work's user \
             space (its clients) = {before_tokens:.1} us, about {:.2} x /health before its tokens; the rest, \
             {:.1} us, is the tokens, the JSON and the login's task",
            100.0 * login_system / per_login,
            login_system / per_health,
            100.0 * health_system / per_health,
            stores.cpu_us_per_login,
            stores.system_us_per_login,
            before_tokens / per_health,
            per_login - before_tokens,
        ));
    }

    /// /health at the login's rate rather than as fast as it goes (a note):
    /// an HTTP exchange's CPU per request depends on the rate, since below
    /// saturation each request wakes the function's thread rather than
    /// finding it awake (as pgbench's paced runs show for PostgreSQL). wrk
    /// has no rate option: its connections each wait [`PACE_MS`] between an
    /// answer and the next request, as many as two short runs show give
    /// about the login's rate. Of [`ROUNDS`] runs, the one where the
    /// function spent the least per request (as the paced pgbench's).
    fn health_at_the_logins_rate(&mut self, login: &Load) -> anyhow::Result<()> {
        let pg_url = self.pg.url();
        let health = self.serve("health", &[("DATABASE_URL", &pg_url)])?;
        let script = self.write(
            "paced.lua",
            &format!("function delay()\n  return {PACE_MS}\nend\n"),
        )?;
        let url = format!("http://127.0.0.1:{}/health", health.port);
        let no_arg = PathBuf::new();
        let run = |connections: u32, secs: u32| {
            wrk(
                &url,
                connections,
                secs,
                &[],
                Some((&script, &no_arg)),
                self.watch(Some(&health)),
            )
        };
        // wrk's timers are late by a fraction of a millisecond and a
        // connection keeps less than one request per PACE_MS: two short
        // runs find its rate (the first also warms the function up).
        let mut connections = paced_connections(login.per_sec, 1000.0 / f64::from(PACE_MS));
        for _ in 0..2 {
            let per_connection = run(connections, 1)?.per_sec / f64::from(connections);
            anyhow::ensure!(
                per_connection > 0.0,
                "the paced /health run answered nothing"
            );
            connections = paced_connections(login.per_sec, per_connection);
        }
        let paced = cheapest_of(|| run(connections, RUN_SECS), function_cpu_us)?;
        if paced.failed > 0 {
            self.notes.push(format!(
                "/health at the login's rate: {} of {} answers were not 2xx",
                paced.failed, paced.done
            ));
        }
        let (per_login, per_health) = (function_cpu_us(login), function_cpu_us(&paced));
        self.notes.push(format!(
            "/health at about the login's rate ({connections} connections, each waiting {PACE_MS} ms between an \
             answer and its next request): {:.0}/s ({:.2} of the login's rate), the function's CPU \
             {per_health:.1} us per request, {:.1} of it the kernel's; a login ({:.0}/s) {per_login:.1} us, \
             {:.2} x that",
            paced.per_sec,
            paced.per_sec / login.per_sec,
            function_system_us(&paced),
            login.per_sec,
            per_login / per_health,
        ));
        Ok(())
    }

    /// The login's statement alone from the load's senders on one thread,
    /// at the login's rate and as fast as they go: over the function's
    /// `DB_POOL_SIZE` connections (a connection per sender by default, as
    /// the pool), over [`SHARED_CONNECTIONS`] with as many senders (fewer
    /// backends, none shared), and over as many shared by all the senders
    /// (pipelined): PostgreSQL's CPU per statement and the senders' (a note:
    /// what sharing the pool's connections would change). One run each.
    fn login_statement_sharing(&mut self, login: Load) -> anyhow::Result<()> {
        let pg_url = self.pg.url();
        let watch = self.watch(None);
        let senders = CONCURRENCY as usize;
        let shapes = [
            (db_pool_size().parse::<usize>()?, senders),
            (SHARED_CONNECTIONS, SHARED_CONNECTIONS),
            (SHARED_CONNECTIONS, senders),
        ];
        let mut halves = Vec::new();
        for (rate, label) in [
            (Some(login.per_sec), "at the login's rate"),
            (None, "as fast as they go"),
        ] {
            let mut runs = Vec::new();
            for (connections, senders) in shapes {
                let (sent, before, after) = statement_sharing::Run {
                    pg_url: &pg_url,
                    connections,
                    senders,
                    rate,
                    users: LOGIN_USERS,
                    run: Duration::from_secs(RUN_SECS.into()),
                }
                .measure(|| {
                    // A backend exiting from the run before is counted nowhere
                    // until reaped: wait for it.
                    settled_children(watch.postgres, usize::MAX);
                    watch.snapshot()
                })?;
                runs.push(format!(
                    "{connections} connections, {senders} senders: {:.0}/s, PostgreSQL {:.1} us, the senders {:.1} us",
                    sent.per_sec,
                    cpu_us_per_request_of(sent.statements, after.since(&before, 0.0).postgres),
                    sent.cpu_us_per_statement,
                ));
            }
            halves.push(format!("{label}, {}", runs.join("; ")));
        }
        self.notes.push(format!(
            "sso-login's statement alone on one thread, CPU per statement (more senders than connections: \
             each connection shared, its statements pipelined): {}",
            halves.join("; ")
        ));
        Ok(())
    }
}

/// A login's own round trips, each alone from one connection: the claim
/// (`SET NX PX`), the completion (sso-login's compare-and-set script, by
/// EVALSHA), the upsert.
async fn login_round_trips(pg_url: &str, redis_url: &str) -> anyhow::Result<(f64, String)> {
    let (claim, complete) = redis_round_trips(redis_url).await?;
    let upsert = upsert_round_trip(pg_url).await?;
    Ok((
        claim + complete + upsert,
        format!("SET NX {claim:.3} + EVALSHA {complete:.3} + record and upsert {upsert:.3}"),
    ))
}

/// The claim's and the completion's p50s (ms).
async fn redis_round_trips(redis_url: &str) -> anyhow::Result<(f64, f64)> {
    let redis = redis::Client::open(redis_url)?;
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let claim = claim_p50(&mut conn, "bench-alone").await?;
    let complete_script = redis::Script::new(redis_load::COMPLETE_SCRIPT);
    let complete = p50(500, async |i| {
        let _: i64 = redis_load::completion(&complete_script, format!("bench-alone:{i}"))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    })
    .await?;
    Ok((claim, complete))
}

/// The claim's p50 (ms): a login's `SET NX PX`, on fresh keys
/// `{prefix}:0`, `{prefix}:1`, ...
pub(super) async fn claim_p50(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> anyhow::Result<f64> {
    p50(500, async |i| {
        let _: Option<String> = redis_load::claim(format!("{prefix}:{i}"))
            .query_async(conn)
            .await?;
        Ok(())
    })
    .await
}

/// The record of a fresh token and the upsert, its p50 (ms).
pub(super) async fn upsert_round_trip(pg_url: &str) -> anyhow::Result<f64> {
    let mut pg = sqlx::PgConnection::connect(pg_url).await?;
    p50(500, async |i| {
        let sub = format!("bench-sso-{}", i as u32 % LOGIN_USERS);
        sqlx::query(sso_login::users::LOGIN_SQL)
            .bind(&sub)
            .bind(format!("{sub}@example.com"))
            .bind("Test User")
            .bind(1_764_000_000_000_000_i64)
            .bind(format!(
                "sso:jti:bench-alone-{}",
                uuid::Uuid::new_v4().simple()
            ))
            .bind("attempt")
            .bind(shared::clock::unix_secs() as i64 + 3600)
            .bind(i64::MAX)
            .fetch_one(&mut pg)
            .await?;
        Ok(())
    })
    .await
}

/// The paced /health run's connections for `per_sec` when each connection
/// sends `per_connection` requests a second.
fn paced_connections(per_sec: f64, per_connection: f64) -> u32 {
    ((per_sec / per_connection).round() as u32).clamp(1, 1000)
}

#[cfg(test)]
mod tests {
    use super::paced_connections;

    #[test]
    fn paced_connections_give_about_the_rate_asked() {
        // 17,000/s at 370 a second each: 46 connections (45.9).
        assert_eq!(paced_connections(17_000.0, 370.0), 46);
        // Never none, and never past wrk's sensible count.
        assert_eq!(paced_connections(10.0, 500.0), 1);
        assert_eq!(paced_connections(1e9, 1.0), 1000);
    }
}
