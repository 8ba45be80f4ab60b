//! The admin API's messages as JSON for `--output json`: the proto's field names, enums as
//! their short lower-case names (`events`, `append`, `succeeded`, `verify-full`), oneofs as
//! the set field, records and rows as parsed JSON. Write-only credentials never appear (the
//! node does not send them); their `*_set` flags do.

use ferry_proto::admin::v1 as pb;
use serde_json::{json, Map, Value};

/// `TABLE_TYPE_USER_PROFILES` → `user_profiles`.
pub fn enum_short(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

pub fn region(v: i32) -> String {
    pb::Region::try_from(v).map_or_else(
        |_| format!("unknown({v})"),
        |r| enum_short(r.as_str_name(), "REGION_"),
    )
}

pub fn ssl_mode(v: i32) -> String {
    match pb::SslMode::try_from(v) {
        // The node applies verify-full when none is given.
        Ok(pb::SslMode::Unspecified) => "verify-full".into(),
        Ok(m) => enum_short(m.as_str_name(), "SSL_MODE_").replace('_', "-"),
        Err(_) => format!("unknown({v})"),
    }
}

pub fn table_type(v: i32) -> String {
    pb::TableType::try_from(v).map_or_else(
        |_| format!("unknown({v})"),
        |t| enum_short(t.as_str_name(), "TABLE_TYPE_"),
    )
}

pub fn sync_mode(v: i32) -> String {
    pb::SyncMode::try_from(v).map_or_else(
        |_| format!("unknown({v})"),
        |m| enum_short(m.as_str_name(), "SYNC_MODE_"),
    )
}

pub fn time_unit(v: i32) -> String {
    pb::TimeUnit::try_from(v).map_or_else(
        |_| format!("unknown({v})"),
        |u| enum_short(u.as_str_name(), "TIME_UNIT_"),
    )
}

pub fn run_state(v: i32) -> String {
    pb::RunState::try_from(v).map_or_else(
        |_| format!("unknown({v})"),
        |s| enum_short(s.as_str_name(), "RUN_STATE_"),
    )
}

fn opt<T: Into<Value>>(v: Option<T>) -> Value {
    v.map_or(Value::Null, Into::into)
}

pub fn destination(d: Option<&pb::Destination>) -> Value {
    let Some(d) = d else { return Value::Null };
    let mut obj = Map::new();
    match &d.target {
        Some(pb::destination::Target::Region(r)) => {
            obj.insert("region".into(), region(*r).into());
        }
        Some(pb::destination::Target::BaseUrl(u)) => {
            obj.insert("base_url".into(), u.clone().into());
        }
        None => {}
    }
    obj.insert("receiver_extensions".into(), d.receiver_extensions.into());
    obj.into()
}

pub fn credentials(c: Option<&pb::Credentials>) -> Value {
    match c.and_then(|c| c.kind.as_ref()) {
        Some(pb::credentials::Kind::ServiceAccount(sa)) => json!({
            "service_account": { "user": sa.user, "secret_set": sa.secret_set }
        }),
        Some(pb::credentials::Kind::ProjectToken(t)) => json!({
            "project_token": { "token_set": t.token_set }
        }),
        None => Value::Null,
    }
}

pub fn tenant(t: &pb::Tenant) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "destination": destination(t.destination.as_ref()),
        "project_id": t.project_id,
        "credentials": credentials(t.credentials.as_ref()),
        "project_token_set": t.project_token_set,
        "webhook": super::webhook::to_json(t.webhook.as_ref()),
        "send_budget": t.send_budget,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
        "version": t.version,
    })
}

pub fn api_token(t: &pb::ApiToken) -> Value {
    json!({
        "id": t.id,
        "tenant": t.tenant,
        "name": t.name,
        "prefix": t.prefix,
        "created_at": t.created_at,
    })
}

pub fn source(s: &pb::Source) -> Value {
    let mut obj = json!({
        "tenant": s.tenant,
        "id": s.id,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "version": s.version,
    });
    let (kind, options) = match &s.kind {
        Some(pb::source::Kind::Postgres(p)) => ("postgres", postgres(p)),
        Some(pb::source::Kind::Sqlite(q)) => ("sqlite", json!({ "path": q.path })),
        Some(pb::source::Kind::Redshift(r)) => ("redshift", redshift(r)),
        None => ("unknown", Value::Null),
    };
    obj["kind"] = kind.into();
    obj[kind] = options;
    obj
}

fn postgres(p: &pb::PostgresSource) -> Value {
    json!({
        "host": p.host,
        "port": p.port,
        "database": p.database,
        "user": p.user,
        "password_set": p.password_set,
        "ssl_mode": ssl_mode(p.ssl_mode),
        "ca_cert": p.ca_cert,
        "ssh_tunnel": p.ssh_tunnel.as_ref().map(|t| json!({
            "host": t.host,
            "port": t.port,
            "user": t.user,
            "private_key_set": t.private_key_set,
            "host_key": t.host_key,
        })),
    })
}

