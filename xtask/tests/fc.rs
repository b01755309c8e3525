//! deploy-fc and rollback-fc against a stand-in `s` (tests/sandbox).

mod sandbox;

use sandbox::{Sandbox, printed};
use serde_json::json;

const SECRET: &str = "jwt-secret-that-must-never-be-printed-0123456789";

/// Every setting that deploy-fc checks for.
fn settings() -> Vec<(&'static str, &'static str)> {
    vec![
        ("TMS_FC_CERT_ID", "12345"),
        ("ALLOWED_ORIGINS", "https://app.example.com"),
        ("ALLOWED_HOSTS", "api.example.com"),
        ("JWT_SECRET", SECRET),
        ("DATABASE_URL", "postgres://u:database-password@db/tms"),
        ("REDIS_URL", "rediss://redis.example.com"),
        ("TMS_FC_VPC_ID", "vpc-1"),
        ("TMS_FC_VSWITCH_ID", "vsw-1"),
        ("TMS_FC_SECURITY_GROUP_ID", "sg-1"),
        ("TMS_FC_DOMAIN", "api.example.com"),
        ("SSO_JWT_SECRET", "sso-secret-that-must-never-be-printed"),
    ]
}

/// Two functions built, `live` on 3 and 7 now; publishing gives 4 and 8.
fn deployable(test: &str) -> Sandbox {
    let sandbox = Sandbox::new(test, &["health", "sso-login"]);
    sandbox.fake_cli("s");
    for name in ["health", "sso-login"] {
        sandbox.write_executable(&format!("dist/fc/{name}/bootstrap"), "");
    }
    sandbox.answer(
        "health.alias.get",
        json!({"health": {"aliasName": "live", "versionId": "3"}}),
    );
    sandbox.answer(
        "health.version.publish",
        json!({"health": {"versionId": "4"}}),
    );
    sandbox.answer(
        "sso_login.alias.get",
        json!({"sso_login": {"aliasName": "live", "versionId": 7}}),
    );
    sandbox.answer(
        "sso_login.version.publish",
        json!({"sso_login": {"versionId": "8"}}),
    );
    sandbox
}

/// The calls that moved an alias, in order.
fn alias_moves(calls: &[String]) -> Vec<&String> {
    let moves = calls.iter().filter(|call| call.contains("alias publish"));
    moves.collect()
}

fn live_to(resource: &str, version: u64, weights: &str) -> String {
    format!(
        "s {resource} alias publish --alias-name live --version-id {version} --additionalVersionWeight {weights}"
    )
}

#[test]
fn deploy_publishes_a_version_per_function_and_moves_live_to_it() {
    let sandbox = deployable("deploy");
    let output = sandbox.xtask(&["deploy-fc"], &settings());
    assert!(output.status.success(), "{}", printed(&output));
    let expected = [
        "s health deploy -y",
        "s health alias get --alias-name live -o json --silent",
        "s health version publish --description git unknown -o json --silent",
        "s sso_login deploy -y",
        "s sso_login alias get --alias-name live -o json --silent",
        "s sso_login version publish --description git unknown -o json --silent",
        &live_to("health", 4, "{}"),
        &live_to("sso_login", 8, "{}"),
        "s domain deploy -y",
    ];
    assert_eq!(sandbox.calls(), expected);
    assert!(!printed(&output).contains(SECRET) && !printed(&output).contains("database-password"));
}

#[test]
fn a_first_deploy_without_a_live_alias_still_moves_live() {
    let sandbox = deployable("first-deploy");
    sandbox.refuse("health.alias.get");
    let output = sandbox.xtask(&["deploy-fc"], &settings());
    assert!(output.status.success(), "{}", printed(&output));
    assert!(
        sandbox.calls().contains(&live_to("health", 4, "{}")),
        "{:#?}",
        sandbox.calls()
    );
}

