//! A `ferry node` killed with SIGKILL in the middle of a run: the next run resumes from the last
//! committed cursor (it does not start over) and the destination ends up exact.

mod common;

use std::process::{Command, Stdio};

use common::{ferry, spawn_receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

const ROWS: u64 = 120_000;

fn event_count(url: &str) -> u64 {
    let state: Value =
        reqwest::blocking::get(format!("{url}/ferry/v1/projects/1/state?events=false"))
            .unwrap()
            .json()
            .unwrap();
    state["event_count"].as_u64().unwrap()
}

#[test]
fn a_killed_node_resumes_from_its_last_commit_and_the_destination_ends_exact() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("wh.sqlite");
    let script = format!(
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.execute('CREATE TABLE events (id INTEGER PRIMARY KEY, user_id TEXT, ts TIMESTAMP, inserted_at TIMESTAMP, note TEXT)')\nc.executemany('INSERT INTO events VALUES (?,?,?,?,?)', ((i, 'u%d' % (i % 97), '2025-01-01 00:00:00', '2025-02-01 %02d:%02d:%02d.%03d' % (i // 3600000, i // 60000 % 60, i // 1000 % 60, i % 1000), 'x' * 200) for i in range(1, {ROWS} + 1)))\nc.commit()\n"
    );
    assert!(Command::new("python3")
        .arg("-c")
        .arg(&script)
        .arg(&db)
        .status()
        .unwrap()
        .success());

    let (mut rx, url) = spawn_receiver([
        "--listen",
        "127.0.0.1:0",
        "--store",
        "memory",
        "--project",
        "1:tok",
        "--service-account",
        "sa:pw",
    ]);
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid='n1'\npage_size=500\n[[tenants]]\nid='t'\nname='T'\nproject_id=1\n[tenants.destination]\nbase_url='{url}'\n[tenants.auth.service_account]\nuser='sa'\nsecret='pw'\n[[sources]]\nid='s'\ntenant='t'\n[sources.kind.sqlite]\npath='{}'\n[[syncs]]\nid='e'\ntenant='t'\nsource='s'\ntable='events'\ntable_type='events'\nmode='append'\ncursor_column='inserted_at'\n[syncs.mapping]\nevent_name='E'\ntime_column='ts'\ndistinct_id_column='user_id'\nkey_columns=['id']\n",
            db.display()
        ),
    )
    .unwrap();
    let state_dir = dir.path().join("state");

    let mut node = ferry()
        .args(["node", "--once", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(&state_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while event_count(&url) < ROWS / 3 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the first run made no progress"
        );
        assert!(
            node.try_wait().unwrap().is_none(),
            "the node finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    node.kill().unwrap(); // SIGKILL: no cleanup of any kind
    node.wait().unwrap();
    let at_kill = event_count(&url);
    assert!(at_kill < ROWS, "killed mid-run ({at_kill} stored)");

    let out = ferry()
        .args(["node", "--once", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(&state_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: u64 = stdout
        .split("succeeded: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary in: {stdout}"));
    assert!(
        read < ROWS - ROWS / 3 + 30_000,
        "the second run resumed near the commit: read {read} of {ROWS}"
    );
    assert_eq!(
        event_count(&url),
        ROWS,
        "exact: nothing lost, nothing doubled"
    );
    rx.kill().unwrap();
    rx.wait().unwrap();
}
