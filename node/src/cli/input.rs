//! Definition files for `create` and `update`: TOML or JSON in the same shape that
//! `get --output json` prints, so `get -o json > x.json`, an edit, and `update --file x.json`
//! round-trip. Output-only fields (`created_at`, `version`, `*_set`, `paused`, …) are accepted
//! and ignored; anything else unknown is refused with its name. Write-only credentials
//! (`password`, `secret`, `token`, `private_key`, `project_token`) may be given here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferry_proto::admin::v1 as pb;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;

use super::error::CliError;
use super::webhook::WebhookFile;

/// Reads a TOML (`.toml`) or JSON (anything else, `-` for stdin) definition file.
pub fn read_file<T: DeserializeOwned>(path: &Path) -> Result<T, CliError> {
    let shown = path.display();
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| CliError::usage(format!("reading stdin: {e}")))?
    } else {
        std::fs::read_to_string(path).map_err(|e| CliError::usage(format!("{shown}: {e}")))?
    };
    let is_toml = path.extension().is_some_and(|e| e == "toml");
    if is_toml {
        toml::from_str(&text).map_err(|e| {
            // toml's message spans several lines (a snippet of the file); keep the first.
            let msg = e.message().to_owned();
            let at = e
                .span()
                .map(|s| format!(" at line {}", text[..s.start].matches('\n').count() + 1))
                .unwrap_or_default();
            CliError::usage(format!("{shown}{at}: {msg}"))
        })
    } else {
        serde_json::from_str(&text).map_err(|e| CliError::usage(format!("{shown}: {e}")))
    }
}

/// An enum value by its short name (`user_profiles`, `one-time`, `verify-full`).
fn enum_value(
    field: &str,
    text: &str,
    prefix: &str,
    lookup: impl Fn(&str) -> Option<i32>,
    choices: &str,
) -> Result<i32, CliError> {
    let name = format!(
        "{prefix}{}",
        text.trim().replace('-', "_").to_ascii_uppercase()
    );
    match lookup(&name) {
        Some(v) if v != 0 || text.trim().eq_ignore_ascii_case("auto") => Ok(v),
        _ => Err(CliError::usage(format!(
            "{field}: '{text}' is not one of {choices}"
        ))),
    }
}

pub fn table_type(text: &str) -> Result<i32, CliError> {
    enum_value(
        "table_type",
        text,
        "TABLE_TYPE_",
        |n| pb::TableType::from_str_name(n).map(|v| v as i32),
        "events, user_profiles, group_profiles, lookup_table, profile_history",
    )
}

pub fn sync_mode(text: &str) -> Result<i32, CliError> {
    enum_value(
        "mode",
        text,
        "SYNC_MODE_",
        |n| pb::SyncMode::from_str_name(n).map(|v| v as i32),
        "append, full, one_time, mirror",
    )
}

pub fn time_unit(text: &str) -> Result<i32, CliError> {
    enum_value(
        "mapping.time_unit",
        text,
        "TIME_UNIT_",
        |n| pb::TimeUnit::from_str_name(n).map(|v| v as i32),
        "auto, seconds, milliseconds, microseconds",
    )
}

pub fn ssl_mode(text: &str) -> Result<i32, CliError> {
    enum_value(
        "ssl_mode",
        text,
        "SSL_MODE_",
        |n| pb::SslMode::from_str_name(n).map(|v| v as i32),
        "disable, require, verify-ca, verify-full",
    )
}

pub fn region(text: &str) -> Result<i32, CliError> {
    enum_value(
        "destination.region",
        text,
        "REGION_",
        |n| pb::Region::from_str_name(n).map(|v| v as i32),
        "us, eu, in",
    )
}

