//! What operators define through the admin API: tenants, their API tokens, sources and syncs.
//! The [`Catalog`] trait is implemented by the embedded store (the same redb file as the state
//! store, [`crate::EmbeddedStore`]) and is shaped for etcd: plain keys and JSON values, and
//! every conditional write a compare on one key's revision.
//!
//! ```text
//! /ferry/v1/tenants/<tenant>                 TenantRecord
//! /ferry/v1/tokens/<tenant>/<token id>       TokenRecord (the token's SHA-256, never the token)
//! /ferry/v1/sources/<tenant>/<source>        SourceRecord (credentials sealed)
//! /ferry/v1/syncs/<tenant>/<sync>            SyncRecord
//! ```
//!
//! A record's version is its key's mod revision (etcd's `mod_revision`): an update given an
//! expected version is a transaction `mod_revision(key) == expected`. Creates are
//! `create_revision(key) == 0` plus `create_revision(parent tenant) != 0`. Deletes that must
//! find nothing depending on the object (a source used by syncs, a tenant with objects) read
//! the dependants' prefix and compare it unchanged in the same transaction.
//!
//! Specs are kept as JSON in the shape of [`ferry_core::spec`]'s serde form (credentials moved
//! out into [`Sealed`]), so a record turns back into a spec by deserializing it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::records::SyncId;
use crate::secrets::Sealed;
use crate::store::StoreError;

pub const TENANTS: &str = "/ferry/v1/tenants/";
pub const TOKENS: &str = "/ferry/v1/tokens/";
pub const SOURCES: &str = "/ferry/v1/sources/";
pub const SYNCS: &str = "/ferry/v1/syncs/";

pub fn tenant_key(tenant: &str) -> String {
    format!("{TENANTS}{tenant}")
}

pub fn tokens_of(tenant: &str) -> String {
    format!("{TOKENS}{tenant}/")
}

pub fn token_key(tenant: &str, id: &str) -> String {
    format!("{}{id}", tokens_of(tenant))
}

pub fn sources_of(tenant: &str) -> String {
    format!("{SOURCES}{tenant}/")
}

pub fn source_key(tenant: &str, source: &str) -> String {
    format!("{}{source}", sources_of(tenant))
}

pub fn syncs_of(tenant: &str) -> String {
    format!("{SYNCS}{tenant}/")
}

pub fn sync_key(sync: &SyncId) -> String {
    format!("{}{}", syncs_of(sync.tenant()), sync.sync())
}

/// A stored record and its version (its key's mod revision).
#[derive(Debug, Clone, PartialEq)]
pub struct Stored<T> {
    pub value: T,
    pub version: u64,
}

/// One analytics project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: String,
    /// [`ferry_core::spec::TenantSpec`] as JSON, credentials removed.
    pub spec: serde_json::Value,
    /// Its credentials (service-account secret, project token, webhook secret).
    #[serde(default)]
    pub credentials: Sealed,
    /// The destination is Ferry's bundled receiver, whose extensions (event deletes) may be
    /// used.
    #[serde(default)]
    pub receiver_extensions: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A tenant API token: only its SHA-256 is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub tenant: String,
    pub id: String,
    pub name: String,
    /// Lowercase hex SHA-256 of the whole bearer token.
    pub sha256: String,
    pub created_at: DateTime<Utc>,
}

