//! The Redshift source through the unchanged `aws-sdk-redshiftdata`, against the Redshift Data
//! API stand-in (`tests/redshift-standin`) over a real PostgreSQL: connection tests and their
//! failures, catalog and types, previews, paged and polled reads, cancellation, and an Append
//! sync into the receiver compared exactly with the source.

mod redshift_rig;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_redshiftdata::types::{Field, SqlParameter, StatusString};
use chrono::{NaiveDate, TimeZone, Utc};
use ferry_actors::pipeline::RunProgress;
use ferry_actors::restart::RestartPolicy;
use ferry_connectors::mixpanel::{ClientSettings, RetryPolicy};
use ferry_connectors::warehouse::redshift::RedshiftWarehouse;
use ferry_connectors::warehouse::{
    open_warehouse, CursorFilter, Page, ReadRequest, ReadSource, Warehouse, WarehouseError,
};
use ferry_coordinator::runner::{RunnerSettings, SyncRunner};
use ferry_coordinator::{EmbeddedSettings, EmbeddedStore, RunState, StateStore};
use ferry_core::error::{Classify, ErrorClass};
use ferry_core::spec::{SourceSpec, SyncSpec, TenantSpec};
use ferry_core::value::{ColumnKind, Value};
use ferry_receiver::config::{ProjectConfig, StoreMode};
use redshift_rig::*;
use serde_json::{json, Value as Json};
use tokio::sync::mpsc;

fn table(name: &str) -> ReadSource {
    ReadSource::Table {
        schema: Some("public".into()),
        name: name.into(),
    }
}

