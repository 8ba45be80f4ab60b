//! The behaviour every [`Catalog`] must show, written once and run against each store that
//! implements it (the embedded store, and the etcd store in `cluster/etcd_catalog.rs`). The
//! store under test is fresh, and can claim syncs (a run's history goes with its sync).

use chrono::Utc;

use crate::catalog::{Catalog, CatalogError, SourceRecord, SyncRecord, TenantRecord, TokenRecord};
use crate::records::{RunRecord, SyncId};
use crate::store::StateStore;

// Records are built from JSON so that fields added later with serde defaults need no change here.

pub(crate) fn tenant(id: &str) -> TenantRecord {
    serde_json::from_value(serde_json::json!({
        "id": id,
        "spec": {"id": id, "name": id},
        "created_at": Utc::now(),
        "updated_at": Utc::now(),
    }))
    .unwrap()
}

pub(crate) fn source(tenant: &str, id: &str) -> SourceRecord {
    serde_json::from_value(serde_json::json!({
        "tenant": tenant,
        "id": id,
        "spec": {"id": id},
        "created_at": Utc::now(),
        "updated_at": Utc::now(),
    }))
    .unwrap()
}

pub(crate) fn sync(tenant: &str, id: &str, source: &str) -> SyncRecord {
    serde_json::from_value(serde_json::json!({
        "tenant": tenant,
        "id": id,
        "source": source,
        "spec": {"id": id, "schedule": "hourly"},
        "created_at": Utc::now(),
        "updated_at": Utc::now(),
    }))
    .unwrap()
}

pub(crate) async fn objects_live_under_their_tenant_and_updates_compare_versions<S>(store: &S)
where
    S: Catalog + StateStore + ?Sized,
{
    assert!(matches!(
        store.create_source(&source("acme", "pg")).await,
        Err(CatalogError::NotFound { what }) if what == "tenant 'acme'"
    ));
    let v1 = store.create_tenant(&tenant("acme")).await.unwrap();
    assert!(matches!(
        store.create_tenant(&tenant("acme")).await,
        Err(CatalogError::AlreadyExists { .. })
    ));
    store.create_tenant(&tenant("other")).await.unwrap();

    let mut renamed = tenant("acme");
    renamed.spec["name"] = "Acme Inc".into();
    let v2 = store.update_tenant(&renamed, Some(v1)).await.unwrap();
    assert!(v2 > v1);
    match store.update_tenant(&renamed, Some(v1)).await {
        Err(CatalogError::Conflict {
            expected, current, ..
        }) => assert_eq!((expected, current), (v1, v2)),
        other => panic!("stale update: {other:?}"),
    }
    let got = store.get_tenant("acme").await.unwrap().unwrap();
    assert_eq!(
        (got.version, &got.value.spec["name"]),
        (v2, &"Acme Inc".into())
    );

    store.create_source(&source("acme", "pg")).await.unwrap();
    store.create_source(&source("other", "pg")).await.unwrap();
    assert!(matches!(
        store.create_sync(&sync("acme", "orders", "nope")).await,
        Err(CatalogError::NotFound { what }) if what.contains("source 'nope'")
    ));
    store
        .create_sync(&sync("acme", "orders", "pg"))
        .await
        .unwrap();
    store
        .create_sync(&sync("other", "orders", "pg"))
        .await
        .unwrap();

    let acme: Vec<_> = store.list_syncs("acme").await.unwrap();
    assert_eq!(acme.len(), 1);
    assert_eq!(acme[0].value.tenant, "acme");
    assert_eq!(store.list_all_syncs().await.unwrap().len(), 2);
    assert_eq!(acme[0].value.schedule(), Some("hourly"));

    match store.delete_source("acme", "pg").await {
        Err(CatalogError::InUse { by, .. }) => assert_eq!(by, vec!["sync 'orders'"]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.delete_tenant("acme", false).await,
        Err(CatalogError::InUse { .. })
    ));

    // Deleting a sync takes its run history with it.
    let id = SyncId::new("acme", "orders").unwrap();
    let fence = store.claim(&id, "n1").await.unwrap();
    store
        .put_run(
            &fence,
            &RunRecord::queued(id.clone(), "r1", "i1", Utc::now()),
        )
        .await
        .unwrap();
    store.release(&fence).await.unwrap();
    store.delete_sync(&id).await.unwrap();
    assert!(store.list_runs(&id, 10).await.unwrap().is_empty());
    assert!(store.get_sync(&id).await.unwrap().is_none());
    store.delete_source("acme", "pg").await.unwrap();

    // Cascade takes everything of the tenant, and nothing of another.
    store
        .create_token(&TokenRecord {
            tenant: "other".into(),
            id: "t1".into(),
            name: "ci".into(),
            sha256: "00".into(),
            created_at: Utc::now(),
        })
        .await
        .unwrap();
    store.delete_tenant("other", true).await.unwrap();
    assert!(store.list_tokens("other").await.unwrap().is_empty());
    assert!(store.list_syncs("other").await.unwrap().is_empty());
    assert!(store.get_tenant("acme").await.unwrap().is_some());
    assert!(store.get_tenant("../x").await.unwrap().is_none());
}

