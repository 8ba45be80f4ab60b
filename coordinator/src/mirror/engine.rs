//! One Mirror run. See the module docs of [`super`] for the sequence and its crash points.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_actors::pipeline::{RunProgress, RunRowError};
use ferry_connectors::mixpanel::{DestinationConfig, MixpanelClient};
use ferry_connectors::warehouse::mirror::{
    open_mirror_warehouse, ChangeType, MirrorSql, MirrorWarehouse, SnapshotRef,
};
use ferry_connectors::warehouse::{Page, ReadRequest, ReadSource};
use ferry_core::mapping::{ImportContext, LookupCsvWriter, RowMapper};
use ferry_core::spec::{Mapping, SourceSpec, SyncSpec, Target, TenantSpec};
use ferry_core::value::{Column, Value};
use tokio::sync::{mpsc, watch};

use super::cursor::{ChangeCounts, Generation, MirrorCursor, Pending};
use super::naming::StagingNames;
use super::schema::{compare, identity_columns, SchemaChange};
use super::send::{supervise, ChangeAttempts};
use super::{MirrorError, STAGING_SCHEMA};
use crate::records::RunRecord;
use crate::runner::{read_source, RunnerSettings};
use crate::store::{Fence, StateStore};

/// Everything one Mirror run needs; the runner builds it after claiming the sync.
pub struct MirrorRun<'a> {
    pub store: Arc<dyn StateStore>,
    pub settings: &'a RunnerSettings,
    pub tenant: &'a TenantSpec,
    pub source: &'a SourceSpec,
    pub sync: &'a SyncSpec,
    pub mapping: &'a Mapping,
    pub fence: &'a Fence,
    pub run: &'a RunRecord,
    pub progress: Arc<RunProgress>,
    /// Turns true when the run is to be cancelled: statements in flight are abandoned, the
    /// send stops, and the cursor stays at its last commit.
    pub cancel: Option<watch::Receiver<bool>>,
}

/// Resolves when `cancel` turns true (never without one).
pub(super) async fn cancelled(cancel: Option<watch::Receiver<bool>>) {
    if let Some(mut cancel) = cancel {
        if cancel.wait_for(|c| *c).await.is_ok() {
            return;
        }
    }
    std::future::pending::<()>().await
}

/// How long the phases of a generation took.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MirrorTimings {
    pub snapshot: Duration,
    pub diff: Duration,
    pub import: Duration,
    pub rotate: Duration,
}

/// What the run did, for its record: attempts, per-row errors, notes.
#[derive(Default)]
struct RunLog {
    attempts: u32,
    errors: Vec<RunRowError>,
    notes: Vec<String>,
}

/// The runner's outcome shape: `(attempts, row errors, note)` or `(attempts, row errors, why)`.
pub type Executed =
    Result<(u32, Vec<RunRowError>, Option<String>), (u32, Vec<RunRowError>, String)>;

/// Runs a Mirror sync once: finishes a generation a previous run left pending, then takes a
/// new snapshot and sends what changed since.
pub async fn run(r: MirrorRun<'_>) -> Executed {
    let mut log = RunLog::default();
    let result = match Engine::open(&r) {
        Ok(engine) => engine.run(&mut log).await,
        Err(e) => Err(e),
    };
    let attempts = log.attempts.max(1);
    match result {
        Ok(()) => Ok((attempts, log.errors, Some(log.notes.join("; ")))),
        Err(e) => {
            log.notes.push(e.to_string());
            Err((attempts, log.errors, log.notes.join("; ")))
        }
    }
}

/// Drops every staging object of `sync` (when the sync is deleted). Returns their names.
pub async fn drop_staging(
    source: &SourceSpec,
    sync: &SyncSpec,
) -> Result<Vec<String>, MirrorError> {
    let warehouse = open_mirror_warehouse(source)?;
    let sql = MirrorSql::new(warehouse.dialect(), STAGING_SCHEMA);
    if warehouse.query(&sql.schema_exists()).await?.rows.is_empty() {
        return Ok(Vec::new());
    }
    let tables = list_tables(warehouse.as_ref(), &sql).await?;
    let names = StagingNames::new(&sync.tenant, &sync.id);
    let owned: Vec<String> = names.all(&tables).into_iter().map(str::to_owned).collect();
    let drops: Vec<_> = owned.iter().map(|t| sql.drop_table(t)).collect();
    warehouse.execute(&drops).await?;
    Ok(owned)
}

