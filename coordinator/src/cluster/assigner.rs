//! The elected coordinator's placement loop: every tick, place the catalog's active (not
//! paused) syncs on the live nodes ([`super::placement`]) and write the difference to
//! `/ferry/v1/assignments/<node>/<tenant>/<sync>`. A draining node ([`super::drain`]) takes
//! nothing and its syncs move as their runs end. A node's agent runs what is assigned to it
//! (claiming each sync first; the claim, not the assignment, is what fences its writes).
//!
//! Every write is a transaction that also checks that this node's election key still exists
//! on its lease, so a coordinator that lost the election without noticing cannot overwrite
//! its successor's placement.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::connection::store_error;
use super::drain::draining_nodes;
use super::election::Role;
use super::keys;
use super::membership::list_nodes;
use super::placement::{plan, NodeWeight};
use crate::catalog::{Catalog, CatalogError};
use crate::records::SyncId;
use crate::store::StoreError;

/// What an assignment key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentRecord {
    pub node_id: String,
    pub sync: SyncId,
    pub assigned_at: DateTime<Utc>,
    /// The coordinator that wrote it.
    pub by: String,
}

/// What one placement pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// (node, sync) pairs assigned now.
    pub added: Vec<(String, SyncId)>,
    /// (node, sync) pairs taken away (the sync moved, was paused or deleted, or the node left).
    pub removed: Vec<(String, SyncId)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// etcd's default `--max-txn-ops` is 128; one compare plus this many writes stays below it.
const OPS_PER_TXN: usize = 100;

/// Every assignment, as sync → nodes (normally one node per sync; two while a move is being
/// written, or after a coordinator died mid-pass).
pub async fn all_assignments(
    client: &Client,
) -> Result<BTreeMap<SyncId, BTreeSet<String>>, StoreError> {
    let resp = client
        .clone()
        .get(
            keys::ASSIGNMENTS,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .map_err(|e| store_error("listing assignments", e))?;
    let mut out: BTreeMap<SyncId, BTreeSet<String>> = BTreeMap::new();
    for kv in resp.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        let (node, sync) = keys::parse_assignment(&key)?;
        out.entry(sync).or_default().insert(node);
    }
    Ok(out)
}

/// The syncs assigned to `node_id`.
pub async fn assignments_of(client: &Client, node_id: &str) -> Result<Vec<SyncId>, StoreError> {
    keys::check_node_id(node_id)?;
    let resp = client
        .clone()
        .get(
            keys::assignments_of(node_id),
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .map_err(|e| store_error("listing a node's assignments", e))?;
    resp.kvs()
        .iter()
        .map(|kv| keys::parse_assignment(&String::from_utf8_lossy(kv.key())).map(|(_, s)| s))
        .collect()
}

/// Which node holds each claimed sync (a run in progress there).
pub async fn running_on(client: &Client) -> Result<BTreeMap<SyncId, String>, StoreError> {
    #[derive(Deserialize)]
    struct OwnerNode {
        node_id: String,
    }
    let resp = client
        .clone()
        .get(crate::keys::OWNERS, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| store_error("listing claims", e))?;
    let mut out = BTreeMap::new();
    for kv in resp.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        let Some((tenant, sync)) = key
            .strip_prefix(crate::keys::OWNERS)
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        let (Ok(sync), Ok(owner)) = (
            SyncId::new(tenant, sync),
            serde_json::from_slice::<OwnerNode>(kv.value()),
        ) else {
            continue;
        };
        out.insert(sync, owner.node_id);
    }
    Ok(out)
}

/// The syncs the coordinator places: every sync in the catalog that is not paused.
pub async fn active_syncs(catalog: &dyn Catalog) -> Result<Vec<SyncId>, StoreError> {
    let syncs = catalog.list_all_syncs().await.map_err(|e| match e {
        CatalogError::Store(e) => e,
        other => StoreError::Backend(format!("listing syncs: {other}")),
    })?;
    syncs
        .into_iter()
        .filter(|s| !s.value.paused)
        .map(|s| s.value.sync_id())
        .collect()
}

