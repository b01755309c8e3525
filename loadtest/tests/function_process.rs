//! A function process as the load tools start one, on the bench's ceiling
//! (the smallest program that serves on FC's port).

use std::time::Duration;

use loadtest::function_process::FunctionProcess;

#[tokio::test]
async fn serves_on_its_port_restarts_on_a_new_one_and_is_killed_when_dropped() {
    let logs = std::env::temp_dir().join(format!("loadtest-fp-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_tms-ceiling"));
    let mut ceiling =
        FunctionProcess::start(bin, [("RUST_LOG", "info")], logs.join("ceiling.log")).unwrap();
    let client = reqwest::Client::new();
    let limit = Duration::from_secs(20);
    assert!(ceiling.until_serving(&client, limit).await.is_some());
    let health = |url: String| {
        let client = client.clone();
        async move { client.get(format!("{url}/health")).send().await }
    };
    assert_eq!(health(ceiling.url()).await.unwrap().status(), 200);

    let (old_url, old_pid) = (ceiling.url(), ceiling.pid());
    ceiling.restart_on_new_port().unwrap();
    assert_ne!(ceiling.url(), old_url);
    assert!(ceiling.until_serving(&client, limit).await.is_some());
    assert_eq!(health(ceiling.url()).await.unwrap().status(), 200);
    assert!(health(old_url).await.is_err(), "the old instance is gone");
    assert!(!std::path::Path::new(&format!("/proc/{old_pid}")).exists());

    let pid = ceiling.pid();
    drop(ceiling);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    let _ = std::fs::remove_dir_all(&logs);
}
