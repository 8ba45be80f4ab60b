//! Golden tests: the exact SQL Mirror runs on Redshift. The statements also run for real
//! against the Redshift Data API stand-in in `tests/tests/redshift_mirror.rs`; these pin their
//! text, so any change to what reaches Redshift is a reviewed change of `golden.sql`.
//! After an intended change: `FERRY_UPDATE_GOLDEN=1 cargo test -p ferry-connectors golden`.

use super::*;
use crate::warehouse::mirror::golden::{check_golden, golden_text};

#[test]
fn golden_redshift_sql() {
    check_golden(
        &golden_text(&RedshiftDialect),
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/warehouse/redshift/mirror/golden.sql"
        ),
    );
}

#[test]
fn the_sql_stays_inside_redshifts_dialect() {
    let text = golden_text(&RedshiftDialect);
    // Redshift has no IS DISTINCT FROM, a two-argument CONCAT only, no bool-to-varchar cast,
    // and no PostgreSQL-only casts or parameter markers.
    for refused in [
        "IS DISTINCT FROM",
        "CONCAT(",
        "concat_ws",
        "::",
        "$1",
        "AS text)",
        "jsonb",
    ] {
        assert!(!text.contains(refused), "{refused} in:\n{text}");
    }
    // A bare VARCHAR in a cast is VARCHAR(256) on Redshift and would cut long values.
    assert!(!text.contains("AS VARCHAR)"), "{text}");
    assert!(text.contains("JSON_SERIALIZE(src.\"props\")"), "{text}");
    assert!(
        text.contains("DISTKEY(\"_mp_key_hash\") SORTKEY(\"_mp_key_hash\")"),
        "{text}"
    );
    assert!(
        text.contains("DISTKEY(\"_mp_row_hash\") SORTKEY(\"_mp_row_hash\")"),
        "{text}"
    );
}

#[test]
fn canonical_text_keeps_nulls_null() {
    let d = RedshiftDialect;
    assert_eq!(
        d.canonical_text("t.b", &ColumnKind::Bool),
        "CASE WHEN t.b THEN 't' WHEN NOT t.b THEN 'f' END"
    );
    assert_eq!(
        d.canonical_text("t.x", &ColumnKind::Timestamp),
        "CAST((t.x AT TIME ZONE 'UTC') AS VARCHAR(65535))"
    );
    assert_eq!(d.bind_param(2), ":p2");
    assert_eq!(d.quote_ident("a\"b"), "\"a\"\"b\"");
    assert_eq!(
        parameters(&Statement::with_params("x", vec!["a".into(), "b".into()])),
        vec![
            ("p1".to_string(), "a".to_string()),
            ("p2".to_string(), "b".to_string())
        ]
    );
}
