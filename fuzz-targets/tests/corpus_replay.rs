//! Every committed fuzz input (`fuzz/corpus/<target>/`), run through its
//! target on stable: the seeds, what campaigns found worth keeping, and every
//! input that once crashed a target, so a fixed bug stays fixed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn replay(name: &str) {
    let (_, target) = fuzz_targets::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a target of that name");
    let dir = fuzz_dir().join("corpus").join(name);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{}: no inputs", dir.display());
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("a corpus file");
            catch_unwind(AssertUnwindSafe(|| target(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{name} fails on: {failed:#?}");
}

#[test]
fn authorization() {
    replay("authorization");
}

#[test]
fn api_token() {
    replay("api_token");
}

#[test]
fn sso_token() {
    replay("sso_token");
}

#[test]
fn cursor() {
    replay("cursor");
}

#[test]
fn host() {
    replay("host");
}

#[test]
fn http_request() {
    replay("http_request");
}

#[test]
fn lambda_event() {
    replay("lambda_event");
}

/// Each target has its cargo-fuzz binary, its corpus and its replay test above.
#[test]
fn every_target_is_fuzzed_and_replayed() {
    let this_file = include_str!("corpus_replay.rs");
    for (name, _) in fuzz_targets::TARGETS {
        let binary = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        assert!(binary.exists(), "{} is missing", binary.display());
        assert!(
            this_file.contains(&format!("replay(\"{name}\")")),
            "no replay test for {name}"
        );
    }
    for entry in std::fs::read_dir(fuzz_dir().join("corpus")).expect("fuzz/corpus") {
        let name = entry.expect("an entry").file_name();
        assert!(
            fuzz_targets::TARGETS.iter().any(|(n, _)| name == *n),
            "fuzz/corpus/{name:?} belongs to no target"
        );
    }
}
