//! Cluster coordination: the state store — ownership with fencing tokens, cursors and run
//! history — behind the [`store::StateStore`] trait, with its single-node implementation
//! ([`embedded::EmbeddedStore`], one file) and, with feature `etcd`, the cluster's
//! ([`cluster`]: the etcd store and catalog, node leases and the kill switch, coordinator
//! election, placement, and the node agent); the catalog, the scheduler, the run manager and
//! the admin API service on top of them.
//!
//! Open: `CursorSink::commit` returns a `String`, so a fenced commit and a store outage look the
//! same to the pipeline; a typed, classified error there would let the supervisor stop at once
//! on `Fenced` and retry on `Unavailable`.

pub mod admin;
pub mod catalog;
pub mod cluster;
pub mod embedded;
pub mod keys;
pub mod mirror;
pub mod notify;
pub mod records;
pub mod run_manager;
pub mod runner;
pub mod schedule;
pub mod secrets;
pub mod sink;
pub mod store;
pub mod trigger_http;

pub use embedded::{EmbeddedSettings, EmbeddedStore};
pub use records::{CursorRecord, Owner, RunCounts, RunErrorEntry, RunRecord, RunState, SyncId};
pub use sink::FencedCursorSink;
pub use store::{Fence, StateStore, StoreError};
