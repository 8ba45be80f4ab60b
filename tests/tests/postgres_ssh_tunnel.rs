//! The PostgreSQL source through an SSH tunnel, against a real `sshd` (`ferry_tests::sshd`) as
//! the bastion and a real PostgreSQL (`ferry_tests::postgres`) behind it. Everything listens
//! on 127.0.0.1; the tunnel's target is the database as the bastion sees it.

use std::time::{Duration, Instant};

use ferry_connectors::warehouse::postgres::PostgresWarehouse;
use ferry_connectors::warehouse::{
    CursorFilter, Page, ReadRequest, ReadSource, Warehouse, WarehouseError,
};
use ferry_core::spec::{CertSource, PostgresOptions, Secret, SshTunnel, SslMode};
use ferry_core::value::Value;
use ferry_tests::postgres::{postgres_bin_dir, PgConfig, TestPostgres};
use ferry_tests::require_tool;
use ferry_tests::sshd::{sshd_available, KeyPair, TestSshd};
use tokio::sync::mpsc;

/// A bastion and a database, or `None` (skipped) when a tool is missing outside scripts/test.
fn servers(ssl: bool) -> Option<(TestSshd, TestPostgres)> {
    if !require_tool("postgres", postgres_bin_dir().is_some())
        || !require_tool("sshd (openssh-server)", sshd_available())
    {
        return None;
    }
    let sshd = TestSshd::start().expect("start sshd");
    let pg = TestPostgres::start(PgConfig { ssl }).expect("start postgres");
    Some((sshd, pg))
}

fn tunnel(sshd: &TestSshd) -> SshTunnel {
    SshTunnel {
        host: sshd.host.clone(),
        port: sshd.port,
        user: sshd.user.clone(),
        private_key: Secret::new(sshd.client_key.private_pem.clone()),
        host_key: None,
    }
}

fn options(pg: &TestPostgres, tunnel: SshTunnel) -> PostgresOptions {
    PostgresOptions {
        host: pg.host.clone(),
        port: pg.port,
        database: pg.database.clone(),
        user: pg.user.clone(),
        password: Some(Secret::new(pg.password.clone())),
        ssl_mode: SslMode::Disable,
        ca_cert: None,
        ssh_tunnel: Some(Box::new(tunnel)),
    }
}

fn source(pg: &TestPostgres, tunnel: SshTunnel) -> PostgresWarehouse {
    PostgresWarehouse::new(options(pg, tunnel)).with_connect_timeout(Duration::from_secs(10))
}

async fn read_all(w: &PostgresWarehouse, req: ReadRequest) -> Vec<Page> {
    let (tx, mut rx) = mpsc::channel(2);
    let reader = {
        let w = w.clone();
        tokio::spawn(async move { w.read(&req, tx).await })
    };
    let mut pages = Vec::new();
    while let Some(p) = rx.recv().await {
        pages.push(p);
    }
    reader.await.expect("reader task").expect("read");
    pages
}

async fn expect_err(w: PostgresWarehouse) -> WarehouseError {
    w.test_connection()
        .await
        .expect_err("the connection should fail")
}

#[tokio::test]
async fn reads_through_the_tunnel() {
    let Some((sshd, pg)) = servers(false) else {
        return;
    };
    pg.sql(
        "CREATE TABLE public.events (id int8 PRIMARY KEY, name text NOT NULL);
         INSERT INTO public.events SELECT g, 'e' || g FROM generate_series(1, 2500) g;",
    )
    .unwrap();
    let w = source(&pg, tunnel(&sshd));
    w.test_connection().await.unwrap();
    let tables = w.list_tables().await.unwrap();
    assert!(tables.iter().any(|t| t.name == "events"), "{tables:?}");

    // A multi-page read streams every row over the channel, in cursor order.
    let req = ReadRequest {
        source: ReadSource::Table {
            schema: Some("public".into()),
            name: "events".into(),
        },
        cursor: Some(CursorFilter {
            column: "id".into(),
            after: Some(Value::Int(500)),
        }),
        page_size: 700,
    };
    let pages = read_all(&w, req).await;
    let ids: Vec<Value> = pages
        .iter()
        .flat_map(|p| p.batch.rows.iter().map(|r| r[0].clone()))
        .collect();
    assert_eq!(ids.len(), 2000);
    assert_eq!(ids.first(), Some(&Value::Int(501)));
    assert_eq!(ids.last(), Some(&Value::Int(2500)));
    assert_eq!(pages[0].batch.rows[0][1], Value::Text("e501".into()));

    // The three sessions (test, list, read) really went through the bastion: it logged each
    // key login.
    let log = sshd.log();
    assert!(
        log.matches(&format!("Accepted publickey for {}", sshd.user))
            .count()
            >= 3,
        "sshd did not see the sessions:\n{log}"
    );
}

