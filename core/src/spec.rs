//! What operators write: tenants, sources and syncs. All of it comes from TOML (or the admin
//! API) and is refused on unknown keys; `validate` checks what serde cannot and names the
//! offending field in every message (`sync.mapping.time_column: …`).
//!
//! A sync's mapping is written flat (every table type's options side by side, as an operator
//! writes them) and resolved by [`SyncSpec::validate`] into a typed [`Mapping`] whose
//! [`Target`] holds exactly what its table type needs. Options that do not apply to the table
//! type are refused rather than ignored, so a typo never silently changes what is sent.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::schedule::{Schedule, ScheduleError};

/// A credential. Printing it, with `{}` or `{:?}`, shows `***`; only [`Secret::expose`] gives
/// the value, so it can't reach a log by accident. It is deliberately not `Serialize`: the state
/// store encrypts what it stores through `expose`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One problem in a spec. `field` is the dotted path of the offending key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

/// Every problem found in a spec (validation does not stop at the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl SpecErrors {
    /// True when some error is about `field` exactly.
    pub fn mentions(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == field)
    }
}

/// Collects errors while validating.
#[derive(Default)]
pub(crate) struct Problems(Vec<SpecError>);

impl Problems {
    pub(crate) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub(crate) fn finish<T>(self, value: T) -> Result<T, SpecErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(SpecErrors(self.0))
        }
    }
}

/// Ids of tenants, sources and syncs end up in state-store keys, warehouse object names and
/// `$insert_id`s: 1–63 characters of `[a-z0-9_-]`, starting with a letter or digit.
fn check_id(problems: &mut Problems, field: &str, id: &str) {
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let ok_start = id
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if id.is_empty() || id.len() > 63 || !ok_chars || !ok_start {
        problems.add(
            field,
            format!("'{id}' is not a valid id: use 1-63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit"),
        );
    }
}

fn check_not_blank(problems: &mut Problems, field: &str, value: &str) {
    if value.trim().is_empty() {
        problems.add(field, "must not be empty");
    }
}

// ---------------------------------------------------------------------------------------------
// Tenants

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    #[serde(alias = "US")]
    Us,
    #[serde(alias = "EU")]
    Eu,
    #[serde(alias = "IN")]
    In,
}

/// Where a tenant's data goes: one of Mixpanel's regions, or a custom base URL (the bundled
/// receiver, a proxy) that then serves every API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    #[serde(default)]
    pub region: Option<Region>,
    #[serde(default)]
    pub base_url: Option<String>,
}

/// The base URLs of the APIs Ferry calls, without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// `/import`, `/engage`, `/groups`, `/lookup-tables`.
    pub ingestion: String,
    /// `/api/2.0/export`.
    pub export: String,
    /// `/api/query/...`.
    pub query: String,
}

impl Destination {
    /// The endpoints, once the destination is valid (region or base URL, not both).
    pub fn endpoints(&self) -> Endpoints {
        if let Some(base) = &self.base_url {
            let base = base.trim_end_matches('/').to_owned();
            return Endpoints {
                ingestion: base.clone(),
                export: base.clone(),
                query: base,
            };
        }
        let (api, data, query) = match self.region.unwrap_or(Region::Us) {
            Region::Us => ("api", "data", ""),
            Region::Eu => ("api-eu", "data-eu", "eu."),
            Region::In => ("api-in", "data-in", "in."),
        };
        Endpoints {
            ingestion: format!("https://{api}.mixpanel.com"),
            export: format!("https://{data}.mixpanel.com"),
            query: format!("https://{query}mixpanel.com"),
        }
    }
}

/// How Ferry authenticates to the destination.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// Service account (HTTP Basic user:secret plus `project_id`); needed for lookup tables
    /// and exports.
    ServiceAccount { user: String, secret: Secret },
    /// Project token as the Basic user name; enough for `/import`, `/engage`, `/groups`.
    ProjectToken(Secret),
}

/// One analytics project and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    pub id: String,
    pub name: String,
    pub destination: Destination,
    pub project_id: u64,
    pub auth: Auth,
    /// The project token, put in `$token` of profile updates. Optional with a service account
    /// (Mixpanel accepts profile updates authenticated by the account); required to send
    /// profiles with project-token auth, where it is the auth token itself.
    #[serde(default)]
    pub project_token: Option<Secret>,
    /// Called when any of the tenant's runs fails or its volume deviates (see [`WebhookSpec`]).
    #[serde(default)]
    pub webhook: Option<WebhookSpec>,
    /// Records per second all of the tenant's runs together may send, across every node of
    /// a cluster (Mixpanel's rate limit is per project). None: no budget.
    #[serde(default)]
    pub send_budget: Option<u32>,
}

impl TenantSpec {
    pub fn validate(&self) -> Result<(), SpecErrors> {
        let mut p = Problems::default();
        check_id(&mut p, "tenant.id", &self.id);
        check_not_blank(&mut p, "tenant.name", &self.name);
        match (&self.destination.region, &self.destination.base_url) {
            (Some(_), Some(_)) => p.add(
                "tenant.destination",
                "give either region or base_url, not both",
            ),
            (None, None) => p.add(
                "tenant.destination",
                "give region (us, eu or in) or base_url",
            ),
            (None, Some(url)) => {
                let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
                let host = url.split_once("://").map_or("", |(_, rest)| rest);
                if !scheme_ok || host.trim_matches('/').is_empty() || url.contains(['?', '#', ' '])
                {
                    p.add(
                        "tenant.destination.base_url",
                        format!("'{url}' is not an http(s) base URL without query (e.g. https://api-eu.mixpanel.com)"),
                    );
                }
            }
            (Some(_), None) => {}
        }
        if self.project_id == 0 {
            p.add("tenant.project_id", "must be the project's numeric id");
        }
        match &self.auth {
            Auth::ServiceAccount { user, secret } => {
                check_not_blank(&mut p, "tenant.auth.service_account.user", user);
                check_not_blank(
                    &mut p,
                    "tenant.auth.service_account.secret",
                    secret.expose(),
                );
            }
            Auth::ProjectToken(token) => {
                check_not_blank(&mut p, "tenant.auth.project_token", token.expose())
            }
        }
        if let Some(webhook) = &self.webhook {
            webhook.check(&mut p, "tenant.webhook");
        }
        if self.send_budget == Some(0) {
            p.add(
                "tenant.send_budget",
                "must be a positive number of records per second (leave it out for no budget)",
            );
        }
        p.finish(())
    }

