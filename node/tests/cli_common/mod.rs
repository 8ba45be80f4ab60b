//! Shared by the CLI's tests: a real `ferry node --listen` process with an operator token, and
//! running the real `ferry` binary against it as a user would.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const OPERATOR_TOKEN: &str = "operator-token-for-tests-0123456789";
/// base64 of 32 bytes: the node's key for sealing stored credentials.
pub const SECRET_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

pub fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `ferry node --listen` serving the admin API on a free loopback port; killed on drop.
pub struct Node {
    pub endpoint: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Node {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
        let child = ferry()
            .args(["node", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(dir.path().join("data"))
            .env("FERRY_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("FERRY_SECRET_KEY", SECRET_KEY)
            .env_remove("FERRY_CONFIG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ferry node starts");
        let mut node = Node {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = node.child.try_wait().unwrap() {
                panic!("ferry node exited ({status}): {}", node.log());
            }
            let out = node.cli(Some(OPERATOR_TOKEN), &["tenants", "list", "-o", "json"]);
            if out.code == 0 {
                return node;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the node did not answer within 60 s: {}\n{}",
                out.stderr,
                node.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("node.log")).unwrap_or_default()
    }

    /// Runs `ferry ARGS` against this node with the token in FERRY_TOKEN (or none at all).
    pub fn cli(&self, token: Option<&str>, args: &[&str]) -> Run {
        run(ferry_for(&self.endpoint, token).args(args))
    }

    /// `ferry ARGS -o json`, which must succeed; its stdout parsed.
    pub fn json(&self, token: Option<&str>, args: &[&str]) -> Value {
        let out = self.cli(token, &[args, &["-o", "json"]].concat());
        assert_eq!(
            out.code, 0,
            "ferry {args:?} failed: {}\n{}",
            out.stderr, out.stdout
        );
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("ferry {args:?}: not JSON ({e}): {}", out.stdout))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ferry` aimed at ENDPOINT, with a clean environment of its own variables.
pub fn ferry_for(endpoint: &str, token: Option<&str>) -> Command {
    let mut cmd = ferry();
    for var in [
        "FERRY_TOKEN",
        "FERRY_TOKEN_FILE",
        "FERRY_TENANT",
        "FERRY_OUTPUT",
        "FERRY_TIMEOUT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("FERRY_ENDPOINT", endpoint).stdin(Stdio::null());
    if let Some(t) = token {
        cmd.env("FERRY_TOKEN", t);
    }
    cmd
}

/// A child process killed when the test ends, passed or panicked.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a `ferry` command did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("ferry runs");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

impl Run {
    /// Asserts a failure with this exit code and a single `error: …` line containing `text`.
    pub fn fails_with(&self, code: i32, text: &str) {
        assert_eq!(
            self.code, code,
            "exit code; stderr: {}\nstdout: {}",
            self.stderr, self.stdout
        );
        let lines: Vec<_> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {}", self.stderr);
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(text),
            "expected an error containing {text:?}, got: {}",
            self.stderr
        );
    }
}

/// The receiver's events of project 1 (sorted by dedup key).
pub fn receiver_events(url: &str) -> Vec<Value> {
    let state: Value = reqwest::blocking::get(format!("{url}/ferry/v1/projects/1/state"))
        .unwrap()
        .json()
        .unwrap();
    state["events"].as_array().cloned().unwrap_or_default()
}

pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}
