//! One entry point for every function: the same binary runs on AWS Lambda
//! (through `lambda_http`) and, when no Lambda runtime API is present, as plain
//! HTTP for Alibaba Function Compute's custom runtime and for local runs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::{Router, ServiceExt};
use http::HeaderValue;
use http_body_util::{BodyExt, Full};
use lambda_http::lambda_runtime::{LambdaEvent, Service, service_fn};
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, TransformResponse};
use tokio::net::TcpListener;
use tracing_subscriber::filter::Targets;

use crate::config::{Config, ConfigError, Platform, Section};
use crate::error::ApiError;
use crate::http::{App, REQUEST_ID, app};

/// The port a function serves plain HTTP on when the settings name none.
pub const DEFAULT_PORT: u16 = 9000;

/// Why a function could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

/// Dropping it writes the log lines still queued (none on Lambda).
pub type LogGuard = Option<crate::log_writer::Flush>;

/// JSON log lines on stderr, `RUST_LOG` to filter (default `info`). Set up once.
///
/// `RUST_LOG` is a list of `target=level` and a bare default level, such as
/// `info,sso_login=debug` (tracing-subscriber's `Targets`: the same
/// directives as its `EnvFilter` without span and field filters, whose
/// regular expressions cost each binary a quarter of a MiB); one it cannot
/// read is logged and replaced by `info`.
///
/// On Lambda each line is written before the request's response is handed
/// back (a frozen or recycled instance must not lose lines of finished
/// requests). Elsewhere (FC, local) a thread writes them ([`crate::log_writer`]),
/// off the requests' path; the returned guard writes what is still queued
/// when `start` returns.
pub fn init_tracing(on_lambda: bool) -> LogGuard {
    let (filter, unreadable) = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let guard = if on_lambda {
        install_log(filter, std::io::stderr);
        None
    } else {
        match crate::log_writer::spawn(std::io::stderr()) {
            Ok((writer, flush)) => {
                // The access lines (metrics.rs) take the same way as tracing's.
                crate::log_writer::route_stderr_lines_to(&writer);
                install_log(filter, writer).then_some(flush)
            }
            Err(_) => {
                install_log(filter, std::io::stderr);
                None
            }
        }
    };
    if let Some(problem) = unreadable {
        tracing::warn!(%problem, "RUST_LOG is not a list of target=level: logging at info");
    }
    // A panic's message is logged as JSON too; its response is the catch-panic layer's.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "panic");
    }));
    guard
}

/// The filter of `RUST_LOG` (unset: `info`), and why it could not be read.
fn log_filter(rust_log: Option<&str>) -> (Targets, Option<String>) {
    let info = || Targets::new().with_default(tracing::Level::INFO);
    // Each directive trimmed and empty ones dropped, as EnvFilter did:
    // `Targets` would read `info,` as "every target at TRACE" and
    // `info, sso_login=debug` as a target named " sso_login".
    let directives: Vec<&str> = rust_log
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return (info(), None);
    }
    match directives.join(",").parse::<Targets>() {
        Ok(filter) => (filter, None),
        Err(e) => (info(), Some(e.to_string())),
    }
}

/// Installs [`log_subscriber`] as the process's; false if one was already.
fn install_log<W>(filter: Targets, writer: W) -> bool
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::util::SubscriberInitExt;
    log_subscriber(filter, writer).try_init().is_ok()
}

/// JSON lines, one per event, to `writer`, through `filter`.
fn log_subscriber<W>(filter: Targets, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    tracing_subscriber::fmt()
        // The builder's own default (INFO) would cap what `filter` lets through.
        .with_max_level(tracing::level_filters::LevelFilter::TRACE)
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(writer)
        .finish()
        .with(filter)
}

