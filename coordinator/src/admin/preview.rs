//! What a sync would send, without sending it: previews of a few rows, dry runs over what a run
//! would read, the check of a mapping against the real table's columns, and the deletion of
//! what a sync imported (where the destination allows it).

use std::sync::Arc;

use ferry_connectors::mixpanel::{
    Batch, BatchBuilder, ClientSettings, DestinationConfig, MixpanelClient, RecordEndpoint,
};
use ferry_connectors::warehouse::{
    CursorFilter, Page, ReadRequest, ReadSource, Warehouse, WarehouseError,
};
use ferry_core::mapping::{
    EncodedRecord, ImportContext, LookupCsvWriter, RecordKind, RowError, RowMapper, Unset,
};
use ferry_core::spec::{SyncMode, SyncSpec, Target, TenantSpec, ValidSync};
use ferry_core::value::{Column, Value};
use ferry_proto::admin::v1 as pb;
use tokio::sync::mpsc;
use tonic::Status;

use super::specs::{Job, ResolveError};
use super::{errors, parse, sync_id, Admin};
use crate::catalog::CatalogError;
use crate::runner::read_source;

/// How `$token` appears in previews: the project token is a credential, never shown.
const TOKEN_SHOWN_AS: &str = "***";
/// Per-row problems returned by a dry run.
const DRY_RUN_ERRORS: usize = 100;

pub(super) fn column_pb(c: &Column) -> pb::ColumnInfo {
    pb::ColumnInfo {
        name: c.name.clone(),
        r#type: c.kind.name().to_string(),
    }
}

fn endpoint_name(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Event => "import",
        RecordKind::UserProfile => "engage",
        RecordKind::GroupProfile => "groups",
        RecordKind::EventDelete => "events_delete",
    }
}

fn row_problem(e: RowError) -> pb::RowProblem {
    pb::RowProblem {
        reason: "invalid_row".into(),
        row: Some(e.row),
        key: e.key.unwrap_or_default(),
        field: e.field,
        message: e.message,
    }
}

fn record_pb(row: u64, record: &EncodedRecord) -> pb::PreviewRecord {
    pb::PreviewRecord {
        row,
        endpoint: endpoint_name(record.kind).into(),
        json: String::from_utf8_lossy(&record.json).into_owned(),
    }
}

/// How a sync turns rows into records.
pub(super) enum Encoder {
    Records(Arc<RowMapper>),
    LookupTable {
        valid: Box<ValidSync>,
        columns: Vec<Column>,
    },
}

/// A sync whose mapping was checked against its table's real columns.
pub(super) struct CheckedSync {
    pub valid: ValidSync,
    pub read: ReadSource,
    pub warehouse: Arc<dyn Warehouse>,
    pub encoder: Encoder,
}

