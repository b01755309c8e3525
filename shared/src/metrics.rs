//! Metrics inside the access log: one JSON line per request that is both the
//! access log line and the request's figures (its outcome, latency, status
//! class, cold start). On Lambda the line also carries CloudWatch Embedded
//! Metric Format metadata (`_aws`), so CloudWatch Logs turns it into metrics
//! with no API call on the request path; on FC (and locally) the same figures
//! are plain fields that SLS can query and chart.
//!
//! A handler tells what a request amounted to by returning an [`Outcome`]
//! among its response parts; `edge` (`http.rs`) writes the line.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::{IntoResponseParts, ResponseParts};
use serde::Serialize;
use serde_json::Value;

use crate::clock::Rfc3339;
use crate::config::{Config, Platform};

/// What a request amounted to for the product (a login blocked as a replay,
/// a conversation created), named by the function that served it: the
/// `outcome` field of the access line, and on Lambda a dimension of the
/// `requests` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome(&'static str);

impl Outcome {
    /// `name` is a metric dimension value: lower-case words joined by `_`.
    pub const fn new(name: &'static str) -> Self {
        Self(name)
    }

    pub fn name(self) -> &'static str {
        self.0
    }
}

/// An `Outcome` among a handler's response parts goes into the response's
/// extensions, where `edge` reads it.
impl IntoResponseParts for Outcome {
    type Error = Infallible;

    fn into_response_parts(self, mut parts: ResponseParts) -> Result<ResponseParts, Infallible> {
        parts.extensions_mut().insert(self);
        Ok(parts)
    }
}

/// The figures of one served request.
#[derive(Debug, Clone)]
pub struct AccessEntry<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    /// The matched route (`/api/v1/conversations/{id}`), `-` for none: a
    /// bounded set of values, so it can be a metric dimension.
    pub route: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub latency_ms: f64,
    pub outcome: Option<Outcome>,
    /// The request's user, once known (the API token's, ended or not, or
    /// the one a login signed in): `shared::request_scope::names_user`.
    /// A field, never a metric dimension.
    pub user_id: Option<i64>,
    /// The first request this instance serves.
    pub cold_start: bool,
}

/// Writes the access lines of one function.
#[derive(Debug, Clone)]
pub struct AccessLog {
    source: Source,
    /// Whether this application (one per instance) has served a request.
    /// Kept with the application, not in the process: the tests serve many
    /// applications in one process, and each one's first request is its own.
    served_a_request: Arc<AtomicBool>,
}

/// Who writes a function's metric lines, and where they count.
#[derive(Debug, Clone)]
struct Source {
    function: Option<Arc<str>>,
    /// Set on Lambda only: there the line carries EMF metadata.
    emf_namespace: Option<Arc<str>>,
}

impl Source {
    fn of(config: &Config) -> Self {
        Self {
            function: config.platform.function().map(Into::into),
            emf_namespace: matches!(config.platform, Platform::Lambda { .. })
                .then(|| config.metrics_namespace.as_str().into()),
        }
    }
}

impl AccessLog {
    pub fn new(config: &Config) -> Self {
        Self {
            source: Source::of(config),
            served_a_request: Arc::default(),
        }
    }

    /// True for the first request this application (instance) serves only.
    pub fn take_cold_start(&self) -> bool {
        // A read first: a write per request would move the flag's cache line
        // between the cores that serve requests.
        !self.served_a_request.load(Ordering::Relaxed)
            && !self.served_a_request.swap(true, Ordering::Relaxed)
    }

    /// One whole line on stderr (so lines of concurrent requests never
    /// interleave), by the same writer as tracing's lines. Not through
    /// `tracing` itself: its JSON cannot nest the `_aws` object, and a log
    /// filter must not drop metrics. Serialized straight from borrowed
    /// fields: no JSON tree is built per request.
    pub fn write(&self, entry: &AccessEntry<'_>) {
        thread_local! {
            // One buffer per thread, reused: no allocation per request.
            static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(1024));
        }
        LINE.with_borrow_mut(|line| {
            line.clear();
            if serde_json::to_writer(&mut *line, &self.record(entry, SystemTime::now())).is_ok() {
                line.push(b'\n');
                crate::log_writer::write_stderr_line(line);
            }
        });
    }

    /// The line as JSON: the access log fields, the figures, and on Lambda `_aws`.
    pub fn line(&self, entry: &AccessEntry<'_>, at: SystemTime) -> Value {
        serde_json::to_value(self.record(entry, at)).unwrap_or_default()
    }

    fn record<'a>(&'a self, entry: &'a AccessEntry<'a>, at: SystemTime) -> AccessRecord<'a> {
        AccessRecord {
            timestamp: Rfc3339::from(at),
            level: "INFO",
            target: "access",
            message: "request",
            request_id: entry.request_id,
            method: entry.method,
            route: entry.route,
            path: entry.path,
            status: entry.status,
            latency_ms: entry.latency_ms,
            requests: 1,
            cold_start: u8::from(entry.cold_start),
            http_4xx: u8::from((400..500).contains(&entry.status)),
            http_5xx: u8::from(entry.status >= 500),
            outcome: entry.outcome.map(Outcome::name),
            user_id: entry.user_id,
            function: self.source.function.as_deref(),
            aws: self.source.emf_namespace.as_deref().map(|namespace| Emf {
                timestamp: at
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64,
                directives: emf_directives(namespace, entry.outcome.is_some()),
            }),
        }
    }
}

