//! A tenant's send budget across a cluster: three `ferry node --etcd` processes on loopback, a
//! real etcd, a real PostgreSQL and the receiver. Three syncs of one tenant run at once, each
//! on a different node (each triggered through that node's API, which runs it there). First
//! without a budget, then with one: the receiver's per-second counts give the combined rate,
//! which must stay within the budget (plus 15%) with it and be far above it without — so the
//! test fails if the nodes enforced the budget each for itself instead of sharing it.

mod cli_common;
mod cluster_common;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cli_common::{write, OPERATOR_TOKEN};
use cluster_common::{create_tenant_and_source, receiver, ClusterProcess, Stand};
use ferry_coordinator::cluster::assigner::all_assignments;
use ferry_coordinator::cluster::budget::published_demand;
use ferry_coordinator::cluster::connection::EtcdSettings;
use serde_json::Value;

/// Rows per sync: with the budget, 60,000 records at 3,000/s take about 20 s.
const ROWS: u64 = 20_000;
const BUDGET_PER_SEC: u64 = 3_000;

/// Records the receiver accepted for project 1, per Unix second.
fn accepted_per_second(url: &str) -> BTreeMap<i64, u64> {
    let stats: Value = reqwest::blocking::get(format!("{url}/ferry/v1/stats"))
        .unwrap()
        .json()
        .unwrap();
    stats["projects"]["1"]["accepted_per_second"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(s, n)| (s.parse().unwrap(), n.as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

/// The per-second counts added since `before`.
fn since(before: &BTreeMap<i64, u64>, after: &BTreeMap<i64, u64>) -> BTreeMap<i64, u64> {
    after
        .iter()
        .map(|(s, n)| (*s, n - before.get(s).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Records over the seconds from the first with any to the last with any (both counted whole).
fn combined_rate(counts: &BTreeMap<i64, u64>) -> f64 {
    let total: u64 = counts.values().sum();
    let (first, last) = (
        *counts.keys().next().unwrap(),
        *counts.keys().next_back().unwrap(),
    );
    total as f64 / (last - first + 1) as f64
}

/// Triggers each of `syncs` (one per node, as placed) through its node's API, waits for all
/// three runs and returns the per-second counts they added; `during` is called while they run.
fn run_three(
    nodes: &[ClusterProcess],
    syncs: &[String],
    rx_url: &str,
    mut during: impl FnMut(),
) -> BTreeMap<i64, u64> {
    let before = accepted_per_second(rx_url);
    let mut runs: Vec<_> = nodes
        .iter()
        .zip(syncs)
        .map(|(node, sync)| {
            cli_common::ferry_for(&node.endpoint, Some(OPERATOR_TOKEN))
                .args(["syncs", "trigger", sync, "--tenant", "acme", "--follow"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let started = Instant::now();
    while runs.iter_mut().any(|r| r.try_wait().unwrap().is_none()) {
        during();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the runs did not end"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (i, run) in runs.into_iter().enumerate() {
        let out = run.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "run of {} on {}: {}\n{}",
            syncs[i],
            nodes[i].id,
            String::from_utf8_lossy(&out.stderr),
            nodes[i].log()
        );
    }
    since(&before, &accepted_per_second(rx_url))
}

#[test]
fn a_tenants_budget_holds_for_its_runs_on_three_nodes_together() {
    let Some(Stand { rt, dir, etcd, pg }) = cluster_common::stand() else {
        return;
    };
    pg.sql("CREATE TABLE clicks (id bigint PRIMARY KEY, user_id text NOT NULL, at timestamptz NOT NULL);").unwrap();
    pg.sql(&format!("INSERT INTO clicks SELECT i, 'user-' || (i % 97), timestamptz '2024-03-01 00:00:00+00' + i * interval '1 second' FROM generate_series(1, {ROWS}) AS i;")).unwrap();
    let (_rx, rx_url) = receiver(dir.path());
    let config = write(dir.path(), "node.toml", "[node]\npage_size = 2000\n");
    let nodes: Vec<ClusterProcess> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|id| ClusterProcess::start(id, &etcd.endpoint(), &config, dir.path()))
        .collect();

    let api = &nodes[0];
    let tenant = create_tenant_and_source(api, dir.path(), &rx_url, &pg);
    assert_eq!(tenant["send_budget"], Value::Null, "{tenant}");
    // Nine trigger-only syncs of the same table; the coordinator places them, and one per node
    // is run.
    for i in 0..9 {
        let (id, event) = (format!("s{i}"), format!("Click {i}"));
        api.json(&[
            "syncs",
            "create",
            &id,
            "--mode",
            "one_time",
            "--source",
            "wh",
            "--tenant",
            "acme",
            "--table",
            "public.clicks",
            "--type",
            "events",
            "--event-name",
            &event,
            "--time-column",
            "at",
            "--distinct-id-column",
            "user_id",
            "--key-columns",
            "id",
        ]);
    }

    let client = rt
        .block_on(EtcdSettings::new(etcd.endpoints()).connect())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let syncs: Vec<String> = loop {
        let placed = rt.block_on(all_assignments(&client)).unwrap();
        let chosen: Vec<Option<String>> = nodes
            .iter()
            .map(|n| {
                placed
                    .iter()
                    .find(|(_, on)| on.len() == 1 && on.contains(&n.id))
                    .map(|(sync, _)| sync.sync().to_string())
            })
            .collect();
        if placed.len() == 9 && chosen.iter().all(Option::is_some) {
            break chosen.into_iter().flatten().collect();
        }
        assert!(
            Instant::now() < deadline,
            "not spread over 3 nodes: {placed:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    // No budget: as fast as the three nodes go.
    let free = run_three(&nodes, &syncs, &rx_url, || {});
    let free_total: u64 = free.values().sum();
    assert_eq!(free_total, 3 * ROWS, "{free:?}");
    let free_rate = combined_rate(&free);

    // A budget, and the same three runs again.
    let updated = api.json(&[
        "tenants",
        "update",
        "acme",
        "--send-budget",
        &BUDGET_PER_SEC.to_string(),
    ]);
    assert_eq!(updated["send_budget"], BUDGET_PER_SEC, "{updated}");
    let mut publishing = BTreeSet::new();
    let capped = run_three(&nodes, &syncs, &rx_url, || {
        let demand = rt.block_on(published_demand(&client)).unwrap();
        for ((tenant, node), runs) in demand {
            assert_eq!((tenant.as_str(), runs), ("acme", 1), "{node}");
            publishing.insert(node);
        }
    });
    let capped_total: u64 = capped.values().sum();
    assert_eq!(capped_total, 3 * ROWS, "{capped:?}");
    let capped_rate = combined_rate(&capped);
    println!(
        "combined rate of 3 runs on 3 nodes: {free_rate:.0} records/s without a budget, \
         {capped_rate:.0} records/s with a budget of {BUDGET_PER_SEC}/s \
         ({} s; per second: {:?})",
        capped.len(),
        capped.values().collect::<Vec<_>>()
    );
    assert_eq!(
        publishing.len(),
        3,
        "every node published its demand: {publishing:?}"
    );
    assert!(
        capped_rate <= BUDGET_PER_SEC as f64 * 1.15,
        "over the budget: {capped_rate:.0}/s"
    );
    assert!(
        capped_rate >= BUDGET_PER_SEC as f64 * 0.6,
        "the budget is shared, not wasted: {capped_rate:.0}/s"
    );
    assert!(
        free_rate >= BUDGET_PER_SEC as f64 * 2.0,
        "without a budget the same runs go clearly faster: {free_rate:.0}/s"
    );
    // Each node withdraws its demand once its run ended.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = rt.block_on(published_demand(&client)).unwrap();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "demand left after the runs: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(nodes);
    drop(etcd);
}
