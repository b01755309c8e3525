use std::net::SocketAddr;
use std::time::Duration;

use loadtest::function_process::FunctionProcess;
use loadtest::lambda_cost;
use loadtest::latency_proxy::{self, LatencyProxy};
use shared::metrics::{AccessEntry, Outcome};

use super::conversations_data::ConversationsData;
use super::login::{claim_p50, upsert_round_trip};
use crate::load::{LOGIN_LUA, p50};
use crate::report::{Row, Target};
use crate::{Bench, JWT_SECRET, SSO_SECRET};

/// Each route's one-connection p50 (ms).
struct RouteP50s {
    health: f64,
    login: f64,
    list: f64,
    create: f64,
}

impl Bench<'_> {
    /// One connection with a network between the functions and their
    /// stores: a proxy adding `BENCH_LATENCY_MS` (0.5 ms) each way in
    /// front of Redis and of PostgreSQL, and each function started twice,
    /// once pointed at the stores and once at the proxies. Each route's p50
    /// against /health's p50 plus its critical path's round trips.
    pub fn under_latency(&mut self) -> anyhow::Result<()> {
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
        // /health's p50 with the proxies, the route's round trips, 0.3 ms.
        let bound_of = |trips: f64| far.health + trips * rtt + 0.3;
        for (route, loopback, with_latency, trips) in [
            ("sso-login", near.login, far.login, 2.0),
            ("conversations list", near.list, far.list, 1.0),
            ("conversations create", near.create, far.create, 1.0),
        ] {
            let bound = bound_of(trips);
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
        self.login_against_its_round_trips(
            &near,
            &far,
            (redis_proxy.port, pg_proxy.port),
            bound_of(2.0),
        )?;
        self.lambda_costs(&far, each_way);
        Ok(())
    }

    /// The login's p50 against its two round trips (the claim, the record)
    /// each alone from a client, on loopback and through the proxies: what
    /// the function adds to its stores' own answers, and what of the
    /// login's bound (`bound`, ms) those parts leave to the function: none,
    /// in a run where they exceed it.
    fn login_against_its_round_trips(
        &mut self,
        near: &RouteP50s,
        far: &RouteP50s,
        proxies: (u16, u16),
        bound: f64,
    ) -> anyhow::Result<()> {
        let (near_claim, near_record) = self.rt.block_on(critical_path_p50s(
            (self.redis.port, self.pg.port),
            "bench-latency-near",
        ))?;
        let (far_claim, far_record) = self
            .rt
            .block_on(critical_path_p50s(proxies, "bench-latency-far"))?;
        let parts = |r: &RouteP50s, claim: f64, record: f64| {
            let sum = r.health + claim + record;
            format!(
                "{:.3} ms against health {:.3} + SET NX {claim:.3} + record and upsert {record:.3} = {sum:.3} ms: \
                 the function adds {:.3} ms",
                r.login,
                r.health,
                r.login - sum
            )
        };
        let far_parts = far.health + far_claim + far_record;
        let left = if far_parts <= bound {
            format!("leave {:.3} ms of it to the function", bound - far_parts)
        } else {
            "exceed it: no function could meet it in this run".to_owned()
        };
        let line = format!(
            "sso-login p50 against its two round trips, each alone from a client: with the proxies {}; \
             on loopback {} (the stores' own work, {:.3} ms, is in the bound's 0.3 ms beyond the added round trips); \
             the parts alone through the proxies, {far_parts:.3} ms against the bound's {bound:.3} ms, {left}",
            parts(far, far_claim, far_record),
            parts(near, near_claim, near_record),
            near_claim + near_record
        );
        println!("   {line}");
        self.notes.push(line);
        Ok(())
    }

    /// Each route's one-connection p50 with the functions pointed at Redis
    /// and PostgreSQL on these ports (the stores, or proxies in front).
    fn route_p50s(
        &mut self,
        stores: (u16, u16),
        data: &ConversationsData,
    ) -> anyhow::Result<RouteP50s> {
        let [health, sso, conv] = self.serve_on(stores)?;
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
        let at = |s: &FunctionProcess, path: &str| format!("http://127.0.0.1:{}{path}", s.port);
        let conversations = at(&conv, "/api/v1/conversations");
        let list = format!("{conversations}?limit=20");
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
                &list,
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

    /// health, sso-login and conversations (on the latency scenario's
    /// database) pointed at Redis and PostgreSQL on these ports.
    fn serve_on(&self, (redis, pg): (u16, u16)) -> anyhow::Result<[FunctionProcess; 3]> {
        let main_db = postgres_url(pg, "postgres");
        let conversations_db = postgres_url(pg, "bench_latency");
        let redis = redis_url(redis);
        let stores = [("DATABASE_URL", main_db.as_str()), ("REDIS_URL", &redis)];
        Ok([
            self.serve("health", &stores)?,
            self.serve(
                "sso-login",
                &[stores[0], stores[1], ("SSO_JWT_SECRET", SSO_SECRET)],
            )?,
            self.serve("conversations", &[("DATABASE_URL", &conversations_db)])?,
        ])
    }

    /// What each route costs per million invocations on Lambda (arm64), at
    /// the wall time it took with the injected latency: at 128 MB and at
    /// template.yaml's memory size for its function; and what its access
    /// line costs in CloudWatch Logs.
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
                "and its access line in CloudWatch Logs, as Lambda writes it (CloudWatch EMF included; \
                 Lambda's own START, END and REPORT lines come on top): ${:.2} per GB of 2^30 bytes ({})",
                lambda_cost::LOGS_USD_PER_GB,
                lambda_cost::LOGS_PRICE_SOURCE
            ),
            format!(
                "{:<22} | {:>9} | {:>6} | {:>10} | {:>22} | {:>20}",
                "route", "p50", "billed", "128 MB", "template.yaml's memory", "its access line"
            ),
        ];
        for (route, function, wall, request) in routes_at(far) {
            let line_cost = match access_line_bytes(function, request, wall) {
                Ok(bytes) => format!(
                    "${:.4} ({bytes} B)",
                    lambda_cost::logs_usd_per_million(bytes)
                ),
                Err(e) => format!("n/a: {e}"),
            };
            let at_template = match lambda_cost::template_memory_mb(&template, function) {
                Some(mb) => format!("${:.4} at {mb} MB", lambda_cost::usd_per_million(wall, mb)),
                None => "no MemorySize read".into(),
            };
            lines.push(format!(
                "{route:<22} | {wall:>6.3} ms | {:>3} ms | {:>10} | {at_template:>22} | {:>20}",
                lambda_cost::billed_ms(wall),
                format!("${:.4}", lambda_cost::usd_per_million(wall, 128)),
                line_cost,
            ));
        }
        self.appendix.extend(lines);
    }
}

