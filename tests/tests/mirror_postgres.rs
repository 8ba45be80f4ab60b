//! Mirror syncs of real PostgreSQL tables into the receiver, through the same runner `ferry
//! node` uses: insert / update / delete cycles compared exactly with the source, NULL vs empty
//! string, added columns, tables with and without keys, profiles, groups, lookup tables and
//! profile history, runs killed at each step (a state-store write that fails stands for the
//! node dying there), dry runs, schema changes and staging cleanup.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ferry_actors::pipeline::RunProgress;
use ferry_actors::restart::RestartPolicy;
use ferry_connectors::mixpanel::{ClientSettings, RetryPolicy};
use ferry_connectors::warehouse::mirror::{MirrorSql, MirrorWarehouse, SnapshotRef};
use ferry_connectors::warehouse::postgres::PostgresWarehouse;
use ferry_connectors::warehouse::{Page, ReadRequest, ReadSource, Warehouse};
use ferry_coordinator::mirror::cursor::MirrorCursor;
use ferry_coordinator::mirror::{self, STAGING_SCHEMA};
use ferry_coordinator::runner::{RunControl, RunnerSettings, SyncRunner};
use ferry_coordinator::{
    CursorRecord, EmbeddedSettings, EmbeddedStore, Fence, Owner, RunRecord, RunState, StateStore,
    StoreError, SyncId,
};
use ferry_core::checksum::row_checksum;
use ferry_core::spec::{SourceKind, SourceSpec, SyncSpec, TenantSpec};
use ferry_core::value::Value;
use ferry_receiver::config::{LookupTableDecl, ProjectConfig, ServiceAccountConfig, StoreMode};
use ferry_tests::postgres::{postgres_bin_dir, PgConfig, TestPostgres};
use ferry_tests::require_tool;
use serde_json::{json, Value as Json};

type CursorCheck = Box<dyn Fn(&MirrorCursor) -> bool + Send + Sync>;

/// The embedded store, with cursor commits that fail on demand: a commit the check selects
/// fails as if the node had died just before it (nothing after it in that run happens).
struct FaultyStore {
    inner: Arc<dyn StateStore>,
    fail_when: Mutex<Option<CursorCheck>>,
    failures: AtomicU64,
}

impl FaultyStore {
    fn fail_when(&self, check: impl Fn(&MirrorCursor) -> bool + Send + Sync + 'static) {
        *self.fail_when.lock().unwrap() = Some(Box::new(check));
    }

    fn heal(&self) {
        *self.fail_when.lock().unwrap() = None;
    }
}

#[async_trait]
impl StateStore for FaultyStore {
    async fn claim(&self, sync: &SyncId, node_id: &str) -> Result<Fence, StoreError> {
        self.inner.claim(sync, node_id).await
    }
    async fn release(&self, fence: &Fence) -> Result<(), StoreError> {
        self.inner.release(fence).await
    }
    async fn current_owner(&self, sync: &SyncId) -> Result<Option<Owner>, StoreError> {
        self.inner.current_owner(sync).await
    }
    async fn get_cursor(&self, sync: &SyncId) -> Result<Option<CursorRecord>, StoreError> {
        self.inner.get_cursor(sync).await
    }
    async fn commit_cursor(
        &self,
        fence: &Fence,
        run_id: &str,
        cursor: &Value,
    ) -> Result<(), StoreError> {
        let fail = {
            let check = self.fail_when.lock().unwrap();
            match (check.as_ref(), MirrorCursor::from_value(cursor)) {
                (Some(check), Ok(Some(state))) => check(&state),
                _ => false,
            }
        };
        if fail {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable(
                "injected: the node died here".into(),
            ));
        }
        self.inner.commit_cursor(fence, run_id, cursor).await
    }
    async fn reset_cursor(&self, fence: &Fence) -> Result<(), StoreError> {
        self.inner.reset_cursor(fence).await
    }
    async fn put_run(&self, fence: &Fence, run: &RunRecord) -> Result<(), StoreError> {
        self.inner.put_run(fence, run).await
    }
    async fn get_run(&self, sync: &SyncId, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.inner.get_run(sync, run_id).await
    }
    async fn list_runs(&self, sync: &SyncId, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.inner.list_runs(sync, limit).await
    }
}

struct World {
    pg: TestPostgres,
    rx: ferry_receiver::RunningReceiver,
    _dir: tempfile::TempDir,
    store: Arc<FaultyStore>,
    settings: RunnerSettings,
}

