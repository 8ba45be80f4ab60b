//! `ferry syncs …`: define, change, pause, delete, trigger (and follow) and dry-run syncs.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use ferry_proto::admin::v1 as pb;
use serde_json::json;

use super::error::CliError;
use super::input::{self, SyncFile};
use super::output::{count, emit, fields, list, Format};
use super::sources::problems_text;
use super::webhook::{self, WebhookFlags};
use super::{json, runs, Connection};

// Parsed once per process: the size of the flag structs does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum SyncsCommand {
    /// Create a sync. The node validates it and its mapping against the table's real columns.
    /// From flags, a file, or both (flags win).
    Create {
        /// The sync's id; or `id` in the file.
        id: Option<String>,
        #[command(flatten)]
        flags: SyncFlags,
        /// A TOML (.toml) or JSON definition, in the shape `syncs get -o json` prints.
        #[arg(long, short = 'f', value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// One sync with its mapping, schedule and trigger URL.
    Get { id: String },
    /// The tenant's syncs.
    List {
        /// Only the syncs of this source.
        #[arg(long)]
        source: Option<String>,
    },
    /// Change a sync: the flags given, or the file as the whole sync.
    Update {
        id: String,
        #[command(flatten)]
        flags: SyncFlags,
        #[arg(long, short = 'f', value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Stop the sync's schedule and refuse triggers until it is resumed.
    Pause { id: String },
    /// Let the schedule and triggers run the sync again.
    Resume { id: String },
    /// Delete a sync, its cursor and its run history.
    Delete {
        id: String,
        /// First delete what it imported, where the destination allows (profiles; events only
        /// on Ferry's receiver); otherwise nothing is deleted and the command fails.
        #[arg(long)]
        delete_data: bool,
    },
    /// Start a run now.
    Trigger {
        id: String,
        /// Follow the run until it ends (a progress bar on a terminal); exits 6 if it fails.
        #[arg(long)]
        follow: bool,
    },
    /// What a run would send now: counts, invalid rows with reasons, sample records. Nothing is
    /// sent and no cursor moves.
    DryRun {
        id: String,
        /// Sample records to show (the node's default is 5, at most 100).
        #[arg(long, default_value_t = 0)]
        samples: u32,
        /// Stop after this many rows (default: read what a run would read).
        #[arg(long, default_value_t = 0)]
        max_rows: u64,
    },
}

/// A sync's definition as flags; on `update`, only the flags given change.
#[derive(Args, Default)]
pub struct SyncFlags {
    /// The source to read.
    #[arg(long)]
    source: Option<String>,
    /// The table or view (`schema.table`).
    #[arg(long, conflicts_with = "sql")]
    table: Option<String>,
    /// A SELECT to read instead of a table.
    #[arg(long)]
    sql: Option<String>,
    /// events, user_profiles, group_profiles, lookup_table or profile_history.
    #[arg(long = "type", value_name = "TABLE_TYPE")]
    table_type: Option<String>,
    /// append, full, one_time or mirror.
    #[arg(long)]
    mode: Option<String>,
    /// hourly, daily, weekly, a cron expression, or "" for trigger-only.
    #[arg(long)]
    schedule: Option<String>,
    /// The IANA time zone of the schedule (default UTC).
    #[arg(long)]
    timezone: Option<String>,
    /// Append: the insert-time column whose maximum is the cursor.
    #[arg(long)]
    cursor_column: Option<String>,
    /// Validate every record before sending (default true).
    #[arg(long, value_name = "BOOL")]
    strict: Option<bool>,
    /// Mirror: go on when the source's columns changed (re-sending changed rows) instead of failing.
    #[arg(long, value_name = "BOOL")]
    accept_schema_change: Option<bool>,
    #[command(flatten)]
    webhook: WebhookFlags,
    #[arg(long, help_heading = "Mapping")]
    event_name: Option<String>,
    #[arg(long, help_heading = "Mapping")]
    event_name_column: Option<String>,
    #[arg(long, help_heading = "Mapping")]
    time_column: Option<String>,
    /// auto, seconds, milliseconds or microseconds (numeric time columns).
    #[arg(long, help_heading = "Mapping")]
    time_unit: Option<String>,
    #[arg(long, help_heading = "Mapping")]
    distinct_id_column: Option<String>,
    #[arg(long, help_heading = "Mapping")]
    user_id_column: Option<String>,
    #[arg(long, help_heading = "Mapping")]
    device_id_column: Option<String>,
    /// A JSON column whose keys become properties.
    #[arg(long, help_heading = "Mapping")]
    properties_column: Option<String>,
    /// Columns identifying a row (comma-separated): events derive `$insert_id` from them.
    #[arg(long, value_delimiter = ',', help_heading = "Mapping")]
    key_columns: Option<Vec<String>>,
    /// COLUMN=PROPERTY; repeatable.
    #[arg(
        long = "rename",
        value_name = "COLUMN=PROPERTY",
        help_heading = "Mapping"
    )]
    renames: Vec<String>,
    /// A column not to send; repeatable (or comma-separated).
    #[arg(
        long = "exclude",
        value_delimiter = ',',
        value_name = "COLUMN",
        help_heading = "Mapping"
    )]
    excludes: Vec<String>,
    /// Group profiles: the group key configured in the project.
    #[arg(long, help_heading = "Mapping")]
    group_key: Option<String>,
    #[arg(long, help_heading = "Mapping")]
    group_id_column: Option<String>,
    /// Lookup tables: the table's id in Mixpanel.
    #[arg(long, help_heading = "Mapping")]
    lookup_table_id: Option<String>,
    /// Lookup tables: the key column.
    #[arg(long, help_heading = "Mapping")]
    key_column: Option<String>,
}

