//! `make sign-out-user EXTERNAL_ID=...`: ends every session of one user (its
//! identity provider's id, the GCGC token's `sub`), for when someone leaves
//! or loses a device: every API token issued to them so far is refused from
//! now on, by every instance. Against `DATABASE_URL` (or its secret), as
//! `make migrate` is. The user can sign in again later with a new GCGC
//! token: stop that at the identity provider.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [external_id] = args.as_slice() else {
        eprintln!("usage: tms-sign-out EXTERNAL_ID   (the user's id at the identity provider)");
        return ExitCode::from(2);
    };
    let result = async {
        let config = shared::Config::load().await?;
        let db = shared::db::Database::open(&config.database).await?;
        let ended = sso_login::sessions::end_sessions_of(&db, external_id).await;
        db.close().await;
        Ok::<_, anyhow::Error>(ended?)
    }
    .await;
    match result {
        Ok(Some(user_id)) => {
            println!(
                "every session of {external_id} (user {user_id}) has ended: its API tokens are refused from now on"
            );
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("tms-sign-out: no user with external id {external_id}; nothing changed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tms-sign-out: failed, nothing changed: {e:#}");
            ExitCode::from(3)
        }
    }
}
