//! `cargo xtask local-env -- <command>`: config/local.env under the
//! environment's own non-empty settings.

mod sandbox;

use sandbox::{Sandbox, printed};

const LOCAL_ENV: &str =
    "# local settings\nPORT=8000\nAPP_ENV=development\nDATABASE_URL=sqlite://.data/tms.sqlite3\n";

#[test]
fn the_command_gets_the_file_under_the_environments_non_empty_settings() {
    let sandbox = Sandbox::new("local-env", &["health"]);
    sandbox.write("config/local.env", LOCAL_ENV);
    let show = r#"printf '%s|%s|%s' "$PORT" "$APP_ENV" "$DATABASE_URL""#;
    let output = sandbox.xtask(
        &["local-env", "--", "sh", "-c", show],
        &[("PORT", "8001"), ("APP_ENV", "")],
    );
    assert!(output.status.success(), "{}", printed(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "8001|development|sqlite://.data/tms.sqlite3"
    );
    assert!(
        sandbox.path(".data").is_dir(),
        "the local SQLite file's folder"
    );
}

#[test]
fn a_line_that_is_not_a_setting_stops_before_the_command() {
    let sandbox = Sandbox::new("local-env-bad-line", &["health"]);
    sandbox.write("config/local.env", "PORT=8000\nnot a setting\n");
    let output = sandbox.xtask(&["local-env", "--", "sh", "-c", "echo ran"], &[]);
    assert!(!output.status.success());
    assert!(
        printed(&output).contains("config/local.env: not a KEY=value line"),
        "{}",
        printed(&output)
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("ran"));
}

#[test]
fn the_exit_status_is_the_commands() {
    let sandbox = Sandbox::new("local-env-status", &["health"]);
    sandbox.write("config/local.env", LOCAL_ENV);
    let output = sandbox.xtask(&["local-env", "--", "sh", "-c", "exit 3"], &[]);
    assert_eq!(output.status.code(), Some(3));
}
