//! `Sources`: warehouse connections, tested before they are stored, and what is in them.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use ferry_connectors::warehouse::{open_warehouse, ReadSource, Warehouse};
use ferry_core::spec::{CertSource, SourceKind, SourceSpec};
use ferry_proto::admin::v1 as pb;
use pb::sources_server::Sources;
use tonic::{Request, Response, Status};

use super::auth::Principal;
use super::convert::{source_json, source_pb};
use super::specs::{prepare, redacted_spec, source_object, spec_from, SOURCE_SECRETS};
use super::{errors, expected_version, parse, Admin};
use crate::catalog::{SourceRecord, Stored};
use crate::secrets::Plain;

pub struct SourcesApi(pub Arc<Admin>);

/// What a table reference or query reads.
pub(super) fn read_target(target: Option<&pb::ReadTarget>) -> Result<ReadSource, Status> {
    match target.and_then(|t| t.target.as_ref()) {
        Some(pb::read_target::Target::Table(table)) if !table.trim().is_empty() => {
            Ok(match table.split_once('.') {
                Some((schema, name)) => ReadSource::Table {
                    schema: Some(schema.into()),
                    name: name.into(),
                },
                None => ReadSource::Table {
                    schema: None,
                    name: table.clone(),
                },
            })
        }
        Some(pb::read_target::Target::Sql(sql)) if !sql.trim().is_empty() => {
            Ok(ReadSource::Sql(sql.clone()))
        }
        _ => Err(errors::invalid_field(
            "target",
            "give a table (schema.table) or a SQL query",
        )),
    }
}

/// What only the operator may configure: a source that reads the node's own files or uses
/// the node's own AWS identity.
fn check_allowed(who: &Principal, spec: &SourceSpec) -> Result<(), Status> {
    if who.is_operator() {
        return Ok(());
    }
    match &spec.kind {
        SourceKind::Sqlite(_) => Err(Status::permission_denied(
            "SQLite sources read a file on the node; only the operator may create them",
        )),
        SourceKind::Postgres(pg) if matches!(pg.ca_cert, Some(CertSource::Path(_))) => {
            Err(Status::permission_denied(
                "source.kind.postgres.ca_cert: give the CA certificate as inline PEM (a path on the node is for the operator only)",
            ))
        }
        SourceKind::Redshift(rs) if rs.access_key_id.is_none() || rs.profile.is_some() => {
            Err(Status::permission_denied(
                "source.kind.redshift.access_key_id: give the access key to sign requests with (without one the node's own AWS identity is used, which is for the operator only)",
            ))
        }
        _ => Ok(()),
    }
}

impl Admin {
    /// Opens the warehouse of a source spec and tests the connection; the error says what
    /// failed.
    pub(super) async fn connection_test(
        &self,
        spec: &SourceSpec,
    ) -> Result<Arc<dyn Warehouse>, Status> {
        let context = format!("source '{}': connection test failed", spec.id);
        let warehouse = open_warehouse(spec).map_err(|e| errors::warehouse(&context, &e))?;
        self.within(&context, warehouse.test_connection())
            .await?
            .map_err(|e| errors::warehouse(&context, &e))?;
        Ok(warehouse)
    }

    /// A stored source's warehouse, credentials opened.
    pub(super) async fn source_warehouse(
        &self,
        tenant: &str,
        source: &str,
    ) -> Result<(SourceSpec, Arc<dyn Warehouse>), Status> {
        let (spec, _) = self
            .resolver
            .source(tenant, source)
            .await
            .map_err(|e| errors::resolve(&e))?;
        let warehouse = open_warehouse(&spec)
            .map_err(|e| errors::warehouse(&format!("source '{source}'"), &e))?;
        Ok((spec, warehouse))
    }
}

impl SourcesApi {
    fn shown(&self, stored: &Stored<SourceRecord>) -> Result<pb::Source, Status> {
        let r = &stored.value;
        let spec: SourceSpec = redacted_spec(
            &format!("source '{}' of tenant '{}'", r.id, r.tenant),
            &r.spec,
            &r.credentials,
        )
        .map_err(|e| errors::resolve(&e))?;
        Ok(source_pb(
            &spec,
            &r.credentials,
            &r.created_at,
            &r.updated_at,
            stored.version,
        ))
    }

