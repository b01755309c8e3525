//! What `make bench`, `make chaos` and `make fleet` share: a function
//! process serving plain HTTP, the identity provider's key endpoint, their
//! settings from the environment, and the pieces of a load that are not a
//! scenario of their own (a Lambda bill, a latency-injecting proxy, Redis's
//! side of a login under load, a login's store work without its HTTP).

#![warn(clippy::too_many_lines)]

use std::time::Duration;

pub mod function_process;
pub mod key_server;
pub mod lambda_cost;
pub mod latency_proxy;
pub mod login_store_work;
pub mod redis_load;
pub mod statement_sharing;

/// A whole number from the environment (`name`), or `default` when unset:
/// the scenario tools' sizes (CHAOS_*, FLEET_*).
pub fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    use anyhow::Context;
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name} must be a whole number, got `{v}`")),
        Err(_) => Ok(default),
    }
}

/// The user of a measurement loop's `n`th login from `client`: one of
/// `users` (`bench-sso-<i>`), spread so that concurrent clients seldom
/// log the same user in at once.
pub fn bench_user(client: u64, n: u64, users: u32) -> String {
    format!("bench-sso-{}", (client * 7919 + n) % u64::from(users))
}

/// This thread's CPU time so far (user and system).
pub fn thread_cpu() -> anyhow::Result<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    anyhow::ensure!(
        rc == 0,
        "clock_gettime: {}",
        std::io::Error::last_os_error()
    );
    Ok(Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}

/// Of [`thread_cpu`], the kernel's so far (system calls, wake-ups): the
/// thread's rusage, whose split of its runtime Linux estimates from ticks.
pub fn thread_system_cpu() -> anyhow::Result<Duration> {
    // SAFETY: a zeroed rusage is a valid value for getrusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage for the call to fill.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    anyhow::ensure!(rc == 0, "getrusage: {}", std::io::Error::last_os_error());
    Ok(timeval_duration(usage.ru_stime))
}

/// A rusage time as a [`Duration`].
pub fn timeval_duration(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// What the modules' tests share.
#[cfg(test)]
pub(crate) mod test_support {
    /// The logins recorded in a test's database, and its users.
    pub(crate) async fn recorded_logins_and_users(pg_url: &str) -> (i64, i64) {
        use sqlx::Connection as _;
        let mut pg = testkit::services::connect(pg_url).await.unwrap();
        let (recorded,): (i64,) = sqlx::query_as("SELECT count(*) FROM sso_logins")
            .fetch_one(&mut pg)
            .await
            .unwrap();
        let (users,): (i64,) = sqlx::query_as("SELECT count(*) FROM users")
            .fetch_one(&mut pg)
            .await
            .unwrap();
        pg.close().await.unwrap();
        (recorded, users)
    }
}
