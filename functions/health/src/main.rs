#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::runtime::start(health::build).await
}
