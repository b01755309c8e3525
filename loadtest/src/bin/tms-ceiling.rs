//! The ceiling of `make bench`: what this machine serves when nothing but
//! axum answers `/health`: on tokio's default runtime (`#[tokio::main]`, a
//! worker per core; the functions run on one thread), the same JSON body as
//! health's `GET /health`, and no layer, no log, no request id.

#![warn(clippy::too_many_lines)]

use axum::Router;
use axum::routing::get;
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::var("FC_CUSTOM_LISTEN_PORT")?.parse()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let routes = Router::new().route(
        "/health",
        get(|| async {
            axum::Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
        }),
    );
    axum::serve(listener, routes).await?;
    Ok(())
}
