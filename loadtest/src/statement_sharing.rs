//! What sharing PostgreSQL connections would change, for `make bench`'s
//! notes: sso-login's statement (`LOGIN_SQL`, a fresh token's record and
//! the upsert) sent by many senders at once on one thread, over as many
//! connections as senders (as the function's pool does today: a
//! connection per operation) or over fewer, each shared by several
//! senders, whose statements then wait in its socket one behind another
//! (tokio-postgres pipelines the requests of a shared client). As fast as
//! they go, or paced to a rate. The caller's `snapshot` (PostgreSQL's CPU,
//! say) is taken once the connections are open and again at the end; the
//! run measures its own thread's CPU.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

use crate::{bench_user, thread_cpu};

/// What a run did.
pub struct StatementsSent {
    /// PostgreSQL backends the run had open (its connections, counted by
    /// the server).
    pub backends: u64,
    pub statements: u64,
    pub per_sec: f64,
    /// The senders' thread's CPU (user and system) per statement, µs.
    pub cpu_us_per_statement: f64,
}

/// `senders` statements at a time over `connections` connections for
/// `run`, each for one of `users` users, at most `rate` a second.
pub struct Run<'a> {
    pub pg_url: &'a str,
    pub connections: usize,
    pub senders: usize,
    /// Statements per second over all senders; `None`: as fast as they go.
    pub rate: Option<f64>,
    pub users: u32,
    pub run: Duration,
}

const LOGIN_TYPES: [Type; 8] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
];

impl Run<'_> {
    /// Runs on a thread of its own, on the functions' runtime: what it did,
    /// with `snapshot` taken after the connections opened (their start-up is
    /// not the statements' cost) and after the last statement.
    pub fn measure<S: Send>(
        &self,
        snapshot: impl Fn() -> S + Sync,
    ) -> anyhow::Result<(StatementsSent, S, S)> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| shared::runtime::function_runtime()?.block_on(self.statements(&snapshot)))
                .join()
                .map_err(|_| anyhow::anyhow!("the senders' thread panicked"))?
        })
    }

    async fn statements<S>(
        &self,
        snapshot: impl Fn() -> S,
    ) -> anyhow::Result<(StatementsSent, S, S)> {
        anyhow::ensure!(
            self.connections > 0 && self.senders > 0,
            "no connection or no sender"
        );
        let application_name = format!("bench-sharing-{}", uuid::Uuid::new_v4().simple());
        let mut clients = Vec::with_capacity(self.connections);
        for _ in 0..self.connections {
            clients.push(Arc::new(connect(self.pg_url, &application_name).await?));
        }
        let backends: i64 = clients[0]
            .0
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&application_name],
            )
            .await?
            .get(0);
        let pacer = self.rate.map(pacer);
        let before = snapshot();
        let (cpu_before, started) = (thread_cpu()?, Instant::now());
        let until = started + self.run;
        let mut senders = JoinSet::new();
        for sender in 0..self.senders {
            let client = clients[sender % clients.len()].clone();
            let (pacer, users) = (pacer.clone(), self.users);
            senders.spawn(async move {
                let mut sent = 0u64;
                while Instant::now() < until {
                    if let Some(pacer) = &pacer {
                        pacer.acquire().await?.forget();
                    }
                    record(&client, sender, sent, users).await?;
                    sent += 1;
                }
                anyhow::Ok(sent)
            });
        }
        let mut statements = 0;
        while let Some(sent) = senders.join_next().await {
            statements += sent??;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = thread_cpu()? - cpu_before;
        let after = snapshot();
        let sharing = StatementsSent {
            backends: backends as u64,
            statements,
            per_sec: statements as f64 / elapsed,
            cpu_us_per_statement: cpu.as_secs_f64() * 1e6 / statements.max(1) as f64,
        };
        Ok((sharing, before, after))
    }
}

