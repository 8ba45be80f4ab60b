//! The run manager's run slots, with runs held open by the test: the catalog, the spec
//! resolution, the slots and the scheduler are the real ones; only the pipeline is replaced by
//! a run that ends when the test lets it (or when it is cancelled).

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tokio::sync::oneshot;

use super::*;
use crate::catalog::{Catalog, SourceRecord, SyncRecord, TenantRecord};
use crate::schedule::{ManualClock, Scheduler, SchedulerSettings};
use crate::secrets::SecretBox;
use crate::{EmbeddedSettings, EmbeddedStore};

struct Harness {
    runs: Arc<RunManager>,
    store: Arc<EmbeddedStore>,
    /// Every run the executor started, in order.
    started: Arc<Mutex<Vec<SyncId>>>,
    /// Ends a started run (successfully).
    gates: Arc<Mutex<HashMap<SyncId, oneshot::Sender<()>>>>,
    _dir: tempfile::TempDir,
}

fn id(name: &str) -> SyncId {
    SyncId::new("acme", name).unwrap()
}

async fn harness(max_runs: usize, syncs: &[&str]) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open_in(dir.path(), EmbeddedSettings::default()).unwrap());
    let now = Utc::now();
    let tenant: TenantRecord = serde_json::from_value(json!({
        "id": "acme",
        "spec": {"id": "acme", "name": "Acme", "project_id": 1,
                 "destination": {"base_url": "http://127.0.0.1:9"},
                 "auth": {"project_token": "t"}},
        "created_at": now, "updated_at": now,
    }))
    .unwrap();
    store.create_tenant(&tenant).await.unwrap();
    let source: SourceRecord = serde_json::from_value(json!({
        "tenant": "acme", "id": "db",
        "spec": {"id": "db", "tenant": "acme", "kind": {"sqlite": {"path": "w.db"}}},
        "created_at": now, "updated_at": now,
    }))
    .unwrap();
    store.create_source(&source).await.unwrap();
    for name in syncs {
        let sync: SyncRecord = serde_json::from_value(json!({
            "tenant": "acme", "id": name, "source": "db",
            "spec": {"id": name, "tenant": "acme", "source": "db", "table": "users",
                     "table_type": "user_profiles", "mode": "full", "schedule": "every 1m",
                     "mapping": {"distinct_id_column": "id"}},
            "created_at": now, "updated_at": now,
        }))
        .unwrap();
        store.create_sync(&sync).await.unwrap();
    }

    let started: Arc<Mutex<Vec<SyncId>>> = Arc::default();
    let gates: Arc<Mutex<HashMap<SyncId, oneshot::Sender<()>>>> = Arc::default();
    let execute: Execute = {
        let (started, gates) = (started.clone(), gates.clone());
        Arc::new(move |job, _settings, control, _progress| {
            let (started, gates) = (started.clone(), gates.clone());
            Box::pin(async move {
                let sync = SyncId::new(&job.sync.tenant, &job.sync.id).unwrap();
                let (end, ended) = oneshot::channel();
                gates.lock().insert(sync.clone(), end);
                started.lock().push(sync.clone());
                let mut cancel = control.cancel.expect("the manager can cancel its runs");
                let cancelled = tokio::select! {
                    _ = ended => false,
                    _ = cancel.wait_for(|c| *c) => true,
                };
                let mut record = RunRecord::queued(
                    sync,
                    control.run_id.expect("the manager names its runs"),
                    "import",
                    Utc::now(),
                );
                record.state = if cancelled {
                    RunState::Cancelled
                } else {
                    RunState::Succeeded
                };
                Ok(record)
            })
        })
    };
    let catalog: Arc<dyn Catalog> = store.clone();
    let runs = RunManager::with_executor(
        SpecResolver::new(catalog, SecretBox::from_bytes(&[7; 32]).unwrap()),
        store.clone(),
        RunnerSettings::default(),
        None,
        max_runs,
        execute,
    );
    Harness {
        runs,
        store,
        started,
        gates,
        _dir: dir,
    }
}

impl Harness {
    fn started(&self) -> Vec<SyncId> {
        self.started.lock().clone()
    }