async fn world(store_mode: StoreMode, page_size: usize) -> Option<World> {
    if !require_tool("postgres", postgres_bin_dir().is_some()) {
        return None;
    }
    let pg = TestPostgres::start(PgConfig::default()).expect("postgres starts");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ferry_receiver::ReceiverConfig::from_toml("listen = \"127.0.0.1:0\"").unwrap();
    cfg.store = store_mode;
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
    let rx = ferry_receiver::start(cfg).await.unwrap();
    let inner: Arc<dyn StateStore> = Arc::new(
        EmbeddedStore::open_in(&dir.path().join("state"), EmbeddedSettings::default()).unwrap(),
    );
    let store = Arc::new(FaultyStore {
        inner,
        fail_when: Mutex::new(None),
        failures: AtomicU64::new(0),
    });
    let settings = RunnerSettings {
        node_id: "test-node".into(),
        page_size,
        restart: RestartPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            ..Default::default()
        },
        client: ClientSettings {
            request_timeout: Duration::from_secs(10),
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
    Some(World {
        pg,
        rx,
        _dir: dir,
        store,
        settings,
    })
}

impl World {
    fn tenant(&self) -> TenantSpec {
        ferry_tests::specs::receiver_tenant(&self.rx.base_url())
    }

    fn source(&self) -> SourceSpec {
        ferry_tests::specs::postgres_source(&self.pg)
    }

    fn warehouse(&self) -> PostgresWarehouse {
        match self.source().kind {
            SourceKind::Postgres(o) => PostgresWarehouse::new(o),
            other => panic!("{other:?}"),
        }
    }

    async fn run_with(&self, sync: &SyncSpec, receiver_extensions: bool) -> RunRecord {
        let settings = RunnerSettings {
            receiver_extensions,
            ..self.settings.clone()
        };
        let store: Arc<dyn StateStore> = self.store.clone();
        SyncRunner::new(store, settings)
            .run(
                &self.tenant(),
                &self.source(),
                sync,
                Arc::new(RunProgress::default()),
            )
            .await
            .expect("the run is recorded")
    }

    async fn run(&self, sync: &SyncSpec) -> RunRecord {
        self.run_with(sync, true).await
    }

    async fn ok(&self, sync: &SyncSpec) -> RunRecord {
        let run = self.run(sync).await;
        assert_eq!(
            run.state,
            RunState::Succeeded,
            "{:?} {:?}",
            run.message,
            run.errors
        );
        run
    }

    async fn state(&self) -> Json {
        reqwest::get(format!("{}/ferry/v1/projects/77/state", self.rx.base_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn cursor(&self, sync: &str) -> MirrorCursor {
        let record = self
            .store
            .get_cursor(&SyncId::new("acme", sync).unwrap())
            .await
            .unwrap()
            .expect("a cursor");
        MirrorCursor::from_value(&record.value).unwrap().unwrap()
    }

    /// The staging schema's tables, sorted.
    fn staging_tables(&self) -> Vec<String> {
        self.rows(&format!(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = '{STAGING_SCHEMA}' ORDER BY 1"
        ))
    }

    /// The output lines of a query (`TestPostgres::sql` echoes its `SET ROLE` first).
    fn rows(&self, query: &str) -> Vec<String> {
        let out = self.pg.sql(query).unwrap();
        out.lines()
            .skip_while(|l| *l == "SET")
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// A JSON value computed by PostgreSQL.
    fn json(&self, query: &str) -> Json {
        let rows = self.rows(query);
        serde_json::from_str(rows.last().map_or("null", String::as_str)).unwrap()
    }
}

fn sync(text: &str) -> SyncSpec {
    toml::from_str(&format!(
        "tenant='acme'\nsource='pg'\nmode='mirror'\n{text}"
    ))
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Events

const ORDERS: &str = "CREATE TABLE orders (id bigint PRIMARY KEY, user_id text NOT NULL, created_at timestamptz NOT NULL, amount numeric(10,2), status text, note text);";

fn insert_orders(pg: &TestPostgres, from: i64, to: i64) {
    pg.sql(&format!(
        "INSERT INTO orders SELECT i, 'user-' || (i % 17), timestamptz '2024-03-01 00:00:00+00' + i * interval '1 minute', (i * 1.25)::numeric(10,2), CASE WHEN i % 2 = 0 THEN 'paid' END, CASE WHEN i % 3 = 0 THEN '' END FROM generate_series({from}, {to}) AS i;"
    ))
    .unwrap();
}

fn orders_sync(id: &str) -> SyncSpec {
    sync(&format!(
        "id='{id}'\ntable='public.orders'\ntable_type='events'\n[mapping]\nevent_name='Order'\ntime_column='created_at'\ndistinct_id_column='user_id'\nkey_columns=['id']\n"
    ))
}

/// The receiver's events, projected to what the source determines, by order id.
fn events_by_id(state: &Json) -> BTreeMap<i64, Json> {
    state["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let p = &e["properties"];
            let id = p["id"].as_i64().unwrap();
            let amount = p["amount"].as_f64();
            (
                id,
                json!({"event": e["event"], "distinct_id": p["distinct_id"], "time": p["time"],
                       "amount": amount, "status": p.get("status"), "note": p.get("note")}),
            )
        })
        .collect()
}

/// The same projection of the source table, computed by PostgreSQL.
fn orders_expected(w: &World) -> BTreeMap<i64, Json> {
    let rows = w.json(
        "SELECT coalesce(json_agg(json_build_object('id', id, 'event', 'Order', 'distinct_id', user_id, 'time', (extract(epoch FROM created_at) * 1000)::bigint, 'amount', amount::float8, 'status', status, 'note', note) ORDER BY id), '[]') FROM orders",
    );
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let id = r["id"].as_i64().unwrap();
            r.as_object_mut().unwrap().remove("id");
            r["amount"] = json!(r["amount"].as_f64());
            (id, r)
        })
        .collect()
}

fn assert_exact(got: &BTreeMap<i64, Json>, expected: &BTreeMap<i64, Json>) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the receiver holds exactly the source's rows"
    );
    for (id, e) in expected {
        assert_eq!(&got[id], e, "order {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_cycles_match_the_source_exactly() {
    let Some(w) = world(StoreMode::Disk, 200).await else {
        return;
    };
    w.pg.sql(ORDERS).unwrap();
    insert_orders(&w.pg, 1, 1000);
    let spec = orders_sync("orders");

    let first = w.ok(&spec).await;
    assert_eq!(first.counts.changes_inserted, 1000);
    assert_eq!(first.counts.records_accepted, 1000);
    assert_exact(&events_by_id(&w.state().await), &orders_expected(&w));
    let state = w.state().await;
    let ids_before: BTreeMap<i64, Json> = state["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["properties"]["id"].as_i64().unwrap(),
                e["properties"]["$insert_id"].clone(),
            )
        })
        .collect();

    // Cycle 1: updates of properties, NULL ↔ '', a changed time (a different event in
    // Mixpanel's eyes: delete + insert), deletes and inserts.
    w.pg.sql("UPDATE orders SET status = 'refunded' WHERE id BETWEEN 10 AND 29;")
        .unwrap();
    w.pg.sql(
        "UPDATE orders SET note = NULL WHERE id = 3; UPDATE orders SET note = '' WHERE id = 4;",
    )
    .unwrap();
    w.pg.sql("UPDATE orders SET created_at = created_at + interval '1 hour' WHERE id = 50;")
        .unwrap();
    w.pg.sql("DELETE FROM orders WHERE id BETWEEN 900 AND 949;")
        .unwrap();
    insert_orders(&w.pg, 1001, 1030);
    let second = w.ok(&spec).await;
    let c = second.counts;
    assert_eq!(
        (c.changes_inserted, c.changes_updated, c.changes_deleted),
        (31, 22, 51)
    );
    assert_eq!(c.records_sent, 104, "only the changes are sent");
    assert_eq!(c.deletes_not_applied, 0);
    let got = events_by_id(&w.state().await);
    assert_exact(&got, &orders_expected(&w));
    assert_eq!(got[&4]["note"], json!(""), "an empty string is a value");
    assert_eq!(got[&3]["note"], json!(null), "NULL is no property");
    let state = w.state().await;
    let insert_id_10 = state["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["properties"]["id"] == 10)
        .unwrap()["properties"]["$insert_id"]
        .clone();
    assert_eq!(
        insert_id_10, ids_before[&10],
        "an update keeps its $insert_id"
    );

    // Nothing changed: nothing is sent, and only the current snapshot stays in staging.
    let idle = w.ok(&spec).await;
    assert_eq!(idle.counts.records_sent, 0);
    assert_eq!(
        idle.counts.changes_inserted + idle.counts.changes_updated + idle.counts.changes_deleted,
        0
    );
    let tables = w.staging_tables();
    assert_eq!(tables.len(), 1, "{tables:?}");
    assert_eq!(
        tables[0],
        w.cursor("orders").await.current.unwrap().snapshot
    );

    // Cycle 2, against a destination without per-event delete: deletes are counted and
    // listed as not applied, everything else lands.
    w.pg.sql(
        "DELETE FROM orders WHERE id IN (1, 2, 5); UPDATE orders SET amount = 0 WHERE id = 6;",
    )
    .unwrap();
    let plain = w.run_with(&spec, false).await;
    assert_eq!(plain.state, RunState::Succeeded, "{:?}", plain.message);
    assert_eq!(plain.counts.deletes_not_applied, 3);
    assert_eq!(plain.counts.records_sent, 1);
    let not_applied: Vec<_> = plain
        .errors
        .iter()
        .filter(|e| e.reason == "not_applied")
        .collect();
    assert_eq!(not_applied.len(), 3, "{:?}", plain.errors);
    let mut keys: Vec<_> = not_applied.iter().filter_map(|e| e.key.clone()).collect();
    keys.sort();
    assert_eq!(keys, ["1", "2", "5"], "each delete is listed with its key");
    assert!(
        plain
            .message
            .as_deref()
            .unwrap_or("")
            .contains("not applied"),
        "{:?}",
        plain.message
    );
    let got = events_by_id(&w.state().await);
    assert!(got.contains_key(&1), "the receiver was not asked to delete");
    assert_eq!(got[&6]["amount"], json!(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_events_collapse_identical_rows_and_update_as_delete_plus_insert() {
    let Some(w) = world(StoreMode::Disk, 100).await else {
        return;
    };
    w.pg.sql("CREATE TABLE clicks (user_id text, at timestamptz, page text);")
        .unwrap();
    w.pg.sql("INSERT INTO clicks VALUES ('u1', '2024-01-01T00:00:00Z', '/a'), ('u1', '2024-01-01T00:00:00Z', '/a'), ('u2', '2024-01-02T00:00:00Z', '/b'), ('u3', '2024-01-03T00:00:00Z', NULL), ('u3', '2024-01-03T00:00:00Z', '');").unwrap();
    let spec = sync("id='clicks'\ntable='clicks'\ntable_type='events'\n[mapping]\nevent_name='Click'\ntime_column='at'\ndistinct_id_column='user_id'\n");
    let warnings = spec.validate().unwrap().warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.message.contains("collapse") && w.message.contains("delete plus an insert")),
        "{warnings:?}"
    );
    let pages = |state: &Json| -> Vec<(String, Json)> {
        let mut v: Vec<(String, Json)> = state["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["properties"]["distinct_id"].as_str().unwrap().to_owned(),
                    e["properties"].get("page").cloned().unwrap_or(Json::Null),
                )
            })
            .collect();
        v.sort_by_key(|p| format!("{p:?}"));
        v
    };
    let sorted = |mut v: Vec<(String, Json)>| {
        v.sort_by_key(|p| format!("{p:?}"));
        v
    };
    let first = w.ok(&spec).await;
    assert_eq!(
        first.counts.changes_inserted, 4,
        "two identical rows are one"
    );
    assert_eq!(
        pages(&w.state().await),
        sorted(vec![
            ("u1".into(), json!("/a")),
            ("u2".into(), json!("/b")),
            ("u3".into(), json!("")),
            ("u3".into(), Json::Null),
        ])
    );

    w.pg.sql("UPDATE clicks SET page = '/c' WHERE user_id = 'u2';")
        .unwrap();
    let second = w.ok(&spec).await;
    let c = second.counts;
    assert_eq!(
        (c.changes_inserted, c.changes_updated, c.changes_deleted),
        (1, 0, 1)
    );
    assert_eq!(
        pages(&w.state().await),
        sorted(vec![
            ("u1".into(), json!("/a")),
            ("u2".into(), json!("/c")),
            ("u3".into(), json!("")),
            ("u3".into(), Json::Null),
        ])
    );
    // Deleting one of two identical rows changes nothing (they are one); deleting both does.
    w.pg.sql(
        "DELETE FROM clicks WHERE ctid = (SELECT min(ctid) FROM clicks WHERE user_id = 'u1');",
    )
    .unwrap();
    assert_eq!(w.ok(&spec).await.counts.records_sent, 0);
    w.pg.sql("DELETE FROM clicks WHERE user_id = 'u1';")
        .unwrap();
    assert_eq!(w.ok(&spec).await.counts.changes_deleted, 1);
    assert_eq!(w.state().await["event_count"], 3);
}

// ---------------------------------------------------------------------------------------------
// Crashes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_at_any_step_loses_nothing_and_the_next_sends_exactly_what_is_missing() {
    let Some(w) = world(StoreMode::Disk, 20).await else {
        return;
    };
    w.pg.sql(ORDERS).unwrap();
    insert_orders(&w.pg, 1, 300);
    let spec = orders_sync("orders");
    w.ok(&spec).await;

    // 1. Killed between the import and the snapshot rotation.
    w.pg.sql("UPDATE orders SET status = 'x' WHERE id <= 40; DELETE FROM orders WHERE id > 290;")
        .unwrap();
    w.store
        .fail_when(|c| c.pending.is_none() && c.current.as_ref().is_some_and(|g| g.number == 2));
    let killed = w.run(&spec).await;
    assert_eq!(killed.state, RunState::Failed);
    assert!(
        killed.message.as_deref().unwrap_or("").contains("injected"),
        "{:?}",
        killed.message
    );
    assert_eq!(
        killed.counts.records_accepted, 50,
        "everything was imported before the kill"
    );
    assert_exact(&events_by_id(&w.state().await), &orders_expected(&w));
    let left = w.cursor("orders").await;
    assert_eq!(left.pending.as_ref().map(|p| p.sent_through), Some(50));
    w.store.heal();
    // More changes meanwhile; the next run finishes generation 2 (nothing left to send) and
    // sends exactly the new changes.
    w.pg.sql("UPDATE orders SET note = 'n' WHERE id IN (100, 101);")
        .unwrap();
    let next = w.ok(&spec).await;
    assert_eq!(next.counts.records_sent, 2, "{:?}", next.message);
    assert!(
        next.message
            .as_deref()
            .unwrap_or("")
            .contains("finished generation 2"),
        "{:?}",
        next.message
    );
    assert_exact(&events_by_id(&w.state().await), &orders_expected(&w));
    assert_eq!(w.cursor("orders").await.current.unwrap().number, 3);
    assert_eq!(w.staging_tables().len(), 1, "{:?}", w.staging_tables());

    // 2. Killed after the snapshot and diff, before the generation was committed: its tables
    //    are leftovers; the next run drops them and diffs again.
    w.pg.sql("UPDATE orders SET amount = 1 WHERE id <= 10;")
        .unwrap();
    w.store
        .fail_when(|c| c.pending.as_ref().is_some_and(|p| p.sent_through == 0));
    let killed = w.run(&spec).await;
    assert_eq!(killed.state, RunState::Failed);
    assert_eq!(killed.counts.records_sent, 0);
    assert_eq!(
        w.staging_tables().len(),
        3,
        "snapshot 3, and the dead run's snapshot 4 and changes 4"
    );
    w.store.heal();
    w.pg.sql("UPDATE orders SET amount = 2 WHERE id = 11;")
        .unwrap();
    let next = w.ok(&spec).await;
    assert_eq!(next.counts.records_sent, 11);
    assert_exact(&events_by_id(&w.state().await), &orders_expected(&w));
    assert_eq!(w.staging_tables().len(), 1, "{:?}", w.staging_tables());

    // 3. Killed mid-send: pages of 20 changes; the third page's commit fails.
    w.pg.sql("UPDATE orders SET status = 'y' WHERE id <= 100;")
        .unwrap();
    w.store
        .fail_when(|c| c.pending.as_ref().is_some_and(|p| p.sent_through > 40));
    let killed = w.run(&spec).await;
    assert_eq!(killed.state, RunState::Failed);
    let through = w.cursor("orders").await.pending.unwrap().sent_through;
    assert_eq!(through, 40, "two pages were acknowledged and committed");
    w.store.heal();
    let next = w.ok(&spec).await;
    assert_eq!(
        next.counts.records_sent, 60,
        "exactly the changes after the last commit"
    );
    assert_exact(&events_by_id(&w.state().await), &orders_expected(&w));

    // 4. Killed after the rotation, before the old snapshot was dropped: simulated by a
    //    leftover table of this sync; the next run drops it.
    let names = mirror::naming::StagingNames::new("acme", "orders");
    let stray = names.snapshot(99, "dead-run");
    w.pg.sql(&format!("CREATE TABLE {STAGING_SCHEMA}.{stray} (x int);"))
        .unwrap();
    w.ok(&spec).await;
    assert!(!w.staging_tables().contains(&stray));
    assert_exact(&events_by_id(&w.state().await), &orders_expected(&w));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_sends_nothing_and_the_next_run_sends_everything() {
    let Some(w) = world(StoreMode::Disk, 100).await else {
        return;
    };
    w.pg.sql(ORDERS).unwrap();
    insert_orders(&w.pg, 1, 120);
    let spec = orders_sync("orders");
    let (_cancel, cancelled) = tokio::sync::watch::channel(true);
    let store: Arc<dyn StateStore> = w.store.clone();
    let run = SyncRunner::new(store, w.settings.clone())
        .with_control(RunControl {
            run_id: None,
            cancel: Some(cancelled),
        })
        .run(
            &w.tenant(),
            &w.source(),
            &spec,
            Arc::new(RunProgress::default()),
        )
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Cancelled, "{:?}", run.message);
    assert_eq!(run.counts.records_sent, 0);
    let next = w.ok(&spec).await;
    assert_eq!(next.counts.records_accepted, 120);
    assert_exact(&events_by_id(&w.state().await), &orders_expected(&w));
    assert_eq!(w.staging_tables().len(), 1, "{:?}", w.staging_tables());
}

