//! Three `ferry node --listen --etcd` processes on loopback, a real etcd, a real PostgreSQL and
//! the receiver (answering slowly, so a sync of 30,000 rows is mid-run): etcd is killed with
//! SIGKILL and stays down past half a lease, so every node's kill switch trips and the running
//! sync stops; etcd is restarted on the same data dir, the nodes register again with new leases,
//! the sync resumes from its last committed cursor (the time from the restart to the sync
//! running again is printed) and the receiver ends exact: every row once, the rows re-sent after
//! the stop deduplicated by `$insert_id`. Every process is killed when the test ends.

mod cli_common;
mod cluster_common;
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cli_common::write;
use cluster_common::{ClusterProcess, Stand, LEASE_TTL_SECS};
use ferry_coordinator::cluster::connection::EtcdSettings;
use ferry_coordinator::cluster::etcd_store::{EtcdStore, EtcdStoreSettings};
use ferry_coordinator::cluster::membership::{list_nodes, Liveness};
use ferry_coordinator::{RunState, StateStore, SyncId};
use serde_json::Value;

const ROWS: u64 = 30_000;
const TTL: Duration = Duration::from_secs(LEASE_TTL_SECS);

/// The receiver's project 1: (events held, events stored new, events whose `$insert_id` was
/// already held and replaced the copy).
fn receiver_counts(url: &str) -> (u64, u64, u64) {
    let state: Value =
        reqwest::blocking::get(format!("{url}/ferry/v1/projects/1/state?events=false"))
            .unwrap()
            .json()
            .unwrap();
    let counter = |name: &str| state["counters"][name].as_u64().unwrap_or(0);
    (
        state["event_count"].as_u64().unwrap_or(0),
        counter("events_imported"),
        counter("events_replaced"),
    )
}

fn logs(nodes: &[ClusterProcess]) -> String {
    nodes
        .iter()
        .map(|n| format!("--- {}:\n{}", n.id, n.log()))
        .collect()
}

