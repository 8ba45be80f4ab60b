//! The receiver's store: per-project events (deduplicated), profiles, groups and lookup tables.
//!
//! `disk` mode keeps everything in memory and journals each accepted request before it is
//! acknowledged, so a restart replays to the same state. `memory` mode keeps only event dedup
//! keys (as 128-bit hashes) and counts, plus profiles, groups and lookup tables (small), for
//! benchmarks that must not be limited by the receiver.

pub mod journal;
pub mod profiles;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use ferry_core::ingest::event::DedupKey;
use ferry_core::ingest::lookup::LookupTable;
use ferry_core::ingest::profile::{
    validate_profile_update, ProfileKind, ProfileTarget, ProfileUpdate,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{LookupTableDecl, ProjectConfig, StoreMode};
use journal::{Journal, JournalError};
use profiles::{Applied, Profile};

/// A journal bigger than this is compacted when the receiver starts.
const COMPACT_AT_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("unknown project '{0}'")]
    UnknownProject(String),
    #[error("lookup table '{0}' does not exist in this project")]
    UnknownLookupTable(String),
}

/// An accepted event as stored: the event JSON and when it was ingested.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    pub event: Value,
    pub ingested_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LookupSlot {
    pub name: String,
    pub table: Option<LookupTable>,
    /// When each recent replacement happened (ms), for the 100-per-24h limit.
    pub replaced_at_ms: Vec<i64>,
}

#[derive(Debug, Default)]
pub struct ProjectData {
    pub events: HashMap<DedupKey, StoredEvent>,
    /// `memory` mode: hashes of the dedup keys seen.
    pub event_keys: HashSet<u128>,
    pub profiles: BTreeMap<String, Profile>,
    pub groups: BTreeMap<(String, String), Profile>,
    pub lookup_tables: BTreeMap<String, LookupSlot>,
}

impl ProjectData {
    pub fn event_count(&self) -> usize {
        self.events.len().max(self.event_keys.len())
    }
}

/// Outcome of storing a batch of events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EventsStored {
    pub new: usize,
    /// Same dedup key as a stored event: the new copy replaced it.
    pub replaced: usize,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Entry {
    Events {
        project: String,
        at_ms: i64,
        events: Vec<(DedupKey, Value)>,
    },
    DeleteEvents {
        project: String,
        keys: Vec<DedupKey>,
    },
    Profiles {
        project: String,
        kind: ProfileKind,
        at_ms: i64,
        updates: Vec<Value>,
    },
    LookupCreate {
        project: String,
        id: String,
        name: String,
    },
    LookupReplace {
        project: String,
        id: String,
        at_ms: i64,
        table: LookupTable,
    },
    ProfileSnapshot {
        project: String,
        kind: ProfileKind,
        target: ProfileTarget,
        profile: Profile,
    },
    LookupSnapshot {
        project: String,
        id: String,
        slot: LookupSlot,
    },
}

pub struct Store {
    mode: StoreMode,
    inner: Mutex<Inner>,
}

struct Inner {
    projects: HashMap<String, ProjectData>,
    journal: Option<Journal>,
}

impl Store {
    /// Opens the store, replaying the journal in `disk` mode.
    pub fn open(
        mode: StoreMode,
        data_dir: Option<&Path>,
        projects: &[ProjectConfig],
    ) -> Result<Self, StoreError> {
        let mut inner = Inner {
            projects: HashMap::new(),
            journal: None,
        };
        for p in projects {
            inner.projects.insert(p.id.clone(), ProjectData::default());
        }
        if let (StoreMode::Disk, Some(dir)) = (mode, data_dir) {
            std::fs::create_dir_all(dir).map_err(|source| JournalError::Io {
                path: dir.to_owned(),
                source,
            })?;
            let (journal, entries) = Journal::open::<Entry>(&dir.join("receiver.journal"))?;
            let replayed = entries.len();
            for entry in entries {
                inner.apply(entry);
            }
            tracing::info!(entries = replayed, dir = %dir.display(), "receiver store replayed");
            inner.journal = Some(journal);
        }
        for p in projects {
            let data = inner.projects.entry(p.id.clone()).or_default();
            for LookupTableDecl { id, name } in &p.lookup_tables {
                data.lookup_tables
                    .entry(id.clone())
                    .or_insert_with(|| LookupSlot {
                        name: name.clone(),
                        ..Default::default()
                    });
            }
        }
        let store = Self {
            mode,
            inner: Mutex::new(inner),
        };
        store.compact_if_large()?;
        Ok(store)
    }

    pub fn mode(&self) -> StoreMode {
        self.mode
    }

