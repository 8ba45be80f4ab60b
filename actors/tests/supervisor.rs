//! The SyncSupervisor restarts the whole pipeline after a retryable failure and resumes from the
//! last committed cursor; it gives up at once on a fatal error.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ferry_actors::pipeline::{
    build_stages, PipelineError, PipelineInput, PipelineSettings, PipelineStages, RunProgress,
};
use ferry_actors::restart::RestartPolicy;
use ferry_actors::supervisor::{AttemptFactory, SupervisedOutcome, SupervisorArgs, SyncSupervisor};
use ferry_connectors::mixpanel::MixpanelClient;
use ferry_connectors::warehouse::{CursorFilter, ReadRequest, ReadSource};
use ferry_core::error::ErrorClass;
use ferry_core::mapping::RowMapper;
use ferry_core::value::Value;
use futures_util::future::BoxFuture;
use ractor::Actor;
use tokio::sync::oneshot;

struct Factory {
    table: Arc<MemoryTable>,
    mapper: Arc<RowMapper>,
    client: MixpanelClient,
    sink: Arc<RecordingSink>,
    progress: Arc<RunProgress>,
    resumed_from: parking_lot::Mutex<Vec<Option<Value>>>,
}

impl AttemptFactory for Factory {
    fn build(&self, _attempt: u32) -> BoxFuture<'static, Result<PipelineStages, PipelineError>> {
        let after = self.sink.last();
        self.resumed_from.lock().push(after.clone());
        let input = PipelineInput {
            warehouse: self.table.clone(),
            read: ReadRequest {
                source: ReadSource::Table {
                    schema: None,
                    name: "orders".into(),
                },
                cursor: Some(CursorFilter {
                    column: "batch".into(),
                    after,
                }),
                page_size: 200,
            },
            mapper: self.mapper.clone(),
            client: self.client.clone(),
            sink: self.sink.clone(),
            progress: self.progress.clone(),
            settings: PipelineSettings {
                shards: 2,
                ..Default::default()
            },
        };
        Box::pin(async move { Ok(build_stages(input)) })
    }
}

async fn supervise(factory: Arc<Factory>) -> SupervisedOutcome {
    let (done, outcome) = oneshot::channel();
    let policy = RestartPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(100),
        ..Default::default()
    };
    let (_sup, handle) = Actor::spawn(
        None,
        SyncSupervisor,
        SupervisorArgs {
            factory,
            policy,
            done,
        },
    )
    .await
    .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), outcome)
        .await
        .expect("the run ends")
        .unwrap();
    handle.await.unwrap();
    outcome
}

fn factory(mut table: MemoryTable, client: MixpanelClient) -> Arc<Factory> {
    let sink = Arc::new(RecordingSink::default());
    table.fail_after_commit_in = Some(sink.clone());
    let table = Arc::new(table);
    Arc::new(Factory {
        mapper: event_mapper(&table),
        table,
        client,
        sink,
        progress: Arc::new(RunProgress::default()),
        resumed_from: parking_lot::Mutex::new(Vec::new()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_source_connection_restarts_the_pipeline_from_the_last_commit() {
    let rx = receiver(Default::default()).await;
    let mut table = MemoryTable::new(3_000);
    table.fail_reads.store(2, Ordering::SeqCst);
    table.fail_after_pages = 6;
    let f = factory(table, client(&rx.base_url(), "pw"));
    let outcome = supervise(f.clone()).await;
    let SupervisedOutcome::Succeeded {
        committed_cursor,
        attempts,
        row_errors,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(attempts, 3, "two failed reads, then success");
    assert!(row_errors.is_empty());
    assert_eq!(committed_cursor, Some(Value::Int(3_000 / 7)));
    let resumed = f.resumed_from.lock().clone();
    assert_eq!(resumed[0], None);
    assert!(
        resumed[1].is_some(),
        "the second attempt resumed from a committed cursor: {resumed:?}"
    );
    assert_eq!(
        receiver_event_count(&rx.base_url()).await,
        3_000,
        "nothing lost, nothing doubled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_fail_the_run_without_retrying() {
    let rx = receiver(Default::default()).await;
    let f = factory(
        MemoryTable::new(500),
        client(&rx.base_url(), "wrong-secret"),
    );
    let outcome = supervise(f.clone()).await;
    let SupervisedOutcome::Failed {
        error,
        class,
        attempts,
        ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(class, ErrorClass::Fatal);
    assert_eq!(attempts, 1);
    assert!(error.contains("import-shard"), "{error}");
    assert!(f.sink.last().is_none(), "no cursor moved");
    assert_eq!(receiver_event_count(&rx.base_url()).await, 0);
}
