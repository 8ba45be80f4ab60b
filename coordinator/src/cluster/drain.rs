//! Draining a node: it takes no more syncs, lets its runs in progress end, and leaves once it
//! holds nothing — what a Kubernetes rolling update needs.
//!
//! - [`request_drain`] (the admin API's `DrainNode`, or the node itself on SIGTERM) writes
//!   `/ferry/v1/draining/<node>` attached to *that node's* lease: it survives a coordinator
//!   change, and ends with the node (a node starting again under the same id is not draining).
//! - The coordinator gives a draining node capacity 0 ([`super::placement::plan`]): each of its
//!   syncs moves once its current run ends (the claim is released).
//! - The node itself ([`follow`], [`until_drained`]) stops scheduling new runs, waits until it
//!   holds no assignments and runs nothing, and cancels what still runs at the drain deadline
//!   (each cancelled run keeps its cursor at the last commit; [`mark_resume`] tells the next
//!   owner to start it at once rather than at its next scheduled time).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::assigner::assignments_of;
use super::connection::store_error;
use super::keys;
use super::membership::{Liveness, NodeRecord};
use crate::run_manager::RunManager;
use crate::store::StoreError;

/// What `/ferry/v1/draining/<node>` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRecord {
    pub node_id: String,
    /// The node's lease when the drain was asked for (the key is attached to it).
    pub lease: i64,
    pub requested_at: DateTime<Utc>,
    /// How long runs may still take; 0: the node's own default (`--drain-timeout`).
    pub timeout_seconds: u32,
    /// Who asked: "operator" (the admin API) or the node itself ("SIGTERM").
    pub requested_by: String,
}

impl DrainRecord {
    /// Whether this drain applies to `node` as registered now (the same lease).
    pub fn applies_to(&self, node: &NodeRecord) -> bool {
        self.node_id == node.node_id && self.lease == node.lease
    }
}

async fn node_record(client: &Client, node_id: &str) -> Result<Option<NodeRecord>, StoreError> {
    let resp = client
        .clone()
        .get(keys::node(node_id), None)
        .await
        .map_err(|e| store_error("reading a node record", e))?;
    resp.kvs()
        .first()
        .map(|kv| {
            serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt {
                key: keys::node(node_id),
                reason: e.to_string(),
            })
        })
        .transpose()
}

/// Marks `node_id` draining, on its current lease. `None` when no live node has that id.
/// Asking again returns the drain in force, unchanged.
pub async fn request_drain(
    client: &Client,
    node_id: &str,
    timeout_seconds: u32,
    requested_by: &str,
) -> Result<Option<DrainRecord>, StoreError> {
    keys::check_node_id(node_id)?;
    // The node may re-register (a new lease) between reading and writing: try again then.
    for _ in 0..3 {
        let Some(node) = node_record(client, node_id).await? else {
            return Ok(None);
        };
        if let Some(existing) = draining_nodes(client).await?.remove(node_id) {
            if existing.applies_to(&node) {
                return Ok(Some(existing));
            }
        }
        let record = DrainRecord {
            node_id: node_id.to_string(),
            lease: node.lease,
            requested_at: Utc::now(),
            timeout_seconds,
            requested_by: requested_by.to_string(),
        };
        let value = serde_json::to_vec(&record)
            .map_err(|e| StoreError::Backend(format!("encoding a drain record: {e}")))?;
        let txn = Txn::new()
            .when([Compare::lease(
                keys::node(node_id),
                CompareOp::Equal,
                node.lease,
            )])
            .and_then([TxnOp::put(
                keys::draining(node_id),
                value,
                Some(PutOptions::new().with_lease(node.lease)),
            )]);
        let resp = client
            .clone()
            .txn(txn)
            .await
            .map_err(|e| store_error("marking a node draining", e))?;
        if resp.succeeded() {
            tracing::info!(node = %node_id, by = %requested_by, "node marked draining");
            return Ok(Some(record));
        }
    }
    Err(StoreError::Unavailable(format!(
        "node {node_id} kept re-registering; drain not recorded"
    )))
}

