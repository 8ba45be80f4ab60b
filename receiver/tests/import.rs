//! `/import` over real HTTP: auth forms, framings, limits, strict-mode partial success,
//! truncation and deduplication.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn accepts_a_json_array_with_a_service_account() {
    let rx = start_memory().await;
    let events: Vec<Value> = (0..3)
        .map(|i| event("Signed Up", &format!("u{i}"), &format!("id-{i}"), json!({})))
        .collect();
    let (status, body) = import_events(&rx.base_url(), &events).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"code": 200, "num_records_imported": 3, "status": "OK"})
    );
}

#[tokio::test]
async fn accepts_gzip_ndjson_with_a_token_with_or_without_project_id_and_a_secret() {
    let rx = start_memory().await;
    let base = rx.base_url();
    let ndjson = |n: usize, tag: &str| {
        let mut s = String::new();
        for i in 0..n {
            s.push_str(&event("e", "u", &format!("{tag}-{i}"), json!({})).to_string());
            s.push('\n');
        }
        gzip(s.as_bytes())
    };
    for (query, user, tag) in [
        ("", TOKEN, "a"),
        (&*format!("project_id={PROJECT}"), TOKEN, "b"),
        ("", SECRET, "c"),
    ] {
        let resp = client()
            .post(format!("{base}/import?strict=1&{query}"))
            .basic_auth(user, Some(""))
            .header("content-type", "application/x-ndjson")
            .header("content-encoding", "gzip")
            .body(ndjson(5, tag))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{query} {user}");
        assert_eq!(
            resp.json::<Value>().await.unwrap()["num_records_imported"],
            5
        );
    }
    assert_eq!(state(&base, PROJECT).await["event_count"], 15);
}

#[tokio::test]
async fn refuses_bad_credentials_with_mixpanels_401_body() {
    let rx = start_memory().await;
    let base = rx.base_url();
    let body = serde_json::to_vec(&[event("e", "u", "x1", json!({}))]).unwrap();
    let unauthorized =
        json!({"code": 401, "error": "Invalid credentials", "status": "Unauthorized"});
    let cases: Vec<(String, Option<(&str, &str)>)> = vec![
        (format!("project_id={PROJECT}"), Some((SA_USER, "wrong"))),
        (format!("project_id={PROJECT}"), Some(("nobody", ""))),
        (format!("project_id={OTHER_PROJECT}"), Some((TOKEN, ""))),
        ("project_id=9999".to_string(), Some((SA_USER, SA_SECRET))),
        (String::new(), None),
    ];
    for (query, auth) in cases {
        let mut req = client()
            .post(format!("{base}/import?{query}"))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{query} {auth:?}");
        assert_eq!(resp.json::<Value>().await.unwrap(), unauthorized);
    }
    // A service account needs project_id.
    let resp = client()
        .post(format!("{base}/import"))
        .basic_auth(SA_USER, Some(SA_SECRET))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(state(&base, PROJECT).await["event_count"], 0);
}

#[tokio::test]
async fn partial_success_keeps_valid_events_and_lists_each_failure() {
    let d = start_disk().await;
    let base = d.rx.base_url();
    let future = chrono::Utc::now().timestamp_millis() + 2 * 3_600_000;
    let events = vec![
        event("ok", "u1", "good-1", json!({})),
        event("bad", "u2", "bad-time", json!({"time": 1_000})),
        event("bad", "null", "bad-id", json!({})),
        event("bad", "u3", "bad_insert", json!({})),
        event("bad", "u4", "future", json!({"time": future})),
        json!({"properties": {"time": 1_700_000_000, "distinct_id": "u", "$insert_id": "no-name"}}),
        json!({"event": "x", "properties": {"time": 1_700_000_000, "distinct_id": "u", "$insert_id": "y"}, "extra": 1}),
        event("ok", "u5", "good-2", json!({})),
    ];
    let (status, body) = import_events(&base, &events).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], 400);
    assert_eq!(body["status"], "Bad Request");
    assert_eq!(
        body["error"],
        "some data points in the request failed validation"
    );
    assert_eq!(body["num_records_imported"], 2);
    let failed = body["failed_records"].as_array().unwrap();
    let summary: Vec<(u64, Option<&str>, &str)> = failed
        .iter()
        .map(|f| {
            (
                f["index"].as_u64().unwrap(),
                f["insert_id"].as_str(),
                f["field"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, Some("bad-time"), "properties.time"),
            (2, Some("bad-id"), "properties.distinct_id"),
            (3, Some("bad_insert"), "properties.$insert_id"),
            (4, Some("future"), "properties.time"),
            (5, Some("no-name"), "event"),
            (6, Some("y"), "extra"),
        ]
    );
    assert!(failed
        .iter()
        .all(|f| !f["message"].as_str().unwrap().is_empty()));
    let st = state(&base, PROJECT).await;
    let kept: Vec<&str> = st["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["properties"]["$insert_id"].as_str().unwrap())
        .collect();
    assert_eq!(kept, ["good-1", "good-2"]);
    assert_eq!(st["counters"]["events_failed"], 6);
}

#[tokio::test]
async fn without_strict_invalid_events_are_dropped_silently() {
    let rx = start_memory().await;
    let events = vec![
        event("ok", "u1", "good-1", json!({})),
        event("bad", "null", "x", json!({})),
    ];
    let (status, body) = import(
        &rx.base_url(),
        serde_json::to_vec(&events).unwrap(),
        "application/json",
        false,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"code": 200, "num_records_imported": 1, "status": "OK"})
    );
}

