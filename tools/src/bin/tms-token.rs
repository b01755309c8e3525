//! Mints tokens for local runs and staging checks, with the configured secrets:
//!   tms-token api USER_ID                 an API token (JWT_SECRET)
//!   tms-token user EXTERNAL_ID [EMAIL]    creates or updates a user, prints its API token
//!   tms-token sso SUB [EMAIL] [NAME]      a GCGC token as the identity provider would
//!                                         issue it (SSO_JWT_SECRET; 1 hour, with a jti)

use std::process::ExitCode;

use shared::config::{SsoKeys, SsoSettings};

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
            eprintln!(
                "usage: tms-token api USER_ID | user EXTERNAL_ID [EMAIL] | sso SUB [EMAIL] [NAME]"
            );
            ExitCode::from(2)
        }
    }
}

async fn run(args: &[String]) -> anyhow::Result<String> {
    match args {
        [kind, id] if kind == "api" => {
            let (_, jwt) = shared::Config::load_with().await?;
            let tokens = shared::tokens::ApiTokens::from_settings(&jwt);
            let id: i64 = id
                .parse()
                .map_err(|_| anyhow::anyhow!("USER_ID must be a number"))?;
            // Generation 0: a user who has never signed out everywhere.
            Ok(tokens.issue(id, 0)?.token)
        }
        [kind, external_id, rest @ ..] if kind == "user" && rest.len() <= 1 => {
            let (config, jwt) = shared::Config::load_with().await?;
            let tokens = shared::tokens::ApiTokens::from_settings(&jwt);
            let db = shared::db::Database::open(&config.database).await?;
            let email = rest.first().map(String::as_str);
            let user = sso_login::users::upsert_user(&db, external_id, email, None).await?;
            Ok(tokens.issue(user.id, user.token_generation)?.token)
        }
        [kind, sub, rest @ ..] if kind == "sso" && rest.len() <= 2 => {
            let (_, sso): (_, SsoSettings) = shared::Config::load_with().await?;
            let SsoKeys::Secret(secret) = &sso.keys else {
                anyhow::bail!("SSO_JWT_SECRET must be set to mint a GCGC token");
            };
            let mut claims = tools::sso_token::with_issuer_and_audience(
                tools::sso_token::sso_claims(sub),
                sso.issuer.as_deref(),
                sso.audience.as_deref(),
            );
            match rest {
                [email, name] => {
                    claims["email"] = email.as_str().into();
                    claims["name"] = name.as_str().into();
                }
                [email] => claims["email"] = email.as_str().into(),
                _ => {}
            }
            Ok(tools::sso_token::sso_token(secret.expose(), &claims))
        }
        _ => anyhow::bail!("unexpected arguments"),
    }
}
