use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use ferry_core::spec::{SyncSpec, TenantSpec};
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::*;
use crate::records::SyncId;

#[test]
fn volume_deviation_needs_enough_runs_and_a_real_deviation() {
    let recent = [100, 110, 90, 105, 95];
    // Not enough history.
    assert_eq!(volume_deviation(1000, &recent[..2], 0.5, 3), None);
    assert_eq!(volume_deviation(1000, &[], 0.5, 0), None);
    // Within ±50% of the median (100).
    assert_eq!(volume_deviation(100, &recent, 0.5, 3), None);
    assert_eq!(volume_deviation(150, &recent, 0.5, 3), None);
    assert_eq!(volume_deviation(50, &recent, 0.5, 3), None);
    // Beyond it, either way.
    let up = volume_deviation(151, &recent, 0.5, 3).unwrap();
    assert_eq!((up.median, up.runs_compared, up.volume), (100.0, 5, 151));
    assert!((up.deviation.unwrap() - 0.51).abs() < 1e-9);
    let down = volume_deviation(0, &recent, 0.5, 3).unwrap();
    assert_eq!(down.deviation, Some(-1.0));
    // The median, not the mean: one outlier in the history does not move it.
    assert_eq!(volume_deviation(100, &[100, 100, 100_000], 0.2, 3), None);
    // An even count takes the middle two.
    let even = volume_deviation(300, &[100, 200, 300, 400], 0.1, 3).unwrap();
    assert_eq!(even.median, 250.0);
    // From nothing to something is a deviation; nothing after nothing is not.
    let from_zero = volume_deviation(5, &[0, 0, 0], 0.5, 3).unwrap();
    assert_eq!((from_zero.median, from_zero.deviation), (0.0, None));
    assert_eq!(volume_deviation(0, &[0, 0, 0], 0.5, 3), None);
}

fn tenant(webhook: Value) -> TenantSpec {
    serde_json::from_value(json!({
        "id": "acme", "name": "Acme", "project_id": 1,
        "destination": {"base_url": "http://127.0.0.1:1"},
        "auth": {"project_token": "tok"},
        "webhook": webhook,
    }))
    .unwrap()
}

fn sync(webhook: Value) -> SyncSpec {
    serde_json::from_value(json!({
        "id": "orders", "tenant": "acme", "source": "pg", "table": "orders",
        "table_type": "user_profiles", "mode": "full",
        "mapping": {"distinct_id_column": "id"},
        "webhook": webhook,
    }))
    .unwrap()
}

fn run(id: &str, state: RunState, sent: u64) -> RunRecord {
    let mut run = RunRecord::queued(
        SyncId::new("acme", "orders").unwrap(),
        id,
        format!("imp-{id}"),
        Utc::now(),
    );
    run.state = state;
    run.counts.records_sent = sent;
    run.counts.rows_read = sent;
    run
}

fn history() -> Vec<RunRecord> {
    [100, 110, 90, 105, 95]
        .iter()
        .enumerate()
        .map(|(i, n)| run(&format!("r{i}"), RunState::Succeeded, *n))
        .collect()
}

