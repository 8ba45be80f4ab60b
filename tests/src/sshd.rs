//! A private OpenSSH server for tests: `/usr/sbin/sshd` on a free loopback port, with its own
//! config, host key, authorized key and pid file in a temp dir. Only public-key logins, for
//! the user running the tests (as root that is `root`, allowed by key only). TCP forwarding
//! is on, so it serves as the SSH bastion of tunnel tests. Killed on drop.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// sshd must be started by absolute path (it re-executes itself).
pub const SSHD: &str = "/usr/sbin/sshd";

/// Whether the OpenSSH server and `ssh-keygen` are installed.
pub fn sshd_available() -> bool {
    Path::new(SSHD).exists()
        && Command::new("ssh-keygen")
            .arg("-?")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
}

/// An SSH key pair made by `ssh-keygen`.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// Unencrypted private key, OpenSSH PEM form.
    pub private_pem: String,
    /// The `.pub` line: `ssh-ed25519 AAAA... comment`.
    pub public: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
}

impl KeyPair {
    /// A new key of `kind` (`ed25519`, `rsa`, …) in `dir`, named `name`; with a passphrase
    /// when `passphrase` is not empty.
    pub fn generate(dir: &Path, name: &str, kind: &str, passphrase: &str) -> Result<Self> {
        let path = dir.join(name);
        let path_s = path.to_str().context("temp path is not UTF-8")?;
        run(Command::new("ssh-keygen").args([
            "-q",
            "-t",
            kind,
            "-N",
            passphrase,
            "-C",
            &format!("ferry-test-{name}"),
            "-f",
            path_s,
        ]))?;
        let listing = run(Command::new("ssh-keygen").args(["-l", "-E", "sha256", "-f", path_s]))?;
        let fingerprint = listing
            .split_whitespace()
            .nth(1)
            .filter(|f| f.starts_with("SHA256:"))
            .with_context(|| format!("unexpected ssh-keygen -l output: {listing}"))?
            .to_owned();
        Ok(Self {
            private_pem: std::fs::read_to_string(&path)?,
            public: std::fs::read_to_string(dir.join(format!("{name}.pub")))?
                .trim()
                .to_owned(),
            fingerprint,
        })
    }
}

/// A running sshd. `user` may log in with `client_key`.
pub struct TestSshd {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub client_key: KeyPair,
    pub host_key: KeyPair,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn current_user() -> Result<String> {
    Ok(run(Command::new("id").arg("-un"))?.trim().to_owned())
}

impl TestSshd {
    pub fn start() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("ferry-sshd-").tempdir()?;
        let host_key = KeyPair::generate(dir.path(), "host_key", "ed25519", "")?;
        let client_key = KeyPair::generate(dir.path(), "client_key", "ed25519", "")?;
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(&authorized, format!("{}\n", client_key.public))?;
        // As root, sshd's privilege separation needs this (empty) directory; a package's
        // service would create it at boot, but no service runs here.
        if run(Command::new("id").arg("-u"))?.trim() == "0" {
            std::fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
        }
        let mut sshd = Self {
            host: "127.0.0.1".into(),
            port: 0,
            user: current_user()?,
            client_key,
            host_key,
            dir,
            child: None,
        };
        let log = sshd.dir.path().join("sshd.log");
        // A port can be taken between choosing and binding it: retry a few times.
        for _attempt in 0..5 {
            sshd.port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let config = sshd.write_config(&authorized)?;
            let child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .context("starting sshd")?;
            sshd.child = Some(child);
            if sshd.wait_ready()? {
                return Ok(sshd);
            }
        }
        bail!(
            "sshd did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    }

    fn write_config(&self, authorized: &Path) -> Result<PathBuf> {
        let p = |path: &Path| -> Result<String> {
            Ok(path.to_str().context("temp path is not UTF-8")?.to_owned())
        };
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\n\
             HostKey {host_key}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {authorized}\n\
             AuthenticationMethods publickey\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             AllowTcpForwarding yes\n\
             StrictModes no\n\
             UsePAM no\n\
             UseDNS no\n\
             PermitTTY no\n\
             X11Forwarding no\n\
             LogLevel VERBOSE\n",
            port = self.port,
            host_key = p(&self.dir.path().join("host_key"))?,
            pid = p(&self.dir.path().join("sshd.pid"))?,
            authorized = p(authorized)?,
        );
        let path = self.dir.path().join("sshd_config");
        std::fs::write(&path, config)?;
        Ok(path)
    }

    /// True once the port accepts; false if sshd exited (e.g. the port was taken).
    fn wait_ready(&mut self) -> Result<bool> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if child.try_wait()?.is_some() {
                    self.child = None;
                    return Ok(false);
                }
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("sshd did not accept connections within 30 s")
    }

    /// Lets `key` log in too (sshd reads the file at each login).
    pub fn authorize(&self, key: &KeyPair) -> Result<()> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("authorized_keys"))?;
        writeln!(file, "{}", key.public)?;
        Ok(())
    }

    /// A scratch directory that lives as long as the server (for extra keys).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// sshd's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
