//! Mirror syncs on Redshift: the snapshot-and-checksum engine running its Redshift SQL through
//! the Redshift connector and the unchanged AWS SDK, against the Data API stand-in over a real
//! PostgreSQL, into the receiver — insert / update / delete cycles compared exactly with the
//! source, NULL vs empty string, SUPER columns, tables with and without keys, profiles, added
//! columns; and the Redshift dialect's row hashes equal PostgreSQL's for every type.

mod redshift_rig;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use ferry_actors::pipeline::RunProgress;
use ferry_actors::restart::RestartPolicy;
use ferry_connectors::mixpanel::{ClientSettings, RetryPolicy};
use ferry_connectors::warehouse::mirror::{MirrorSql, MirrorWarehouse, SnapshotRef};
use ferry_connectors::warehouse::postgres::PostgresWarehouse;
use ferry_connectors::warehouse::{ReadSource, Warehouse};
use ferry_coordinator::mirror::cursor::MirrorCursor;
use ferry_coordinator::mirror::{self, STAGING_SCHEMA};
use ferry_coordinator::runner::{RunnerSettings, SyncRunner};
use ferry_coordinator::{
    CursorRecord, EmbeddedSettings, EmbeddedStore, Fence, Owner, RunRecord, RunState, StateStore,
    StoreError, SyncId,
};
use ferry_core::spec::{PostgresOptions, Secret, SourceSpec, SslMode, SyncSpec, TenantSpec};
use ferry_core::value::Value;
use ferry_receiver::config::{ProjectConfig, StoreMode};
use redshift_rig::*;
use serde_json::{json, Value as Json};

type CursorCheck = Box<dyn Fn(&MirrorCursor) -> bool + Send + Sync>;

