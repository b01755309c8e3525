//! What the tests, the bench and the developer tools share: tokens minted
//! as the identity provider and sso-login mint them, and the services they
//! run against (a database of their own, throwaway PostgreSQL and Redis
//! servers to stop and freeze, a local Secrets Manager, a TCP relay).

pub mod relay;
pub mod services;
pub mod tokens;

/// The one way a program of the workspace is started here (the tests, the
/// bench, chaos, the fleet): with exactly `vars` (and `PATH`), stdin closed,
/// and when `port` is given, serving plain HTTP on it (FC's variable, as FC
/// passes it). The caller says where its output goes, and spawns it.
pub fn program_command<K, V>(
    bin: &std::path::Path,
    vars: impl IntoIterator<Item = (K, V)>,
    port: Option<u16>,
) -> std::process::Command
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let mut command = std::process::Command::new(bin);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(vars)
        .stdin(std::process::Stdio::null());
    if let Some(port) = port {
        command.env(shared::config::FC_PORT_VAR, port.to_string());
    }
    command
}

/// A port that was free a moment ago, below the kernel's ephemeral range.
///
/// Not one the kernel hands out (binding port 0): an outgoing connection
/// takes its local port from that range, so such a port can be taken
/// before the server it was picked for binds it (chaos saw a function fail
/// with "Address already in use" while another answered on its port), and
/// a connect to it can reach itself (TCP simultaneous open). Below the
/// range only an explicit bind takes a port: each pick is random and
/// checked free on every address.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let below = ephemeral_range_start();
    let span = u64::from(below.saturating_sub(FIRST_PICKED_PORT));
    // No room below the range (an unusual ip_local_port_range): no tries.
    let tries = if span == 0 { 0 } else { 1000 };
    for _ in 0..tries {
        // A fresh RandomState is seeded anew: random enough across processes.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = FIRST_PICKED_PORT + (random % span) as u16;
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The lowest port [`free_port`] picks: above the machine's usual services
/// (PostgreSQL 5432, Redis 6379, brokers, databases).
const FIRST_PICKED_PORT: u16 = 20_000;

/// The first port of the kernel's ephemeral range (Linux's
/// `ip_local_port_range`; its default where it cannot be read).
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_is_below_the_ephemeral_range_and_bindable() {
        let below = ephemeral_range_start();
        for _ in 0..20 {
            let port = free_port();
            assert!(
                (FIRST_PICKED_PORT..below).contains(&port),
                "{port} not in {FIRST_PICKED_PORT}..{below}"
            );
            // Free on every address, as a function binds it.
            std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
        }
    }
}