fn set(target: &mut Option<String>, value: &Option<String>) {
    if let Some(v) = value {
        // An empty value clears the option.
        *target = (!v.is_empty()).then(|| v.clone());
    }
}

impl SyncFlags {
    pub fn apply(&self, s: &mut pb::Sync) -> Result<(), CliError> {
        if let Some(v) = &self.source {
            s.source = v.clone();
        }
        if self.table.is_some() || self.sql.is_some() {
            s.target = input::read_target(self.table.clone(), self.sql.clone())?;
        }
        if let Some(v) = &self.table_type {
            s.table_type = input::table_type(v)?;
        }
        if let Some(v) = &self.mode {
            s.mode = input::sync_mode(v)?;
        }
        if let Some(v) = &self.schedule {
            s.schedule = v.clone();
        }
        if let Some(v) = &self.timezone {
            s.timezone = v.clone();
        }
        if let Some(v) = &self.cursor_column {
            s.cursor_column = v.clone();
        }
        if self.strict.is_some() {
            s.strict = self.strict;
        }
        if let Some(b) = self.accept_schema_change {
            s.accept_schema_change = b;
        }
        self.webhook.apply(&mut s.webhook)?;
        let m = s.mapping.get_or_insert_with(Default::default);
        set(&mut m.event_name, &self.event_name);
        set(&mut m.event_name_column, &self.event_name_column);
        set(&mut m.time_column, &self.time_column);
        if let Some(u) = &self.time_unit {
            m.time_unit = input::time_unit(u)?;
        }
        set(&mut m.distinct_id_column, &self.distinct_id_column);
        set(&mut m.user_id_column, &self.user_id_column);
        set(&mut m.device_id_column, &self.device_id_column);
        set(&mut m.properties_column, &self.properties_column);
        if let Some(k) = &self.key_columns {
            m.key_columns = k.iter().filter(|c| !c.is_empty()).cloned().collect();
        }
        for r in &self.renames {
            let (column, property) = r.split_once('=').ok_or_else(|| {
                CliError::usage(format!("--rename {r}: expected COLUMN=PROPERTY"))
            })?;
            m.renames.insert(column.to_owned(), property.to_owned());
        }
        for e in &self.excludes {
            if !m.excludes.contains(e) {
                m.excludes.push(e.clone());
            }
        }
        set(&mut m.group_key, &self.group_key);
        set(&mut m.group_id_column, &self.group_id_column);
        set(&mut m.lookup_table_id, &self.lookup_table_id);
        set(&mut m.key_column, &self.key_column);
        Ok(())
    }
}

fn sync_from(
    id: Option<String>,
    tenant: String,
    flags: &SyncFlags,
    file: Option<&PathBuf>,
) -> Result<pb::Sync, CliError> {
    let mut s = match file {
        Some(path) => input::read_file::<SyncFile>(path)?.into_proto()?,
        None => pb::Sync::default(),
    };
    if let Some(id) = id {
        s.id = id;
    }
    if !tenant.is_empty() || s.tenant.is_empty() {
        s.tenant = tenant;
    }
    flags.apply(&mut s)?;
    Ok(s)
}

fn target_text(s: &pb::Sync) -> String {
    match json::read_target(s.target.as_ref()) {
        (Some(t), _) => t.to_owned(),
        (_, Some(sql)) => format!("sql: {}", one_line(sql, 60)),
        _ => String::new(),
    }
}

fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

