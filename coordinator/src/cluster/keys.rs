//! The cluster's keys, beside the state store's ([`crate::keys`]):
//!
//! ```text
//! /ferry/v1/nodes/<node>                            a live node (attached to its lease)
//! /ferry/v1/assignments/<node>/<tenant>/<sync>      where the coordinator placed a sync
//! /ferry/v1/election/coordinator/<lease id, hex>    the candidates (etcd's election API)
//! /ferry/v1/draining/<node>                         a drain asked of a node (on that node's
//!                                                   lease: it ends when the node leaves)
//! /ferry/v1/resume/<tenant>/<sync>                  a run a drain cancelled at its deadline:
//!                                                   the next owner starts the sync at once
//! ```

use crate::keys::is_valid_segment;
use crate::records::SyncId;
use crate::store::StoreError;

pub const NODES: &str = "/ferry/v1/nodes/";
pub const ASSIGNMENTS: &str = "/ferry/v1/assignments/";
/// The election's name: etcd keeps each candidate at `<name>/<lease id>`.
pub const ELECTION: &str = "/ferry/v1/election/coordinator";
pub const DRAINING: &str = "/ferry/v1/draining/";
pub const RESUME: &str = "/ferry/v1/resume/";

pub fn node(node_id: &str) -> String {
    format!("{NODES}{node_id}")
}

pub fn draining(node_id: &str) -> String {
    format!("{DRAINING}{node_id}")
}

pub fn resume(sync: &SyncId) -> String {
    format!("{RESUME}{}/{}", sync.tenant(), sync.sync())
}

/// Every assignment of one node lives under this prefix (ends with `/`).
pub fn assignments_of(node_id: &str) -> String {
    format!("{ASSIGNMENTS}{node_id}/")
}

pub fn assignment(node_id: &str, sync: &SyncId) -> String {
    format!(
        "{}{}/{}",
        assignments_of(node_id),
        sync.tenant(),
        sync.sync()
    )
}

/// Reads `<node>/<tenant>/<sync>` back from an assignment key.
pub fn parse_assignment(key: &str) -> Result<(String, SyncId), StoreError> {
    let bad = || StoreError::Corrupt {
        key: key.to_string(),
        reason: "not an assignment key (<node>/<tenant>/<sync>)".into(),
    };
    let rest = key.strip_prefix(ASSIGNMENTS).ok_or_else(bad)?;
    let mut parts = rest.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(node), Some(tenant), Some(sync), None) if is_valid_segment(node) => Ok((
            node.to_string(),
            SyncId::new(tenant, sync).map_err(|_| bad())?,
        )),
        _ => Err(bad()),
    }
}

/// A node id must fit between two `/` of a key.
pub fn check_node_id(node_id: &str) -> Result<(), StoreError> {
    if is_valid_segment(node_id) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "node id {node_id:?} cannot be part of a key"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_keys_round_trip_and_stay_under_their_node() {
        let sync = SyncId::new("acme", "orders").unwrap();
        let key = assignment("node-1", &sync);
        assert_eq!(key, "/ferry/v1/assignments/node-1/acme/orders");
        assert!(key.starts_with(&assignments_of("node-1")));
        assert!(!key.starts_with(&assignments_of("node-")));
        assert_eq!(parse_assignment(&key).unwrap(), ("node-1".into(), sync));
        for bad in [
            "/ferry/v1/assignments/node-1/acme",
            "/ferry/v1/assignments/node-1/acme/orders/x",
            "/ferry/v1/owners/acme/orders",
        ] {
            assert!(parse_assignment(bad).is_err(), "{bad}");
        }
        assert!(check_node_id("a/b").is_err());
        assert_eq!(node("n1"), "/ferry/v1/nodes/n1");
        assert_eq!(draining("n1"), "/ferry/v1/draining/n1");
    }
}
