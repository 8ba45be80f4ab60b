//! The node's runs of catalog syncs: starts them (for the API, the scheduler and the HTTP
//! trigger alike, through [`SyncTrigger`]), keeps one run per sync at a time, shows a running
//! run's live counters, cancels runs, and notifies webhooks when a run ends.
//!
//! A second trigger while a sync runs is refused with [`TriggerError::AlreadyRunning`], which
//! names the running run (the admin API answers `ALREADY_EXISTS`, the HTTP trigger 409); it
//! never queues a second run. Across nodes the state store's claim is the guard: a node that
//! cannot claim the sync records nothing and the trigger's run ends as "not started".
//!
//! Run slots: at most `max_runs` runs go at once ([`DEFAULT_MAX_RUNS`] unless the node says). A trigger beyond that is
//! accepted (it gets its run id) and its run waits, first come first served, until a run ends
//! and frees a slot; the admin API shows it as queued. A trigger for a sync whose run is
//! waiting is accepted too and answered with that run's id (coalesced), so a scheduled tick
//! or an impatient API caller never queues a second run of one sync. [`RunManager::slot_use`]
//! follows how many run and how many wait (a cluster node reports it as its load).
//!
//! Cancelling is cooperative: the run's supervisor stops the pipeline, the run is recorded as
//! `cancelled`, and the cursor stays at its last commit. A waiting run that is cancelled leaves
//! the queue at once and is never started.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ferry_actors::pipeline::{KnownTotal, RunProgress};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::admin::specs::{Job, ResolveError, SpecResolver};
use crate::catalog::CatalogError;
use crate::notify::Notifier;
use crate::records::{RunCounts, RunRecord, RunState, SyncId};
use crate::runner::{new_run_id, RunControl, RunnerError, RunnerSettings, SyncRunner};
use crate::schedule::{SyncTrigger, TriggerError, TriggerReason};
use crate::store::StateStore;

/// Runs that ended without a record in the state store (they could not claim the sync, say),
/// kept in memory so that their trigger can still find out what happened.
const UNRECORDED_KEPT: usize = 200;
/// Trigger reasons remembered for finished runs.
const REASONS_KEPT: usize = 1000;
/// A node's run slots unless it is configured otherwise.
pub const DEFAULT_MAX_RUNS: usize = 4;

mod slots;

use slots::RunSlots;
pub use slots::SlotUse;

/// A run in progress on this node, or waiting for one of its run slots.
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
    /// Still waiting for a run slot (nothing read or sent yet).
    waiting: AtomicBool,
}

