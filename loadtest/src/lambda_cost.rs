//! What an invocation costs on AWS Lambda (arm64), from its wall time: the
//! bill is the request fee and the duration, rounded up to 1 ms, times the
//! memory size. `make bench` prints it per route from the one-connection
//! p50 under an injected store latency (BENCHMARKS.md). Beside it, what the
//! invocation's access line costs in CloudWatch Logs, billed per byte.

use std::time::{Duration, SystemTime};

use shared::Config;
use shared::metrics::{AccessEntry, AccessLog};

/// Where the prices below come from, and when they were read.
pub const PRICE_SOURCE: &str =
    "AWS Lambda pricing page, as of 2026-12 (arm64, us-east-1, first tier)";
/// Arm64 duration price, USD per GB-second (first 7.5 billion GB-s a month).
pub const ARM64_USD_PER_GB_SECOND: f64 = 0.000_013_333_4;
/// Request price, USD per million requests.
pub const USD_PER_MILLION_REQUESTS: f64 = 0.20;

/// Where the log price comes from, and when it was read.
pub const LOGS_PRICE_SOURCE: &str = "Amazon CloudWatch pricing page, Lambda logs to CloudWatch Logs Standard, \
     first tier (the first 10 TB a month), as of 2026-12 (us-east-1)";
/// USD per GB of log data ingested.
pub const LOGS_USD_PER_GB: f64 = 0.50;
/// A GB, taken as 2^30 bytes (with 10^9 the costs would be 7.4 % higher).
pub const GB: f64 = 1024.0 * 1024.0 * 1024.0;
/// The stack `make deploy-aws` deploys by default (xtask's `STACK_NAME`):
/// the functions' names and the metrics' namespace are made from it.
const STACK: &str = "tms-chat";
/// A Lambda request id (a UUID, as long as every real one): the sample
/// access lines' bytes count it.
pub const SAMPLE_REQUEST_ID: &str = "1322d753-4c55-464e-956d-39dbec2e7165";

/// USD per million requests that each write `bytes` of log.
pub fn logs_usd_per_million(bytes: usize) -> f64 {
    bytes as f64 * 1e6 / GB * LOGS_USD_PER_GB
}

/// The bytes of the access line that `function`'s invocation writes on
/// Lambda for `entry` (its CloudWatch EMF metadata and its newline
/// included), rendered by the functions' own code with the settings
/// template.yaml gives them. Lambda's own START, END and REPORT lines come
/// on top.
pub fn lambda_access_line_bytes(function: &str, entry: &AccessEntry<'_>) -> anyhow::Result<usize> {
    access_line_bytes(
        &[
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001".to_owned()),
            ("AWS_LAMBDA_FUNCTION_NAME", format!("{STACK}-{function}")),
            ("METRICS_NAMESPACE", format!("TMS/{STACK}")),
        ],
        entry,
    )
}

/// The bytes of `entry`'s access line (its newline included) from a
/// function with these settings (and a database URL, which every
/// configuration needs).
fn access_line_bytes(
    settings: &[(&str, String)],
    entry: &AccessEntry<'_>,
) -> anyhow::Result<usize> {
    let vars = settings
        .iter()
        .cloned()
        .chain([("DATABASE_URL", "postgres://db/tms".to_owned())])
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
    let config = Config::from_vars(&vars).map_err(|e| anyhow::anyhow!("{e}"))?;
    // A fixed time with nanoseconds, as most timestamps print: the same
    // length in every run.
    let at = SystemTime::UNIX_EPOCH + Duration::new(1_796_000_000, 123_456_789);
    let line = AccessLog::new(&config).line(entry, at);
    Ok(line.to_string().len() + 1)
}

/// Billed duration of an invocation of `wall_ms`: rounded up to the next
/// whole millisecond, at least one.
pub fn billed_ms(wall_ms: f64) -> u64 {
    (wall_ms.ceil() as u64).max(1)
}

