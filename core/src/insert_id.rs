//! Deterministic `$insert_id`s.
//!
//! Mixpanel deduplicates events on (event, distinct id, time, `$insert_id`), so a re-sent or
//! updated row must get the same id on every run, on every node. The id is the MD5 of the sync
//! id and either the row's key values or (without a key) the whole row's checksum, printed as 32
//! lower-case hex digits: within `[A-Za-z0-9-]{1,36}`, never one of Mixpanel's refused stand-in
//! values. No process-local state (random seeds, `std` hasher) is involved.
//!
//! Without a key, any change to a row changes its id: an update then arrives as a new event, and
//! two rows identical in every column get one id (and collapse into one event).

use md5::{Digest, Md5};

use crate::checksum::{write_canonical, RowChecksum};
use crate::value::Value;

/// Separates the sync id from the rest, and tells a key-derived id from a checksum-derived one,
/// so the two derivations can never produce the same input bytes.
const KEY_TAG: &[u8] = b"\x1dkey\x1d";
const ROW_TAG: &[u8] = b"\x1drow\x1d";

/// `$insert_id` from the sync id and the row's key values (in key-column order). NULL and `''`
/// give different ids, as in checksums.
pub fn insert_id_from_key<'a>(
    sync_id: &str,
    key_values: impl IntoIterator<Item = &'a Value>,
) -> String {
    let mut input = Vec::with_capacity(64);
    input.extend_from_slice(sync_id.as_bytes());
    input.extend_from_slice(KEY_TAG);
    for (i, value) in key_values.into_iter().enumerate() {
        if i > 0 {
            input.push(31);
        }
        if !value.is_null() {
            write_canonical(value, &mut input);
            input.push(30);
        }
    }
    hex32(Md5::digest(&input).into())
}

/// `$insert_id` from the sync id and the row's checksum, for syncs without key columns.
pub fn insert_id_from_checksum(sync_id: &str, checksum: &RowChecksum) -> String {
    let mut hasher = Md5::new();
    hasher.update(sync_id.as_bytes());
    hasher.update(ROW_TAG);
    hasher.update(checksum.0);
    hex32(hasher.finalize().into())
}

fn hex32(digest: [u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for b in digest {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::row_checksum;
    use crate::ingest::ids::check_insert_id;

    #[test]
    fn key_ids_are_deterministic_and_well_formed() {
        let key = [Value::Int(42), Value::Text("eu".into())];
        let a = insert_id_from_key("orders", &key);
        let b = insert_id_from_key("orders", &key);
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
        assert!(check_insert_id(&a).is_ok(), "{a}");
        // Pinned: the derivation must never change between releases, or every re-sent row
        // would become a duplicate event.
        assert_eq!(a, "9988bc15f0fdb8ef136d0b05964e11f4");
        assert_eq!(
            a,
            hex32(Md5::digest(b"orders\x1dkey\x1d42\x1e\x1feu\x1e").into())
        );
    }

    #[test]
    fn key_ids_depend_on_sync_values_and_nulls() {
        let k = |v: Vec<Value>| insert_id_from_key("s1", &v);
        assert_ne!(
            insert_id_from_key("s1", &[Value::Int(1)]),
            insert_id_from_key("s2", &[Value::Int(1)])
        );
        assert_ne!(k(vec![Value::Int(1)]), k(vec![Value::Int(2)]));
        assert_ne!(k(vec![Value::Text(String::new())]), k(vec![Value::Null]));
        assert_ne!(
            k(vec![Value::Text("a".into()), Value::Text("bc".into())]),
            k(vec![Value::Text("ab".into()), Value::Text("c".into())])
        );
    }

    #[test]
    fn keyless_ids_follow_the_row_checksum() {
        let row = vec![Value::Int(1), Value::Text("x".into())];
        let id = insert_id_from_checksum("s1", &row_checksum(&row));
        assert!(check_insert_id(&id).is_ok());
        assert_eq!(id, insert_id_from_checksum("s1", &row_checksum(&row)));
        let changed = vec![Value::Int(1), Value::Text("y".into())];
        assert_ne!(id, insert_id_from_checksum("s1", &row_checksum(&changed)));
        // A key-derived id over the same bytes is still different.
        assert_ne!(id, insert_id_from_key("s1", &row));
    }
}
