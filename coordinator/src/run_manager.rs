//! The node's runs of catalog syncs: starts them (for the API, the scheduler and the HTTP
//! trigger alike, through [`SyncTrigger`]), keeps one run per sync at a time, shows a running
//! run's live counters, cancels runs, and notifies webhooks when a run ends.
//!
//! A second trigger while a sync runs is refused with [`TriggerError::AlreadyRunning`], which
//! names the running run (the admin API answers `ALREADY_EXISTS`, the HTTP trigger 409); it
//! never queues a second run. Across nodes the state store's claim is the guard: a node that
//! cannot claim the sync records nothing and the trigger's run ends as "not started".
//!
//! Cancelling is cooperative: the run's supervisor stops the pipeline, the run is recorded as
//! `cancelled`, and the cursor stays at its last commit.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ferry_actors::pipeline::{KnownTotal, RunProgress};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::admin::specs::{ResolveError, SpecResolver};
use crate::catalog::CatalogError;
use crate::notify::Notifier;
use crate::records::{RunCounts, RunRecord, RunState, SyncId};
use crate::runner::{new_run_id, RunControl, RunnerSettings, SyncRunner};
use crate::schedule::{SyncTrigger, TriggerError, TriggerReason};
use crate::store::StateStore;

/// Runs that ended without a record in the state store (they could not claim the sync, say),
/// kept in memory so that their trigger can still find out what happened.
const UNRECORDED_KEPT: usize = 200;
/// Trigger reasons remembered for finished runs.
const REASONS_KEPT: usize = 1000;

/// A run in progress on this node.
pub struct ActiveRun {
    pub sync: SyncId,
    pub run_id: String,
    pub import_id: String,
    pub reason: TriggerReason,
    pub queued_at: DateTime<Utc>,
    pub started: Instant,
    pub progress: Arc<RunProgress>,
    cancel: watch::Sender<bool>,
    finished: watch::Sender<Option<RunRecord>>,
}

impl ActiveRun {
    /// The run as it stands: state running, live counters.
    pub fn snapshot(&self) -> RunRecord {
        let mut run = RunRecord::queued(
            self.sync.clone(),
            self.run_id.clone(),
            self.import_id.clone(),
            self.queued_at,
        );
        run.state = RunState::Running;
        run.started_at = Some(self.queued_at);
        run.counts = RunCounts::of_progress(&self.progress);
        run
    }

    pub fn cancel_requested(&self) -> bool {
        *self.cancel.borrow()
    }
}

impl std::fmt::Debug for ActiveRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveRun")
            .field("sync", &self.sync)
            .field("run_id", &self.run_id)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

/// Why a run could not be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("run {run_id} of sync {sync} is not running on this node")]
    NotRunning { sync: SyncId, run_id: String },
}

pub struct RunManager {
    /// Itself, for the tasks it spawns (it always lives in the `Arc` that `new` made).
    me: Weak<RunManager>,
    resolver: SpecResolver,
    store: Arc<dyn StateStore>,
    settings: RunnerSettings,
    notifier: Option<Notifier>,
    active: Mutex<HashMap<SyncId, Arc<ActiveRun>>>,
    /// Syncs being changed or deleted: not started meanwhile.
    held: Mutex<HashSet<SyncId>>,
    unrecorded: Mutex<VecDeque<RunRecord>>,
    reasons: Mutex<VecDeque<(SyncId, String, TriggerReason)>>,
    idle: watch::Sender<usize>,
}

impl std::fmt::Debug for RunManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunManager")
            .field("active", &self.active.lock().len())
            .finish_non_exhaustive()
    }
}

/// While held, a sync is not started (see [`RunManager::hold`]).
pub struct Hold {
    manager: Arc<RunManager>,
    sync: SyncId,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.manager.held.lock().remove(&self.sync);
    }
}

