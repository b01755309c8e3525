//! What an invocation costs on AWS Lambda (arm64), from its wall time: the
//! bill is the request fee and the duration, rounded up to 1 ms, times the
//! memory size. `make bench` prints it per route from the one-connection
//! p50 under an injected store latency (BENCHMARKS.md).

/// Where the prices below come from, and when they were read.
pub const PRICE_SOURCE: &str =
    "AWS Lambda pricing page, as of 2026-12 (arm64, us-east-1, first tier)";
/// Arm64 duration price, USD per GB-second (first 7.5 billion GB-s a month).
pub const ARM64_USD_PER_GB_SECOND: f64 = 0.000_013_333_4;
/// Request price, USD per million requests.
pub const USD_PER_MILLION_REQUESTS: f64 = 0.20;

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
