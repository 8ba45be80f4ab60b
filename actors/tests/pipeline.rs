//! One attempt of the pipeline end to end into the real receiver (loopback HTTP) under
//! injected faults.

mod common;

use std::sync::Arc;

use common::*;
use ferry_actors::pipeline::{run_pipeline, PipelineInput, PipelineSettings, RunProgress};
use ferry_connectors::warehouse::{CursorFilter, ReadRequest, ReadSource};
use ferry_core::value::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_arrives_exactly_once_under_faults_and_the_cursor_only_moves_forward() {
    let rx = receiver(
        toml::from_str(
            "seed = 3\nerror_429 = 0.15\nerror_503 = 0.1\ndrop = 0.05\ndrop_after_store = 0.1",
        )
        .unwrap(),
    )
    .await;

    let table = Arc::new(MemoryTable::new(5_000));
    let mapper = event_mapper(&table);
    let client = client(&rx.base_url(), "pw");
    let sink = Arc::new(RecordingSink::default());
    let progress = Arc::new(RunProgress::default());
    let read = ReadRequest {
        source: ReadSource::Table {
            schema: None,
            name: "orders".into(),
        },
        cursor: Some(CursorFilter {
            column: "batch".into(),
            after: None,
        }),
        page_size: 250,
    };
    let report = run_pipeline(PipelineInput {
        warehouse: table.clone(),
        read,
        mapper,
        client,
        sink: sink.clone(),
        progress: progress.clone(),
        settings: PipelineSettings {
            shards: 3,
            shard_queue: 300,
            ..Default::default()
        },
    })
    .await
    .unwrap();

    assert_eq!(
        receiver_event_count(&rx.base_url()).await,
        5_000,
        "every row stored once"
    );
    assert_eq!(report.committed_cursor, Some(Value::Int(5_000 / 7)));
    let commits = sink.commits.lock().clone();
    assert!(
        commits.len() > 1,
        "the cursor moved during the run, not only at its end: {commits:?}"
    );
    assert!(
        commits
            .windows(2)
            .all(|w| w[0] != w[1]
                && matches!((&w[0], &w[1]), (Value::Int(a), Value::Int(b)) if a < b)),
        "{commits:?}"
    );
    assert_eq!(
        progress
            .rows_read
            .load(std::sync::atomic::Ordering::Relaxed),
        5_000
    );
    assert_eq!(
        progress
            .records_accepted
            .load(std::sync::atomic::Ordering::Relaxed),
        5_000
    );
    let stats: serde_json::Value = reqwest::get(format!("{}/ferry/v1/stats", rx.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        stats["faults_injected"]
            .as_object()
            .is_some_and(|f| !f.is_empty()),
        "faults were really injected: {stats}"
    );
}
