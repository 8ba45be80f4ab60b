//! Three `ferry node --listen --etcd` processes linked over their gRPC ports (a real etcd, a
//! real PostgreSQL, the receiver): the admin API answers the same from any node. A sync
//! triggered through node A while it is assigned to node B runs on B; A shows B's live
//! progress (the trigger and counters only B knows); C cancels it on B. The HTTP trigger URL
//! through A starts it on B too, and A's `nodes get B` shows that run's live counters. Then how
//! soon a node starts a newly assigned sync after the coordinator wrote the assignment is
//! measured (the coordinator tells the node over its link) and printed. Last, B is killed: the
//! HTTP trigger through A answers 503 naming B.

mod cli_common;
mod cluster_common;
mod common;

use std::time::{Duration, Instant};

use cli_common::KillOnDrop;
use cluster_common::{
    create_tenant_and_source, slow_receiver, ClusterProcess, Stand, NODE_CONFIG, ORDERS_EVENTS,
};
use ferry_coordinator::cluster::assigner::{all_assignments, AssignmentRecord};
use ferry_coordinator::cluster::connection::EtcdSettings;
use ferry_coordinator::cluster::etcd_store::{EtcdStore, EtcdStoreSettings};
use ferry_coordinator::cluster::keys;
use ferry_coordinator::cluster::membership::Liveness;
use ferry_coordinator::{RunState, StateStore, SyncId};

const ROWS: u64 = 60_000;