/// One placement pass as the leader holding `leader_key` on `lease`. Writes only the
/// differences; refused (and nothing written) once that key is gone.
pub async fn assign_once(
    client: &Client,
    coordinator: &str,
    lease: i64,
    leader_key: &str,
    syncs: &[SyncId],
) -> Result<Changes, StoreError> {
    // A draining node stays listed (its runs in progress hold their syncs until they end)
    // with capacity 0: it takes nothing, and only its own syncs move.
    let draining = draining_nodes(client).await?;
    let nodes: Vec<NodeWeight> = list_nodes(client)
        .await?
        .into_iter()
        .map(|n| {
            let drained = draining.get(&n.node_id).is_some_and(|d| d.applies_to(&n));
            NodeWeight::new(n.node_id, if drained { 0 } else { n.capacity })
        })
        .collect();
    let current = all_assignments(client).await?;
    let running = running_on(client).await?;
    let desired = plan(syncs, &nodes, &current, &running);

    let mut changes = Changes::default();
    for (sync, nodes) in &current {
        for node in nodes {
            if desired.get(sync) != Some(node) {
                changes.removed.push((node.clone(), sync.clone()));
            }
        }
    }
    for (sync, node) in &desired {
        if !current.get(sync).is_some_and(|nodes| nodes.contains(node)) {
            changes.added.push((node.clone(), sync.clone()));
        }
    }
    if changes.is_empty() {
        return Ok(changes);
    }

    let now = Utc::now();
    let mut ops = Vec::with_capacity(changes.added.len() + changes.removed.len());
    // Removals first: a moved sync is let go by its old node in the same transaction (or an
    // earlier one) than it is given to the new node.
    for (node, sync) in &changes.removed {
        ops.push(TxnOp::delete(keys::assignment(node, sync), None));
    }
    for (node, sync) in &changes.added {
        let record = AssignmentRecord {
            node_id: node.clone(),
            sync: sync.clone(),
            assigned_at: now,
            by: coordinator.to_string(),
        };
        let value = serde_json::to_vec(&record)
            .map_err(|e| StoreError::Backend(format!("encoding an assignment: {e}")))?;
        ops.push(TxnOp::put(keys::assignment(node, sync), value, None));
    }
    let mut kv = client.clone();
    while !ops.is_empty() {
        let rest = ops.split_off(ops.len().min(OPS_PER_TXN));
        let chunk = std::mem::replace(&mut ops, rest);
        let txn = Txn::new()
            .when([Compare::lease(leader_key, CompareOp::Equal, lease)])
            .and_then(chunk);
        let resp = kv
            .txn(txn)
            .await
            .map_err(|e| store_error("writing assignments", e))?;
        if !resp.succeeded() {
            return Err(StoreError::Backend(format!(
                "{coordinator} is no longer the coordinator (election key {leader_key} is gone); assignments not written"
            )));
        }
    }
    Ok(changes)
}

/// Runs placement every `tick` while this node leads, until `role`'s sender is dropped.
pub async fn run(
    client: Client,
    catalog: Arc<dyn Catalog>,
    coordinator: String,
    role: watch::Receiver<Role>,
    tick: Duration,
) {
    run_telling(client, catalog, coordinator, role, tick, |_| {}).await
}

