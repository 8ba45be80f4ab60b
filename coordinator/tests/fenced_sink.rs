//! The pipeline's view of the store: cursors committed through a `CursorSink` land only while
//! the run's fence is the sync's current claim.

use std::sync::Arc;

use ferry_actors::pipeline::CursorSink;
use ferry_coordinator::{EmbeddedSettings, EmbeddedStore, FencedCursorSink, StateStore, SyncId};
use ferry_core::value::Value;

#[tokio::test]
async fn a_moved_run_stops_committing_and_its_successor_keeps_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn StateStore> =
        Arc::new(EmbeddedStore::open_in(dir.path(), EmbeddedSettings::default()).unwrap());
    let orders = SyncId::new("acme", "orders").unwrap();

    let first = store.claim(&orders, "node-a").await.unwrap();
    let old_run: Arc<dyn CursorSink> =
        Arc::new(FencedCursorSink::new(store.clone(), first.clone(), "run-1"));
    old_run.commit(&Value::Int(100)).await.unwrap();

    // The sync moves: its claim ends and another node resumes from the committed cursor.
    store.release(&first).await.unwrap();
    let second = store.claim(&orders, "node-b").await.unwrap();
    let resumed_from = store.get_cursor(&orders).await.unwrap().unwrap();
    assert_eq!(resumed_from.value, Value::Int(100));
    let new_run = FencedCursorSink::new(store.clone(), second, "run-2");
    new_run.commit(&Value::Int(200)).await.unwrap();

    let refused = old_run.commit(&Value::Int(150)).await.unwrap_err();
    assert!(refused.contains("no longer the current claim"), "{refused}");
    let cursor = store.get_cursor(&orders).await.unwrap().unwrap();
    assert_eq!(
        (cursor.value, cursor.run_id.as_str()),
        (Value::Int(200), "run-2")
    );
}
