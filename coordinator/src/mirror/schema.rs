//! What identifies a row in Mirror's diff, and how the source's columns may change between
//! two runs without the user's say.

use ferry_core::spec::{EventName, Mapping, Target};
use ferry_core::value::Column;

/// The columns that identify a row in the diff (empty: the whole row).
///
/// - Events with key columns: the keys plus every column of the event's dedup key (time,
///   distinct id, user id, device id, a name column). Mixpanel deduplicates on (event, distinct
///   id, time, `$insert_id`), so a row whose time or id changed is a different event: the diff
///   sees a delete of the old one and an insert of the new one, instead of an update that
///   would leave the old event in place.
/// - Events without keys: the whole row (identical rows collapse; an update is a delete plus
///   an insert, as the sync's validation warns).
/// - Everything else: the mapping's key columns (by default the profile id, the history id and
///   start time, or the lookup key; see `SyncSpec::validate`).
pub fn identity_columns(mapping: &Mapping) -> Vec<String> {
    let mut columns = mapping.key_columns.clone();
    if let Target::Events {
        event_name,
        time,
        distinct_id_column,
        user_id_column,
        device_id_column,
    } = &mapping.target
    {
        if columns.is_empty() {
            return columns;
        }
        let name = match event_name {
            EventName::Column(c) => Some(c),
            EventName::Static(_) => None,
        };
        for c in [
            Some(&time.column),
            distinct_id_column.as_ref(),
            user_id_column.as_ref(),
            device_id_column.as_ref(),
            name,
        ]
        .into_iter()
        .flatten()
        {
            if !columns.contains(c) {
                columns.push(c.clone());
            }
        }
    }
    columns
}

/// How the source's columns compare with the previous snapshot's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaChange {
    Same,
    /// Columns added after the existing ones: existing rows keep their checksums (a NULL
    /// there adds nothing to it), so nothing is re-sent for them.
    Added(Vec<String>),
    /// Anything else; the message says what changed.
    Incompatible(String),
}

/// Compares the previous snapshot's columns and identity with the source's.
pub fn compare(
    old: &[Column],
    old_identity: &[String],
    new: &[Column],
    new_identity: &[String],
) -> SchemaChange {
    let mut problems = Vec::new();
    let dropped: Vec<&str> = old
        .iter()
        .filter(|o| !new.iter().any(|n| n.name == o.name))
        .map(|o| o.name.as_str())
        .collect();
    if !dropped.is_empty() {
        problems.push(format!("dropped or renamed: {}", dropped.join(", ")));
    }
    let retyped: Vec<String> = old
        .iter()
        .filter_map(|o| {
            let n = new.iter().find(|n| n.name == o.name)?;
            (n.kind != o.kind)
                .then(|| format!("{} ({} → {})", o.name, o.kind.name(), n.kind.name()))
        })
        .collect();
    if !retyped.is_empty() {
        problems.push(format!("type changed: {}", retyped.join(", ")));
    }
    // The surviving old columns must still come first, in their old order.
    let kept_in_place =
        old.len() <= new.len() && old.iter().zip(new.iter()).all(|(o, n)| o.name == n.name);
    if dropped.is_empty() && !kept_in_place {
        let inserted: Vec<&str> = new[..old.len().min(new.len())]
            .iter()
            .filter(|n| !old.iter().any(|o| o.name == n.name))
            .map(|n| n.name.as_str())
            .collect();
        if inserted.is_empty() {
            problems.push("columns were reordered".into());
        } else {
            problems.push(format!(
                "added before existing columns: {}",
                inserted.join(", ")
            ));
        }
    }
    if old_identity != new_identity {
        let show = |cols: &[String]| {
            if cols.is_empty() {
                "the whole row".to_owned()
            } else {
                cols.join(", ")
            }
        };
        problems.push(format!(
            "rows were identified by {} and now by {}",
            show(old_identity),
            show(new_identity)
        ));
    }
    if !problems.is_empty() {
        return SchemaChange::Incompatible(problems.join("; "));
    }
    if new.len() > old.len() {
        SchemaChange::Added(new[old.len()..].iter().map(|c| c.name.clone()).collect())
    } else {
        SchemaChange::Same
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::spec::SyncSpec;
    use ferry_core::value::ColumnKind;

    fn cols(spec: &[(&str, ColumnKind)]) -> Vec<Column> {
        spec.iter()
            .map(|(n, k)| Column::new(*n, k.clone()))
            .collect()
    }

    #[test]
    fn appended_columns_are_compatible_everything_else_is_reported() {
        use ColumnKind::*;
        let id = vec!["id".to_string()];
        let old = cols(&[("id", Int), ("name", Text)]);
        assert_eq!(compare(&old, &id, &old, &id), SchemaChange::Same);
        let added = cols(&[("id", Int), ("name", Text), ("plan", Text)]);
        assert_eq!(
            compare(&old, &id, &added, &id),
            SchemaChange::Added(vec!["plan".into()])
        );
        let cases = [
            (cols(&[("id", Int)]), "dropped or renamed: name"),
            (
                cols(&[("id", Int), ("label", Text)]),
                "dropped or renamed: name",
            ),
            (
                cols(&[("id", Int), ("name", Int)]),
                "type changed: name (text → integer)",
            ),
            (
                cols(&[("name", Text), ("id", Int)]),
                "columns were reordered",
            ),
            (
                cols(&[("id", Int), ("plan", Text), ("name", Text)]),
                "added before existing columns: plan",
            ),
        ];
        for (new, message) in cases {
            match compare(&old, &id, &new, &id) {
                SchemaChange::Incompatible(m) => assert!(m.contains(message), "{m}"),
                other => panic!("{message}: {other:?}"),
            }
        }
        match compare(&old, &[], &old, &id) {
            SchemaChange::Incompatible(m) => {
                assert!(
                    m.contains("identified by the whole row and now by id"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    fn mapping(table_type: &str, mapping: serde_json::Value) -> Mapping {
        let spec: SyncSpec = serde_json::from_value(serde_json::json!({
            "id": "s", "tenant": "t", "source": "p", "table": "x",
            "table_type": table_type, "mode": "mirror", "mapping": mapping,
        }))
        .unwrap();
        spec.validate().unwrap().mapping
    }

    #[test]
    fn event_identity_covers_the_dedup_key() {
        use serde_json::json;
        let keyed = mapping(
            "events",
            json!({"time_column": "ts", "distinct_id_column": "uid",
                   "event_name_column": "name", "key_columns": ["id"]}),
        );
        assert_eq!(identity_columns(&keyed), vec!["id", "ts", "uid", "name"]);
        let keyless = mapping(
            "events",
            json!({"time_column": "ts", "distinct_id_column": "uid", "event_name": "E"}),
        );
        assert!(identity_columns(&keyless).is_empty());
        let users = mapping("user_profiles", json!({"distinct_id_column": "uid"}));
        assert_eq!(identity_columns(&users), vec!["uid"]);
    }
}