    /// Validates, tests and seals a source from a request.
    async fn record(
        &self,
        who: &Principal,
        message: &pb::Source,
        tenant: &str,
        previous: Option<&SourceRecord>,
    ) -> Result<SourceRecord, Status> {
        let admin = &self.0;
        let object = source_object(tenant, &message.id);
        let stored_plain = match previous {
            Some(p) => admin
                .resolver
                .secrets
                .open(&object, &p.credentials)
                .map_err(|e| errors::secret(&e))?,
            None => Plain::default(),
        };
        let prepared = prepare(source_json(message, tenant)?, SOURCE_SECRETS, &stored_plain);
        let checked: SourceSpec = parse("source", prepared.full)?;
        checked
            .validate()
            .map_err(|e| errors::spec_errors(&format!("source '{}'", checked.id), &e))?;
        check_allowed(who, &checked)?;
        // Tested exactly as it will be stored and used.
        let spec: SourceSpec = spec_from("source", &prepared.public, &prepared.plain)
            .map_err(|e| errors::resolve(&e))?;
        admin.connection_test(&spec).await?;
        let credentials = admin
            .resolver
            .secrets
            .seal(&object, &prepared.plain)
            .map_err(|e| errors::secret(&e))?;
        let now = Utc::now();
        Ok(SourceRecord {
            tenant: tenant.to_string(),
            id: spec.id.clone(),
            spec: prepared.public,
            credentials,
            created_at: previous.map_or(now, |p| p.created_at),
            updated_at: now,
        })
    }
}

