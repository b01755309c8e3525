//! A Lambda runtime API emulator, the same protocol that Lambda and
//! `cargo lambda watch` speak: a function binary started with
//! `AWS_LAMBDA_RUNTIME_API` pointing here long-polls for events and posts
//! each response back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{Process, test_vars};

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Result<Value, Value>>>>>;

#[derive(Clone)]
struct Emulator {
    events: Arc<Mutex<mpsc::Receiver<(String, Value)>>>,
    pending: Pending,
}

pub struct LambdaRuntime {
    pub addr: SocketAddr,
    events: mpsc::Sender<(String, Value)>,
    pending: Pending,
    counter: std::sync::atomic::AtomicU64,
}

impl LambdaRuntime {
    pub async fn start() -> Self {
        let (tx, rx) = mpsc::channel(16);
        let pending: Pending = Arc::default();
        let emulator = Emulator {
            events: Arc::new(Mutex::new(rx)),
            pending: pending.clone(),
        };
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(respond),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(fail))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(emulator);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            addr,
            events: tx,
            pending,
            counter: Default::default(),
        }
    }

    /// Starts a function binary against this emulator, as Lambda would.
    pub fn start_function(&self, name: &str, extra: &[(&str, &str)]) -> Process {
        let mut vars = test_vars(extra);
        for (k, v) in [
            ("AWS_LAMBDA_RUNTIME_API", self.addr.to_string().as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", name),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "test-stream"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "test-group"),
            ("AWS_REGION", "us-east-1"),
        ] {
            vars.entry(k.to_owned()).or_insert_with(|| v.to_owned());
        }
        Process::start(name, &vars)
    }

    /// Invokes the function with one event; returns its response payload and
    /// the request id the function was given.
    pub async fn invoke(&self, event: Value) -> (Value, String) {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request_id = format!("lambda-req-{n}-{}", uuid_like());
        let (tx, rx) = oneshot::channel();
        self.pending.lock().await.insert(request_id.clone(), tx);
        self.events
            .send((request_id.clone(), event))
            .await
            .expect("queue event");
        let outcome = tokio::time::timeout(Duration::from_secs(15), rx)
            .await
            .expect("the function answers within 15 s")
            .expect("answer delivered");
        match outcome {
            Ok(payload) => (payload, request_id),
            Err(error) => panic!("the function reported an invocation error: {error}"),
        }
    }
}

fn uuid_like() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{nanos:x}")
}

async fn next(State(emulator): State<Emulator>) -> Response {
    let Some((id, event)) = emulator.events.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        + 30_000;
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        headers.insert(name, HeaderValue::from_str(&value).expect("header"));
    };
    set("lambda-runtime-aws-request-id", id);
    set("lambda-runtime-deadline-ms", deadline.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:test".into(),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-5e6722a7-cc56xmpl46db7ae02d4da47e".into(),
    );
    set("content-type", "application/json".into());
    (headers, event.to_string()).into_response()
}

async fn respond(State(e): State<Emulator>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    deliver(
        &e,
        &id,
        Ok(serde_json::from_slice(&body).unwrap_or(Value::Null)),
    )
    .await
}

async fn fail(State(e): State<Emulator>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    deliver(
        &e,
        &id,
        Err(serde_json::from_slice(&body).unwrap_or(Value::Null)),
    )
    .await
}

async fn init_error(body: Bytes) -> StatusCode {
    eprintln!("init error: {}", String::from_utf8_lossy(&body));
    StatusCode::ACCEPTED
}

async fn deliver(e: &Emulator, id: &str, outcome: Result<Value, Value>) -> StatusCode {
    if let Some(tx) = e.pending.lock().await.remove(id) {
        let _ = tx.send(outcome);
    }
    StatusCode::ACCEPTED
}
