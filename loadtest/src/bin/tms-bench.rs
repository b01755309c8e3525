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

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conversations::store;
use loadtest::latency_proxy::{self, LatencyProxy};
use loadtest::{lambda_cost, redis_load};
use serde_json::json;
use sqlx::Connection;
use testkit::free_port;
use testkit::services::{PgBouncer, PgServer, RedisServer, SecretsManager};

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
/// GCGC tokens minted per second of a login run (each is single-use).
const TOKENS_PER_SEC: u32 = 25_000;
const STARTS: usize = 10;
/// Login bodies per one-connection run (a fresh token each; more than two
/// seconds of logins at 0.13 ms).
const ONE_CONNECTION_TOKENS: u32 = 15_000;
/// The published reference for a Lambda zip and its cold start.
const MINIMAL_LAMBDA: &str = "minimal axum Lambda 0.89 MB zipped, init 18.5 ms at 512 MB arm64 \
     (fulgurion.com, 'Rust on AWS Lambda: cold start')";
/// The zip size each function must stay under, MiB.
const ZIP_LIMIT_MIB: f64 = 5.0;
/// wrk's login script: each request sends the next body of the file named
/// after `--` (a fresh token each).
const LOGIN_LUA: &str = "-- Each request sends the next body of the file named after `--`: a fresh token each.\n\
     local bodies, count, at = {}, 0, 0\n\
     function init(args)\n  for line in io.lines(args[1]) do count = count + 1; bodies[count] = line end\nend\n\
     function request()\n  at = at % count + 1\n  \
     return wrk.format(\"POST\", nil, {[\"Content-Type\"] = \"application/json\"}, bodies[at])\nend\n";

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let bin_dir =
        PathBuf::from(std::env::var("BENCH_BIN_DIR").unwrap_or_else(|_| "target/release".into()));
    let work = std::env::temp_dir().join(format!("tms-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = Bench::new(&rt, bin_dir, work.clone()).and_then(|mut b| b.run());
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// A row of the table.
struct Row {
    figure: String,
    function: String,
    reference: String,
    ratio: f64,
    target: Target,
}

#[derive(Clone, Copy)]
enum Target {
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

/// CPU time (clock ticks) of each process a load involves, over one run.
#[derive(Default, Clone, Copy)]
struct Cpu {
    function: u64,
    redis: u64,
    postgres: u64,
    load_generator: u64,
    machine_busy: u64,
}

/// One load run: wrk against a function, or pgbench.
#[derive(Clone, Copy)]
struct Load {
    per_sec: f64,
    p50_ms: f64,
    done: u64,
    failed: u64,
    cpu: Cpu,
}

struct Bench<'a> {
    rt: &'a tokio::runtime::Runtime,
    bin_dir: PathBuf,
    work: PathBuf,
    pg: PgServer,
    redis: RedisServer,
    rows: Vec<Row>,
    /// (scenario, function load, reference load) for the CPU budget table.
    budgets: Vec<(String, Load, Option<Load>)>,
    peak_rss_kib: Vec<(&'static str, u64)>,
    notes: Vec<String>,
    /// Lines printed after the CPU table (the Lambda costs).
    appendix: Vec<String>,
    /// Bare axum's req/s at the load's concurrency (the /health scenario).
    ceiling_per_sec: f64,
    tokens_minted: usize,
}

/// A function (or the ceiling) serving plain HTTP on a port of its own.
struct Served {
    child: Child,
    port: u16,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl<'a> Bench<'a> {
    fn new(
        rt: &'a tokio::runtime::Runtime,
        bin_dir: PathBuf,
        work: PathBuf,
    ) -> anyhow::Result<Self> {
        for name in tools::function_names().into_iter().chain(["tms-ceiling"]) {
            anyhow::ensure!(
                bin_dir.join(name).exists(),
                "{} is missing: run `make bench`, which builds it",
                bin_dir.join(name).display()
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
        print_machine();
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

    // ---- the scenarios ---------------------------------------------------

    /// `/health` with every layer and the access log against bare axum.
    /// Returns health's one-connection p50 (ms).
    fn health(&mut self) -> anyhow::Result<f64> {
        println!("== /health against the bare axum ceiling");
        let ceiling = self.serve("tms-ceiling", &[])?;
        // As deployed: PostgreSQL configured (a deploy build has no embedded
        // database), connected to only when a request needs it.
        let pg_url = self.pg.url();
        let health = self.serve("health", &[("DATABASE_URL", &pg_url)])?;
        let url = |s: &Served| format!("http://127.0.0.1:{}/health", s.port);
        let (reference, function) = self.pair(
            || {
                wrk(
                    &url(&ceiling),
                    CONCURRENCY,
                    RUN_SECS,
                    &[],
                    None,
                    self.watch(Some(&ceiling)),
                )
            },
            || {
                wrk(
                    &url(&health),
                    CONCURRENCY,
                    RUN_SECS,
                    &[],
                    None,
                    self.watch(Some(&health)),
                )
            },
        )?;
        let one = wrk(&url(&health), 1, 2, &[], None, self.watch(Some(&health)))?;
        let one_ceiling = wrk(&url(&ceiling), 1, 2, &[], None, self.watch(Some(&ceiling)))?;
        self.throughput("/health req/s", function, reference, "bare axum", 0.8);
        self.ceiling_per_sec = reference.per_sec;
        println!(
            "   one connection p50: health {:.3} ms, ceiling {:.3} ms",
            one.p50_ms, one_ceiling.p50_ms
        );
        self.budgets
            .push(("/health".into(), function, Some(reference)));
        self.note_rss("health", &health);
        Ok(one.p50_ms)
    }

    fn login(&mut self, health_p50: f64) -> anyhow::Result<()> {
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
        // The login's statement: the record of a fresh token and the upsert.
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
        let reference_script = self.write(
            "login.sql",
            &format!(
                "\\set n random(0, {})\n\\set k random(0, 9000000000000000000)\n\\set now 1764000000000000\n{upsert};\n",
                LOGIN_USERS - 1
            ),
        )?;
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
        // Not `pair`: each run needs tokens of its own.
        let mut best: Option<(Load, Load)> = None;
        for _ in 0..ROUNDS {
            let reference = pgbench(
                &self.pg,
                &reference_script,
                CONCURRENCY,
                RUN_SECS,
                self.watch(None),
            )?;
            let tokens = self.tokens(TOKENS_PER_SEC * RUN_SECS)?;
            let function = wrk(
                &url,
                CONCURRENCY,
                RUN_SECS,
                &[],
                Some((&script, &tokens)),
                self.watch(Some(&sso)),
            )?;
            best = Some(best_of(best, reference, function));
        }
        let (reference, function) = best.expect("rounds");
        self.login_floor(function, reference)?;
        self.budgets
            .push(("sso-login".into(), function, Some(reference)));
        self.login_cpu(function);

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
    /// request, both from this run's best load runs.
    fn login_cpu(&mut self, login: Load) {
        let Some(health) = self
            .budgets
            .iter()
            .find_map(|(name, function, _)| (name == "/health").then_some(*function))
        else {
            return;
        };
        let (per_login, per_health) = (function_cpu_us(&login), function_cpu_us(&health));
        self.rows.push(Row {
            figure: "sso-login: function CPU per login / per /health".into(),
            function: format!("{per_login:.1} us"),
            reference: format!("{per_health:.1} us (its CPU per /health request)"),
            ratio: per_login / per_health,
            target: Target::AtMost(3.0),
        });
    }

    /// What `DATABASE_POOLER=transaction` costs: the conversations list
    /// through a PgBouncer in transaction mode (unnamed statements, the
    /// timeout in a transaction of its own, one round trip) against the
    /// same function connected directly (prepared statements).
    fn pooled(&mut self) -> anyhow::Result<()> {
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
        let headers = [format!(
            "Authorization: Bearer {}",
            testkit::tokens::api_token(JWT_SECRET, data.lister)
        )];
        let url = |s: &Served| format!("http://127.0.0.1:{}/api/v1/conversations?limit=20", s.port);
        for served in [&direct, &pooled] {
            wrk(
                &url(served),
                CONCURRENCY,
                1,
                &headers,
                None,
                self.watch(Some(served)),
            )?;
        }
        let (reference, function) = self.pair(
            || {
                wrk(
                    &url(&direct),
                    CONCURRENCY,
                    RUN_SECS,
                    &headers,
                    None,
                    self.watch(Some(&direct)),
                )
            },
            || {
                wrk(
                    &url(&pooled),
                    CONCURRENCY,
                    RUN_SECS,
                    &headers,
                    None,
                    self.watch(Some(&pooled)),
                )
            },
        )?;
        self.throughput(
            "conversations list req/s, pooled",
            function,
            reference,
            "the same, direct",
            0.5,
        );
        let one_direct = wrk(
            &url(&direct),
            1,
            2,
            &headers,
            None,
            self.watch(Some(&direct)),
        )?;
        let one_pooled = wrk(
            &url(&pooled),
            1,
            2,
            &headers,
            None,
            self.watch(Some(&pooled)),
        )?;
        println!(
            "   one connection p50: direct {:.3} ms, through PgBouncer {:.3} ms (a hop more, and BEGIN/SET LOCAL/COMMIT around the statement)",
            one_direct.p50_ms, one_pooled.p50_ms
        );
        Ok(())
    }

    /// One connection with a network between the functions and their
    /// stores: a proxy adding `BENCH_LATENCY_MS` (0.5 ms) each way in
    /// front of Redis and of PostgreSQL, and each function started twice,
    /// once pointed at the stores and once at the proxies. Each route's p50
    /// against /health's p50 plus its critical path's round trips.
    fn under_latency(&mut self) -> anyhow::Result<()> {
        let delay = latency_proxy::delay_from_env(0.5)?;
        let each_way = delay.as_secs_f64() * 1000.0;
        println!(
            "== one connection, {each_way:.2} ms added each way in front of Redis and PostgreSQL"
        );
        let to = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let (redis_proxy, pg_proxy) = self.rt.block_on(async {
            anyhow::Ok((
                LatencyProxy::start(to(self.redis.port), delay).await?,
                LatencyProxy::start(to(self.pg.port), delay).await?,
            ))
        })?;
        let (direct, through) = self
            .rt
            .block_on(ping_p50s(self.redis.port, redis_proxy.port))?;
        let rtt = through - direct;
        println!(
            "   round trip the proxy adds: {rtt:.3} ms (Redis PING p50 through it {through:.3} ms, direct {direct:.3} ms)"
        );
        let (_, data) = self.database_with_conversations("bench_latency")?;
        let near = self.route_p50s((self.redis.port, self.pg.port), &data)?;
        let far = self.route_p50s((redis_proxy.port, pg_proxy.port), &data)?;
        println!(
            "   /health p50: {:.3} ms with the proxies, {:.3} ms without",
            far.health, near.health
        );
        for (route, loopback, with_latency, trips) in [
            ("sso-login", near.login, far.login, 2.0),
            ("conversations list", near.list, far.list, 1.0),
            ("conversations create", near.create, far.create, 1.0),
        ] {
            let bound = far.health + trips * rtt + 0.3;
            self.rows.push(Row {
                figure: format!("{route} p50, 1 conn., +{each_way} ms each way"),
                function: format!("{with_latency:.3} ms"),
                reference: format!(
                    "{bound:.3} ms (health {:.3} + {trips} x RTT {rtt:.3} + 0.3); loopback {loopback:.3} ms",
                    far.health
                ),
                ratio: with_latency / bound,
                target: Target::AtMost(1.0),
            });
        }
        self.lambda_costs(&far, each_way);
        Ok(())
    }

    /// Each route's one-connection p50 with the functions pointed at Redis
    /// and PostgreSQL on these ports (the stores, or proxies in front).
    fn route_p50s(
        &mut self,
        (redis, pg): (u16, u16),
        data: &ConversationsData,
    ) -> anyhow::Result<RouteP50s> {
        let main_db = format!("postgres://postgres@127.0.0.1:{pg}/postgres");
        let conversations_db = format!("postgres://postgres@127.0.0.1:{pg}/bench_latency");
        let redis = format!("redis://127.0.0.1:{redis}");
        let stores = [("DATABASE_URL", main_db.as_str()), ("REDIS_URL", &redis)];
        let health = self.serve("health", &stores)?;
        let sso = self.serve(
            "sso-login",
            &[stores[0], stores[1], ("SSO_JWT_SECRET", SSO_SECRET)],
        )?;
        let conv = self.serve("conversations", &[("DATABASE_URL", &conversations_db)])?;
        let (login_script, create_script) = (
            self.write("login.lua", LOGIN_LUA)?,
            self.create_script(data)?,
        );
        let bearer = |user| {
            format!(
                "Authorization: Bearer {}",
                testkit::tokens::api_token(JWT_SECRET, user)
            )
        };
        let at = |s: &Served, path: &str| format!("http://127.0.0.1:{}{path}", s.port);
        let conversations = at(&conv, "/api/v1/conversations");
        Ok(RouteP50s {
            health: self.one_connection(
                "/health",
                &at(&health, "/health"),
                &[],
                None,
                false,
                &health,
            )?,
            login: self.one_connection(
                "sso-login",
                &at(&sso, sso_login::ROUTE),
                &[],
                Some(&login_script),
                true,
                &sso,
            )?,
            list: self.one_connection(
                "conversations list",
                &format!("{conversations}?limit=20"),
                &[bearer(data.lister)],
                None,
                false,
                &conv,
            )?,
            create: self.one_connection(
                "conversations create",
                &conversations,
                &[bearer(data.creator)],
                Some(&create_script),
                false,
                &conv,
            )?,
        })
    }

    /// What each route costs per million invocations on Lambda (arm64), at
    /// the wall time it took with the injected latency: at 128 MB and at
    /// template.yaml's memory size for its function.
    fn lambda_costs(&mut self, far: &RouteP50s, each_way: f64) {
        let template = std::fs::read_to_string("template.yaml").unwrap_or_default();
        let mut lines = vec![
            String::new(),
            format!(
                "Lambda cost per million requests (arm64) at the one-connection p50 with {each_way} ms each way \
                 (a client's wall time: at least the invocation's), billed rounded up to 1 ms; \
                 ${} per GB-s, ${:.2} per million requests ({})",
                lambda_cost::ARM64_USD_PER_GB_SECOND,
                lambda_cost::USD_PER_MILLION_REQUESTS,
                lambda_cost::PRICE_SOURCE
            ),
            format!(
                "{:<22} | {:>9} | {:>6} | {:>10} | {:>22}",
                "route", "p50", "billed", "128 MB", "template.yaml's memory"
            ),
        ];
        for (route, function, wall) in [
            ("/health", "health", far.health),
            ("sso-login", "sso-login", far.login),
            ("conversations list", "conversations", far.list),
            ("conversations create", "conversations", far.create),
        ] {
            let at_template = match lambda_cost::template_memory_mb(&template, function) {
                Some(mb) => format!("${:.4} at {mb} MB", lambda_cost::usd_per_million(wall, mb)),
                None => "no MemorySize read".into(),
            };
            lines.push(format!(
                "{route:<22} | {wall:>6.3} ms | {:>3} ms | {:>10} | {at_template:>22}",
                lambda_cost::billed_ms(wall),
                format!("${:.4}", lambda_cost::usd_per_million(wall, 128)),
            ));
        }
        self.appendix.extend(lines);
    }

    fn conversations(&mut self, health_p50: f64) -> anyhow::Result<()> {
        println!("== conversations against pgbench of their queries");
        let pg_url = self.pg.url();
        let data = self.rt.block_on(conversations_data(&pg_url))?;
        let conv = self.serve("conversations", &[("DATABASE_URL", &pg_url)])?;
        let auth = |user| {
            format!(
                "Authorization: Bearer {}",
                testkit::tokens::api_token(JWT_SECRET, user)
            )
        };
        let list_url = format!(
            "http://127.0.0.1:{}/api/v1/conversations?limit=20",
            conv.port
        );
        let create_url = format!("http://127.0.0.1:{}/api/v1/conversations", conv.port);
        let list_headers = [auth(data.lister)];
        let create_headers = [auth(data.creator)];

        // list: its one query (a page of conversations with their members),
        // every value a parameter, as the function binds them (a literal
        // user id would let PostgreSQL plan for that user once).
        // The token's standing too (generation 0, a jti never signed out),
        // as the function reads it in the same statement.
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
        let create_script = self.create_script(&data)?;
        let create_reference = self.write("create.sql", &create_sql(&data))?;

        wrk(
            &list_url,
            CONCURRENCY,
            1,
            &list_headers,
            None,
            self.watch(Some(&conv)),
        )?;
        let (reference, function) = self.pair(
            || {
                pgbench(
                    &self.pg,
                    &list_reference,
                    CONCURRENCY,
                    RUN_SECS,
                    self.watch(None),
                )
            },
            || {
                wrk(
                    &list_url,
                    CONCURRENCY,
                    RUN_SECS,
                    &list_headers,
                    None,
                    self.watch(Some(&conv)),
                )
            },
        )?;
        self.throughput(
            "conversations list req/s",
            function,
            reference,
            "pgbench its query",
            0.6,
        );
        self.budgets
            .push(("conversations list".into(), function, Some(reference)));

        // Before create's thousands of rows change what the list reads.
        let one = wrk(
            &list_url,
            1,
            2,
            &list_headers,
            None,
            self.watch(Some(&conv)),
        )?;
        let alone = self.rt.block_on(list_round_trips(&pg_url, &data))?;
        self.latency(
            "conversations list p50, 1 connection",
            one.p50_ms,
            health_p50,
            alone,
        );

        let (reference, function) = self.pair(
            || {
                pgbench(
                    &self.pg,
                    &create_reference,
                    CONCURRENCY,
                    RUN_SECS,
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
                    self.watch(Some(&conv)),
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
        self.budgets
            .push(("conversations create".into(), function, Some(reference)));

        self.note_rss("conversations", &conv);
        Ok(())
    }

    /// Process start to first answer, in plain HTTP and under a Lambda
    /// runtime API, with and without secrets from a local Secrets Manager.
    fn start_up(&mut self) -> anyhow::Result<()> {
        println!("== start-up ({STARTS} starts each, median)");
        let secrets = SecretsManager::start();
        let arn = self
            .rt
            .block_on(secrets.create(&format!("bench-{}", std::process::id()), JWT_SECRET));
        // What the local Secrets Manager itself takes to answer (moto is a
        // Python server on the same cores): part of every start with secrets.
        let client = reqwest::Client::new();
        let read = serde_json::json!({ "SecretId": arn });
        let moto_ms = self.rt.block_on(p50(20, async |_| {
            secrets
                .call(&client, "GetSecretValue", read.clone())
                .await?;
            Ok(())
        }))?;
        println!("   moto's own GetSecretValue p50 (plain HTTP client, warm): {moto_ms:.2} ms");
        self.notes.push(format!(
            "start-up with secrets includes one GetSecretValue answer from moto, {moto_ms:.2} ms p50 alone on a warm connection"
        ));
        let mut secret_vars: Vec<(&str, String)> = secrets.aws_vars();
        secret_vars.push(("JWT_SECRET_ARN", arn));
        let pg_url = self.pg.url();
        let redis_url = self.redis.url();
        for name in tools::function_names() {
            let vars: Vec<(&str, String)> = vec![
                ("DATABASE_URL", pg_url.clone()),
                ("REDIS_URL", redis_url.clone()),
                ("SSO_JWT_SECRET", SSO_SECRET.into()),
            ];
            let mut without_secrets = f64::NAN;
            for with_secrets in [false, true] {
                if with_secrets && name != "health" {
                    continue;
                }
                let mut vars = vars.clone();
                if with_secrets {
                    vars.extend(secret_vars.iter().cloned());
                } else {
                    vars.push(("JWT_SECRET", JWT_SECRET.into()));
                }
                let suffix = if with_secrets {
                    ", secrets from Secrets Manager"
                } else {
                    ""
                };
                let http = median((0..STARTS).map(|_| self.first_http_answer(name, &vars)))?;
                let what = if name == "health" {
                    "first 200"
                } else {
                    "first answer"
                };
                let figure = format!("{name}: start to {what}, HTTP{suffix}");
                if with_secrets {
                    // The start without secrets, plus moto's own answer, plus 1 ms.
                    let bound = without_secrets + moto_ms + 1.0;
                    self.rows.push(Row {
                        figure,
                        function: format!("{http:.2} ms"),
                        reference: format!(
                            "{bound:.2} ms (without {without_secrets:.2} + moto {moto_ms:.2} + 1)"
                        ),
                        ratio: http / bound,
                        target: Target::AtMost(1.0),
                    });
                } else {
                    without_secrets = http;
                    self.limit(&figure, http, 5.0);
                }
                let lambda = median((0..STARTS).map(|_| self.first_lambda_next(name, &vars)))?;
                self.limit(
                    &format!("{name}: Lambda init to first /next{suffix}"),
                    lambda,
                    10.0,
                );
            }
        }
        Ok(())
    }

    fn sizes_and_memory(&mut self) -> anyhow::Result<()> {
        println!("== sizes (reference: {MINIMAL_LAMBDA})");
        for name in tools::function_names() {
            let binary = self.bin_dir.join(name);
            let bytes = std::fs::read(&binary)?;
            // SQLite's file header string: in a binary that links SQLite.
            let sqlite = bytes.windows(15).any(|w| w == b"SQLite format 3");
            println!(
                "   {name:>14}: binary {:.2} MiB{}",
                mib(bytes.len() as u64),
                if sqlite {
                    " (links SQLite: not a deploy build)"
                } else {
                    ""
                }
            );
            let Some((zip_bytes, what)) = self.lambda_zip(name)? else {
                continue;
            };
            self.rows.push(Row {
                figure: format!("{name}: Lambda zip ({what})"),
                function: format!("{:.2} MiB", mib(zip_bytes)),
                reference: format!("{ZIP_LIMIT_MIB:.0} MiB (minimal axum Lambda: 0.89 MB)"),
                ratio: mib(zip_bytes) / ZIP_LIMIT_MIB,
                target: Target::AtMost(1.0),
            });
            print_crates(name, &binary);
        }
        for (name, kib) in self.peak_rss_kib.clone() {
            self.rows.push(Row {
                figure: format!("{name}: peak RSS under load"),
                function: format!("{:.1} MB", kib as f64 / 1024.0),
                reference: "16 MB".into(),
                ratio: kib as f64 / 1024.0 / 16.0,
                target: Target::AtMost(1.0),
            });
        }
        Ok(())
    }

    // ---- helpers ---------------------------------------------------------

    /// A function's Lambda zip: the arm64 deploy build's (`make
    /// build-lambda`) when there is one, else this build's binary, stripped
    /// and zipped here: an approximation (x86_64 code, and this build's
    /// features). Its size and what it is.
    fn lambda_zip(&mut self, name: &str) -> anyhow::Result<Option<(u64, &'static str)>> {
        let target_dir = self.bin_dir.parent().unwrap_or(Path::new("target"));
        let built = [
            PathBuf::from(format!("dist/lambda/{name}/bootstrap.zip")),
            target_dir.join("lambda").join(name).join("bootstrap.zip"),
        ];
        if let Some((zip, meta)) = built
            .iter()
            .find_map(|zip| Some((zip, std::fs::metadata(zip).ok()?)))
        {
            println!("   {name:>14}: arm64 Lambda zip {}", zip.display());
            return Ok(Some((meta.len(), "arm64")));
        }
        let dir = self.work.join(format!("zip-{name}"));
        std::fs::create_dir_all(&dir)?;
        let bootstrap = dir.join("bootstrap");
        std::fs::copy(self.bin_dir.join(name), &bootstrap)?;
        // The release profile strips already; `strip` makes sure.
        let _ = Command::new("strip").arg(&bootstrap).status();
        let zip = dir.join("bootstrap.zip");
        let zipped = Command::new("zip")
            .args(["-q", "-j"])
            .arg(&zip)
            .arg(&bootstrap)
            .status();
        if !zipped.is_ok_and(|status| status.success()) {
            self.notes.push(format!(
                "{name}: no zip size: `zip` failed or is missing (apt-get install zip)"
            ));
            return Ok(None);
        }
        println!(
            "   {name:>14}: no arm64 Lambda zip (make build-lambda builds it): this build's binary, stripped and zipped"
        );
        Ok(Some((
            std::fs::metadata(&zip)?.len(),
            "x86_64 approximation",
        )))
    }

    /// A database of its own on the bench's PostgreSQL, migrated, with the
    /// conversations scenario's data: its URL.
    fn database_with_conversations(
        &self,
        name: &str,
    ) -> anyhow::Result<(String, ConversationsData)> {
        let url = format!("postgres://postgres@127.0.0.1:{}/{name}", self.pg.port);
        let data = self.rt.block_on(async {
            let mut admin = sqlx::PgConnection::connect(&self.pg.url()).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await?;
            let db = shared::db::Database::open_postgres(&url, 1)?;
            db.migrate().await?;
            db.close().await;
            conversations_data(&url).await
        })?;
        Ok((url, data))
    }

    /// wrk's script for conversations' create: the same body each time.
    fn create_script(&self, data: &ConversationsData) -> anyhow::Result<PathBuf> {
        let body = json!({ "title": "bench", "member_ids": data.others }).to_string();
        self.write(
            "create.lua",
            &format!(
                "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = '{body}'\n"
            ),
        )
    }

    /// wrk from one connection: a second to warm up, then two measured; the
    /// p50 (ms). `fresh_tokens`: each run gets login bodies of its own.
    fn one_connection(
        &mut self,
        what: &str,
        url: &str,
        headers: &[String],
        script: Option<&Path>,
        fresh_tokens: bool,
        served: &Served,
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

    /// Runs a reference and a function load alternately, keeps the best of each.
    fn pair(
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

    fn throughput(
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
    fn latency(&mut self, figure: &str, p50: f64, health_p50: f64, alone: (f64, String)) {
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

    fn limit(&mut self, figure: &str, ms: f64, limit_ms: f64) {
        self.rows.push(Row {
            figure: figure.into(),
            function: format!("{ms:.2} ms"),
            reference: format!("{limit_ms:.0} ms"),
            ratio: ms / limit_ms,
            target: Target::AtMost(1.0),
        });
    }

    fn note_rss(&mut self, name: &'static str, served: &Served) {
        self.peak_rss_kib
            .push((name, status_kib(served.child.id(), "VmHWM:")));
    }

    /// The processes whose CPU a load run counts.
    fn watch(&self, function: Option<&Served>) -> Watch {
        Watch {
            function: function.map(|s| s.child.id()),
            redis: self.redis.pid() as u32,
            postgres: self.pg.pid() as u32,
        }
    }

    fn serve(&self, name: &str, vars: &[(&str, &str)]) -> anyhow::Result<Served> {
        let port = free_port();
        let log = std::fs::File::create(self.work.join(format!("{name}.log")))?;
        let child = testkit::program_command(&self.bin_dir.join(name), common_vars(), Some(port))
            .env("JWT_SECRET", JWT_SECRET)
            .env("DB_POOL_SIZE", db_pool_size())
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            // The access log goes to a file, as a platform's log pipe takes it.
            .stderr(log)
            .spawn()?;
        let served = Served { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while http_status(port, "/").is_none() {
            anyhow::ensure!(Instant::now() < deadline, "{name} did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(served)
    }

    fn first_http_answer(&self, name: &str, vars: &[(&str, String)]) -> anyhow::Result<f64> {
        let port = free_port();
        let started = Instant::now();
        let mut child =
            testkit::program_command(&self.bin_dir.join(name), common_vars(), Some(port))
                .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
        let path = if name == "health" { "/health" } else { "/" };
        let result = loop {
            if let Some(status) = http_status(port, path) {
                break if name == "health" && status != 200 {
                    Err(anyhow::anyhow!("{name} answered {status}"))
                } else {
                    Ok(started.elapsed())
                };
            }
            if started.elapsed() > Duration::from_secs(10) {
                break Err(anyhow::anyhow!("{name} did not answer"));
            }
            std::thread::sleep(Duration::from_micros(100));
        };
        let _ = child.kill();
        let _ = child.wait();
        Ok(result?.as_secs_f64() * 1000.0)
    }

    /// From exec to the function's first `GET .../invocation/next` on a
    /// minimal runtime API that answers nothing.
    fn first_lambda_next(&self, name: &str, vars: &[(&str, String)]) -> anyhow::Result<f64> {
        let api = TcpListener::bind("127.0.0.1:0")?;
        let api_addr = api.local_addr()?.to_string();
        let started = Instant::now();
        let mut child = testkit::program_command(&self.bin_dir.join(name), common_vars(), None)
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .env("AWS_LAMBDA_RUNTIME_API", &api_addr)
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
            .env("AWS_REGION", "us-east-1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        api.set_nonblocking(true)?;
        let result = loop {
            match api.accept() {
                Ok((mut conn, _)) => {
                    conn.set_nonblocking(false)?;
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte)? == 1 {
                        head.push(byte[0]);
                    }
                    let elapsed = started.elapsed();
                    let head = String::from_utf8_lossy(&head);
                    break if head.starts_with("GET /2018-06-01/runtime/invocation/next") {
                        Ok(elapsed)
                    } else {
                        Err(anyhow::anyhow!(
                            "{name} asked first: {}",
                            head.lines().next().unwrap_or("")
                        ))
                    };
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if started.elapsed() > Duration::from_secs(10) {
                        break Err(anyhow::anyhow!("{name} never asked for an event"));
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err(e) => break Err(e.into()),
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        Ok(result?.as_secs_f64() * 1000.0)
    }

    /// A file of fresh login bodies, one per line.
    fn tokens(&mut self, count: u32) -> anyhow::Result<PathBuf> {
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

    fn write(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.work.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }

    // ---- output ----------------------------------------------------------

    fn print_table(&self) {
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

    fn print_budgets(&self) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        println!();
        println!(
            "CPU per request (us), from /proc utime+stime over each best run; the machine's \
             {cores:.0} cores give {:.0} us of CPU per second",
            cores * 1e6
        );
        println!(
            "{:<34} | {:>8} | {:>8} | {:>6} | {:>8} | {:>8} | {:>8} | {:>9} | {:>9}",
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
        let tick_us = 1e6 / clock_ticks_per_sec();
        let line = |name: &str, load: &Load| {
            let per = |ticks: u64| ticks as f64 * tick_us / load.done.max(1) as f64;
            let c = load.cpu;
            let ours = c.function + c.redis + c.postgres + c.load_generator;
            // Everything else the machine ran meanwhile (other users' builds).
            let others = c.machine_busy.saturating_sub(ours);
            println!(
                "{:<34} | {:>8.0} | {:>8.1} | {:>6.1} | {:>8.1} | {:>8.1} | {:>8.1} | {:>9.1} | {:>9.0}",
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
        };
        for (name, function, reference) in &self.budgets {
            line(name, function);
            if let Some(r) = reference {
                line("  its reference", r);
            }
        }
        println!(
            "('if alone': requests per second the {cores:.0} cores could serve if only these processes ran, at this CPU per request; \
             'others': CPU of other processes on the machine during the run, per request)"
        );
    }
}

fn best_of(best: Option<(Load, Load)>, reference: Load, function: Load) -> (Load, Load) {
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

/// What each crate costs: read from the same code with its symbols (`make
/// profile` builds it; the release binaries are stripped), only when that
/// build is as new as the binary measured here.
fn print_crates(name: &str, binary: &Path) {
    let with_symbols = PathBuf::from(format!("target/profiling/{name}"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let current = matches!(
        (modified(&with_symbols), modified(binary)),
        (Some(profiled), Some(measured)) if profiled >= measured
    );
    let crates = current
        .then(|| {
            Command::new("scripts/crate-sizes.py")
                .arg(&with_symbols)
                .arg("10")
                .output()
                .ok()
        })
        .flatten()
        .filter(|out| out.status.success());
    match crates {
        Some(out) => println!(
            "   {name:>14}: {} ({}, {})",
            String::from_utf8_lossy(&out.stdout)
                .trim_end()
                .replace('\n', "\n                   "),
            std::env::consts::ARCH,
            with_symbols.display()
        ),
        None => println!(
            "   {name:>14}: code by crate: run make profile after this build (it keeps the symbols)"
        ),
    }
}

/// Whether `scenario` runs: `BENCH_ONLY` (e.g. `login,conversations`)
/// narrows a run to some scenarios, for a quick look while changing them.
fn only(scenario: &str) -> bool {
    std::env::var("BENCH_ONLY")
        .map(|list| list.split(',').any(|s| s.trim() == scenario))
        .unwrap_or(true)
}

/// The functions' `DB_POOL_SIZE`: the load's concurrency unless
/// `BENCH_DB_POOL_SIZE` says otherwise (to compare pool sizes).
fn db_pool_size() -> String {
    std::env::var("BENCH_DB_POOL_SIZE").unwrap_or_else(|_| CONCURRENCY.to_string())
}

fn common_vars() -> Vec<(&'static str, String)> {
    let mut vars = vec![
        ("LISTEN_HOST", "127.0.0.1".into()),
        ("ALLOWED_HOSTS", "127.0.0.1,localhost".into()),
        ("RUST_LOG", "info".into()),
    ];
    // tokio's worker count for the functions and the ceiling alike (to
    // compare runtimes; tokio reads TOKIO_WORKER_THREADS itself).
    if let Ok(workers) = std::env::var("BENCH_TOKIO_WORKER_THREADS") {
        vars.push(("TOKIO_WORKER_THREADS", workers));
    }
    vars
}

/// `$N` placeholders of a query replaced by pgbench expressions (`:var`,
/// literals): the same statement, prepared by pgbench.
fn pgbench_sql(sql: &str, params: &[&str]) -> String {
    let mut text = sql.to_owned();
    for (i, param) in params.iter().enumerate().rev() {
        text = text.replace(&format!("${}", i + 1), param);
    }
    text
}

/// Conversations' create as the function sends it: one statement (the
/// token's standing, the members' check, the conversation and its members).
fn create_sql(data: &ConversationsData) -> String {
    let mut members: Vec<i64> = data.others.clone();
    members.push(data.creator);
    members.sort_unstable();
    let array = format!(
        "'{{{}}}'",
        members
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    // $1 creator, $2 generation, $3 jti, $4 title, $5 now, $6 members.
    let creator = data.creator.to_string();
    let mut script = String::from("\\set now 1764000000000000\n");
    script += &pgbench_sql(
        store::CREATE_SQL,
        &[&creator, "0", BENCH_JTI, "'bench'", ":now", &array],
    );
    script += ";\n";
    script
}

struct ConversationsData {
    /// A user with [`LISTER_CONVERSATIONS`] conversations of 3 members,
    /// their activity spread among everyone else's.
    lister: i64,
    /// Who creates conversations, with `others` as members.
    creator: i64,
    others: Vec<i64>,
}

/// The data the conversations routes run on: a database in use, not a few
/// rows. With a handful of rows every plan is a sequential scan, and the
/// statistics a plan is chosen by change under the bench's own writes.
const PEOPLE: i64 = 2000;
const OTHER_CONVERSATIONS: i64 = 20_000;
const LISTER_CONVERSATIONS: i64 = 100;

/// Seeds [`PEOPLE`] users in [`OTHER_CONVERSATIONS`] conversations of 3
/// members, and the lister's, then `VACUUM ANALYZE`s: the statistics and
/// visibility map a running database's autovacuum keeps, the same for the
/// reference and the function.
async fn conversations_data(pg_url: &str) -> anyhow::Result<ConversationsData> {
    let db = shared::db::Database::open_postgres(pg_url, 2)?;
    let user = async |name: &str| {
        anyhow::Ok(
            sso_login::users::upsert_user(&db, name, None, None)
                .await?
                .id,
        )
    };
    let lister = user("bench-lister").await?;
    let creator = user("bench-creator").await?;
    let others = vec![user("bench-member-1").await?, user("bench-member-2").await?];
    db.close().await;

    let mut pg = sqlx::PgConnection::connect(pg_url).await?;
    sqlx::query(
        "INSERT INTO users (external_id, created_at, updated_at) \
         SELECT 'bench-person-' || n, 0, 0 FROM generate_series(0, $1::bigint - 1) n",
    )
    .bind(PEOPLE)
    .execute(&mut pg)
    .await?;
    let first_person: i64 =
        sqlx::query_scalar("SELECT id FROM users WHERE external_id = 'bench-person-0'")
            .fetch_one(&mut pg)
            .await?;
    // Activity one second apart, the newest now; every `step`th
    // conversation is the lister's (with `others`), spread over the whole
    // history; each other one has three people.
    let all = OTHER_CONVERSATIONS + LISTER_CONVERSATIONS;
    sqlx::query(
        "INSERT INTO conversations (title, created_by, created_at, last_activity_at) \
         SELECT 'conversation ' || n, \
                CASE WHEN n % $3 = 0 THEN $2 ELSE $4 + n % $5 END, \
                $1 - n * 1000000, $1 - n * 1000000 \
         FROM generate_series(1, $6::bigint) n",
    )
    .bind(shared::clock::unix_micros())
    .bind(lister)
    .bind(all / LISTER_CONVERSATIONS)
    .bind(first_person)
    .bind(PEOPLE)
    .bind(all)
    .execute(&mut pg)
    .await?;
    sqlx::query(
        "INSERT INTO conversation_members (conversation_id, user_id, joined_at, last_activity_at) \
         SELECT c.id, CASE WHEN c.created_by = $1 THEN (ARRAY[$1, $2, $3])[k + 1] \
                           ELSE $4 + (c.created_by - $4 + k * 7) % $5 END, \
                c.created_at, c.last_activity_at \
         FROM conversations c, generate_series(0, 2) k",
    )
    .bind(lister)
    .bind(others[0])
    .bind(others[1])
    .bind(first_person)
    .bind(PEOPLE)
    .execute(&mut pg)
    .await?;
    sqlx::query("VACUUM ANALYZE").execute(&mut pg).await?;
    let mine: i64 =
        sqlx::query_scalar("SELECT count(*) FROM conversation_members WHERE user_id = $1")
            .bind(lister)
            .fetch_one(&mut pg)
            .await?;
    anyhow::ensure!(
        mine == LISTER_CONVERSATIONS,
        "the lister has {mine} conversations, not {LISTER_CONVERSATIONS}"
    );
    pg.close().await?;
    Ok(ConversationsData {
        lister,
        creator,
        others,
    })
}

/// p50 of `op` over `runs` calls, in ms.
async fn p50(
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

/// A login's own round trips, each alone from one connection: the claim
/// (`SET NX PX`), the completion (sso-login's compare-and-set script, by
/// EVALSHA), the upsert.
async fn login_round_trips(pg_url: &str, redis_url: &str) -> anyhow::Result<(f64, String)> {
    let redis = redis::Client::open(redis_url)?;
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let claim = p50(500, async |i| {
        let _: Option<String> = redis::cmd("SET")
            .arg(format!("bench-alone:{i}"))
            .arg("pending:x")
            .arg("NX")
            .arg("PX")
            .arg(60000)
            .query_async(&mut conn)
            .await?;
        Ok(())
    })
    .await?;
    let complete_script = redis::Script::new(redis_load::COMPLETE_SCRIPT);
    let complete = p50(500, async |i| {
        let _: i64 = complete_script
            .key(format!("bench-alone:{i}"))
            .arg("pending:x")
            .arg("done:x")
            .arg(redis_load::PENDING_TTL_MS)
            .arg(redis_load::PENDING_TTL_MS)
            .arg(3600)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    })
    .await?;
    let mut pg = sqlx::PgConnection::connect(pg_url).await?;
    let upsert = p50(500, async |i| {
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
    .await?;
    Ok((
        claim + complete + upsert,
        format!("SET NX {claim:.3} + EVALSHA {complete:.3} + record and upsert {upsert:.3}"),
    ))
}

/// Each route's one-connection p50 (ms).
struct RouteP50s {
    health: f64,
    login: f64,
    list: f64,
    create: f64,
}

/// p50 of a Redis PING (ms) on the store's port and on its proxy's.
async fn ping_p50s(direct: u16, proxied: u16) -> anyhow::Result<(f64, f64)> {
    let mut p50s = [0.0; 2];
    for (p, port) in p50s.iter_mut().zip([direct, proxied]) {
        let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))?
            .get_multiplexed_async_connection()
            .await?;
        *p = p50(500, async |_| {
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            Ok(())
        })
        .await?;
    }
    Ok((p50s[0], p50s[1]))
}

/// A row of [`store::LIST_SQL`]: the token's standing, then a conversation
/// (none when the page is empty).
type ListRow = (
    i32,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<Vec<i64>>,
);

/// The jti of the references' token, as a SQL literal: one that was never
/// signed out, so the standing check finds nothing, as for most requests.
const BENCH_JTI: &str = "'00000000-0000-4000-8000-000000000000'";

/// The list's own query, alone from one connection.
async fn list_round_trips(pg_url: &str, data: &ConversationsData) -> anyhow::Result<(f64, String)> {
    let mut pg = sqlx::PgConnection::connect(pg_url).await?;
    let page = p50(500, async |_| {
        let _: Vec<ListRow> = sqlx::query_as(store::LIST_SQL)
            .bind(data.lister)
            .bind(i64::MAX)
            .bind(i64::MAX)
            .bind(21_i64)
            .bind(0_i64)
            .bind(BENCH_JTI.trim_matches('\''))
            .fetch_all(&mut pg)
            .await?;
        Ok(())
    })
    .await?;
    Ok((page, format!("its query {page:.3}")))
}

// ---- load generators and CPU accounting ---------------------------------

struct Watch {
    function: Option<u32>,
    redis: u32,
    postgres: u32,
}

struct CpuSnapshot {
    function: u64,
    redis: u64,
    postgres: u64,
    machine_busy: u64,
}

impl Watch {
    fn snapshot(&self) -> CpuSnapshot {
        CpuSnapshot {
            function: self.function.map_or(0, |p| proc_ticks(p, false)),
            redis: proc_ticks(self.redis, false),
            postgres: postgres_ticks(self.postgres),
            machine_busy: machine_busy_ticks(),
        }
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
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let load_secs = tv(usage.ru_utime) + tv(usage.ru_stime);
    let cpu = Cpu {
        function: after.function.saturating_sub(before.function),
        redis: after.redis.saturating_sub(before.redis),
        postgres: after.postgres.saturating_sub(before.postgres),
        load_generator: (load_secs * clock_ticks_per_sec()).round() as u64,
        machine_busy: after.machine_busy.saturating_sub(before.machine_busy),
    };
    Ok((out, cpu))
}

fn wrk(
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

fn pgbench(
    pg: &PgServer,
    script: &Path,
    clients: u32,
    secs: u32,
    watch: Watch,
) -> anyhow::Result<Load> {
    let mut command = Command::new("pgbench");
    command
        .args(["-n", "-M", "prepared", "-j", "1"])
        .args(["-c", &clients.to_string(), "-T", &secs.to_string()])
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

/// utime + stime of a process (all its threads), with its reaped children's.
fn proc_ticks(pid: u32, with_children: bool) -> u64 {
    let Some(stat) = stat_after_command(pid) else {
        return 0;
    };
    let fields: Vec<u64> = stat
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // After the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let own = fields.get(11).unwrap_or(&0) + fields.get(12).unwrap_or(&0);
    if with_children {
        own + fields.get(13).unwrap_or(&0) + fields.get(14).unwrap_or(&0)
    } else {
        own
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_after_command(pid)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn process_state(pid: u32) -> Option<char> {
    stat_after_command(pid)?.trim_start().chars().next()
}

/// `/proc/<pid>/stat` after the command's name (which may hold spaces and
/// parentheses): the state, the parent, ... the CPU times.
fn stat_after_command(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.to_owned())
}

/// The postmaster's children once none is exiting (none a zombie) and at
/// most `at_most` are left, or after a second: their number.
fn settled_children(postmaster: u32, at_most: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let states: Vec<char> = children_of(postmaster).filter_map(process_state).collect();
        let settled = states.len() <= at_most && !states.contains(&'Z');
        if settled || Instant::now() > deadline {
            return states.len();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn children_of(parent: u32) -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(move |&pid| parent_of(pid) == Some(parent))
}

/// The postmaster and its backends: the live ones, and the ones that
/// exited (the postmaster reaps them into its children's time).
fn postgres_ticks(postmaster: u32) -> u64 {
    proc_ticks(postmaster, true)
        + children_of(postmaster)
            .map(|pid| proc_ticks(pid, false))
            .sum::<u64>()
}

/// Busy ticks of all the machine's CPUs (everything but idle and iowait).
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let total: u64 = v.iter().take(8).sum();
    total - v.get(3).unwrap_or(&0) - v.get(4).unwrap_or(&0)
}

/// The function's CPU per request of a load run, in µs.
fn function_cpu_us(load: &Load) -> f64 {
    load.cpu.function as f64 * 1e6 / clock_ticks_per_sec() / load.done.max(1) as f64
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// A GET over a fresh connection: the status, or None if nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn median(samples: impl Iterator<Item = anyhow::Result<f64>>) -> anyhow::Result<f64> {
    let mut v = samples.collect::<anyhow::Result<Vec<f64>>>()?;
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

fn print_machine() {
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