pub(super) async fn list_tables(
    warehouse: &dyn MirrorWarehouse,
    sql: &MirrorSql<'_>,
) -> Result<Vec<String>, MirrorError> {
    let listed = warehouse.query(&sql.list_tables()).await?;
    Ok(listed
        .rows
        .iter()
        .filter_map(|r| match r.first() {
            Some(Value::Text(name)) => Some(name.clone()),
            _ => None,
        })
        .collect())
}

/// Creates the staging schema unless it exists (creating needs CREATE on the database; an
/// existing schema needs only CREATE on itself).
pub(super) async fn ensure_schema(
    warehouse: &dyn MirrorWarehouse,
    sql: &MirrorSql<'_>,
) -> Result<(), MirrorError> {
    let exists = !warehouse.query(&sql.schema_exists()).await?.rows.is_empty();
    if !exists {
        warehouse
            .execute(&[sql.create_schema()])
            .await
            .map_err(|e| MirrorError::Staging {
                schema: sql.schema().to_owned(),
                source: e,
            })?;
    }
    Ok(())
}

/// Reads `(change type, count)` rows into counts.
pub(super) async fn count_changes(
    warehouse: &dyn MirrorWarehouse,
    sql: &MirrorSql<'_>,
    changes: &str,
) -> Result<(ChangeCounts, u64), MirrorError> {
    let mut counts = ChangeCounts::default();
    for row in warehouse.query(&sql.change_counts(changes)).await?.rows {
        let n = match row.get(1) {
            Some(Value::Int(n)) => *n as u64,
            _ => 0,
        };
        let change = match row.first() {
            Some(Value::Text(t)) => ChangeType::parse(t),
            _ => None,
        };
        match change {
            Some(ChangeType::Insert) => counts.inserts = n,
            Some(ChangeType::Update) => counts.updates = n,
            Some(ChangeType::Delete) => counts.deletes = n,
            None => {}
        }
    }
    let shared = match warehouse
        .query(&sql.shared_identities(changes))
        .await?
        .rows
        .first()
        .and_then(|r| r.first())
    {
        Some(Value::Int(n)) => *n as u64,
        _ => 0,
    };
    Ok((counts, shared))
}

pub(super) fn snapshot_ref(g: &Generation) -> SnapshotRef<'_> {
    SnapshotRef {
        name: &g.snapshot,
        columns: &g.columns,
        identity: &g.identity,
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

struct Engine<'a> {
    r: &'a MirrorRun<'a>,
    warehouse: Arc<dyn MirrorWarehouse>,
    names: StagingNames,
    identity: Vec<String>,
    client: MixpanelClient,
}

impl<'a> Engine<'a> {
    fn open(r: &'a MirrorRun<'a>) -> Result<Self, MirrorError> {
        let warehouse = open_mirror_warehouse(r.source)?;
        let mut destination = DestinationConfig::from_tenant(r.tenant)?;
        destination.receiver_extensions = r.settings.receiver_extensions;
        let client = MixpanelClient::new(destination, r.settings.client.clone())?;
        Ok(Self {
            r,
            warehouse,
            names: StagingNames::new(&r.sync.tenant, &r.sync.id),
            identity: identity_columns(r.mapping),
            client,
        })
    }

