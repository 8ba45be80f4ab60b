//! Shared by the cluster tests: `ferry node --listen --etcd` processes on loopback, each
//! killed when dropped.
#![allow(dead_code)]

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli_common::{self, free_port, OPERATOR_TOKEN, SECRET_KEY};

pub const LEASE_TTL_SECS: u64 = 3;
/// Every node of a test cluster holds it: the links between nodes carry it.
pub const CLUSTER_SECRET: &str = "test-cluster-secret-0123456789";
const OP: Option<&str> = Some(OPERATOR_TOKEN);

/// One `ferry node` process of the cluster.
pub struct ClusterProcess {
    pub id: String,
    pub endpoint: String,
    pub child: Child,
    log: std::path::PathBuf,
    /// With TLS: the CA file the CLI verifies the node with.
    ca_file: Option<String>,
}

/// TLS for a test cluster: a private CA and one certificate for loopback (`localhost`,
/// `127.0.0.1`) that every node serves, written under a directory.
pub struct ClusterTls {
    pub ca_file: String,
    pub cert_file: String,
    pub key_file: String,
}

impl ClusterTls {
    pub fn new(dir: &std::path::Path) -> Self {
        let ca = ferry_tests::postgres::TestCa::new("ferry test cluster CA").unwrap();
        let (cert, key) = ca.server_cert(&["localhost", "127.0.0.1"]).unwrap();
        ClusterTls {
            ca_file: cli_common::write(dir, "cluster-ca.pem", &ca.pem),
            cert_file: cli_common::write(dir, "node-cert.pem", &cert),
            key_file: cli_common::write(dir, "node-key.pem", &key),
        }
    }
}

impl ClusterProcess {
    pub fn start(id: &str, etcd: &str, config: &str, dir: &std::path::Path) -> Self {
        Self::start_with(id, etcd, config, dir, &[])
    }

    /// [`Self::start`] with more `ferry node` flags.
    pub fn start_with(
        id: &str,
        etcd: &str,
        config: &str,
        dir: &std::path::Path,
        flags: &[&str],
    ) -> Self {
        Self::spawn(id, etcd, config, dir, flags, None)
    }

    /// [`Self::start_with`], serving TLS on its port (links to its peers too).
    pub fn start_tls(
        id: &str,
        etcd: &str,
        config: &str,
        dir: &std::path::Path,
        tls: &ClusterTls,
        flags: &[&str],
    ) -> Self {
        Self::spawn(id, etcd, config, dir, flags, Some(tls))
    }