    /// The token for `$token` in profile updates.
    pub fn profile_token(&self) -> Option<&str> {
        match (&self.project_token, &self.auth) {
            (Some(token), _) | (None, Auth::ProjectToken(token)) => Some(token.expose()),
            (None, Auth::ServiceAccount { .. }) => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Notifications

/// A webhook Ferry `POST`s JSON to when a run fails, or when a run's volume (records sent)
/// deviates from the median of the recent successful runs by more than
/// `volume_deviation_percent`. With a secret, each request carries
/// `X-Ferry-Signature: sha256=<hex HMAC-SHA256 of the body>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// `http://` or `https://` URL.
    pub url: String,
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Notify on failed runs (default true).
    #[serde(default = "default_true")]
    pub on_failure: bool,
    /// Notify when a run's volume is more than this many percent above or below the median of
    /// the recent successful runs (50: ±50%). None: no volume notifications.
    #[serde(default)]
    pub volume_deviation_percent: Option<u32>,
    /// How many recent successful runs the median is taken over (default 5).
    #[serde(default = "default_volume_window")]
    pub volume_window: u32,
    /// No volume notification before this many successful runs exist (default 3).
    #[serde(default = "default_volume_min_runs")]
    pub volume_min_runs: u32,
}

fn default_volume_window() -> u32 {
    5
}

fn default_volume_min_runs() -> u32 {
    3
}

impl WebhookSpec {
    fn check(&self, p: &mut Problems, field: &str) {
        let url = self.url.trim();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        let host = rest.map_or("", |r| r.split(['/', '?', '#']).next().unwrap_or(""));
        if host.is_empty() || host.starts_with(':') || url.contains(char::is_whitespace) {
            p.add(
                format!("{field}.url"),
                format!("'{url}' is not an http(s) URL (e.g. https://hooks.example.com/ferry)"),
            );
        }
        if let Some(secret) = &self.secret {
            check_not_blank(p, &format!("{field}.secret"), secret.expose());
        }
        if let Some(pct) = self.volume_deviation_percent {
            if pct == 0 || pct > 10_000 {
                p.add(
                    format!("{field}.volume_deviation_percent"),
                    format!("{pct} is out of range: give a percentage from 1 to 10000 (50 = more than ±50% from the recent median)"),
                );
            }
        }
        if self.volume_window == 0 || self.volume_window > 100 {
            p.add(
                format!("{field}.volume_window"),
                "must be between 1 and 100 runs",
            );
        }
        if self.volume_min_runs == 0 || self.volume_min_runs > self.volume_window {
            p.add(
                format!("{field}.volume_min_runs"),
                format!(
                    "must be between 1 and volume_window ({})",
                    self.volume_window
                ),
            );
        }
        if !self.on_failure && self.volume_deviation_percent.is_none() {
            p.add(
                field,
                "notifies about nothing: keep on_failure or set volume_deviation_percent",
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sources

/// TLS towards PostgreSQL, as libpq names the modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Require,
    VerifyCa,
    /// The default: encrypted, certificate and host name checked.
    #[default]
    VerifyFull,
}

/// A CA certificate: inline PEM when the text holds a PEM header, else a file path.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum CertSource {
    Path(String),
    Pem(String),
}

impl From<String> for CertSource {
    fn from(text: String) -> Self {
        if text.contains("-----BEGIN") {
            CertSource::Pem(text)
        } else {
            CertSource::Path(text)
        }
    }
}

/// An SSH tunnel to reach the database through a bastion.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshTunnel {
    pub host: String,
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    pub user: String,
    /// An unencrypted private key in PEM (OpenSSH or PKCS#8) form.
    pub private_key: Secret,
    /// The bastion's host key, to be sure the tunnel reaches the real bastion: either its
    /// SHA-256 fingerprint as `ssh-keygen -l` prints it (`SHA256:...`) or its public key as in
    /// `known_hosts` or a `.pub` file (`ssh-ed25519 AAAA...`). Without it any host key is
    /// accepted (and its fingerprint logged as a warning), which leaves the SSH leg open to a
    /// man in the middle: set it in production.
    #[serde(default)]
    pub host_key: Option<String>,
}

fn default_ssh_port() -> u16 {
    22
}

/// The shape of an SSH host key setting; the connector parses it for real. A fingerprint is
/// `SHA256:` and unpadded base64 of 32 bytes; a public key is an algorithm name and base64 (an
/// optional leading host pattern and a trailing comment, as in `known_hosts`, are allowed).
fn looks_like_host_key(text: &str) -> bool {
    let text = text.trim();
    let is_base64 = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    };
    if let Some(fp) = text.strip_prefix("SHA256:") {
        return fp.len() == 43 && is_base64(fp);
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    fields.windows(2).any(|w| {
        (w[0].starts_with("ssh-") || w[0].starts_with("ecdsa-") || w[0].starts_with("sk-"))
            && is_base64(w[1])
    })
}

fn default_postgres_port() -> u16 {
    5432
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresOptions {
    pub host: String,
    #[serde(default = "default_postgres_port")]
    pub port: u16,
    pub database: String,
    pub user: String,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub ssl_mode: SslMode,
    #[serde(default)]
    pub ca_cert: Option<CertSource>,
    /// Boxed: the tunnel settings are rare and large, and would bloat every `SourceKind`.
    #[serde(default)]
    pub ssh_tunnel: Option<Box<SshTunnel>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteOptions {
    pub path: String,
}

/// Amazon Redshift, reached through the Redshift Data API (no network path to the cluster and
/// no database driver needed). Exactly one of `cluster_identifier` (a provisioned cluster) and
/// `workgroup_name` (Redshift Serverless). The database login is a Secrets Manager secret
/// (`secret_arn`), a database user given temporary credentials (`db_user`, clusters only), or,
/// with neither, the AWS identity itself (IAM). The AWS credentials are the static keys given
/// here, else the named `profile`, else the default chain (environment, shared config files,
/// web identity / IRSA, ECS and EC2 instance roles).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedshiftOptions {
    #[serde(default)]
    pub cluster_identifier: Option<String>,
    #[serde(default)]
    pub workgroup_name: Option<String>,
    pub database: String,
    #[serde(default)]
    pub db_user: Option<String>,
    #[serde(default)]
    pub secret_arn: Option<String>,
    /// The AWS region of the cluster or workgroup, e.g. `us-east-1`.
    pub region: String,
    /// Another Data API endpoint (a VPC endpoint, or a stand-in in tests).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    #[serde(default)]
    pub session_token: Option<Secret>,
    /// A profile of the shared AWS config files, instead of the default chain.
    #[serde(default)]
    pub profile: Option<String>,
}

impl RedshiftOptions {
    fn check(&self, p: &mut Problems, f: &str) {
        match (&self.cluster_identifier, &self.workgroup_name) {
            (None, None) => p.add(
                format!("{f}.cluster_identifier"),
                "give cluster_identifier (a provisioned cluster) or workgroup_name (Redshift Serverless)",
            ),
            (Some(_), Some(_)) => p.add(
                format!("{f}.workgroup_name"),
                "give either cluster_identifier or workgroup_name, not both",
            ),
            (Some(c), None) => check_not_blank(p, &format!("{f}.cluster_identifier"), c),
            (None, Some(w)) => check_not_blank(p, &format!("{f}.workgroup_name"), w),
        }
        check_not_blank(p, &format!("{f}.database"), &self.database);
        check_not_blank(p, &format!("{f}.region"), &self.region);
        match (&self.db_user, &self.secret_arn) {
            (Some(_), Some(_)) => p.add(
                format!("{f}.db_user"),
                "give either db_user or secret_arn, not both (neither: the AWS identity logs in)",
            ),
            (Some(_), None) if self.workgroup_name.is_some() => p.add(
                format!("{f}.db_user"),
                "Redshift Serverless has no db_user logins: use secret_arn or the AWS identity",
            ),
            (Some(user), None) => check_not_blank(p, &format!("{f}.db_user"), user),
            (None, Some(arn)) => {
                if !(arn.starts_with("arn:") && arn.contains(":secretsmanager:")) {
                    p.add(
                        format!("{f}.secret_arn"),
                        format!("'{arn}' is not a Secrets Manager ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>)"),
                    );
                }
            }
            (None, None) => {}
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) => p.add(
                format!("{f}.secret_access_key"),
                "access_key_id needs its secret_access_key",
            ),
            (None, Some(_)) => p.add(
                format!("{f}.access_key_id"),
                "secret_access_key needs its access_key_id",
            ),
            (Some(id), Some(secret)) => {
                check_not_blank(p, &format!("{f}.access_key_id"), id);
                check_not_blank(p, &format!("{f}.secret_access_key"), secret.expose());
                if self.profile.is_some() {
                    p.add(
                        format!("{f}.profile"),
                        "give either static keys or a profile, not both",
                    );
                }
            }
            (None, None) => {
                if self.session_token.is_some() {
                    p.add(
                        format!("{f}.session_token"),
                        "a session token is only used with access_key_id and secret_access_key",
                    );
                }
            }
        }
        if let Some(url) = &self.endpoint_url {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if rest.is_none_or(|r| r.trim_matches('/').is_empty()) || url.contains([' ', '?', '#'])
            {
                p.add(
                    format!("{f}.endpoint_url"),
                    format!("'{url}' is not an http(s) URL"),
                );
            }
        }
    }
}

/// The warehouse and its connection options. Snowflake, BigQuery, Databricks and Redshift
/// come later as further variants.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Postgres(PostgresOptions),
    Sqlite(SqliteOptions),
    /// Boxed: its options are large and would bloat every `SourceKind`.
    Redshift(Box<RedshiftOptions>),
}

impl SourceKind {
    /// The name used in `$warehouse_type` and in messages.
    pub fn warehouse_type(&self) -> &'static str {
        match self {
            SourceKind::Postgres(_) => "postgres",
            SourceKind::Sqlite(_) => "sqlite",
            SourceKind::Redshift(_) => "redshift",
        }
    }
}

/// A warehouse connection. In TOML: `[source.kind.postgres]` with the options below it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub id: String,
    pub tenant: String,
    pub kind: SourceKind,
}

