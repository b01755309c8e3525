#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::runtime::start(|config| async move {
        let routes = sso_login::build(&config).await?;
        Ok(shared::app(routes, &config))
    })
    .await
}
