//! What the state store keeps: who owns a sync, its cursor, and its runs. These are the values
//! stored under the keys of [`crate::keys`], as JSON, identical in every store.

use std::fmt;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use ferry_actors::pipeline::{RunProgress, RunRowError};
use ferry_core::value::Value;
use serde::{Deserialize, Serialize};

use crate::keys::is_valid_segment;
use crate::store::StoreError;

/// A sync as the store knows it: sync ids are unique within a tenant, so the tenant is part of
/// every key (two tenants' `orders` syncs never share a cursor).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "SyncIdParts")]
pub struct SyncId {
    tenant: String,
    sync: String,
}

#[derive(Deserialize)]
struct SyncIdParts {
    tenant: String,
    sync: String,
}

impl TryFrom<SyncIdParts> for SyncId {
    type Error = StoreError;
    fn try_from(parts: SyncIdParts) -> Result<Self, StoreError> {
        SyncId::new(parts.tenant, parts.sync)
    }
}

impl SyncId {
    pub fn new(tenant: impl Into<String>, sync: impl Into<String>) -> Result<Self, StoreError> {
        let (tenant, sync) = (tenant.into(), sync.into());
        for (what, id) in [("tenant id", &tenant), ("sync id", &sync)] {
            if !is_valid_segment(id) {
                return Err(StoreError::Invalid(format!(
                    "{what} {id:?} cannot be part of a state-store key"
                )));
            }
        }
        Ok(Self { tenant, sync })
    }

    /// The sync of a (validated) spec.
    pub fn of_spec(spec: &ferry_core::spec::SyncSpec) -> Result<Self, StoreError> {
        Self::new(spec.tenant.clone(), spec.id.clone())
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn sync(&self) -> &str {
        &self.sync
    }
}

impl fmt::Display for SyncId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.sync)
    }
}

/// The live claim on a sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub node_id: String,
    /// The claim's fencing token (etcd: the owner key's create revision).
    pub token: u64,
    pub claimed_at: DateTime<Utc>,
}

/// The value stored under an owner key. The token is not in it: it is the key's create
/// revision, which the store assigns and nobody can write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OwnerValue {
    pub node_id: String,
    pub claimed_at: DateTime<Utc>,
}

/// What a sync remembers between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CursorRecord {
    pub value: Value,
    pub committed_at: DateTime<Utc>,
    /// The run that committed it.
    pub run_id: String,
    /// The node and fencing token of the write, for the audit trail.
    pub node_id: String,
    pub token: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunState {
    /// A finished run never changes state again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        )
    }
}

/// A run's counters. Always complete, whatever the error log kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunCounts {
    pub rows_read: u64,
    pub records_sent: u64,
    pub records_accepted: u64,
    pub rows_invalid: u64,
    pub records_refused: u64,
    pub cursor_commits: u64,
    /// Mirror: the changes the run's diff found, and deleted events the destination could not
    /// delete (Mixpanel has no per-event delete; each is listed in the run's errors).
    pub changes_inserted: u64,
    pub changes_updated: u64,
    pub changes_deleted: u64,
    pub deletes_not_applied: u64,
}

impl RunCounts {
    /// A snapshot of a running pipeline's live counters.
    pub fn of_progress(progress: &RunProgress) -> Self {
        Self {
            rows_read: progress.rows_read.load(Ordering::Relaxed),
            records_sent: progress.records_sent.load(Ordering::Relaxed),
            records_accepted: progress.records_accepted.load(Ordering::Relaxed),
            rows_invalid: progress.rows_invalid.load(Ordering::Relaxed),
            records_refused: progress.records_refused.load(Ordering::Relaxed),
            cursor_commits: progress.cursor_commits.load(Ordering::Relaxed),
            changes_inserted: progress.changes_inserted.load(Ordering::Relaxed),
            changes_updated: progress.changes_updated.load(Ordering::Relaxed),
            changes_deleted: progress.changes_deleted.load(Ordering::Relaxed),
            deletes_not_applied: progress.deletes_not_applied.load(Ordering::Relaxed),
        }
    }
}

/// One entry of a run's per-row error log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunErrorEntry {
    /// `invalid_row` (mapping / validation before sending) or `refused` (the destination's 400).
    pub reason: String,
    pub row: Option<u64>,
    pub key: Option<String>,
    pub field: String,
    pub message: String,
}

impl From<&RunRowError> for RunErrorEntry {
    fn from(e: &RunRowError) -> Self {
        Self {
            reason: e.reason.to_string(),
            row: e.row,
            key: e.key.clone(),
            field: e.field.clone(),
            message: e.message.clone(),
        }
    }
}

/// One execution of a sync, as the run history shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub sync: SyncId,
    /// `$warehouse_import_id` of the records this run sent.
    pub import_id: String,
    pub state: RunState,
    pub queued_at: DateTime<Utc>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub counts: RunCounts,
    /// Bounded: the store keeps at most its configured number of entries (the first ones) and
    /// counts the rest in `errors_dropped`.
    #[serde(default)]
    pub errors: Vec<RunErrorEntry>,
    #[serde(default)]
    pub errors_dropped: u64,
    /// Why it failed or was cancelled, or a note on success.
    #[serde(default)]
    pub message: Option<String>,
    /// Pipeline attempts so far (the supervisor restarts a failed pipeline with backoff).
    #[serde(default)]
    pub attempts: u32,
}

impl RunRecord {
    pub fn queued(
        sync: SyncId,
        run_id: impl Into<String>,
        import_id: impl Into<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            run_id: run_id.into(),
            sync,
            import_id: import_id.into(),
            state: RunState::Queued,
            queued_at: now,
            started_at: None,
            finished_at: None,
            counts: RunCounts::default(),
            errors: Vec::new(),
            errors_dropped: 0,
            message: None,
            attempts: 0,
        }
    }

    /// Keeps the first `max` errors, counting the others.
    pub fn bound_errors(&mut self, max: usize) {
        if self.errors.len() > max {
            self.errors_dropped += (self.errors.len() - max) as u64;
            self.errors.truncate(max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_record_round_trips_and_old_records_still_read() {
        let sync = SyncId::new("acme", "orders").unwrap();
        let mut run = RunRecord::queued(sync.clone(), "r1", "imp-1", Utc::now());
        run.errors = vec![
            RunErrorEntry {
                reason: "refused".into(),
                row: Some(3),
                key: None,
                field: "time".into(),
                message: "bad".into()
            };
            5
        ];
        run.bound_errors(2);
        assert_eq!((run.errors.len(), run.errors_dropped), (2, 3));
        let json = serde_json::to_string(&run).unwrap();
        assert_eq!(serde_json::from_str::<RunRecord>(&json).unwrap(), run);

        let minimal = r#"{"run_id":"r0","sync":{"tenant":"acme","sync":"orders"},"import_id":"i","state":"queued","queued_at":"2026-01-01T00:00:00Z"}"#;
        let old: RunRecord = serde_json::from_str(minimal).unwrap();
        assert_eq!(old.counts, RunCounts::default());
    }

    #[test]
    fn a_stored_sync_id_is_validated_when_read() {
        let bad = r#"{"tenant":"acme","sync":"../x"}"#;
        assert!(serde_json::from_str::<SyncId>(bad).is_err());
        assert_eq!(
            SyncId::new("acme", "orders").unwrap().to_string(),
            "acme/orders"
        );
    }
}
