//! `Cluster`: the nodes, where each sync is placed, and draining a node. Operator only.
//!
//! A cluster node answers from etcd (node records, assignments, claims, drains, the election),
//! so every node answers the same. A node alone (embedded) answers with itself: coordinator of
//! itself, every active sync assigned to it; it cannot be drained (there is nowhere to move).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ferry_proto::admin::v1 as pb;
use pb::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use super::convert::{run_state_pb, time};
use super::{errors, Admin};
use crate::records::SyncId;

/// Where the cluster's state comes from.
#[derive(Clone)]
pub enum ClusterInfo {
    /// One node alone with its embedded store.
    Embedded {
        node_id: String,
        address: String,
        started_at: DateTime<Utc>,
    },
    /// A cluster node: etcd holds the nodes, assignments, claims and drains.
    #[cfg(feature = "etcd")]
    Etcd {
        // Boxed: the client is large beside the embedded variant.
        client: Box<etcd_client::Client>,
        node_id: String,
    },
}

impl std::fmt::Debug for ClusterInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterInfo::Embedded { node_id, .. } => write!(f, "Embedded({node_id})"),
            #[cfg(feature = "etcd")]
            ClusterInfo::Etcd { node_id, .. } => write!(f, "Etcd({node_id})"),
        }
    }
}

pub struct ClusterApi {
    admin: Arc<Admin>,
    info: ClusterInfo,
}

impl ClusterApi {
    pub fn new(admin: Arc<Admin>, info: ClusterInfo) -> Self {
        Self { admin, info }
    }
}

/// The cluster at one moment.
struct Snapshot {
    nodes: Vec<pb::Node>,
    coordinator: String,
    /// sync → the nodes it is assigned to.
    assigned: BTreeMap<SyncId, BTreeSet<String>>,
    /// sync → the node holding its claim (running it).
    running: BTreeMap<SyncId, String>,
}

impl Snapshot {
    fn assignments(&self, only: Option<&str>) -> Vec<pb::AssignedSync> {
        let mut out = Vec::new();
        for (sync, nodes) in &self.assigned {
            for node in nodes.iter().filter(|n| only.is_none_or(|o| o == *n)) {
                out.push(pb::AssignedSync {
                    tenant: sync.tenant().to_string(),
                    sync: sync.sync().to_string(),
                    node_id: node.clone(),
                    running_on: self.running.get(sync).cloned().unwrap_or_default(),
                    ..Default::default()
                });
            }
        }
        out
    }

    /// Fills in each node's load and assignment count.
    fn count(&mut self) {
        for node in &mut self.nodes {
            node.load = self.running.values().filter(|n| **n == node.id).count() as u32;
            node.assigned_syncs = self
                .assigned
                .values()
                .filter(|nodes| nodes.contains(&node.id))
                .count() as u32;
            node.coordinator = node.id == self.coordinator;
        }
    }
}

impl ClusterApi {
    async fn operator<T>(&self, request: Request<T>, what: &str) -> Result<T, Status> {
        let (principal, message) = self.admin.caller(request).await?;
        principal.require_operator(what)?;
        Ok(message)
    }

    async fn snapshot(&self) -> Result<Snapshot, Status> {
        let mut snapshot = match &self.info {
            ClusterInfo::Embedded {
                node_id,
                address,
                started_at,
            } => self.embedded(node_id, address, started_at).await?,
            #[cfg(feature = "etcd")]
            ClusterInfo::Etcd { client, .. } => {
                etcd_snapshot(client).await.map_err(|e| errors::store(&e))?
            }
        };
        snapshot.count();
        Ok(snapshot)
    }

    async fn embedded(
        &self,
        node_id: &str,
        address: &str,
        started_at: &DateTime<Utc>,
    ) -> Result<Snapshot, Status> {
        let syncs = self
            .admin
            .catalog
            .list_all_syncs()
            .await
            .map_err(|e| errors::catalog(&e))?;
        let assigned = syncs
            .into_iter()
            .filter(|s| !s.value.paused)
            .filter_map(|s| s.value.sync_id().ok())
            .map(|id| (id, BTreeSet::from([node_id.to_string()])))
            .collect();
        let running = self
            .admin
            .runs
            .active_runs()
            .into_iter()
            .map(|r| (r.sync.clone(), node_id.to_string()))
            .collect();
        Ok(Snapshot {
            nodes: vec![pb::Node {
                id: node_id.to_string(),
                address: address.to_string(),
                capacity: 1,
                state: pb::NodeState::Live as i32,
                joined_at: time(started_at),
                ..Default::default()
            }],
            coordinator: node_id.to_string(),
            assigned,
            running,
        })
    }

    /// The live counters of a run on another node, asked over the link (None: no link, or
    /// it ended there: the stored counters are shown, as of its last commit).
    async fn live_on(
        &self,
        node: &str,
        id: &SyncId,
        run_id: &str,
    ) -> Option<crate::records::RunCounts> {
        let crate::cluster::link::Peers(peers) = self.admin.settings.peers.as_ref()?;
        match peers.live_run(node, id, run_id).await {
            Ok(live) => live.map(|l| l.record.counts),
            Err(e) => {
                tracing::debug!(sync = %id, run = %run_id, %node, error = %e, "live counters not read from the run's node");
                None
            }
        }
    }

