"""Offline checks of the infrastructure as code: template.yaml (AWS SAM) and
s.yaml (Serverless Devs, Alibaba FC), and the scripts that deploy them.

One test per property; the per-function ones run for every function of
functions/LIST. `make check-templates` runs them.
"""

import json
import re
import shutil
import subprocess
import sys

import pytest
from conftest import PROBE_DEPLOYMENT_TYPE, ROOT, fc_resource, function_names, logical_id, sam_build_commands, translate

FUNCTIONS = function_names()

# What the code of each function reads, and the secrets it may read (template
# parameters); a function added to functions/LIST needs its line here.
ENV_NAMES = {
    "health": {
        "APP_ENV", "METRICS_NAMESPACE", "ALLOWED_ORIGINS", "ALLOWED_HOSTS", "AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH",
        "DATABASE_URL_SECRET_ARN", "REDIS_URL_SECRET_ARN", "REDIS_KEY_PREFIX",
    },
    "sso-login": {
        "APP_ENV", "METRICS_NAMESPACE", "ALLOWED_ORIGINS", "ALLOWED_HOSTS", "AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH",
        "JWT_EXPIRATION_HOURS", "REDIS_KEY_PREFIX", "SSO_ISSUER", "SSO_AUDIENCE", "SSO_JWKS_URL",
        "JWT_SECRET_ARN", "SSO_JWT_SECRET_ARN", "DATABASE_URL_SECRET_ARN", "REDIS_URL_SECRET_ARN",
        "JWT_PREVIOUS_SECRETS_ARN",
    },
    "conversations": {
        "APP_ENV", "METRICS_NAMESPACE", "ALLOWED_ORIGINS", "ALLOWED_HOSTS", "AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH",
        "JWT_EXPIRATION_HOURS", "JWT_SECRET_ARN", "DATABASE_URL_SECRET_ARN", "JWT_PREVIOUS_SECRETS_ARN",
    },
}
SECRET_PARAMETERS = {
    "health": {"DatabaseUrlSecretArn", "RedisUrlSecretArn"},
    "sso-login": {"JwtSecretArn", "JwtPreviousSecretsArn", "DatabaseUrlSecretArn", "RedisUrlSecretArn", "SsoJwtSecretArn"},
    "conversations": {"JwtSecretArn", "JwtPreviousSecretsArn", "DatabaseUrlSecretArn"},
}
# s.yaml: the variables each FC function takes from the deployer's environment.
FC_ENV = {
    "health": {"APP_ENV", "ALLOWED_ORIGINS", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL"},
    "sso-login": {
        "APP_ENV", "ALLOWED_ORIGINS", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL", "JWT_SECRET",
        "JWT_EXPIRATION_HOURS", "SSO_JWT_SECRET", "SSO_JWKS_URL", "SSO_ISSUER", "SSO_AUDIENCE",
        "REDIS_KEY_PREFIX", "JWT_PREVIOUS_SECRETS",
    },
    "conversations": {
        "APP_ENV", "ALLOWED_ORIGINS", "ALLOWED_HOSTS", "DATABASE_URL", "JWT_SECRET",
        "JWT_EXPIRATION_HOURS", "JWT_PREVIOUS_SECRETS",
    },
}
REQUIRED_PARAMETERS = {
    "AppEnv", "JwtExpirationHours", "AllowedOrigins", "AllowedHosts", "SsoIssuer", "SsoAudience",
    "SsoJwksUrl", "RedisUrlSecretArn", "DatabaseUrlSecretArn", "JwtSecretArn", "SsoJwtSecretArn",
    "RedisKeyPrefix", "SubnetIds", "SecurityGroupIds", "LogRetentionDays", "DeploymentType",
}
# The contract's routes on the HTTP API, and the function each goes to.
ROUTES = {
    "/health": "health",
    "/health/{proxy+}": "health",
    "$default": "health",
    "/api/v1/auth/login/sso": "sso-login",
    "/api/v1/auth/logout": "sso-login",
    "/api/v1/auth/logout/all": "sso-login",
    "/api/v1/conversations": "conversations",
    "/api/v1/conversations/{proxy+}": "conversations",
}
FC_DOMAIN_PATHS = {
    "/health", "/health/*", "/api/v1/auth/login/sso", "/api/v1/auth/logout", "/api/v1/auth/logout/*",
    "/api/v1/conversations", "/api/v1/conversations/*",
}
SCRIPTS_CHECKED = [
    "scripts/functions.sh", "scripts/run-local.sh",
    "scripts/test.sh", "scripts/services.sh", "scripts/tool.sh", "scripts/watch.sh",
    "scripts/lambda-env.sh", "scripts/check-watch.sh", "scripts/bench.sh", "scripts/check-templates.sh",
    "scripts/browser.sh", "scripts/fetch-ca-bundles.sh", "scripts/schemathesis.sh", "scripts/fuzz.sh",
    "scripts/profile.sh", "scripts/instructions.sh", "scripts/test-under-load.sh",
    ".ci/run",
]


def refs(value):
    """Every Ref target inside a (CloudFormation) value."""
    found = set()
    if isinstance(value, dict):
        if set(value) == {"Ref"} and not str(value["Ref"]).startswith("AWS::"):
            found.add(value["Ref"])
        for v in value.values():
            found |= refs(v)
    elif isinstance(value, list):
        for v in value:
            found |= refs(v)
    return found


# ---- the tools and the list of functions ---------------------------------------


def test_tools_are_installed():
    import cfnlint.version
    import samtranslator
    import yaml

    print(f"cfn-lint {cfnlint.version.__version__}, aws-sam-translator {samtranslator.__version__}, "
          f"PyYAML {yaml.__version__}")


def test_functions_list_matches_the_crates(root):
    crates = sorted(p.parent.name for p in (root / "functions").glob("*/Cargo.toml"))
    assert sorted(FUNCTIONS) == crates, "functions/LIST must name every functions/<name>/ crate, once"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_has_its_expected_settings_listed_here(name):
    assert name in ENV_NAMES and name in SECRET_PARAMETERS and name in FC_ENV, (
        f"{name}: add what it reads to ENV_NAMES, SECRET_PARAMETERS and FC_ENV in this file")


# ---- cfn-lint ---------------------------------------------------------------------


def test_cfn_lint_finds_no_errors(root):
    # Exit status is a bit mask: 2 = errors, 4 = warnings, 8 = informational.
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())",
         "template.yaml"],
        cwd=root, capture_output=True, text=True)
    print(run.stdout + run.stderr)  # warnings, shown with -rA or on failure
    assert run.returncode & 3 == 0, f"cfn-lint template.yaml: exit status {run.returncode}\n{run.stdout}{run.stderr}"