impl SourceSpec {
    pub fn validate(&self) -> Result<(), SpecErrors> {
        let mut p = Problems::default();
        check_id(&mut p, "source.id", &self.id);
        check_id(&mut p, "source.tenant", &self.tenant);
        match &self.kind {
            SourceKind::Postgres(pg) => {
                let f = "source.kind.postgres";
                check_not_blank(&mut p, &format!("{f}.host"), &pg.host);
                check_not_blank(&mut p, &format!("{f}.database"), &pg.database);
                check_not_blank(&mut p, &format!("{f}.user"), &pg.user);
                if pg.port == 0 {
                    p.add(format!("{f}.port"), "must be between 1 and 65535");
                }
                match &pg.ca_cert {
                    Some(_) if matches!(pg.ssl_mode, SslMode::Disable | SslMode::Require) => p.add(
                        format!("{f}.ca_cert"),
                        "a CA certificate is only used with ssl_mode verify-ca or verify-full",
                    ),
                    Some(CertSource::Pem(pem)) if !pem.contains("-----BEGIN CERTIFICATE-----") => p
                        .add(
                            format!("{f}.ca_cert"),
                            "inline PEM must hold a '-----BEGIN CERTIFICATE-----' block",
                        ),
                    Some(CertSource::Path(path)) if path.trim().is_empty() => p.add(
                        format!("{f}.ca_cert"),
                        "must be a PEM file path or inline PEM",
                    ),
                    _ => {}
                }
                if let Some(ssh) = &pg.ssh_tunnel {
                    let f = format!("{f}.ssh_tunnel");
                    check_not_blank(&mut p, &format!("{f}.host"), &ssh.host);
                    check_not_blank(&mut p, &format!("{f}.user"), &ssh.user);
                    if ssh.port == 0 {
                        p.add(format!("{f}.port"), "must be between 1 and 65535");
                    }
                    let key = ssh.private_key.expose();
                    if !(key.contains("-----BEGIN") && key.contains("PRIVATE KEY-----")) {
                        p.add(
                            format!("{f}.private_key"),
                            "must be a private key in PEM form ('-----BEGIN ... PRIVATE KEY-----')",
                        );
                    } else if key.contains("ENCRYPTED") {
                        p.add(
                            format!("{f}.private_key"),
                            "the key is encrypted; give an unencrypted key (passphrases are not supported)",
                        );
                    }
                    if let Some(host_key) = &ssh.host_key {
                        if !looks_like_host_key(host_key) {
                            p.add(
                                format!("{f}.host_key"),
                                "must be a SHA-256 fingerprint ('SHA256:...') or a public key ('ssh-ed25519 AAAA...')",
                            );
                        }
                    }
                }
            }
            SourceKind::Sqlite(sqlite) => {
                check_not_blank(&mut p, "source.kind.sqlite.path", &sqlite.path)
            }
            SourceKind::Redshift(redshift) => redshift.check(&mut p, "source.kind.redshift"),
        }
        p.finish(())
    }
}

// ---------------------------------------------------------------------------------------------
// Syncs

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableType {
    Events,
    UserProfiles,
    GroupProfiles,
    LookupTable,
    ProfileHistory,
}

impl TableType {
    pub fn name(self) -> &'static str {
        match self {
            TableType::Events => "events",
            TableType::UserProfiles => "user_profiles",
            TableType::GroupProfiles => "group_profiles",
            TableType::LookupTable => "lookup_table",
            TableType::ProfileHistory => "profile_history",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Inserts, updates and deletes since the last run.
    Mirror,
    /// Rows whose insert-time column is above the last run's maximum.
    Append,
    /// The whole table every run (not for events).
    Full,
    /// The whole table once; no cursor is kept.
    #[serde(alias = "one-time")]
    OneTime,
}

/// How a numeric time column counts. Timestamp, date and text columns ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    /// Numbers below 1e11 are seconds, below 1e14 milliseconds, else microseconds (the first
    /// threshold is Mixpanel's own rule).
    #[default]
    Auto,
    Seconds,
    Milliseconds,
    Microseconds,
}

/// The mapping as written: every table type's options side by side. See [`Mapping`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSpec {
    /// Events: a static event name (or the name of profile-history events).
    pub event_name: Option<String>,
    /// Events: the column holding each row's event name.
    pub event_name_column: Option<String>,
    /// Events: event time; profile history: the row's start time (`start_time_column` is
    /// accepted as its name there).
    #[serde(alias = "start_time_column")]
    pub time_column: Option<String>,
    #[serde(default)]
    pub time_unit: TimeUnit,
    pub distinct_id_column: Option<String>,
    pub user_id_column: Option<String>,
    pub device_id_column: Option<String>,
    /// A JSON column whose keys become properties.
    pub properties_column: Option<String>,
    /// Columns identifying a row: events derive `$insert_id` from them; Mirror diffs on them.
    #[serde(default)]
    pub key_columns: Vec<String>,
    /// Column name → property name.
    #[serde(default)]
    pub renames: BTreeMap<String, String>,
    /// Columns that are not sent as properties.
    #[serde(default)]
    pub excludes: Vec<String>,
    /// Group profiles: the group key configured in the project (e.g. `company_id`).
    pub group_key: Option<String>,
    pub group_id_column: Option<String>,
    /// Lookup tables: the table's id in Mixpanel.
    pub lookup_table_id: Option<String>,
    /// Lookup tables: the key column (sent as the CSV's first column).
    pub key_column: Option<String>,
}

/// An event's name: the same for every row, or read from a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventName {
    Static(String),
    Column(String),
}

