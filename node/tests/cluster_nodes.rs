//! Three `ferry node --listen --etcd` processes on loopback, a real etcd, a real PostgreSQL and
//! the receiver: syncs created through one node's API are spread over the nodes by the elected
//! coordinator; the owner of a running sync is killed with SIGKILL mid-run, another node
//! resumes it from the last committed cursor within about one lease TTL plus a tick (the time
//! is printed), and the receiver ends exact. Every process is killed when the test ends.

mod cli_common;
mod cluster_common;
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cli_common::{write, OPERATOR_TOKEN, SECRET_KEY};
use cluster_common::{ClusterProcess, Stand, LEASE_TTL_SECS};
use ferry_coordinator::cluster::assigner::all_assignments;
use ferry_coordinator::cluster::connection::EtcdSettings;
use ferry_coordinator::cluster::etcd_store::{EtcdStore, EtcdStoreSettings};
use ferry_coordinator::cluster::membership::{list_nodes, Liveness};
use ferry_coordinator::{RunState, StateStore, SyncId};
use serde_json::Value;

const ROWS: u64 = 40_000;

fn event_count(url: &str) -> u64 {
    let state: Value =
        reqwest::blocking::get(format!("{url}/ferry/v1/projects/1/state?events=false"))
            .unwrap()
            .json()
            .unwrap();
    state["event_count"].as_u64().unwrap_or(0)
}

#[test]
fn syncs_spread_over_three_nodes_and_a_killed_owner_is_replaced_with_the_receiver_exact() {
    owner_lost_mid_run(Loss::Kill);
}

#[test]
fn an_owner_paused_past_its_lease_is_replaced_and_stops_itself_when_continued() {
    owner_lost_mid_run(Loss::Pause);
}

/// How the owner of the running sync is lost.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Loss {
    /// SIGKILL.
    Kill,
    /// SIGSTOP until the sync finished elsewhere, then SIGCONT: a zombie waking up.
    Pause,
}

fn signal(pid: u32, name: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} {pid}");
}

