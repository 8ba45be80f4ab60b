//! Names of a sync's objects in the staging schema: `snap_<sync>_<generation>_<run>`
//! (snapshots), `chg_<sync>_<generation>_<run>` (changes tables) and
//! `dry_<sync>_<unix seconds>_s` / `_c` (a dry run's), where `<sync>` is 12 hex digits of a
//! SHA-256 of the tenant and sync ids and `<run>` 6 of the run id. Short, lower case (Redshift
//! folds identifiers), and owned by exactly one sync, so cleaning one sync never touches
//! another's objects. The run part keeps a new run clear of a statement a dead or fenced-off run
//! may still have in flight in the warehouse (it would otherwise create the same name).

use sha2::{Digest, Sha256};

/// Six hex digits naming a run.
fn run_tag(run_id: &str) -> String {
    let digest = Sha256::digest(run_id.as_bytes());
    digest[..3].iter().map(|b| format!("{b:02x}")).collect()
}

/// A dry run's tables older than this are leftovers of a dry run that died.
pub const DRY_RUN_MAX_AGE_SECS: i64 = 24 * 3600;

/// One sync's object names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagingNames {
    hash: String,
}

/// What a staging table is, when it belongs to the sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owned {
    Snapshot(u64),
    Changes(u64),
    /// A dry run's table, created at these Unix seconds.
    DryRun(i64),
}

impl StagingNames {
    pub fn new(tenant: &str, sync: &str) -> Self {
        let digest = Sha256::digest(format!("{tenant}\u{1f}{sync}").as_bytes());
        let hash = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Self { hash }
    }

    pub fn snapshot(&self, generation: u64, run_id: &str) -> String {
        format!("snap_{}_{generation}_{}", self.hash, run_tag(run_id))
    }

    pub fn changes(&self, generation: u64, run_id: &str) -> String {
        format!("chg_{}_{generation}_{}", self.hash, run_tag(run_id))
    }

    /// A dry run's snapshot and changes tables.
    pub fn dry_run(&self, unix_secs: i64) -> (String, String) {
        (
            format!("dry_{}_{unix_secs}_s", self.hash),
            format!("dry_{}_{unix_secs}_c", self.hash),
        )
    }

    /// What `table` is, if it belongs to this sync.
    pub fn owns(&self, table: &str) -> Option<Owned> {
        let parts: Vec<&str> = table.split('_').collect();
        match parts.as_slice() {
            ["snap", h, n, _] if *h == self.hash => n.parse().ok().map(Owned::Snapshot),
            ["chg", h, n, _] if *h == self.hash => n.parse().ok().map(Owned::Changes),
            ["dry", h, t, "s" | "c"] if *h == self.hash => t.parse().ok().map(Owned::DryRun),
            _ => None,
        }
    }

    /// The sync's tables in `tables` that a run may drop: its snapshots and changes tables
    /// not in `keep`, and dry-run tables older than a day (`now` in Unix seconds). A live dry
    /// run's tables are left alone.
    pub fn leftovers<'t>(&self, tables: &'t [String], keep: &[&str], now: i64) -> Vec<&'t str> {
        tables
            .iter()
            .map(String::as_str)
            .filter(|t| match self.owns(t) {
                Some(Owned::Snapshot(_) | Owned::Changes(_)) => !keep.contains(t),
                Some(Owned::DryRun(created)) => now - created > DRY_RUN_MAX_AGE_SECS,
                None => false,
            })
            .collect()
    }

    /// Every table of the sync in `tables` (dropped when the sync is deleted).
    pub fn all<'t>(&self, tables: &'t [String]) -> Vec<&'t str> {
        tables
            .iter()
            .map(String::as_str)
            .filter(|t| self.owns(t).is_some())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_stable_and_owned_by_one_sync() {
        let a = StagingNames::new("acme", "orders");
        let b = StagingNames::new("acme", "orders2");
        let c = StagingNames::new("acme2", "orders");
        assert_eq!(a, StagingNames::new("acme", "orders"));
        assert_ne!(a, b);
        assert_ne!(a, c);
        let snap = a.snapshot(12, "r1");
        assert!(snap.starts_with("snap_") && snap.len() <= 30, "{snap}");
        assert!(snap
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        assert_eq!(a.owns(&snap), Some(Owned::Snapshot(12)));
        assert_eq!(a.owns(&a.changes(3, "r1")), Some(Owned::Changes(3)));
        assert_ne!(
            a.snapshot(12, "r1"),
            a.snapshot(12, "r2"),
            "each run its own names"
        );
        assert_eq!(b.owns(&snap), None);
        let (s, c2) = a.dry_run(1_700_000_000);
        assert_eq!(a.owns(&s), Some(Owned::DryRun(1_700_000_000)));
        assert_eq!(a.owns(&c2), Some(Owned::DryRun(1_700_000_000)));
        assert_eq!(a.owns("snap_x"), None);
        assert_eq!(a.owns("orders"), None);
    }

    #[test]
    fn leftovers_spare_what_the_cursor_names_and_live_dry_runs() {
        let a = StagingNames::new("acme", "orders");
        let other = StagingNames::new("acme", "users");
        let now = 1_700_000_000;
        let tables: Vec<String> = vec![
            a.snapshot(3, "r3"),
            a.snapshot(4, "r4"),
            a.changes(4, "r4"),
            a.snapshot(5, "r5"), // a dead run's next snapshot
            a.changes(5, "r5"),
            a.dry_run(now - 60).0,
            a.dry_run(now - 2 * DRY_RUN_MAX_AGE_SECS).1,
            other.snapshot(1, "r1"),
            "unrelated".into(),
        ];
        let keep = [a.snapshot(3, "r3"), a.snapshot(4, "r4"), a.changes(4, "r4")];
        let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
        let dropped = a.leftovers(&tables, &keep, now);
        assert_eq!(
            dropped,
            vec![
                a.snapshot(5, "r5").as_str(),
                a.changes(5, "r5").as_str(),
                a.dry_run(now - 2 * DRY_RUN_MAX_AGE_SECS).1.as_str()
            ]
        );
        assert_eq!(a.all(&tables).len(), 7);
    }
}
