//! The PostgreSQL source against real servers started by the launcher in `ferry_tests::postgres`.

use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
use ferry_connectors::warehouse::postgres::PostgresWarehouse;
use ferry_connectors::warehouse::{
    CursorFilter, Page, ReadRequest, ReadSource, Warehouse, WarehouseError,
};
use ferry_core::spec::{CertSource, PostgresOptions, Secret, SslMode};
use ferry_core::value::{ColumnKind, Value};
use ferry_tests::postgres::{postgres_bin_dir, PgConfig, TestCa, TestPostgres};
use ferry_tests::require_tool;
use serde_json::json;
use tokio::sync::mpsc;

fn server(ssl: bool) -> Option<TestPostgres> {
    if !require_tool("postgres", postgres_bin_dir().is_some()) {
        return None;
    }
    Some(TestPostgres::start(PgConfig { ssl }).expect("start postgres"))
}

fn options(pg: &TestPostgres, ssl_mode: SslMode) -> PostgresOptions {
    PostgresOptions {
        host: pg.host.clone(),
        port: pg.port,
        database: pg.database.clone(),
        user: pg.user.clone(),
        password: Some(Secret::new(pg.password.clone())),
        ssl_mode,
        ca_cert: None,
        ssh_tunnel: None,
    }
}

fn source(pg: &TestPostgres) -> PostgresWarehouse {
    PostgresWarehouse::new(options(pg, SslMode::Disable))
}

fn table(schema: &str, name: &str) -> ReadSource {
    ReadSource::Table {
        schema: Some(schema.into()),
        name: name.into(),
    }
}

async fn read_all(w: &PostgresWarehouse, req: ReadRequest) -> Result<Vec<Page>, WarehouseError> {
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

#[tokio::test]
async fn every_type_round_trips() {
    let Some(pg) = server(false) else { return };
    pg.sql(
        r#"
        CREATE TYPE mood AS ENUM ('happy', 'sad');
        CREATE TABLE public.t (
            b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric(20,4),
            s text, vc varchar(10), bp char(3), nm name, by bytea, u uuid, d date,
            ts timestamp, tz timestamptz, j json, jb jsonb,
            ai int4[], at text[], an numeric[], au uuid[], atz timestamptz[],
            iv interval, ip inet, m mood
        );
        INSERT INTO public.t VALUES (
            true, -2, 40000, 9000000000, 1.5, 2.25, 12345678901234.5678,
            'héllo', 'abc', 'ab', 'nm', '\x00ff', '01234567-89ab-cdef-0123-456789abcdef',
            '2024-02-29', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.5+02',
            '{"a": [1, 2]}', '{"b": null}',
            '{1,NULL,3}', '{x,"y z"}', '{1.10,2}', '{01234567-89ab-cdef-0123-456789abcdef}',
            '{"2024-01-01 00:00:00+00"}',
            '1 day 2 hours', '10.0.0.1', 'sad'
        );
        INSERT INTO public.t (b) VALUES (NULL);
        "#,
    )
    .unwrap();
    let w = source(&pg);
    let src = table("public", "t");
    let kinds: Vec<_> = w
        .columns(&src)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.kind)
        .collect();
    use ColumnKind as K;
    assert_eq!(
        kinds,
        vec![
            K::Bool,
            K::Int,
            K::Int,
            K::Int,
            K::Float,
            K::Float,
            K::Decimal,
            K::Text,
            K::Text,
            K::Text,
            K::Text,
            K::Bytes,
            K::Uuid,
            K::Date,
            K::TimestampNaive,
            K::Timestamp,
            K::Json,
            K::Json,
            K::Array,
            K::Array,
            K::Array,
            K::Array,
            K::Array,
            K::Other("interval".into()),
            K::Other("inet".into()),
            K::Other("mood".into()),
        ]
    );
    let batch = w.preview(&src, 10).await.unwrap();
    assert_eq!(batch.len(), 2);
    let u = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let naive = NaiveDateTime::parse_from_str("2024-01-02 03:04:05.123456", "%Y-%m-%d %H:%M:%S%.f")
        .unwrap();
    let zoned =
        Utc.with_ymd_and_hms(2024, 1, 2, 1, 4, 5).unwrap() + chrono::Duration::milliseconds(500);
    let expected = vec![
        Value::Bool(true),
        Value::Int(-2),
        Value::Int(40000),
        Value::Int(9_000_000_000),
        Value::Float(1.5),
        Value::Float(2.25),
        Value::Decimal("12345678901234.5678".into()),
        Value::Text("héllo".into()),
        Value::Text("abc".into()),
        Value::Text("ab ".into()),
        Value::Text("nm".into()),
        Value::Bytes(vec![0, 255]),
        Value::Uuid(u),
        Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
        Value::TimestampNaive(naive),
        Value::Timestamp(zoned),
        Value::Json(json!({"a": [1, 2]})),
        Value::Json(json!({"b": null})),
        Value::Array(vec![Value::Int(1), Value::Null, Value::Int(3)]),
        Value::Array(vec![Value::Text("x".into()), Value::Text("y z".into())]),
        Value::Array(vec![
            Value::Decimal("1.10".into()),
            Value::Decimal("2".into()),
        ]),
        Value::Array(vec![Value::Uuid(u)]),
        Value::Array(vec![Value::Timestamp(
            Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
        )]),
        Value::Text("1 day 02:00:00".into()),
        Value::Text("10.0.0.1/32".into()),
        Value::Text("sad".into()),
    ];
    for (i, (got, want)) in batch.rows[0].iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "column {}", batch.columns[i].name);
    }
    assert_eq!(batch.rows[0].len(), expected.len());
    assert!(
        batch.rows[1].iter().all(Value::is_null),
        "{:?}",
        batch.rows[1]
    );
}