fn owner_lost_mid_run(loss: Loss) {
    let Some(Stand { rt, dir, etcd, pg }) = cluster_common::stand() else {
        return;
    };
    cluster_common::orders_table(&pg, ROWS);
    // Each import request is answered after 100 ms: the run lasts a few seconds.
    let (_rx, rx_url) = cluster_common::slow_receiver(dir.path(), 100);
    let config = write(dir.path(), "node.toml", cluster_common::NODE_CONFIG);
    let mut nodes: Vec<ClusterProcess> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|id| ClusterProcess::start(id, &etcd.endpoint(), &config, dir.path()))
        .collect();

    let client = rt
        .block_on(EtcdSettings::new(etcd.endpoints()).connect())
        .unwrap();
    let registered: BTreeSet<String> = rt
        .block_on(list_nodes(&client))
        .unwrap()
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    assert_eq!(registered.len(), 3, "{registered:?}");

    // The catalog, through one node's API.
    let api = &nodes[0];
    cluster_common::create_tenant_and_source(api, dir.path(), &rx_url, &pg);
    let mapping = cluster_common::ORDERS_EVENTS;
    // Twelve on-demand syncs to spread, and one that runs at once and every hour after.
    for i in 0..12 {
        let id = format!("idle-{i}");
        api.json(
            &[
                &["syncs", "create", id.as_str(), "--mode", "one_time"][..],
                &mapping[..],
            ]
            .concat(),
        );
    }
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
            &mapping[..],
        ]
        .concat(),
    );

    // Spread: every node gets a share of the 13 syncs.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let placed = rt.block_on(all_assignments(&client)).unwrap();
        let owners: BTreeSet<String> = placed.values().flatten().cloned().collect();
        if placed.len() == 13 && owners.len() == 3 {
            println!("13 syncs placed on {owners:?}");
            break;
        }
        assert!(Instant::now() < deadline, "not spread: {placed:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The orders sync runs on its node; kill that node once a cursor is committed.
    let (_, liveness) = tokio::sync::watch::channel(Liveness::Lost);
    let store = EtcdStore::new(client.clone(), EtcdStoreSettings::default(), liveness);
    let sync = SyncId::new("acme", "orders").unwrap();
    let owner = loop {
        let cursor = rt.block_on(store.get_cursor(&sync)).unwrap();
        let owner = rt.block_on(store.current_owner(&sync)).unwrap();
        if let (Some(_), Some(owner)) = (cursor, owner) {
            break owner;
        }
        assert!(Instant::now() < deadline, "the orders sync never committed");
        std::thread::sleep(Duration::from_millis(20));
    };
    let first_run = rt.block_on(store.list_runs(&sync, 1)).unwrap()[0]
        .run_id
        .clone();
    let victim = nodes.iter().position(|n| n.id == owner.node_id).unwrap();
    let mut victim = nodes.remove(victim);
    match loss {
        Loss::Kill => {
            victim.child.kill().unwrap();
            victim.child.wait().unwrap();
        }
        Loss::Pause => signal(victim.child.id(), "STOP"),
    }
    let killed = Instant::now();

    // Another node claims it and resumes.
    let successor = loop {
        if let Some(now) = rt.block_on(store.current_owner(&sync)).unwrap() {
            if now.node_id != victim.id {
                break now;
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(LEASE_TTL_SECS * 4),
            "no takeover after {:?}",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let takeover = killed.elapsed();
    println!(
        "{loss:?} of {} mid-run: {} resumed the sync after {takeover:?} (lease TTL {LEASE_TTL_SECS} s)",
        victim.id, successor.node_id
    );
    assert!(
        takeover <= Duration::from_secs(LEASE_TTL_SECS + 3),
        "{takeover:?}"
    );

    let finished = loop {
        let runs = rt.block_on(store.list_runs(&sync, 5)).unwrap();
        // The successor first closes the interrupted run, then its own run starts.
        if let Some(run) = runs
            .first()
            .filter(|r| r.run_id != first_run && r.state.is_terminal())
        {
            break (run.clone(), runs);
        }
        assert!(
            killed.elapsed() < Duration::from_secs(120),
            "the resumed run did not end"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let (last, history) = finished;
    assert_eq!(last.state, RunState::Succeeded, "{:?}", last.message);
    assert!(
        last.counts.rows_read < ROWS,
        "resumed, not restarted: {}",
        last.counts.rows_read
    );
    assert_eq!(
        history
            .iter()
            .find(|r| r.run_id == first_run)
            .map(|r| r.state),
        Some(RunState::Failed),
        "the killed run is closed as interrupted: {history:?}"
    );
    assert_eq!(event_count(&rx_url), ROWS, "the receiver ends exact");

    // The dead node's assignments moved to the living.
    let placed = rt.block_on(all_assignments(&client)).unwrap();
    assert!(
        placed.values().flatten().all(|n| *n != victim.id),
        "{placed:?}"
    );

    if loss == Loss::Pause {
        // The zombie wakes up: its lease is long gone, so it trips its kill switch, stops its
        // run, and whatever it still tries to write is refused; then it rejoins.
        signal(victim.child.id(), "CONT");
        let woke = Instant::now();
        while !victim.log().contains("kill switch") {
            assert!(
                woke.elapsed() < Duration::from_secs(10),
                "the zombie did not stop itself: {}",
                victim.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        loop {
            let live = rt.block_on(list_nodes(&client)).unwrap();
            if live.iter().any(|n| n.node_id == victim.id) {
                break;
            }
            assert!(
                woke.elapsed() < Duration::from_secs(15),
                "the zombie never rejoined"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let cursor = rt.block_on(store.get_cursor(&sync)).unwrap().unwrap();
        assert_eq!(cursor.node_id, successor.node_id, "no zombie commit landed");
        let runs = rt.block_on(store.list_runs(&sync, 5)).unwrap();
        assert_eq!(runs[0].state, RunState::Succeeded, "{runs:?}");
        let first = runs.iter().find(|r| r.run_id == first_run);
        assert_eq!(first.map(|r| r.state), Some(RunState::Failed), "{runs:?}");
        assert_eq!(
            event_count(&rx_url),
            ROWS,
            "still exact after the zombie woke"
        );
    }
    drop(nodes);
    drop(etcd);
}

#[test]
fn cluster_flags_without_their_companions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "node.toml", "[node]\nid = \"n1\"\n");
    let without_listen = cli_common::run(cli_common::ferry().args([
        "node",
        "--config",
        &config,
        "--etcd",
        "http://127.0.0.1:1",
    ]));
    assert_ne!(without_listen.code, 0);
    assert!(
        without_listen.stderr.contains("give --listen"),
        "{}",
        without_listen.stderr
    );
    let without_etcd = cli_common::run(
        cli_common::ferry()
            .args(["node", "--listen", "127.0.0.1:0", "--capacity", "3"])
            .env("FERRY_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("FERRY_SECRET_KEY", SECRET_KEY),
    );
    assert_ne!(without_etcd.code, 0);
    assert!(
        without_etcd.stderr.contains("give --etcd too"),
        "{}",
        without_etcd.stderr
    );
    // A cluster node listening on every address must say which one its peers dial.
    let unspecified = cli_common::run(
        cli_common::ferry()
            .args(["node", "--listen", "0.0.0.0:0", "--etcd", "http://127.0.0.1:1"])
            .env("FERRY_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("FERRY_SECRET_KEY", SECRET_KEY)
            .env("FERRY_CLUSTER_SECRET", cluster_common::CLUSTER_SECRET)
            .env_remove("FERRY_ADVERTISE_ADDR"),
    );
    assert_ne!(unspecified.code, 0);
    assert!(
        unspecified.stderr.contains("0.0.0.0:0")
            && unspecified.stderr.contains("--advertise-addr HOST:PORT"),
        "{}",
        unspecified.stderr
    );
    let advertised_alone = cli_common::run(
        cli_common::ferry()
            .args(["node", "--listen", "0.0.0.0:0"])
            .args(["--advertise-addr", "10.0.3.7:7700"])
            .env("FERRY_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("FERRY_SECRET_KEY", SECRET_KEY),
    );
    assert_ne!(advertised_alone.code, 0);
    assert!(
        advertised_alone.stderr.contains("--advertise-addr")
            && advertised_alone.stderr.contains("give --etcd too"),
        "{}",
        advertised_alone.stderr
    );
}