impl Admin {
    /// Validates `spec` and checks its mapping against the columns its source really has: every
    /// problem names its field and column.
    pub(super) async fn check_sync(
        &self,
        tenant: &TenantSpec,
        spec: &SyncSpec,
        import_id: &str,
    ) -> Result<CheckedSync, Status> {
        let context = format!("sync '{}'", spec.id);
        let valid = spec
            .validate()
            .map_err(|e| errors::spec_errors(&context, &e))?;
        let (source, warehouse) = match self.source_warehouse(&spec.tenant, &spec.source).await {
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Err(errors::invalid_field(
                    "sync.source",
                    format!("tenant '{}' has no source '{}'", spec.tenant, spec.source),
                ))
            }
            other => other?,
        };
        let read = read_source(spec);
        let what = format!("{context}: reading the columns of {}", spec.table_label());
        let columns = match self.within(&what, warehouse.columns(&read)).await? {
            Ok(columns) => columns,
            Err(e @ WarehouseError::NotFound { .. }) => {
                let field = if spec.sql.is_some() {
                    "sync.sql"
                } else {
                    "sync.table"
                };
                return Err(errors::invalid_field(field, e.to_string()));
            }
            Err(e @ WarehouseError::Query(_)) if spec.sql.is_some() => {
                return Err(errors::invalid_field("sync.sql", e.to_string()));
            }
            Err(e) => return Err(errors::warehouse(&what, &e)),
        };
        let encoder = match &valid.mapping.target {
            Target::LookupTable { .. } => {
                LookupCsvWriter::new(&valid.mapping, &columns)
                    .map_err(|e| errors::spec_errors(&context, &e))?;
                Encoder::LookupTable {
                    valid: Box::new(valid.clone()),
                    columns: columns.clone(),
                }
            }
            _ => {
                let ctx = ImportContext {
                    warehouse_type: source.kind.warehouse_type().into(),
                    table: spec.table_label().into(),
                    import_id: import_id.into(),
                    import_job_id: Some(spec.id.clone()),
                    import_run_id: None,
                    token: tenant.profile_token().map(|_| TOKEN_SHOWN_AS.to_string()),
                };
                let mapper = RowMapper::new(spec, &valid.mapping, &columns, &ctx)
                    .map_err(|e| errors::spec_errors(&context, &e))?;
                Encoder::Records(Arc::new(mapper))
            }
        };
        Ok(CheckedSync {
            valid,
            read,
            warehouse,
            encoder,
        })
    }

    pub(super) async fn preview_rows(
        &self,
        tenant: &str,
        req: pb::PreviewRowsRequest,
    ) -> Result<pb::PreviewRowsResponse, Status> {
        let spec: SyncSpec = match req.what {
            Some(pb::preview_rows_request::What::Sync(id)) => {
                let id = sync_id(tenant, &id)?;
                let record = self
                    .catalog
                    .get_sync(&id)
                    .await
                    .map_err(|e| errors::catalog(&e))?
                    .ok_or_else(|| Status::not_found(format!("sync {id} does not exist")))?;
                self.resolver
                    .sync_spec(&record.value)
                    .map_err(|e| errors::resolve(&e))?
            }
            Some(pb::preview_rows_request::What::Definition(def)) => {
                parse("sync", super::convert::sync_json(&def, tenant)?)?
            }
            None => {
                return Err(errors::invalid_field(
                    "what",
                    "give a stored sync's id or a sync definition",
                ))
            }
        };
        let (tenant_spec, _) = self
            .resolver
            .tenant(tenant)
            .await
            .map_err(|e| errors::resolve(&e))?;
        let checked = self.check_sync(&tenant_spec, &spec, "preview").await?;
        let limit = match req.limit {
            0 => 10,
            n => n.min(1000) as usize,
        };
        let context = format!("sync '{}': previewing rows", spec.id);
        let batch = self
            .within(&context, checked.warehouse.preview(&checked.read, limit))
            .await?
            .map_err(|e| errors::warehouse(&context, &e))?;
        let rows = batch
            .rows
            .iter()
            .map(|row| {
                serde_json::Value::Array(row.iter().map(Value::to_property).collect()).to_string()
            })
            .collect();
        let mut records = Vec::new();
        let mut problems = Vec::new();
        match &checked.encoder {
            Encoder::Records(mapper) => {
                let now = chrono::Utc::now().timestamp_millis();
                for (i, row) in batch.rows.iter().enumerate() {
                    let mut out = Vec::new();
                    match mapper.encode_upsert(i as u64, row, Unset::Never, now, &mut out) {
                        Ok(()) => records.extend(out.iter().map(|r| record_pb(i as u64, r))),
                        Err(e) => problems.push(row_problem(e)),
                    }
                }
            }
            Encoder::LookupTable { valid, columns } => {
                let (csv, errors) = lookup_csv(valid, columns, batch.rows.iter())?;
                records.push(pb::PreviewRecord {
                    row: 0,
                    endpoint: "lookup_table".into(),
                    json: csv,
                });
                problems.extend(errors.into_iter().map(row_problem));
            }
        }
        Ok(pb::PreviewRowsResponse {
            columns: batch.columns.iter().map(column_pb).collect(),
            rows,
            records,
            errors: problems,
            warnings: checked
                .valid
                .warnings
                .iter()
                .map(|w| w.to_string())
                .collect(),
        })
    }

    /// What a run of the sync would send now. Nothing is sent, nothing is claimed, no cursor
    /// moves: only the state store's cursor is read.
    pub(super) async fn dry_run(
        &self,
        job: &Job,
        samples: usize,
        max_rows: Option<u64>,
    ) -> Result<pb::DryRunResponse, Status> {
        let checked = self.check_sync(&job.tenant, &job.sync, "dry-run").await?;
        if job.sync.mode == SyncMode::Mirror {
            return self.mirror_dry_run(job, checked, samples).await;
        }
        let id = sync_id(&job.sync.tenant, &job.sync.id)?;
        let cursor = match (&job.sync.mode, &job.sync.cursor_column) {
            (SyncMode::Append, Some(column)) => Some(CursorFilter {
                column: column.clone(),
                after: self
                    .store
                    .get_cursor(&id)
                    .await
                    .map_err(|e| errors::store(&e))?
                    .map(|c| c.value),
            }),
            _ => None,
        };
        let cursor_text = cursor
            .as_ref()
            .and_then(|c| c.after.as_ref())
            .map(|v| serde_json::to_string(v).unwrap_or_default())
            .unwrap_or_default();
        let mut out = pb::DryRunResponse {
            cursor: cursor_text,
            warnings: checked
                .valid
                .warnings
                .iter()
                .map(|w| w.to_string())
                .collect(),
            ..Default::default()
        };
        let request = ReadRequest {
            source: checked.read.clone(),
            cursor,
            page_size: self.runs.settings().page_size.max(1),
        };
        let mut lookup_rows: Vec<Vec<Value>> = Vec::new();
        let mut lookup: Option<LookupCsvWriter> = match &checked.encoder {
            Encoder::LookupTable { valid, columns } => Some(
                LookupCsvWriter::new(&valid.mapping, columns)
                    .map_err(|e| errors::spec_errors("dry run", &e))?,
            ),
            Encoder::Records(_) => None,
        };
        let now = chrono::Utc::now().timestamp_millis();
        let mut reader = read_in_background(checked.warehouse.clone(), request);
        let mut row_index = 0u64;
        'pages: while let Some(page) = reader.pages.recv().await {
            for row in &page.batch.rows {
                if max_rows.is_some_and(|max| row_index >= max) {
                    out.truncated = true;
                    break 'pages;
                }
                out.rows_read += 1;
                let problem = match (&checked.encoder, lookup.as_mut()) {
                    (Encoder::Records(mapper), _) => {
                        let mut records = Vec::new();
                        match mapper.encode_upsert(row_index, row, Unset::Never, now, &mut records)
                        {
                            Ok(()) => {
                                out.inserts += 1;
                                out.records += records.len() as u64;
                                for r in &records {
                                    if out.samples.len() < samples {
                                        out.samples.push(record_pb(row_index, r));
                                    }
                                }
                                None
                            }
                            Err(e) => Some(e),
                        }
                    }
                    (Encoder::LookupTable { .. }, Some(writer)) => {
                        match writer.write_row(row_index, row) {
                            Ok(()) => {
                                out.inserts += 1;
                                out.records += 1;
                                if lookup_rows.len() < samples {
                                    lookup_rows.push(row.clone());
                                }
                                None
                            }
                            Err(e) => Some(e),
                        }
                    }
                    (Encoder::LookupTable { .. }, None) => None,
                };
                if let Some(e) = problem {
                    out.invalid_rows += 1;
                    if out.errors.len() < DRY_RUN_ERRORS {
                        out.errors.push(row_problem(e));
                    }
                }
                row_index += 1;
            }
        }
        // Stop the read (a truncated dry run) and collect how it ended.
        drop(reader.pages);
        match reader.task.await {
            Ok(Ok(_)) | Ok(Err(WarehouseError::Stopped)) => {}
            Ok(Err(e)) => {
                return Err(errors::warehouse(
                    &format!("sync '{}': dry run", job.sync.id),
                    &e,
                ))
            }
            Err(e) => return Err(Status::internal(format!("the dry run's read stopped: {e}"))),
        }
        if let Encoder::LookupTable { valid, columns } = &checked.encoder {
            if !lookup_rows.is_empty() {
                let (csv, _) = lookup_csv(valid, columns, lookup_rows.iter())?;
                out.samples.push(pb::PreviewRecord {
                    row: 0,
                    endpoint: "lookup_table".into(),
                    json: csv,
                });
            }
        }
        Ok(out)
    }

    /// A Mirror sync's dry run: the engine snapshots and diffs in the warehouse's staging
    /// schema (its dry-run tables are dropped again) and maps every change, sending nothing and
    /// leaving the sync's snapshots and cursor as they were.
    async fn mirror_dry_run(
        &self,
        job: &Job,
        checked: CheckedSync,
        samples: usize,
    ) -> Result<pb::DryRunResponse, Status> {
        let mut settings = self.runs.settings().clone();
        settings.receiver_extensions = job.receiver_extensions;
        let report = crate::mirror::dry_run(
            self.store.as_ref(),
            &settings,
            &job.tenant,
            &job.source,
            &job.sync,
            samples,
        )
        .await
        .map_err(|e| {
            let context = format!("sync '{}': dry run", job.sync.id);
            match e {
                crate::mirror::MirrorError::Warehouse(w) => errors::warehouse(&context, &w),
                crate::mirror::MirrorError::Spec(s) => errors::spec_errors(&context, &s),
                crate::mirror::MirrorError::Store(s) => errors::store(&s),
                other => Status::failed_precondition(format!("{context}: {other}")),
            }
        })?;
        let mut warnings: Vec<String> = checked
            .valid
            .warnings
            .iter()
            .map(|w| w.to_string())
            .collect();
        if report.deletes_not_applied > 0 {
            warnings.push(format!(
                "{} deleted event rows would not be applied: Mixpanel's public API has no per-event delete",
                report.deletes_not_applied
            ));
        }
        if report.pending_unsent > 0 {
            warnings.push(format!(
                "{} changes found by an earlier run are not acknowledged yet; the next run sends them first",
                report.pending_unsent
            ));
        }
        if let Some(change) = &report.schema_change {
            warnings.push(format!("the source's columns changed: {change}"));
        }
        if report.lookup_replaced == Some(false) {
            warnings.push("nothing changed: the lookup table would not be replaced".into());
        }
        Ok(pb::DryRunResponse {
            rows_read: report.inserts + report.updates + report.deletes,
            inserts: report.inserts,
            updates: report.updates,
            deletes: report.deletes,
            invalid_rows: report.invalid,
            records: (report.inserts + report.updates + report.deletes)
                .saturating_sub(report.invalid + report.deletes_not_applied),
            samples: report
                .samples
                .into_iter()
                .map(|sample| {
                    let mut record = sample.record;
                    // The project token is a credential: shown as in previews.
                    if let Some(token) = record.get_mut("$token") {
                        *token = serde_json::Value::String(TOKEN_SHOWN_AS.into());
                    }
                    pb::PreviewRecord {
                        row: 0,
                        endpoint: sample.change.as_str().into(),
                        json: record.to_string(),
                    }
                })
                .collect(),
            errors: report
                .errors
                .iter()
                .map(|e| pb::RowProblem {
                    reason: e.reason.to_string(),
                    row: e.row,
                    key: e.key.clone().unwrap_or_default(),
                    field: e.field.clone(),
                    message: e.message.clone(),
                })
                .collect(),
            cursor: String::new(),
            truncated: false,
            warnings,
        })
    }

    /// Deletes what the sync imported, where the destination can: profiles through `$delete`,
    /// events only at the bundled receiver. Every row the source has now is read again and
    /// mapped to the same records (the `$insert_id`s are deterministic); records the destination
    /// never had are counted as not found.
    pub(super) async fn delete_imported(
        &self,
        job: &Job,
    ) -> Result<pb::DeleteSyncResponse, Status> {
        let checked = self.check_sync(&job.tenant, &job.sync, "delete").await?;
        let Encoder::Records(mapper) = &checked.encoder else {
            return Err(Status::failed_precondition(format!(
                "sync '{}' replaces a lookup table: the table cannot be deleted through Mixpanel's API; delete it in the project, or delete the sync without delete_imported_data",
                job.sync.id
            )));
        };
        let events = mapper.record_kind() == RecordKind::Event;
        if events && !job.receiver_extensions {
            return Err(Status::failed_precondition(format!(
                "sync '{}' imports events, and Mixpanel's public API has no per-event delete (only Ferry's bundled receiver can delete them); nothing was deleted — delete the sync without delete_imported_data",
                job.sync.id
            )));
        }
        let mut destination = DestinationConfig::from_tenant(&job.tenant)
            .map_err(|e| Status::failed_precondition(format!("tenant '{}': {e}", job.tenant.id)))?;
        destination.receiver_extensions = job.receiver_extensions;
        let client = MixpanelClient::new(destination, ClientSettings::default())
            .map_err(|e| Status::failed_precondition(format!("destination: {e}")))?;
        let request = ReadRequest {
            source: checked.read.clone(),
            cursor: None,
            page_size: self.runs.settings().page_size.max(1),
        };
        let mut reader = read_in_background(checked.warehouse.clone(), request);
        let mut builder = BatchBuilder::new();
        let mut tally = Tally::default();
        let now = chrono::Utc::now().timestamp_millis();
        let mut row_index = 0u64;
        while let Some(page) = reader.pages.recv().await {
            for row in &page.batch.rows {
                let mut records = Vec::new();
                let mapped = if events {
                    mapper.encode_upsert(row_index, row, Unset::Never, now, &mut records)
                } else {
                    mapper.encode_delete(row_index, row, &mut records)
                };
                row_index += 1;
                if mapped.is_err() {
                    // A row that does not map was never imported.
                    continue;
                }
                for record in records {
                    let full = builder
                        .push(record.json, record.insert_id)
                        .map_err(|e| Status::internal(format!("batching a delete: {e}")))?;
                    if let Some(batch) = full {
                        tally
                            .send(&client, events, mapper.record_kind(), batch)
                            .await?;
                    }
                }
            }
        }
        match reader.task.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(errors::warehouse(
                    &format!("sync '{}': reading the rows to delete", job.sync.id),
                    &e,
                ))
            }
            Err(e) => return Err(Status::internal(format!("the read stopped: {e}"))),
        }
        if let Some(batch) = builder.flush() {
            tally
                .send(&client, events, mapper.record_kind(), batch)
                .await?;
        }
        let what = if events { "events" } else { "profiles" };
        Ok(pb::DeleteSyncResponse {
            records_deleted: tally.deleted,
            records_not_found: tally.not_found,
            message: format!(
                "deleted {} {what} the sync imported ({} were not at the destination)",
                tally.deleted, tally.not_found
            ),
        })
    }
}

