//! Running jobs on this node with visible progress, shared by `ferry node` and `quickstart`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferry_actors::pipeline::{PipelineSettings, RunProgress};
use ferry_connectors::mixpanel::ClientSettings;
use ferry_coordinator::runner::{RunnerSettings, SyncRunner};
use ferry_coordinator::{EmbeddedSettings, EmbeddedStore, RunRecord, RunState, StateStore};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::config::{Job, NodeSettings};

/// Opens the node's embedded state store under `data_dir` and builds its runner.
pub async fn embedded_runner(
    settings: &NodeSettings,
    data_dir: &Path,
) -> anyhow::Result<Arc<SyncRunner>> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let dir = data_dir.to_owned();
    let store = tokio::task::spawn_blocking(move || {
        EmbeddedStore::open_in(&dir, EmbeddedSettings::default())
    })
    .await
    .context("opening the state store")?
    .with_context(|| format!("opening the state store in {}", data_dir.display()))?;
    let store: Arc<dyn StateStore> = Arc::new(store);
    Ok(Arc::new(SyncRunner::new(store, runner_settings(settings))))
}

/// The runner's settings from the node's.
pub fn runner_settings(settings: &NodeSettings) -> RunnerSettings {
    RunnerSettings {
        node_id: settings.id.clone(),
        page_size: settings.page_size.max(1),
        pipeline: PipelineSettings {
            shards: settings.shards.max(1),
            ..Default::default()
        },
        client: ClientSettings {
            max_in_flight: settings.max_in_flight.max(1),
            ..Default::default()
        },
        receiver_extensions: settings.receiver_extensions,
        ..Default::default()
    }
}

/// Runs one job with a progress line that shows rows read and records acknowledged.
pub async fn run_with_progress(
    runner: &SyncRunner,
    job: &Job,
    bars: &MultiProgress,
) -> anyhow::Result<RunRecord> {
    let progress = Arc::new(RunProgress::default());
    let bar = bars.add(ProgressBar::new_spinner());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix:<22} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(format!("{} ({})", job.sync.id, job.sync.table_type.name()));
    bar.enable_steady_tick(Duration::from_millis(100));
    let watched = progress.clone();
    let ticker_bar = bar.clone();
    let ticker = tokio::spawn(async move {
        loop {
            ticker_bar.set_message(format!(
                "{} rows read, {} sent, {} acknowledged",
                watched.rows_read.load(Ordering::Relaxed),
                watched.records_sent.load(Ordering::Relaxed),
                watched.records_accepted.load(Ordering::Relaxed)
            ));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let result = runner
        .run(&job.tenant, &job.source, &job.sync, progress)
        .await;
    ticker.abort();
    let line = match &result {
        Ok(run) => summary(run),
        Err(e) => format!("not run: {e}"),
    };
    // Without a terminal the bar is hidden: print the outcome as a plain line instead.
    if bar.is_hidden() {
        println!(
            "     {} ({}): {line}",
            job.sync.id,
            job.sync.table_type.name()
        );
    }
    bar.finish_with_message(line);
    Ok(result?)
}

/// One line about a finished run.
pub fn summary(run: &RunRecord) -> String {
    let c = &run.counts;
    let mut line = format!(
        "{:?}: {} rows read, {} records acknowledged, {} invalid rows, {} refused",
        run.state, c.rows_read, c.records_accepted, c.rows_invalid, c.records_refused
    )
    .to_lowercase();
    if run.attempts > 1 {
        line.push_str(&format!(", {} attempts", run.attempts));
    }
    if let Some(m) = &run.message {
        line.push_str(&format!(" — {m}"));
    }
    line
}

/// Prints the first per-row errors of a run, for people.
pub fn print_errors(run: &RunRecord, max: usize) {
    if run.errors.is_empty() {
        return;
    }
    eprintln!(
        "  per-row errors of {} (first {} of {}):",
        run.run_id,
        run.errors.len().min(max),
        run.errors.len() as u64 + run.errors_dropped
    );
    for e in run.errors.iter().take(max) {
        let at = e
            .row
            .map(|r| format!("row {r}"))
            .or_else(|| e.key.clone())
            .unwrap_or_default();
        eprintln!("    [{}] {at}: {}: {}", e.reason, e.field, e.message);
    }
}

pub fn failed(run: &RunRecord) -> bool {
    run.state != RunState::Succeeded
}
