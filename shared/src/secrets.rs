//! Secrets read at start from AWS Secrets Manager, so that they never sit in
//! template parameters or plain environment variables: each `*_SECRET_ARN`
//! variable names a secret whose `SecretString` becomes the setting it names.
//! Credentials, region and endpoint come from aws-config's usual chain
//! (`AWS_ENDPOINT_URL` points it at a compatible server in tests).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_secretsmanager::error::DisplayErrorContext;

use crate::config::ConfigError;

/// Each ARN variable and the setting its secret fills.
pub const SECRET_VARIABLES: [(&str, &str); 4] = [
    ("JWT_SECRET_ARN", "JWT_SECRET"),
    ("SSO_JWT_SECRET_ARN", "SSO_JWT_SECRET"),
    ("DATABASE_URL_SECRET_ARN", "DATABASE_URL"),
    ("REDIS_URL_SECRET_ARN", "REDIS_URL"),
];

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

fn is_set(vars: &HashMap<String, String>, name: &str) -> bool {
    vars.get(name).is_some_and(|v| !v.trim().is_empty())
}

/// Replaces each `*_SECRET_ARN` in `vars` by the secret's value. Does nothing
/// (and loads no AWS configuration) when none is set.
pub async fn resolve(vars: &mut HashMap<String, String>) -> Result<(), ConfigError> {
    let wanted: Vec<(&'static str, &'static str)> = SECRET_VARIABLES
        .into_iter()
        .filter(|(arn_var, _)| is_set(vars, arn_var))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    for (arn_var, target) in wanted {
        if is_set(vars, target) {
            return Err(ConfigError::new(
                arn_var,
                format!("set either {arn_var} or {target}, not both"),
            ));
        }
        let arn = vars[arn_var].trim().to_owned();
        let output = tokio::time::timeout(
            FETCH_TIMEOUT,
            client.get_secret_value().secret_id(&arn).send(),
        )
        .await
        .map_err(|_| ConfigError::new(arn_var, "AWS Secrets Manager did not answer within 5 s"))?
        .map_err(|e| {
            ConfigError::new(
                arn_var,
                format!("cannot read the secret: {}", DisplayErrorContext(&e)),
            )
        })?;
        let value = output
            .secret_string()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ConfigError::new(arn_var, "the secret has no SecretString"))?;
        vars.insert(target.to_owned(), value.to_owned());
        tracing::info!(variable = target, "read from AWS Secrets Manager");
    }
    Ok(())
}