/// Every drain in force, by node id (stale ones, of a lease that ended, vanish with it).
pub async fn draining_nodes(client: &Client) -> Result<BTreeMap<String, DrainRecord>, StoreError> {
    let resp = client
        .clone()
        .get(keys::DRAINING, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| store_error("listing draining nodes", e))?;
    let mut out = BTreeMap::new();
    for kv in resp.kvs() {
        let record: DrainRecord =
            serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                reason: e.to_string(),
            })?;
        out.insert(record.node_id.clone(), record);
    }
    Ok(out)
}

/// Notes that `sync`'s run was cancelled by a drain, so its next owner starts it at once (its
/// newest run is then `cancelled`, which an owner would otherwise leave to the schedule).
pub async fn mark_resume(client: &Client, sync: &crate::records::SyncId) -> Result<(), StoreError> {
    client
        .clone()
        .put(keys::resume(sync), Utc::now().to_rfc3339(), None)
        .await
        .map_err(|e| store_error("noting a sync to resume", e))
        .map(drop)
}

/// Whether a drain asked for `sync` to resume at once; the note is consumed.
pub async fn take_resume(
    client: &Client,
    sync: &crate::records::SyncId,
) -> Result<bool, StoreError> {
    let resp = client
        .clone()
        .delete(keys::resume(sync), None)
        .await
        .map_err(|e| store_error("reading a sync's resume note", e))?;
    Ok(resp.deleted() > 0)
}

/// Follows whether this node is draining, re-reading its drain key every `poll`. Once seen,
/// a drain is kept for good, and written again on the node's new lease if the node
/// re-registers (after its kill switch) so the coordinator keeps giving it nothing.
pub fn follow(
    client: Client,
    node_id: String,
    mut liveness: watch::Receiver<Liveness>,
    poll: Duration,
) -> (watch::Receiver<Option<DrainRecord>>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        loop {
            let lease = liveness.borrow_and_update().lease();
            let known = tx.borrow().clone();
            match (known, lease) {
                (None, Some(_)) => match draining_nodes(&client).await {
                    Ok(mut all) => {
                        if let Some(drain) = all.remove(&node_id).filter(|d| Some(d.lease) == lease)
                        {
                            tracing::info!(node = %node_id, by = %drain.requested_by, "draining: taking no more syncs");
                            tx.send_replace(Some(drain));
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "drain state not read; next poll retries")
                    }
                },
                (Some(drain), Some(lease)) if drain.lease != lease => {
                    match request_drain(
                        &client,
                        &node_id,
                        drain.timeout_seconds,
                        &drain.requested_by,
                    )
                    .await
                    {
                        Ok(Some(again)) => {
                            tx.send_replace(Some(DrainRecord {
                                requested_at: drain.requested_at,
                                ..again
                            }));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "drain not re-recorded on the new lease; retrying")
                        }
                    }
                }
                _ => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                changed = liveness.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    });
    (rx, task)
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every run ended on its own and every sync moved away.
    Empty,
    /// The deadline came: the runs still going were cancelled, then the node emptied.
    CancelledAtDeadline { runs: usize },
    /// Even after cancelling, the node did not empty within the grace period; it leaves anyway
    /// (its claims end with its lease).
    GaveUp,
}

/// After the deadline's cancellations, how long to wait for the runs to be recorded and the
/// coordinator to take the syncs away.
const AFTER_DEADLINE: Duration = Duration::from_secs(30);