# ---- template.yaml as written -----------------------------------------------------


def test_template_parses(source):
    assert source.get("Resources"), "template.yaml has no Resources"


def test_a_rule_requires_audience_and_issuer_in_production_with_a_jwks_url(source):
    rules = (source.get("Rules") or {}).values()
    assert any(
        {"AppEnv", "SsoJwksUrl"} <= refs(r.get("RuleCondition"))
        and {"SsoAudience", "SsoIssuer"} <= refs(r.get("Assertions"))
        for r in rules
    ), "no rule ties SsoAudience and SsoIssuer to production with SsoJwksUrl"


def test_alarms_watch_replays_blocked_and_the_replay_store_being_unavailable(source):
    outcomes = {
        d.get("Value")
        for r in source["Resources"].values()
        if r.get("Type") == "AWS::CloudWatch::Alarm"
        and r["Properties"].get("MetricName") == "requests"
        for d in r["Properties"].get("Dimensions", [])
        if d.get("Name") == "outcome"
    }
    assert {"login_replay_blocked", "login_replay_store_unavailable"} <= outcomes, sorted(outcomes)


def dashboard_widgets(source):
    """The dashboard's widgets, its !Sub variables replaced by a placeholder."""
    (dashboard,) = [r for r in source["Resources"].values() if r.get("Type") == "AWS::CloudWatch::Dashboard"]
    body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    body = body if isinstance(body, str) else body[0]
    return json.loads(re.sub(r"\$\{[^}]+\}", "0", body))["widgets"]


