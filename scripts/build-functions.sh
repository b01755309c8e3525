#!/usr/bin/env bash
# Release builds of the function binaries (functions/LIST), for one cloud:
#
#   scripts/build-functions.sh lambda   # AWS Lambda: arm64 (Graviton), provided.al2023
#                                       #   -> dist/lambda/<name>/bootstrap.zip
#   scripts/build-functions.sh fc       # Alibaba FC: x86_64, static musl (runs on Debian 10)
#                                       #   -> dist/fc/<name>/bootstrap and dist/fc/<name>.zip
#
# Tools, all from ordinary registries (no downloads of their own):
#   cargo-lambda + zig:  pip install cargo-lambda ziglang   (prebuilt binaries)
#   Rust targets:        rustup target add aarch64-unknown-linux-gnu x86_64-unknown-linux-musl
#   FC fallback without cargo-lambda (x86_64 Linux hosts only):
#                        apt-get install musl-tools, then plain cargo with the musl target
#
# Either way the functions build as deployed: DEPLOY_BUILD_ARGS (scripts/functions.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/functions.sh
source scripts/functions.sh
FUNCTIONS=("${FUNCTION_NAMES[@]}")
cloud="${1:-}"

die() { echo "build-functions: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
have_cargo_lambda() { cargo lambda --version >/dev/null 2>&1; }

need_target() {
    local target="$1"
    if have rustup && ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        echo "build-functions: adding the Rust target $target (rustup target add $target)" >&2
        rustup target add "$target" || die "cannot add the Rust target $target; run: rustup target add $target"
    fi
}

need_cargo_lambda() {
    have_cargo_lambda && return 0
    die "cargo-lambda is missing. Install it (prebuilt, with zig) with:
    python3 -m pip install cargo-lambda ziglang
or: cargo install cargo-lambda --locked (then pip install ziglang for zig)"
}

# Where cargo puts its output: CARGO_TARGET_DIR, build.target-dir of a
# .cargo/config.toml, or ./target. `cargo metadata` knows all three.
target_dir() {
    local dir
    dir="$(cargo metadata --no-deps --format-version 1 2>/dev/null \
        | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    printf '%s\n' "${dir:-${CARGO_TARGET_DIR:-target}}"
}

build_lambda() {
    have cargo || die "cargo is missing: install Rust from https://rustup.rs"
    need_cargo_lambda
    need_target aarch64-unknown-linux-gnu
    local out
    out="$(target_dir)/lambda"
    # One cargo invocation for every binary: dependencies compile once.
    cargo lambda build --release --arm64 --output-format zip "${DEPLOY_BUILD_ARGS[@]}"
    local f
    for f in "${FUNCTIONS[@]}"; do
        [ -f "$out/$f/bootstrap.zip" ] || die "expected $out/$f/bootstrap.zip after the build"
        rm -rf "dist/lambda/$f"
        mkdir -p "dist/lambda/$f"
        cp "$out/$f/bootstrap.zip" "dist/lambda/$f/bootstrap.zip"
        echo "dist/lambda/$f/bootstrap.zip"
    done
}

build_fc() {
    have cargo || die "cargo is missing: install Rust from https://rustup.rs"
    have zip || die "zip is missing: apt-get install zip"
    local target=x86_64-unknown-linux-musl f src_dir bin out pem
    if have_cargo_lambda; then
        src_dir=lambda
    elif [ "$(uname -sm)" = "Linux x86_64" ] && have musl-gcc; then
        src_dir=cargo
    else
        die "no way to build static x86_64 musl binaries here. Either:
    python3 -m pip install cargo-lambda ziglang      (any host)
or, on an x86_64 Linux host: apt-get install musl-tools"
    fi
    need_target "$target"
    out="$(target_dir)"
    if [ "$src_dir" = lambda ]; then
        # cargo-lambda cross-links with zig: a static musl binary from any host.
        # Its own output folder: <target dir>/lambda holds the arm64 builds
        # (make build-lambda, sam build) under the same names.
        cargo lambda build --release --target "$target" --output-format binary \
            --lambda-dir "$out/lambda-fc" "${DEPLOY_BUILD_ARGS[@]}"
    else
        # Same architecture: plain cargo, musl-gcc for the C parts (aws-lc).
        CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --target "$target" "${DEPLOY_BUILD_ARGS[@]}"
    fi
    for f in "${FUNCTIONS[@]}"; do
        if [ "$src_dir" = lambda ]; then bin="$out/lambda-fc/$f/bootstrap"; else bin="$out/$target/release/$f"; fi
        [ -f "$bin" ] || die "expected $bin after the build"
        rm -rf "dist/fc/$f" "dist/fc/$f.zip"
        mkdir -p "dist/fc/$f"
        install -m 0755 "$bin" "dist/fc/$f/bootstrap"
        if have file && ! file "dist/fc/$f/bootstrap" | grep -Eq 'statically linked|static-pie linked'; then
            die "dist/fc/$f/bootstrap is not statically linked: it would not run on FC's Debian 10"
        fi
        # The managed services' CA bundles (ca/*.pem) sit next to the
        # bootstrap: /code/<file> on FC (DATABASE_CA_CERT_PATH).
        local bundles=()
        for pem in ca/*.pem; do
            [ -f "$pem" ] || continue
            install -m 0644 "$pem" "dist/fc/$f/"
            bundles+=("$(basename "$pem")")
        done
        (cd "dist/fc/$f" && zip -q -X "../$f.zip" bootstrap "${bundles[@]}")
        echo "dist/fc/$f/bootstrap (and dist/fc/$f.zip)"
    done
}

case "$cloud" in
    lambda) build_lambda ;;
    fc) build_fc ;;
    *) die "usage: $0 lambda|fc" ;;
esac
