//! A cluster whose nodes serve TLS on their one port (a real etcd, PostgreSQL and the
//! receiver; certificates from a private CA made here): the nodes register https:// addresses,
//! link over TLS (verified against `--cluster-ca-cert`, the shared secret still checked), the
//! CLI reaches them over TLS, and a sync triggered through node A runs on node B, which A
//! learns of over the link. A plain node joining them is refused a link, by name, in the log.

mod cli_common;
mod cluster_common;
mod common;

use std::time::{Duration, Instant};

use cluster_common::{
    create_tenant_and_source, slow_receiver, ClusterProcess, ClusterTls, NODE_CONFIG, ORDERS_EVENTS,
};
use ferry_coordinator::cluster::assigner::all_assignments;
use ferry_coordinator::cluster::connection::EtcdSettings;
use ferry_coordinator::cluster::etcd_store::{EtcdStore, EtcdStoreSettings};
use ferry_coordinator::cluster::membership::Liveness;
use ferry_coordinator::{StateStore, SyncId};
use ferry_tests::etcd::{etcd_available, TestEtcd};
use ferry_tests::postgres::{postgres_bin_dir, PgConfig, TestPostgres};
use ferry_tests::require_tool;

const ROWS: u64 = 3_000;

/// Waits until the nodes' logs together hold `count` lines with `text`.
fn wait_for_logs(nodes: &[&ClusterProcess], text: &str, count: usize, what: &str) {
    let started = Instant::now();
    while nodes
        .iter()
        .map(|n| n.log().matches(text).count())
        .sum::<usize>()
        < count
    {
        let logs: Vec<String> = nodes.iter().map(|n| n.log()).collect();
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{what}:\n{}",
            logs.join("\n---\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tls_nodes_link_over_tls_and_a_trigger_through_one_runs_on_another() {
    if !require_tool("postgres", postgres_bin_dir().is_some()) || !etcd_available() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let etcd = TestEtcd::start().unwrap();
    let pg = TestPostgres::start(PgConfig::default()).unwrap();
    pg.sql("CREATE TABLE orders (id bigint PRIMARY KEY, user_id text NOT NULL, created_at timestamptz NOT NULL);").unwrap();
    pg.sql(&format!("INSERT INTO orders SELECT i, 'user-' || (i % 23), timestamptz '2024-03-01 00:00:00+00' + i * interval '1 minute' FROM generate_series(1, {ROWS}) AS i;")).unwrap();
    let (_rx, rx_url) = slow_receiver(dir.path(), 10);
    let config = cli_common::write(dir.path(), "node.toml", NODE_CONFIG);
    let tls = ClusterTls::new(dir.path());

    let nodes: Vec<ClusterProcess> = ["node-1", "node-2"]
        .iter()
        .map(|id| ClusterProcess::start_tls(id, &etcd.endpoint(), &config, dir.path(), &tls, &[]))
        .collect();
    let all: Vec<&ClusterProcess> = nodes.iter().collect();
    wait_for_logs(&all, "link opened", 1, "the TLS nodes did not link");
    assert!(
        nodes[0]
            .log()
            .lines()
            .any(|l| l.contains("link opened") && l.contains("https://127.0.0.1:")),
        "node-1 dialed node-2 with TLS: {}",
        nodes[0].log()
    );
    // Both registered their https:// address; the CLI reached them over TLS to see it.
    let listed = nodes[1].json(&["nodes", "list"]);
    let text = listed.to_string();
    for node in &nodes {
        assert!(
            text.contains(&node.endpoint),
            "{} registered {}: {listed}",
            node.id,
            node.endpoint
        );
    }

    create_tenant_and_source(&nodes[0], dir.path(), &rx_url, &pg);
    let mut create = vec!["syncs", "create", "orders", "--mode", "one_time"];
    create.extend(ORDERS_EVENTS);
    nodes[0].json(&create);

    // Where the coordinator put it: B; A is the other node.
    let client = rt
        .block_on(EtcdSettings::new(etcd.endpoints()).connect())
        .unwrap();
    let (_, liveness) = tokio::sync::watch::channel(Liveness::Lost);
    let store = EtcdStore::new(client.clone(), EtcdStoreSettings::default(), liveness);
    let sync = SyncId::new("acme", "orders").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let b_id = loop {
        let placed = rt.block_on(all_assignments(&client)).unwrap();
        if let Some(node) = placed.get(&sync).and_then(|n| n.iter().next()) {
            break node.clone();
        }
        assert!(Instant::now() < deadline, "orders never placed");
        std::thread::sleep(Duration::from_millis(50));
    };
    let b = nodes.iter().find(|n| n.id == b_id).unwrap();
    let a = nodes.iter().find(|n| n.id != b_id).unwrap();

    // Triggered through A: A hands it to B over their TLS link; B runs it to the end.
    let started = a.json(&["syncs", "trigger", "orders", "--tenant", "acme"]);
    let run_id = started["run_id"].as_str().unwrap().to_string();
    let finished = loop {
        let run = rt.block_on(store.get_run(&sync, &run_id)).unwrap();
        if let Some(run) = run.filter(|r| r.state.is_terminal()) {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not end\nA: {}\nB: {}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        finished.state,
        ferry_coordinator::RunState::Succeeded,
        "{finished:?}"
    );
    assert_eq!(finished.counts.rows_read, ROWS, "{finished:?}");
    assert!(
        b.log().contains(&run_id) && !a.log().contains("run started"),
        "B started it, A did not"
    );
    let shown = a.json(&["runs", "get", "orders", &run_id, "--tenant", "acme"]);
    assert_eq!(shown["state"], "succeeded", "{shown}");

    // A plain node in the same cluster: each TLS node refuses to link with it, naming it.
    let plain = ClusterProcess::start("node-3", &etcd.endpoint(), &config, dir.path());
    wait_for_logs(
        &all,
        "refusing to link TLS and plain nodes",
        2,
        "the TLS nodes did not refuse the plain one",
    );
    for node in &nodes {
        let log = node.log();
        let refusal = log
            .lines()
            .find(|l| l.contains("refusing to link TLS and plain nodes"))
            .unwrap_or_else(|| panic!("{} logged no refusal: {log}", node.id));
        assert!(
            refusal.contains("node-3") && refusal.contains("registered a plain address"),
            "{refusal}"
        );
    }
    assert!(
        !plain.log().contains("link opened"),
        "the plain node opened no link: {}",
        plain.log()
    );
    drop(plain);
    drop(etcd);
}