#[test]
fn any_node_triggers_shows_and_cancels_a_run_held_by_another_node() {
    let Some(Stand { rt, dir, etcd, pg }) = cluster_common::stand() else {
        return;
    };
    cluster_common::orders_table(&pg, ROWS);
    pg.sql("CREATE TABLE few (id bigint PRIMARY KEY, user_id text NOT NULL, created_at timestamptz NOT NULL);").unwrap();
    pg.sql("INSERT INTO few SELECT i, 'user-' || i, timestamptz '2024-03-01 00:00:00+00' + i * interval '1 minute' FROM generate_series(1, 5) AS i;").unwrap();
    // Each import request is answered after 100 ms: the big run lasts a few seconds.
    let (_rx, rx_url) = slow_receiver(dir.path(), 100);
    let config = cli_common::write(dir.path(), "node.toml", NODE_CONFIG);
    let nodes: Vec<ClusterProcess> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|id| ClusterProcess::start(id, &etcd.endpoint(), &config, dir.path()))
        .collect();
    // Every pair linked: node-1 dials node-2 and node-3, node-2 dials node-3.
    let linking = Instant::now();
    while nodes
        .iter()
        .map(|n| n.log().matches("link opened").count())
        .sum::<usize>()
        < 3
    {
        assert!(
            linking.elapsed() < Duration::from_secs(10),
            "the nodes did not link: {}",
            nodes[0].log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let client = rt
        .block_on(EtcdSettings::new(etcd.endpoints()).connect())
        .unwrap();
    let (_, liveness) = tokio::sync::watch::channel(Liveness::Lost);
    let store = EtcdStore::new(client.clone(), EtcdStoreSettings::default(), liveness);

    let api = &nodes[0];
    create_tenant_and_source(api, dir.path(), &rx_url, &pg);
    // The orders events sync's flags, on another table.
    let mapping = |table: &str| -> Vec<String> {
        ORDERS_EVENTS
            .iter()
            .map(|s| match *s {
                "public.orders" => table.to_string(),
                other => other.to_string(),
            })
            .collect()
    };
    let create = |args: &[&str], table: &str| {
        let mapping = mapping(table);
        let mut all: Vec<&str> = args.to_vec();
        all.extend(mapping.iter().map(String::as_str));
        api.json(&all);
    };
    create(
        &["syncs", "create", "orders", "--mode", "one_time"],
        "public.orders",
    );

    // Where the coordinator put it: B. A is another node, C the third.
    let sync = SyncId::new("acme", "orders").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let b_id = loop {
        let placed = rt.block_on(all_assignments(&client)).unwrap();
        if let Some(node) = placed.get(&sync).and_then(|n| n.iter().next()) {
            break node.clone();
        }
        assert!(Instant::now() < deadline, "orders never placed");
        std::thread::sleep(Duration::from_millis(50));
    };
    let b = nodes.iter().find(|n| n.id == b_id).unwrap();
    let mut others = nodes.iter().filter(|n| n.id != b_id);
    let (a, c) = (others.next().unwrap(), others.next().unwrap());
    println!(
        "orders is assigned to {}; asking {} and {}",
        b.id, a.id, c.id
    );

    // Triggered through A: the run starts on B.
    let started = a.json(&["syncs", "trigger", "orders", "--tenant", "acme"]);
    let run_id = started["run_id"].as_str().unwrap().to_string();
    let owner = loop {
        if let Some(owner) = rt.block_on(store.current_owner(&sync)).unwrap() {
            break owner;
        }
        assert!(
            Instant::now() < deadline,
            "the run never claimed its sync\nA: {}\nB: {}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(owner.node_id, b.id, "the run is held by the sync's node");
    assert!(
        b.log().contains(&run_id) && !a.log().contains("run started"),
        "B started it, A did not"
    );

    // A shows B's live run: its counters move, and it knows what only B knows (the trigger).
    let live = loop {
        let run = a.json(&["runs", "get", "orders", &run_id, "--tenant", "acme"]);
        let rows = run["counts"]["rows_read"].as_u64().unwrap_or(0);
        if run["state"] == "running" && rows > 0 {
            break run;
        }
        assert!(
            run["state"] == "running" || run["state"] == "queued",
            "the run ended before it was seen live: {run}"
        );
        assert!(Instant::now() < deadline, "no live progress on A: {run}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(live["trigger"], "api", "live from B: {live}");
    let listed = c.json(&["runs", "list", "orders", "--tenant", "acme"]);
    assert_eq!(listed[0]["run_id"], run_id.as_str(), "{listed}");
    assert_eq!(listed[0]["trigger"], "api", "listed live from B: {listed}");
    let rows_mid_run = live["counts"]["rows_read"].as_u64().unwrap();
    assert!(rows_mid_run < ROWS, "seen mid-run: {live}");

    // Followed through A (WatchRun) while C cancels it.
    let follower = cli_common::ferry_for(&a.endpoint, Some(cli_common::OPERATOR_TOKEN))
        .args([
            "runs", "follow", "orders", &run_id, "--tenant", "acme", "-o", "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let follower = KillOnDrop(follower);
    std::thread::sleep(Duration::from_millis(700));

    // Cancelled through C: B stops it and records it.
    let cancelled = c.json(&["runs", "cancel", "orders", &run_id, "--tenant", "acme"]);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let stored = rt.block_on(store.get_run(&sync, &run_id)).unwrap().unwrap();
    assert_eq!(stored.state, RunState::Cancelled);
    assert!(stored.counts.rows_read < ROWS, "{:?}", stored.counts);
    assert!(
        b.log().contains("run cancellation requested"),
        "cancelled on B: {}",
        b.log()
    );
    let shown = a.json(&["runs", "get", "orders", &run_id, "--tenant", "acme"]);
    assert_eq!(shown["state"], "cancelled", "{shown}");
    let mut follower = follower;
    let ends = Instant::now() + Duration::from_secs(10);
    while follower.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < ends, "the follower did not see the end");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut followed = String::new();
    std::io::Read::read_to_string(&mut follower.0.stdout.take().unwrap(), &mut followed).unwrap();
    let snapshots: Vec<serde_json::Value> = followed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        snapshots
            .iter()
            .any(|r| r["state"] == "running" && r["trigger"] == "api"),
        "A followed B's live run: {followed}"
    );
    assert_eq!(
        snapshots.last().map(|r| r["state"].clone()),
        Some("cancelled".into()),
        "{followed}"
    );

    // The HTTP trigger URL through A: the run starts on B (the sync's node) too.
    let placed = rt.block_on(all_assignments(&client)).unwrap();
    assert_eq!(
        placed.get(&sync).and_then(|n| n.iter().next()),
        Some(&b.id),
        "orders stays on B"
    );
    let (status, body) = http_trigger(a, "orders");
    assert_eq!(status, 202, "{body}\nA: {}", a.log());
    assert_eq!(body["node"], b.id.as_str(), "{body}");
    let http_run = body["run_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let owner = rt.block_on(store.current_owner(&sync)).unwrap();
        if let Some(owner) = owner {
            assert_eq!(owner.node_id, b.id, "the HTTP-triggered run is held by B");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the HTTP-triggered run never claimed its sync"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let shown = c.json(&["runs", "get", "orders", &http_run, "--tenant", "acme"]);
    assert_eq!(shown["trigger"], "http", "live from B: {shown}");
    // Triggered again through C while it runs: B's refusal, naming B.
    let (status, body) = http_trigger(c, "orders");
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "already_running", "{body}");
    assert_eq!(body["node"], b.id.as_str(), "{body}");
    assert_eq!(body["run_id"], http_run.as_str(), "{body}");

    // A's `nodes get B` shows the run's live counters (the stored record holds none until the
    // run ends).
    let live_on_b = loop {
        let detail = a.json(&["nodes", "get", &b.id]);
        let entry = detail["syncs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["sync"] == "orders")
            .cloned()
            .unwrap_or_else(|| panic!("orders not among B's syncs: {detail}"));
        if entry["run"]["rows_read"].as_u64().unwrap_or(0) > 0 {
            break entry;
        }
        assert!(
            Instant::now() < deadline,
            "no live counters of B's run on A: {detail}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(live_on_b["run"]["run_id"], http_run.as_str(), "{live_on_b}");
    assert_eq!(live_on_b["running_on"], b.id.as_str(), "{live_on_b}");
    let stored = rt
        .block_on(store.get_run(&sync, &http_run))
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.counts.rows_read, 0,
        "the stored record lags: {stored:?}"
    );
    let cancelled = c.json(&["runs", "cancel", "orders", &http_run, "--tenant", "acme"]);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");

    // How soon a node starts a newly assigned sync after the coordinator wrote the
    // assignment: each hourly sync runs as soon as its node schedules it.
    let mut delays = Vec::new();
    for i in 0..5 {
        let id = format!("hourly-{i}");
        create(
            &[
                "syncs",
                "create",
                &id,
                "--mode",
                "append",
                "--cursor-column",
                "id",
                "--schedule",
                "every 1h",
            ],
            "public.few",
        );
        let hourly = SyncId::new("acme", &id).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let delay = loop {
            let runs = rt.block_on(store.list_runs(&hourly, 1)).unwrap();
            let placed = rt.block_on(all_assignments(&client)).unwrap();
            if let (Some(run), Some(node)) = (
                runs.first(),
                placed.get(&hourly).and_then(|n| n.iter().next()),
            ) {
                let mut kv = client.clone();
                let resp = rt
                    .block_on(kv.get(keys::assignment(node, &hourly), None))
                    .unwrap();
                let record: AssignmentRecord =
                    serde_json::from_slice(resp.kvs()[0].value()).unwrap();
                break (run.queued_at - record.assigned_at)
                    .to_std()
                    .unwrap_or_default();
            }
            assert!(Instant::now() < deadline, "{id} never ran");
            std::thread::sleep(Duration::from_millis(20));
        };
        delays.push(delay);
    }
    delays.sort();
    println!(
        "assignment written → run queued on its node (told over the link): median {:?}, worst {:?} of {:?}",
        delays[delays.len() / 2],
        delays[delays.len() - 1],
        delays
    );

    // B dies: until its lease expires orders is still assigned to it, and the HTTP trigger
    // through A says B cannot be reached.
    let mut nodes = nodes;
    let b_at = nodes.iter().position(|n| n.id == b_id).unwrap();
    let mut b = nodes.remove(b_at);
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let a = nodes.iter().find(|n| n.id != b_id).unwrap();
    let (status, body) = http_trigger(a, "orders");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unavailable", "{body}");
    assert_eq!(body["node"], b_id.as_str(), "{body}");
    assert!(body["message"].as_str().unwrap().contains(&b_id), "{body}");
    drop(nodes);
    drop(etcd);
}

/// `PUT` of the sync's HTTP trigger URL on `node` (operator token): the status and JSON body.
fn http_trigger(node: &ClusterProcess, sync: &str) -> (u16, serde_json::Value) {
    let response = reqwest::blocking::Client::new()
        .put(format!(
            "{}/v1/tenants/acme/syncs/{sync}/trigger",
            node.endpoint
        ))
        .bearer_auth(cli_common::OPERATOR_TOKEN)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or_default())
}

#[test]
fn a_cluster_node_without_the_shared_secret_refuses_to_start() {
    let without = cli_common::run(
        cli_common::ferry()
            .args([
                "node",
                "--listen",
                "127.0.0.1:0",
                "--etcd",
                "http://127.0.0.1:1",
            ])
            .env("FERRY_OPERATOR_TOKEN", cli_common::OPERATOR_TOKEN)
            .env("FERRY_SECRET_KEY", cli_common::SECRET_KEY)
            .env_remove("FERRY_CLUSTER_SECRET"),
    );
    assert_ne!(without.code, 0);
    assert!(
        without.stderr.contains("FERRY_CLUSTER_SECRET")
            && without.stderr.contains("--cluster-secret-file"),
        "{}",
        without.stderr
    );
    let weak = cli_common::run(
        cli_common::ferry()
            .args([
                "node",
                "--listen",
                "127.0.0.1:0",
                "--etcd",
                "http://127.0.0.1:1",
            ])
            .env("FERRY_OPERATOR_TOKEN", cli_common::OPERATOR_TOKEN)
            .env("FERRY_SECRET_KEY", cli_common::SECRET_KEY)
            .env("FERRY_CLUSTER_SECRET", "short"),
    );
    assert_ne!(weak.code, 0);
    assert!(weak.stderr.contains("at least 16"), "{}", weak.stderr);
    let alone = cli_common::run(
        cli_common::ferry()
            .args([
                "node",
                "--listen",
                "127.0.0.1:0",
                "--cluster-secret-file",
                "/nonexistent",
            ])
            .env("FERRY_OPERATOR_TOKEN", cli_common::OPERATOR_TOKEN)
            .env("FERRY_SECRET_KEY", cli_common::SECRET_KEY),
    );
    assert_ne!(alone.code, 0);
    assert!(alone.stderr.contains("give --etcd too"), "{}", alone.stderr);
}
