//! Operating a cluster of `ferry node --listen --etcd` processes on loopback, with a real etcd,
//! a real PostgreSQL and the receiver:
//!
//! - the elected coordinator is killed with SIGKILL while syncs run: a new one is elected (the
//!   time is printed), the dead node's syncs resume on the survivors, a sync created after the
//!   kill is placed and runs, and the receiver ends exact (re-sent rows carry the same
//!   `$insert_id`: the receiver counts them as replacements, not new events);
//! - a fourth node joins (only its share moves, all of it to it), then a node is drained with
//!   the real `ferry nodes drain` mid-run: its runs finish, it exits with status 0 once empty,
//!   its syncs run elsewhere, and the receiver ends exact;
//! - SIGTERM to a cluster node drains it; past its `--drain-timeout` the run still going is
//!   cancelled, the node exits with status 0, and the next owner resumes the sync at once from
//!   its last commit (receiver exact).
//!
//! Sync names are chosen with Ferry's own placement function so that every node has work: the
//! placement is deterministic, so the test knows where each sync must land.

mod cli_common;
mod cluster_common;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cli_common::write;
use cluster_common::{ClusterProcess, LEASE_TTL_SECS};
use ferry_coordinator::cluster::assigner::{all_assignments, running_on};
use ferry_coordinator::cluster::connection::EtcdSettings;
use ferry_coordinator::cluster::election::current_leader;
use ferry_coordinator::cluster::etcd_store::{EtcdStore, EtcdStoreSettings};
use ferry_coordinator::cluster::membership::Liveness;
use ferry_coordinator::cluster::placement::{place, NodeWeight};
use ferry_coordinator::{RunState, StateStore, SyncId};
use ferry_tests::etcd::{etcd_available, TestEtcd};
use ferry_tests::postgres::{postgres_bin_dir, PgConfig, TestPostgres};
use ferry_tests::require_tool;
use serde_json::Value;

/// Readings of the cluster's keys in etcd (closures: the etcd client's type is not nameable
/// from here).
struct EtcdView {
    assignments: Box<dyn Fn() -> BTreeMap<SyncId, BTreeSet<String>>>,
    running: Box<dyn Fn() -> BTreeMap<SyncId, String>>,
    leader: Box<dyn Fn() -> Option<String>>,
}

/// Everything one test needs; dropped (every process killed) when the test ends.
struct Rig {
    rt: tokio::runtime::Runtime,
    view: EtcdView,
    store: EtcdStore,
    rx_url: String,
    config: String,
    nodes: Vec<ClusterProcess>,
    pg: TestPostgres,
    _rx: cli_common::KillOnDrop,
    etcd: TestEtcd,
    dir: tempfile::TempDir,
}

impl Rig {
    /// etcd, PostgreSQL with `rows` orders, the receiver (each import answered after 100 ms, so
    /// a run of 40,000 rows lasts seconds) and `nodes` cluster nodes, with tenant `acme` and
    /// source `wh` created through the first node's API.
    fn start(rows: u64, nodes: &[&str]) -> Option<Rig> {
        if !require_tool("postgres", postgres_bin_dir().is_some()) || !etcd_available() {
            return None;
        }
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let etcd = TestEtcd::start().unwrap();
        let pg = TestPostgres::start(PgConfig::default()).unwrap();
        pg.sql("CREATE TABLE orders (id bigint PRIMARY KEY, user_id text NOT NULL, created_at timestamptz NOT NULL, inserted_at timestamptz NOT NULL);").unwrap();
        let (rx, rx_url) = cluster_common::slow_receiver(dir.path(), 100);
        let config = write(dir.path(), "node.toml", cluster_common::NODE_CONFIG);
        let client = rt
            .block_on(EtcdSettings::new(etcd.endpoints()).connect())
            .unwrap();
        let (_, liveness) = tokio::sync::watch::channel(Liveness::Lost);
        let store = EtcdStore::new(client.clone(), EtcdStoreSettings::default(), liveness);
        let handle = rt.handle().clone();
        let view = EtcdView {
            assignments: Box::new({
                let (client, handle) = (client.clone(), handle.clone());
                move || handle.block_on(all_assignments(&client)).unwrap()
            }),
            running: Box::new({
                let (client, handle) = (client.clone(), handle.clone());
                move || handle.block_on(running_on(&client)).unwrap()
            }),
            leader: Box::new(move || handle.block_on(current_leader(&client)).unwrap()),
        };
        let mut rig = Rig {
            rt,
            view,
            store,
            rx_url,
            config,
            nodes: Vec::new(),
            pg,
            _rx: rx,
            etcd,
            dir,
        };
        rig.add_rows(rows);
        for id in nodes {
            rig.start_node(id);
        }
        cluster_common::create_tenant_and_source(
            &rig.nodes[0],
            rig.dir.path(),
            &rig.rx_url,
            &rig.pg,
        );
        Some(rig)
    }

