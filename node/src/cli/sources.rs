//! `ferry sources …`: warehouse connections, their tables and columns, and previews.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use ferry_proto::admin::v1 as pb;
use serde_json::json;

use super::error::{CliError, ExitKind};
use super::input::{self, SourceFile};
use super::output::{emit, fields, list};
use super::syncs::SyncFlags;
use super::{json, read_secret, Connection};

// Parsed once per process: the size of the flag structs does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum SourcesCommand {
    /// Create a source; the node tests the connection first and stores it only if it works.
    /// From flags, a file, or both (flags win).
    Create {
        /// The source's id; or `id` in the file.
        id: Option<String>,
        #[command(flatten)]
        flags: SourceFlags,
        /// A TOML (.toml) or JSON definition, in the shape `sources get -o json` prints, plus
        /// `password` (and `ssh_tunnel.private_key`), or for Redshift `secret_access_key`;
        /// certificate and key paths are read here.
        #[arg(long, short = 'f', value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// One source (credentials are never shown, only whether they are set).
    Get { id: String },
    /// The tenant's sources.
    List,
    /// Change a source (tested like create): the flags given, or the file as the whole source.
    Update {
        id: String,
        #[command(flatten)]
        flags: SourceFlags,
        #[arg(long, short = 'f', value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Delete a source; refused while syncs use it.
    Delete { id: String },
    /// Test a stored source's connection again.
    Test { id: String },
    /// The tables and views the source can read.
    Tables { id: String },
    /// The columns of a table (or of a SELECT) with Ferry's type for each.
    Columns {
        id: String,
        /// `schema.table` or `table`.
        #[arg(long, required_unless_present = "sql", conflicts_with = "sql")]
        table: Option<String>,
        /// A SELECT.
        #[arg(long)]
        sql: Option<String>,
    },
    /// The first rows of a table and the records a sync would send for them (nothing is sent):
    /// a stored sync (--sync), or SOURCE with a table and a mapping given as for `syncs create`
    /// (--mode may be left out: one_time is assumed, which reads the same rows).
    Preview {
        /// The source to read (not needed with --sync).
        #[arg(
            id = "source_id",
            value_name = "SOURCE",
            required_unless_present = "sync"
        )]
        source_id: Option<String>,
        /// Preview a stored sync: its source, table and mapping.
        #[arg(long, conflicts_with = "source_id")]
        sync: Option<String>,
        /// Rows to read (the node's default is 10, at most 1000).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        #[command(flatten)]
        definition: SyncFlags,
    },
}

#[derive(Args, Default)]
pub struct SourceFlags {
    /// PostgreSQL: the host.
    #[arg(long, help_heading = "PostgreSQL")]
    host: Option<String>,
    /// PostgreSQL: the port (default 5432).
    #[arg(long, help_heading = "PostgreSQL")]
    port: Option<u32>,
    /// PostgreSQL or Redshift: the database.
    #[arg(long, help_heading = "PostgreSQL")]
    database: Option<String>,
    #[arg(long, help_heading = "PostgreSQL")]
    user: Option<String>,
    /// A file holding the password (`-`: stdin). There is no --password: it would show in `ps`.
    #[arg(long, value_name = "PATH", help_heading = "PostgreSQL")]
    password_file: Option<PathBuf>,
    /// disable, require, verify-ca or verify-full (the default).
    #[arg(long, help_heading = "PostgreSQL")]
    ssl_mode: Option<String>,
    /// A PEM file with the CA certificate, for verify-ca and verify-full.
    #[arg(long, value_name = "PATH", help_heading = "PostgreSQL")]
    ca_cert: Option<PathBuf>,
    /// Reach the database through this SSH bastion.
    #[arg(long, help_heading = "SSH tunnel")]
    ssh_host: Option<String>,
    #[arg(long, help_heading = "SSH tunnel")]
    ssh_port: Option<u32>,
    #[arg(long, help_heading = "SSH tunnel")]
    ssh_user: Option<String>,
    /// An unencrypted private key (PEM file).
    #[arg(long, value_name = "PATH", help_heading = "SSH tunnel")]
    ssh_key_file: Option<PathBuf>,
    /// The bastion's host key: `SHA256:…` or `ssh-ed25519 AAAA…`.
    #[arg(long, help_heading = "SSH tunnel")]
    ssh_host_key: Option<String>,
    /// SQLite: a database file on the node (operator token only).
    #[arg(long, value_name = "PATH", help_heading = "SQLite")]
    sqlite_path: Option<String>,
    /// Redshift: a provisioned cluster's identifier.
    #[arg(long, help_heading = "Redshift", conflicts_with = "redshift_workgroup")]
    redshift_cluster: Option<String>,
    /// Redshift Serverless: the workgroup's name.
    #[arg(long, help_heading = "Redshift")]
    redshift_workgroup: Option<String>,
    /// The AWS region, e.g. us-east-1.
    #[arg(long, help_heading = "Redshift")]
    redshift_region: Option<String>,
    /// Log in as this database user (clusters only).
    #[arg(long, help_heading = "Redshift", conflicts_with = "redshift_secret_arn")]
    redshift_db_user: Option<String>,
    /// Log in with this Secrets Manager secret.
    #[arg(long, help_heading = "Redshift")]
    redshift_secret_arn: Option<String>,
    /// Another Data API endpoint (a VPC endpoint).
    #[arg(long, help_heading = "Redshift")]
    redshift_endpoint_url: Option<String>,
    /// The AWS access key id that signs the requests.
    #[arg(long, help_heading = "Redshift")]
    aws_access_key_id: Option<String>,
    /// A file holding the secret access key (`-`: stdin).
    #[arg(long, value_name = "PATH", help_heading = "Redshift")]
    aws_secret_access_key_file: Option<PathBuf>,
    /// A file holding a session token, for temporary credentials.
    #[arg(long, value_name = "PATH", help_heading = "Redshift")]
    aws_session_token_file: Option<PathBuf>,
}

