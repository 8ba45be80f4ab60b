//! A node's agent in the cluster: it runs what the coordinator assigned to this node, and
//! nothing once the node's lease is lost.
//!
//! - It follows `/ferry/v1/assignments/<node>/` (re-read every `poll`, and at once when the
//!   coordinator says so over the node's link: [`NodeAgent::reconcile_handle`]) and keeps the node's
//!   [`Scheduler`] holding exactly the assigned syncs, with their schedule and paused state
//!   from the catalog (re-read when a sync's version changes).
//! - A sync assigned here whose newest run never finished and that nobody owns (its owner died
//!   mid-run: the lease took the claim with it) is started at once, so it resumes from its last
//!   committed cursor without waiting for its next scheduled time.
//! - A sync taken away from this node has its schedule dropped and its running run cancelled
//!   (the cursor stays at its last commit; the next owner resumes from there).
//! - The kill switch: when membership reports [`Liveness::Lost`], every run on this node is
//!   cancelled and the scheduler emptied at once; claims are refused by the store until a new
//!   lease is held. Fencing still guards any write a slow run attempts meanwhile.
//!
//! Runs go through the node's [`RunManager`], so the admin API shows and cancels them as on a
//! single node; each run claims its sync in the state store before it writes anything.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use ferry_core::schedule::Schedule;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::assigner::assignments_of;
use super::keys;
use super::membership::Liveness;
use crate::catalog::{Catalog, CatalogError, Stored, SyncRecord};
use crate::records::{RunState, SyncId};
use crate::run_manager::RunManager;
use crate::schedule::{Scheduler, TriggerError, TriggerReason};
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub node_id: String,
    /// How often the assignments and the assigned syncs' records are re-read.
    pub poll: Duration,
}

impl AgentSettings {
    pub fn new(node_id: impl Into<String>) -> Self {
        Self {
            node_id: node_id.into(),
            poll: Duration::from_millis(500),
        }
    }
}

/// The running agent.
pub struct NodeAgent {
    assigned: watch::Receiver<BTreeSet<SyncId>>,
    draining: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
    reconcile: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

impl NodeAgent {
    pub fn start(
        client: Client,
        settings: AgentSettings,
        catalog: Arc<dyn Catalog>,
        runs: Arc<RunManager>,
        scheduler: Scheduler,
        liveness: watch::Receiver<Liveness>,
    ) -> Result<Self, StoreError> {
        keys::check_node_id(&settings.node_id)?;
        let (assigned_tx, assigned) = watch::channel(BTreeSet::new());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (draining, draining_rx) = watch::channel(false);
        let reconcile = Arc::new(Notify::new());
        let worker = Worker {
            reconcile: reconcile.clone(),
            client,
            settings,
            catalog,
            runs,
            scheduler,
            liveness,
            shutdown: shutdown_rx,
            draining: draining_rx,
            assigned: assigned_tx,
            known: BTreeMap::new(),
        };
        Ok(Self {
            assigned,
            draining,
            shutdown,
            reconcile,
            task: Some(tokio::spawn(worker.run())),
        })
    }

    /// The syncs this node currently runs on their schedules (empty while the node is lost).
    pub fn assigned(&self) -> watch::Receiver<BTreeSet<SyncId>> {
        self.assigned.clone()
    }

    /// Wakes the worker to re-read the assignments now instead of at its next poll (the
    /// coordinator tells the node's agent over its link after writing new assignments).
    pub fn reconcile_handle(&self) -> Arc<Notify> {
        self.reconcile.clone()
    }

    /// The node is draining: no run starts here any more (the schedule is emptied), while the
    /// runs in progress go on until they end or the coordinator takes their sync away.
    pub fn drain(&self) {
        self.draining.send_replace(true);
    }

