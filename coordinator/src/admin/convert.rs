//! Between the API's messages and Ferry's specs. Requests become JSON in the specs' serde shape
//! (the shape the config file and the catalog use), so one deserializer checks both; specs
//! become messages with their credentials left out and `*_set` flags in their place.

use chrono::{DateTime, SecondsFormat, Utc};
use ferry_core::spec::{
    Auth, CertSource, Region, SourceKind, SourceSpec, SslMode, SyncMode, SyncSpec, TableType,
    TenantSpec, TimeUnit, WebhookSpec,
};
use ferry_proto::admin::v1 as pb;
use serde_json::{json, Map, Value as Json};
use tonic::Status;

use super::errors::invalid_field;
use crate::records::{RunErrorEntry, RunRecord, RunState};
use crate::secrets::Sealed;

pub fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn opt_time(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map(time).unwrap_or_default()
}

/// Adds `key: value` when `value` is not empty.
fn put_text(map: &mut Map<String, Json>, key: &str, value: &str) {
    if !value.is_empty() {
        map.insert(key.to_string(), Json::String(value.to_string()));
    }
}

fn put_opt(map: &mut Map<String, Json>, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        map.insert(key.to_string(), Json::String(v.clone()));
    }
}

fn text(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Tenants

fn webhook_json(w: &pb::Webhook) -> Json {
    let mut m = Map::new();
    m.insert("url".into(), Json::String(w.url.clone()));
    // Credentials are always written: empty means "keep the stored one" on update.
    m.insert("secret".into(), Json::String(w.secret.clone()));
    if let Some(on_failure) = w.on_failure {
        m.insert("on_failure".into(), Json::Bool(on_failure));
    }
    if let Some(p) = w.volume_deviation_percent {
        m.insert("volume_deviation_percent".into(), json!(p));
    }
    if w.volume_window > 0 {
        m.insert("volume_window".into(), json!(w.volume_window));
    }
    if w.volume_min_runs > 0 {
        m.insert("volume_min_runs".into(), json!(w.volume_min_runs));
    }
    Json::Object(m)
}

fn webhook_pb(w: &WebhookSpec, secret_set: bool) -> pb::Webhook {
    pb::Webhook {
        url: w.url.clone(),
        secret: String::new(),
        secret_set,
        on_failure: Some(w.on_failure),
        volume_deviation_percent: w.volume_deviation_percent,
        volume_window: w.volume_window,
        volume_min_runs: w.volume_min_runs,
    }
}

/// A tenant message as a [`TenantSpec`]-shaped JSON value (credentials included).
pub fn tenant_json(t: &pb::Tenant) -> Result<Json, Status> {
    let mut m = Map::new();
    m.insert("id".into(), Json::String(t.id.clone()));
    m.insert("name".into(), Json::String(t.name.clone()));
    let mut destination = Map::new();
    match t.destination.as_ref().and_then(|d| d.target.as_ref()) {
        Some(pb::destination::Target::Region(r)) => {
            let region = match pb::Region::try_from(*r) {
                Ok(pb::Region::Us) => "us",
                Ok(pb::Region::Eu) => "eu",
                Ok(pb::Region::In) => "in",
                _ => {
                    return Err(invalid_field(
                        "tenant.destination.region",
                        "give REGION_US, REGION_EU or REGION_IN",
                    ))
                }
            };
            destination.insert("region".into(), region.into());
        }
        Some(pb::destination::Target::BaseUrl(url)) => {
            destination.insert("base_url".into(), Json::String(url.clone()));
        }
        None => {}
    }
    m.insert("destination".into(), Json::Object(destination));
    m.insert("project_id".into(), json!(t.project_id));
    let auth = match t.credentials.as_ref().and_then(|c| c.kind.as_ref()) {
        Some(pb::credentials::Kind::ServiceAccount(sa)) => {
            json!({"service_account": {"user": sa.user, "secret": sa.secret}})
        }
        Some(pb::credentials::Kind::ProjectToken(pt)) => json!({"project_token": pt.token}),
        None => {
            return Err(invalid_field(
                "tenant.credentials",
                "give a service account (user and secret) or a project token",
            ))
        }
    };
    m.insert("auth".into(), auth);
    m.insert(
        "project_token".into(),
        Json::String(t.project_token.clone()),
    );
    if let Some(w) = &t.webhook {
        m.insert("webhook".into(), webhook_json(w));
    }
    if let Some(budget) = t.send_budget {
        m.insert("send_budget".into(), json!(budget));
    }
    Ok(Json::Object(m))
}

/// A stored tenant as the API shows it.
pub fn tenant_pb(
    spec: &TenantSpec,
    sealed: &Sealed,
    receiver_extensions: bool,
    created_at: &DateTime<Utc>,
    updated_at: &DateTime<Utc>,
    version: u64,
) -> pb::Tenant {
    let target = match (&spec.destination.base_url, spec.destination.region) {
        (Some(url), _) => Some(pb::destination::Target::BaseUrl(url.clone())),
        (None, Some(region)) => Some(pb::destination::Target::Region(match region {
            Region::Us => pb::Region::Us,
            Region::Eu => pb::Region::Eu,
            Region::In => pb::Region::In,
        } as i32)),
        (None, None) => None,
    };
    let credentials = match &spec.auth {
        Auth::ServiceAccount { user, .. } => {
            pb::credentials::Kind::ServiceAccount(pb::ServiceAccount {
                user: user.clone(),
                secret: String::new(),
                secret_set: sealed.has("/auth/service_account/secret"),
            })
        }
        Auth::ProjectToken(_) => pb::credentials::Kind::ProjectToken(pb::ProjectTokenAuth {
            token: String::new(),
            token_set: sealed.has("/auth/project_token"),
        }),
    };
    pb::Tenant {
        id: spec.id.clone(),
        name: spec.name.clone(),
        destination: Some(pb::Destination {
            target,
            receiver_extensions,
        }),
        project_id: spec.project_id,
        credentials: Some(pb::Credentials {
            kind: Some(credentials),
        }),
        project_token: String::new(),
        project_token_set: sealed.has("/project_token"),
        created_at: time(created_at),
        updated_at: time(updated_at),
        version,
        webhook: spec
            .webhook
            .as_ref()
            .map(|w| webhook_pb(w, sealed.has("/webhook/secret"))),
        send_budget: spec.send_budget,
    }
}

// ---------------------------------------------------------------------------------------------
// Sources

/// A source message as a [`SourceSpec`]-shaped JSON value (credentials included).
pub fn source_json(s: &pb::Source, tenant: &str) -> Result<Json, Status> {
    let kind = match &s.kind {
        Some(pb::source::Kind::Postgres(pg)) => {
            let mut o = Map::new();
            o.insert("host".into(), Json::String(pg.host.clone()));
            if pg.port != 0 {
                o.insert("port".into(), json!(pg.port));
            }
            o.insert("database".into(), Json::String(pg.database.clone()));
            o.insert("user".into(), Json::String(pg.user.clone()));
            o.insert("password".into(), Json::String(pg.password.clone()));
            let mode = match pb::SslMode::try_from(pg.ssl_mode) {
                Ok(pb::SslMode::Unspecified) => None,
                Ok(pb::SslMode::Disable) => Some("disable"),
                Ok(pb::SslMode::Require) => Some("require"),
                Ok(pb::SslMode::VerifyCa) => Some("verify-ca"),
                Ok(pb::SslMode::VerifyFull) => Some("verify-full"),
                Err(_) => {
                    return Err(invalid_field(
                        "source.kind.postgres.ssl_mode",
                        format!("{} is not an SSL mode", pg.ssl_mode),
                    ))
                }
            };
            if let Some(mode) = mode {
                o.insert("ssl_mode".into(), mode.into());
            }
            put_text(&mut o, "ca_cert", &pg.ca_cert);
            if let Some(t) = &pg.ssh_tunnel {
                let mut tunnel = Map::new();
                tunnel.insert("host".into(), Json::String(t.host.clone()));
                if t.port != 0 {
                    tunnel.insert("port".into(), json!(t.port));
                }
                tunnel.insert("user".into(), Json::String(t.user.clone()));
                tunnel.insert("private_key".into(), Json::String(t.private_key.clone()));
                put_text(&mut tunnel, "host_key", &t.host_key);
                o.insert("ssh_tunnel".into(), Json::Object(tunnel));
            }
            json!({ "postgres": o })
        }
        Some(pb::source::Kind::Sqlite(lite)) => json!({"sqlite": {"path": lite.path}}),
        Some(pb::source::Kind::Redshift(rs)) => {
            let mut o = Map::new();
            put_text(&mut o, "cluster_identifier", &rs.cluster_identifier);
            put_text(&mut o, "workgroup_name", &rs.workgroup_name);
            o.insert("database".into(), Json::String(rs.database.clone()));
            put_text(&mut o, "db_user", &rs.db_user);
            put_text(&mut o, "secret_arn", &rs.secret_arn);
            o.insert("region".into(), Json::String(rs.region.clone()));
            put_text(&mut o, "endpoint_url", &rs.endpoint_url);
            put_text(&mut o, "access_key_id", &rs.access_key_id);
            // Credentials are always written: empty means "keep the stored one" on update.
            o.insert(
                "secret_access_key".into(),
                Json::String(rs.secret_access_key.clone()),
            );
            o.insert(
                "session_token".into(),
                Json::String(rs.session_token.clone()),
            );
            json!({ "redshift": o })
        }
        None => {
            return Err(invalid_field(
                "source.kind",
                "give the warehouse's options (postgres, sqlite or redshift)",
            ))
        }
    };
    Ok(json!({"id": s.id, "tenant": tenant, "kind": kind}))
}

/// A stored source as the API shows it.
pub fn source_pb(
    spec: &SourceSpec,
    sealed: &Sealed,
    created_at: &DateTime<Utc>,
    updated_at: &DateTime<Utc>,
    version: u64,
) -> pb::Source {
    let kind = match &spec.kind {
        SourceKind::Postgres(pg) => Some(pb::source::Kind::Postgres(pb::PostgresSource {
            host: pg.host.clone(),
            port: u32::from(pg.port),
            database: pg.database.clone(),
            user: pg.user.clone(),
            password: String::new(),
            password_set: sealed.has("/kind/postgres/password"),
            ssl_mode: match pg.ssl_mode {
                SslMode::Disable => pb::SslMode::Disable,
                SslMode::Require => pb::SslMode::Require,
                SslMode::VerifyCa => pb::SslMode::VerifyCa,
                SslMode::VerifyFull => pb::SslMode::VerifyFull,
            } as i32,
            ca_cert: match &pg.ca_cert {
                Some(CertSource::Pem(pem)) => pem.clone(),
                Some(CertSource::Path(path)) => path.clone(),
                None => String::new(),
            },
            ssh_tunnel: pg.ssh_tunnel.as_ref().map(|t| pb::SshTunnel {
                host: t.host.clone(),
                port: u32::from(t.port),
                user: t.user.clone(),
                private_key: String::new(),
                private_key_set: sealed.has("/kind/postgres/ssh_tunnel/private_key"),
                host_key: text(&t.host_key),
            }),
        })),
        SourceKind::Sqlite(lite) => Some(pb::source::Kind::Sqlite(pb::SqliteSource {
            path: lite.path.clone(),
        })),
        SourceKind::Redshift(rs) => Some(pb::source::Kind::Redshift(pb::RedshiftSource {
            cluster_identifier: text(&rs.cluster_identifier),
            workgroup_name: text(&rs.workgroup_name),
            database: rs.database.clone(),
            db_user: text(&rs.db_user),
            secret_arn: text(&rs.secret_arn),
            region: rs.region.clone(),
            endpoint_url: text(&rs.endpoint_url),
            access_key_id: text(&rs.access_key_id),
            secret_access_key: String::new(),
            secret_access_key_set: sealed.has("/kind/redshift/secret_access_key"),
            session_token: String::new(),
            session_token_set: sealed.has("/kind/redshift/session_token"),
        })),
    };
    pb::Source {
        tenant: spec.tenant.clone(),
        id: spec.id.clone(),
        kind,
        created_at: time(created_at),
        updated_at: time(updated_at),
        version,
    }
}

// ---------------------------------------------------------------------------------------------
// Syncs

fn table_type_name(t: i32) -> Result<&'static str, Status> {
    Ok(match pb::TableType::try_from(t) {
        Ok(pb::TableType::Events) => "events",
        Ok(pb::TableType::UserProfiles) => "user_profiles",
        Ok(pb::TableType::GroupProfiles) => "group_profiles",
        Ok(pb::TableType::LookupTable) => "lookup_table",
        Ok(pb::TableType::ProfileHistory) => "profile_history",
        _ => {
            return Err(invalid_field(
                "sync.table_type",
                "give the table type (events, user_profiles, group_profiles, lookup_table or profile_history)",
            ))
        }
    })
}

