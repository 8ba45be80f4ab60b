//! `ferry tenants …` and `ferry tokens …`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use ferry_proto::admin::v1 as pb;
use serde_json::json;

use super::error::CliError;
use super::input::{self, TenantFile};
use super::output::{emit, fields, list, Format};
use super::webhook::{self, WebhookFlags};
use super::{json, read_secret, Connection};

#[derive(Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant (operator token). From flags, a file, or both (flags win).
    Create {
        /// The tenant's id (letters, digits, `-`, `_`); or `id` in the file.
        id: Option<String>,
        #[command(flatten)]
        flags: TenantFlags,
        /// A TOML (.toml) or JSON definition, in the shape `tenants get -o json` prints.
        #[arg(long, short = 'f', value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// One tenant (credentials are never shown, only whether they are set).
    Get {
        /// The tenant's id (a tenant token may leave it out: its own).
        id: Option<String>,
    },
    /// Every tenant (the operator) or the token's own.
    List,
    /// Change a tenant: the flags given (or the file, as the whole tenant) replace what is stored.
    Update {
        id: String,
        #[command(flatten)]
        flags: TenantFlags,
        #[arg(long, short = 'f', value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Delete a tenant (operator token); refused while it has sources or syncs, unless --cascade.
    Delete {
        id: String,
        /// Also delete its tokens, sources, syncs, cursors and run history.
        #[arg(long)]
        cascade: bool,
    },
}

#[derive(Args, Default)]
pub struct TenantFlags {
    /// A name for people.
    #[arg(long)]
    name: Option<String>,
    /// The Mixpanel project id.
    #[arg(long)]
    project_id: Option<u64>,
    /// Mixpanel's region: us, eu or in.
    #[arg(long, conflicts_with = "base_url")]
    region: Option<String>,
    /// Send to this base URL instead (Ferry's receiver, a proxy).
    #[arg(long)]
    base_url: Option<String>,
    /// The destination is Ferry's receiver, whose extensions (event deletes) may be used.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    receiver_extensions: Option<bool>,
    /// Authenticate with this service account (its secret from --service-account-secret-file).
    #[arg(long, value_name = "USER")]
    service_account_user: Option<String>,
    /// A file holding the service account's secret (`-`: stdin).
    #[arg(long, value_name = "PATH")]
    service_account_secret_file: Option<PathBuf>,
    /// Authenticate with the project token (from --project-token-file) instead of a service account.
    #[arg(long, conflicts_with = "service_account_user")]
    project_token_auth: bool,
    /// A file holding the project token (put in `$token` of profile updates; `-`: stdin).
    #[arg(long, value_name = "PATH")]
    project_token_file: Option<PathBuf>,
    #[command(flatten)]
    webhook: WebhookFlags,
    /// Records per second all of the tenant's runs together may send, across every node.
    #[arg(long, value_name = "EVENTS_PER_SEC", conflicts_with = "no_send_budget")]
    send_budget: Option<u32>,
    /// Remove the tenant's send budget (no limit).
    #[arg(long)]
    no_send_budget: bool,
}

impl TenantFlags {
    fn apply_destination(&self, dest: &mut pb::Destination) -> Result<(), CliError> {
        if let Some(r) = &self.region {
            dest.target = Some(pb::destination::Target::Region(input::region(r)?));
        }
        if let Some(u) = &self.base_url {
            dest.target = Some(pb::destination::Target::BaseUrl(u.clone()));
        }
        if let Some(b) = self.receiver_extensions {
            dest.receiver_extensions = b;
        }
        Ok(())
    }

    fn apply(&self, t: &mut pb::Tenant) -> Result<(), CliError> {
        if let Some(v) = &self.name {
            t.name = v.clone();
        }
        if let Some(v) = self.project_id {
            t.project_id = v;
        }
        let names_destination =
            self.region.is_some() || self.base_url.is_some() || self.receiver_extensions.is_some();
        if names_destination {
            self.apply_destination(t.destination.get_or_insert_with(Default::default))?;
        }
        let project_token = self
            .project_token_file
            .as_deref()
            .map(|p| read_secret(p, "--project-token-file"))
            .transpose()?;
        if let Some(user) = &self.service_account_user {
            let secret = self
                .service_account_secret_file
                .as_deref()
                .map(|p| read_secret(p, "--service-account-secret-file"))
                .transpose()?
                .unwrap_or_default();
            t.credentials = Some(pb::Credentials {
                kind: Some(pb::credentials::Kind::ServiceAccount(pb::ServiceAccount {
                    user: user.clone(),
                    secret,
                    secret_set: false,
                })),
            });
        } else if self.service_account_secret_file.is_some() {
            return Err(CliError::usage(
                "--service-account-secret-file needs --service-account-user",
            ));
        }
        if self.project_token_auth {
            t.credentials = Some(pb::Credentials {
                kind: Some(pb::credentials::Kind::ProjectToken(pb::ProjectTokenAuth {
                    token: project_token.clone().unwrap_or_default(),
                    token_set: false,
                })),
            });
        }
        if let Some(tok) = project_token {
            t.project_token = tok;
        }
        if let Some(budget) = self.send_budget {
            t.send_budget = Some(budget);
        }
        if self.no_send_budget {
            t.send_budget = None;
        }
        self.webhook.apply(&mut t.webhook)
    }
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Create an API token for the tenant (--tenant); its secret is printed once.
    Create {
        /// A label for people ("ci", "alice").
        #[arg(long)]
        name: String,
    },
    /// The tenant's tokens (their public prefix, never the secret).
    List,
    /// Revoke a token: it is refused from then on.
    Revoke {
        /// The token's id (see `tokens list`).
        id: String,
    },
}

fn tenant_from(
    id: Option<String>,
    flags: &TenantFlags,
    file: Option<&PathBuf>,
) -> Result<pb::Tenant, CliError> {
    let mut t = match file {
        Some(path) => input::read_file::<TenantFile>(path)?.into_proto()?,
        None => pb::Tenant::default(),
    };
    if let Some(id) = id {
        t.id = id;
    }
    flags.apply(&mut t)?;
    Ok(t)
}

fn tenant_fields(t: &pb::Tenant) -> String {
    let (dest, ext) = match &t.destination {
        Some(d) => (
            match &d.target {
                Some(pb::destination::Target::Region(r)) => format!("region {}", json::region(*r)),
                Some(pb::destination::Target::BaseUrl(u)) => u.clone(),
                None => String::new(),
            },
            d.receiver_extensions,
        ),
        None => (String::new(), false),
    };
    fields(&[
        ("id", t.id.clone()),
        ("name", t.name.clone()),
        ("project_id", t.project_id.to_string()),
        ("destination", dest),
        (
            "receiver_extensions",
            if ext { "yes".into() } else { String::new() },
        ),
        ("credentials", credentials_text(t.credentials.as_ref())),
        (
            "project_token",
            if t.project_token_set {
                "set".into()
            } else {
                "not set".into()
            },
        ),
        ("webhook", webhook::text(t.webhook.as_ref())),
        ("send_budget", budget_text(t.send_budget)),
        ("created_at", t.created_at.clone()),
        ("updated_at", t.updated_at.clone()),
        ("version", t.version.to_string()),
    ])
}

fn budget_text(budget: Option<u32>) -> String {
    match budget {
        Some(b) => format!("{b} events/s across the cluster"),
        None => "none".into(),
    }
}

fn credentials_text(c: Option<&pb::Credentials>) -> String {
    match c.and_then(|c| c.kind.as_ref()) {
        Some(pb::credentials::Kind::ServiceAccount(sa)) => format!(
            "service account {} (secret {})",
            sa.user,
            if sa.secret_set { "set" } else { "not set" }
        ),
        Some(pb::credentials::Kind::ProjectToken(t)) => format!(
            "project token ({})",
            if t.token_set { "set" } else { "not set" }
        ),
        None => "none".into(),
    }
}

pub async fn run_tenants(conn: &Connection, command: TenantsCommand) -> Result<(), CliError> {
    let client = conn.connect()?;
    let out = conn.output;
    match command {
        TenantsCommand::Create { id, flags, file } => {
            let tenant = tenant_from(id, &flags, file.as_ref())?;
            let t = client
                .call(
                    client
                        .tenants()
                        .create_tenant(client.request(pb::CreateTenantRequest {
                            tenant: Some(tenant),
                        })),
                )
                .await?;
            emit(out, json::tenant(&t), || tenant_fields(&t));
        }
        TenantsCommand::Get { id } => {
            let t = client
                .call(
                    client
                        .tenants()
                        .get_tenant(client.request(pb::GetTenantRequest {
                            tenant: id.unwrap_or_default(),
                        })),
                )
                .await?;
            emit(out, json::tenant(&t), || tenant_fields(&t));
        }
        TenantsCommand::List => {
            let resp = client
                .call(
                    client
                        .tenants()
                        .list_tenants(client.request(pb::ListTenantsRequest {})),
                )
                .await?;
            emit(
                out,
                resp.tenants
                    .iter()
                    .map(json::tenant)
                    .collect::<Vec<_>>()
                    .into(),
                || {
                    list(
                        &[
                            "id",
                            "name",
                            "project",
                            "destination",
                            "credentials",
                            "budget",
                            "updated",
                        ],
                        resp.tenants.iter().map(|t| {
                            vec![
                                t.id.clone(),
                                t.name.clone(),
                                t.project_id.to_string(),
                                match t.destination.as_ref().and_then(|d| d.target.as_ref()) {
                                    Some(pb::destination::Target::Region(r)) => json::region(*r),
                                    Some(pb::destination::Target::BaseUrl(u)) => u.clone(),
                                    None => String::new(),
                                },
                                credentials_text(t.credentials.as_ref()),
                                t.send_budget.map(|b| format!("{b}/s")).unwrap_or_default(),
                                t.updated_at.clone(),
                            ]
                        }),
                    )
                },
            );
        }
        TenantsCommand::Update { id, flags, file } => {
            // Start from what is stored (credentials come back empty, which keeps them), so
            // the flags change only what they name; a file replaces the whole tenant.
            let (mut tenant, expected_version) = match &file {
                Some(_) => (
                    tenant_from(None, &TenantFlags::default(), file.as_ref())?,
                    0,
                ),
                None => {
                    let current = client
                        .call(client.tenants().get_tenant(
                            client.request(pb::GetTenantRequest { tenant: id.clone() }),
                        ))
                        .await?;
                    let version = current.version;
                    (current, version)
                }
            };
            tenant.id = id;
            flags.apply(&mut tenant)?;
            let t = client
                .call(
                    client
                        .tenants()
                        .update_tenant(client.request(pb::UpdateTenantRequest {
                            tenant: Some(tenant),
                            expected_version,
                        })),
                )
                .await?;
            emit(out, json::tenant(&t), || tenant_fields(&t));
        }
        TenantsCommand::Delete { id, cascade } => {
            client
                .call(
                    client
                        .tenants()
                        .delete_tenant(client.request(pb::DeleteTenantRequest {
                            tenant: id.clone(),
                            cascade,
                        })),
                )
                .await?;
            emit(out, json!({ "deleted": { "tenant": id } }), || {
                format!("deleted tenant {id}")
            });
        }
    }
    Ok(())
}

pub async fn run_tokens(conn: &Connection, command: TokensCommand) -> Result<(), CliError> {
    let client = conn.connect()?;
    let out = conn.output;
    let tenant = conn.tenant();
    match command {
        TokensCommand::Create { name } => {
            let resp = client
                .call(
                    client
                        .tenants()
                        .create_token(client.request(pb::CreateTokenRequest { tenant, name })),
                )
                .await?;
            let token = resp.token.clone().unwrap_or_default();
            match out {
                Format::Json => emit(
                    out,
                    json!({ "token": json::api_token(&token), "secret": resp.secret }),
                    String::new,
                ),
                Format::Table => {
                    // The secret alone on stdout, so `> token-file` captures just it.
                    println!("{}", resp.secret);
                    eprintln!(
                        "created token {} ({}) for tenant {}: store it now, it is not shown again",
                        token.id, token.name, token.tenant
                    );
                }
            }
        }
        TokensCommand::List => {
            let resp = client
                .call(
                    client
                        .tenants()
                        .list_tokens(client.request(pb::ListTokensRequest { tenant })),
                )
                .await?;
            emit(
                out,
                resp.tokens
                    .iter()
                    .map(json::api_token)
                    .collect::<Vec<_>>()
                    .into(),
                || {
                    list(
                        &["id", "tenant", "name", "prefix", "created"],
                        resp.tokens.iter().map(|t| {
                            vec![
                                t.id.clone(),
                                t.tenant.clone(),
                                t.name.clone(),
                                t.prefix.clone(),
                                t.created_at.clone(),
                            ]
                        }),
                    )
                },
            );
        }
        TokensCommand::Revoke { id } => {
            client
                .call(
                    client
                        .tenants()
                        .revoke_token(client.request(pb::RevokeTokenRequest {
                            tenant: tenant.clone(),
                            id: id.clone(),
                        })),
                )
                .await?;
            emit(
                out,
                json!({ "revoked": { "tenant": tenant, "id": id } }),
                || format!("revoked token {id}"),
            );
        }
    }
    Ok(())
}
