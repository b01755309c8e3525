#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::runtime::start(conversations::build).await
}
