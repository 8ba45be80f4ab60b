//! From catalog records to the specs a run needs, and back: credentials are moved out of a
//! spec's JSON and sealed before it is stored, and opened and put back when a run needs them.
//! Read paths (the API's Get and List) never open them: they see which fields are set.

use std::sync::Arc;

use ferry_core::spec::{SourceSpec, SyncSpec, TenantSpec};
use serde::de::DeserializeOwned;

use crate::catalog::{Catalog, CatalogError, SourceRecord, Stored, SyncRecord, TenantRecord};
use crate::records::SyncId;
use crate::secrets::{self, Plain, Sealed, SecretBox, SecretError};

/// The JSON pointers of a tenant spec's credentials.
pub const TENANT_SECRETS: &[&str] = &[
    "/auth/service_account/secret",
    "/auth/project_token",
    "/project_token",
    "/webhook/secret",
];

/// The JSON pointers of a source spec's credentials.
pub const SOURCE_SECRETS: &[&str] = &[
    "/kind/postgres/password",
    "/kind/postgres/ssh_tunnel/private_key",
    "/kind/redshift/secret_access_key",
    "/kind/redshift/session_token",
];

/// The JSON pointers of a sync spec's credentials.
pub const SYNC_SECRETS: &[&str] = &["/webhook/secret"];

/// The associated data that binds sealed credentials to their object.
pub fn tenant_object(tenant: &str) -> String {
    format!("tenant:{tenant}")
}

pub fn source_object(tenant: &str, source: &str) -> String {
    format!("source:{tenant}/{source}")
}

pub fn sync_object(sync: &SyncId) -> String {
    format!("sync:{}/{}", sync.tenant(), sync.sync())
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A stored spec no longer reads as one (written by another version, say).
    #[error("the stored {what} is not a valid spec: {reason}")]
    Spec { what: String, reason: String },
}

/// Everything one run of a sync needs, credentials included.
#[derive(Debug, Clone)]
pub struct Job {
    pub tenant: TenantSpec,
    pub source: SourceSpec,
    pub sync: SyncSpec,
    pub record: Stored<SyncRecord>,
    /// The tenant's destination is the bundled receiver (its extensions may be used).
    pub receiver_extensions: bool,
}

/// Reads specs out of the catalog.
#[derive(Clone)]
pub struct SpecResolver {
    pub catalog: Arc<dyn Catalog>,
    pub secrets: SecretBox,
}

impl std::fmt::Debug for SpecResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpecResolver")
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

