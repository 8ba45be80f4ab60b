//! `Tenants`: tenants and their API tokens.

use std::sync::Arc;

use chrono::Utc;
use ferry_core::spec::TenantSpec;
use ferry_proto::admin::v1 as pb;
use pb::tenants_server::Tenants;
use tonic::{Request, Response, Status};

use super::auth::{mint_token, token_prefix};
use super::convert::{tenant_json, tenant_pb, time};
use super::specs::{prepare, redacted_spec, tenant_object, TENANT_SECRETS};
use super::{errors, expected_version as version, parse, Admin};
use crate::catalog::{Stored, TenantRecord};
use crate::secrets::Plain;

pub struct TenantsApi(pub Arc<Admin>);

impl TenantsApi {
    fn shown(&self, stored: &Stored<TenantRecord>) -> Result<pb::Tenant, Status> {
        let r = &stored.value;
        let spec: TenantSpec =
            redacted_spec(&format!("tenant '{}'", r.id), &r.spec, &r.credentials)
                .map_err(|e| errors::resolve(&e))?;
        Ok(tenant_pb(
            &spec,
            &r.credentials,
            r.receiver_extensions,
            &r.created_at,
            &r.updated_at,
            stored.version,
        ))
    }

    /// The record for `message`, credentials sealed; `stored` gives the credentials an update
    /// leaves empty.
    fn record(
        &self,
        message: &pb::Tenant,
        previous: Option<&TenantRecord>,
    ) -> Result<TenantRecord, Status> {
        let admin = &self.0;
        let stored_plain = match previous {
            Some(p) => admin
                .resolver
                .secrets
                .open(&tenant_object(&p.id), &p.credentials)
                .map_err(|e| errors::secret(&e))?,
            None => Plain::default(),
        };
        let prepared = prepare(tenant_json(message)?, TENANT_SECRETS, &stored_plain);
        let spec: TenantSpec = parse("tenant", prepared.full)?;
        spec.validate()
            .map_err(|e| errors::spec_errors(&format!("tenant '{}'", spec.id), &e))?;
        let credentials = admin
            .resolver
            .secrets
            .seal(&tenant_object(&spec.id), &prepared.plain)
            .map_err(|e| errors::secret(&e))?;
        let now = Utc::now();
        Ok(TenantRecord {
            id: spec.id.clone(),
            spec: prepared.public,
            credentials,
            receiver_extensions: message
                .destination
                .as_ref()
                .is_some_and(|d| d.receiver_extensions),
            created_at: previous.map_or(now, |p| p.created_at),
            updated_at: now,
        })
    }
}

#[tonic::async_trait]
impl Tenants for TenantsApi {
    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        who.require_operator("creating a tenant")?;
        let message = req
            .tenant
            .ok_or_else(|| errors::invalid_field("tenant", "give the tenant"))?;
        let record = self.record(&message, None)?;
        let version = admin
            .catalog
            .create_tenant(&record)
            .await
            .map_err(|e| errors::catalog(&e))?;
        tracing::info!(tenant = %record.id, "tenant created");
        Ok(Response::new(self.shown(&Stored {
            value: record,
            version,
        })?))
    }

    async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        let stored = admin
            .catalog
            .get_tenant(&tenant)
            .await
            .map_err(|e| errors::catalog(&e))?
            .ok_or_else(|| Status::not_found(format!("tenant '{tenant}' does not exist")))?;
        Ok(Response::new(self.shown(&stored)?))
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let admin = &self.0;
        let (who, _) = admin.caller(request).await?;
        let all = match &who {
            super::Principal::Operator => admin
                .catalog
                .list_tenants()
                .await
                .map_err(|e| errors::catalog(&e))?,
            super::Principal::Tenant(own) => admin
                .catalog
                .get_tenant(own)
                .await
                .map_err(|e| errors::catalog(&e))?
                .into_iter()
                .collect(),
        };
        let tenants = all
            .iter()
            .map(|t| self.shown(t))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListTenantsResponse { tenants }))
    }

    async fn update_tenant(
        &self,
        request: Request<pb::UpdateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let mut message = req
            .tenant
            .ok_or_else(|| errors::invalid_field("tenant", "give the tenant"))?;
        message.id = who.tenant_scope(&message.id)?;
        let previous = admin
            .catalog
            .get_tenant(&message.id)
            .await
            .map_err(|e| errors::catalog(&e))?
            .ok_or_else(|| Status::not_found(format!("tenant '{}' does not exist", message.id)))?;
        // Whether the destination is the bundled receiver is the operator's to say.
        if !who.is_operator() {
            let dest = message.destination.get_or_insert_with(Default::default);
            dest.receiver_extensions = previous.value.receiver_extensions;
        }
        let record = self.record(&message, Some(&previous.value))?;
        let version = admin
            .catalog
            .update_tenant(&record, version(req.expected_version))
            .await
            .map_err(|e| errors::catalog(&e))?;
        tracing::info!(tenant = %record.id, "tenant updated");
        Ok(Response::new(self.shown(&Stored {
            value: record,
            version,
        })?))
    }

    async fn delete_tenant(
        &self,
        request: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::DeleteTenantResponse>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        who.require_operator("deleting a tenant")?;
        let tenant = who.tenant_scope(&req.tenant)?;
        if let Some(running) = admin.runs.tenant_busy(&tenant) {
            return Err(Status::failed_precondition(format!(
                "sync {running} is running; cancel its run before deleting the tenant"
            )));
        }
        let syncs = admin
            .catalog
            .list_syncs(&tenant)
            .await
            .map_err(|e| errors::catalog(&e))?;
        admin
            .catalog
            .delete_tenant(&tenant, req.cascade)
            .await
            .map_err(|e| match e {
                crate::catalog::CatalogError::InUse { .. } => Status::failed_precondition(format!(
                    "{e}; delete them first, or delete with cascade"
                )),
                other => errors::catalog(&other),
            })?;
        if let Some(scheduler) = &admin.scheduler {
            for sync in syncs {
                if let Ok(id) = sync.value.sync_id() {
                    scheduler.remove(&id);
                }
            }
        }
        tracing::info!(tenant = %tenant, cascade = req.cascade, "tenant deleted");
        Ok(Response::new(pb::DeleteTenantResponse {}))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        let minted = mint_token(&tenant, req.name.trim())?;
        admin
            .catalog
            .create_token(&minted.record)
            .await
            .map_err(|e| errors::catalog(&e))?;
        tracing::info!(tenant = %tenant, token = %minted.record.id, "tenant token created");
        Ok(Response::new(pb::CreateTokenResponse {
            token: Some(token_pb(&minted.record)),
            secret: minted.bearer,
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        let tokens = admin
            .catalog
            .list_tokens(&tenant)
            .await
            .map_err(|e| errors::catalog(&e))?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.iter().map(token_pb).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        admin
            .catalog
            .delete_token(&tenant, &req.id)
            .await
            .map_err(|e| errors::catalog(&e))?;
        tracing::info!(tenant = %tenant, token = %req.id, "tenant token revoked");
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }
}

fn token_pb(t: &crate::catalog::TokenRecord) -> pb::ApiToken {
    pb::ApiToken {
        id: t.id.clone(),
        tenant: t.tenant.clone(),
        name: t.name.clone(),
        prefix: token_prefix(&t.tenant, &t.id),
        created_at: time(&t.created_at),
    }
}
