//! rollback-aws against a stand-in `aws` (tests/sandbox).

mod sandbox;

use sandbox::{Sandbox, printed};
use serde_json::json;

/// The stack tms-chat with two functions whose `live` is on 6; versions 4,
/// 5 and 6 published; no CodeDeploy deployment running.
fn stack(test: &str) -> Sandbox {
    let sandbox = Sandbox::new(test, &["health", "sso-login"]);
    sandbox.fake_cli("aws");
    let application = json!({"StackResources": [{"PhysicalResourceId": "tms-chat-app"}]});
    sandbox.answer("cloudformation.describe-stack-resources", application);
    sandbox.answer("deploy.list-deployments", json!({"deployments": []}));
    let outputs = json!([
        {"OutputKey": "ApiUrl", "OutputValue": "https://api.example.com"},
        {"OutputKey": "HealthFunctionName", "OutputValue": "tms-health"},
        {"OutputKey": "SsoLoginFunctionName", "OutputValue": "tms-sso-login"},
    ]);
    sandbox.answer(
        "cloudformation.describe-stacks",
        json!({"Stacks": [{"Outputs": outputs}]}),
    );
    for function in ["tms-health", "tms-sso-login"] {
        sandbox.answer(
            &format!("lambda.get-alias.{function}"),
            json!({"Name": "live", "FunctionVersion": "6"}),
        );
        let versions = json!({"Versions": [{"Version": "$LATEST"}, {"Version": "4"}, {"Version": "6"}, {"Version": "5"}]});
        sandbox.answer(
            &format!("lambda.list-versions-by-function.{function}"),
            versions,
        );
    }
    sandbox
}

fn alias_updates(sandbox: &Sandbox) -> Vec<String> {
    sandbox
        .calls()
        .into_iter()
        .filter(|call| call.starts_with("aws lambda update-alias"))
        .collect()
}

fn live_to(function: &str, version: u64) -> String {
    format!(
        "aws lambda update-alias --function-name {function} --name live --function-version {version} --routing-config {{\"AdditionalVersionWeights\":{{}}}} --output json"
    )
}

#[test]
fn rollback_moves_each_alias_to_the_version_before() {
    let sandbox = stack("aws-rollback");
    let output = sandbox.xtask(&["rollback-aws"], &[]);
    assert!(output.status.success(), "{}", printed(&output));
    assert_eq!(
        alias_updates(&sandbox),
        [live_to("tms-health", 5), live_to("tms-sso-login", 5)]
    );
    let first = &sandbox.calls()[0];
    assert!(
        first.contains("--stack-name tms-chat") && first.ends_with("--output json"),
        "{first}"
    );
}

#[test]
fn rollback_stops_a_deployment_in_progress_instead() {
    let sandbox = stack("aws-stop");
    sandbox.answer(
        "deploy.list-deployments",
        json!({"deployments": ["d-CANARY1"]}),
    );
    let output = sandbox.xtask(&["rollback-aws"], &[("STACK_NAME", "tms-staging")]);
    assert!(output.status.success(), "{}", printed(&output));
    let calls = sandbox.calls();
    let stop = "aws deploy stop-deployment --deployment-id d-CANARY1 --auto-rollback-enabled --output json";
    assert!(calls.iter().any(|call| call == stop), "{calls:#?}");
    assert!(
        calls[1].contains("--application-name tms-chat-app"),
        "{calls:#?}"
    );
    assert!(calls[0].contains("--stack-name tms-staging"), "{calls:#?}");
    assert_eq!(alias_updates(&sandbox), Vec::<String>::new());
}

#[test]
fn rollback_to_a_given_version_of_the_functions_named() {
    let sandbox = stack("aws-version");
    let output = sandbox.xtask(
        &["rollback-aws"],
        &[("FUNCTIONS", "SsoLogin"), ("VERSION", "4")],
    );
    assert!(output.status.success(), "{}", printed(&output));
    assert_eq!(alias_updates(&sandbox), [live_to("tms-sso-login", 4)]);
    let calls = sandbox.calls();
    assert!(
        !calls.iter().any(|call| call.contains("list-deployments")),
        "{calls:#?}"
    );
}