// ---------------------------------------------------------------------------------------------
// Profiles, groups, lookup tables

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_follow_sets_unsets_deletes_and_added_columns_resend_nothing() {
    let Some(w) = world(StoreMode::Disk, 100).await else {
        return;
    };
    w.pg.sql("CREATE TABLE users (uid text PRIMARY KEY, name text, plan text, seats int);")
        .unwrap();
    w.pg.sql("INSERT INTO users VALUES ('u1', 'Ann', 'pro', 3), ('u2', '', 'free', NULL), ('u3', NULL, 'free', 1), ('u4', 'Dee', NULL, 9);").unwrap();
    w.pg.sql("CREATE TABLE companies (company text PRIMARY KEY, plan text);")
        .unwrap();
    w.pg.sql("INSERT INTO companies VALUES ('acme', 'enterprise'), ('initech', 'free');")
        .unwrap();
    let users = sync("id='users'\ntable='users'\ntable_type='user_profiles'\n[mapping]\ndistinct_id_column='uid'\n");
    assert!(
        users.validate().unwrap().warnings.is_empty(),
        "profiles are keyed by their id"
    );
    let companies = sync("id='companies'\ntable='companies'\ntable_type='group_profiles'\n[mapping]\ngroup_key='company_id'\ngroup_id_column='company'\n");

    let expected_profiles = |w: &World| -> Json {
        w.json("SELECT coalesce(json_object_agg(uid, json_strip_nulls(json_build_object('name', name, 'plan', plan, 'seats', seats, 'tier', tier))), '{}') FROM (SELECT uid, name, plan, seats, (to_jsonb(u) ->> 'tier') AS tier FROM users u) x")
    };
    let got_profiles = |state: &Json| -> Json {
        let mut out = serde_json::Map::new();
        for (id, p) in state["profiles"].as_object().unwrap() {
            out.insert(id.clone(), p["properties"].clone());
        }
        Json::Object(out)
    };
    w.ok(&users).await;
    w.ok(&companies).await;
    assert_eq!(got_profiles(&w.state().await), expected_profiles(&w));
    assert_eq!(got_profiles(&w.state().await)["u2"]["name"], json!(""));

    // '' → NULL is a $unset, NULL → '' a $set, a deleted row a $delete.
    w.pg.sql("UPDATE users SET name = NULL WHERE uid = 'u2'; UPDATE users SET name = '' WHERE uid = 'u3'; DELETE FROM users WHERE uid = 'u4'; INSERT INTO users VALUES ('u5', 'Eve', 'pro', 2);").unwrap();
    let run = w.ok(&users).await;
    let c = run.counts;
    assert_eq!(
        (c.changes_inserted, c.changes_updated, c.changes_deleted),
        (1, 2, 1)
    );
    let state = w.state().await;
    assert_eq!(got_profiles(&state), expected_profiles(&w));
    assert!(state["profiles"]["u2"]["properties"].get("name").is_none());
    assert_eq!(state["profiles"]["u3"]["properties"]["name"], json!(""));
    assert!(
        state["profiles"].get("u4").is_none(),
        "$delete removed the profile"
    );

    // A nullable column added at the end re-sends nothing; filling it sends that row.
    w.pg.sql("ALTER TABLE users ADD COLUMN tier text;").unwrap();
    let run = w.ok(&users).await;
    assert_eq!(run.counts.records_sent, 0, "{:?}", run.message);
    assert!(
        run.message
            .as_deref()
            .unwrap_or("")
            .contains("columns added: tier"),
        "{:?}",
        run.message
    );
    w.pg.sql("UPDATE users SET tier = 'gold' WHERE uid = 'u1';")
        .unwrap();
    let run = w.ok(&users).await;
    assert_eq!(run.counts.changes_updated, 1);
    assert_eq!(got_profiles(&w.state().await), expected_profiles(&w));

    // Groups: updates and deletes.
    w.pg.sql("UPDATE companies SET plan = 'pro' WHERE company = 'initech'; DELETE FROM companies WHERE company = 'acme';").unwrap();
    w.ok(&companies).await;
    let groups = w.state().await["groups"].clone();
    assert_eq!(groups.as_array().unwrap().len(), 1, "{groups}");
    assert_eq!(groups[0]["group_id"], "initech");
    assert_eq!(groups[0]["properties"], json!({"plan": "pro"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_table_is_replaced_only_when_something_changed() {
    let Some(w) = world(StoreMode::Disk, 100).await else {
        return;
    };
    w.pg.sql("CREATE TABLE plans (plan_id text PRIMARY KEY, label text, price int);")
        .unwrap();
    w.pg.sql("INSERT INTO plans VALUES ('free', 'Free', 0), ('pro', 'Pro', 20);")
        .unwrap();
    let spec = sync("id='plans'\ntable='plans'\ntable_type='lookup_table'\n[mapping]\nlookup_table_id='plans'\nkey_column='plan_id'\n");
    let first = w.ok(&spec).await;
    assert!(
        first
            .message
            .as_deref()
            .unwrap_or("")
            .contains("replaced with 2 rows"),
        "{:?}",
        first.message
    );
    let idle = w.ok(&spec).await;
    assert_eq!(idle.counts.records_sent, 0);
    assert!(
        !idle.message.as_deref().unwrap_or("").contains("replaced"),
        "{:?}",
        idle.message
    );
    w.pg.sql("UPDATE plans SET price = 25 WHERE plan_id = 'pro'; INSERT INTO plans VALUES ('team', 'Team', 50);").unwrap();
    let changed = w.ok(&spec).await;
    assert!(
        changed
            .message
            .as_deref()
            .unwrap_or("")
            .contains("replaced with 3 rows"),
        "{:?}",
        changed.message
    );
    let table = &w.state().await["lookup_tables"]["plans"]["table"];
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows.iter()
            .any(|r| r["plan_id"] == "pro" && r["price"] == 25),
        "{table}"
    );
}

// ---------------------------------------------------------------------------------------------
// Profile history

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_history_keeps_every_version_at_its_start_time() {
    let Some(w) = world(StoreMode::Disk, 100).await else {
        return;
    };
    w.pg.sql("CREATE TABLE plan_history (user_id text NOT NULL, valid_from timestamptz NOT NULL, plan text, seats int);").unwrap();
    w.pg.sql("INSERT INTO plan_history VALUES \
        ('u1', '2024-01-01T00:00:00Z', 'free', 1), ('u1', '2024-02-01T00:00:00Z', 'pro', 3), ('u1', '2024-03-15T12:00:00Z', 'enterprise', 30), \
        ('u2', '2024-01-10T00:00:00Z', 'free', 1), ('u2', '2024-04-01T00:00:00Z', 'pro', NULL);").unwrap();
    let spec = sync("id='history'\ntable='plan_history'\ntable_type='profile_history'\n[mapping]\ndistinct_id_column='user_id'\nstart_time_column='valid_from'\n");
    let versions = |state: &Json| -> Vec<(String, i64, Json, Json)> {
        let mut v: Vec<_> = state["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e["event"], "plan_history");
                let p = &e["properties"];
                (
                    p["distinct_id"].as_str().unwrap().to_owned(),
                    p["time"].as_i64().unwrap(),
                    p.get("plan").cloned().unwrap_or(Json::Null),
                    p.get("seats").cloned().unwrap_or(Json::Null),
                )
            })
            .collect();
        v.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        v
    };
    let expected = |w: &World| -> Vec<(String, i64, Json, Json)> {
        let rows = w.json("SELECT json_agg(json_build_object('u', user_id, 't', (extract(epoch FROM valid_from) * 1000)::bigint, 'plan', plan, 'seats', seats) ORDER BY user_id, valid_from) FROM plan_history");
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["u"].as_str().unwrap().to_owned(),
                    r["t"].as_i64().unwrap(),
                    r["plan"].clone(),
                    r["seats"].clone(),
                )
            })
            .collect()
    };
    w.ok(&spec).await;
    let got = versions(&w.state().await);
    assert_eq!(got, expected(&w));

    // A row's end is the next row's start for the same id: the version in force at any
    // instant is the latest event at or before it, which must be the source's.
    let as_of = |history: &[(String, i64, Json, Json)], user: &str, at: i64| -> Json {
        history
            .iter()
            .filter(|(u, t, _, _)| u == user && *t <= at)
            .max_by_key(|(_, t, _, _)| *t)
            .map(|(_, _, plan, _)| plan.clone())
            .unwrap_or(Json::Null)
    };
    for (at, user) in [
        ("2024-02-15T00:00:00Z", "u1"),
        ("2024-03-15T11:59:59Z", "u1"),
        ("2024-12-31T00:00:00Z", "u2"),
    ] {
        let ms = chrono::DateTime::parse_from_rfc3339(at)
            .unwrap()
            .timestamp_millis();
        let in_force = w.json(&format!(
            "SELECT to_json(plan) FROM (SELECT plan, valid_from, lead(valid_from, 1, 'infinity') OVER (ORDER BY valid_from) AS valid_to FROM plan_history WHERE user_id = '{user}') v WHERE valid_from <= '{at}' AND valid_to > '{at}'"
        ));
        assert_eq!(as_of(&got, user, ms), in_force, "{user} at {at}");
    }

    // A version corrected, one removed, one added.
    w.pg.sql("UPDATE plan_history SET seats = 5 WHERE user_id = 'u1' AND plan = 'pro'; DELETE FROM plan_history WHERE user_id = 'u2' AND plan = 'free'; INSERT INTO plan_history VALUES ('u2', '2024-06-01T00:00:00Z', 'enterprise', 40);").unwrap();
    let run = w.ok(&spec).await;
    let c = run.counts;
    assert_eq!(
        (c.changes_inserted, c.changes_updated, c.changes_deleted),
        (1, 1, 1)
    );
    assert_eq!(versions(&w.state().await), expected(&w));

    // A group's history: events carry the group id as distinct id and under the group key.
    w.pg.sql(
        "CREATE TABLE company_history (company text NOT NULL, since date NOT NULL, tier text);",
    )
    .unwrap();
    w.pg.sql("INSERT INTO company_history VALUES ('acme', '2024-01-01', 'gold'), ('acme', '2024-05-01', 'platinum'), ('initech', '2024-02-01', 'silver');").unwrap();
    let groups = sync("id='company-history'\ntable='company_history'\ntable_type='profile_history'\n[mapping]\ngroup_key='company_id'\ngroup_id_column='company'\nstart_time_column='since'\n");
    let run = w.ok(&groups).await;
    assert_eq!(run.counts.changes_inserted, 3);
    let state = w.state().await;
    let mut group_events: Vec<(String, String, i64, String)> = state["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "company_history")
        .map(|e| {
            let p = &e["properties"];
            (
                p["distinct_id"].as_str().unwrap().to_owned(),
                p["company_id"].as_str().unwrap().to_owned(),
                p["time"].as_i64().unwrap(),
                p["tier"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    group_events.sort();
    let day = |d: &str| {
        chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
    };
    assert_eq!(
        group_events,
        vec![
            (
                "acme".into(),
                "acme".into(),
                day("2024-01-01"),
                "gold".into()
            ),
            (
                "acme".into(),
                "acme".into(),
                day("2024-05-01"),
                "platinum".into()
            ),
            (
                "initech".into(),
                "initech".into(),
                day("2024-02-01"),
                "silver".into()
            ),
        ]
    );

    // Lists and objects are refused, by name.
    w.pg.sql("CREATE TABLE tag_history (user_id text, valid_from timestamptz, tags text[]);")
        .unwrap();
    let lists = sync("id='tags'\ntable='tag_history'\ntable_type='profile_history'\n[mapping]\ndistinct_id_column='user_id'\ntime_column='valid_from'\n");
    let refused = w.run(&lists).await;
    assert_eq!(refused.state, RunState::Failed);
    let message = refused.message.unwrap_or_default();
    assert!(
        message.contains("tags") && message.contains("lists or objects"),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------------------
// Schema changes, reserved names, dry runs, cleanup

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_stop_the_run_until_accepted_and_reserved_names_are_refused() {
    let Some(w) = world(StoreMode::Disk, 100).await else {
        return;
    };
    w.pg.sql(ORDERS).unwrap();
    insert_orders(&w.pg, 1, 50);
    let mut spec = orders_sync("orders");
    w.ok(&spec).await;
    w.pg.sql("ALTER TABLE orders DROP COLUMN note; UPDATE orders SET status = 'z' WHERE id = 1;")
        .unwrap();
    let refused = w.run(&spec).await;
    assert_eq!(refused.state, RunState::Failed);
    let message = refused.message.clone().unwrap_or_default();
    assert!(
        message.contains("dropped or renamed: note") && message.contains("accept_schema_change"),
        "{message}"
    );
    assert_eq!(refused.counts.records_sent, 0, "nothing is sent");
    assert_eq!(w.staging_tables().len(), 1, "nothing is created");

    spec.accept_schema_change = true;
    let accepted = w.ok(&spec).await;
    assert!(
        accepted
            .message
            .as_deref()
            .unwrap_or("")
            .contains("schema change accepted"),
        "{:?}",
        accepted.message
    );
    // Rows whose dropped value was NULL keep their checksum (a trailing NULL adds nothing to
    // it): only the 16 rows with a note, and the updated row 1, changed.
    assert_eq!(accepted.counts.changes_updated, 17);
    let got = events_by_id(&w.state().await);
    assert_eq!(got.len(), 50);
    assert!(
        got.values().all(|e| e["note"].is_null()),
        "the dropped column's values are gone"
    );
    assert_eq!(got[&1]["status"], "z");

    w.pg.sql("CREATE TABLE bad (id int, _mp_row_hash text);")
        .unwrap();
    let bad = w.run(&sync("id='bad'\ntable='bad'\ntable_type='events'\n[mapping]\nevent_name='E'\ntime_column='id'\ndistinct_id_column='id'\nkey_columns=['id']\n")).await;
    assert_eq!(bad.state, RunState::Failed);
    assert!(bad
        .message
        .unwrap_or_default()
        .contains("'_mp_row_hash' has a name Ferry reserves"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_counts_changes_without_moving_anything_and_staging_is_dropped_with_the_sync() {
    let Some(w) = world(StoreMode::Disk, 100).await else {
        return;
    };
    w.pg.sql(ORDERS).unwrap();
    insert_orders(&w.pg, 1, 200);
    let spec = orders_sync("orders");
    w.ok(&spec).await;
    w.pg.sql("UPDATE orders SET status = 'v' WHERE id <= 7; DELETE FROM orders WHERE id > 195; INSERT INTO orders VALUES (500, 'undefined', now() - interval '1 day', 1, NULL, NULL), (501, 'u9', now() - interval '1 day', 1, NULL, NULL);").unwrap();
    let before = w.state().await;
    let cursor_before = w.cursor("orders").await;

    let store: Arc<dyn StateStore> = w.store.clone();
    let dry = mirror::dry_run(
        store.as_ref(),
        &w.settings,
        &w.tenant(),
        &w.source(),
        &spec,
        3,
    )
    .await
    .unwrap();
    assert_eq!((dry.inserts, dry.updates, dry.deletes), (2, 7, 5));
    assert_eq!(dry.billable, 12);
    assert_eq!(
        dry.invalid, 1,
        "the 'undefined' distinct id: {:?}",
        dry.errors
    );
    assert_eq!(dry.errors[0].field, "properties.distinct_id");
    assert_eq!(dry.samples.len(), 3);
    assert_eq!(
        dry.samples[0].record["properties"]["distinct_id"]
            .as_str()
            .map(|s| s.starts_with("user-")),
        Some(true),
        "{:?}",
        dry.samples[0]
    );
    assert_eq!(w.state().await, before, "nothing was sent");
    assert_eq!(
        w.cursor("orders").await,
        cursor_before,
        "nothing was rotated"
    );
    assert_eq!(
        w.staging_tables().len(),
        1,
        "the dry run dropped its tables: {:?}",
        w.staging_tables()
    );

    let run = w.ok(&spec).await;
    let c = run.counts;
    assert_eq!(
        (c.changes_inserted, c.changes_updated, c.changes_deleted),
        (2, 7, 5)
    );
    assert_eq!(c.rows_invalid, 1);

    // Another sync's staging survives this one's deletion.
    w.pg.sql("CREATE TABLE other (id int PRIMARY KEY, uid text);")
        .unwrap();
    w.pg.sql("INSERT INTO other VALUES (1, 'a');").unwrap();
    w.ok(&sync("id='other'\ntable='other'\ntable_type='user_profiles'\n[mapping]\ndistinct_id_column='uid'\nkey_columns=['id']\n")).await;
    assert_eq!(w.staging_tables().len(), 2);
    let dropped = mirror::drop_staging(&w.source(), &spec).await.unwrap();
    assert_eq!(dropped.len(), 1);
    let left = w.staging_tables();
    assert_eq!(left.len(), 1);
    assert!(mirror::naming::StagingNames::new("acme", "other")
        .owns(&left[0])
        .is_some());
}

// ---------------------------------------------------------------------------------------------
// The warehouse's checksum is Ferry's

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_row_hashes_equal_the_rust_checksum_for_every_type() {
    let Some(w) = world(StoreMode::Memory, 100).await else {
        return;
    };
    w.pg.sql("CREATE TABLE typed (i int, b bigint, t text, e text, f float8, r real, n numeric(12,3), ok boolean, d date, ts timestamp, tz timestamptz, j jsonb, js json, u uuid, by bytea, arr text[], iv interval, tail text);").unwrap();
    w.pg.sql("INSERT INTO typed VALUES \
        (1, -9007199254740993, 'abc', '', 1.5, 1.1, 12.5, true, '2024-02-29', '2024-01-01 03:04:05.25', '2024-01-01 05:00:00.12+02', '{\"b\": [1, \"x\"], \"a\": null}', '{\"z\": 1,  \"y\": \"s\"}', '01234567-89ab-cdef-0123-456789abcdef', '\\xdead', '{a,\"b c\",NULL,\"\"}', '1 day 02:00:00', NULL), \
        (NULL, NULL, NULL, NULL, 1e20, -0.0001, -0.5, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), \
        (2, 0, 'q\"\\\\', ' ', 123456789.125, 3.25, 0, NULL, '1999-12-31', '2000-01-01 00:00:00', '2000-01-01 00:00:00+00', '[]', '\"s\"', NULL, '\\x', '{}', '-3 hours', 'x');").unwrap();
    let wh = w.warehouse();
    let columns = wh
        .columns(&ReadSource::Table {
            schema: Some("public".into()),
            name: "typed".into(),
        })
        .await
        .unwrap();
    let sql = MirrorSql::new(wh.dialect(), STAGING_SCHEMA);
    let identity: Vec<String> = Vec::new();
    let snap = SnapshotRef {
        name: "hash_check",
        columns: &columns,
        identity: &identity,
    };
    wh.execute(&[
        sql.create_schema(),
        sql.snapshot(
            &ReadSource::Table {
                schema: Some("public".into()),
                name: "typed".into(),
            },
            &snap,
        )
        .unwrap(),
    ])
    .await
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Page>(4);
    let request = ReadRequest {
        source: ReadSource::Table {
            schema: Some(STAGING_SCHEMA.into()),
            name: "hash_check".into(),
        },
        cursor: None,
        page_size: 100,
    };
    let reader = tokio::spawn(async move { wh.read(&request, tx).await });
    let mut rows = 0;
    while let Some(page) = rx.recv().await {
        let hash_at = page.batch.column_index("_mp_row_hash").unwrap();
        for row in &page.batch.rows {
            let Value::Text(sql_hash) = &row[hash_at] else {
                panic!("{row:?}")
            };
            assert_eq!(row_checksum(&row[..hash_at]).to_hex(), *sql_hash, "{row:?}");
            rows += 1;
        }
    }
    reader.await.unwrap().unwrap();
    assert_eq!(rows, 3);
}

// ---------------------------------------------------------------------------------------------
// Volume

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_thousand_rows_with_one_percent_churn_send_only_the_churn() {
    let Some(w) = world(StoreMode::Memory, 5000).await else {
        return;
    };
    w.pg.sql(ORDERS).unwrap();
    insert_orders(&w.pg, 1, 100_000);
    let spec = orders_sync("orders");
    let first = w.ok(&spec).await;
    assert_eq!(first.counts.records_accepted, 100_000);
    // 1%: 400 updates, 300 deletes, 300 inserts.
    w.pg.sql("UPDATE orders SET status = 'churned' WHERE id % 250 = 0; DELETE FROM orders WHERE id % 1000 = 7 OR id % 1000 = 8 OR id % 1000 = 9; INSERT INTO orders SELECT i, 'new', now() - interval '1 day', 1, NULL, NULL FROM generate_series(200001, 200300) AS i;").unwrap();
    let second = w.ok(&spec).await;
    let c = second.counts;
    assert_eq!(
        (c.changes_inserted, c.changes_updated, c.changes_deleted),
        (300, 400, 300)
    );
    assert_eq!(c.records_sent, 1000);
    assert_eq!(c.records_accepted, 1000);
    let state: Json = reqwest::get(format!(
        "{}/ferry/v1/projects/77/state?events=false",
        w.rx.base_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(state["event_count"], 100_000, "300 deleted, 300 inserted");
}
