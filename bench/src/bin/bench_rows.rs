//! The benchmark table's rows, and the encode + gzip floor over them.
//!
//!   bench_rows copy --rows N            PostgreSQL `COPY ... FROM STDIN` text on stdout
//!   bench_rows ddl                      the PostgreSQL `CREATE TABLE` (and cursor index)
//!   bench_rows sqlite --rows N --out F  the same rows as a SQLite file
//!   bench_rows encode --rows N [--ndjson F]
//!       maps every row to its event exactly as an Append run does (Ferry's RowMapper),
//!       packs and gzips batches with the Mixpanel client's own code, on one thread; prints
//!       JSON with the time spent encoding and gzipping (row generation is not counted).
//!       With --ndjson, also writes the events one per line: what the third-party clients send.

use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_bench::rows::{self, RowGen};
use ferry_connectors::mixpanel::BatchBuilder;
use ferry_core::mapping::Unset;

/// The `ferry` binary's allocator: the floor allocates as a sync does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Ddl,
    Copy {
        #[arg(long)]
        rows: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    Sqlite {
        #[arg(long)]
        rows: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    Encode {
        #[arg(long)]
        rows: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        ndjson: Option<std::path::PathBuf>,
        /// gzip level, as the Mixpanel client's default.
        #[arg(long, default_value_t = ferry_connectors::mixpanel::ClientSettings::default().gzip_level)]
        gzip_level: u32,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Ddl => println!("{}", rows::postgres_ddl()),
        Command::Copy { rows, seed } => {
            let gen = RowGen::new(seed, rows);
            let stdout = std::io::stdout();
            let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
            rows::write_copy_text(&gen, 0..rows, &mut out)?;
            out.flush()?;
        }
        Command::Sqlite { rows, seed, out } => {
            rows::write_sqlite(&RowGen::new(seed, rows), rows, &out)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        Command::Encode {
            rows,
            seed,
            ndjson,
            gzip_level,
        } => encode(rows, seed, ndjson, gzip_level)?,
    }
    Ok(())
}

fn encode(
    rows: u64,
    seed: u64,
    ndjson: Option<std::path::PathBuf>,
    gzip_level: u32,
) -> anyhow::Result<()> {
    const PAGE: u64 = 5000;
    let gen = RowGen::new(seed, rows);
    let mapper = rows::row_mapper()?;
    let mut ndjson = match ndjson {
        Some(path) => Some(BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let now = chrono::Utc::now().timestamp_millis();
    let (mut encode_time, mut gzip_time) = (Duration::ZERO, Duration::ZERO);
    let (mut records, mut invalid, mut json_bytes, mut gzip_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut encoded = Vec::with_capacity(PAGE as usize);
    let mut start = 0;
    while start < rows {
        let end = (start + PAGE).min(rows);
        let page: Vec<_> = (start..end).map(|i| gen.row(i)).collect();
        encoded.clear();
        let t = Instant::now();
        for (k, row) in page.iter().enumerate() {
            if mapper
                .encode_upsert(start + k as u64, row, Unset::Never, now, &mut encoded)
                .is_err()
            {
                invalid += 1;
            }
        }
        encode_time += t.elapsed();
        let t = Instant::now();
        // Packed and gzipped exactly as the Mixpanel client does it.
        let mut builder = BatchBuilder::new();
        let mut batches = Vec::new();
        for r in &encoded {
            json_bytes += r.json.len() as u64;
            batches.extend(builder.push(r.json.clone(), r.insert_id.clone())?);
        }
        batches.extend(builder.flush());
        for batch in &batches {
            gzip_bytes += batch.gzip_json_array(gzip_level)?.len() as u64;
        }
        gzip_time += t.elapsed();
        records += encoded.len() as u64;
        if let Some(out) = ndjson.as_mut() {
            for r in &encoded {
                out.write_all(&r.json)?;
                out.write_all(b"\n")?;
            }
        }
        start = end;
    }
    if let Some(mut out) = ndjson {
        out.flush()?;
    }
    let seconds = (encode_time + gzip_time).as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "rows": rows,
            "records": records,
            "invalid_rows": invalid,
            "encode_seconds": round3(encode_time.as_secs_f64()),
            "gzip_seconds": round3(gzip_time.as_secs_f64()),
            "seconds": round3(seconds),
            "events_per_s": (records as f64 / seconds.max(1e-9)).round(),
            "avg_event_bytes": json_bytes / records.max(1),
            "gzip_ratio": round3(json_bytes as f64 / gzip_bytes.max(1) as f64),
            "gzip_level": gzip_level,
        })
    );
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