#[tokio::test]
async fn request_limits_answer_413_and_store_nothing() {
    let rx = start_memory().await;
    let base = rx.base_url();
    let many: Vec<Value> = (0..2001)
        .map(|i| event("e", "u", &format!("i{i}"), json!({})))
        .collect();
    let (status, body) = import_events(&base, &many).await;
    assert_eq!(status, 413);
    assert_eq!(body["code"], 413);
    assert_eq!(body["status"], "Request Entity Too Large");
    let (status, _) = import_events(&base, &many[..2000]).await;
    assert_eq!(status, 200, "exactly 2000 is allowed");

    // 11 MiB uncompressed, a few KB on the wire: gzip does not raise the limit.
    let pad = "a".repeat(200);
    let big: Vec<Value> = (0..1900)
        .map(|i| {
            event(
                "e",
                "u",
                &format!("b{i}"),
                json!({"p": vec![pad.clone(); 30]}),
            )
        })
        .collect();
    let raw = serde_json::to_vec(&big).unwrap();
    assert!(raw.len() > 10 * 1024 * 1024, "{}", raw.len());
    let resp = client()
        .post(format!("{base}/import?strict=1&project_id={PROJECT}"))
        .basic_auth(SA_USER, Some(SA_SECRET))
        .header("content-encoding", "gzip")
        .header("content-type", "application/json")
        .body(gzip(&raw))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"code": 413, "error": "request exceeds max limit of 10485760 bytes", "status": "Request Entity Too Large"})
    );
    assert_eq!(state(&base, PROJECT).await["event_count"], 2000);
}

#[tokio::test]
async fn per_event_limits_fail_only_that_event() {
    let rx = start_memory().await;
    let mut too_many = serde_json::Map::new();
    for i in 0..260 {
        too_many.insert(format!("p{i}"), json!(i));
    }
    let huge = "x".repeat(200);
    let huge_list: Vec<String> = vec![huge; 254];
    let big_obj: serde_json::Map<String, Value> = (0..40)
        .map(|i| (format!("k{i}"), json!(huge_list.clone())))
        .collect();
    let events = vec![
        event("e", "u", "many-props", Value::Object(too_many)),
        event(
            "e",
            "u",
            "too-deep",
            json!({"o": {"a": {"b": {"c": {"d": 1}}}}}),
        ),
        event("e", "u", "long-list", json!({"l": vec![1; 255]})),
        event("e", "u", "over-1mib", json!({"o": big_obj})),
        event("e", "u", "fine", json!({})),
    ];
    let (status, body) = import_events(&rx.base_url(), &events).await;
    assert_eq!(status, 400);
    assert_eq!(body["num_records_imported"], 1);
    let fields: Vec<&str> = body["failed_records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["properties", "properties.o", "properties.l", "event"]
    );
}

#[tokio::test]
async fn long_strings_are_truncated_to_255_characters() {
    let d = start_disk().await;
    let long = "ü".repeat(400);
    let (status, _) = import_events(
        &d.rx.base_url(),
        &[event("e", "u", "t1", json!({"s": long}))],
    )
    .await;
    assert_eq!(status, 200);
    let st = state(&d.rx.base_url(), PROJECT).await;
    assert_eq!(
        st["events"][0]["properties"]["s"]
            .as_str()
            .unwrap()
            .chars()
            .count(),
        255
    );
    assert_eq!(st["counters"]["strings_truncated"], 1);
}