/// A condition the operator must hear of outside any request (a store set
/// up to lose data): one line that is both a warning and, on Lambda, the
/// metric `<metric>` = 1 per function and setting (on FC, the same field
/// for SLS to count).
#[derive(Debug, Clone)]
pub struct WarningMetric(Source);

impl WarningMetric {
    pub fn new(config: &Config) -> Self {
        Self(Source::of(config))
    }

    /// Writes the line on stderr, by the access lines' writer.
    pub fn write(&self, metric: &'static str, setting: &str, message: &str) {
        let mut line = serde_json::to_vec(&self.line(metric, setting, message, SystemTime::now()))
            .unwrap_or_default();
        line.push(b'\n');
        crate::log_writer::write_stderr_line(&line);
    }

    pub fn line(
        &self,
        metric: &'static str,
        setting: &str,
        message: &str,
        at: SystemTime,
    ) -> Value {
        let mut line = serde_json::json!({
            "timestamp": Rfc3339::from(at),
            "level": "WARN",
            "target": "metrics",
            "message": message,
            "setting": setting,
            metric: 1,
        });
        if let Some(function) = &self.0.function {
            line["function"] = Value::from(&**function);
        }
        if let Some(namespace) = &self.0.emf_namespace {
            line["_aws"] = serde_json::json!({
                "Timestamp": at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64,
                "CloudWatchMetrics": [{
                    "Namespace": &**namespace,
                    "Dimensions": [["function", "setting"]],
                    "Metrics": [{"Name": metric, "Unit": "Count"}],
                }],
            });
        }
        line
    }
}

/// One access line, field by field.
#[derive(Serialize)]
struct AccessRecord<'a> {
    timestamp: Rfc3339,
    level: &'static str,
    target: &'static str,
    message: &'static str,
    request_id: &'a str,
    method: &'a str,
    route: &'a str,
    path: &'a str,
    status: u16,
    latency_ms: f64,
    requests: u8,
    cold_start: u8,
    http_4xx: u8,
    http_5xx: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function: Option<&'a str>,
    #[serde(rename = "_aws", skip_serializing_if = "Option::is_none")]
    aws: Option<Emf<'a>>,
}

/// CloudWatch Embedded Metric Format metadata.
#[derive(Serialize)]
struct Emf<'a> {
    #[serde(rename = "Timestamp")]
    timestamp: u64,
    #[serde(rename = "CloudWatchMetrics")]
    directives: Vec<Directive<'a>>,
}

#[derive(Serialize)]
struct Directive<'a> {
    #[serde(rename = "Namespace")]
    namespace: &'a str,
    #[serde(rename = "Dimensions")]
    dimensions: [&'static [&'static str]; 1],
    #[serde(rename = "Metrics")]
    metrics: &'static [Metric],
}

#[derive(Serialize)]
struct Metric {
    #[serde(rename = "Name")]
    name: &'static str,
    #[serde(rename = "Unit")]
    unit: &'static str,
}

const fn count(name: &'static str) -> Metric {
    Metric {
        name,
        unit: "Count",
    }
}

