//! A local Secrets Manager (moto's server).

use super::*;

/// A local AWS Secrets Manager (moto's server, from PyPI), on a free port.
pub struct SecretsManager {
    pub endpoint: String,
    child: Child,
}

/// Temporary credentials of an assumed role: what Lambda gives a function
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
pub struct RoleCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
}

impl SecretsManager {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// moto with its IAM access control on after `setup_calls` requests:
    /// from then on each request must be signed (SigV4, checked by
    /// recomputing the signature with botocore) with credentials moto
    /// issued, whose policy allows the action. The setup calls
    /// ([`SecretsManager::create`], [`SecretsManager::role_reading_secrets`]'s
    /// three) go unsigned before that.
    pub fn start_checking_signatures(setup_calls: u32) -> Self {
        Self::start_with(Some(setup_calls))
    }

    fn start_with(unchecked_calls: Option<u32>) -> Self {
        let port = free_port();
        let mut command = Command::new("python3");
        if let Some(calls) = unchecked_calls {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", calls.to_string());
        }
        let child = command
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

    /// The variables that point the functions' Secrets Manager client at
    /// this server, with credentials moto accepts while it checks none.
    pub fn aws_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ]
    }

    /// Creates a secret; returns its ARN. A plain call of the service's JSON
    /// protocol, unsigned (moto checks no signature unless started with
    /// [`SecretsManager::start_checking_signatures`], and not in the setup
    /// calls then), so that the test kit needs no AWS client of its own.
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

    /// A role allowed `secretsmanager:GetSecretValue` and nothing else,
    /// assumed: its temporary credentials. Three calls (CreateRole,
    /// PutRolePolicy, AssumeRole), unsigned.
    pub async fn role_reading_secrets(&self) -> RoleCredentials {
        let client = reqwest::Client::new();
        let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#;
        let allow = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"secretsmanager:GetSecretValue","Resource":"*"}]}"#;
        let role = "tms-function";
        let created = self
            .query(
                &client,
                "iam",
                &[
                    ("Action", "CreateRole"),
                    ("Version", "2010-05-08"),
                    ("RoleName", role),
                    ("AssumeRolePolicyDocument", trust),
                ],
            )
            .await;
        let role_arn = xml_value(&created, "Arn");
        self.query(
            &client,
            "iam",
            &[
                ("Action", "PutRolePolicy"),
                ("Version", "2010-05-08"),
                ("RoleName", role),
                ("PolicyName", "read-secrets"),
                ("PolicyDocument", allow),
            ],
        )
        .await;
        let assumed = self
            .query(
                &client,
                "sts",
                &[
                    ("Action", "AssumeRole"),
                    ("Version", "2011-06-15"),
                    ("RoleArn", &role_arn),
                    ("RoleSessionName", "tms-test"),
                ],
            )
            .await;
        RoleCredentials {
            access_key_id: xml_value(&assumed, "AccessKeyId"),
            secret_access_key: xml_value(&assumed, "SecretAccessKey"),
            session_token: xml_value(&assumed, "SessionToken"),
        }
    }

    /// One call of an AWS query-protocol service (IAM, STS): its XML answer.
    async fn query(
        &self,
        client: &reqwest::Client,
        service: &str,
        params: &[(&str, &str)],
    ) -> String {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let answer = client
            .post(&self.endpoint)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header(
                "Authorization",
                format!("AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"),
            )
            .body(body)
            .send()
            .await
            .expect("moto answers");
        let status = answer.status();
        let text = answer.text().await.expect("moto's answer");
        assert!(status.is_success(), "{service} {params:?}: {status} {text}");
        text
    }

    /// An HTTPS endpoint for this server: a TLS front on a free port that
    /// presents `cert` and forwards each connection to moto in plain HTTP
    /// (on the current Tokio runtime, for as long as it runs). Returns
    /// `https://localhost:<port>`.
    pub async fn behind_tls(&self, cert: &super::ServerCert) -> String {
        use std::sync::Arc;
        use tokio_rustls::rustls::ServerConfig;
        use tokio_rustls::rustls::crypto::aws_lc_rs;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.cert)
            .expect("certificate file")
            .map(|c| c.expect("certificate"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(&cert.key).expect("key file");
        let config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let upstream = self.endpoint.trim_start_matches("http://").to_owned();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here.
                    let Ok(mut client) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        format!("https://localhost:{port}")
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

/// The text of the first `<tag>` of an XML answer.
fn xml_value(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = start + xml[start..].find('<').expect("a closing tag");
    xml[start..end].to_owned()
}
