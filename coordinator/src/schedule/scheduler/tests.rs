//! The scheduler against a real embedded state store, with a hand-moved clock. The trigger
//! stands in for the run manager the way it behaves towards the scheduler: it claims the sync
//! in the store (so a second run of a running sync is refused by the store's claim, as in
//! production), records the run, and keeps it running until the test finishes it.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration as Span, Utc};
use ferry_core::schedule::Schedule;
use parking_lot::Mutex;

use super::*;
use crate::records::{RunRecord, RunState};
use crate::schedule::ManualClock;
use crate::store::{Fence, StoreError};
use crate::{EmbeddedSettings, EmbeddedStore};

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn sync_id(name: &str) -> SyncId {
    SyncId::new("acme", name).unwrap()
}

struct StoreTrigger {
    store: Arc<dyn StateStore>,
    clock: ManualClock,
    /// Finish every run as soon as it starts.
    instant_runs: bool,
    running: Mutex<HashMap<SyncId, (Fence, RunRecord)>>,
    started: Mutex<Vec<(SyncId, DateTime<Utc>)>>,
    attempts: Mutex<u32>,
    seq: Mutex<u32>,
}

impl StoreTrigger {
    fn new(store: Arc<dyn StateStore>, clock: ManualClock, instant_runs: bool) -> Arc<Self> {
        Arc::new(Self {
            store,
            clock,
            instant_runs,
            running: Mutex::new(HashMap::new()),
            started: Mutex::new(Vec::new()),
            attempts: Mutex::new(0),
            seq: Mutex::new(0),
        })
    }

    async fn finish(&self, sync: &SyncId) {
        let (fence, mut run) = self.running.lock().remove(sync).expect("a running run");
        run.state = RunState::Succeeded;
        run.finished_at = Some(self.clock.now());
        self.store.put_run(&fence, &run).await.unwrap();
        self.store.release(&fence).await.unwrap();
    }

    fn started_at(&self, sync: &SyncId) -> Vec<DateTime<Utc>> {
        self.started
            .lock()
            .iter()
            .filter(|(s, _)| s == sync)
            .map(|(_, t)| *t)
            .collect()
    }
}

#[async_trait]
impl SyncTrigger for StoreTrigger {
    async fn trigger(&self, sync: &SyncId, _: TriggerReason) -> Result<String, TriggerError> {
        *self.attempts.lock() += 1;
        let fence = match self.store.claim(sync, "node-1").await {
            Ok(fence) => fence,
            Err(StoreError::Owned { .. }) => {
                let run_id = self.running.lock()[sync].1.run_id.clone();
                return Err(TriggerError::AlreadyRunning {
                    sync: sync.clone(),
                    run_id,
                });
            }
            Err(e) => panic!("{e}"),
        };
        let run_id = {
            let mut seq = self.seq.lock();
            *seq += 1;
            format!("run-{seq}")
        };
        let now = self.clock.now();
        let mut run = RunRecord::queued(sync.clone(), &run_id, &run_id, now);
        run.state = RunState::Running;
        run.started_at = Some(now);
        self.store.put_run(&fence, &run).await.unwrap();
        self.started.lock().push((sync.clone(), now));
        self.running.lock().insert(sync.clone(), (fence, run));
        if self.instant_runs {
            self.finish(sync).await;
        }
        Ok(run_id)
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    store: Arc<dyn StateStore>,
    clock: ManualClock,
    trigger: Arc<StoreTrigger>,
    scheduler: Scheduler,
}

fn settings() -> SchedulerSettings {
    SchedulerSettings {
        busy_retry: std::time::Duration::from_secs(15),
        error_retry: std::time::Duration::from_secs(60),
    }
}

fn rig(start: &str, instant_runs: bool) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn StateStore> =
        Arc::new(EmbeddedStore::open_in(dir.path(), EmbeddedSettings::default()).unwrap());
    let clock = ManualClock::new(utc(start));
    let trigger = StoreTrigger::new(store.clone(), clock.clone(), instant_runs);
    let scheduler = Scheduler::new(
        Arc::new(clock.clone()),
        trigger.clone(),
        store.clone(),
        settings(),
    );
    Rig {
        _dir: dir,
        store,
        clock,
        trigger,
        scheduler,
    }
}