/// The embedded store, with cursor commits that fail on demand: a selected commit fails as if
/// the node had died just before it (nothing after it in that run happens).
struct FaultyStore {
    inner: Arc<dyn StateStore>,
    fail_when: StdMutex<Option<CursorCheck>>,
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
        let fail = match (
            self.fail_when.lock().unwrap().as_ref(),
            MirrorCursor::from_value(cursor),
        ) {
            (Some(check), Ok(Some(state))) => check(&state),
            _ => false,
        };
        if fail {
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
    rig: Rig,
    rx: ferry_receiver::RunningReceiver,
    _dir: tempfile::TempDir,
    runner: SyncRunner,
    settings: RunnerSettings,
    store: Arc<FaultyStore>,
}

/// `page_rows`: rows per `GetStatementResult` page, so change reads span several pages.
async fn world(page_rows: usize, page_size: usize) -> Option<World> {
    let rig = Rig::start(page_rows).await?;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ferry_receiver::ReceiverConfig::from_toml("listen = \"127.0.0.1:0\"").unwrap();
    cfg.store = StoreMode::Disk;
    cfg.data_dir = Some(dir.path().join("receiver"));
    cfg.projects = vec![ProjectConfig {
        id: "77".into(),
        token: "tok77".into(),
        secret: None,
        group_keys: None,
        lookup_tables: Vec::new(),
        rate_limit: Default::default(),
    }];
    let rx = ferry_receiver::start(cfg).await.unwrap();
    let store = Arc::new(FaultyStore {
        inner: Arc::new(
            EmbeddedStore::open_in(&dir.path().join("state"), EmbeddedSettings::default()).unwrap(),
        ),
        fail_when: StdMutex::new(None),
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
    let runner = SyncRunner::new(store.clone(), settings.clone());
    Some(World {
        rig,
        rx,
        _dir: dir,
        runner,
        settings,
        store,
    })
}

impl World {
    fn tenant(&self) -> TenantSpec {
        toml::from_str(&format!(
            "id='acme'\nname='Acme'\nproject_id=77\nproject_token='tok77'\n[destination]\nbase_url='{}'\n[auth]\nproject_token='tok77'\n",
            self.rx.base_url()
        ))
        .unwrap()
    }

    fn source(&self) -> SourceSpec {
        toml::from_str(&self.rig.source_toml("rs")).unwrap()
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

    async fn cursor(&self, sync: &str) -> MirrorCursor {
        let record = self
            .store
            .get_cursor(&SyncId::new("acme", sync).unwrap())
            .await
            .unwrap()
            .expect("a cursor");
        MirrorCursor::from_value(&record.value).unwrap().unwrap()
    }

    async fn ok(&self, sync: &SyncSpec) -> RunRecord {
        let run = self
            .runner
            .run(
                &self.tenant(),
                &self.source(),
                sync,
                Arc::new(RunProgress::default()),
            )
            .await
            .expect("the run is recorded");
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

    /// A JSON value computed by PostgreSQL (as the superuser, so psql prints only the value).
    fn json(&self, query: &str) -> Json {
        let out = self
            .rig
            .pg
            .admin_sql_in(&self.rig.pg.database, query)
            .unwrap();
        serde_json::from_str(out.trim()).unwrap_or(Json::Null)
    }

    fn staging_tables(&self) -> Vec<String> {
        self.rig
            .pg
            .admin_sql_in(
                &self.rig.pg.database,
                &format!("SELECT table_name FROM information_schema.tables WHERE table_schema = '{STAGING_SCHEMA}' ORDER BY 1"),
            )
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

fn sync(text: &str) -> SyncSpec {
    toml::from_str(&format!(
        "tenant='acme'\nsource='rs'\nmode='mirror'\n{text}"
    ))
    .unwrap()
}

const ORDERS: &str = "CREATE TABLE orders (id bigint PRIMARY KEY, user_id varchar(32) NOT NULL, created_at timestamptz NOT NULL, amount numeric(10,2), status varchar(16), note varchar(64), meta jsonb);";

fn insert_orders(rig: &Rig, from: i64, to: i64) {
    rig.pg
        .sql(&format!(
            "INSERT INTO orders SELECT i, 'user-' || (i % 17), timestamptz '2024-03-01 00:00:00+00' + i * interval '1 minute', (i * 1.25)::numeric(10,2), CASE WHEN i % 2 = 0 THEN 'paid' END, CASE WHEN i % 3 = 0 THEN '' END, jsonb_build_object('tags', jsonb_build_array('a', i % 4)) FROM generate_series({from}, {to}) AS i;"
        ))
        .unwrap();
}

/// The receiver's events, projected to what the source determines, by order id.
fn events_by_id(state: &Json) -> BTreeMap<i64, Json> {
    state["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let p = &e["properties"];
            (
                p["id"].as_i64().unwrap(),
                json!({"event": e["event"], "distinct_id": p["distinct_id"], "time": p["time"],
                       "amount": p["amount"].as_f64(), "status": p.get("status"),
                       "note": p.get("note"), "meta": p.get("meta")}),
            )
        })
        .collect()
}

/// The same projection of the source table, computed by PostgreSQL.
fn orders_expected(w: &World) -> BTreeMap<i64, Json> {
    let rows = w.json(
        "SELECT coalesce(json_agg(json_build_object('id', id, 'event', 'Order', 'distinct_id', user_id, 'time', (extract(epoch FROM created_at) * 1000)::bigint, 'amount', amount::float8, 'status', status, 'note', note, 'meta', meta) ORDER BY id), '[]') FROM orders",
    );
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let id = r["id"].as_i64().unwrap();
            r.as_object_mut().unwrap().remove("id");
            // PostgreSQL prints 5.0 as 5; compare amounts as the numbers they are.
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
async fn event_cycles_on_redshift_match_the_source_exactly() {
    // 40 rows per result page: the change reads span many GetStatementResult pages.
    let Some(w) = world(40, 100).await else {
        return;
    };
    w.rig.pg.sql(ORDERS).unwrap();
    insert_orders(&w.rig, 1, 600);
    let spec = sync("id='orders'\ntable='public.orders'\ntable_type='events'\n[mapping]\nevent_name='Order'\ntime_column='created_at'\ndistinct_id_column='user_id'\nkey_columns=['id']\n");

    let first = w.ok(&spec).await;
    assert_eq!(first.counts.changes_inserted, 600);
    assert_eq!(first.counts.records_accepted, 600);
    assert_exact(&events_by_id(&w.state().await), &orders_expected(&w));

    // The engine spoke Redshift: distributed snapshots, SUPER hashed through JSON_SERIALIZE,
    // bound parameters as :p1.
    let statements = w.rig.standin.statements();
    let all_sql: Vec<&String> = statements.iter().flat_map(|s| s.sqls.iter()).collect();
    assert!(
        all_sql.iter().any(
            |s| s.contains("DISTKEY(\"_mp_key_hash\") SORTKEY(\"_mp_key_hash\")")
                && s.contains("JSON_SERIALIZE(src.\"meta\")")
        ),
        "{all_sql:#?}"
    );
    assert!(all_sql.iter().any(|s| s.contains(":p1")), "{all_sql:#?}");
    assert!(
        statements.iter().all(|s| s.status == "FINISHED"),
        "{statements:#?}"
    );

    // A cycle: updates (a SUPER value too), NULL ↔ '', deletes and inserts.
    w.rig
        .pg
        .sql("UPDATE orders SET status = 'refunded' WHERE id BETWEEN 10 AND 29;")
        .unwrap();
    w.rig
        .pg
        .sql(
            "UPDATE orders SET note = NULL WHERE id = 3; UPDATE orders SET note = '' WHERE id = 4;",
        )
        .unwrap();
    w.rig
        .pg
        .sql("UPDATE orders SET meta = '{\"tags\": [\"b\"]}' WHERE id = 7;")
        .unwrap();
    w.rig
        .pg
        .sql("DELETE FROM orders WHERE id BETWEEN 500 AND 549;")
        .unwrap();
    insert_orders(&w.rig, 601, 630);
    let second = w.ok(&spec).await;
    let c = second.counts;
    assert_eq!(
        (c.changes_inserted, c.changes_updated, c.changes_deleted),
        (30, 23, 50)
    );
    assert_eq!(c.records_sent, 103, "only the changes are sent");
    let got = events_by_id(&w.state().await);
    assert_exact(&got, &orders_expected(&w));
    assert_eq!(got[&4]["note"], json!(""), "an empty string is a value");
    assert_eq!(got[&3]["note"], json!(null), "NULL is no property");
    assert_eq!(got[&7]["meta"], json!({"tags": ["b"]}));

    // Nothing changed: nothing is sent, and only the current snapshot stays in staging.
    let idle = w.ok(&spec).await;
    assert_eq!(idle.counts.records_sent, 0);
    assert_eq!(
        idle.counts.changes_inserted + idle.counts.changes_updated + idle.counts.changes_deleted,
        0
    );
    assert_eq!(w.staging_tables().len(), 1, "{:?}", w.staging_tables());

    // A dry run counts what a run would send (updates and deletes are billable) and moves
    // nothing; deleting the sync's staging objects leaves none behind.
    w.rig
        .pg
        .sql("DELETE FROM orders WHERE id = 1; UPDATE orders SET status = 'x' WHERE id = 2; INSERT INTO orders SELECT 9000, 'u', now(), 1, NULL, NULL, NULL;")
        .unwrap();
    let events_before = w.state().await["event_count"].clone();
    let dry = mirror::dry_run(
        w.runner.store().as_ref(),
        &w.settings,
        &w.tenant(),
        &w.source(),
        &spec,
        5,
    )
    .await
    .unwrap();
    assert_eq!((dry.inserts, dry.updates, dry.deletes), (1, 1, 1));
    assert_eq!(dry.billable, 2);
    assert_eq!(
        w.state().await["event_count"],
        events_before,
        "nothing moved"
    );
    assert_eq!(w.staging_tables().len(), 1, "{:?}", w.staging_tables());
    let dropped = mirror::drop_staging(&w.source(), &spec).await.unwrap();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert!(w.staging_tables().is_empty(), "{:?}", w.staging_tables());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_rows_collapse_and_profiles_follow_sets_unsets_deletes_on_redshift() {
    let Some(w) = world(1000, 100).await else {
        return;
    };
    w.rig
        .pg
        .sql("CREATE TABLE clicks (user_id varchar(8), at timestamptz, page varchar(16));")
        .unwrap();
    w.rig.pg.sql("INSERT INTO clicks VALUES ('u1', '2024-01-01T00:00:00Z', '/a'), ('u1', '2024-01-01T00:00:00Z', '/a'), ('u2', '2024-01-02T00:00:00Z', '/b'), ('u3', '2024-01-03T00:00:00Z', NULL), ('u3', '2024-01-03T00:00:00Z', '');").unwrap();
    let clicks = sync("id='clicks'\ntable='clicks'\ntable_type='events'\n[mapping]\nevent_name='Click'\ntime_column='at'\ndistinct_id_column='user_id'\n");
    let first = w.ok(&clicks).await;
    assert_eq!(
        first.counts.changes_inserted, 4,
        "two identical rows are one"
    );
    w.rig
        .pg
        .sql("UPDATE clicks SET page = '/c' WHERE user_id = 'u2';")
        .unwrap();
    let c = w.ok(&clicks).await.counts;
    assert_eq!(
        (c.changes_inserted, c.changes_updated, c.changes_deleted),
        (1, 0, 1),
        "without a key an update is a delete plus an insert"
    );
    let mut pages: Vec<(String, Json)> = w.state().await["events"]
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
    pages.sort_by_key(|p| format!("{p:?}"));
    assert_eq!(
        pages,
        vec![
            ("u1".into(), json!("/a")),
            ("u2".into(), json!("/c")),
            ("u3".into(), Json::Null),
            ("u3".into(), json!("")),
        ]
    );

    w.rig.pg.sql("CREATE TABLE users (uid varchar(8) PRIMARY KEY, name varchar(32), plan varchar(8), seats int);").unwrap();
    w.rig.pg.sql("INSERT INTO users VALUES ('u1', 'Ann', 'pro', 3), ('u2', '', NULL, 1), ('u3', NULL, 'free', NULL), ('u4', 'Dan', 'pro', 9);").unwrap();
    let users = sync("id='users'\ntable='users'\ntable_type='user_profiles'\n[mapping]\ndistinct_id_column='uid'\n");
    let expected = |w: &World| -> Json {
        w.json("SELECT coalesce(json_object_agg(uid, json_strip_nulls(json_build_object('name', name, 'plan', plan, 'seats', seats))), '{}') FROM users")
    };
    let got = |state: &Json| -> Json {
        let mut out = serde_json::Map::new();
        for (id, p) in state["profiles"].as_object().unwrap() {
            out.insert(id.clone(), p["properties"].clone());
        }
        Json::Object(out)
    };
    w.ok(&users).await;
    assert_eq!(got(&w.state().await), expected(&w));

    w.rig.pg.sql("UPDATE users SET name = NULL WHERE uid = 'u2'; UPDATE users SET name = '' WHERE uid = 'u3'; DELETE FROM users WHERE uid = 'u4'; INSERT INTO users VALUES ('u5', 'Eve', 'pro', 2);").unwrap();
    let c = w.ok(&users).await.counts;
    assert_eq!(
        (c.changes_inserted, c.changes_updated, c.changes_deleted),
        (1, 2, 1)
    );
    let state = w.state().await;
    assert_eq!(got(&state), expected(&w));
    assert!(
        state["profiles"]["u2"]["properties"].get("name").is_none(),
        "$unset"
    );
    assert!(state["profiles"].get("u4").is_none(), "$delete");

    // A nullable column added at the end re-sends nothing; filling it sends that row.
    w.rig
        .pg
        .sql("ALTER TABLE users ADD COLUMN tier varchar(8);")
        .unwrap();
    let widened = w.ok(&users).await;
    assert_eq!(
        widened.counts.records_sent, 0,
        "adding a column re-sends nothing"
    );
    w.rig
        .pg
        .sql("UPDATE users SET tier = 'gold' WHERE uid = 'u1';")
        .unwrap();
    let filled = w.ok(&users).await;
    assert_eq!(filled.counts.changes_updated, 1);
    assert_eq!(
        w.state().await["profiles"]["u1"]["properties"]["tier"],
        json!("gold")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redshift_dialect_hashes_rows_as_postgres_does_for_every_type() {
    let Some(rig) = Rig::start(1000).await else {
        return;
    };
    rig.pg.sql("CREATE TABLE typed (i int, b bigint, t varchar(64), e varchar(8), f float8, r real, n numeric(12,3), ok boolean, d date, ts timestamp, tz timestamptz, j jsonb, by bytea, tail varchar(8));").unwrap();
    rig.pg.sql("INSERT INTO typed VALUES \
        (1, -9007199254740993, 'abc', '', 1.5, 1.1, 12.5, true, '2024-02-29', '2024-01-01 03:04:05.25', '2024-01-01 05:00:00.12+02', '{\"b\": [1, \"x\"], \"a\": null}', '\\xdead', NULL), \
        (NULL, NULL, NULL, NULL, 1e20, -0.0001, -0.5, false, NULL, NULL, NULL, NULL, NULL, NULL), \
        (2, 0, 'q\"\\\\', ' ', 123456789.125, 3.25, 0, NULL, '1999-12-31', '2000-01-01 00:00:00', '2000-01-01 00:00:00+00', '[]', '\\x', 'x');").unwrap();
    let source = ReadSource::Table {
        schema: Some("public".into()),
        name: "typed".into(),
    };
    let redshift = rig.warehouse();
    let postgres = PostgresWarehouse::new(PostgresOptions {
        host: rig.pg.host.clone(),
        port: rig.pg.port,
        database: rig.pg.database.clone(),
        user: rig.pg.user.clone(),
        password: Some(Secret::new(rig.pg.password.clone())),
        ssl_mode: SslMode::Disable,
        ca_cert: None,
        ssh_tunnel: None,
    });
    let columns = redshift.columns(&source).await.unwrap();
    assert_eq!(
        columns,
        postgres.columns(&source).await.unwrap(),
        "both connectors type the columns alike"
    );
    let identity: Vec<String> = Vec::new();
    let mut hashes = Vec::new();
    for (name, wh) in [
        ("by_redshift", &redshift as &dyn MirrorWarehouse),
        ("by_postgres", &postgres as &dyn MirrorWarehouse),
    ] {
        let sql = MirrorSql::new(wh.dialect(), STAGING_SCHEMA);
        let snap = SnapshotRef {
            name,
            columns: &columns,
            identity: &identity,
        };
        wh.execute(&[sql.create_schema(), sql.snapshot(&source, &snap).unwrap()])
            .await
            .unwrap();
        let rows = wh
            .query(&ferry_connectors::warehouse::mirror::Statement::new(
                format!(
                    "SELECT CAST(\"i\" AS VARCHAR(16)), \"_mp_row_hash\" FROM {} ORDER BY 2",
                    sql.table(name)
                ),
            ))
            .await
            .unwrap();
        hashes.push(rows.rows);
    }
    assert_eq!(hashes[0].len(), 3);
    assert_eq!(
        hashes[0], hashes[1],
        "the Redshift SQL computes the same checksums as the PostgreSQL SQL"
    );
    assert!(hashes[0]
        .iter()
        .all(|r| matches!(&r[1], Value::Text(h) if h.len() == 32)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_between_import_and_rotation_or_mid_send_loses_nothing_on_redshift() {
    // Pages of 20 changes, 7 rows per result page.
    let Some(w) = world(7, 20).await else { return };
    w.rig.pg.sql(ORDERS).unwrap();
    insert_orders(&w.rig, 1, 200);
    let spec = sync("id='orders'\ntable='public.orders'\ntable_type='events'\n[mapping]\nevent_name='Order'\ntime_column='created_at'\ndistinct_id_column='user_id'\nkey_columns=['id']\n");
    w.ok(&spec).await;

    // Killed after everything was imported, before the snapshot rotation was committed.
    w.rig
        .pg
        .sql("UPDATE orders SET status = 'x' WHERE id <= 30; DELETE FROM orders WHERE id > 190;")
        .unwrap();
    w.store
        .fail_when(|c| c.pending.is_none() && c.current.as_ref().is_some_and(|g| g.number == 2));
    let killed = w.run(&spec).await;
    assert_eq!(killed.state, RunState::Failed, "{:?}", killed.message);
    assert_eq!(
        killed.counts.records_accepted, 40,
        "imported before the kill"
    );
    assert_exact(&events_by_id(&w.state().await), &orders_expected(&w));
    assert_eq!(
        w.cursor("orders").await.pending.map(|p| p.sent_through),
        Some(40)
    );
    w.store.heal();
    w.rig
        .pg
        .sql("UPDATE orders SET note = 'n' WHERE id IN (100, 101);")
        .unwrap();
    let next = w.ok(&spec).await;
    assert_eq!(
        next.counts.records_sent, 2,
        "only the new changes: {:?}",
        next.message
    );
    assert_exact(&events_by_id(&w.state().await), &orders_expected(&w));

    // Killed mid-send: the third page's commit fails; the next run sends exactly the rest.
    w.rig
        .pg
        .sql("UPDATE orders SET status = 'y' WHERE id <= 100;")
        .unwrap();
    w.store
        .fail_when(|c| c.pending.as_ref().is_some_and(|p| p.sent_through > 40));
    let killed = w.run(&spec).await;
    assert_eq!(killed.state, RunState::Failed);
    assert_eq!(w.cursor("orders").await.pending.unwrap().sent_through, 40);
    w.store.heal();
    let next = w.ok(&spec).await;
    assert_eq!(
        next.counts.records_sent, 60,
        "exactly the changes after the last commit"
    );
    assert_exact(&events_by_id(&w.state().await), &orders_expected(&w));
    assert_eq!(w.staging_tables().len(), 1, "{:?}", w.staging_tables());
}
