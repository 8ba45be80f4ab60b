//! Durability across restarts, the memory store, the delete extension, an exact end state after
//! a mixed sequence, and fault injection — all over real HTTP.

mod common;

use common::*;
use ferry_receiver::config::StoreMode;
use serde_json::{json, Value};

async fn delete(base: &str, events: &[Value]) -> (u16, Value) {
    let resp = client()
        .post(format!(
            "{base}/ferry/v1/events/delete?project_id={PROJECT}"
        ))
        .basic_auth(SA_USER, Some(SA_SECRET))
        .json(&events)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn a_mixed_sequence_ends_in_exactly_the_expected_state_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rx = start(config(StoreMode::Disk, Some(dir.path()))).await;
    let base = rx.base_url();
    let e = |id: &str, v: i64| event("Order", "u1", id, json!({"v": v}));
    assert_eq!(
        import_events(&base, &[e("o1", 1), e("o2", 2), e("o3", 3)])
            .await
            .0,
        200
    );
    assert_eq!(import_events(&base, &[e("o2", 20)]).await.0, 200); // update by re-send
    let (s, body) = delete(&base, &[e("o3", 0), e("missing", 0)]).await;
    assert_eq!(s, 200);
    assert_eq!(
        body,
        json!({"code": 200, "status": "OK", "num_records_deleted": 1, "num_records_not_found": 1})
    );
    let profile_ops = json!([
        {"$token": TOKEN, "$distinct_id": "u1", "$ignore_time": true, "$set": {"name": "Ann", "city": "Oslo"}},
        {"$token": TOKEN, "$distinct_id": "u1", "$ignore_time": true, "$unset": ["city"]},
        {"$token": TOKEN, "$distinct_id": "u2", "$ignore_time": true, "$set": {"name": "Bo"}},
        {"$token": TOKEN, "$distinct_id": "u2", "$delete": ""},
    ]);
    assert_eq!(engage(&base, "engage", &profile_ops, "").await.1, "1");
    let group_ops = json!([{"$token": TOKEN, "$group_key": "company_id", "$group_id": "c1", "$ignore_time": true, "$set": {"tier": 2}}]);
    assert_eq!(engage(&base, "groups", &group_ops, "").await.1, "1");
    let resp = client()
        .put(format!("{base}/lookup-tables/lt-1?project_id={PROJECT}"))
        .basic_auth(SA_USER, Some(SA_SECRET))
        .body("id,label\nk1,one\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let expected_events = json!([
        {"event": "Order", "properties": {"time": 1_700_000_000_000i64, "distinct_id": "u1", "$insert_id": "o1", "v": 1}},
        {"event": "Order", "properties": {"time": 1_700_000_000_000i64, "distinct_id": "u1", "$insert_id": "o2", "v": 20}},
    ]);
    let check = |st: &Value| {
        assert_eq!(st["events"], expected_events);
        assert_eq!(
            st["profiles"],
            json!({"u1": {"properties": {"name": "Ann"}}})
        );
        assert_eq!(
            st["groups"],
            json!([{"group_key": "company_id", "group_id": "c1", "properties": {"tier": 2}, "last_seen_ms": null}])
        );
        assert_eq!(
            st["lookup_tables"]["lt-1"]["table"]["rows"],
            json!([{"id": "k1", "label": "one"}])
        );
    };
    check(&state(&base, PROJECT).await);
    rx.shutdown().await;

    let rx = start(config(StoreMode::Disk, Some(dir.path()))).await;
    check(&state(&rx.base_url(), PROJECT).await);
}

