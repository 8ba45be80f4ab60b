//! The SyncSupervisor: one ractor actor per running sync. It starts an attempt's stages as
//! linked stage actors (the SourceActor, the DiffActor, K ImportShardActors and the checkpoint
//! stage), restarts them all together (one-for-all) when one fails with a retryable error,
//! waiting as the [`RestartPolicy`] says, and gives up on a fatal error or a burst of failures.
//!
//! ractor's default supervisor stops itself when a child exits; this one overrides that. Stage
//! work runs in a tokio task owned by the stage actor's state: when the actor is stopped or
//! killed its state is dropped, which aborts the task, so cleanup never depends on `post_stop`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::error::{Classify, ErrorClass};
use ferry_core::value::Value;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

use crate::pipeline::{ErrorLogHandle, PipelineError, PipelineStages, RunRowError, Stage};
use crate::restart::{Decision, RestartPolicy, RestartState};

/// Builds the stages of a fresh attempt. Each attempt reads the committed cursor anew, so a
/// restarted pipeline resumes from the last commit.
pub trait AttemptFactory: Send + Sync + 'static {
    fn build(&self, attempt: u32) -> BoxFuture<'static, Result<PipelineStages, PipelineError>>;
}

/// How a supervised run ended.
#[derive(Debug)]
pub enum SupervisedOutcome {
    Succeeded {
        committed_cursor: Option<Value>,
        row_errors: Vec<RunRowError>,
        attempts: u32,
    },
    Failed {
        error: String,
        class: ErrorClass,
        attempts: u32,
        row_errors: Vec<RunRowError>,
    },
    Cancelled {
        attempts: u32,
    },
}

pub enum SupervisorMsg {
    StartAttempt,
    StageDone {
        attempt: u32,
        stage: String,
        result: Result<Option<Value>, (String, ErrorClass)>,
    },
    /// Decide what to do after attempt `attempt` failed (sent shortly after the first failure,
    /// so the root cause can arrive: the first error seen is often a neighbour noticing).
    Decide {
        attempt: u32,
    },
    Cancel,
}

// ractor's "cluster" feature (on for the whole workspace) drops the blanket impl: a message
// that never leaves its node says so by implementing the trait with its defaults.
impl ractor::Message for SupervisorMsg {}

pub struct SupervisorArgs {
    pub factory: Arc<dyn AttemptFactory>,
    pub policy: RestartPolicy,
    pub done: oneshot::Sender<SupervisedOutcome>,
}

pub struct SupervisorState {
    factory: Arc<dyn AttemptFactory>,
    restart: RestartState,
    attempt: u32,
    started_at: Instant,
    stages: Vec<ActorRef<()>>,
    remaining: usize,
    committed: Option<Value>,
    failures: Vec<(String, ErrorClass)>,
    failing: bool,
    log: Option<ErrorLogHandle>,
    done: Option<oneshot::Sender<SupervisedOutcome>>,
}

impl SupervisorState {
    fn stop_stages(&mut self) {
        for stage in self.stages.drain(..) {
            stage.kill();
        }
    }

    fn row_errors(&self) -> Vec<RunRowError> {
        self.log
            .as_ref()
            .map(ErrorLogHandle::entries)
            .unwrap_or_default()
    }

    fn finish(&mut self, myself: &ActorRef<SupervisorMsg>, outcome: SupervisedOutcome) {
        self.stop_stages();
        if let Some(done) = self.done.take() {
            let _ = done.send(outcome);
        }
        myself.stop(None);
    }
}

/// How long to wait after an attempt's first failure before deciding (see `Decide`).
const SETTLE: Duration = Duration::from_millis(200);

pub struct SyncSupervisor;

