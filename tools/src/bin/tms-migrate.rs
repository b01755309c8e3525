//! `make migrate`: applies the migrations that ship with the code to
//! `DATABASE_URL`. Safe in a deploy pipeline and when two run at once (the
//! PostgreSQL migrator takes an advisory lock).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let result = async {
        let config = shared::Config::load().await?;
        let db = shared::db::Database::open(&config.database).await?;
        db.migrate().await?;
        Ok::<_, anyhow::Error>(db.backend())
    }
    .await;
    match result {
        Ok(backend) => {
            println!("migrations applied ({backend})");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("migration failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
