//! A local Secrets Manager (moto's server).

use super::*;

/// A local AWS Secrets Manager (moto's server, from PyPI), on a free port.
pub struct SecretsManager {
    pub endpoint: String,
    child: Child,
}

impl SecretsManager {
    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed for the Secrets Manager tests (scripts/services.sh installs moto)");
        wait_for_tcp(port, Duration::from_secs(30));
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    /// The variables that point aws-config at this server.
    pub fn aws_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ]
    }

    /// Creates a secret; returns its ARN. A plain call of the service's JSON
    /// protocol (moto does not check signatures), so that the test kit
    /// needs no AWS SDK: only the functions read secrets.
    pub async fn create(&self, name: &str, value: &str) -> String {
        let created = self
            .call(
                &reqwest::Client::new(),
                "CreateSecret",
                serde_json::json!({ "Name": name, "SecretString": value }),
            )
            .await
            .expect("create secret");
        created["ARN"].as_str().expect("arn").to_owned()
    }

    /// One call of the service's JSON protocol, such as `GetSecretValue`.
    pub async fn call(
        &self,
        client: &reqwest::Client,
        action: &str,
        body: serde_json::Value,
    ) -> reqwest::Result<serde_json::Value> {
        client
            .post(&self.endpoint)
            .header("X-Amz-Target", format!("secretsmanager.{action}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body(body.to_string())
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }
}

impl Drop for SecretsManager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
