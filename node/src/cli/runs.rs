//! `ferry runs …`, and following a run (also `syncs trigger --follow`) with a progress bar.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Subcommand;
use ferry_proto::admin::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::client::Client;
use super::error::{CliError, ExitKind};
use super::output::{count, emit, fields, list, print_json_line, Format};
use super::sources::problems_text;
use super::{json, Connection};

#[derive(Subcommand)]
pub enum RunsCommand {
    /// A sync's runs, newest first.
    List {
        sync: String,
        /// How many (the node's default is 20, at most 100).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// One run, with live counters while it runs. RUN may be `latest`.
    Get {
        sync: String,
        run: String,
        /// Include the per-row errors.
        #[arg(long)]
        errors: bool,
    },
    /// A run's per-row errors with their reasons. RUN may be `latest`.
    Errors { sync: String, run: String },
    /// Stop a running run; its cursor stays at the last commit.
    Cancel { sync: String, run: String },
    /// Follow a run until it ends (a progress bar on a terminal; JSON lines with -o json).
    /// Exits 6 if it fails or is cancelled. RUN may be `latest`.
    #[command(alias = "watch")]
    Follow { sync: String, run: String },
}

pub async fn run(conn: &Connection, command: RunsCommand) -> Result<(), CliError> {
    let client = conn.connect()?;
    let out = conn.output;
    let tenant = conn.tenant();
    match command {
        RunsCommand::List { sync, limit } => {
            let resp = client
                .call(client.runs().list_runs(client.request(pb::ListRunsRequest {
                    tenant,
                    sync,
                    limit,
                })))
                .await?;
            emit(
                out,
                resp.runs.iter().map(json::run).collect::<Vec<_>>().into(),
                || runs_table(&resp.runs),
            );
        }
        RunsCommand::Get { sync, run, errors } => {
            let run_id = resolve(&client, &tenant, &sync, &run).await?;
            let r = get(&client, &tenant, &sync, &run_id, errors).await?;
            emit(out, json::run(&r), || run_text(&r, None));
        }
        RunsCommand::Errors { sync, run } => {
            let run_id = resolve(&client, &tenant, &sync, &run).await?;
            let r = get(&client, &tenant, &sync, &run_id, true).await?;
            emit(
                out,
                json!({
                    "run_id": r.run_id,
                    "errors": r.errors.iter().map(json::row_problem).collect::<Vec<_>>(),
                    "errors_dropped": r.errors_dropped,
                }),
                || errors_table(&r),
            );
        }
        RunsCommand::Cancel { sync, run } => {
            let run_id = resolve(&client, &tenant, &sync, &run).await?;
            let r = client
                .call(
                    client
                        .runs()
                        .cancel_run(client.request(pb::CancelRunRequest {
                            tenant,
                            sync,
                            run_id,
                        })),
                )
                .await?;
            emit(out, json::run(&r), || {
                format!("run {} is {}", r.run_id, json::run_state(r.state))
            });
        }
        RunsCommand::Follow { sync, run } => {
            let run_id = resolve(&client, &tenant, &sync, &run).await?;
            return follow(&client, out, &tenant, &sync, &run_id).await;
        }
    }
    Ok(())
}

/// `latest` → the newest run's id; anything else is taken as the id.
async fn resolve(client: &Client, tenant: &str, sync: &str, run: &str) -> Result<String, CliError> {
    if run != "latest" {
        return Ok(run.to_owned());
    }
    let resp = client
        .call(client.runs().list_runs(client.request(pb::ListRunsRequest {
            tenant: tenant.to_owned(),
            sync: sync.to_owned(),
            limit: 1,
        })))
        .await?;
    resp.runs
        .into_iter()
        .next()
        .map(|r| r.run_id)
        .ok_or_else(|| {
            CliError::new(
                ExitKind::NotFound,
                format!("not found: sync {sync} has no runs yet"),
            )
        })
}

async fn get(
    client: &Client,
    tenant: &str,
    sync: &str,
    run_id: &str,
    include_errors: bool,
) -> Result<pb::Run, CliError> {
    client
        .call(client.runs().get_run(client.request(pb::GetRunRequest {
            tenant: tenant.to_owned(),
            sync: sync.to_owned(),
            run_id: run_id.to_owned(),
            include_errors,
        })))
        .await
}

fn is_final(state: i32) -> bool {
    matches!(
        pb::RunState::try_from(state),
        Ok(pb::RunState::Succeeded | pb::RunState::Failed | pb::RunState::Cancelled)
    )
}

/// Watches a run to its end. Table output on a terminal shows a progress bar (rows read, sent,
/// acknowledged, rate, ETA when the total is known) and then the run; without a terminal only
/// the run at the end; `-o json` prints every update as a JSON line, the final state last.
/// A run that fails or is cancelled is an error ([`ExitKind::RunFailed`]).
pub async fn follow(
    client: &Client,
    out: Format,
    tenant: &str,
    sync: &str,
    run_id: &str,
) -> Result<(), CliError> {
    let request = client.stream_request(pb::WatchRunRequest {
        tenant: tenant.to_owned(),
        sync: sync.to_owned(),
        run_id: run_id.to_owned(),
    });
    let mut runs = client.runs();
    let mut stream = match tokio::time::timeout(client.ctx.timeout, runs.watch_run(request)).await {
        Ok(Ok(resp)) => resp.into_inner(),
        Ok(Err(status)) => return Err(client.ctx.status(&status)),
        Err(_) => return Err(client.ctx.timed_out()),
    };
    let bar = (out == Format::Table && std::io::stdout().is_terminal()).then(|| progress_bar(sync));
    let mut last: Option<pb::Run> = None;
    loop {
        match stream.message().await {
            Ok(Some(run)) => {
                if let Some(bar) = &bar {
                    show_progress(bar, &run);
                }
                if out == Format::Json {
                    print_json_line(&json::run(&run));
                }
                let done = is_final(run.state);
                last = Some(run);
                if done {
                    break;
                }
            }
            Ok(None) => break,
            Err(status) => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                return Err(client.ctx.status(&status));
            }
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let Some(run) = last else {
        return Err(CliError::new(
            ExitKind::Unavailable,
            format!("the node sent nothing about run {run_id} of sync {sync}"),
        ));
    };
    if out == Format::Table {
        println!("{}", run_text(&run, Some(10)));
    }
    match pb::RunState::try_from(run.state) {
        Ok(pb::RunState::Succeeded) => Ok(()),
        Ok(pb::RunState::Failed | pb::RunState::Cancelled) => Err(CliError::new(
            ExitKind::RunFailed,
            format!(
                "run {} of sync {sync} {}{}",
                run.run_id,
                json::run_state(run.state),
                if run.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", run.message)
                }
            ),
        )),
        _ => Err(CliError::new(
            ExitKind::Unavailable,
            format!(
                "the node stopped reporting run {} of sync {sync} while it was {} (see `ferry runs get {sync} {}`)",
                run.run_id,
                json::run_state(run.state),
                run.run_id
            ),
        )),
    }
}

fn progress_bar(sync: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(spinner_style());
    bar.set_prefix(sync.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn spinner_style() -> ProgressStyle {
    // wide_msg: the line is cut to the terminal's width instead of wrapping.
    ProgressStyle::with_template(
        "{spinner} {prefix} [{elapsed}] {human_pos} rows read · {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix} [{elapsed}] [{bar:25}] {human_pos}/{human_len} rows read · {wide_msg}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn show_progress(bar: &ProgressBar, run: &pb::Run) {
    let c = run.counts.unwrap_or_default();
    let p = run.progress.unwrap_or_default();
    if let Some(total) = p.rows_total {
        if bar.length() != Some(total) {
            bar.set_style(bar_style());
            bar.set_length(total);
        }
    }
    bar.set_position(c.rows_read);
    let mut msg = format!(
        "{} sent · {} acknowledged · {} rows/s",
        count(c.records_sent),
        count(c.records_accepted),
        count(p.rows_per_second.max(0.0).round() as u64)
    );
    if let Some(eta) = p.eta_seconds {
        msg.push_str(&format!(" · ETA {}", human_seconds(eta)));
    }
    if c.rows_invalid > 0 {
        msg.push_str(&format!(" · {} invalid", count(c.rows_invalid)));
    }
    if !is_final(run.state) && run.state != pb::RunState::Running as i32 {
        msg.push_str(&format!(" · {}", json::run_state(run.state)));
    }
    bar.set_message(msg);
}

fn human_seconds(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn elapsed(run: &pb::Run) -> String {
    run.progress
        .as_ref()
        .filter(|p| p.elapsed_seconds > 0.0)
        .map(|p| human_seconds(p.elapsed_seconds))
        .unwrap_or_default()
}

fn runs_table(runs: &[pb::Run]) -> String {
    list(
        &[
            "run",
            "state",
            "trigger",
            "started",
            "elapsed",
            "read",
            "sent",
            "acknowledged",
            "invalid",
            "refused",
        ],
        runs.iter().map(|r| {
            let c = r.counts.unwrap_or_default();
            vec![
                r.run_id.clone(),
                json::run_state(r.state),
                r.trigger.clone(),
                r.started_at.clone(),
                elapsed(r),
                count(c.rows_read),
                count(c.records_sent),
                count(c.records_accepted),
                count(c.rows_invalid),
                count(c.records_refused),
            ]
        }),
    )
}

/// A run for people; with `max_errors`, only the first per-row errors and where to see the rest.
pub fn run_text(r: &pb::Run, max_errors: Option<usize>) -> String {
    let c = r.counts.unwrap_or_default();
    let p = r.progress.unwrap_or_default();
    let mut text = fields(&[
        ("run", r.run_id.clone()),
        ("sync", format!("{}/{}", r.tenant, r.sync)),
        ("state", json::run_state(r.state)),
        ("message", r.message.clone()),
        ("trigger", r.trigger.clone()),
        ("import_id", r.import_id.clone()),
        ("queued_at", r.queued_at.clone()),
        ("started_at", r.started_at.clone()),
        ("finished_at", r.finished_at.clone()),
        ("elapsed", elapsed(r)),
        (
            "rows_read",
            match p.rows_total {
                Some(total) => format!("{} of {}", count(c.rows_read), count(total)),
                None => count(c.rows_read),
            },
        ),
        ("records_sent", count(c.records_sent)),
        ("acknowledged", count(c.records_accepted)),
        ("rows_invalid", count(c.rows_invalid)),
        ("records_refused", count(c.records_refused)),
        ("cursor_commits", count(c.cursor_commits)),
        (
            "rate",
            if p.rows_per_second > 0.0 {
                format!("{} rows/s", count(p.rows_per_second.round() as u64))
            } else {
                String::new()
            },
        ),
        ("attempts", r.attempts.to_string()),
    ]);
    let shown = max_errors.unwrap_or(usize::MAX).min(r.errors.len());
    text.push_str(&problems_text(&r.errors[..shown], "per-row errors"));
    let more = (r.errors.len() - shown) as u64;
    if more > 0 {
        text.push_str(&format!(
            "\n  … and {} more: ferry runs errors {} {}",
            count(more + r.errors_dropped),
            r.sync,
            r.run_id
        ));
    } else if r.errors_dropped > 0 {
        text.push_str(&format!(
            "\n  … and {} more not kept",
            count(r.errors_dropped)
        ));
    }
    text
}

fn errors_table(r: &pb::Run) -> String {
    let mut text = list(
        &["row", "key", "reason", "field", "message"],
        r.errors.iter().map(|e| {
            vec![
                e.row.map(|n| n.to_string()).unwrap_or_default(),
                e.key.clone(),
                e.reason.clone(),
                e.field.clone(),
                e.message.clone(),
            ]
        }),
    );
    if r.errors_dropped > 0 {
        text.push_str(&format!(
            "\n… and {} more not kept",
            count(r.errors_dropped)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_and_elapsed_read_well() {
        assert_eq!(human_seconds(4.4), "4s");
        assert_eq!(human_seconds(125.0), "2m05s");
        assert_eq!(human_seconds(7300.0), "2h01m");
    }

    #[test]
    fn the_progress_bar_turns_into_a_bar_once_the_total_is_known() {
        let bar = ProgressBar::hidden();
        bar.set_style(spinner_style());
        let mut run = pb::Run {
            state: pb::RunState::Running as i32,
            counts: Some(pb::RunCounts {
                rows_read: 500,
                records_sent: 400,
                records_accepted: 300,
                ..Default::default()
            }),
            progress: Some(pb::RunProgress {
                rows_per_second: 250.0,
                ..Default::default()
            }),
            ..Default::default()
        };
        show_progress(&bar, &run);
        assert_eq!(bar.length(), None);
        assert_eq!(bar.message(), "400 sent · 300 acknowledged · 250 rows/s");
        run.progress = Some(pb::RunProgress {
            rows_per_second: 250.0,
            rows_total: Some(1000),
            eta_seconds: Some(2.0),
            ..Default::default()
        });
        show_progress(&bar, &run);
        assert_eq!((bar.length(), bar.position()), (Some(1000), 500));
        assert!(bar.message().ends_with("ETA 2s"), "{}", bar.message());
    }
}
