//! `/engage` and `/groups` over real HTTP.

mod common;

use base64::Engine;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn operations_apply_in_order_and_ignore_time_is_honoured() {
    let d = start_disk().await;
    let base = d.rx.base_url();
    let updates = json!([
        {"$token": TOKEN, "$distinct_id": "u1", "$ignore_time": true, "$set": {"plan": "free", "seats": 1, "tags": ["a"]}},
        {"$token": TOKEN, "$distinct_id": "u1", "$ignore_time": true, "$set_once": {"plan": "pro", "first_seen": "2024-01-01"}},
        {"$token": TOKEN, "$distinct_id": "u1", "$ignore_time": true, "$add": {"seats": 2}},
        {"$token": TOKEN, "$distinct_id": "u1", "$ignore_time": true, "$union": {"tags": ["a", "b"]}},
        {"$token": TOKEN, "$distinct_id": "u1", "$ignore_time": true, "$append": {"tags": "c"}},
        {"$token": TOKEN, "$distinct_id": "u1", "$ignore_time": true, "$remove": {"tags": "a"}},
        {"$token": TOKEN, "$distinct_id": "u1", "$ignore_time": true, "$unset": ["first_seen"]},
        {"$token": TOKEN, "$distinct_id": "u2", "$set": {"plan": "pro"}},
        {"$token": TOKEN, "$distinct_id": "u3", "$ignore_time": true, "$set": {"x": 1}},
        {"$token": TOKEN, "$distinct_id": "u3", "$delete": ""},
    ]);
    let (status, body) = engage(&base, "engage", &updates, "verbose=1").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"status": 1, "error": null})
    );
    let st = state(&base, PROJECT).await;
    assert_eq!(
        st["profiles"]["u1"],
        json!({"properties": {"plan": "free", "seats": 3, "tags": ["b", "c"]}})
    );
    assert_eq!(st["profiles"]["u2"]["properties"], json!({"plan": "pro"}));
    assert!(
        st["profiles"]["u2"]["last_seen_ms"].as_i64().unwrap() > 1_700_000_000_000,
        "no $ignore_time: last seen moves"
    );
    assert!(
        st["profiles"].get("u3").is_none(),
        "$delete removes the profile"
    );
}

#[tokio::test]
async fn form_data_as_json_or_base64_and_plain_responses() {
    let rx = start_memory().await;
    let base = rx.base_url();
    let updates = json!([{"$token": TOKEN, "$distinct_id": "f1", "$set": {"a": 1}}]).to_string();
    let b64 = base64::engine::general_purpose::STANDARD
        .encode(json!([{"$token": TOKEN, "$distinct_id": "f2", "$set": {"b": 2}}]).to_string());
    for data in [updates, b64] {
        let resp = client()
            .post(format!("{base}/engage"))
            .form(&[("data", data)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "1");
    }
    let st = state(&base, PROJECT).await;
    assert_eq!(st["profiles"]["f1"]["properties"], json!({"a": 1}));
    assert_eq!(st["profiles"]["f2"]["properties"], json!({"b": 2}));
    // A failure without verbose is a bare 0; with verbose it names the record.
    let bad = json!([{"$token": TOKEN, "$distinct_id": "undefined", "$set": {"a": 1}}]);
    assert_eq!(
        engage(&base, "engage", &bad, "").await,
        (200, "0".to_string())
    );
    let (_, verbose) = engage(&base, "engage", &bad, "verbose=1").await;
    let v: Value = serde_json::from_str(&verbose).unwrap();
    assert_eq!(v["status"], 0);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("record 0: $distinct_id"),
        "{v}"
    );
}

#[tokio::test]
async fn strict_mode_lists_failures_and_applies_the_rest() {
    let rx = start_memory().await;
    let base = rx.base_url();
    let updates = json!([
        {"$token": TOKEN, "$distinct_id": "ok", "$set": {"a": 1}},
        {"$token": "not-a-token", "$distinct_id": "x", "$set": {"a": 1}},
        {"$token": TOKEN, "$distinct_id": "y", "$set": {"a": 1}, "$unset": ["b"]},
        {"$token": TOKEN, "$distinct_id": "z", "$add": {"n": "one"}},
    ]);
    let (status, body) = engage(&base, "engage", &updates, "strict=1").await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["num_records_imported"], 1);
    let failed: Vec<(u64, &str, &str)> = v["failed_records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["index"].as_u64().unwrap(),
                f["$distinct_id"].as_str().unwrap(),
                f["field"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        failed,
        vec![(1, "x", "$token"), (2, "y", "$unset"), (3, "z", "$add.n")]
    );
    assert_eq!(
        state(&base, PROJECT).await["profiles"]
            .as_object()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn groups_need_a_configured_key_and_refuse_distinct_id() {
    let rx = start_memory().await;
    let base = rx.base_url();
    let updates = json!([
        {"$token": TOKEN, "$group_key": "company_id", "$group_id": "acme", "$set": {"name": "Acme"}},
        {"$token": TOKEN, "$group_key": "company_id", "$group_id": "acme", "$union": {"domains": ["acme.io"]}},
        {"$token": TOKEN, "$group_key": "company_id", "$group_id": "gone", "$set": {"x": 1}},
        {"$token": TOKEN, "$group_key": "company_id", "$group_id": "gone", "$delete": null},
        {"$token": TOKEN, "$group_key": "company_id", "$group_id": "c", "$distinct_id": "u", "$set": {}},
        {"$token": TOKEN, "$group_key": "team_id", "$group_id": "t", "$set": {}},
        {"$token": TOKEN, "$group_key": "company_id", "$group_id": "c", "$add": {"n": 1}},
    ]);
    let (status, body) = engage(&base, "groups", &updates, "strict=1").await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_str(&body).unwrap();
    let fields: Vec<&str> = v["failed_records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["$distinct_id", "$group_key", "$add"]);
    let st = state(&base, PROJECT).await;
    assert_eq!(st["groups"].as_array().unwrap().len(), 1);
    assert_eq!(st["groups"][0]["group_id"], "acme");
    assert_eq!(
        st["groups"][0]["properties"],
        json!({"name": "Acme", "domains": ["acme.io"]})
    );
}

#[tokio::test]
async fn auth_header_binds_updates_to_its_project_and_limits_apply() {
    let rx = start_memory().await;
    let base = rx.base_url();
    let updates = json!([
        {"$distinct_id": "h1", "$set": {"a": 1}},
        {"$token": OTHER_TOKEN, "$distinct_id": "h2", "$set": {"a": 1}},
    ]);
    let resp = client()
        .post(format!("{base}/engage?strict=1&project_id={PROJECT}"))
        .basic_auth(SA_USER, Some(SA_SECRET))
        .json(&updates)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["failed_records"][0]["field"], "$token");
    assert!(state(&base, PROJECT).await["profiles"].get("h1").is_some());

    let many: Vec<Value> = (0..2001)
        .map(|i| json!({"$token": TOKEN, "$distinct_id": format!("m{i}"), "$set": {"a": 1}}))
        .collect();
    let (status, _) = engage(&base, "engage", &json!(many), "").await;
    assert_eq!(status, 413);
    let resp = client()
        .post(format!("{base}/engage"))
        .header("content-encoding", "gzip")
        .body(gzip(b"[]"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "profile endpoints take no gzip");
}