impl Actor for SyncSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        myself.send_message(SupervisorMsg::StartAttempt)?;
        Ok(SupervisorState {
            factory: args.factory,
            restart: RestartState::new(args.policy),
            attempt: 0,
            started_at: Instant::now(),
            stages: Vec::new(),
            remaining: 0,
            committed: None,
            failures: Vec::new(),
            failing: false,
            log: None,
            done: Some(args.done),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::StartAttempt => {
                state.attempt += 1;
                state.started_at = Instant::now();
                state.failures.clear();
                state.failing = false;
                let attempt = state.attempt;
                match state.factory.build(attempt).await {
                    Ok(built) => {
                        state.log = Some(built.error_log());
                        state.remaining = built.stages.len();
                        for stage in built.stages {
                            let args = StageArgs {
                                attempt,
                                supervisor: myself.clone(),
                                stage,
                            };
                            let (stage_ref, _) =
                                Actor::spawn_linked(None, StageActor, args, myself.get_cell())
                                    .await?;
                            state.stages.push(stage_ref);
                        }
                    }
                    Err(e) => {
                        // Could not even start (e.g. the store or the source is unreachable).
                        state.failing = true;
                        state.failures.push((e.to_string(), e.class()));
                        myself.send_message(SupervisorMsg::Decide { attempt })?;
                    }
                }
            }
            SupervisorMsg::StageDone {
                attempt,
                stage,
                result,
            } => {
                if attempt != state.attempt {
                    return Ok(()); // a late report from a stopped attempt
                }
                match result {
                    Ok(cursor) => {
                        if cursor.is_some() {
                            state.committed = cursor;
                        }
                        state.remaining = state.remaining.saturating_sub(1);
                        if state.remaining == 0 && !state.failing {
                            let outcome = SupervisedOutcome::Succeeded {
                                committed_cursor: state.committed.clone(),
                                row_errors: state.row_errors(),
                                attempts: state.attempt,
                            };
                            state.finish(&myself, outcome);
                        }
                    }
                    Err((message, class)) => {
                        tracing::warn!(stage = %stage, attempt, error = %message, "sync pipeline stage failed");
                        state.failures.push((format!("{stage}: {message}"), class));
                        if !state.failing {
                            state.failing = true;
                            state.stop_stages();
                            let me = myself.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(SETTLE).await;
                                let _ = me.send_message(SupervisorMsg::Decide { attempt });
                            });
                        }
                    }
                }
            }
            SupervisorMsg::Decide { attempt } => {
                if attempt != state.attempt {
                    return Ok(());
                }
                // The root cause is the first failure that is not a stage noticing a neighbour.
                let root = state
                    .failures
                    .iter()
                    .find(|(m, _)| !m.contains("stopped unexpectedly"))
                    .or(state.failures.first())
                    .cloned()
                    .unwrap_or_else(|| ("unknown failure".into(), ErrorClass::Retryable));
                let decision = if root.1 == ErrorClass::Retryable {
                    state.restart.on_failure(state.started_at.elapsed())
                } else {
                    Decision::GiveUp
                };
                match decision {
                    Decision::RestartAfter(delay) => {
                        tracing::info!(attempt, ?delay, error = %root.0, "restarting the sync pipeline");
                        let me = myself.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = me.send_message(SupervisorMsg::StartAttempt);
                        });
                    }
                    Decision::GiveUp => {
                        let outcome = SupervisedOutcome::Failed {
                            error: root.0,
                            class: root.1,
                            attempts: state.attempt,
                            row_errors: state.row_errors(),
                        };
                        state.finish(&myself, outcome);
                    }
                }
            }
            SupervisorMsg::Cancel => {
                let attempts = state.attempt;
                state.finish(&myself, SupervisedOutcome::Cancelled { attempts });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // Not ractor's default (which stops the supervisor): a stage actor that failed outside
        // its work (e.g. a panic while starting) counts as a failure of the current attempt.
        if let SupervisionEvent::ActorFailed(_, err) = event {
            let attempt = state.attempt;
            myself.send_message(SupervisorMsg::StageDone {
                attempt,
                stage: "stage actor".into(),
                result: Err((err.to_string(), ErrorClass::Retryable)),
            })?;
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.stop_stages();
        Ok(())
    }
}

/// Runs one stage's work and reports the result to the supervisor.
struct StageActor;

struct StageArgs {
    attempt: u32,
    supervisor: ActorRef<SupervisorMsg>,
    stage: Stage,
}

/// Aborts the stage's task when the actor's state is dropped (stop, kill, or failure).
struct StageTask(tokio::task::JoinHandle<()>);

impl Drop for StageTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Actor for StageActor {
    type Msg = ();
    type State = StageTask;
    type Arguments = StageArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        args: StageArgs,
    ) -> Result<StageTask, ActorProcessingErr> {
        let StageArgs {
            attempt,
            supervisor,
            stage,
        } = args;
        let Stage { name, work } = stage;
        let task = tokio::spawn(async move {
            // A panic inside the work becomes an error report, not a silent hang.
            // (caught here, in this task, so that aborting this task also stops the work).
            let result = match std::panic::AssertUnwindSafe(work).catch_unwind().await {
                Ok(Ok(cursor)) => Ok(cursor),
                Ok(Err(e)) => Err((e.to_string(), e.class())),
                Err(_) => Err(("panicked".to_string(), ErrorClass::Retryable)),
            };
            let _ = supervisor.send_message(SupervisorMsg::StageDone {
                attempt,
                stage: name,
                result,
            });
            myself.stop(None);
        });
        Ok(StageTask(task))
    }
}