/// Empty options are left out, so the object reads back as a definition file.
fn redshift(r: &pb::RedshiftSource) -> Value {
    let mut obj = serde_json::Map::new();
    for (key, value) in [
        ("cluster_identifier", &r.cluster_identifier),
        ("workgroup_name", &r.workgroup_name),
        ("database", &r.database),
        ("db_user", &r.db_user),
        ("secret_arn", &r.secret_arn),
        ("region", &r.region),
        ("endpoint_url", &r.endpoint_url),
        ("access_key_id", &r.access_key_id),
    ] {
        if !value.is_empty() {
            obj.insert(key.into(), value.as_str().into());
        }
    }
    obj.insert("secret_access_key_set".into(), r.secret_access_key_set.into());
    obj.insert("session_token_set".into(), r.session_token_set.into());
    Value::Object(obj)
}

pub fn read_target(t: Option<&pb::ReadTarget>) -> (Option<&str>, Option<&str>) {
    match t.and_then(|t| t.target.as_ref()) {
        Some(pb::read_target::Target::Table(name)) => (Some(name), None),
        Some(pb::read_target::Target::Sql(sql)) => (None, Some(sql)),
        None => (None, None),
    }
}

pub fn mapping(m: Option<&pb::Mapping>) -> Value {
    let Some(m) = m else {
        return json!({});
    };
    let mut obj = Map::new();
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            obj.insert(k.into(), v.clone().into());
        }
    };
    put("event_name", &m.event_name);
    put("event_name_column", &m.event_name_column);
    put("time_column", &m.time_column);
    put("distinct_id_column", &m.distinct_id_column);
    put("user_id_column", &m.user_id_column);
    put("device_id_column", &m.device_id_column);
    put("properties_column", &m.properties_column);
    put("group_key", &m.group_key);
    put("group_id_column", &m.group_id_column);
    put("lookup_table_id", &m.lookup_table_id);
    put("key_column", &m.key_column);
    obj.insert("time_unit".into(), time_unit(m.time_unit).into());
    obj.insert("key_columns".into(), m.key_columns.clone().into());
    // Sorted, so the output is the same every time.
    let renames: std::collections::BTreeMap<_, _> = m.renames.iter().collect();
    obj.insert("renames".into(), json!(renames));
    obj.insert("excludes".into(), m.excludes.clone().into());
    obj.into()
}

pub fn sync(s: &pb::Sync) -> Value {
    let (table, sql) = read_target(s.target.as_ref());
    json!({
        "tenant": s.tenant,
        "id": s.id,
        "source": s.source,
        "table": table,
        "sql": sql,
        "table_type": table_type(s.table_type),
        "mode": sync_mode(s.mode),
        "mapping": mapping(s.mapping.as_ref()),
        "schedule": s.schedule,
        "timezone": s.timezone,
        "strict": s.strict.unwrap_or(true),
        "cursor_column": s.cursor_column,
        "paused": s.paused,
        "trigger_url": s.trigger_url,
        "webhook": super::webhook::to_json(s.webhook.as_ref()),
        "accept_schema_change": s.accept_schema_change,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "version": s.version,
    })
}

pub fn spec_problems(problems: &[pb::SpecProblem]) -> Value {
    problems
        .iter()
        .map(|p| json!({ "field": p.field, "message": p.message }))
        .collect::<Vec<_>>()
        .into()
}

pub fn sync_response(r: &pb::SyncResponse) -> Value {
    json!({
        "sync": r.sync.as_ref().map(sync),
        "warnings": spec_problems(&r.warnings),
    })
}

pub fn row_problem(p: &pb::RowProblem) -> Value {
    json!({
        "reason": p.reason,
        "row": opt(p.row),
        "key": p.key,
        "field": p.field,
        "message": p.message,
    })
}

/// A record's JSON parsed, so scripts see objects, not strings; a lookup table's CSV line
/// (or anything that is not JSON) stays a string.
pub fn preview_record(r: &pb::PreviewRecord) -> Value {
    let record = serde_json::from_str(&r.json).unwrap_or_else(|_| Value::String(r.json.clone()));
    json!({ "row": r.row, "endpoint": r.endpoint, "record": record })
}

