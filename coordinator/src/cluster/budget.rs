//! A tenant's send budget across the cluster: each node publishes how many of a budgeted
//! tenant's runs it is running, and sets its own limiter to its share of the budget —
//! `budget × mine / (mine + the other nodes')`, with a small floor (see
//! [`ferry_actors::send_gate::share_rate`]).
//!
//! ```text
//! /ferry/v1/budget/<tenant>/<node>    this node's runs of the tenant (attached to its lease)
//! ```
//!
//! The key rides on the node's lease, so a dead node's share returns to the others once its
//! lease expires (until then they keep sending at their smaller shares: under the budget,
//! never over it). The keys are re-read every `refresh` while this node has budgeted runs,
//! and at once when its own demand changes; a node that just started a run may send at its
//! old share for up to one refresh before it sees the others, which is the tolerance of the
//! split. A node whose lease is lost publishes nothing (its kill switch stops its runs).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, GetOptions, PutOptions};
use ferry_actors::send_gate::{DemandListener, SendGates};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::connection::store_error;
use super::membership::Liveness;
use crate::store::StoreError;

pub const BUDGET: &str = "/ferry/v1/budget/";

pub fn budget_key(tenant: &str, node_id: &str) -> String {
    format!("{BUDGET}{tenant}/{node_id}")
}

/// `(tenant, node)` of a budget key.
pub fn parse_budget_key(key: &str) -> Option<(&str, &str)> {
    let (tenant, node) = key.strip_prefix(BUDGET)?.split_once('/')?;
    (!tenant.is_empty() && !node.is_empty() && !node.contains('/')).then_some((tenant, node))
}

/// The other nodes' runs per tenant, from the budget keys (this node's own are left out:
/// its live count is the local one). A value that is not a count is skipped.
pub fn others_demand<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    node_id: &str,
) -> HashMap<String, u32> {
    let mut others: HashMap<String, u32> = HashMap::new();
    for (key, value) in entries {
        let Some((tenant, node)) = parse_budget_key(key) else {
            continue;
        };
        if node == node_id {
            continue;
        }
        match value.trim().parse::<u32>() {
            Ok(runs) => *others.entry(tenant.to_owned()).or_default() += runs,
            Err(_) => tracing::warn!(key, value, "budget key without a run count; ignored"),
        }
    }
    others
}

/// Every node's published runs per budgeted tenant, as `(tenant, node) → runs`.
pub async fn published_demand(
    client: &Client,
) -> Result<std::collections::BTreeMap<(String, String), u32>, StoreError> {
    let read = client
        .clone()
        .get(BUDGET, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| store_error("reading the cluster's send demand", e))?;
    Ok(read
        .kvs()
        .iter()
        .filter_map(|kv| {
            let (tenant, node) = parse_budget_key(kv.key_str().ok()?)?;
            let runs = kv.value_str().ok()?.trim().parse().ok()?;
            Some(((tenant.to_owned(), node.to_owned()), runs))
        })
        .collect())
}

/// How often a node with budgeted runs re-reads the other nodes' demand.
pub const REFRESH: Duration = Duration::from_millis(250);

struct Wake(Notify);

impl DemandListener for Wake {
    fn demand_changed(&self) {
        self.0.notify_one();
    }
}

/// Takes this node's part in the cluster's send budgets, in the background, for as long as
/// its membership lives (the task ends when the liveness sender is gone): publishes `gates`'
/// demand under the node's lease and keeps its limiters at the node's share. `gates` must be
/// the ones the node's runs use.
pub fn share(
    client: Client,
    node_id: String,
    liveness: watch::Receiver<Liveness>,
    gates: SendGates,
    refresh: Duration,
) -> JoinHandle<()> {
    let wake = Arc::new(Wake(Notify::new()));
    gates.set_listener(wake.clone());
    tokio::spawn(share_loop(client, node_id, liveness, gates, wake, refresh))
}

