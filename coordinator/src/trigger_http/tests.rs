//! The trigger router over real HTTP (axum on a loopback port, reqwest as the client).

use std::collections::{HashMap, HashSet};

use chrono::Duration as Span;
use reqwest::StatusCode as Status;
use serde_json::Value;

use super::*;
use crate::schedule::ManualClock;

/// Stands in for the run manager: knows a few syncs, keeps runs going until finished.
#[derive(Default)]
struct Runs {
    known: HashSet<SyncId>,
    paused: HashSet<SyncId>,
    running: HashMap<SyncId, String>,
    started: u32,
}

struct FakeManager(Mutex<Runs>);

#[async_trait]
impl SyncTrigger for FakeManager {
    async fn trigger(&self, sync: &SyncId, reason: TriggerReason) -> Result<String, TriggerError> {
        assert_eq!(reason, TriggerReason::Http);
        let mut runs = self.0.lock();
        if !runs.known.contains(sync) {
            return Err(TriggerError::NotFound(sync.clone()));
        }
        if runs.paused.contains(sync) {
            return Err(TriggerError::Paused(sync.clone()));
        }
        if let Some(run_id) = runs.running.get(sync) {
            return Err(TriggerError::AlreadyRunning {
                sync: sync.clone(),
                run_id: run_id.clone(),
            });
        }
        runs.started += 1;
        let run_id = format!("run-{}", runs.started);
        runs.running.insert(sync.clone(), run_id.clone());
        Ok(run_id)
    }
}

struct Tokens;

#[async_trait]
impl TokenVerifier for Tokens {
    async fn verify(&self, token: &str) -> Result<Option<Caller>, String> {
        Ok(match token {
            "op-secret" => Some(Caller::Operator),
            "acme-token" => Some(Caller::Tenant("acme".into())),
            "globex-token" => Some(Caller::Tenant("globex".into())),
            _ => None,
        })
    }
}

struct Server {
    base: String,
    clock: ManualClock,
    manager: Arc<FakeManager>,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn sync_id(tenant: &str, sync: &str) -> SyncId {
    SyncId::new(tenant, sync).unwrap()
}

async fn serve(limit: TriggerLimit) -> Server {
    serve_with(limit, None).await
}

async fn serve_with(limit: TriggerLimit, peers: Option<Peers>) -> Server {
    let clock = ManualClock::new(Utc::now());
    let mut runs = Runs::default();
    runs.known.insert(sync_id("acme", "orders"));
    runs.known.insert(sync_id("acme", "users"));
    runs.known.insert(sync_id("globex", "orders"));
    let manager = Arc::new(FakeManager(Mutex::new(runs)));
    let state = TriggerHttp::new(
        manager.clone(),
        Arc::new(Tokens),
        Arc::new(clock.clone()),
        limit,
    )
    .with_peers(peers);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, router(state)).await.unwrap();
    });
    Server {
        base,
        clock,
        manager,
        http: reqwest::Client::new(),
        task,
    }
}

impl Server {
    fn url(&self, tenant: &str, sync: &str) -> String {
        trigger_url(&self.base, &sync_id(tenant, sync))
    }

