use std::sync::Arc;

use chrono::Utc;
use ferry_core::error::{Classify, ErrorClass};
use ferry_core::value::Value;

use super::*;
use crate::records::RunState;

fn sync(name: &str) -> SyncId {
    SyncId::new("acme", name).unwrap()
}

fn open(dir: &tempfile::TempDir) -> EmbeddedStore {
    EmbeddedStore::open_in(dir.path(), EmbeddedSettings::default()).unwrap()
}

/// A fresh store with the contract's bounds; the temp dir lives as long as the case.
async fn contract_store() -> Option<(Arc<dyn StateStore>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let settings = EmbeddedSettings {
        runs_kept_per_sync: crate::store::contract::RUNS_KEPT,
        errors_kept_per_run: crate::store::contract::ERRORS_KEPT,
    };
    let store = EmbeddedStore::open_in(dir.path(), settings).unwrap();
    Some((Arc::new(store), dir))
}

crate::store::contract::state_store_contract!(contract_store());

#[tokio::test]
async fn cursors_survive_a_restart_and_old_claims_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let orders = sync("orders");
    let ts = Value::Timestamp(Utc::now());
    let (old_fence, old_epoch) = {
        let store = open(&dir);
        let fence = store.claim(&orders, "node-a").await.unwrap();
        store.commit_cursor(&fence, "run-1", &ts).await.unwrap();
        let mut run = RunRecord::queued(orders.clone(), "run-1", "imp-1", Utc::now());
        run.state = RunState::Running;
        store.put_run(&fence, &run).await.unwrap();
        // The process "dies" holding the claim: no release.
        (fence, store.epoch())
    };
    assert!(
        EmbeddedStore::open_in(dir.path(), EmbeddedSettings::default()).is_ok(),
        "the file lock is gone with the store"
    );
    let store = open(&dir);
    assert!(store.epoch() > old_epoch);
    let cursor = store.get_cursor(&orders).await.unwrap().unwrap();
    assert_eq!(cursor.value, ts, "the cursor is exactly what was committed");
    assert_eq!(
        store
            .get_run(&orders, "run-1")
            .await
            .unwrap()
            .unwrap()
            .state,
        RunState::Running
    );

    assert_eq!(
        store.current_owner(&orders).await.unwrap(),
        None,
        "the previous process's claims are void"
    );
    assert!(matches!(
        store
            .commit_cursor(&old_fence, "run-1", &Value::Int(1))
            .await,
        Err(StoreError::Fenced { .. })
    ));
    let new_fence = store.claim(&orders, "node-a").await.unwrap();
    assert!(
        new_fence.token() > old_fence.token(),
        "tokens keep increasing across restarts"
    );
    assert!(matches!(
        store
            .commit_cursor(&old_fence, "run-1", &Value::Int(1))
            .await,
        Err(StoreError::Fenced { .. })
    ));
    store
        .commit_cursor(&new_fence, "run-2", &Value::Int(2))
        .await
        .unwrap();
}

#[tokio::test]
async fn one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(&dir);
    let second = EmbeddedStore::open_in(dir.path(), EmbeddedSettings::default()).unwrap_err();
    assert!(matches!(second, StoreError::InUse(_)), "{second:?}");
}

#[tokio::test]
async fn a_damaged_value_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let orders = sync("orders");
    write_txn(&store.db, |txn| {
        txn.kv
            .insert(keys::cursor(&orders).as_str(), b"short".as_slice())
            .map_err(backend)?;
        Ok(())
    })
    .unwrap();
    let e = store.get_cursor(&orders).await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Fatal);
}