fn mode_name(m: i32) -> Result<&'static str, Status> {
    Ok(match pb::SyncMode::try_from(m) {
        Ok(pb::SyncMode::Mirror) => "mirror",
        Ok(pb::SyncMode::Append) => "append",
        Ok(pb::SyncMode::Full) => "full",
        Ok(pb::SyncMode::OneTime) => "one_time",
        _ => {
            return Err(invalid_field(
                "sync.mode",
                "give the sync mode (mirror, append, full or one_time)",
            ))
        }
    })
}

pub fn table_type_pb(t: TableType) -> pb::TableType {
    match t {
        TableType::Events => pb::TableType::Events,
        TableType::UserProfiles => pb::TableType::UserProfiles,
        TableType::GroupProfiles => pb::TableType::GroupProfiles,
        TableType::LookupTable => pb::TableType::LookupTable,
        TableType::ProfileHistory => pb::TableType::ProfileHistory,
    }
}

pub fn mode_pb(m: SyncMode) -> pb::SyncMode {
    match m {
        SyncMode::Mirror => pb::SyncMode::Mirror,
        SyncMode::Append => pb::SyncMode::Append,
        SyncMode::Full => pb::SyncMode::Full,
        SyncMode::OneTime => pb::SyncMode::OneTime,
    }
}