    async fn put(&self, url: &str, token: Option<&str>) -> (Status, HeaderMapOut, Value) {
        let mut request = self.http.put(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = HeaderMapOut(response.headers().clone());
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    fn finish(&self, tenant: &str, sync: &str) {
        self.manager.0.lock().running.remove(&sync_id(tenant, sync));
    }
}

struct HeaderMapOut(reqwest::header::HeaderMap);

impl HeaderMapOut {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }
}

#[tokio::test]
async fn five_triggers_per_hour_then_429_with_retry_after() {
    let s = serve(TriggerLimit::default()).await;
    let url = s.url("acme", "orders");
    for i in 1..=5 {
        let (status, _, body) = s.put(&url, Some("acme-token")).await;
        assert_eq!(status, Status::ACCEPTED, "{body}");
        assert_eq!(body["run_id"], format!("run-{i}"));
        assert_eq!(
            (body["tenant"].as_str(), body["sync"].as_str()),
            (Some("acme"), Some("orders"))
        );
        s.finish("acme", "orders");
        s.clock.advance(Span::minutes(1));
    }
    // The sixth within the hour: refused, and told when the first one leaves the window.
    let (status, headers, body) = s.put(&url, Some("acme-token")).await;
    assert_eq!(status, Status::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(headers.get("retry-after"), Some("3300"));
    assert_eq!(body["error"], "rate_limited");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("5 triggers per 3600 s"),
        "{body}"
    );
    assert_eq!(
        s.manager.0.lock().started,
        5,
        "a refused trigger starts nothing"
    );

    // Another sync of the tenant has its own budget.
    let (status, _, _) = s.put(&s.url("acme", "users"), Some("acme-token")).await;
    assert_eq!(status, Status::ACCEPTED);

    s.clock.advance(Span::minutes(54));
    let (status, headers, _) = s.put(&url, Some("acme-token")).await;
    assert_eq!(status, Status::TOO_MANY_REQUESTS);
    assert_eq!(headers.get("retry-after"), Some("60"));
    s.clock.advance(Span::minutes(1));
    let (status, _, body) = s.put(&url, Some("acme-token")).await;
    assert_eq!(
        status,
        Status::ACCEPTED,
        "the first trigger left the window: {body}"
    );
}

#[tokio::test]
async fn the_limit_is_configurable() {
    let s = serve(TriggerLimit {
        max: 2,
        window: Duration::from_secs(600),
    })
    .await;
    let url = s.url("acme", "orders");
    for _ in 0..2 {
        assert_eq!(s.put(&url, Some("acme-token")).await.0, Status::ACCEPTED);
        s.finish("acme", "orders");
    }
    let (status, headers, _) = s.put(&url, Some("acme-token")).await;
    assert_eq!(status, Status::TOO_MANY_REQUESTS);
    assert_eq!(headers.get("retry-after"), Some("600"));
    s.clock.advance(Span::minutes(10));
    assert_eq!(s.put(&url, Some("acme-token")).await.0, Status::ACCEPTED);
}

#[tokio::test]
async fn tokens_must_be_valid_and_belong_to_the_syncs_tenant() {
    let s = serve(TriggerLimit {
        max: 1,
        window: Duration::from_secs(3600),
    })
    .await;
    let url = s.url("acme", "orders");

    let (status, headers, body) = s.put(&url, None).await;
    assert_eq!(status, Status::UNAUTHORIZED);
    assert_eq!(headers.get("www-authenticate"), Some("Bearer"));
    assert_eq!(body["error"], "unauthenticated");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"),
        "{body}"
    );

