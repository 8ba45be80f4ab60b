//! Running syncs on their schedules.
//!
//! The [`Scheduler`] keeps each active sync's next due time and, when it comes, asks a
//! [`SyncTrigger`] (the node's run manager) to start a run. Its rules:
//!
//! - **One run at a time.** The trigger refuses a sync that is running
//!   ([`TriggerError::AlreadyRunning`]); a tick that finds its sync running is *coalesced*: it
//!   is retried every [`SchedulerSettings::busy_retry`] until the run ends and then fires
//!   once, however many ticks passed meanwhile. The next tick is computed from that run.
//! - **Missed ticks run once.** The next due time is computed from the last time the sync was
//!   triggered — the newest run in the state store's run history when the scheduler first
//!   sees a sync (after a restart, say), else the last time this scheduler fired it. After
//!   five hours of downtime an hourly sync is due once, at once, and then on the hour again.
//! - **Run slots.** A node runs at most so many syncs at once (the run manager's slots); a
//!   due sync beyond that is still triggered — its run waits for a slot, queued in order of
//!   due time — and a later tick for a sync whose run still waits is coalesced into it.
//! - **Paused and manual syncs never fire.** Resuming does not catch up the ticks missed while
//!   paused: the next regular tick fires.
//! - **`every N`** fires at once for a sync that never ran, then N after each run's start;
//!   calendar schedules (hourly, daily, weekly, cron) wait for their next time.
//!
//! The admin API tells the scheduler about syncs created, updated, paused, resumed
//! ([`Scheduler::upsert`]) and deleted ([`Scheduler::remove`]); [`Scheduler::run`] is its
//! loop. Time comes from a [`Clock`], so tests move it by hand ([`ManualClock`]).

mod clock;
mod scheduler;

pub use clock::{Clock, ManualClock, SystemClock};
pub use scheduler::{Fired, Scheduler, SchedulerSettings};

use async_trait::async_trait;
use ferry_core::error::{Classify, ErrorClass};

use crate::records::SyncId;

/// Why a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriggerReason {
    /// The sync's schedule came due.
    Schedule,
    /// The admin API's `TriggerSync`.
    Api,
    /// The sync's HTTP trigger URL.
    Http,
}

impl TriggerReason {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerReason::Schedule => "schedule",
            TriggerReason::Api => "api",
            TriggerReason::Http => "http",
        }
    }
}

/// Why a trigger did not start a run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("sync {sync} is already running (run {run_id})")]
    AlreadyRunning { sync: SyncId, run_id: String },
    #[error("sync {0} is paused")]
    Paused(SyncId),
    #[error("sync {0} does not exist")]
    NotFound(SyncId),
    /// The run could not be started now (the state store is unreachable, the node is
    /// draining); worth trying again later.
    #[error("sync {sync} could not be started: {reason}")]
    Unavailable { sync: SyncId, reason: String },
}

impl Classify for TriggerError {
    fn class(&self) -> ErrorClass {
        match self {
            TriggerError::AlreadyRunning { .. } | TriggerError::Unavailable { .. } => {
                ErrorClass::Retryable
            }
            TriggerError::Paused(_) | TriggerError::NotFound(_) => ErrorClass::Fatal,
        }
    }
}

/// Starts a run of a sync, without waiting for it: the node's run manager implements it. It
/// must refuse a sync that is already running ([`TriggerError::AlreadyRunning`]) — the
/// scheduler relies on that for "one run at a time".
#[async_trait]
pub trait SyncTrigger: Send + Sync {
    /// The new run's id.
    async fn trigger(&self, sync: &SyncId, reason: TriggerReason) -> Result<String, TriggerError>;
}
