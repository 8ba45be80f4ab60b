//! Micro-benchmarks of the per-row hot path of a sync, over the benchmark table's rows:
//! row → event mapping (Ferry's direct writer and the general map/validate/serialize path it
//! must match), the JSON encoding of one event object, gzip of a 2000-record batch as the
//! client sends it, and the row checksum / `$insert_id`.
//!
//!   cargo bench -p ferry-bench --bench hot_path

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ferry_bench::rows::{self, RowGen};
use ferry_connectors::mixpanel::{Batch, BatchBuilder, ClientSettings};
use ferry_core::checksum::row_checksum;
use ferry_core::mapping::Unset;
use ferry_core::value::Value;
use std::hint::black_box;

/// The `ferry` binary's allocator: the hot path allocates as it does in a sync.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROWS: u64 = 2000;

fn sample_rows() -> Vec<Vec<Value>> {
    let gen = RowGen::new(1, 1_000_000);
    (0..ROWS).map(|i| gen.row(i * 499)).collect()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn mapping(c: &mut Criterion) {
    let rows = sample_rows();
    let mapper = rows::row_mapper().expect("the benchmark mapping is valid");
    let now = now_ms();
    let mut group = c.benchmark_group("row_to_record");
    group.throughput(Throughput::Elements(ROWS));
    group.bench_function("encode_upsert (direct writer)", |b| {
        let mut out = Vec::with_capacity(rows.len());
        b.iter(|| {
            out.clear();
            for (i, row) in rows.iter().enumerate() {
                let _ = mapper.encode_upsert(i as u64, row, Unset::Never, now, &mut out);
            }
            black_box(out.len())
        })
    });
    group.bench_function("map_event (general path, unvalidated map)", |b| {
        b.iter(|| {
            for (i, row) in rows.iter().enumerate() {
                black_box(mapper.map_event(i as u64, row).ok());
            }
        })
    });
    group.finish();
}

fn json_encoding(c: &mut Criterion) {
    let rows = sample_rows();
    let mapper = rows::row_mapper().expect("the benchmark mapping is valid");
    let events: Vec<serde_json::Value> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, row)| mapper.map_event(i as u64, row).ok())
        .collect();
    let mut group = c.benchmark_group("json");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("serde_json::to_vec of mapped events", |b| {
        b.iter(|| {
            for e in &events {
                black_box(serde_json::to_vec(e).ok());
            }
        })
    });
    group.finish();
}

fn gzip(c: &mut Criterion) {
    let rows = sample_rows();
    let mapper = rows::row_mapper().expect("the benchmark mapping is valid");
    let now = now_ms();
    let mut records = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let _ = mapper.encode_upsert(i as u64, row, Unset::Never, now, &mut records);
    }
    let mut builder = BatchBuilder::new();
    let mut batches: Vec<Batch> = Vec::new();
    for r in &records {
        batches.extend(
            builder
                .push(r.json.clone(), r.insert_id.clone())
                .ok()
                .flatten(),
        );
    }
    batches.extend(builder.flush());
    let batch = batches
        .into_iter()
        .next()
        .expect("2000 records make a batch");
    let level = ClientSettings::default().gzip_level;
    let mut group = c.benchmark_group("gzip");
    group.throughput(Throughput::Bytes(batch.body_len() as u64));
    group.bench_function(format!("2000-record batch, level {level}"), |b| {
        b.iter(|| black_box(batch.gzip_json_array(level).map(|v| v.len()).ok()))
    });
    group.bench_function("pack 2000 records into a batch", |b| {
        b.iter_batched(
            || records.clone(),
            |records| {
                let mut builder = BatchBuilder::new();
                for r in records {
                    black_box(builder.push(r.json, r.insert_id).ok());
                }
                builder.flush()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn checksum(c: &mut Criterion) {
    let rows = sample_rows();
    let mapper = rows::row_mapper().expect("the benchmark mapping is valid");
    let mut group = c.benchmark_group("checksum");
    group.throughput(Throughput::Elements(ROWS));
    group.bench_function("row_checksum (MD5 of the row text)", |b| {
        b.iter(|| {
            for row in &rows {
                black_box(row_checksum(row));
            }
        })
    });
    group.bench_function("insert_id from the key column", |b| {
        b.iter(|| {
            for row in &rows {
                black_box(mapper.insert_id(row));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, mapping, json_encoding, gzip, checksum);
criterion_main!(benches);
