//! Golden-test helpers shared by the dialects: [`golden_text`] renders every kind of statement
//! Mirror runs (keyed and keyless syncs, a widened table, changed keys) with one dialect, and
//! [`check_golden`] compares it with the pinned file (or rewrites the file when
//! `FERRY_UPDATE_GOLDEN` is set, after an intended change).

use ferry_core::value::{Column, ColumnKind};

use super::{MirrorDialect, MirrorSql, SnapshotRef};
use crate::warehouse::ReadSource;

/// Every statement kind, for keyed and keyless syncs, a widened table and changed keys.
pub fn golden_text(dialect: &dyn MirrorDialect) -> String {
    let all = vec![
        Column::new("id", ColumnKind::Int),
        Column::new("Name \"x\"", ColumnKind::Text),
        Column::new("active", ColumnKind::Bool),
        Column::new("score", ColumnKind::Float),
        Column::new("price", ColumnKind::Decimal),
        Column::new("seen_at", ColumnKind::Timestamp),
        Column::new("local_at", ColumnKind::TimestampNaive),
        Column::new("born", ColumnKind::Date),
        Column::new("props", ColumnKind::Json),
        Column::new("tags", ColumnKind::Array),
        Column::new("blob", ColumnKind::Bytes),
        Column::new("uid", ColumnKind::Uuid),
        Column::new("span", ColumnKind::Other("interval".into())),
    ];
    let narrow = &all[..3];
    let key = vec!["id".to_string()];
    let no_key: Vec<String> = Vec::new();
    let sql = MirrorSql::new(dialect, "ferry_staging");
    let keyed_new = SnapshotRef {
        name: "snap_0123456789ab_2",
        columns: &all,
        identity: &key,
    };
    let keyed_old = SnapshotRef {
        name: "snap_0123456789ab_1",
        columns: narrow,
        identity: &key,
    };
    let keyless_new = SnapshotRef {
        name: "snap_0123456789ab_2",
        columns: narrow,
        identity: &no_key,
    };
    let keyless_old = SnapshotRef {
        name: "snap_0123456789ab_1",
        columns: narrow,
        identity: &no_key,
    };
    let table = ReadSource::Table {
        schema: Some("public".into()),
        name: "users".into(),
    };
    let query = ReadSource::Sql("SELECT id, \"Name \"\"x\"\"\", active FROM users;".into());
    let changes = "chg_0123456789ab_2";
    let mut out = String::new();
    let mut put = |name: &str, text: String| {
        out.push_str(&format!("-- {name}\n{text};\n\n"));
    };
    put(
        "schema_exists",
        format!(
            "{} -- params {:?}",
            sql.schema_exists(),
            sql.schema_exists().params
        ),
    );
    put("create_schema", sql.create_schema().sql);
    put(
        "list_tables",
        format!(
            "{} -- params {:?}",
            sql.list_tables(),
            sql.list_tables().params
        ),
    );
    put("drop_table", sql.drop_table(changes).sql);
    put(
        "snapshot keyed, every kind",
        sql.snapshot(&table, &keyed_new).unwrap().sql,
    );
    put(
        "snapshot keyless, from SQL",
        sql.snapshot(&query, &keyless_new).unwrap().sql,
    );
    put(
        "diff first generation",
        sql.diff(&keyed_new, None, changes).sql,
    );
    put(
        "diff keyed, column added",
        sql.diff(&keyed_new, Some(&keyed_old), changes).sql,
    );
    put(
        "diff keyless",
        sql.diff(&keyless_new, Some(&keyless_old), changes).sql,
    );
    put(
        "diff keys changed from none to id",
        sql.diff(&keyed_new, Some(&keyless_old), changes).sql,
    );
    put("change_counts", sql.change_counts(changes).sql);
    put("shared_identities", sql.shared_identities(changes).sql);
    put(
        "shared_identity_samples",
        sql.shared_identity_samples(&keyed_new, changes, 5).sql,
    );
    put(
        "read_changes keyed, old narrower",
        sql.read_changes(&keyed_new, Some(&keyed_old), changes, false),
    );
    put(
        "read_changes keyless, deduplicated",
        sql.read_changes(&keyless_new, Some(&keyless_old), changes, true),
    );
    put(
        "read_changes first generation",
        sql.read_changes(&keyed_new, None, changes, false),
    );
    put("read_snapshot", sql.read_snapshot(&keyless_new));
    out
}

/// Fails unless `text` equals the file at `path`.
pub fn check_golden(text: &str, path: &str) {
    if std::env::var_os("FERRY_UPDATE_GOLDEN").is_some() {
        std::fs::write(path, text).unwrap();
    }
    let pinned = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        pinned == text,
        "the generated SQL differs from {path} (FERRY_UPDATE_GOLDEN=1 rewrites it after an intended change):\n{text}"
    );
}
