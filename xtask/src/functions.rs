//! The deploy units of functions/LIST, the one list of them, and the names
//! each cloud gives them.

use anyhow::{Context, Result};
use std::path::Path;

/// The file that names the deploy units, relative to the workspace root.
pub const LIST: &str = "functions/LIST";

/// The names of functions/LIST, in its order.
pub fn read(root: &Path) -> Result<Vec<String>> {
    let path = root.join(LIST);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(parse(&text))
}

/// The functions a task acts on: those of `chosen` (a space-separated list,
/// the FUNCTIONS setting) when given, else every one of functions/LIST.
pub fn chosen_or_all(root: &Path, chosen: Option<String>) -> Result<Vec<String>> {
    match chosen {
        Some(list) => Ok(list.split_whitespace().map(String::from).collect()),
        None => read(root),
    }
}

/// The names of this workspace's functions/LIST as it was built, for the
/// programs that run from anywhere (the load tools).
pub fn of_this_workspace() -> Vec<String> {
    parse(include_str!("../../functions/LIST"))
}

/// One name a line; `#` starts a comment; blank lines and spaces do not count.
pub fn parse(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .map(|name| name.split_whitespace().collect::<String>())
        .filter(|name| !name.is_empty())
        .collect()
}

/// s.yaml's resource of a function: its names cannot hold `-` (sso-login is sso_login).
pub fn fc_resource(name: &str) -> String {
    name.replace('-', "_")
}

/// template.yaml's output prefix of a function: sso-login is SsoLogin
/// (SsoLoginFunctionName is the output that names its Lambda function).
pub fn aws_output_prefix(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

/// The features of a deployed function: its secrets reader, and no embedded
/// database (SQLite is for local use; production requires PostgreSQL).
pub const DEPLOY_FEATURE_ARGS: [&str; 3] = ["--no-default-features", "--features", "aws-secrets"];

/// cargo's arguments for building these functions as deployed. Each package
/// named with -p resolves its features over itself only, not over the tools
/// and tests that turn the embedded database on.
pub fn deploy_build_args(names: &[String]) -> Vec<String> {
    let packages = names
        .iter()
        .flat_map(|name| ["-p".to_string(), name.clone()]);
    packages
        .chain(DEPLOY_FEATURE_ARGS.map(String::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_skips_comments_blank_lines_and_spaces_and_keeps_its_order() {
        let text = "# deploy units\n\nhealth\n  sso-login  # the SSO exchange\n\t\nconversations";
        assert_eq!(parse(text), ["health", "sso-login", "conversations"]);
    }

    #[test]
    fn the_workspace_list_names_every_function_crate() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut crates: Vec<String> = std::fs::read_dir(root.join("functions"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|dir| dir.join("Cargo.toml").is_file())
            .map(|dir| dir.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let mut listed = read(root).unwrap();
        assert_eq!(listed, of_this_workspace());
        crates.sort();
        listed.sort();
        assert_eq!(listed, crates);
    }

    #[test]
    fn each_cloud_names_a_function_its_own_way() {
        assert_eq!(fc_resource("sso-login"), "sso_login");
        assert_eq!(aws_output_prefix("sso-login"), "SsoLogin");
        assert_eq!(aws_output_prefix("health"), "Health");
    }

    #[test]
    fn deploy_builds_name_each_package_with_the_deploy_features() {
        let args = deploy_build_args(&["health".into(), "sso-login".into()]);
        let expected = [
            "-p",
            "health",
            "-p",
            "sso-login",
            "--no-default-features",
            "--features",
            "aws-secrets",
        ];
        assert_eq!(args, expected);
    }
}
