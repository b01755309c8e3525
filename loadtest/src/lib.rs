//! What `make bench`, `make chaos` and `make fleet` share: a function
//! process serving plain HTTP, the identity provider's key endpoint, their
//! settings from the environment, and the pieces of a load that are not a
//! scenario of their own (a Lambda bill, a latency-injecting proxy, Redis's
//! side of a login under load, a login's store work without its HTTP).

#![warn(clippy::too_many_lines)]

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
