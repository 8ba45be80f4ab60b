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

#[tokio::test]
async fn a_claimed_sync_cannot_be_claimed_again_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let orders = sync("orders");
    let first = store.claim(&orders, "node-a").await.unwrap();
    for node in ["node-a", "node-b"] {
        match store.claim(&orders, node).await {
            Err(e @ StoreError::Owned { .. }) => assert_eq!(e.class(), ErrorClass::Retryable),
            other => panic!("second claim by {node}: {other:?}"),
        }
    }
    let owner = store.current_owner(&orders).await.unwrap().unwrap();
    assert_eq!(
        (owner.node_id.as_str(), owner.token),
        ("node-a", first.token())
    );

    // Another sync, and the same sync name in another tenant, are independent.
    store.claim(&sync("users"), "node-b").await.unwrap();
    store
        .claim(&SyncId::new("globex", "orders").unwrap(), "node-b")
        .await
        .unwrap();

    store.release(&first).await.unwrap();
    store.release(&first).await.unwrap(); // idempotent
    assert_eq!(store.current_owner(&orders).await.unwrap(), None);
    let second = store.claim(&orders, "node-b").await.unwrap();
    assert!(second.token() > first.token());
    // The stale fence never releases its successor's claim.
    assert!(matches!(
        store.release(&first).await,
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(
        store.current_owner(&orders).await.unwrap().unwrap().token,
        second.token()
    );
}

#[tokio::test]
async fn a_stale_fence_cannot_commit_and_the_cursor_stays() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let orders = sync("orders");
    let zombie = store.claim(&orders, "node-a").await.unwrap();
    store
        .commit_cursor(&zombie, "run-1", &Value::Int(10))
        .await
        .unwrap();
    store.release(&zombie).await.unwrap();

    let owner = store.claim(&orders, "node-b").await.unwrap();
    store
        .commit_cursor(&owner, "run-2", &Value::Int(20))
        .await
        .unwrap();
    let refused = store
        .commit_cursor(&zombie, "run-1", &Value::Int(99))
        .await
        .unwrap_err();
    match &refused {
        StoreError::Fenced { token, current, .. } => {
            assert_eq!((*token, *current), (zombie.token(), Some(owner.token())))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(refused.class(), ErrorClass::Fatal);
    assert!(matches!(
        store.reset_cursor(&zombie).await,
        Err(StoreError::Fenced { .. })
    ));

    let cursor = store.get_cursor(&orders).await.unwrap().unwrap();
    assert_eq!(cursor.value, Value::Int(20));
    assert_eq!(
        (
            cursor.run_id.as_str(),
            cursor.node_id.as_str(),
            cursor.token
        ),
        ("run-2", "node-b", owner.token())
    );

    // With no claim at all, nobody writes.
    store.release(&owner).await.unwrap();
    assert!(matches!(
        store.commit_cursor(&owner, "run-2", &Value::Int(30)).await,
        Err(StoreError::Fenced { current: None, .. })
    ));
}

#[tokio::test]
async fn reset_forgets_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let fence = store.claim(&sync("orders"), "n").await.unwrap();
    store
        .commit_cursor(&fence, "r", &Value::Text("snap-1".into()))
        .await
        .unwrap();
    store.reset_cursor(&fence).await.unwrap();
    assert_eq!(store.get_cursor(&sync("orders")).await.unwrap(), None);
}

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
async fn run_history_is_bounded_and_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let settings = EmbeddedSettings {
        runs_kept_per_sync: 3,
        errors_kept_per_run: 2,
    };
    let store = EmbeddedStore::open_in(dir.path(), settings).unwrap();
    let orders = sync("orders");
    let other = sync("orders2"); // shares a key prefix with `orders` but not a history
    let fence = store.claim(&orders, "n").await.unwrap();
    let other_fence = store.claim(&other, "n").await.unwrap();
    store
        .put_run(
            &other_fence,
            &RunRecord::queued(other.clone(), "x", "i", Utc::now()),
        )
        .await
        .unwrap();

    // Ids that sort against their creation order: the history goes by creation.
    for id in ["r9", "r8", "r7", "r6", "r5"] {
        let mut run = RunRecord::queued(orders.clone(), id, format!("imp-{id}"), Utc::now());
        store.put_run(&fence, &run).await.unwrap();
        run.state = RunState::Succeeded;
        store.put_run(&fence, &run).await.unwrap(); // an update is not a new run
    }
    let ids: Vec<String> = store
        .list_runs(&orders, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(ids, ["r5", "r6", "r7"]);
    assert_eq!(store.list_runs(&orders, 1).await.unwrap()[0].run_id, "r5");
    assert_eq!(
        store.get_run(&orders, "r9").await.unwrap(),
        None,
        "the oldest were dropped"
    );
    assert_eq!(store.list_runs(&other, 10).await.unwrap().len(), 1);

    // Updating an old run keeps its place.
    let mut r7 = store.get_run(&orders, "r7").await.unwrap().unwrap();
    r7.message = Some("late note".into());
    store.put_run(&fence, &r7).await.unwrap();
    let ids: Vec<String> = store
        .list_runs(&orders, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(ids, ["r5", "r6", "r7"]);

    // The error log is bounded; the count of what was dropped is kept.
    let mut noisy = RunRecord::queued(orders.clone(), "r4", "imp", Utc::now());
    noisy.errors = vec![
        crate::records::RunErrorEntry {
            reason: "invalid_row".into(),
            row: Some(1),
            key: None,
            field: "f".into(),
            message: "m".into()
        };
        5
    ];
    store.put_run(&fence, &noisy).await.unwrap();
    let stored = store.get_run(&orders, "r4").await.unwrap().unwrap();
    assert_eq!((stored.errors.len(), stored.errors_dropped), (2, 3));
}

#[tokio::test]
async fn runs_are_fenced_and_filed_under_their_own_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let orders = sync("orders");
    let fence = store.claim(&orders, "n").await.unwrap();
    let foreign = RunRecord::queued(sync("users"), "r1", "i", Utc::now());
    assert!(matches!(
        store.put_run(&fence, &foreign).await,
        Err(StoreError::Invalid(_))
    ));
    let bad_id = RunRecord::queued(orders.clone(), "a/b", "i", Utc::now());
    assert!(matches!(
        store.put_run(&fence, &bad_id).await,
        Err(StoreError::Invalid(_))
    ));

    store.release(&fence).await.unwrap();
    let run = RunRecord::queued(orders.clone(), "r1", "i", Utc::now());
    assert!(matches!(
        store.put_run(&fence, &run).await,
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(store.list_runs(&orders, 10).await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_racing_writers_only_the_current_owner_lands() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn StateStore> = Arc::new(open(&dir));
    let orders = sync("orders");
    let zombie = store.claim(&orders, "node-a").await.unwrap();
    store.release(&zombie).await.unwrap();
    let owner = store.claim(&orders, "node-b").await.unwrap();

    let writer = |fence: Fence, base: i64| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut landed = 0;
            for i in 0..50 {
                match store
                    .commit_cursor(&fence, "run", &Value::Int(base + i))
                    .await
                {
                    Ok(()) => landed += 1,
                    Err(StoreError::Fenced { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            landed
        })
    };
    let (zombie_landed, owner_landed) =
        tokio::join!(writer(zombie, 1_000), writer(owner.clone(), 0));
    assert_eq!((zombie_landed.unwrap(), owner_landed.unwrap()), (0, 50));
    let cursor = store.get_cursor(&orders).await.unwrap().unwrap();
    assert_eq!(
        (cursor.value, cursor.token),
        (Value::Int(49), owner.token())
    );
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