#[test]
fn etcd_restarted_under_load_trips_every_kill_switch_and_the_sync_resumes_exact() {
    let Some(Stand {
        rt,
        dir,
        mut etcd,
        pg,
    }) = cluster_common::stand()
    else {
        return;
    };
    cluster_common::orders_table(&pg, ROWS);
    // Each import request is answered after 200 ms: the run lasts seconds.
    let (_rx, rx_url) = cluster_common::slow_receiver(dir.path(), 200);
    let config = write(dir.path(), "node.toml", cluster_common::NODE_CONFIG);
    let mut nodes: Vec<ClusterProcess> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|id| ClusterProcess::start(id, &etcd.endpoint(), &config, dir.path()))
        .collect();

    let client = rt
        .block_on(EtcdSettings::new(etcd.endpoints()).connect())
        .unwrap();
    let leases_before: BTreeMap<String, i64> = rt
        .block_on(list_nodes(&client))
        .unwrap()
        .into_iter()
        .map(|n| (n.node_id, n.lease))
        .collect();
    assert_eq!(leases_before.len(), 3, "{leases_before:?}");

    let api = &nodes[0];
    cluster_common::create_tenant_and_source(api, dir.path(), &rx_url, &pg);
    api.json(
        &[
            &[
                "syncs",
                "create",
                "orders",
                "--mode",
                "append",
                "--cursor-column",
                "inserted_at",
            ][..],
            &["--schedule", "every 1h"],
            &cluster_common::ORDERS_EVENTS[..],
        ]
        .concat(),
    );

    // The sync runs (at once: its schedule is due) on some node; wait for a committed cursor.
    let (_, liveness) = tokio::sync::watch::channel(Liveness::Lost);
    let store = EtcdStore::new(client.clone(), EtcdStoreSettings::default(), liveness);
    let sync = SyncId::new("acme", "orders").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let owner = loop {
        let cursor = rt.block_on(store.get_cursor(&sync)).unwrap();
        let owner = rt.block_on(store.current_owner(&sync)).unwrap();
        if let (Some(_), Some(owner)) = (cursor, owner) {
            break owner;
        }
        assert!(
            Instant::now() < deadline,
            "the orders sync never committed: {}",
            logs(&nodes)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let first_run = rt.block_on(store.list_runs(&sync, 1)).unwrap()[0].clone();
    assert_eq!(first_run.state, RunState::Running, "{first_run:?}");
    let first_run = first_run.run_id;
    println!("orders runs on {} ({first_run})", owner.node_id);

    // etcd crashes and stays away past half a lease: every node trips its kill switch.
    etcd.kill().unwrap();
    let down = Instant::now();
    let mut tripped = BTreeMap::new();
    while tripped.len() < nodes.len() {
        for node in &nodes {
            if !tripped.contains_key(&node.id) && node.log().contains("kill switch") {
                tripped.insert(node.id.clone(), down.elapsed());
            }
        }
        assert!(
            down.elapsed() < TTL + Duration::from_secs(2),
            "not every kill switch tripped ({tripped:?}): {}",
            logs(&nodes)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("kill switches tripped after {tripped:?} (lease TTL {LEASE_TTL_SECS} s)");
    // Down for a whole lease (the in-process test keeps it down as long).
    let down_for = TTL + Duration::from_secs(1);
    std::thread::sleep(down_for.saturating_sub(down.elapsed()));
    // The nodes stopped their work, not themselves.
    for node in &mut nodes {
        let exited = node.child.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "{} exited without etcd: {}",
            node.id,
            node.log()
        );
    }

    etcd.restart().unwrap();
    let restarted = Instant::now();
    println!("etcd down for {:?}, restarted", down.elapsed());

    // Back: a new run of the sync starts (resuming from the cursor).
    let resumed = loop {
        if let Ok(runs) = rt.block_on(store.list_runs(&sync, 5)) {
            if let Some(run) = runs.iter().find(|r| r.run_id != first_run) {
                break (run.clone(), restarted.elapsed());
            }
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "the sync did not run again after etcd came back: {}",
            logs(&nodes)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "etcd restart to the sync running again: {:?} ({} in state {:?})",
        resumed.1, resumed.0.run_id, resumed.0.state
    );

    // The nodes registered again, each under a new lease, and the CLI shows all three live.
    loop {
        let now: BTreeMap<String, i64> = rt
            .block_on(list_nodes(&client))
            .unwrap_or_default()
            .into_iter()
            .map(|n| (n.node_id, n.lease))
            .collect();
        if now.len() == 3 && now.iter().all(|(id, lease)| leases_before[id] != *lease) {
            println!("re-registered after {:?}: {now:?}", restarted.elapsed());
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "not re-registered with new leases: before {leases_before:?}, now {now:?}: {}",
            logs(&nodes)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let listed = nodes[0].json(&["nodes", "list"]);
    let live: Vec<&str> = listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "live")
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(live.len(), 3, "{listed}");

    let (last, history) = loop {
        if let Ok(runs) = rt.block_on(store.list_runs(&sync, 5)) {
            if let Some(run) = runs
                .first()
                .filter(|r| r.run_id != first_run && r.state.is_terminal())
            {
                break (run.clone(), runs);
            }
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(60),
            "the resumed run did not end: {}",
            logs(&nodes)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(last.state, RunState::Succeeded, "{:?}", last.message);
    assert!(
        last.counts.rows_read < ROWS,
        "resumed, not restarted: {}",
        last.counts.rows_read
    );
    let first = history.iter().find(|r| r.run_id == first_run);
    assert!(
        first.is_some_and(|r| r.state.is_terminal() && r.state != RunState::Succeeded),
        "the run stopped by the kill switch is closed: {history:?}"
    );
    if let Some(first) = first {
        println!(
            "stopped run {first_run}: {:?} ({:?}), {} rows read; resumed run read {}",
            first.state, first.message, first.counts.rows_read, last.counts.rows_read
        );
    }
    let (held, imported, replaced) = receiver_counts(&rx_url);
    println!(
        "receiver: {held} events held, {imported} stored new, {replaced} re-sent and deduplicated"
    );
    assert_eq!(held, ROWS, "the receiver ends exact");
    assert_eq!(imported, ROWS, "every row stored once");
    drop(nodes);
}
