//! The node's remotable agent: a ractor actor in the process groups [`AGENTS`] and
//! [`group_of`]`(node)`, which peers reach over their links. It fronts the node's
//! [`NodeAgent`](crate::cluster::agent::NodeAgent) worker (a `Reconcile` wakes its poll at
//! once) and the node's [`RunManager`] (start, watch and cancel runs here).

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::Notify;

use super::messages::{AgentMsg, Answer, LiveRun, Refusal};
use crate::admin::errors;
use crate::records::{RunRecord, SyncId};
use crate::run_manager::{eta_seconds, RunManager};
use crate::schedule::{Scheduler, TriggerReason};

/// Every node's agent.
pub const AGENTS: &str = "ferry.agents";

/// The process group holding one node's agent.
pub fn group_of(node_id: &str) -> String {
    format!("ferry.agent.{node_id}")
}

/// How long a `CancelRun` waits for the run to end before answering.
pub const CANCEL_WAIT: Duration = Duration::from_secs(30);

pub struct AgentActor;

/// What the agent works with.
pub struct AgentState {
    pub node_id: String,
    pub runs: Arc<RunManager>,
    pub scheduler: Scheduler,
    /// Wakes the assignment worker's poll.
    pub reconcile: Arc<Notify>,
}

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentState;

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        state: AgentState,
    ) -> Result<AgentState, ActorProcessingErr> {
        ractor::pg::join(AGENTS.to_string(), vec![myself.get_cell()]);
        ractor::pg::join(group_of(&state.node_id), vec![myself.get_cell()]);
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<AgentMsg>,
        message: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMsg::Reconcile => state.reconcile.notify_one(),
            AgentMsg::Stop { sync } => {
                if let Some(run) = state.runs.active(&sync) {
                    tracing::info!(sync = %sync, run = %run.run_id, "told to stop: the sync moved away from this node");
                    let _ = state.runs.cancel(&sync, &run.run_id);
                }
                // The schedule follows the assignments.
                state.reconcile.notify_one();
            }
            AgentMsg::StartRun {
                sync,
                reason,
                reply,
            } => {
                let _ = reply.send(start(state, &sync, reason).await);
            }
            AgentMsg::RunProgress {
                sync,
                run_id,
                reply,
            } => {
                let _ = reply.send(Ok(live(&state.runs, &sync, &run_id)));
            }
            AgentMsg::CancelRun {
                sync,
                run_id,
                reply,
            } => {
                let finished = state.runs.finished(&sync, &run_id);
                if state.runs.cancel(&sync, &run_id).is_err() {
                    let _ = reply.send(Err(Refusal {
                        code: tonic::Code::FailedPrecondition as i32,
                        message: format!(
                            "run '{run_id}' of sync {sync} is not running on node {}",
                            state.node_id
                        ),
                        running_run: None,
                    }));
                    return Ok(());
                }
                // Wait for the end without holding up the agent's other messages.
                tokio::spawn(async move {
                    let record: Option<RunRecord> = match finished {
                        Some(finished) => tokio::time::timeout(CANCEL_WAIT, finished)
                            .await
                            .ok()
                            .flatten(),
                        None => None,
                    };
                    let _ = reply.send(Ok(record));
                });
            }
        }
        Ok(())
    }
}

async fn start(state: &AgentState, sync: &SyncId, reason: TriggerReason) -> Answer<String> {
    match state.runs.start_run(sync, reason).await {
        Ok(run_id) => {
            state.scheduler.note_triggered(sync, chrono::Utc::now());
            Ok(run_id)
        }
        Err(e) => Err(Refusal::from_status(&errors::trigger(&e))),
    }
}

/// The run as it stands, if it runs here.
pub fn live(runs: &RunManager, sync: &SyncId, run_id: &str) -> Option<LiveRun> {
    let active = runs.active_run(sync, run_id)?;
    let total = active.progress.total();
    Some(LiveRun {
        record: active.snapshot(),
        reason: runs
            .reason(sync, run_id)
            .map(|r| r.as_str().to_string())
            .unwrap_or_default(),
        rows_total: total.as_ref().map(|t| t.rows),
        eta_seconds: total
            .and_then(|t| eta_seconds(&t, active.progress.rows_done(), std::time::Instant::now())),
    })
}

/// The agent of `node` as this process sees it: a member of its group that lives across a
/// link (`remote`), or this process's own.
pub fn agent_of(node_id: &str, remote: bool) -> Option<ActorRef<AgentMsg>> {
    ractor::pg::get_members(&group_of(node_id))
        .into_iter()
        .find(|cell| cell.get_id().is_local() != remote)
        .map(ActorRef::from)
}
