//! A private etcd server for tests: one member with its data dir in a temp dir and its client
//! and peer URLs on free loopback ports. It can be stopped (gracefully or with SIGKILL), paused
//! (SIGSTOP) and started again on the same data dir and ports — what "etcd restarted under
//! load" needs, since clients keep their endpoints. Killed on drop.
//!
//! The binary is `FERRY_TEST_ETCD_BIN` or `/usr/bin/etcd` (Debian's `etcd-server`). A system
//! etcd that a distribution may start on 2379 is never used.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The etcd binary the tests use, if it is installed.
pub fn etcd_bin() -> Option<PathBuf> {
    let path = std::env::var_os("FERRY_TEST_ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    path.exists().then_some(path)
}

/// Whether etcd can be started here: skips loudly (or fails under `FERRY_TEST_FULL=1`) when not.
pub fn etcd_available() -> bool {
    crate::require_tool(
        "etcd (FERRY_TEST_ETCD_BIN or /usr/bin/etcd)",
        etcd_bin().is_some(),
    )
}

/// A running (or stopped) single-member etcd.
pub struct TestEtcd {
    pub client_port: u16,
    pub peer_port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl TestEtcd {
    /// Starts a new member and waits until it reports healthy.
    pub fn start() -> Result<Self> {
        let bin = etcd_bin().context("no etcd binary (set FERRY_TEST_ETCD_BIN)")?;
        let dir = tempfile::Builder::new().prefix("ferry-etcd-").tempdir()?;
        let mut etcd = Self {
            client_port: 0,
            peer_port: 0,
            bin,
            dir,
            child: None,
            starts: 0,
        };
        // A port can be taken between choosing and binding it: choose again a few times.
        let mut last_error = None;
        for _attempt in 0..5 {
            etcd.client_port = free_port()?;
            etcd.peer_port = free_port()?;
            if etcd.client_port == etcd.peer_port {
                continue;
            }
            match etcd.launch() {
                Ok(()) => return Ok(etcd),
                Err(e) => {
                    // A failed first start may leave a half-made member dir behind.
                    let _ = std::fs::remove_dir_all(etcd.data_dir());
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no free port pair for etcd")))
    }

    /// `http://127.0.0.1:<client port>`, as clients connect to it.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// All client endpoints (one member: one endpoint).
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint()]
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops it gracefully (SIGTERM, then SIGKILL after 10 s). The data dir stays.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM")?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            child.wait()?;
        }
        Ok(())
    }

    /// Kills it with SIGKILL, as a crash would. The data dir stays.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts it again on the same data dir and ports (after [`stop`](Self::stop) or
    /// [`kill`](Self::kill)) and waits until it is healthy.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.launch()
    }

    /// SIGSTOP: the process stays but answers nothing, like a partition.
    pub fn pause(&self) -> Result<()> {
        match self.pid() {
            Some(pid) => signal(pid, "STOP"),
            None => bail!("etcd is not running"),
        }
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) -> Result<()> {
        match self.pid() {
            Some(pid) => signal(pid, "CONT"),
            None => bail!("etcd is not running"),
        }
    }

    /// The server's log (all starts), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn launch(&mut self) -> Result<()> {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let client = self.endpoint();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        // The member's name and cluster token are fixed: a restart must find its own member.
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--name", "ferry-test"])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("ferry-test={peer}")])
            .args(["--initial-cluster-token", "ferry-test"])
            .args(["--initial-cluster-state", "new"])
            // One member elects itself after one election timeout: keep it short so a start
            // (and a restart) takes a fraction of a second, not the default second.
            .args(["--heartbeat-interval", "25", "--election-timeout", "250"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(cmd.spawn().context("starting etcd")?);
        self.starts += 1;
        self.wait_healthy(Duration::from_secs(30))
    }

    fn wait_healthy(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "etcd exited ({status}) while starting: {}",
                        tail(&self.log())
                    );
                }
            }
            if health(self.client_port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill()?;
        bail!(
            "etcd did not become healthy within {within:?}: {}",
            tail(&self.log())
        )
    }

    /// How many times the process was launched (1 after `start`).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `GET /health` answers `{"health":"true"}` once the member has a leader and serves requests.
fn health(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200") && response.contains(r#""health":"true""#)
}

fn signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{name} {pid} failed: {status}");
    }
    Ok(())
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            // A paused process cannot die until it is continued.
            let _ = signal(pid, "CONT");
        }
        let _ = self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_stops_and_restarts_on_the_same_data_dir() {
        if !etcd_available() {
            return;
        }
        let mut etcd = TestEtcd::start().unwrap();
        assert!(health(etcd.client_port));
        assert!(etcd.data_dir().join("member").is_dir());
        let port = etcd.client_port;

        etcd.stop().unwrap();
        assert!(!health(port), "a stopped etcd does not answer");
        etcd.restart().unwrap();
        assert_eq!((etcd.client_port, etcd.starts()), (port, 2));
        assert!(health(port));

        etcd.pause().unwrap();
        assert!(!health(port), "a paused etcd does not answer");
        etcd.resume().unwrap();
        etcd.wait_healthy(Duration::from_secs(10)).unwrap();

        let pid = etcd.pid().unwrap();
        drop(etcd);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "dropping kills the server"
        );
    }
}