#[derive(Default)]
struct Tally {
    deleted: u64,
    not_found: u64,
}

impl Tally {
    async fn send(
        &mut self,
        client: &MixpanelClient,
        events: bool,
        kind: RecordKind,
        batch: Batch,
    ) -> Result<(), Status> {
        let failed = |e: ferry_connectors::mixpanel::MixpanelError| {
            Status::unavailable(format!(
                "the destination refused the deletes ({e}); some may be done: try again"
            ))
        };
        if events {
            let outcome = client.delete_events(batch).await.map_err(failed)?;
            self.deleted += outcome.deleted;
            self.not_found += outcome.not_found;
        } else {
            let endpoint = match kind {
                RecordKind::GroupProfile => RecordEndpoint::Groups,
                _ => RecordEndpoint::Engage,
            };
            let n = batch.len() as u64;
            let outcome = client.send(endpoint, batch).await.map_err(failed)?;
            self.deleted += outcome.accepted as u64;
            self.not_found += n - outcome.accepted as u64;
        }
        Ok(())
    }
}

/// A read running on its own task, its pages arriving on a bounded channel.
struct Reader {
    pages: mpsc::Receiver<Page>,
    task: tokio::task::JoinHandle<Result<ferry_connectors::warehouse::ReadSummary, WarehouseError>>,
}

