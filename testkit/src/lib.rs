//! What the tests, the bench and the developer tools share: tokens minted
//! as the identity provider and sso-login mint them, and the services they
//! run against (a database of their own, throwaway PostgreSQL and Redis
//! servers to stop and freeze, a local Secrets Manager, a TCP relay).

pub mod relay;
pub mod services;
pub mod tokens;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
