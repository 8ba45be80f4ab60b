//! `Syncs`: syncs checked against their real tables, scheduled, paused, triggered, dry-run and
//! deleted.

use std::sync::Arc;

use chrono::Utc;
use ferry_core::schedule::Schedule;
use ferry_core::spec::{SyncMode, SyncSpec};
use ferry_proto::admin::v1 as pb;
use pb::syncs_server::Syncs;
use tonic::{Request, Response, Status};

use super::convert::{sync_json, sync_pb, time};
use super::specs::{prepare, redacted_spec, sync_object, SYNC_SECRETS};
use super::{errors, expected_version, parse, sync_id, Admin};
use crate::catalog::{Stored, SyncRecord};
use crate::records::SyncId;
use crate::schedule::TriggerReason;
use crate::secrets::Plain;

pub struct SyncsApi(pub Arc<Admin>);

impl Admin {
    fn sync_shown(&self, stored: &Stored<SyncRecord>) -> Result<pb::Sync, Status> {
        let r = &stored.value;
        let id = r.sync_id().map_err(|e| errors::store(&e))?;
        let spec: SyncSpec = redacted_spec(&format!("sync {id}"), &r.spec, &r.credentials)
            .map_err(|e| errors::resolve(&e))?;
        let mut shown = sync_pb(&spec, &r.credentials);
        shown.paused = r.paused;
        shown.created_at = time(&r.created_at);
        shown.updated_at = time(&r.updated_at);
        shown.version = stored.version;
        shown.trigger_url = self.trigger_url(&id);
        Ok(shown)
    }

    /// Tells the scheduler about a stored sync (when this node has one).
    async fn schedule(&self, record: &SyncRecord) {
        let Some(scheduler) = &self.scheduler else {
            return;
        };
        let Ok(id) = record.sync_id() else { return };
        match Schedule::from_spec(record.schedule(), record.timezone()) {
            Ok(schedule) => scheduler.upsert(id, schedule, record.paused).await,
            // Validated when stored; a schedule this build cannot read is not run by it.
            Err(e) => tracing::error!(sync = %id, error = %e, "stored schedule not understood"),
        }
    }

    async fn stored_sync(&self, id: &SyncId) -> Result<Stored<SyncRecord>, Status> {
        self.catalog
            .get_sync(id)
            .await
            .map_err(|e| errors::catalog(&e))?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "sync '{}' of tenant '{}' does not exist",
                    id.sync(),
                    id.tenant()
                ))
            })
    }

    /// Validates a sync from a request against its table, and seals its credentials.
    async fn sync_record(
        &self,
        message: &pb::Sync,
        tenant: &str,
        previous: Option<&SyncRecord>,
    ) -> Result<(SyncRecord, Vec<pb::SpecProblem>), Status> {
        let id = sync_id(tenant, &message.id)?;
        let object = sync_object(&id);
        let stored_plain = match previous {
            Some(p) => self
                .resolver
                .secrets
                .open(&object, &p.credentials)
                .map_err(|e| errors::secret(&e))?,
            None => Plain::default(),
        };
        let prepared = prepare(sync_json(message, tenant)?, SYNC_SECRETS, &stored_plain);
        let spec: SyncSpec = parse("sync", prepared.full)?;
        let (tenant_spec, _) = self
            .resolver
            .tenant(tenant)
            .await
            .map_err(|e| errors::resolve(&e))?;
        let checked = self.check_sync(&tenant_spec, &spec, "check").await?;
        let warnings = checked
            .valid
            .warnings
            .iter()
            .map(|w| pb::SpecProblem {
                field: w.field.clone(),
                message: w.message.clone(),
            })
            .collect();
        let credentials = self
            .resolver
            .secrets
            .seal(&object, &prepared.plain)
            .map_err(|e| errors::secret(&e))?;
        let now = Utc::now();
        Ok((
            SyncRecord {
                tenant: tenant.to_string(),
                id: spec.id.clone(),
                source: spec.source.clone(),
                spec: prepared.public,
                paused: previous.is_some_and(|p| p.paused),
                credentials,
                created_at: previous.map_or(now, |p| p.created_at),
                updated_at: now,
            },
            warnings,
        ))
    }

    async fn set_paused(&self, tenant: &str, id: &str, paused: bool) -> Result<pb::Sync, Status> {
        let id = sync_id(tenant, id)?;
        let mut stored = self.stored_sync(&id).await?;
        if stored.value.paused != paused {
            stored.value.paused = paused;
            stored.value.updated_at = Utc::now();
            stored.version = self
                .catalog
                .update_sync(&stored.value, Some(stored.version))
                .await
                .map_err(|e| errors::catalog(&e))?;
            tracing::info!(sync = %id, paused, "sync {}", if paused { "paused" } else { "resumed" });
        }
        self.schedule(&stored.value).await;
        self.sync_shown(&stored)
    }
}

