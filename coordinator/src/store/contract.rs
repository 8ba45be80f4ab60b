//! The behaviour every [`StateStore`] must show, written once and run against each store (the
//! embedded one in `embedded/tests.rs`, the etcd one in `cluster/etcd_store.rs`), so both pass
//! the same assertions. A store under test is fresh and keeps [`RUNS_KEPT`] runs per sync and
//! [`ERRORS_KEPT`] errors per run.

use std::sync::Arc;

use chrono::Utc;
use ferry_core::error::{Classify, ErrorClass};
use ferry_core::value::Value;

use crate::records::{RunRecord, RunState, SyncId};
use crate::store::{Fence, StateStore, StoreError};

/// The run-history bound a store under test is configured with.
pub(crate) const RUNS_KEPT: usize = 3;
/// The per-run error-log bound a store under test is configured with.
pub(crate) const ERRORS_KEPT: usize = 2;

fn sync(name: &str) -> SyncId {
    SyncId::new("acme", name).unwrap()
}

/// One `#[tokio::test]` per contract case. `$make` is an async expression giving
/// `Option<(Arc<dyn StateStore>, guard)>`: `None` skips (a service that cannot run here, said
/// loudly by whoever returns it); the guard keeps whatever backs the store alive.
macro_rules! state_store_contract {
    ($make:expr) => {
        $crate::store::contract::state_store_contract!(@case $make;
            a_claimed_sync_cannot_be_claimed_again_until_released,
            a_stale_fence_cannot_commit_and_the_cursor_stays,
            reset_forgets_the_cursor,
            run_history_is_bounded_and_newest_first,
            runs_are_fenced_and_filed_under_their_own_sync);
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn contract_of_two_racing_writers_only_the_current_owner_lands() {
            if let Some((store, _guard)) = $make.await {
                $crate::store::contract::of_two_racing_writers_only_the_current_owner_lands(store)
                    .await;
            }
        }
    };
    (@case $make:expr; $($case:ident),+) => {
        $(
            #[tokio::test]
            async fn $case() {
                if let Some((store, _guard)) = $make.await {
                    $crate::store::contract::$case(store).await;
                }
            }
        )+
    };
}
pub(crate) use state_store_contract;

pub(crate) async fn a_claimed_sync_cannot_be_claimed_again_until_released(
    store: Arc<dyn StateStore>,
) {
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

pub(crate) async fn a_stale_fence_cannot_commit_and_the_cursor_stays(store: Arc<dyn StateStore>) {
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

pub(crate) async fn reset_forgets_the_cursor(store: Arc<dyn StateStore>) {
    let fence = store.claim(&sync("orders"), "n").await.unwrap();
    store
        .commit_cursor(&fence, "r", &Value::Text("snap-1".into()))
        .await
        .unwrap();
    store.reset_cursor(&fence).await.unwrap();
    assert_eq!(store.get_cursor(&sync("orders")).await.unwrap(), None);
}

pub(crate) async fn run_history_is_bounded_and_newest_first(store: Arc<dyn StateStore>) {
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

pub(crate) async fn runs_are_fenced_and_filed_under_their_own_sync(store: Arc<dyn StateStore>) {
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

pub(crate) async fn of_two_racing_writers_only_the_current_owner_lands(store: Arc<dyn StateStore>) {
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
