//! One attempt of a sync run, as the SyncSupervisor starts it: the source streams pages, the
//! diff stage encodes them into records (JSON serialized once) and routes each record by its
//! route hash to one of K import shards, the shards batch and send, and the checkpoint stage
//! commits the cursor once everything before it was acknowledged.
//!
//! Rows travel in bounded tokio channels: the bounds are the backpressure, so memory stays
//! bounded whatever the table size. Acknowledgements travel on an unbounded channel, which is
//! safe because they are bounded by the records in flight, and it means a shard never waits on
//! the checkpoint stage while the diff stage waits on the shard.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use ferry_connectors::mixpanel::{
    Batch, BatchBuilder, MixpanelClient, MixpanelError, RecordEndpoint,
};
use ferry_connectors::warehouse::{Page, ReadRequest, Warehouse, WarehouseError};
use ferry_core::error::{Classify, ErrorClass};
use ferry_core::mapping::{EncodedRecord, RecordKind, RowError, RowMapper, Unset};
use ferry_core::value::Value;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, StreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::changes;
use crate::checkpoint::{CheckpointTracker, PageSeq, TrackerError};
use crate::send_gate::SendGate;

/// Where committed cursors go: a fenced write in the state store.
#[async_trait]
pub trait CursorSink: Send + Sync {
    async fn commit(&self, cursor: &Value) -> Result<(), String>;
}

#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Pages the source may run ahead of the diff stage.
    pub pages_in_flight: usize,
    /// Import shards (K).
    pub shards: usize,
    /// Records queued per shard (in chunks of up to [`SHARD_CHUNK`]).
    pub shard_queue: usize,
    /// Pages encoded at once, on blocking threads; their records still go out in page order.
    pub encoders: usize,
    /// Per-row errors kept in the run's log (the counts are always complete).
    pub max_row_errors: usize,
    /// Every batch waits here for its tenant's send budget before it is sent.
    pub send_gate: SendGate,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            // Decoded rows are the bulk of a run's memory: one page queued, `encoders` pages
            // encoding and one being read keep it bounded by the page size.
            pages_in_flight: 1,
            shards: 4,
            shard_queue: 2048,
            encoders: 2,
            max_row_errors: 1000,
            send_gate: SendGate::unlimited(),
        }
    }
}

/// Live counters of a run, readable while it goes.
#[derive(Debug, Default)]
pub struct RunProgress {
    pub rows_read: AtomicU64,
    pub records_sent: AtomicU64,
    pub records_accepted: AtomicU64,
    pub rows_invalid: AtomicU64,
    pub records_refused: AtomicU64,
    pub cursor_commits: AtomicU64,
    /// Mirror: deleted events the destination cannot delete (Mixpanel has no per-event delete).
    pub deletes_not_applied: AtomicU64,
    /// Mirror: the changes the run's diff found (set by the engine, not by the stages).
    pub changes_inserted: AtomicU64,
    pub changes_updated: AtomicU64,
    pub changes_deleted: AtomicU64,
    /// The rows the run will hand on, once known (Mirror: the diff's changes).
    total: Mutex<Option<KnownTotal>>,
}

/// A run's known total, and how far it was when the total became known: the rate and what is
/// left count only from then on (a Mirror run sends nothing while it diffs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnownTotal {
    pub rows: u64,
    pub since: std::time::Instant,
    pub done_before: u64,
}

impl RunProgress {
    /// Rows the run is finished with: answered by the destination (accepted or refused),
    /// invalid, or deletes the destination cannot apply.
    pub fn rows_done(&self) -> u64 {
        self.records_accepted.load(Ordering::Relaxed)
            + self.records_refused.load(Ordering::Relaxed)
            + self.rows_invalid.load(Ordering::Relaxed)
            + self.deletes_not_applied.load(Ordering::Relaxed)
    }

    /// Adds `rows` still to come to the run's total (the first call starts the count).
    pub fn add_rows_total(&self, rows: u64) {
        let mut total = self.total.lock();
        match total.as_mut() {
            Some(known) => known.rows += rows,
            None => {
                *total = Some(KnownTotal {
                    rows,
                    since: std::time::Instant::now(),
                    done_before: self.rows_done(),
                })
            }
        }
    }

    pub fn total(&self) -> Option<KnownTotal> {
        *self.total.lock()
    }
}

