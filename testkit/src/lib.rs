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

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
