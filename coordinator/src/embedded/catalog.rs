//! The catalog in the embedded store: the same redb file, keys and versioned values as the
//! state store, each conditional write one transaction (etcd: one `Txn` with the compares
//! named in [`crate::catalog`]).

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{decode, decode_header, EmbeddedStore, Reader, Txn};
use crate::catalog::{self as cat, Catalog, CatalogError, SourceRecord, Stored, SyncRecord};
use crate::catalog::{TenantRecord, TokenRecord};
use crate::keys;
use crate::records::SyncId;
use crate::store::StoreError;

/// A catalog write's outcome: the store's own failures abort the transaction (outer error);
/// a refused request (inner error) is found before anything is written.
type Outcome<T> = Result<Result<T, CatalogError>, StoreError>;

fn checked(segments: &[(&str, &str)]) -> Result<(), CatalogError> {
    for (what, id) in segments {
        if !keys::is_valid_segment(id) {
            return Err(CatalogError::Store(StoreError::Invalid(format!(
                "{what} {id:?} cannot be part of a key"
            ))));
        }
    }
    Ok(())
}

impl Reader {
    fn stored<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Stored<T>>, StoreError> {
        match self.table.get(key).map_err(super::backend)? {
            Some(bytes) => {
                let header = decode_header(key, bytes.value())?;
                let value = decode::<T>(key, bytes.value())?.value;
                Ok(Some(Stored {
                    value,
                    version: header.mod_revision,
                }))
            }
            None => Ok(None),
        }
    }

    fn stored_under<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<Stored<T>>, StoreError> {
        let end = keys::prefix_end(prefix);
        let mut out = Vec::new();
        for entry in self
            .table
            .range(prefix..end.as_str())
            .map_err(super::backend)?
        {
            let (key, bytes) = entry.map_err(super::backend)?;
            let header = decode_header(key.value(), bytes.value())?;
            let value = decode::<T>(key.value(), bytes.value())?.value;
            out.push(Stored {
                value,
                version: header.mod_revision,
            });
        }
        Ok(out)
    }
}

impl Txn<'_> {
    fn mod_revision(&self, key: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.header(key)?.map(|h| h.mod_revision))
    }

    /// Creates `key`; its parent key must exist.
    fn create_under<T: Serialize>(
        &mut self,
        parent: Option<(&str, String)>,
        key: &str,
        what: String,
        value: &T,
    ) -> Outcome<u64> {
        if let Some((parent_key, parent_what)) = parent {
            if !self.contains(parent_key)? {
                return Ok(Err(CatalogError::NotFound { what: parent_what }));
            }
        }
        if self.contains(key)? {
            return Ok(Err(CatalogError::AlreadyExists { what }));
        }
        self.put(key, value)?;
        Ok(Ok(self.bump_revision()?))
    }

    /// Replaces `key`, which must exist (at `expected` when given).
    fn update_at<T: Serialize>(
        &mut self,
        key: &str,
        what: String,
        expected: Option<u64>,
        value: &T,
    ) -> Outcome<u64> {
        let Some(current) = self.mod_revision(key)? else {
            return Ok(Err(CatalogError::NotFound { what }));
        };
        if let Some(expected) = expected.filter(|&v| v != current) {
            return Ok(Err(CatalogError::Conflict {
                what,
                expected,
                current,
            }));
        }
        self.put(key, value)?;
        Ok(Ok(self.bump_revision()?))
    }

    fn remove_under(&mut self, prefix: &str) -> Result<(), StoreError> {
        for key in self.keys_under(prefix)? {
            self.remove(&key)?;
        }
        Ok(())
    }

    fn names_under(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .keys_under(prefix)?
            .into_iter()
            .map(|k| k[prefix.len()..].to_string())
            .collect())
    }
}

fn flatten<T>(outcome: Outcome<T>) -> Result<T, CatalogError> {
    outcome.unwrap_or_else(|e| Err(CatalogError::Store(e)))
}