#[tonic::async_trait]
impl Syncs for SyncsApi {
    async fn create_sync(
        &self,
        request: Request<pb::CreateSyncRequest>,
    ) -> Result<Response<pb::SyncResponse>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let message = req
            .sync
            .ok_or_else(|| errors::invalid_field("sync", "give the sync"))?;
        let tenant = who.tenant_scope(&message.tenant)?;
        let id = sync_id(&tenant, &message.id)?;
        if admin
            .catalog
            .get_sync(&id)
            .await
            .map_err(|e| errors::catalog(&e))?
            .is_some()
        {
            return Err(Status::already_exists(format!(
                "sync '{}' of tenant '{tenant}' already exists",
                message.id
            )));
        }
        let (record, warnings) = admin.sync_record(&message, &tenant, None).await?;
        let version = admin
            .catalog
            .create_sync(&record)
            .await
            .map_err(|e| errors::catalog(&e))?;
        admin.schedule(&record).await;
        tracing::info!(sync = %id, source = %record.source, "sync created (mapping checked against the table)");
        Ok(Response::new(pb::SyncResponse {
            sync: Some(admin.sync_shown(&Stored {
                value: record,
                version,
            })?),
            warnings,
        }))
    }

    async fn get_sync(
        &self,
        request: Request<pb::GetSyncRequest>,
    ) -> Result<Response<pb::Sync>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        let stored = admin.stored_sync(&sync_id(&tenant, &req.id)?).await?;
        Ok(Response::new(admin.sync_shown(&stored)?))
    }

    async fn list_syncs(
        &self,
        request: Request<pb::ListSyncsRequest>,
    ) -> Result<Response<pb::ListSyncsResponse>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        let syncs = admin
            .catalog
            .list_syncs(&tenant)
            .await
            .map_err(|e| errors::catalog(&e))?
            .iter()
            .filter(|s| req.source.is_empty() || s.value.source == req.source)
            .map(|s| admin.sync_shown(s))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListSyncsResponse { syncs }))
    }

    async fn update_sync(
        &self,
        request: Request<pb::UpdateSyncRequest>,
    ) -> Result<Response<pb::SyncResponse>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let message = req
            .sync
            .ok_or_else(|| errors::invalid_field("sync", "give the sync"))?;
        let tenant = who.tenant_scope(&message.tenant)?;
        let id = sync_id(&tenant, &message.id)?;
        let previous = admin.stored_sync(&id).await?;
        let (record, warnings) = admin
            .sync_record(&message, &tenant, Some(&previous.value))
            .await?;
        let version = admin
            .catalog
            .update_sync(&record, expected_version(req.expected_version))
            .await
            .map_err(|e| errors::catalog(&e))?;
        admin.schedule(&record).await;
        tracing::info!(sync = %id, "sync updated (mapping checked against the table)");
        Ok(Response::new(pb::SyncResponse {
            sync: Some(admin.sync_shown(&Stored {
                value: record,
                version,
            })?),
            warnings,
        }))
    }

    async fn pause_sync(
        &self,
        request: Request<pb::PauseSyncRequest>,
    ) -> Result<Response<pb::Sync>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        Ok(Response::new(
            admin.set_paused(&tenant, &req.id, true).await?,
        ))
    }

    async fn resume_sync(
        &self,
        request: Request<pb::ResumeSyncRequest>,
    ) -> Result<Response<pb::Sync>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        Ok(Response::new(
            admin.set_paused(&tenant, &req.id, false).await?,
        ))
    }

    async fn delete_sync(
        &self,
        request: Request<pb::DeleteSyncRequest>,
    ) -> Result<Response<pb::DeleteSyncResponse>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        let id = sync_id(&tenant, &req.id)?;
        admin.stored_sync(&id).await?;
        // No run starts meanwhile, here (the hold) or elsewhere (the claim).
        let _hold = admin.runs.hold(&id).map_err(|e| match e {
            crate::schedule::TriggerError::AlreadyRunning { run_id, .. } => {
                Status::failed_precondition(format!(
                    "sync {id} is running (run {run_id}); cancel the run first"
                ))
            }
            other => errors::trigger(&other),
        })?;
        let fence = admin
            .store
            .claim(&id, &admin.runs.settings().node_id)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Owned { owner, .. } => {
                    Status::failed_precondition(format!(
                        "sync {id} is running on node {}; cancel the run first",
                        owner.node_id
                    ))
                }
                other => errors::store(&other),
            })?;
        let outcome = async {
            let mut response = pb::DeleteSyncResponse::default();
            let job = admin.job(&id).await?;
            if req.delete_imported_data {
                response = admin.delete_imported(&job).await?;
            }
            if job.sync.mode == SyncMode::Mirror {
                let staging = drop_mirror_staging(&id, &job).await;
                response.message = if response.message.is_empty() {
                    staging
                } else {
                    format!("{}; {staging}", response.message)
                };
            }
            admin
                .store
                .reset_cursor(&fence)
                .await
                .map_err(|e| errors::store(&e))?;
            admin
                .catalog
                .delete_sync(&id)
                .await
                .map_err(|e| errors::catalog(&e))?;
            Ok::<_, Status>(response)
        }
        .await;
        if let Err(e) = admin.store.release(&fence).await {
            tracing::warn!(sync = %id, error = %e, "releasing the claim after a delete");
        }
        let mut response = outcome?;
        if let Some(scheduler) = &admin.scheduler {
            scheduler.remove(&id);
        }
        if response.message.is_empty() {
            response.message = "sync deleted with its cursor and run history".into();
        } else {
            response.message = format!(
                "{}; sync deleted with its cursor and run history",
                response.message
            );
        }
        tracing::info!(sync = %id, delete_imported_data = req.delete_imported_data, "sync deleted");
        Ok(Response::new(response))
    }

    async fn trigger_sync(
        &self,
        request: Request<pb::TriggerSyncRequest>,
    ) -> Result<Response<pb::TriggerSyncResponse>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        let id = sync_id(&tenant, &req.id)?;
        // In a cluster the sync runs where the coordinator assigned it: that node's agent
        // starts it (UNAVAILABLE, naming the node, when it cannot be reached).
        if let Some(peers) = &admin.settings.peers {
            if let Some(forwarded) = peers
                .start_on_assigned_node(&id, TriggerReason::Api)
                .await?
            {
                let run_id = forwarded.run?;
                return Ok(Response::new(pb::TriggerSyncResponse { run_id }));
            }
        }
        let run_id = admin
            .runs
            .start_run(&id, TriggerReason::Api)
            .await
            .map_err(|e| errors::trigger(&e))?;
        if let Some(scheduler) = &admin.scheduler {
            scheduler.note_triggered(&id, Utc::now());
        }
        Ok(Response::new(pb::TriggerSyncResponse { run_id }))
    }

    async fn dry_run(
        &self,
        request: Request<pb::DryRunRequest>,
    ) -> Result<Response<pb::DryRunResponse>, Status> {
        let admin = &self.0;
        let (who, req) = admin.caller(request).await?;
        let tenant = who.tenant_scope(&req.tenant)?;
        let id = sync_id(&tenant, &req.id)?;
        let job = admin.job(&id).await?;
        let samples = match req.samples {
            0 => 5,
            n => n.min(100) as usize,
        };
        let max_rows = (req.max_rows != 0).then_some(req.max_rows);
        Ok(Response::new(admin.dry_run(&job, samples, max_rows).await?))
    }
}

/// Drops a deleted Mirror sync's staging tables. A warehouse that cannot be reached does not block
/// the delete (it may be gone for good): the answer names what was left behind instead.
async fn drop_mirror_staging(id: &SyncId, job: &super::specs::Job) -> String {
    match crate::mirror::drop_staging(&job.source, &job.sync).await {
        Ok(dropped) if dropped.is_empty() => "no Mirror staging tables to drop".into(),
        Ok(dropped) => format!("dropped Mirror staging tables {}", dropped.join(", ")),
        Err(e) => {
            tracing::warn!(sync = %id, error = %e, "dropping the Mirror staging tables of a deleted sync");
            format!(
                "the Mirror staging tables of this sync could not be dropped and are left in the \
                 warehouse's ferry_staging schema: {e}"
            )
        }
    }
}