async fn read_all(w: &RedshiftWarehouse, req: ReadRequest) -> Result<Vec<Page>, WarehouseError> {
    let (tx, mut rx) = mpsc::channel(2);
    let reader = {
        let w = w.clone();
        tokio::spawn(async move { w.read(&req, tx).await })
    };
    let mut pages = Vec::new();
    while let Some(p) = rx.recv().await {
        pages.push(p);
    }
    let summary = reader.await.expect("reader task")?;
    assert_eq!(summary.pages, pages.len() as u64);
    Ok(pages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_tests_pass_for_clusters_workgroups_and_each_login_after_polling() {
    let Some(rig) = Rig::start(1000).await else {
        return;
    };
    rig.warehouse()
        .test_connection()
        .await
        .expect("cluster + secret");

    let mut db_user = rig.options();
    db_user.secret_arn = None;
    db_user.db_user = Some(rig.pg.user.clone());
    rig.warehouse_with(db_user)
        .test_connection()
        .await
        .expect("cluster + db_user");

    let mut iam = rig.options();
    iam.cluster_identifier = None;
    iam.workgroup_name = Some(WORKGROUP.into());
    iam.secret_arn = None;
    rig.warehouse_with(iam.clone())
        .test_connection()
        .await
        .expect("workgroup + IAM identity");
    iam.secret_arn = Some(SECRET.into());
    rig.warehouse_with(iam)
        .test_connection()
        .await
        .expect("workgroup + secret");

    // Every statement went through SUBMITTED → … → FINISHED and was polled until then.
    let statements = rig.standin.statements();
    assert_eq!(statements.len(), 4);
    for s in &statements {
        assert_eq!(s.sqls, vec!["SELECT 1".to_string()]);
        assert_eq!(s.status, "FINISHED");
        assert!(
            s.describe_calls >= 2,
            "a statement held ~20 ms is polled more than once: {s:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failures_say_what_failed() {
    let Some(rig) = Rig::start(1000).await else {
        return;
    };
    let fails = |options| {
        let w = rig.warehouse_with(options);
        async move { w.test_connection().await.expect_err("must fail") }
    };

    let mut o = rig.options();
    o.secret_arn = Some(STALE_SECRET.into());
    let e = fails(o).await;
    assert!(matches!(e, WarehouseError::Authentication(_)), "{e:?}");
    assert!(
        e.to_string().contains("password authentication failed"),
        "{e}"
    );
    assert_eq!(e.class(), ErrorClass::Fatal);

    let mut o = rig.options();
    o.secret_arn = Some("arn:aws:secretsmanager:us-east-1:000000000000:secret:nobody-knows".into());
    let e = fails(o).await;
    assert!(matches!(e, WarehouseError::Authentication(_)), "{e:?}");
    assert!(e.to_string().contains("secret"), "{e}");

    let mut o = rig.options();
    o.access_key_id = Some("AKIAUNKNOWNKEY000003".into());
    let e = fails(o).await;
    assert!(matches!(e, WarehouseError::Authentication(_)), "{e:?}");
    assert!(e.to_string().contains("access key"), "{e}");

    let mut o = rig.options();
    o.access_key_id = Some(DENIED_KEY_ID.into());
    let e = fails(o).await;
    assert!(matches!(e, WarehouseError::Privilege(_)), "{e:?}");
    assert!(
        e.to_string().contains("redshift-data:ExecuteStatement"),
        "{e}"
    );

    let mut o = rig.options();
    o.cluster_identifier = Some("no-such-cluster".into());
    let e = fails(o).await;
    assert!(
        matches!(e, WarehouseError::NotFound { ref object, .. } if object == "cluster 'no-such-cluster'"),
        "{e:?}"
    );

    let mut o = rig.options();
    o.cluster_identifier = None;
    o.workgroup_name = Some("no-such-workgroup".into());
    let e = fails(o).await;
    assert!(
        matches!(e, WarehouseError::NotFound { ref object, .. } if object == "workgroup 'no-such-workgroup'"),
        "{e:?}"
    );

    let mut o = rig.options();
    o.database = "no_such_database".into();
    let e = fails(o).await;
    assert!(
        matches!(e, WarehouseError::NotFound { ref object, .. } if object == "database"),
        "{e:?}"
    );

    // A login without SELECT on a table: the statement fails in the database.
    rig.pg
        .sql("CREATE TABLE private_things (id int); INSERT INTO private_things VALUES (1);")
        .unwrap();
    let mut o = rig.options();
    o.secret_arn = Some(LIMITED_SECRET.into());
    let limited = rig.warehouse_with(o);
    limited
        .test_connection()
        .await
        .expect("the login itself works");
    let e = limited
        .preview(&table("private_things"), 5)
        .await
        .expect_err("no privilege");
    assert!(matches!(e, WarehouseError::Privilege(_)), "{e:?}");
    assert!(e.to_string().contains("permission denied"), "{e}");

    // Nothing listens: retryable.
    let mut o = rig.options();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    o.endpoint_url = Some(format!("http://127.0.0.1:{port}"));
    let e = fails(o).await;
    assert!(matches!(e, WarehouseError::Unreachable { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Retryable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_and_classified_retryable_when_it_persists() {
    let Some(rig) = Rig::start(1000).await else {
        return;
    };
    rig.standin.throttle_next(2);
    rig.warehouse()
        .test_connection()
        .await
        .expect("the SDK retries throttled calls");
    assert_eq!(
        rig.standin.calls("ExecuteStatement"),
        3,
        "two throttled attempts, then the accepted one"
    );

    rig.standin.throttle_next(100);
    let e = rig
        .warehouse()
        .test_connection()
        .await
        .expect_err("throttled");
    assert!(matches!(e, WarehouseError::Throttled(_)), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Retryable);
    rig.standin.throttle_next(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_columns_types_and_preview_map_from_redshift() {
    let Some(rig) = Rig::start(1000).await else {
        return;
    };
    // jsonb plays SUPER and bytea VARBYTE on the stand-in.
    rig.pg
        .sql(
            r#"
            CREATE TABLE public.typed (
                i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric(14,4), b bool,
                vc varchar(20), ch char(3), tx text, d date, ts timestamp, tz timestamptz,
                sup jsonb, vb bytea, tm time
            );
            INSERT INTO public.typed VALUES
              (-2, 40000, 9000000000, 1.5, 2.25, 1234567890.1234, true, 'héllo', 'ab', 'long text',
               '2024-02-29', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.5+02',
               '{"a": [1, "x"], "b": null}', '\x00ff10', '12:34:56'),
              (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
               NULL, NULL, NULL);
            CREATE VIEW public.typed_view AS SELECT i4, vc FROM public.typed;
            CREATE SCHEMA sales;
            CREATE TABLE sales.orders (id int);
            "#,
        )
        .unwrap();
    let w = rig.warehouse();

    let tables = w.list_tables().await.unwrap();
    let listed: Vec<(String, String, String)> = tables
        .iter()
        .map(|t| (t.schema.clone().unwrap(), t.name.clone(), t.kind.clone()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("public".into(), "typed".into(), "table".into()),
            ("public".into(), "typed_view".into(), "view".into()),
            ("sales".into(), "orders".into(), "table".into()),
        ]
    );

    let columns = w.columns(&table("typed")).await.unwrap();
    let kinds: Vec<(&str, &ColumnKind)> =
        columns.iter().map(|c| (c.name.as_str(), &c.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            ("i2", &ColumnKind::Int),
            ("i4", &ColumnKind::Int),
            ("i8", &ColumnKind::Int),
            ("f4", &ColumnKind::Float),
            ("f8", &ColumnKind::Float),
            ("n", &ColumnKind::Decimal),
            ("b", &ColumnKind::Bool),
            ("vc", &ColumnKind::Text),
            ("ch", &ColumnKind::Text),
            ("tx", &ColumnKind::Text),
            ("d", &ColumnKind::Date),
            ("ts", &ColumnKind::TimestampNaive),
            ("tz", &ColumnKind::Timestamp),
            ("sup", &ColumnKind::Json),
            ("vb", &ColumnKind::Bytes),
            ("tm", &ColumnKind::Other("time".into())),
        ]
    );

    let preview = w.preview(&table("typed"), 10).await.unwrap();
    assert_eq!(preview.len(), 2);
    let row = &preview.rows[0];
    assert_eq!(
        row,
        &vec![
            Value::Int(-2),
            Value::Int(40000),
            Value::Int(9_000_000_000),
            Value::Float(1.5),
            Value::Float(2.25),
            Value::Decimal("1234567890.1234".into()),
            Value::Bool(true),
            Value::Text("héllo".into()),
            Value::Text("ab ".into()),
            Value::Text("long text".into()),
            Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
            Value::TimestampNaive(
                NaiveDate::from_ymd_opt(2024, 1, 2)
                    .unwrap()
                    .and_hms_micro_opt(3, 4, 5, 123_456)
                    .unwrap()
            ),
            // 03:04:05.5 at +02 is 01:04:05.5 UTC.
            Value::Timestamp(
                Utc.with_ymd_and_hms(2024, 1, 2, 1, 4, 5).unwrap()
                    + chrono::Duration::milliseconds(500)
            ),
            Value::Json(json!({"a": [1, "x"], "b": null})),
            Value::Bytes(vec![0, 255, 16]),
            Value::Text("12:34:56".into()),
        ]
    );
    assert!(
        preview.rows[1].iter().all(Value::is_null),
        "{:?}",
        preview.rows[1]
    );

    let one = w.preview(&table("typed_view"), 1).await.unwrap();
    assert_eq!(
        one.rows,
        vec![vec![Value::Int(40000), Value::Text("héllo".into())]]
    );
    let sql = w
        .preview(
            &ReadSource::Sql("SELECT count(*) AS n FROM public.typed;".into()),
            5,
        )
        .await
        .unwrap();
    assert_eq!(sql.rows, vec![vec![Value::Int(2)]]);

    let e = w.columns(&table("nope")).await.expect_err("missing table");
    assert!(
        matches!(e, WarehouseError::NotFound { ref object, .. } if object == "table"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_reads_page_through_results_and_resume_after_the_cursor() {
    // 7 rows per GetStatementResult page: a 250-row read spans 36 result pages.
    let Some(rig) = Rig::start(7).await else {
        return;
    };
    rig.pg
        .sql(
            "CREATE TABLE events (id int, at timestamptz, note text);
             INSERT INTO events SELECT i, timestamptz '2024-05-01 00:00:00+00' + (i / 3) * interval '1 minute', 'n' || i
             FROM generate_series(1, 250) AS i;",
        )
        .unwrap();
    let w = rig.warehouse();
    let request = |after: Option<Value>| ReadRequest {
        source: table("events"),
        cursor: Some(CursorFilter {
            column: "at".into(),
            after,
        }),
        page_size: 10,
    };
    let pages = read_all(&w, request(None)).await.unwrap();
    let ids: Vec<i64> = pages
        .iter()
        .flat_map(|p| p.batch.rows.iter())
        .map(|r| match r[0] {
            Value::Int(i) => i,
            ref other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids.len(), 250);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (1..=250).collect::<Vec<_>>(),
        "every row exactly once"
    );
    assert_eq!(pages.len(), 25);
    assert!(
        rig.standin.calls("GetStatementResult") >= 36,
        "{} result pages fetched",
        rig.standin.calls("GetStatementResult")
    );
    // Rows sharing a cursor value may straddle pages: only safe points are committed.
    let last = pages.last().unwrap().complete_through.clone();
    assert_eq!(
        last,
        Some(Value::Timestamp(
            Utc.with_ymd_and_hms(2024, 5, 1, 1, 23, 0).unwrap()
        ))
    );
    let mid = pages[4].complete_through.clone().expect("a safe point");

    // Resuming after a committed value reads exactly the rows above it, with the value bound
    // as a parameter, not spliced.
    let resumed = read_all(&w, request(Some(mid.clone()))).await.unwrap();
    let Value::Timestamp(mid_at) = mid else {
        panic!("{mid:?}")
    };
    let expected = (1..=250)
        .filter(|i| {
            Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap() + chrono::Duration::minutes(i / 3)
                > mid_at
        })
        .count();
    let got: usize = resumed.iter().map(|p| p.batch.len()).sum();
    assert_eq!(got, expected);
    let last = rig.standin.statements().pop().unwrap();
    assert!(last.sqls[0].contains(":ferry_cursor"), "{:?}", last.sqls);
    assert_eq!(last.parameters[0].0, "ferry_cursor");

    let e = read_all(
        &w,
        ReadRequest {
            source: table("events"),
            cursor: Some(CursorFilter {
                column: "missing".into(),
                after: None,
            }),
            page_size: 10,
        },
    )
    .await
    .expect_err("no such cursor column");
    assert!(
        matches!(e, WarehouseError::NotFound { ref object, .. } if object == "column"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_reads_are_split_into_bounded_statements_without_losing_or_repeating_ties() {
    let Some(rig) = Rig::start(4).await else {
        return;
    };
    // Groups of 3 rows share a cursor value, and ids 40..=64 (25 rows) all share one: more than
    // a chunk.
    rig.pg
        .sql(
            "CREATE TABLE ticks (id int, at bigint);
             INSERT INTO ticks SELECT i, CASE WHEN i BETWEEN 40 AND 64 THEN 1000 ELSE i / 3 * 100 END
             FROM generate_series(1, 100) AS i;",
        )
        .unwrap();
    let mut settings = redshift_rig::fast_settings();
    settings.chunk_rows = 10;
    let w = RedshiftWarehouse::new(rig.options()).with_settings(settings);
    let request = |after: Option<Value>| ReadRequest {
        source: table("ticks"),
        cursor: Some(CursorFilter {
            column: "at".into(),
            after,
        }),
        page_size: 7,
    };
    let rows = |pages: &[Page]| -> Vec<(i64, i64)> {
        pages
            .iter()
            .flat_map(|p| p.batch.rows.iter())
            .map(|r| match (&r[0], &r[1]) {
                (Value::Int(id), Value::Int(at)) => (*id, *at),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let pages = read_all(&w, request(None)).await.unwrap();
    let got = rows(&pages);
    let mut ids: Vec<i64> = got.iter().map(|r| r.0).collect();
    ids.sort();
    assert_eq!(ids, (1..=100).collect::<Vec<_>>(), "every row exactly once");
    assert!(
        got.windows(2).all(|w| w[0].1 <= w[1].1),
        "in cursor order: {got:?}"
    );
    let statements = rig.standin.statements();
    assert!(statements.len() >= 10, "{} statements", statements.len());
    assert!(statements.iter().all(|s| s.status == "FINISHED"));
    assert!(
        statements
            .iter()
            .any(|s| s.sqls[0].contains("= :ferry_cursor") && s.parameters[0].1 == "1000"),
        "the 25 rows at 1000 were read whole: {statements:#?}"
    );
    assert_eq!(
        pages.last().unwrap().complete_through,
        Some(Value::Int(3300))
    );

    // Resuming inside the data reads exactly the rows above the value.
    let resumed = rows(&read_all(&w, request(Some(Value::Int(1000)))).await.unwrap());
    let expected: Vec<i64> = (1..=100)
        .filter(|i| !(40..=64).contains(i) && i / 3 * 100 > 1000)
        .collect();
    let mut resumed_ids: Vec<i64> = resumed.iter().map(|r| r.0).collect();
    resumed_ids.sort();
    assert_eq!(resumed_ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_consumer_is_gone_cancels_its_statement() {
    let Some(rig) = Rig::start(1000).await else {
        return;
    };
    let w = rig.warehouse();
    let reader = tokio::spawn(async move {
        let (tx, _rx) = mpsc::channel(1);
        w.read(
            &ReadRequest {
                source: ReadSource::Sql("SELECT pg_sleep(30) AS slept".into()),
                cursor: None,
                page_size: 10,
            },
            tx,
        )
        .await
    });
    // Wait until the statement runs, then stop the run.
    let mut running = None;
    for _ in 0..200 {
        if let Some(s) = rig
            .standin
            .statements()
            .into_iter()
            .find(|s| s.status == "STARTED")
        {
            running = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let running = running.expect("the statement started");
    reader.abort();
    let mut status = "";
    for _ in 0..300 {
        status = rig
            .standin
            .statements()
            .into_iter()
            .find(|s| s.id == running.id)
            .unwrap()
            .status;
        if status == "ABORTED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        status, "ABORTED",
        "the dropped read cancelled its statement"
    );
    assert_eq!(rig.standin.calls("CancelStatement"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standin_speaks_the_data_api_the_sdk_expects() {
    let Some(rig) = Rig::start(2).await else {
        return;
    };
    rig.pg
        .sql("CREATE TABLE notes (id int, body text);")
        .unwrap();
    let w = rig.warehouse();
    let client = w.client().await.unwrap().clone();
    let o = rig.options();

    // ClientToken: a retried ExecuteStatement is the same statement, run once.
    let execute = || {
        client
            .execute_statement()
            .cluster_identifier(CLUSTER)
            .database(&o.database)
            .secret_arn(SECRET)
            .client_token("ferry-test-token-1")
            .sql("INSERT INTO notes VALUES (:id, :body)")
            .parameters(
                SqlParameter::builder()
                    .name("id")
                    .value("1")
                    .build()
                    .unwrap(),
            )
            .parameters(
                SqlParameter::builder()
                    .name("body")
                    .value("x'); DROP TABLE notes; --")
                    .build()
                    .unwrap(),
            )
            .send()
    };
    let first = execute().await.unwrap();
    let again = execute().await.unwrap();
    assert_eq!(first.id(), again.id());
    let created = first.created_at().unwrap().secs();
    assert!(
        (created - Utc::now().timestamp()).abs() < 60,
        "epoch seconds"
    );
    let id = first.id().unwrap().to_owned();
    let described = loop {
        let d = client.describe_statement().id(&id).send().await.unwrap();
        if d.status() == Some(&StatusString::Finished) {
            break d;
        }
        assert_ne!(d.status(), Some(&StatusString::Failed), "{:?}", d.error());
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(described.result_rows(), 1);
    assert!(
        described.duration() >= 15_000_000,
        "nanoseconds: {}",
        described.duration()
    );
    assert_eq!(
        rig.pg
            .admin_sql_in(&rig.pg.database, "SELECT count(*), min(body) FROM notes")
            .unwrap()
            .trim(),
        "1|x'); DROP TABLE notes; --",
        "inserted once, the value bound rather than spliced"
    );

    // A batch: one transaction, sub-statements `<id>:<n>`, results paged by NextToken.
    let batch = client
        .batch_execute_statement()
        .cluster_identifier(CLUSTER)
        .database(&o.database)
        .secret_arn(SECRET)
        .sqls("INSERT INTO notes VALUES (2, 'b'), (3, 'c'), (4, NULL)")
        .sqls("SELECT id, body FROM notes ORDER BY id")
        .send()
        .await
        .unwrap();
    let batch_id = batch.id().unwrap().to_owned();
    let d = loop {
        let d = client
            .describe_statement()
            .id(&batch_id)
            .send()
            .await
            .unwrap();
        if d.status() == Some(&StatusString::Finished) {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let subs = d.sub_statements();
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[1].id(), format!("{batch_id}:2"));
    assert_eq!(subs[1].has_result_set(), Some(true));
    let mut rows = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = client
            .get_statement_result()
            .id(format!("{batch_id}:2"))
            .set_next_token(token.take())
            .send()
            .await
            .unwrap();
        pages += 1;
        assert_eq!(page.total_num_rows(), 4);
        rows.extend(page.records().iter().cloned());
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    assert_eq!(pages, 2, "2 rows per page");
    assert_eq!(
        rows[0],
        vec![
            Field::LongValue(1),
            Field::StringValue("x'); DROP TABLE notes; --".into())
        ]
    );
    assert_eq!(rows[3], vec![Field::LongValue(4), Field::IsNull(true)]);

    // A failing batch rolls back all of it.
    let bad = client
        .batch_execute_statement()
        .cluster_identifier(CLUSTER)
        .database(&o.database)
        .secret_arn(SECRET)
        .sqls("INSERT INTO notes VALUES (5, 'e')")
        .sqls("INSERT INTO no_such_table VALUES (1)")
        .send()
        .await
        .unwrap();
    let bad_id = bad.id().unwrap().to_owned();
    let d = loop {
        let d = client
            .describe_statement()
            .id(&bad_id)
            .send()
            .await
            .unwrap();
        if d.status() == Some(&StatusString::Failed) {
            break d;
        }
        assert_ne!(d.status(), Some(&StatusString::Finished));
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        d.error().unwrap().contains("no_such_table"),
        "{:?}",
        d.error()
    );
    assert_eq!(
        rig.pg
            .admin_sql_in(&rig.pg.database, "SELECT count(*) FROM notes")
            .unwrap()
            .trim(),
        "4"
    );

    // Unknown statements, and requests without a signature.
    let e = client
        .describe_statement()
        .id("00000000-0000-4000-8000-000000000000")
        .send()
        .await
        .expect_err("unknown id");
    assert!(
        matches!(
            e.as_service_error(),
            Some(aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementError::ResourceNotFoundException(_))
        ),
        "{e:?}"
    );
    let unsigned = reqwest::Client::new()
        .post(rig.standin.url())
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "RedshiftData.ListStatements")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 400);
    let body: Json = unsigned.json().await.unwrap();
    assert_eq!(body["__type"], "MissingAuthenticationTokenException");

    let listed = client.list_statements().send().await.unwrap();
    assert!(listed.statements().len() >= 3);
    assert!(listed
        .statements()
        .iter()
        .any(|s| s.is_batch_statement() == Some(true)));
}

// ---------------------------------------------------------------------------------------------
// An Append sync into the receiver, end to end.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_sync_into_the_receiver_matches_the_source_exactly() {
    let Some(rig) = Rig::start(100).await else {
        return;
    };
    rig.pg
        .sql(
            "CREATE TABLE orders (id bigint, user_id varchar(32), created_at timestamptz, amount numeric(10,2), paid bool, meta jsonb, inserted_at timestamptz);
             INSERT INTO orders SELECT i, 'user-' || (i % 13), timestamptz '2024-03-01 00:00:00+00' + i * interval '1 minute', (i * 1.25)::numeric(10,2), i % 2 = 0, jsonb_build_object('channel', 'web', 'n', i), timestamptz '2024-06-01 00:00:00+00' + (i / 4) * interval '1 second'
             FROM generate_series(1, 730) AS i;",
        )
        .unwrap();

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
    let store: Arc<dyn StateStore> = Arc::new(
        EmbeddedStore::open_in(&dir.path().join("state"), EmbeddedSettings::default()).unwrap(),
    );
    let runner = SyncRunner::new(
        store,
        RunnerSettings {
            node_id: "test-node".into(),
            page_size: 200,
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
        },
    );
    let tenant: TenantSpec = toml::from_str(&format!(
        "id='acme'\nname='Acme'\nproject_id=77\nproject_token='tok77'\n[destination]\nbase_url='{}'\n[auth]\nproject_token='tok77'\n",
        rx.base_url()
    ))
    .unwrap();
    let source: SourceSpec = toml::from_str(&rig.source_toml("rs")).unwrap();
    source.validate().unwrap();
    assert_eq!(open_warehouse(&source).unwrap().kind(), "redshift");
    let sync: SyncSpec = toml::from_str(
        "id='orders'\ntenant='acme'\nsource='rs'\ntable='public.orders'\ntable_type='events'\nmode='append'\ncursor_column='inserted_at'\n[mapping]\nevent_name='Order Placed'\ntime_column='created_at'\ndistinct_id_column='user_id'\nkey_columns=['id']\nproperties_column='meta'\nexcludes=['inserted_at']\n",
    )
    .unwrap();
    let run = |sync: SyncSpec| {
        let (runner, tenant, source) = (&runner, &tenant, &source);
        async move {
            runner
                .run(tenant, source, &sync, Arc::new(RunProgress::default()))
                .await
                .expect("the run is recorded")
        }
    };
    let state = || async {
        reqwest::get(format!("{}/ferry/v1/projects/77/state", rx.base_url()))
            .await
            .unwrap()
            .json::<Json>()
            .await
            .unwrap()
    };

    let first = run(sync.clone()).await;
    assert_eq!(first.state, RunState::Succeeded, "{:?}", first.message);
    assert_eq!(first.counts.rows_read, 730);
    assert_eq!(first.counts.records_accepted, 730);

    rig.pg
        .sql(
            "INSERT INTO orders SELECT i, 'user-' || (i % 13), timestamptz '2024-03-01 00:00:00+00' + i * interval '1 minute', (i * 1.25)::numeric(10,2), i % 2 = 0, jsonb_build_object('channel', 'app', 'n', i), timestamptz '2024-07-01 00:00:00+00' + i * interval '1 second'
             FROM generate_series(731, 800) AS i;",
        )
        .unwrap();
    let second = run(sync).await;
    assert_eq!(second.state, RunState::Succeeded, "{:?}", second.message);
    assert_eq!(second.counts.rows_read, 70, "only the new rows");

    // The receiver holds exactly the source's rows.
    let state = state().await;
    let events = state["events"].as_array().unwrap();
    assert_eq!(events.len(), 800);
    let mut by_id = std::collections::BTreeMap::new();
    for e in events {
        by_id.insert(e["properties"]["id"].as_i64().unwrap(), e.clone());
    }
    assert_eq!(by_id.len(), 800);
    for (id, e) in &by_id {
        let p = &e["properties"];
        assert_eq!(e["event"], "Order Placed");
        assert_eq!(p["distinct_id"], format!("user-{}", id % 13));
        let created =
            Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap() + chrono::Duration::minutes(*id);
        assert_eq!(p["time"], json!(created.timestamp_millis()), "{id}");
        let amount = (*id as f64) * 1.25;
        assert_eq!(p["amount"].as_f64(), Some(amount), "{id}: {p}");
        assert_eq!(p["paid"], json!(id % 2 == 0));
        assert_eq!(p["channel"], if *id <= 730 { "web" } else { "app" });
        assert_eq!(p["n"], json!(id));
        assert!(p.get("inserted_at").is_none());
        assert_eq!(p["$warehouse_type"], "redshift");
    }
}
