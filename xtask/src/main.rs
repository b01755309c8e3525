//! `cargo xtask <task>`: the release tasks of both clouds (build, deploy,
//! roll back, verify) and the local environment, called by the Makefile's
//! targets of the same names (docs/deploy.md). Settings come from the
//! environment, as make passes them (make rollback-fc VERSION=12).

mod aws;
mod build;
mod cli;
mod env_file;
mod fc;
mod verify;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use xtask::functions;

const USAGE: &str = "usage: cargo xtask <task>

  build-lambda        release arm64 zips for AWS Lambda -> dist/lambda/<name>/
  build-fc            static x86_64 (musl) builds for Alibaba FC -> dist/fc/<name>/
  deploy-aws          sam build + sam deploy of template.yaml (guided the first time; STACK_NAME=, SAM_CONFIG=)
  deploy-fc           deploy s.yaml, publish versions, move `live` (FC_CANARY_WEIGHT=...)
  rollback-fc         FC `live` aliases one version back (FUNCTIONS=, VERSION=N, S_ARGS=)
  rollback-aws        Lambda `live` aliases one version back, or stop a canary (STACK_NAME=, FUNCTIONS=, VERSION=N)
  verify [args]       the hotfix's checklist against BASE_URL (tms-verify)
  verify-local        the checklist against a running `make run`, with config/local.env
  local-env -- CMD    run CMD with config/local.env under the environment's own settings
  functions           the deploy units of functions/LIST, one a line
  deploy-build-args   cargo's arguments for building them as deployed, one a line
  deploy-features     the features part of those, on one line (deploy.mk's sam build)
  target-dir          cargo's output folder (CARGO_TARGET_DIR, build.target-dir or ./target)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match run(task, rest) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{task}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: &str, rest: &[String]) -> Result<()> {
    let root = workspace_root()?;
    match task {
        "build-lambda" => build::lambda(&root),
        "build-fc" => build::fc(&root),
        "deploy-aws" => aws::deploy(&root),
        "deploy-fc" => fc::deploy(&root),
        "rollback-fc" => fc::rollback(&root),
        "rollback-aws" => aws::rollback(&root),
        "verify" => verify::deployed(&root, rest),
        "verify-local" => verify::local(&root, rest),
        "local-env" => env_file::exec_with_local(
            &root,
            rest.strip_prefix(&["--".to_string()]).unwrap_or(rest),
        ),
        "functions" => print_lines(functions::read(&root)?),
        "deploy-build-args" => print_lines(functions::deploy_build_args(&functions::read(&root)?)),
        "deploy-features" => print_lines([functions::DEPLOY_FEATURE_ARGS.join(" ")]),
        "target-dir" => print_lines([build::target_dir(&root)?.display()]),
        "help" | "--help" | "-h" => print_lines([USAGE]),
        _ => bail!("no such task\n{USAGE}"),
    }
}

fn print_lines<T: std::fmt::Display>(lines: impl IntoIterator<Item = T>) -> Result<()> {
    lines.into_iter().for_each(|line| println!("{line}"));
    Ok(())
}

/// The workspace: the nearest folder up from here that holds functions/LIST
/// (make and the scripts run in the root; the tests in a scratch copy).
fn workspace_root() -> Result<PathBuf> {
    let here = std::env::current_dir().context("cannot read the current directory")?;
    let found = here
        .ancestors()
        .find(|dir| dir.join(functions::LIST).is_file())
        .map(Path::to_path_buf);
    found.with_context(|| {
        format!(
            "no {} in {} or above: run it in the workspace",
            functions::LIST,
            here.display()
        )
    })
}