#[test]
fn which_runs_call_for_a_notification() {
    let hook = tenant(json!({"url": "http://h", "volume_deviation_percent": 50}))
        .webhook
        .unwrap();
    let recent = history();
    assert!(notifications_for(&hook, &run("n", RunState::Succeeded, 104), &recent).is_empty());
    assert!(notifications_for(&hook, &run("c", RunState::Cancelled, 0), &recent).is_empty());
    let failed = notifications_for(&hook, &run("f", RunState::Failed, 0), &recent);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].event, "run_failed");
    assert_eq!(failed[0].volume, None);
    let spike = notifications_for(&hook, &run("s", RunState::Succeeded, 400), &recent);
    assert_eq!(spike.len(), 1);
    assert_eq!(spike[0].event, "volume_deviation");
    assert_eq!(spike[0].volume.as_ref().unwrap().deviation, Some(3.0));

    // The run itself (when the history already holds it) and failed runs are not compared;
    // with fewer than volume_min_runs (3) successful runs there is no volume notification.
    let mut thin = vec![
        run("s", RunState::Succeeded, 400),
        run("x", RunState::Failed, 0),
    ];
    thin.extend(history().into_iter().take(2));
    assert!(notifications_for(&hook, &run("s", RunState::Succeeded, 400), &thin).is_empty());

    // The window: only the newest volume_window (2 here) runs count.
    let narrow = tenant(json!({"url": "http://h", "volume_deviation_percent": 50, "volume_window": 2, "volume_min_runs": 2}))
        .webhook
        .unwrap();
    let mut recent = vec![
        run("a", RunState::Succeeded, 1000),
        run("b", RunState::Succeeded, 1000),
    ];
    recent.extend(history());
    assert!(notifications_for(&narrow, &run("n", RunState::Succeeded, 1000), &recent).is_empty());

    // on_failure = false: failures are not reported.
    let quiet =
        tenant(json!({"url": "http://h", "on_failure": false, "volume_deviation_percent": 50}))
            .webhook
            .unwrap();
    assert!(notifications_for(&quiet, &run("f", RunState::Failed, 0), &history()).is_empty());
}

