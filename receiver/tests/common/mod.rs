//! Starts a real receiver on a loopback port and talks to it over HTTP.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

use ferry_receiver::config::{
    LookupTableDecl, ProjectConfig, RateLimitConfig, ServiceAccountConfig, StoreMode,
};
use ferry_receiver::{ReceiverConfig, RunningReceiver};
use serde_json::{json, Value};

pub const PROJECT: &str = "1001";
pub const TOKEN: &str = "tok-1001";
pub const SECRET: &str = "sec-1001";
pub const OTHER_PROJECT: &str = "2002";
pub const OTHER_TOKEN: &str = "tok-2002";
pub const SA_USER: &str = "ferry.sa";
pub const SA_SECRET: &str = "sa-secret";

pub fn config(store: StoreMode, dir: Option<&Path>) -> ReceiverConfig {
    let mut cfg = ReceiverConfig::from_toml("listen = \"127.0.0.1:0\"").unwrap();
    cfg.store = store;
    cfg.data_dir = dir.map(Path::to_path_buf);
    cfg.projects = vec![
        ProjectConfig {
            id: PROJECT.into(),
            token: TOKEN.into(),
            secret: Some(SECRET.into()),
            group_keys: Some(vec!["company_id".into()]),
            lookup_tables: vec![LookupTableDecl {
                id: "lt-1".into(),
                name: "Plans".into(),
            }],
            rate_limit: RateLimitConfig::default(),
        },
        ProjectConfig {
            id: OTHER_PROJECT.into(),
            token: OTHER_TOKEN.into(),
            secret: None,
            group_keys: None,
            lookup_tables: vec![],
            rate_limit: RateLimitConfig::default(),
        },
    ];
    cfg.service_accounts = vec![ServiceAccountConfig {
        user: SA_USER.into(),
        secret: SA_SECRET.into(),
        projects: None,
    }];
    cfg
}

pub async fn start(cfg: ReceiverConfig) -> RunningReceiver {
    ferry_receiver::start(cfg).await.expect("receiver starts")
}

pub async fn start_memory() -> RunningReceiver {
    start(config(StoreMode::Memory, None)).await
}

pub struct Disk {
    pub dir: tempfile::TempDir,
    pub rx: RunningReceiver,
}

pub async fn start_disk() -> Disk {
    let dir = tempfile::tempdir().unwrap();
    let rx = start(config(StoreMode::Disk, Some(dir.path()))).await;
    Disk { dir, rx }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A valid event at a fixed, recent-enough time.
pub fn event(name: &str, distinct_id: &str, insert_id: &str, extra: Value) -> Value {
    let mut props =
        json!({"time": 1_700_000_000_000i64, "distinct_id": distinct_id, "$insert_id": insert_id});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            props[k] = v;
        }
    }
    json!({"event": name, "properties": props})
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// POSTs to `/import` with the service account; returns (status, body as JSON).
pub async fn import(base: &str, body: Vec<u8>, content_type: &str, strict: bool) -> (u16, Value) {
    let url = format!(
        "{base}/import?project_id={PROJECT}&strict={}",
        if strict { 1 } else { 0 }
    );
    let resp = client()
        .post(url)
        .basic_auth(SA_USER, Some(SA_SECRET))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub async fn import_events(base: &str, events: &[Value]) -> (u16, Value) {
    import(
        base,
        serde_json::to_vec(events).unwrap(),
        "application/json",
        true,
    )
    .await
}

pub async fn state(base: &str, project: &str) -> Value {
    client()
        .get(format!("{base}/ferry/v1/projects/{project}/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn engage(base: &str, path: &str, updates: &Value, query: &str) -> (u16, String) {
    let resp = client()
        .post(format!("{base}/{path}?{query}"))
        .header("content-type", "application/json")
        .body(updates.to_string())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}
