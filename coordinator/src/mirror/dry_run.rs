//! A Mirror dry run: what the next run would send, computed the way a run computes it
//! (snapshot, diff, every changed row through the mapper), with nothing sent and nothing
//! rotated. Its own snapshot and changes tables (`dry_<sync>_<time>_s` / `_c`) are dropped
//! before it returns; a dry run that dies leaves them for a day at most (any later run of the
//! sync drops older ones), or until the sync is deleted.

use std::sync::atomic::Ordering;

use ferry_actors::changes::{encode_change, NOT_APPLIED};
use ferry_actors::pipeline::RunRowError;
use ferry_connectors::warehouse::mirror::{
    open_mirror_warehouse, ChangeType, MirrorSql, MirrorWarehouse,
};
use ferry_connectors::warehouse::{Page, ReadRequest, ReadSource};
use ferry_core::mapping::{ImportContext, LookupCsvWriter, RowMapper};
use ferry_core::spec::{SourceSpec, SyncMode, SyncSpec, Target, TenantSpec};
use serde::Serialize;
use tokio::sync::mpsc;

use super::cursor::{ChangeCounts, Generation, MirrorCursor};
use super::engine::{count_changes, ensure_schema, list_tables, snapshot_ref};
use super::naming::StagingNames;
use super::schema::{compare, identity_columns, SchemaChange};
use super::{MirrorError, STAGING_SCHEMA};
use crate::records::SyncId;
use crate::runner::{read_source, RunnerSettings};
use crate::store::StateStore;

/// One record the run would send (or the row error it would log).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DryRunSample {
    pub change: ChangeType,
    /// The record as it would be sent (for a profile change, its first update).
    pub record: serde_json::Value,
}

/// What the next Mirror run would do.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MirrorDryRun {
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    /// Updates and deletes: what Mixpanel bills beyond new data.
    pub billable: u64,
    /// Changed rows that would become no record (invalid rows; see `errors`).
    pub invalid: u64,
    /// Deleted events the destination cannot delete (Mixpanel has no per-event delete).
    pub deletes_not_applied: u64,
    /// Changes an earlier run found but the destination has not acknowledged yet; the next
    /// run sends them first.
    pub pending_unsent: u64,
    /// Lookup tables: whether the table would be replaced (it is when anything changed).
    pub lookup_replaced: Option<bool>,
    /// How the source's columns changed since the last snapshot, if they did in a way a run
    /// refuses unless the sync sets `accept_schema_change`.
    pub schema_change: Option<String>,
    pub samples: Vec<DryRunSample>,
    pub errors: Vec<RunRowError>,
}