/// Where an event's time comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeSpec {
    pub column: String,
    pub unit: TimeUnit,
}

/// What a table type needs, resolved from the flat [`MappingSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Events {
        event_name: EventName,
        time: TimeSpec,
        distinct_id_column: Option<String>,
        user_id_column: Option<String>,
        device_id_column: Option<String>,
    },
    UserProfiles {
        distinct_id_column: String,
    },
    GroupProfiles {
        group_key: String,
        group_id_column: String,
    },
    LookupTable {
        lookup_table_id: String,
        key_column: String,
    },
    /// One history event per row at its start time (`time`), named `event_name`, for a user
    /// or a group; a row's end is the next row's start for the same id.
    ProfileHistory {
        event_name: String,
        profile: HistoryOf,
        time: TimeSpec,
    },
}

/// Whose history a profile-history table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryOf {
    User {
        distinct_id_column: String,
    },
    Group {
        group_key: String,
        group_id_column: String,
    },
}

impl Target {
    /// The columns that identify one row of the target when the mapping names no key columns:
    /// a profile's id, a history row's id and start time, a lookup table's key; none for
    /// events (Mirror then identifies rows by all their columns).
    pub fn natural_key(&self) -> Vec<String> {
        match self {
            Target::Events { .. } => Vec::new(),
            Target::UserProfiles { distinct_id_column } => vec![distinct_id_column.clone()],
            Target::GroupProfiles {
                group_id_column, ..
            } => vec![group_id_column.clone()],
            Target::LookupTable { key_column, .. } => vec![key_column.clone()],
            Target::ProfileHistory { profile, time, .. } => {
                let id = match profile {
                    HistoryOf::User { distinct_id_column } => distinct_id_column,
                    HistoryOf::Group {
                        group_id_column, ..
                    } => group_id_column,
                };
                vec![id.clone(), time.column.clone()]
            }
        }
    }
}

/// A validated mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub target: Target,
    pub properties_column: Option<String>,
    pub key_columns: Vec<String>,
    pub renames: BTreeMap<String, String>,
    pub excludes: Vec<String>,
}

/// Property names Ferry sets itself; renames may not produce them.
pub const RESERVED_PROPERTIES: &[&str] = &[
    "time",
    "distinct_id",
    "$insert_id",
    "$user_id",
    "$device_id",
    "$import",
    "$source",
    "$warehouse_type",
    "$warehouse_import_id",
    "$warehouse_import_job_id",
    "$warehouse_import_run_id",
    "$warehouse_table",
    "$token",
    "$distinct_id",
    "$group_key",
    "$group_id",
];

/// Column names Ferry uses in its own warehouse objects; a synced table may not have them.
/// (`_mp_key_hash` and `_mp_change_seq` sit beside the source's columns in Mirror's snapshots
/// and change reads too.)
pub const RESERVED_COLUMNS: &[&str] = &[
    "_mp_row_hash",
    "_mp_change_type",
    "_mp_key_hash",
    "_mp_change_seq",
];

/// One table (or SQL query) synced to one tenant's project.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSpec {
    pub id: String,
    pub tenant: String,
    pub source: String,
    /// A table or view name (optionally schema-qualified: `schema.table`).
    #[serde(default)]
    pub table: Option<String>,
    /// A SELECT to read instead of a table.
    #[serde(default)]
    pub sql: Option<String>,
    pub table_type: TableType,
    #[serde(default)]
    pub mapping: MappingSpec,
    pub mode: SyncMode,
    /// When to run: `hourly`, `daily [at HH:MM]`, `weekly [on DAY] [at HH:MM]`, `every N[s|m|h|d]`,
    /// a cron expression, or `manual`; None: on demand only. See [`crate::schedule`].
    #[serde(default)]
    pub schedule: Option<String>,
    /// The IANA time zone calendar schedules are read in (default UTC), e.g. `Europe/Berlin`.
    #[serde(default)]
    pub schedule_timezone: Option<String>,
    /// Called when one of this sync's runs fails or its volume deviates, in addition to the
    /// tenant's webhook.
    #[serde(default)]
    pub webhook: Option<WebhookSpec>,
    /// Validate every record before sending and log invalid rows as per-row errors; off, a
    /// malformed JSON properties column is sent as a plain string property instead.
    #[serde(default = "default_true")]
    pub strict: bool,
    /// Append: the insert-time column whose maximum is the cursor.
    #[serde(default)]
    pub cursor_column: Option<String>,
    /// Mirror: go on when the source's columns changed in a way other than columns added at
    /// the end (a dropped, renamed, retyped or moved column, or other key columns). Such a run
    /// re-sends every row whose checksum changed. Off (the default), the run fails before
    /// sending anything and says what changed.
    #[serde(default)]
    pub accept_schema_change: bool,
}

fn default_true() -> bool {
    true
}

/// Something valid but worth telling the operator when a sync is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecWarning {
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A sync that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSync {
    pub mapping: Mapping,
    pub warnings: Vec<SpecWarning>,
}

impl SyncSpec {
    /// The name used in `$warehouse_table` and as the default profile-history event name.
    pub fn table_label(&self) -> &str {
        self.table.as_deref().unwrap_or("sql")
    }

    /// The sync's schedule (manual when it has none).
    pub fn parsed_schedule(&self) -> Result<Schedule, ScheduleError> {
        Schedule::from_spec(self.schedule.as_deref(), self.schedule_timezone.as_deref())
    }

    /// Checks the spec and resolves its mapping. Column existence and types are checked later,
    /// against the source's columns, by [`crate::mapping::RowMapper::new`].
    pub fn validate(&self) -> Result<ValidSync, SpecErrors> {
        let mut p = Problems::default();
        check_id(&mut p, "sync.id", &self.id);
        check_id(&mut p, "sync.tenant", &self.tenant);
        check_id(&mut p, "sync.source", &self.source);
        match (&self.table, &self.sql) {
            (Some(_), Some(_)) => p.add("sync.table", "give either table or sql, not both"),
            (None, None) => p.add("sync.table", "give the table (or view) to read, or sql"),
            (Some(t), None) => check_not_blank(&mut p, "sync.table", t),
            (None, Some(q)) => check_not_blank(&mut p, "sync.sql", q),
        }
        if let Err(e) = self.parsed_schedule() {
            let field = match e {
                ScheduleError::Expression(_) => "sync.schedule",
                ScheduleError::Timezone(_) => "sync.schedule_timezone",
            };
            p.add(field, e.to_string());
        }
        if let Some(webhook) = &self.webhook {
            webhook.check(&mut p, "sync.webhook");
        }
        self.check_mode(&mut p);
        let mut mapping =
            resolve_mapping(&self.mapping, self.table_type, self.table_label(), &mut p);
        if let Some(m) = mapping.as_mut() {
            if self.mode == SyncMode::Mirror && m.key_columns.is_empty() {
                m.key_columns = m.target.natural_key();
            }
        }
        let warnings = self.warnings(mapping.as_ref());
        match mapping {
            Some(mapping) => p.finish(ValidSync { mapping, warnings }),
            None => Err(SpecErrors(p.0)),
        }
    }