/// A deployed function's `main`: [`start`] on [`function_runtime`], one
/// thread.
///
/// One thread, not tokio's one per core: a login hands its work between
/// four tasks (its request's, its own, the Redis and the PostgreSQL
/// connections'), and on a multi-thread runtime each hand-off may wake the
/// other worker. Measured in alternating runs (docs/benchmarks/history.md,
/// "The run before it (2026-12-06, evening)"), one thread
/// took sso-login's CPU per login from 86 to 56 µs and its logins/s up 15 %,
/// with health and conversations unchanged. Lambda sends an instance one
/// invocation at a time; an instance that serves many at once (an FC
/// instance, or Lambda Managed Instances' `AWS_LAMBDA_MAX_CONCURRENCY`)
/// gets one core's worth (above 15,000 logins/s, more than its stores
/// take), and more come from more instances. The log lines are written by
/// a thread of their own ([`crate::log_writer`]); only when stderr falls a
/// whole MiB behind does a logging request, and with it this thread, wait.
pub fn main<S: Section>(
    build: impl AsyncFnOnce(&Config, S) -> Result<Router, StartError>,
) -> ExitCode {
    match function_runtime() {
        Ok(runtime) => runtime.block_on(start(build)),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The runtime a function runs on ([`main`]; the bench's store-work loop
/// too): one thread, with I/O and timers, the one place that chooses it.
pub fn function_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The whole of a function's `main`: read the config and the sections `S`
/// that the function's `build` takes, build its routes, wrap them in the
/// shared layers, serve.
/// A start-up error is one line on stderr naming its cause, and exit code 1.
pub async fn start<S: Section>(
    build: impl AsyncFnOnce(&Config, S) -> Result<Router, StartError>,
) -> ExitCode {
    let vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    let log = init_tracing(matches!(
        Platform::from_vars(&vars),
        Platform::Lambda { .. }
    ));
    let result = async {
        let (config, sections) = Config::load_from(vars).await?;
        let routes = build(&config, sections).await?;
        serve(app(routes, &config), &config)
            .await
            .map_err(StartError::Other)
    }
    .await;
    // The queued log lines first (a start-up error's line comes last).
    drop(log);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One plain line: what an operator reads in the platform's log.
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves through the Lambda runtime API on Lambda (`AWS_LAMBDA_RUNTIME_API`
/// set), else as plain HTTP on the configured address: all interfaces (FC
/// needs that) and port 9000 unless `LISTEN_HOST`, `PORT` or
/// `FC_CUSTOM_LISTEN_PORT` say otherwise.
pub async fn serve(app: App, config: &Config) -> anyhow::Result<()> {
    if let Platform::Lambda { .. } = config.platform {
        tracing::info!("serving through the Lambda runtime API");
        // One invocation at a time, or as many as AWS_LAMBDA_MAX_CONCURRENCY
        // allows (Lambda Managed Instances; `cargo lambda watch` sets it too).
        let mut handler = LambdaHandler::new(app);
        return lambda_http::lambda_runtime::run_concurrent(service_fn(move |event| {
            handler.call(event)
        }))
        .await
        .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"));
    }
    let addr = config
        .listen
        .or(SocketAddr::new([0, 0, 0, 0].into(), DEFAULT_PORT));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    serve_http(listener, app).await
}

/// What the Lambda runtime calls: `lambda_http`'s adapter around the app,
/// except for an event that `lambda_http` cannot turn into a request (it
/// panics on a body marked base64 that is not, a `Host` that is no URL
/// authority, ...): that is a 400, where the runtime would report an
/// invocation error that the client sees as a 502.
#[derive(Clone)]
pub struct LambdaHandler(Adapter<'static, WholeResponse, WholeBodies>);

/// A response whose body is read whole: Lambda answers with one payload
/// anyway, and its concurrent runtime needs a body it can share between
/// threads (axum's streaming body cannot be).
pub type WholeResponse = http::Response<Full<Bytes>>;

impl LambdaHandler {
    pub fn new(app: App) -> Self {
        Self(Adapter::from(WholeBodies(app)))
    }

    /// The response to one event. (The app is always ready: a `Router`
    /// needs no `poll_ready`.)
    pub fn call(
        &mut self,
        event: LambdaEvent<LambdaRequest>,
    ) -> TransformResponse<'static, WholeResponse, Infallible> {
        let origin = event.payload.request_origin();
        let request_id = event.context.request_id.clone();
        let adapter = &mut self.0;
        // The conversion runs in `call`, before the app: only it can panic here
        // (the app's own panics are the catch-panic layer's).
        catch_unwind(AssertUnwindSafe(|| adapter.call(event))).unwrap_or_else(|_| {
            let mut response = ApiError::BadRequest("Invalid request".into()).into_response();
            if let Ok(id) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert(REQUEST_ID, id);
            }
            TransformResponse::Request(origin, Box::pin(async { Ok(whole(response).await) }))
        })
    }
}

/// The app, answering [`WholeResponse`]s.
#[derive(Clone)]
pub struct WholeBodies(App);

impl Service<lambda_http::Request> for WholeBodies {
    type Response = WholeResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<WholeResponse, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<lambda_http::Request>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, request: lambda_http::Request) -> Self::Future {
        let response = self.0.call(request);
        Box::pin(async move { Ok(whole(response.await?).await) })
    }
}

async fn whole(response: Response) -> WholeResponse {
    let (parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            // In-memory bodies do not fail; if one ever does, say so.
            tracing::error!(error = %e, "cannot read a response body");
            Bytes::new()
        }
    };
    http::Response::from_parts(parts, Full::new(bytes))
}

/// Plain HTTP on a bound listener until SIGTERM or Ctrl-C, finishing in-flight requests.
pub async fn serve_http(listener: TcpListener, app: App) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    axum::serve(listener, ServiceExt::<Request>::into_make_service(app))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn rust_log_is_a_list_of_targets_and_levels() {
        use tracing::Level;
        let (unset, problem) = log_filter(None);
        assert!(problem.is_none());
        assert!(unset.would_enable("sso_login", &Level::INFO));
        assert!(!unset.would_enable("sso_login", &Level::DEBUG));
        let (filter, problem) = log_filter(Some("warn,sso_login=debug"));
        assert!(problem.is_none());
        assert!(filter.would_enable("sso_login::users", &Level::DEBUG));
        assert!(!filter.would_enable("shared", &Level::INFO));
        assert!(filter.would_enable("shared", &Level::WARN));
        // Spaces and a trailing comma, as people write lists.
        let (empty, problem) = log_filter(Some(" , "));
        assert!(problem.is_none());
        assert!(
            empty.would_enable("shared", &Level::INFO),
            "no directive: info"
        );
        let (filter, problem) = log_filter(Some("info, sso_login=debug,"));
        assert!(problem.is_none());
        assert!(filter.would_enable("sso_login", &Level::DEBUG));
        assert!(!filter.would_enable("shared", &Level::DEBUG));
        assert!(!filter.would_enable("hyper", &Level::TRACE));
        let (fallback, problem) = log_filter(Some("sso_login=loud"));
        assert!(problem.is_some(), "an unreadable RUST_LOG is reported");
        assert!(fallback.would_enable("shared", &Level::INFO));
        assert!(!fallback.would_enable("shared", &Level::DEBUG));
    }

    /// What `RUST_LOG` lets through reaches the log, debug included: the
    /// subscriber adds no cap of its own.
    #[test]
    fn the_log_writes_what_rust_log_asks_for() {
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let (filter, _) = log_filter(Some("info,shared=debug"));
        let subscriber = log_subscriber(filter, move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "shared::db", "kept");
            tracing::debug!(target: "sqlx", "dropped");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("\"kept\""), "{text}");
        assert!(!text.contains("dropped"), "{text}");
        assert!(text.starts_with('{'), "JSON lines: {text}");
    }
}