def test_a_dashboard_shows_every_outcome_errors_latency_and_cold_starts(source):
    widgets = dashboard_widgets(source)
    charted = set()  # (metric, stat, outcome or None)
    for widget in widgets:
        props = widget["properties"]
        for metric in props.get("metrics", []):
            dimensions = dict(zip(metric[2::2], metric[3::2]))
            charted.add((metric[1], props.get("stat"), dimensions.get("outcome")))
    # Every outcome a function names in its code is on the dashboard.
    outcomes = set()
    for lib in (ROOT / "functions").glob("*/src/*.rs"):
        outcomes |= set(re.findall(r'Outcome::new\("([a-z_]+)"\)', lib.read_text()))
    assert outcomes, "no outcome found in the functions' code"
    missing = {o for o in outcomes if ("requests", "Sum", o) not in charted}
    assert not missing, f"outcomes not on the dashboard: {sorted(missing)}"
    for figure in [("http_4xx", "Sum", None), ("http_5xx", "Sum", None), ("latency_ms", "p50", None),
                   ("latency_ms", "p99", None), ("cold_start", "Sum", None)]:
        assert figure in charted, f"{figure} not on the dashboard"
    alarms = [w for w in widgets if w["type"] == "alarm"]
    assert alarms and len(alarms[0]["properties"]["alarms"]) >= 2


def test_template_has_the_parameters_of_the_seed_and_the_contract(source):
    missing = REQUIRED_PARAMETERS - set(source.get("Parameters", {}))
    assert not missing, f"missing parameters {sorted(missing)}"


def test_jwt_expiration_defaults_to_720_within_1_to_8784(source):
    p = source["Parameters"].get("JwtExpirationHours", {})
    assert (str(p.get("Default")), str(p.get("MinValue")), str(p.get("MaxValue"))) == ("720", "1", "8784")


def test_app_env_is_development_or_production_default_production(source):
    p = source["Parameters"].get("AppEnv", {})
    assert p.get("Default") == "production"
    assert set(p.get("AllowedValues", [])) == {"development", "production"}


def test_secrets_are_secrets_manager_arns_never_values(source):
    params = source["Parameters"]
    for n in ("JwtSecretArn", "SsoJwtSecretArn", "DatabaseUrlSecretArn", "RedisUrlSecretArn"):
        assert "secretsmanager" in params.get(n, {}).get("AllowedPattern", ""), f"{n}: not an ARN pattern"
    plain = [n for n in ("JwtSecret", "SsoJwtSecret", "DatabaseUrl", "RedisUrl") if n in params]
    assert not plain, f"secret values as parameters: {plain}"