impl SourceFlags {
    /// PostgreSQL's own options (`--database` is shared with Redshift).
    fn names_postgres_only(&self) -> bool {
        self.host.is_some()
            || self.port.is_some()
            || self.user.is_some()
            || self.password_file.is_some()
            || self.ssl_mode.is_some()
            || self.ca_cert.is_some()
            || self.ssh_host.is_some()
            || self.ssh_port.is_some()
            || self.ssh_user.is_some()
            || self.ssh_key_file.is_some()
            || self.ssh_host_key.is_some()
    }

    fn names_redshift(&self) -> bool {
        self.redshift_cluster.is_some()
            || self.redshift_workgroup.is_some()
            || self.redshift_region.is_some()
            || self.redshift_db_user.is_some()
            || self.redshift_secret_arn.is_some()
            || self.redshift_endpoint_url.is_some()
            || self.aws_access_key_id.is_some()
            || self.aws_secret_access_key_file.is_some()
            || self.aws_session_token_file.is_some()
    }

    fn apply(&self, s: &mut pb::Source) -> Result<(), CliError> {
        if let Some(path) = &self.sqlite_path {
            if self.names_postgres_only() || self.database.is_some() || self.names_redshift() {
                return Err(CliError::usage(
                    "--sqlite-path cannot go with PostgreSQL or Redshift options",
                ));
            }
            s.kind = Some(pb::source::Kind::Sqlite(pb::SqliteSource {
                path: path.clone(),
            }));
            return Ok(());
        }
        let is_redshift = matches!(s.kind, Some(pb::source::Kind::Redshift(_)));
        if self.names_redshift() || (is_redshift && !self.names_postgres_only()) {
            if self.names_postgres_only() {
                return Err(CliError::usage(
                    "Redshift options cannot go with PostgreSQL ones (--host, --user, --password-file, --ssl-mode, …)",
                ));
            }
            return self.apply_redshift(s);
        }
        if !self.names_postgres_only() && self.database.is_none() {
            return Ok(());
        }
        if !matches!(s.kind, Some(pb::source::Kind::Postgres(_))) {
            s.kind = Some(pb::source::Kind::Postgres(Default::default()));
        }
        let Some(pb::source::Kind::Postgres(pg)) = s.kind.as_mut() else {
            return Ok(());
        };
        if let Some(v) = &self.host {
            pg.host = v.clone();
        }
        if let Some(v) = self.port {
            pg.port = v;
        }
        if let Some(v) = &self.database {
            pg.database = v.clone();
        }
        if let Some(v) = &self.user {
            pg.user = v.clone();
        }
        if let Some(p) = &self.password_file {
            pg.password = read_secret(p, "--password-file")?;
        }
        if let Some(m) = &self.ssl_mode {
            pg.ssl_mode = input::ssl_mode(m)?;
        }
        if let Some(p) = &self.ca_cert {
            pg.ca_cert = std::fs::read_to_string(p)
                .map_err(|e| CliError::usage(format!("--ca-cert {}: {e}", p.display())))?;
        }
        let names_tunnel = self.ssh_host.is_some()
            || self.ssh_port.is_some()
            || self.ssh_user.is_some()
            || self.ssh_key_file.is_some()
            || self.ssh_host_key.is_some();
        if names_tunnel {
            let t = pg.ssh_tunnel.get_or_insert_with(Default::default);
            if let Some(v) = &self.ssh_host {
                t.host = v.clone();
            }
            if let Some(v) = self.ssh_port {
                t.port = v;
            }
            if let Some(v) = &self.ssh_user {
                t.user = v.clone();
            }
            if let Some(p) = &self.ssh_key_file {
                t.private_key = read_secret(p, "--ssh-key-file")?;
            }
            if let Some(v) = &self.ssh_host_key {
                t.host_key = v.clone();
            }
        }
        Ok(())
    }

