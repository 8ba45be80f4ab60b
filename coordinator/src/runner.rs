//! Runs one sync once on this node: claim it (fencing token), record the run, execute it for
//! its table type and mode under a SyncSupervisor, record the outcome, release the claim.
//!
//! - Append: rows above the committed cursor; the cursor advances as pages are acknowledged.
//! - Full: the whole table every run (profiles, groups, lookup tables; refused for events by
//!   spec validation); nothing is remembered between runs.
//! - One-time: the whole table once; nothing is remembered afterwards.
//! - Lookup tables are read whole into a CSV and replaced all-or-nothing.
//! - Mirror (and profile history, which is Mirror only) runs in [`crate::mirror`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::Utc;
use ferry_actors::pipeline::{
    build_stages, PipelineError, PipelineInput, PipelineSettings, PipelineStages, RunProgress,
    RunRowError,
};
use ferry_actors::restart::RestartPolicy;
use ferry_actors::send_gate::{SendGate, SendGates};
use ferry_actors::supervisor::{
    AttemptFactory, SupervisedOutcome, SupervisorArgs, SupervisorMsg, SyncSupervisor,
};
use ferry_connectors::mixpanel::{
    ClientSettings, DestinationConfig, MixpanelClient, MixpanelError,
};
use ferry_connectors::warehouse::{
    open_warehouse, CursorFilter, Page, ReadRequest, ReadSource, Warehouse, WarehouseError,
};
use ferry_core::error::{Classify, ErrorClass};
use ferry_core::mapping::{ImportContext, LookupCsvWriter, RowMapper};
use ferry_core::spec::{SourceSpec, SpecErrors, SyncMode, SyncSpec, Target, TenantSpec};
use futures_util::future::BoxFuture;
use ractor::Actor;
use tokio::sync::{mpsc, oneshot};

use crate::records::{RunCounts, RunErrorEntry, RunRecord, RunState, SyncId};
use crate::sink::FencedCursorSink;
use crate::store::{Fence, StateStore, StoreError};

#[derive(Debug, Clone)]
pub struct RunnerSettings {
    pub node_id: String,
    pub page_size: usize,
    pub pipeline: PipelineSettings,
    pub restart: RestartPolicy,
    pub client: ClientSettings,
    /// The destination is the bundled receiver (its `/ferry/v1/` extensions may be used).
    pub receiver_extensions: bool,
    /// The node's send budgets: one limiter per budgeted tenant, shared by all its runs here
    /// (a cluster node shares each budget with the other nodes; see `cluster::budget`).
    pub send_gates: SendGates,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        Self {
            node_id: "node-1".into(),
            page_size: 5000,
            pipeline: PipelineSettings::default(),
            restart: RestartPolicy::default(),
            client: ClientSettings::default(),
            receiver_extensions: false,
            send_gates: SendGates::default(),
        }
    }
}

