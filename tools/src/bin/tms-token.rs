//! Mints tokens for local runs and staging checks, with the configured secrets:
//!   tms-token api USER_ID                 an API token (JWT_SECRET)
//!   tms-token user EXTERNAL_ID [EMAIL]    creates or updates a user, prints its API token

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tms-token: {e:#}");
            eprintln!("usage: tms-token api USER_ID | tms-token user EXTERNAL_ID [EMAIL]");
            ExitCode::from(2)
        }
    }
}

async fn run(args: &[String]) -> anyhow::Result<String> {
    let config = shared::Config::from_env()?;
    let tokens = shared::tokens::ApiTokens::from_config(&config)?;
    match args {
        [kind, id] if kind == "api" => {
            let id: i64 = id
                .parse()
                .map_err(|_| anyhow::anyhow!("USER_ID must be a number"))?;
            Ok(tokens.issue(id)?.token)
        }
        [kind, external_id, rest @ ..] if kind == "user" && rest.len() <= 1 => {
            let db = shared::db::Database::open(&config).await?;
            let user = db
                .upsert_user(external_id, rest.first().map(String::as_str), None)
                .await?;
            Ok(tokens.issue(user.id)?.token)
        }
        _ => anyhow::bail!("unexpected arguments"),
    }
}
