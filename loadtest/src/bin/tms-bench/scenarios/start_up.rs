use std::io::Read;
use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use testkit::free_port;
use testkit::services::SecretsManager;

use crate::load::{median, p50};
use crate::report::{Row, Target};
use crate::served::{common_vars, http_status};
use crate::{Bench, JWT_SECRET, SSO_SECRET};

const STARTS: usize = 10;

impl Bench<'_> {
    /// Process start to first answer, in plain HTTP and under a Lambda
    /// runtime API, with and without secrets from a local Secrets Manager.
    pub fn start_up(&mut self) -> anyhow::Result<()> {
        println!("== start-up ({STARTS} starts each, median)");
        let secrets = SecretsManager::start();
        // Health's one secret: the database's URL with its password (the
        // API token key is not health's since issue 24, so it is not read).
        let arn = self
            .rt
            .block_on(secrets.create(&format!("bench-db-{}", std::process::id()), &self.pg.url()));
        // What the local Secrets Manager itself takes to answer (moto is a
        // Python server on the same cores): part of every start with secrets.
        let client = reqwest::Client::new();
        let read = serde_json::json!({ "SecretId": arn });
        let moto_ms = self.rt.block_on(p50(20, async |_| {
            secrets
                .call(&client, "GetSecretValue", read.clone())
                .await?;
            Ok(())
        }))?;
        println!("   moto's own GetSecretValue p50 (plain HTTP client, warm): {moto_ms:.2} ms");
        self.notes.push(format!(
            "start-up with secrets includes one GetSecretValue answer from moto, {moto_ms:.2} ms p50 alone on a warm connection"
        ));
        let mut secret_vars: Vec<(&str, String)> = secrets.aws_vars();
        secret_vars.push(("DATABASE_URL_SECRET_ARN", arn));
        for name in &xtask::functions::of_this_workspace() {
            self.start_up_of(name, &secret_vars, moto_ms)?;
        }
        Ok(())
    }

    /// One function's starts: without secrets, and for health with them too.
    fn start_up_of(
        &mut self,
        name: &str,
        secret_vars: &[(&str, String)],
        moto_ms: f64,
    ) -> anyhow::Result<()> {
        let vars: Vec<(&str, String)> = vec![
            ("REDIS_URL", self.redis.url()),
            ("SSO_JWT_SECRET", SSO_SECRET.into()),
        ];
        let mut without_secrets = f64::NAN;
        for with_secrets in [false, true] {
            if with_secrets && name != "health" {
                continue;
            }
            let mut vars = vars.clone();
            vars.push(("JWT_SECRET", JWT_SECRET.into()));
            if with_secrets {
                vars.extend(secret_vars.iter().cloned());
            } else {
                vars.push(("DATABASE_URL", self.pg.url()));
            }
            let suffix = if with_secrets {
                ", secrets from Secrets Manager"
            } else {
                ""
            };
            let http = median((0..STARTS).map(|_| self.first_http_answer(name, &vars)))?;
            let what = if name == "health" {
                "first 200"
            } else {
                "first answer"
            };
            let figure = format!("{name}: start to {what}, HTTP{suffix}");
            if with_secrets {
                // The start without secrets, plus moto's own answer, plus 1 ms.
                let bound = without_secrets + moto_ms + 1.0;
                self.rows.push(Row {
                    figure,
                    function: format!("{http:.2} ms"),
                    reference: format!(
                        "{bound:.2} ms (without {without_secrets:.2} + moto {moto_ms:.2} + 1)"
                    ),
                    ratio: http / bound,
                    target: Target::AtMost(1.0),
                });
            } else {
                without_secrets = http;
                self.limit(&figure, http, 5.0);
            }
            let lambda = median((0..STARTS).map(|_| self.first_lambda_next(name, &vars)))?;
            self.limit(
                &format!("{name}: Lambda init to first /next{suffix}"),
                lambda,
                10.0,
            );
        }
        Ok(())
    }

    fn first_http_answer(&self, name: &str, vars: &[(&str, String)]) -> anyhow::Result<f64> {
        let port = free_port();
        let started = Instant::now();
        let mut child =
            testkit::program_command(&self.bin_dir.join(name), common_vars(), Some(port))
                .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
        let path = if name == "health" { "/health" } else { "/" };
        let result = loop {
            if let Some(status) = http_status(port, path) {
                break if name == "health" && status != 200 {
                    Err(anyhow::anyhow!("{name} answered {status}"))
                } else {
                    Ok(started.elapsed())
                };
            }
            if started.elapsed() > Duration::from_secs(10) {
                break Err(anyhow::anyhow!("{name} did not answer"));
            }
            std::thread::sleep(Duration::from_micros(100));
        };
        let _ = child.kill();
        let _ = child.wait();
        Ok(result?.as_secs_f64() * 1000.0)
    }

    /// From exec to the function's first `GET .../invocation/next` on a
    /// minimal runtime API that answers nothing.
    fn first_lambda_next(&self, name: &str, vars: &[(&str, String)]) -> anyhow::Result<f64> {
        let api = TcpListener::bind("127.0.0.1:0")?;
        let api_addr = api.local_addr()?.to_string();
        let started = Instant::now();
        let mut child = testkit::program_command(&self.bin_dir.join(name), common_vars(), None)
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .env("AWS_LAMBDA_RUNTIME_API", &api_addr)
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
            .env("AWS_REGION", "us-east-1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let result = first_request(&api, name, started);
        let _ = child.kill();
        let _ = child.wait();
        Ok(result?.as_secs_f64() * 1000.0)
    }
}

/// Time from `started` to the first request's head on `api`, which must be
/// the runtime's `GET .../invocation/next`.
fn first_request(api: &TcpListener, name: &str, started: Instant) -> anyhow::Result<Duration> {
    api.set_nonblocking(true)?;
    loop {
        match api.accept() {
            Ok((mut conn, _)) => {
                conn.set_nonblocking(false)?;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte)? == 1 {
                    head.push(byte[0]);
                }
                let elapsed = started.elapsed();
                let head = String::from_utf8_lossy(&head);
                return if head.starts_with("GET /2018-06-01/runtime/invocation/next") {
                    Ok(elapsed)
                } else {
                    Err(anyhow::anyhow!(
                        "{name} asked first: {}",
                        head.lines().next().unwrap_or("")
                    ))
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if started.elapsed() > Duration::from_secs(10) {
                    anyhow::bail!("{name} never asked for an event");
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
