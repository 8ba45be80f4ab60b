//! Which node runs which sync: weighted rendezvous (highest-random-weight) hashing.
//!
//! Every (node, sync) pair gets a pseudo-random number `u` in (0, 1) from a hash of the two ids,
//! and a score `-capacity / ln(u)`; the sync goes to the node with the highest score. This is
//! the logarithmic method of weighted rendezvous hashing: a node's expected share is its
//! capacity over the total, and because a sync's choice depends only on its own scores:
//! - adding a node moves only the syncs the new node now wins (its share, about
//!   `capacity / total` of them), and they all move *to* it;
//! - removing a node moves only its own syncs;
//! - adding or removing a sync moves nothing else.
//!
//! A draining node is given capacity 0: it takes nothing, and only its own syncs move (each
//! once its run in progress ends, see [`plan`]).
//!
//! Pure and deterministic: the same ids give the same placement on every node and every
//! version (xxh3 is a fixed function).

use std::collections::{BTreeMap, BTreeSet};

use xxhash_rust::xxh3::xxh3_64;

use crate::records::SyncId;

/// A node that can take syncs, and how many relative to the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeWeight {
    pub node_id: String,
    /// Relative weight; 0 takes nothing (a draining node).
    pub capacity: u32,
}

impl NodeWeight {
    pub fn new(node_id: impl Into<String>, capacity: u32) -> Self {
        Self {
            node_id: node_id.into(),
            capacity,
        }
    }
}

/// A uniform number in (0, 1), never 0 or 1, from the pair's ids.
fn unit_hash(node_id: &str, sync: &SyncId) -> f64 {
    let mut bytes = Vec::with_capacity(node_id.len() + sync.tenant().len() + sync.sync().len() + 2);
    bytes.extend_from_slice(node_id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(sync.tenant().as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(sync.sync().as_bytes());
    // The top 53 bits make an exact f64; the half step keeps it off both ends.
    let top = (xxh3_64(&bytes) >> 11) as f64;
    (top + 0.5) / (1u64 << 53) as f64
}

fn score(node: &NodeWeight, sync: &SyncId) -> f64 {
    -f64::from(node.capacity) / unit_hash(&node.node_id, sync).ln()
}

/// The node that should run `sync`, or `None` when no node has capacity.
pub fn choose<'n>(sync: &SyncId, nodes: &'n [NodeWeight]) -> Option<&'n NodeWeight> {
    nodes
        .iter()
        .filter(|n| n.capacity > 0)
        .map(|n| (score(n, sync), n))
        // Ties (practically impossible) go to the smaller id, so every node agrees.
        .max_by(|(a, na), (b, nb)| a.total_cmp(b).then_with(|| nb.node_id.cmp(&na.node_id)))
        .map(|(_, n)| n)
}

/// Places every sync: sync → node id. Syncs with no node to go to are left out.
pub fn place<'s>(
    syncs: impl IntoIterator<Item = &'s SyncId>,
    nodes: &[NodeWeight],
) -> BTreeMap<SyncId, String> {
    syncs
        .into_iter()
        .filter_map(|sync| choose(sync, nodes).map(|n| (sync.clone(), n.node_id.clone())))
        .collect()
}