/// A warehouse connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub tenant: String,
    pub id: String,
    /// [`ferry_core::spec::SourceSpec`] as JSON, credentials removed.
    pub spec: serde_json::Value,
    #[serde(default)]
    pub credentials: Sealed,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A sync and its operational state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub tenant: String,
    pub id: String,
    /// The source it reads (also in the spec; here so dependants are found without parsing).
    pub source: String,
    /// [`ferry_core::spec::SyncSpec`] as JSON.
    pub spec: serde_json::Value,
    /// Not run by its schedule or a trigger while set.
    #[serde(default)]
    pub paused: bool,
    /// Its webhook's secret, when it has one.
    #[serde(default)]
    pub credentials: Sealed,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SyncRecord {
    pub fn sync_id(&self) -> Result<SyncId, StoreError> {
        SyncId::new(self.tenant.clone(), self.id.clone())
    }

    /// The schedule as written (`hourly`, a cron expression, …), if any.
    pub fn schedule(&self) -> Option<&str> {
        self.spec_text("schedule")
    }

    /// The IANA zone the schedule is read in (None: UTC).
    pub fn timezone(&self) -> Option<&str> {
        self.spec_text("schedule_timezone")
    }

    fn spec_text(&self, field: &str) -> Option<&str> {
        self.spec
            .get(field)
            .and_then(|s| s.as_str())
            .filter(|s| !s.trim().is_empty())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{what} does not exist")]
    NotFound { what: String },
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    /// An update or delete whose expected version is not the stored one.
    #[error("{what} was changed concurrently (expected version {expected}, stored {current})")]
    Conflict {
        what: String,
        expected: u64,
        current: u64,
    },
    /// A delete refused because other objects depend on this one.
    #[error("{what} is in use by {}", .by.join(", "))]
    InUse { what: String, by: Vec<String> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The admin API's objects. Object-safe: the node holds an `Arc<dyn Catalog>`.
///
/// Creates fail with `AlreadyExists` when the key exists and with `NotFound` when the parent
/// (the tenant; a sync's source) does not. `expected_version: Some(v)` makes an update or delete
/// conditional on the stored version being `v`.
#[async_trait]
pub trait Catalog: Send + Sync {
    async fn create_tenant(&self, tenant: &TenantRecord) -> Result<u64, CatalogError>;
    async fn get_tenant(&self, id: &str) -> Result<Option<Stored<TenantRecord>>, CatalogError>;
    async fn list_tenants(&self) -> Result<Vec<Stored<TenantRecord>>, CatalogError>;
    async fn update_tenant(
        &self,
        tenant: &TenantRecord,
        expected_version: Option<u64>,
    ) -> Result<u64, CatalogError>;
    /// Without `cascade`, refused (`InUse`) while the tenant has sources or syncs. With it, its
    /// tokens, sources, syncs and their cursors and run history go too. Tokens never block.
    async fn delete_tenant(&self, id: &str, cascade: bool) -> Result<(), CatalogError>;

    async fn create_token(&self, token: &TokenRecord) -> Result<(), CatalogError>;
    async fn get_token(&self, tenant: &str, id: &str) -> Result<Option<TokenRecord>, CatalogError>;
    async fn list_tokens(&self, tenant: &str) -> Result<Vec<TokenRecord>, CatalogError>;
    /// `NotFound` when there is no such token.
    async fn delete_token(&self, tenant: &str, id: &str) -> Result<(), CatalogError>;

    async fn create_source(&self, source: &SourceRecord) -> Result<u64, CatalogError>;
    async fn get_source(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Stored<SourceRecord>>, CatalogError>;
    async fn list_sources(&self, tenant: &str) -> Result<Vec<Stored<SourceRecord>>, CatalogError>;
    async fn update_source(
        &self,
        source: &SourceRecord,
        expected_version: Option<u64>,
    ) -> Result<u64, CatalogError>;
    /// Refused (`InUse`, naming them) while syncs read the source.
    async fn delete_source(&self, tenant: &str, id: &str) -> Result<(), CatalogError>;

    async fn create_sync(&self, sync: &SyncRecord) -> Result<u64, CatalogError>;
    async fn get_sync(&self, sync: &SyncId) -> Result<Option<Stored<SyncRecord>>, CatalogError>;
    async fn list_syncs(&self, tenant: &str) -> Result<Vec<Stored<SyncRecord>>, CatalogError>;
    /// Every tenant's syncs (for the scheduler).
    async fn list_all_syncs(&self) -> Result<Vec<Stored<SyncRecord>>, CatalogError>;
    async fn update_sync(
        &self,
        sync: &SyncRecord,
        expected_version: Option<u64>,
    ) -> Result<u64, CatalogError>;
    /// Deletes the sync and its run history. Its cursor is the state store's (fenced): the
    /// caller resets it under a claim first.
    async fn delete_sync(&self, sync: &SyncId) -> Result<(), CatalogError>;
}

#[cfg(test)]
pub(crate) mod contract;
