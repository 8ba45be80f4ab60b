//! The [`Catalog`] on etcd: the embedded catalog's keys and JSON values
//! ([`crate::catalog`]), a record's version its key's mod revision, and every check inside the
//! transaction that writes:
//!
//! - create: `create_revision(key) == 0`, and the parent exists (`create_revision(parent) > 0`);
//! - update: `mod_revision(key) == expected` (or only that the key exists);
//! - deletes that must find no dependants compare the dependants' range unchanged since it was
//!   read (`mod_revision(range) < read revision + 1`: nothing in it was written since), so a
//!   sync created on a source while the source is being deleted makes the delete retry.
//!
//! It is implemented on [`EtcdStore`], as the embedded catalog is on the embedded store: one
//! connection serves the admin API's objects and the syncs' state.

use async_trait::async_trait;
use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::connection::store_error;
use super::etcd_store::EtcdStore;
use crate::catalog::{self as cat, Catalog, CatalogError, SourceRecord, Stored, SyncRecord};
use crate::catalog::{TenantRecord, TokenRecord};
use crate::keys;
use crate::records::SyncId;
use crate::store::StoreError;

/// A delete whose checks keep failing because the objects keep changing gives up after this
/// many rounds (each one re-reads and re-checks).
const DELETE_ROUNDS: usize = 5;

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

fn tenant_what(id: &str) -> String {
    format!("tenant '{id}'")
}

fn source_what(tenant: &str, id: &str) -> String {
    format!("source '{id}' of tenant '{tenant}'")
}

fn sync_what(sync: &SyncId) -> String {
    format!("sync '{}' of tenant '{}'", sync.sync(), sync.tenant())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CatalogError> {
    serde_json::to_vec(value)
        .map_err(|e| StoreError::Backend(format!("encoding a record: {e}")).into())
}

fn stored<T: DeserializeOwned>(kv: &KeyValue) -> Result<Stored<T>, StoreError> {
    let value = serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        reason: e.to_string(),
    })?;
    Ok(Stored {
        value,
        version: kv.mod_revision() as u64,
    })
}

fn exists(key: &str) -> Compare {
    Compare::create_revision(key, CompareOp::Greater, 0)
}

fn absent(key: &str) -> Compare {
    Compare::create_revision(key, CompareOp::Equal, 0)
}

/// No key under `prefix` was written after `revision`.
fn unchanged_since(prefix: &str, revision: i64) -> Compare {
    Compare::mod_revision(prefix, CompareOp::Less, revision + 1).with_prefix()
}

fn delete_prefix(prefix: String) -> TxnOp {
    TxnOp::delete(prefix, Some(DeleteOptions::new().with_prefix()))
}

/// Whether the `n`th operation of a refused transaction's `or_else` (all `get`s) found a key.
fn found(resp: &TxnResponse, n: usize) -> Option<KeyValue> {
    match resp.op_responses().into_iter().nth(n) {
        Some(TxnOpResponse::Get(get)) => get.kvs().first().cloned(),
        _ => None,
    }
}

fn revision(resp: &TxnResponse) -> Result<u64, CatalogError> {
    resp.header()
        .map(|h| h.revision() as u64)
        .filter(|r| *r > 0)
        .ok_or_else(|| StoreError::Backend("a write's response has no revision".into()).into())
}

impl EtcdStore {
    async fn cat_txn(&self, what: &str, txn: Txn) -> Result<TxnResponse, CatalogError> {
        Ok(self
            .client()
            .txn(txn)
            .await
            .map_err(|e| store_error(what, e))?)
    }

    async fn cat_get<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Stored<T>>, CatalogError> {
        let resp = self
            .client()
            .get(key, None)
            .await
            .map_err(|e| store_error(&format!("reading {key}"), e))?;
        Ok(resp.kvs().first().map(stored).transpose()?)
    }

