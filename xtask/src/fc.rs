//! Alibaba Cloud Function Compute through Serverless Devs (`s`, s.yaml):
//! deploy with versions, the `live` alias and an optional canary; roll back.
//!
//! The output read here is JSON. Serverless Devs' global options: `-o,
//! --output-format <default|json|yaml|raw>` and `--silent` ("only the
//! component's result"), per its command reference
//! (serverless-devs-website, docs/user-guide/builtin/index.md). The fc3
//! component's result is keyed by the resource name, as in its examples
//! (docs/user-guide/aliyun/fc3/version.md and alias.md):
//! `version publish` gives `{"<resource>": {"versionId": .., ..}}`,
//! `version list` `{"<resource>": [{"versionId": .., ..}, ..]}` and
//! `alias get` `{"<resource>": {"aliasName": .., "versionId": .., ..}}`.
//! FC's API gives versionId as a string ("1"), the YAML view as a number.

use crate::cli;
use crate::env_file::setting;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use xtask::functions;

/// The alias that the custom domain's routes invoke (s.yaml).
pub const ALIAS: &str = "live";

const INSTALL_S: &str = "the Serverless Devs CLI (s) is missing. Install it with:
    npm install -g @serverless-devs/s
then add credentials: s config add (or set them in the environment; see docs/deploy.md)";

/// What deploy-fc needs set besides TMS_FC_CERT_ID (s.yaml reads them).
const REQUIRED: [&str; 9] = [
    "ALLOWED_ORIGINS",
    "ALLOWED_HOSTS",
    "JWT_SECRET",
    "DATABASE_URL",
    "REDIS_URL",
    "TMS_FC_VPC_ID",
    "TMS_FC_VSWITCH_ID",
    "TMS_FC_SECURITY_GROUP_ID",
    "TMS_FC_DOMAIN",
];

/// The Serverless Devs CLI in the workspace root (s.yaml), with S_ARGS
/// (-a/--access ...) after every command.
struct Devs {
    root: PathBuf,
    extra: Vec<String>,
}

