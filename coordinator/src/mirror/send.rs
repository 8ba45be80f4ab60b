//! Sending one generation's changes through the ordinary pipeline, under the SyncSupervisor.
//!
//! The change query is read in `_mp_change_seq` order from just after the last acknowledged
//! change; the checkpoint stage hands each safe point (a change number) to
//! [`PendingCursorSink`], which commits it as the pending generation's `sent_through` with the
//! run's fence. A restarted attempt, or a later run, resumes there: changes acknowledged once
//! are not read again.

use std::sync::Arc;

use async_trait::async_trait;
use ferry_actors::pipeline::{
    build_stages, CursorSink, PipelineError, PipelineInput, PipelineSettings, PipelineStages,
    RunProgress, RunRowError,
};
use ferry_actors::restart::RestartPolicy;
use ferry_actors::supervisor::{
    AttemptFactory, SupervisedOutcome, SupervisorArgs, SupervisorMsg, SyncSupervisor,
};
use ferry_connectors::mixpanel::MixpanelClient;
use ferry_connectors::warehouse::mirror::CHANGE_SEQ;
use ferry_connectors::warehouse::{CursorFilter, ReadRequest, ReadSource, Warehouse};
use ferry_core::mapping::RowMapper;
use ferry_core::value::Value;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use ractor::Actor;
use tokio::sync::{oneshot, watch};

use super::cursor::MirrorCursor;
use crate::store::{Fence, StateStore};

/// Commits change numbers as the pending generation's progress.
pub struct PendingCursorSink {
    store: Arc<dyn StateStore>,
    fence: Fence,
    run_id: String,
    state: Mutex<MirrorCursor>,
}

impl PendingCursorSink {
    pub fn new(
        store: Arc<dyn StateStore>,
        fence: Fence,
        run_id: String,
        state: MirrorCursor,
    ) -> Self {
        Self {
            store,
            fence,
            run_id,
            state: Mutex::new(state),
        }
    }
}

#[async_trait]
impl CursorSink for PendingCursorSink {
    async fn commit(&self, cursor: &Value) -> Result<(), String> {
        let Value::Int(seq) = cursor else {
            return Err(format!("a change number was expected, not {cursor:?}"));
        };
        let value = {
            let mut state = self.state.lock();
            let pending = state.pending.as_mut().ok_or("no generation is pending")?;
            pending.sent_through = *seq;
            state.to_value()
        };
        self.store
            .commit_cursor(&self.fence, &self.run_id, &value)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Builds each attempt of a generation's send, resuming after the committed change number.
pub struct ChangeAttempts {
    pub store: Arc<dyn StateStore>,
    pub fence: Fence,
    pub run_id: String,
    pub warehouse: Arc<dyn Warehouse>,
    /// The change query (see `MirrorSql::read_changes`).
    pub read_sql: String,
    pub page_size: usize,
    pub mapper: Arc<RowMapper>,
    pub client: MixpanelClient,
    pub progress: Arc<RunProgress>,
    pub settings: PipelineSettings,
}

impl AttemptFactory for ChangeAttempts {
    fn build(&self, _attempt: u32) -> BoxFuture<'static, Result<PipelineStages, PipelineError>> {
        let store = self.store.clone();
        let fence = self.fence.clone();
        let run_id = self.run_id.clone();
        let warehouse = self.warehouse.clone();
        let read_sql = self.read_sql.clone();
        let page_size = self.page_size;
        let mapper = self.mapper.clone();
        let client = self.client.clone();
        let progress = self.progress.clone();
        let settings = self.settings.clone();
        Box::pin(async move {
            let stored = store
                .get_cursor(fence.sync())
                .await
                .map_err(|e| PipelineError::Commit(format!("reading the cursor: {e}")))?
                .map(|c| c.value);
            let state = stored
                .as_ref()
                .map(MirrorCursor::from_value)
                .transpose()
                .map_err(|e| PipelineError::Commit(e.to_string()))?
                .flatten()
                .filter(|s| s.pending.is_some())
                .ok_or_else(|| {
                    PipelineError::Commit("the pending mirror generation is gone".into())
                })?;
            let after = state.pending.as_ref().map_or(0, |p| p.sent_through);
            let sink = Arc::new(PendingCursorSink::new(store, fence, run_id, state));
            Ok(build_stages(PipelineInput {
                warehouse,
                read: ReadRequest {
                    source: ReadSource::Sql(read_sql),
                    cursor: Some(CursorFilter {
                        column: CHANGE_SEQ.into(),
                        after: Some(Value::Int(after)),
                    }),
                    page_size,
                },
                mapper,
                client,
                sink,
                progress,
                settings,
            }))
        })
    }
}

/// Runs attempts under a SyncSupervisor until one succeeds or the policy gives up.
/// `Ok((attempts, row errors))` or `Err((attempts, row errors, why))`.
pub async fn supervise(
    factory: Arc<dyn AttemptFactory>,
    policy: RestartPolicy,
    cancel: Option<watch::Receiver<bool>>,
) -> Result<(u32, Vec<RunRowError>), (u32, Vec<RunRowError>, String)> {
    let (done, outcome) = oneshot::channel();
    let args = SupervisorArgs {
        factory,
        policy,
        done,
    };
    let (supervisor, handle) = Actor::spawn(None, SyncSupervisor, args)
        .await
        .map_err(|e| {
            (
                1,
                Vec::new(),
                format!("cannot start the sync's supervisor: {e}"),
            )
        })?;
    tokio::pin!(outcome);
    let outcome = tokio::select! {
        outcome = &mut outcome => outcome,
        _ = super::engine::cancelled(cancel) => {
            let _ = supervisor.cast(SupervisorMsg::Cancel);
            outcome.await
        }
    };
    let _ = handle.await;
    match outcome {
        Ok(SupervisedOutcome::Succeeded {
            attempts,
            row_errors,
            ..
        }) => Ok((attempts, row_errors)),
        Ok(SupervisedOutcome::Failed {
            error,
            attempts,
            row_errors,
            ..
        }) => Err((attempts, row_errors, error)),
        Ok(SupervisedOutcome::Cancelled { attempts }) => {
            Err((attempts, Vec::new(), "cancelled".into()))
        }
        Err(_) => Err((
            1,
            Vec::new(),
            "the sync's supervisor stopped without an outcome".into(),
        )),
    }
}
