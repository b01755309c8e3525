//! Secrets read at start from AWS Secrets Manager, so that they never sit in
//! template parameters or plain environment variables: each `*_SECRET_ARN`
//! variable names a secret whose `SecretString` becomes the setting it names.
//! Credentials and region come from the environment, through aws-config's
//! environment providers (Lambda puts the role's credentials there);
//! `AWS_ENDPOINT_URL` points the reads at a compatible server (moto in
//! tests). [`secrets_manager`] is the client.
//!
//! `JWT_SECRET_ARN` also brings its secret's rotation: the versions staged
//! `AWSPREVIOUS` (the key before the last rotation) and `AWSPENDING` (the
//! next one, staged before it becomes current) join `JWT_PREVIOUS_SECRETS`,
//! verify-only, so that a rotation signs nobody out (docs/deploy.md, "Rotating
//! the API token key").
//!
//! The client is behind the `aws-secrets` feature: every function's own
//! build has it; a build without it (the local developer tools) refuses an
//! ARN with a clear error instead of ignoring it.

use std::collections::HashMap;

use crate::config_error::ConfigError;

#[cfg(feature = "aws-secrets")]
mod secrets_manager;

/// Each ARN variable and the setting its secret fills.
/// (`JWT_PREVIOUS_SECRETS` before `JWT_SECRET`, whose rotation adds to it.)
pub const SECRET_VARIABLES: [(&str, &str); 5] = [
    ("JWT_PREVIOUS_SECRETS_ARN", "JWT_PREVIOUS_SECRETS"),
    ("JWT_SECRET_ARN", "JWT_SECRET"),
    ("SSO_JWT_SECRET_ARN", "SSO_JWT_SECRET"),
    ("DATABASE_URL_SECRET_ARN", "DATABASE_URL"),
    ("REDIS_URL_SECRET_ARN", "REDIS_URL"),
];

/// The staging labels of `JWT_SECRET_ARN`'s versions that still verify.
pub const ROTATION_STAGES: [&str; 2] = ["AWSPREVIOUS", "AWSPENDING"];

/// Adds the keys of a rotation to `JWT_PREVIOUS_SECRETS`, after those it
/// already lists.
#[cfg_attr(not(feature = "aws-secrets"), allow(dead_code))]
fn add_previous_secrets(vars: &mut HashMap<String, String>, keys: Vec<String>) {
    if keys.is_empty() {
        return;
    }
    let mut list: Vec<String> = setting(vars, "JWT_PREVIOUS_SECRETS")
        .map(|v| vec![v.to_owned()])
        .unwrap_or_default();
    list.extend(keys);
    vars.insert("JWT_PREVIOUS_SECRETS".to_owned(), list.join(","));
}

/// A variable's value, trimmed; an empty one counts as unset (templates
/// often pass "" for "not configured"). The one reading of a variable.
pub(crate) fn setting<'a>(vars: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn is_set(vars: &HashMap<String, String>, name: &str) -> bool {
    setting(vars, name).is_some()
}

/// Replaces each `*_SECRET_ARN` in `vars` whose setting the function `reads`
/// by the secret's value; the others are left unread (a secret the function
/// has no use for, and may have no permission to read). Does nothing (and
/// loads no AWS configuration) when no such ARN is set.
pub async fn resolve(
    vars: &mut HashMap<String, String>,
    reads: impl Fn(&str) -> bool,
) -> Result<(), ConfigError> {
    let wanted: Vec<(&'static str, &'static str)> = SECRET_VARIABLES
        .into_iter()
        .filter(|&(arn_var, target)| reads(target) && is_set(vars, arn_var))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    fetch(vars, wanted).await
}

#[cfg(not(feature = "aws-secrets"))]
async fn fetch(
    _vars: &mut HashMap<String, String>,
    wanted: Vec<(&'static str, &'static str)>,
) -> Result<(), ConfigError> {
    let (arn_var, target) = wanted[0];
    Err(ConfigError::new(
        arn_var,
        format!(
            "this program was built without AWS Secrets Manager support: set {target} instead, \
             or build with the aws-secrets feature (cargo build -p tools --features aws-secrets)"
        ),
    ))
}