def cargo_tree(root, *args):
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed (https://rustup.rs)")
    return subprocess.run(
        ["cargo", "tree", "--locked", "-e", "normal", "--prefix", "none", "--format", "{p}", *args],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout.splitlines()


SQLITE_CRATES = ("libsqlite3-sys ", "sqlx-sqlite ")


def deploy_build_args(root):
    """cargo's arguments for the deploy builds, as `cargo xtask` (make
    build-lambda, make build-fc) and scripts/functions.sh get them."""
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed (https://rustup.rs)")
    return subprocess.run(
        ["cargo", "xtask", "deploy-build-args"], cwd=root, capture_output=True, text=True, check=True,
    ).stdout.splitlines()


def test_deploy_builds_link_no_embedded_database(root):
    # make build-lambda and make build-fc (xtask/src/build.rs) and make bench
    # build the functions with these arguments. Production requires
    # PostgreSQL, so SQLite must not be among what they link.
    assert '"${DEPLOY_BUILD_ARGS[@]}"' in (root / "scripts" / "bench.sh").read_text()
    tree = cargo_tree(root, *deploy_build_args(root))
    assert any(line.startswith("sqlx-postgres ") for line in tree), "the dependency tree is not the expected one"
    linked = sorted({line for line in tree if line.startswith(SQLITE_CRATES)})
    assert not linked, f"the deploy builds link {linked}"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_sam_build_of_a_function_is_its_deploy_build(source, root, name):
    # SAM's rust-cargolambda method hands cargo-lambda BuildProperties.Binary
    # only (`--bin <name>`): the default features, SQLite linked. The makefile
    # method runs deploy.mk's build-<LogicalId> at the workspace root instead.
    res = source["Resources"].get(logical_id(name), {})
    meta = res.get("Metadata", {})
    assert meta.get("BuildMethod") == "makefile", (
        f"{logical_id(name)}: BuildMethod {meta.get('BuildMethod')!r} cannot pass the deploy features; use makefile")
    assert meta.get("ContextPath") in (".", "./") and meta.get("WorkingDirectory") in (".", "./"), (
        "make must run the workspace root's Makefile, in the workspace root")
    # SAM copies CodeUri to a scratch directory before make: never the workspace root (target/ is gigabytes).
    assert res.get("Properties", {}).get("CodeUri") == f"functions/{name}"

    cargo, cwd, copy = sam_build_commands(name)
    deploy = deploy_build_args(root)
    features = [a for i, a in enumerate(deploy) if a != "-p" and (i == 0 or deploy[i - 1] != "-p")]
    assert cargo == ["cargo", "lambda", "build", "--release", "--arm64", "-p", name, *features], (
        f"sam build of {name} runs {cargo}, not the deploy build of {name} alone")
    assert cwd == str(root)
    assert copy[1].endswith(f"/lambda/{name}/bootstrap") and copy[2] == "/tmp/check-templates-artifacts/bootstrap", copy

    tree = cargo_tree(root, *cargo[5:])
    assert any(line.startswith("sqlx-postgres ") for line in tree), "the dependency tree is not the expected one"
    linked = sorted({line for line in tree if line.startswith(SQLITE_CRATES)})
    assert not linked, f"sam build of {name} links {linked}"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_functions_default_build_has_the_embedded_database_for_local_use(root, name):
    # The contract: DATABASE_URL unset means an embedded database, for local use.
    tree = cargo_tree(root, "-p", name)
    assert any(line.startswith("libsqlite3-sys ") for line in tree), f"{name}'s default build has no embedded database"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_publishes_a_version_on_any_property_change(source, name):
    # A configuration change (e.g. AllowedOrigins) must publish a version too.
    res = source["Resources"].get(logical_id(name), {})
    all_props = res.get("Properties", {}).get(
        "AutoPublishAliasAllProperties",
        source.get("Globals", {}).get("Function", {}).get("AutoPublishAliasAllProperties"))
    assert all_props is True, "AutoPublishAliasAllProperties must be true"


# ---- template.yaml through the SAM translator -----------------------------------


def test_sam_translator_accepts_the_template(source):
    from samtranslator.public.exceptions import InvalidDocumentException

    try:
        translate(source)
    except InvalidDocumentException as e:
        pytest.fail("; ".join(c.message for c in e.causes), pytrace=False)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_runs_provided_al2023_on_arm64_with_handler_bootstrap(resources, name):
    fn = resources.get(logical_id(name), {})
    props = fn.get("Properties", {})
    assert fn.get("Type") == "AWS::Lambda::Function"
    assert (props.get("Runtime"), props.get("Architectures"), props.get("Handler")) == (
        "provided.al2023", ["arm64"], "bootstrap")


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_gets_the_environment_variables_its_code_reads(resources, name):
    props = resources.get(logical_id(name), {}).get("Properties", {})
    env = set(props.get("Environment", {}).get("Variables", {}))
    missing = ENV_NAMES[name] - env
    assert not missing, f"missing {sorted(missing)}"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_verifies_the_database_with_the_ca_bundle_layer(source, resources, name):
    props = resources.get(logical_id(name), {}).get("Properties", {})
    env = props.get("Environment", {}).get("Variables", {})
    assert "DATABASE_CA_CERT_PATH" in env
    default = str(source["Parameters"].get("DatabaseCaCertPath", {}).get("Default", ""))
    assert default.startswith("/opt/"), default
    layers = props.get("Layers", [])
    assert any(isinstance(layer, dict) and str(layer.get("Ref", "")).startswith("CaBundleLayer") for layer in layers), layers
    assert source["Resources"].get("CaBundleLayer", {}).get("Properties", {}).get("ContentUri") == "ca/"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_environment_holds_no_secret_value_only_secret_arns(resources, name):
    props = resources.get(logical_id(name), {}).get("Properties", {})
    env = set(props.get("Environment", {}).get("Variables", {}))
    plain = env & {"JWT_SECRET", "SSO_JWT_SECRET", "DATABASE_URL", "REDIS_URL"}
    assert not plain, f"found {sorted(plain)}"


def _alias(by_type, name):
    aliases = [r for r in by_type.get("AWS::Lambda::Alias", {}).values()
               if r["Properties"].get("FunctionName") == {"Ref": logical_id(name)}]
    return aliases[0] if aliases else {}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_live_alias_is_shifted_by_codedeploy(by_type, name):
    alias = _alias(by_type, name)
    assert alias.get("Properties", {}).get("Name") == "live"
    assert alias.get("UpdatePolicy", {}).get("CodeDeployLambdaAliasUpdate")


def _deployment_group(by_type, resources, name):
    update = _alias(by_type, name).get("UpdatePolicy", {}).get("CodeDeployLambdaAliasUpdate", {})
    return resources.get(update.get("DeploymentGroupName", {}).get("Ref", ""), {}).get("Properties", {})


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_deployment_type_is_the_parameter_and_rolls_back_on_alarms(by_type, resources, name):
    group = _deployment_group(by_type, resources, name)
    alarms = group.get("AlarmConfiguration", {}).get("Alarms", [])
    assert PROBE_DEPLOYMENT_TYPE in json.dumps(group.get("DeploymentConfigName"))
    assert len(alarms) >= 2
    assert "DEPLOYMENT_STOP_ON_ALARM" in group.get("AutoRollbackConfiguration", {}).get("Events", [])


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_alarms_watch_lambda_errors_and_the_api_5xx(by_type, resources, name):
    alarms = _deployment_group(by_type, resources, name).get("AlarmConfiguration", {}).get("Alarms", [])
    metrics = set()
    for a in refs(alarms):
        if a in resources:
            p = resources[a]["Properties"]
            ns = p.get("Namespace") if isinstance(p.get("Namespace"), str) else "custom"
            metrics.add((ns, p.get("MetricName")))
    assert ("AWS/Lambda", "Errors") in metrics and ("custom", "ApiBugs") in metrics, f"got {sorted(metrics)}"
    assert ("custom", "ApiOverload") not in metrics, "overload must not roll back a deployment"


def _matches(pattern, event):
    """Whether a CloudWatch Logs JSON metric filter pattern (the subset the
    template uses: $.field compared with = != >= to numbers and strings,
    joined by && and ||, in parentheses) matches one access-log line."""
    body = pattern.strip()
    assert body.startswith("{") and body.endswith("}"), pattern
    expression = body[1:-1]
    expression = re.sub(r"\$\.(\w+)", r"event.get('\1')", expression)
    expression = re.sub(r"(?<![!<>=])=(?!=)", "==", expression)
    expression = expression.replace("&&", " and ").replace("||", " or ")
    return bool(eval(expression, {}, {"event": event}))  # noqa: S307 - the template's own text


# Access-log lines as API Gateway writes them (template.yaml's Format):
# what a deploy's canary must roll back on, and what it must not.
BUG_LINES = [
    {"status": 500, "integrationStatus": "200"},  # our catch-all 500
    {"status": 502, "integrationStatus": "200"},  # a function that cannot start / answers garbage
    {"status": 504, "integrationStatus": "-"},  # a hung function
]
OVERLOAD_LINES = [
    {"status": 503, "integrationStatus": "200"},  # a dependency down or full, the database out of connections
    {"status": 429, "integrationStatus": "-"},  # the HTTP API's throttling
    {"status": 500, "integrationStatus": "429"},  # a Lambda throttle (reserved concurrency reached)
]


def _metric_filter(resources, metric):
    for r in resources.values():
        if r["Type"] == "AWS::Logs::MetricFilter":
            if r["Properties"]["MetricTransformations"][0]["MetricName"] == metric:
                return r["Properties"]["FilterPattern"]
    pytest.fail(f"no metric filter for {metric}")


def test_the_rollback_metric_counts_bugs_and_never_overload(resources):
    bugs = _metric_filter(resources, "ApiBugs")
    assert all(_matches(bugs, line) for line in BUG_LINES)
    assert not any(_matches(bugs, line) for line in OVERLOAD_LINES + [{"status": 200}, {"status": 404}])


def test_overload_has_a_metric_and_an_alarm_of_its_own(resources):
    overload = _metric_filter(resources, "ApiOverload")
    assert all(_matches(overload, line) for line in OVERLOAD_LINES)
    assert not any(_matches(overload, line) for line in BUG_LINES + [{"status": 200}])
    alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert any(a.get("MetricName") == "ApiOverload" for a in alarms)


# The database connections the defaults may hold, at most (docs/deploy.md).
CONNECTION_BUDGET = 90


def test_functions_reserved_concurrency_keeps_the_connection_budget(source, resources):
    params = source["Parameters"]
    total = 0
    for name in FUNCTIONS:
        reserved = resources[logical_id(name)]["Properties"].get("ReservedConcurrentExecutions")
        assert isinstance(reserved, dict) and "Ref" in reserved, f"{name}: {reserved}"
        total += int(params[reserved["Ref"]]["Default"])
    # Lambda's pool size is one connection per instance (DB_POOL_SIZE unset).
    assert total <= CONNECTION_BUDGET, f"{total} connections by default"


def test_http_api_throttles_before_the_functions(source):
    routes = source["Resources"]["HttpApi"]["Properties"].get("DefaultRouteSettings", {})
    assert routes.get("ThrottlingRateLimit") == {"Ref": "ApiThrottlingRateLimit"}
    assert routes.get("ThrottlingBurstLimit") == {"Ref": "ApiThrottlingBurstLimit"}


def _role(resources, name):
    props = resources.get(logical_id(name), {}).get("Properties", {})
    return resources.get(props.get("Role", {}).get("Fn::GetAtt", [""])[0], {})


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_reads_its_own_secrets_only(resources, name):
    statements = [s for pol in _role(resources, name).get("Properties", {}).get("Policies", [])
                  for s in pol["PolicyDocument"]["Statement"]]
    secret_resources, wildcard = set(), False
    for s in statements:
        actions = s.get("Action") if isinstance(s.get("Action"), list) else [s.get("Action")]
        if any(a and a.startswith("secretsmanager:") for a in actions):
            wildcard |= "*" in json.dumps(s.get("Resource"))
            secret_resources |= refs(s.get("Resource"))
    assert not wildcard, "secretsmanager on a wildcard resource"
    assert secret_resources == SECRET_PARAMETERS[name]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_runs_in_the_vpc(resources, name):
    props = resources.get(logical_id(name), {}).get("Properties", {})
    managed = _role(resources, name).get("Properties", {}).get("ManagedPolicyArns", [])
    assert "VpcConfig" in props
    assert any("AWSLambdaVPCAccessExecutionRole" in json.dumps(a) for a in managed)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_log_group_has_a_retention(resources, name):
    props = resources.get(logical_id(name), {}).get("Properties", {})
    log_group = resources.get(props.get("LoggingConfig", {}).get("LogGroup", {}).get("Ref", ""), {})
    lprops = log_group.get("Properties", {})
    assert "/aws/lambda/" in json.dumps(lprops.get("LogGroupName"))
    assert refs(lprops.get("RetentionInDays")) == {"LogRetentionDays"}


def _api_body(by_type):
    api = next(iter(by_type.get("AWS::ApiGatewayV2::Api", {}).values()), {})
    return api.get("Properties", {}).get("Body", {})


def test_http_api_routes_every_method_to_each_functions_live_alias(by_type):
    routed = {}
    for path, methods in _api_body(by_type).get("paths", {}).items():
        for method, op in methods.items():
            uri = json.dumps(op.get("x-amazon-apigateway-integration", {}).get("uri", ""))
            for name in FUNCTIONS:
                if f"{logical_id(name)}Alias" in uri:
                    routed[path] = (method, name)
    expected = {path: ("x-amazon-apigateway-any-method", fn) for path, fn in ROUTES.items()}
    assert {p: routed.get(p) for p in ROUTES} == expected


def test_http_api_has_no_gateway_cors_the_functions_answer_it(source, by_type):
    assert "x-amazon-apigateway-cors" not in _api_body(by_type)
    assert "CorsConfiguration" not in json.dumps(source["Resources"].get("HttpApi", {}))


def test_http_api_has_one_explicit_default_stage(by_type):
    stages = by_type.get("AWS::ApiGatewayV2::Stage", {})
    assert len(stages) == 1
    assert next(iter(stages.values()))["Properties"].get("StageName") == "$default"


def test_http_api_has_a_5xx_alarm_by_api_and_stage(by_type):
    gw_alarms = [r for r in by_type.get("AWS::CloudWatch::Alarm", {}).values()
                 if r["Properties"].get("Namespace") == "AWS/ApiGateway"]
    assert any(a["Properties"].get("MetricName") == "5xx"
               and {d["Name"] for d in a["Properties"].get("Dimensions", [])} == {"ApiId", "Stage"}
               for a in gw_alarms)


def test_outputs_name_the_api_url_and_the_alias_arns(translated):
    expected = {"ApiUrl"} | {logical_id(n).removesuffix("Function") + "AliasArn" for n in FUNCTIONS}
    missing = expected - set(translated.get("Outputs", {}))
    assert not missing, f"missing outputs {sorted(missing)}"


# ---- s.yaml (Alibaba FC) -------------------------------------------------------


def test_s_yaml_parses(s_yaml):
    assert isinstance(s_yaml, dict)


def test_s_yaml_is_serverless_devs_edition_3(s_yaml):
    assert str(s_yaml.get("edition")) == "3.0.0"


def _fc_props(s_yaml, name):
    r = (s_yaml.get("resources") or {}).get(fc_resource(name)) or {}
    return r, r.get("props") or {}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_fc_function_is_fc3_on_custom_debian10_running_its_bootstrap(s_yaml, name):
    r, p = _fc_props(s_yaml, name)
    crc = p.get("customRuntimeConfig") or {}
    assert r.get("component") == "fc3" and p.get("runtime") == "custom.debian10"
    assert p.get("code") in (f"./dist/fc/{name}", f"dist/fc/{name}")
    assert crc.get("command") in (["./bootstrap"], ["/code/bootstrap"])


@pytest.mark.parametrize("name", FUNCTIONS)
def test_fc_function_listens_on_port_9000(s_yaml, name):
    # FC sets FC_CUSTOM_LISTEN_PORT from customRuntimeConfig.port.
    _, p = _fc_props(s_yaml, name)
    env = p.get("environmentVariables") or {}
    assert (p.get("customRuntimeConfig") or {}).get("port") == 9000
    assert not [k for k in env if k.startswith("FC_")]
    assert env.get("PORT", "9000") == "9000"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_fc_function_has_an_anonymous_http_trigger_for_get_post_options(s_yaml, name):
    _, p = _fc_props(s_yaml, name)
    http = [t for t in p.get("triggers") or [] if t.get("triggerType") == "http"]
    assert len(http) == 1
    tc = http[0].get("triggerConfig") or {}
    assert tc.get("authType") == "anonymous"
    assert {"GET", "POST", "OPTIONS"} <= set(tc.get("methods") or [])


@pytest.mark.parametrize("name", FUNCTIONS)
def test_fc_function_takes_its_settings_from_the_deployers_environment(s_yaml, name):
    _, p = _fc_props(s_yaml, name)
    env = p.get("environmentVariables") or {}
    missing = FC_ENV[name] - set(env)
    assert not missing, f"missing {sorted(missing)}"
    literal = [k for k in FC_ENV[name] if not str(env[k]).startswith("${env(")]
    assert not literal, f"not from ${{env('...')}}: {literal}"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_fc_function_settings_fit_fc(s_yaml, name):
    _, p = _fc_props(s_yaml, name)
    memory = p.get("memorySize")
    assert isinstance(memory, int) and memory % 64 == 0 and memory >= 128, f"memorySize {memory}"
    assert 1 <= int(p.get("timeout", 0)) <= 86400
    assert 1 <= int(p.get("instanceConcurrency", 1)) <= 100


@pytest.mark.parametrize("name", FUNCTIONS)
def test_fc_function_pool_holds_one_connection_per_concurrent_request(s_yaml, name):
    _, p = _fc_props(s_yaml, name)
    env = p.get("environmentVariables") or {}
    assert "DB_POOL_SIZE" in env, "DB_POOL_SIZE unset: the pool would not match instanceConcurrency"
    assert int(env["DB_POOL_SIZE"]) == int(p.get("instanceConcurrency", 1))


def test_fc_instances_times_pool_keep_the_connection_budget(s_yaml):
    total = 0
    for name in FUNCTIONS:
        _, p = _fc_props(s_yaml, name)
        reserved = (p.get("concurrencyConfig") or {}).get("reservedConcurrency")
        assert isinstance(reserved, int) and reserved >= 1, f"{name}: concurrencyConfig.reservedConcurrency"
        # FC's reserved concurrency counts requests; an instance serves
        # instanceConcurrency of them with as many connections.
        per_instance = int(p.get("instanceConcurrency", 1))
        instances = -(-reserved // per_instance)
        total += instances * int((p.get("environmentVariables") or {}).get("DB_POOL_SIZE", per_instance))
    assert total <= CONNECTION_BUDGET, f"{total} connections"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_fc_function_verifies_the_database_with_a_ca_file_under_code(s_yaml, name):
    _, p = _fc_props(s_yaml, name)
    env = p.get("environmentVariables") or {}
    assert "'/code/" in str(env.get("DATABASE_CA_CERT_PATH", "")), env.get("DATABASE_CA_CERT_PATH")


def test_fc_custom_domain_serves_https_only_with_a_certificate_from_the_environment(s_yaml):
    props = ((s_yaml.get("resources") or {}).get("domain") or {}).get("props") or {}
    assert props.get("protocol") == "HTTPS"
    assert str((props.get("certConfig") or {}).get("certId", "")).startswith("${env(")
    assert (props.get("tlsConfig") or {}).get("minVersion") in ("TLSv1.2", "TLSv1.3")


def test_fc_custom_domain_routes_every_path_to_the_live_alias(s_yaml):
    domain = (s_yaml.get("resources") or {}).get("domain") or {}
    routes = ((domain.get("props") or {}).get("routeConfig") or {}).get("routes") or []
    assert domain.get("component") == "fc3-domain"
    assert FC_DOMAIN_PATHS <= {r.get("path") for r in routes}
    for r in routes:
        assert r.get("qualifier") == "live", r
        assert {"GET", "POST", "OPTIONS"} <= set(r.get("methods") or []), r


# ---- the scripts ----------------------------------------------------------------


def test_every_script_is_checked_here(root):
    present = {str(p.relative_to(root)) for p in (root / "scripts").glob("*.sh")}
    assert present <= set(SCRIPTS_CHECKED), f"add to SCRIPTS_CHECKED: {sorted(present - set(SCRIPTS_CHECKED))}"


@pytest.mark.parametrize("script", SCRIPTS_CHECKED)
def test_script_parses(root, script):
    run = subprocess.run(["bash", "-n", script], cwd=root, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("script", SCRIPTS_CHECKED)
def test_script_passes_shellcheck(root, script):
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    run = subprocess.run(["shellcheck", "-x", "-S", "warning", script], cwd=root, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def _function_base(name):
    """The function's part of its resources' logical ids: sso-login -> SsoLogin."""
    return logical_id(name)[: -len("Function")]


def test_the_per_function_alarms_are_written_once_for_every_function(raw_source):
    resources = raw_source["Resources"]
    loops = {k: v for k, v in resources.items() if k.startswith("Fn::ForEach::")}
    alarm_loops = [v for v in loops.values() if any(key.endswith("ErrorsAlarm") for key in v[2])]
    assert len(alarm_loops) == 1, f"one loop writes the functions' alarms: {sorted(loops)}"
    identifier, collection, _ = alarm_loops[0]
    assert collection == [_function_base(n) for n in FUNCTIONS], "the loop runs over functions/LIST, in its order"
    written = [k for k in resources if k.endswith("ErrorsAlarm") and not k.startswith("Api")]
    assert not written, f"alarms written per function beside the loop: {written}"
    assert identifier == "Function"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_each_functions_error_alarms_watch_its_own_alias_and_new_version(resources, name):
    function, base = logical_id(name), _function_base(name)

    def dimensions(alarm):
        return {d["Name"]: json.dumps(d["Value"]) for d in resources[alarm]["Properties"]["Dimensions"]}

    alias = dimensions(f"{base}AliasErrorsAlarm")
    assert "${" + function + "}" in alias["FunctionName"], alias
    assert "${" + function + "}:live" in alias["Resource"], alias
    new = dimensions(f"{base}NewVersionErrorsAlarm")
    assert "${" + function + "}:live" in new["Resource"], new
    assert "${" + function + "Version" in new["ExecutedVersion"], new