/// The placement a coordinator should write: [`place`], except that a sync whose run is in
/// progress on a live node it is assigned to stays there until the run ends (moving it would
/// cancel the run: a node joining must not interrupt work, and a draining node's syncs move
/// gracefully). `nodes` are the live nodes, draining ones with capacity 0; `current` the
/// assignments now (sync → nodes); `running` which node holds each claimed sync.
pub fn plan(
    syncs: &[SyncId],
    nodes: &[NodeWeight],
    current: &BTreeMap<SyncId, BTreeSet<String>>,
    running: &BTreeMap<SyncId, String>,
) -> BTreeMap<SyncId, String> {
    let mut desired = place(syncs, nodes);
    // A dead node's claims vanish with its lease, so this never holds a sync on a dead node.
    for sync in syncs {
        let Some(owner) = running.get(sync) else {
            continue;
        };
        let assigned_there = current.get(sync).is_some_and(|n| n.contains(owner));
        let owner_alive = nodes.iter().any(|n| &n.node_id == owner);
        if assigned_there && owner_alive {
            desired.insert(sync.clone(), owner.clone());
        }
    }
    desired
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syncs(n: usize, tenant: &str) -> Vec<SyncId> {
        (0..n)
            .map(|i| SyncId::new(tenant, format!("sync-{i}")).unwrap())
            .collect()
    }

    fn nodes(capacities: &[u32]) -> Vec<NodeWeight> {
        capacities
            .iter()
            .enumerate()
            .map(|(i, c)| NodeWeight::new(format!("node-{i}"), *c))
            .collect()
    }

    fn moved(a: &BTreeMap<SyncId, String>, b: &BTreeMap<SyncId, String>) -> Vec<SyncId> {
        a.iter()
            .filter(|(s, n)| b.get(*s) != Some(*n))
            .map(|(s, _)| s.clone())
            .collect()
    }

    #[test]
    fn deterministic_whatever_the_order_of_nodes() {
        let all = syncs(500, "acme");
        let mut ns = nodes(&[1, 2, 3, 1]);
        let first = place(&all, &ns);
        ns.reverse();
        assert_eq!(place(&all, &ns), first);
        assert_eq!(first.len(), 500);
    }

    #[test]
    fn adding_a_node_moves_only_its_share_and_only_to_it() {
        let all = syncs(4000, "acme");
        for n in 1..=8usize {
            let before_nodes = nodes(&vec![1; n]);
            let mut after_nodes = before_nodes.clone();
            after_nodes.push(NodeWeight::new("newcomer", 1));
            let before = place(&all, &before_nodes);
            let after = place(&all, &after_nodes);
            let moved = moved(&before, &after);
            assert!(
                moved.iter().all(|s| after[s] == "newcomer"),
                "{n} nodes: a sync moved between old nodes"
            );
            let share = moved.len() as f64 / all.len() as f64;
            let expected = 1.0 / (n as f64 + 1.0);
            assert!(
                (share - expected).abs() < 0.03,
                "{n} → {} nodes: moved {share:.3}, expected about {expected:.3}",
                n + 1
            );
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_syncs() {
        let all = syncs(2000, "globex");
        let before_nodes = nodes(&[1, 1, 2, 1]);
        let after_nodes: Vec<NodeWeight> = before_nodes
            .iter()
            .filter(|n| n.node_id != "node-2")
            .cloned()
            .collect();
        let before = place(&all, &before_nodes);
        let after = place(&all, &after_nodes);
        for s in moved(&before, &after) {
            assert_eq!(before[&s], "node-2");
        }
        assert!(after.values().all(|n| n != "node-2"));
    }

    #[test]
    fn adding_a_sync_moves_nothing_else() {
        let ns = nodes(&[3, 1, 2]);
        let mut all = syncs(300, "acme");
        let before = place(&all, &ns);
        for extra in 0..50 {
            all.push(SyncId::new("initech", format!("late-{extra}")).unwrap());
            let after = place(&all, &ns);
            assert_eq!(after.len(), before.len() + extra + 1);
            assert!(moved(&before, &after).is_empty());
        }
    }

    #[test]
    fn shares_follow_capacity() {
        let all = syncs(20_000, "acme");
        let capacities = [1u32, 2, 3, 4];
        let ns = nodes(&capacities);
        let placed = place(&all, &ns);
        let total: u32 = capacities.iter().sum();
        for (node, capacity) in ns.iter().zip(capacities) {
            let got = placed.values().filter(|n| **n == node.node_id).count() as f64;
            let share = got / all.len() as f64;
            let expected = f64::from(capacity) / f64::from(total);
            assert!(
                (share - expected).abs() / expected < 0.08,
                "{}: share {share:.3}, expected {expected:.3}",
                node.node_id
            );
        }
    }

    #[test]
    fn zero_capacity_takes_nothing_and_no_nodes_places_nothing() {
        let all = syncs(200, "acme");
        let placed = place(&all, &nodes(&[0, 1]));
        assert!(placed.values().all(|n| n == "node-1"));
        assert!(place(&all, &[]).is_empty());
        assert!(place(&all, &nodes(&[0, 0])).is_empty());
    }

    #[test]
    fn thirty_syncs_three_nodes_then_a_fourth() {
        // The figure the cluster issue asks for, from the placement itself.
        let all = syncs(30, "acme");
        let three = nodes(&[1, 1, 1]);
        let mut four = three.clone();
        four.push(NodeWeight::new("node-3", 1));
        let moved = moved(&place(&all, &three), &place(&all, &four));
        println!("30 syncs, 3 → 4 nodes: {} moved", moved.len());
        assert!(moved.len() <= 15, "{} of 30 moved", moved.len());
        assert!(!moved.is_empty(), "the new node takes a share");
    }

    fn assigned(placed: &BTreeMap<SyncId, String>) -> BTreeMap<SyncId, BTreeSet<String>> {
        placed
            .iter()
            .map(|(s, n)| (s.clone(), BTreeSet::from([n.clone()])))
            .collect()
    }

    /// The cluster with `node` draining: listed (it is alive) with capacity 0.
    fn with_draining(ns: &[NodeWeight], node: &str) -> Vec<NodeWeight> {
        ns.iter()
            .map(|n| {
                let capacity = if n.node_id == node { 0 } else { n.capacity };
                NodeWeight::new(n.node_id.clone(), capacity)
            })
            .collect()
    }

    #[test]
    fn a_draining_node_gets_nothing_and_only_its_syncs_move() {
        let all = syncs(600, "acme");
        let ns = nodes(&[1, 1, 2, 1]);
        let before = plan(&all, &ns, &BTreeMap::new(), &BTreeMap::new());
        let drained = with_draining(&ns, "node-2");
        let after = plan(&all, &drained, &assigned(&before), &BTreeMap::new());
        assert_eq!(after.len(), all.len(), "every sync still has a node");
        assert!(
            after.values().all(|n| n != "node-2"),
            "the drained node got something"
        );
        let moved = moved(&before, &after);
        assert!(!moved.is_empty());
        for s in &moved {
            assert_eq!(
                before[s], "node-2",
                "{s} moved though its node is not draining"
            );
        }
        assert_eq!(
            moved.len(),
            before.values().filter(|n| *n == "node-2").count(),
            "all of the drained node's syncs moved"
        );
    }

    #[test]
    fn a_draining_nodes_running_sync_stays_until_its_run_ends() {
        let all = syncs(60, "acme");
        let ns = nodes(&[1, 1, 1]);
        let before = plan(&all, &ns, &BTreeMap::new(), &BTreeMap::new());
        let current = assigned(&before);
        let busy = before
            .iter()
            .find(|(_, n)| *n == "node-1")
            .map(|(s, _)| s.clone())
            .unwrap();
        let drained = with_draining(&ns, "node-1");
        let running = BTreeMap::from([(busy.clone(), "node-1".to_string())]);
        let during = plan(&all, &drained, &current, &running);
        assert_eq!(during[&busy], "node-1", "its run goes on where it is");
        assert_eq!(
            during.values().filter(|n| *n == "node-1").count(),
            1,
            "only the running sync stays on the draining node"
        );
        // The run ended: the claim is gone and the sync moves too.
        let after = plan(&all, &drained, &assigned(&during), &BTreeMap::new());
        assert!(after.values().all(|n| n != "node-1"));
        // A claim on a node the sync is not assigned to (a run the coordinator does not know
        // of) holds nothing; nor does a dead node's.
        let elsewhere = BTreeMap::from([(busy.clone(), "node-1".to_string())]);
        let moved_on = plan(&all, &drained, &assigned(&after), &elsewhere);
        assert_ne!(moved_on[&busy], "node-1");
        let gone: Vec<NodeWeight> = ns
            .iter()
            .filter(|n| n.node_id != "node-1")
            .cloned()
            .collect();
        assert_ne!(plan(&all, &gone, &current, &running)[&busy], "node-1");
    }
}