    fn check_mode(&self, p: &mut Problems) {
        let tt = self.table_type;
        match (self.mode, tt) {
            (SyncMode::Full, TableType::Events) => p.add(
                "sync.mode",
                "full is not available for events: Mixpanel has no per-event delete, so re-sending the whole table every run would only duplicate work; use append (new rows) or mirror (changes)",
            ),
            (mode, TableType::ProfileHistory) if mode != SyncMode::Mirror => p.add(
                "sync.mode",
                "profile history is only supported with mirror",
            ),
            (SyncMode::Append, TableType::LookupTable) => p.add(
                "sync.mode",
                "a lookup table is replaced whole: use full (every run), mirror (when anything changed) or one_time",
            ),
            _ => {}
        }
        match (self.mode, &self.cursor_column) {
            (SyncMode::Append, None) => p.add(
                "sync.cursor_column",
                "append needs the insert-time column whose maximum is remembered between runs",
            ),
            (SyncMode::Append, Some(c)) => check_not_blank(p, "sync.cursor_column", c),
            (_, Some(_)) => p.add("sync.cursor_column", "only used by append mode"),
            (_, None) => {}
        }
        if self.accept_schema_change && self.mode != SyncMode::Mirror {
            p.add("sync.accept_schema_change", "only used by mirror mode");
        }
    }

    fn warnings(&self, mapping: Option<&Mapping>) -> Vec<SpecWarning> {
        let mut out = Vec::new();
        let mut warn = |field: &str, message: &str| {
            out.push(SpecWarning {
                field: field.into(),
                message: message.into(),
            })
        };
        let keyless = self.mapping.key_columns.is_empty();
        // Mirror identifies a profile by its id (and a history row by id and start time) when
        // no key columns are given: only tables without a natural key collapse rows.
        let mirror_keyless = mapping.is_none_or(|m| m.key_columns.is_empty());
        if self.mode == SyncMode::Mirror && mirror_keyless {
            warn(
                "sync.mapping.key_columns",
                "no key columns: rows identical in every column collapse to one, and an updated row is seen as a delete plus an insert",
            );
        }
        if self.table_type == TableType::Events && keyless {
            warn(
                "sync.mapping.key_columns",
                "no key columns: $insert_id is derived from the whole row, so an updated row arrives as a new event",
            );
        }
        if self.table_type == TableType::Events && self.mode == SyncMode::Mirror {
            warn(
                "sync.mode",
                "deleted rows cannot be removed from Mixpanel (its API has no per-event delete): they are counted as not applied and listed in the run log (the bundled receiver applies them)",
            );
        }
        out
    }
}

