#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::runtime::start(sso_login::build).await
}