#[tokio::test]
async fn the_session_ends_with_the_connection() {
    let Some((sshd, pg)) = servers(false) else {
        return;
    };
    let w = source(&pg, tunnel(&sshd));
    // test_connection drops its client at the end; the connection task then closes the SSH
    // session itself with a disconnect message, which sshd logs.
    w.test_connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sshd.log().contains("Received disconnect") {
        assert!(
            Instant::now() < deadline,
            "the SSH session was not closed:\n{}",
            sshd.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn host_key_pinning_and_key_types() {
    let Some((sshd, pg)) = servers(false) else {
        return;
    };
    // Pinned by fingerprint, and by public key (known_hosts form with a host pattern).
    for pin in [
        sshd.host_key.fingerprint.clone(),
        format!("[127.0.0.1]:{} {}", sshd.port, sshd.host_key.public),
    ] {
        let mut t = tunnel(&sshd);
        t.host_key = Some(pin.clone());
        source(&pg, t)
            .test_connection()
            .await
            .unwrap_or_else(|e| panic!("{pin}: {e}"));
    }

    // A wrong pin is a host key mismatch naming both fingerprints.
    let other = KeyPair::generate(sshd.dir(), "other_host", "ed25519", "").unwrap();
    for pin in [other.fingerprint.clone(), other.public.clone()] {
        let mut t = tunnel(&sshd);
        t.host_key = Some(pin);
        let err = expect_err(source(&pg, t)).await;
        let text = err.to_string();
        assert!(matches!(err, WarehouseError::Tunnel(_)), "{err:?}");
        assert!(text.contains("host key mismatch"), "{text}");
        assert!(text.contains(&sshd.host_key.fingerprint), "{text}");
        assert!(text.contains(&other.fingerprint), "{text}");
    }

    // An RSA client key works too (the rsa-sha2 signature is negotiated).
    let rsa = KeyPair::generate(sshd.dir(), "rsa_client", "rsa", "").unwrap();
    sshd.authorize(&rsa).unwrap();
    let mut t = tunnel(&sshd);
    t.private_key = Secret::new(rsa.private_pem);
    source(&pg, t).test_connection().await.unwrap();
}

#[tokio::test]
async fn tunnel_errors_say_what_failed() {
    let Some((sshd, pg)) = servers(false) else {
        return;
    };
    // A key the bastion does not know.
    let stranger = KeyPair::generate(sshd.dir(), "stranger", "ed25519", "").unwrap();
    let mut t = tunnel(&sshd);
    t.private_key = Secret::new(stranger.private_pem);
    let err = expect_err(source(&pg, t)).await;
    assert!(matches!(err, WarehouseError::Tunnel(_)), "{err:?}");
    assert!(err.to_string().contains("refused the private key"), "{err}");

    // An encrypted key is refused before connecting.
    let locked = KeyPair::generate(sshd.dir(), "locked", "ed25519", "passphrase").unwrap();
    let mut t = tunnel(&sshd);
    t.private_key = Secret::new(locked.private_pem);
    let err = expect_err(source(&pg, t)).await;
    assert!(matches!(err, WarehouseError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("encrypted"), "{err}");

    // Nothing listens on the bastion's port: unreachable, and the target is the bastion.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut t = tunnel(&sshd);
    t.port = closed;
    let err = expect_err(source(&pg, t)).await;
    match &err {
        WarehouseError::Unreachable { target, message } => {
            assert_eq!(target, &format!("SSH bastion 127.0.0.1:{closed}"));
            assert!(message.contains("SSH tunnel"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    // The bastion is fine but nothing listens where it should forward to.
    let mut o = options(&pg, tunnel(&sshd));
    o.port = closed;
    let err = expect_err(PostgresWarehouse::new(o)).await;
    match &err {
        WarehouseError::Unreachable { target, message } => {
            assert!(target.contains("via SSH bastion"), "{target}");
            assert!(
                message.contains("could not connect to the database"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }

    // Database errors through the tunnel are still the database's.
    let mut o = options(&pg, tunnel(&sshd));
    o.password = Some(Secret::new("wrong"));
    let err = expect_err(PostgresWarehouse::new(o)).await;
    assert!(matches!(err, WarehouseError::Authentication(_)), "{err:?}");
}

#[tokio::test]
async fn tls_inside_the_tunnel() {
    let Some((sshd, pg)) = servers(true) else {
        return;
    };
    let ca = pg.ca_pem.clone().unwrap();
    let mut o = options(&pg, tunnel(&sshd));
    o.ssl_mode = SslMode::VerifyFull;
    o.ca_cert = Some(CertSource::Pem(ca));
    // verify-full checks the certificate against the database's host name (the tunnel only
    // carries the bytes), here 127.0.0.1 as the certificate says.
    let w = PostgresWarehouse::new(o);
    let batch = w
        .preview(
            &ReadSource::Sql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()".into()),
            1,
        )
        .await
        .unwrap();
    assert_eq!(batch.rows[0][0], Value::Bool(true));
}