impl Rig {
    /// Moves the clock to `until` in steps of `step`, ticking after each.
    async fn tick_through(&self, until: &str, step: Span) -> Vec<Fired> {
        let until = utc(until);
        let mut fired = Vec::new();
        while self.clock.now() < until {
            self.clock.advance(step);
            fired.extend(self.scheduler.tick().await);
        }
        fired
    }
}

#[tokio::test]
async fn hourly_fires_at_each_hour_boundary() {
    let r = rig("2026-05-06T09:20:00Z", true);
    let orders = sync_id("orders");
    r.scheduler
        .upsert(
            orders.clone(),
            Schedule::parse("hourly", None).unwrap(),
            false,
        )
        .await;
    assert_eq!(
        r.scheduler.next_due(&orders),
        Some(utc("2026-05-06T10:00:00Z"))
    );
    let fired = r
        .tick_through("2026-05-06T15:00:00Z", Span::minutes(5))
        .await;
    let expected: Vec<_> = (10..=15)
        .map(|h| utc(&format!("2026-05-06T{h}:00:00Z")))
        .collect();
    assert_eq!(fired.iter().map(|f| f.at).collect::<Vec<_>>(), expected);
    assert!(fired.iter().all(|f| f.due == f.at && f.sync == orders));
    assert_eq!(r.trigger.started_at(&orders), expected);
    assert_eq!(
        r.scheduler.next_due(&orders),
        Some(utc("2026-05-06T16:00:00Z"))
    );
    // The run ids are the trigger's, and the history holds every run.
    assert_eq!(fired[0].run_id, "run-1");
    assert_eq!(r.store.list_runs(&orders, 100).await.unwrap().len(), 6);
}

#[tokio::test]
async fn cron_in_a_time_zone_keeps_local_time_across_dst_changes() {
    let r = rig("2026-03-27T12:00:00Z", true);
    let nightly = sync_id("nightly");
    let weekdays = sync_id("weekdays");
    let berlin = Some("Europe/Berlin");
    r.scheduler
        .upsert(
            nightly.clone(),
            Schedule::parse("30 2 * * *", berlin).unwrap(),
            false,
        )
        .await;
    r.scheduler
        .upsert(
            weekdays.clone(),
            Schedule::parse("0 9 * * 1-5", berlin).unwrap(),
            false,
        )
        .await;
    r.tick_through("2026-04-01T00:00:00Z", Span::minutes(15))
        .await;
    // 2026-03-29: 02:00 CET jumps to 03:00 CEST. 02:30 does not exist that night: it runs
    // once, when the gap ends; afterwards 02:30 is 00:30 UTC.
    assert_eq!(
        r.trigger.started_at(&nightly),
        vec![
            utc("2026-03-28T01:30:00Z"),
            utc("2026-03-29T01:00:00Z"),
            utc("2026-03-30T00:30:00Z"),
            utc("2026-03-31T00:30:00Z"),
        ]
    );
    // 09:00 Berlin on weekdays: 08:00 UTC before the change, 07:00 after; not at the weekend.
    assert_eq!(
        r.trigger.started_at(&weekdays),
        vec![utc("2026-03-30T07:00:00Z"), utc("2026-03-31T07:00:00Z"),]
    );

    // 2026-10-25: 03:00 CEST falls back to 02:00 CET, so 02:30 happens twice: one run.
    r.clock.set(utc("2026-10-23T12:00:00Z"));
    r.scheduler.remove(&weekdays);
    r.scheduler
        .upsert(
            nightly.clone(),
            Schedule::parse("daily at 02:30", berlin).unwrap(),
            false,
        )
        .await;
    let fired = r
        .tick_through("2026-10-27T00:00:00Z", Span::minutes(15))
        .await;
    assert_eq!(
        fired.iter().map(|f| f.at).collect::<Vec<_>>(),
        vec![
            // The first tick after the jump back in time is the catch-up of the tick after
            // the last run (2026-03-31), run once.
            utc("2026-10-23T12:15:00Z"),
            utc("2026-10-24T00:30:00Z"),
            utc("2026-10-25T00:30:00Z"),
            utc("2026-10-26T01:30:00Z"),
        ]
    );
}

