//! The scheduler's state and loop (rules in the module documentation of `schedule`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_core::schedule::Schedule;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{Clock, SyncTrigger, TriggerError, TriggerReason};
use crate::records::SyncId;
use crate::store::StateStore;

#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// How often a tick that found its sync still running is retried.
    pub busy_retry: Duration,
    /// How long after a failed trigger (store unavailable, …) it is retried.
    pub error_retry: Duration,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            busy_retry: Duration::from_secs(15),
            error_retry: Duration::from_secs(60),
        }
    }
}

/// A run the scheduler started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub sync: SyncId,
    pub run_id: String,
    /// The tick it was started for (earlier than `at` when the tick was missed or coalesced).
    pub due: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

struct Entry {
    schedule: Schedule,
    paused: bool,
    /// When the sync was last triggered (by anyone, as far as this scheduler knows).
    last_fired: Option<DateTime<Utc>>,
    /// When it was last resumed: ticks before that are not caught up.
    resumed_at: Option<DateTime<Utc>>,
    /// The tick that is due next (None: never).
    due: Option<DateTime<Utc>>,
    /// When to try a due tick again after its sync was busy or the trigger failed.
    retry_at: Option<DateTime<Utc>>,
}

impl Entry {
    /// The next tick, from the last firing (or resumption): possibly in the past, once.
    fn compute_due(&mut self, now: DateTime<Utc>) {
        self.retry_at = None;
        self.due = if self.paused || self.schedule.is_manual() {
            None
        } else {
            let anchor = match (self.last_fired, self.resumed_at) {
                (Some(fired), Some(resumed)) => Some(fired.max(resumed)),
                (fired, resumed) => fired.or(resumed),
            };
            match anchor {
                Some(anchor) => self.schedule.next_after(anchor),
                None if self.schedule.interval().is_some() => Some(now),
                None => self.schedule.next_after(now),
            }
        };
    }

    /// When the scheduler should look at this entry next.
    fn wake_at(&self) -> Option<DateTime<Utc>> {
        match (self.due, self.retry_at) {
            (Some(due), Some(retry)) => Some(due.max(retry)),
            (due, _) => due,
        }
    }
}

struct Inner {
    clock: Arc<dyn Clock>,
    trigger: Arc<dyn SyncTrigger>,
    store: Arc<dyn StateStore>,
    settings: SchedulerSettings,
    entries: Mutex<HashMap<SyncId, Entry>>,
    changed: Notify,
    /// Serializes ticks, so one sync is never triggered by two ticks at once.
    ticking: tokio::sync::Mutex<()>,
}

