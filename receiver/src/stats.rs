//! Counters of requests and records by outcome, per project, for inspection and benchmarks.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use serde::Serialize;

/// Counters for one project (or `_unauthenticated` for requests that never found one).
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Counters {
    /// endpoint → HTTP status → requests.
    pub requests: BTreeMap<String, BTreeMap<u16, u64>>,
    pub events_imported: u64,
    /// Events whose dedup key was already stored; the new copy replaced the old.
    pub events_replaced: u64,
    pub events_failed: u64,
    pub events_deleted: u64,
    pub strings_truncated: u64,
    pub profile_updates_applied: u64,
    pub profile_updates_failed: u64,
    pub group_updates_applied: u64,
    pub group_updates_failed: u64,
    pub lookup_replacements: u64,
    pub uncompressed_bytes: u64,
    /// Records accepted (events imported or replaced, profile and group updates applied) per
    /// Unix second, for the last [`SECONDS_KEPT`] seconds with any: the rate a sender held.
    pub accepted_per_second: BTreeMap<i64, u64>,
}

/// How many seconds of [`Counters::accepted_per_second`] are kept.
pub const SECONDS_KEPT: usize = 3600;

impl Counters {
    fn accepted(&self) -> u64 {
        self.events_imported
            + self.events_replaced
            + self.profile_updates_applied
            + self.group_updates_applied
    }
}

#[derive(Default)]
pub struct Stats {
    projects: Mutex<BTreeMap<String, Counters>>,
    faults: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    pub fn update(&self, project: &str, f: impl FnOnce(&mut Counters)) {
        let mut all = self.projects.lock();
        let counters = all.entry(project.to_owned()).or_default();
        let before = counters.accepted();
        f(counters);
        let accepted = counters.accepted().saturating_sub(before);
        if accepted > 0 {
            let second = chrono::Utc::now().timestamp();
            *counters.accepted_per_second.entry(second).or_default() += accepted;
            while counters.accepted_per_second.len() > SECONDS_KEPT {
                counters.accepted_per_second.pop_first();
            }
        }
    }

    pub fn request(&self, project: &str, endpoint: &str, status: u16) {
        self.update(project, |c| {
            *c.requests
                .entry(endpoint.to_owned())
                .or_default()
                .entry(status)
                .or_default() += 1
        });
    }

    pub fn fault(&self, name: &str) {
        *self.faults.lock().entry(name.to_owned()).or_default() += 1;
    }

    pub fn project(&self, project: &str) -> Counters {
        self.projects
            .lock()
            .get(project)
            .cloned()
            .unwrap_or_default()
    }

    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "projects": *self.projects.lock(),
            "faults_injected": *self.faults.lock(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_records_are_counted_per_second() {
        let stats = Stats::default();
        let first = chrono::Utc::now().timestamp();
        stats.update("1", |c| c.events_imported += 5);
        stats.update("1", |c| {
            c.events_replaced += 2;
            c.events_failed += 9;
        });
        stats.update("1", |c| c.profile_updates_applied += 3);
        stats.update("1", |c| c.events_failed += 4);
        stats.request("1", "/import", 200);
        let last = chrono::Utc::now().timestamp();
        let counted = stats.project("1").accepted_per_second;
        assert_eq!(counted.values().sum::<u64>(), 10, "{counted:?}");
        assert!(
            counted.keys().all(|s| (first..=last).contains(s)),
            "{counted:?}"
        );
        assert!(stats.project("2").accepted_per_second.is_empty());
        // Only the most recent seconds are kept.
        stats.update("1", |c| {
            for s in 0..SECONDS_KEPT as i64 + 10 {
                c.accepted_per_second.insert(s, 1);
            }
        });
        stats.update("1", |c| c.events_imported += 1);
        let kept = stats.project("1").accepted_per_second;
        assert_eq!(kept.len(), SECONDS_KEPT);
        assert!(kept.contains_key(&last) || kept.contains_key(&(last + 1)));
    }
}
