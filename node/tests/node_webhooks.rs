//! `ferry node --config` calls the webhooks of its file's tenants: a failed run, whether run
//! with `--once` or by a (cron, seconds, time zone) schedule, reaches a real HTTP listener,
//! signed with the webhook's secret.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ferry;
use serde_json::Value;

struct Hook {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// An HTTP/1.1 listener that keeps every POST it gets and answers 204.
fn hook_listener() -> (String, Arc<Mutex<Vec<Hook>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let kept = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = HashMap::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let Some((name, value)) = line.trim_end().split_once(": ") else {
                    break;
                };
                headers.insert(name.to_ascii_lowercase(), value.to_owned());
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            kept.lock().unwrap().push(Hook { headers, body });
            let _ = stream.write_all(
                b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    (url, got)
}

/// A node file whose one sync reads a table the SQLite warehouse does not have: every run
/// fails at the source.
fn config(dir: &std::path::Path, hook_url: &str, schedule: &str) -> std::path::PathBuf {
    let db = dir.join("empty.sqlite");
    std::fs::write(&db, b"").unwrap();
    let text = format!(
        r#"
[node]
id = "n1"

[[tenants]]
id = "acme"
name = "Acme"
project_id = 1
destination = {{ base_url = "http://127.0.0.1:9" }}
auth = {{ project_token = "tok" }}
[tenants.webhook]
url = "{hook_url}"
secret = "hook-secret"

[[sources]]
id = "wh"
tenant = "acme"
[sources.kind.sqlite]
path = "{db}"

[[syncs]]
id = "users"
tenant = "acme"
source = "wh"
table = "users"
table_type = "user_profiles"
mode = "full"
{schedule}
[syncs.mapping]
distinct_id_column = "user_id"
"#,
        db = db.display()
    );
    let path = dir.join("ferry.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn check_failure_hook(hook: &Hook) -> Value {
    assert_eq!(
        hook.headers.get("x-ferry-event").map(String::as_str),
        Some("run_failed")
    );
    assert_eq!(
        hook.headers.get("x-ferry-signature"),
        Some(&ferry_coordinator::notify::signature(
            "hook-secret",
            &hook.body
        )),
    );
    let body: Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(body["event"], "run_failed");
    assert_eq!(
        (body["tenant"].as_str(), body["sync"].as_str()),
        (Some("acme"), Some("users"))
    );
    assert_eq!(body["state"], "failed");
    assert!(
        body["message"].as_str().unwrap().contains("users"),
        "{body}"
    );
    body
}

#[test]
fn a_failed_run_once_is_reported_to_the_tenants_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let (url, got) = hook_listener();
    let file = config(dir.path(), &url, "");
    let out = ferry()
        .args(["node", "--once", "--config"])
        .arg(&file)
        .arg("--data")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "the run failed, so does the command");
    // --once waits for the webhook before exiting.
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 1, "{}", String::from_utf8_lossy(&out.stderr));
    check_failure_hook(&got[0]);
}

#[test]
fn scheduled_runs_of_a_config_file_report_each_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (url, got) = hook_listener();
    // Every second (a six-field cron expression), read in Berlin time.
    let file = config(
        dir.path(),
        &url,
        "schedule = \"* * * * * *\"\nschedule_timezone = \"Europe/Berlin\"",
    );
    let mut node = ferry()
        .args(["node", "--config"])
        .arg(&file)
        .arg("--data")
        .arg(dir.path().join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = node.kill();
    let _ = node.wait();
    let got = got.lock().unwrap();
    assert!(
        got.len() >= 2,
        "two scheduled runs reported, got {}",
        got.len()
    );
    let first = check_failure_hook(&got[0]);
    let second = check_failure_hook(&got[1]);
    assert_ne!(
        first["run_id"], second["run_id"],
        "one notification per run"
    );
}

#[test]
fn a_tick_missed_while_the_node_was_down_runs_once_when_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (url, got) = hook_listener();
    let state = dir.path().join("state");
    // A run now, in the node's run history.
    let file = config(dir.path(), &url, "");
    let out = ferry()
        .args(["node", "--once", "--config"])
        .arg(&file)
        .arg("--data")
        .arg(&state)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(got.lock().unwrap().len(), 1);

    // A daily tick two seconds later passes while no node runs; then the node starts.
    let tick = chrono::Utc::now() + chrono::Duration::seconds(2);
    let daily = tick.format("%S %M %H * * *").to_string();
    std::thread::sleep(
        (tick - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(1),
    );
    let file = config(dir.path(), &url, &format!("schedule = \"{daily}\""));
    let mut node = ferry()
        .args(["node", "--config"])
        .arg(&file)
        .arg("--data")
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while got.lock().unwrap().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Once, not again: the next tick is tomorrow.
    std::thread::sleep(Duration::from_millis(1500));
    let _ = node.kill();
    let _ = node.wait();
    let got = got.lock().unwrap();
    assert_eq!(
        got.len(),
        2,
        "the missed tick ran exactly once (schedule {daily})"
    );
    check_failure_hook(&got[1]);
}
