//! Two cluster nodes in one process, on a real etcd, a real PostgreSQL and the receiver: the
//! elected coordinator places an Append sync, its node runs it; mid-run that node stops
//! renewing its lease (its agent and membership are gone, but its run goes on, as a partitioned
//! "zombie" would). The other node must take over within about one lease TTL plus a tick,
//! resume from the last committed cursor, and the receiver must end exact — while every write
//! the zombie attempts after losing its claim is refused.
//!
//! What this cannot show: a real process kill (the multi-process tests with `ferry node` do).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_actors::restart::RestartPolicy;
use ferry_connectors::mixpanel::{ClientSettings, RetryPolicy};
use ferry_coordinator::admin::specs::SpecResolver;
use ferry_coordinator::catalog::{Catalog, SourceRecord, SyncRecord, TenantRecord};
use ferry_coordinator::cluster::agent::{AgentSettings, NodeAgent};
use ferry_coordinator::cluster::assigner;
use ferry_coordinator::cluster::connection::EtcdSettings;
use ferry_coordinator::cluster::election::Election;
use ferry_coordinator::cluster::etcd_store::{EtcdStore, EtcdStoreSettings};
use ferry_coordinator::cluster::membership::{Membership, MembershipSettings};
use ferry_coordinator::run_manager::RunManager;
use ferry_coordinator::runner::RunnerSettings;
use ferry_coordinator::schedule::{Scheduler, SchedulerSettings, SyncTrigger, SystemClock};
use ferry_coordinator::secrets::SecretBox;
use ferry_coordinator::{RunState, StateStore, SyncId};
use ferry_receiver::config::{ProjectConfig, ServiceAccountConfig, StoreMode};
use ferry_tests::etcd::{etcd_available, TestEtcd};
use ferry_tests::postgres::{postgres_bin_dir, PgConfig, TestPostgres};
use ferry_tests::require_tool;
use serde_json::{json, Value as Json};

const ROWS: i64 = 30_000;
const TTL: Duration = Duration::from_secs(3);

/// One node: its lease, its candidacy and placement loop, its runs and its agent.
struct Node {
    id: String,
    store: Arc<EtcdStore>,
    runs: Arc<RunManager>,
    membership: Option<Membership>,
    election: Option<Election>,
    placement: Option<tokio::task::JoinHandle<()>>,
    agent: Option<NodeAgent>,
}