    fn spawn(
        id: &str,
        etcd: &str,
        config: &str,
        dir: &std::path::Path,
        flags: &[&str],
        tls: Option<&ClusterTls>,
    ) -> Self {
        let port = free_port();
        let tls_flags: Vec<&str> = match tls {
            Some(tls) => vec![
                "--tls-cert",
                &tls.cert_file,
                "--tls-key",
                &tls.key_file,
                "--cluster-ca-cert",
                &tls.ca_file,
            ],
            None => Vec::new(),
        };
        let log = dir.join(format!("{id}.log"));
        let child = cli_common::ferry()
            .args(["node", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--etcd", etcd, "--node-id", id])
            .args(["--lease-ttl", &LEASE_TTL_SECS.to_string()])
            .args(["--config", config])
            .args(flags)
            .args(&tls_flags)
            .env("FERRY_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("FERRY_SECRET_KEY", SECRET_KEY)
            .env("FERRY_CLUSTER_SECRET", CLUSTER_SECRET)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("ferry node starts");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut node = ClusterProcess {
            id: id.into(),
            endpoint: format!("{scheme}://127.0.0.1:{port}"),
            child,
            log,
            ca_file: tls.map(|tls| tls.ca_file.clone()),
        };
        let started = Instant::now();
        loop {
            if let Some(status) = node.child.try_wait().unwrap() {
                panic!("{id} exited ({status}): {}", node.log());
            }
            if node.cli(&["tenants", "list", "-o", "json"]).code == 0 {
                return node;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{id} did not answer: {}",
                node.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn cli(&self, args: &[&str]) -> cli_common::Run {
        cli_common::run(&mut self.ferry(args))
    }

    /// `ferry ARGS` aimed at this node (trusting its CA when it serves TLS), not yet run.
    pub fn ferry(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = cli_common::ferry_for(&self.endpoint, OP);
        match &self.ca_file {
            Some(ca) => cmd.env("FERRY_ENDPOINT_CA_CERT", ca),
            None => cmd.env_remove("FERRY_ENDPOINT_CA_CERT"),
        };
        cmd.args(args);
        cmd
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.cli(&[args, &["-o", "json"]].concat());
        assert_eq!(
            out.code,
            0,
            "ferry {args:?}: {}\n{}",
            out.stderr,
            self.log()
        );
        serde_json::from_str(&out.stdout).unwrap()
    }
}

impl Drop for ClusterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What every multi-process cluster test stands on: a runtime for etcd reads, a directory, a
/// real etcd and a real PostgreSQL.
pub struct Stand {
    pub rt: tokio::runtime::Runtime,
    pub dir: tempfile::TempDir,
    pub etcd: ferry_tests::etcd::TestEtcd,
    pub pg: ferry_tests::postgres::TestPostgres,
}

/// The [`Stand`], or None (the test skips, loudly) when PostgreSQL or etcd is missing.
pub fn stand() -> Option<Stand> {
    use ferry_tests::postgres::{postgres_bin_dir, PgConfig, TestPostgres};
    if !ferry_tests::require_tool("postgres", postgres_bin_dir().is_some())
        || !ferry_tests::etcd::etcd_available()
    {
        return None;
    }
    Some(Stand {
        rt: tokio::runtime::Runtime::new().unwrap(),
        dir: tempfile::tempdir().unwrap(),
        etcd: ferry_tests::etcd::TestEtcd::start().unwrap(),
        pg: TestPostgres::start(PgConfig::default()).unwrap(),
    })
}

/// `public.orders` with `rows` orders: ids from 1, 23 users, `created_at` a minute apart,
/// `inserted_at` a second apart (what [`ORDERS_EVENTS`] reads).
pub fn orders_table(pg: &ferry_tests::postgres::TestPostgres, rows: u64) {
    pg.sql("CREATE TABLE orders (id bigint PRIMARY KEY, user_id text NOT NULL, created_at timestamptz NOT NULL, inserted_at timestamptz NOT NULL);").unwrap();
    pg.sql(&format!("INSERT INTO orders SELECT i, 'user-' || (i % 23), timestamptz '2024-03-01 00:00:00+00' + i * interval '1 minute', timestamptz '2024-06-01 00:00:00+00' + i * interval '1 second' FROM generate_series(1, {rows}) AS i;")).unwrap();
}

/// The nodes' config: small pages, one shard, one request in flight (so a slow receiver makes
/// a run last seconds), the receiver's extensions on.
pub const NODE_CONFIG: &str =
    "[node]\npage_size = 1000\nshards = 1\nmax_in_flight = 1\nreceiver_extensions = true\n";

/// The receiver (project 1, service account `sa`), answering every import after `slow_ms`;
/// its data under `dir`. Killed when the first value is dropped.
pub fn slow_receiver(dir: &std::path::Path, slow_ms: u32) -> (cli_common::KillOnDrop, String) {
    receiver_with(
        dir,
        &["--fault-slow", "1.0", "--slow-ms", &slow_ms.to_string()],
    )
}

/// The receiver as [`slow_receiver`] has it, answering at once.
pub fn receiver(dir: &std::path::Path) -> (cli_common::KillOnDrop, String) {
    receiver_with(dir, &[])
}

fn receiver_with(dir: &std::path::Path, flags: &[&str]) -> (cli_common::KillOnDrop, String) {
    let data = dir.join("rx");
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--data",
        data.to_str().unwrap(),
        "--project",
        "1:tok1",
        "--service-account",
        "sa:sa-secret",
    ];
    args.extend_from_slice(flags);
    let (rx, url) = crate::common::spawn_receiver(args);
    (cli_common::KillOnDrop(rx), url)
}

/// Tenant `acme` (project 1 on the receiver at `rx_url`) and its PostgreSQL source `wh`,
/// created through `api` (secrets passed in files under `dir`); the tenant as created.
pub fn create_tenant_and_source(
    api: &ClusterProcess,
    dir: &std::path::Path,
    rx_url: &str,
    pg: &ferry_tests::postgres::TestPostgres,
) -> Value {
    let sa_secret = cli_common::write(dir, "sa-secret", "sa-secret\n");
    let tenant = api.json(&[
        "tenants",
        "create",
        "acme",
        "--name",
        "Acme",
        "--project-id",
        "1",
        "--base-url",
        rx_url,
        "--receiver-extensions",
        "--service-account-user",
        "sa",
        "--service-account-secret-file",
        &sa_secret,
    ]);
    let password = cli_common::write(dir, "pw", &format!("{}\n", pg.password));
    api.json(&[
        "sources",
        "create",
        "wh",
        "--tenant",
        "acme",
        "--host",
        &pg.host,
        "--port",
        &pg.port.to_string(),
        "--database",
        &pg.database,
        "--user",
        &pg.user,
        "--password-file",
        &password,
        "--ssl-mode",
        "disable",
    ]);
    tenant
}

/// The flags of an events sync of `public.orders` (source `wh` of tenant `acme`): one event
/// per order, keyed by its id.
pub const ORDERS_EVENTS: [&str; 16] = [
    "--source",
    "wh",
    "--tenant",
    "acme",
    "--table",
    "public.orders",
    "--type",
    "events",
    "--event-name",
    "Order Placed",
    "--time-column",
    "created_at",
    "--distinct-id-column",
    "user_id",
    "--key-columns",
    "id",
];
