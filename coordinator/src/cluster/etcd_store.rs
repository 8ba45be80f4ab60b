//! The cluster's state store: the [`StateStore`] contract on etcd, with the embedded store's
//! keys ([`crate::keys`]) and values (JSON), and its checks as etcd transactions:
//!
//! - a claim puts `/ferry/v1/owners/<tenant>/<sync>` only if its `create_revision == 0` (the
//!   key does not exist), attached to the node's lease — when the node dies, its claims vanish
//!   with the lease;
//! - the fencing token is the owner key's create revision;
//! - every cursor and run write is a transaction whose compare is `create_revision(owner) ==
//!   token` (a missing key has create revision 0, and tokens are never 0, so this also checks
//!   that the claim still exists).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse, TxnResponse,
};
use ferry_core::value::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use super::connection::store_error;
use super::membership::Liveness;
use crate::keys;
use crate::records::{CursorRecord, Owner, OwnerValue, RunRecord, SyncId};
use crate::store::{Fence, StateStore, StoreError};

/// The history bounds; the same meaning as the embedded store's.
#[derive(Debug, Clone)]
pub struct EtcdStoreSettings {
    /// Runs kept per sync; creating one more deletes the oldest.
    pub runs_kept_per_sync: usize,
    /// Per-row errors kept in one run record (the counts stay complete).
    pub errors_kept_per_run: usize,
}

impl Default for EtcdStoreSettings {
    fn default() -> Self {
        Self {
            runs_kept_per_sync: 100,
            errors_kept_per_run: 1000,
        }
    }
}

/// etcd refuses a transaction with more operations than `--max-txn-ops` (128 by default).
const MAX_DELETES_PER_TXN: usize = 100;

#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    settings: Arc<EtcdStoreSettings>,
    /// The node's lease, from its membership: claims attach to it, and there are no claims
    /// without one.
    liveness: watch::Receiver<Liveness>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("liveness", &*self.liveness.borrow())
            .finish()
    }
}

impl EtcdStore {
    /// A store on `client` whose claims attach to the lease `liveness` reports (see
    /// [`super::membership::Membership::liveness`]).
    pub fn new(
        client: Client,
        settings: EtcdStoreSettings,
        liveness: watch::Receiver<Liveness>,
    ) -> Self {
        Self {
            client,
            settings: Arc::new(settings),
            liveness,
        }
    }

    /// A handle on the store's connection (clones share it; etcd calls take `&mut self`).
    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.client()
            .txn(txn)
            .await
            .map_err(|e| store_error(what, e))
    }

    async fn get_one<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(KeyValue, T)>, StoreError> {
        let resp = self
            .client()
            .get(key, None)
            .await
            .map_err(|e| store_error(&format!("reading {key}"), e))?;
        match resp.kvs().first() {
            Some(kv) => {
                let value = decode(kv)?;
                Ok(Some((kv.clone(), value)))
            }
            None => Ok(None),
        }
    }

    /// A write guarded by the fence: `ops` run only while the owner key is the fence's claim.
    /// On refusal the transaction reads the owner key, to say who holds the sync now.
    async fn fenced(
        &self,
        what: &str,
        fence: &Fence,
        ops: Vec<TxnOp>,
    ) -> Result<TxnResponse, StoreError> {
        let owner_key = keys::owner(fence.sync());
        let txn = Txn::new()
            .when([fence_compare(fence)])
            .and_then(ops)
            .or_else([TxnOp::get(
                owner_key,
                Some(GetOptions::new().with_keys_only()),
            )]);
        let resp = self.txn(what, txn).await?;
        if resp.succeeded() {
            Ok(resp)
        } else {
            Err(StoreError::Fenced {
                sync: fence.sync().clone(),
                token: fence.token(),
                current: first_get(&resp)
                    .and_then(|kvs| kvs.first().map(|kv| kv.create_revision() as u64)),
            })
        }
    }

    /// Keeps the newest `keep` runs of the fence's sync (by creation). Housekeeping after a run
    /// was created: a failure leaves an extra run that the next creation removes.
    async fn trim_history(&self, fence: &Fence, keep: usize) -> Result<(), StoreError> {
        let prefix = keys::runs_of(fence.sync());
        let resp = self
            .client()
            .get(
                prefix.as_str(),
                Some(
                    GetOptions::new()
                        .with_range(keys::prefix_end(&prefix))
                        .with_keys_only()
                        .with_sort(SortTarget::Create, SortOrder::Ascend),
                ),
            )
            .await
            .map_err(|e| store_error(&format!("listing {prefix}"), e))?;
        let excess = resp.kvs().len().saturating_sub(keep);
        for chunk in resp.kvs()[..excess].chunks(MAX_DELETES_PER_TXN) {
            let deletes: Vec<TxnOp> = chunk
                .iter()
                .map(|kv| TxnOp::delete(kv.key().to_vec(), None))
                .collect();
            self.fenced("trimming the run history", fence, deletes)
                .await?;
        }
        Ok(())
    }
}

