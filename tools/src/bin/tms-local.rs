//! Serves every function on one port for local development (`make run` sets
//! `LISTEN_HOST=127.0.0.1 PORT=8000`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::runtime::start(tools::all_routes).await
}
