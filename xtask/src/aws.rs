//! AWS: deploying the stack (`make deploy-aws`: `sam build` + `sam deploy`;
//! SAM and CodeDeploy do the versions, the `live` alias and the canary
//! themselves) and rolling its Lambda functions back (`make rollback-aws`).
//!
//! Every call asks the AWS CLI for `--output json`; the fields read are
//! those of the API responses (DescribeStackResources, ListDeployments,
//! DescribeStacks, GetAlias, ListVersionsByFunction).

use crate::cli;
use crate::env_file::setting;
use crate::fc::version_setting;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use xtask::functions;

const ALIAS: &str = "live";

const INSTALL_AWS: &str = "the AWS CLI (aws) is missing. Install it with:
    python3 -m pip install awscli      (or AWS CLI v2 from your package manager)
then configure credentials (aws configure, or AWS_PROFILE / AWS_* variables)";

const INSTALL_SAM: &str = "the AWS SAM CLI (sam) is missing. Install it with:
    python3 -m pip install aws-sam-cli";
const INSTALL_CARGO_LAMBDA: &str =
    "sam build needs cargo-lambda. Install it with: python3 -m pip install cargo-lambda ziglang";
/// The public CA bundle the functions verify RDS with, shipped in the
/// template's CaBundleLayer (ca/; scripts/fetch-ca-bundles.sh fetches it).
const RDS_CA_BUNDLE: &str = "ca/rds-global-bundle.pem";
/// Acknowledged on the guided first deploy: the template's IAM roles, and its
/// AWS::LanguageExtensions transform (Fn::ForEach), which CloudFormation expands.
const CAPABILITIES: [&str; 2] = ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"];

/// `make deploy-aws`: sam build, then sam deploy: guided on the first run
/// (no SAM_CONFIG file yet; it saves the answers there), then from that
/// file; then the stack's ApiUrl, for `make verify`.
pub fn deploy(root: &Path) -> Result<()> {
    if !cli::have("sam") {
        bail!("{INSTALL_SAM}");
    }
    if !cli::succeeds(Command::new("cargo").args(["lambda", "--version"])) {
        bail!("{INSTALL_CARGO_LAMBDA}");
    }
    let stack = setting("STACK_NAME").unwrap_or_else(|| "tms-chat".into());
    let config = setting("SAM_CONFIG").unwrap_or_else(|| "samconfig.toml".into());
    if !root.join(RDS_CA_BUNDLE).is_file() {
        cli::run(Command::new(root.join("scripts/fetch-ca-bundles.sh")).current_dir(root))?;
    }
    let sam = || {
        let mut command = Command::new("sam");
        command.current_dir(root);
        command
    };
    cli::run(sam().args(["build", "--template-file", "template.yaml"]))?;
    if root.join(&config).is_file() {
        println!("deploy-aws: sam deploy (settings from {config})");
        cli::run(sam().args(["deploy", "--config-file", &config]))?;
    } else {
        println!(
            "deploy-aws: no {config} yet: guided first deploy (it saves your answers to {config})."
        );
        println!("deploy-aws: first deploy: no canary yet, see docs/deploy.md.");
        let guided = [
            "deploy",
            "--guided",
            "--stack-name",
            &stack,
            "--config-file",
            &config,
        ];
        cli::run(sam().args(guided).arg("--capabilities").args(CAPABILITIES))?;
    }
    print_api_url(&stack);
    Ok(())
}

/// The stack's ApiUrl output, when the AWS CLI can read it (the deploy is
/// done either way).
fn print_api_url(stack: &str) {
    let stacks = Aws::new()
        .and_then(|aws| aws.json(&["cloudformation", "describe-stacks", "--stack-name", stack]));
    match stacks.as_ref().ok().and_then(|s| stack_output(s, "ApiUrl")) {
        Some(url) => println!("ApiUrl: {url}"),
        None => eprintln!(
            "deploy-aws: could not read the stack's ApiUrl output (aws cloudformation describe-stacks)"
        ),
    }
}

/// The AWS CLI with AWS_REGION / AWS_PROFILE when set, answering in JSON.
struct Aws {
    global: Vec<String>,
}

impl Aws {
    fn new() -> Result<Aws> {
        if !cli::have("aws") {
            bail!("{INSTALL_AWS}");
        }
        let mut global = Vec::new();
        for (option, name) in [("--region", "AWS_REGION"), ("--profile", "AWS_PROFILE")] {
            if let Some(value) = setting(name) {
                global.extend([option.to_string(), value]);
            }
        }
        Ok(Aws { global })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("aws");
        command
            .args(args)
            .args(["--output", "json"])
            .args(&self.global);
        command
    }

    fn json(&self, args: &[&str]) -> Result<Value> {
        cli::json(&mut self.command(args))
    }

    fn change(&self, args: &[&str]) -> Result<()> {
        cli::run_quietly(&mut self.command(args))
    }
}

/// A non-empty string field of a JSON response.
fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
}

