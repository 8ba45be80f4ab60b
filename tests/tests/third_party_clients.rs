//! Clients nobody on this project wrote — PyPI `mixpanel-utils` and npm `mixpanel-import` —
//! send to the receiver; everything they send must land exactly once.

use std::process::Command;

use ferry_receiver::config::{ProjectConfig, ServiceAccountConfig, StoreMode};
use ferry_receiver::ReceiverConfig;
use ferry_tests::{repo_root, require_tool};
use serde_json::{json, Value};

const EVENTS: usize = 5_000;

fn events_file(dir: &std::path::Path, tag: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{tag}.ndjson"));
    let mut out = String::new();
    for i in 0..EVENTS {
        let plan = ["free", "pro", "team"][i % 3];
        let e = json!({"event": if i % 3 == 0 { "Signed Up" } else { "Page Viewed" }, "properties": {
            "time": 1_700_000_000 + i as i64,
            "distinct_id": format!("user-{}", i % 97),
            "$insert_id": format!("{tag}-{i}"),
            "plan": plan,
            "amount": i as f64 * 0.5,
        }});
        out.push_str(&e.to_string());
        out.push('\n');
    }
    std::fs::write(&path, out).unwrap();
    path
}

async fn receiver(dir: &std::path::Path) -> ferry_receiver::RunningReceiver {
    let mut cfg = ReceiverConfig::from_toml("listen = \"127.0.0.1:0\"").unwrap();
    cfg.store = StoreMode::Disk;
    cfg.data_dir = Some(dir.join("store"));
    cfg.projects = vec![ProjectConfig {
        id: "3003".into(),
        token: "third-party-token".into(),
        secret: None,
        group_keys: None,
        lookup_tables: vec![],
        rate_limit: Default::default(),
    }];
    cfg.service_accounts = vec![ServiceAccountConfig {
        user: "tp.sa".into(),
        secret: "tp-secret".into(),
        projects: None,
    }];
    ferry_receiver::start(cfg).await.unwrap()
}

async fn stored_insert_ids(base: &str, tag: &str) -> Vec<String> {
    let st: Value = reqwest::get(format!("{base}/ferry/v1/projects/3003/state"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids: Vec<String> = st["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["properties"]["$insert_id"].as_str())
        .filter(|id| id.starts_with(&format!("{tag}-")))
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids
}

fn expected_ids(tag: &str) -> Vec<String> {
    let mut ids: Vec<String> = (0..EVENTS).map(|i| format!("{tag}-{i}")).collect();
    ids.sort();
    ids
}

fn run(mut cmd: Command) -> Value {
    let out = cmd.output().expect("client starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("summary line is not JSON ({e}): {last}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixpanel_utils_imports_everything_exactly_once() {
    let python_ok = Command::new("python3")
        .args(["-c", "import mixpanel_utils"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !require_tool("PyPI mixpanel-utils", python_ok) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rx = receiver(dir.path()).await;
    let file = events_file(dir.path(), "py");
    let mut cmd = Command::new("python3");
    cmd.arg(repo_root().join("tests/clients/mixpanel_utils_import.py"))
        .args([
            "--base-url",
            &rx.base_url(),
            "--project-id",
            "3003",
            "--user",
            "tp.sa",
            "--secret",
            "tp-secret",
            "--token",
            "third-party-token",
        ])
        .arg("--file")
        .arg(&file);
    let summary = tokio::task::spawn_blocking(move || run(cmd)).await.unwrap();
    eprintln!("mixpanel-utils summary: {summary}");
    assert_eq!(
        stored_insert_ids(&rx.base_url(), "py").await,
        expected_ids("py")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixpanel_import_imports_everything_exactly_once() {
    let node_dir = repo_root().join("tests/clients/node");
    let installed = node_dir
        .join("node_modules/mixpanel-import/package.json")
        .exists()
        && Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !require_tool("npm mixpanel-import", installed) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rx = receiver(dir.path()).await;
    let file = events_file(dir.path(), "js");
    let mut cmd = Command::new("node");
    cmd.arg(node_dir.join("mixpanel_import.js"))
        .args([
            "--base-url",
            &rx.base_url(),
            "--project-id",
            "3003",
            "--user",
            "tp.sa",
            "--secret",
            "tp-secret",
        ])
        .arg("--file")
        .arg(&file)
        .current_dir(dir.path());
    let summary = tokio::task::spawn_blocking(move || run(cmd)).await.unwrap();
    eprintln!("mixpanel-import summary: {summary}");
    assert_eq!(summary["success"], EVENTS, "{summary}");
    assert_eq!(
        stored_insert_ids(&rx.base_url(), "js").await,
        expected_ids("js")
    );
}
