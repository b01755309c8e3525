//! verify-local against a stand-in scripts/tool.sh (what runs tms-verify)
//! that prints what it was given.

mod sandbox;

use sandbox::{Sandbox, printed};
use std::net::TcpListener;

const SHOW_TOOL: &str =
    "#!/bin/sh\necho \"$* BASE_URL=$BASE_URL SSO_JWT_SECRET=$SSO_JWT_SECRET\"\n";

fn local_run(test: &str, port: u16) -> Sandbox {
    let sandbox = Sandbox::new(test, &["health"]);
    let env = format!("LISTEN_HOST=127.0.0.1\nPORT={port}\nSSO_JWT_SECRET=local-sso-secret\n");
    sandbox.write("config/local.env", &env);
    sandbox.write_executable("scripts/tool.sh", SHOW_TOOL);
    sandbox
}

#[test]
fn verify_local_runs_the_checklist_against_the_local_port_with_the_local_settings() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let sandbox = local_run("verify-local", port);
    let output = sandbox.xtask(&["verify-local"], &[]);
    assert!(output.status.success(), "{}", printed(&output));
    let expected =
        format!("tms-verify BASE_URL=http://127.0.0.1:{port} SSO_JWT_SECRET=local-sso-secret\n");
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
}

#[test]
fn verify_local_says_to_start_make_run_when_nothing_answers() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sandbox = local_run("verify-local-closed", port);
    let output = sandbox.xtask(&["verify-local"], &[]);
    assert!(!output.status.success());
    let expected = format!("nothing answers on 127.0.0.1:{port}: start make run first");
    assert!(printed(&output).contains(&expected), "{}", printed(&output));
    assert!(
        !printed(&output).contains("tms-verify"),
        "{}",
        printed(&output)
    );
}