#[tokio::test]
async fn lists_tables_columns_and_previews() {
    let Some(pg) = server(false) else { return };
    pg.sql(
        r#"
        CREATE SCHEMA "Sales";
        CREATE TABLE "Sales"."we""ird" (id int8, "se""lect" text);
        INSERT INTO "Sales"."we""ird" VALUES (1, 'a'), (2, 'b'), (3, 'c');
        CREATE VIEW public.v AS SELECT id * 10 AS ten FROM "Sales"."we""ird";
        CREATE MATERIALIZED VIEW public.mv AS SELECT 1 AS one;
        "#,
    )
    .unwrap();
    let w = source(&pg);
    w.test_connection().await.unwrap();
    let tables: Vec<_> = w
        .list_tables()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.schema.unwrap_or_default(), t.name, t.kind))
        .collect();
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        tables,
        vec![
            s("Sales", "we\"ird", "table"),
            s("public", "mv", "materialized view"),
            s("public", "v", "view"),
        ]
    );
    let cols = w.columns(&table("Sales", "we\"ird")).await.unwrap();
    assert_eq!(cols[1].name, "se\"lect");
    assert_eq!(cols[1].kind, ColumnKind::Text);
    let batch = w.preview(&table("Sales", "we\"ird"), 2).await.unwrap();
    assert_eq!(batch.len(), 2);
    let batch = w
        .preview(
            &ReadSource::Sql("SELECT ten FROM v ORDER BY ten DESC;".into()),
            5,
        )
        .await
        .unwrap();
    assert_eq!(
        batch.rows,
        vec![
            vec![Value::Int(30)],
            vec![Value::Int(20)],
            vec![Value::Int(10)]
        ]
    );
}

