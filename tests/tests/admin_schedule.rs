//! Syncs created through the admin API run on their schedules (here with a clock moved by
//! hand), paused ones do not, and a failed scheduled run reaches the tenant's webhook.

mod admin_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use admin_common::*;
use chrono::{TimeZone, Utc};
use ferry_coordinator::schedule::ManualClock;
use ferry_proto::admin::v1 as pb;
use ferry_tests::postgres::PgConfig;

/// An HTTP/1.1 listener that keeps the body of every request and answers 204.
fn hook_listener() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let kept = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                if let Ok(json) = serde_json::from_slice(&body) {
                    kept.lock().unwrap().push(json);
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (url, got)
}

async fn runs_of(w: &World, token: &str, sync: &str) -> Vec<pb::Run> {
    w.runs()
        .list_runs(req(
            token,
            pb::ListRunsRequest {
                sync: sync.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .runs
}

/// Waits until `sync` has `n` finished runs.
async fn finished_runs(w: &World, token: &str, sync: &str, n: usize) -> Vec<pb::Run> {
    for _ in 0..200 {
        let runs = runs_of(w, token, sync).await;
        let done = runs
            .iter()
            .filter(|r| {
                matches!(
                    r.state(),
                    pb::RunState::Succeeded | pb::RunState::Failed | pb::RunState::Cancelled
                )
            })
            .count();
        if done >= n {
            return runs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sync {sync} did not get {n} finished runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_syncs_run_on_their_schedule_and_failures_reach_the_webhook() {
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 8, 30, 0).unwrap();
    let clock = ManualClock::new(start);
    let Some(mut w) = world_with_clock(PgConfig::default(), Some(Arc::new(clock.clone()))).await
    else {
        return;
    };
    w.pg.sql(ORDERS).unwrap();
    insert_orders(&w.pg, 1, 20);
    w.pg.sql("CREATE TABLE doomed AS SELECT * FROM orders;")
        .unwrap();
    let (hook_url, hooks) = hook_listener();
    let mut tenant = w.tenant("acme");
    tenant.webhook = Some(pb::Webhook {
        url: hook_url,
        ..Default::default()
    });
    w.tenants()
        .create_tenant(req(
            OPERATOR,
            pb::CreateTenantRequest {
                tenant: Some(tenant),
            },
        ))
        .await
        .unwrap();
    let token = w
        .tenants()
        .create_token(req(
            OPERATOR,
            pb::CreateTokenRequest {
                tenant: "acme".into(),
                name: "t".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    w.create_source(&token, w.postgres("pg")).await;
    let mut hourly = orders_sync("hourly", "pg");
    hourly.schedule = "hourly".into();
    w.create_sync(&token, hourly).await;
    let mut paused = orders_sync("paused", "pg");
    paused.schedule = "hourly".into();
    w.create_sync(&token, paused).await;
    w.syncs()
        .pause_sync(req(
            &token,
            pb::PauseSyncRequest {
                id: "paused".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let mut failing = orders_sync("failing", "pg");
    failing.target = Some(pb::ReadTarget {
        target: Some(pb::read_target::Target::Table("public.doomed".into())),
    });
    failing.schedule = "daily at 09:00".into();
    w.create_sync(&token, failing).await;
    w.pg.sql("DROP TABLE doomed;").unwrap();

    // Before the hour nothing runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(runs_of(&w, &token, "hourly").await.is_empty());

    // 09:00: the hourly sync and the daily one fire; the paused one does not.
    clock.advance(chrono::Duration::minutes(30));
    let runs = finished_runs(&w, &token, "hourly", 1).await;
    assert_eq!(runs[0].state(), pb::RunState::Succeeded, "{:?}", runs[0]);
    assert_eq!(runs[0].trigger, "schedule");
    assert_eq!(runs[0].counts.unwrap().records_accepted, 20);
    let failed = finished_runs(&w, &token, "failing", 1).await;
    assert_eq!(failed[0].state(), pb::RunState::Failed, "{:?}", failed[0]);
    assert!(runs_of(&w, &token, "paused").await.is_empty());

    // The failure reached the tenant's webhook, naming the run.
    let mut delivered = Vec::new();
    for _ in 0..100 {
        delivered = hooks.lock().unwrap().clone();
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["event"], "run_failed");
    assert_eq!(delivered[0]["run_id"], failed[0].run_id.as_str());

    // Five hours later the hourly sync runs once more, not five times.
    clock.advance(chrono::Duration::hours(5));
    let runs = finished_runs(&w, &token, "hourly", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs_of(&w, &token, "hourly").await.len(), 2, "{runs:?}");
    w.stop().await;
}
