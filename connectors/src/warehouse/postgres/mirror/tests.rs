//! Golden tests: the exact SQL Mirror runs on PostgreSQL. The statements also run for real
//! against PostgreSQL in `tests/tests/mirror_postgres.rs`; these pin their text, so any change
//! to what reaches a warehouse is a reviewed change of `golden.sql`.
//! After an intended change: `FERRY_UPDATE_GOLDEN=1 cargo test -p ferry-connectors golden`.

use super::*;
use crate::warehouse::mirror::golden::{check_golden, golden_text};

#[test]
fn golden_postgres_sql() {
    check_golden(
        &golden_text(&PostgresDialect),
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/warehouse/postgres/mirror/golden.sql"
        ),
    );
}

#[test]
fn canonical_text_keeps_nulls_null_and_fixes_printing() {
    let d = PostgresDialect;
    assert_eq!(
        d.canonical_text("t.b", &ColumnKind::Bool),
        "CASE WHEN t.b THEN 't' WHEN NOT t.b THEN 'f' END"
    );
    assert!(d
        .canonical_text("t.x", &ColumnKind::Timestamp)
        .contains("AT TIME ZONE 'UTC'"));
    assert!(d.canonical_text("t.x", &ColumnKind::Json).contains("jsonb"));
    assert_eq!(d.bind_param(2), "$2::text");
    assert_eq!(d.quote_ident("a\"b"), "\"a\"\"b\"");
    let sql = crate::warehouse::mirror::MirrorSql::new(&d, "ferry_staging");
    assert_eq!(
        sql.analyze("snap_x_1_y").map(|s| s.sql),
        Some("ANALYZE \"ferry_staging\".\"snap_x_1_y\"".to_owned())
    );
}
