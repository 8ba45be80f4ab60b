//! Syncs of real PostgreSQL tables into the receiver, one per table type and mode, through the
//! same runner `ferry node` uses (claim → supervised pipeline → fenced cursor → run record), and
//! the receiver's state compared with the source exactly.

use std::sync::Arc;
use std::time::Duration;

use ferry_actors::pipeline::RunProgress;
use ferry_actors::restart::RestartPolicy;
use ferry_connectors::mixpanel::{ClientSettings, RetryPolicy};
use ferry_coordinator::runner::{RunnerSettings, SyncRunner};
use ferry_coordinator::{EmbeddedSettings, EmbeddedStore, RunRecord, RunState, StateStore, SyncId};
use ferry_core::spec::{SourceSpec, SyncSpec, TenantSpec};
use ferry_core::value::Value;
use ferry_receiver::config::{LookupTableDecl, ProjectConfig, ServiceAccountConfig, StoreMode};
use ferry_tests::postgres::{postgres_bin_dir, PgConfig, TestPostgres};
use ferry_tests::require_tool;
use serde_json::{json, Value as Json};

struct World {
    pg: TestPostgres,
    rx: ferry_receiver::RunningReceiver,
    _dir: tempfile::TempDir,
    runner: SyncRunner,
    store: Arc<dyn StateStore>,
}

async fn world(faults: &str) -> Option<World> {
    if !require_tool("postgres", postgres_bin_dir().is_some()) {
        return None;
    }
    let pg = TestPostgres::start(PgConfig::default()).expect("postgres starts");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ferry_receiver::ReceiverConfig::from_toml("listen = \"127.0.0.1:0\"").unwrap();
    cfg.store = StoreMode::Disk;
    cfg.data_dir = Some(dir.path().join("receiver"));
    cfg.projects = vec![ProjectConfig {
        id: "77".into(),
        token: "tok77".into(),
        secret: None,
        group_keys: Some(vec!["company_id".into()]),
        lookup_tables: vec![LookupTableDecl {
            id: "plans".into(),
            name: "Plans".into(),
        }],
        rate_limit: Default::default(),
    }];
    cfg.service_accounts = vec![ServiceAccountConfig {
        user: "sa".into(),
        secret: "pw".into(),
        projects: None,
    }];
    cfg.faults = toml::from_str(faults).unwrap();
    let rx = ferry_receiver::start(cfg).await.unwrap();
    let store: Arc<dyn StateStore> = Arc::new(
        EmbeddedStore::open_in(&dir.path().join("state"), EmbeddedSettings::default()).unwrap(),
    );
    let settings = RunnerSettings {
        node_id: "test-node".into(),
        page_size: 500,
        restart: RestartPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            ..Default::default()
        },
        client: ClientSettings {
            request_timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                initial_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(50),
                ..Default::default()
            },
            ..Default::default()
        },
        receiver_extensions: true,
        ..Default::default()
    };
    let runner = SyncRunner::new(store.clone(), settings);
    Some(World {
        pg,
        rx,
        _dir: dir,
        runner,
        store,
    })
}

impl World {
    fn tenant(&self) -> TenantSpec {
        ferry_tests::specs::receiver_tenant(&self.rx.base_url())
    }

    fn source(&self) -> SourceSpec {
        ferry_tests::specs::postgres_source(&self.pg)
    }

    async fn run(&self, sync: &SyncSpec) -> RunRecord {
        self.runner
            .run(
                &self.tenant(),
                &self.source(),
                sync,
                Arc::new(RunProgress::default()),
            )
            .await
            .expect("the run is recorded")
    }

