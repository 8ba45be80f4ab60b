//! A private PostgreSQL server for tests: `initdb` in a temp dir, started on a free loopback
//! port (its socket in the same dir), with a database and a password user, optionally with TLS
//! (a throwaway CA and a server certificate for `localhost` and `127.0.0.1`, made with rcgen).
//! Stopped and deleted on drop.
//!
//! The binaries come from `FERRY_TEST_PG_BIN` or the newest `/usr/lib/postgresql/*/bin`. As
//! root, the server runs as the `postgres` user (or `nobody`), since PostgreSQL refuses root.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where the PostgreSQL binaries are, if anywhere.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("FERRY_TEST_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("postgres").exists().then_some(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

#[derive(Debug, Clone, Default)]
pub struct PgConfig {
    /// Serve TLS (plain connections are still accepted).
    pub ssl: bool,
}

/// A running test server. `user`/`password` own `database`; `postgres` is the superuser,
/// reachable without a password only over the Unix socket (see [`TestPostgres::admin_sql`]).
pub struct TestPostgres {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: String,
    /// The CA that signed the server certificate (PEM), when TLS is on.
    pub ca_pem: Option<String>,
    bin: PathBuf,
    dir: tempfile::TempDir,
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
}

/// A CA certificate and key, for tests that need one (e.g. a wrong CA).
pub struct TestCa {
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Result<Self> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// A server certificate and key (PEM) for `names` (DNS names or IP addresses).
    pub fn server_cert(&self, names: &[&str]) -> Result<(String, String)> {
        let key = rcgen::KeyPair::generate()?;
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ferry test server");
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// uid/gid of an unprivileged user to run the server as, when we are root.
fn unprivileged_user() -> Result<Option<(u32, u32)>> {
    if std::fs::metadata("/proc/self")?.uid() != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    for wanted in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() > 3 && f[0] == wanted {
                return Ok(Some((f[2].parse()?, f[3].parse()?)));
            }
        }
    }
    bail!("running as root and there is no 'postgres' or 'nobody' user to run PostgreSQL as")
}

impl TestPostgres {
    pub fn start(config: PgConfig) -> Result<Self> {
        let bin = postgres_bin_dir().context("no PostgreSQL binaries (set FERRY_TEST_PG_BIN)")?;
        let dir = tempfile::Builder::new().prefix("ferry-pg-").tempdir()?;
        let run_as = unprivileged_user()?;
        let data = dir.path().join("data");
        let chown = |p: &Path| -> Result<()> {
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .with_context(|| format!("chown {}", p.display()))?;
            }
            Ok(())
        };
        chown(dir.path())?;
        let mut pg = Self {
            host: "127.0.0.1".into(),
            port: 0,
            database: "ferry".into(),
            user: "ferry_user".into(),
            password: "ferry-test-password".into(),
            ca_pem: None,
            bin,
            dir,
            run_as,
            child: None,
        };
        pg.run(
            pg.command("initdb").args([
                "-D",
                path_str(&data)?,
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "-N",
            ]),
            "initdb",
        )?;
        let mut args: Vec<String> = vec![
            "-D".into(),
            path_str(&data)?.into(),
            "-k".into(),
            path_str(pg.dir.path())?.into(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            "fsync=off".into(),
            "-c".into(),
            "shared_buffers=16MB".into(),
            "-c".into(),
            "max_connections=40".into(),
        ];
        if config.ssl {
            let ca = TestCa::new("ferry test CA")?;
            let (cert, key) = ca.server_cert(&["localhost", "127.0.0.1"])?;
            let cert_path = pg.dir.path().join("server.crt");
            let key_path = pg.dir.path().join("server.key");
            std::fs::write(&cert_path, cert)?;
            std::fs::write(&key_path, key)?;
            std::fs::set_permissions(
                &key_path,
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )?;
            chown(&cert_path)?;
            chown(&key_path)?;
            for setting in [
                "ssl=on".to_string(),
                format!("ssl_cert_file={}", path_str(&cert_path)?),
                format!("ssl_key_file={}", path_str(&key_path)?),
            ] {
                args.push("-c".into());
                args.push(setting);
            }
            pg.ca_pem = Some(ca.pem);
        }
        // A port can be taken between choosing and binding it: retry a few times.
        let log = pg.dir.path().join("postgres.log");
        for _attempt in 0..5 {
            pg.port = free_port()?;
            let mut cmd = pg.command("postgres");
            cmd.args(&args)
                .args(["-p", &pg.port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?);
            pg.child = Some(cmd.spawn().context("starting postgres")?);
            if pg.wait_ready()? {
                pg.admin_sql(&format!(
                    "CREATE ROLE {} LOGIN PASSWORD '{}'",
                    pg.user, pg.password
                ))?;
                pg.admin_sql(&format!(
                    "CREATE DATABASE {} OWNER {}",
                    pg.database, pg.user
                ))?;
                return Ok(pg);
            }
        }
        bail!(
            "postgres did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.env("HOME", self.dir.path())
            .current_dir(self.dir.path());
        cmd
    }

    fn run(&self, cmd: &mut Command, what: &str) -> Result<String> {
        let out = cmd.output().with_context(|| format!("running {what}"))?;
        if !out.status.success() {
            bail!(
                "{what} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// True once the server answers; false if it exited (e.g. the port was taken).
    fn wait_ready(&mut self) -> Result<bool> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if child.try_wait()?.is_some() {
                    self.child = None;
                    return Ok(false);
                }
            }
            let ok = self
                .command("pg_isready")
                .args([
                    "-h",
                    path_str(self.dir.path())?,
                    "-p",
                    &self.port.to_string(),
                    "-q",
                ])
                .status()?
                .success();
            if ok {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("postgres did not become ready within 60 s")
    }

    /// Runs SQL as the superuser over the Unix socket, in `database` (psql `-At` output).
    pub fn admin_sql_in(&self, database: &str, sql: &str) -> Result<String> {
        self.run(
            self.command("psql")
                .args([
                    "-h",
                    path_str(self.dir.path())?,
                    "-p",
                    &self.port.to_string(),
                ])
                .args([
                    "-U",
                    "postgres",
                    "-d",
                    database,
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-At",
                    "-c",
                    sql,
                ]),
            "psql",
        )
    }

    /// [`admin_sql_in`](Self::admin_sql_in) the `postgres` database.
    pub fn admin_sql(&self, sql: &str) -> Result<String> {
        self.admin_sql_in("postgres", sql)
    }

    /// Runs SQL as the test user's owner role in the test database (as the superuser, then
    /// objects are handed to the test user with `ALTER ... OWNER` where it matters).
    pub fn sql(&self, sql: &str) -> Result<String> {
        self.admin_sql_in(&self.database, &format!("SET ROLE {}; {sql}", self.user))
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("temp path is not UTF-8")
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let data = self.dir.path().join("data");
            let stopped = data.to_str().is_some_and(|d| {
                self.command("pg_ctl")
                    .args(["stop", "-D", d, "-m", "immediate", "-w", "-t", "20"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            });
            if !stopped {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}