    /// Stops following assignments; the assigned syncs leave the scheduler and their runs are
    /// cancelled (a node draining or stopping).
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

struct Worker {
    client: Client,
    settings: AgentSettings,
    catalog: Arc<dyn Catalog>,
    runs: Arc<RunManager>,
    scheduler: Scheduler,
    liveness: watch::Receiver<Liveness>,
    shutdown: watch::Receiver<bool>,
    draining: watch::Receiver<bool>,
    reconcile: Arc<Notify>,
    assigned: watch::Sender<BTreeSet<SyncId>>,
    /// The syncs given to the scheduler, and the catalog version it was given.
    known: BTreeMap<SyncId, u64>,
}

impl Worker {
    async fn run(mut self) {
        loop {
            let live = self.liveness.borrow_and_update().lease().is_some();
            let draining = *self.draining.borrow_and_update();
            if live && draining {
                self.stop_scheduling().await;
            } else if live {
                if let Err(e) = self.reconcile().await {
                    tracing::warn!(node = %self.settings.node_id, error = %e, "assignments not read; keeping the current ones");
                }
            } else {
                self.let_go_of_everything("the node's lease is lost (kill switch)");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.poll), if live => {}
                _ = self.reconcile.notified(), if live => {}
                changed = self.liveness.changed() => if changed.is_err() { break },
                _ = self.shutdown.changed() => break,
                _ = self.draining.changed() => {}
            }
        }
        self.let_go_of_everything("the agent is stopping");
    }

    /// Draining: nothing is scheduled here any more; a run in progress goes on while its sync
    /// stays assigned here, and is cancelled once the coordinator takes the sync away (at the
    /// drain deadline the node cancels what is left itself).
    async fn stop_scheduling(&mut self) {
        for sync in std::mem::take(&mut self.known).into_keys() {
            self.scheduler.remove(&sync);
        }
        self.assigned.send_replace(BTreeSet::new());
        let Ok(desired) = assignments_of(&self.client, &self.settings.node_id).await else {
            return;
        };
        for run in self.runs.active_runs() {
            if !desired.contains(&run.sync) {
                tracing::info!(sync = %run.sync, run = %run.run_id, "sync moved away from this draining node: cancelling its run");
                let _ = self.runs.cancel(&run.sync, &run.run_id);
            }
        }
    }

    /// Stops every run on this node and empties its schedule.
    fn let_go_of_everything(&mut self, why: &str) {
        let active = self.runs.active_runs();
        if self.known.is_empty() && active.is_empty() {
            return;
        }
        tracing::warn!(node = %self.settings.node_id, syncs = self.known.len(), runs = active.len(), "{why}: stopping every sync");
        for sync in std::mem::take(&mut self.known).into_keys() {
            self.scheduler.remove(&sync);
        }
        for run in active {
            let _ = self.runs.cancel(&run.sync, &run.run_id);
        }
        self.assigned.send_replace(BTreeSet::new());
    }

    async fn reconcile(&mut self) -> Result<(), StoreError> {
        let desired: BTreeSet<SyncId> = assignments_of(&self.client, &self.settings.node_id)
            .await?
            .into_iter()
            .collect();
        let records: BTreeMap<SyncId, Stored<SyncRecord>> = self
            .catalog
            .list_all_syncs()
            .await
            .map_err(catalog_error)?
            .into_iter()
            .filter_map(|s| s.value.sync_id().ok().map(|id| (id, s)))
            .filter(|(id, _)| desired.contains(id))
            .collect();

        // Taken away (moved, deleted): no more runs here.
        let gone: Vec<SyncId> = self
            .known
            .keys()
            .filter(|s| !records.contains_key(*s))
            .cloned()
            .collect();
        for sync in gone {
            self.known.remove(&sync);
            self.scheduler.remove(&sync);
            if let Some(run) = self.runs.active(&sync) {
                tracing::info!(sync = %sync, run = %run.run_id, "sync moved away from this node: cancelling its run");
                let _ = self.runs.cancel(&sync, &run.run_id);
            }
        }

        for (sync, stored) in &records {
            let newly = !self.known.contains_key(sync);
            if self.known.get(sync) == Some(&stored.version) {
                continue;
            }
            let record = &stored.value;
            match Schedule::from_spec(record.schedule(), record.timezone()) {
                Ok(schedule) => {
                    self.scheduler
                        .upsert(sync.clone(), schedule, record.paused)
                        .await
                }
                Err(e) => {
                    tracing::error!(sync = %sync, error = %e, "stored schedule not understood")
                }
            }
            self.known.insert(sync.clone(), stored.version);
            if newly && !record.paused && (self.interrupted(sync).await || self.resumes(sync).await)
            {
                match self.runs.start_run(sync, TriggerReason::Schedule).await {
                    Ok(run_id) => {
                        tracing::info!(sync = %sync, run = %run_id, "resuming a sync whose owner died mid-run");
                        self.scheduler.note_triggered(sync, chrono::Utc::now());
                    }
                    Err(TriggerError::AlreadyRunning { .. }) => {}
                    Err(e) => {
                        tracing::warn!(sync = %sync, error = %e, "interrupted sync not resumed now; its schedule will")
                    }
                }
            }
        }
        self.assigned.send_if_modified(|current| {
            let now: BTreeSet<SyncId> = self.known.keys().cloned().collect();
            if *current == now {
                false
            } else {
                *current = now;
                true
            }
        });
        Ok(())
    }