/// USD per million invocations of `wall_ms` each at `memory_mb`.
pub fn usd_per_million(wall_ms: f64, memory_mb: u32) -> f64 {
    let gb_seconds = billed_ms(wall_ms) as f64 / 1000.0 * f64::from(memory_mb) / 1024.0;
    USD_PER_MILLION_REQUESTS + 1e6 * gb_seconds * ARM64_USD_PER_GB_SECOND
}

/// The `MemorySize` a SAM template gives the function built from `binary`
/// (its `BuildProperties: Binary:`): the function's own, else `Globals`'.
/// A minimal reading of the template's layout (two-space indents, one key
/// per line), not YAML; `None` when absent or not a number (`!Ref`).
pub fn template_memory_mb(template: &str, binary: &str) -> Option<u32> {
    let lines: Vec<&str> = template.lines().collect();
    let top_level = |l: &&str| !l.starts_with(' ') && !l.trim().is_empty() && !l.starts_with('#');
    let resource = |l: &&str| l.starts_with("  ") && !l[2..].starts_with([' ', '#']);
    let memory_in = |block: &[&str]| {
        block
            .iter()
            .find_map(|l| l.trim().strip_prefix("MemorySize:"))
            .and_then(|v| v.trim().parse().ok())
    };
    let binary_line = lines
        .iter()
        .position(|l| l.trim() == format!("Binary: {binary}"));
    let own = binary_line.and_then(|at| {
        let start = lines[..at].iter().rposition(resource)?;
        let end = lines[at..]
            .iter()
            .position(|l| resource(l) || top_level(l))
            .map_or(lines.len(), |n| at + n);
        memory_in(&lines[start..end])
    });
    own.or_else(|| {
        let start = lines.iter().position(|l| l.trim_end() == "Globals:")? + 1;
        let end = lines[start..]
            .iter()
            .position(top_level)
            .map_or(lines.len(), |n| start + n);
        memory_in(&lines[start..end])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "\
Globals:
  Function:
    Architectures: [arm64]
    MemorySize: 256
Resources:
  HealthFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: health
    Properties:
      CodeUri: .
  SsoLoginFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: sso-login
    Properties:
      # Signing and verifying: more CPU.
      MemorySize: 512
  Other:
    Type: AWS::Serverless::Function
    Properties:
      MemorySize: 1024
";

    #[test]
    fn reads_a_functions_own_memory_size_or_the_globals() {
        assert_eq!(template_memory_mb(TEMPLATE, "health"), Some(256));
        assert_eq!(template_memory_mb(TEMPLATE, "sso-login"), Some(512));
        assert_eq!(template_memory_mb(TEMPLATE, "missing"), Some(256));
        assert_eq!(template_memory_mb("Resources:\n", "health"), None);
    }

    #[test]
    fn logs_are_billed_by_the_byte() {
        assert!((logs_usd_per_million(1074) - 0.50).abs() < 0.001);
        let entry = AccessEntry {
            request_id: SAMPLE_REQUEST_ID,
            method: "POST",
            route: "/api/v1/auth/login/sso",
            path: "/api/v1/auth/login/sso",
            status: 200,
            latency_ms: 2.5,
            outcome: Some(sso_login::outcome::SUCCEEDED),
            user_id: Some(123_456),
            cold_start: false,
        };
        let on_lambda = lambda_access_line_bytes("sso-login", &entry).unwrap();
        let elsewhere = access_line_bytes(&[], &entry).unwrap();
        // The EMF metadata that makes the line metrics on Lambda is most of it.
        assert!(on_lambda > 2 * elsewhere, "{on_lambda} against {elsewhere}");
    }

    #[test]
    fn bills_whole_milliseconds_at_the_arm64_price() {
        assert_eq!(billed_ms(0.2), 1);
        assert_eq!(billed_ms(1.0), 1);
        assert_eq!(billed_ms(1.01), 2);
        // 1 ms at 1024 MB: 0.001 GB-s per invocation.
        let usd = usd_per_million(1.0, 1024);
        assert!(
            (usd - (0.20 + 1000.0 * 0.000_013_333_4)).abs() < 1e-9,
            "{usd}"
        );
    }
}
