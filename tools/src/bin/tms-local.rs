//! Serves every function on one port for local development (`make run` sets
//! `LISTEN_HOST=127.0.0.1 PORT=8000`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::runtime::start(|config| async move {
        let routes = tools::all_routes(&config).await?;
        Ok(shared::app(routes, &config))
    })
    .await
}