    /// A drain cancelled the sync's run at its deadline (see [`super::drain::mark_resume`]).
    async fn resumes(&self, sync: &SyncId) -> bool {
        super::drain::take_resume(&self.client, sync)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(sync = %sync, error = %e, "resume note not read; the schedule runs the sync");
                false
            })
    }

    /// The sync's newest run never finished and nobody holds its claim: its owner died. That
    /// run is closed as failed (under a claim of its own, so it is fenced like any write) and
    /// `true` returned: the sync should resume now.
    async fn interrupted(&self, sync: &SyncId) -> bool {
        let store = self.runs.store();
        let Ok(newest) = store.list_runs(sync, 1).await else {
            return false;
        };
        let Some(mut orphan) = newest.into_iter().next().filter(|r| !r.state.is_terminal()) else {
            return false;
        };
        if !matches!(store.current_owner(sync).await, Ok(None)) {
            return false;
        }
        match store.claim(sync, &self.settings.node_id).await {
            Ok(fence) => {
                orphan.state = RunState::Failed;
                orphan.finished_at = Some(chrono::Utc::now());
                orphan.message = Some(format!(
                    "interrupted: its node lost the sync's claim mid-run; {} resumed it from the last committed cursor",
                    self.settings.node_id
                ));
                if let Err(e) = store.put_run(&fence, &orphan).await {
                    tracing::warn!(sync = %sync, run = %orphan.run_id, error = %e, "interrupted run not closed");
                }
                if let Err(e) = store.release(&fence).await {
                    tracing::warn!(sync = %sync, error = %e, "claim not released after closing an interrupted run");
                }
                true
            }
            // Someone claimed it meanwhile: it runs elsewhere.
            Err(_) => false,
        }
    }
}