fn mapping_json(m: &pb::Mapping) -> Result<Json, Status> {
    let mut o = Map::new();
    for (key, value) in [
        ("event_name", &m.event_name),
        ("event_name_column", &m.event_name_column),
        ("time_column", &m.time_column),
        ("distinct_id_column", &m.distinct_id_column),
        ("user_id_column", &m.user_id_column),
        ("device_id_column", &m.device_id_column),
        ("properties_column", &m.properties_column),
        ("group_key", &m.group_key),
        ("group_id_column", &m.group_id_column),
        ("lookup_table_id", &m.lookup_table_id),
        ("key_column", &m.key_column),
    ] {
        put_opt(&mut o, key, value);
    }
    let unit = match pb::TimeUnit::try_from(m.time_unit) {
        Ok(pb::TimeUnit::Auto) => None,
        Ok(pb::TimeUnit::Seconds) => Some("seconds"),
        Ok(pb::TimeUnit::Milliseconds) => Some("milliseconds"),
        Ok(pb::TimeUnit::Microseconds) => Some("microseconds"),
        Err(_) => {
            return Err(invalid_field(
                "sync.mapping.time_unit",
                format!("{} is not a time unit", m.time_unit),
            ))
        }
    };
    if let Some(unit) = unit {
        o.insert("time_unit".into(), unit.into());
    }
    if !m.key_columns.is_empty() {
        o.insert("key_columns".into(), json!(m.key_columns));
    }
    if !m.renames.is_empty() {
        o.insert("renames".into(), json!(m.renames));
    }
    if !m.excludes.is_empty() {
        o.insert("excludes".into(), json!(m.excludes));
    }
    Ok(Json::Object(o))
}