/// Computes what the next run of a Mirror `sync` would send. `max_samples` records (and at
/// most the pipeline's `max_row_errors` row errors) are kept.
pub async fn dry_run(
    store: &dyn StateStore,
    settings: &RunnerSettings,
    tenant: &TenantSpec,
    source: &SourceSpec,
    sync: &SyncSpec,
    max_samples: usize,
) -> Result<MirrorDryRun, MirrorError> {
    let valid = sync.validate().map_err(MirrorError::Spec)?;
    if sync.mode != SyncMode::Mirror {
        return Err(MirrorError::Pipeline(format!(
            "sync '{}' is not a mirror sync",
            sync.id
        )));
    }
    let mapping = &valid.mapping;
    let warehouse = open_mirror_warehouse(source)?;
    let read_from = read_source(sync);
    let columns = warehouse.columns(&read_from).await?;
    let is_lookup = matches!(mapping.target, Target::LookupTable { .. });
    let mapper = if is_lookup {
        LookupCsvWriter::new(mapping, &columns).map_err(MirrorError::Spec)?;
        None
    } else {
        let ctx = ImportContext {
            warehouse_type: source.kind.warehouse_type().into(),
            table: sync.table_label().into(),
            import_id: "dry-run".into(),
            import_job_id: Some(sync.id.clone()),
            import_run_id: None,
            token: tenant.profile_token().map(str::to_owned),
        };
        Some(
            RowMapper::new(sync, mapping, &columns, &ctx)
                .map_err(MirrorError::Spec)?
                .with_event_deletes(settings.receiver_extensions),
        )
    };
    let sql = MirrorSql::new(warehouse.dialect(), STAGING_SCHEMA);
    ensure_schema(warehouse.as_ref(), &sql).await?;

    let sync_id = SyncId::of_spec(sync)?;
    let cursor = match store.get_cursor(&sync_id).await? {
        Some(c) => MirrorCursor::from_value(&c.value)?.unwrap_or_default(),
        None => MirrorCursor::default(),
    };
    let tables = list_tables(warehouse.as_ref(), &sql).await?;
    let exists = |name: &str| tables.iter().any(|t| t == name);
    let mut report = MirrorDryRun::default();
    // The next run diffs against the pending generation once it has sent it.
    let base: Option<&Generation> = match &cursor.pending {
        Some(p) if exists(&p.generation.snapshot) && exists(&p.changes) => {
            report.pending_unsent = (p.counts.total() as i64 - p.sent_through).max(0) as u64;
            Some(&p.generation)
        }
        _ => cursor.current.as_ref().filter(|g| exists(&g.snapshot)),
    };
    let identity = identity_columns(mapping);
    if let Some(base) = base {
        if let SchemaChange::Incompatible(what) =
            compare(&base.columns, &base.identity, &columns, &identity)
        {
            report.schema_change = Some(what);
        }
    }

    let names = StagingNames::new(&sync.tenant, &sync.id);
    let (snapshot, changes) = names.dry_run(chrono::Utc::now().timestamp());
    let generation = Generation {
        number: 0,
        snapshot,
        columns,
        identity,
    };
    let result = diff_and_read(
        warehouse.as_ref(),
        &sql,
        &read_from,
        &generation,
        base,
        &changes,
        mapper.as_ref(),
        settings,
        max_samples,
        &mut report,
    )
    .await;
    let drops = [
        sql.drop_table(&changes),
        sql.drop_table(&generation.snapshot),
    ];
    let dropped = warehouse.execute(&drops).await;
    result?;
    dropped?;
    if is_lookup {
        report.lookup_replaced = Some(report.inserts + report.updates + report.deletes > 0);
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn diff_and_read(
    warehouse: &dyn MirrorWarehouse,
    sql: &MirrorSql<'_>,
    read_from: &ReadSource,
    generation: &Generation,
    base: Option<&Generation>,
    changes: &str,
    mapper: Option<&RowMapper>,
    settings: &RunnerSettings,
    max_samples: usize,
    report: &mut MirrorDryRun,
) -> Result<(), MirrorError> {
    let new = snapshot_ref(generation);
    let old = base.map(snapshot_ref);
    let statements: Vec<_> = [
        sql.drop_table(changes),
        sql.drop_table(&generation.snapshot),
        sql.snapshot(read_from, &new)?,
    ]
    .into_iter()
    .chain(sql.analyze(&generation.snapshot))
    .chain([sql.diff(&new, old.as_ref(), changes)])
    .chain(sql.analyze(changes))
    .collect();
    warehouse.execute(&statements).await?;
    let (counts, shared): (ChangeCounts, u64) = count_changes(warehouse, sql, changes).await?;
    report.inserts = counts.inserts;
    report.updates = counts.updates;
    report.deletes = counts.deletes;
    report.billable = counts.updates + counts.deletes;
    let Some(mapper) = mapper else {
        return Ok(());
    };
    if counts.total() == 0 {
        return Ok(());
    }

    let (tx, mut rx) = mpsc::channel::<Page>(2);
    let request = ReadRequest {
        source: ReadSource::Sql(sql.read_changes(&new, old.as_ref(), changes, shared > 0)),
        cursor: None,
        page_size: settings.page_size,
    };
    let reader = async { warehouse.read(&request, tx).await };
    let max_errors = settings.pipeline.max_row_errors;
    let progress = ferry_actors::pipeline::RunProgress::default();
    let encoder = async {
        let now = chrono::Utc::now().timestamp_millis();
        let mut row_index = 0u64;
        let mut out = Vec::new();
        while let Some(page) = rx.recv().await {
            let Some(change_index) = ferry_actors::changes::change_type_index(&page.batch.columns)
            else {
                continue;
            };
            for row in &page.batch.rows {
                out.clear();
                let change = match row.get(change_index) {
                    Some(ferry_core::value::Value::Text(t)) => ChangeType::parse(t),
                    _ => None,
                };
                match encode_change(mapper, row_index, row, change_index, now, &mut out) {
                    Ok(()) => {
                        if let (Some(change), Some(record)) = (change, out.first()) {
                            if report.samples.len() < max_samples {
                                report.samples.push(DryRunSample {
                                    change,
                                    record: serde_json::from_slice(&record.json)
                                        .unwrap_or_default(),
                                });
                            }
                        }
                    }
                    Err((reason, e)) => {
                        let counter = if reason == NOT_APPLIED {
                            &progress.deletes_not_applied
                        } else {
                            &progress.rows_invalid
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        if report.errors.len() < max_errors {
                            report.errors.push(RunRowError {
                                reason,
                                row: Some(e.row),
                                key: e.key,
                                field: e.field,
                                message: e.message,
                            });
                        }
                    }
                }
                row_index += 1;
            }
        }
    };
    let (read, ()) = tokio::join!(reader, encoder);
    read?;
    report.invalid = progress.rows_invalid.load(Ordering::Relaxed);
    report.deletes_not_applied = progress.deletes_not_applied.load(Ordering::Relaxed);
    Ok(())
}