pub fn column(c: &pb::ColumnInfo) -> Value {
    json!({ "name": c.name, "type": c.r#type })
}

pub fn table_info(t: &pb::TableInfo) -> Value {
    json!({ "schema": t.schema, "name": t.name, "kind": t.kind })
}

pub fn preview(p: &pb::PreviewRowsResponse) -> Value {
    json!({
        "columns": p.columns.iter().map(column).collect::<Vec<_>>(),
        "rows": p.rows.iter().map(|r| serde_json::from_str(r).unwrap_or_else(|_| Value::String(r.clone()))).collect::<Vec<_>>(),
        "records": p.records.iter().map(preview_record).collect::<Vec<_>>(),
        "errors": p.errors.iter().map(row_problem).collect::<Vec<_>>(),
        "warnings": p.warnings,
    })
}

pub fn test_source(t: &pb::TestSourceResponse) -> Value {
    json!({
        "ok": t.ok,
        "problem": t.problem.as_ref().map(|p| json!({
            "kind": super::error::connection_problem_kind(p.kind),
            "message": p.message,
        })),
        "elapsed_ms": t.elapsed_ms,
    })
}

pub fn dry_run(d: &pb::DryRunResponse) -> Value {
    let cursor = if d.cursor.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&d.cursor).unwrap_or_else(|_| Value::String(d.cursor.clone()))
    };
    json!({
        "rows_read": d.rows_read,
        "inserts": d.inserts,
        "updates": d.updates,
        "deletes": d.deletes,
        "invalid_rows": d.invalid_rows,
        "records": d.records,
        "samples": d.samples.iter().map(preview_record).collect::<Vec<_>>(),
        "errors": d.errors.iter().map(row_problem).collect::<Vec<_>>(),
        "cursor": cursor,
        "truncated": d.truncated,
        "warnings": d.warnings,
    })
}

pub fn run(r: &pb::Run) -> Value {
    let c = r.counts.unwrap_or_default();
    json!({
        "tenant": r.tenant,
        "sync": r.sync,
        "run_id": r.run_id,
        "import_id": r.import_id,
        "state": run_state(r.state),
        "queued_at": r.queued_at,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "counts": {
            "rows_read": c.rows_read,
            "records_sent": c.records_sent,
            "records_accepted": c.records_accepted,
            "rows_invalid": c.rows_invalid,
            "records_refused": c.records_refused,
            "cursor_commits": c.cursor_commits,
        },
        "progress": r.progress.as_ref().map(|p| json!({
            "elapsed_seconds": p.elapsed_seconds,
            "rows_per_second": p.rows_per_second,
            "records_per_second": p.records_per_second,
            "rows_total": opt(p.rows_total),
            "eta_seconds": opt(p.eta_seconds),
        })),
        "errors": r.errors.iter().map(row_problem).collect::<Vec<_>>(),
        "errors_dropped": r.errors_dropped,
        "message": r.message,
        "attempts": r.attempts,
        "trigger": r.trigger,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_are_short_lower_case_names() {
        assert_eq!(
            table_type(pb::TableType::UserProfiles as i32),
            "user_profiles"
        );
        assert_eq!(sync_mode(pb::SyncMode::OneTime as i32), "one_time");
        assert_eq!(ssl_mode(pb::SslMode::VerifyCa as i32), "verify-ca");
        assert_eq!(ssl_mode(0), "verify-full");
        assert_eq!(run_state(pb::RunState::Succeeded as i32), "succeeded");
        assert_eq!(region(pb::Region::Eu as i32), "eu");
        assert_eq!(run_state(99), "unknown(99)");
    }

    #[test]
    fn a_sync_shows_its_target_and_only_the_mapping_it_has() {
        let s = pb::Sync {
            tenant: "acme".into(),
            id: "orders".into(),
            source: "wh".into(),
            target: Some(pb::ReadTarget {
                target: Some(pb::read_target::Target::Table("public.orders".into())),
            }),
            table_type: pb::TableType::Events as i32,
            mode: pb::SyncMode::Append as i32,
            mapping: Some(pb::Mapping {
                event_name: Some("Order".into()),
                key_columns: vec!["id".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = sync(&s);
        assert_eq!(v["table"], "public.orders");
        assert_eq!(v["sql"], Value::Null);
        assert_eq!(v["table_type"], "events");
        assert_eq!(v["mapping"]["event_name"], "Order");
        assert!(v["mapping"].get("time_column").is_none());
        assert_eq!(v["strict"], true);
    }

    #[test]
    fn preview_records_are_parsed_json_and_csv_stays_text() {
        let r = pb::PreviewRecord {
            row: 3,
            endpoint: "import".into(),
            json: r#"{"event":"E"}"#.into(),
        };
        assert_eq!(preview_record(&r)["record"]["event"], "E");
        let csv = pb::PreviewRecord {
            row: 0,
            endpoint: "lookup_table".into(),
            json: "a,b".into(),
        };
        assert_eq!(preview_record(&csv)["record"], "a,b");
    }
}
