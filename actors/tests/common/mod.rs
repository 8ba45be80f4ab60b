//! Shared by the actors' tests: an in-memory table behind the `Warehouse` trait (what is under
//! test is the pipeline, not a driver), a cursor sink that remembers commits, and a receiver.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use ferry_actors::pipeline::CursorSink;
use ferry_connectors::mixpanel::{
    Auth, ClientSettings, DestinationConfig, MixpanelClient, RetryPolicy, Secret,
};
use ferry_connectors::warehouse::{
    Page, ReadRequest, ReadSource, ReadSummary, TableInfo, Warehouse, WarehouseError,
};
use ferry_core::mapping::{ImportContext, RowMapper};
use ferry_core::spec::SyncSpec;
use ferry_core::value::{Column, ColumnKind, RowBatch, Value};
use ferry_receiver::config::{FaultConfig, ProjectConfig, ServiceAccountConfig, StoreMode};
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Rows (id, user, ts) with ids 1..=n; the cursor column is `id`, with runs of equal values
/// every 7 rows so that pages end inside a run.
pub struct MemoryTable {
    pub columns: Arc<[Column]>,
    pub rows: Vec<Vec<Value>>,
    /// Fail the first `fail_reads` reads with a lost connection after `fail_after_pages` pages.
    pub fail_reads: AtomicUsize,
    pub fail_after_pages: usize,
    /// Before failing, wait until this sink saw a commit, so the failure is truly mid-run.
    pub fail_after_commit_in: Option<Arc<RecordingSink>>,
}

impl MemoryTable {
    pub fn new(n: i64) -> Self {
        let columns: Arc<[Column]> = Arc::from(vec![
            Column::new("id", ColumnKind::Int),
            Column::new("user_id", ColumnKind::Text),
            Column::new("ts", ColumnKind::Int),
            Column::new("batch", ColumnKind::Int),
        ]);
        let rows = (1..=n)
            .map(|i| {
                vec![
                    Value::Int(i),
                    Value::Text(format!("u{}", i % 13)),
                    Value::Int(1_700_000_000 + i),
                    Value::Int(i / 7),
                ]
            })
            .collect();
        Self {
            columns,
            rows,
            fail_reads: AtomicUsize::new(0),
            fail_after_pages: 0,
            fail_after_commit_in: None,
        }
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
        Ok(RowBatch::new(
            self.columns.clone(),
            self.rows.iter().take(limit).cloned().collect(),
        ))
    }
    async fn read(
        &self,
        req: &ReadRequest,
        out: mpsc::Sender<Page>,
    ) -> Result<ReadSummary, WarehouseError> {
        let cursor = req.cursor.as_ref().expect("append read");
        let after = match cursor.after {
            Some(Value::Int(v)) => v,
            _ => i64::MIN,
        };
        let batch_of = |r: &Vec<Value>| match r[3] {
            Value::Int(v) => v,
            _ => unreachable!(),
        };
        let rows: Vec<_> = self
            .rows
            .iter()
            .filter(|r| batch_of(r) > after)
            .cloned()
            .collect();
        let mut summary = ReadSummary::default();
        let failing = self.fail_reads.load(Ordering::SeqCst) > 0;
        if failing {
            self.fail_reads.fetch_sub(1, Ordering::SeqCst);
        }
        for (i, chunk) in rows.chunks(req.page_size).enumerate() {
            if failing && i == self.fail_after_pages {
                if let Some(sink) = &self.fail_after_commit_in {
                    for _ in 0..1000 {
                        if !sink.commits.lock().is_empty() {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                }
                return Err(WarehouseError::ConnectionLost(
                    "simulated: the server closed the connection".into(),
                ));
            }
            let last = batch_of(chunk.last().unwrap());
            let next = rows.get((i + 1) * req.page_size).map(batch_of);
            let complete_through = if next.is_none_or(|n| n > last) {
                Some(Value::Int(last))
            } else {
                None
            };
            summary.rows += chunk.len() as u64;
            summary.pages += 1;
            out.send(Page {
                batch: RowBatch::new(self.columns.clone(), chunk.to_vec()),
                complete_through,
            })
            .await
            .map_err(|_| WarehouseError::Stopped)?;
        }
        Ok(summary)
    }
}

#[derive(Default)]
pub struct RecordingSink {
    pub commits: Mutex<Vec<Value>>,
}

impl RecordingSink {
    pub fn last(&self) -> Option<Value> {
        self.commits.lock().last().cloned()
    }
}

#[async_trait]
impl CursorSink for RecordingSink {
    async fn commit(&self, cursor: &Value) -> Result<(), String> {
        self.commits.lock().push(cursor.clone());
        Ok(())
    }
}

pub async fn receiver(faults: FaultConfig) -> ferry_receiver::RunningReceiver {
    let mut cfg = ferry_receiver::ReceiverConfig::from_toml("listen = \"127.0.0.1:0\"").unwrap();
    cfg.store = StoreMode::Memory;
    cfg.projects = vec![ProjectConfig {
        id: "1".into(),
        token: "t".into(),
        secret: None,
        group_keys: None,
        lookup_tables: vec![],
        rate_limit: Default::default(),
    }];
    cfg.service_accounts = vec![ServiceAccountConfig {
        user: "sa".into(),
        secret: "pw".into(),
        projects: None,
    }];
    cfg.faults = faults;
    ferry_receiver::start(cfg).await.unwrap()
}

pub fn client(base_url: &str, secret: &str) -> MixpanelClient {
    let destination = DestinationConfig::bundled_receiver(
        base_url,
        "1",
        Auth::ServiceAccount {
            user: "sa".into(),
            secret: Secret::new(secret),
        },
    );
    let settings = ClientSettings {
        request_timeout: std::time::Duration::from_secs(5),
        retry: RetryPolicy {
            initial_delay: std::time::Duration::from_millis(5),
            max_delay: std::time::Duration::from_millis(50),
            ..Default::default()
        },
        ..Default::default()
    };
    MixpanelClient::new(destination, settings).unwrap()
}

pub fn event_mapper(table: &MemoryTable) -> Arc<RowMapper> {
    let spec: SyncSpec = toml::from_str(
        "id='orders'\ntenant='acme'\nsource='mem'\ntable='orders'\ntable_type='events'\nmode='append'\ncursor_column='batch'\n[mapping]\nevent_name='Order'\ntime_column='ts'\ndistinct_id_column='user_id'\nkey_columns=['id']\n",
    )
    .unwrap();
    let valid = spec.validate().unwrap();
    let ctx = ImportContext {
        warehouse_type: "memory".into(),
        table: "orders".into(),
        import_id: "run-1".into(),
        import_job_id: None,
        import_run_id: None,
        token: None,
    };
    Arc::new(RowMapper::new(&spec, &valid.mapping, &table.columns, &ctx).unwrap())
}

pub async fn receiver_event_count(base_url: &str) -> u64 {
    let state: serde_json::Value = reqwest::get(format!("{base_url}/ferry/v1/projects/1/state"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    state["event_count"].as_u64().unwrap()
}
