//! Mints tokens for local runs and staging checks, with the configured secrets:
//!   tms-token api USER_ID                 an API token (JWT_SECRET)
//!   tms-token user EXTERNAL_ID [EMAIL]    creates or updates a user, prints its API token
//!   tms-token sso SUB [EMAIL] [NAME]      a GCGC token as the identity provider would
//!                                         issue it (SSO_JWT_SECRET; 1 hour, with a jti)

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
            eprintln!(
                "usage: tms-token api USER_ID | user EXTERNAL_ID [EMAIL] | sso SUB [EMAIL] [NAME]"
            );
            ExitCode::from(2)
        }
    }
}

async fn run(args: &[String]) -> anyhow::Result<String> {
    let config = shared::Config::load().await?;
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
        [kind, sub, rest @ ..] if kind == "sso" && rest.len() <= 2 => {
            let Some(shared::config::SsoKeys::Secret(secret)) = &config.sso_keys else {
                anyhow::bail!("SSO_JWT_SECRET must be set to mint a GCGC token");
            };
            let now = shared::tokens::now_secs();
            let mut claims = serde_json::json!({
                "sub": sub, "iat": now, "exp": now + 3600,
                "jti": uuid::Uuid::new_v4().to_string(),
            });
            if let Some(email) = rest.first() {
                claims["email"] = email.as_str().into();
            }
            if let Some(name) = rest.get(1) {
                claims["name"] = name.as_str().into();
            }
            if let Some(iss) = &config.sso_issuer {
                claims["iss"] = iss.as_str().into();
            }
            if let Some(aud) = &config.sso_audience {
                claims["aud"] = aud.as_str().into();
            }
            Ok(jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret.expose().as_bytes()),
            )?)
        }
        _ => anyhow::bail!("unexpected arguments"),
    }
}
