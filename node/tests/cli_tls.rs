//! The CLI over TLS: a real `ferry node --listen` behind a TLS terminator (as an ingress would
//! put it), its certificate signed by a private CA. With `--endpoint-ca-cert` the CLI verifies
//! the certificate and reaches the node; without it the certificate is refused and the CLI says
//! it cannot reach the node. The terminator is a few lines of tokio-rustls copying bytes: it
//! proves the CLI's TLS and HTTP/2 negotiation, not any particular ingress's behaviour.

mod cli_common;

use std::sync::Arc;

use cli_common::{ferry_for, run, write, Node, OPERATOR_TOKEN};
use ferry_tests::postgres::TestCa;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

/// Accepts TLS (ALPN h2, as gRPC clients ask for) and forwards the plaintext to `backend`.
async fn terminate(listener: TcpListener, config: Arc<rustls::ServerConfig>, backend: String) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let acceptor = acceptor.clone();
        let backend = backend.clone();
        tokio::spawn(async move {
            // A client that refuses the certificate ends the handshake: nothing to forward.
            let Ok(mut tls) = acceptor.accept(client).await else {
                return;
            };
            let Ok(mut plain) = TcpStream::connect(&backend).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
        });
    }
}

#[test]
fn the_cli_reaches_a_node_behind_tls_and_checks_its_certificate() {
    let node = Node::start();
    let ca = TestCa::new("ferry test ingress CA").unwrap();
    let (cert_pem, key_pem) = ca.server_cert(&["localhost"]).unwrap();
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let backend = node.endpoint.trim_start_matches("http://").to_owned();
    runtime.spawn(terminate(listener, Arc::new(config), backend));

    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let endpoint = format!("https://localhost:{port}");
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
    // The same node over plain HTTP sees what was created through TLS.
    assert_eq!(node.json(op, &["tenants", "get", "acme"])["name"], "Acme");

    // Without the private CA the certificate is not trusted.
    let refused = run(ferry_for(&endpoint, op).args(["tenants", "list"]));
    refused.fails_with(5, &format!("cannot reach the node at {endpoint}"));
    assert!(
        refused.stderr.contains("certificate") || refused.stderr.contains("UnknownIssuer"),
        "{}",
        refused.stderr
    );
    // A CA for a plain-HTTP endpoint is a mistake worth saying.
    run(ferry_for(&node.endpoint, op).args(["tenants", "list", "--endpoint-ca-cert", &ca_file]))
        .fails_with(2, "--endpoint-ca-cert is for https:// endpoints");
}
