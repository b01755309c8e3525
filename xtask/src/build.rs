//! Release builds of the functions of functions/LIST, for one cloud, with the
//! features of a deployed function (functions::deploy_build_args):
//!
//! - lambda: AWS Lambda, arm64 (Graviton), provided.al2023
//!   -> dist/lambda/<name>/bootstrap.zip
//! - fc: Alibaba FC, x86_64 static musl (runs on Debian 10)
//!   -> dist/fc/<name>/bootstrap (with ca/*.pem beside it) and dist/fc/<name>.zip
//!
//! Tools, all from ordinary registries: cargo-lambda and zig (`pip install
//! cargo-lambda ziglang`), the Rust targets (rustup), or for fc on an x86_64
//! Linux host without cargo-lambda, musl-tools and plain cargo.

use crate::cli;
use anyhow::{Context, Result, bail};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use xtask::functions;

const INSTALL_CARGO_LAMBDA: &str = "cargo-lambda is missing. Install it (prebuilt, with zig) with:
    python3 -m pip install cargo-lambda ziglang
or: cargo install cargo-lambda --locked (then pip install ziglang for zig)";

const NO_MUSL_BUILD: &str = "no way to build static x86_64 musl binaries here. Either:
    python3 -m pip install cargo-lambda ziglang      (any host)
or, on an x86_64 Linux host: apt-get install musl-tools";

const FC_TARGET: &str = "x86_64-unknown-linux-musl";

pub fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

fn cargo(root: &Path) -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(root);
    command
}

fn have_cargo_lambda(root: &Path) -> bool {
    cli::succeeds(cargo(root).args(["lambda", "--version"]))
}

fn need_cargo() -> Result<()> {
    if !cli::have("cargo") {
        bail!("cargo is missing: install Rust from https://rustup.rs");
    }
    Ok(())
}

/// Adds a Rust target with rustup when it is not installed (without rustup,
/// the toolchain is the system's own and cargo says what is missing).
fn need_target(target: &str) -> Result<()> {
    if !cli::have("rustup") {
        return Ok(());
    }
    let installed = cli::stdout(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|line| line.trim() == target) {
        return Ok(());
    }
    eprintln!("adding the Rust target {target} (rustup target add {target})");
    cli::run(Command::new("rustup").args(["target", "add", target])).with_context(|| {
        format!("cannot add the Rust target {target}; run: rustup target add {target}")
    })
}

/// Where cargo puts its output: CARGO_TARGET_DIR, build.target-dir of a
/// .cargo/config.toml, or ./target. `cargo metadata` knows all three.
pub fn target_dir(root: &Path) -> Result<PathBuf> {
    let metadata =
        cli::stdout(cargo(root).args(["metadata", "--no-deps", "--format-version", "1"]))?;
    let metadata = cli::parse_json(&metadata).context("cargo metadata: not the JSON expected")?;
    let dir = metadata["target_directory"]
        .as_str()
        .context("cargo metadata: no target_directory")?;
    Ok(PathBuf::from(dir))
}

/// Replaces dist/<cloud>/<name>/ with an empty folder.
fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if !from.is_file() {
        bail!("expected {} after the build", from.display());
    }
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// `make build-lambda`: arm64 zips, one cargo-lambda run for every function
/// (the dependencies compile once).
pub fn lambda(root: &Path) -> Result<()> {
    let names = functions::read(root)?;
    need_cargo()?;
    if !have_cargo_lambda(root) {
        bail!("{INSTALL_CARGO_LAMBDA}");
    }
    need_target("aarch64-unknown-linux-gnu")?;
    let out = target_dir(root)?.join("lambda");
    let build = [
        "lambda",
        "build",
        "--release",
        "--arm64",
        "--output-format",
        "zip",
    ];
    cli::run(
        cargo(root)
            .args(build)
            .args(functions::deploy_build_args(&names)),
    )?;
    for name in &names {
        let dir = root.join("dist/lambda").join(name);
        fresh_dir(&dir)?;
        copy(
            &out.join(name).join("bootstrap.zip"),
            &dir.join("bootstrap.zip"),
            0o644,
        )?;
        println!("dist/lambda/{name}/bootstrap.zip");
    }
    Ok(())
}