    fn no_such_node(node_id: &str) -> Status {
        Status::not_found(format!("no live node has the id '{node_id}'"))
    }
}

#[cfg(feature = "etcd")]
async fn etcd_snapshot(client: &etcd_client::Client) -> Result<Snapshot, crate::store::StoreError> {
    use crate::cluster::{assigner, drain, election, membership};

    let records = membership::list_nodes(client).await?;
    let drains = drain::draining_nodes(client).await?;
    let mut nodes = Vec::with_capacity(records.len());
    for record in &records {
        let ttl = match client.clone().lease_time_to_live(record.lease, None).await {
            Ok(resp) => resp.ttl(),
            Err(_) => -1,
        };
        let drain = drains.get(&record.node_id).filter(|d| d.applies_to(record));
        nodes.push(pb::Node {
            id: record.node_id.clone(),
            address: record.address.clone(),
            capacity: record.capacity,
            state: if drain.is_some() {
                pb::NodeState::Draining
            } else {
                pb::NodeState::Live
            } as i32,
            joined_at: time(&record.registered_at),
            lease_ttl_seconds: ttl,
            drain_requested_at: drain.map(|d| time(&d.requested_at)).unwrap_or_default(),
            drain_timeout_seconds: drain.map(|d| d.timeout_seconds).unwrap_or_default(),
            ..Default::default()
        });
    }
    Ok(Snapshot {
        nodes,
        coordinator: election::current_leader(client).await?.unwrap_or_default(),
        assigned: assigner::all_assignments(client).await?,
        running: assigner::running_on(client).await?,
    })
}

#[tonic::async_trait]
impl Cluster for ClusterApi {
    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.operator(request, "ListNodes").await?;
        let snapshot = self.snapshot().await?;
        Ok(Response::new(pb::ListNodesResponse {
            nodes: snapshot.nodes,
            coordinator: snapshot.coordinator,
        }))
    }

    async fn get_node(
        &self,
        request: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::NodeDetail>, Status> {
        let req = self.operator(request, "GetNode").await?;
        let snapshot = self.snapshot().await?;
        let node = snapshot
            .nodes
            .iter()
            .find(|n| n.id == req.node_id)
            .cloned()
            .ok_or_else(|| Self::no_such_node(&req.node_id))?;
        let mut syncs = snapshot.assignments(Some(&req.node_id));
        // The newest run of each sync running somewhere, with its counters.
        for entry in syncs.iter_mut().filter(|s| !s.running_on.is_empty()) {
            let Ok(id) = SyncId::new(&entry.tenant, &entry.sync) else {
                continue;
            };
            let newest = self
                .admin
                .store
                .list_runs(&id, 1)
                .await
                .map_err(|e| errors::store(&e))?;
            if let Some(run) = newest.into_iter().find(|r| !r.state.is_terminal()) {
                let counts = match self.admin.runs.active_run(&id, &run.run_id) {
                    Some(here) => here.snapshot().counts,
                    None => self
                        .live_on(&entry.running_on, &id, &run.run_id)
                        .await
                        .unwrap_or(run.counts),
                };
                entry.run_id = run.run_id.clone();
                entry.run_state = run_state_pb(run.state) as i32;
                entry.rows_read = counts.rows_read;
                entry.records_sent = counts.records_sent;
                entry.run_started_at = run.started_at.as_ref().map(time).unwrap_or_default();
            }
        }
        Ok(Response::new(pb::NodeDetail {
            node: Some(node),
            syncs,
        }))
    }

    async fn drain_node(
        &self,
        request: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        let req = self.operator(request, "DrainNode").await?;
        if req.node_id.is_empty() {
            return Err(errors::invalid_field("node_id", "name the node to drain"));
        }
        match &self.info {
            ClusterInfo::Embedded { .. } => Err(Status::failed_precondition(
                "this node runs alone (no --etcd): there is no other node to move its syncs to; stop it instead",
            )),
            #[cfg(feature = "etcd")]
            ClusterInfo::Etcd { client, .. } => {
                crate::cluster::drain::request_drain(
                    client,
                    &req.node_id,
                    req.timeout_seconds,
                    "operator",
                )
                .await
                .map_err(|e| match e {
                    crate::store::StoreError::Invalid(m) => errors::invalid_field("node_id", m),
                    other => errors::store(&other),
                })?
                .ok_or_else(|| Self::no_such_node(&req.node_id))?;
                let snapshot = self.snapshot().await?;
                snapshot
                    .nodes
                    .into_iter()
                    .find(|n| n.id == req.node_id)
                    .map(Response::new)
                    // It left between the drain and the read: drained already.
                    .ok_or_else(|| Self::no_such_node(&req.node_id))
            }
        }
    }

    async fn list_assignments(
        &self,
        request: Request<pb::ListAssignmentsRequest>,
    ) -> Result<Response<pb::ListAssignmentsResponse>, Status> {
        self.operator(request, "ListAssignments").await?;
        let snapshot = self.snapshot().await?;
        Ok(Response::new(pb::ListAssignmentsResponse {
            assignments: snapshot.assignments(None),
        }))
    }
}
