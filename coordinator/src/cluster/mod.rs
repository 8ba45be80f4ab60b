//! Many nodes, one cluster (DESIGN.md, "Cluster"): liveness and durable state are etcd's.
//!
//! - [`placement`]: weighted rendezvous hashing of syncs onto nodes (pure, no etcd).
//! - [`keys`]: the cluster's own keys under `/ferry/v1/` (nodes, assignments, the election).
//! - with feature `etcd`: [`connection`] (client and error classes), [`etcd_store`] (the
//!   [`StateStore`](crate::store::StateStore) on etcd: claims on the node's lease, fenced
//!   writes; [`etcd_catalog`]: the admin API's catalog on the same store), [`membership`] (one lease per node, its registration, the kill switch),
//!   [`election`] (the coordinator election) and [`assigner`] (the elected coordinator's
//!   placement loop writing assignments) and [`agent`] (a node running what is assigned to it,
//!   and nothing once its lease is lost); [`drain`] (a node taking nothing more and leaving
//!   once empty); [`node`] puts one cluster node together.

pub mod keys;
/// Links between nodes: the remotable agents over gRPC (the parts needing etcd are gated inside).
pub mod link;
pub mod placement;

#[cfg(feature = "etcd")]
pub mod agent;
#[cfg(feature = "etcd")]
pub mod assigner;
/// A tenant's send budget split among the nodes sending for it.
#[cfg(feature = "etcd")]
pub mod budget;
#[cfg(feature = "etcd")]
pub mod connection;
#[cfg(feature = "etcd")]
pub mod drain;
#[cfg(feature = "etcd")]
pub mod election;
#[cfg(feature = "etcd")]
pub mod etcd_catalog;
#[cfg(feature = "etcd")]
pub mod etcd_store;
#[cfg(feature = "etcd")]
pub mod membership;
#[cfg(feature = "etcd")]
pub mod node;
