//! The pipeline end to end into the real receiver (over loopback HTTP) under injected faults.
//! The source here is an in-memory table implementing the `Warehouse` trait: what is under test
//! is the pipeline's bookkeeping (every row arrives once, the cursor only moves over
//! acknowledged pages), not a warehouse driver — those have their own tests against real
//! databases.

use std::sync::Arc;

use async_trait::async_trait;
use ferry_actors::pipeline::{run_pipeline, CursorSink, PipelineInput, PipelineSettings, RunProgress};
use ferry_connectors::mixpanel::{Auth, ClientSettings, DestinationConfig, MixpanelClient, RetryPolicy, Secret};
use ferry_connectors::warehouse::{CursorFilter, Page, ReadRequest, ReadSource, ReadSummary, TableInfo, Warehouse, WarehouseError};
use ferry_core::mapping::{ImportContext, RowMapper};
use ferry_core::spec::SyncSpec;
use ferry_core::value::{Column, ColumnKind, RowBatch, Value};
use ferry_receiver::config::{ProjectConfig, ServiceAccountConfig, StoreMode};
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Rows (id, user, ts) with ids 1..=n; the cursor column is `id`, with runs of equal values
/// every 7 rows so that pages end inside a run.
struct MemoryTable {
    columns: Arc<[Column]>,
    rows: Vec<Vec<Value>>,
}

impl MemoryTable {
    fn new(n: i64) -> Self {
        let columns: Arc<[Column]> = Arc::from(vec![
            Column::new("id", ColumnKind::Int),
            Column::new("user_id", ColumnKind::Text),
            Column::new("ts", ColumnKind::Int),
            Column::new("batch", ColumnKind::Int),
        ]);
        let rows = (1..=n)
            .map(|i| vec![Value::Int(i), Value::Text(format!("u{}", i % 13)), Value::Int(1_700_000_000 + i), Value::Int(i / 7)])
            .collect();
        Self { columns, rows }
    }
}

#[async_trait]
impl Warehouse for MemoryTable {
    fn kind(&self) -> &'static str {
        "memory"
    }
    async fn test_connection(&self) -> Result<(), WarehouseError> {
        Ok(())
    }
    async fn list_tables(&self) -> Result<Vec<TableInfo>, WarehouseError> {
        Ok(vec![])
    }
    async fn columns(&self, _: &ReadSource) -> Result<Vec<Column>, WarehouseError> {
        Ok(self.columns.to_vec())
    }
    async fn preview(&self, _: &ReadSource, limit: usize) -> Result<RowBatch, WarehouseError> {
        Ok(RowBatch::new(self.columns.clone(), self.rows.iter().take(limit).cloned().collect()))
    }
    async fn read(&self, req: &ReadRequest, out: mpsc::Sender<Page>) -> Result<ReadSummary, WarehouseError> {
        let cursor = req.cursor.as_ref().expect("append read");
        let after = match cursor.after {
            Some(Value::Int(v)) => v,
            _ => i64::MIN,
        };
        let batch_of = |r: &Vec<Value>| match r[3] {
            Value::Int(v) => v,
            _ => unreachable!(),
        };
        let rows: Vec<_> = self.rows.iter().filter(|r| batch_of(r) > after).cloned().collect();
        let mut summary = ReadSummary::default();
        for (i, chunk) in rows.chunks(req.page_size).enumerate() {
            let last = batch_of(chunk.last().unwrap());
            let next = rows.get((i + 1) * req.page_size).map(batch_of);
            let complete_through = if next.is_none_or(|n| n > last) { Some(Value::Int(last)) } else { None };
            summary.rows += chunk.len() as u64;
            summary.pages += 1;
            out.send(Page { batch: RowBatch::new(self.columns.clone(), chunk.to_vec()), complete_through })
                .await
                .map_err(|_| WarehouseError::Stopped)?;
        }
        Ok(summary)
    }
}

#[derive(Default)]
struct RecordingSink {
    commits: Mutex<Vec<Value>>,
}