fn fence_compare(fence: &Fence) -> Compare {
    Compare::create_revision(
        keys::owner(fence.sync()),
        CompareOp::Equal,
        fence.token() as i64,
    )
}

/// The key-values of a transaction's first `get`.
fn first_get(resp: &TxnResponse) -> Option<Vec<KeyValue>> {
    resp.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => Some(get.kvs().to_vec()),
        _ => None,
    })
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Backend(format!("encoding a value: {e}")))
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, StoreError> {
    serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        reason: e.to_string(),
    })
}

fn owner_of(kv: &KeyValue) -> Result<Owner, StoreError> {
    let value: OwnerValue = decode(kv)?;
    Ok(Owner {
        node_id: value.node_id,
        token: kv.create_revision() as u64,
        claimed_at: value.claimed_at,
    })
}

#[async_trait]
impl StateStore for EtcdStore {
    async fn claim(&self, sync: &SyncId, node_id: &str) -> Result<Fence, StoreError> {
        if !keys::is_valid_segment(node_id) {
            return Err(StoreError::Invalid(format!("node id {node_id:?}")));
        }
        let lease = match *self.liveness.borrow() {
            Liveness::Live { lease } => lease,
            Liveness::Lost => {
                return Err(StoreError::Unavailable(format!(
                    "claiming {sync}: this node holds no live lease (etcd unreachable, or not registered yet)"
                )))
            }
        };
        let key = keys::owner(sync);
        let value = encode(&OwnerValue {
            node_id: node_id.to_string(),
            claimed_at: Utc::now(),
        })?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let resp = self.txn(&format!("claiming {sync}"), txn).await?;
        if resp.succeeded() {
            // The transaction's revision is the revision that created the owner key.
            let token = resp
                .header()
                .map(|h| h.revision())
                .filter(|r| *r > 0)
                .ok_or_else(|| StoreError::Backend("a claim's response has no revision".into()))?;
            return Ok(Fence::new(sync.clone(), node_id.to_string(), token as u64));
        }
        match first_get(&resp).and_then(|kvs| kvs.into_iter().next()) {
            Some(kv) => Err(StoreError::Owned {
                sync: sync.clone(),
                owner: owner_of(&kv)?,
            }),
            None => Err(StoreError::Backend(format!(
                "claiming {sync}: the claim was refused but no owner was read"
            ))),
        }
    }