#[test]
fn rollback_refuses_when_no_version_is_older() {
    let sandbox = stack("aws-none-older");
    sandbox.answer(
        "lambda.list-versions-by-function.tms-health",
        json!({"Versions": [{"Version": "6"}]}),
    );
    let output = sandbox.xtask(&["rollback-aws"], &[]);
    assert!(!output.status.success());
    assert!(
        printed(&output).contains("tms-health: no version older than 6"),
        "{}",
        printed(&output)
    );
    assert_eq!(alias_updates(&sandbox), [live_to("tms-sso-login", 5)]);
}

#[test]
fn an_unreadable_stack_says_which_settings_to_check() {
    let sandbox = stack("aws-no-stack");
    sandbox.refuse("cloudformation.describe-stack-resources");
    let output = sandbox.xtask(&["rollback-aws"], &[]);
    assert!(!output.status.success());
    assert!(
        printed(&output)
            .contains("cannot read stack tms-chat (set STACK_NAME=..., AWS_REGION=...)")
    );
    assert_eq!(alias_updates(&sandbox), Vec::<String>::new());
}

/// A workspace with the stand-ins `sam`, `aws` and `cargo` (cargo-lambda
/// present), the CA bundle already fetched, and a stack whose ApiUrl is known.
fn deployable(test: &str) -> Sandbox {
    let sandbox = stack(test);
    sandbox.fake_cli("sam");
    sandbox.fake_cli("cargo");
    sandbox.write("ca/rds-global-bundle.pem", "a CA bundle");
    sandbox
}

fn sam_calls(sandbox: &Sandbox) -> Vec<String> {
    let calls = sandbox.calls().into_iter();
    calls.filter(|call| call.starts_with("sam ")).collect()
}

#[test]
fn the_first_deploy_is_guided_and_saves_its_answers() {
    let sandbox = deployable("aws-deploy-first");
    let output = sandbox.xtask(&["deploy-aws"], &[("STACK_NAME", "tms-test")]);
    assert!(output.status.success(), "{}", printed(&output));
    assert_eq!(
        sam_calls(&sandbox),
        [
            "sam build --template-file template.yaml",
            "sam deploy --guided --stack-name tms-test --config-file samconfig.toml --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND",
        ]
    );
    assert!(
        sandbox.calls().contains(
            &"aws cloudformation describe-stacks --stack-name tms-test --output json".into()
        ),
        "{:?}",
        sandbox.calls()
    );
    assert!(printed(&output).contains("ApiUrl: https://api.example.com"));
}

#[test]
fn a_later_deploy_takes_its_settings_from_the_saved_config() {
    let sandbox = deployable("aws-deploy-later");
    sandbox.write("prod.toml", "version = 0.1");
    let output = sandbox.xtask(&["deploy-aws"], &[("SAM_CONFIG", "prod.toml")]);
    assert!(output.status.success(), "{}", printed(&output));
    assert_eq!(
        sam_calls(&sandbox),
        [
            "sam build --template-file template.yaml",
            "sam deploy --config-file prod.toml",
        ]
    );
}

#[test]
fn a_failed_build_deploys_nothing_and_a_missing_sam_says_how_to_install_it() {
    let sandbox = deployable("aws-deploy-build-fails");
    sandbox.refuse("build");
    let output = sandbox.xtask(&["deploy-aws"], &[]);
    assert!(!output.status.success());
    assert_eq!(
        sam_calls(&sandbox),
        ["sam build --template-file template.yaml"]
    );

    let sandbox = stack("aws-deploy-no-sam");
    let output = sandbox.xtask(&["deploy-aws"], &[]);
    assert!(!output.status.success());
    assert!(
        printed(&output).contains("pip install aws-sam-cli"),
        "{}",
        printed(&output)
    );
    assert!(sandbox.calls().is_empty(), "{:?}", sandbox.calls());
}
