"""`make check-sam-build`: a real `sam build` of template.yaml, and what its
bootstraps link. Opt-in (TMS_CHECK_SAM_BUILD=1, which the make target sets):
it builds the three functions for arm64 in release, minutes of work, and
needs the SAM CLI, cargo-lambda and zig (docs/deploy.md, "Tools").

`make check-templates` checks the same promise offline
(test_templates.py::test_sam_build_of_a_function_is_its_deploy_build: the
commands `sam build` would run, and their dependency tree); this one looks
at the binaries themselves.
"""

import json
import os
import shutil
import subprocess
import zipfile

import pytest
from conftest import function_names, logical_id

FUNCTIONS = function_names()

pytestmark = pytest.mark.skipif(
    os.environ.get("TMS_CHECK_SAM_BUILD") != "1",
    reason="a real sam build (minutes): make check-sam-build runs it",
)

# Bytes an SQLite library leaves in a binary that links it. The first is the
# header of every database file, a string constant of the C library: it
# survives `strip` (the release profile strips). The second is the prefix of
# its C functions, seen in binaries that keep their symbols.
SQLITE_FILE_HEADER = b"SQLite format 3\x00"
SQLITE_MARKERS = (SQLITE_FILE_HEADER, b"sqlite3_")
ELF_MACHINE_AARCH64 = 183


def sqlite_markers(path):
    """The SQLite markers found in the file at path (empty: no SQLite)."""
    data = path.read_bytes()
    return [m for m in SQLITE_MARKERS if m in data]


def zipped_size(path):
    """Bytes of the file deflated in a zip, as Lambda gets it."""
    out = path.with_name(path.name + ".check.zip")
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.write(path, "bootstrap")
    size = out.stat().st_size
    out.unlink()
    return size


def test_sam_build_check_finds_sqlite_in_a_build_that_links_it(root):
    # Not vacuous: a function's default build (embedded-db, for local use)
    # links SQLite, and the check sees it, by the marker that stripping keeps.
    if shutil.which("cargo") is None:
        pytest.fail("cargo is not installed (https://rustup.rs)")
    run = subprocess.run(
        ["cargo", "build", "--locked", "-p", "health", "--bin", "health", "--message-format", "json-render-diagnostics"],
        cwd=root, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    executables = [
        m["executable"] for m in map(json.loads, run.stdout.splitlines())
        if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "health"
    ]
    assert executables, "cargo build -p health produced no executable"
    path = root / executables[-1]
    found = sqlite_markers(path)
    print(f"{path}: {found}")
    assert SQLITE_FILE_HEADER in found, f"{path} links SQLite (default features) and the check does not see it"


@pytest.fixture(scope="module")
def sam_build_dir(root):
    if shutil.which("sam") is None:
        pytest.fail("the AWS SAM CLI (sam) is missing. Install it with: python3 -m pip install aws-sam-cli")
    if subprocess.run(["cargo", "lambda", "--version"], capture_output=True).returncode != 0:
        pytest.fail("cargo-lambda is missing. Install it with: python3 -m pip install cargo-lambda ziglang")
    build_dir = root / ".aws-sam" / "check-sam-build"
    shutil.rmtree(build_dir, ignore_errors=True)
    # Not captured (pytest -s): sam build and cargo show their progress.
    run = subprocess.run(
        ["sam", "build", "--template-file", "template.yaml", "--build-dir", str(build_dir)],
        cwd=root, env={**os.environ, "SAM_CLI_TELEMETRY": "0"})
    assert run.returncode == 0, f"sam build failed (exit status {run.returncode})"
    return build_dir


@pytest.mark.parametrize("name", FUNCTIONS)
def test_sam_build_bootstrap_is_arm64_and_links_no_sqlite(sam_build_dir, name):
    path = sam_build_dir / logical_id(name) / "bootstrap"
    assert path.is_file(), f"sam build left no {path}"
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF", f"{path} is not an ELF executable"
    assert int.from_bytes(head[18:20], "little") == ELF_MACHINE_AARCH64, f"{path} is not arm64"
    assert os.access(path, os.X_OK), f"{path} is not executable"
    print(f"{logical_id(name)}: {path.stat().st_size / 2**20:.1f} MiB, {zipped_size(path) / 2**20:.2f} MiB zipped")
    found = sqlite_markers(path)
    assert not found, f"{path} links SQLite ({found}): sam build did not build it as deployed"
