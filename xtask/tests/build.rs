//! build-lambda and build-fc against a stand-in `cargo` (and `file`) that
//! log their calls and leave the artefacts a real build would.

mod sandbox;

use sandbox::{Sandbox, printed};

/// cargo: cargo-lambda present unless ./no-cargo-lambda exists; metadata
/// names ./target; `lambda build` leaves bootstrap.zip (arm64 zips) or
/// bootstrap (--lambda-dir, binaries) for each -p package.
const FAKE_CARGO: &str = r#"#!/bin/sh
here=$(cd "$(dirname "$0")/.." && pwd)
echo "cargo $*" >>"$here/calls.log"
case "$1 $2" in
  "lambda --version") if [ -e "$here/no-cargo-lambda" ]; then exit 101; fi; echo "cargo-lambda 1.8"; exit 0 ;;
  "metadata --no-deps") echo "{\"target_directory\":\"$here/target\"}"; exit 0 ;;
  "lambda build") ;;
  *) exit 0 ;;
esac
out="$here/target/lambda"; file=bootstrap.zip; previous=""
for arg in "$@"; do
  [ "$previous" = --lambda-dir ] && { out="$arg"; file=bootstrap; }
  previous="$arg"
done
for arg in "$@"; do
  [ "$previous" = -p ] && { mkdir -p "$out/$arg"; echo "built $arg" >"$out/$arg/$file"; }
  previous="$arg"
done
"#;

fn workspace(test: &str, linked: &str) -> Sandbox {
    let sandbox = Sandbox::new(test, &["health", "sso-login"]);
    sandbox.write_executable("bin/cargo", FAKE_CARGO);
    sandbox.write_executable(
        "bin/file",
        &format!("#!/bin/sh\necho \"$1: ELF 64-bit LSB executable, x86-64, {linked}\"\n"),
    );
    // Both targets installed: never a real `rustup target add` from a test.
    let targets = "#!/bin/sh\necho aarch64-unknown-linux-gnu\necho x86_64-unknown-linux-musl\n";
    sandbox.write_executable("bin/rustup", targets);
    sandbox.write("ca/rds-global-bundle.pem", "-----BEGIN CERTIFICATE-----\n");
    sandbox
}

const DEPLOY_ARGS: &str = "-p health -p sso-login --no-default-features --features aws-secrets";

#[test]
fn lambda_builds_every_function_as_deployed_into_dist() {
    let sandbox = workspace("build-lambda", "statically linked");
    let output = sandbox.xtask(&["build-lambda"], &[]);
    assert!(output.status.success(), "{}", printed(&output));
    let build = format!("cargo lambda build --release --arm64 --output-format zip {DEPLOY_ARGS}");
    assert!(sandbox.calls().contains(&build), "{:#?}", sandbox.calls());
    for name in ["health", "sso-login"] {
        let zip =
            std::fs::read_to_string(sandbox.path(&format!("dist/lambda/{name}/bootstrap.zip")))
                .unwrap();
        assert_eq!(zip, format!("built {name}\n"));
    }
}

#[test]
fn lambda_without_cargo_lambda_says_how_to_install_it() {
    let sandbox = workspace("build-no-cargo-lambda", "statically linked");
    sandbox.write("no-cargo-lambda", "");
    let output = sandbox.xtask(&["build-lambda"], &[]);
    assert!(!output.status.success());
    let printed = printed(&output);
    assert!(
        printed.contains("cargo-lambda is missing")
            && printed.contains("pip install cargo-lambda ziglang"),
        "{printed}"
    );
    assert!(
        !sandbox
            .calls()
            .iter()
            .any(|call| call.contains("lambda build")),
        "{:#?}",
        sandbox.calls()
    );
}

#[test]
fn fc_builds_static_binaries_zipped_with_the_ca_bundles() {
    let sandbox = workspace("build-fc", "statically linked");
    let output = sandbox.xtask(&["build-fc"], &[]);
    assert!(output.status.success(), "{}", printed(&output));
    let lambda_dir = sandbox.path("target/lambda-fc");
    let build = format!(
        "cargo lambda build --release --target x86_64-unknown-linux-musl --output-format binary --lambda-dir {} {DEPLOY_ARGS}",
        lambda_dir.display()
    );
    assert!(sandbox.calls().contains(&build), "{:#?}", sandbox.calls());
    for name in ["health", "sso-login"] {
        assert!(
            sandbox
                .path(&format!("dist/fc/{name}/rds-global-bundle.pem"))
                .is_file()
        );
        // zip -sf: the names in the archive (zip is what build-fc needs anyway).
        let archive = sandbox.path(&format!("dist/fc/{name}.zip"));
        let listing = std::process::Command::new("zip")
            .arg("-sf")
            .arg(archive)
            .output()
            .unwrap();
        let listing = String::from_utf8(listing.stdout).unwrap();
        assert!(
            listing.contains("bootstrap") && listing.contains("rds-global-bundle.pem"),
            "{listing}"
        );
    }
}

#[test]
fn fc_refuses_a_binary_that_is_not_static() {
    let sandbox = workspace("build-fc-dynamic", "dynamically linked");
    let output = sandbox.xtask(&["build-fc"], &[]);
    assert!(!output.status.success());
    assert!(
        printed(&output).contains("dist/fc/health/bootstrap is not statically linked"),
        "{}",
        printed(&output)
    );
    assert!(!sandbox.path("dist/fc/health.zip").exists());
}