#[tokio::test]
async fn invalid_utf8_fails_the_line_in_ndjson_and_the_request_as_an_array() {
    let rx = start_memory().await;
    let base = rx.base_url();
    let mut body = event("e", "u", "ok-1", json!({})).to_string().into_bytes();
    body.extend_from_slice(b"\n{\"event\":\"e\xff\",\"properties\":{}}\n");
    let (status, resp) = import(&base, body, "application/x-ndjson", true).await;
    assert_eq!(status, 400);
    assert_eq!(resp["num_records_imported"], 1);
    assert_eq!(resp["failed_records"][0]["index"], 1);
    assert!(resp["failed_records"][0]["message"]
        .as_str()
        .unwrap()
        .contains("UTF-8"));
    let (status, resp) = import(
        &base,
        b"[{\"event\":\"\xff\"}]".to_vec(),
        "application/json",
        true,
    )
    .await;
    assert_eq!(status, 400);
    assert!(resp["error"].as_str().unwrap().contains("UTF-8"), "{resp}");
}

#[tokio::test]
async fn dedup_key_is_event_distinct_id_time_and_insert_id_and_latest_copy_wins() {
    let d = start_disk().await;
    let base = d.rx.base_url();
    let first = event("Purchase", "u1", "p-1", json!({"amount": 10}));
    let (s, _) = import_events(&base, &[first.clone()]).await;
    assert_eq!(s, 200);
    // Same four values in seconds instead of ms: the same event; the later copy wins.
    let update = event(
        "Purchase",
        "u1",
        "p-1",
        json!({"amount": 12, "time": 1_700_000_000}),
    );
    import_events(&base, &[update]).await;
    // Any one of the four differing makes a new event.
    let others = [
        event("Refund", "u1", "p-1", json!({})),
        event("Purchase", "u2", "p-1", json!({})),
        event(
            "Purchase",
            "u1",
            "p-1",
            json!({"time": 1_700_000_001_000i64}),
        ),
        event("Purchase", "u1", "p-2", json!({})),
    ];
    import_events(&base, &others).await;
    let st = state(&base, PROJECT).await;
    assert_eq!(st["event_count"], 5);
    let purchase = st["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["event"] == "Purchase"
                && e["properties"]["distinct_id"] == "u1"
                && e["properties"]["$insert_id"] == "p-1"
                && e["properties"]["time"] == 1_700_000_000
        })
        .expect("the updated copy");
    assert_eq!(purchase["properties"]["amount"], 12);
    assert_eq!(st["counters"]["events_imported"], 5);
    assert_eq!(st["counters"]["events_replaced"], 1);
}

#[tokio::test]
async fn rate_limits_answer_mixpanels_429_on_a_rolling_window() {
    let mut cfg = config(ferry_receiver::config::StoreMode::Memory, None);
    cfg.projects[0].rate_limit.events_per_second = Some(10);
    let rx = start(cfg).await;
    let base = rx.base_url();
    let batch = |tag: &str| {
        (0..10)
            .map(|i| event("e", "u", &format!("{tag}{i}"), json!({})))
            .collect::<Vec<_>>()
    };
    assert_eq!(import_events(&base, &batch("a")).await.0, 200);
    let (status, body) = import_events(&base, &batch("b")).await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        json!({"code": 429, "error": "Project exceeded rate limits. Please retry the request with exponential backoff.", "status": "Too Many Requests"})
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(import_events(&base, &batch("c")).await.0, 200);
    assert_eq!(state(&base, PROJECT).await["event_count"], 20);
}

#[tokio::test]
async fn identity_fallback_is_configurable() {
    let rx = start_memory().await;
    let ev = json!({"event": "e", "properties": {"time": 1_700_000_000, "$user_id": "u9", "$insert_id": "f1"}});
    assert_eq!(import_events(&rx.base_url(), &[ev.clone()]).await.0, 200);
    let mut cfg = config(ferry_receiver::config::StoreMode::Memory, None);
    cfg.rules.identity_fallback = false;
    let strict = start(cfg).await;
    let (status, body) = import_events(&strict.base_url(), &[ev]).await;
    assert_eq!(status, 400);
    assert_eq!(body["failed_records"][0]["field"], "properties.distinct_id");
}
