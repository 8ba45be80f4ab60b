//! Links between the nodes of a cluster (DESIGN.md, "Actors across nodes"): a ractor_cluster
//! session per pair of nodes, carried over a gRPC bidirectional stream on the nodes' one port
//! (`ferry.cluster.v1.NodeLink/Open`), so admin and peers share one port and one auth story.
//!
//! - [`transport`]: a gRPC stream of frames as the byte stream ractor_cluster runs on.
//! - [`service`]: the accepting side, which checks the cluster's shared secret first.
//! - [`peers`]: the dialing side, following the membership records in etcd.
//! - [`messages`] and [`actor`]: the per-node agent, the only remotable actor, in the process
//!   groups peers find it by.
//!
//! The secret guards links twice: the `Open` call must carry it (else UNAUTHENTICATED before
//! any ractor byte flows), and ractor_cluster's handshake uses it as its cookie. etcd stays
//! the durable truth: what an agent is told over a link only makes it act sooner.
//!
//! ractor_cluster's `NodeServer` always opens a TCP listener of its own (it cannot be turned
//! off in 0.16.5); Ferry binds it to 127.0.0.1 on an ephemeral port, never advertises it, and
//! dials peers only through the gRPC port.

pub mod messages;

#[cfg(feature = "etcd")]
pub mod actor;
#[cfg(feature = "etcd")]
mod links;
#[cfg(feature = "etcd")]
pub mod peers;
#[cfg(feature = "etcd")]
pub mod service;
#[cfg(feature = "etcd")]
pub mod transport;

#[cfg(feature = "etcd")]
pub use links::{LinkTasks, NodeLinks, RemoteAgents};

use std::sync::Arc;

use async_trait::async_trait;
use tonic::Status;

use self::messages::LiveRun;
use crate::records::{RunRecord, SyncId};
use crate::schedule::TriggerReason;

/// The cluster's shared secret: peers' links must carry it. `Debug` never shows it.
#[derive(Clone)]
pub struct ClusterSecret(Arc<str>);

/// A secret shorter than this is refused (it would be guessable).
pub const MIN_CLUSTER_SECRET: usize = 16;

impl ClusterSecret {
    pub fn new(secret: &str) -> Result<Self, LinkError> {
        let secret = secret.trim();
        if secret.chars().count() < MIN_CLUSTER_SECRET {
            return Err(LinkError::WeakSecret);
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(LinkError::SecretNotPrintable);
        }
        Ok(Self(secret.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(redacted)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the cluster secret must be at least {MIN_CLUSTER_SECRET} characters (e.g. the output of `ferry secret-key`)")]
    WeakSecret,
    #[error("the cluster secret must be printable ASCII without spaces")]
    SecretNotPrintable,
    #[error("cannot link to node {peer} at {address}: {reason}")]
    Dial {
        peer: String,
        address: String,
        reason: String,
    },
    #[error("no link to node {peer} at {address}: {reason}")]
    Mismatch {
        peer: String,
        address: String,
        reason: String,
    },
    #[error("node {peer} refused the link: {reason}")]
    Refused { peer: String, reason: String },
    #[error("the node's links are stopping")]
    Stopped,
    #[error("the node's link server did not start: {0}")]
    Start(String),
}

/// What the admin API asks of other nodes, so it answers the same from any node.
#[async_trait]
pub trait PeerRuns: Send + Sync {
    /// This node's id.
    fn node_id(&self) -> &str;
    /// The node the coordinator assigned `sync` to, if any.
    async fn assigned_node(&self, sync: &SyncId) -> Result<Option<String>, Status>;
    /// Starts a run on `node`; its run id.
    async fn start_run(
        &self,
        node: &str,
        sync: &SyncId,
        reason: TriggerReason,
    ) -> Result<String, Status>;
    /// The run's live state on `node` (None: not running there).
    async fn live_run(
        &self,
        node: &str,
        sync: &SyncId,
        run_id: &str,
    ) -> Result<Option<LiveRun>, Status>;
    /// Cancels the run on `node`; its final record once ended (None: still ending).
    async fn cancel_run(
        &self,
        node: &str,
        sync: &SyncId,
        run_id: &str,
    ) -> Result<Option<RunRecord>, Status>;
}

/// A [`PeerRuns`] for the admin settings (`Debug` shows only the node).
#[derive(Clone)]
pub struct Peers(pub Arc<dyn PeerRuns>);

/// A trigger passed on to the node a sync is assigned to, and what that node answered.
#[derive(Debug)]
pub struct Forwarded {
    pub node: String,
    /// The run id, or the node's refusal (UNAVAILABLE, naming the node, when it cannot be
    /// reached).
    pub run: Result<String, Status>,
}

impl Peers {
    /// Starts `sync` on the node the coordinator assigned it to (this node's own agent when
    /// that is this node), as the gRPC `TriggerSync` and the HTTP trigger both do. None: the
    /// sync is assigned nowhere now, so the caller starts it here (its claim still guards
    /// it). Err: the assignments could not be read.
    pub async fn start_on_assigned_node(
        &self,
        sync: &SyncId,
        reason: TriggerReason,
    ) -> Result<Option<Forwarded>, Status> {
        let Some(node) = self.0.assigned_node(sync).await? else {
            return Ok(None);
        };
        let run = self.0.start_run(&node, sync, reason).await;
        match &run {
            Ok(run_id) => {
                tracing::info!(sync = %sync, run = %run_id, %node, "sync triggered on its node")
            }
            Err(e) => {
                tracing::info!(sync = %sync, %node, error = %e, "the sync's node did not start it")
            }
        }
        Ok(Some(Forwarded { node, run }))
    }
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Peers({})", self.0.node_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_secrets_are_refused_and_debug_hides_the_secret() {
        assert!(matches!(
            ClusterSecret::new("short"),
            Err(LinkError::WeakSecret)
        ));
        assert!(matches!(
            ClusterSecret::new("sixteen chars but spaces"),
            Err(LinkError::SecretNotPrintable)
        ));
        let secret = ClusterSecret::new("  0123456789abcdef0123\n").unwrap();
        assert_eq!(secret.expose(), "0123456789abcdef0123");
        assert!(!format!("{secret:?}").contains("0123"));
    }
}
