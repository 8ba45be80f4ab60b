//! The `ferry receiver` command as people run it: flags, the printed address, durability across
//! a `kill -9`, and clear errors for bad flags.

mod common;

use std::process::Command;

use serde_json::{json, Value};

fn spawn(args: &[&str]) -> (std::process::Child, String) {
    common::spawn_receiver(args)
}

#[test]
fn receiver_keeps_acknowledged_data_across_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--data",
        data,
        "--project",
        "7:tok7",
        "--service-account",
        "sa:pw",
        "--lookup-table",
        "7:lt:Things",
    ];
    let (mut child, url) = spawn(&args);
    let client = reqwest::blocking::Client::new();
    let events: Vec<Value> = (0..100)
        .map(|i| json!({"event": "e", "properties": {"time": 1_700_000_000, "distinct_id": "u", "$insert_id": format!("k{i}")}}))
        .collect();
    let resp = client
        .post(format!("{url}/import?strict=1&project_id=7"))
        .basic_auth("sa", Some("pw"))
        .json(&events)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let list: Value = client
        .get(format!("{url}/lookup-tables?project_id=7"))
        .basic_auth("sa", Some("pw"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list["results"], json!([{"id": "lt", "name": "Things"}]));
    child.kill().unwrap(); // SIGKILL: no chance to flush anything
    child.wait().unwrap();

    let (mut child, url) = spawn(&args);
    let st: Value = client
        .get(format!("{url}/ferry/v1/projects/7/state"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(st["event_count"], 100);
}

#[test]
fn bad_flags_fail_with_a_clear_message() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("receiver")
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&["--listen", "127.0.0.1:0", "--store", "memory"]).contains("at least one project"));
    assert!(run(&["--listen", "127.0.0.1:0", "--project", "1:t"]).contains("--data"));
    assert!(run(&[
        "--listen",
        "127.0.0.1:0",
        "--store",
        "memory",
        "--project",
        "1"
    ])
    .contains("--project '1'"));
    assert!(run(&[
        "--listen",
        "127.0.0.1:0",
        "--store",
        "memory",
        "--project",
        "1:t",
        "--fault-429",
        "2"
    ])
    .contains("between 0 and 1"));
}
