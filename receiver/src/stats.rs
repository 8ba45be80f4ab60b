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
}

#[derive(Default)]
pub struct Stats {
    projects: Mutex<BTreeMap<String, Counters>>,
    faults: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    pub fn update(&self, project: &str, f: impl FnOnce(&mut Counters)) {
        let mut all = self.projects.lock();
        f(all.entry(project.to_owned()).or_default());
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
