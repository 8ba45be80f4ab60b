//! How two nodes split a tenant's send budget through a real etcd: each publishes its runs on
//! its lease and takes its share; a node whose run ends withdraws at once; a node that dies
//! (stops publishing and renewing) keeps its share until its lease expires, and then the
//! other node gets the whole budget back.
//!
//! The nodes here are the budget-sharing tasks alone, each with its own limiters and a lease
//! granted by etcd; the multi-process test (node/tests/cluster_budget.rs) measures the rate.

use std::time::{Duration, Instant};

use ferry_actors::send_gate::SendGates;
use ferry_coordinator::cluster::budget::{published_demand, share};
use ferry_coordinator::cluster::connection::EtcdSettings;
use ferry_coordinator::cluster::membership::Liveness;
use ferry_tests::etcd::{etcd_available, TestEtcd};
use tokio::sync::watch;

const BUDGET: u32 = 1000;
const REFRESH: Duration = Duration::from_millis(50);

/// Waits until `gates` sends the tenant at `rate`; how long that took.
async fn until_rate(gates: &SendGates, rate: f64, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = gates.rate("acme");
        if now.is_some_and(|r| (r - rate).abs() < 1e-6) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "rate {now:?}, expected {rate} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_split_a_budget_and_a_dead_nodes_share_returns_when_its_lease_expires() {
    if !etcd_available() {
        return;
    }
    let etcd = TestEtcd::start().unwrap();
    let client = EtcdSettings::new(etcd.endpoints()).connect().await.unwrap();
    let lease_a = client.clone().lease_grant(60, None).await.unwrap().id();
    // Node B's lease is never renewed: it lives 3 s past its last grant.
    let lease_b_ttl = 3;
    let (live_a, rx_a) = watch::channel(Liveness::Live { lease: lease_a });
    let (gates_a, gates_b) = (SendGates::default(), SendGates::default());
    let task_a = share(client.clone(), "a".into(), rx_a, gates_a.clone(), REFRESH);

    // Alone, node A has the whole budget.
    let run_a = gates_a.join("acme", Some(BUDGET));
    until_rate(&gates_a, 1000.0, Duration::from_secs(2)).await;

    // Node B joins with a run of its own: half each.
    let lease_b = client
        .clone()
        .lease_grant(lease_b_ttl, None)
        .await
        .unwrap()
        .id();
    let (live_b, rx_b) = watch::channel(Liveness::Live { lease: lease_b });
    let task_b = share(client.clone(), "b".into(), rx_b, gates_b.clone(), REFRESH);
    let run_b = gates_b.join("acme", Some(BUDGET));
    until_rate(&gates_a, 500.0, Duration::from_secs(2)).await;
    until_rate(&gates_b, 500.0, Duration::from_secs(2)).await;
    let demand = published_demand(&client).await.unwrap();
    assert_eq!(
        demand.into_iter().collect::<Vec<_>>(),
        vec![
            (("acme".to_string(), "a".to_string()), 1),
            (("acme".to_string(), "b".to_string()), 1)
        ]
    );

    // A second run on A: A sends two thirds, B one third.
    let run_a2 = gates_a.join("acme", Some(BUDGET));
    until_rate(&gates_a, 2000.0 / 3.0, Duration::from_secs(2)).await;
    until_rate(&gates_b, 1000.0 / 3.0, Duration::from_secs(2)).await;
    drop(run_a2);
    until_rate(&gates_b, 500.0, Duration::from_secs(2)).await;

    // B's run ends: its demand is withdrawn at once, and A has it all again.
    drop(run_b);
    let back = until_rate(&gates_a, 1000.0, Duration::from_secs(2)).await;
    assert!(back < Duration::from_secs(1), "{back:?}");

    // B runs again, then dies: it stops publishing and its lease is not renewed. A keeps its
    // half until B's lease expires, then gets the whole budget back.
    let _run_b = gates_b.join("acme", Some(BUDGET));
    until_rate(&gates_a, 500.0, Duration::from_secs(2)).await;
    // Its last renewal: the lease ends 3 s from here.
    let (mut keeper, mut renewals) = client.clone().lease_keep_alive(lease_b).await.unwrap();
    keeper.keep_alive().await.unwrap();
    renewals.message().await.unwrap();
    task_b.abort();
    drop(live_b);
    let died = Instant::now();
    let returned = until_rate(
        &gates_a,
        1000.0,
        Duration::from_secs(lease_b_ttl as u64 + 3),
    )
    .await;
    println!("a dead node's share returned after {returned:?} (lease TTL {lease_b_ttl} s)");
    assert!(
        returned >= Duration::from_secs(2),
        "the share came back before the dead node's lease could expire: {returned:?}"
    );
    assert!(died.elapsed() < Duration::from_secs(lease_b_ttl as u64 + 3));

    task_a.abort();
    drop((run_a, live_a));
    drop(etcd);
}
