//! The key layout, shared by every store. The embedded store uses these exact keys so that the
//! etcd store is a mechanical port: same keys, same values, same checks.
//!
//! ```text
//! /ferry/v1/owners/<tenant>/<sync>        the live claim (etcd: attached to the node's lease)
//! /ferry/v1/cursors/<tenant>/<sync>       the last committed cursor
//! /ferry/v1/runs/<tenant>/<sync>/<run>    one run's record (bounded history per sync)
//! ```

use crate::records::SyncId;

pub const ROOT: &str = "/ferry/v1/";
pub const OWNERS: &str = "/ferry/v1/owners/";
pub const CURSORS: &str = "/ferry/v1/cursors/";
pub const RUNS: &str = "/ferry/v1/runs/";

pub fn owner(sync: &SyncId) -> String {
    format!("{OWNERS}{}/{}", sync.tenant(), sync.sync())
}

pub fn cursor(sync: &SyncId) -> String {
    format!("{CURSORS}{}/{}", sync.tenant(), sync.sync())
}

/// Every run of one sync lives under this prefix (it ends with `/`, so sync `a` never sees the
/// runs of sync `ab`).
pub fn runs_of(sync: &SyncId) -> String {
    format!("{RUNS}{}/{}/", sync.tenant(), sync.sync())
}

pub fn run(sync: &SyncId, run_id: &str) -> String {
    format!("{}{run_id}", runs_of(sync))
}

/// The smallest key greater than every key that starts with `prefix` (etcd's `range_end` for a
/// prefix read). Prefixes here end in `/`, which becomes `0`, the next byte.
pub fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            // Only ASCII bytes were changed, so this is still UTF-8.
            return String::from_utf8(bytes).unwrap_or_default();
        }
    }
    String::new()
}

/// Whether `segment` can stand between two `/` in a key: ids are validated by the spec too, but
/// the store must not depend on that to keep one sync's keys apart from another's.
pub fn is_valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 128
        && segment != "."
        && segment != ".."
        && !segment.chars().any(|c| c == '/' || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_prefix_ranges() {
        let sync = SyncId::new("acme", "orders").unwrap();
        assert_eq!(owner(&sync), "/ferry/v1/owners/acme/orders");
        assert_eq!(cursor(&sync), "/ferry/v1/cursors/acme/orders");
        assert_eq!(run(&sync, "r1"), "/ferry/v1/runs/acme/orders/r1");
        let prefix = runs_of(&sync);
        let end = prefix_end(&prefix);
        assert_eq!(end, "/ferry/v1/runs/acme/orders0");
        let longer = run(&SyncId::new("acme", "orders2").unwrap(), "r1");
        assert!(
            longer.as_str() >= end.as_str(),
            "a sync whose id extends another's is outside its range"
        );
    }

    #[test]
    fn segments_cannot_escape_their_place() {
        for bad in ["", "a/b", "..", ".", "a\nb"] {
            assert!(!is_valid_segment(bad), "{bad:?}");
        }
        assert!(is_valid_segment("orders_2024-v1"));
    }
}