    /// Runs warehouse work unless the run is cancelled first (the work is then abandoned: a
    /// statement the warehouse finishes anyway leaves a table the next run drops).
    async fn interruptible<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, MirrorError>>,
    ) -> Result<T, MirrorError> {
        tokio::select! {
            result = work => result,
            _ = cancelled(self.r.cancel.clone()) => Err(MirrorError::Cancelled),
        }
    }

    fn sql(&self) -> MirrorSql<'_> {
        MirrorSql::new(self.warehouse.dialect(), STAGING_SCHEMA)
    }

    fn is_lookup(&self) -> Option<&str> {
        match &self.r.mapping.target {
            Target::LookupTable {
                lookup_table_id, ..
            } => Some(lookup_table_id),
            _ => None,
        }
    }

    /// Checks the mapping against `columns` (names, types, reserved names) before anything is
    /// created or sent, and builds the row mapper for them.
    fn mapper(&self, columns: &[Column]) -> Result<Option<RowMapper>, MirrorError> {
        if self.is_lookup().is_some() {
            LookupCsvWriter::new(self.r.mapping, columns).map_err(MirrorError::Spec)?;
            return Ok(None);
        }
        let ctx = ImportContext {
            warehouse_type: self.r.source.kind.warehouse_type().into(),
            table: self.r.sync.table_label().into(),
            import_id: self.r.run.import_id.clone(),
            import_job_id: Some(self.r.sync.id.clone()),
            import_run_id: Some(self.r.run.run_id.clone()),
            token: self.r.tenant.profile_token().map(str::to_owned),
        };
        let mapper = RowMapper::new(self.r.sync, self.r.mapping, columns, &ctx)
            .map_err(MirrorError::Spec)?
            .with_event_deletes(self.r.settings.receiver_extensions);
        Ok(Some(mapper))
    }

    async fn commit(&self, cursor: &MirrorCursor) -> Result<(), MirrorError> {
        self.r
            .store
            .commit_cursor(self.r.fence, &self.r.run.run_id, &cursor.to_value())
            .await?;
        Ok(())
    }

    async fn run(&self, log: &mut RunLog) -> Result<(), MirrorError> {
        let read_from = read_source(self.r.sync);
        let columns = self.warehouse.columns(&read_from).await?;
        self.mapper(&columns)?;
        let sql = self.sql();
        ensure_schema(self.warehouse.as_ref(), &sql).await?;

        let stored = self.r.store.get_cursor(self.r.fence.sync()).await?;
        let mut cursor = match stored.map(|c| c.value) {
            Some(value) => MirrorCursor::from_value(&value)?.unwrap_or_else(|| {
                log.notes.push(
                    "the stored cursor is not mirror state (the mode changed?): starting with a full first generation".into(),
                );
                MirrorCursor::default()
            }),
            None => MirrorCursor::default(),
        };

        // Whatever of this sync the cursor does not name is a dead run's leftover.
        let tables = list_tables(self.warehouse.as_ref(), &sql).await?;
        let now = chrono::Utc::now().timestamp();
        let leftovers = self.names.leftovers(&tables, &cursor.referenced(), now);
        if !leftovers.is_empty() {
            tracing::info!(sync = %self.r.sync.id, ?leftovers, "dropping staging leftovers");
            let drops: Vec<_> = leftovers.iter().map(|t| sql.drop_table(t)).collect();
            self.warehouse.execute(&drops).await?;
        }
        let exists = |name: &str| tables.iter().any(|t| t == name);
        if let Some(current) = &cursor.current {
            if !exists(&current.snapshot) {
                log.notes.push(format!(
                    "the previous snapshot {} is missing from {STAGING_SCHEMA}: every row is sent again, and rows deleted since the last run cannot be detected",
                    current.snapshot
                ));
                cursor = MirrorCursor::default();
                self.commit(&cursor).await?;
            }
        }

        if let Some(pending) = cursor.pending.clone() {
            if exists(&pending.generation.snapshot) && exists(&pending.changes) {
                let left = pending.counts.total() as i64 - pending.sent_through;
                self.send(&pending, cursor.current.as_ref(), log).await?;
                self.rotate(&mut cursor).await?;
                log.notes.push(format!(
                    "finished generation {} left by an earlier run ({left} changes were still unacknowledged)",
                    pending.generation.number
                ));
            } else {
                log.notes.push(format!(
                    "generation {}'s staging tables are gone: diffing again from generation {}",
                    pending.generation.number,
                    cursor.current.as_ref().map_or(0, |g| g.number)
                ));
                cursor.pending = None;
                self.commit(&cursor).await?;
            }
        }

        self.new_generation(&mut cursor, &read_from, columns, log)
            .await
    }

    async fn new_generation(
        &self,
        cursor: &mut MirrorCursor,
        read_from: &ReadSource,
        columns: Vec<Column>,
        log: &mut RunLog,
    ) -> Result<(), MirrorError> {
        let sql = self.sql();
        if let Some(current) = &cursor.current {
            match compare(
                &current.columns,
                &current.identity,
                &columns,
                &self.identity,
            ) {
                SchemaChange::Same => {}
                SchemaChange::Added(added) => log.notes.push(format!(
                    "columns added: {} (rows whose new columns are NULL are not re-sent)",
                    added.join(", ")
                )),
                SchemaChange::Incompatible(what) if self.r.sync.accept_schema_change => {
                    log.notes.push(format!(
                        "schema change accepted: {what}; changed rows are re-sent"
                    ))
                }
                SchemaChange::Incompatible(what) => {
                    return Err(MirrorError::SchemaChanged(what));
                }
            }
        }
        let number = cursor.next_number();
        let generation = Generation {
            number,
            snapshot: self.names.snapshot(number, &self.r.run.run_id),
            columns,
            identity: self.identity.clone(),
        };
        let changes = self.names.changes(number, &self.r.run.run_id);
        let mut timings = MirrorTimings::default();

        let started = Instant::now();
        let new = snapshot_ref(&generation);
        let snapshot: Vec<_> = std::iter::once(sql.snapshot(read_from, &new)?)
            .chain(sql.analyze(new.name))
            .collect();
        self.interruptible(async { Ok(self.warehouse.execute(&snapshot).await?) })
            .await?;
        timings.snapshot = started.elapsed();

        let started = Instant::now();
        let old = cursor.current.as_ref().map(snapshot_ref);
        let diff: Vec<_> = std::iter::once(sql.diff(&new, old.as_ref(), &changes))
            .chain(sql.analyze(&changes))
            .collect();
        let (counts, shared) = self
            .interruptible(async {
                self.warehouse.execute(&diff).await?;
                count_changes(self.warehouse.as_ref(), &sql, &changes).await
            })
            .await?;
        timings.diff = started.elapsed();
        if shared > 0 && !self.identity.is_empty() {
            log.notes
                .push(self.shared_key_note(&new, &changes, shared).await);
        }
        let p = &self.r.progress;
        p.changes_inserted
            .fetch_add(counts.inserts, Ordering::Relaxed);
        p.changes_updated
            .fetch_add(counts.updates, Ordering::Relaxed);
        p.changes_deleted
            .fetch_add(counts.deletes, Ordering::Relaxed);
        // Every change is read and handed on once: the run's total (and so its ETA) is known.
        p.add_rows_total(counts.inserts + counts.updates + counts.deletes);

        let pending = Pending {
            generation,
            changes,
            counts,
            dedupe: shared > 0,
            sent_through: 0,
        };
        cursor.pending = Some(pending.clone());
        self.commit(cursor).await?;

        let started = Instant::now();
        self.send(&pending, cursor.current.as_ref(), log).await?;
        timings.import = started.elapsed();

        let started = Instant::now();
        self.rotate(cursor).await?;
        timings.rotate = started.elapsed();

        tracing::info!(
            sync = %self.r.sync.id,
            generation = number,
            inserts = counts.inserts,
            updates = counts.updates,
            deletes = counts.deletes,
            snapshot_ms = timings.snapshot.as_millis() as u64,
            diff_ms = timings.diff.as_millis() as u64,
            import_ms = timings.import.as_millis() as u64,
            rotate_ms = timings.rotate.as_millis() as u64,
            "mirror generation done"
        );
        let not_applied = self.r.progress.deletes_not_applied.load(Ordering::Relaxed);
        let mut note = format!(
            "generation {number}: {} inserted, {} updated, {} deleted",
            counts.inserts, counts.updates, counts.deletes
        );
        if not_applied > 0 {
            note.push_str(&format!(
                " ({not_applied} deletes not applied: the destination has no per-event delete)"
            ));
        }
        note.push_str(&format!(
            "; snapshot {}, diff {}, import {}, rotate {}",
            secs(timings.snapshot),
            secs(timings.diff),
            secs(timings.import),
            secs(timings.rotate)
        ));
        log.notes.push(note);
        Ok(())
    }

    /// Says which keys are not unique (the diff used one row of each).
    async fn shared_key_note(&self, new: &SnapshotRef<'_>, changes: &str, shared: u64) -> String {
        let sql = self.sql();
        let samples = match self
            .warehouse
            .query(&sql.shared_identity_samples(new, changes, 5))
            .await
        {
            Ok(batch) => batch
                .rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|v| v.to_id_string().unwrap_or_else(|| "NULL".into()))
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("(cannot list them: {e})"),
        };
        format!(
            "{shared} changed keys ({}) are shared by several rows; one row of each was used (e.g. {samples})",
            self.identity.join(", ")
        )
    }

    /// Sends a pending generation's changes (or, for a lookup table, replaces it when
    /// anything changed). Returns once every change was acknowledged.
    async fn send(
        &self,
        pending: &Pending,
        previous: Option<&Generation>,
        log: &mut RunLog,
    ) -> Result<(), MirrorError> {
        let sql = self.sql();
        let new = snapshot_ref(&pending.generation);
        if let Some(table_id) = self.is_lookup() {
            if pending.counts.total() > 0 {
                log.attempts = log.attempts.max(1);
                let note = self
                    .interruptible(self.replace_lookup(table_id, &new, log))
                    .await?;
                log.notes.push(note);
            }
            return Ok(());
        }
        if pending.sent_through >= pending.counts.total() as i64 {
            return Ok(());
        }
        let Some(mapper) = self.mapper(&pending.generation.columns)? else {
            return Ok(());
        };
        let old = previous.map(snapshot_ref);
        let factory = Arc::new(ChangeAttempts {
            store: self.r.store.clone(),
            fence: self.r.fence.clone(),
            run_id: self.r.run.run_id.clone(),
            warehouse: self.warehouse.clone(),
            read_sql: sql.read_changes(&new, old.as_ref(), &pending.changes, pending.dedupe),
            page_size: self.r.settings.page_size,
            mapper: Arc::new(mapper),
            client: self.client.clone(),
            progress: self.r.progress.clone(),
            settings: self.r.settings.pipeline.clone(),
        });
        match supervise(
            factory,
            self.r.settings.restart.clone(),
            self.r.cancel.clone(),
        )
        .await
        {
            Ok((attempts, errors)) => {
                log.attempts += attempts;
                log.errors.extend(errors);
                Ok(())
            }
            Err((attempts, errors, why)) => {
                log.attempts += attempts;
                log.errors.extend(errors);
                Err(MirrorError::Pipeline(why))
            }
        }
    }

    /// The pending generation becomes the current one; the previous snapshot and the changes
    /// table are dropped after the commit (a failed drop leaves a leftover the next run drops).
    async fn rotate(&self, cursor: &mut MirrorCursor) -> Result<(), MirrorError> {
        let Some(pending) = cursor.pending.clone() else {
            return Ok(());
        };
        let previous = cursor.current.clone();
        let rotated = cursor.rotated();
        self.commit(&rotated).await?;
        *cursor = rotated;
        let sql = self.sql();
        let mut drops = vec![sql.drop_table(&pending.changes)];
        if let Some(previous) = previous {
            drops.push(sql.drop_table(&previous.snapshot));
        }
        if let Err(e) = self.warehouse.execute(&drops).await {
            tracing::warn!(sync = %self.r.sync.id, error = %e, "dropping the previous snapshot failed; the next run drops it");
        }
        Ok(())
    }

    /// Replaces the lookup table with the whole new snapshot, all or nothing.
    async fn replace_lookup(
        &self,
        table_id: &str,
        snapshot: &SnapshotRef<'_>,
        log: &mut RunLog,
    ) -> Result<String, MirrorError> {
        let mut writer =
            LookupCsvWriter::new(self.r.mapping, snapshot.columns).map_err(MirrorError::Spec)?;
        let (tx, mut rx) = mpsc::channel::<Page>(2);
        let request = ReadRequest {
            source: ReadSource::Sql(self.sql().read_snapshot(snapshot)),
            cursor: None,
            page_size: self.r.settings.page_size,
        };
        let warehouse = self.warehouse.clone();
        let reader = tokio::spawn(async move { warehouse.read(&request, tx).await });
        let progress = &self.r.progress;
        let mut row_index = 0u64;
        while let Some(page) = rx.recv().await {
            for row in &page.batch.rows {
                if let Err(e) = writer.write_row(row_index, row) {
                    progress.rows_invalid.fetch_add(1, Ordering::Relaxed);
                    log.errors.push(RunRowError {
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
        reader
            .await
            .map_err(|e| MirrorError::Pipeline(format!("the reader stopped: {e}")))??;
        let rows = writer.rows();
        let csv = writer
            .finish()
            .map_err(|e| MirrorError::Pipeline(format!("writing the CSV: {e}")))?;
        progress.records_sent.fetch_add(rows, Ordering::Relaxed);
        let outcome = self.client.replace_lookup_table(table_id, csv).await?;
        progress.records_accepted.fetch_add(rows, Ordering::Relaxed);
        Ok(format!(
            "lookup table '{table_id}' replaced with {} rows",
            outcome.rows.unwrap_or(rows)
        ))
    }
}
