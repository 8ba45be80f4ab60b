//! `ferry quickstart` end to end, then `ferry receiver` + `ferry node --once` on the files it
//! leaves behind: the commands people run first.

mod common;

use std::process::Command;

use common::{ferry, spawn_receiver};

use serde_json::Value;

#[test]
fn quickstart_syncs_every_table_type_and_its_files_run_again_with_node() {
    let dir = tempfile::tempdir().unwrap();
    let qs = dir.path().join("qs");
    let out = ferry()
        .args(["quickstart", "--events", "3000", "--dir"])
        .arg(&qs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "quickstart failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("events:          3000"), "{stdout}");
    assert!(stdout.contains("user profiles:   500"), "{stdout}");
    assert!(stdout.contains("group profiles:  25"), "{stdout}");
    assert!(stdout.contains("lookup table 'plans': 4 rows"), "{stdout}");
    assert!(
        stdout.contains("events (events): succeeded: 3000 rows read, 3000 records acknowledged"),
        "{stdout}"
    );
    for file in [
        "warehouse.sqlite",
        "ferry.toml",
        "receiver.toml",
        "receiver",
        "state",
    ] {
        assert!(qs.join(file).exists(), "{file} left behind");
    }

    // Its receiver config, on a free port, and its node config pointed at it.
    let receiver_toml = std::fs::read_to_string(qs.join("receiver.toml"))
        .unwrap()
        .replace("127.0.0.1:8787", "127.0.0.1:0");
    std::fs::write(qs.join("receiver.toml"), receiver_toml).unwrap();
    let (mut rx, url) = spawn_receiver([
        std::ffi::OsString::from("--config"),
        qs.join("receiver.toml").into(),
    ]);
    let node_toml = std::fs::read_to_string(qs.join("ferry.toml"))
        .unwrap()
        .replace("http://127.0.0.1:8787", &url);
    std::fs::write(qs.join("ferry.toml"), node_toml).unwrap();

    // New rows since the quickstart: Append sends exactly those.
    assert!(
        append_two_events(&qs.join("warehouse.sqlite")),
        "inserted new rows"
    );
    let out = ferry()
        .args(["node", "--once", "--sync", "events", "--config"])
        .arg(qs.join("ferry.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("succeeded: 2 rows read, 2 records acknowledged"),
        "{stdout}"
    );
    let state: Value =
        reqwest::blocking::get(format!("{url}/ferry/v1/projects/1/state?events=false"))
            .unwrap()
            .json()
            .unwrap();
    assert_eq!(state["event_count"], 3002);

    // A broken config is refused with the place of each problem.
    std::fs::write(qs.join("bad.toml"), "[[syncs]]\nid='x'\ntenant='nope'\nsource='s'\ntable='t'\ntable_type='events'\nmode='full'\n").unwrap();
    let out = ferry()
        .args(["node", "--once", "--config"])
        .arg(qs.join("bad.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("syncs[0] (x): sync.tenant: unknown tenant 'nope'"),
        "{stderr}"
    );
    rx.kill().unwrap();
    rx.wait().unwrap();
}

/// Appends two rows to the demo events table, through Python's sqlite3 module (on every test
/// machine), so the test needs no SQLite client of its own.
fn append_two_events(db: &std::path::Path) -> bool {
    let script = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.execute(\"INSERT INTO events VALUES (900001,'user-0001','Purchase','2026-01-01 00:00:00',12.5,'pro','{}','2099-01-01 00:00:00')\")\nc.execute(\"INSERT INTO events VALUES (900002,'user-0002','Purchase','2026-01-01 00:00:01',13.5,'pro','{}','2099-01-01 00:00:01')\")\nc.commit()\n";
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(db)
        .status()
        .is_ok_and(|s| s.success())
}