pub(crate) async fn refusals_name_what_is_missing_or_stale<S>(store: &S)
where
    S: Catalog + StateStore + ?Sized,
{
    store.create_tenant(&tenant("acme")).await.unwrap();
    let missing = |r: Result<u64, CatalogError>, name: &str| match r {
        Err(CatalogError::NotFound { what }) => assert!(what.contains(name), "{what}"),
        other => panic!("expected NotFound({name}): {other:?}"),
    };
    missing(
        store.update_tenant(&tenant("ghost"), None).await,
        "tenant 'ghost'",
    );
    assert!(matches!(
        store.delete_tenant("ghost", false).await,
        Err(CatalogError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete_token("acme", "nope").await,
        Err(CatalogError::NotFound { .. })
    ));
    missing(
        store.create_source(&source("ghost", "pg")).await,
        "tenant 'ghost'",
    );
    store.create_source(&source("acme", "pg")).await.unwrap();
    assert!(matches!(
        store.create_source(&source("acme", "pg")).await,
        Err(CatalogError::AlreadyExists { .. })
    ));
    missing(
        store.update_source(&source("acme", "nope"), None).await,
        "source 'nope'",
    );

    let v1 = store
        .create_sync(&sync("acme", "orders", "pg"))
        .await
        .unwrap();
    let id = SyncId::new("acme", "orders").unwrap();
    assert_eq!(store.get_sync(&id).await.unwrap().unwrap().version, v1);
    missing(
        store
            .update_sync(&sync("acme", "orders", "gone"), None)
            .await,
        "source 'gone'",
    );
    let mut paused = sync("acme", "orders", "pg");
    paused.paused = true;
    let v2 = store.update_sync(&paused, Some(v1)).await.unwrap();
    assert!(v2 > v1);
    match store.update_sync(&paused, Some(v1)).await {
        Err(CatalogError::Conflict {
            expected, current, ..
        }) => assert_eq!((expected, current), (v1, v2)),
        other => panic!("a stale update: {other:?}"),
    }
    let stored = store.get_sync(&id).await.unwrap().unwrap();
    assert!(stored.value.paused);
    assert_eq!(stored.version, v2);
    missing(
        store
            .update_sync(&sync("acme", "ghost", "pg"), Some(v2))
            .await,
        "sync 'ghost'",
    );
    assert!(matches!(
        store
            .delete_sync(&SyncId::new("acme", "ghost").unwrap())
            .await,
        Err(CatalogError::NotFound { .. })
    ));
    assert_eq!(store.list_tenants().await.unwrap().len(), 1);
    assert_eq!(store.list_sources("acme").await.unwrap().len(), 1);
    assert!(store.get_source("acme", "../x").await.unwrap().is_none());
}

/// Of many concurrent creates of one object, exactly one lands.
pub(crate) async fn concurrent_creates_of_one_object_let_one_win<S>(store: &S)
where
    S: Catalog + StateStore + ?Sized,
{
    let record = tenant("acme");
    let attempts = (0..8).map(|_| store.create_tenant(&record));
    let results = futures_util::future::join_all(attempts).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(CatalogError::AlreadyExists { .. })))
        .count();
    assert_eq!((won, refused), (1, 7));
}