#[tokio::test]
async fn cursor_reads_page_with_safe_commit_points() {
    let Some(pg) = server(false) else { return };
    // 1, 2×4, 3, 4×2, 5 as timestamptz seconds past 2024-01-01, plus a NULL that is never read.
    pg.sql(
        r#"
        CREATE TABLE public.e (id int4, at timestamptz, amount numeric);
        INSERT INTO public.e
        SELECT i, timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => s), s * 1.5
        FROM (VALUES (1,1),(2,2),(3,2),(4,2),(5,2),(6,3),(7,4),(8,4),(9,5)) AS v(i, s);
        INSERT INTO public.e VALUES (10, NULL, NULL);
        "#,
    )
    .unwrap();
    let w = source(&pg);
    let at = |s: i64| {
        Value::Timestamp(
            Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s),
        )
    };
    let req = |column: &str, after: Option<Value>| ReadRequest {
        source: table("public", "e"),
        cursor: Some(CursorFilter {
            column: column.into(),
            after,
        }),
        page_size: 3,
    };
    let pages = read_all(&w, req("at", None)).await.unwrap();
    let ids = |p: &Page| -> Vec<Value> { p.batch.rows.iter().map(|r| r[0].clone()).collect() };
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0].complete_through, Some(at(1)));
    assert_eq!(pages[1].complete_through, Some(at(3)));
    assert_eq!(pages[2].complete_through, Some(at(5)));
    assert_eq!(
        ids(&pages[2]),
        vec![Value::Int(7), Value::Int(8), Value::Int(9)]
    );
    // Resuming after 1 s brings back every row at 2 s (they straddled pages 1 and 2).
    let resumed = read_all(&w, req("at", Some(at(1)))).await.unwrap();
    let n: usize = resumed.iter().map(|p| p.batch.len()).sum();
    assert_eq!(n, 8);
    assert!(read_all(&w, req("at", Some(at(5))))
        .await
        .unwrap()
        .is_empty());
    // A numeric cursor, bound as text and cast by the server.
    let resumed = read_all(&w, req("amount", Some(Value::Decimal("4.5".into()))))
        .await
        .unwrap();
    let got: Vec<_> = resumed.iter().flat_map(ids).collect();
    assert_eq!(got, vec![Value::Int(7), Value::Int(8), Value::Int(9)]);
    assert_eq!(
        resumed.last().unwrap().complete_through,
        Some(Value::Decimal("7.5".into()))
    );
    // A cursor column the table lacks.
    let err = read_all(&w, req("nope", None)).await.unwrap_err();
    assert!(matches!(err, WarehouseError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn errors_say_what_failed() {
    let Some(pg) = server(false) else { return };
    let w = source(&pg);
    let err = w.preview(&table("public", "missing"), 1).await.unwrap_err();
    assert!(
        matches!(err, WarehouseError::NotFound { ref object, .. } if object == "table"),
        "{err:?}"
    );

    let mut bad = options(&pg, SslMode::Disable);
    bad.password = Some(Secret::new("wrong"));
    let err = PostgresWarehouse::new(bad)
        .test_connection()
        .await
        .unwrap_err();
    assert!(matches!(err, WarehouseError::Authentication(_)), "{err:?}");

    let mut closed = options(&pg, SslMode::Disable);
    closed.port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = PostgresWarehouse::new(closed)
        .test_connection()
        .await
        .unwrap_err();
    assert!(matches!(err, WarehouseError::Unreachable { .. }), "{err:?}");

    let mut nodb = options(&pg, SslMode::Disable);
    nodb.database = "nope".into();
    let err = PostgresWarehouse::new(nodb)
        .test_connection()
        .await
        .unwrap_err();
    assert!(
        matches!(err, WarehouseError::NotFound { ref object, .. } if object == "database"),
        "{err:?}"
    );

    pg.admin_sql_in(
        &pg.database,
        "CREATE TABLE public.secret (x int); REVOKE ALL ON public.secret FROM PUBLIC",
    )
    .unwrap();
    let err = w.preview(&table("public", "secret"), 1).await.unwrap_err();
    assert!(matches!(err, WarehouseError::Privilege(_)), "{err:?}");
}

#[tokio::test]
async fn a_killed_session_mid_read_is_connection_lost() {
    let Some(pg) = server(false) else { return };
    pg.sql(
        "CREATE TABLE public.big AS SELECT i, repeat('x', 200) AS pad FROM generate_series(1, 300000) AS i",
    )
    .unwrap();
    let w = source(&pg);
    let req = ReadRequest {
        source: table("public", "big"),
        cursor: Some(CursorFilter {
            column: "i".into(),
            after: None,
        }),
        page_size: 100,
    };
    let (tx, mut rx) = mpsc::channel(1);
    let reader = tokio::spawn(async move { w.read(&req, tx).await });
    let first = rx.recv().await.expect("a first page");
    assert_eq!(first.batch.len(), 100);
    let killed = pg
        .admin_sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'ferry' AND backend_type = 'client backend'")
        .unwrap();
    assert_eq!(killed.trim(), "1");
    let mut rows = 100;
    while let Some(page) = rx.recv().await {
        rows += page.batch.len();
    }
    assert!(
        rows < 300_000,
        "the read should not have finished: {rows} rows"
    );
    let err = reader.await.unwrap().unwrap_err();
    assert!(matches!(err, WarehouseError::ConnectionLost(_)), "{err:?}");
}

#[tokio::test]
async fn ssl_modes() {
    let Some(plain) = server(false) else { return };
    let Some(tls) = server(true) else { return };
    let ca = tls.ca_pem.clone().unwrap();

    // disable against a server without TLS works; require against it fails as a TLS error.
    PostgresWarehouse::new(options(&plain, SslMode::Disable))
        .test_connection()
        .await
        .unwrap();
    let err = PostgresWarehouse::new(options(&plain, SslMode::Require))
        .test_connection()
        .await
        .unwrap_err();
    assert!(matches!(err, WarehouseError::Tls(_)), "{err:?}");

    // require: encrypted, certificate unchecked.
    let w = PostgresWarehouse::new(options(&tls, SslMode::Require));
    w.test_connection().await.unwrap();
    assert_eq!(ssl_in_use(&w).await, Value::Bool(true));

    // verify-ca and verify-full with the right CA (inline PEM, and a file).
    for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
        let mut o = options(&tls, mode);
        o.ca_cert = Some(CertSource::Pem(ca.clone()));
        let w = PostgresWarehouse::new(o);
        w.test_connection().await.unwrap();
        assert_eq!(ssl_in_use(&w).await, Value::Bool(true));
    }
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca).unwrap();
    let mut o = options(&tls, SslMode::VerifyFull);
    o.host = "localhost".into();
    o.ca_cert = Some(CertSource::Path(ca_path.to_str().unwrap().into()));
    PostgresWarehouse::new(o).test_connection().await.unwrap();

    // A wrong CA fails as a TLS error, in both verifying modes; so do the default roots.
    let wrong = TestCa::new("some other CA").unwrap().pem;
    for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
        let mut o = options(&tls, mode);
        o.ca_cert = Some(CertSource::Pem(wrong.clone()));
        let err = PostgresWarehouse::new(o)
            .with_connect_timeout(Duration::from_secs(5))
            .test_connection()
            .await
            .unwrap_err();
        assert!(matches!(err, WarehouseError::Tls(_)), "{mode:?}: {err:?}");
    }
    let err = PostgresWarehouse::new(options(&tls, SslMode::VerifyFull))
        .test_connection()
        .await
        .unwrap_err();
    assert!(matches!(err, WarehouseError::Tls(_)), "{err:?}");

    // disable against the TLS server still works (it accepts plain connections too).
    let w = PostgresWarehouse::new(options(&tls, SslMode::Disable));
    assert_eq!(ssl_in_use(&w).await, Value::Bool(false));
}

async fn ssl_in_use(w: &PostgresWarehouse) -> Value {
    let batch = w
        .preview(
            &ReadSource::Sql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()".into()),
            1,
        )
        .await
        .unwrap();
    batch.rows[0][0].clone()
}