    /// The records under `prefix` and the revision they were read at.
    async fn cat_list<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<(Vec<Stored<T>>, i64), CatalogError> {
        let resp = self
            .client()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| store_error(&format!("listing {prefix}"), e))?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let records = resp
            .kvs()
            .iter()
            .map(stored)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((records, revision))
    }

    /// Creates `key` if it is absent and its parent (if any) exists.
    async fn cat_create<T: Serialize>(
        &self,
        parent: Option<(String, String)>,
        key: String,
        what: String,
        value: &T,
    ) -> Result<u64, CatalogError> {
        let mut compares = vec![absent(&key)];
        let mut diagnose = vec![TxnOp::get(
            key.as_str(),
            Some(GetOptions::new().with_keys_only()),
        )];
        if let Some((parent_key, _)) = &parent {
            compares.push(exists(parent_key));
            diagnose.push(TxnOp::get(
                parent_key.as_str(),
                Some(GetOptions::new().with_keys_only()),
            ));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::put(key.as_str(), encode(value)?, None)])
            .or_else(diagnose);
        let resp = self.cat_txn(&format!("creating {what}"), txn).await?;
        if resp.succeeded() {
            return revision(&resp);
        }
        if let Some((_, parent_what)) = parent {
            if found(&resp, 1).is_none() {
                return Err(CatalogError::NotFound { what: parent_what });
            }
        }
        Err(CatalogError::AlreadyExists { what })
    }

    /// Replaces `key`, which must exist (at `expected` when given), and so must `requires`.
    async fn cat_update<T: Serialize>(
        &self,
        key: String,
        what: String,
        expected: Option<u64>,
        requires: Option<(String, String)>,
        value: &T,
    ) -> Result<u64, CatalogError> {
        let mut compares = vec![match expected {
            Some(v) => Compare::mod_revision(key.as_str(), CompareOp::Equal, v as i64),
            None => exists(&key),
        }];
        let mut diagnose = vec![TxnOp::get(
            key.as_str(),
            Some(GetOptions::new().with_keys_only()),
        )];
        if let Some((required, _)) = &requires {
            compares.push(exists(required));
            diagnose.push(TxnOp::get(
                required.as_str(),
                Some(GetOptions::new().with_keys_only()),
            ));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::put(key.as_str(), encode(value)?, None)])
            .or_else(diagnose);
        let resp = self.cat_txn(&format!("updating {what}"), txn).await?;
        if resp.succeeded() {
            return revision(&resp);
        }
        if let Some((_, required_what)) = requires {
            if found(&resp, 1).is_none() {
                return Err(CatalogError::NotFound {
                    what: required_what,
                });
            }
        }
        match found(&resp, 0) {
            None => Err(CatalogError::NotFound { what }),
            Some(kv) => Err(CatalogError::Conflict {
                what,
                expected: expected.unwrap_or(0),
                current: kv.mod_revision() as u64,
            }),
        }
    }

    /// Deletes `key` (and everything under `also`) if it exists.
    async fn cat_delete(
        &self,
        key: String,
        what: String,
        also: Vec<String>,
    ) -> Result<(), CatalogError> {
        let mut ops: Vec<TxnOp> = also.into_iter().map(delete_prefix).collect();
        ops.push(TxnOp::delete(key.as_str(), None));
        let txn = Txn::new().when([exists(&key)]).and_then(ops);
        let resp = self.cat_txn(&format!("deleting {what}"), txn).await?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(CatalogError::NotFound { what })
        }
    }
}

