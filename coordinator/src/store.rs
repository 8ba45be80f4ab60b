//! The state-store contract: ownership with fencing, cursors, and run history. The embedded
//! store implements it in one file; the etcd store (`cluster::etcd_store`, feature `etcd`)
//! with the same keys ([`crate::keys`]) and the same checks as etcd transactions. Both run the
//! same contract tests (`store/contract.rs`).

use async_trait::async_trait;
use ferry_core::error::{Classify, ErrorClass};
use ferry_core::value::Value;

use crate::records::{CursorRecord, Owner, RunRecord, SyncId};

/// Proof that a node holds the claim on a sync. Every cursor and run write carries one and is
/// refused once a newer claim exists (or none), so a zombie — a node that lost its lease but
/// has not noticed yet — cannot overwrite its successor's progress.
///
/// Only a store makes fences ([`StateStore::claim`]); the fields cannot be forged from outside
/// this crate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    sync: SyncId,
    node_id: String,
    token: u64,
}

impl Fence {
    pub(crate) fn new(sync: SyncId, node_id: String, token: u64) -> Self {
        Self {
            sync,
            node_id,
            token,
        }
    }

    pub fn sync(&self) -> &SyncId {
        &self.sync
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Increases with every claim the store grants, across restarts (etcd: the owner key's
    /// create revision).
    pub fn token(&self) -> u64 {
        self.token
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write's fence is not the sync's current claim: another node owns it now, or the
    /// claim was released or voided (the lease ended, the embedded store restarted).
    #[error("sync {sync}: fencing token {token} is no longer the current claim (current: {})", fmt_token(*.current))]
    Fenced {
        sync: SyncId,
        token: u64,
        current: Option<u64>,
    },
    /// `claim` found a live claim.
    #[error("sync {sync} is already owned by node {} (token {})", .owner.node_id, .owner.token)]
    Owned { sync: SyncId, owner: Owner },
    /// A request the store refuses whatever its state (a bad id, a run filed under another sync).
    #[error("invalid state-store request: {0}")]
    Invalid(String),
    /// A stored value cannot be read back.
    #[error("corrupt state at {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// Another process holds the store (the embedded store is single-process by design).
    #[error("the state store {0} is in use by another process")]
    InUse(String),
    /// The store could not be reached or written (I/O, etcd unavailable): worth retrying.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The store itself failed in a way retrying will not fix.
    #[error("state store failure: {0}")]
    Backend(String),
}

fn fmt_token(token: Option<u64>) -> String {
    token.map_or_else(|| "none".to_string(), |t| t.to_string())
}

impl Classify for StoreError {
    fn class(&self) -> ErrorClass {
        match self {
            // Someone else runs the sync right now: try again later, maybe elsewhere.
            StoreError::Owned { .. } | StoreError::Unavailable(_) => ErrorClass::Retryable,
            // A fenced run must stop at once: its successor owns the sync.
            StoreError::Fenced { .. }
            | StoreError::Invalid(_)
            | StoreError::Corrupt { .. }
            | StoreError::InUse(_)
            | StoreError::Backend(_) => ErrorClass::Fatal,
        }
    }
}

/// Durable cluster state. Object-safe: the node holds an `Arc<dyn StateStore>`.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Claims a sync for `node_id`. Succeeds only if no live claim exists — a node that already
    /// owns the sync gets [`StoreError::Owned`] too, and keeps using the fence it has (etcd: a
    /// transaction on `create_revision == 0`, the key attached to the node's lease).
    async fn claim(&self, sync: &SyncId, node_id: &str) -> Result<Fence, StoreError>;

    /// Gives the claim up. Idempotent: a claim that is already gone is fine. A fence that is no
    /// longer current never removes its successor's claim: that is [`StoreError::Fenced`].
    async fn release(&self, fence: &Fence) -> Result<(), StoreError>;

    async fn current_owner(&self, sync: &SyncId) -> Result<Option<Owner>, StoreError>;

    async fn get_cursor(&self, sync: &SyncId) -> Result<Option<CursorRecord>, StoreError>;

    /// Stores the cursor if `fence` is still the sync's current claim; otherwise
    /// [`StoreError::Fenced`] and the stored cursor is unchanged. Durable when it returns.
    async fn commit_cursor(
        &self,
        fence: &Fence,
        run_id: &str,
        cursor: &Value,
    ) -> Result<(), StoreError>;

    /// Forgets the cursor (after a One-time run, or a user's reset): the next run starts from the
    /// beginning. Fenced like every write, so a reset cannot race a running sync — the admin
    /// path claims the sync, resets, and releases.
    async fn reset_cursor(&self, fence: &Fence) -> Result<(), StoreError>;

    /// Creates or replaces a run's record (fenced; the run must belong to the fence's sync). Its
    /// error log is cut to the store's bound. Creating a run beyond the history bound deletes
    /// the sync's oldest runs.
    async fn put_run(&self, fence: &Fence, run: &RunRecord) -> Result<(), StoreError>;

    async fn get_run(&self, sync: &SyncId, run_id: &str) -> Result<Option<RunRecord>, StoreError>;

    /// The sync's most recent runs, newest (most recently created) first.
    async fn list_runs(&self, sync: &SyncId, limit: usize) -> Result<Vec<RunRecord>, StoreError>;
}

#[cfg(test)]
pub(crate) mod contract;
