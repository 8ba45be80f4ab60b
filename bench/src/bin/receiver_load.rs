//! Load generator for `ferry receiver`: pre-builds gzip'd 2000-event JSON batches of ~1 KB
//! events, then sends them with N concurrent connections and reports accepted events/s.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use ferry_bench::EventGen;

#[derive(Parser)]
struct Args {
    /// Receiver base URL, e.g. http://127.0.0.1:8787
    #[arg(long)]
    url: String,
    #[arg(long, default_value = "1")]
    project_id: String,
    #[arg(long, default_value = "bench")]
    user: String,
    #[arg(long, default_value = "bench-secret")]
    secret: String,
    /// Events to send in total.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Distinct batches to pre-build (each is re-sent with fresh insert ids being unnecessary:
    /// the receiver validates and dedups every request in full either way).
    #[arg(long, default_value_t = 50)]
    distinct_batches: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut gen = EventGen::new(1);
    let mut batches = Vec::new();
    let mut raw_bytes = 0usize;
    for _ in 0..args.distinct_batches {
        let events: Vec<_> = (0..args.batch).map(|_| gen.event()).collect();
        let raw = serde_json::to_vec(&events)?;
        raw_bytes += raw.len();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
        enc.write_all(&raw)?;
        batches.push(bytes::Bytes::from(enc.finish()?));
    }
    let avg_event = raw_bytes / (args.distinct_batches * args.batch);
    let total_batches = args.events.div_ceil(args.batch);
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let batches = Arc::new(batches);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let url = format!(
        "{}/import?strict=1&project_id={}",
        args.url, args.project_id
    );
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (next, accepted, batches, client, url) = (
            next.clone(),
            accepted.clone(),
            batches.clone(),
            client.clone(),
            url.clone(),
        );
        let (user, secret) = (args.user.clone(), args.secret.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total_batches {
                    return Ok::<_, anyhow::Error>(());
                }
                let body = batches[n % batches.len()].clone();
                let resp = client
                    .post(&url)
                    .basic_auth(&user, Some(&secret))
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .body(body)
                    .send()
                    .await
                    .context("sending a batch")?;
                let status = resp.status();
                let body: serde_json::Value = resp.json().await.context("reading the answer")?;
                if !status.is_success() {
                    bail!("receiver answered {status}: {body}");
                }
                accepted.fetch_add(
                    body["num_records_imported"].as_u64().unwrap_or(0) as usize,
                    Ordering::Relaxed,
                );
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = accepted.load(Ordering::Relaxed);
    println!(
        "{{\"events\":{n},\"seconds\":{secs:.3},\"events_per_s\":{:.0},\"avg_event_bytes\":{avg_event},\"batch\":{},\"concurrency\":{}}}",
        n as f64 / secs,
        args.batch,
        args.concurrency
    );
    Ok(())
}
