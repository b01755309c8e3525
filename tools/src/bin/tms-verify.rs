//! `make verify BASE_URL=https://…`: the deployment checklist, run against
//! a deployment. See tools/src/verify.rs for what each item checks.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match tools::verify::Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("verify: {e}");
            return ExitCode::from(2);
        }
    };
    let items = tools::verify::run(&settings).await;
    let failed = items.iter().filter(|i| i.result.is_err()).count();
    if failed == 0 {
        println!("verify: all {} items passed", items.len());
        ExitCode::SUCCESS
    } else {
        println!("verify: {failed} of {} items FAILED", items.len());
        ExitCode::FAILURE
    }
}