/// Resolves the flat mapping for `table_type`; `None` when a required part is missing
/// (the reasons are in `p`).
fn resolve_mapping(
    m: &MappingSpec,
    table_type: TableType,
    table_label: &str,
    p: &mut Problems,
) -> Option<Mapping> {
    let f = |name: &str| format!("sync.mapping.{name}");
    let tt = table_type.name();
    // Options that belong to other table types are refused, not ignored.
    let mut not_for = |name: &str, set: bool| {
        if set {
            p.add(f(name), format!("not used by table type {tt}"));
        }
    };
    let is_events = table_type == TableType::Events;
    let is_history = table_type == TableType::ProfileHistory;
    let uses_distinct =
        matches!(table_type, TableType::Events | TableType::UserProfiles) || is_history;
    not_for(
        "event_name",
        m.event_name.is_some() && !(is_events || is_history),
    );
    not_for(
        "event_name_column",
        m.event_name_column.is_some() && !is_events,
    );
    not_for(
        "time_column",
        m.time_column.is_some() && !(is_events || is_history),
    );
    not_for(
        "time_unit",
        m.time_unit != TimeUnit::Auto && !(is_events || is_history),
    );
    not_for(
        "distinct_id_column",
        m.distinct_id_column.is_some() && !uses_distinct,
    );
    not_for("user_id_column", m.user_id_column.is_some() && !is_events);
    not_for(
        "device_id_column",
        m.device_id_column.is_some() && !is_events,
    );
    let uses_group = table_type == TableType::GroupProfiles || is_history;
    not_for("group_key", m.group_key.is_some() && !uses_group);
    not_for(
        "group_id_column",
        m.group_id_column.is_some() && !uses_group,
    );
    not_for(
        "lookup_table_id",
        m.lookup_table_id.is_some() && table_type != TableType::LookupTable,
    );
    not_for(
        "key_column",
        m.key_column.is_some() && table_type != TableType::LookupTable,
    );
    not_for(
        "properties_column",
        m.properties_column.is_some()
            && matches!(
                table_type,
                TableType::LookupTable | TableType::ProfileHistory
            ),
    );

    let required =
        |p: &mut Problems, name: &str, value: &Option<String>, why: &str| -> Option<String> {
            match value {
                Some(v) if !v.trim().is_empty() => Some(v.clone()),
                Some(_) => {
                    p.add(f(name), "must not be empty");
                    None
                }
                None => {
                    p.add(f(name), format!("required for {tt}: {why}"));
                    None
                }
            }
        };
    let time = |column: Option<String>| {
        column.map(|column| TimeSpec {
            column,
            unit: m.time_unit,
        })
    };
    let target = match table_type {
        TableType::Events => {
            let event_name = match (&m.event_name, &m.event_name_column) {
                (Some(_), Some(_)) => {
                    p.add(
                        f("event_name"),
                        "give either event_name or event_name_column, not both",
                    );
                    None
                }
                (Some(name), None) if name.trim().is_empty() => {
                    p.add(f("event_name"), "must not be empty");
                    None
                }
                (Some(name), None) => Some(EventName::Static(name.clone())),
                (None, Some(col)) => Some(EventName::Column(col.clone())),
                (None, None) => {
                    p.add(
                        f("event_name"),
                        "required for events: a static event_name or an event_name_column",
                    );
                    None
                }
            };
            let time = time(required(
                p,
                "time_column",
                &m.time_column,
                "the column holding each event's time",
            ));
            if m.distinct_id_column.is_none()
                && m.user_id_column.is_none()
                && m.device_id_column.is_none()
            {
                p.add(
                    f("distinct_id_column"),
                    "required for events: distinct_id_column, or user_id_column / device_id_column",
                );
            }
            Target::Events {
                event_name: event_name?,
                time: time?,
                distinct_id_column: m.distinct_id_column.clone(),
                user_id_column: m.user_id_column.clone(),
                device_id_column: m.device_id_column.clone(),
            }
        }
        TableType::UserProfiles => Target::UserProfiles {
            distinct_id_column: required(
                p,
                "distinct_id_column",
                &m.distinct_id_column,
                "the column holding each profile's distinct id",
            )?,
        },
        TableType::GroupProfiles => {
            let group_key = required(
                p,
                "group_key",
                &m.group_key,
                "the group key configured in the project",
            );
            let group_id_column = required(
                p,
                "group_id_column",
                &m.group_id_column,
                "the column holding each group's id",
            );
            Target::GroupProfiles {
                group_key: group_key?,
                group_id_column: group_id_column?,
            }
        }
        TableType::LookupTable => {
            let id = required(
                p,
                "lookup_table_id",
                &m.lookup_table_id,
                "the lookup table's id in the project",
            );
            let key = required(
                p,
                "key_column",
                &m.key_column,
                "the column sent first, as the table's key",
            );
            Target::LookupTable {
                lookup_table_id: id?,
                key_column: key?,
            }
        }
        TableType::ProfileHistory => {
            // A group's history names its group key and id column; a user's, its distinct id.
            let profile = if m.group_key.is_some() || m.group_id_column.is_some() {
                if m.distinct_id_column.is_some() {
                    p.add(
                        f("distinct_id_column"),
                        "a group's history is identified by group_key and group_id_column, not a distinct id",
                    );
                }
                let group_key = required(
                    p,
                    "group_key",
                    &m.group_key,
                    "the group key configured in the project (for a group's history)",
                );
                let group_id_column = required(
                    p,
                    "group_id_column",
                    &m.group_id_column,
                    "the column holding each group's id",
                );
                match (group_key, group_id_column) {
                    (Some(group_key), Some(group_id_column)) => Some(HistoryOf::Group {
                        group_key,
                        group_id_column,
                    }),
                    _ => None,
                }
            } else {
                required(
                    p,
                    "distinct_id_column",
                    &m.distinct_id_column,
                    "the column holding each profile's distinct id (or group_key and group_id_column for a group's history)",
                )
                .map(|distinct_id_column| HistoryOf::User { distinct_id_column })
            };
            let time = time(required(
                p,
                "time_column",
                &m.time_column,
                "the column holding each row's start time",
            ));
            Target::ProfileHistory {
                event_name: m
                    .event_name
                    .clone()
                    .unwrap_or_else(|| table_label.to_owned()),
                profile: profile?,
                time: time?,
            }
        }
    };

    for (column, property) in &m.renames {
        let field = f(&format!("renames.{column}"));
        if property.trim().is_empty() {
            p.add(field, "the new property name must not be empty");
        } else if RESERVED_PROPERTIES.contains(&property.as_str()) {
            p.add(
                field,
                format!("'{property}' is set by Ferry itself; map the column to that role instead"),
            );
        } else if m.excludes.contains(column) {
            p.add(field, format!("column '{column}' is also excluded"));
        }
    }
    let mut targets: Vec<&String> = m.renames.values().collect();
    targets.sort();
    if let Some(w) = targets.windows(2).find(|w| w[0] == w[1]) {
        p.add(
            f("renames"),
            format!("two columns are renamed to '{}'", w[0]),
        );
    }
    if m.key_columns.iter().any(|k| k.trim().is_empty()) {
        p.add(f("key_columns"), "column names must not be empty");
    }

    Some(Mapping {
        target,
        properties_column: m.properties_column.clone(),
        key_columns: m.key_columns.clone(),
        renames: m.renames.clone(),
        excludes: m.excludes.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(toml_text: &str) -> SyncSpec {
        toml::from_str(toml_text).unwrap()
    }

    const EVENTS: &str = r#"
        id = "orders"
        tenant = "acme"
        source = "pg"
        table = "public.orders"
        table_type = "events"
        mode = "append"
        cursor_column = "inserted_at"
        schedule = "*/15 * * * *"
        [mapping]
        event_name = "Order Placed"
        time_column = "created_at"
        distinct_id_column = "user_id"
        key_columns = ["order_id"]
        renames = { amount_cents = "Amount (cents)" }
        excludes = ["internal_note"]
    "#;

    #[test]
    fn a_complete_events_sync_resolves() {
        let spec = sync(EVENTS);
        assert!(spec.strict, "strict is the default");
        let valid = spec.validate().unwrap();
        assert_eq!(
            valid.mapping.target,
            Target::Events {
                event_name: EventName::Static("Order Placed".into()),
                time: TimeSpec {
                    column: "created_at".into(),
                    unit: TimeUnit::Auto
                },
                distinct_id_column: Some("user_id".into()),
                user_id_column: None,
                device_id_column: None,
            }
        );
        assert_eq!(valid.mapping.renames["amount_cents"], "Amount (cents)");
        assert!(valid.warnings.is_empty(), "{:?}", valid.warnings);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<SyncSpec>(
            &EVENTS
                .replace("strict", "x")
                .replace("[mapping]", "colour = 1\n[mapping]"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let err = toml::from_str::<SyncSpec>(&format!("{EVENTS}\ntime_colum = \"x\"")).unwrap_err();
        assert!(err.to_string().contains("time_colum"), "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let mut spec = sync(EVENTS);
        spec.mapping.time_column = None;
        spec.mapping.group_key = Some("company".into());
        spec.cursor_column = None;
        let err = spec.validate().unwrap_err();
        assert!(err.mentions("sync.mapping.time_column"), "{err}");
        assert!(err.mentions("sync.mapping.group_key"), "{err}");
        assert!(err.mentions("sync.cursor_column"), "{err}");
        assert_eq!(err.0.len(), 3, "{err}");
        assert!(err
            .to_string()
            .contains("sync.mapping.group_key: not used by table type events"));

        let mut spec = sync(EVENTS);
        spec.id = "Bad Id".into();
        spec.sql = Some("select 1".into());
        let err = spec.validate().unwrap_err();
        assert!(
            err.mentions("sync.id") && err.mentions("sync.table"),
            "{err}"
        );
    }

    #[test]
    fn mode_rules() {
        let mut spec = sync(EVENTS);
        spec.mode = SyncMode::Full;
        spec.cursor_column = None;
        let err = spec.validate().unwrap_err();
        assert!(err.mentions("sync.mode"));
        assert!(err.to_string().contains("full is not available for events"));

        spec.mode = SyncMode::Mirror;
        let ok = spec.validate().unwrap();
        assert!(ok
            .warnings
            .iter()
            .any(|w| w.message.contains("no per-event delete")));

        let mut history = sync(EVENTS);
        history.table_type = TableType::ProfileHistory;
        history.mapping.event_name = None;
        history.mapping.key_columns.clear();
        let err = history.validate().unwrap_err();
        assert!(err.mentions("sync.mode"), "{err}");
        history.mode = SyncMode::Mirror;
        history.cursor_column = None;
        let ok = history.validate().unwrap();
        assert!(matches!(
            ok.mapping.target,
            Target::ProfileHistory { ref event_name, .. } if event_name == "public.orders"
        ));
        // Without key columns a history row is identified by its id and start time, so rows
        // do not collapse.
        assert_eq!(ok.mapping.key_columns, vec!["user_id", "created_at"]);
        assert!(!ok.warnings.iter().any(|w| w.message.contains("collapse")));
    }

    #[test]
    fn mirror_keys_warnings_and_schema_changes() {
        // Events without key columns: Mirror identifies rows by every column, and says so.
        let mut events = sync(EVENTS);
        events.mode = SyncMode::Mirror;
        events.cursor_column = None;
        events.mapping.key_columns.clear();
        let ok = events.validate().unwrap();
        assert!(ok.mapping.key_columns.is_empty());
        assert!(
            ok.warnings
                .iter()
                .any(|w| w.field == "sync.mapping.key_columns" && w.message.contains("collapse")),
            "{:?}",
            ok.warnings
        );
        // Profiles default to their id; lookup tables to their key; Full keeps none.
        let base = |tt: &str, mode: &str, mapping: &str| {
            sync(&format!(
                "id='s'\ntenant='t'\nsource='src'\ntable='x'\ntable_type='{tt}'\nmode='{mode}'\n[mapping]\n{mapping}"
            ))
        };
        let users = base("user_profiles", "mirror", "distinct_id_column='uid'")
            .validate()
            .unwrap();
        assert_eq!(users.mapping.key_columns, vec!["uid"]);
        assert!(users.warnings.is_empty(), "{:?}", users.warnings);
        let full = base("user_profiles", "full", "distinct_id_column='uid'")
            .validate()
            .unwrap();
        assert!(full.mapping.key_columns.is_empty());
        let lookup = base(
            "lookup_table",
            "mirror",
            "lookup_table_id='7'\nkey_column='k'",
        )
        .validate()
        .unwrap();
        assert_eq!(lookup.mapping.key_columns, vec!["k"]);
        let err = base(
            "lookup_table",
            "append",
            "lookup_table_id='7'\nkey_column='k'",
        )
        .validate()
        .unwrap_err();
        assert!(err.mentions("sync.mode"), "{err}");

        // accept_schema_change belongs to mirror.
        let mut spec = sync(EVENTS);
        spec.accept_schema_change = true;
        assert!(spec
            .validate()
            .unwrap_err()
            .mentions("sync.accept_schema_change"));
        let parsed = sync(&EVENTS.replace(
            "mode = \"append\"\n        cursor_column = \"inserted_at\"",
            "mode = \"mirror\"\n        accept_schema_change = true",
        ));
        assert!(parsed.accept_schema_change);
        parsed.validate().unwrap();
    }

    #[test]
    fn group_profile_history() {
        let spec = sync(
            "id='h'\ntenant='t'\nsource='src'\ntable='plan_history'\ntable_type='profile_history'\nmode='mirror'\n[mapping]\ngroup_key='company_id'\ngroup_id_column='company'\nstart_time_column='valid_from'",
        );
        let ok = spec.validate().unwrap();
        assert_eq!(
            ok.mapping.target,
            Target::ProfileHistory {
                event_name: "plan_history".into(),
                profile: HistoryOf::Group {
                    group_key: "company_id".into(),
                    group_id_column: "company".into()
                },
                time: TimeSpec {
                    column: "valid_from".into(),
                    unit: TimeUnit::Auto
                },
            }
        );
        assert_eq!(ok.mapping.key_columns, vec!["company", "valid_from"]);
        // A group's history takes no distinct id, and needs both group options.
        let mut both = spec.clone();
        both.mapping.distinct_id_column = Some("u".into());
        assert!(both
            .validate()
            .unwrap_err()
            .mentions("sync.mapping.distinct_id_column"));
        let mut half = spec.clone();
        half.mapping.group_id_column = None;
        assert!(half
            .validate()
            .unwrap_err()
            .mentions("sync.mapping.group_id_column"));
        // group options stay refused where they mean nothing.
        let mut events = sync(EVENTS);
        events.mapping.group_key = Some("company_id".into());
        assert!(events
            .validate()
            .unwrap_err()
            .mentions("sync.mapping.group_key"));
    }

    #[test]
    fn schedules_and_webhooks_are_checked_by_field() {
        let ok = sync(&format!(
            "{}\n[webhook]\nurl = \"https://hooks.example.com/ferry\"\nsecret = \"k\"\nvolume_deviation_percent = 50",
            EVENTS.replace("[mapping]", "schedule_timezone = \"Europe/Berlin\"\n[mapping]")
        ));
        ok.validate().unwrap();
        assert_eq!(
            ok.parsed_schedule().unwrap().timezone(),
            Some(chrono_tz::Europe::Berlin)
        );
        let hook = ok.webhook.as_ref().unwrap();
        assert!(hook.on_failure);
        assert_eq!((hook.volume_window, hook.volume_min_runs), (5, 3));

        let mut bad = ok.clone();
        bad.schedule = Some("every fortnight".into());
        bad.schedule_timezone = Some("Europe/Berln".into());
        let err = bad.validate().unwrap_err();
        assert!(err.mentions("sync.schedule"), "{err}");
        bad.schedule = Some("daily at 06:00".into());
        let err = bad.validate().unwrap_err();
        assert!(
            err.mentions("sync.schedule_timezone") && !err.mentions("sync.schedule"),
            "{err}"
        );
        assert!(err.to_string().contains("Europe/Berln"), "{err}");

        let mut bad = ok.clone();
        let hook = bad.webhook.as_mut().unwrap();
        hook.url = "hooks.example.com".into();
        hook.volume_deviation_percent = Some(0);
        hook.volume_min_runs = 9;
        let err = bad.validate().unwrap_err();
        for field in [
            "sync.webhook.url",
            "sync.webhook.volume_deviation_percent",
            "sync.webhook.volume_min_runs",
        ] {
            assert!(err.mentions(field), "{field}: {err}");
        }
        assert!(
            toml::from_str::<WebhookSpec>("url = 'http://x'\nretries = 3").is_err(),
            "unknown keys are refused"
        );
        let silent: WebhookSpec = toml::from_str("url = 'http://x'\non_failure = false").unwrap();
        let mut p = Problems::default();
        silent.check(&mut p, "tenant.webhook");
        assert_eq!(p.0.len(), 1);
        assert_eq!(p.0[0].field, "tenant.webhook");
        assert!(format!("{ok:?}").contains("secret: Some(***)"), "{ok:?}");
    }

    #[test]
    fn each_table_type_needs_its_own_options() {
        let base = |tt: &str, mapping: &str| {
            sync(&format!(
                "id='s'\ntenant='t'\nsource='src'\ntable='x'\ntable_type='{tt}'\nmode='full'\n[mapping]\n{mapping}"
            ))
        };
        let err = base("user_profiles", "").validate().unwrap_err();
        assert!(err.mentions("sync.mapping.distinct_id_column"));
        let ok = base("user_profiles", "distinct_id_column='id'")
            .validate()
            .unwrap();
        assert_eq!(
            ok.mapping.target,
            Target::UserProfiles {
                distinct_id_column: "id".into()
            }
        );
        let err = base("group_profiles", "group_id_column='gid'")
            .validate()
            .unwrap_err();
        assert!(err.mentions("sync.mapping.group_key"));
        let err = base("lookup_table", "lookup_table_id='7'\nproperties_column='p'")
            .validate()
            .unwrap_err();
        assert!(err.mentions("sync.mapping.key_column"));
        assert!(err.mentions("sync.mapping.properties_column"));
        let err = base("events", "event_name='e'\ntime_column='t'").validate();
        assert!(err.unwrap_err().mentions("sync.mode"));
    }

    #[test]
    fn renames_may_not_take_reserved_names_or_collide() {
        let mut spec = sync(EVENTS);
        spec.mapping.renames.insert("a".into(), "time".into());
        spec.mapping.renames.insert("b".into(), "x".into());
        spec.mapping.renames.insert("c".into(), "x".into());
        let err = spec.validate().unwrap_err();
        assert!(err.mentions("sync.mapping.renames.a"), "{err}");
        assert!(err.mentions("sync.mapping.renames"), "{err}");
    }

    #[test]
    fn tenants_and_secrets() {
        let tenant: TenantSpec = toml::from_str(
            r#"
            id = "acme"
            name = "Acme"
            project_id = 12345
            destination = { region = "eu" }
            auth = { service_account = { user = "sa.ferry", secret = "s3cr3t" } }
            "#,
        )
        .unwrap();
        tenant.validate().unwrap();
        assert_eq!(
            tenant.destination.endpoints().ingestion,
            "https://api-eu.mixpanel.com"
        );
        assert_eq!(
            tenant.destination.endpoints().export,
            "https://data-eu.mixpanel.com"
        );
        let printed = format!("{tenant:?}");
        assert!(
            !printed.contains("s3cr3t") && printed.contains("***"),
            "{printed}"
        );
        match &tenant.auth {
            Auth::ServiceAccount { secret, .. } => {
                assert_eq!(secret.expose(), "s3cr3t");
                assert_eq!(secret.to_string(), "***");
            }
            other => panic!("{other:?}"),
        }

        let mut bad = tenant.clone();
        bad.destination.base_url = Some("ftp://x".into());
        bad.project_id = 0;
        let err = bad.validate().unwrap_err();
        assert!(err.mentions("tenant.destination"), "{err}");
        assert!(err.mentions("tenant.project_id"), "{err}");
        bad.destination.region = None;
        let err = bad.validate().unwrap_err();
        assert!(err.mentions("tenant.destination.base_url"), "{err}");

        let local: TenantSpec = toml::from_str(
            "id='t'\nname='T'\nproject_id=1\ndestination={base_url='http://127.0.0.1:8080/'}\nauth={project_token='tok'}",
        )
        .unwrap();
        local.validate().unwrap();
        assert_eq!(
            local.destination.endpoints().ingestion,
            "http://127.0.0.1:8080"
        );
        assert_eq!(local.profile_token(), Some("tok"));
        assert_eq!(local.send_budget, None, "no budget unless given");
    }

    #[test]
    fn a_send_budget_is_a_positive_rate() {
        let base = "id='t'\nname='T'\nproject_id=1\ndestination={region='us'}\nauth={project_token='tok'}\n";
        let tenant: TenantSpec = toml::from_str(&format!("{base}send_budget = 5000")).unwrap();
        tenant.validate().unwrap();
        assert_eq!(tenant.send_budget, Some(5000));
        let zero: TenantSpec = toml::from_str(&format!("{base}send_budget = 0")).unwrap();
        let err = zero.validate().unwrap_err();
        assert!(err.mentions("tenant.send_budget"), "{err}");
        let negative = toml::from_str::<TenantSpec>(&format!("{base}send_budget = -5"));
        let err = negative.unwrap_err().to_string();
        assert!(err.contains("send_budget"), "{err}");
    }

    #[test]
    fn sources() {
        let pg: SourceSpec = toml::from_str(
            r#"
            id = "pg"
            tenant = "acme"
            [kind.postgres]
            host = "db.internal"
            database = "shop"
            user = "ferry"
            password = "hunter2"
            ssl_mode = "verify-ca"
            ca_cert = "/etc/ferry/ca.pem"
            [kind.postgres.ssh_tunnel]
            host = "bastion"
            user = "tunnel"
            private_key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----"
            "#,
        )
        .unwrap();
        pg.validate().unwrap();
        let SourceKind::Postgres(opts) = &pg.kind else {
            panic!("postgres expected")
        };
        assert_eq!(opts.port, 5432);
        assert_eq!(opts.ssh_tunnel.as_ref().unwrap().port, 22);
        assert_eq!(
            opts.ca_cert,
            Some(CertSource::Path("/etc/ferry/ca.pem".into()))
        );
        assert!(!format!("{pg:?}").contains("hunter2"));
        assert_eq!(pg.kind.warehouse_type(), "postgres");

        let mut bad = opts.clone();
        bad.ssl_mode = SslMode::Disable;
        bad.host = " ".into();
        if let Some(ssh) = bad.ssh_tunnel.as_mut() {
            ssh.private_key =
                Secret::new("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n");
        }
        let bad = SourceSpec {
            kind: SourceKind::Postgres(bad),
            ..pg.clone()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.mentions("source.kind.postgres.ca_cert"), "{err}");
        assert!(err.mentions("source.kind.postgres.host"), "{err}");
        assert!(
            err.mentions("source.kind.postgres.ssh_tunnel.private_key"),
            "{err}"
        );

        // The bastion's host key: a fingerprint or a public key; anything else names the field.
        assert_eq!(opts.ssh_tunnel.as_ref().unwrap().host_key, None);
        for good in [
            "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@host",
            "bastion,10.0.0.1 ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY=",
        ] {
            let mut ok = opts.clone();
            ok.ssh_tunnel.as_mut().unwrap().host_key = Some(good.into());
            let spec = SourceSpec {
                kind: SourceKind::Postgres(ok),
                ..pg.clone()
            };
            spec.validate().unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad_key in ["", "SHA256:short", "MD5:aa:bb", "AAAAC3NzaC1lZDI1NTE5"] {
            let mut bad = opts.clone();
            bad.ssh_tunnel.as_mut().unwrap().host_key = Some(bad_key.into());
            let spec = SourceSpec {
                kind: SourceKind::Postgres(bad),
                ..pg.clone()
            };
            let err = spec.validate().unwrap_err();
            assert!(
                err.mentions("source.kind.postgres.ssh_tunnel.host_key"),
                "{bad_key}: {err}"
            );
        }

        let err = toml::from_str::<SourceSpec>("id='s'\ntenant='t'\n[kind.oracle]\npath='x'")
            .unwrap_err();
        assert!(err.to_string().contains("oracle"), "{err}");
        let lite: SourceSpec =
            toml::from_str("id='s'\ntenant='t'\n[kind.sqlite]\npath='data.db'").unwrap();
        lite.validate().unwrap();
    }

    #[test]
    fn redshift_sources() {
        let rs: SourceSpec = toml::from_str(
            r#"
            id = "rs"
            tenant = "acme"
            [kind.redshift]
            workgroup_name = "analytics"
            database = "dev"
            secret_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ferry-AbCdEf"
            region = "us-east-1"
            access_key_id = "AKIDEXAMPLE"
            secret_access_key = "wJalrXUtnFEMI"
            "#,
        )
        .unwrap();
        rs.validate().unwrap();
        assert_eq!(rs.kind.warehouse_type(), "redshift");
        assert!(!format!("{rs:?}").contains("wJalrXUtnFEMI"));
        let SourceKind::Redshift(opts) = &rs.kind else {
            panic!("redshift expected")
        };
        let check = |change: &dyn Fn(&mut RedshiftOptions), field: &str| {
            let mut o = (**opts).clone();
            change(&mut o);
            let spec = SourceSpec {
                kind: SourceKind::Redshift(Box::new(o)),
                ..rs.clone()
            };
            let err = spec.validate().unwrap_err();
            assert!(
                err.mentions(&format!("source.kind.redshift.{field}")),
                "{field}: {err}"
            );
        };
        check(
            &|o| o.cluster_identifier = Some("c1".into()),
            "workgroup_name",
        );
        check(&|o| o.workgroup_name = None, "cluster_identifier");
        check(&|o| o.db_user = Some("ferry".into()), "db_user");
        check(&|o| o.secret_arn = Some("my-secret".into()), "secret_arn");
        check(&|o| o.secret_access_key = None, "secret_access_key");
        check(&|o| o.profile = Some("prod".into()), "profile");
        check(&|o| o.endpoint_url = Some("ftp://x".into()), "endpoint_url");
        check(&|o| o.region = " ".into(), "region");
        check(
            &|o| {
                o.workgroup_name = None;
                o.cluster_identifier = Some("c1".into());
                o.secret_arn = None;
                o.db_user = Some("ferry".into());
                o.access_key_id = None;
                o.secret_access_key = None;
                o.session_token = Some(Secret::new("t"));
            },
            "session_token",
        );
        let err = toml::from_str::<SourceSpec>(
            "id='s'\ntenant='t'\n[kind.redshift]\ncluster='c'\ndatabase='d'\nregion='r'",
        )
        .unwrap_err();
        assert!(err.to_string().contains("cluster"), "{err}");
    }
}