#[async_trait]
impl CursorSink for RecordingSink {
    async fn commit(&self, cursor: &Value) -> Result<(), String> {
        self.commits.lock().push(cursor.clone());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_arrives_exactly_once_under_faults_and_the_cursor_only_moves_forward() {
    let mut cfg = ferry_receiver::ReceiverConfig::from_toml("listen = \"127.0.0.1:0\"").unwrap();
    cfg.store = StoreMode::Memory;
    cfg.projects = vec![ProjectConfig { id: "1".into(), token: "t".into(), secret: None, group_keys: None, lookup_tables: vec![], rate_limit: Default::default() }];
    cfg.service_accounts = vec![ServiceAccountConfig { user: "sa".into(), secret: "pw".into(), projects: None }];
    cfg.faults = toml::from_str("seed = 3\nerror_429 = 0.15\nerror_503 = 0.1\ndrop = 0.05\ndrop_after_store = 0.1").unwrap();
    let rx = ferry_receiver::start(cfg).await.unwrap();

    let spec: SyncSpec = toml::from_str(
        "id='orders'\ntenant='acme'\nsource='mem'\ntable='orders'\ntable_type='events'\nmode='append'\ncursor_column='batch'\n[mapping]\nevent_name='Order'\ntime_column='ts'\ndistinct_id_column='user_id'\nkey_columns=['id']\n",
    )
    .unwrap();
    let valid = spec.validate().unwrap();
    let table = Arc::new(MemoryTable::new(5_000));
    let ctx = ImportContext { warehouse_type: "memory".into(), table: "orders".into(), import_id: "run-1".into(), import_job_id: None, import_run_id: None, token: None };
    let mapper = Arc::new(RowMapper::new(&spec, &valid.mapping, &table.columns, &ctx).unwrap());
    let destination = DestinationConfig::bundled_receiver(&rx.base_url(), "1", Auth::ServiceAccount { user: "sa".into(), secret: Secret::new("pw") });
    let settings = ClientSettings {
        request_timeout: std::time::Duration::from_secs(5),
        retry: RetryPolicy { initial_delay: std::time::Duration::from_millis(5), max_delay: std::time::Duration::from_millis(50), ..Default::default() },
        ..Default::default()
    };
    let client = MixpanelClient::new(destination, settings).unwrap();
    let sink = Arc::new(RecordingSink::default());
    let progress = Arc::new(RunProgress::default());
    let read = ReadRequest {
        source: ReadSource::Table { schema: None, name: "orders".into() },
        cursor: Some(CursorFilter { column: "batch".into(), after: None }),
        page_size: 250,
    };
    let report = run_pipeline(PipelineInput {
        warehouse: table.clone(),
        read,
        mapper,
        client,
        sink: sink.clone(),
        progress: progress.clone(),
        settings: PipelineSettings { shards: 3, shard_queue: 300, ..Default::default() },
    })
    .await
    .unwrap();

    let state: serde_json::Value = reqwest::get(format!("{}/ferry/v1/projects/1/state", rx.base_url())).await.unwrap().json().await.unwrap();
    assert_eq!(state["event_count"], 5_000, "every row stored once");
    assert_eq!(state["counters"]["events_failed"], 0);
    assert_eq!(report.committed_cursor, Some(Value::Int(5_000 / 7)));
    let commits = sink.commits.lock().clone();
    assert!(commits.len() > 1, "the cursor moved during the run, not only at its end: {commits:?}");
    assert!(commits.windows(2).all(|w| w[0] != w[1] && matches!((&w[0], &w[1]), (Value::Int(a), Value::Int(b)) if a < b)), "{commits:?}");
    assert_eq!(progress.rows_read.load(std::sync::atomic::Ordering::Relaxed), 5_000);
    assert_eq!(progress.records_accepted.load(std::sync::atomic::Ordering::Relaxed), 5_000);
    let stats: serde_json::Value = reqwest::get(format!("{}/ferry/v1/stats", rx.base_url())).await.unwrap().json().await.unwrap();
    assert!(stats["faults_injected"].as_object().is_some_and(|f| !f.is_empty()), "faults were really injected: {stats}");
}
