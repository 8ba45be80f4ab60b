//! The SQLite source against real database files.
#![cfg(feature = "warehouse-sqlite")]

use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
use ferry_connectors::warehouse::sqlite::SqliteWarehouse;
use ferry_connectors::warehouse::{
    CursorFilter, Page, ReadRequest, ReadSource, TableInfo, Warehouse, WarehouseError,
};
use ferry_core::value::{ColumnKind, Value};
use serde_json::json;
use tokio::sync::mpsc;

fn db(setup: &str) -> (tempfile::TempDir, SqliteWarehouse) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(setup).unwrap();
    (dir, SqliteWarehouse::open(path))
}

fn table(name: &str) -> ReadSource {
    ReadSource::Table {
        schema: None,
        name: name.into(),
    }
}

async fn read_all(w: &SqliteWarehouse, req: ReadRequest, bound: usize) -> Vec<Page> {
    let (tx, mut rx) = mpsc::channel(bound);
    let reader = {
        let w = w.clone();
        tokio::spawn(async move { w.read(&req, tx).await })
    };
    let mut pages = Vec::new();
    while let Some(p) = rx.recv().await {
        pages.push(p);
    }
    let summary = reader.await.unwrap().unwrap();
    assert_eq!(summary.pages, pages.len() as u64);
    assert_eq!(
        summary.rows,
        pages.iter().map(|p| p.batch.len() as u64).sum::<u64>()
    );
    pages
}