/// A connection with `LOGIN_SQL` prepared, its driver spawned, named
/// `application_name` (so that the server can count the run's backends).
/// Not the function's pool: a pool session (`PgSession::query`, `&mut
/// self`) serves one operation at a time, and sharing is what is measured.
async fn connect(pg_url: &str, application_name: &str) -> anyhow::Result<(Client, Statement)> {
    let mut config = tokio_postgres::Config::from_str(pg_url)?;
    config.application_name(application_name);
    let (host, port) = match (config.get_hosts().first(), config.get_ports().first()) {
        (Some(tokio_postgres::config::Host::Tcp(host)), Some(port)) => (host.clone(), *port),
        _ => anyhow::bail!("{pg_url}: a TCP host and port expected"),
    };
    let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    stream.set_nodelay(true)?;
    let (client, connection) = config.connect_raw(stream, NoTls).await?;
    tokio::spawn(connection);
    let statement = client
        .prepare_typed(sso_login::users::LOGIN_SQL, &LOGIN_TYPES)
        .await?;
    Ok((client, statement))
}

/// Permits at `rate` a second, handed out each millisecond (tokio's timer
/// granularity) as they fall due.
fn pacer(rate: f64) -> Arc<tokio::sync::Semaphore> {
    let permits = Arc::new(tokio::sync::Semaphore::new(0));
    let given = permits.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let mut handed = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        loop {
            tick.tick().await;
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            if due > handed {
                given.add_permits((due - handed) as usize);
                handed = due;
            }
        }
    });
    permits
}

/// One login's statement: a fresh token of one of `users` users.
async fn record(
    (client, statement): &(Client, Statement),
    sender: usize,
    sent: u64,
    users: u32,
) -> anyhow::Result<()> {
    let user = bench_user(sender as u64, sent, users);
    let email = format!("{user}@example.com");
    let token_key = format!("sso:jti:bench-sharing-{}", uuid::Uuid::new_v4().simple());
    let now = shared::clock::unix_micros();
    let token_exp = now / 1_000_000 + 3600;
    let params: [&(dyn ToSql + Sync); 8] = [
        &user,
        &email,
        &"Test User",
        &now,
        &token_key,
        &"attempt",
        &token_exp,
        &i64::MAX,
    ];
    let row = client.query_one(statement, &params).await?;
    anyhow::ensure!(
        row.try_get::<_, Option<i64>>("id")?.is_some(),
        "a fresh token's statement recorded no login"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use testkit::services::TestDb;

    use super::*;
    use crate::test_support::recorded_logins_and_users;

    /// Each statement the run counts recorded a login, whether its
    /// connection was its own or shared by several senders (the server saw
    /// only as many backends as connections), paced or not.
    #[tokio::test]
    async fn each_counted_statement_recorded_a_login_on_own_or_shared_connections() {
        for (connections, rate) in [(3, None), (1, None), (1, Some(200.0))] {
            let db = TestDb::postgres().await;
            let url = db.url.clone();
            let (sharing, before, after) = tokio::task::spawn_blocking(move || {
                Run {
                    pg_url: &url,
                    connections,
                    senders: 3,
                    rate,
                    users: 5,
                    run: Duration::from_millis(300),
                }
                .measure(Instant::now)
            })
            .await
            .unwrap()
            .unwrap();
            // The snapshots bracket the whole run.
            assert!(after.duration_since(before) >= Duration::from_millis(300));
            assert_eq!(sharing.backends, connections as u64);
            assert!(sharing.statements > 0, "{connections} connections");
            assert!(sharing.cpu_us_per_statement > 0.0);
            if let Some(rate) = rate {
                // 0.3 s at 200/s: at most 60 permits by the end, and one more
                // for each of the 3 senders that read the clock just before
                // it (2 more for rounding); on a slow machine, at least a
                // quarter of them.
                let (most, least) = (rate * 0.3 + 5.0, rate * 0.3 / 4.0);
                let sent = sharing.statements as f64;
                assert!(sent <= most && sent >= least, "{sent} statements");
            }
            let (recorded, users) = recorded_logins_and_users(&db.url).await;
            assert_eq!(
                recorded as u64, sharing.statements,
                "{connections} connections"
            );
            assert!(users > 0 && users <= 5, "{users} users");
        }
    }
}
