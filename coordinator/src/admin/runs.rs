//! `Runs`: history from the state store, live counters from the run manager, cancellation,
//! and a stream of a run's progress for followers. In a cluster, a run on another node is
//! shown with that node's live counters and cancelled there, asked through its agent
//! ([`crate::cluster::link`]), so every node answers the same.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::admin::v1 as pb;
use pb::runs_server::Runs;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::convert::run_pb;
use super::{errors, sync_id, Admin};
use crate::cluster::link::messages::LiveRun;
use crate::cluster::link::Peers;
use crate::records::{RunRecord, SyncId};
use crate::run_manager::{eta_seconds, RunRates};

pub struct RunsApi(pub Arc<Admin>);

/// How often a follower gets a snapshot of a running run.
const WATCH_EVERY: Duration = Duration::from_millis(500);
/// How long CancelRun waits for the run to stop before answering with its state so far.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

impl Admin {
    /// The run as it stands: the stored record with live counters while it runs here.
    async fn current_run(
        &self,
        id: &SyncId,
        run_id: &str,
        include_errors: bool,
    ) -> Result<pb::Run, Status> {
        let active = self.runs.active_run(id, run_id);
        let stored = self
            .store
            .get_run(id, run_id)
            .await
            .map_err(|e| errors::store(&e))?;
        let elsewhere = match (&active, &stored) {
            (None, Some(s)) if s.state.is_terminal() => None,
            (None, _) => self.live_elsewhere(id, run_id).await,
            (Some(_), _) => None,
        };
        if let Some((node, live)) = elsewhere {
            let mut record = match stored {
                Some(mut stored) => {
                    stored.counts = live.record.counts;
                    stored
                }
                None => live.record.clone(),
            };
            if record.state.is_terminal() {
                // Ended between the two reads: the stored record is the truth.
                record = live.record.clone();
            }
            let mut run = self.run_shown(&record, include_errors);
            run.trigger = live.reason.clone();
            if let Some(progress) = run.progress.as_mut() {
                progress.rows_total = live.rows_total;
                progress.eta_seconds = live.eta_seconds;
            }
            tracing::trace!(sync = %id, run = %run_id, %node, "run shown from its node");
            return Ok(run);
        }
        let record: RunRecord = match (&active, stored) {
            (Some(active), Some(mut stored)) if !stored.state.is_terminal() => {
                stored.counts = active.snapshot().counts;
                stored
            }
            (_, Some(stored)) => stored,
            (Some(active), None) => {
                let mut queued = active.snapshot();
                queued.state = crate::records::RunState::Queued;
                queued.started_at = None;
                queued
            }
            (None, None) => self
                .runs
                .unrecorded(id, run_id)
                .ok_or_else(|| Status::not_found(format!("sync {id} has no run '{run_id}'")))?,
        };
        Ok(self.run_shown(&record, include_errors))
    }

    fn run_shown(&self, record: &RunRecord, include_errors: bool) -> pb::Run {
        let mut run = run_pb(record, include_errors);
        run.trigger = self
            .runs
            .reason(&record.sync, &record.run_id)
            .map(|r| r.as_str().to_string())
            .unwrap_or_default();
        if let Some(started) = record.started_at {
            let end = record.finished_at.unwrap_or_else(chrono::Utc::now);
            let elapsed = (end - started).num_milliseconds().max(0) as f64 / 1000.0;
            let rates = RunRates::of(&record.counts, elapsed);
            // A total is known only while the run is live here.
            let total = self
                .runs
                .active_run(&record.sync, &record.run_id)
                .filter(|_| !record.state.is_terminal())
                .and_then(|active| {
                    let total = active.progress.total()?;
                    let done = active.progress.rows_done();
                    Some((total, eta_seconds(&total, done, std::time::Instant::now())))
                });
            run.progress = Some(pb::RunProgress {
                elapsed_seconds: rates.elapsed_seconds,
                rows_per_second: rates.rows_per_second,
                records_per_second: rates.records_per_second,
                rows_total: total.map(|(t, _)| t.rows),
                eta_seconds: total.and_then(|(_, eta)| eta),
            });
        }
        run
    }

    /// The nodes that may hold a run of `id` that is not here: the one holding its claim, and
    /// the one it is assigned to (a run just started there may not hold the claim yet).
    async fn other_nodes_of(&self, id: &SyncId) -> Vec<String> {
        let Some(Peers(peers)) = &self.settings.peers else {
            return Vec::new();
        };
        let mut nodes = Vec::new();
        if let Ok(Some(owner)) = self.store.current_owner(id).await {
            nodes.push(owner.node_id);
        }
        if let Ok(Some(assigned)) = peers.assigned_node(id).await {
            nodes.push(assigned);
        }
        nodes.dedup();
        nodes.retain(|n| n != peers.node_id());
        nodes
    }