fn mapping_text(m: Option<&pb::Mapping>) -> String {
    let v = json::mapping(m);
    let Some(obj) = v.as_object() else {
        return String::new();
    };
    obj.iter()
        .filter(|(k, v)| match v {
            serde_json::Value::Array(a) => !a.is_empty(),
            serde_json::Value::Object(o) => !o.is_empty(),
            serde_json::Value::String(s) => !(k.as_str() == "time_unit" && s == "auto"),
            _ => true,
        })
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            serde_json::Value::Array(items) => format!(
                "{k}={}",
                items
                    .iter()
                    .map(|i| i.as_str().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            serde_json::Value::Object(pairs) => format!(
                "{k}={}",
                pairs
                    .iter()
                    .map(|(from, to)| format!("{from}→{}", to.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join("  ")
}

fn sync_fields(s: &pb::Sync) -> String {
    fields(&[
        ("tenant", s.tenant.clone()),
        ("id", s.id.clone()),
        ("source", s.source.clone()),
        ("target", target_text(s)),
        ("table_type", json::table_type(s.table_type)),
        ("mode", json::sync_mode(s.mode)),
        ("cursor_column", s.cursor_column.clone()),
        ("mapping", mapping_text(s.mapping.as_ref())),
        (
            "schedule",
            if s.schedule.is_empty() {
                "trigger only".into()
            } else if s.timezone.is_empty() {
                s.schedule.clone()
            } else {
                format!("{} ({})", s.schedule, s.timezone)
            },
        ),
        ("strict", s.strict.unwrap_or(true).to_string()),
        (
            "accept_schema_change",
            if s.accept_schema_change {
                "yes".into()
            } else {
                String::new()
            },
        ),
        ("webhook", webhook::text(s.webhook.as_ref())),
        ("paused", s.paused.to_string()),
        ("trigger_url", s.trigger_url.clone()),
        ("created_at", s.created_at.clone()),
        ("updated_at", s.updated_at.clone()),
        ("version", s.version.to_string()),
    ])
}

fn sync_response_text(r: &pb::SyncResponse) -> String {
    let mut text = r.sync.as_ref().map(sync_fields).unwrap_or_default();
    for w in &r.warnings {
        text.push_str(&format!("\nwarning: {}: {}", w.field, w.message));
    }
    text
}

fn dry_run_text(id: &str, d: &pb::DryRunResponse) -> String {
    let mut text = fields(&[
        ("sync", id.to_owned()),
        (
            "starts_at",
            if d.cursor.is_empty() {
                "the beginning".into()
            } else {
                format!("cursor {}", d.cursor)
            },
        ),
        (
            "rows_read",
            format!(
                "{}{}",
                count(d.rows_read),
                if d.truncated {
                    " (stopped at --max-rows)"
                } else {
                    ""
                }
            ),
        ),
        ("inserts", count(d.inserts)),
        ("updates", count(d.updates)),
        ("deletes", count(d.deletes)),
        ("invalid_rows", count(d.invalid_rows)),
        ("records", count(d.records)),
    ]);
    if !d.samples.is_empty() {
        text.push_str("\n\nsample records:");
        for r in &d.samples {
            text.push_str(&format!("\n  row {} → {}: {}", r.row, r.endpoint, r.json));
        }
    }
    text.push_str(&problems_text(&d.errors, "invalid rows"));
    for w in &d.warnings {
        text.push_str(&format!("\nwarning: {w}"));
    }
    text
}

pub async fn run(conn: &Connection, command: SyncsCommand) -> Result<(), CliError> {
    let client = conn.connect()?;
    let out = conn.output;
    let tenant = conn.tenant();
    match command {
        SyncsCommand::Create { id, flags, file } => {
            let sync = sync_from(id, tenant, &flags, file.as_ref())?;
            let r = client
                .call(
                    client
                        .syncs()
                        .create_sync(client.request(pb::CreateSyncRequest { sync: Some(sync) })),
                )
                .await?;
            emit(out, json::sync_response(&r), || sync_response_text(&r));
        }
        SyncsCommand::Get { id } => {
            let s = client
                .call(
                    client
                        .syncs()
                        .get_sync(client.request(pb::GetSyncRequest { tenant, id })),
                )
                .await?;
            emit(out, json::sync(&s), || sync_fields(&s));
        }
        SyncsCommand::List { source } => {
            let resp = client
                .call(
                    client
                        .syncs()
                        .list_syncs(client.request(pb::ListSyncsRequest {
                            tenant,
                            source: source.unwrap_or_default(),
                        })),
                )
                .await?;
            emit(
                out,
                resp.syncs.iter().map(json::sync).collect::<Vec<_>>().into(),
                || {
                    list(
                        &[
                            "id", "tenant", "source", "target", "type", "mode", "schedule",
                            "paused",
                        ],
                        resp.syncs.iter().map(|s| {
                            vec![
                                s.id.clone(),
                                s.tenant.clone(),
                                s.source.clone(),
                                target_text(s),
                                json::table_type(s.table_type),
                                json::sync_mode(s.mode),
                                if s.schedule.is_empty() {
                                    "-".into()
                                } else {
                                    s.schedule.clone()
                                },
                                if s.paused { "yes" } else { "no" }.into(),
                            ]
                        }),
                    )
                },
            );
        }
        SyncsCommand::Update { id, flags, file } => {
            let (mut sync, expected_version) = match &file {
                Some(_) => (
                    sync_from(None, tenant.clone(), &SyncFlags::default(), file.as_ref())?,
                    0,
                ),
                None => {
                    let current = client
                        .call(client.syncs().get_sync(client.request(pb::GetSyncRequest {
                            tenant: tenant.clone(),
                            id: id.clone(),
                        })))
                        .await?;
                    let version = current.version;
                    (current, version)
                }
            };
            sync.id = id;
            flags.apply(&mut sync)?;
            let r = client
                .call(
                    client
                        .syncs()
                        .update_sync(client.request(pb::UpdateSyncRequest {
                            sync: Some(sync),
                            expected_version,
                        })),
                )
                .await?;
            emit(out, json::sync_response(&r), || sync_response_text(&r));
        }
        SyncsCommand::Pause { id } => {
            let s = client
                .call(
                    client
                        .syncs()
                        .pause_sync(client.request(pb::PauseSyncRequest { tenant, id })),
                )
                .await?;
            emit(out, json::sync(&s), || format!("paused sync {}", s.id));
        }
        SyncsCommand::Resume { id } => {
            let s = client
                .call(
                    client
                        .syncs()
                        .resume_sync(client.request(pb::ResumeSyncRequest { tenant, id })),
                )
                .await?;
            emit(out, json::sync(&s), || format!("resumed sync {}", s.id));
        }
        SyncsCommand::Delete { id, delete_data } => {
            let r = client
                .call(
                    client
                        .syncs()
                        .delete_sync(client.request(pb::DeleteSyncRequest {
                            tenant: tenant.clone(),
                            id: id.clone(),
                            delete_imported_data: delete_data,
                        })),
                )
                .await?;
            emit(
                out,
                json!({
                    "deleted": { "tenant": tenant, "sync": id },
                    "records_deleted": r.records_deleted,
                    "records_not_found": r.records_not_found,
                    "message": r.message,
                }),
                || {
                    // The node says what it did; the counts are for a node that does not.
                    if !r.message.is_empty() {
                        format!("deleted sync {id}: {}", r.message)
                    } else if delete_data {
                        format!(
                            "deleted sync {id} and {} imported records ({} were not found)",
                            count(r.records_deleted),
                            count(r.records_not_found)
                        )
                    } else {
                        format!("deleted sync {id}")
                    }
                },
            );
        }
        SyncsCommand::Trigger { id, follow } => {
            let r = client
                .call(
                    client
                        .syncs()
                        .trigger_sync(client.request(pb::TriggerSyncRequest {
                            tenant: tenant.clone(),
                            id: id.clone(),
                        })),
                )
                .await?;
            if follow {
                if out == Format::Table {
                    println!("started run {} of sync {id}", r.run_id);
                }
                return runs::follow(&client, out, &tenant, &id, &r.run_id).await;
            }
            emit(out, json!({ "sync": id, "run_id": r.run_id }), || {
                format!(
                    "started run {} of sync {id} (follow it: ferry runs follow {id} {})",
                    r.run_id, r.run_id
                )
            });
        }
        SyncsCommand::DryRun {
            id,
            samples,
            max_rows,
        } => {
            let d = client
                .call(client.syncs().dry_run(client.request(pb::DryRunRequest {
                    tenant,
                    id: id.clone(),
                    samples,
                    max_rows,
                })))
                .await?;
            emit(out, json::dry_run(&d), || dry_run_text(&id, &d));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_change_only_what_they_name_and_empty_clears() {
        let mut s = pb::Sync {
            source: "wh".into(),
            mapping: Some(pb::Mapping {
                event_name: Some("E".into()),
                time_column: Some("ts".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let flags = SyncFlags {
            event_name: Some(String::new()),
            event_name_column: Some("kind".into()),
            renames: vec!["amount=Amount".into()],
            key_columns: Some(vec!["id".into(), "line".into()]),
            mode: Some("append".into()),
            ..Default::default()
        };
        flags.apply(&mut s).unwrap();
        let m = s.mapping.unwrap();
        assert_eq!(s.source, "wh");
        assert_eq!(m.event_name, None);
        assert_eq!(m.event_name_column.as_deref(), Some("kind"));
        assert_eq!(m.time_column.as_deref(), Some("ts"));
        assert_eq!(m.renames["amount"], "Amount");
        assert_eq!(m.key_columns, ["id", "line"]);
        assert_eq!(s.mode, pb::SyncMode::Append as i32);

        let bad = SyncFlags {
            renames: vec!["nope".into()],
            ..Default::default()
        };
        assert!(bad
            .apply(&mut pb::Sync::default())
            .unwrap_err()
            .message
            .contains("COLUMN=PROPERTY"));
    }
}