fn catalog_error(e: CatalogError) -> StoreError {
    match e {
        CatalogError::Store(e) => e,
        other => StoreError::Backend(format!("listing syncs: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::admin::specs::SpecResolver;
    use crate::catalog::contract::{source, sync, tenant};
    use crate::cluster::connection::testing;
    use crate::cluster::etcd_store::testing::store_on_new_lease;
    use crate::cluster::etcd_store::EtcdStoreSettings;
    use crate::runner::RunnerSettings;
    use crate::schedule::{ManualClock, SchedulerSettings, SyncTrigger};
    use crate::secrets::SecretBox;
    use crate::store::StateStore;

    async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..100 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting until {what}");
    }

    fn id(name: &str) -> SyncId {
        SyncId::new("acme", name).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_what_is_assigned_to_it_follows_the_catalog_and_drops_everything_when_lost() {
        let Some((_etcd, settings)) = testing::start() else {
            return;
        };
        let (store, mut client, _, liveness_tx) =
            store_on_new_lease(&settings, EtcdStoreSettings::default(), 60).await;
        let store = Arc::new(store);
        let liveness = liveness_tx.subscribe();
        store.create_tenant(&tenant("acme")).await.unwrap();
        store.create_source(&source("acme", "pg")).await.unwrap();
        for name in ["s0", "s1", "s2"] {
            store.create_sync(&sync("acme", name, "pg")).await.unwrap();
        }
        let catalog: Arc<dyn Catalog> = store.clone();
        let state: Arc<dyn StateStore> = store.clone();
        let resolver = SpecResolver::new(catalog.clone(), SecretBox::from_bytes(&[7; 32]).unwrap());
        let runs = RunManager::new(
            resolver,
            state.clone(),
            RunnerSettings {
                node_id: "node-1".into(),
                ..Default::default()
            },
            None,
        );
        let trigger: Arc<dyn SyncTrigger> = runs.clone();
        let scheduler = Scheduler::new(
            Arc::new(ManualClock::new(Utc::now())),
            trigger,
            state,
            SchedulerSettings::default(),
        );
        let mut agent_settings = AgentSettings::new("node-1");
        agent_settings.poll = Duration::from_millis(100);
        let agent = NodeAgent::start(
            client.clone(),
            agent_settings,
            catalog,
            runs,
            scheduler.clone(),
            liveness,
        )
        .unwrap();
        let assigned = agent.assigned();
        let assigned_now = || {
            assigned
                .borrow()
                .iter()
                .map(|s| s.sync().to_string())
                .collect::<Vec<_>>()
        };

        // Assignments of this node (and one of another node, which it ignores).
        for (node, name) in [("node-1", "s0"), ("node-1", "s1"), ("node-2", "s2")] {
            client
                .put(keys::assignment(node, &id(name)), "{}", None)
                .await
                .unwrap();
        }
        wait_until("s0 and s1 are scheduled here", || {
            assigned_now() == ["s0", "s1"]
        })
        .await;
        assert!(
            scheduler.next_due(&id("s0")).is_some(),
            "hourly: a next time"
        );
        assert!(scheduler.next_due(&id("s2")).is_none(), "not this node's");

        // Paused in the catalog: still assigned, never due.
        let mut paused = store.get_sync(&id("s1")).await.unwrap().unwrap().value;
        paused.paused = true;
        store.update_sync(&paused, None).await.unwrap();
        wait_until("s1 is paused here", || {
            scheduler.next_due(&id("s1")).is_none()
        })
        .await;

        // Moved away.
        client
            .delete(keys::assignment("node-1", &id("s0")), None)
            .await
            .unwrap();
        wait_until("s0 is gone from here", || assigned_now() == ["s1"]).await;
        assert!(scheduler.next_due(&id("s0")).is_none());

        // The kill switch empties the node at once; a new lease brings the syncs back.
        client
            .put(keys::assignment("node-1", &id("s0")), "{}", None)
            .await
            .unwrap();
        wait_until("s0 is back", || assigned_now() == ["s0", "s1"]).await;
        liveness_tx.send(Liveness::Lost).unwrap();
        let lost = std::time::Instant::now();
        wait_until("nothing runs here", || assigned_now().is_empty()).await;
        assert!(
            lost.elapsed() < Duration::from_millis(500),
            "{:?}",
            lost.elapsed()
        );
        assert!(scheduler.next_due(&id("s0")).is_none());
        assert!(matches!(
            store.claim(&id("s0"), "node-1").await,
            Err(StoreError::Unavailable(_))
        ));
        let lease = client.lease_grant(60, None).await.unwrap().id();
        liveness_tx.send(Liveness::Live { lease }).unwrap();
        wait_until("s0 and s1 are back", || assigned_now() == ["s0", "s1"]).await;
        assert!(scheduler.next_due(&id("s0")).is_some());
        agent.stop().await;
        assert!(
            scheduler.next_due(&id("s0")).is_none(),
            "a stopped agent schedules nothing"
        );
    }
}