    fn apply_redshift(&self, s: &mut pb::Source) -> Result<(), CliError> {
        if !matches!(s.kind, Some(pb::source::Kind::Redshift(_))) {
            s.kind = Some(pb::source::Kind::Redshift(Default::default()));
        }
        let Some(pb::source::Kind::Redshift(rs)) = s.kind.as_mut() else {
            return Ok(());
        };
        // A cluster and a workgroup exclude each other, as do the two logins.
        if let Some(v) = &self.redshift_cluster {
            rs.cluster_identifier = v.clone();
            rs.workgroup_name.clear();
        }
        if let Some(v) = &self.redshift_workgroup {
            rs.workgroup_name = v.clone();
            rs.cluster_identifier.clear();
        }
        if let Some(v) = &self.database {
            rs.database = v.clone();
        }
        if let Some(v) = &self.redshift_region {
            rs.region = v.clone();
        }
        if let Some(v) = &self.redshift_db_user {
            rs.db_user = v.clone();
            rs.secret_arn.clear();
        }
        if let Some(v) = &self.redshift_secret_arn {
            rs.secret_arn = v.clone();
            rs.db_user.clear();
        }
        if let Some(v) = &self.redshift_endpoint_url {
            rs.endpoint_url = v.clone();
        }
        if let Some(v) = &self.aws_access_key_id {
            rs.access_key_id = v.clone();
        }
        if let Some(p) = &self.aws_secret_access_key_file {
            rs.secret_access_key = read_secret(p, "--aws-secret-access-key-file")?;
        }
        if let Some(p) = &self.aws_session_token_file {
            rs.session_token = read_secret(p, "--aws-session-token-file")?;
        }
        Ok(())
    }
}