#[tokio::test]
async fn ticks_missed_during_five_hours_of_downtime_run_once() {
    let r = rig("2026-05-06T09:59:00Z", true);
    let orders = sync_id("orders");
    let hourly = Schedule::parse("hourly", None).unwrap();
    r.scheduler
        .upsert(orders.clone(), hourly.clone(), false)
        .await;
    let fired = r
        .tick_through("2026-05-06T10:00:00Z", Span::minutes(1))
        .await;
    assert_eq!(fired.len(), 1);

    // The node goes down for five hours and ten minutes; a new scheduler (a restarted node)
    // learns the last run from the store's run history.
    drop(r.scheduler);
    r.clock.set(utc("2026-05-06T15:10:00Z"));
    let restarted = Scheduler::new(
        Arc::new(r.clock.clone()),
        r.trigger.clone(),
        r.store.clone(),
        settings(),
    );
    restarted.upsert(orders.clone(), hourly, false).await;
    assert_eq!(
        restarted.next_due(&orders),
        Some(utc("2026-05-06T11:00:00Z"))
    );
    let fired = restarted.tick().await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].due, utc("2026-05-06T11:00:00Z"));
    assert_eq!(fired[0].at, utc("2026-05-06T15:10:00Z"));
    assert!(
        restarted.tick().await.is_empty(),
        "the missed ticks ran once"
    );
    assert_eq!(
        restarted.next_due(&orders),
        Some(utc("2026-05-06T16:00:00Z"))
    );
    assert_eq!(r.trigger.started_at(&orders).len(), 2);
}

#[tokio::test]
async fn a_slow_run_is_never_overlapped_and_its_missed_ticks_coalesce_into_one() {
    let r = rig("2026-05-06T09:55:00Z", false);
    let orders = sync_id("orders");
    r.scheduler
        .upsert(
            orders.clone(),
            Schedule::parse("hourly", None).unwrap(),
            false,
        )
        .await;
    let fired = r
        .tick_through("2026-05-06T10:00:00Z", Span::minutes(1))
        .await;
    assert_eq!(fired.len(), 1);
    let attempts_before = *r.trigger.attempts.lock();

    // The run takes until 12:40: the ticks of 11:00 and 12:00 find it running. One tick is
    // kept pending, retried every 15 s (busy_retry) although the loop ticks every 5 s here.
    let fired = r
        .tick_through("2026-05-06T12:40:00Z", Span::seconds(5))
        .await;
    assert!(fired.is_empty(), "{fired:?}");
    assert_eq!(
        r.scheduler.next_due(&orders),
        Some(utc("2026-05-06T11:00:00Z"))
    );
    let retries = *r.trigger.attempts.lock() - attempts_before;
    assert_eq!(retries, 100 * 4 + 1, "11:00:00 to 12:40:00 every 15 s");

    r.trigger.finish(&orders).await;
    let fired = r
        .tick_through("2026-05-06T13:30:00Z", Span::seconds(5))
        .await;
    assert_eq!(fired.len(), 1, "the two missed ticks ran once: {fired:?}");
    assert_eq!(fired[0].due, utc("2026-05-06T11:00:00Z"));
    assert_eq!(fired[0].at, utc("2026-05-06T12:40:15Z"));
    // That run is still going at 13:00: nothing new starts, one tick is pending.
    assert_eq!(
        r.scheduler.next_due(&orders),
        Some(utc("2026-05-06T13:00:00Z"))
    );
    assert_eq!(r.trigger.started_at(&orders).len(), 2);
    let runs = r.store.list_runs(&orders, 10).await.unwrap();
    assert_eq!(
        runs.iter()
            .filter(|run| run.state == RunState::Running)
            .count(),
        1,
        "never two runs at once"
    );
}

#[tokio::test]
async fn pausing_stops_firing_and_resuming_does_not_catch_up() {
    let r = rig("2026-05-06T09:30:00Z", true);
    let orders = sync_id("orders");
    let hourly = Schedule::parse("hourly", None).unwrap();
    r.scheduler
        .upsert(orders.clone(), hourly.clone(), false)
        .await;
    assert_eq!(
        r.tick_through("2026-05-06T10:10:00Z", Span::minutes(5))
            .await
            .len(),
        1
    );

    r.scheduler
        .upsert(orders.clone(), hourly.clone(), true)
        .await;
    assert_eq!(r.scheduler.next_due(&orders), None);
    assert!(r
        .tick_through("2026-05-06T13:20:00Z", Span::minutes(5))
        .await
        .is_empty());

    r.scheduler.upsert(orders.clone(), hourly, false).await;
    assert_eq!(
        r.scheduler.next_due(&orders),
        Some(utc("2026-05-06T14:00:00Z"))
    );
    let fired = r
        .tick_through("2026-05-06T14:00:00Z", Span::minutes(5))
        .await;
    assert_eq!(
        fired.iter().map(|f| f.at).collect::<Vec<_>>(),
        vec![utc("2026-05-06T14:00:00Z")]
    );
}

