//! AWS Secrets Manager's `GetSecretValue`, the one AWS call a function
//! makes (at start): signed with SigV4 by `aws-sigv4` (the SDK's own
//! signer), with the credentials and region that aws-config's environment
//! providers read (where Lambda puts the execution role's), and sent as one
//! HTTP/1.1 request on a connection of its own (hyper, already linked for
//! the runtime API; rustls with the webpki roots, as for the database).
//!
//! Credentials and region come from the process environment only (the
//! other settings from the variables given, which at start are the same):
//! Lambda always puts the role's credentials there; the SDK's other sources
//! (profiles, SSO, IMDS, container credentials) are not read.
//!
//! Not the SDK's client: aws-sdk-secretsmanager with its HTTP/2 client, its
//! credential chain (profiles, SSO, IMDS, STS) and its retry machinery was a
//! third of each function's binary for this one call
//! (docs/benchmarks/history.md, "The run before it (2026-12-06): issue
//! 25's two round trips", "Zip size"). Secrets Manager speaks HTTP/1.1;
//! the start-up's 5 s bound (`secrets.rs`) is its retry policy: a failed
//! start is retried by the platform, with a clear error in the log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use aws_config::environment::{
    EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider,
};
use aws_config::meta::region::ProvideRegion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, crypto::aws_lc_rs};

use super::setting;
use crate::ca_bundle::{CaBundle, public_roots_and};

/// Why a read failed, as the caller tells a missing version from a fault.
#[derive(Debug)]
pub(super) enum ReadError {
    /// `ResourceNotFoundException`: no such secret, or no version staged so.
    NotFound,
    Failed(String),
}

/// A client of one Secrets Manager endpoint, with the credentials of this
/// start.
pub(super) struct SecretsManager {
    endpoint: Uri,
    region: String,
    credentials: Credentials,
    /// For an `https` endpoint.
    tls: Option<TlsConnector>,
}

impl SecretsManager {
    /// The endpoint (`AWS_ENDPOINT_URL_SECRETS_MANAGER`, else
    /// `AWS_ENDPOINT_URL`, else the region's), region (`AWS_REGION`) and
    /// credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`) of this environment; `AWS_CA_BUNDLE` adds a CA
    /// to the trusted roots (an endpoint behind a private CA).
    pub(super) async fn from_environment(vars: &HashMap<String, String>) -> Result<Self, String> {
        let region = EnvironmentVariableRegionProvider::new()
            .region()
            .await
            .ok_or("no AWS region: set AWS_REGION (Lambda sets it)")?
            .to_string();
        let credentials = EnvironmentVariableCredentialsProvider::new()
            .provide_credentials()
            .await
            .map_err(|_| {
                "no AWS credentials in the environment (AWS_ACCESS_KEY_ID, \
                 AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN): Lambda sets them from the \
                 function's role; elsewhere export them, for a profile with \
                 eval \"$(aws configure export-credentials --format env)\""
                    .to_owned()
            })?;
        let endpoint = endpoint(vars, &region)?;
        let tls = match endpoint.scheme_str() {
            Some("https") => Some(tls_connector(vars)?),
            _ => None,
        };
        Ok(Self {
            endpoint,
            region,
            credentials,
            tls,
        })
    }