    fn used(&self) -> SlotUse {
        *self.runs.slot_use().borrow()
    }

    async fn wait_until(&self, what: &str, check: impl Fn(&Self) -> bool) {
        for _ in 0..200 {
            if check(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "timed out waiting until {what}: started {:?}, slots {:?}",
            self.started(),
            self.used()
        );
    }

    /// Lets a started run end.
    fn end(&self, sync: &SyncId) {
        let gate = self.gates.lock().remove(sync);
        gate.expect("the run started").send(()).unwrap();
    }
}

#[tokio::test]
async fn n_plus_two_triggers_run_n_at_once_and_the_rest_as_slots_free() {
    let names = ["s0", "s1", "s2", "s3"];
    let h = harness(2, &names).await;
    let mut run_ids = Vec::new();
    let mut finished = Vec::new();
    for name in names {
        let run_id = h
            .runs
            .start_run(&id(name), TriggerReason::Api)
            .await
            .unwrap();
        finished.push(h.runs.finished(&id(name), &run_id).expect("known here"));
        run_ids.push(run_id);
    }
    h.wait_until("two runs started", |h| h.started().len() == 2)
        .await;
    assert_eq!(h.started(), [id("s0"), id("s1")]);
    assert_eq!(
        h.used(),
        SlotUse {
            running: 2,
            waiting: 2
        }
    );
    let waiting = h.runs.active(&id("s2")).unwrap();
    assert!(waiting.is_waiting());
    assert_eq!(waiting.snapshot().state, RunState::Queued);
    assert!(!h.runs.active(&id("s0")).unwrap().is_waiting());

    // A trigger for a waiting sync is accepted and answered by the waiting run; a running
    // sync still refuses a second run.
    assert_eq!(
        h.runs.start_run(&id("s2"), TriggerReason::Api).await,
        Ok(run_ids[2].clone())
    );
    assert!(matches!(
        h.runs.start_run(&id("s0"), TriggerReason::Api).await,
        Err(TriggerError::AlreadyRunning { run_id, .. }) if run_id == run_ids[0]
    ));
    // Nothing starts without a free slot.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.started().len(), 2);

    // Slots go to the waiting runs in the order they were triggered.
    h.end(&id("s1"));
    h.wait_until("s2 took the freed slot", |h| h.started().len() == 3)
        .await;
    assert_eq!(h.started()[2], id("s2"));
    assert_eq!(
        h.used(),
        SlotUse {
            running: 2,
            waiting: 1
        }
    );
    h.end(&id("s0"));
    h.wait_until("s3 took the next slot", |h| h.started().len() == 4)
        .await;
    assert_eq!(h.started()[3], id("s3"));
    h.end(&id("s2"));
    h.end(&id("s3"));
    for (done, run_id) in finished.into_iter().zip(&run_ids) {
        let record = done.await.expect("a final record");
        assert_eq!(
            (&record.run_id, record.state),
            (run_id, RunState::Succeeded)
        );
    }
    h.wait_until("every slot is free", |h| h.used() == SlotUse::default())
        .await;
    // Each sync ran exactly once: none lost, none doubled.
    let mut ran = h.started();
    ran.sort();
    assert_eq!(ran, names.map(id));
    assert!(h.runs.active_runs().is_empty());
}

#[tokio::test]
async fn a_waiting_run_that_is_cancelled_never_starts_and_shutdown_empties_the_queue() {
    let h = harness(1, &["a", "b", "c", "d"]).await;
    h.runs
        .start_run(&id("a"), TriggerReason::Api)
        .await
        .unwrap();
    let b = h
        .runs
        .start_run(&id("b"), TriggerReason::Api)
        .await
        .unwrap();
    h.wait_until("a started", |h| h.started().len() == 1).await;
    let b_done = h.runs.finished(&id("b"), &b).unwrap();
    h.runs.cancel(&id("b"), &b).unwrap();
    let record = tokio::time::timeout(Duration::from_secs(1), b_done)
        .await
        .expect("a waiting run ends at once when cancelled")
        .unwrap();
    assert_eq!(record.state, RunState::Cancelled);
    assert!(record.message.unwrap().contains("waiting for a run slot"));
    assert_eq!(
        h.runs.unrecorded(&id("b"), &b).unwrap().state,
        RunState::Cancelled
    );
    assert_eq!(
        h.used(),
        SlotUse {
            running: 1,
            waiting: 0
        }
    );
    // b can be triggered again: a new run, waiting behind a.
    let b2 = h
        .runs
        .start_run(&id("b"), TriggerReason::Api)
        .await
        .unwrap();
    assert_ne!(b2, b);
    h.end(&id("a"));
    h.wait_until("b started", |h| h.started().len() == 2).await;
    assert_eq!(h.started(), [id("a"), id("b")]);

    // Stopping the node: the running run is cancelled, the waiting ones never start.
    h.runs
        .start_run(&id("c"), TriggerReason::Api)
        .await
        .unwrap();
    h.runs
        .start_run(&id("d"), TriggerReason::Api)
        .await
        .unwrap();
    assert_eq!(h.used().waiting, 2);
    tokio::time::timeout(Duration::from_secs(5), h.runs.shutdown())
        .await
        .expect("shutdown ends");
    assert_eq!(h.used(), SlotUse::default());
    assert_eq!(h.started(), [id("a"), id("b")]);
    assert!(h.runs.active_runs().is_empty());
}

#[tokio::test]
async fn scheduled_syncs_beyond_the_slots_queue_by_due_time_and_later_ticks_coalesce() {
    let names = ["s0", "s1", "s2", "s3"];
    let h = harness(2, &names).await;
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let trigger: Arc<dyn SyncTrigger> = h.runs.clone();
    let scheduler = Scheduler::new(
        clock.clone(),
        trigger,
        h.store.clone(),
        SchedulerSettings::default(),
    );
    let every_minute = ferry_core::schedule::Schedule::from_spec(Some("every 1m"), None).unwrap();
    // Upserted out of order; s3 comes due first, the others a second later.
    scheduler
        .upsert(id("s3"), every_minute.clone(), false)
        .await;
    clock.advance(chrono::Duration::seconds(1));
    for name in ["s2", "s1", "s0"] {
        scheduler
            .upsert(id(name), every_minute.clone(), false)
            .await;
    }
    let fired = scheduler.tick().await;
    let order: Vec<_> = fired.iter().map(|f| f.sync.clone()).collect();
    assert_eq!(
        order,
        [id("s3"), id("s0"), id("s1"), id("s2")],
        "oldest due first"
    );
    h.wait_until("two runs started", |h| h.started().len() == 2)
        .await;
    assert_eq!(h.started(), [id("s3"), id("s0")]);
    assert_eq!(h.used().waiting, 2);

    // A minute later every sync is due again: the running ones wait for their runs (busy), the
    // waiting ones coalesce into the run already queued. No new run anywhere.
    clock.advance(chrono::Duration::seconds(61));
    let again = scheduler.tick().await;
    let mut coalesced: Vec<_> = again
        .iter()
        .map(|f| (f.sync.clone(), f.run_id.clone()))
        .collect();
    coalesced.sort();
    let first_run = |sync: &SyncId| {
        fired
            .iter()
            .find(|f| &f.sync == sync)
            .map(|f| f.run_id.clone())
            .unwrap()
    };
    assert_eq!(
        coalesced,
        [
            (id("s1"), first_run(&id("s1"))),
            (id("s2"), first_run(&id("s2")))
        ]
    );
    assert_eq!(h.used().total(), 4);

    for sync in [id("s3"), id("s0")] {
        h.end(&sync);
    }
    h.wait_until("the queued runs started", |h| h.started().len() == 4)
        .await;
    assert_eq!(&h.started()[2..], [id("s1"), id("s2")]);
    h.end(&id("s1"));
    h.end(&id("s2"));
    h.wait_until("every slot is free", |h| h.used() == SlotUse::default())
        .await;
    let mut ran = h.started();
    ran.sort();
    assert_eq!(ran, names.map(id), "each sync ran once");
}