#[tonic::async_trait]
impl Sources for SourcesApi {
    async fn create_source(
        &self,
        request: Request<pb::CreateSourceRequest>,
    ) -> Result<Response<pb::Source>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let message = req
            .source
            .ok_or_else(|| errors::invalid_field("source", "give the source"))?;
        let tenant = who.tenant_scope(&message.tenant)?;
        // Refused before the connection test when it could never be stored.
        if admin
            .catalog
            .get_tenant(&tenant)
            .await
            .map_err(|e| errors::catalog(&e))?
            .is_none()
        {
            return Err(Status::not_found(format!(
                "tenant '{tenant}' does not exist"
            )));
        }
        if admin
            .catalog
            .get_source(&tenant, &message.id)
            .await
            .map_err(|e| errors::catalog(&e))?
            .is_some()
        {
            return Err(Status::already_exists(format!(
                "source '{}' of tenant '{tenant}' already exists",
                message.id
            )));
        }
        let record = self.record(&who, &message, &tenant, None).await?;
        let version = admin
            .catalog
            .create_source(&record)
            .await
            .map_err(|e| errors::catalog(&e))?;
        tracing::info!(tenant = %tenant, source = %record.id, "source created (connection tested)");
        Ok(Response::new(self.shown(&Stored {
            value: record,
            version,
        })?))
    }

    async fn get_source(
        &self,
        request: Request<pb::GetSourceRequest>,
    ) -> Result<Response<pb::Source>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        let stored = admin
            .catalog
            .get_source(&tenant, &req.id)
            .await
            .map_err(|e| errors::catalog(&e))?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "source '{}' of tenant '{tenant}' does not exist",
                    req.id
                ))
            })?;
        Ok(Response::new(self.shown(&stored)?))
    }

    async fn list_sources(
        &self,
        request: Request<pb::ListSourcesRequest>,
    ) -> Result<Response<pb::ListSourcesResponse>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        let sources = admin
            .catalog
            .list_sources(&tenant)
            .await
            .map_err(|e| errors::catalog(&e))?
            .iter()
            .map(|s| self.shown(s))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListSourcesResponse { sources }))
    }

    async fn update_source(
        &self,
        request: Request<pb::UpdateSourceRequest>,
    ) -> Result<Response<pb::Source>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let message = req
            .source
            .ok_or_else(|| errors::invalid_field("source", "give the source"))?;
        let tenant = who.tenant_scope(&message.tenant)?;
        let previous = admin
            .catalog
            .get_source(&tenant, &message.id)
            .await
            .map_err(|e| errors::catalog(&e))?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "source '{}' of tenant '{tenant}' does not exist",
                    message.id
                ))
            })?;
        let record = self
            .record(&who, &message, &tenant, Some(&previous.value))
            .await?;
        let version = admin
            .catalog
            .update_source(&record, expected_version(req.expected_version))
            .await
            .map_err(|e| errors::catalog(&e))?;
        tracing::info!(tenant = %tenant, source = %record.id, "source updated (connection tested)");
        Ok(Response::new(self.shown(&Stored {
            value: record,
            version,
        })?))
    }

    async fn delete_source(
        &self,
        request: Request<pb::DeleteSourceRequest>,
    ) -> Result<Response<pb::DeleteSourceResponse>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        admin
            .catalog
            .delete_source(&tenant, &req.id)
            .await
            .map_err(|e| match e {
                crate::catalog::CatalogError::InUse { .. } => {
                    Status::failed_precondition(format!("{e}; delete those syncs first"))
                }
                other => errors::catalog(&other),
            })?;
        tracing::info!(tenant = %tenant, source = %req.id, "source deleted");
        Ok(Response::new(pb::DeleteSourceResponse {}))
    }

    async fn test_source(
        &self,
        request: Request<pb::TestSourceRequest>,
    ) -> Result<Response<pb::TestSourceResponse>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        let (spec, _) = admin
            .resolver
            .source(&tenant, &req.id)
            .await
            .map_err(|e| errors::resolve(&e))?;
        let started = Instant::now();
        let outcome = admin.connection_test(&spec).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let problem = match outcome {
            Ok(_) => None,
            Err(status) if status.code() == tonic::Code::DeadlineExceeded => {
                Some(pb::ConnectionProblem {
                    kind: pb::connection_problem::Kind::Unreachable as i32,
                    message: status.message().to_string(),
                })
            }
            Err(status) => {
                use prost::Message;
                Some(
                    pb::ConnectionProblem::decode(status.details()).unwrap_or_else(|_| {
                        pb::ConnectionProblem {
                            kind: 0,
                            message: status.message().to_string(),
                        }
                    }),
                )
            }
        };
        Ok(Response::new(pb::TestSourceResponse {
            ok: problem.is_none(),
            problem,
            elapsed_ms,
        }))
    }

    async fn list_tables(
        &self,
        request: Request<pb::ListTablesRequest>,
    ) -> Result<Response<pb::ListTablesResponse>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        let (_, warehouse) = admin.source_warehouse(&tenant, &req.source).await?;
        let context = format!("source '{}': listing tables", req.source);
        let tables = admin
            .within(&context, warehouse.list_tables())
            .await?
            .map_err(|e| errors::warehouse(&context, &e))?;
        Ok(Response::new(pb::ListTablesResponse {
            tables: tables
                .into_iter()
                .map(|t| pb::TableInfo {
                    schema: t.schema.unwrap_or_default(),
                    name: t.name,
                    kind: t.kind,
                })
                .collect(),
        }))
    }

    async fn get_columns(
        &self,
        request: Request<pb::GetColumnsRequest>,
    ) -> Result<Response<pb::GetColumnsResponse>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        let read = read_target(req.target.as_ref())?;
        let (_, warehouse) = admin.source_warehouse(&tenant, &req.source).await?;
        let context = format!("source '{}': reading the columns", req.source);
        let columns = admin
            .within(&context, warehouse.columns(&read))
            .await?
            .map_err(|e| errors::warehouse(&context, &e))?;
        Ok(Response::new(pb::GetColumnsResponse {
            columns: columns.iter().map(super::preview::column_pb).collect(),
        }))
    }

    async fn preview_rows(
        &self,
        request: Request<pb::PreviewRowsRequest>,
    ) -> Result<Response<pb::PreviewRowsResponse>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        Ok(Response::new(admin.preview_rows(&tenant, req).await?))
    }
}