/// Why a run could not even be recorded (everything after that ends in the run record).
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("sync '{sync}' is invalid: {errors}")]
    Spec { sync: String, errors: SpecErrors },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an executed run failed (kept in the run record's message).
#[derive(Debug, thiserror::Error)]
enum ExecError {
    #[error("{0}")]
    Spec(SpecErrors),
    #[error("source: {0}")]
    Source(#[from] WarehouseError),
    #[error("destination: {0}")]
    Destination(#[from] MixpanelError),
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Pipeline(String),
}

static RUN_SEQ: AtomicU64 = AtomicU64::new(0);

/// A run id that sorts by start time and is unique within the process and across restarts.
pub fn new_run_id() -> String {
    let now = Utc::now();
    format!(
        "{}-{:04}",
        now.format("%Y%m%dT%H%M%S%6fZ"),
        RUN_SEQ.fetch_add(1, Ordering::Relaxed) % 10_000
    )
}

/// Splits `schema.table` (the first dot) into a read source.
pub fn read_source(sync: &SyncSpec) -> ReadSource {
    match (&sync.table, &sync.sql) {
        (_, Some(sql)) => ReadSource::Sql(sql.clone()),
        (Some(table), None) => match table.split_once('.') {
            Some((schema, name)) => ReadSource::Table {
                schema: Some(schema.into()),
                name: name.into(),
            },
            None => ReadSource::Table {
                schema: None,
                name: table.clone(),
            },
        },
        (None, None) => ReadSource::Sql(String::new()),
    }
}

pub struct SyncRunner {
    store: Arc<dyn StateStore>,
    settings: RunnerSettings,
    control: RunControl,
}

/// What a caller that starts one run and may cancel it sets (the admin API's run manager).
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    /// The run's id, chosen by the caller so it can be named before the run is recorded
    /// (make it with [`new_run_id`]).
    pub run_id: Option<String>,
    /// When it turns true the run is cancelled: the supervisor stops the pipeline, the run
    /// ends `cancelled`, and the cursor stays at its last commit. (A lookup-table replacement,
    /// one request, is not interrupted.)
    pub cancel: Option<tokio::sync::watch::Receiver<bool>>,
}

impl RunControl {
    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| *c.borrow())
    }

    /// Resolves when the run is cancelled (never, without a cancel signal).
    async fn wait_cancelled(&self) {
        if let Some(mut cancel) = self.cancel.clone() {
            if cancel.wait_for(|c| *c).await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

impl SyncRunner {
    pub fn new(store: Arc<dyn StateStore>, settings: RunnerSettings) -> Self {
        Self {
            store,
            settings,
            control: RunControl::default(),
        }
    }

    /// This runner, for one run under `control`.
    pub fn with_control(mut self, control: RunControl) -> Self {
        self.control = control;
        self
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// Runs the sync once and returns its final run record. `progress` is updated live.
    pub async fn run(
        &self,
        tenant: &TenantSpec,
        source: &SourceSpec,
        sync: &SyncSpec,
        progress: Arc<RunProgress>,
    ) -> Result<RunRecord, RunnerError> {
        let valid = sync.validate().map_err(|errors| RunnerError::Spec {
            sync: sync.id.clone(),
            errors,
        })?;
        let sync_id = SyncId::of_spec(sync)?;
        let fence = self.store.claim(&sync_id, &self.settings.node_id).await?;
        let run_id = self.control.run_id.clone().unwrap_or_else(new_run_id);
        let mut run = RunRecord::queued(
            sync_id,
            run_id.clone(),
            format!("{}-{run_id}", sync.id),
            Utc::now(),
        );
        run.state = RunState::Running;
        run.started_at = Some(Utc::now());
        // The run counts as its tenant's demand on this node until it ends.
        let budget = self
            .settings
            .send_gates
            .join(&tenant.id, tenant.send_budget);
        if let Err(e) = self.store.put_run(&fence, &run).await {
            let _ = self.store.release(&fence).await;
            return Err(e.into());
        }

        let executed = self
            .execute(
                tenant,
                source,
                sync,
                &valid.mapping,
                &fence,
                &run,
                progress.clone(),
                budget.gate(),
            )
            .await;
        run.counts = RunCounts::of_progress(&progress);
        run.finished_at = Some(Utc::now());
        match executed {
            Ok((attempts, row_errors, note)) => {
                run.state = RunState::Succeeded;
                run.attempts = attempts;
                run.errors = row_errors.iter().map(RunErrorEntry::from).collect();
                run.message = note;
            }
            Err((attempts, row_errors, _)) if self.control.cancelled() => {
                run.state = RunState::Cancelled;
                run.attempts = attempts;
                run.errors = row_errors.iter().map(RunErrorEntry::from).collect();
                run.message = Some("cancelled on request".into());
            }
            Err((attempts, row_errors, error)) => {
                run.state = RunState::Failed;
                run.attempts = attempts;
                run.errors = row_errors.iter().map(RunErrorEntry::from).collect();
                run.message = Some(error);
            }
        }
        let recorded = self.store.put_run(&fence, &run).await;
        // Released explicitly (not on drop): a claim must not outlive the run by accident, and
        // an aborted process's claim is voided by the store's lease instead.
        let released = self.store.release(&fence).await;
        recorded?;
        released?;
        Ok(run)
    }

    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        tenant: &TenantSpec,
        source: &SourceSpec,
        sync: &SyncSpec,
        mapping: &ferry_core::spec::Mapping,
        fence: &Fence,
        run: &RunRecord,
        progress: Arc<RunProgress>,
        send_gate: SendGate,
    ) -> Result<(u32, Vec<RunRowError>, Option<String>), (u32, Vec<RunRowError>, String)> {
        let fail = |e: ExecError| (1, Vec::new(), e.to_string());
        let pipeline = PipelineSettings {
            send_gate,
            ..self.settings.pipeline.clone()
        };
        if sync.mode == SyncMode::Mirror {
            return crate::mirror::run(crate::mirror::MirrorRun {
                store: self.store.clone(),
                settings: &RunnerSettings {
                    pipeline,
                    ..self.settings.clone()
                },
                tenant,
                source,
                sync,
                mapping,
                fence,
                run,
                progress,
                cancel: self.control.cancel.clone(),
            })
            .await;
        }
        let warehouse = open_warehouse(source).map_err(|e| fail(e.into()))?;
        let read_from = read_source(sync);
        let columns = warehouse
            .columns(&read_from)
            .await
            .map_err(|e| fail(e.into()))?;
        let mut destination = DestinationConfig::from_tenant(tenant).map_err(|e| fail(e.into()))?;
        destination.receiver_extensions = self.settings.receiver_extensions;
        let client = MixpanelClient::new(destination, self.settings.client.clone())
            .map_err(|e| fail(e.into()))?;

        if let Target::LookupTable {
            lookup_table_id, ..
        } = &mapping.target
        {
            let note = self
                .replace_lookup_table(
                    warehouse,
                    read_from,
                    mapping,
                    &columns,
                    &client,
                    lookup_table_id,
                    &progress,
                )
                .await
                .map_err(|(errors, e)| (1, errors, e.to_string()))?;
            return Ok((1, Vec::new(), Some(note)));
        }

        let ctx = ImportContext {
            warehouse_type: source.kind.warehouse_type().into(),
            table: sync.table_label().into(),
            import_id: run.import_id.clone(),
            import_job_id: Some(sync.id.clone()),
            import_run_id: Some(run.run_id.clone()),
            token: tenant.profile_token().map(str::to_owned),
        };
        let mapper = Arc::new(
            RowMapper::new(sync, mapping, &columns, &ctx).map_err(|e| fail(ExecError::Spec(e)))?,
        );
        let cursor_column = match sync.mode {
            SyncMode::Append => sync.cursor_column.clone(),
            _ => None,
        };
        let factory = Arc::new(RunAttempts {
            store: self.store.clone(),
            fence: fence.clone(),
            run_id: run.run_id.clone(),
            warehouse,
            read_from,
            cursor_column,
            page_size: self.settings.page_size,
            mapper,
            client,
            progress,
            settings: pipeline,
        });
        let (done, outcome) = oneshot::channel();
        let args = SupervisorArgs {
            factory,
            policy: self.settings.restart.clone(),
            done,
        };
        let (supervisor, handle) = Actor::spawn(None, SyncSupervisor, args)
            .await
            .map_err(|e| {
                fail(ExecError::Pipeline(format!(
                    "cannot start the sync's supervisor: {e}"
                )))
            })?;
        tokio::pin!(outcome);
        let outcome = tokio::select! {
            outcome = &mut outcome => outcome,
            _ = self.control.wait_cancelled() => {
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
            }) => Ok((attempts, row_errors, None)),
            Ok(SupervisedOutcome::Failed {
                error,
                attempts,
                row_errors,
                ..
            }) => Err((attempts, row_errors, error)),
            Ok(SupervisedOutcome::Cancelled { attempts }) => {
                Err((attempts, Vec::new(), "cancelled".into()))
            }
            Err(_) => Err(fail(ExecError::Pipeline(
                "the sync's supervisor stopped without an outcome".into(),
            ))),
        }
    }

    /// Reads the whole table into a CSV (bounded by Mixpanel's 100 MB limit, which the
    /// destination enforces) and replaces the lookup table with it.
    #[allow(clippy::too_many_arguments)]
    async fn replace_lookup_table(
        &self,
        warehouse: Arc<dyn Warehouse>,
        read_from: ReadSource,
        mapping: &ferry_core::spec::Mapping,
        columns: &[ferry_core::value::Column],
        client: &MixpanelClient,
        lookup_table_id: &str,
        progress: &RunProgress,
    ) -> Result<String, (Vec<RunRowError>, ExecError)> {
        let mut writer =
            LookupCsvWriter::new(mapping, columns).map_err(|e| (Vec::new(), ExecError::Spec(e)))?;
        let (tx, mut rx) = mpsc::channel::<Page>(2);
        let request = ReadRequest {
            source: read_from,
            cursor: None,
            page_size: self.settings.page_size,
        };
        let reader = tokio::spawn(async move { warehouse.read(&request, tx).await });
        let mut row_errors = Vec::new();
        let mut row_index = 0u64;
        while let Some(page) = rx.recv().await {
            for row in &page.batch.rows {
                if let Err(e) = writer.write_row(row_index, row) {
                    progress.rows_invalid.fetch_add(1, Ordering::Relaxed);
                    row_errors.push(RunRowError {
                        reason: "invalid_row",
                        row: Some(e.row),
                        key: e.key,
                        field: e.field,
                        message: e.message,
                    });
                }
                row_index += 1;
            }
            progress
                .rows_read
                .fetch_add(page.batch.rows.len() as u64, Ordering::Relaxed);
        }
        match reader.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err((row_errors, e.into())),
            Err(e) => {
                return Err((
                    row_errors,
                    ExecError::Pipeline(format!("the reader stopped: {e}")),
                ))
            }
        }
        let rows = writer.rows();
        let csv = writer.finish().map_err(|e| {
            (
                Vec::new(),
                ExecError::Pipeline(format!("writing the CSV: {e}")),
            )
        })?;
        progress.records_sent.fetch_add(rows, Ordering::Relaxed);
        let outcome = client
            .replace_lookup_table(lookup_table_id, csv)
            .await
            .map_err(|e| (row_errors.clone(), e.into()))?;
        progress.records_accepted.fetch_add(rows, Ordering::Relaxed);
        Ok(format!(
            "lookup table '{lookup_table_id}' replaced with {} rows",
            outcome.rows.unwrap_or(rows)
        ))
    }
}

/// Builds each attempt of an event or profile run, resuming Append from the committed cursor.
struct RunAttempts {
    store: Arc<dyn StateStore>,
    fence: Fence,
    run_id: String,
    warehouse: Arc<dyn Warehouse>,
    read_from: ReadSource,
    cursor_column: Option<String>,
    page_size: usize,
    mapper: Arc<RowMapper>,
    client: MixpanelClient,
    progress: Arc<RunProgress>,
    settings: PipelineSettings,
}

impl AttemptFactory for RunAttempts {
    fn build(&self, _attempt: u32) -> BoxFuture<'static, Result<PipelineStages, PipelineError>> {
        let store = self.store.clone();
        let fence = self.fence.clone();
        let run_id = self.run_id.clone();
        let warehouse = self.warehouse.clone();
        let read_from = self.read_from.clone();
        let cursor_column = self.cursor_column.clone();
        let page_size = self.page_size;
        let mapper = self.mapper.clone();
        let client = self.client.clone();
        let progress = self.progress.clone();
        let settings = self.settings.clone();
        Box::pin(async move {
            let cursor = match cursor_column {
                Some(column) => {
                    let after = store
                        .get_cursor(fence.sync())
                        .await
                        .map_err(|e| PipelineError::Commit(format!("reading the cursor: {e}")))?
                        .map(|c| c.value);
                    Some(CursorFilter { column, after })
                }
                None => None,
            };
            let sink = Arc::new(FencedCursorSink::new(store, fence, run_id));
            Ok(build_stages(PipelineInput {
                warehouse,
                read: ReadRequest {
                    source: read_from,
                    cursor,
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

impl Classify for RunnerError {
    fn class(&self) -> ErrorClass {
        match self {
            RunnerError::Spec { .. } => ErrorClass::Fatal,
            RunnerError::Store(e) => e.class(),
        }
    }
}
