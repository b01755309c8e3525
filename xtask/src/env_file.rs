//! The development settings of config/local.env (`cargo xtask local-env --
//! <command>`), read with dotenvy: the one reader of that file.

use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// The file, relative to the workspace root.
pub const LOCAL_ENV: &str = "config/local.env";

/// A setting of the environment, trimmed; empty counts as unset, as in the
/// shell scripts this replaces (`${VAR:-}`).
pub fn setting(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|value| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

/// The KEY=value pairs of an env file, in its order. dotenvy's own `from_path`
/// would skip a variable that is set but empty; the local settings must fill
/// those too, so we take the pairs and choose ourselves (`to_apply`).
pub fn read(path: &Path) -> Result<Vec<(String, String)>> {
    let pairs =
        dotenvy::from_path_iter(path).with_context(|| format!("cannot read {}", path.display()))?;
    pairs
        .map(|pair| pair.with_context(|| format!("{}: not a KEY=value line", path.display())))
        .collect()
}

/// The pairs that the environment does not already set to a non-empty value:
/// a variable set in the environment wins (make run PORT=8001).
pub fn to_apply(
    pairs: Vec<(String, String)>,
    current: impl Fn(&str) -> Option<OsString>,
) -> Vec<(String, String)> {
    pairs
        .into_iter()
        .filter(|(key, _)| current(key).is_none_or(|value| value.is_empty()))
        .collect()
}

/// The local settings over the process's environment, and the .data/
/// directory that the local SQLite file lives in.
pub fn local(root: &Path) -> Result<Vec<(String, String)>> {
    let pairs = read(&root.join(LOCAL_ENV))?;
    let data = root.join(".data");
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    Ok(to_apply(pairs, |key| std::env::var_os(key)))
}

/// Replaces this process with `command`, the local settings in its environment.
pub fn exec_with_local(root: &Path, command: &[String]) -> Result<()> {
    let Some((program, args)) = command.split_first() else {
        bail!("usage: cargo xtask local-env -- <command> [args...]");
    };
    let env = local(root)?;
    let error = Command::new(program).args(args).envs(env).exec();
    Err(error).with_context(|| format!("cannot run {program}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-env-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn pairs_come_in_file_order_without_comments() {
        let path = file_with(
            "pairs.env",
            "# local\nPORT=8000\n\nDATABASE_URL=sqlite://.data/tms.sqlite3\n",
        );
        let pairs = read(&path).unwrap();
        let expected = [
            ("PORT", "8000"),
            ("DATABASE_URL", "sqlite://.data/tms.sqlite3"),
        ];
        assert_eq!(pairs, expected.map(|(k, v)| (k.to_string(), v.to_string())));
    }

    #[test]
    fn a_line_that_is_not_key_value_is_an_error_naming_the_file() {
        let path = file_with("bad.env", "PORT=8000\nnot a setting\n");
        let error = format!("{:#}", read(&path).unwrap_err());
        assert!(error.contains(&path.display().to_string()), "{error}");
    }

    #[test]
    fn the_environment_wins_unless_it_is_empty() {
        let pairs = vec![
            ("PORT".into(), "8000".into()),
            ("APP_ENV".into(), "development".into()),
        ];
        let current = |key: &str| match key {
            "PORT" => Some(OsString::from("8001")),
            "APP_ENV" => Some(OsString::new()),
            _ => None,
        };
        assert_eq!(
            to_apply(pairs, current),
            [("APP_ENV".to_string(), "development".to_string())]
        );
    }

    #[test]
    fn the_repositorys_local_env_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let pairs = read(&root.join(LOCAL_ENV)).unwrap();
        assert!(
            pairs.iter().any(|(key, _)| key == "DATABASE_URL"),
            "{:?}",
            pairs.len()
        );
    }
}
