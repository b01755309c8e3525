"""Fixtures of the template checks: the repository's templates, read once.

Run with `make check-templates` (scripts/services.sh installs pytest,
cfn-lint, aws-sam-translator and PyYAML first), or directly:

    python3 -m pytest tests/templates

Offline: no cloud account, network or build is needed (one check reads
cargo's dependency tree, which needs the crates' manifests: downloaded by
any earlier build, or by cargo on first use).
"""

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def function_names():
    """The deploy units, from functions/LIST (the one list the scripts read too)."""
    names = []
    for line in (ROOT / "functions" / "LIST").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


def logical_id(name):
    """template.yaml's resource of a function: sso-login -> SsoLoginFunction."""
    return "".join(part.capitalize() for part in name.split("-")) + "Function"


def sam_build_commands(name, artifacts_dir="/tmp/check-templates-artifacts"):
    """What `sam build` runs for a function: make's dry run (-n) of its
    build-<LogicalId> target (deploy.mk), called as SAM's makefile method
    calls it (--makefile, ARTIFACTS_DIR in the environment). Returns the
    cargo command (after its `cd <dir> &&`), the directory it runs in, and
    the copy of the bootstrap, each as a list of words."""
    run = subprocess.run(
        ["make", "--no-print-directory", "-n", "-s", "--makefile", str(ROOT / "Makefile"), f"build-{logical_id(name)}"],
        cwd=ROOT, env={**os.environ, "ARTIFACTS_DIR": artifacts_dir}, capture_output=True, text=True)
    assert run.returncode == 0, f"make -n build-{logical_id(name)}: {run.stderr}"
    cargo = [shlex.split(line) for line in run.stdout.splitlines() if "cargo lambda build" in line]
    copy = [shlex.split(line) for line in run.stdout.splitlines() if line.startswith("cp ")]
    assert len(cargo) == 1 and len(copy) == 1, f"make -n build-{logical_id(name)}:\n{run.stdout}"
    words = cargo[0]
    assert words[0] == "cd" and words[2] == "&&", f"expected `cd <dir> && cargo lambda build ...`: {words}"
    return words[3:], words[1], copy[0]


def fc_resource(name):
    """s.yaml's resource of a function: sso-login -> sso_login."""
    return name.replace("-", "_")


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session", autouse=True)
def _region():
    # The SAM translator builds ARNs for a region; any will do offline.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


LANGUAGE_EXTENSIONS = "AWS::LanguageExtensions"


@pytest.fixture(scope="session")
def raw_source():
    """template.yaml as written (cfn-lint's decoder: !Ref, !Sub, ...)."""
    from cfnlint.decode import decode

    template, matches = decode(str(ROOT / "template.yaml"))
    assert template is not None and not matches, "template.yaml does not parse: " + "; ".join(
        str(m) for m in matches or []
    )
    return template


@pytest.fixture(scope="session")
def source(raw_source):
    """template.yaml as SAM's transform gets it: Fn::ForEach expanded by the
    AWS::LanguageExtensions transform first (cfn-lint's implementation of it,
    which is AWS's), the rest as written."""
    from cfnlint.template import Template
    from cfnlint.template.transforms._language_extensions import language_extension

    transforms = raw_source.get("Transform", [])
    transforms = transforms if isinstance(transforms, list) else [transforms]
    template = raw_source
    if LANGUAGE_EXTENSIONS in transforms:
        matches, template = language_extension(Template(str(ROOT / "template.yaml"), raw_source, ["us-east-1"]))
        assert not matches, "AWS::LanguageExtensions refuses template.yaml: " + "; ".join(str(m) for m in matches)
        template["Transform"] = [t for t in transforms if t != LANGUAGE_EXTENSIONS]
    return json.loads(json.dumps(template, default=str))


class _ManagedPolicies:
    """Stands in for the IAM lookup of AWS managed policy names (offline)."""

    def load(self):
        return {}


# A non-default DeploymentType shows that the parameter reaches CodeDeploy.
PROBE_DEPLOYMENT_TYPE = "Linear10PercentEvery1Minute"


def translate(source):
    """template.yaml through the SAM translator, as CloudFormation would get it."""
    from samtranslator.translator.transform import transform

    translatable = json.loads(json.dumps(source))
    # The translator wants packaged code (sam package uploads it): a stand-in S3 URI.
    for res in translatable["Resources"].values():
        if res.get("Type") == "AWS::Serverless::Function":
            res["Properties"]["CodeUri"] = "s3://check-templates/code.zip"
        if res.get("Type") == "AWS::Serverless::LayerVersion":
            res["Properties"]["ContentUri"] = "s3://check-templates/layer.zip"
    return transform(translatable, {"DeploymentType": PROBE_DEPLOYMENT_TYPE}, _ManagedPolicies())


@pytest.fixture(scope="session")
def translated(source):
    try:
        return translate(source)
    except Exception as e:  # the test of the translator itself reports the cause
        pytest.fail(f"the SAM translator refuses template.yaml: {type(e).__name__}: {e}", pytrace=False)


@pytest.fixture(scope="session")
def resources(translated):
    return translated["Resources"]


@pytest.fixture(scope="session")
def by_type(resources):
    found = {}
    for name, r in resources.items():
        found.setdefault(r["Type"], {})[name] = r
    return found


@pytest.fixture(scope="session")
def s_yaml():
    import yaml

    with open(ROOT / "s.yaml") as f:
        return yaml.safe_load(f)