#[tokio::test]
async fn trigger_only_never_fires_and_every_counts_from_the_last_run() {
    let r = rig("2026-05-06T09:30:00Z", true);
    let manual = sync_id("manual");
    let every = sync_id("every");
    r.scheduler
        .upsert(manual.clone(), Schedule::manual(), false)
        .await;
    r.scheduler
        .upsert(
            every.clone(),
            Schedule::parse("every 90m", None).unwrap(),
            false,
        )
        .await;
    assert_eq!(r.scheduler.next_due(&manual), None);
    // `every` has no phase: a sync that never ran runs at once.
    assert_eq!(
        r.scheduler.next_due(&every),
        Some(utc("2026-05-06T09:30:00Z"))
    );
    let fired = r.scheduler.tick().await;
    assert_eq!(fired.len(), 1);
    // Someone triggers it by hand at 10:00: the interval counts from that run.
    r.clock.set(utc("2026-05-06T10:00:00Z"));
    r.scheduler.note_triggered(&every, r.clock.now());
    assert_eq!(
        r.scheduler.next_due(&every),
        Some(utc("2026-05-06T11:30:00Z"))
    );
    r.tick_through("2026-05-13T10:00:00Z", Span::minutes(30))
        .await;
    assert!(r.trigger.started_at(&manual).is_empty());
    assert_eq!(r.trigger.started_at(&every).len(), 1 + 7 * 24 * 60 / 90);
}

#[tokio::test]
async fn deleted_syncs_stop_and_unknown_ones_are_dropped() {
    let r = rig("2026-05-06T09:30:00Z", true);
    let gone = sync_id("gone");
    r.scheduler
        .upsert(
            gone.clone(),
            Schedule::parse("every 10m", None).unwrap(),
            false,
        )
        .await;
    r.scheduler.remove(&gone);
    assert_eq!(r.scheduler.next_due(&gone), None);
    assert!(r
        .tick_through("2026-05-06T12:00:00Z", Span::minutes(10))
        .await
        .is_empty());

    struct Missing;
    #[async_trait]
    impl SyncTrigger for Missing {
        async fn trigger(&self, sync: &SyncId, _: TriggerReason) -> Result<String, TriggerError> {
            Err(TriggerError::NotFound(sync.clone()))
        }
    }
    let scheduler = Scheduler::new(
        Arc::new(r.clock.clone()),
        Arc::new(Missing),
        r.store.clone(),
        settings(),
    );
    scheduler
        .upsert(
            gone.clone(),
            Schedule::parse("every 10m", None).unwrap(),
            false,
        )
        .await;
    assert!(scheduler.tick().await.is_empty());
    assert_eq!(
        scheduler.next_due(&gone),
        None,
        "a sync the catalog lost is forgotten"
    );
}

#[tokio::test]
async fn the_loop_wakes_when_the_clock_passes_a_due_time_and_on_changes() {
    let r = rig("2026-05-06T09:59:00Z", true);
    let orders = sync_id("orders");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = r.scheduler.clone();
    let looping = tokio::spawn(async move {
        scheduler
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    let wait_for_runs = |n: usize| {
        let trigger = r.trigger.clone();
        let orders = orders.clone();
        async move {
            tokio::time::timeout(std::time::Duration::from_secs(10), async {
                while trigger.started_at(&orders).len() < n {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{n} runs expected, got {:?}", trigger.started_at(&orders)));
        }
    };
    // Added while the loop sleeps with nothing to do: it notices.
    r.scheduler
        .upsert(
            orders.clone(),
            Schedule::parse("hourly", None).unwrap(),
            false,
        )
        .await;
    r.clock.advance(Span::minutes(1));
    wait_for_runs(1).await;
    r.clock.advance(Span::minutes(59));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(r.trigger.started_at(&orders).len(), 1, "fired before 11:00");
    r.clock.advance(Span::minutes(1));
    wait_for_runs(2).await;
    assert_eq!(
        r.trigger.started_at(&orders),
        vec![utc("2026-05-06T10:00:00Z"), utc("2026-05-06T11:00:00Z")]
    );
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), looping)
        .await
        .expect("the loop stops on shutdown")
        .unwrap();
}