#[async_trait]
impl Catalog for EtcdStore {
    async fn create_tenant(&self, tenant: &TenantRecord) -> Result<u64, CatalogError> {
        checked(&[("tenant id", &tenant.id)])?;
        self.cat_create(
            None,
            cat::tenant_key(&tenant.id),
            tenant_what(&tenant.id),
            tenant,
        )
        .await
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<Stored<TenantRecord>>, CatalogError> {
        if !keys::is_valid_segment(id) {
            return Ok(None);
        }
        self.cat_get(&cat::tenant_key(id)).await
    }

    async fn list_tenants(&self) -> Result<Vec<Stored<TenantRecord>>, CatalogError> {
        Ok(self.cat_list(cat::TENANTS).await?.0)
    }

    async fn update_tenant(
        &self,
        tenant: &TenantRecord,
        expected_version: Option<u64>,
    ) -> Result<u64, CatalogError> {
        checked(&[("tenant id", &tenant.id)])?;
        self.cat_update(
            cat::tenant_key(&tenant.id),
            tenant_what(&tenant.id),
            expected_version,
            None,
            tenant,
        )
        .await
    }

    async fn delete_tenant(&self, id: &str, cascade: bool) -> Result<(), CatalogError> {
        checked(&[("tenant id", id)])?;
        let key = cat::tenant_key(id);
        let everything = vec![
            cat::tokens_of(id),
            cat::sources_of(id),
            cat::syncs_of(id),
            format!("{}{id}/", keys::RUNS),
            format!("{}{id}/", keys::CURSORS),
        ];
        if cascade {
            return self.cat_delete(key, tenant_what(id), everything).await;
        }
        for _ in 0..DELETE_ROUNDS {
            if self.cat_get::<TenantRecord>(&key).await?.is_none() {
                return Err(CatalogError::NotFound {
                    what: tenant_what(id),
                });
            }
            let (sources, _) = self.cat_list::<SourceRecord>(&cat::sources_of(id)).await?;
            let (syncs, _) = self.cat_list::<SyncRecord>(&cat::syncs_of(id)).await?;
            let mut by: Vec<String> = sources
                .iter()
                .map(|s| format!("source '{}'", s.value.id))
                .collect();
            by.extend(syncs.iter().map(|s| format!("sync '{}'", s.value.id)));
            if !by.is_empty() {
                return Err(CatalogError::InUse {
                    what: tenant_what(id),
                    by,
                });
            }
            // Still nothing under the tenant when the delete lands.
            let txn = Txn::new()
                .when([
                    exists(&key),
                    absent(&cat::sources_of(id)).with_prefix(),
                    absent(&cat::syncs_of(id)).with_prefix(),
                ])
                .and_then(
                    everything
                        .iter()
                        .cloned()
                        .map(delete_prefix)
                        .chain([TxnOp::delete(key.as_str(), None)])
                        .collect::<Vec<_>>(),
                );
            if self
                .cat_txn(&format!("deleting {}", tenant_what(id)), txn)
                .await?
                .succeeded()
            {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(format!(
            "deleting {}: its objects kept changing; try again",
            tenant_what(id)
        ))
        .into())
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<(), CatalogError> {
        checked(&[("tenant id", &token.tenant), ("token id", &token.id)])?;
        self.cat_create(
            Some((cat::tenant_key(&token.tenant), tenant_what(&token.tenant))),
            cat::token_key(&token.tenant, &token.id),
            format!("token '{}'", token.id),
            token,
        )
        .await
        .map(drop)
    }

    async fn get_token(&self, tenant: &str, id: &str) -> Result<Option<TokenRecord>, CatalogError> {
        if !keys::is_valid_segment(tenant) || !keys::is_valid_segment(id) {
            return Ok(None);
        }
        Ok(self
            .cat_get::<TokenRecord>(&cat::token_key(tenant, id))
            .await?
            .map(|s| s.value))
    }

    async fn list_tokens(&self, tenant: &str) -> Result<Vec<TokenRecord>, CatalogError> {
        checked(&[("tenant id", tenant)])?;
        Ok(self
            .cat_list::<TokenRecord>(&cat::tokens_of(tenant))
            .await?
            .0
            .into_iter()
            .map(|s| s.value)
            .collect())
    }

    async fn delete_token(&self, tenant: &str, id: &str) -> Result<(), CatalogError> {
        checked(&[("tenant id", tenant), ("token id", id)])?;
        self.cat_delete(
            cat::token_key(tenant, id),
            format!("token '{id}'"),
            Vec::new(),
        )
        .await
    }

    async fn create_source(&self, source: &SourceRecord) -> Result<u64, CatalogError> {
        checked(&[("tenant id", &source.tenant), ("source id", &source.id)])?;
        self.cat_create(
            Some((cat::tenant_key(&source.tenant), tenant_what(&source.tenant))),
            cat::source_key(&source.tenant, &source.id),
            source_what(&source.tenant, &source.id),
            source,
        )
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
        self.cat_get(&cat::source_key(tenant, id)).await
    }

    async fn list_sources(&self, tenant: &str) -> Result<Vec<Stored<SourceRecord>>, CatalogError> {
        checked(&[("tenant id", tenant)])?;
        Ok(self.cat_list(&cat::sources_of(tenant)).await?.0)
    }

    async fn update_source(
        &self,
        source: &SourceRecord,
        expected_version: Option<u64>,
    ) -> Result<u64, CatalogError> {
        checked(&[("tenant id", &source.tenant), ("source id", &source.id)])?;
        self.cat_update(
            cat::source_key(&source.tenant, &source.id),
            source_what(&source.tenant, &source.id),
            expected_version,
            None,
            source,
        )
        .await
    }

    async fn delete_source(&self, tenant: &str, id: &str) -> Result<(), CatalogError> {
        checked(&[("tenant id", tenant), ("source id", id)])?;
        let key = cat::source_key(tenant, id);
        let what = source_what(tenant, id);
        for _ in 0..DELETE_ROUNDS {
            if self.cat_get::<SourceRecord>(&key).await?.is_none() {
                return Err(CatalogError::NotFound { what });
            }
            let (syncs, read_at) = self.cat_list::<SyncRecord>(&cat::syncs_of(tenant)).await?;
            let by: Vec<String> = syncs
                .iter()
                .filter(|s| s.value.source == id)
                .map(|s| format!("sync '{}'", s.value.id))
                .collect();
            if !by.is_empty() {
                return Err(CatalogError::InUse { what, by });
            }
            let txn = Txn::new()
                .when([
                    exists(&key),
                    unchanged_since(&cat::syncs_of(tenant), read_at),
                ])
                .and_then([TxnOp::delete(key.as_str(), None)]);
            if self
                .cat_txn(&format!("deleting {what}"), txn)
                .await?
                .succeeded()
            {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(format!(
            "deleting {what}: its syncs kept changing; try again"
        ))
        .into())
    }

    async fn create_sync(&self, sync: &SyncRecord) -> Result<u64, CatalogError> {
        let id = sync.sync_id()?;
        checked(&[("source id", &sync.source)])?;
        if self
            .cat_get::<TenantRecord>(&cat::tenant_key(&sync.tenant))
            .await?
            .is_none()
        {
            return Err(CatalogError::NotFound {
                what: tenant_what(&sync.tenant),
            });
        }
        // The source's key lives under the tenant's: its existence proves the tenant's.
        self.cat_create(
            Some((
                cat::source_key(&sync.tenant, &sync.source),
                source_what(&sync.tenant, &sync.source),
            )),
            cat::sync_key(&id),
            sync_what(&id),
            sync,
        )
        .await
    }

    async fn get_sync(&self, sync: &SyncId) -> Result<Option<Stored<SyncRecord>>, CatalogError> {
        self.cat_get(&cat::sync_key(sync)).await
    }

    async fn list_syncs(&self, tenant: &str) -> Result<Vec<Stored<SyncRecord>>, CatalogError> {
        checked(&[("tenant id", tenant)])?;
        Ok(self.cat_list(&cat::syncs_of(tenant)).await?.0)
    }

    async fn list_all_syncs(&self) -> Result<Vec<Stored<SyncRecord>>, CatalogError> {
        Ok(self.cat_list(cat::SYNCS).await?.0)
    }

    async fn update_sync(
        &self,
        sync: &SyncRecord,
        expected_version: Option<u64>,
    ) -> Result<u64, CatalogError> {
        let id = sync.sync_id()?;
        checked(&[("source id", &sync.source)])?;
        self.cat_update(
            cat::sync_key(&id),
            sync_what(&id),
            expected_version,
            Some((
                cat::source_key(&sync.tenant, &sync.source),
                source_what(&sync.tenant, &sync.source),
            )),
            sync,
        )
        .await
    }

    async fn delete_sync(&self, sync: &SyncId) -> Result<(), CatalogError> {
        self.cat_delete(
            cat::sync_key(sync),
            sync_what(sync),
            vec![keys::runs_of(sync)],
        )
        .await?;
        self.forget_placement(sync).await
    }
}

impl EtcdStore {
    /// A deleted sync's assignments and drain resume note: nothing is left for an agent to
    /// schedule or a next owner to start. (The coordinator would drop a stale assignment at
    /// its next pass; the resume note nothing else removes.)
    async fn forget_placement(&self, sync: &SyncId) -> Result<(), CatalogError> {
        use super::{assigner, keys as cluster_keys};
        let placed = assigner::all_assignments(&self.client()).await?;
        let mut ops = vec![TxnOp::delete(cluster_keys::resume(sync), None)];
        for node in placed.get(sync).into_iter().flatten() {
            ops.push(TxnOp::delete(cluster_keys::assignment(node, sync), None));
        }
        self.cat_txn(
            &format!("forgetting where {} was placed", sync_what(sync)),
            Txn::new().and_then(ops),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::watch;

    use super::*;
    use crate::catalog::contract;
    use crate::cluster::connection::testing;
    use crate::cluster::etcd_store::testing::store_on_new_lease;
    use crate::cluster::etcd_store::EtcdStoreSettings;
    use crate::cluster::membership::Liveness;
    use ferry_tests::etcd::TestEtcd;

    /// A store on a private etcd with a lease for its claims.
    async fn store() -> Option<(EtcdStore, TestEtcd, watch::Sender<Liveness>)> {
        let (etcd, settings) = testing::start()?;
        let (store, _, _, tx) =
            store_on_new_lease(&settings, EtcdStoreSettings::default(), 60).await;
        Some((store, etcd, tx))
    }

    /// [`store`] with tenant `acme`.
    async fn store_with_acme() -> Option<(EtcdStore, TestEtcd, watch::Sender<Liveness>)> {
        let stored = store().await?;
        stored
            .0
            .create_tenant(&contract::tenant("acme"))
            .await
            .unwrap();
        Some(stored)
    }

    #[tokio::test]
    async fn objects_live_under_their_tenant_and_updates_compare_versions() {
        let Some((store, _etcd, _lease)) = store().await else {
            return;
        };
        contract::objects_live_under_their_tenant_and_updates_compare_versions(&store).await;
    }

    #[tokio::test]
    async fn refusals_name_what_is_missing_or_stale() {
        let Some((store, _etcd, _lease)) = store().await else {
            return;
        };
        contract::refusals_name_what_is_missing_or_stale(&store).await;
    }

    #[tokio::test]
    async fn concurrent_creates_of_one_object_let_one_win() {
        let Some((store, _etcd, _lease)) = store().await else {
            return;
        };
        contract::concurrent_creates_of_one_object_let_one_win(&store).await;
    }

    #[tokio::test]
    async fn a_deleted_sync_leaves_no_assignment_or_resume_note() {
        use crate::cluster::{assigner, drain, keys as cluster_keys};
        let Some((store, _etcd, _lease)) = store_with_acme().await else {
            return;
        };
        store
            .create_source(&contract::source("acme", "pg"))
            .await
            .unwrap();
        let (gone, kept) = (
            SyncId::new("acme", "gone").unwrap(),
            SyncId::new("acme", "kept").unwrap(),
        );
        let mut client = store.client();
        for id in [&gone, &kept] {
            store
                .create_sync(&contract::sync("acme", id.sync(), "pg"))
                .await
                .unwrap();
            client
                .put(cluster_keys::assignment("node-1", id), "{}", None)
                .await
                .unwrap();
            drain::mark_resume(&client, id).await.unwrap();
        }
        // An assignment left on a second node (a move not yet cleaned up) goes too.
        client
            .put(cluster_keys::assignment("node-2", &gone), "{}", None)
            .await
            .unwrap();

        store.delete_sync(&gone).await.unwrap();

        let placed = assigner::all_assignments(&client).await.unwrap();
        assert!(!placed.contains_key(&gone), "{placed:?}");
        assert_eq!(placed.get(&kept).map(|n| n.len()), Some(1), "{placed:?}");
        let note = |id: &SyncId| {
            let mut client = client.clone();
            let key = cluster_keys::resume(id);
            async move { client.get(key, None).await.unwrap().count() }
        };
        assert_eq!(note(&gone).await, 0, "the resume note of the deleted sync");
        assert_eq!(note(&kept).await, 1, "another sync's note stays");
        assert!(matches!(
            store.delete_sync(&gone).await,
            Err(CatalogError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn a_source_deleted_while_a_sync_is_created_on_it_leaves_no_orphan() {
        let Some((store, _etcd, _lease)) = store_with_acme().await else {
            return;
        };
        for round in 0..10 {
            let id = format!("pg{round}");
            store
                .create_source(&contract::source("acme", &id))
                .await
                .unwrap();
            let sync = contract::sync("acme", &format!("s{round}"), &id);
            let (created, deleted) =
                tokio::join!(store.create_sync(&sync), store.delete_source("acme", &id));
            match (created.is_ok(), deleted.is_ok()) {
                (true, false) => assert!(matches!(deleted, Err(CatalogError::InUse { .. }))),
                (false, true) => assert!(matches!(created, Err(CatalogError::NotFound { .. }))),
                other => {
                    panic!("round {round}: create {created:?}, delete {deleted:?} ({other:?})")
                }
            }
        }
        // Every sync that exists reads a source that exists.
        for s in store.list_syncs("acme").await.unwrap() {
            assert!(store
                .get_source("acme", &s.value.source)
                .await
                .unwrap()
                .is_some());
        }
    }
}