impl EmbeddedStore {
    async fn cat_write<R, F>(&self, f: F) -> Result<R, CatalogError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> Outcome<R> + Send + 'static,
    {
        flatten(self.write(move |txn, _| f(txn)).await)
    }

    async fn cat_read<R, F>(&self, f: F) -> Result<R, CatalogError>
    where
        R: Send + 'static,
        F: FnOnce(&Reader) -> Result<R, StoreError> + Send + 'static,
    {
        Ok(self.read(f).await?)
    }
}

fn tenant_what(id: &str) -> String {
    format!("tenant '{id}'")
}

fn source_what(tenant: &str, id: &str) -> String {
    format!("source '{id}' of tenant '{tenant}'")
}

fn sync_what(sync: &SyncId) -> String {
    format!("sync '{}' of tenant '{}'", sync.sync(), sync.tenant())
}

#[async_trait]
impl Catalog for EmbeddedStore {
    async fn create_tenant(&self, tenant: &TenantRecord) -> Result<u64, CatalogError> {
        checked(&[("tenant id", &tenant.id)])?;
        let tenant = tenant.clone();
        self.cat_write(move |txn| {
            txn.create_under(
                None,
                &cat::tenant_key(&tenant.id),
                tenant_what(&tenant.id),
                &tenant,
            )
        })
        .await
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<Stored<TenantRecord>>, CatalogError> {
        if !keys::is_valid_segment(id) {
            return Ok(None);
        }
        let key = cat::tenant_key(id);
        self.cat_read(move |r| r.stored(&key)).await
    }

    async fn list_tenants(&self) -> Result<Vec<Stored<TenantRecord>>, CatalogError> {
        self.cat_read(|r| r.stored_under(cat::TENANTS)).await
    }

    async fn update_tenant(
        &self,
        tenant: &TenantRecord,
        expected_version: Option<u64>,
    ) -> Result<u64, CatalogError> {
        checked(&[("tenant id", &tenant.id)])?;
        let tenant = tenant.clone();
        self.cat_write(move |txn| {
            txn.update_at(
                &cat::tenant_key(&tenant.id),
                tenant_what(&tenant.id),
                expected_version,
                &tenant,
            )
        })
        .await
    }

    async fn delete_tenant(&self, id: &str, cascade: bool) -> Result<(), CatalogError> {
        checked(&[("tenant id", id)])?;
        let id = id.to_string();
        self.cat_write(move |txn| {
            let key = cat::tenant_key(&id);
            if !txn.contains(&key)? {
                return Ok(Err(CatalogError::NotFound {
                    what: tenant_what(&id),
                }));
            }
            let mut dependants: Vec<String> = txn
                .names_under(&cat::sources_of(&id))?
                .into_iter()
                .map(|s| format!("source '{s}'"))
                .collect();
            dependants.extend(
                txn.names_under(&cat::syncs_of(&id))?
                    .into_iter()
                    .map(|s| format!("sync '{s}'")),
            );
            if !cascade && !dependants.is_empty() {
                return Ok(Err(CatalogError::InUse {
                    what: tenant_what(&id),
                    by: dependants,
                }));
            }
            for prefix in [
                cat::tokens_of(&id),
                cat::sources_of(&id),
                cat::syncs_of(&id),
                format!("{}{id}/", keys::RUNS),
                format!("{}{id}/", keys::CURSORS),
            ] {
                txn.remove_under(&prefix)?;
            }
            txn.remove(&key)?;
            Ok(Ok(()))
        })
        .await
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<(), CatalogError> {
        checked(&[("tenant id", &token.tenant), ("token id", &token.id)])?;
        let token = token.clone();
        self.cat_write(move |txn| {
            let what = format!("token '{}'", token.id);
            let parent = cat::tenant_key(&token.tenant);
            txn.create_under(
                Some((&parent, tenant_what(&token.tenant))),
                &cat::token_key(&token.tenant, &token.id),
                what,
                &token,
            )
            .map(|r| r.map(drop))
        })
        .await
    }

    async fn get_token(&self, tenant: &str, id: &str) -> Result<Option<TokenRecord>, CatalogError> {
        if !keys::is_valid_segment(tenant) || !keys::is_valid_segment(id) {
            return Ok(None);
        }
        let key = cat::token_key(tenant, id);
        self.cat_read(move |r| Ok(r.stored::<TokenRecord>(&key)?.map(|s| s.value)))
            .await
    }

    async fn list_tokens(&self, tenant: &str) -> Result<Vec<TokenRecord>, CatalogError> {
        checked(&[("tenant id", tenant)])?;
        let prefix = cat::tokens_of(tenant);
        self.cat_read(move |r| {
            Ok(r.stored_under::<TokenRecord>(&prefix)?
                .into_iter()
                .map(|s| s.value)
                .collect())
        })
        .await
    }

    async fn delete_token(&self, tenant: &str, id: &str) -> Result<(), CatalogError> {
        checked(&[("tenant id", tenant), ("token id", id)])?;
        let key = cat::token_key(tenant, id);
        let what = format!("token '{id}'");
        self.cat_write(move |txn| {
            if !txn.contains(&key)? {
                return Ok(Err(CatalogError::NotFound { what }));
            }
            txn.remove(&key)?;
            Ok(Ok(()))
        })
        .await
    }

    async fn create_source(&self, source: &SourceRecord) -> Result<u64, CatalogError> {
        checked(&[("tenant id", &source.tenant), ("source id", &source.id)])?;
        let source = source.clone();
        self.cat_write(move |txn| {
            let parent = cat::tenant_key(&source.tenant);
            txn.create_under(
                Some((&parent, tenant_what(&source.tenant))),
                &cat::source_key(&source.tenant, &source.id),
                source_what(&source.tenant, &source.id),
                &source,
            )
        })
        .await
    }

    async fn get_source(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Stored<SourceRecord>>, CatalogError> {
        if !keys::is_valid_segment(tenant) || !keys::is_valid_segment(id) {
            return Ok(None);
        }
        let key = cat::source_key(tenant, id);
        self.cat_read(move |r| r.stored(&key)).await
    }

    async fn list_sources(&self, tenant: &str) -> Result<Vec<Stored<SourceRecord>>, CatalogError> {
        checked(&[("tenant id", tenant)])?;
        let prefix = cat::sources_of(tenant);
        self.cat_read(move |r| r.stored_under(&prefix)).await
    }

    async fn update_source(
        &self,
        source: &SourceRecord,
        expected_version: Option<u64>,
    ) -> Result<u64, CatalogError> {
        checked(&[("tenant id", &source.tenant), ("source id", &source.id)])?;
        let source = source.clone();
        self.cat_write(move |txn| {
            txn.update_at(
                &cat::source_key(&source.tenant, &source.id),
                source_what(&source.tenant, &source.id),
                expected_version,
                &source,
            )
        })
        .await
    }

    async fn delete_source(&self, tenant: &str, id: &str) -> Result<(), CatalogError> {
        checked(&[("tenant id", tenant), ("source id", id)])?;
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.cat_write(move |txn| {
            let key = cat::source_key(&tenant, &id);
            if !txn.contains(&key)? {
                return Ok(Err(CatalogError::NotFound {
                    what: source_what(&tenant, &id),
                }));
            }
            let mut users = Vec::new();
            for sync_key in txn.keys_under(&cat::syncs_of(&tenant))? {
                if let Some(sync) = txn.get::<SyncRecord>(&sync_key)? {
                    if sync.value.source == id {
                        users.push(format!("sync '{}'", sync.value.id));
                    }
                }
            }
            if !users.is_empty() {
                return Ok(Err(CatalogError::InUse {
                    what: source_what(&tenant, &id),
                    by: users,
                }));
            }
            txn.remove(&key)?;
            Ok(Ok(()))
        })
        .await
    }

    async fn create_sync(&self, sync: &SyncRecord) -> Result<u64, CatalogError> {
        let id = sync.sync_id()?;
        checked(&[("source id", &sync.source)])?;
        let sync = sync.clone();
        self.cat_write(move |txn| {
            if !txn.contains(&cat::tenant_key(&sync.tenant))? {
                return Ok(Err(CatalogError::NotFound {
                    what: tenant_what(&sync.tenant),
                }));
            }
            let source = cat::source_key(&sync.tenant, &sync.source);
            txn.create_under(
                Some((&source, source_what(&sync.tenant, &sync.source))),
                &cat::sync_key(&id),
                sync_what(&id),
                &sync,
            )
        })
        .await
    }

    async fn get_sync(&self, sync: &SyncId) -> Result<Option<Stored<SyncRecord>>, CatalogError> {
        let key = cat::sync_key(sync);
        self.cat_read(move |r| r.stored(&key)).await
    }

    async fn list_syncs(&self, tenant: &str) -> Result<Vec<Stored<SyncRecord>>, CatalogError> {
        checked(&[("tenant id", tenant)])?;
        let prefix = cat::syncs_of(tenant);
        self.cat_read(move |r| r.stored_under(&prefix)).await
    }

    async fn list_all_syncs(&self) -> Result<Vec<Stored<SyncRecord>>, CatalogError> {
        self.cat_read(|r| r.stored_under(cat::SYNCS)).await
    }

    async fn update_sync(
        &self,
        sync: &SyncRecord,
        expected_version: Option<u64>,
    ) -> Result<u64, CatalogError> {
        let id = sync.sync_id()?;
        checked(&[("source id", &sync.source)])?;
        let sync = sync.clone();
        self.cat_write(move |txn| {
            let source = cat::source_key(&sync.tenant, &sync.source);
            if !txn.contains(&source)? {
                return Ok(Err(CatalogError::NotFound {
                    what: source_what(&sync.tenant, &sync.source),
                }));
            }
            txn.update_at(&cat::sync_key(&id), sync_what(&id), expected_version, &sync)
        })
        .await
    }

    async fn delete_sync(&self, sync: &SyncId) -> Result<(), CatalogError> {
        let sync = sync.clone();
        self.cat_write(move |txn| {
            let key = cat::sync_key(&sync);
            if !txn.contains(&key)? {
                return Ok(Err(CatalogError::NotFound {
                    what: sync_what(&sync),
                }));
            }
            txn.remove_under(&keys::runs_of(&sync))?;
            txn.remove(&key)?;
            Ok(Ok(()))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::contract::{self, tenant};
    use crate::embedded::EmbeddedSettings;

    /// The catalog contract (`catalog/contract.rs`), shared with the etcd store.
    async fn fresh(dir: &tempfile::TempDir) -> EmbeddedStore {
        EmbeddedStore::open_in(dir.path(), EmbeddedSettings::default()).unwrap()
    }

    #[tokio::test]
    async fn objects_live_under_their_tenant_and_updates_compare_versions() {
        let dir = tempfile::tempdir().unwrap();
        contract::objects_live_under_their_tenant_and_updates_compare_versions(&fresh(&dir).await)
            .await;
    }

    #[tokio::test]
    async fn refusals_name_what_is_missing_or_stale() {
        let dir = tempfile::tempdir().unwrap();
        contract::refusals_name_what_is_missing_or_stale(&fresh(&dir).await).await;
    }

    #[tokio::test]
    async fn concurrent_creates_of_one_object_let_one_win() {
        let dir = tempfile::tempdir().unwrap();
        contract::concurrent_creates_of_one_object_let_one_win(&fresh(&dir).await).await;
    }

    #[tokio::test]
    async fn the_catalog_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open_in(dir.path(), EmbeddedSettings::default()).unwrap();
            store.create_tenant(&tenant("acme")).await.unwrap();
        }
        let store = EmbeddedStore::open_in(dir.path(), EmbeddedSettings::default()).unwrap();
        assert_eq!(store.list_tenants().await.unwrap().len(), 1);
    }
}