/// [`run`], telling `written` each change once it is in etcd (a cluster node tells the
/// affected nodes' agents over their links, so they act now instead of at their next poll).
pub async fn run_telling(
    client: Client,
    catalog: Arc<dyn Catalog>,
    coordinator: String,
    mut role: watch::Receiver<Role>,
    tick: Duration,
    written: impl Fn(&Changes) + Send + 'static,
) {
    loop {
        let leading = match &*role.borrow_and_update() {
            Role::Leader { lease, key } => Some((*lease, key.clone())),
            Role::Follower => None,
        };
        if let Some((lease, key)) = &leading {
            let pass = async {
                let syncs = active_syncs(catalog.as_ref()).await?;
                assign_once(&client, &coordinator, *lease, key, &syncs).await
            };
            match pass.await {
                Ok(changes) if !changes.is_empty() => {
                    tracing::info!(
                        added = changes.added.len(),
                        removed = changes.removed.len(),
                        "placement changed"
                    );
                    written(&changes);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "placement pass failed; next tick retries"),
            }
        }
        tokio::select! {
            changed = role.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(tick), if leading.is_some() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::contract::{source, sync, tenant};
    use crate::cluster::connection::testing;
    use crate::cluster::election::Election;
    use crate::cluster::etcd_store::{EtcdStore, EtcdStoreSettings};
    use crate::cluster::membership::{Membership, MembershipSettings};
    use crate::cluster::placement::place;
    use crate::embedded::{EmbeddedSettings, EmbeddedStore};
    use crate::store::StateStore;

    /// An embedded catalog with `n` syncs of tenant `acme`.
    async fn catalog_with(n: usize, dir: &tempfile::TempDir) -> Arc<EmbeddedStore> {
        let store = EmbeddedStore::open_in(dir.path(), EmbeddedSettings::default()).unwrap();
        store.create_tenant(&tenant("acme")).await.unwrap();
        store.create_source(&source("acme", "pg")).await.unwrap();
        for i in 0..n {
            let record = sync("acme", &format!("sync-{i}"), "pg");
            store.create_sync(&record).await.unwrap();
        }
        Arc::new(store)
    }

    fn member(client: &Client, node: &str) -> Membership {
        let mut s = MembershipSettings::new(node, "127.0.0.1:1", 1);
        s.ttl = Duration::from_secs(5);
        Membership::start(client.clone(), s).unwrap()
    }

    async fn nodes_now(client: &Client) -> Vec<NodeWeight> {
        list_nodes(client)
            .await
            .unwrap()
            .into_iter()
            .map(|n| NodeWeight::new(n.node_id, n.capacity))
            .collect()
    }

    fn owners(assigned: &BTreeMap<SyncId, BTreeSet<String>>) -> BTreeMap<SyncId, String> {
        assigned
            .iter()
            .map(|(s, nodes)| {
                assert_eq!(nodes.len(), 1, "{s} is assigned to {nodes:?}");
                (s.clone(), nodes.iter().next().unwrap().clone())
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_leader_places_active_syncs_on_live_nodes_and_a_fourth_node_takes_only_its_share() {
        let Some((_etcd, settings)) = testing::start() else {
            return;
        };
        let client = settings.connect().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let catalog = catalog_with(30, &dir).await;
        let members: Vec<Membership> = ["node-1", "node-2", "node-3"]
            .iter()
            .map(|n| member(&client, n))
            .collect();
        for m in &members {
            m.wait_live(Duration::from_secs(5)).await.unwrap();
        }
        let election = Election::start(
            settings.connect_for_waiting().await.unwrap(),
            "node-1",
            members[0].liveness(),
        )
        .unwrap();
        let mut role = election.role();
        let Role::Leader { lease, key } = role.wait_for(|r| r.is_leader()).await.unwrap().clone()
        else {
            unreachable!()
        };

        let syncs = active_syncs(catalog.as_ref()).await.unwrap();
        assert_eq!(syncs.len(), 30);
        let first = assign_once(&client, "node-1", lease, &key, &syncs)
            .await
            .unwrap();
        assert_eq!((first.added.len(), first.removed.len()), (30, 0));
        let placed = owners(&all_assignments(&client).await.unwrap());
        assert_eq!(placed.len(), 30);
        for node in ["node-1", "node-2", "node-3"] {
            let mine = assignments_of(&client, node).await.unwrap();
            assert!(!mine.is_empty(), "{node} got nothing");
            assert!(mine.iter().all(|s| placed[s] == node));
        }
        let again = assign_once(&client, "node-1", lease, &key, &syncs)
            .await
            .unwrap();
        assert!(again.is_empty(), "a stable cluster changes nothing");

        // A fourth node joins: only its share moves, all of it to the newcomer — except a sync
        // whose run is in progress, which moves once the run ends.
        let fourth = member(&client, "node-4");
        fourth.wait_live(Duration::from_secs(5)).await.unwrap();
        let would_move: Vec<SyncId> = {
            let next = place(&syncs, &nodes_now(&client).await);
            syncs
                .iter()
                .filter(|s| next[*s] != placed[*s])
                .cloned()
                .collect()
        };
        let busy = would_move
            .first()
            .expect("the newcomer takes something")
            .clone();
        let claims = EtcdStore::new(
            client.clone(),
            EtcdStoreSettings::default(),
            members[0].liveness(),
        );
        let fence = claims.claim(&busy, &placed[&busy]).await.unwrap();
        let held = assign_once(&client, "node-1", lease, &key, &syncs)
            .await
            .unwrap();
        assert!(
            !held.added.iter().any(|(_, s)| *s == busy),
            "a running sync is not moved"
        );
        assert_eq!(held.added.len(), would_move.len() - 1);
        claims.release(&fence).await.unwrap();
        let rest = assign_once(&client, "node-1", lease, &key, &syncs)
            .await
            .unwrap();
        assert_eq!(rest.added, vec![("node-4".to_string(), busy.clone())]);
        let joined = Changes {
            added: [held.added, rest.added].concat(),
            removed: [held.removed, rest.removed].concat(),
        };
        println!(
            "30 syncs on 3 nodes, a fourth joins: {} moved ({:.0}%)",
            joined.removed.len(),
            joined.removed.len() as f64 * 100.0 / 30.0
        );
        assert_eq!(joined.added.len(), joined.removed.len());
        assert!(joined.added.iter().all(|(n, _)| n == "node-4"));
        assert!(!joined.added.is_empty() && joined.added.len() <= 15);
        let after = owners(&all_assignments(&client).await.unwrap());
        let moved = placed.iter().filter(|(s, n)| after[*s] != **n).count();
        assert_eq!(moved, joined.added.len());

        // A paused sync is taken away; a node that leaves gives all its syncs up.
        let paused_id = SyncId::new("acme", "sync-0").unwrap();
        let mut paused = catalog.get_sync(&paused_id).await.unwrap().unwrap().value;
        paused.paused = true;
        catalog.update_sync(&paused, None).await.unwrap();
        let mut members = members;
        members.remove(1).leave().await;
        let syncs = active_syncs(catalog.as_ref()).await.unwrap();
        assign_once(&client, "node-1", lease, &key, &syncs)
            .await
            .unwrap();
        let last = owners(&all_assignments(&client).await.unwrap());
        assert_eq!(last.len(), 29);
        assert!(!last.contains_key(&paused_id));
        assert!(last.values().all(|n| n != "node-2"));
        assert!(assignments_of(&client, "node-2").await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deposed_coordinator_writes_nothing_and_the_loop_places_while_leading() {
        let Some((_etcd, settings)) = testing::start() else {
            return;
        };
        let client = settings.connect().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let catalog = catalog_with(5, &dir).await;
        let node = member(&client, "node-1");
        node.wait_live(Duration::from_secs(5)).await.unwrap();
        let syncs = active_syncs(catalog.as_ref()).await.unwrap();

        // Not (or no longer) the leader: its election key does not exist.
        let e = assign_once(
            &client,
            "node-1",
            42,
            "/ferry/v1/election/coordinator/2a",
            &syncs,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("no longer the coordinator"), "{e}");
        assert!(all_assignments(&client).await.unwrap().is_empty());

        let election = Election::start(
            settings.connect_for_waiting().await.unwrap(),
            "node-1",
            node.liveness(),
        )
        .unwrap();
        let looping = tokio::spawn(run(
            client.clone(),
            catalog.clone(),
            "node-1".into(),
            election.role(),
            Duration::from_millis(200),
        ));
        let mut placed = 0;
        for _ in 0..50 {
            placed = all_assignments(&client).await.unwrap().len();
            if placed == 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(placed, 5);
        looping.abort();
    }
}
