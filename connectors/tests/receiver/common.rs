//! A real receiver on a loopback port (disk store in a temporary directory, so its state lists
//! every stored event), and clients configured with fast backoff.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use ferry_connectors::mixpanel::{
    Auth, Batch, BatchRecord, ClientSettings, DestinationConfig, MixpanelClient, RetryPolicy,
    Secret,
};
use ferry_receiver::config::{
    FaultConfig, LookupTableDecl, ProjectConfig, RateLimitConfig, ServiceAccountConfig, StoreMode,
};
use ferry_receiver::{ReceiverConfig, RunningReceiver};
use serde_json::{json, Value};

pub const PROJECT: &str = "1001";
pub const TOKEN: &str = "tok-1001";
pub const SA_USER: &str = "ferry.sa";
pub const SA_SECRET: &str = "sa-secret";
pub const LOOKUP_TABLE: &str = "lt-1";

pub struct Receiver {
    pub rx: RunningReceiver,
    _dir: tempfile::TempDir,
}

impl Receiver {
    pub fn base_url(&self) -> String {
        self.rx.base_url()
    }
}

pub async fn start_receiver() -> Receiver {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut cfg = ReceiverConfig::from_toml("listen = \"127.0.0.1:0\"").expect("config");
    cfg.store = StoreMode::Disk;
    cfg.data_dir = Some(dir.path().to_path_buf());
    cfg.projects = vec![ProjectConfig {
        id: PROJECT.into(),
        token: TOKEN.into(),
        secret: None,
        group_keys: Some(vec!["company_id".into()]),
        lookup_tables: vec![LookupTableDecl {
            id: LOOKUP_TABLE.into(),
            name: "Plans".into(),
        }],
        rate_limit: RateLimitConfig::default(),
    }];
    cfg.service_accounts = vec![ServiceAccountConfig {
        user: SA_USER.into(),
        secret: SA_SECRET.into(),
        projects: None,
    }];
    let rx = ferry_receiver::start(cfg).await.expect("receiver starts");
    Receiver { rx, _dir: dir }
}

pub fn service_account() -> Auth {
    Auth::ServiceAccount {
        user: SA_USER.into(),
        secret: Secret::new(SA_SECRET),
    }
}

/// Milliseconds-scale backoff so fault tests finish in seconds.
pub fn fast_settings() -> ClientSettings {
    ClientSettings {
        max_in_flight: 4,
        request_timeout: Duration::from_millis(400),
        connect_timeout: Duration::from_millis(400),
        gzip_level: 1,
        retry: RetryPolicy {
            initial_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(40),
            jitter: 0.5,
            max_attempts: 40,
        },
    }
}

pub fn client_with(rx: &Receiver, credentials: Auth, settings: ClientSettings) -> MixpanelClient {
    MixpanelClient::new(
        DestinationConfig::bundled_receiver(rx.base_url(), PROJECT, credentials),
        settings,
    )
    .expect("client")
}

pub fn client(rx: &Receiver) -> MixpanelClient {
    client_with(rx, service_account(), fast_settings())
}

pub fn insert_id(i: usize) -> String {
    format!("ev-{i:06}")
}

/// A valid event, serialized once as the pipeline does.
pub fn event(i: usize) -> Bytes {
    event_with(i, json!({}))
}

pub fn event_with(i: usize, extra: Value) -> Bytes {
    let mut props = json!({"time": 1_700_000_000_000i64 + i as i64, "distinct_id": format!("user-{}", i % 17), "$insert_id": insert_id(i), "n": i});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            props[k] = v;
        }
    }
    Bytes::from(
        serde_json::to_vec(&json!({"event": "Signed Up", "properties": props}))
            .expect("serializes"),
    )
}

pub fn batch_of(records: impl IntoIterator<Item = (Bytes, Option<String>)>) -> Batch {
    Batch::from_records(
        records
            .into_iter()
            .map(|(json, key)| BatchRecord { json, key })
            .collect(),
    )
}

pub fn events_batch(ids: impl IntoIterator<Item = usize>) -> Batch {
    batch_of(ids.into_iter().map(|i| (event(i), Some(insert_id(i)))))
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

pub async fn state(rx: &Receiver) -> Value {
    let url = format!("{}/ferry/v1/projects/{PROJECT}/state", rx.base_url());
    http()
        .get(url)
        .send()
        .await
        .expect("state request")
        .json()
        .await
        .expect("state JSON")
}

/// The `$insert_id`s of every stored event.
pub async fn stored_insert_ids(rx: &Receiver) -> BTreeSet<String> {
    let state = state(rx).await;
    state["events"]
        .as_array()
        .expect("events listed")
        .iter()
        .map(|e| {
            e["properties"]["$insert_id"]
                .as_str()
                .expect("insert id")
                .to_owned()
        })
        .collect()
}

pub async fn set_faults(rx: &Receiver, faults: &FaultConfig) {
    let url = format!("{}/ferry/v1/faults", rx.base_url());
    let resp = http()
        .put(url)
        .json(faults)
        .send()
        .await
        .expect("faults request");
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap_or_default()
    );
}

pub async fn stats(rx: &Receiver) -> Value {
    http()
        .get(format!("{}/ferry/v1/stats", rx.base_url()))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats JSON")
}