/// `make build-fc`: static x86_64 musl binaries, zipped with the managed
/// services' CA bundles (ca/*.pem: /code/<file> on FC, DATABASE_CA_CERT_PATH).
pub fn fc(root: &Path) -> Result<()> {
    let names = functions::read(root)?;
    need_cargo()?;
    if !cli::have("zip") {
        bail!("zip is missing: apt-get install zip");
    }
    let with_cargo_lambda = have_cargo_lambda(root);
    let native = cfg!(all(target_os = "linux", target_arch = "x86_64")) && cli::have("musl-gcc");
    if !with_cargo_lambda && !native {
        bail!("{NO_MUSL_BUILD}");
    }
    need_target(FC_TARGET)?;
    let target = target_dir(root)?;
    let deploy_args = functions::deploy_build_args(&names);
    let built: Box<dyn Fn(&str) -> PathBuf> = if with_cargo_lambda {
        // cargo-lambda cross-links with zig: a static musl binary from any
        // host. Its own folder: <target>/lambda holds the arm64 builds
        // (make build-lambda, sam build) under the same names.
        let lambda_dir = target.join("lambda-fc");
        let build = [
            "lambda",
            "build",
            "--release",
            "--target",
            FC_TARGET,
            "--output-format",
            "binary",
        ];
        cli::run(
            cargo(root)
                .args(build)
                .arg("--lambda-dir")
                .arg(&lambda_dir)
                .args(&deploy_args),
        )?;
        Box::new(move |name| lambda_dir.join(name).join("bootstrap"))
    } else {
        // Same architecture: plain cargo, musl-gcc for the C parts (aws-lc).
        let mut build = cargo(root);
        build.env("CC_x86_64_unknown_linux_musl", "musl-gcc").args([
            "build",
            "--release",
            "--target",
            FC_TARGET,
        ]);
        cli::run(build.args(&deploy_args))?;
        let release = target.join(FC_TARGET).join("release");
        Box::new(move |name| release.join(name))
    };
    let bundles = ca_bundles(root)?;
    for name in &names {
        package_fc(root, name, &built(name), &bundles)?;
    }
    Ok(())
}

/// The CA bundles shipped beside each FC bootstrap.
fn ca_bundles(root: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(root.join("ca")) else {
        return Ok(Vec::new());
    };
    let mut pems = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|ext| ext == "pem") {
            pems.push(path);
        }
    }
    pems.sort();
    Ok(pems)
}

/// dist/fc/<name>/ (bootstrap and CA bundles) and dist/fc/<name>.zip.
fn package_fc(root: &Path, name: &str, binary: &Path, bundles: &[PathBuf]) -> Result<()> {
    let dir = root.join("dist/fc").join(name);
    fresh_dir(&dir)?;
    let zip_path = root.join("dist/fc").join(format!("{name}.zip"));
    if zip_path.exists() {
        std::fs::remove_file(&zip_path)?;
    }
    copy(binary, &dir.join("bootstrap"), 0o755)?;
    if cli::have("file") {
        let described = cli::stdout(Command::new("file").arg(dir.join("bootstrap")))?;
        if !described.contains("statically linked") && !described.contains("static-pie linked") {
            bail!(
                "dist/fc/{name}/bootstrap is not statically linked: it would not run on FC's Debian 10"
            );
        }
    }
    let mut zip = Command::new("zip");
    zip.current_dir(&dir)
        .args(["-q", "-X"])
        .arg(format!("../{name}.zip"))
        .arg("bootstrap");
    for pem in bundles {
        let file_name = pem.file_name().context("a CA bundle without a name")?;
        copy(pem, &dir.join(file_name), 0o644)?;
        zip.arg(file_name);
    }
    cli::run(&mut zip)?;
    println!("dist/fc/{name}/bootstrap (and dist/fc/{name}.zip)");
    Ok(())
}
