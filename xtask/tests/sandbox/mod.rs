//! A scratch workspace for running the real `xtask` binary against stand-ins
//! of the cloud CLIs: small shell scripts in its bin/, first on the PATH
//! given to the child (never to this test process), that append each call's
//! arguments to calls.log and answer with the canned JSON of answers/.

#![allow(dead_code)] // each test binary uses part of it

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The stand-in CLI. Its answer for `s health alias get --alias-name live`
/// is answers/health.alias.get.json (the words before the first option,
/// joined by dots; with `.<name>` of a --function-name): printed when it
/// exists, a failure when answers/<key>.fail exists, else no output.
const FAKE_CLI: &str = r#"#!/bin/sh
here=$(dirname "$0")/..
echo "$(basename "$0") $*" >>"$here/calls.log"
key=""
function=""
previous=""
for arg in "$@"; do
  [ "$previous" = --function-name ] && function=".$arg"
  previous="$arg"
done
for arg in "$@"; do
  case "$arg" in -*) break ;; esac
  key="$key${key:+.}$arg"
done
key="$key$function"
if [ -e "$here/answers/$key.fail" ]; then echo "$key: refused" >&2; exit 1; fi
if [ -e "$here/answers/$key.json" ]; then cat "$here/answers/$key.json"; fi
exit 0
"#;

pub struct Sandbox {
    pub root: PathBuf,
}

impl Sandbox {
    /// A workspace with these functions in functions/LIST.
    pub fn new(test: &str, functions: &[&str]) -> Sandbox {
        let root = std::env::temp_dir().join(format!("xtask-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("answers")).unwrap();
        let list = format!("# deploy units\n{}\n", functions.join("\n"));
        let sandbox = Sandbox { root };
        sandbox.write("functions/LIST", &list);
        sandbox
    }

    pub fn write(&self, path: &str, text: &str) {
        let path = self.root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub fn write_executable(&self, path: &str, text: &str) {
        self.write(path, text);
        let permissions = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(self.root.join(path), permissions).unwrap();
    }

    /// A stand-in for a CLI (s, aws) in bin/.
    pub fn fake_cli(&self, name: &str) {
        self.write_executable(&format!("bin/{name}"), FAKE_CLI);
    }

    /// The canned JSON answer of one call (see FAKE_CLI for the key).
    pub fn answer(&self, key: &str, json: serde_json::Value) {
        self.write(&format!("answers/{key}.json"), &json.to_string());
    }

    /// Makes one call fail (see FAKE_CLI for the key).
    pub fn refuse(&self, key: &str) {
        self.write(&format!("answers/{key}.fail"), "");
    }

    /// Runs `xtask <args>` in the sandbox with only PATH (bin/ first) and `env`.
    pub fn xtask(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let path = format!("{}:/usr/bin:/bin", self.root.join("bin").display());
        let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
        command
            .args(args)
            .current_dir(&self.root)
            .env_clear()
            .env("PATH", path);
        command.envs(env.iter().copied()).output().unwrap()
    }

    /// The calls made to the stand-ins, one line each: `s health deploy -y`.
    pub fn calls(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.root.join("calls.log")).unwrap_or_default();
        log.lines().map(String::from).collect()
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// What a run printed, both streams, for assertions and failure messages.
pub fn printed(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    format!("{stdout}{stderr}")
}