/// Waits until this node is draining and then until it holds no assignment and runs nothing.
/// Runs still going `default_timeout` (or the drain's own timeout) after the drain was seen are
/// cancelled.
pub async fn until_drained(
    client: &Client,
    node_id: &str,
    runs: &Arc<RunManager>,
    mut drain: watch::Receiver<Option<DrainRecord>>,
    default_timeout: Duration,
    poll: Duration,
) -> Drained {
    let record = match drain.wait_for(Option::is_some).await {
        Ok(r) => r.clone().unwrap_or_else(|| unreachable!("waited for Some")),
        Err(_) => return std::future::pending().await,
    };
    let timeout = match record.timeout_seconds {
        0 => default_timeout,
        s => Duration::from_secs(u64::from(s)),
    };
    let seen = tokio::time::Instant::now();
    let deadline = seen + timeout;
    let mut cancelled: Option<usize> = None;
    loop {
        let active = runs.active_runs();
        let assigned = assignments_of(client, node_id).await;
        let empty = active.is_empty() && matches!(&assigned, Ok(a) if a.is_empty());
        if empty {
            tracing::info!(node = %node_id, waited = ?seen.elapsed(), "drained: no syncs, no runs");
            return match cancelled {
                None => Drained::Empty,
                Some(runs) => Drained::CancelledAtDeadline { runs },
            };
        }
        let now = tokio::time::Instant::now();
        if now >= deadline && cancelled.is_none() {
            tracing::warn!(node = %node_id, runs = active.len(), ?timeout, "drain deadline: cancelling the runs still going (each resumes elsewhere from its last commit)");
            for run in &active {
                // Noted before the claim is let go, so the next owner cannot miss it.
                if let Err(e) = mark_resume(client, &run.sync).await {
                    tracing::warn!(sync = %run.sync, error = %e, "resume note not written; the sync resumes at its next scheduled time");
                }
                let _ = runs.cancel(&run.sync, &run.run_id);
            }
            cancelled = Some(active.len());
        }
        if cancelled.is_some() && now >= deadline + AFTER_DEADLINE {
            tracing::error!(node = %node_id, runs = active.len(), "not empty {AFTER_DEADLINE:?} after the drain deadline; leaving anyway");
            return Drained::GaveUp;
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::connection::testing;
    use crate::cluster::membership::{list_nodes, Membership, MembershipSettings};

    fn member(client: &Client, node: &str) -> Membership {
        let mut s = MembershipSettings::new(node, "127.0.0.1:1", 1);
        s.ttl = Duration::from_secs(5);
        Membership::start(client.clone(), s).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_drain_is_on_the_nodes_lease_is_idempotent_and_ends_with_the_node() {
        let Some((_etcd, settings)) = testing::start() else {
            return;
        };
        let client = settings.connect().await.unwrap();
        assert_eq!(
            request_drain(&client, "nobody", 0, "operator")
                .await
                .unwrap(),
            None,
            "no live node, nothing to drain"
        );
        let node = member(&client, "node-1");
        let lease = node.wait_live(Duration::from_secs(5)).await.unwrap();
        let (mut seen, follower) = follow(
            client.clone(),
            "node-1".into(),
            node.liveness(),
            Duration::from_millis(50),
        );
        assert!(seen.borrow_and_update().is_none());

        let first = request_drain(&client, "node-1", 30, "operator")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((first.lease, first.timeout_seconds), (lease, 30));
        let again = request_drain(&client, "node-1", 5, "SIGTERM")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again, first, "asking again changes nothing");
        let record = list_nodes(&client).await.unwrap().remove(0);
        assert!(draining_nodes(&client).await.unwrap()["node-1"].applies_to(&record));
        tokio::time::timeout(Duration::from_secs(2), seen.wait_for(Option::is_some))
            .await
            .expect("the node sees its drain")
            .unwrap();

        // The node leaves: the drain goes with its lease; the same id joining again is live.
        follower.abort();
        node.leave().await;
        assert!(draining_nodes(&client).await.unwrap().is_empty());
        let back = member(&client, "node-1");
        back.wait_live(Duration::from_secs(5)).await.unwrap();
        assert!(draining_nodes(&client).await.unwrap().is_empty());
    }
}