    /// The `SecretString` of the version of `secret_id` staged `stage`.
    pub(super) async fn get_secret_value(
        &self,
        secret_id: &str,
        stage: &str,
    ) -> Result<String, ReadError> {
        let body = serde_json::json!({ "SecretId": secret_id, "VersionStage": stage }).to_string();
        let request = self.signed_request(body).map_err(ReadError::Failed)?;
        let (status, body) = self
            .send(request)
            .await
            .map_err(|e| ReadError::Failed(format!("cannot reach {}: {e}", self.endpoint)))?;
        if status != StatusCode::OK {
            return Err(service_error(status, &body));
        }
        let answer: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| ReadError::Failed(format!("an answer that is not JSON: {e}")))?;
        answer["SecretString"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ReadError::Failed("the secret has no SecretString".to_owned()))
    }

    /// The `GetSecretValue` request for `body`, signed now.
    fn signed_request(&self, body: String) -> Result<Request<Full<Bytes>>, String> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let body = Bytes::from(body);
        // hyper's connection-level client sends the headers it is given:
        // `host` too (signed, as the service checks it).
        let host = self
            .endpoint
            .authority()
            .ok_or("the endpoint has no host")?
            .as_str();
        // The request line in origin form (`POST / HTTP/1.1`), as a client
        // that is not talking to a proxy sends it: hyper's connection-level
        // client writes the URI it is given as it is. The signature covers
        // the same path and the `host` header.
        let path: Uri = self
            .endpoint
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|_| "the endpoint's path is not a URI path")?;
        let mut request = Request::post(path)
            .header("host", host)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", "secretsmanager.GetSecretValue")
            .body(())
            .map_err(|e| e.to_string())?;
        let identity = self.credentials.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("secretsmanager")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let headers = request
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
        let signable = SignableRequest::new(
            "POST",
            self.endpoint.to_string(),
            headers,
            SignableBody::Bytes(&body),
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| format!("cannot sign the request: {e}"))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut request);
        Ok(request.map(|()| Full::new(body)))
    }

    /// One request on a new connection: its status and body.
    async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), Box<dyn std::error::Error + Send + Sync>> {
        let host = self.endpoint.host().ok_or("no host")?;
        let port = self.endpoint.port_u16().unwrap_or(match self.tls {
            Some(_) => 443,
            None => 80,
        });
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => exchange(tcp, request).await,
            Some(tls) => {
                let name = ServerName::try_from(host.to_owned())?;
                exchange(tls.connect(name, tcp).await?, request).await
            }
        }
    }
}

async fn exchange<S>(
    stream: S,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), Box<dyn std::error::Error + Send + Sync>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    /// Stops the connection's task when the exchange ends, or is dropped by
    /// the start-up's timeout: no socket outlives its request.
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let _connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// The service's error, read: its JSON protocol's `__type` and `message`,
/// or the XML `<Code>` and `<Message>` that the signature check answers with.
fn service_error(status: StatusCode, body: &[u8]) -> ReadError {
    let (kind, message) = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(answer) => {
            // `__type` may carry a namespace: `com.amazonaws...#ResourceNotFoundException`.
            let kind = answer["__type"].as_str().unwrap_or("");
            let kind = kind.rsplit('#').next().unwrap_or(kind).to_owned();
            let message = answer["message"]
                .as_str()
                .or_else(|| answer["Message"].as_str())
                .unwrap_or("")
                .to_owned();
            (kind, message)
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            (xml_text(&text, "Code"), xml_text(&text, "Message"))
        }
    };
    if kind == "ResourceNotFoundException" {
        return ReadError::NotFound;
    }
    // Its first line, at most 200 characters: a signature error's message
    // may go on with the canonical request, session token included, and
    // this reason is a start-up error's one line in the log.
    let message: String = message
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    let reason = format!("{status} {kind}: {message}");
    ReadError::Failed(reason.trim_end_matches([' ', ':']).to_owned())
}

/// The text of the first `<tag>` of an XML document, or "".
fn xml_text(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    xml.find(&open)
        .map(|start| &xml[start + open.len()..])
        .and_then(|rest| rest.find('<').map(|end| rest[..end].to_owned()))
        .unwrap_or_default()
}

/// `AWS_ENDPOINT_URL_SECRETS_MANAGER`, else `AWS_ENDPOINT_URL` (both as
/// the SDKs read them, unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`), else
/// the region's own endpoint.
fn endpoint(vars: &HashMap<String, String>, region: &str) -> Result<Uri, String> {
    let ignore_configured = setting(vars, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let configured = ["AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL"]
        .into_iter()
        .filter(|_| !ignore_configured)
        .find_map(|name| setting(vars, name).map(|url| (name, url)));
    let Some((name, url)) = configured else {
        // The SDKs' endpoint rules for the `aws` and `aws-cn` partitions
        // (another partition: set AWS_ENDPOINT_URL_SECRETS_MANAGER).
        let flag = |name| setting(vars, name).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let service = if flag("AWS_USE_FIPS_ENDPOINT") {
            "secretsmanager-fips"
        } else {
            "secretsmanager"
        };
        let suffix = match (
            region.starts_with("cn-"),
            flag("AWS_USE_DUALSTACK_ENDPOINT"),
        ) {
            (false, false) => "amazonaws.com",
            (false, true) => "api.aws",
            (true, false) => "amazonaws.com.cn",
            (true, true) => "api.amazonwebservices.com.cn",
        };
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!("`{region}` is not a region (AWS_REGION)"));
        }
        return format!("https://{service}.{region}.{suffix}/")
            .parse()
            .map_err(|_| format!("`{region}` is not a region (AWS_REGION)"));
    };
    let uri: Uri = url
        .parse()
        .map_err(|_| format!("{name}: `{url}` is not a URL"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some(scheme), Some(_))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            Ok(uri)
        }
        _ => Err(format!("{name}: `{url}` is not an http(s):// URL")),
    }
}