impl Node {
    async fn start(id: &str, etcd: &EtcdSettings) -> Node {
        let client = etcd.connect().await.unwrap();
        let mut member = MembershipSettings::new(id, "127.0.0.1:1", 1);
        member.ttl = TTL;
        let membership = Membership::start(client.clone(), member).unwrap();
        membership.wait_live(Duration::from_secs(5)).await.unwrap();
        let store = Arc::new(EtcdStore::new(
            client.clone(),
            EtcdStoreSettings::default(),
            membership.liveness(),
        ));
        let catalog: Arc<dyn Catalog> = store.clone();
        let state: Arc<dyn StateStore> = store.clone();
        let settings = RunnerSettings {
            node_id: id.into(),
            page_size: 500,
            restart: RestartPolicy {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(200),
                ..Default::default()
            },
            client: ClientSettings {
                max_in_flight: 1,
                request_timeout: Duration::from_secs(5),
                retry: RetryPolicy {
                    initial_delay: Duration::from_millis(5),
                    max_delay: Duration::from_millis(50),
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        };
        let resolver = SpecResolver::new(catalog.clone(), SecretBox::from_bytes(&[9; 32]).unwrap());
        let runs = RunManager::new(resolver, state.clone(), settings, None);
        let trigger: Arc<dyn SyncTrigger> = runs.clone();
        let scheduler = Scheduler::new(
            Arc::new(SystemClock),
            trigger,
            state,
            SchedulerSettings {
                busy_retry: Duration::from_millis(200),
                error_retry: Duration::from_millis(500),
            },
        );
        tokio::spawn({
            let scheduler = scheduler.clone();
            async move { scheduler.run(std::future::pending()).await }
        });
        let election = Election::start(
            etcd.connect_for_waiting().await.unwrap(),
            id,
            membership.liveness(),
        )
        .unwrap();
        let placement = tokio::spawn(assigner::run(
            client.clone(),
            catalog.clone(),
            id.into(),
            election.role(),
            Duration::from_millis(300),
        ));
        let mut agent_settings = AgentSettings::new(id);
        agent_settings.poll = Duration::from_millis(200);
        let agent = NodeAgent::start(
            client,
            agent_settings,
            catalog,
            runs.clone(),
            scheduler,
            membership.liveness(),
        )
        .unwrap();
        Node {
            id: id.into(),
            store,
            runs,
            membership: Some(membership),
            election: Some(election),
            placement: Some(placement),
            agent: Some(agent),
        }
    }

    /// The node stops taking part (no renewals, no placement, no agent) without revoking its
    /// lease or stopping the run it has: a partitioned or frozen node.
    fn partition(&mut self) {
        drop(self.agent.take());
        if let Some(p) = self.placement.take() {
            p.abort();
        }
        drop(self.election.take());
        drop(self.membership.take());
    }
}

/// Everything a test here needs: etcd, PostgreSQL with the orders table, the receiver (every
/// import request answered after 150 ms, so a run lasts seconds), two nodes, and the catalog.
struct World {
    etcd: TestEtcd,
    _pg: TestPostgres,
    rx: ferry_receiver::RunningReceiver,
    _dir: tempfile::TempDir,
    a: Node,
    b: Node,
}

async fn world() -> Option<World> {
    if !require_tool("postgres", postgres_bin_dir().is_some()) || !etcd_available() {
        return None;
    }
    let etcd = TestEtcd::start().unwrap();
    let etcd_settings = EtcdSettings::new(etcd.endpoints());
    let pg = TestPostgres::start(PgConfig::default()).unwrap();
    pg.sql("CREATE TABLE orders (id bigint PRIMARY KEY, user_id text NOT NULL, created_at timestamptz NOT NULL, inserted_at timestamptz NOT NULL);").unwrap();
    pg.sql(&format!("INSERT INTO orders SELECT i, 'user-' || (i % 23), timestamptz '2024-03-01 00:00:00+00' + i * interval '1 minute', timestamptz '2024-06-01 00:00:00+00' + i * interval '1 second' FROM generate_series(1, {ROWS}) AS i;")).unwrap();

    // Every import request takes 150 ms, so the run lasts a few seconds.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ferry_receiver::ReceiverConfig::from_toml("listen = \"127.0.0.1:0\"").unwrap();
    cfg.store = StoreMode::Disk;
    cfg.data_dir = Some(dir.path().join("receiver"));
    cfg.projects = vec![ProjectConfig {
        id: "77".into(),
        token: "tok77".into(),
        secret: None,
        group_keys: None,
        lookup_tables: vec![],
        rate_limit: Default::default(),
    }];
    cfg.service_accounts = vec![ServiceAccountConfig {
        user: "sa".into(),
        secret: "pw".into(),
        projects: None,
    }];
    cfg.faults = toml::from_str("slow = 1.0\nslow_ms = 150").unwrap();
    let rx = ferry_receiver::start(cfg).await.unwrap();

    let a = Node::start("node-a", &etcd_settings).await;
    let b = Node::start("node-b", &etcd_settings).await;

    // The catalog (credentials kept in the spec here: sealing is not what this test is about).
    let now = chrono::Utc::now();
    let catalog = a.store.clone();
    catalog
        .create_tenant(
            &serde_json::from_value::<TenantRecord>(json!({
                "id": "acme",
                "spec": {"id": "acme", "name": "Acme", "project_id": 77,
                         "destination": {"base_url": rx.base_url()},
                         "auth": {"service_account": {"user": "sa", "secret": "pw"}}},
                "created_at": now, "updated_at": now,
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    catalog
        .create_source(
            &serde_json::from_value::<SourceRecord>(json!({
                "tenant": "acme", "id": "pg",
                "spec": {"id": "pg", "tenant": "acme", "kind": {"postgres": {
                    "host": pg.host, "port": pg.port, "database": pg.database,
                    "user": pg.user, "password": pg.password, "ssl_mode": "disable"}}},
                "created_at": now, "updated_at": now,
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    catalog
        .create_sync(
            &serde_json::from_value::<SyncRecord>(json!({
                "tenant": "acme", "id": "orders", "source": "pg",
                "spec": {"id": "orders", "tenant": "acme", "source": "pg", "table": "public.orders",
                         "table_type": "events", "mode": "append", "cursor_column": "inserted_at",
                         "schedule": "every 1h",
                         "mapping": {"event_name": "Order Placed", "time_column": "created_at",
                                     "distinct_id_column": "user_id", "key_columns": ["id"],
                                     "excludes": ["inserted_at"]}},
                "created_at": now, "updated_at": now,
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    Some(World {
        etcd,
        _pg: pg,
        rx,
        _dir: dir,
        a,
        b,
    })
}

async fn event_count(rx: &ferry_receiver::RunningReceiver) -> Json {
    let state: Json = reqwest::get(format!(
        "{}/ferry/v1/projects/77/state?events=false",
        rx.base_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    state["event_count"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_owner_is_replaced_within_a_lease_ttl_and_the_receiver_ends_exact() {
    // Bound first, so the fields not moved out (PostgreSQL, the temp dir) live to the end.
    let Some(mut w) = world().await else {
        return;
    };
    let (rx, a, b) = (&w.rx, &mut w.a, &mut w.b);
    let sync = SyncId::new("acme", "orders").unwrap();

    // Placed, claimed and running on one node, with at least one cursor committed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (owner_runs, first_run) = loop {
        if Instant::now() > deadline {
            panic!(
                "the sync never started: runs {:?}",
                a.store.list_runs(&sync, 5).await
            );
        }
        if let Some(run) = a.runs.active(&sync) {
            break ("node-a", run.run_id.clone());
        }
        if let Some(run) = b.runs.active(&sync) {
            break ("node-b", run.run_id.clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (zombie, survivor) = if owner_runs == "node-a" {
        (a, b)
    } else {
        (b, a)
    };
    loop {
        assert!(Instant::now() < deadline, "no cursor was committed");
        if survivor.store.get_cursor(&sync).await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = survivor.store.get_cursor(&sync).await.unwrap().unwrap();
    assert_eq!(before.node_id, zombie.id);
    assert!(
        zombie.runs.active(&sync).is_some(),
        "the first run is still going when its node is cut off"
    );

    zombie.partition();
    let cut_off = Instant::now();

    // The survivor resumes the interrupted sync.
    let second_run = loop {
        assert!(
            cut_off.elapsed() < TTL * 4,
            "no takeover after {:?}",
            cut_off.elapsed()
        );
        if let Some(run) = survivor.runs.active(&sync) {
            break run.run_id.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let takeover = cut_off.elapsed();
    println!(
        "takeover: {} resumed the sync {takeover:?} after {} was cut off (lease TTL {TTL:?})",
        survivor.id, zombie.id
    );
    assert!(
        takeover <= TTL + Duration::from_secs(2),
        "takeover took {takeover:?}"
    );
    assert_ne!(second_run, first_run);

    // It finishes; the receiver holds every row exactly once.
    let finished = loop {
        assert!(
            cut_off.elapsed() < Duration::from_secs(90),
            "the resumed run did not finish"
        );
        let runs = survivor.store.list_runs(&sync, 5).await.unwrap();
        if let Some(run) = runs.iter().find(|r| r.run_id == second_run) {
            if run.state.is_terminal() {
                break run.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        finished.state,
        RunState::Succeeded,
        "{:?}",
        finished.message
    );
    assert!(
        finished.counts.rows_read < ROWS as u64,
        "resumed from the cursor, not from the start ({} rows read)",
        finished.counts.rows_read
    );
    let state: Json = reqwest::get(format!(
        "{}/ferry/v1/projects/77/state?events=false",
        rx.base_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(state["event_count"], json!(ROWS), "{state}");

    // The zombie's claim died with its lease: the last cursor is the survivor's, and nothing
    // the zombie tried after that landed.
    let cursor = survivor.store.get_cursor(&sync).await.unwrap().unwrap();
    assert_eq!(cursor.node_id, survivor.id);
    assert_eq!(cursor.run_id, second_run);
    let first = survivor
        .store
        .get_run(&sync, &first_run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.state,
        RunState::Failed,
        "the cut-off run is closed by its successor, and cannot record success itself"
    );
    assert!(
        first
            .message
            .as_deref()
            .is_some_and(|m| m.contains("interrupted")),
        "{:?}",
        first.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restarted_under_load_stops_every_run_and_the_sync_resumes_exact() {
    let Some(mut w) = world().await else {
        return;
    };
    let (etcd, rx, a, b) = (&mut w.etcd, &w.rx, &w.a, &w.b);
    let sync = SyncId::new("acme", "orders").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let owner = loop {
        assert!(
            Instant::now() < deadline,
            "the sync never committed a cursor"
        );
        let running = [a, b].into_iter().find(|n| n.runs.active(&sync).is_some());
        if let Some(node) = running {
            if a.store.get_cursor(&sync).await.unwrap().is_some() {
                break node;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let first_run = owner.runs.active(&sync).unwrap().run_id.clone();

    // etcd goes away for longer than half a lease TTL: every node's kill switch trips and
    // its runs stop, though nobody else could have taken them.
    tokio::task::block_in_place(|| etcd.kill()).unwrap();
    let down = Instant::now();
    let mut liveness = owner.membership.as_ref().unwrap().liveness();
    tokio::time::timeout(TTL, liveness.wait_for(|l| l.lease().is_none()))
        .await
        .expect("the kill switch tripped")
        .unwrap();
    let tripped = down.elapsed();
    for _ in 0..100 {
        if owner.runs.active(&sync).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        owner.runs.active(&sync).is_none(),
        "the run stopped when the node lost its lease"
    );
    tokio::time::sleep(TTL).await;
    tokio::task::block_in_place(|| etcd.restart()).unwrap();
    println!(
        "etcd down for {:?}; kill switch tripped after {tripped:?}",
        down.elapsed()
    );

    // Back: the nodes take new leases, the sync is placed again and resumes from its cursor.
    let finished = loop {
        assert!(
            down.elapsed() < Duration::from_secs(90),
            "the sync did not finish after etcd came back"
        );
        if let Ok(runs) = a.store.list_runs(&sync, 5).await {
            if let Some(run) = runs
                .first()
                .filter(|r| r.run_id != first_run && r.state.is_terminal())
            {
                break (run.clone(), runs);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (last, runs) = finished;
    assert_eq!(last.state, RunState::Succeeded, "{:?}", last.message);
    assert!(
        last.counts.rows_read < ROWS as u64,
        "resumed, not restarted"
    );
    let first = runs.iter().find(|r| r.run_id == first_run).unwrap();
    assert!(
        first.state.is_terminal() && first.state != RunState::Succeeded,
        "the stopped run is closed: {first:?}"
    );
    assert_eq!(event_count(rx).await, json!(ROWS));
}