#[test]
fn signatures_are_hmac_sha256_hex() {
    // RFC 4231 test case 2.
    assert_eq!(
        signature("Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    /// Answers 503 to this many requests first.
    fail_first: Arc<Mutex<u32>>,
}

async fn receive(
    State(receiver): State<Receiver>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    receiver.got.lock().push(Received {
        path,
        headers,
        body: body.to_vec(),
    });
    let mut fail = receiver.fail_first.lock();
    if *fail > 0 {
        *fail -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    StatusCode::NO_CONTENT
}

async fn start_receiver() -> (Receiver, String, tokio::task::JoinHandle<()>) {
    let receiver = Receiver::default();
    let app = Router::new()
        .route("/{path}", post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (receiver, base, task)
}

fn header<'a>(r: &'a Received, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn webhooks_get_signed_failures_and_deviations_but_nothing_for_normal_runs() {
    let (receiver, base, server) = start_receiver().await;
    let notifier = Notifier::new(NotifierSettings {
        timeout: Duration::from_secs(5),
        attempts: 3,
        first_backoff: Duration::from_millis(20),
    });
    let tenant = tenant(json!({
        "url": format!("{base}/tenant"), "secret": "s3cret", "volume_deviation_percent": 50
    }));
    let sync = sync(json!({"url": format!("{base}/sync")}));
    let recent = history();

    // A normal run: nothing is sent.
    notifier.run_finished(
        &tenant,
        &sync,
        &run("ok", RunState::Succeeded, 104),
        &recent,
    );
    notifier.flush().await;
    assert!(receiver.got.lock().is_empty(), "{:?}", receiver.got.lock());

    // A failed run: both webhooks hear of it, the tenant's signed with its secret.
    let mut failed = run("bad", RunState::Failed, 40);
    failed.message = Some("source: connection refused".into());
    failed.errors = (0..12)
        .map(|i| RunErrorEntry {
            reason: "invalid_row".into(),
            row: Some(i),
            key: Some(format!("k{i}")),
            field: "time".into(),
            message: "not a timestamp".into(),
        })
        .collect();
    failed.errors_dropped = 3;
    notifier.run_finished(&tenant, &sync, &failed, &recent);
    notifier.flush().await;
    let got = std::mem::take(&mut *receiver.got.lock());
    assert_eq!(got.len(), 2, "{got:?}");
    let to_tenant = got.iter().find(|r| r.path == "tenant").unwrap();
    let to_sync = got.iter().find(|r| r.path == "sync").unwrap();
    let expected_sig = {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(&to_tenant.body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256={hex}")
    };
    assert_eq!(
        header(to_tenant, "x-ferry-signature"),
        Some(expected_sig.as_str())
    );
    assert_eq!(
        header(to_sync, "x-ferry-signature"),
        None,
        "no secret, no signature"
    );
    for r in [to_tenant, to_sync] {
        assert_eq!(header(r, "x-ferry-event"), Some("run_failed"));
        assert_eq!(header(r, "content-type"), Some("application/json"));
        assert_eq!(
            header(r, "x-ferry-delivery"),
            Some("acme/orders/bad/run_failed")
        );
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["event"], "run_failed");
        assert_eq!(
            (body["tenant"].as_str(), body["sync"].as_str()),
            (Some("acme"), Some("orders"))
        );
        assert_eq!(body["run_id"], "bad");
        assert_eq!(body["state"], "failed");
        assert_eq!(body["message"], "source: connection refused");
        assert_eq!(body["counts"]["records_sent"], 40);
        assert_eq!(body["errors"].as_array().unwrap().len(), ERROR_SAMPLE);
        assert_eq!(body["errors"][0]["key"], "k0");
        assert_eq!(body["errors_total"], 15);
        assert!(body.get("volume").is_none());
    }

    // A run four times the usual size: the tenant's webhook (the one watching volume) hears
    // of it; the first attempt is answered 503 and retried with the same delivery id.
    *receiver.fail_first.lock() = 1;
    notifier.run_finished(
        &tenant,
        &sync,
        &run("big", RunState::Succeeded, 400),
        &recent,
    );
    notifier.flush().await;
    let got = std::mem::take(&mut *receiver.got.lock());
    assert_eq!(got.len(), 2, "one refused attempt and its retry: {got:?}");
    assert_eq!(got[0].body, got[1].body);
    assert_eq!(
        header(&got[1], "x-ferry-delivery"),
        Some("acme/orders/big/volume_deviation")
    );
    let body: Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(got[1].path, "tenant");
    assert_eq!(body["event"], "volume_deviation");
    assert_eq!(body["state"], "succeeded");
    assert_eq!(body["volume"]["volume"], 400);
    assert_eq!(body["volume"]["median"], 100.0);
    assert_eq!(body["volume"]["deviation"], 3.0);
    assert_eq!(body["volume"]["threshold"], 0.5);
    assert_eq!(body["volume"]["runs_compared"], 5);
    server.abort();
}

#[tokio::test]
async fn an_unreachable_webhook_is_given_up_without_touching_the_caller() {
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let notifier = Notifier::new(NotifierSettings {
        timeout: Duration::from_secs(2),
        attempts: 3,
        first_backoff: Duration::from_millis(10),
    });
    let tenant = tenant(json!({"url": format!("http://{closed}/hook")}));
    let sync = sync(Value::Null);
    let started = std::time::Instant::now();
    notifier.run_finished(&tenant, &sync, &run("bad", RunState::Failed, 0), &[]);
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "run_finished does not wait"
    );
    tokio::time::timeout(Duration::from_secs(10), notifier.flush())
        .await
        .expect("delivery gives up after its attempts");
}

#[tokio::test]
async fn one_url_on_tenant_and_sync_is_called_once_with_the_syncs_settings() {
    let (receiver, base, server) = start_receiver().await;
    let notifier = Notifier::new(NotifierSettings::default());
    let url = format!("{base}/same");
    let tenant = tenant(json!({"url": url, "secret": "tenant-secret"}));
    let sync = sync(json!({"url": url, "secret": "sync-secret"}));
    notifier.run_finished(&tenant, &sync, &run("bad", RunState::Failed, 0), &[]);
    notifier.flush().await;
    let got = receiver.got.lock().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        header(&got[0], "x-ferry-signature"),
        Some(signature("sync-secret", &got[0].body).as_str())
    );
    server.abort();
}