/// rustls with the webpki roots (AWS's CAs among them), and `AWS_CA_BUNDLE`'s.
fn tls_connector(vars: &HashMap<String, String>) -> Result<TlsConnector, String> {
    let bundle = setting(vars, "AWS_CA_BUNDLE")
        .map(|path| CaBundle::read("AWS_CA_BUNDLE", path))
        .transpose()
        .map_err(|e| e.to_string())?;
    let roots = public_roots_and(bundle.as_ref().map(|b| &*b.pem))
        .map_err(|e| format!("AWS_CA_BUNDLE: {e}"))?;
    let config = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_endpoint_is_the_configured_one_else_the_regions() {
        let at = |pairs: &[(&str, &str)], region| endpoint(&vars(pairs), region);
        assert_eq!(
            at(&[], "eu-west-1").unwrap().to_string(),
            "https://secretsmanager.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            at(&[], "cn-north-1").unwrap().to_string(),
            "https://secretsmanager.cn-north-1.amazonaws.com.cn/"
        );
        assert_eq!(
            at(
                &[("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")],
                "us-east-1"
            )
            .unwrap()
            .to_string(),
            "http://127.0.0.1:5000/"
        );
        // The service's own variable first.
        let both = [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
            (
                "AWS_ENDPOINT_URL_SECRETS_MANAGER",
                "https://vpce.example:8443",
            ),
        ];
        assert_eq!(
            at(&both, "us-east-1").unwrap().to_string(),
            "https://vpce.example:8443/"
        );
        let ignored = [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "TRUE"),
        ];
        assert_eq!(
            at(&ignored, "us-east-1").unwrap().to_string(),
            "https://secretsmanager.us-east-1.amazonaws.com/"
        );
        let e = at(&[("AWS_ENDPOINT_URL", "ftp://x")], "us-east-1").unwrap_err();
        assert!(
            e.contains("AWS_ENDPOINT_URL") && e.contains("http(s)"),
            "{e}"
        );
        let e = at(&[("AWS_ENDPOINT_URL", "localhost")], "us-east-1").unwrap_err();
        assert!(e.contains("AWS_ENDPOINT_URL"), "{e}");
        assert_eq!(
            at(&[("AWS_USE_FIPS_ENDPOINT", "true")], "us-east-1")
                .unwrap()
                .to_string(),
            "https://secretsmanager-fips.us-east-1.amazonaws.com/"
        );
        assert_eq!(
            at(&[("AWS_USE_DUALSTACK_ENDPOINT", "TRUE")], "eu-west-1")
                .unwrap()
                .to_string(),
            "https://secretsmanager.eu-west-1.api.aws/"
        );
        assert_eq!(
            at(&[("AWS_USE_DUALSTACK_ENDPOINT", "true")], "cn-north-1")
                .unwrap()
                .to_string(),
            "https://secretsmanager.cn-north-1.api.amazonwebservices.com.cn/"
        );
        let e = at(&[], "bad region").unwrap_err();
        assert!(e.contains("AWS_REGION"), "{e}");
        let e = at(&[], "evil.example/x").unwrap_err();
        assert!(e.contains("AWS_REGION"), "{e}");
    }

    /// What goes on the wire, as a server that is not a proxy expects it:
    /// `POST / HTTP/1.1` (origin form, not the absolute URI), the `host`
    /// the signature covers, the JSON protocol's headers, and a SigV4
    /// `authorization` of these credentials with their session token.
    #[tokio::test]
    async fn the_request_is_an_origin_form_post_signed_for_secrets_manager() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                head.extend_from_slice(&buf[..n]);
            }
            let body = r#"{"SecretString":" the value "}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(head).unwrap().to_lowercase()
        });
        let client = SecretsManager {
            endpoint: format!("http://127.0.0.1:{port}").parse().unwrap(),
            region: "eu-west-1".into(),
            credentials: Credentials::new(
                "AKIDTEST",
                "secret-key",
                Some("the-token".into()),
                None,
                "test",
            ),
            tls: None,
        };
        let value = client
            .get_secret_value("tms/db", "AWSCURRENT")
            .await
            .unwrap();
        assert_eq!(value, " the value ", "the SecretString as stored");
        let head = server.await.unwrap();
        assert!(head.starts_with("post / http/1.1\r\n"), "{head}");
        for line in [
            format!("host: 127.0.0.1:{port}\r\n"),
            "x-amz-target: secretsmanager.getsecretvalue\r\n".to_owned(),
            "content-type: application/x-amz-json-1.1\r\n".to_owned(),
            "x-amz-security-token: the-token\r\n".to_owned(),
        ] {
            assert!(head.contains(&line), "{line:?} in {head}");
        }
        let authorization = head
            .lines()
            .find(|l| l.starts_with("authorization: "))
            .expect("signed");
        assert!(
            authorization.starts_with("authorization: aws4-hmac-sha256 credential=akidtest/")
                && authorization.contains("/eu-west-1/secretsmanager/aws4_request")
                && authorization.contains("host")
                && authorization.contains("x-amz-security-token")
                && !authorization.contains("secret-key"),
            "{authorization}"
        );
    }

    #[test]
    fn the_services_errors_are_read() {
        let not_found = serde_json::json!({
            "__type": "ResourceNotFoundException",
            "message": "Secrets Manager can't find the specified secret value for staging label: AWSPENDING"
        });
        let json = |v: &serde_json::Value| v.to_string().into_bytes();
        assert!(matches!(
            service_error(StatusCode::BAD_REQUEST, &json(&not_found)),
            ReadError::NotFound
        ));
        let namespaced = serde_json::json!({
            "__type": "com.amazonaws.secretsmanager#ResourceNotFoundException"
        });
        assert!(matches!(
            service_error(StatusCode::BAD_REQUEST, &json(&namespaced)),
            ReadError::NotFound
        ));
        let denied = serde_json::json!({
            "__type": "AccessDeniedException",
            "Message": "not authorized to perform secretsmanager:GetSecretValue"
        });
        let ReadError::Failed(e) = service_error(StatusCode::BAD_REQUEST, &json(&denied)) else {
            panic!("access denied is a failure");
        };
        assert!(
            e.contains("400")
                && e.contains("AccessDeniedException")
                && e.contains("not authorized"),
            "{e}"
        );
        let xml = b"<ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code>\
            <Message>The request signature we calculated does not match</Message></Error></ErrorResponse>";
        let ReadError::Failed(e) = service_error(StatusCode::FORBIDDEN, xml) else {
            panic!("a bad signature is a failure");
        };
        assert_eq!(
            e,
            "403 Forbidden SignatureDoesNotMatch: The request signature we calculated does not match"
        );
        // A message that goes on with the canonical request (the session
        // token in it) keeps its first line only, at most 200 characters.
        let long = serde_json::json!({
            "__type": "InvalidSignatureException",
            "message": format!("The request signature we calculated does not match. {}\nThe Canonical String for this request should have been\nx-amz-security-token:the-session-token", "x".repeat(300))
        });
        let ReadError::Failed(e) = service_error(StatusCode::BAD_REQUEST, &json(&long)) else {
            panic!("a bad signature is a failure");
        };
        assert!(!e.contains("the-session-token") && !e.contains('\n'), "{e}");
        assert!(e.len() < 260, "{e}");
        let ReadError::Failed(e) = service_error(StatusCode::BAD_GATEWAY, b"") else {
            panic!("a proxy's error is a failure");
        };
        assert_eq!(e, "502 Bad Gateway");
    }
}