impl RunManager {
    pub fn new(
        resolver: SpecResolver,
        store: Arc<dyn StateStore>,
        settings: RunnerSettings,
        notifier: Option<Notifier>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            resolver,
            store,
            settings,
            notifier,
            active: Mutex::default(),
            held: Mutex::default(),
            unrecorded: Mutex::default(),
            reasons: Mutex::default(),
            idle: watch::Sender::new(0),
        })
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    pub fn resolver(&self) -> &SpecResolver {
        &self.resolver
    }

    pub fn settings(&self) -> &RunnerSettings {
        &self.settings
    }

    /// Starts a run of `sync` now and returns its id without waiting for it.
    pub async fn start_run(
        &self,
        sync: &SyncId,
        reason: TriggerReason,
    ) -> Result<String, TriggerError> {
        let Some(manager) = self.me.upgrade() else {
            return Err(TriggerError::Unavailable {
                sync: sync.clone(),
                reason: "the node is stopping".into(),
            });
        };
        let job = match self.resolver.job(sync).await {
            Ok(job) => job,
            Err(ResolveError::Catalog(CatalogError::NotFound { .. })) => {
                return Err(TriggerError::NotFound(sync.clone()))
            }
            Err(e) => {
                return Err(TriggerError::Unavailable {
                    sync: sync.clone(),
                    reason: e.to_string(),
                })
            }
        };
        if job.record.value.paused {
            return Err(TriggerError::Paused(sync.clone()));
        }
        let run_id = new_run_id();
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let active = Arc::new(ActiveRun {
            sync: sync.clone(),
            run_id: run_id.clone(),
            // The runner's import id for this run.
            import_id: format!("{}-{run_id}", job.sync.id),
            reason,
            queued_at: Utc::now(),
            started: Instant::now(),
            progress: Arc::new(RunProgress::default()),
            cancel: cancel_tx,
            finished: watch::Sender::new(None),
        });
        {
            if self.held.lock().contains(sync) {
                return Err(TriggerError::Unavailable {
                    sync: sync.clone(),
                    reason: "the sync is being changed or deleted".into(),
                });
            }
            let mut running = self.active.lock();
            if let Some(current) = running.get(sync) {
                return Err(TriggerError::AlreadyRunning {
                    sync: sync.clone(),
                    run_id: current.run_id.clone(),
                });
            }
            running.insert(sync.clone(), active.clone());
            self.idle.send_replace(running.len());
        }
        {
            let mut reasons = self.reasons.lock();
            reasons.push_back((sync.clone(), run_id.clone(), reason));
            while reasons.len() > REASONS_KEPT {
                reasons.pop_front();
            }
        }
        tracing::info!(sync = %sync, run = %run_id, reason = reason.as_str(), "run started");

        let mut settings = self.settings.clone();
        settings.receiver_extensions = job.receiver_extensions;
        let runner = SyncRunner::new(self.store.clone(), settings).with_control(RunControl {
            run_id: Some(run_id.clone()),
            cancel: Some(cancel_rx),
        });
        tokio::spawn(async move {
            let result = runner
                .run(&job.tenant, &job.source, &job.sync, active.progress.clone())
                .await;
            let record = match result {
                Ok(record) => {
                    tracing::info!(
                        sync = %active.sync,
                        run = %active.run_id,
                        state = ?record.state,
                        rows_read = record.counts.rows_read,
                        records_accepted = record.counts.records_accepted,
                        rows_invalid = record.counts.rows_invalid,
                        "run finished"
                    );
                    record
                }
                Err(e) => {
                    tracing::warn!(sync = %active.sync, run = %active.run_id, error = %e, "run not started");
                    let mut record = active.snapshot();
                    record.state = if active.cancel_requested() {
                        RunState::Cancelled
                    } else {
                        RunState::Failed
                    };
                    record.finished_at = Some(Utc::now());
                    record.message = Some(format!("not started: {e}"));
                    let mut kept = manager.unrecorded.lock();
                    kept.push_back(record.clone());
                    while kept.len() > UNRECORDED_KEPT {
                        kept.pop_front();
                    }
                    record
                }
            };
            if let Some(notifier) = &manager.notifier {
                let recent = manager
                    .store
                    .list_runs(&active.sync, 50)
                    .await
                    .unwrap_or_default();
                notifier.run_finished(&job.tenant, &job.sync, &record, &recent);
            }
            {
                let mut running = manager.active.lock();
                if running
                    .get(&active.sync)
                    .is_some_and(|r| r.run_id == active.run_id)
                {
                    running.remove(&active.sync);
                }
                manager.idle.send_replace(running.len());
            }
            active.finished.send_replace(Some(record));
        });
        Ok(run_id)
    }

    /// The sync's running run on this node, if any.
    pub fn active(&self, sync: &SyncId) -> Option<Arc<ActiveRun>> {
        self.active.lock().get(sync).cloned()
    }

    /// Every run in progress on this node.
    pub fn active_runs(&self) -> Vec<Arc<ActiveRun>> {
        self.active.lock().values().cloned().collect()
    }

    /// The running run `run_id` of `sync`, if it is the one running here.
    pub fn active_run(&self, sync: &SyncId, run_id: &str) -> Option<Arc<ActiveRun>> {
        self.active(sync).filter(|r| r.run_id == run_id)
    }

    /// A finished run that left no record in the state store.
    pub fn unrecorded(&self, sync: &SyncId, run_id: &str) -> Option<RunRecord> {
        self.unrecorded
            .lock()
            .iter()
            .find(|r| &r.sync == sync && r.run_id == run_id)
            .cloned()
    }

    /// What started a run on this node, when it was started since the node started.
    pub fn reason(&self, sync: &SyncId, run_id: &str) -> Option<TriggerReason> {
        self.reasons
            .lock()
            .iter()
            .rev()
            .find(|(s, r, _)| s == sync && r == run_id)
            .map(|(_, _, reason)| *reason)
    }

    /// Asks a running run to stop. Returns at once; [`Self::finished`] waits for the end.
    pub fn cancel(&self, sync: &SyncId, run_id: &str) -> Result<(), CancelError> {
        match self.active_run(sync, run_id) {
            Some(run) => {
                tracing::info!(sync = %sync, run = %run_id, "run cancellation requested");
                run.cancel.send_replace(true);
                Ok(())
            }
            None => Err(CancelError::NotRunning {
                sync: sync.clone(),
                run_id: run_id.to_string(),
            }),
        }
    }

    /// Resolves with the run's final record once it ends (None when it is not running here).
    pub fn finished(
        &self,
        sync: &SyncId,
        run_id: &str,
    ) -> Option<impl std::future::Future<Output = Option<RunRecord>> + Send + 'static> {
        let mut finished = self.active_run(sync, run_id)?.finished.subscribe();
        Some(async move {
            finished
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|r| r.clone())
        })
    }

    /// Keeps `sync` from starting until the guard is dropped; refused while it runs.
    pub fn hold(&self, sync: &SyncId) -> Result<Hold, TriggerError> {
        let Some(manager) = self.me.upgrade() else {
            return Err(TriggerError::Unavailable {
                sync: sync.clone(),
                reason: "the node is stopping".into(),
            });
        };
        let mut held = self.held.lock();
        if let Some(current) = self.active.lock().get(sync) {
            return Err(TriggerError::AlreadyRunning {
                sync: sync.clone(),
                run_id: current.run_id.clone(),
            });
        }
        if !held.insert(sync.clone()) {
            return Err(TriggerError::Unavailable {
                sync: sync.clone(),
                reason: "the sync is being changed or deleted".into(),
            });
        }
        Ok(Hold {
            manager,
            sync: sync.clone(),
        })
    }

    /// Whether a sync of `tenant` runs here now.
    pub fn tenant_busy(&self, tenant: &str) -> Option<SyncId> {
        self.active
            .lock()
            .keys()
            .find(|s| s.tenant() == tenant)
            .cloned()
    }

    /// Cancels every run and waits until all have ended (a node stopping).
    pub async fn shutdown(&self) {
        for run in self.active_runs() {
            run.cancel.send_replace(true);
        }
        let mut idle = self.idle.subscribe();
        let _ = idle.wait_for(|n| *n == 0).await;
        if let Some(notifier) = &self.notifier {
            notifier.flush().await;
        }
    }
}