/// A sync message as a [`SyncSpec`]-shaped JSON value, in `tenant`.
pub fn sync_json(s: &pb::Sync, tenant: &str) -> Result<Json, Status> {
    let mut o = Map::new();
    o.insert("id".into(), Json::String(s.id.clone()));
    o.insert("tenant".into(), Json::String(tenant.to_string()));
    o.insert("source".into(), Json::String(s.source.clone()));
    match s.target.as_ref().and_then(|t| t.target.as_ref()) {
        Some(pb::read_target::Target::Table(t)) => {
            o.insert("table".into(), Json::String(t.clone()));
        }
        Some(pb::read_target::Target::Sql(q)) => {
            o.insert("sql".into(), Json::String(q.clone()));
        }
        None => {}
    }
    o.insert("table_type".into(), table_type_name(s.table_type)?.into());
    if let Some(m) = &s.mapping {
        o.insert("mapping".into(), mapping_json(m)?);
    }
    o.insert("mode".into(), mode_name(s.mode)?.into());
    put_text(&mut o, "schedule", &s.schedule);
    put_text(&mut o, "schedule_timezone", &s.timezone);
    if let Some(w) = &s.webhook {
        o.insert("webhook".into(), webhook_json(w));
    }
    if let Some(strict) = s.strict {
        o.insert("strict".into(), Json::Bool(strict));
    }
    put_text(&mut o, "cursor_column", &s.cursor_column);
    if s.accept_schema_change {
        o.insert("accept_schema_change".into(), Json::Bool(true));
    }
    Ok(Json::Object(o))
}