/// Deserializes a stored spec (`spec` with `plain` put back).
pub fn spec_from<T: DeserializeOwned>(
    what: &str,
    spec: &serde_json::Value,
    plain: &Plain,
) -> Result<T, ResolveError> {
    let mut full = spec.clone();
    secrets::insert(&mut full, plain);
    serde_json::from_value(full).map_err(|e| ResolveError::Spec {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// The spec as the API shows it: each stored credential is an empty string (so the spec
/// still reads), the values stay sealed.
pub fn redacted_spec<T: DeserializeOwned>(
    what: &str,
    spec: &serde_json::Value,
    sealed: &Sealed,
) -> Result<T, ResolveError> {
    let blanks = Plain(
        sealed
            .fields
            .iter()
            .map(|f| (f.clone(), String::new()))
            .collect(),
    );
    spec_from(what, spec, &blanks)
}

impl SpecResolver {
    pub fn new(catalog: Arc<dyn Catalog>, secrets: SecretBox) -> Self {
        Self { catalog, secrets }
    }

    pub fn tenant_spec(&self, record: &TenantRecord) -> Result<TenantSpec, ResolveError> {
        let plain = self
            .secrets
            .open(&tenant_object(&record.id), &record.credentials)?;
        spec_from(&format!("tenant '{}'", record.id), &record.spec, &plain)
    }

    pub fn source_spec(&self, record: &SourceRecord) -> Result<SourceSpec, ResolveError> {
        let plain = self.secrets.open(
            &source_object(&record.tenant, &record.id),
            &record.credentials,
        )?;
        spec_from(
            &format!("source '{}' of tenant '{}'", record.id, record.tenant),
            &record.spec,
            &plain,
        )
    }

    pub fn sync_spec(&self, record: &SyncRecord) -> Result<SyncSpec, ResolveError> {
        let id = record.sync_id().map_err(CatalogError::from)?;
        let plain = self.secrets.open(&sync_object(&id), &record.credentials)?;
        spec_from(&format!("sync {id}"), &record.spec, &plain)
    }

    pub async fn tenant(
        &self,
        id: &str,
    ) -> Result<(TenantSpec, Stored<TenantRecord>), ResolveError> {
        let record = self
            .catalog
            .get_tenant(id)
            .await?
            .ok_or_else(|| CatalogError::NotFound {
                what: format!("tenant '{id}'"),
            })?;
        Ok((self.tenant_spec(&record.value)?, record))
    }

    pub async fn source(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<(SourceSpec, Stored<SourceRecord>), ResolveError> {
        let record =
            self.catalog
                .get_source(tenant, id)
                .await?
                .ok_or_else(|| CatalogError::NotFound {
                    what: format!("source '{id}' of tenant '{tenant}'"),
                })?;
        Ok((self.source_spec(&record.value)?, record))
    }

    /// The sync, its source and its tenant, credentials opened.
    pub async fn job(&self, sync: &SyncId) -> Result<Job, ResolveError> {
        let record = self
            .catalog
            .get_sync(sync)
            .await?
            .ok_or_else(|| CatalogError::NotFound {
                what: format!("sync '{}' of tenant '{}'", sync.sync(), sync.tenant()),
            })?;
        let spec = self.sync_spec(&record.value)?;
        let (tenant, tenant_record) = self.tenant(sync.tenant()).await?;
        let (source, _) = self.source(sync.tenant(), &record.value.source).await?;
        Ok(Job {
            tenant,
            source,
            sync: spec,
            record,
            receiver_extensions: tenant_record.value.receiver_extensions,
        })
    }
}

/// A spec from a request, split for storage.
#[derive(Debug)]
pub struct Prepared {
    /// The whole spec, credentials included, to deserialize and validate.
    pub full: serde_json::Value,
    /// The spec without credentials, to store.
    pub public: serde_json::Value,
    /// The credentials, to seal.
    pub plain: Plain,
}

/// Credentials a spec cannot do without: left empty, they stay in the spec as `""` so that
/// validation names them ("must not be empty") instead of the spec failing to read.
const REQUIRED_SECRETS: &[&str] = &[
    "/auth/service_account/secret",
    "/auth/project_token",
    "/kind/postgres/ssh_tunnel/private_key",
];

/// Splits a request's spec. A credential field that is present but empty keeps its `stored`
/// value (an update that does not repeat a password keeps it), or else is unset; one that is
/// absent is dropped.
pub fn prepare(json: serde_json::Value, fields: &[&str], stored: &Plain) -> Prepared {
    let mut full = json;
    let mut public = full.clone();
    let mut plain = secrets::extract(&mut public, fields);
    for field in fields {
        let empty = full.pointer(field).is_some_and(|v| v.as_str() == Some(""));
        if !empty {
            continue;
        }
        match stored.0.get(*field) {
            Some(value) => {
                plain.0.insert((*field).to_string(), value.clone());
            }
            None if !REQUIRED_SECRETS.contains(field) => {
                // An optional credential left empty is not set.
                secrets::extract(&mut full, &[field]);
            }
            None => {}
        }
    }
    secrets::insert(&mut full, &plain);
    Prepared {
        full,
        public,
        plain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_credentials_keep_the_stored_ones_and_absent_ones_go() {
        let stored = Plain(
            [
                ("/kind/postgres/password".to_string(), "old-pw".to_string()),
                ("/webhook/secret".to_string(), "old-hook".to_string()),
            ]
            .into(),
        );
        let request = serde_json::json!({"kind": {"postgres": {"host": "db", "password": ""}}});
        let p = prepare(
            request,
            &["/kind/postgres/password", "/webhook/secret"],
            &stored,
        );
        assert_eq!(p.full["kind"]["postgres"]["password"], "old-pw");
        assert_eq!(p.plain.0.len(), 1, "the webhook is gone, so is its secret");
        assert!(!p.public.to_string().contains("old-pw"));

        // Empty and nothing stored: an optional credential is unset, a required one stays
        // empty for validation to name.
        let request = serde_json::json!({"webhook": {"url": "u", "secret": ""}, "auth": {"project_token": ""}});
        let fresh = prepare(
            request,
            &["/webhook/secret", "/auth/project_token"],
            &Plain::default(),
        );
        assert!(
            fresh.full["webhook"].get("secret").is_none(),
            "{}",
            fresh.full
        );
        assert_eq!(fresh.full["auth"]["project_token"], "");
        assert!(fresh.plain.0.is_empty());

        let request = serde_json::json!({"kind": {"postgres": {"password": "new-pw"}}});
        let p = prepare(request, &["/kind/postgres/password"], &stored);
        assert_eq!(p.plain.0["/kind/postgres/password"], "new-pw");
        assert!(!p.public.to_string().contains("new-pw"));
    }
}