#[cfg(feature = "aws-secrets")]
async fn fetch(
    vars: &mut HashMap<String, String>,
    wanted: Vec<(&'static str, &'static str)>,
) -> Result<(), ConfigError> {
    use secrets_manager::{ReadError, SecretsManager};
    const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
    for &(arn_var, target) in &wanted {
        if is_set(vars, target) {
            return Err(ConfigError::new(
                arn_var,
                format!("set either {arn_var} or {target}, not both"),
            ));
        }
    }
    let client = SecretsManager::from_environment(vars)
        .await
        .map_err(|e| ConfigError::new(wanted[0].0, e))?;
    // The version staged `stage`; with `optional`, None when no version
    // carries that label. (`AWSCURRENT` is named, not left implied: some
    // compatible servers keep their first version as the default.)
    let read = async |arn_var: &'static str, arn: &str, stage: &str, optional: bool| {
        let answer = tokio::time::timeout(FETCH_TIMEOUT, client.get_secret_value(arn, stage))
            .await
            .map_err(|_| {
                ConfigError::new(arn_var, "AWS Secrets Manager did not answer within 5 s")
            })?;
        let value = match answer {
            Ok(value) => value,
            // A stage that no version carries (no rotation yet): nothing to add.
            Err(ReadError::NotFound) if optional => return Ok(None),
            Err(ReadError::NotFound) => {
                return Err(ConfigError::new(
                    arn_var,
                    format!("cannot read the secret: no secret `{arn}` staged {stage}"),
                ));
            }
            Err(ReadError::Failed(e)) => {
                return Err(ConfigError::new(
                    arn_var,
                    format!("cannot read the secret: {e}"),
                ));
            }
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(ConfigError::new(arn_var, "the secret has no SecretString"));
        }
        Ok::<_, ConfigError>(Some(value.to_owned()))
    };
    // Every version at once: start-up waits for one answer, not for one
    // after the other (JWT_SECRET_ARN alone is three: its rotation).
    let reads = wanted.iter().map(async |&(arn_var, target)| {
        let arn = vars[arn_var].trim();
        let rotation = async {
            if target != "JWT_SECRET" {
                return Ok(Vec::new());
            }
            let stages = ROTATION_STAGES.map(|stage| read(arn_var, arn, stage, true));
            futures_util::future::try_join_all(stages).await
        };
        let (current, rotation) =
            futures_util::future::try_join(read(arn_var, arn, "AWSCURRENT", false), rotation)
                .await?;
        let current = current.expect("a required version exists or is an error");
        Ok::<_, ConfigError>((target, current, rotation))
    });
    // In the order of SECRET_VARIABLES, the first error of that order.
    let results = futures_util::future::join_all(reads).await;
    for result in results {
        let (target, value, rotation) = result?;
        // Empty but for JWT_SECRET's.
        let rotation: Vec<String> = ROTATION_STAGES
            .iter()
            .zip(rotation)
            .filter_map(|(stage, key)| {
                let key = key.filter(|key| *key != value)?;
                tracing::info!(
                    variable = "JWT_PREVIOUS_SECRETS",
                    stage,
                    "read from AWS Secrets Manager"
                );
                Some(key)
            })
            .collect();
        add_previous_secrets(vars, rotation);
        vars.insert(target.to_owned(), value);
        tracing::info!(variable = target, "read from AWS Secrets Manager");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotations_keys_join_the_previous_secrets() {
        let mut vars = HashMap::new();
        add_previous_secrets(&mut vars, Vec::new());
        assert!(vars.is_empty(), "no rotation, no variable");
        add_previous_secrets(&mut vars, vec!["b".into(), "c".into()]);
        assert_eq!(vars["JWT_PREVIOUS_SECRETS"], "b,c");
        let mut vars = HashMap::from([("JWT_PREVIOUS_SECRETS".to_owned(), " a ".to_owned())]);
        add_previous_secrets(&mut vars, vec!["b".into()]);
        assert_eq!(
            vars["JWT_PREVIOUS_SECRETS"], "a,b",
            "after those already listed"
        );
    }

    /// The ARN of a setting the function does not read is never resolved: no
    /// AWS configuration is loaded, nothing is asked (the ARN here names no
    /// reachable server, and a build without the client would refuse it).
    #[tokio::test]
    async fn a_secret_the_function_does_not_read_is_left_unread() {
        let mut vars = HashMap::from([
            (
                "JWT_SECRET_ARN".to_owned(),
                "arn:aws:secretsmanager:eu-west-1:1:secret:tms/jwt".to_owned(),
            ),
            (
                "AWS_ENDPOINT_URL".to_owned(),
                "http://127.0.0.1:1".to_owned(),
            ),
        ]);
        let before = vars.clone();
        resolve(&mut vars, |name| name == "DATABASE_URL")
            .await
            .unwrap();
        assert_eq!(vars, before);
    }

    #[tokio::test]
    async fn without_an_arn_nothing_is_read() {
        let mut vars = HashMap::from([("JWT_SECRET".to_owned(), "s".to_owned())]);
        resolve(&mut vars, |_| true).await.unwrap();
        assert_eq!(vars.len(), 1);
    }

    /// A build without the Secrets Manager client (the local tools) refuses an ARN instead
    /// of starting without the secret. Runs in `make test-no-sdk` (CI), a
    /// build of `shared` alone, where the feature is off.
    #[cfg(not(feature = "aws-secrets"))]
    #[tokio::test]
    async fn a_build_without_the_sdk_refuses_an_arn() {
        let mut vars = HashMap::from([(
            "JWT_SECRET_ARN".to_owned(),
            "arn:aws:secretsmanager:eu-west-1:1:secret:tms/jwt".to_owned(),
        )]);
        let e = resolve(&mut vars, |_| true).await.unwrap_err().to_string();
        assert!(
            e.contains("JWT_SECRET_ARN") && e.contains("without AWS Secrets Manager support"),
            "{e}"
        );
    }
}