    fn compact_if_large(&self) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        let Some(size) = inner.journal.as_ref().map(Journal::size) else {
            return Ok(());
        };
        if size < COMPACT_AT_BYTES {
            return Ok(());
        }
        let snapshot = inner.snapshot();
        if let Some(journal) = inner.journal.as_mut() {
            journal.rewrite(&snapshot)?;
            tracing::info!(
                before_bytes = size,
                after_bytes = journal.size(),
                "receiver journal compacted"
            );
        }
        Ok(())
    }

    /// Stores accepted events: the latest copy of each dedup key wins.
    pub fn put_events(
        &self,
        project: &str,
        at_ms: i64,
        events: Vec<(DedupKey, Value)>,
    ) -> Result<EventsStored, StoreError> {
        let mut inner = self.inner.lock();
        if !inner.projects.contains_key(project) {
            return Err(StoreError::UnknownProject(project.into()));
        }
        if self.mode == StoreMode::Memory {
            drop(inner);
            return self.put_event_keys(project, events.iter().map(|(key, _)| key));
        }
        let entry = Entry::Events {
            project: project.into(),
            at_ms,
            events,
        };
        inner.journal_append(&entry)?;
        Ok(inner.apply(entry).unwrap_or_default())
    }

    /// `memory` mode: records accepted events by their dedup keys alone (the events themselves
    /// are not kept, so the caller can drop each one as soon as it is validated).
    pub fn put_event_keys<'k>(
        &self,
        project: &str,
        keys: impl IntoIterator<Item = &'k DedupKey>,
    ) -> Result<EventsStored, StoreError> {
        let mut inner = self.inner.lock();
        let Some(data) = inner.projects.get_mut(project) else {
            return Err(StoreError::UnknownProject(project.into()));
        };
        let mut out = EventsStored::default();
        for key in keys {
            if data.event_keys.insert(hash_key(key)) {
                out.new += 1;
            } else {
                out.replaced += 1;
            }
        }
        Ok(out)
    }

    /// Deletes events by dedup key (the Ferry extension). Returns how many existed.
    pub fn delete_events(&self, project: &str, keys: Vec<DedupKey>) -> Result<usize, StoreError> {
        let mut inner = self.inner.lock();
        if !inner.projects.contains_key(project) {
            return Err(StoreError::UnknownProject(project.into()));
        }
        if self.mode == StoreMode::Memory {
            let data = inner.project(project);
            return Ok(keys
                .iter()
                .filter(|k| data.event_keys.remove(&hash_key(k)))
                .count());
        }
        let entry = Entry::DeleteEvents {
            project: project.into(),
            keys,
        };
        inner.journal_append(&entry)?;
        Ok(inner.apply(entry).map(|o| o.new).unwrap_or(0))
    }

    /// Applies validated profile updates in order. `raw` are the updates as received (kept in
    /// the journal); `parsed` their checked form, index for index.
    pub fn apply_profile_updates(
        &self,
        project: &str,
        kind: ProfileKind,
        at_ms: i64,
        raw: Vec<Value>,
        parsed: &[ProfileUpdate],
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        if !inner.projects.contains_key(project) {
            return Err(StoreError::UnknownProject(project.into()));
        }
        if self.mode == StoreMode::Disk {
            inner.journal_append(&Entry::Profiles {
                project: project.into(),
                kind,
                at_ms,
                updates: raw,
            })?;
        }
        let data = inner.project(project);
        for update in parsed {
            data.apply_profile_update(update, at_ms);
        }
        Ok(())
    }

    /// Declares a lookup table (stands in for creating it in Mixpanel's UI).
    pub fn create_lookup_table(
        &self,
        project: &str,
        id: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let mut inner = self.inner.lock();
        if !inner.projects.contains_key(project) {
            return Err(StoreError::UnknownProject(project.into()));
        }
        if inner.project(project).lookup_tables.contains_key(id) {
            return Ok(false);
        }
        let entry = Entry::LookupCreate {
            project: project.into(),
            id: id.into(),
            name: name.into(),
        };
        inner.journal_append(&entry)?;
        inner.apply(entry);
        Ok(true)
    }

    /// Replaces a lookup table's contents, enforcing the replacement rate and the per-project
    /// row limit. `Ok(Err(message))` is a refusal the caller reports (429 or 400).
    pub fn replace_lookup_table(
        &self,
        project: &str,
        id: &str,
        at_ms: i64,
        table: LookupTable,
    ) -> Result<Result<(), LookupRefusal>, StoreError> {
        use ferry_core::ingest::limits::{
            LOOKUP_ROWS_PER_PROJECT_EXCLUSIVE, MAX_LOOKUP_REPLACEMENTS_PER_DAY,
        };
        let mut inner = self.inner.lock();
        let data = inner
            .projects
            .get(project)
            .ok_or_else(|| StoreError::UnknownProject(project.into()))?;
        let slot = data
            .lookup_tables
            .get(id)
            .ok_or_else(|| StoreError::UnknownLookupTable(id.into()))?;
        let day_ago = at_ms - 24 * 3600 * 1000;
        if slot.replaced_at_ms.iter().filter(|t| **t > day_ago).count()
            >= MAX_LOOKUP_REPLACEMENTS_PER_DAY
        {
            return Ok(Err(LookupRefusal::RateLimited));
        }
        let other_rows: usize = data
            .lookup_tables
            .iter()
            .filter(|(other, _)| *other != id)
            .map(|(_, s)| s.table.as_ref().map_or(0, |t| t.rows.len()))
            .sum();
        if other_rows + table.rows.len() >= LOOKUP_ROWS_PER_PROJECT_EXCLUSIVE {
            return Ok(Err(LookupRefusal::TooManyRows(
                other_rows + table.rows.len(),
            )));
        }
        let entry = Entry::LookupReplace {
            project: project.into(),
            id: id.into(),
            at_ms,
            table,
        };
        inner.journal_append(&entry)?;
        inner.apply(entry);
        Ok(Ok(()))
    }

    /// Runs `f` on a project's data under the store's lock (for reads: inspection, export).
    pub fn read<R>(&self, project: &str, f: impl FnOnce(&ProjectData) -> R) -> Option<R> {
        let inner = self.inner.lock();
        inner.projects.get(project).map(f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupRefusal {
    RateLimited,
    TooManyRows(usize),
}

fn hash_key(key: &DedupKey) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [
        key.event.as_bytes(),
        key.distinct_id.as_bytes(),
        key.insert_id.as_bytes(),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(&key.time_ms.to_le_bytes());
    h.digest128()
}

impl ProjectData {
    fn apply_profile_update(&mut self, update: &ProfileUpdate, at_ms: i64) {
        match &update.target {
            ProfileTarget::User { distinct_id } => {
                apply_to_slot(&mut self.profiles, distinct_id.clone(), update, at_ms)
            }
            ProfileTarget::Group {
                group_key,
                group_id,
            } => apply_to_slot(
                &mut self.groups,
                (group_key.clone(), group_id.clone()),
                update,
                at_ms,
            ),
        }
    }
}

/// Applies one update to the profile under `key` (created empty), removing it on `$delete`.
fn apply_to_slot<K: Ord + Clone>(
    profiles: &mut BTreeMap<K, Profile>,
    key: K,
    update: &ProfileUpdate,
    at_ms: i64,
) {
    let profile = profiles.entry(key.clone()).or_default();
    match profiles::apply(profile, &update.op) {
        Applied::Kept if !update.ignore_time => {
            profile.last_seen_ms = Some(update.time_ms.unwrap_or(at_ms))
        }
        Applied::Kept => {}
        Applied::Deleted => {
            profiles.remove(&key);
        }
    }
}

impl Inner {
    fn project(&mut self, id: &str) -> &mut ProjectData {
        self.projects.entry(id.to_owned()).or_default()
    }

    fn journal_append(&mut self, entry: &Entry) -> Result<(), StoreError> {
        if let Some(j) = self.journal.as_mut() {
            j.append(std::slice::from_ref(entry))?;
        }
        Ok(())
    }

    /// Applies one entry (live or replayed). For events returns counts.
    fn apply(&mut self, entry: Entry) -> Option<EventsStored> {
        match entry {
            Entry::Events {
                project,
                at_ms,
                events,
            } => {
                let data = self.project(&project);
                let mut out = EventsStored::default();
                for (key, event) in events {
                    match data.events.insert(
                        key,
                        StoredEvent {
                            event,
                            ingested_ms: at_ms,
                        },
                    ) {
                        None => out.new += 1,
                        Some(_) => out.replaced += 1,
                    }
                }
                Some(out)
            }
            Entry::DeleteEvents { project, keys } => {
                let data = self.project(&project);
                let new = keys
                    .iter()
                    .filter(|k| data.events.remove(*k).is_some())
                    .count();
                Some(EventsStored { new, replaced: 0 })
            }
            Entry::Profiles {
                project,
                kind,
                at_ms,
                updates,
            } => {
                let data = self.project(&project);
                for raw in &updates {
                    // Journaled updates were valid when accepted; validation is deterministic.
                    if let Ok(u) = validate_profile_update(raw, 0, kind) {
                        data.apply_profile_update(&u, at_ms);
                    }
                }
                None
            }
            Entry::LookupCreate { project, id, name } => {
                self.project(&project)
                    .lookup_tables
                    .entry(id)
                    .or_insert_with(|| LookupSlot {
                        name,
                        ..Default::default()
                    });
                None
            }
            Entry::LookupReplace {
                project,
                id,
                at_ms,
                table,
            } => {
                let slot = self.project(&project).lookup_tables.entry(id).or_default();
                slot.table = Some(table);
                let day_ago = at_ms - 24 * 3600 * 1000;
                slot.replaced_at_ms.retain(|t| *t > day_ago);
                slot.replaced_at_ms.push(at_ms);
                None
            }
            Entry::ProfileSnapshot {
                project,
                kind: _,
                target,
                profile,
            } => {
                let data = self.project(&project);
                match target {
                    ProfileTarget::User { distinct_id } => {
                        data.profiles.insert(distinct_id, profile);
                    }
                    ProfileTarget::Group {
                        group_key,
                        group_id,
                    } => {
                        data.groups.insert((group_key, group_id), profile);
                    }
                }
                None
            }
            Entry::LookupSnapshot { project, id, slot } => {
                self.project(&project).lookup_tables.insert(id, slot);
                None
            }
        }
    }

    /// The whole state as journal entries, for compaction.
    fn snapshot(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        for (project, data) in &self.projects {
            let mut by_time: BTreeMap<i64, Vec<(DedupKey, Value)>> = BTreeMap::new();
            for (key, stored) in &data.events {
                by_time
                    .entry(stored.ingested_ms)
                    .or_default()
                    .push((key.clone(), stored.event.clone()));
            }
            for (at_ms, events) in by_time {
                out.push(Entry::Events {
                    project: project.clone(),
                    at_ms,
                    events,
                });
            }
            for (id, profile) in &data.profiles {
                out.push(Entry::ProfileSnapshot {
                    project: project.clone(),
                    kind: ProfileKind::User,
                    target: ProfileTarget::User {
                        distinct_id: id.clone(),
                    },
                    profile: profile.clone(),
                });
            }
            for ((group_key, group_id), profile) in &data.groups {
                out.push(Entry::ProfileSnapshot {
                    project: project.clone(),
                    kind: ProfileKind::Group,
                    target: ProfileTarget::Group {
                        group_key: group_key.clone(),
                        group_id: group_id.clone(),
                    },
                    profile: profile.clone(),
                });
            }
            for (id, slot) in &data.lookup_tables {
                out.push(Entry::LookupSnapshot {
                    project: project.clone(),
                    id: id.clone(),
                    slot: slot.clone(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn project() -> Vec<ProjectConfig> {
        vec![ProjectConfig {
            id: "p".into(),
            token: "t".into(),
            secret: None,
            group_keys: None,
            lookup_tables: vec![],
            rate_limit: Default::default(),
        }]
    }

    fn key(i: i64) -> DedupKey {
        DedupKey {
            event: "e".into(),
            distinct_id: "u".into(),
            time_ms: i,
            insert_id: format!("i{i}"),
        }
    }

    #[test]
    fn compaction_keeps_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreMode::Disk, Some(dir.path()), &project()).unwrap();
        store
            .put_events(
                "p",
                5,
                vec![(key(1), json!({"v": 1})), (key(2), json!({"v": 2}))],
            )
            .unwrap();
        store
            .put_events("p", 6, vec![(key(1), json!({"v": 3}))])
            .unwrap();
        store.delete_events("p", vec![key(2)]).unwrap();
        let snapshot = store.inner.lock().snapshot();
        store
            .inner
            .lock()
            .journal
            .as_mut()
            .unwrap()
            .rewrite(&snapshot)
            .unwrap();
        drop(store);
        let store = Store::open(StoreMode::Disk, Some(dir.path()), &project()).unwrap();
        let events = store.read("p", |d| d.events.clone()).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[&key(1)].event, json!({"v": 3}));
        assert_eq!(events[&key(1)].ingested_ms, 6);
    }

    #[test]
    fn memory_mode_counts_keys_once_whichever_way_they_come() {
        let store = Store::open(StoreMode::Memory, None, &project()).unwrap();
        let stored = store
            .put_event_keys("p", &[key(1), key(2), key(1)])
            .unwrap();
        assert_eq!(
            stored,
            EventsStored {
                new: 2,
                replaced: 1
            }
        );
        let stored = store
            .put_events("p", 7, vec![(key(2), json!({})), (key(3), json!({}))])
            .unwrap();
        assert_eq!(
            stored,
            EventsStored {
                new: 1,
                replaced: 1
            }
        );
        assert_eq!(store.read("p", |d| d.event_count()), Some(3));
        assert!(matches!(
            store.put_event_keys("nope", &[key(1)]),
            Err(StoreError::UnknownProject(_))
        ));
    }
}