/// A row or record that did not make it, kept in the run's bounded error log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunRowError {
    /// `invalid_row` (mapping / validation before sending) or `refused` (the destination's 400).
    pub reason: &'static str,
    pub row: Option<u64>,
    pub key: Option<String>,
    pub field: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("source: {0}")]
    Source(#[from] WarehouseError),
    #[error("destination: {0}")]
    Destination(#[from] MixpanelError),
    #[error("cursor commit failed: {0}")]
    Commit(String),
    #[error("checkpoint bookkeeping: {0}")]
    Tracker(#[from] TrackerError),
    /// A stage lost its neighbour (usually because that one failed first) or panicked.
    #[error("a pipeline stage stopped unexpectedly: {0}")]
    Stage(String),
}

impl Classify for PipelineError {
    fn class(&self) -> ErrorClass {
        match self {
            PipelineError::Source(e) => e.class(),
            PipelineError::Destination(e) => e.class(),
            // A refused commit means the claim was lost: another owner runs the sync now.
            PipelineError::Commit(_) => ErrorClass::Fatal,
            PipelineError::Tracker(_) => ErrorClass::Fatal,
            PipelineError::Stage(_) => ErrorClass::Retryable,
        }
    }
}

/// What one attempt needs.
pub struct PipelineInput {
    pub warehouse: Arc<dyn Warehouse>,
    pub read: ReadRequest,
    pub mapper: Arc<RowMapper>,
    pub client: MixpanelClient,
    pub sink: Arc<dyn CursorSink>,
    pub progress: Arc<RunProgress>,
    pub settings: PipelineSettings,
}

/// The outcome of a completed attempt.
#[derive(Debug, Default)]
pub struct PipelineReport {
    pub committed_cursor: Option<Value>,
    pub row_errors: Vec<RunRowError>,
}

enum Ack {
    Open(PageSeq, Option<Value>),
    Seal(PageSeq, u64),
    Finished(PageSeq, u64),
}

/// Records travel to a shard in chunks of at most this many (one channel message each), not
/// one by one.
pub const SHARD_CHUNK: usize = 256;

/// Records of one page for one shard, in page order.
struct ShardItem {
    seq: PageSeq,
    records: Vec<EncodedRecord>,
}

pub struct ErrorLog {
    max: usize,
    entries: Mutex<Vec<RunRowError>>,
}

impl ErrorLog {
    fn push(&self, e: RunRowError) {
        let mut entries = self.entries.lock();
        if entries.len() < self.max {
            entries.push(e);
        }
    }
}

/// One stage of an attempt: a named future that runs until its input ends or it fails. The
/// checkpoint stage returns the last committed cursor; the others return `None`.
pub struct Stage {
    pub name: String,
    pub work: BoxFuture<'static, Result<Option<Value>, PipelineError>>,
}

/// The stages of one attempt, wired together, and the log they share.
pub struct PipelineStages {
    pub stages: Vec<Stage>,
    log: Arc<ErrorLog>,
}

impl PipelineStages {
    /// A handle that reads the error log after the stages were handed out.
    pub fn error_log(&self) -> ErrorLogHandle {
        ErrorLogHandle(self.log.clone())
    }
}

/// Reads a run's bounded per-row error log.
#[derive(Clone)]
pub struct ErrorLogHandle(Arc<ErrorLog>);

impl ErrorLogHandle {
    pub fn entries(&self) -> Vec<RunRowError> {
        self.0.entries.lock().clone()
    }
}

/// Wires the stages of one attempt: SourceActor's read, the DiffActor's encoding, K
/// ImportShardActors and the CheckpointTracker, joined by bounded channels.
pub fn build_stages(input: PipelineInput) -> PipelineStages {
    let PipelineInput {
        warehouse,
        read,
        mapper,
        client,
        sink,
        progress,
        settings,
    } = input;
    let shards = settings.shards.max(1);
    let log = Arc::new(ErrorLog {
        max: settings.max_row_errors,
        entries: Mutex::new(Vec::new()),
    });
    let (page_tx, page_rx) = mpsc::channel::<Page>(settings.pages_in_flight.max(1));
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Ack>();
    let mut shard_txs = Vec::with_capacity(shards);
    let mut stages = Vec::with_capacity(shards + 3);
    for k in 0..shards {
        let (tx, rx) =
            mpsc::channel::<ShardItem>(settings.shard_queue.div_ceil(SHARD_CHUNK).max(1));
        shard_txs.push(tx);
        stages.push(Stage {
            name: format!("import-shard-{k}"),
            work: Box::pin(import_shard(
                rx,
                client.clone(),
                settings.send_gate.clone(),
                ack_tx.clone(),
                progress.clone(),
                log.clone(),
            )),
        });
    }
    stages.push(Stage {
        name: "source".into(),
        work: Box::pin(async move {
            warehouse.read(&read, page_tx).await?;
            Ok(None)
        }),
    });
    stages.push(Stage {
        name: "diff".into(),
        work: Box::pin(diff_stage(
            page_rx,
            settings.encoders.max(1),
            mapper,
            shard_txs,
            ack_tx,
            progress.clone(),
            log.clone(),
        )),
    });
    stages.push(Stage {
        name: "checkpoint".into(),
        work: Box::pin(checkpoint_stage(ack_rx, sink, progress)),
    });
    PipelineStages { stages, log }
}

/// Runs one attempt to completion, or to the first error (the cursor then stays at the last
/// commit, and a restart resumes from there). The SyncSupervisor runs the same stages as
/// supervised actors; this plain form serves tests and one-shot tools.
pub async fn run_pipeline(input: PipelineInput) -> Result<PipelineReport, PipelineError> {
    let built = build_stages(input);
    let mut tasks: JoinSet<Result<Option<Value>, PipelineError>> = JoinSet::new();
    for stage in built.stages {
        tasks.spawn(stage.work);
    }
    let mut committed = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(Some(cursor))) => committed = Some(cursor),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tasks.abort_all();
                return Err(e);
            }
            Err(e) => {
                tasks.abort_all();
                return Err(PipelineError::Stage(e.to_string()));
            }
        }
    }
    let row_errors = std::mem::take(&mut *built.log.entries.lock());
    Ok(PipelineReport {
        committed_cursor: committed,
        row_errors,
    })
}

