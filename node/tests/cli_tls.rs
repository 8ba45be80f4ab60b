//! TLS on the node's own port (`ferry node --listen --tls-cert --tls-key`), its certificate
//! signed by a private CA: with `--endpoint-ca-cert` the CLI verifies it and reaches the node;
//! without it, or with another CA, the certificate is refused and the CLI says it cannot reach
//! the node; a plain client gets nothing from the TLS port. The HTTP trigger URL answers HTTP/1.1
//! over TLS on the same port. A node given a certificate without its key refuses to start.

mod cli_common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cli_common::{ferry, ferry_for, free_port, run, write, OPERATOR_TOKEN, SECRET_KEY};
use ferry_tests::postgres::TestCa;
use serde_json::Value;

/// `ferry node --listen` with TLS on a free loopback port; killed on drop.
struct TlsNode {
    endpoint: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl TlsNode {
    fn start(cert: &str, key: &str, ca: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = ferry()
            .args(["node", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(dir.path().join("data"))
            .args(["--tls-cert", cert, "--tls-key", key])
            .env("FERRY_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("FERRY_SECRET_KEY", SECRET_KEY)
            .env_remove("FERRY_CONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("node.log")).unwrap())
            .spawn()
            .expect("ferry node starts");
        let mut node = TlsNode {
            endpoint: format!("https://localhost:{port}"),
            child,
            dir,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = node.child.try_wait().unwrap() {
                panic!("ferry node exited ({status}): {}", node.log());
            }
            let out = run(ferry_for(&node.endpoint, Some(OPERATOR_TOKEN)).args([
                "tenants",
                "list",
                "--endpoint-ca-cert",
                ca,
            ]));
            if out.code == 0 {
                return node;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the node did not answer over TLS: {}\n{}",
                out.stderr,
                node.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }
}

impl Drop for TlsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a certificate for loopback it signed, written to `dir`: (ca, cert, key) files.
fn issue(dir: &Path, name: &str) -> (String, String, String) {
    let ca = TestCa::new(&format!("ferry test {name} CA")).unwrap();
    let (cert, key) = ca.server_cert(&["localhost", "127.0.0.1"]).unwrap();
    (
        write(dir, &format!("{name}-ca.pem"), &ca.pem),
        write(dir, &format!("{name}-cert.pem"), &cert),
        write(dir, &format!("{name}-key.pem"), &key),
    )
}

#[test]
fn the_cli_reaches_a_node_serving_tls_and_checks_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, cert_file, key_file) = issue(dir.path(), "node");
    let (other_ca, _, _) = issue(dir.path(), "other");
    let node = TlsNode::start(&cert_file, &key_file, &ca_file);
    let endpoint = node.endpoint.clone();
    let op = Some(OPERATOR_TOKEN);

    let project_token = write(dir.path(), "project-token", "tok1");
    let created = run(ferry_for(&endpoint, op)
        .args([
            "tenants",
            "create",
            "acme",
            "--name",
            "Acme",
            "--project-id",
            "1",
        ])
        .args(["--base-url", "http://127.0.0.1:9", "--project-token-auth"])
        .args(["--project-token-file", &project_token])
        .args(["--endpoint-ca-cert", &ca_file, "-o", "json"]));
    assert_eq!(created.code, 0, "{}", created.stderr);
    let tenant: Value = serde_json::from_str(&created.stdout).unwrap();
    assert_eq!(tenant["id"], "acme");
    // The same node at its IP address (the certificate names it too), CA from the environment.
    let by_ip = endpoint.replace("localhost", "127.0.0.1");
    let got = run(ferry_for(&by_ip, op)
        .env("FERRY_ENDPOINT_CA_CERT", &ca_file)
        .args(["tenants", "get", "acme", "-o", "json"]));
    assert_eq!(got.code, 0, "{}", got.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&got.stdout).unwrap()["name"],
        "Acme"
    );

    // Without the private CA, or with another one, the certificate is not trusted.
    for ca in [None, Some(other_ca.as_str())] {
        let mut cmd = ferry_for(&endpoint, op);
        cmd.env_remove("FERRY_ENDPOINT_CA_CERT")
            .args(["tenants", "list"]);
        if let Some(ca) = ca {
            cmd.args(["--endpoint-ca-cert", ca]);
        }
        let refused = run(&mut cmd);
        refused.fails_with(5, &format!("cannot reach the node at {endpoint}"));
        assert!(
            refused.stderr.contains("certificate") || refused.stderr.contains("UnknownIssuer"),
            "{}",
            refused.stderr
        );
    }
    // A plain client gets nothing from the TLS port.
    let plain = endpoint.replace("https://", "http://");
    let refused = run(ferry_for(&plain, op)
        .env_remove("FERRY_ENDPOINT_CA_CERT")
        .args(["tenants", "list", "--timeout", "5s"]));
    assert_ne!(
        refused.code, 0,
        "plain HTTP/2 on the TLS port: {}",
        refused.stdout
    );
    // A CA for a plain-HTTP endpoint is a mistake worth saying.
    run(ferry_for("http://127.0.0.1:9", op).args([
        "tenants",
        "list",
        "--endpoint-ca-cert",
        &ca_file,
    ]))
    .fails_with(2, "--endpoint-ca-cert is for https:// endpoints");

    // The trigger URL on the same port: HTTP/1.1 over TLS (ALPN http/1.1) reaches the trigger.
    let ca_pem = std::fs::read(&ca_file).unwrap();
    let http1 = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let url = format!("{endpoint}/v1/tenants/acme/syncs/orders/trigger");
    let answer = http1.put(&url).send().unwrap();
    assert_eq!(answer.version(), reqwest::Version::HTTP_11);
    assert_eq!(answer.status(), 401, "no token: the trigger's own answer");
    assert_eq!(answer.headers()["www-authenticate"], "Bearer");
    let answer = http1.put(&url).bearer_auth(OPERATOR_TOKEN).send().unwrap();
    assert_eq!(answer.status(), 404, "no such sync: {:?}", answer.text());
    assert!(
        !node.log().contains("panicked"),
        "the node kept going: {}",
        node.log()
    );
}

#[test]
fn a_node_with_a_certificate_but_no_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert_file, key_file) = issue(dir.path(), "node");
    let start = |flags: &[&str]| {
        run(ferry()
            .args(["node", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("data"))
            .args(flags)
            .env("FERRY_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("FERRY_SECRET_KEY", SECRET_KEY)
            .env_remove("FERRY_CONFIG")
            .env_remove("FERRY_TLS_CERT")
            .env_remove("FERRY_TLS_KEY"))
    };
    let no_key = start(&["--tls-cert", &cert_file]);
    assert_ne!(no_key.code, 0);
    assert!(
        no_key.stderr.contains("--tls-cert") && no_key.stderr.contains("needs --tls-key"),
        "{}",
        no_key.stderr
    );
    // A key file that holds a certificate, and a certificate file that is not PEM: each named.
    let swapped = start(&["--tls-cert", &cert_file, "--tls-key", &cert_file]);
    assert_ne!(swapped.code, 0);
    assert!(
        swapped.stderr.contains("--tls-key") && swapped.stderr.contains(&cert_file),
        "{}",
        swapped.stderr
    );
    let junk = write(dir.path(), "junk.pem", "not a certificate\n");
    let bad_cert = start(&["--tls-cert", &junk, "--tls-key", &key_file]);
    assert_ne!(bad_cert.code, 0);
    assert!(
        bad_cert.stderr.contains("--tls-cert") && bad_cert.stderr.contains("junk.pem"),
        "{}",
        bad_cert.stderr
    );
}