/// A stored sync as the API shows it (`paused`, times and version filled in by the caller).
pub fn sync_pb(spec: &SyncSpec, sealed: &Sealed) -> pb::Sync {
    let m = &spec.mapping;
    let target = match (&spec.table, &spec.sql) {
        (_, Some(sql)) => Some(pb::read_target::Target::Sql(sql.clone())),
        (Some(table), None) => Some(pb::read_target::Target::Table(table.clone())),
        (None, None) => None,
    };
    pb::Sync {
        tenant: spec.tenant.clone(),
        id: spec.id.clone(),
        source: spec.source.clone(),
        target: Some(pb::ReadTarget { target }),
        table_type: table_type_pb(spec.table_type) as i32,
        mapping: Some(pb::Mapping {
            event_name: m.event_name.clone(),
            event_name_column: m.event_name_column.clone(),
            time_column: m.time_column.clone(),
            time_unit: match m.time_unit {
                TimeUnit::Auto => pb::TimeUnit::Auto,
                TimeUnit::Seconds => pb::TimeUnit::Seconds,
                TimeUnit::Milliseconds => pb::TimeUnit::Milliseconds,
                TimeUnit::Microseconds => pb::TimeUnit::Microseconds,
            } as i32,
            distinct_id_column: m.distinct_id_column.clone(),
            user_id_column: m.user_id_column.clone(),
            device_id_column: m.device_id_column.clone(),
            properties_column: m.properties_column.clone(),
            key_columns: m.key_columns.clone(),
            renames: m.renames.clone().into_iter().collect(),
            excludes: m.excludes.clone(),
            group_key: m.group_key.clone(),
            group_id_column: m.group_id_column.clone(),
            lookup_table_id: m.lookup_table_id.clone(),
            key_column: m.key_column.clone(),
        }),
        mode: mode_pb(spec.mode) as i32,
        schedule: text(&spec.schedule),
        timezone: text(&spec.schedule_timezone),
        strict: Some(spec.strict),
        cursor_column: text(&spec.cursor_column),
        webhook: spec
            .webhook
            .as_ref()
            .map(|w| webhook_pb(w, sealed.has("/webhook/secret"))),
        accept_schema_change: spec.accept_schema_change,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Runs

pub fn run_state_pb(state: RunState) -> pb::RunState {
    match state {
        RunState::Queued => pb::RunState::Queued,
        RunState::Running => pb::RunState::Running,
        RunState::Succeeded => pb::RunState::Succeeded,
        RunState::Failed => pb::RunState::Failed,
        RunState::Cancelled => pb::RunState::Cancelled,
    }
}

pub fn row_problem(e: &RunErrorEntry) -> pb::RowProblem {
    pb::RowProblem {
        reason: e.reason.clone(),
        row: e.row,
        key: e.key.clone().unwrap_or_default(),
        field: e.field.clone(),
        message: e.message.clone(),
    }
}

/// A run record as a message (progress and trigger filled in by the caller).
pub fn run_pb(run: &RunRecord, include_errors: bool) -> pb::Run {
    let c = &run.counts;
    pb::Run {
        tenant: run.sync.tenant().to_string(),
        sync: run.sync.sync().to_string(),
        run_id: run.run_id.clone(),
        import_id: run.import_id.clone(),
        state: run_state_pb(run.state) as i32,
        queued_at: time(&run.queued_at),
        started_at: opt_time(&run.started_at),
        finished_at: opt_time(&run.finished_at),
        counts: Some(pb::RunCounts {
            rows_read: c.rows_read,
            records_sent: c.records_sent,
            records_accepted: c.records_accepted,
            rows_invalid: c.rows_invalid,
            records_refused: c.records_refused,
            cursor_commits: c.cursor_commits,
        }),
        progress: None,
        errors: if include_errors {
            run.errors.iter().map(row_problem).collect()
        } else {
            Vec::new()
        },
        errors_dropped: if include_errors {
            run.errors_dropped
        } else {
            0
        },
        message: run.message.clone().unwrap_or_default(),
        attempts: run.attempts,
        trigger: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_message_round_trips_through_the_spec() {
        let message = pb::Sync {
            tenant: "ignored".into(),
            id: "orders".into(),
            source: "pg".into(),
            target: Some(pb::ReadTarget {
                target: Some(pb::read_target::Target::Table("public.orders".into())),
            }),
            table_type: pb::TableType::Events as i32,
            mapping: Some(pb::Mapping {
                event_name: Some("Order".into()),
                time_column: Some("created_at".into()),
                time_unit: pb::TimeUnit::Seconds as i32,
                distinct_id_column: Some("user_id".into()),
                key_columns: vec!["id".into()],
                renames: [("amount".to_string(), "Amount".to_string())].into(),
                ..Default::default()
            }),
            mode: pb::SyncMode::Append as i32,
            schedule: "hourly".into(),
            timezone: "Europe/Berlin".into(),
            strict: Some(false),
            cursor_column: "inserted_at".into(),
            ..Default::default()
        };
        let spec: SyncSpec = serde_json::from_value(sync_json(&message, "acme").unwrap()).unwrap();
        assert_eq!(
            spec.tenant, "acme",
            "the tenant comes from the caller's scope"
        );
        spec.validate().unwrap();
        let back = sync_pb(&spec, &Sealed::default());
        assert_eq!(
            back,
            pb::Sync {
                tenant: "acme".into(),
                ..message
            }
        );
    }

    #[test]
    fn a_redshift_source_round_trips_without_its_credentials() {
        let message = pb::Source {
            id: "rs".into(),
            kind: Some(pb::source::Kind::Redshift(pb::RedshiftSource {
                cluster_identifier: "analytics".into(),
                database: "dev".into(),
                secret_arn: "arn:aws:secretsmanager:us-east-1:1:secret:ferry-AbC".into(),
                region: "us-east-1".into(),
                endpoint_url: "http://127.0.0.1:9".into(),
                access_key_id: "AKIAEXAMPLE".into(),
                secret_access_key: "the-secret-key".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let json = source_json(&message, "acme").unwrap();
        let spec: SourceSpec = serde_json::from_value(json).unwrap();
        spec.validate().unwrap();
        let SourceKind::Redshift(rs) = &spec.kind else {
            panic!("{spec:?}");
        };
        assert_eq!(rs.workgroup_name, None, "empty strings are unset options");
        assert_eq!(rs.db_user, None);
        assert_eq!(
            rs.secret_access_key.as_ref().map(|s| s.expose()),
            Some("the-secret-key")
        );
        let sealed = Sealed {
            fields: vec!["/kind/redshift/secret_access_key".into()],
            ..Default::default()
        };
        let now = Utc::now();
        let back = source_pb(&spec, &sealed, &now, &now, 1);
        let Some(pb::source::Kind::Redshift(shown)) = back.kind else {
            panic!("{back:?}");
        };
        assert_eq!(
            shown,
            pb::RedshiftSource {
                secret_access_key: String::new(),
                secret_access_key_set: true,
                ..match message.kind {
                    Some(pb::source::Kind::Redshift(rs)) => rs,
                    _ => unreachable!(),
                }
            }
        );
    }

    #[test]
    fn enums_left_unspecified_name_their_field() {
        let err = sync_json(&pb::Sync::default(), "acme").unwrap_err();
        assert!(
            err.message().contains("sync.table_type"),
            "{}",
            err.message()
        );
        let err = tenant_json(&pb::Tenant::default()).unwrap_err();
        assert!(
            err.message().contains("tenant.credentials"),
            "{}",
            err.message()
        );
        let err = source_json(&pb::Source::default(), "acme").unwrap_err();
        assert!(err.message().contains("source.kind"), "{}", err.message());
    }
}