    async fn release(&self, fence: &Fence) -> Result<(), StoreError> {
        let key = keys::owner(fence.sync());
        match self
            .fenced(
                &format!("releasing {}", fence.sync()),
                fence,
                vec![TxnOp::delete(key, None)],
            )
            .await
        {
            Ok(_) | Err(StoreError::Fenced { current: None, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn current_owner(&self, sync: &SyncId) -> Result<Option<Owner>, StoreError> {
        let key = keys::owner(sync);
        let resp = self
            .client()
            .get(key.as_str(), None)
            .await
            .map_err(|e| store_error(&format!("reading {key}"), e))?;
        resp.kvs().first().map(owner_of).transpose()
    }

    async fn get_cursor(&self, sync: &SyncId) -> Result<Option<CursorRecord>, StoreError> {
        Ok(self
            .get_one::<CursorRecord>(&keys::cursor(sync))
            .await?
            .map(|(_, v)| v))
    }

    async fn commit_cursor(
        &self,
        fence: &Fence,
        run_id: &str,
        cursor: &Value,
    ) -> Result<(), StoreError> {
        if !keys::is_valid_segment(run_id) {
            return Err(StoreError::Invalid(format!("run id {run_id:?}")));
        }
        let record = CursorRecord {
            value: cursor.clone(),
            committed_at: Utc::now(),
            run_id: run_id.to_string(),
            node_id: fence.node_id().to_string(),
            token: fence.token(),
        };
        let put = TxnOp::put(keys::cursor(fence.sync()), encode(&record)?, None);
        self.fenced(
            &format!("committing the cursor of {}", fence.sync()),
            fence,
            vec![put],
        )
        .await
        .map(drop)
    }

    async fn reset_cursor(&self, fence: &Fence) -> Result<(), StoreError> {
        let delete = TxnOp::delete(keys::cursor(fence.sync()), None);
        self.fenced(
            &format!("resetting the cursor of {}", fence.sync()),
            fence,
            vec![delete],
        )
        .await
        .map(drop)
    }

    async fn put_run(&self, fence: &Fence, run: &RunRecord) -> Result<(), StoreError> {
        if run.sync != *fence.sync() {
            return Err(StoreError::Invalid(format!(
                "run {} of sync {} written under the fence of sync {}",
                run.run_id,
                run.sync,
                fence.sync()
            )));
        }
        if !keys::is_valid_segment(&run.run_id) {
            return Err(StoreError::Invalid(format!("run id {:?}", run.run_id)));
        }
        let mut run = run.clone();
        run.bound_errors(self.settings.errors_kept_per_run);
        let key = keys::run(fence.sync(), &run.run_id);
        // The count before the put says whether this write creates the run.
        let ops = vec![
            TxnOp::get(key.as_str(), Some(GetOptions::new().with_count_only())),
            TxnOp::put(key.as_str(), encode(&run)?, None),
        ];
        let resp = self
            .fenced(&format!("recording run {}", run.run_id), fence, ops)
            .await?;
        let created = resp.op_responses().into_iter().any(|op| match op {
            TxnOpResponse::Get(get) => get.count() == 0,
            _ => false,
        });
        if created {
            if let Err(e) = self
                .trim_history(fence, self.settings.runs_kept_per_sync.max(1))
                .await
            {
                tracing::warn!(sync = %fence.sync(), error = %e, "run history not trimmed this time");
            }
        }
        Ok(())
    }

    async fn get_run(&self, sync: &SyncId, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        if !keys::is_valid_segment(run_id) {
            return Ok(None);
        }
        Ok(self
            .get_one::<RunRecord>(&keys::run(sync, run_id))
            .await?
            .map(|(_, v)| v))
    }

    async fn list_runs(&self, sync: &SyncId, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        if limit == 0 {
            // etcd reads a limit of 0 as "no limit".
            return Ok(Vec::new());
        }
        let prefix = keys::runs_of(sync);
        let resp = self
            .client()
            .get(
                prefix.as_str(),
                Some(
                    GetOptions::new()
                        .with_range(keys::prefix_end(&prefix))
                        .with_sort(SortTarget::Create, SortOrder::Descend)
                        .with_limit(i64::try_from(limit).unwrap_or(i64::MAX)),
                ),
            )
            .await
            .map_err(|e| store_error(&format!("listing {prefix}"), e))?;
        resp.kvs().iter().map(decode).collect()
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::cluster::connection::EtcdSettings;

    /// A store on the etcd `settings` reach, its claims on a fresh lease of `ttl_secs`; the
    /// sender stands in for the node's membership (send `Lost` to trip the kill switch).
    pub(crate) async fn store_on_new_lease(
        settings: &EtcdSettings,
        store_settings: EtcdStoreSettings,
        ttl_secs: i64,
    ) -> (EtcdStore, Client, i64, watch::Sender<Liveness>) {
        let mut client = settings.connect().await.unwrap();
        let lease = client.lease_grant(ttl_secs, None).await.unwrap().id();
        let (tx, rx) = watch::channel(Liveness::Live { lease });
        let store = EtcdStore::new(client.clone(), store_settings, rx);
        (store, client, lease, tx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cluster::connection::testing;
    use crate::store::contract::{self, ERRORS_KEPT, RUNS_KEPT};
    use ferry_tests::etcd::TestEtcd;

    /// A store on a private etcd, its claims on a lease this test keeps alive by its length.
    async fn store_on(
        etcd_settings: &crate::cluster::connection::EtcdSettings,
        ttl_secs: i64,
    ) -> (EtcdStore, Client, i64, watch::Sender<Liveness>) {
        let contract_settings = EtcdStoreSettings {
            runs_kept_per_sync: RUNS_KEPT,
            errors_kept_per_run: ERRORS_KEPT,
        };
        super::testing::store_on_new_lease(etcd_settings, contract_settings, ttl_secs).await
    }

    async fn contract_store() -> Option<(Arc<dyn StateStore>, (TestEtcd, watch::Sender<Liveness>))>
    {
        let (etcd, settings) = testing::start()?;
        let (store, _, _, tx) = store_on(&settings, 60).await;
        Some((Arc::new(store), (etcd, tx)))
    }

    contract::state_store_contract!(contract_store());

    fn orders() -> SyncId {
        SyncId::new("acme", "orders").unwrap()
    }

    #[tokio::test]
    async fn claims_end_with_the_lease_and_the_old_fence_is_refused() {
        let Some((_etcd, settings)) = testing::start() else {
            return;
        };
        let (store, mut client, lease, _tx) = store_on(&settings, 60).await;
        let fence = store.claim(&orders(), "node-a").await.unwrap();
        store
            .commit_cursor(&fence, "run-1", &Value::Int(1))
            .await
            .unwrap();
        let owner_kv = client
            .get(keys::owner(&orders()), None)
            .await
            .unwrap()
            .kvs()[0]
            .clone();
        assert_eq!(
            owner_kv.lease(),
            lease,
            "the claim rides on the node's lease"
        );
        assert_eq!(owner_kv.create_revision() as u64, fence.token());

        // The node dies: its lease ends, and its claims with it.
        client.lease_revoke(lease).await.unwrap();
        assert_eq!(store.current_owner(&orders()).await.unwrap(), None);
        let (successor, _c, _l, _t) = store_on(&settings, 60).await;
        let new_fence = successor.claim(&orders(), "node-b").await.unwrap();
        assert!(new_fence.token() > fence.token());
        let refused = store
            .commit_cursor(&fence, "run-1", &Value::Int(99))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, StoreError::Fenced { current: Some(t), .. } if t == new_fence.token()),
            "{refused:?}"
        );
        let cursor = successor.get_cursor(&orders()).await.unwrap().unwrap();
        assert_eq!(
            (cursor.value, cursor.node_id.as_str()),
            (Value::Int(1), "node-a"),
            "the last committed cursor is what the successor resumes from"
        );
    }

    #[tokio::test]
    async fn no_claims_without_a_live_lease() {
        let Some((_etcd, settings)) = testing::start() else {
            return;
        };
        let (store, mut client, lease, tx) = store_on(&settings, 60).await;
        tx.send(Liveness::Lost).unwrap();
        let e = store.claim(&orders(), "node-a").await.unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");

        // A lease etcd no longer knows (it expired while the node was away) is refused by
        // etcd, as retryable: membership will hand out a new one.
        client.lease_revoke(lease).await.unwrap();
        tx.send(Liveness::Live { lease }).unwrap();
        let e = store.claim(&orders(), "node-a").await.unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
        assert_eq!(store.current_owner(&orders()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn etcd_down_is_unavailable_and_writes_resume_after_its_restart() {
        let Some((mut etcd, settings)) = testing::start() else {
            return;
        };
        let (store, _client, _lease, _tx) = store_on(&settings, 60).await;
        let fence = store.claim(&orders(), "node-a").await.unwrap();
        etcd.kill().unwrap();
        let e = store
            .commit_cursor(&fence, "run-1", &Value::Int(5))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
        etcd.restart().unwrap();
        // The lease outlives a short outage (etcd renews leases when it starts), so the fence
        // still holds.
        let mut landed = false;
        for _ in 0..50 {
            match store.commit_cursor(&fence, "run-1", &Value::Int(5)).await {
                Ok(()) => {
                    landed = true;
                    break;
                }
                Err(StoreError::Unavailable(_)) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        assert!(landed);
        assert_eq!(
            store.get_cursor(&orders()).await.unwrap().unwrap().value,
            Value::Int(5)
        );
    }

    #[tokio::test]
    async fn a_damaged_value_is_reported_as_corrupt() {
        let Some((_etcd, settings)) = testing::start() else {
            return;
        };
        let (store, mut client, _, _tx) = store_on(&settings, 60).await;
        client
            .put(keys::cursor(&orders()), "not json", None)
            .await
            .unwrap();
        let e = store.get_cursor(&orders()).await.unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
    }
}
