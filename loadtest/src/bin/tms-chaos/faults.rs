//! Each fault, for the fault's time, and its lifting. Blocking work (a
//! server's restart waits for it to answer) runs off the load's threads.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use testkit::services::{RedisServer, write_other_data};

use crate::ledger::replay_key;
use crate::load::{Load, SsoEndpoint};
use crate::report::Phase;
use crate::stack::{Stack, wait_serving};

/// The identity provider's latency during the slow-key fault.
const SLOW_KEYS: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
pub enum Fault {
    RedisStopped,
    RedisFrozen,
    /// A managed Redis's default eviction (`volatile-lru`) at a
    /// `maxmemory` that other data fills: marks are evicted.
    RedisEvicting,
    /// The primary killed while its replica lagged; the replica promoted
    /// and the endpoint moved to it: the latest marks are lost.
    RedisFailover,
    PostgresStopped,
    PostgresFrozen,
    SsoInstanceKilled,
    SlowKeys,
}

impl Fault {
    /// Every fault, in the order a run goes through them.
    pub const ALL: [Fault; 8] = [
        Fault::RedisStopped,
        Fault::RedisFrozen,
        Fault::RedisEvicting,
        Fault::RedisFailover,
        Fault::PostgresStopped,
        Fault::PostgresFrozen,
        Fault::SsoInstanceKilled,
        Fault::SlowKeys,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::RedisStopped => "Redis stopped (SIGKILL, restarted)",
            Fault::RedisFrozen => "Redis frozen (SIGSTOP, SIGCONT)",
            Fault::RedisEvicting => "Redis evicting (volatile-lru, full)",
            Fault::RedisFailover => "Redis failover to a lagging replica",
            Fault::PostgresStopped => "PostgreSQL stopped (restarted)",
            Fault::PostgresFrozen => "PostgreSQL frozen (SIGSTOP, SIGCONT)",
            Fault::SsoInstanceKilled => "sso-login instance SIGKILLed, restarted",
            Fault::SlowKeys => "key endpoint at 1 s, key rotated",
        }
    }

    /// The fault for `time`, then lifted; what it did, in figures, goes to
    /// the phase's note. The stack comes back (a server restarted, a
    /// replica promoted).
    pub async fn inject_and_lift(
        self,
        mut stack: Stack,
        load: &Load,
        phase: &mut Phase,
        time: Duration,
    ) -> anyhow::Result<Stack> {
        match self {
            Fault::RedisStopped => {
                stack.redis.stop();
                tokio::time::sleep(time).await;
                (stack.redis, ()) = off_the_load(stack.redis, RedisServer::resume_serving).await?;
            }
            Fault::RedisFrozen => {
                stack.redis.hang();
                tokio::time::sleep(time).await;
                stack.redis.unhang();
            }
            Fault::RedisEvicting => return redis_evicting(stack, load, phase, time).await,
            Fault::RedisFailover => return redis_failover(stack, load, phase, time).await,
            Fault::PostgresStopped => {
                (stack.pg, ()) = off_the_load(stack.pg, |pg| pg.stop()).await?;
                tokio::time::sleep(time).await;
                (stack.pg, ()) = off_the_load(stack.pg, |pg| pg.resume_serving()).await?;
            }
            Fault::PostgresFrozen => {
                stack.pg.hang();
                tokio::time::sleep(time).await;
                stack.pg.unhang();
            }
            Fault::SsoInstanceKilled => sso_instance_killed(&mut stack, load, phase, time).await?,
            Fault::SlowKeys => {
                stack
                    .keys
                    .latency_ms
                    .store(SLOW_KEYS.as_millis() as u64, Ordering::SeqCst);
                stack.keys.publish("rsa2");
                load.rotated.store(true, Ordering::SeqCst);
                tokio::time::sleep(time).await;
                stack.keys.latency_ms.store(0, Ordering::SeqCst);
            }
        }
        Ok(stack)
    }
}

/// `work` on `server` on a thread of its own; the server comes back with
/// what the work returned.
async fn off_the_load<S: Send + 'static, T: Send + 'static>(
    mut server: S,
    work: impl FnOnce(&mut S) -> T + Send + 'static,
) -> anyhow::Result<(S, T)> {
    Ok(tokio::task::spawn_blocking(move || {
        let done = work(&mut server);
        (server, done)
    })
    .await?)
}