impl Devs {
    fn new(root: &Path) -> Result<Devs> {
        if !cli::have("s") {
            bail!("{INSTALL_S}");
        }
        let extra = setting("S_ARGS")
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect();
        Ok(Devs {
            root: root.to_path_buf(),
            extra,
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("s");
        command.args(args).args(&self.extra).current_dir(&self.root);
        command
    }

    fn run(&self, args: &[&str]) -> Result<()> {
        cli::run(&mut self.command(args))
    }

    /// The component's result for `resource` of `s <resource> <args> -o json --silent`.
    fn result(&self, resource: &str, args: &[&str]) -> Result<Value> {
        let mut command = self.command(&[&[resource], args].concat());
        let output = cli::json(command.args(["-o", "json", "--silent"]))?;
        Ok(component_result(output, resource))
    }

    /// The version `live` serves now; none before the first deploy (no alias).
    fn live_version(&self, resource: &str) -> Option<u64> {
        let alias = self
            .result(resource, &["alias", "get", "--alias-name", ALIAS])
            .ok()?;
        alias.get("versionId").and_then(cli::version_number)
    }

    fn versions(&self, resource: &str) -> Result<Vec<u64>> {
        let list = self.result(resource, &["version", "list"])?;
        let entries = list.as_array().into_iter().flatten();
        let ids = entries.filter_map(|entry| entry.get("versionId").and_then(cli::version_number));
        Ok(ids.collect())
    }

    fn publish(&self, resource: &str, description: &str) -> Result<u64> {
        let published = self.result(
            resource,
            &["version", "publish", "--description", description],
        )?;
        let id = published.get("versionId").and_then(cli::version_number);
        id.with_context(|| {
            format!("{resource}: no versionId in the output of version publish: {published}")
        })
    }

    /// `live` -> `version`, with `canary` (version, weight) taking a share of it.
    fn point_live(&self, resource: &str, version: u64, canary: Option<(u64, f64)>) -> Result<()> {
        let weights = canary.map_or(
            json!({}),
            |(new, weight)| json!({ new.to_string(): weight }),
        );
        let (version, weights) = (version.to_string(), weights.to_string());
        let args = [
            "alias",
            "publish",
            "--alias-name",
            ALIAS,
            "--version-id",
            &version,
        ];
        self.run(
            &[
                &[resource],
                &args[..],
                &["--additionalVersionWeight", &weights],
            ]
            .concat(),
        )
    }
}

/// The fc3 component's result under the resource's name; the whole output
/// when it is not keyed so (a single-resource run may print it bare).
pub fn component_result(output: Value, resource: &str) -> Value {
    match output {
        Value::Object(mut keyed) if keyed.contains_key(resource) => {
            keyed.remove(resource).unwrap_or_default()
        }
        other => other,
    }
}

/// s.yaml's resources: FUNCTIONS (s.yaml or functions/LIST names), else every function.
fn resources(root: &Path) -> Result<Vec<String>> {
    let names = functions::chosen_or_all(root, setting("FUNCTIONS"))?;
    Ok(names
        .iter()
        .map(|name| functions::fc_resource(name))
        .collect())
}

/// VERSION=N: the version to go back to, when given.
pub fn version_setting() -> Result<Option<u64>> {
    let parse = |text: String| {
        text.parse()
            .with_context(|| format!("VERSION={text} is not a version number"))
    };
    setting("VERSION").map(parse).transpose()
}

/// One function's release: the version `live` served, and the new one.
struct Release {
    resource: String,
    previous: Option<u64>,
    new: u64,
}

/// The canary step of a deploy (FC_CANARY_WEIGHT, FC_CANARY_SECONDS, FC_CANARY_CHECK).
struct Canary {
    weight: f64,
    wait: Duration,
    check: Option<String>,
}

impl Canary {
    fn from_settings() -> Result<Option<Canary>> {
        let Some(weight) = setting("FC_CANARY_WEIGHT") else {
            return Ok(None);
        };
        let weight: f64 = weight.parse().ok().filter(|w| (0.0..=1.0).contains(w)).with_context(|| {
            format!("FC_CANARY_WEIGHT={weight} is not a share of the traffic between 0 and 1 (e.g. 0.1)")
        })?;
        let seconds = setting("FC_CANARY_SECONDS").unwrap_or_else(|| "300".into());
        let seconds: u64 = seconds
            .parse()
            .with_context(|| format!("FC_CANARY_SECONDS={seconds} is not seconds"))?;
        let wait = Duration::from_secs(seconds);
        Ok(Some(Canary {
            weight,
            wait,
            check: setting("FC_CANARY_CHECK"),
        }))
    }

    /// Whether the check passes (none given: it does).
    fn check_passes(&self) -> Result<bool> {
        let Some(check) = &self.check else {
            return Ok(true);
        };
        let status = Command::new("bash")
            .args(["-c", check])
            .status()
            .context("cannot run FC_CANARY_CHECK with bash")?;
        Ok(status.success())
    }
}

/// What deploy-fc checks before any call to the cloud: every setting that
/// s.yaml needs, s itself, and the builds of `make build-fc`.
fn check_ready(root: &Path) -> Result<Devs> {
    // The custom domain serves HTTPS only (s.yaml): no certificate, no deploy.
    if setting("TMS_FC_CERT_ID").is_none() {
        bail!(
            "TMS_FC_CERT_ID is not set: the custom domain serves HTTPS only; upload the certificate of TMS_FC_DOMAIN to Certificate Management Service and set TMS_FC_CERT_ID to its id (docs/deploy.md)"
        );
    }
    let devs = Devs::new(root)?;
    for name in functions::read(root)? {
        let bootstrap = root.join("dist/fc").join(&name).join("bootstrap");
        if !crate::build::is_executable(&bootstrap) {
            bail!("dist/fc/{name}/bootstrap is missing: run make build-fc first");
        }
    }
    let mut missing: Vec<&str> = REQUIRED
        .into_iter()
        .filter(|name| setting(name).is_none())
        .collect();
    if setting("SSO_JWT_SECRET").is_none() && setting("SSO_JWKS_URL").is_none() {
        missing.push("SSO_JWT_SECRET or SSO_JWKS_URL");
    }
    if !missing.is_empty() {
        bail!("set these in the environment first: {}", missing.join(" "));
    }
    Ok(devs)
}

/// `make deploy-fc`: for each function, s deploy (LATEST), a version of it,
/// then `live` on it (through a canary when FC_CANARY_WEIGHT is set), then
/// the custom domain. A failed canary check puts `live` back and fails.
pub fn deploy(root: &Path) -> Result<()> {
    let devs = check_ready(root)?;
    let resources: Vec<String> = functions::read(root)?
        .iter()
        .map(|name| functions::fc_resource(name))
        .collect();
    let canary = Canary::from_settings()?;
    let revision = git_revision(root);
    let mut releases = Vec::new();
    for resource in resources {
        println!("== {resource}: deploy (LATEST)");
        devs.run(&[&resource, "deploy", "-y"])?;
        let previous = devs.live_version(&resource);
        println!("== {resource}: publish a version of {revision}");
        let new = devs.publish(&resource, &format!("git {revision}"))?;
        let was = previous.map_or("none".to_string(), |v| v.to_string());
        println!("   {resource}: {ALIAS} was {was}, new version {new}");
        releases.push(Release {
            resource,
            previous,
            new,
        });
    }
    if let Some(canary) = canary {
        run_canary(&devs, &releases, &canary)?;
    }
    for release in &releases {
        println!(
            "== {}: {ALIAS} -> version {}",
            release.resource, release.new
        );
        devs.point_live(&release.resource, release.new, None)?;
    }
    println!("== domain: routes to the {ALIAS} aliases");
    devs.run(&["domain", "deploy", "-y"])?;
    println!("deploy-fc: done. Check it: make verify against the custom domain (docs/deploy.md).");
    Ok(())
}

/// `live` shares its traffic with the new version for a while; a failed
/// check puts every `live` back on its previous version.
fn run_canary(devs: &Devs, releases: &[Release], canary: &Canary) -> Result<()> {
    for release in releases {
        // A first deploy has nothing to shift from.
        let Some(previous) = release.previous else {
            continue;
        };
        println!(
            "== {}: canary, {} of the traffic of {ALIAS} on version {}",
            release.resource, canary.weight, release.new
        );
        devs.point_live(
            &release.resource,
            previous,
            Some((release.new, canary.weight)),
        )?;
    }
    println!("== canary: waiting {}s", canary.wait.as_secs());
    std::thread::sleep(canary.wait);
    if canary.check_passes()? {
        return Ok(());
    }
    eprintln!("deploy-fc: the canary check failed: {ALIAS} goes back to the previous versions");
    for release in releases {
        let Some(previous) = release.previous else {
            continue;
        };
        if let Err(error) = devs.point_live(&release.resource, previous, None) {
            eprintln!(
                "deploy-fc: could not restore {}:{ALIAS}: {error:#}",
                release.resource
            );
        }
    }
    bail!("the canary check failed (FC_CANARY_CHECK); {ALIAS} is back on the previous versions")
}

fn git_revision(root: &Path) -> String {
    let mut command = Command::new("git");
    command
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root);
    let revision = cli::stdout(&mut command)
        .map(|out| out.trim().to_string())
        .unwrap_or_default();
    if revision.is_empty() {
        "unknown".into()
    } else {
        revision
    }
}

/// `make rollback-fc`: `live` of each function (FUNCTIONS) one version back,
/// or to VERSION=N, with no canary weight. Nothing is rebuilt or redeployed.
pub fn rollback(root: &Path) -> Result<()> {
    let resources = resources(root)?;
    let wanted = version_setting()?;
    let devs = Devs::new(root)?;
    let mut failed = Vec::new();
    for resource in resources {
        if let Err(error) = rollback_one(&devs, &resource, wanted) {
            eprintln!("rollback-fc: {resource}: {error:#}");
            failed.push(resource);
        }
    }
    if !failed.is_empty() {
        bail!("not rolled back: {}", failed.join(" "));
    }
    println!("rollback-fc: done. The next make deploy-fc publishes a new version again.");
    Ok(())
}

fn rollback_one(devs: &Devs, resource: &str, wanted: Option<u64>) -> Result<()> {
    let current = devs
        .live_version(resource)
        .with_context(|| format!("has no {ALIAS} alias"))?;
    let target = match wanted {
        Some(version) => version,
        None => cli::version_before(devs.versions(resource)?, current)
            .with_context(|| format!("no version older than {current} to go back to"))?,
    };
    println!("rollback-fc: {resource}: {ALIAS} {current} -> {target}");
    devs.point_live(resource, target, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_is_read_under_the_resource_name_or_bare() {
        let keyed = json!({"sso_login": {"versionId": "3"}});
        assert_eq!(
            component_result(keyed, "sso_login"),
            json!({"versionId": "3"})
        );
        assert_eq!(
            component_result(json!({"versionId": 3}), "health"),
            json!({"versionId": 3})
        );
    }
}
