//! Lookup tables and raw export over real HTTP.

mod common;

use common::*;
use serde_json::{json, Value};

async fn put_csv(base: &str, id: &str, csv: &str, user: &str, pass: &str) -> (u16, Value) {
    let resp = client()
        .put(format!("{base}/lookup-tables/{id}?project_id={PROJECT}"))
        .basic_auth(user, Some(pass))
        .header("content-type", "text/csv")
        .body(csv.to_string())
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn lookup_replacement_is_all_or_nothing() {
    let d = start_disk().await;
    let base = d.rx.base_url();
    let (status, body) = put_csv(&base, "lt-1", "plan_id,name,price,launched,tags\np1,Free,0,2024-01-01T00:00:00Z,\"[\"\"a\"\"]\"\np2,Pro,9.5,,\n", SA_USER, SA_SECRET).await;
    assert_eq!((status, body["status"].clone()), (200, json!("OK")));
    let table = state(&base, PROJECT).await["lookup_tables"]["lt-1"]["table"].clone();
    assert_eq!(
        table["columns"],
        json!(["plan_id", "name", "price", "launched", "tags"])
    );
    assert_eq!(
        table["rows"][0],
        json!({"plan_id": "p1", "name": "Free", "price": 0, "launched": "2024-01-01T00:00:00Z", "tags": ["a"]})
    );
    assert_eq!(
        table["rows"][1],
        json!({"plan_id": "p2", "name": "Pro", "price": 9.5})
    );

    let mut bad = String::from("plan_id,name\n");
    for i in 0..12 {
        bad.push_str(&format!(",blank{i}\n"));
    }
    bad.push_str("p1,dup\np1,dup\n");
    let (status, body) = put_csv(&base, "lt-1", &bad, SA_USER, SA_SECRET).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["failed_records"].as_array().unwrap().len(),
        10,
        "at most 10 rows listed"
    );
    assert_eq!(
        body["failed_records"][0],
        json!({"index": 0, "message": "the key column 'plan_id' is blank"})
    );
    assert!(body["error"]
        .as_str()
        .unwrap()
        .starts_with("13 rows failed"));
    let after = state(&base, PROJECT).await["lookup_tables"]["lt-1"]["table"].clone();
    assert_eq!(after, table, "a refused replacement changes nothing");

    let (status, body) = put_csv(&base, "lt-1", "only_one_column\nx\n", SA_USER, SA_SECRET).await;
    assert_eq!(status, 400);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("at least 2 columns"));
    let (status, body) = put_csv(&base, "nope", "a,b\n1,2\n", SA_USER, SA_SECRET).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], 404);
    let (status, _) = put_csv(&base, "lt-1", "a,b\n1,2\n", TOKEN, "").await;
    assert_eq!(status, 401, "lookup tables need a service account");
}

#[tokio::test]
async fn lookup_tables_are_listed_created_and_limited_to_100_replacements_a_day() {
    let rx = start_memory().await;
    let base = rx.base_url();
    let resp = client()
        .post(format!("{base}/ferry/v1/projects/{PROJECT}/lookup-tables"))
        .json(&json!({"id": "lt-2", "name": "Regions"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let list: Value = client()
        .get(format!("{base}/lookup-tables?project_id={PROJECT}"))
        .basic_auth(SA_USER, Some(SA_SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["results"],
        json!([{"id": "lt-1", "name": "Plans"}, {"id": "lt-2", "name": "Regions"}])
    );
    for i in 0..100 {
        let (status, _) =
            put_csv(&base, "lt-2", &format!("k,v\na,{i}\n"), SA_USER, SA_SECRET).await;
        assert_eq!(status, 200, "replacement {i}");
    }
    let (status, body) = put_csv(&base, "lt-2", "k,v\na,101\n", SA_USER, SA_SECRET).await;
    assert_eq!(status, 429);
    assert_eq!(body["code"], 429);
    assert_eq!(
        put_csv(&base, "lt-1", "k,v\na,1\n", SA_USER, SA_SECRET)
            .await
            .0,
        200,
        "the limit is per table"
    );
}

async fn export(base: &str, query: &str, gzip_ok: bool) -> reqwest::Response {
    let mut req = client()
        .get(format!(
            "{base}/api/2.0/export?project_id={PROJECT}&{query}"
        ))
        .basic_auth(SA_USER, Some(SA_SECRET));
    if gzip_ok {
        req = req.header("accept-encoding", "gzip");
    }
    req.send().await.unwrap()
}

fn lines(body: &[u8]) -> Vec<Value> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

#[tokio::test]
async fn export_returns_the_stored_events_of_the_date_range() {
    let d = start_disk().await;
    let base = d.rx.base_url();
    // 2024-03-01T23:59:59Z, 2024-03-02T00:00:00Z, 2024-03-03T12:00:00Z, 2024-03-04T00:00:00Z
    let times = [
        1_709_337_599_000i64,
        1_709_337_600_000,
        1_709_467_200_000,
        1_709_510_400_000,
    ];
    let events: Vec<Value> = times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            event(
                if i % 2 == 0 { "A" } else { "B" },
                "u",
                &format!("x{i}"),
                json!({"time": t, "n": i}),
            )
        })
        .collect();
    assert_eq!(import_events(&base, &events).await.0, 200);

    let resp = export(&base, "from_date=2024-03-02&to_date=2024-03-03", false).await;
    assert_eq!(resp.status(), 200);
    let got = lines(&resp.bytes().await.unwrap());
    let ids: Vec<&str> = got
        .iter()
        .map(|e| e["properties"]["$insert_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["x1", "x2"], "to_date is inclusive, whole UTC days");
    assert_eq!(
        got[0]["properties"]["time"], 1_709_337_600,
        "seconds unless time_in_ms"
    );

    let resp = export(
        &base,
        "from_date=2024-03-01&to_date=2024-03-04&event=%5B%22A%22%5D&time_in_ms=true",
        true,
    )
    .await;
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let gz = resp.bytes().await.unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
    let got = lines(&raw);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|e| e["event"] == "A"));
    assert_eq!(got[0]["properties"]["time"], 1_709_337_599_000i64);

    let filtered = lines(
        &export(
            &base,
            "from_date=2024-03-01&to_date=2024-03-04&where=properties%5B%22n%22%5D%20%3E%3D%202",
            false,
        )
        .await
        .bytes()
        .await
        .unwrap(),
    );
    assert_eq!(filtered.len(), 2);
    let limited = lines(
        &export(
            &base,
            "from_date=2024-03-01&to_date=2024-03-04&limit=3",
            false,
        )
        .await
        .bytes()
        .await
        .unwrap(),
    );
    assert_eq!(limited.len(), 3);

    let bad = export(&base, "from_date=2024-3-1&to_date=2024-03-04", false).await;
    assert_eq!(bad.status(), 400);
    let resp = client()
        .get(format!(
            "{base}/api/2.0/export?from_date=2024-03-01&to_date=2024-03-04"
        ))
        .basic_auth(TOKEN, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        401,
        "export needs a service account or secret"
    );
}