#[tokio::test]
async fn memory_store_validates_fully_but_keeps_only_keys_and_counts() {
    let rx = start_memory().await;
    let base = rx.base_url();
    let events: Vec<Value> = (0..50)
        .map(|i| event("e", "u", &format!("m{i}"), json!({})))
        .collect();
    assert_eq!(import_events(&base, &events).await.0, 200);
    assert_eq!(import_events(&base, &events[..10]).await.0, 200);
    assert_eq!(
        import_events(&base, &[event("e", "nil", "bad", json!({}))])
            .await
            .0,
        400
    );
    let (s, body) = delete(&base, &events[..5]).await;
    assert_eq!((s, body["num_records_deleted"].clone()), (200, json!(5)));
    let st = state(&base, PROJECT).await;
    assert_eq!(st["event_count"], 45);
    assert_eq!(st["events"], json!([]), "no contents kept");
    assert_eq!(st["counters"]["events_imported"], 50);
    assert_eq!(st["counters"]["events_replaced"], 10);
    assert_eq!(st["counters"]["events_failed"], 1);
    assert_eq!(
        st["counters"]["requests"]["import"],
        json!({"200": 2, "400": 1})
    );
    let resp = client()
        .get(format!(
            "{base}/api/2.0/export?project_id={PROJECT}&from_date=2023-01-01&to_date=2024-01-01"
        ))
        .basic_auth(SA_USER, Some(SA_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

async fn set_faults(base: &str, faults: Value) {
    let resp = client()
        .put(format!("{base}/ferry/v1/faults"))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn seeded_status_faults_follow_their_shares_and_store_nothing() {
    let rx = start_memory().await;
    let base = rx.base_url();
    set_faults(
        &base,
        json!({"seed": 42, "error_429": 0.3, "error_502": 0.2, "error_503": 0.2}),
    )
    .await;
    let mut by_status = std::collections::BTreeMap::new();
    let mut stored = 0;
    for i in 0..200 {
        let (status, _) =
            import_events(&base, &[event("e", "u", &format!("f{i}"), json!({}))]).await;
        *by_status.entry(status).or_insert(0) += 1;
        if status == 200 {
            stored += 1;
        }
    }
    let share = |s: u16| by_status.get(&s).copied().unwrap_or(0);
    assert!((40..80).contains(&share(429)), "{by_status:?}");
    assert!((20..60).contains(&share(502)), "{by_status:?}");
    assert!((20..60).contains(&share(503)), "{by_status:?}");
    assert_eq!(state(&base, PROJECT).await["event_count"], stored);
    let resp = client()
        .post(format!("{base}/import"))
        .body("[]")
        .send()
        .await
        .unwrap();
    if resp.status() == 502 {
        assert_eq!(
            resp.text().await.unwrap(),
            "502 Bad Gateway\n",
            "gateway errors are not JSON"
        );
    }
    let stats: Value = client()
        .get(format!("{base}/ferry/v1/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["faults_injected"]["429"].as_u64().unwrap() as usize >= share(429),
        true
    );
}

#[tokio::test]
async fn dropped_connections_before_and_after_storing() {
    let rx = start_memory().await;
    let base = rx.base_url();
    set_faults(&base, json!({"drop": 1.0})).await;
    let err = client()
        .post(format!("{base}/import?project_id={PROJECT}"))
        .basic_auth(SA_USER, Some(SA_SECRET))
        .json(&[event("e", "u", "d1", json!({}))])
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_status(), "no HTTP answer at all: {err}");
    assert_eq!(state(&base, PROJECT).await["event_count"], 0);

    set_faults(&base, json!({"drop_after_store": 1.0})).await;
    let err = client()
        .post(format!("{base}/import?project_id={PROJECT}"))
        .basic_auth(SA_USER, Some(SA_SECRET))
        .json(&[event("e", "u", "d2", json!({}))])
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_status(), "{err}");
    assert_eq!(
        state(&base, PROJECT).await["event_count"],
        1,
        "stored although unanswered"
    );
}

#[tokio::test]
async fn slow_and_timeout_faults() {
    let rx = start_memory().await;
    let base = rx.base_url();
    set_faults(&base, json!({"slow": 1.0, "slow_ms": 300})).await;
    let t = std::time::Instant::now();
    assert_eq!(
        import_events(&base, &[event("e", "u", "s1", json!({}))])
            .await
            .0,
        200
    );
    assert!(t.elapsed() >= std::time::Duration::from_millis(300));

    set_faults(&base, json!({"timeout": 1.0, "timeout_ms": 2000})).await;
    let short = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(500))
        .build()
        .unwrap();
    let err = short
        .post(format!("{base}/import?project_id={PROJECT}"))
        .basic_auth(SA_USER, Some(SA_SECRET))
        .json(&[event("e", "u", "s2", json!({}))])
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(state(&base, PROJECT).await["event_count"], 1);
    let bad = client()
        .put(format!("{base}/ferry/v1/faults"))
        .json(&json!({"error_429": 0.7, "drop": 0.7}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