fn read_in_background(warehouse: Arc<dyn Warehouse>, request: ReadRequest) -> Reader {
    let (tx, pages) = mpsc::channel(2);
    let task = tokio::spawn(async move { warehouse.read(&request, tx).await });
    Reader { pages, task }
}

/// The CSV a lookup table would receive for `rows` (header first), and the rows it refuses.
fn lookup_csv<'a>(
    valid: &ValidSync,
    columns: &[Column],
    rows: impl Iterator<Item = &'a Vec<Value>>,
) -> Result<(String, Vec<RowError>), Status> {
    let mut writer = LookupCsvWriter::new(&valid.mapping, columns)
        .map_err(|e| errors::spec_errors("lookup table", &e))?;
    let mut problems = Vec::new();
    for (i, row) in rows.enumerate() {
        if let Err(e) = writer.write_row(i as u64, row) {
            problems.push(e);
        }
    }
    let bytes = writer
        .finish()
        .map_err(|e| Status::internal(format!("writing the CSV: {e}")))?;
    Ok((String::from_utf8_lossy(&bytes).into_owned(), problems))
}

/// A job for a stored sync, with NOT_FOUND for what is missing.
impl Admin {
    pub(super) async fn job(&self, id: &crate::records::SyncId) -> Result<Job, Status> {
        self.resolver.job(id).await.map_err(|e| match e {
            ResolveError::Catalog(CatalogError::NotFound { what }) => {
                Status::not_found(format!("{what} does not exist"))
            }
            other => errors::resolve(&other),
        })
    }
}