#[tokio::test]
async fn types_map_from_declared_types() {
    let (_d, w) = db(r#"
        CREATE TABLE t (
            i INTEGER, r REAL, s TEXT, b BLOB, n DECIMAL(10,2), f BOOLEAN, d DATE,
            ts DATETIME, tz TIMESTAMPTZ, j JSON, u UUID, x
        );
        INSERT INTO t VALUES (42, 1.5, 'héllo', x'00ff', '12.50', 1, '2024-02-29',
            '2024-01-02 03:04:05.123', '2024-01-02T05:04:05+02:00', '{"a":[1,2]}',
            '01234567-89ab-cdef-0123-456789abcdef', 7);
        INSERT INTO t VALUES (NULL, 2, 'x', NULL, 3, 'false', 'not a date', 1700000000,
            '2024-01-02 03:04:05', '{bad', 'nope', 'any');
    "#);
    let cols = w.columns(&table("t")).await.unwrap();
    let kinds: Vec<_> = cols
        .iter()
        .map(|c| (c.name.as_str(), c.kind.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("i", ColumnKind::Int),
            ("r", ColumnKind::Float),
            ("s", ColumnKind::Text),
            ("b", ColumnKind::Bytes),
            ("n", ColumnKind::Decimal),
            ("f", ColumnKind::Bool),
            ("d", ColumnKind::Date),
            ("ts", ColumnKind::TimestampNaive),
            ("tz", ColumnKind::Timestamp),
            ("j", ColumnKind::Json),
            ("u", ColumnKind::Uuid),
            ("x", ColumnKind::Other("any".into())),
        ]
    );
    let batch = w.preview(&table("t"), 10).await.unwrap();
    assert_eq!(batch.len(), 2);
    let t =
        NaiveDateTime::parse_from_str("2024-01-02 03:04:05.123", "%Y-%m-%d %H:%M:%S%.f").unwrap();
    assert_eq!(
        batch.rows[0],
        vec![
            Value::Int(42),
            Value::Float(1.5),
            Value::Text("héllo".into()),
            Value::Bytes(vec![0, 255]),
            // NUMERIC affinity stores '12.50' as the real 12.5.
            Value::Decimal("12.5".into()),
            Value::Bool(true),
            Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
            Value::TimestampNaive(t),
            Value::Timestamp(Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap()),
            Value::Json(json!({"a": [1, 2]})),
            Value::Uuid(uuid::Uuid::from_u128(
                0x0123_4567_89ab_cdef_0123_4567_89ab_cdef
            )),
            Value::Int(7),
        ]
    );
    // Cells that do not fit their column's type are read as stored, never guessed at.
    assert_eq!(
        batch.rows[1],
        vec![
            Value::Null,
            Value::Float(2.0),
            Value::Text("x".into()),
            Value::Null,
            Value::Decimal("3".into()),
            Value::Bool(false),
            Value::Text("not a date".into()),
            Value::Int(1_700_000_000),
            Value::Timestamp(Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap()),
            Value::Text("{bad".into()),
            Value::Text("nope".into()),
            Value::Text("any".into()),
        ]
    );
}

#[tokio::test]
async fn lists_tables_and_views_columns_and_previews() {
    let (_d, w) = db(r#"
        CREATE TABLE "we""ird" (id INTEGER PRIMARY KEY AUTOINCREMENT, "se""lect" TEXT);
        INSERT INTO "we""ird" ("se""lect") VALUES ('a'), ('b'), ('c');
        CREATE VIEW v AS SELECT id, "se""lect" AS label FROM "we""ird" WHERE id > 1;
    "#);
    w.test_connection().await.unwrap();
    let tables = w.list_tables().await.unwrap();
    assert_eq!(
        tables,
        vec![
            TableInfo {
                schema: None,
                name: "v".into(),
                kind: "view".into()
            },
            TableInfo {
                schema: None,
                name: "we\"ird".into(),
                kind: "table".into()
            },
        ]
    );
    let cols = w.columns(&table("v")).await.unwrap();
    assert_eq!(cols[0].name, "id");
    assert_eq!(cols[0].kind, ColumnKind::Int);
    assert_eq!(cols[1].name, "label");
    assert_eq!(cols[1].kind, ColumnKind::Text);
    let batch = w.preview(&table("we\"ird"), 2).await.unwrap();
    assert_eq!(batch.columns[1].name, "se\"lect");
    assert_eq!(
        batch.rows,
        vec![
            vec![Value::Int(1), Value::Text("a".into())],
            vec![Value::Int(2), Value::Text("b".into())],
        ]
    );
    let sql = ReadSource::Sql("SELECT label, id * 10 AS ten FROM v ORDER BY id DESC;".into());
    let batch = w.preview(&sql, 10).await.unwrap();
    assert_eq!(batch.columns[1].kind, ColumnKind::Other("any".into()));
    assert_eq!(batch.rows[0], vec![Value::Text("c".into()), Value::Int(30)]);
    assert_eq!(batch.len(), 2);
}

#[tokio::test]
async fn errors_say_what_is_missing() {
    let (_d, w) = db("CREATE TABLE t (a INTEGER);");
    let err = w.preview(&table("nope"), 1).await.unwrap_err();
    assert!(matches!(err, WarehouseError::NotFound { .. }), "{err:?}");
    let req = ReadRequest {
        source: table("t"),
        cursor: Some(CursorFilter {
            column: "missing".into(),
            after: None,
        }),
        page_size: 10,
    };
    let (tx, _rx) = mpsc::channel(1);
    let err = w.read(&req, tx).await.unwrap_err();
    assert!(matches!(err, WarehouseError::NotFound { .. }), "{err:?}");
    let gone = SqliteWarehouse::open("/nonexistent/dir/w.db");
    let err = gone.test_connection().await.unwrap_err();
    assert!(matches!(err, WarehouseError::Unreachable { .. }), "{err:?}");
}

/// Ties on the cursor across page boundaries: a page only commits a value whose rows are all
/// sent, and resuming from any page's `complete_through` reads every row not yet committed.
#[tokio::test]
async fn cursor_reads_hold_back_ties_across_pages() {
    // t: 1, 2×4, 3, 4×2, 5, NULL (never read).
    let (_d, w) = db(r#"
        CREATE TABLE e (id INTEGER, t INTEGER);
        INSERT INTO e VALUES (1,1),(2,2),(3,2),(4,2),(5,2),(6,3),(7,4),(8,4),(9,5),(10,NULL);
    "#);
    let req = |after: Option<Value>| ReadRequest {
        source: table("e"),
        cursor: Some(CursorFilter {
            column: "t".into(),
            after,
        }),
        page_size: 3,
    };
    let pages = read_all(&w, req(None), 1).await;
    let cursor_of = |p: &Page| -> Vec<i64> {
        p.batch
            .rows
            .iter()
            .map(|r| match r[1] {
                Value::Int(i) => i,
                _ => panic!(),
            })
            .collect()
    };
    let got: Vec<_> = pages
        .iter()
        .map(|p| (cursor_of(p), p.complete_through.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (vec![1, 2, 2], Some(Value::Int(1))),
            (vec![2, 2, 3], Some(Value::Int(3))),
            (vec![4, 4, 5], Some(Value::Int(5))),
        ]
    );
    // Resume after the first page's safe point: all the 2s come again, nothing is lost.
    let resumed = read_all(&w, req(Some(Value::Int(1))), 1).await;
    let ts: Vec<i64> = resumed.iter().flat_map(&cursor_of).collect();
    assert_eq!(ts, vec![2, 2, 2, 2, 3, 4, 4, 5]);
    assert_eq!(
        resumed.last().unwrap().complete_through,
        Some(Value::Int(5))
    );
    // Nothing after the end.
    assert!(read_all(&w, req(Some(Value::Int(5))), 1).await.is_empty());
}

#[tokio::test]
async fn timestamp_cursors_compare_as_sqlite_stores_them() {
    let (_d, w) = db(r#"
        CREATE TABLE e (id INTEGER, at DATETIME);
        INSERT INTO e VALUES (1, '2024-01-01 00:00:00'), (2, '2024-01-01 00:00:00.500'),
                             (3, '2024-01-02 10:00:00');
    "#);
    let after = Value::TimestampNaive(
        NaiveDateTime::parse_from_str("2024-01-01 00:00:00", "%Y-%m-%d %H:%M:%S").unwrap(),
    );
    let req = ReadRequest {
        source: table("e"),
        cursor: Some(CursorFilter {
            column: "at".into(),
            after: Some(after),
        }),
        page_size: 10,
    };
    let pages = read_all(&w, req, 1).await;
    let ids: Vec<_> = pages[0].batch.rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids, vec![Value::Int(2), Value::Int(3)]);
}

/// 100k rows through a channel of 2 pages to a slow consumer: the reader waits for room (the
/// bounded channel is the only buffer) and every row arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_reads_stream_through_a_small_channel() {
    let (_d, w) = db(r#"
        CREATE TABLE big (id INTEGER PRIMARY KEY, payload TEXT);
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
        INSERT INTO big SELECT i, printf('row-%d', i) FROM n;
    "#);
    let req = ReadRequest {
        source: table("big"),
        cursor: Some(CursorFilter {
            column: "id".into(),
            after: None,
        }),
        page_size: 1000,
    };
    const BOUND: usize = 2;
    let (tx, mut rx) = mpsc::channel(BOUND);
    let reader = {
        let w = w.clone();
        tokio::spawn(async move { w.read(&req, tx).await })
    };
    let mut next = 1i64;
    let mut pages = 0;
    while let Some(page) = rx.recv().await {
        assert!(rx.len() <= BOUND);
        assert_eq!(page.batch.len(), 1000);
        for row in &page.batch.rows {
            assert_eq!(row[0], Value::Int(next));
            next += 1;
        }
        assert_eq!(page.complete_through, Some(Value::Int(next - 1)));
        pages += 1;
        if pages % 10 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    assert_eq!(next, 100_001);
    let summary = reader.await.unwrap().unwrap();
    assert_eq!((summary.rows, summary.pages), (100_000, 100));
}

/// A consumer that goes away stops the reader.
#[tokio::test]
async fn a_closed_channel_stops_the_read() {
    let (_d, w) = db(r#"
        CREATE TABLE big (id INTEGER PRIMARY KEY);
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
        INSERT INTO big SELECT i FROM n;
    "#);
    let req = ReadRequest {
        source: table("big"),
        cursor: None,
        page_size: 100,
    };
    let (tx, mut rx) = mpsc::channel(1);
    let reader = tokio::spawn(async move { w.read(&req, tx).await });
    assert_eq!(rx.recv().await.unwrap().batch.len(), 100);
    drop(rx);
    let err = reader.await.unwrap().unwrap_err();
    assert!(matches!(err, WarehouseError::Stopped), "{err:?}");
}