async fn diff_stage(
    mut pages: mpsc::Receiver<Page>,
    encoders: usize,
    mapper: Arc<RowMapper>,
    shards: Vec<mpsc::Sender<ShardItem>>,
    acks: mpsc::UnboundedSender<Ack>,
    progress: Arc<RunProgress>,
    log: Arc<ErrorLog>,
) -> Result<Option<Value>, PipelineError> {
    let mut seq: PageSeq = 0;
    let mut row_index: u64 = 0;
    let stopped = || PipelineError::Stage("the checkpoint stage stopped".into());
    // Up to `encoders` pages are encoded at once (encoding is CPU work: on blocking threads, off
    // the async workers); finished pages are taken in page order.
    let mut encoding = FuturesOrdered::new();
    let mut input_open = true;
    loop {
        tokio::select! {
            biased;
            page = pages.recv(), if input_open && encoding.len() < encoders => {
                let Some(page) = page else {
                    input_open = false;
                    continue;
                };
                acks.send(Ack::Open(seq, page.complete_through.clone()))
                    .map_err(|_| stopped())?;
                let first_row = row_index;
                row_index += page.batch.rows.len() as u64;
                progress
                    .rows_read
                    .fetch_add(page.batch.rows.len() as u64, Ordering::Relaxed);
                let mapper = mapper.clone();
                let page_seq = seq;
                seq += 1;
                encoding.push_back(tokio::task::spawn_blocking(move || {
                    let (records, errors) = encode_page(&mapper, first_row, &page);
                    (page_seq, records, errors)
                }));
            }
            Some(encoded) = encoding.next(), if !encoding.is_empty() => {
                let (seq, records, errors) =
                    encoded.map_err(|e| PipelineError::Stage(format!("encoding: {e}")))?;
                forward_page(seq, records, errors, &shards, &acks, &progress, &log).await?;
            }
            else => break,
        }
    }
    Ok(None)
}