    fn start_node(&mut self, id: &str) {
        self.start_node_with(id, &[]);
    }

    fn start_node_with(&mut self, id: &str, flags: &[&str]) {
        let node = ClusterProcess::start_with(
            id,
            &self.etcd.endpoint(),
            &self.config,
            self.dir.path(),
            flags,
        );
        self.nodes.push(node);
    }

    fn node(&self, id: &str) -> &ClusterProcess {
        self.nodes.iter().find(|n| n.id == id).unwrap()
    }

    /// Appends `n` orders after the ones there (later `inserted_at`, so an append sync's
    /// cursor finds them).
    fn add_rows(&self, n: u64) {
        self.pg.sql(&format!("INSERT INTO orders SELECT i, 'user-' || (i % 23), timestamptz '2024-03-01 00:00:00+00' + i * interval '1 minute', timestamptz '2024-06-01 00:00:00+00' + i * interval '1 second' FROM generate_series((SELECT coalesce(max(id), 0) + 1 FROM orders), (SELECT coalesce(max(id), 0) + {n} FROM orders)) AS i;")).unwrap();
    }

    /// Creates an append sync of the orders table through `via`'s API.
    fn create_sync(&self, via: &ClusterProcess, id: &str, schedule: &str) {
        let mode = [
            "syncs",
            "create",
            id,
            "--mode",
            "append",
            "--cursor-column",
            "inserted_at",
            "--schedule",
            schedule,
        ];
        via.json(&[&mode[..], &cluster_common::ORDERS_EVENTS[..]].concat());
    }

    fn assignments(&self) -> BTreeMap<SyncId, BTreeSet<String>> {
        (self.view.assignments)()
    }

    fn running(&self) -> BTreeMap<SyncId, String> {
        (self.view.running)()
    }

    fn leader(&self) -> Option<String> {
        (self.view.leader)()
    }

    fn runs(&self, sync: &SyncId) -> Vec<ferry_coordinator::RunRecord> {
        self.rt.block_on(self.store.list_runs(sync, 20)).unwrap()
    }

    fn receiver(&self) -> Value {
        reqwest::blocking::get(format!(
            "{}/ferry/v1/projects/1/state?events=false",
            self.rx_url
        ))
        .unwrap()
        .json()
        .unwrap()
    }