fn source_from(
    id: Option<String>,
    tenant: String,
    flags: &SourceFlags,
    file: Option<&PathBuf>,
) -> Result<pb::Source, CliError> {
    let mut s = match file {
        Some(path) => input::read_file::<SourceFile>(path)?.into_proto(path.parent())?,
        None => pb::Source::default(),
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

/// `host:port/database` or the SQLite path.
fn address(s: &pb::Source) -> (String, String, String) {
    match &s.kind {
        Some(pb::source::Kind::Postgres(p)) => {
            let port = if p.port == 0 { 5432 } else { p.port };
            let via = p
                .ssh_tunnel
                .as_ref()
                .map(|t| format!(" via ssh {}", t.host))
                .unwrap_or_default();
            (
                "postgres".into(),
                format!("{}:{port}/{}{via}", p.host, p.database),
                p.user.clone(),
            )
        }
        Some(pb::source::Kind::Sqlite(q)) => ("sqlite".into(), q.path.clone(), String::new()),
        Some(pb::source::Kind::Redshift(r)) => {
            let target = if r.workgroup_name.is_empty() {
                format!("cluster {}", r.cluster_identifier)
            } else {
                format!("workgroup {}", r.workgroup_name)
            };
            let login = if !r.db_user.is_empty() {
                r.db_user.clone()
            } else if !r.secret_arn.is_empty() {
                "(secret)".into()
            } else {
                "(AWS identity)".into()
            };
            (
                "redshift".into(),
                format!("{target}/{} ({})", r.database, r.region),
                login,
            )
        }
        None => (String::new(), String::new(), String::new()),
    }
}

fn source_fields(s: &pb::Source) -> String {
    let (kind, addr, user) = address(s);
    let mut pairs = vec![
        ("tenant", s.tenant.clone()),
        ("id", s.id.clone()),
        ("kind", kind),
        ("address", addr),
        ("user", user),
    ];
    if let Some(pb::source::Kind::Postgres(p)) = &s.kind {
        pairs.push((
            "password",
            if p.password_set { "set" } else { "not set" }.into(),
        ));
        pairs.push(("ssl_mode", json::ssl_mode(p.ssl_mode)));
        if !p.ca_cert.is_empty() {
            pairs.push(("ca_cert", "set (PEM)".into()));
        }
        if let Some(t) = &p.ssh_tunnel {
            let port = if t.port == 0 { 22 } else { t.port };
            pairs.push(("ssh_tunnel", format!("{}@{}:{port}", t.user, t.host)));
            pairs.push(("ssh_host_key", t.host_key.clone()));
        }
    }
    if let Some(pb::source::Kind::Redshift(r)) = &s.kind {
        if !r.secret_arn.is_empty() {
            pairs.push(("secret_arn", r.secret_arn.clone()));
        }
        if !r.endpoint_url.is_empty() {
            pairs.push(("endpoint_url", r.endpoint_url.clone()));
        }
        pairs.push(("access_key_id", r.access_key_id.clone()));
        pairs.push((
            "secret_access_key",
            if r.secret_access_key_set { "set" } else { "not set" }.into(),
        ));
        if r.session_token_set {
            pairs.push(("session_token", "set".into()));
        }
    }
    pairs.push(("created_at", s.created_at.clone()));
    pairs.push(("updated_at", s.updated_at.clone()));
    pairs.push(("version", s.version.to_string()));
    fields(&pairs)
}

pub async fn run(conn: &Connection, command: SourcesCommand) -> Result<(), CliError> {
    let client = conn.connect()?;
    let out = conn.output;
    let tenant = conn.tenant();
    match command {
        SourcesCommand::Create { id, flags, file } => {
            let source = source_from(id, tenant, &flags, file.as_ref())?;
            let s = client
                .call(
                    client
                        .sources()
                        .create_source(client.request(pb::CreateSourceRequest {
                            source: Some(source),
                        })),
                )
                .await?;
            emit(out, json::source(&s), || source_fields(&s));
        }
        SourcesCommand::Get { id } => {
            let s = client
                .call(
                    client
                        .sources()
                        .get_source(client.request(pb::GetSourceRequest { tenant, id })),
                )
                .await?;
            emit(out, json::source(&s), || source_fields(&s));
        }
        SourcesCommand::List => {
            let resp = client
                .call(
                    client
                        .sources()
                        .list_sources(client.request(pb::ListSourcesRequest { tenant })),
                )
                .await?;
            emit(
                out,
                resp.sources
                    .iter()
                    .map(json::source)
                    .collect::<Vec<_>>()
                    .into(),
                || {
                    list(
                        &["id", "tenant", "kind", "address", "user", "updated"],
                        resp.sources.iter().map(|s| {
                            let (kind, addr, user) = address(s);
                            vec![
                                s.id.clone(),
                                s.tenant.clone(),
                                kind,
                                addr,
                                user,
                                s.updated_at.clone(),
                            ]
                        }),
                    )
                },
            );
        }
        SourcesCommand::Update { id, flags, file } => {
            let (mut source, expected_version) = match &file {
                Some(_) => (
                    source_from(None, tenant.clone(), &SourceFlags::default(), file.as_ref())?,
                    0,
                ),
                None => {
                    let current =
                        client
                            .call(client.sources().get_source(client.request(
                                pb::GetSourceRequest {
                                    tenant: tenant.clone(),
                                    id: id.clone(),
                                },
                            )))
                            .await?;
                    let version = current.version;
                    (current, version)
                }
            };
            source.id = id;
            flags.apply(&mut source)?;
            let s = client
                .call(
                    client
                        .sources()
                        .update_source(client.request(pb::UpdateSourceRequest {
                            source: Some(source),
                            expected_version,
                        })),
                )
                .await?;
            emit(out, json::source(&s), || source_fields(&s));
        }
        SourcesCommand::Delete { id } => {
            client
                .call(
                    client
                        .sources()
                        .delete_source(client.request(pb::DeleteSourceRequest {
                            tenant: tenant.clone(),
                            id: id.clone(),
                        })),
                )
                .await?;
            emit(
                out,
                json!({ "deleted": { "tenant": tenant, "source": id } }),
                || format!("deleted source {id}"),
            );
        }
        SourcesCommand::Test { id } => {
            let resp = client
                .call(
                    client
                        .sources()
                        .test_source(client.request(pb::TestSourceRequest {
                            tenant,
                            id: id.clone(),
                        })),
                )
                .await?;
            emit(out, json::test_source(&resp), || {
                if resp.ok {
                    format!("source {id}: connection works ({} ms)", resp.elapsed_ms)
                } else {
                    String::new()
                }
            });
            if !resp.ok {
                let p = resp.problem.unwrap_or_default();
                return Err(CliError::new(
                    ExitKind::Error,
                    format!(
                        "source {id}: connection test failed ({}): {}",
                        super::error::connection_problem_kind(p.kind),
                        p.message
                    ),
                ));
            }
        }
        SourcesCommand::Tables { id } => {
            let resp = client
                .call(
                    client
                        .sources()
                        .list_tables(client.request(pb::ListTablesRequest { tenant, source: id })),
                )
                .await?;
            emit(
                out,
                resp.tables
                    .iter()
                    .map(json::table_info)
                    .collect::<Vec<_>>()
                    .into(),
                || {
                    list(
                        &["schema", "name", "kind"],
                        resp.tables
                            .iter()
                            .map(|t| vec![t.schema.clone(), t.name.clone(), t.kind.clone()]),
                    )
                },
            );
        }
        SourcesCommand::Columns { id, table, sql } => {
            let resp = client
                .call(
                    client
                        .sources()
                        .get_columns(client.request(pb::GetColumnsRequest {
                            tenant,
                            source: id,
                            target: input::read_target(table, sql)?,
                        })),
                )
                .await?;
            emit(
                out,
                resp.columns
                    .iter()
                    .map(json::column)
                    .collect::<Vec<_>>()
                    .into(),
                || {
                    list(
                        &["name", "type"],
                        resp.columns
                            .iter()
                            .map(|c| vec![c.name.clone(), c.r#type.clone()]),
                    )
                },
            );
        }
        SourcesCommand::Preview {
            source_id,
            sync,
            limit,
            definition,
        } => {
            let what = match (sync, source_id) {
                (Some(id), _) => pb::preview_rows_request::What::Sync(id),
                (None, source) => {
                    let mut def = pb::Sync {
                        tenant: tenant.clone(),
                        ..Default::default()
                    };
                    definition.apply(&mut def)?;
                    if let Some(source) = source {
                        def.source = source;
                    }
                    // The node validates the definition as a whole sync; a preview reads the
                    // same first rows whatever the id and mode, so neither needs to be given.
                    if def.id.is_empty() {
                        def.id = "preview".into();
                    }
                    if def.mode == pb::SyncMode::Unspecified as i32 {
                        def.mode = pb::SyncMode::OneTime as i32;
                    }
                    pb::preview_rows_request::What::Definition(def)
                }
            };
            let resp = client
                .call(
                    client
                        .sources()
                        .preview_rows(client.request(pb::PreviewRowsRequest {
                            tenant,
                            what: Some(what),
                            limit,
                        })),
                )
                .await?;
            emit(out, json::preview(&resp), || preview_text(&resp));
        }
    }
    Ok(())
}

fn preview_text(p: &pb::PreviewRowsResponse) -> String {
    let mut text = list(
        &p.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        p.rows.iter().map(
            |r| match serde_json::from_str::<Vec<serde_json::Value>>(r) {
                Ok(values) => values
                    .iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => "NULL".into(),
                        other => other.to_string(),
                    })
                    .collect(),
                Err(_) => vec![r.clone()],
            },
        ),
    );
    if !p.records.is_empty() {
        text.push_str("\n\nrecords that would be sent:");
        for r in &p.records {
            text.push_str(&format!("\n  row {} → {}: {}", r.row, r.endpoint, r.json));
        }
    }
    text.push_str(&problems_text(&p.errors, "rows that would not be sent"));
    for w in &p.warnings {
        text.push_str(&format!("\nwarning: {w}"));
    }
    text
}

/// Per-row problems as an indented list under a title (empty when there are none).
pub fn problems_text(problems: &[pb::RowProblem], title: &str) -> String {
    if problems.is_empty() {
        return String::new();
    }
    let mut text = format!("\n\n{title}:");
    for e in problems {
        let at = match (e.row, e.key.is_empty()) {
            (Some(r), true) => format!("row {r}"),
            (Some(r), false) => format!("row {r} ({})", e.key),
            (None, false) => e.key.clone(),
            (None, true) => String::new(),
        };
        let field = if e.field.is_empty() {
            String::new()
        } else {
            format!("{}: ", e.field)
        };
        text.push_str(&format!("\n  [{}] {at}: {field}{}", e.reason, e.message));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redshift(s: &pb::Source) -> &pb::RedshiftSource {
        match &s.kind {
            Some(pb::source::Kind::Redshift(r)) => r,
            other => panic!("redshift expected, got {other:?}"),
        }
    }

    #[test]
    fn redshift_flags_make_a_redshift_source_and_database_follows_the_kind() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "the-secret-key\n").unwrap();
        let flags = SourceFlags {
            redshift_cluster: Some("analytics".into()),
            database: Some("dev".into()),
            redshift_region: Some("eu-west-1".into()),
            redshift_secret_arn: Some("arn:aws:secretsmanager:eu-west-1:1:secret:x".into()),
            aws_access_key_id: Some("AKIAEXAMPLE".into()),
            aws_secret_access_key_file: Some(key),
            ..Default::default()
        };
        let mut s = pb::Source::default();
        flags.apply(&mut s).unwrap();
        let r = redshift(&s);
        assert_eq!(r.cluster_identifier, "analytics");
        assert_eq!(r.database, "dev");
        assert_eq!(r.region, "eu-west-1");
        assert_eq!(r.secret_access_key, "the-secret-key", "read from the file");

        // On update, --database alone changes the Redshift source's database, and a
        // workgroup replaces the cluster.
        let update = SourceFlags {
            database: Some("prod".into()),
            redshift_workgroup: Some("serverless".into()),
            ..Default::default()
        };
        update.apply(&mut s).unwrap();
        let r = redshift(&s);
        assert_eq!(r.database, "prod");
        assert_eq!(r.workgroup_name, "serverless");
        assert_eq!(r.cluster_identifier, "");
        assert_eq!(r.access_key_id, "AKIAEXAMPLE", "untouched options stay");

        let mixed = SourceFlags {
            host: Some("db".into()),
            redshift_region: Some("us-east-1".into()),
            ..Default::default()
        };
        let err = mixed.apply(&mut pb::Source::default()).unwrap_err();
        assert!(err.message.contains("Redshift options"), "{}", err.message);
    }

    #[test]
    fn a_redshift_source_prints_without_credentials_and_reads_back_as_a_file() {
        let shown = pb::Source {
            tenant: "acme".into(),
            id: "rs".into(),
            kind: Some(pb::source::Kind::Redshift(pb::RedshiftSource {
                workgroup_name: "serverless".into(),
                database: "dev".into(),
                region: "us-east-1".into(),
                access_key_id: "AKIAEXAMPLE".into(),
                secret_access_key_set: true,
                ..Default::default()
            })),
            version: 3,
            ..Default::default()
        };
        let printed = json::source(&shown);
        assert_eq!(printed["kind"], "redshift");
        assert_eq!(printed["redshift"]["workgroup_name"], "serverless");
        assert_eq!(printed["redshift"]["secret_access_key_set"], true);
        assert!(printed["redshift"].get("cluster_identifier").is_none());
        let text = source_fields(&shown);
        assert!(text.contains("workgroup serverless/dev (us-east-1)"), "{text}");
        assert!(text.contains("secret_access_key"), "{text}");

        // The printed JSON is a definition file: with the key added it creates the same source.
        let mut file = printed.clone();
        file["redshift"]["secret_access_key"] = "new-key".into();
        let back: SourceFile = serde_json::from_value(file).unwrap();
        let back = back.into_proto(None).unwrap();
        let r = redshift(&back);
        assert_eq!(r.workgroup_name, "serverless");
        assert_eq!(r.secret_access_key, "new-key");
        assert!(!r.secret_access_key_set, "output-only flags are not sent");

        let both: SourceFile = serde_json::from_value(serde_json::json!({
            "sqlite": {"path": "a.db"},
            "redshift": {"database": "d", "region": "r"},
        }))
        .unwrap();
        let err = both.into_proto(None).unwrap_err();
        assert!(err.message.contains("not several"), "{}", err.message);
    }
}