    async fn state_count(&self) -> u64 {
        let state: Json = reqwest::get(format!(
            "{}/ferry/v1/projects/77/state?events=false",
            self.rx.base_url()
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        state["event_count"].as_u64().unwrap_or(0)
    }

    async fn state(&self) -> Json {
        reqwest::get(format!("{}/ferry/v1/projects/77/state", self.rx.base_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn sync(text: &str) -> SyncSpec {
    toml::from_str(&format!("tenant='acme'\nsource='pg'\n{text}")).unwrap()
}

const ORDERS: &str = "CREATE TABLE orders (id bigint PRIMARY KEY, user_id text, created_at timestamptz NOT NULL, amount numeric(10,2), status text, meta jsonb, inserted_at timestamptz NOT NULL);";

fn insert_orders(pg: &TestPostgres, from: i64, to: i64) {
    pg.sql(&format!(
        "INSERT INTO orders SELECT i, 'user-' || (i % 17), timestamptz '2024-03-01 00:00:00+00' + i * interval '1 minute', (i * 1.25)::numeric(10,2), CASE WHEN i % 2 = 0 THEN 'paid' ELSE NULL END, jsonb_build_object('channel', 'web', 'n', i), timestamptz '2024-06-01 00:00:00+00' + i * interval '1 second' FROM generate_series({from}, {to}) AS i;"
    ))
    .unwrap();
}

fn orders_sync(mode: &str) -> SyncSpec {
    let cursor = if mode == "append" {
        "cursor_column='inserted_at'\n"
    } else {
        ""
    };
    sync(&format!(
        "id='orders-{mode}'\ntable='public.orders'\ntable_type='events'\nmode='{mode}'\n{cursor}[mapping]\nevent_name='Order Placed'\ntime_column='created_at'\ndistinct_id_column='user_id'\nkey_columns=['id']\nproperties_column='meta'\nexcludes=['inserted_at']\n"
    ))
}

fn events_by_order_id(state: &Json) -> std::collections::BTreeMap<i64, Json> {
    state["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["properties"]["id"].as_i64().unwrap(), e.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_events_arrive_exactly_and_the_next_run_sends_only_new_rows() {
    let Some(w) = world("").await else { return };
    w.pg.sql(ORDERS).unwrap();
    insert_orders(&w.pg, 1, 1200);
    // A row Mixpanel would refuse: a stand-in distinct id ("undefined"). It must be reported, not block.
    w.pg.sql("INSERT INTO orders VALUES (5000, 'undefined', now() - interval '1 day', 1, 'x', '{}', timestamptz '2024-06-01 00:00:00+00' + 1200.5 * interval '1 second');").unwrap();

    let spec = orders_sync("append");
    let run = w.run(&spec).await;
    assert_eq!(run.state, RunState::Succeeded, "{:?}", run.message);
    assert_eq!(run.counts.rows_read, 1201);
    assert_eq!(run.counts.records_accepted, 1200);
    assert_eq!(run.counts.rows_invalid, 1);
    assert_eq!(run.errors.len(), 1);
    assert_eq!(
        run.errors[0].field, "properties.distinct_id",
        "{:?}",
        run.errors[0]
    );

    let events = events_by_order_id(&w.state().await);
    assert_eq!(events.len(), 1200);
    let e = &events[&2];
    assert_eq!(e["event"], "Order Placed");
    let p = &e["properties"];
    assert_eq!(p["distinct_id"], "user-2");
    assert_eq!(
        p["time"],
        json!(1_709_251_320_000i64),
        "2024-03-01T00:02:00Z in ms"
    );
    assert_eq!(p["amount"], json!(2.5));
    assert_eq!(p["status"], "paid");
    assert_eq!(p["channel"], "web", "the JSON column is flattened");
    assert_eq!(p["n"], 2);
    assert!(p.get("inserted_at").is_none(), "excluded");
    assert!(
        events[&1]["properties"].get("status").is_none(),
        "NULL columns are left out"
    );
    assert_eq!(p["$warehouse_type"], "postgres");
    assert_eq!(p["$warehouse_import_id"], run.import_id.as_str());
    let first_insert_id = p["$insert_id"].as_str().unwrap().to_owned();

    let cursor = w
        .store
        .get_cursor(&SyncId::new("acme", "orders-append").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(cursor.value, Value::Timestamp(_)), "{cursor:?}");

    insert_orders(&w.pg, 1201, 1500);
    let second = w.run(&spec).await;
    assert_eq!(second.state, RunState::Succeeded, "{:?}", second.message);
    assert_eq!(second.counts.rows_read, 300, "only the new rows are read");
    let events = events_by_order_id(&w.state().await);
    assert_eq!(events.len(), 1500);
    assert_eq!(
        events[&2]["properties"]["$insert_id"],
        first_insert_id.as_str(),
        "insert ids are stable"
    );
    let runs = w
        .store
        .list_runs(&SyncId::new("acme", "orders-append").unwrap(), 10)
        .await
        .unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].run_id, second.run_id, "newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_at_the_destination_lose_nothing_and_duplicate_nothing() {
    let Some(w) = world("seed = 11\nerror_429 = 0.2\nerror_503 = 0.1\ndrop = 0.05\ndrop_after_store = 0.15\nslow = 0.05\nslow_ms = 50").await else { return };
    w.pg.sql(ORDERS).unwrap();
    insert_orders(&w.pg, 1, 3000);
    let run = w.run(&orders_sync("append")).await;
    assert_eq!(run.state, RunState::Succeeded, "{:?}", run.message);
    let state = w.state().await;
    assert_eq!(state["event_count"], 3000);
    assert_eq!(events_by_order_id(&state).len(), 3000);
    let stats: Json = reqwest::get(format!("{}/ferry/v1/stats", w.rx.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        stats["faults_injected"]["drop_after_store"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_sends_the_whole_table_and_keeps_no_cursor() {
    let Some(w) = world("").await else { return };
    w.pg.sql(ORDERS).unwrap();
    insert_orders(&w.pg, 1, 700);
    let run = w.run(&orders_sync("one_time")).await;
    assert_eq!(run.state, RunState::Succeeded, "{:?}", run.message);
    assert_eq!(w.state().await["event_count"], 700);
    assert!(w
        .store
        .get_cursor(&SyncId::new("acme", "orders-one_time").unwrap())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_syncs_of_users_groups_and_a_lookup_table_match_the_source() {
    let Some(w) = world("").await else { return };
    w.pg.sql("CREATE TABLE users (user_id text PRIMARY KEY, name text, plan text, seats int, signed_up date);").unwrap();
    w.pg.sql("INSERT INTO users SELECT 'u' || i, 'User ' || i, CASE WHEN i % 3 = 0 THEN NULL ELSE 'pro' END, i, date '2024-01-01' + i FROM generate_series(1, 40) AS i;").unwrap();
    w.pg.sql("CREATE TABLE companies (company_id text PRIMARY KEY, name text, employees int);")
        .unwrap();
    w.pg.sql("INSERT INTO companies VALUES ('c1', 'Acme', 50), ('c2', 'Globex', NULL);")
        .unwrap();
    w.pg.sql("CREATE TABLE plans (plan_id text PRIMARY KEY, label text, price numeric(6,2), features text[]);").unwrap();
    w.pg.sql("INSERT INTO plans VALUES ('free', 'Free', 0, ARRAY['a']), ('pro', 'Pro, yearly', 9.5, ARRAY['a','b']);").unwrap();

    let users = sync("id='users'\ntable='public.users'\ntable_type='user_profiles'\nmode='full'\n[mapping]\ndistinct_id_column='user_id'\n");
    let run = w.run(&users).await;
    assert_eq!(run.state, RunState::Succeeded, "{:?}", run.message);
    let groups = sync("id='companies'\ntable='public.companies'\ntable_type='group_profiles'\nmode='full'\n[mapping]\ngroup_key='company_id'\ngroup_id_column='company_id'\n");
    let run = w.run(&groups).await;
    assert_eq!(run.state, RunState::Succeeded, "{:?}", run.message);
    let lookup = sync("id='plans'\ntable='public.plans'\ntable_type='lookup_table'\nmode='full'\n[mapping]\nlookup_table_id='plans'\nkey_column='plan_id'\n");
    let run = w.run(&lookup).await;
    assert_eq!(run.state, RunState::Succeeded, "{:?}", run.message);

    let state = w.state().await;
    let profiles = state["profiles"].as_object().unwrap();
    assert_eq!(profiles.len(), 40);
    assert_eq!(
        profiles["u1"]["properties"],
        json!({"name": "User 1", "plan": "pro", "seats": 1, "signed_up": "2024-01-02"})
    );
    assert_eq!(
        profiles["u3"]["properties"],
        json!({"name": "User 3", "seats": 3, "signed_up": "2024-01-04"}),
        "NULL is not set"
    );
    assert!(
        profiles["u1"].get("last_seen_ms").is_none(),
        "$ignore_time: a sync is not user activity"
    );
    let groups = state["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["group_id"], "c1");
    assert_eq!(
        groups[0]["properties"],
        json!({"name": "Acme", "employees": 50})
    );
    let table = &state["lookup_tables"]["plans"]["table"];
    assert_eq!(
        table["rows"],
        json!([
            {"plan_id": "free", "label": "Free", "price": 0.0, "features": ["a"]},
            {"plan_id": "pro", "label": "Pro, yearly", "price": 9.5, "features": ["a", "b"]}
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_spec_or_missing_table_fails_clearly_and_moves_nothing() {
    let Some(w) = world("").await else { return };
    let spec = sync("id='ghost'\ntable='public.nope'\ntable_type='events'\nmode='append'\ncursor_column='ts'\n[mapping]\nevent_name='x'\ntime_column='ts'\ndistinct_id_column='u'\n");
    let run = w.run(&spec).await;
    assert_eq!(run.state, RunState::Failed);
    assert!(
        run.message.as_deref().unwrap_or("").contains("nope"),
        "{:?}",
        run.message
    );
    let bad = sync("id='bad'\ntable='public.orders'\ntable_type='events'\nmode='full'\n[mapping]\nevent_name='x'\ntime_column='ts'\ndistinct_id_column='u'\n");
    let err = w
        .runner
        .run(
            &w.tenant(),
            &w.source(),
            &bad,
            Arc::new(RunProgress::default()),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("sync.mode"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_connection_killed_mid_run_is_retried_from_the_last_commit() {
    let Some(w) = world("").await else { return };
    w.pg.sql(ORDERS).unwrap();
    insert_orders(&w.pg, 1, 150_000);
    let spec = orders_sync("append");
    let run = {
        let runner_run = w.run(&spec);
        tokio::pin!(runner_run);
        // Once the destination holds some events, terminate the source's session.
        let killer = async {
            for _ in 0..600 {
                if w.state_count().await >= 50_000 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let killed = w
                .pg
                .admin_sql(&format!(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{}' AND query ILIKE '%orders%' AND pid <> pg_backend_pid();",
                    w.pg.database
                ))
                .unwrap();
            assert!(
                killed.trim().ends_with('1') || killed.contains(" 1"),
                "one session terminated: {killed}"
            );
        };
        let (run, ()) = tokio::join!(&mut runner_run, killer);
        run
    };
    assert_eq!(run.state, RunState::Succeeded, "{:?}", run.message);
    assert!(
        run.attempts >= 2,
        "the pipeline was restarted: {} attempts",
        run.attempts
    );
    // From the start, the run would read the ≥ 50,000 rows before the kill plus all 150,000
    // again; resuming from the last commit re-reads only what was in flight (at most about
    // 25,000 rows: pages in flight, shard queues and batches being sent).
    assert!(
        run.counts.rows_read < 195_000,
        "resumed from the commit, not from the start: {} rows read",
        run.counts.rows_read
    );
    assert_eq!(
        w.state_count().await,
        150_000,
        "nothing lost, nothing doubled"
    );
}