    /// A run of `id` live on another node, with that node (None: not running elsewhere, or
    /// no other node answers — the stored record is shown then).
    async fn live_elsewhere(&self, id: &SyncId, run_id: &str) -> Option<(String, LiveRun)> {
        let Some(Peers(peers)) = &self.settings.peers else {
            return None;
        };
        for node in self.other_nodes_of(id).await {
            match peers.live_run(&node, id, run_id).await {
                Ok(Some(live)) => return Some((node, live)),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(sync = %id, run = %run_id, %node, error = %e, "live progress not read from the run's node")
                }
            }
        }
        None
    }

    async fn sync_exists(&self, id: &SyncId) -> Result<(), Status> {
        self.catalog
            .get_sync(id)
            .await
            .map_err(|e| errors::catalog(&e))?
            .map(drop)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "sync '{}' of tenant '{}' does not exist",
                    id.sync(),
                    id.tenant()
                ))
            })
    }
}

fn terminal(run: &pb::Run) -> bool {
    matches!(
        pb::RunState::try_from(run.state),
        Ok(pb::RunState::Succeeded | pb::RunState::Failed | pb::RunState::Cancelled)
    )
}

#[tonic::async_trait]
impl Runs for RunsApi {
    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        let id = sync_id(&tenant, &req.sync)?;
        admin.sync_exists(&id).await?;
        let limit = match req.limit {
            0 => 20,
            n => n.min(100) as usize,
        };
        let stored = admin
            .store
            .list_runs(&id, limit)
            .await
            .map_err(|e| errors::store(&e))?;
        let active = admin.runs.active(&id);
        let mut runs = Vec::with_capacity(stored.len() + 1);
        if let Some(active) = &active {
            if !stored.iter().any(|r| r.run_id == active.run_id) {
                runs.push(admin.current_run(&id, &active.run_id, false).await?);
            }
        }
        for mut record in stored {
            if let Some(active) = active.as_ref().filter(|a| a.run_id == record.run_id) {
                if !record.state.is_terminal() {
                    record.counts = active.snapshot().counts;
                }
            } else if !record.state.is_terminal() && admin.settings.peers.is_some() {
                // Running on another node: shown as that node sees it now.
                runs.push(admin.current_run(&id, &record.run_id, false).await?);
                continue;
            }
            runs.push(admin.run_shown(&record, false));
        }
        runs.truncate(limit);
        Ok(Response::new(pb::ListRunsResponse { runs }))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        let id = sync_id(&tenant, &req.sync)?;
        Ok(Response::new(
            admin
                .current_run(&id, &req.run_id, req.include_errors)
                .await?,
        ))
    }

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        let id = sync_id(&tenant, &req.sync)?;
        let finished = admin.runs.finished(&id, &req.run_id);
        if admin.runs.cancel(&id, &req.run_id).is_err() {
            let elsewhere = admin.live_elsewhere(&id, &req.run_id).await;
            if let (Some(Peers(peers)), Some((node, _))) = (&admin.settings.peers, elsewhere) {
                // The run's own node cancels it and waits for its end.
                peers.cancel_run(&node, &id, &req.run_id).await?;
                tracing::info!(sync = %id, run = %req.run_id, %node, "run cancelled on its node");
                return Ok(Response::new(
                    admin.current_run(&id, &req.run_id, false).await?,
                ));
            }
            // Not running here: finished, unknown, or (in a cluster) on another node.
            let run = admin.current_run(&id, &req.run_id, false).await?;
            return Err(if terminal(&run) {
                Status::failed_precondition(format!(
                    "run '{}' of sync {id} has already ended ({})",
                    req.run_id,
                    pb::RunState::try_from(run.state)
                        .map(|s| s.as_str_name())
                        .unwrap_or("?")
                ))
            } else {
                Status::failed_precondition(format!(
                    "run '{}' of sync {id} is not running on this node",
                    req.run_id
                ))
            });
        }
        if let Some(finished) = finished {
            let _ = tokio::time::timeout(CANCEL_WAIT, finished).await;
        }
        Ok(Response::new(
            admin.current_run(&id, &req.run_id, false).await?,
        ))
    }

    type WatchRunStream = Pin<Box<dyn Stream<Item = Result<pb::Run, Status>> + Send + 'static>>;

    async fn watch_run(
        &self,
        request: Request<pb::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let admin = self.0.clone();
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        let id = sync_id(&tenant, &req.sync)?;
        // Answer NOT_FOUND at once rather than in the stream.
        let first = admin.current_run(&id, &req.run_id, false).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = None::<pb::Run>;
            let mut current = Ok(first);
            loop {
                let run = match current {
                    Ok(run) => run,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let done = terminal(&run);
                if last.as_ref() != Some(&run) {
                    if tx.send(Ok(run.clone())).await.is_err() {
                        return;
                    }
                    last = Some(run);
                }
                if done {
                    return;
                }
                // Wake early when the run ends, so the final state follows at once.
                match admin.runs.finished(&id, &req.run_id) {
                    Some(finished) => {
                        let _ = tokio::time::timeout(WATCH_EVERY, finished).await;
                    }
                    None => tokio::time::sleep(WATCH_EVERY).await,
                }
                if tx.is_closed() {
                    return;
                }
                current = admin
                    .current_run(&id, &req.run_id, true)
                    .await
                    .map(|mut r| {
                        // Errors only on the final snapshot, where the log is complete.
                        if !terminal(&r) {
                            r.errors.clear();
                        }
                        r
                    });
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
