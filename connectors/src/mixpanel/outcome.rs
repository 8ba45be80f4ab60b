//! What happened to a batch, record by record, and how strict-mode answers are read.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::batch::Batch;
use super::error::RetryReason;

/// One record the destination refused. The record is not retried: it goes to the run's
/// per-row error log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordFailure {
    /// Position of the record in the [`Batch`] that was sent.
    pub index_in_batch: usize,
    /// The event's `$insert_id`: as the server reported it, else the batch record's key.
    pub insert_id: Option<String>,
    /// Profile endpoints: the update's `$distinct_id` as the server reported it, else the
    /// batch record's key (for `/groups`, whatever key the caller gave, e.g. the group id).
    pub distinct_id: Option<String>,
    /// Mixpanel's dotted field name (`properties.time`); empty when the server gave none.
    pub field: String,
    pub message: String,
}

/// The result of sending one batch: every record of the batch is either accepted or listed in
/// `failed` (or, rarely, counted in `unattributed_failures`), exactly once, however many
/// attempts it took.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchOutcome {
    /// Records in the batch.
    pub records: usize,
    /// Records the destination took (stored, or for deletes: processed).
    pub accepted: usize,
    /// Refused records, in batch order, each index once.
    pub failed: Vec<RecordFailure>,
    /// `failed_records` entries the client could not tie to a record (an entry that is a plain
    /// string naming no record key, or an index out of range). Each still counts as one
    /// record not accepted; see `accepted_indices`.
    pub unattributed_failures: Vec<String>,
    /// HTTP requests made, including retries and the halves of a batch split after a 413.
    pub attempts: u32,
    /// Why each retried attempt was retried, in order.
    pub retried_reasons: Vec<RetryReason>,
}

impl BatchOutcome {
    /// The indices of accepted records: every index not in `failed`. When
    /// `unattributed_failures` is not empty, the destination did not say which records those
    /// were, so this over-reports by that many; re-sending such a batch later is harmless
    /// (`$insert_id` deduplicates), and the caller should log the unattributed entries.
    pub fn accepted_indices(&self) -> impl Iterator<Item = usize> + '_ {
        let mut failed: Vec<usize> = self.failed.iter().map(|f| f.index_in_batch).collect();
        failed.sort_unstable();
        (0..self.records).filter(move |i| failed.binary_search(i).is_err())
    }

    /// Folds in the outcome of the second half of a split batch, whose indices start at
    /// `offset`.
    pub(crate) fn absorb(&mut self, other: BatchOutcome, offset: usize) {
        self.records += other.records;
        self.accepted += other.accepted;
        self.failed
            .extend(other.failed.into_iter().map(|f| RecordFailure {
                index_in_batch: f.index_in_batch + offset,
                ..f
            }));
        self.unattributed_failures
            .extend(other.unattributed_failures);
        self.attempts += other.attempts;
        self.retried_reasons.extend(other.retried_reasons);
    }
}

/// The strict-mode reply of `/import`, `/engage`, `/groups` and the receiver's delete.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StrictReply {
    #[serde(default)]
    pub num_records_imported: Option<u64>,
    #[serde(default)]
    pub num_records_deleted: Option<u64>,
    #[serde(default)]
    pub num_records_not_found: Option<u64>,
    #[serde(default)]
    pub failed_records: Option<Vec<FailedEntry>>,
    #[serde(default)]
    pub error: Option<String>,
}

/// A `failed_records` entry: normally an object, but plain strings have been seen.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum FailedEntry {
    Detailed {
        #[serde(default)]
        index: Option<usize>,
        #[serde(default)]
        insert_id: Option<String>,
        #[serde(default, rename = "$distinct_id")]
        distinct_id: Option<String>,
        #[serde(default)]
        field: Option<String>,
        #[serde(default)]
        message: Option<String>,
    },
    Text(String),
    Other(Value),
}

impl StrictReply {
    /// Reads a body leniently: an unreadable body is an empty reply, so the status decides.
    pub(crate) fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }
}

/// Which key a batch record's `key` is, for filling in failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    InsertId,
    DistinctId,
}

