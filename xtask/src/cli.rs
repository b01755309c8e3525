//! Running the other programs: the cloud CLIs, cargo, zip. Each call is
//! echoed as it runs (its arguments never hold a secret: those reach the
//! CLIs through the environment and s.yaml); output that the task reads is
//! JSON, parsed with serde_json.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::process::{Command, Stdio};

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    which::which(program).is_ok()
}

/// The command line as the user would type it, for messages.
fn shown(command: &Command) -> String {
    let words = std::iter::once(command.get_program()).chain(command.get_args());
    words
        .map(|word| word.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command with the terminal as its output; fails on a non-zero exit.
pub fn run(command: &mut Command) -> Result<()> {
    let line = shown(command);
    eprintln!("+ {line}");
    let status = command
        .status()
        .with_context(|| format!("cannot run {line}"))?;
    if !status.success() {
        bail!("{line} failed ({status})");
    }
    Ok(())
}

/// Runs a command whose output says nothing we need (the AWS CLI echoing
/// what it changed); fails on a non-zero exit, with its stderr.
pub fn run_quietly(command: &mut Command) -> Result<()> {
    eprintln!("+ {}", shown(command));
    stdout(command).map(drop)
}

/// Whether a command succeeds, its output discarded (version probes).
pub fn succeeds(command: &mut Command) -> bool {
    let quiet = command.stdout(Stdio::null()).stderr(Stdio::null());
    quiet.status().is_ok_and(|status| status.success())
}

/// Runs a command and returns its standard output; on a failure, the error
/// says what it printed to stderr.
pub fn stdout(command: &mut Command) -> Result<String> {
    let line = shown(command);
    let output = command
        .output()
        .with_context(|| format!("cannot run {line}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("{line} failed ({}): {}", output.status, stderr.trim());
    }
    String::from_utf8(output.stdout).with_context(|| format!("{line}: its output is not UTF-8"))
}

/// Runs a command whose standard output is one JSON document, and parses it.
pub fn json(command: &mut Command) -> Result<Value> {
    let line = shown(command);
    eprintln!("+ {line}");
    let text = stdout(command)?;
    parse_json(&text).with_context(|| format!("{line}: its output is not the JSON expected"))
}

/// The JSON document of a CLI's output. A CLI may print a notice line (an
/// update reminder) before it: the document starts at the first line that
/// opens an object or an array.
pub fn parse_json(text: &str) -> Result<Value> {
    let at_line_start = |&(at, _): &(usize, &str)| at == 0 || text[..at].ends_with('\n');
    let start = text
        .match_indices(['{', '['])
        .find(at_line_start)
        .map_or(0, |(at, _)| at);
    Ok(serde_json::from_str(&text[start..])?)
}

/// A version number from JSON: FC's API gives `"versionId": "3"`, Serverless
/// Devs' YAML view `3`; Lambda's `"Version": "3"`.
pub fn version_number(value: &Value) -> Option<u64> {
    match value {
        Value::String(text) => text.parse().ok(),
        other => other.as_u64(),
    }
}

/// The highest version below `current`: the one a rollback goes back to.
pub fn version_before(versions: impl IntoIterator<Item = u64>, current: u64) -> Option<u64> {
    versions
        .into_iter()
        .filter(|&version| version < current)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_after_a_notice_line_is_read() {
        let text = "A new version of s is available\n{\"health\": {\"versionId\": \"4\"}}\n";
        assert_eq!(
            parse_json(text).unwrap(),
            json!({"health": {"versionId": "4"}})
        );
    }

    #[test]
    fn output_that_is_not_json_is_an_error() {
        assert!(parse_json("versionId: 4").is_err());
    }

    #[test]
    fn version_numbers_come_as_strings_or_numbers() {
        assert_eq!(version_number(&json!("12")), Some(12));
        assert_eq!(version_number(&json!(12)), Some(12));
        assert_eq!(version_number(&json!("$LATEST")), None);
    }

    #[test]
    fn the_version_before_is_the_highest_older_one() {
        assert_eq!(version_before([1, 5, 3, 7], 7), Some(5));
        assert_eq!(version_before([4, 5], 4), None);
    }
}