    let basic = s
        .http
        .put(&url)
        .basic_auth("acme", Some("acme-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), Status::UNAUTHORIZED, "only bearer tokens");

    let (status, headers, body) = s.put(&url, Some("stolen-or-typo")).await;
    assert_eq!(status, Status::UNAUTHORIZED);
    assert!(headers
        .get("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    assert!(
        body["message"].as_str().unwrap().contains("not valid"),
        "{body}"
    );

    let (status, _, body) = s.put(&url, Some("globex-token")).await;
    assert_eq!(status, Status::FORBIDDEN);
    assert_eq!(body["error"], "permission_denied");
    assert!(
        body["message"].as_str().unwrap().contains("'acme'"),
        "{body}"
    );

    assert_eq!(s.manager.0.lock().started, 0);
    // None of the refused requests used up the budget of one.
    let (status, _, body) = s.put(&url, Some("acme-token")).await;
    assert_eq!(status, Status::ACCEPTED, "{body}");

    // The operator may trigger any tenant's sync.
    let (status, _, _) = s.put(&s.url("globex", "orders"), Some("op-secret")).await;
    assert_eq!(status, Status::ACCEPTED);
}

#[tokio::test]
async fn unknown_running_and_paused_syncs() {
    let s = serve(TriggerLimit::default()).await;
    let (status, _, body) = s.put(&s.url("acme", "nope"), Some("acme-token")).await;
    assert_eq!(status, Status::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    assert!(
        body["message"].as_str().unwrap().contains("acme/nope"),
        "{body}"
    );
    let (status, _, body) = s
        .put(
            &format!("{}/v1/tenants/acme/syncs/a%2Fb/trigger", s.base),
            Some("acme-token"),
        )
        .await;
    assert_eq!(status, Status::NOT_FOUND);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not a valid sync id"),
        "{body}"
    );

    let url = s.url("acme", "orders");
    let (_, _, started) = s.put(&url, Some("acme-token")).await;
    let (status, _, body) = s.put(&url, Some("acme-token")).await;
    assert_eq!(status, Status::CONFLICT);
    assert_eq!(body["error"], "already_running");
    assert_eq!(
        body["run_id"], started["run_id"],
        "the running run is named"
    );
    assert_eq!(s.manager.0.lock().started, 1);

    s.manager.0.lock().paused.insert(sync_id("acme", "users"));
    let (status, _, body) = s.put(&s.url("acme", "users"), Some("acme-token")).await;
    assert_eq!(status, Status::CONFLICT);
    assert_eq!(body["error"], "paused");
    assert!(
        body["message"].as_str().unwrap().contains("resume"),
        "{body}"
    );

    let get = s
        .http
        .get(&url)
        .bearer_auth("acme-token")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), Status::METHOD_NOT_ALLOWED);
}

#[test]
fn trigger_urls() {
    let sync = sync_id("acme", "orders");
    assert_eq!(
        trigger_url("https://ferry.example.com/", &sync),
        "https://ferry.example.com/v1/tenants/acme/syncs/orders/trigger"
    );
    assert_eq!(
        trigger_url("http://10.0.0.5:7070", &sync),
        "http://10.0.0.5:7070/v1/tenants/acme/syncs/orders/trigger"
    );
}

#[tokio::test]
async fn an_http_run_restarts_an_every_schedules_interval() {
    let clock = ManualClock::new(Utc::now());
    let mut runs = Runs::default();
    runs.known.insert(sync_id("acme", "orders"));
    let manager = Arc::new(FakeManager(Mutex::new(runs)));
    let dir = tempfile::tempdir().unwrap();
    let store =
        crate::EmbeddedStore::open_in(dir.path(), crate::EmbeddedSettings::default()).unwrap();
    let scheduler = crate::schedule::Scheduler::new(
        Arc::new(clock.clone()),
        manager.clone(),
        Arc::new(store),
        Default::default(),
    );
    let orders = sync_id("acme", "orders");
    let every = ferry_core::schedule::Schedule::parse("every 2h", None).unwrap();
    scheduler.upsert(orders.clone(), every, false).await;
    scheduler.note_triggered(&orders, clock.now());
    clock.advance(Span::minutes(30));

    let state = TriggerHttp::new(
        manager.clone(),
        Arc::new(Tokens),
        Arc::new(clock.clone()),
        TriggerLimit::default(),
    )
    .with_scheduler(scheduler.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = trigger_url(
        &format!("http://{}", listener.local_addr().unwrap()),
        &orders,
    );
    let task = tokio::spawn(async move {
        axum::serve(listener, router(state)).await.unwrap();
    });
    let response = reqwest::Client::new()
        .put(&url)
        .bearer_auth("acme-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), Status::ACCEPTED);
    assert_eq!(
        scheduler.next_due(&orders),
        Some(clock.now() + Span::hours(2))
    );
    task.abort();
}

/// Stands in for the cluster's other nodes: where syncs are assigned, and what their agents
/// answer (a node called `node-gone` cannot be reached; a sync called `busy` is running).
#[derive(Default)]
struct FakePeers {
    assigned: HashMap<SyncId, String>,
    started: Mutex<Vec<(String, SyncId, TriggerReason)>>,
}

#[async_trait]
impl crate::cluster::link::PeerRuns for FakePeers {
    fn node_id(&self) -> &str {
        "node-a"
    }

    async fn assigned_node(&self, sync: &SyncId) -> Result<Option<String>, tonic::Status> {
        Ok(self.assigned.get(sync).cloned())
    }

    async fn start_run(
        &self,
        node: &str,
        sync: &SyncId,
        reason: TriggerReason,
    ) -> Result<String, tonic::Status> {
        if node == "node-gone" {
            return Err(tonic::Status::unavailable(format!(
                "node {node} cannot be reached: no link to it"
            )));
        }
        if sync.sync() == "busy" {
            return Err(crate::admin::errors::trigger(
                &TriggerError::AlreadyRunning {
                    sync: sync.clone(),
                    run_id: "r9".into(),
                },
            ));
        }
        let mut started = self.started.lock();
        started.push((node.to_string(), sync.clone(), reason));
        Ok(format!("{node}-run-{}", started.len()))
    }

    async fn live_run(
        &self,
        _node: &str,
        _sync: &SyncId,
        _run_id: &str,
    ) -> Result<Option<crate::cluster::link::messages::LiveRun>, tonic::Status> {
        Ok(None)
    }

    async fn cancel_run(
        &self,
        _node: &str,
        _sync: &SyncId,
        _run_id: &str,
    ) -> Result<Option<crate::records::RunRecord>, tonic::Status> {
        Ok(None)
    }
}

#[tokio::test]
async fn on_a_cluster_node_the_run_starts_on_the_syncs_assigned_node() {
    let mut peers = FakePeers::default();
    for (sync, node) in [
        ("orders", "node-b"),
        ("busy", "node-b"),
        ("stranded", "node-gone"),
    ] {
        peers.assigned.insert(sync_id("acme", sync), node.into());
    }
    let peers = Arc::new(peers);
    let server = serve_with(
        TriggerLimit {
            max: 2,
            window: Duration::from_secs(3600),
        },
        Some(Peers(peers.clone())),
    )
    .await;
    let url = server.url("acme", "orders");

    // Assigned to node-b: node-b's agent starts it (as an HTTP trigger); not run here.
    let (status, _, body) = server.put(&url, Some("acme-token")).await;
    assert_eq!(status, Status::ACCEPTED, "{body}");
    assert_eq!(body["run_id"], "node-b-run-1", "{body}");
    assert_eq!(body["node"], "node-b", "{body}");
    assert_eq!(
        peers.started.lock().as_slice(),
        [(
            "node-b".to_string(),
            sync_id("acme", "orders"),
            TriggerReason::Http
        )]
    );
    assert_eq!(server.manager.0.lock().started, 0, "not started here");

    // Assigned nowhere (e.g. paused, or placed at the next pass): this node starts it.
    let (status, _, body) = server
        .put(&server.url("acme", "users"), Some("acme-token"))
        .await;
    assert_eq!(status, Status::ACCEPTED, "{body}");
    assert_eq!(body["run_id"], "run-1", "{body}");
    assert_eq!(server.manager.0.lock().started, 1);

    // The owner cannot be reached: 503 naming it, and the sync's budget is not used up.
    for _ in 0..3 {
        let (status, headers, body) = server
            .put(&server.url("acme", "stranded"), Some("acme-token"))
            .await;
        assert_eq!(status, Status::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"], "unavailable", "{body}");
        assert_eq!(body["node"], "node-gone", "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("node-gone"),
            "{body}"
        );
        assert!(headers.get("retry-after").is_some());
    }

    // Running on its node: 409 with that node's word.
    let busy = server.url("acme", "busy");
    let (status, _, body) = server.put(&busy, Some("acme-token")).await;
    assert_eq!(status, Status::CONFLICT, "{body}");
    assert_eq!(body["error"], "already_running", "{body}");
    assert_eq!(body["node"], "node-b", "{body}");
    assert!(body["message"].as_str().unwrap().contains("r9"), "{body}");
    assert_eq!(body["run_id"], "r9", "{body}");

    // The limit counts the triggers passed on: the second is let through, the third not.
    let (status, _, body) = server.put(&url, Some("acme-token")).await;
    assert_eq!(status, Status::ACCEPTED, "{body}");
    let (status, headers, body) = server.put(&url, Some("acme-token")).await;
    assert_eq!(status, Status::TOO_MANY_REQUESTS, "{body}");
    assert!(headers.get("retry-after").is_some());
    assert_eq!(peers.started.lock().len(), 2);
    // Another tenant's token is refused before anything is passed on.
    let (status, _, _) = server.put(&busy, Some("globex-token")).await;
    assert_eq!(status, Status::FORBIDDEN);
}