/// Ties `failed_records` entries to batch records. Returns the failures (sorted by index, each
/// index once) and the entries that name no record.
pub(crate) fn attribute_failures(
    batch: &Batch,
    entries: Vec<FailedEntry>,
    key_kind: KeyKind,
) -> (Vec<RecordFailure>, Vec<String>) {
    let records = batch.records();
    let mut seen = vec![false; records.len()];
    let mut failed = Vec::new();
    let mut unattributed = Vec::new();
    let find_by_key = |key: &str| records.iter().position(|r| r.key.as_deref() == Some(key));
    for entry in entries {
        let (index, insert_id, distinct_id, field, message) = match entry {
            FailedEntry::Detailed {
                index,
                insert_id,
                distinct_id,
                field,
                message,
            } => {
                let index = index.filter(|i| *i < records.len()).or_else(|| {
                    insert_id
                        .as_deref()
                        .or(distinct_id.as_deref())
                        .and_then(find_by_key)
                });
                (
                    index,
                    insert_id,
                    distinct_id,
                    field.unwrap_or_default(),
                    message.unwrap_or_default(),
                )
            }
            FailedEntry::Text(text) => {
                // A bare string is most likely the record's key, or a message quoting it.
                let index = find_by_key(&text).or_else(|| {
                    records.iter().position(|r| {
                        r.key
                            .as_deref()
                            .is_some_and(|k| !k.is_empty() && text.contains(k))
                    })
                });
                (index, None, None, String::new(), text)
            }
            FailedEntry::Other(value) => (None, None, None, String::new(), value.to_string()),
        };
        match index {
            Some(i) if !seen[i] => {
                seen[i] = true;
                let key = records[i].key.clone();
                let (insert_id, distinct_id) = match key_kind {
                    KeyKind::InsertId => (insert_id.or(key), distinct_id),
                    KeyKind::DistinctId => (insert_id, distinct_id.or(key)),
                };
                failed.push(RecordFailure {
                    index_in_batch: i,
                    insert_id,
                    distinct_id,
                    field,
                    message,
                });
            }
            // The same record listed twice is one failure.
            Some(_) => {}
            None => unattributed.push(if field.is_empty() {
                message
            } else {
                format!("{field}: {message}")
            }),
        }
    }
    failed.sort_by_key(|f| f.index_in_batch);
    // More unattributed entries than records left would double-count.
    unattributed.truncate(records.len() - failed.len());
    (failed, unattributed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mixpanel::batch::BatchRecord;
    use bytes::Bytes;

    fn batch(keys: &[&str]) -> Batch {
        Batch::from_records(
            keys.iter()
                .map(|k| BatchRecord {
                    json: Bytes::from_static(b"{}"),
                    key: Some(k.to_string()),
                })
                .collect(),
        )
    }

    #[test]
    fn objects_and_plain_strings_are_both_attributed() {
        let reply = StrictReply::parse(
            br#"{"code":400,"num_records_imported":1,"failed_records":[
                {"index":2,"field":"properties.time","message":"too old"},
                "id-b",
                {"index":2,"insert_id":"id-c","field":"x","message":"dup"},
                "something unknown",
                {"index":99,"message":"out of range"},
                7
            ]}"#,
        );
        let (failed, unattributed) = attribute_failures(
            &batch(&["id-a", "id-b", "id-c", "id-d", "id-e", "id-f"]),
            reply.failed_records.unwrap(),
            KeyKind::InsertId,
        );
        assert_eq!(failed.len(), 2);
        assert_eq!(failed[0].index_in_batch, 1);
        assert_eq!(failed[0].insert_id.as_deref(), Some("id-b"));
        assert_eq!(failed[1].index_in_batch, 2);
        assert_eq!(failed[1].insert_id.as_deref(), Some("id-c"));
        assert_eq!(failed[1].field, "properties.time");
        assert_eq!(
            unattributed,
            vec![
                "something unknown".to_string(),
                "out of range".into(),
                "7".into()
            ]
        );
    }

    #[test]
    fn accepted_indices_skip_failures_and_split_outcomes_merge() {
        let mut a = BatchOutcome {
            records: 3,
            accepted: 2,
            attempts: 1,
            ..Default::default()
        };
        a.failed.push(RecordFailure {
            index_in_batch: 1,
            insert_id: None,
            distinct_id: None,
            field: String::new(),
            message: "m".into(),
        });
        let b = BatchOutcome {
            records: 2,
            accepted: 1,
            failed: a.failed.clone(),
            attempts: 2,
            ..Default::default()
        };
        a.absorb(b, 3);
        assert_eq!(a.accepted_indices().collect::<Vec<_>>(), vec![0, 2, 3]);
        assert_eq!((a.records, a.accepted, a.attempts), (5, 3, 3));
        assert!(StrictReply::parse(b"not json").failed_records.is_none());
    }
}