async fn redis_evicting(
    mut stack: Stack,
    load: &Load,
    phase: &mut Phase,
    time: Duration,
) -> anyhow::Result<Stack> {
    let evicted;
    (stack.redis, evicted) = off_the_load(stack.redis, move |redis| {
        evict_under_other_data(redis, time)
    })
    .await?;
    let marks = marks_on(load, &stack.redis);
    let gone = marks.iter().filter(|m| !**m).count();
    phase.note = Some(format!(
        "{}; {gone} of the {} issued tokens' marks gone",
        evicted?,
        marks.len()
    ));
    Ok(stack)
}

async fn redis_failover(
    mut stack: Stack,
    load: &Load,
    phase: &mut Phase,
    time: Duration,
) -> anyhow::Result<Stack> {
    let promoted = stack.replica.take().expect("one failover");
    // The replica hears nothing more: the marks of this
    // phase's logins never reach it.
    stack.replication.silence_servers();
    tokio::time::sleep(time).await;
    let (on_primary, on_replica) = (marks_on(load, &stack.redis), marks_on(load, &promoted));
    let total = on_primary.iter().filter(|m| **m).count();
    let lost = on_primary
        .iter()
        .zip(&on_replica)
        .filter(|(p, r)| **p && !**r)
        .count();
    stack.redis.stop();
    promoted.command::<()>(redis::cmd("REPLICAOF").arg("NO").arg("ONE"))?;
    stack.endpoint.point_to(promoted.port);
    stack.redis = promoted;
    phase.note = Some(format!(
        "the promoted replica lacked {lost} of the {total} issued tokens' marks"
    ));
    Ok(stack)
}

/// Mid-load: logins are in flight on it. It stays away for the fault's
/// time, then a new one starts cold, on a new address.
async fn sso_instance_killed(
    stack: &mut Stack,
    load: &Load,
    phase: &mut Phase,
    time: Duration,
) -> anyhow::Result<()> {
    // Stamped first: requests in flight fail during the kill.
    phase.killed = Some((0, Instant::now()));
    stack.sso[0].kill();
    tokio::time::sleep(time).await;
    stack.sso[0].restart_on_new_port()?;
    wait_serving(&stack.sso[0]).await?;
    *load.sso[0].write().expect("endpoint") = SsoEndpoint::new(stack.sso[0].url())?;
    Ok(())
}

/// Sets a managed Redis's default eviction on `redis` with little room to
/// spare, and writes other expiring data (another application sharing the
/// Redis) for `time`; then takes the limit away. Returns what it evicted.
fn evict_under_other_data(redis: &RedisServer, time: Duration) -> anyhow::Result<String> {
    let info = |field: &str| -> anyhow::Result<u64> {
        let text: String = redis.command(&redis::cmd("INFO"))?;
        Ok(text
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{field}:")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_default())
    };
    let config_set = |name: &str, value: &str| -> anyhow::Result<()> {
        redis.command::<()>(redis::cmd("CONFIG").arg("SET").arg(name).arg(value))?;
        Ok(())
    };
    let evicted_before = info("evicted_keys")?;
    let limit = info("used_memory")? + 2 * 1024 * 1024;
    config_set("maxmemory-policy", "volatile-lru")?;
    config_set("maxmemory", &limit.to_string())?;
    let client = redis::Client::open(redis.url())?;
    let mut conn = client.get_connection()?;
    let started = Instant::now();
    let mut batch = 0u64;
    while started.elapsed() < time {
        write_other_data(&mut conn, batch, 200, 600)?;
        batch += 1;
    }
    config_set("maxmemory", "0")?;
    let evicted = info("evicted_keys")? - evicted_before;
    Ok(format!(
        "{evicted} keys evicted at maxmemory {limit} bytes while {} MB of other data were written",
        batch * 200 / 1024
    ))
}

/// For each token issued so far, whether `server` holds its mark.
fn marks_on(load: &Load, server: &RedisServer) -> Vec<bool> {
    let keys: Vec<String> = {
        let ledger = load.ledger.lock().expect("ledger");
        ledger
            .tokens
            .values()
            .filter(|t| t.issued > 0)
            .map(|t| replay_key(&load.replay_store, t))
            .collect()
    };
    keys.chunks(500)
        .flat_map(|chunk| {
            server
                .command::<Vec<Option<String>>>(redis::cmd("MGET").arg(chunk))
                .unwrap_or_else(|_| vec![None; chunk.len()])
        })
        .map(|v| v.is_some())
        .collect()
}
