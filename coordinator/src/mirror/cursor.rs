//! What a Mirror sync remembers between runs, stored as its cursor (JSON) through the fenced
//! state-store write: the acknowledged snapshot (`current`) and, while a generation is being
//! sent, the next one (`pending`) with how far its changes were acknowledged.
//!
//! Only objects the cursor names are ever kept; anything else of the sync in the staging schema
//! is a leftover of a run that died before committing it, and is dropped.

use ferry_core::value::{Column, Value};
use serde::{Deserialize, Serialize};

use super::MirrorError;

/// The cursor's format; a cursor of another format (e.g. an Append cursor after the sync's
/// mode changed) is not Mirror state, and the sync starts over with a full first generation.
const FORMAT: &str = "ferry-mirror-1";

/// One snapshot of the source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Increases by one per generation; part of the snapshot's name.
    pub number: u64,
    /// The snapshot table in the staging schema.
    pub snapshot: String,
    /// The source's columns when the snapshot was taken (the hash columns not included).
    pub columns: Vec<Column>,
    /// The columns that identified a row (empty: the whole row).
    pub identity: Vec<String>,
}

/// How many changes a diff found, by type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeCounts {
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
}

impl ChangeCounts {
    pub fn total(&self) -> u64 {
        self.inserts + self.updates + self.deletes
    }
}

/// A generation whose changes are being sent. Its changes table numbers the changes
/// 1..=total; every change up to `sent_through` was acknowledged by the destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub generation: Generation,
    /// The changes table (the diff against `current`).
    pub changes: String,
    pub counts: ChangeCounts,
    /// Identities shared by several rows (one row of each was used): the change read must
    /// pick one of several identical rows.
    pub dedupe: bool,
    pub sent_through: i64,
}

/// A Mirror sync's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MirrorCursor {
    /// The snapshot every acknowledged change is measured against.
    pub current: Option<Generation>,
    pub pending: Option<Pending>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    format: String,
    #[serde(flatten)]
    cursor: MirrorCursor,
}

impl MirrorCursor {
    /// Reads a stored cursor. `Ok(None)`: the stored value is not Mirror state.
    pub fn from_value(value: &Value) -> Result<Option<Self>, MirrorError> {
        let Value::Json(json) = value else {
            return Ok(None);
        };
        if json.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Ok(None);
        }
        serde_json::from_value::<Stored>(json.clone())
            .map(|s| Some(s.cursor))
            .map_err(|e| MirrorError::Cursor(e.to_string()))
    }

    pub fn to_value(&self) -> Value {
        let stored = Stored {
            format: FORMAT.into(),
            cursor: self.clone(),
        };
        // Serializing plain data into a JSON value cannot fail.
        Value::Json(serde_json::to_value(stored).unwrap_or_default())
    }

    /// The next generation's number.
    pub fn next_number(&self) -> u64 {
        let current = self.current.as_ref().map_or(0, |g| g.number);
        let pending = self.pending.as_ref().map_or(0, |p| p.generation.number);
        current.max(pending) + 1
    }

    /// The staging tables this state refers to (all others of the sync are leftovers).
    pub fn referenced(&self) -> Vec<&str> {
        let mut names = Vec::new();
        if let Some(g) = &self.current {
            names.push(g.snapshot.as_str());
        }
        if let Some(p) = &self.pending {
            names.push(p.generation.snapshot.as_str());
            names.push(p.changes.as_str());
        }
        names
    }

    /// The state once `pending` was fully acknowledged: it becomes the current snapshot.
    pub fn rotated(&self) -> Self {
        Self {
            current: self
                .pending
                .as_ref()
                .map(|p| p.generation.clone())
                .or_else(|| self.current.clone()),
            pending: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::value::ColumnKind;

    fn generation(n: u64) -> Generation {
        Generation {
            number: n,
            snapshot: format!("snap_0123456789ab_{n}"),
            columns: vec![Column::new("id", ColumnKind::Int)],
            identity: vec!["id".into()],
        }
    }

    #[test]
    fn round_trips_and_ignores_foreign_cursors() {
        let cursor = MirrorCursor {
            current: Some(generation(3)),
            pending: Some(Pending {
                generation: generation(4),
                changes: "chg_0123456789ab_4".into(),
                counts: ChangeCounts {
                    inserts: 2,
                    updates: 1,
                    deletes: 5,
                },
                dedupe: false,
                sent_through: 6,
            }),
        };
        let back = MirrorCursor::from_value(&cursor.to_value()).unwrap();
        assert_eq!(back, Some(cursor.clone()));
        // An Append cursor, or JSON of another format, is not Mirror state.
        assert_eq!(MirrorCursor::from_value(&Value::Int(7)).unwrap(), None);
        let other = Value::Json(serde_json::json!({"format": "x"}));
        assert_eq!(MirrorCursor::from_value(&other).unwrap(), None);
        // Mirror state that does not parse is an error, not a silent restart.
        let broken = Value::Json(serde_json::json!({"format": FORMAT, "current": 5}));
        assert!(MirrorCursor::from_value(&broken).is_err());

        assert_eq!(cursor.next_number(), 5);
        assert_eq!(
            cursor.referenced(),
            vec![
                "snap_0123456789ab_3",
                "snap_0123456789ab_4",
                "chg_0123456789ab_4"
            ]
        );
        let rotated = cursor.rotated();
        assert_eq!(rotated.current, Some(generation(4)));
        assert_eq!(rotated.pending, None);
        assert_eq!(rotated.referenced(), vec!["snap_0123456789ab_4"]);
        assert_eq!(MirrorCursor::default().next_number(), 1);
        assert_eq!(MirrorCursor::default().rotated(), MirrorCursor::default());
    }
}