impl ActiveRun {
    /// Whether the run still waits for a run slot.
    pub fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }

    /// The run as it stands: state running (queued while it waits for a slot), live counters.
    pub fn snapshot(&self) -> RunRecord {
        let mut run = RunRecord::queued(
            self.sync.clone(),
            self.run_id.clone(),
            self.import_id.clone(),
            self.queued_at,
        );
        if !self.is_waiting() {
            run.state = RunState::Running;
            run.started_at = Some(self.queued_at);
        }
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

/// A triggered run with what it needs to start once it has a slot.
struct Pending {
    active: Arc<ActiveRun>,
    job: Arc<Job>,
    cancel: watch::Receiver<bool>,
}

/// The node's runs: at most one per sync, each holding a run slot or waiting for one.
struct Runs {
    by_sync: HashMap<SyncId, Arc<ActiveRun>>,
    slots: RunSlots<Pending>,
}

/// What executes a run once it has a slot: the [`SyncRunner`] (tests hold runs open at will).
type Execute = Arc<
    dyn Fn(
            Arc<Job>,
            RunnerSettings,
            RunControl,
            Arc<RunProgress>,
        ) -> Pin<Box<dyn Future<Output = Result<RunRecord, RunnerError>> + Send>>
        + Send
        + Sync,
>;

fn sync_runner(store: Arc<dyn StateStore>) -> Execute {
    Arc::new(move |job, settings, control, progress| {
        let runner = SyncRunner::new(store.clone(), settings).with_control(control);
        Box::pin(async move {
            runner
                .run(&job.tenant, &job.source, &job.sync, progress)
                .await
        })
    })
}

pub struct RunManager {
    /// Itself, for the tasks it spawns (it always lives in the `Arc` that `new` made).
    me: Weak<RunManager>,
    resolver: SpecResolver,
    store: Arc<dyn StateStore>,
    settings: RunnerSettings,
    notifier: Option<Notifier>,
    runs: Mutex<Runs>,
    execute: Execute,
    /// Syncs being changed or deleted: not started meanwhile.
    held: Mutex<HashSet<SyncId>>,
    unrecorded: Mutex<VecDeque<RunRecord>>,
    reasons: Mutex<VecDeque<(SyncId, String, TriggerReason)>>,
    slot_use: watch::Sender<SlotUse>,
}

impl std::fmt::Debug for RunManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunManager")
            .field("slots", &self.slot_use.borrow())
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
        Self::with_slots(resolver, store, settings, notifier, DEFAULT_MAX_RUNS)
    }

    /// A run manager that runs at most `max_runs` runs at once (at least one).
    pub fn with_slots(
        resolver: SpecResolver,
        store: Arc<dyn StateStore>,
        settings: RunnerSettings,
        notifier: Option<Notifier>,
        max_runs: usize,
    ) -> Arc<Self> {
        let execute = sync_runner(store.clone());
        Self::with_executor(resolver, store, settings, notifier, max_runs, execute)
    }

    fn with_executor(
        resolver: SpecResolver,
        store: Arc<dyn StateStore>,
        settings: RunnerSettings,
        notifier: Option<Notifier>,
        max_runs: usize,
        execute: Execute,
    ) -> Arc<Self> {
        let slots = RunSlots::new(max_runs);
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            resolver,
            store,
            settings,
            notifier,
            runs: Mutex::new(Runs {
                by_sync: HashMap::new(),
                slots,
            }),
            execute,
            held: Mutex::default(),
            unrecorded: Mutex::default(),
            reasons: Mutex::default(),
            slot_use: watch::Sender::new(SlotUse::default()),
        })
    }

    /// How many runs hold a slot and how many wait, as it changes.
    pub fn slot_use(&self) -> watch::Receiver<SlotUse> {
        self.slot_use.subscribe()
    }

    fn publish(&self, runs: &Runs) {
        self.slot_use.send_if_modified(|now| {
            let used = runs.slots.used();
            let changed = *now != used;
            *now = used;
            changed
        });
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
            waiting: AtomicBool::new(true),
        });
        let (start_now, used) = {
            if self.held.lock().contains(sync) {
                return Err(TriggerError::Unavailable {
                    sync: sync.clone(),
                    reason: "the sync is being changed or deleted".into(),
                });
            }
            let mut runs = self.runs.lock();
            if let Some(current) = runs.by_sync.get(sync) {
                if current.is_waiting() {
                    // Its run has not started yet: this trigger is answered by it.
                    tracing::debug!(sync = %sync, run = %current.run_id, reason = reason.as_str(), "trigger coalesced into the run waiting for a slot");
                    return Ok(current.run_id.clone());
                }
                return Err(TriggerError::AlreadyRunning {
                    sync: sync.clone(),
                    run_id: current.run_id.clone(),
                });
            }
            runs.by_sync.insert(sync.clone(), active.clone());
            let start_now = runs.slots.admit(Pending {
                active: active.clone(),
                job: Arc::new(job),
                cancel: cancel_rx,
            });
            self.publish(&runs);
            (start_now, runs.slots.used())
        };
        {
            let mut reasons = self.reasons.lock();
            reasons.push_back((sync.clone(), run_id.clone(), reason));
            while reasons.len() > REASONS_KEPT {
                reasons.pop_front();
            }
        }
        match start_now {
            Some(pending) => {
                tracing::info!(sync = %sync, run = %run_id, reason = reason.as_str(), "run started");
                manager.launch(pending);
            }
            None => {
                tracing::info!(sync = %sync, run = %run_id, reason = reason.as_str(), running = used.running, waiting = used.waiting, "run waits for a run slot");
            }
        }
        Ok(run_id)
    }

    /// Starts a run that holds a slot; when it ends, its slot goes to the next waiting run.
    fn launch(self: Arc<Self>, pending: Pending) {
        let Pending {
            active,
            job,
            cancel,
        } = pending;
        active.waiting.store(false, Ordering::Release);
        let mut settings = self.settings.clone();
        settings.receiver_extensions = job.receiver_extensions;
        let control = RunControl {
            run_id: Some(active.run_id.clone()),
            cancel: Some(cancel),
        };
        let run = (self.execute)(job.clone(), settings, control, active.progress.clone());
        tokio::spawn(async move {
            let record = match run.await {
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
                    let state = if active.cancel_requested() {
                        RunState::Cancelled
                    } else {
                        RunState::Failed
                    };
                    self.keep_unrecorded(&active, state, format!("not started: {e}"))
                }
            };
            if let Some(notifier) = &self.notifier {
                let recent = self
                    .store
                    .list_runs(&active.sync, 50)
                    .await
                    .unwrap_or_default();
                notifier.run_finished(&job.tenant, &job.sync, &record, &recent);
            }
            let next = {
                let mut runs = self.runs.lock();
                if runs
                    .by_sync
                    .get(&active.sync)
                    .is_some_and(|r| r.run_id == active.run_id)
                {
                    runs.by_sync.remove(&active.sync);
                }
                let next = runs.slots.release();
                self.publish(&runs);
                next
            };
            active.finished.send_replace(Some(record));
            if let Some(next) = next {
                tracing::info!(sync = %next.active.sync, run = %next.active.run_id, reason = next.active.reason.as_str(), "run started (a run slot freed)");
                self.launch(next);
            }
        });
    }

    /// The record of a run that ended without one in the state store, kept for its trigger.
    fn keep_unrecorded(&self, active: &ActiveRun, state: RunState, message: String) -> RunRecord {
        let mut record = active.snapshot();
        record.state = state;
        record.finished_at = Some(Utc::now());
        record.message = Some(message);
        let mut kept = self.unrecorded.lock();
        kept.push_back(record.clone());
        while kept.len() > UNRECORDED_KEPT {
            kept.pop_front();
        }
        record
    }

    /// The sync's running run on this node, if any.
    pub fn active(&self, sync: &SyncId) -> Option<Arc<ActiveRun>> {
        self.runs.lock().by_sync.get(sync).cloned()
    }

    /// Every run in progress on this node, and every run waiting for a slot.
    pub fn active_runs(&self) -> Vec<Arc<ActiveRun>> {
        self.runs.lock().by_sync.values().cloned().collect()
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

    /// Asks a running run to stop. Returns at once; [`Self::finished`] waits for the end. A
    /// run waiting for a slot leaves the queue and ends now, cancelled, never started.
    pub fn cancel(&self, sync: &SyncId, run_id: &str) -> Result<(), CancelError> {
        let Some(run) = self.active_run(sync, run_id) else {
            return Err(CancelError::NotRunning {
                sync: sync.clone(),
                run_id: run_id.to_string(),
            });
        };
        tracing::info!(sync = %sync, run = %run_id, "run cancellation requested");
        run.cancel.send_replace(true);
        let withdrawn = {
            let mut runs = self.runs.lock();
            let withdrawn = runs.slots.withdraw(|p| Arc::ptr_eq(&p.active, &run));
            if withdrawn.is_some() {
                runs.by_sync.remove(sync);
                self.publish(&runs);
            }
            withdrawn
        };
        if let Some(pending) = withdrawn {
            let record = self.keep_unrecorded(
                &pending.active,
                RunState::Cancelled,
                "cancelled while waiting for a run slot".into(),
            );
            pending.active.finished.send_replace(Some(record));
        }
        Ok(())
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
        if let Some(current) = self.runs.lock().by_sync.get(sync) {
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
        self.runs
            .lock()
            .by_sync
            .keys()
            .find(|s| s.tenant() == tenant)
            .cloned()
    }

    /// Cancels every run and waits until all have ended (a node stopping).
    pub async fn shutdown(&self) {
        for run in self.active_runs() {
            let _ = self.cancel(&run.sync, &run.run_id);
        }
        let mut used = self.slot_use.subscribe();
        let _ = used.wait_for(|n| n.total() == 0).await;
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
mod slot_tests;

#[cfg(test)]
mod tests {
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
            eta_seconds(
                &total,
                progress.rows_done(),
                total.since + Duration::from_secs(5)
            ),
            None,
            "no rate before a row is done"
        );

        // 250 of 1000 done in 10 s (accepted, refused, invalid and unapplied deletes all
        // count): 750 left at 25 rows/s.
        progress.records_accepted.fetch_add(200, Ordering::Relaxed);
        progress.records_refused.fetch_add(20, Ordering::Relaxed);
        progress.rows_invalid.fetch_add(20, Ordering::Relaxed);
        progress
            .deletes_not_applied
            .fetch_add(10, Ordering::Relaxed);
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