/// Fires each active sync when due. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Scheduler {
    /// `store` gives each sync's last run when the scheduler first sees it.
    pub fn new(
        clock: Arc<dyn Clock>,
        trigger: Arc<dyn SyncTrigger>,
        store: Arc<dyn StateStore>,
        settings: SchedulerSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                clock,
                trigger,
                store,
                settings,
                entries: Mutex::new(HashMap::new()),
                changed: Notify::new(),
                ticking: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Adds a sync or changes its schedule or paused state (on create, update, pause, resume
    /// and at start-up for every stored sync).
    pub async fn upsert(&self, sync: SyncId, schedule: Schedule, paused: bool) {
        let known = self.inner.entries.lock().contains_key(&sync);
        // The newest run's trigger time, read before taking the lock (it is async).
        let from_history = if known {
            None
        } else {
            self.last_run_queued_at(&sync).await
        };
        let now = self.inner.clock.now();
        {
            let mut entries = self.inner.entries.lock();
            let entry = entries.entry(sync.clone()).or_insert_with(|| Entry {
                schedule: schedule.clone(),
                paused,
                last_fired: from_history,
                resumed_at: None,
                due: None,
                retry_at: None,
            });
            if entry.paused && !paused {
                entry.resumed_at = Some(now);
            }
            let unchanged =
                entry.schedule == schedule && entry.paused == paused && entry.due.is_some();
            entry.schedule = schedule;
            entry.paused = paused;
            // An unchanged schedule keeps a pending (busy) tick; anything else starts afresh.
            if !unchanged {
                entry.compute_due(now);
            }
            tracing::debug!(%sync, schedule = %entry.schedule, paused, due = ?entry.due, "sync scheduled");
        }
        self.inner.changed.notify_one();
    }

    /// Forgets a sync (deleted).
    pub fn remove(&self, sync: &SyncId) {
        self.inner.entries.lock().remove(sync);
        self.inner.changed.notify_one();
    }

    /// Tells the scheduler the sync was just triggered by someone else (the API, its HTTP URL):
    /// an `every` schedule counts its interval from this run.
    pub fn note_triggered(&self, sync: &SyncId, at: DateTime<Utc>) {
        if let Some(entry) = self.inner.entries.lock().get_mut(sync) {
            // A tick waiting for a running run is coalesced into this run too.
            if entry.last_fired.is_none_or(|last| last < at) {
                entry.last_fired = Some(at);
                entry.compute_due(at);
            }
        }
        self.inner.changed.notify_one();
    }

    /// When the sync's schedule next fires (None: paused, manual, or unknown). A time in the
    /// past means it is due now (or waiting for its running run to end).
    pub fn next_due(&self, sync: &SyncId) -> Option<DateTime<Utc>> {
        self.inner.entries.lock().get(sync).and_then(|e| e.due)
    }

    /// Fires every sync that is due now; returns the runs it started.
    pub async fn tick(&self) -> Vec<Fired> {
        let _one_tick_at_a_time = self.inner.ticking.lock().await;
        let now = self.inner.clock.now();
        let mut due: Vec<(SyncId, DateTime<Utc>)> = self
            .inner
            .entries
            .lock()
            .iter()
            .filter(|(_, e)| e.wake_at().is_some_and(|t| t <= now))
            .filter_map(|(sync, e)| e.due.map(|due| (sync.clone(), due)))
            .collect();
        // Oldest tick first: when runs wait for the node's run slots, they queue in that order.
        due.sort_by(|(a, a_due), (b, b_due)| a_due.cmp(b_due).then_with(|| a.cmp(b)));
        let mut fired = Vec::new();
        for (sync, due) in due {
            let result = self
                .inner
                .trigger
                .trigger(&sync, TriggerReason::Schedule)
                .await;
            let at = self.inner.clock.now();
            let mut entries = self.inner.entries.lock();
            // Removed, paused or rescheduled while the trigger ran: its new state stands.
            let Some(entry) = entries.get_mut(&sync).filter(|e| e.due == Some(due)) else {
                continue;
            };
            match result {
                Ok(run_id) => {
                    tracing::info!(%sync, run = %run_id, %due, "scheduled run started");
                    entry.last_fired = Some(at);
                    entry.compute_due(at);
                    fired.push(Fired {
                        sync,
                        run_id,
                        due,
                        at,
                    });
                }
                Err(TriggerError::AlreadyRunning { run_id, .. }) => {
                    tracing::debug!(%sync, running = %run_id, %due, "tick waits for the running run");
                    entry.retry_at = Some(at + self.inner.settings.busy_retry);
                }
                Err(e @ TriggerError::Unavailable { .. }) => {
                    tracing::warn!(%sync, error = %e, "scheduled run not started; retrying");
                    entry.retry_at = Some(at + self.inner.settings.error_retry);
                }
                Err(e @ TriggerError::Paused(_)) => {
                    // The catalog knows better: wait for the API to resume it.
                    tracing::info!(%sync, error = %e, "scheduled run skipped");
                    entry.paused = true;
                    entry.compute_due(at);
                }
                Err(e @ TriggerError::NotFound(_)) => {
                    tracing::warn!(%sync, error = %e, "scheduled sync no longer exists");
                    entries.remove(&sync);
                }
            }
        }
        fired
    }

    /// Runs the scheduler until `shutdown` resolves.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.tick().await;
            let wake = self
                .inner
                .entries
                .lock()
                .values()
                .filter_map(Entry::wake_at)
                .min();
            let sleep = async {
                match wake {
                    Some(at) => self.inner.clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.inner.changed.notified() => {}
                _ = sleep => {}
            }
        }
    }

    async fn last_run_queued_at(&self, sync: &SyncId) -> Option<DateTime<Utc>> {
        match self.inner.store.list_runs(sync, 1).await {
            Ok(runs) => runs.first().map(|run| run.queued_at),
            Err(e) => {
                tracing::warn!(%sync, error = %e, "run history unavailable: a tick missed while the node was down may not be caught up");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;