#[test]
fn a_canary_that_passes_its_check_shares_live_then_moves_it() {
    let sandbox = deployable("canary-passes");
    let mut env = settings();
    env.extend([
        ("FC_CANARY_WEIGHT", "0.1"),
        ("FC_CANARY_SECONDS", "0"),
        ("FC_CANARY_CHECK", "true"),
    ]);
    let output = sandbox.xtask(&["deploy-fc"], &env);
    assert!(output.status.success(), "{}", printed(&output));
    let calls = sandbox.calls();
    let moves = alias_moves(&calls);
    let expected = [
        live_to("health", 3, r#"{"4":0.1}"#),
        live_to("sso_login", 7, r#"{"8":0.1}"#),
        live_to("health", 4, "{}"),
        live_to("sso_login", 8, "{}"),
    ];
    assert_eq!(moves, expected.iter().collect::<Vec<_>>());
    assert_eq!(calls.last().unwrap(), "s domain deploy -y");
}

#[test]
fn a_canary_whose_check_fails_puts_live_back_and_fails() {
    let sandbox = deployable("canary-fails");
    let mut env = settings();
    env.extend([
        ("FC_CANARY_WEIGHT", "0.1"),
        ("FC_CANARY_SECONDS", "0"),
        ("FC_CANARY_CHECK", "exit 1"),
    ]);
    let output = sandbox.xtask(&["deploy-fc"], &env);
    assert!(!output.status.success(), "{}", printed(&output));
    let calls = sandbox.calls();
    let moves = alias_moves(&calls);
    let expected = [
        live_to("health", 3, r#"{"4":0.1}"#),
        live_to("sso_login", 7, r#"{"8":0.1}"#),
        live_to("health", 3, "{}"),
        live_to("sso_login", 7, "{}"),
    ];
    assert_eq!(moves, expected.iter().collect::<Vec<_>>());
    assert!(
        !calls.iter().any(|call| call.contains("domain")),
        "{calls:#?}"
    );
    assert!(
        printed(&output).contains("canary check failed"),
        "{}",
        printed(&output)
    );
}

#[test]
fn deploy_without_a_certificate_fails_in_one_line_before_any_call() {
    let sandbox = deployable("no-certificate");
    let env: Vec<_> = settings()
        .into_iter()
        .filter(|(name, _)| *name != "TMS_FC_CERT_ID")
        .collect();
    let output = sandbox.xtask(&["deploy-fc"], &env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("deploy-fc: TMS_FC_CERT_ID is not set"),
        "{stderr}"
    );
    assert_eq!(sandbox.calls(), Vec::<String>::new());
}

#[test]
fn deploy_names_every_missing_setting_before_any_call() {
    let sandbox = deployable("missing-settings");
    let unset = ["DATABASE_URL", "TMS_FC_DOMAIN", "SSO_JWT_SECRET"];
    let env: Vec<_> = settings()
        .into_iter()
        .filter(|(name, _)| !unset.contains(name))
        .collect();
    let output = sandbox.xtask(&["deploy-fc"], &env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("DATABASE_URL TMS_FC_DOMAIN SSO_JWT_SECRET or SSO_JWKS_URL"),
        "{stderr}"
    );
    assert_eq!(sandbox.calls(), Vec::<String>::new());
}

#[test]
fn deploy_without_the_builds_says_to_build_first() {
    let sandbox = deployable("no-build");
    std::fs::remove_file(sandbox.path("dist/fc/sso-login/bootstrap")).unwrap();
    let output = sandbox.xtask(&["deploy-fc"], &settings());
    assert!(!output.status.success());
    assert!(
        printed(&output)
            .contains("dist/fc/sso-login/bootstrap is missing: run make build-fc first")
    );
    assert_eq!(sandbox.calls(), Vec::<String>::new());
}

/// `live` on 5 for health and sso_login, versions 2, 4 and 5 published.
fn rollbackable(test: &str) -> Sandbox {
    let sandbox = Sandbox::new(test, &["health", "sso-login"]);
    sandbox.fake_cli("s");
    for resource in ["health", "sso_login"] {
        sandbox.answer(
            &format!("{resource}.alias.get"),
            json!({resource: {"versionId": "5"}}),
        );
        let versions =
            json!({resource: [{"versionId": "5"}, {"versionId": "4"}, {"versionId": "2"}]});
        sandbox.answer(&format!("{resource}.version.list"), versions);
    }
    sandbox
}

#[test]
fn rollback_moves_live_one_version_back() {
    let sandbox = rollbackable("rollback");
    let output = sandbox.xtask(&["rollback-fc"], &[]);
    assert!(output.status.success(), "{}", printed(&output));
    let calls = sandbox.calls();
    let moves = alias_moves(&calls);
    assert_eq!(
        moves,
        [&live_to("health", 4, "{}"), &live_to("sso_login", 4, "{}")]
    );
}

#[test]
fn rollback_to_a_given_version_of_the_functions_named() {
    let sandbox = rollbackable("rollback-version");
    let output = sandbox.xtask(
        &["rollback-fc"],
        &[("FUNCTIONS", "sso_login"), ("VERSION", "2")],
    );
    assert!(output.status.success(), "{}", printed(&output));
    let expected = [
        "s sso_login alias get --alias-name live -o json --silent",
        &live_to("sso_login", 2, "{}"),
    ];
    assert_eq!(sandbox.calls(), expected);
}

#[test]
fn rollback_refuses_when_no_version_is_older() {
    let sandbox = rollbackable("rollback-none-older");
    sandbox.answer(
        "health.version.list",
        json!({"health": [{"versionId": "5"}]}),
    );
    let output = sandbox.xtask(&["rollback-fc"], &[]);
    assert!(!output.status.success());
    assert!(
        printed(&output).contains("health: no version older than 5"),
        "{}",
        printed(&output)
    );
    let calls = sandbox.calls();
    assert!(
        !calls
            .iter()
            .any(|call| call.starts_with("s health alias publish")),
        "{calls:#?}"
    );
    // The other function still goes back.
    assert!(calls.contains(&live_to("sso_login", 4, "{}")), "{calls:#?}");
}