/// Logs a page's failed rows, routes its records to their shards in chunks, and seals it.
async fn forward_page(
    seq: PageSeq,
    records: Vec<EncodedRecord>,
    errors: Vec<(&'static str, RowError)>,
    shards: &[mpsc::Sender<ShardItem>],
    acks: &mpsc::UnboundedSender<Ack>,
    progress: &RunProgress,
    log: &ErrorLog,
) -> Result<(), PipelineError> {
    for (reason, e) in errors {
        let counter = if reason == changes::NOT_APPLIED {
            &progress.deletes_not_applied
        } else {
            &progress.rows_invalid
        };
        counter.fetch_add(1, Ordering::Relaxed);
        log.push(RunRowError {
            reason,
            row: Some(e.row),
            key: e.key,
            field: e.field,
            message: e.message,
        });
    }
    let count = records.len() as u64;
    let mut routed: Vec<Vec<EncodedRecord>> = vec![Vec::new(); shards.len()];
    for record in records {
        let shard = (record.route_hash % shards.len() as u64) as usize;
        routed[shard].push(record);
        if routed[shard].len() >= SHARD_CHUNK {
            let chunk = std::mem::take(&mut routed[shard]);
            send_chunk(&shards[shard], seq, chunk).await?;
        }
    }
    for (shard, chunk) in routed.into_iter().enumerate() {
        if !chunk.is_empty() {
            send_chunk(&shards[shard], seq, chunk).await?;
        }
    }
    acks.send(Ack::Seal(seq, count))
        .map_err(|_| PipelineError::Stage("the checkpoint stage stopped".into()))
}

async fn send_chunk(
    shard: &mpsc::Sender<ShardItem>,
    seq: PageSeq,
    records: Vec<EncodedRecord>,
) -> Result<(), PipelineError> {
    shard
        .send(ShardItem { seq, records })
        .await
        .map_err(|_| PipelineError::Stage("an import shard stopped".into()))
}

/// Encodes a page; each failed row comes with its log reason (see [`changes`]). A page of
/// Mirror changes (it has `_mp_change_type`) is encoded change by change.
fn encode_page(
    mapper: &RowMapper,
    first_row: u64,
    page: &Page,
) -> (Vec<EncodedRecord>, Vec<(&'static str, RowError)>) {
    let now = chrono::Utc::now().timestamp_millis();
    let mut records = Vec::with_capacity(page.batch.rows.len());
    let mut errors = Vec::new();
    let change_index = changes::change_type_index(&page.batch.columns);
    for (i, row) in page.batch.rows.iter().enumerate() {
        let row_index = first_row + i as u64;
        let encoded = match change_index {
            Some(c) => changes::encode_change(mapper, row_index, row, c, now, &mut records),
            None => mapper
                .encode_upsert(row_index, row, Unset::Never, now, &mut records)
                .map_err(|e| (changes::INVALID_ROW, e)),
        };
        if let Err(e) = encoded {
            errors.push(e);
        }
    }
    (records, errors)
}

async fn import_shard(
    mut input: mpsc::Receiver<ShardItem>,
    client: MixpanelClient,
    gate: SendGate,
    acks: mpsc::UnboundedSender<Ack>,
    progress: Arc<RunProgress>,
    log: Arc<ErrorLog>,
) -> Result<Option<Value>, PipelineError> {
    let mut builder = BatchBuilder::new();
    // Every record waiting in the builder has this kind (a change of kind flushes first), and
    // `seqs` holds their pages, in order.
    let mut kind: Option<RecordKind> = None;
    let mut seqs: Vec<PageSeq> = Vec::new();
    loop {
        // Wait for records; when none are queued right now, send what is pending instead of
        // holding it (the checkpoint cannot move past records that sit in a builder).
        let item = match input.try_recv() {
            Ok(item) => Some(item),
            Err(mpsc::error::TryRecvError::Empty) => {
                if let Some(batch) = builder.flush() {
                    send(
                        &client, &gate, batch, kind, &mut seqs, &acks, &progress, &log,
                    )
                    .await?;
                }
                input.recv().await
            }
            Err(mpsc::error::TryRecvError::Disconnected) => None,
        };
        let Some(ShardItem { seq, records }) = item else {
            break;
        };
        for record in records {
            // One endpoint per batch: a sync produces one record kind, but check rather than mix.
            if kind.is_some_and(|k| k != record.kind) {
                if let Some(batch) = builder.flush() {
                    send(
                        &client, &gate, batch, kind, &mut seqs, &acks, &progress, &log,
                    )
                    .await?;
                }
            }
            let key = record.insert_id;
            match builder.push(record.json, key.clone()) {
                Ok(complete) => {
                    // The pushed record is either in `complete` (it filled it) or pending;
                    // `send` takes the batch's pages from the front of `seqs`.
                    kind = Some(record.kind);
                    seqs.push(seq);
                    if let Some(batch) = complete {
                        send(
                            &client, &gate, batch, kind, &mut seqs, &acks, &progress, &log,
                        )
                        .await?;
                    }
                }
                Err(e) => {
                    log.push(RunRowError {
                        reason: "invalid_row",
                        row: None,
                        key,
                        field: "record".into(),
                        message: e.to_string(),
                    });
                    progress.rows_invalid.fetch_add(1, Ordering::Relaxed);
                    acks.send(Ack::Finished(seq, 1))
                        .map_err(|_| PipelineError::Stage("checkpoint stopped".into()))?;
                }
            }
        }
    }
    if let Some(batch) = builder.flush() {
        send(
            &client, &gate, batch, kind, &mut seqs, &acks, &progress, &log,
        )
        .await?;
    }
    Ok(None)
}

/// Sends one batch of records of `kind` whose pages are the first `batch.len()` entries of
/// `seqs` (removed here), and reports every record as finished. It first waits for the
/// tenant's send budget (cancelled with the stage: the wait is a plain tokio sleep).
#[allow(clippy::too_many_arguments)]
async fn send(
    client: &MixpanelClient,
    gate: &SendGate,
    batch: Batch,
    kind: Option<RecordKind>,
    seqs: &mut Vec<PageSeq>,
    acks: &mpsc::UnboundedSender<Ack>,
    progress: &RunProgress,
    log: &ErrorLog,
) -> Result<(), PipelineError> {
    let n = batch.len();
    let endpoint = match kind {
        Some(RecordKind::UserProfile) => RecordEndpoint::Engage,
        Some(RecordKind::GroupProfile) => RecordEndpoint::Groups,
        _ => RecordEndpoint::Import,
    };
    let batch_seqs: Vec<PageSeq> = seqs.drain(..n).collect();
    gate.admit(n as u64).await;
    progress.records_sent.fetch_add(n as u64, Ordering::Relaxed);
    let outcome = match kind {
        Some(RecordKind::EventDelete) => client.delete_events(batch).await?.batch,
        _ => client.send(endpoint, batch).await?,
    };
    progress
        .records_accepted
        .fetch_add(outcome.accepted as u64, Ordering::Relaxed);
    progress
        .records_refused
        .fetch_add((n - outcome.accepted) as u64, Ordering::Relaxed);
    for f in &outcome.failed {
        log.push(RunRowError {
            reason: "refused",
            row: None,
            key: f.insert_id.clone().or_else(|| f.distinct_id.clone()),
            field: f.field.clone(),
            message: f.message.clone(),
        });
    }
    for extra in &outcome.unattributed_failures {
        log.push(RunRowError {
            reason: "refused",
            row: None,
            key: None,
            field: String::new(),
            message: extra.clone(),
        });
    }
    // Every record of the batch is finished: accepted, or refused and logged.
    let mut per_page: Vec<(PageSeq, u64)> = Vec::new();
    for s in batch_seqs {
        match per_page.last_mut() {
            Some((last, count)) if *last == s => *count += 1,
            _ => per_page.push((s, 1)),
        }
    }
    for (s, count) in per_page {
        acks.send(Ack::Finished(s, count))
            .map_err(|_| PipelineError::Stage("checkpoint stopped".into()))?;
    }
    Ok(())
}

async fn checkpoint_stage(
    mut acks: mpsc::UnboundedReceiver<Ack>,
    sink: Arc<dyn CursorSink>,
    progress: Arc<RunProgress>,
) -> Result<Option<Value>, PipelineError> {
    let mut tracker = CheckpointTracker::new();
    let mut committed = None;
    while let Some(ack) = acks.recv().await {
        match ack {
            Ack::Open(seq, cursor) => {
                let opened = tracker.open_page(cursor);
                if opened != seq {
                    return Err(PipelineError::Stage(format!(
                        "page {seq} opened out of order (expected {opened})"
                    )));
                }
            }
            Ack::Seal(seq, n) => tracker.seal_page(seq, n)?,
            Ack::Finished(seq, n) => tracker.finish_records(seq, n)?,
        }
        if let Some(cursor) = tracker.take_commit() {
            sink.commit(&cursor).await.map_err(PipelineError::Commit)?;
            progress.cursor_commits.fetch_add(1, Ordering::Relaxed);
            committed = Some(cursor);
        }
    }
    if tracker.pending_pages() > 0 {
        return Err(PipelineError::Stage(format!(
            "{} pages were never fully acknowledged",
            tracker.pending_pages()
        )));
    }
    Ok(committed)
}