    /// Waits until `check` holds, or fails naming `what` after `within`, with the nodes' logs.
    fn wait(&self, what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Duration {
        let started = Instant::now();
        while !check() {
            if started.elapsed() > within {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| format!("--- {} ---\n{}", n.id, tail(&n.log(), 30)))
                    .collect();
                panic!(
                    "timed out after {within:?} waiting until {what}\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        started.elapsed()
    }

    /// Waits until every sync's newest run succeeded and no run is in progress.
    fn wait_all_done(&self, syncs: &[SyncId], within: Duration) {
        self.wait("every sync's newest run succeeded", within, || {
            self.running().is_empty()
                && syncs.iter().all(|s| {
                    self.runs(s)
                        .first()
                        .is_some_and(|r| r.state == RunState::Succeeded)
                })
        });
    }
}

/// The last lines of a node's log, without the links' chatter.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("ractor_cluster"))
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn ids(names: &[String]) -> Vec<SyncId> {
    names
        .iter()
        .map(|n| SyncId::new("acme", n).unwrap())
        .collect()
}

fn weights(nodes: &[&str]) -> Vec<NodeWeight> {
    nodes.iter().map(|n| NodeWeight::new(*n, 1)).collect()
}

/// `count` consecutive names `prefix-<o>`, `prefix-<o+1>`, … for the first offset `o` whose
/// placement satisfies `fits` (placement is deterministic, so this is too).
fn names_where(prefix: &str, count: usize, fits: impl Fn(&[SyncId]) -> bool) -> Vec<String> {
    for offset in 0..1000 {
        let names: Vec<String> = (offset..offset + count)
            .map(|i| format!("{prefix}-{i}"))
            .collect();
        if fits(&ids(&names)) {
            return names;
        }
    }
    panic!("no {count} names for {prefix} fit");
}

fn per_node(placed: &BTreeMap<SyncId, String>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for node in placed.values() {
        *out.entry(node.clone()).or_insert(0) += 1;
    }
    out
}

fn single_owners(
    assigned: &BTreeMap<SyncId, BTreeSet<String>>,
) -> Option<BTreeMap<SyncId, String>> {
    assigned
        .iter()
        .map(|(s, nodes)| {
            (nodes.len() == 1).then(|| (s.clone(), nodes.iter().next().unwrap().clone()))
        })
        .collect()
}

const THREE: [&str; 3] = ["node-1", "node-2", "node-3"];

#[test]
fn the_coordinator_killed_mid_run_is_replaced_and_its_syncs_resume_with_the_receiver_exact() {
    const ROWS: u64 = 40_000;
    let Some(mut rig) = Rig::start(ROWS, &THREE) else {
        return;
    };
    // Six syncs, two placed on each node, so whichever node is elected has syncs of its own.
    let names = names_where("orders", 6, |syncs| {
        let counts = per_node(&place(syncs, &weights(&THREE)));
        counts.len() == 3 && counts.values().all(|c| *c == 2)
    });
    let syncs = ids(&names);
    let api = &rig.nodes[0];
    for name in &names {
        rig.create_sync(api, name, "every 1h");
    }
    let coordinator = rig.leader().expect("a coordinator is elected");
    // Its syncs run, each with a cursor committed: kill it then.
    let mine: Vec<SyncId> = place(&syncs, &weights(&THREE))
        .into_iter()
        .filter(|(_, n)| *n == coordinator)
        .map(|(s, _)| s)
        .collect();
    rig.wait(
        "a sync of the coordinator runs with a committed cursor",
        Duration::from_secs(30),
        || {
            let running = rig.running();
            mine.iter().any(|s| {
                running.get(s) == Some(&coordinator)
                    && rig.rt.block_on(rig.store.get_cursor(s)).unwrap().is_some()
            })
        },
    );
    // Each sync running there, its run, and whether a cursor was committed before the kill.
    let interrupted: Vec<(SyncId, String, bool)> = rig
        .running()
        .into_iter()
        .filter(|(_, n)| *n == coordinator)
        .map(|(s, _)| {
            let run = rig.runs(&s)[0].run_id.clone();
            let committed = rig.rt.block_on(rig.store.get_cursor(&s)).unwrap().is_some();
            (s, run, committed)
        })
        .collect();
    assert!(interrupted.iter().any(|(_, _, committed)| *committed));
    let victim = rig.nodes.iter().position(|n| n.id == coordinator).unwrap();
    let mut victim = rig.nodes.remove(victim);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let killed = Instant::now();

    let mut successor = None;
    let elected = rig.wait(
        "a new coordinator is elected",
        Duration::from_secs(LEASE_TTL_SECS * 4),
        || {
            successor = rig.leader().filter(|l| *l != coordinator);
            successor.is_some()
        },
    );
    let successor = successor.unwrap();
    println!(
        "coordinator {coordinator} killed (SIGKILL) with {} runs in progress: {successor} elected after {elected:?} (lease TTL {LEASE_TTL_SECS} s)",
        interrupted.len()
    );
    assert!(
        elected <= Duration::from_secs(LEASE_TTL_SECS + 2),
        "a new coordinator within about one lease TTL: {elected:?}"
    );

    // Its syncs are placed on the survivors and resume there.
    rig.wait(
        "the dead coordinator's syncs run on the survivors",
        Duration::from_secs(20),
        || {
            let running = rig.running();
            interrupted.iter().all(|(s, first, _)| {
                running.get(s).is_some_and(|n| *n != coordinator)
                    || rig
                        .runs(s)
                        .first()
                        .is_some_and(|r| r.run_id != *first && r.state.is_terminal())
            })
        },
    );
    println!(
        "its {} interrupted syncs resumed on the survivors {:?} after the kill",
        interrupted.len(),
        killed.elapsed()
    );

    // A sync created after the kill is placed on a survivor and runs.
    let late = "late-orders";
    rig.create_sync(&rig.nodes[0], late, "every 1h");
    let mut all = syncs.clone();
    all.push(SyncId::new("acme", late).unwrap());
    rig.wait_all_done(&all, Duration::from_secs(120));

    let assigned = single_owners(&rig.assignments()).expect("each sync on one node");
    assert_eq!(assigned.len(), all.len());
    assert!(
        assigned.values().all(|n| *n != coordinator),
        "nothing stays on the dead node: {assigned:?}"
    );
    for (sync, first, committed) in &interrupted {
        let runs = rig.runs(sync);
        let killed_run = runs.iter().find(|r| r.run_id == *first).unwrap();
        assert_eq!(killed_run.state, RunState::Failed, "{runs:?}");
        assert!(
            !committed || runs[0].counts.rows_read < ROWS,
            "{sync} resumed from its cursor, not from the start: {:?}",
            runs[0].counts
        );
    }
    let state = rig.receiver();
    let replaced = state["counters"]["events_replaced"].as_u64().unwrap_or(0);
    println!(
        "receiver: {} events for {} syncs × {ROWS} rows; {replaced} re-sent rows replaced their own copy (same $insert_id)",
        state["event_count"],
        all.len()
    );
    assert_eq!(
        state["event_count"].as_u64(),
        Some(ROWS * all.len() as u64),
        "the receiver ends exact: {}",
        state["counters"]
    );
}

#[test]
fn a_fourth_node_takes_only_its_share_and_a_drained_node_exits_once_its_runs_moved() {
    const FIRST: u64 = 4_000;
    const SECOND: u64 = 30_000;
    let Some(mut rig) = Rig::start(FIRST, &THREE) else {
        return;
    };
    let four = ["node-1", "node-2", "node-3", "node-4"];
    // Eight syncs with work on every node, of which the newcomer takes some but not all.
    let names = names_where("events", 8, |syncs| {
        let before = place(syncs, &weights(&THREE));
        let after = place(syncs, &weights(&four));
        let moved = before.iter().filter(|(s, n)| after[*s] != **n).count();
        per_node(&before).len() == 3 && per_node(&after).len() == 4 && (1..=3).contains(&moved)
    });
    let syncs = ids(&names);
    let before = place(&syncs, &weights(&THREE));
    let after = place(&syncs, &weights(&four));
    for name in &names {
        // Every 5 s: a run with nothing new is a quick no-op; new rows are picked up at once.
        rig.create_sync(&rig.nodes[0], name, "every 5s");
    }
    rig.wait(
        "the eight syncs are placed on three nodes",
        Duration::from_secs(20),
        || single_owners(&rig.assignments()).as_ref() == Some(&before),
    );
    rig.wait("every sync ran once", Duration::from_secs(60), || {
        syncs
            .iter()
            .all(|s| rig.runs(s).iter().any(|r| r.state == RunState::Succeeded))
    });
    let list_before = rig.nodes[0].json(&["nodes", "list"]);
    assert_eq!(
        list_before["nodes"].as_array().unwrap().len(),
        3,
        "{list_before}"
    );
    assert!(
        list_before["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "live"),
        "{list_before}"
    );
    println!("before: {}", rig.nodes[0].cli(&["nodes", "list"]).stdout);

    // A fourth node joins: exactly the syncs the placement gives it move, all of them to it.
    rig.start_node("node-4");
    let moved: Vec<&SyncId> = before
        .iter()
        .filter(|(s, n)| after[*s] != **n)
        .map(|(s, _)| s)
        .collect();
    let took = rig.wait(
        "the newcomer has its share",
        Duration::from_secs(30),
        || single_owners(&rig.assignments()).as_ref() == Some(&after),
    );
    assert!(moved.iter().all(|s| after[*s] == "node-4"));
    println!(
        "a 4th node joined: {} of {} syncs moved to it ({:.0}%), within {took:?}",
        moved.len(),
        syncs.len(),
        moved.len() as f64 * 100.0 / syncs.len() as f64
    );

    // New rows: every sync runs again (seconds each). Drain a node while its runs go.
    rig.add_rows(SECOND);
    let counts = per_node(&after);
    let target = rig.wait_for_busiest(&counts);
    let mine_at_drain: BTreeSet<SyncId> = after
        .iter()
        .filter(|(_, n)| **n == target)
        .map(|(s, _)| s.clone())
        .collect();
    let running_at_drain: Vec<(SyncId, String)> = rig
        .running()
        .into_iter()
        .filter(|(_, n)| *n == target)
        .map(|(s, _)| {
            let run = rig.runs(&s)[0].run_id.clone();
            (s, run)
        })
        .collect();
    let asked = rig.nodes[0].json(&["nodes", "drain", &target]);
    let drain_started = Instant::now();
    assert_eq!(asked["state"], "draining", "{asked}");
    let listed = rig.nodes[0].json(&["nodes", "list"]);
    let shown: BTreeMap<String, String> = listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(shown.len(), 4);
    assert_eq!(shown[&target], "draining", "{listed}");
    assert!(shown
        .iter()
        .filter(|(n, _)| **n != target)
        .all(|(_, s)| s == "live"));
    println!("draining: {}", rig.nodes[0].cli(&["nodes", "list"]).stdout);

    // `--wait` follows it until it has left; asking again is harmless.
    let other = rig.nodes.iter().find(|n| n.id != target).unwrap();
    let waited = other.cli(&["nodes", "drain", &target, "--wait"]);
    assert_eq!(
        waited.code,
        0,
        "{}\n{}",
        waited.stderr,
        rig.node(&target).log()
    );
    assert!(
        waited.stdout.contains("drained and left the cluster"),
        "{}",
        waited.stdout
    );
    let drained = rig.nodes.iter().position(|n| n.id == target).unwrap();
    let mut drained = rig.nodes.remove(drained);
    let status = loop {
        if let Some(status) = drained.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            drain_started.elapsed() < Duration::from_secs(60),
            "the drained node did not exit: {}",
            drained.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = drain_started.elapsed();
    println!(
        "{target} drained with {} runs in progress: exited ({status}) after {took:?}",
        running_at_drain.len()
    );
    assert!(
        status.success(),
        "exit 0 once empty: {status}\n{}",
        drained.log()
    );
    // Its runs ended on their own (the drain timeout is 10 min), none was cancelled.
    for (sync, run_id) in &running_at_drain {
        let run = rig
            .runs(sync)
            .into_iter()
            .find(|r| r.run_id == *run_id)
            .unwrap();
        assert_eq!(run.state, RunState::Succeeded, "{sync}: {run:?}");
    }

    // Its syncs run elsewhere; the receiver ends exact.
    let survivors: Vec<&str> = four.iter().copied().filter(|n| *n != target).collect();
    let placed_now = place(&syncs, &weights(&survivors));
    rig.wait(
        "the drained node's syncs are placed on the others",
        Duration::from_secs(20),
        || single_owners(&rig.assignments()).as_ref() == Some(&placed_now),
    );
    for s in &mine_at_drain {
        assert_ne!(placed_now[s], target);
    }
    let expected = (FIRST + SECOND) * syncs.len() as u64;
    rig.wait(
        "the receiver holds every row of every sync",
        Duration::from_secs(90),
        || rig.receiver()["event_count"].as_u64() == Some(expected),
    );
    let state = rig.receiver();
    assert_eq!(
        state["event_count"].as_u64(),
        Some(expected),
        "{}",
        state["counters"]
    );
    let listed = rig.nodes[0].json(&["nodes", "list"]);
    let ids_after: BTreeSet<&str> = listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids_after,
        survivors.iter().copied().collect::<BTreeSet<_>>()
    );
    println!("after: {}", rig.nodes[0].cli(&["nodes", "list"]).stdout);
    let assignments = rig.nodes[0].json(&["assignments", "list"]);
    assert_eq!(
        assignments.as_array().unwrap().len(),
        syncs.len(),
        "{assignments}"
    );
}

impl Rig {
    /// Waits until a node runs at least one sync that has read rows, preferring the node with
    /// the most syncs; returns its id.
    fn wait_for_busiest(&self, counts: &BTreeMap<String, usize>) -> String {
        let mut order: Vec<(&String, &usize)> = counts.iter().collect();
        order.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut found = None;
        self.wait(
            "a node runs a sync mid-run",
            Duration::from_secs(30),
            || {
                let running = self.running();
                found = order.iter().map(|(n, _)| (*n).clone()).find(|node| {
                    running.iter().any(|(s, n)| {
                        n == node && self.runs(s).first().is_some_and(|r| !r.state.is_terminal())
                    })
                });
                found.is_some()
            },
        );
        found.unwrap()
    }
}

#[test]
fn sigterm_drains_a_node_and_its_deadline_cancels_the_run_which_resumes_elsewhere_at_once() {
    const ROWS: u64 = 60_000;
    let Some(mut rig) = Rig::start(ROWS, &["node-2"]) else {
        return;
    };
    rig.start_node_with("node-1", &["--drain-timeout", "2s"]);
    let two = ["node-1", "node-2"];
    let names = names_where("big", 1, |s| place(s, &weights(&two))[&s[0]] == "node-1");
    let sync = SyncId::new("acme", &names[0]).unwrap();
    rig.create_sync(&rig.nodes[0], &names[0], "every 1h");
    rig.wait(
        "the sync runs on node-1 with a committed cursor",
        Duration::from_secs(30),
        || {
            rig.running().get(&sync).is_some_and(|n| n == "node-1")
                && rig
                    .rt
                    .block_on(rig.store.get_cursor(&sync))
                    .unwrap()
                    .is_some()
        },
    );
    let first_run = rig.runs(&sync)[0].run_id.clone();
    let node_1 = rig.nodes.iter().position(|n| n.id == "node-1").unwrap();
    let mut node_1 = rig.nodes.remove(node_1);
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &node_1.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let termed = Instant::now();
    let node_2 = &rig.nodes[0];
    rig.wait("node-1 shows as draining", Duration::from_secs(5), || {
        let listed = node_2.json(&["nodes", "list"]);
        listed["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "node-1" && n["state"] == "draining")
    });
    let status = loop {
        if let Some(status) = node_1.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            termed.elapsed() < Duration::from_secs(30),
            "node-1 did not exit: {}",
            node_1.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let exited = termed.elapsed();
    assert!(status.success(), "exit 0: {status}\n{}", node_1.log());
    assert!(
        exited >= Duration::from_secs(2),
        "it waited for its drain timeout: {exited:?}"
    );
    // No lease TTL to wait for: the sync resumes on node-2 at once.
    let resumed = rig.wait(
        "the sync resumes on node-2",
        Duration::from_secs(10),
        || {
            rig.running().get(&sync).is_some_and(|n| n == "node-2")
                || rig
                    .runs(&sync)
                    .first()
                    .is_some_and(|r| r.run_id != first_run && r.state.is_terminal())
        },
    );
    println!(
        "SIGTERM with a run in progress and --drain-timeout 2s: node-1 exited ({status}) after {exited:?}; node-2 resumed the sync {resumed:?} later"
    );
    rig.wait("the resumed run ends", Duration::from_secs(60), || {
        rig.runs(&sync)
            .first()
            .is_some_and(|r| r.run_id != first_run && r.state.is_terminal())
    });
    let runs = rig.runs(&sync);
    assert_eq!(runs[0].state, RunState::Succeeded, "{runs:?}");
    assert!(
        runs[0].counts.rows_read < ROWS,
        "resumed from the cursor: {:?}",
        runs[0].counts
    );
    let cancelled = runs.iter().find(|r| r.run_id == first_run).unwrap();
    assert_eq!(cancelled.state, RunState::Cancelled, "{cancelled:?}");
    let state = rig.receiver();
    assert_eq!(
        state["event_count"].as_u64(),
        Some(ROWS),
        "{}",
        state["counters"]
    );
}
