//! What every TMS chat function stands on, and nothing more: configuration
//! (and its secrets), the error type, the HTTP layers (CORS, host check,
//! request id, access log), API tokens, the database pool and migrations,
//! the Redis connection and what its settings do to the single-use marks,
//! and the runtime that serves a function on Lambda, on
//! FC and locally. What a function does lives in its own crate.

pub mod ca_bundle;
pub mod clock;
pub mod config;
pub mod config_error;
pub mod cors;
pub mod db;
pub mod error;
pub mod hmac_keys;
pub mod host;
pub mod http;
pub mod log_writer;
pub mod metrics;
pub mod openapi;
pub mod redis_client;
pub mod redis_settings;
pub mod request_scope;
pub mod runtime;
pub mod secret;
pub mod secrets;
pub mod tokens;

pub use config::{Config, ConfigError};
pub use error::{ApiError, ApiJson, ApiQuery, ErrorBody};
pub use http::{App, app};
pub use metrics::Outcome;
pub use runtime::StartError;
pub use tracing;

/// shared/ in one-way layers: no module reaches, through its `crate::`
/// paths, a module that reaches it back (docs/architecture.md, "The layers
/// of shared/"). A module and the files of its folder (`db/`) count as one.
#[cfg(test)]
mod layers {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Each module of the crate and the modules its code names.
    fn imports() -> BTreeMap<String, BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut read = |module: &str, path: &Path| {
            let text = std::fs::read_to_string(path).unwrap();
            let names = graph.entry(module.to_owned()).or_default();
            for (at, _) in text.match_indices("crate::") {
                let name: String = text[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let is_module = src.join(format!("{name}.rs")).exists();
                if is_module && name != module {
                    names.insert(name);
                }
            }
        };
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().is_some_and(|e| e == "rs") && stem != "lib" {
                read(stem, &path);
            } else if path.is_dir() {
                for file in std::fs::read_dir(&path).unwrap() {
                    read(stem, &file.unwrap().path());
                }
            }
        }
        graph
    }

    #[test]
    fn no_module_of_shared_imports_one_that_imports_it() {
        let graph = imports();
        assert!(
            graph["config"].contains("db"),
            "the test reads the imports: {graph:?}"
        );
        // Depth-first: a module met again while still on the path closes a circle.
        fn visit<'a>(
            module: &'a str,
            graph: &'a BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) {
            if let Some(at) = path.iter().position(|m| *m == module) {
                panic!(
                    "a circle of imports: {} -> {module}",
                    path[at..].join(" -> ")
                );
            }
            if !done.insert(module) {
                return;
            }
            path.push(module);
            for next in graph.get(module).into_iter().flatten() {
                visit(next, graph, path, done);
            }
            path.pop();
        }
        let mut done = BTreeSet::new();
        for module in graph.keys() {
            visit(module, &graph, &mut Vec::new(), &mut done);
        }
    }
}