/// Rates and an estimate for a run, from its counters and elapsed time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunRates {
    pub elapsed_seconds: f64,
    pub rows_per_second: f64,
    pub records_per_second: f64,
}

impl RunRates {
    pub fn of(counts: &RunCounts, elapsed_seconds: f64) -> Self {
        let per_second = |n: u64| {
            if elapsed_seconds > 0.0 {
                n as f64 / elapsed_seconds
            } else {
                0.0
            }
        };
        Self {
            elapsed_seconds,
            rows_per_second: per_second(counts.rows_read),
            records_per_second: per_second(counts.records_accepted),
        }
    }

}

/// Seconds left until `total` is done, at the rate rows got done since the total was known
/// (`rows_done` now, at `now`). None until a row is done after that (no rate yet).
pub fn eta_seconds(total: &KnownTotal, rows_done: u64, now: Instant) -> Option<f64> {
    let done = rows_done.saturating_sub(total.done_before);
    let left = total.rows.saturating_sub(done);
    if left == 0 {
        return Some(0.0);
    }
    let elapsed = now.saturating_duration_since(total.since).as_secs_f64();
    (done > 0 && elapsed > 0.0).then(|| left as f64 * elapsed / done as f64)
}

#[async_trait]
impl SyncTrigger for RunManager {
    async fn trigger(&self, sync: &SyncId, reason: TriggerReason) -> Result<String, TriggerError> {
        self.start_run(sync, reason).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_eta_counts_from_when_the_total_became_known() {
        let progress = RunProgress::default();
        // Rows done before the total was known (a Mirror run's earlier work) count for neither
        // the total nor the rate.
        progress.records_accepted.store(500, Ordering::Relaxed);
        progress.add_rows_total(1000);
        let total = progress.total().expect("known");
        assert_eq!((total.rows, total.done_before), (1000, 500));
        assert_eq!(
            eta_seconds(&total, progress.rows_done(), total.since + Duration::from_secs(5)),
            None,
            "no rate before a row is done"
        );

        // 250 of 1000 done in 10 s (accepted, refused, invalid and unapplied deletes all
        // count): 750 left at 25 rows/s.
        progress.records_accepted.fetch_add(200, Ordering::Relaxed);
        progress.records_refused.fetch_add(20, Ordering::Relaxed);
        progress.rows_invalid.fetch_add(20, Ordering::Relaxed);
        progress.deletes_not_applied.fetch_add(10, Ordering::Relaxed);
        let now = total.since + Duration::from_secs(10);
        let eta = eta_seconds(&total, progress.rows_done(), now).unwrap();
        assert!((eta - 30.0).abs() < 1e-9, "{eta}");

        // A second generation adds to the total, from the same start.
        progress.add_rows_total(250);
        let total = progress.total().unwrap();
        assert_eq!((total.rows, total.done_before), (1250, 500));
        let eta = eta_seconds(&total, progress.rows_done(), now).unwrap();
        assert!((eta - 40.0).abs() < 1e-9, "{eta}");

        // Done (or over, after a resend): nothing left.
        progress.records_accepted.fetch_add(2000, Ordering::Relaxed);
        assert_eq!(eta_seconds(&total, progress.rows_done(), now), Some(0.0));
    }
}
