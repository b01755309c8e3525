//! Serves every function on one port for local development: what `make run`
//! starts (scripts/run-local.sh, with the settings of config/local.env).
//!
//! The order matters to a newcomer watching the terminal: the configuration
//! is read (`LISTEN_HOST` and `PORT` with it), the port is bound (a port in
//! use is one line and exit code 1), the routes are built, then the banner is
//! printed, then requests are served. So the banner never appears before the
//! server can answer.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use tokio::net::TcpListener;

/// Local defaults (a deployed function listens on 0.0.0.0:9000 instead).
const DEFAULT_HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const DEFAULT_PORT: u16 = 8000;

#[tokio::main]
async fn main() -> ExitCode {
    shared::runtime::init_tracing(false);
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(line) => {
            eprintln!("tms-local: {line}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let (config, settings) = shared::Config::load_with::<sso_login::Settings>()
        .await
        .map_err(|e| e.to_string())?;
    let addr = config
        .listen
        .or(SocketAddr::new(DEFAULT_HOST, DEFAULT_PORT));
    let listener = TcpListener::bind(addr).await.map_err(|e| match e.kind() {
        ErrorKind::AddrInUse => format!(
            "port {port} is in use: stop the other server or run make run PORT={next}",
            port = addr.port(),
            next = addr.port().wrapping_add(1).max(1),
        ),
        _ => format!("cannot listen on {addr}: {e}"),
    })?;
    let routes = tools::all_routes(&config, settings)
        .await
        .map_err(|e| e.to_string())?;
    let app = shared::app(routes, &config);
    let url = listener
        .local_addr()
        .map(|a| format!("http://{a}"))
        .map_err(|e| e.to_string())?;
    eprintln!("Serving health, sso-login and conversations on {url} (Ctrl-C stops)");
    shared::runtime::serve_http(listener, app)
        .await
        .map_err(|e| format!("{e:#}"))
}