/// A route's successful request: method, path, status, outcome.
type Request = (&'static str, &'static str, u16, Option<Outcome>);

/// Each route: its name, its function, its p50 in `far`, its request.
fn routes_at(far: &RouteP50s) -> [(&'static str, &'static str, f64, Request); 4] {
    let login = (
        "POST",
        sso_login::ROUTE,
        200,
        Some(sso_login::outcome::SUCCEEDED),
    );
    let list = (
        "GET",
        "/api/v1/conversations",
        200,
        Some(conversations::outcome::LISTED),
    );
    let create = (
        "POST",
        "/api/v1/conversations",
        201,
        Some(conversations::outcome::CREATED),
    );
    [
        (
            "/health",
            "health",
            far.health,
            ("GET", "/health", 200, None),
        ),
        ("sso-login", "sso-login", far.login, login),
        ("conversations list", "conversations", far.list, list),
        ("conversations create", "conversations", far.create, create),
    ]
}

/// The bytes of the access line that `function` writes on Lambda for
/// `request` answered in `wall` ms (the user's id as long as a real one).
fn access_line_bytes(function: &str, request: Request, wall: f64) -> anyhow::Result<usize> {
    let (method, path, status, outcome) = request;
    // As a measured latency prints: down to the nanosecond.
    let latency_ms = Duration::from_nanos((wall * 1e6).round() as u64 + 321).as_secs_f64() * 1e3;
    lambda_cost::lambda_access_line_bytes(
        function,
        &AccessEntry {
            request_id: lambda_cost::SAMPLE_REQUEST_ID,
            method,
            route: path,
            path,
            status,
            latency_ms,
            outcome,
            // Every route but /health has a user.
            user_id: outcome.map(|_| 123_456),
            cold_start: false,
        },
    )
}

/// Redis on this port of 127.0.0.1 (the store, or its proxy).
fn redis_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// A database of the PostgreSQL on this port of 127.0.0.1 (the server, or its proxy).
fn postgres_url(port: u16, database: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/{database}")
}

/// The claim's and the record's p50s (ms), each alone from one connection
/// to Redis and PostgreSQL on these ports (the stores, or their proxies).
async fn critical_path_p50s((redis, pg): (u16, u16), keys: &str) -> anyhow::Result<(f64, f64)> {
    let mut conn = redis::Client::open(redis_url(redis))?
        .get_multiplexed_async_connection()
        .await?;
    let claim = claim_p50(&mut conn, keys).await?;
    let record = upsert_round_trip(&postgres_url(pg, "postgres")).await?;
    Ok((claim, record))
}

/// p50 of a Redis PING (ms) on the store's port and on its proxy's.
async fn ping_p50s(direct: u16, proxied: u16) -> anyhow::Result<(f64, f64)> {
    let mut p50s = [0.0; 2];
    for (p, port) in p50s.iter_mut().zip([direct, proxied]) {
        let mut conn = redis::Client::open(redis_url(port))?
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