/// Which members of the line are metrics, with which dimensions. Per
/// function: requests, cold starts, 4xx and 5xx; per function and route:
/// latency (for p50/p99); per function and outcome: requests (logins by
/// outcome, replays blocked, conversations created).
fn emf_directives(namespace: &str, has_outcome: bool) -> Vec<Directive<'_>> {
    const PER_FUNCTION: &[Metric] = &[
        count("requests"),
        count("cold_start"),
        count("http_4xx"),
        count("http_5xx"),
    ];
    const PER_ROUTE: &[Metric] = &[Metric {
        name: "latency_ms",
        unit: "Milliseconds",
    }];
    const PER_OUTCOME: &[Metric] = &[count("requests")];
    let mut directives = vec![
        Directive {
            namespace,
            dimensions: [&["function"]],
            metrics: PER_FUNCTION,
        },
        Directive {
            namespace,
            dimensions: [&["function", "route"]],
            metrics: PER_ROUTE,
        },
    ];
    if has_outcome {
        directives.push(Directive {
            namespace,
            dimensions: [&["function", "outcome"]],
            metrics: PER_OUTCOME,
        });
    }
    directives
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn log(pairs: &[(&str, &str)]) -> AccessLog {
        AccessLog::new(&Config::from_vars(&crate::config::vars(pairs)).unwrap())
    }

    fn entry(outcome: Option<Outcome>) -> AccessEntry<'static> {
        AccessEntry {
            request_id: "req-1",
            method: "POST",
            route: "/api/v1/auth/login/sso",
            path: "/api/v1/auth/login/sso",
            status: 401,
            latency_ms: 12.5,
            outcome,
            user_id: None,
            cold_start: true,
        }
    }

    const AT_MS: u64 = 1_764_000_000_123;

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(AT_MS)
    }

    #[test]
    fn a_warning_metric_is_a_warning_line_and_on_lambda_a_metric() {
        let config =
            |pairs: &[(&str, &str)]| Config::from_vars(&crate::config::vars(pairs)).unwrap();
        let lambda = WarningMetric::new(&config(&[
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
            ("AWS_LAMBDA_FUNCTION_NAME", "tms-sso-login"),
            ("METRICS_NAMESPACE", "TMS/prod"),
        ]));
        let line = lambda.line(
            "replay_store_at_risk",
            "maxmemory-policy",
            "evicts marks",
            at(),
        );
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "evicts marks");
        assert_eq!(line["setting"], "maxmemory-policy");
        assert_eq!(line["replay_store_at_risk"], 1);
        assert_eq!(line["function"], "tms-sso-login");
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "TMS/prod");
        assert_eq!(
            directive["Dimensions"][0],
            serde_json::json!(["function", "setting"])
        );
        assert_eq!(directive["Metrics"][0]["Name"], "replay_store_at_risk");
        let local = WarningMetric::new(&config(&[])).line("m", "s", "text", at());
        assert_eq!(local["m"], 1);
        assert!(local.get("_aws").is_none());
    }

    #[test]
    fn each_applications_first_request_is_its_cold_start() {
        // Two applications in one process (as the tests serve them): the
        // first request of each is cold, whatever the other has served.
        let first = log(&[]);
        let second = log(&[]);
        assert!(first.take_cold_start());
        assert!(!first.take_cold_start());
        assert!(second.take_cold_start(), "the second application's first");
        assert!(!second.take_cold_start());
        // A clone serves the same application (axum clones the layers).
        assert!(!first.clone().take_cold_start());
    }

    #[test]
    fn the_line_is_timed_in_rfc_3339_utc() {
        let line = log(&[]).line(&entry(None), at());
        assert_eq!(line["timestamp"], "2025-11-24T16:00:00.123Z");
        let far = UNIX_EPOCH + Duration::from_nanos(4_102_444_800_123_456_789);
        assert_eq!(
            log(&[]).line(&entry(None), far)["timestamp"],
            "2100-01-01T00:00:00.123456789Z"
        );
    }

    #[test]
    fn on_lambda_the_line_is_emf_with_every_metric_it_names() {
        let lambda = log(&[
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
            ("AWS_LAMBDA_FUNCTION_NAME", "tms-sso-login"),
            ("METRICS_NAMESPACE", "TMS/prod"),
        ]);
        let line = lambda.line(&entry(Some(Outcome::new("login_replay_blocked"))), at());
        assert_eq!(line["_aws"]["Timestamp"], AT_MS);
        let directives = line["_aws"]["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 3);
        for directive in directives {
            assert_eq!(directive["Namespace"], "TMS/prod");
            for set in directive["Dimensions"].as_array().unwrap() {
                for dimension in set.as_array().unwrap() {
                    let name = dimension.as_str().unwrap();
                    assert!(line[name].is_string(), "dimension {name}: {line}");
                }
            }
            for metric in directive["Metrics"].as_array().unwrap() {
                let name = metric["Name"].as_str().unwrap();
                assert!(line[name].is_number(), "metric {name}: {line}");
            }
        }
        assert_eq!(line["function"], "tms-sso-login");
        assert_eq!(line["outcome"], "login_replay_blocked");
        assert_eq!(line["http_4xx"], 1);
        assert_eq!(line["http_5xx"], 0);
        assert_eq!(line["cold_start"], 1);
        assert_eq!(line["latency_ms"], 12.5);
    }

    #[test]
    fn without_an_outcome_no_outcome_dimension_is_named() {
        let lambda = log(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")]);
        let line = lambda.line(&entry(None), at());
        assert!(line.get("outcome").is_none());
        let named = line["_aws"].to_string();
        assert!(!named.contains("\"outcome\""), "{named}");
    }

    #[test]
    fn on_fc_and_locally_the_figures_are_plain_fields() {
        let fc = log(&[
            ("FC_FUNCTION_NAME", "tms-chat-sso-login"),
            ("FC_REGION", "cn-hangzhou"),
        ]);
        let line = fc.line(&entry(Some(Outcome::new("login_succeeded"))), at());
        assert!(line.get("_aws").is_none(), "{line}");
        assert_eq!(line["function"], "tms-chat-sso-login");
        assert_eq!(line["outcome"], "login_succeeded");
        assert_eq!(line["status"], 401);
        let local = log(&[]).line(&entry(None), at());
        assert!(local.get("_aws").is_none() && local.get("function").is_none());
        assert_eq!(local["route"], "/api/v1/auth/login/sso");
    }
}