/// Inline PEM, or the path of a PEM file (relative to the definition file's folder).
pub fn pem_or_file(text: &str, base: Option<&Path>, what: &str) -> Result<String, CliError> {
    if text.contains("-----BEGIN") || text.is_empty() {
        return Ok(text.to_owned());
    }
    let path = match base {
        Some(dir) if Path::new(text).is_relative() => dir.join(text),
        _ => PathBuf::from(text),
    };
    std::fs::read_to_string(&path)
        .map_err(|e| CliError::usage(format!("{what}: reading {}: {e}", path.display())))
}

// ---------------------------------------------------------------------------------------------
// Tenants

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantFile {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub destination: Option<DestinationFile>,
    #[serde(default)]
    pub project_id: Option<u64>,
    #[serde(default)]
    pub credentials: Option<CredentialsFile>,
    #[serde(default)]
    pub project_token: Option<String>,
    #[serde(default)]
    pub webhook: Option<WebhookFile>,
    /// Records per second across the cluster; absent or null: no budget.
    #[serde(default)]
    pub send_budget: Option<u32>,
    #[serde(default, rename = "project_token_set")]
    _project_token_set: Option<IgnoredAny>,
    #[serde(default, rename = "created_at")]
    _created_at: Option<IgnoredAny>,
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<IgnoredAny>,
    #[serde(default, rename = "version")]
    _version: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationFile {
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub receiver_extensions: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum CredentialsFile {
    ServiceAccount {
        user: String,
        #[serde(default)]
        secret: String,
        #[serde(default, rename = "secret_set")]
        _secret_set: Option<IgnoredAny>,
    },
    ProjectToken {
        #[serde(default)]
        token: String,
        #[serde(default, rename = "token_set")]
        _token_set: Option<IgnoredAny>,
    },
}

pub fn destination(d: DestinationFile) -> Result<pb::Destination, CliError> {
    let target = match (d.region, d.base_url) {
        (Some(_), Some(_)) => {
            return Err(CliError::usage(
                "destination: give region or base_url, not both",
            ))
        }
        (Some(r), None) => Some(pb::destination::Target::Region(region(&r)?)),
        (None, Some(u)) => Some(pb::destination::Target::BaseUrl(u)),
        (None, None) => None,
    };
    Ok(pb::Destination {
        target,
        receiver_extensions: d.receiver_extensions,
    })
}

impl TenantFile {
    pub fn into_proto(self) -> Result<pb::Tenant, CliError> {
        let credentials = self.credentials.map(|c| pb::Credentials {
            kind: Some(match c {
                CredentialsFile::ServiceAccount { user, secret, .. } => {
                    pb::credentials::Kind::ServiceAccount(pb::ServiceAccount {
                        user,
                        secret,
                        secret_set: false,
                    })
                }
                CredentialsFile::ProjectToken { token, .. } => {
                    pb::credentials::Kind::ProjectToken(pb::ProjectTokenAuth {
                        token,
                        token_set: false,
                    })
                }
            }),
        });
        Ok(pb::Tenant {
            id: self.id.unwrap_or_default(),
            name: self.name.unwrap_or_default(),
            destination: self.destination.map(destination).transpose()?,
            project_id: self.project_id.unwrap_or_default(),
            credentials,
            project_token: self.project_token.unwrap_or_default(),
            webhook: self.webhook.map(WebhookFile::into_proto),
            send_budget: self.send_budget,
            ..Default::default()
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Sources

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    /// `postgres`, `sqlite` or `redshift`; optional, the options' key says it.
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub postgres: Option<PostgresFile>,
    #[serde(default)]
    pub sqlite: Option<SqliteFile>,
    #[serde(default)]
    pub redshift: Option<RedshiftFile>,
    #[serde(default, rename = "created_at")]
    _created_at: Option<IgnoredAny>,
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<IgnoredAny>,
    #[serde(default, rename = "version")]
    _version: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresFile {
    pub host: String,
    #[serde(default)]
    pub port: u32,
    pub database: String,
    pub user: String,
    #[serde(default)]
    pub password: String,
    #[serde(default, rename = "password_set")]
    _password_set: Option<IgnoredAny>,
    #[serde(default)]
    pub ssl_mode: Option<String>,
    /// Inline PEM or a file path.
    #[serde(default)]
    pub ca_cert: String,
    #[serde(default)]
    pub ssh_tunnel: Option<SshTunnelFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshTunnelFile {
    pub host: String,
    #[serde(default)]
    pub port: u32,
    pub user: String,
    /// Inline PEM or a file path.
    #[serde(default)]
    pub private_key: String,
    #[serde(default, rename = "private_key_set")]
    _private_key_set: Option<IgnoredAny>,
    #[serde(default)]
    pub host_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteFile {
    pub path: String,
}

/// The `redshift` table of a source file (the shape `sources get -o json` prints).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedshiftFile {
    #[serde(default)]
    pub cluster_identifier: String,
    #[serde(default)]
    pub workgroup_name: String,
    pub database: String,
    #[serde(default)]
    pub db_user: String,
    #[serde(default)]
    pub secret_arn: String,
    pub region: String,
    #[serde(default)]
    pub endpoint_url: String,
    #[serde(default)]
    pub access_key_id: String,
    #[serde(default)]
    pub secret_access_key: String,
    #[serde(default, rename = "secret_access_key_set")]
    _secret_access_key_set: Option<IgnoredAny>,
    #[serde(default)]
    pub session_token: String,
    #[serde(default, rename = "session_token_set")]
    _session_token_set: Option<IgnoredAny>,
}

impl RedshiftFile {
    fn into_proto(self) -> pb::RedshiftSource {
        pb::RedshiftSource {
            cluster_identifier: self.cluster_identifier,
            workgroup_name: self.workgroup_name,
            database: self.database,
            db_user: self.db_user,
            secret_arn: self.secret_arn,
            region: self.region,
            endpoint_url: self.endpoint_url,
            access_key_id: self.access_key_id,
            secret_access_key: self.secret_access_key,
            secret_access_key_set: false,
            session_token: self.session_token,
            session_token_set: false,
        }
    }
}

impl SourceFile {
    /// `base`: the definition file's folder, for relative certificate and key paths.
    pub fn into_proto(self, base: Option<&Path>) -> Result<pb::Source, CliError> {
        let kind = match (self.postgres, self.sqlite, self.redshift) {
            (Some(p), None, None) => Some(pb::source::Kind::Postgres(pb::PostgresSource {
                host: p.host,
                port: p.port,
                database: p.database,
                user: p.user,
                password: p.password,
                password_set: false,
                ssl_mode: p
                    .ssl_mode
                    .as_deref()
                    .map(ssl_mode)
                    .transpose()?
                    .unwrap_or(0),
                ca_cert: pem_or_file(&p.ca_cert, base, "postgres.ca_cert")?,
                ssh_tunnel: p
                    .ssh_tunnel
                    .map(|t| -> Result<_, CliError> {
                        Ok(pb::SshTunnel {
                            host: t.host,
                            port: t.port,
                            user: t.user,
                            private_key: pem_or_file(
                                &t.private_key,
                                base,
                                "postgres.ssh_tunnel.private_key",
                            )?,
                            private_key_set: false,
                            host_key: t.host_key.unwrap_or_default(),
                        })
                    })
                    .transpose()?,
            })),
            (None, Some(s), None) => {
                Some(pb::source::Kind::Sqlite(pb::SqliteSource { path: s.path }))
            }
            (None, None, Some(r)) => Some(pb::source::Kind::Redshift(r.into_proto())),
            (None, None, None) => None,
            _ => {
                return Err(CliError::usage(
                    "a source is one of postgres, sqlite or redshift, not several",
                ))
            }
        };
        if let (Some(named), Some(k)) = (&self.kind, &kind) {
            let actual = match k {
                pb::source::Kind::Postgres(_) => "postgres",
                pb::source::Kind::Sqlite(_) => "sqlite",
                pb::source::Kind::Redshift(_) => "redshift",
            };
            if named != actual {
                return Err(CliError::usage(format!(
                    "kind = '{named}' but the options are under '{actual}'"
                )));
            }
        }
        Ok(pb::Source {
            tenant: self.tenant.unwrap_or_default(),
            id: self.id.unwrap_or_default(),
            kind,
            ..Default::default()
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Syncs

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncFile {
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub sql: Option<String>,
    #[serde(default)]
    pub table_type: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub mapping: Option<MappingFile>,
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub strict: Option<bool>,
    #[serde(default)]
    pub cursor_column: Option<String>,
    #[serde(default)]
    pub webhook: Option<WebhookFile>,
    #[serde(default)]
    pub accept_schema_change: bool,
    #[serde(default, rename = "paused")]
    _paused: Option<IgnoredAny>,
    #[serde(default, rename = "trigger_url")]
    _trigger_url: Option<IgnoredAny>,
    #[serde(default, rename = "created_at")]
    _created_at: Option<IgnoredAny>,
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<IgnoredAny>,
    #[serde(default, rename = "version")]
    _version: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    pub event_name: Option<String>,
    pub event_name_column: Option<String>,
    pub time_column: Option<String>,
    #[serde(default)]
    pub time_unit: Option<String>,
    pub distinct_id_column: Option<String>,
    pub user_id_column: Option<String>,
    pub device_id_column: Option<String>,
    pub properties_column: Option<String>,
    #[serde(default)]
    pub key_columns: Vec<String>,
    #[serde(default)]
    pub renames: BTreeMap<String, String>,
    #[serde(default)]
    pub excludes: Vec<String>,
    pub group_key: Option<String>,
    pub group_id_column: Option<String>,
    pub lookup_table_id: Option<String>,
    pub key_column: Option<String>,
}

impl MappingFile {
    pub fn into_proto(self) -> Result<pb::Mapping, CliError> {
        Ok(pb::Mapping {
            event_name: self.event_name,
            event_name_column: self.event_name_column,
            time_column: self.time_column,
            time_unit: self
                .time_unit
                .as_deref()
                .map(time_unit)
                .transpose()?
                .unwrap_or(0),
            distinct_id_column: self.distinct_id_column,
            user_id_column: self.user_id_column,
            device_id_column: self.device_id_column,
            properties_column: self.properties_column,
            key_columns: self.key_columns,
            renames: self.renames.into_iter().collect(),
            excludes: self.excludes,
            group_key: self.group_key,
            group_id_column: self.group_id_column,
            lookup_table_id: self.lookup_table_id,
            key_column: self.key_column,
        })
    }
}

pub fn read_target(
    table: Option<String>,
    sql: Option<String>,
) -> Result<Option<pb::ReadTarget>, CliError> {
    let target = match (table, sql) {
        (Some(_), Some(_)) => return Err(CliError::usage("give table or sql, not both")),
        (Some(t), None) => Some(pb::read_target::Target::Table(t)),
        (None, Some(s)) => Some(pb::read_target::Target::Sql(s)),
        (None, None) => None,
    };
    Ok(target.map(|target| pb::ReadTarget {
        target: Some(target),
    }))
}

impl SyncFile {
    pub fn into_proto(self) -> Result<pb::Sync, CliError> {
        Ok(pb::Sync {
            tenant: self.tenant.unwrap_or_default(),
            id: self.id.unwrap_or_default(),
            source: self.source.unwrap_or_default(),
            target: read_target(self.table, self.sql)?,
            table_type: self
                .table_type
                .as_deref()
                .map(table_type)
                .transpose()?
                .unwrap_or(0),
            mapping: self.mapping.map(MappingFile::into_proto).transpose()?,
            mode: self
                .mode
                .as_deref()
                .map(sync_mode)
                .transpose()?
                .unwrap_or(0),
            schedule: self.schedule.unwrap_or_default(),
            timezone: self.timezone.unwrap_or_default(),
            strict: self.strict,
            cursor_column: self.cursor_column.unwrap_or_default(),
            webhook: self.webhook.map(WebhookFile::into_proto),
            accept_schema_change: self.accept_schema_change,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_sync_file_in_toml_becomes_the_proto() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "s.toml",
            "source = 'wh'\ntable = 'public.orders'\ntable_type = 'events'\nmode = 'one-time'\nschedule = 'daily'\n[mapping]\nevent_name = 'Order'\ntime_column = 'ts'\ntime_unit = 'milliseconds'\nkey_columns = ['id']\nrenames = { amount = 'Amount' }\n",
        );
        let s = read_file::<SyncFile>(&p).unwrap().into_proto().unwrap();
        assert_eq!(s.source, "wh");
        assert_eq!(s.mode, pb::SyncMode::OneTime as i32);
        assert_eq!(s.table_type, pb::TableType::Events as i32);
        let m = s.mapping.unwrap();
        assert_eq!(m.time_unit, pb::TimeUnit::Milliseconds as i32);
        assert_eq!(m.renames["amount"], "Amount");
        assert_eq!(
            s.target.unwrap().target,
            Some(pb::read_target::Target::Table("public.orders".into()))
        );
    }

    #[test]
    fn what_get_prints_reads_back_and_unknown_fields_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let printed = super::super::json::sync(&pb::Sync {
            tenant: "acme".into(),
            id: "o".into(),
            source: "wh".into(),
            table_type: pb::TableType::UserProfiles as i32,
            mode: pb::SyncMode::Full as i32,
            version: 7,
            paused: true,
            ..Default::default()
        });
        let p = write(dir.path(), "s.json", &printed.to_string());
        let s = read_file::<SyncFile>(&p).unwrap().into_proto().unwrap();
        assert_eq!(
            (s.id.as_str(), s.table_type, s.mode),
            (
                "o",
                pb::TableType::UserProfiles as i32,
                pb::SyncMode::Full as i32
            )
        );

        let p = write(dir.path(), "bad.toml", "source = 'wh'\ntabel = 'x'\n");
        let e = read_file::<SyncFile>(&p).unwrap_err();
        assert!(
            e.message.contains("bad.toml at line 2") && e.message.contains("tabel"),
            "{e}"
        );
        let p = write(dir.path(), "mode.toml", "mode = 'sometimes'\n");
        let e = read_file::<SyncFile>(&p).unwrap().into_proto().unwrap_err();
        assert_eq!(
            e.message,
            "mode: 'sometimes' is not one of append, full, one_time, mirror"
        );
    }

    #[test]
    fn a_source_file_reads_its_ca_from_a_path_next_to_it() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ca.pem", "-----BEGIN CERTIFICATE-----\nAA\n");
        let p = write(
            dir.path(),
            "src.toml",
            "[postgres]\nhost = 'db'\ndatabase = 'd'\nuser = 'u'\npassword = 'pw'\nssl_mode = 'verify-ca'\nca_cert = 'ca.pem'\n",
        );
        let s = read_file::<SourceFile>(&p)
            .unwrap()
            .into_proto(Some(dir.path()))
            .unwrap();
        let Some(pb::source::Kind::Postgres(pg)) = s.kind else {
            panic!("postgres expected")
        };
        assert_eq!(pg.ssl_mode, pb::SslMode::VerifyCa as i32);
        assert!(pg.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(pg.password, "pw");
    }

    #[test]
    fn a_tenant_file_with_a_service_account() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "t.json",
            r#"{"id":"acme","name":"Acme","project_id":7,"destination":{"base_url":"http://127.0.0.1:9"},"credentials":{"service_account":{"user":"sa","secret":"pw"}}}"#,
        );
        let t = read_file::<TenantFile>(&p).unwrap().into_proto().unwrap();
        assert_eq!(t.project_id, 7);
        assert!(matches!(
            t.credentials.unwrap().kind,
            Some(pb::credentials::Kind::ServiceAccount(ref sa)) if sa.secret == "pw"
        ));
    }
}