async fn share_loop(
    client: Client,
    node_id: String,
    mut liveness: watch::Receiver<Liveness>,
    gates: SendGates,
    wake: Arc<Wake>,
    refresh: Duration,
) {
    let mut published = Published::default();
    loop {
        let lease = liveness.borrow_and_update().lease();
        match lease {
            Some(lease) => {
                if published.lease != Some(lease) {
                    // Keys on an earlier lease went with it.
                    published = Published {
                        lease: Some(lease),
                        runs: HashMap::new(),
                    };
                }
                if let Err(e) = share_once(&client, &node_id, lease, &gates, &mut published).await {
                    tracing::warn!(node = %node_id, error = %e, "send budget: etcd not updated; retrying");
                }
            }
            None => published = Published::default(),
        }
        tokio::select! {
            _ = wake.0.notified() => {}
            _ = tokio::time::sleep(refresh) => {}
            changed = liveness.changed() => {
                if changed.is_err() {
                    return; // the node is gone
                }
            }
        }
    }
}

/// What this node has in etcd: its runs per tenant, on which lease.
#[derive(Default)]
struct Published {
    lease: Option<i64>,
    runs: HashMap<String, u32>,
}

async fn share_once(
    client: &Client,
    node_id: &str,
    lease: i64,
    gates: &SendGates,
    published: &mut Published,
) -> Result<(), StoreError> {
    let mut client = client.clone();
    let demand: HashMap<String, u32> = gates.local_demand().into_iter().collect();
    for (tenant, runs) in &demand {
        if published.runs.get(tenant) != Some(runs) {
            client
                .put(
                    budget_key(tenant, node_id),
                    runs.to_string(),
                    Some(PutOptions::new().with_lease(lease)),
                )
                .await
                .map_err(|e| store_error("publishing this node's send demand", e))?;
            published.runs.insert(tenant.clone(), *runs);
        }
    }
    let gone: Vec<String> = published
        .runs
        .keys()
        .filter(|t| !demand.contains_key(*t))
        .cloned()
        .collect();
    for tenant in gone {
        client
            .delete(budget_key(&tenant, node_id), None)
            .await
            .map_err(|e| store_error("withdrawing this node's send demand", e))?;
        published.runs.remove(&tenant);
    }
    if demand.is_empty() {
        return Ok(());
    }
    let read = client
        .get(BUDGET, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| store_error("reading the cluster's send demand", e))?;
    let entries: Vec<(&str, &str)> = read
        .kvs()
        .iter()
        .filter_map(|kv| Some((kv.key_str().ok()?, kv.value_str().ok()?)))
        .collect();
    let others = others_demand(entries, node_id);
    for tenant in demand.keys() {
        gates.set_others(tenant, others.get(tenant).copied().unwrap_or(0));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_tenant_and_node() {
        assert_eq!(budget_key("acme", "node-1"), "/ferry/v1/budget/acme/node-1");
        assert_eq!(
            parse_budget_key("/ferry/v1/budget/acme/node-1"),
            Some(("acme", "node-1"))
        );
        for bad in [
            "/ferry/v1/budget/acme",
            "/ferry/v1/budget/acme/",
            "/ferry/v1/budget//node-1",
            "/ferry/v1/budget/acme/node-1/x",
            "/ferry/v1/nodes/node-1",
        ] {
            assert_eq!(parse_budget_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_other_nodes_demand_is_summed_per_tenant_without_this_node() {
        let others = others_demand(
            [
                ("/ferry/v1/budget/acme/node-1", "2"),
                ("/ferry/v1/budget/acme/node-2", "1"),
                ("/ferry/v1/budget/acme/node-3", "3"),
                ("/ferry/v1/budget/beta/node-2", "1"),
                ("/ferry/v1/budget/beta/node-1", "5"),
                ("/ferry/v1/budget/acme/node-4", "many"),
            ],
            "node-1",
        );
        assert_eq!(others.get("acme"), Some(&4));
        assert_eq!(others.get("beta"), Some(&1));
        assert_eq!(others.len(), 2);
        // Node 1's share of a 3000/s budget with its 2 runs of 6: a third.
        let rate = ferry_actors::send_gate::share_rate(3000, 2, others["acme"]);
        assert_eq!(rate, 1000.0);
    }
}
