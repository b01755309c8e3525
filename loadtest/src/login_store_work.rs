//! A login's store work alone, for `make bench`'s CPU budget of a login:
//! the claim, the record and the completion, by sso-login's own code (its
//! replay store and its database pool), many logins at a time on one
//! thread as the function runs them, without HTTP and without tokens to
//! verify or sign. Its thread's CPU per login estimates what a login built
//! on these stores and these clients spends besides its tokens.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use shared::config::RedisSettings;
use shared::db::Database;
use shared::secret::Secret;
use sso_login::replay::{Claim, ClaimError, ReplayStore};
use sso_login::users::{self, Recorded};
use sso_login::verify::{SsoClaims, VerifiedToken};

use crate::{bench_user, thread_cpu, thread_system_cpu};

/// What the run did.
pub struct StoreWork {
    pub logins: u64,
    /// The thread's CPU (user and system) per login, µs.
    pub cpu_us_per_login: f64,
    /// Of it, the kernel's (the messages' system calls and wake-ups), µs.
    pub system_us_per_login: f64,
}

/// A run of the store work: `clients` logins at a time for `run`, each on
/// a fresh token of one of `users` users, keys under `key_prefix`, on a
/// pool of `pool_size` connections (the function's `DB_POOL_SIZE`).
pub struct Run<'a> {
    pub pg_url: &'a str,
    pub redis_url: &'a str,
    pub key_prefix: &'a str,
    pub clients: u32,
    pub pool_size: u32,
    pub users: u32,
    pub run: Duration,
    /// Whether each login completes its claim (sso-login does): without,
    /// the claim and the record alone.
    pub complete: bool,
}

type Completions = JoinSet<Result<(), ClaimError>>;

impl Run<'_> {
    /// Runs on a thread of its own, on the functions' runtime
    /// (`shared::runtime::function_runtime`).
    pub fn measure(&self) -> anyhow::Result<StoreWork> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| shared::runtime::function_runtime()?.block_on(self.logins()))
                .join()
                .map_err(|_| anyhow::anyhow!("the store work's thread panicked"))?
        })
    }

    async fn logins(&self) -> anyhow::Result<StoreWork> {
        let replay = ReplayStore::from_settings(&RedisSettings {
            url: Some(Secret::new(self.redis_url)),
            key_prefix: self.key_prefix.to_owned(),
            ca_cert: None,
        })?;
        let db = Database::open_postgres(self.pg_url, self.pool_size)?;
        let one = async |client: u32, n: u64, completions: &mut Completions| {
            let claim = login(&replay, &db, client, n, self.users).await?;
            if self.complete {
                let replay = replay.clone();
                completions.spawn(async move { replay.complete(&claim).await });
            }
            anyhow::Ok(())
        };
        // Warm-up: the connections open and the statements are prepared, as
        // they are before the function's measured runs.
        let mut completions = Completions::new();
        for client in 0..self.clients {
            one(client, 0, &mut completions).await?;
        }
        while let Some(done) = completions.join_next().await {
            done??;
        }

        let (cpu_before, system_before) = (thread_cpu()?, thread_system_cpu()?);
        let deadline = Instant::now() + self.run;
        let per_client =
            futures_util::future::try_join_all((0..self.clients).map(async |client| {
                let mut completions = Completions::new();
                let mut n = 0;
                while Instant::now() < deadline {
                    one(client, n, &mut completions).await?;
                    n += 1;
                    // Reaped as they end: the function keeps none either.
                    while let Some(done) = completions.try_join_next() {
                        done??;
                    }
                }
                // Their CPU is counted too, though no login waits for it.
                while let Some(done) = completions.join_next().await {
                    done??;
                }
                anyhow::Ok(n)
            }))
            .await?;
        let (cpu, system) = (
            thread_cpu()? - cpu_before,
            thread_system_cpu()? - system_before,
        );
        let logins: u64 = per_client.iter().sum();
        let per_login = |d: Duration| d.as_secs_f64() * 1e6 / logins.max(1) as f64;
        Ok(StoreWork {
            logins,
            cpu_us_per_login: per_login(cpu),
            system_us_per_login: per_login(system),
        })
    }
}

/// One login's claim and record, as `sso_login`'s handler does them: its
/// claim, for the completion.
async fn login(
    replay: &ReplayStore,
    db: &Database,
    client: u32,
    n: u64,
    users: u32,
) -> anyhow::Result<Claim> {
    let sub = bench_user(u64::from(client), n, users);
    let token = VerifiedToken {
        claims: SsoClaims {
            email: Some(format!("{sub}@example.com")),
            name: Some("Test User".into()),
            sub,
            exp: shared::clock::unix_secs() + 3600,
            iat: None,
            jti: Some(uuid::Uuid::new_v4().simple().to_string()),
        },
        signed_part: String::new(),
    };
    let claim = replay.claim(&token).await?;
    let claims = &token.claims;
    let recorded = users::record_login(
        db,
        &claim.record(),
        &claims.sub,
        claims.email.as_deref(),
        claims.name.as_deref(),
    )
    .await?;
    anyhow::ensure!(
        matches!(recorded, Recorded::Login(_)),
        "a fresh token's record was refused: {recorded:?}"
    );
    Ok(claim)
}

#[cfg(test)]
mod tests {
    use testkit::services::{TestDb, clear_redis_prefix};

    use super::*;
    use crate::test_support::recorded_logins_and_users;

    const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

    /// Each login the run counts did the whole store work: a recorded
    /// login in the database and its mark in Redis, completed unless the
    /// run leaves the completion out (the warm-up's logins too).
    #[tokio::test]
    async fn each_counted_login_is_claimed_recorded_and_completed_if_asked() {
        for (complete, mark) in [(true, "done:"), (false, "pending:")] {
            let db = TestDb::postgres().await;
            let prefix = format!("test-store-work-{}:", testkit::services::uuid_simple());
            let clients = 3;
            let (url, redis_prefix) = (db.url.clone(), prefix.clone());
            let work = tokio::task::spawn_blocking(move || {
                Run {
                    pg_url: &url,
                    redis_url: SHARED_REDIS,
                    key_prefix: &redis_prefix,
                    clients,
                    pool_size: 2,
                    users: 5,
                    run: Duration::from_millis(200),
                    complete,
                }
                .measure()
            })
            .await
            .unwrap()
            .unwrap();
            assert!(work.logins > 0);
            assert!(work.cpu_us_per_login > 0.0);
            // The kernel's share of the thread's CPU (rusage's split is
            // estimated from ticks: none may fall on it in a short run).
            assert!(work.system_us_per_login <= work.cpu_us_per_login * 1.01);
            let expected = work.logins + u64::from(clients);

            let (recorded, users) = recorded_logins_and_users(&db.url).await;

            let mut redis = ::redis::Client::open(SHARED_REDIS)
                .unwrap()
                .get_connection()
                .unwrap();
            let keys: Vec<String> = ::redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query(&mut redis)
                .unwrap();
            let values: Vec<Option<String>> = if keys.is_empty() {
                Vec::new()
            } else {
                ::redis::cmd("MGET").arg(&keys).query(&mut redis).unwrap()
            };
            clear_redis_prefix(SHARED_REDIS, &prefix);

            assert_eq!(recorded as u64, expected, "complete: {complete}");
            assert!(users > 0 && users <= 5, "{users} users");
            assert_eq!(values.len() as u64, expected, "complete: {complete}");
            assert!(
                values
                    .iter()
                    .all(|v| v.as_deref().is_some_and(|v| v.starts_with(mark))),
                "complete: {complete}: {values:?}"
            );
        }
    }
}
