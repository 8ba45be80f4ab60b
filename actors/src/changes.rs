//! Mirror's changed rows → records, in the diff stage.
//!
//! A page read from Mirror's change query holds the source's columns followed by
//! `_mp_change_type` (and `_mp_change_seq`, the resume cursor). The mapper was built on the
//! source's columns only, so it is given the row up to `_mp_change_type`:
//!
//! - events and profile-history events: an insert or update is the event, re-sent under the
//!   same `$insert_id` (Mixpanel keeps the latest copy of a dedup key); a delete is the event as
//!   it was sent, for the destination's delete where it has one, else "not applied";
//! - user and group profiles: an insert is a `$set`; an update a `$set` plus a `$unset` of the
//!   properties whose column is NULL now; a delete a `$delete`.

use ferry_connectors::warehouse::mirror::{ChangeType, CHANGE_TYPE};
use ferry_core::mapping::{EncodedRecord, RowError, RowMapper, Unset};
use ferry_core::value::{column_index, Column, Value};

/// Why a row became no record, as the run log names it.
pub const INVALID_ROW: &str = "invalid_row";
/// A delete the destination cannot apply (Mixpanel has no per-event delete).
pub const NOT_APPLIED: &str = "not_applied";

/// Where `_mp_change_type` is, when the page comes from a change query.
pub fn change_type_index(columns: &[Column]) -> Option<usize> {
    column_index(columns, CHANGE_TYPE)
}

/// Encodes one changed row into `out`; an error carries its log reason.
pub fn encode_change(
    mapper: &RowMapper,
    row_index: u64,
    row: &[Value],
    change_index: usize,
    now_ms: i64,
    out: &mut Vec<EncodedRecord>,
) -> Result<(), (&'static str, RowError)> {
    let data = &row[..change_index.min(row.len())];
    let change = match row.get(change_index) {
        Some(Value::Text(text)) => ChangeType::parse(text),
        _ => None,
    };
    let invalid = |e| (INVALID_ROW, e);
    match change {
        Some(ChangeType::Insert) => mapper
            .encode_upsert(row_index, data, Unset::Never, now_ms, out)
            .map_err(invalid),
        Some(ChangeType::Update) => mapper
            .encode_upsert(row_index, data, Unset::AllNull, now_ms, out)
            .map_err(invalid),
        Some(ChangeType::Delete) => {
            let reason = if mapper.deletes_events() && !mapper.event_deletes() {
                NOT_APPLIED
            } else {
                INVALID_ROW
            };
            mapper
                .encode_delete(row_index, data, out)
                .map_err(|e| (reason, e))
        }
        None => Err((
            INVALID_ROW,
            RowError {
                row: row_index,
                key: None,
                field: CHANGE_TYPE.into(),
                message: format!(
                    "unknown change type {:?}",
                    row.get(change_index).unwrap_or(&Value::Null)
                ),
            },
        )),
    }
}