/// The stack's function outputs to roll back: FUNCTIONS (output prefixes
/// such as SsoLogin, or functions/LIST names), else every function.
fn output_prefixes(root: &Path) -> Result<Vec<String>> {
    let names = functions::chosen_or_all(root, setting("FUNCTIONS"))?;
    Ok(names
        .iter()
        .map(|name| functions::aws_output_prefix(name))
        .collect())
}

/// `make rollback-aws`: a release still in its canary is stopped (CodeDeploy
/// puts the aliases back itself); otherwise each function's `live` goes one
/// version back, or to VERSION=N, with no canary weight.
pub fn rollback(root: &Path) -> Result<()> {
    let stack = setting("STACK_NAME").unwrap_or_else(|| "tms-chat".into());
    let prefixes = output_prefixes(root)?;
    let wanted = version_setting()?;
    let aws = Aws::new()?;
    if wanted.is_none() && stop_deployments(&aws, &stack)? {
        println!(
            "rollback-aws: done. The stack update fails and CloudFormation rolls it back too."
        );
        return Ok(());
    }
    let described = aws.json(&["cloudformation", "describe-stacks", "--stack-name", &stack]);
    let stacks = described.with_context(|| {
        format!("cannot read stack {stack} (set STACK_NAME=..., AWS_REGION=...)")
    })?;
    let mut failed = Vec::new();
    for prefix in prefixes {
        let output = format!("{prefix}FunctionName");
        let function = stack_output(&stacks, &output)
            .with_context(|| format!("stack {stack} has no output {output}"))?;
        if let Err(error) = rollback_one(&aws, function, wanted) {
            eprintln!("rollback-aws: {function}: {error:#}");
            failed.push(function.to_string());
        }
    }
    if !failed.is_empty() {
        bail!("not rolled back: {}", failed.join(" "));
    }
    println!("rollback-aws: done. Check it with make verify against the ApiUrl output.");
    Ok(())
}

/// Stops the stack's CodeDeploy deployments in progress, with their
/// automatic rollback; whether there were any.
fn stop_deployments(aws: &Aws, stack: &str) -> Result<bool> {
    let args = [
        "--stack-name",
        stack,
        "--logical-resource-id",
        "ServerlessDeploymentApplication",
    ];
    let resources =
        aws.json(&[&["cloudformation", "describe-stack-resources"], &args[..]].concat());
    let resources = resources.with_context(|| {
        format!("cannot read stack {stack} (set STACK_NAME=..., AWS_REGION=...)")
    })?;
    let Some(application) = text(&resources, "/StackResources/0/PhysicalResourceId") else {
        return Ok(false);
    };
    let statuses = ["--include-only-statuses", "InProgress", "Ready", "Queued"];
    let list = aws.json(
        &[
            &[
                "deploy",
                "list-deployments",
                "--application-name",
                application,
            ],
            &statuses[..],
        ]
        .concat(),
    )?;
    let running: Vec<&str> = list["deployments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for id in &running {
        println!(
            "rollback-aws: stopping deployment {id} in progress (CodeDeploy restores the alias)"
        );
        aws.change(&[
            "deploy",
            "stop-deployment",
            "--deployment-id",
            id,
            "--auto-rollback-enabled",
        ])?;
    }
    Ok(!running.is_empty())
}

/// The value of a stack output (describe-stacks' Stacks[0].Outputs).
fn stack_output<'a>(stacks: &'a Value, output: &str) -> Option<&'a str> {
    let outputs = stacks.pointer("/Stacks/0/Outputs")?.as_array()?;
    let found = outputs.iter().find(|o| o["OutputKey"] == output)?;
    text(found, "/OutputValue")
}

fn rollback_one(aws: &Aws, function: &str, wanted: Option<u64>) -> Result<()> {
    let alias = aws.json(&[
        "lambda",
        "get-alias",
        "--function-name",
        function,
        "--name",
        ALIAS,
    ])?;
    let current = alias.get("FunctionVersion").and_then(cli::version_number);
    let current =
        current.with_context(|| format!("{ALIAS} serves no numbered version: {alias}"))?;
    let target = match wanted {
        Some(version) => version,
        None => {
            let list = aws.json(&[
                "lambda",
                "list-versions-by-function",
                "--function-name",
                function,
            ])?;
            let versions = list["Versions"].as_array().into_iter().flatten();
            // $LATEST has no number and is skipped.
            let numbers = versions.filter_map(|v| v.get("Version").and_then(cli::version_number));
            cli::version_before(numbers, current)
                .with_context(|| format!("no version older than {current} to go back to"))?
        }
    };
    println!("rollback-aws: {function}: {ALIAS} {current} -> {target}");
    let target = target.to_string();
    let args = [
        "--function-name",
        function,
        "--name",
        ALIAS,
        "--function-version",
        &target,
    ];
    let weights = ["--routing-config", r#"{"AdditionalVersionWeights":{}}"#];
    aws.change(&[&["lambda", "update-alias"], &args[..], &weights[..]].concat())
}
