//! A login's Redis commands alone, under load: what Redis (and a Rust
//! client on the same machine) allows of each, for `make bench`'s floor of
//! a login (BENCHMARKS.md). The equivalent of `redis-benchmark -c N` of the
//! login's own commands: N clients, each on its own connection with one
//! command in flight, for a fixed time.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

/// The claim's pending TTL, ms.
pub const PENDING_TTL_MS: u64 = sso_login::replay::PENDING_TTL.as_millis() as u64;

/// The completion as sso-login sends it by EVALSHA: compare, measure the
/// claim's age, set the done mark. KEYS[1] key; ARGV: pending value, done
/// value, pending TTL (ms), budget (ms), full TTL (s).
pub use sso_login::replay::COMPLETE as COMPLETE_SCRIPT;

/// One load run of a command: its rate, and how many each client sent.
pub struct Run {
    pub per_sec: f64,
    pub per_client: Vec<u64>,
}

/// A login's claim of `key`, as sso-login sends it on its fast path:
/// `SET key pending:… NX PX <PENDING_TTL>`.
pub fn claim(key: String) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key)
        .arg("pending:bench")
        .arg("NX")
        .arg("PX")
        .arg(PENDING_TTL_MS);
    cmd
}

/// A login's completion of its claim of `key` ([`claim`]), by EVALSHA of
/// [`COMPLETE_SCRIPT`] (`script`), with a budget that is never too late.
pub fn completion(script: &redis::Script, key: String) -> redis::ScriptInvocation<'_> {
    let mut invocation = script.key(key);
    invocation
        .arg("pending:bench")
        .arg("done:bench")
        .arg(PENDING_TTL_MS)
        .arg(PENDING_TTL_MS)
        .arg(3600);
    invocation
}

/// Claims ([`claim`]), each on a new key `<prefix>:<client>:<n>`, from
/// `clients` connections.
pub async fn claims(url: &str, prefix: &str, clients: usize, run: Duration) -> anyhow::Result<Run> {
    load(url, clients, run, async |conn, client, n| {
        let _: Option<String> = claim(format!("{prefix}:{client}:{n}"))
            .query_async(conn)
            .await?;
        Ok(())
    })
    .await
}

/// Completions (EVALSHA of [`COMPLETE_SCRIPT`]) of the keys `claimed` made,
/// in the same order: each takes the script's whole path (GET, PTTL, SET).
/// A client that runs past its claims starts over on them (the script's
/// shorter path): `wrapped` says whether any did.
pub async fn completions(
    url: &str,
    prefix: &str,
    claimed: &Run,
    run: Duration,
) -> anyhow::Result<(Run, bool)> {
    let script = redis::Script::new(COMPLETE_SCRIPT);
    let done = load(
        url,
        claimed.per_client.len(),
        run,
        async |conn, client, n| {
            let key = format!(
                "{prefix}:{client}:{}",
                n % claimed.per_client[client].max(1)
            );
            let _: i64 = completion(&script, key).invoke_async(conn).await?;
            Ok(())
        },
    )
    .await?;
    let wrapped = done
        .per_client
        .iter()
        .zip(&claimed.per_client)
        .any(|(done, claimed)| done > claimed);
    Ok((done, wrapped))
}

/// `clients` connections, each sending `command` (its client index and
/// count so far) one at a time until `run` has passed.
async fn load(
    url: &str,
    clients: usize,
    run: Duration,
    command: impl AsyncFn(&mut MultiplexedConnection, usize, u64) -> anyhow::Result<()>,
) -> anyhow::Result<Run> {
    let client = redis::Client::open(url)?;
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(client.get_multiplexed_async_connection().await?);
    }
    let started = Instant::now();
    let deadline = started + run;
    let command = &command;
    let per_client = futures_util::future::try_join_all(conns.into_iter().enumerate().map(
        async |(i, mut conn)| {
            let mut n = 0;
            while Instant::now() < deadline {
                command(&mut conn, i, n).await?;
                n += 1;
            }
            anyhow::Ok(n)
        },
    ))
    .await?;
    let total: u64 = per_client.iter().sum();
    Ok(Run {
        per_sec: total as f64 / started.elapsed().as_secs_f64(),
        per_client,
    })
}
