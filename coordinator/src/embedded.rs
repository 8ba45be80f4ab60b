//! The single-node state store: one redb file under the node's data directory, the same keys and
//! values as etcd, and an in-process lease.
//!
//! etcd's semantics are reproduced where the fencing depends on them:
//! - a store-wide **revision** increases with every write transaction and is persisted, so it
//!   keeps increasing across restarts;
//! - every value carries its key's **create revision** and **mod revision**; a claim's fencing
//!   token is its owner key's create revision, and runs are ordered by theirs;
//! - the **lease** is the process: opening the store voids every claim left by the previous
//!   process (it died, or it would still hold the file lock), so an old fence is refused after a
//!   restart.
//!
//! redb calls block (a commit waits for fsync), so each call runs on the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use ferry_core::value::Value;
use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::keys;
use crate::records::{CursorRecord, Owner, OwnerValue, RunRecord, SyncId};
use crate::store::{Fence, StateStore, StoreError};

/// The etcd-shaped keys and their versioned values.
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Store bookkeeping that etcd keeps internally (the revision counter).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
/// How many times the store was opened: each opening is a new lease epoch.
const EPOCH: &str = "epoch";

#[derive(Debug, Clone)]
pub struct EmbeddedSettings {
    /// Runs kept per sync; creating one more deletes the oldest.
    pub runs_kept_per_sync: usize,
    /// Per-row errors kept in one run record (the counts stay complete).
    pub errors_kept_per_run: usize,
}

impl Default for EmbeddedSettings {
    fn default() -> Self {
        Self {
            runs_kept_per_sync: 100,
            errors_kept_per_run: 1000,
        }
    }
}

pub struct EmbeddedStore {
    db: Arc<Database>,
    settings: Arc<EmbeddedSettings>,
    path: PathBuf,
    epoch: u64,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl EmbeddedStore {
    /// The file's name inside the node's data directory.
    pub const FILE_NAME: &'static str = "state.redb";

    /// Opens (or creates) `<data_dir>/state.redb`. Blocking: call it at startup, or from
    /// `spawn_blocking`. Voids the claims of the previous process.
    pub fn open_in(data_dir: &Path, settings: EmbeddedSettings) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Unavailable(format!("creating {}: {e}", data_dir.display()))
        })?;
        Self::open(&data_dir.join(Self::FILE_NAME), settings)
    }

    /// Opens (or creates) the store file at `path`. Blocking, like [`Self::open_in`].
    pub fn open(path: &Path, settings: EmbeddedSettings) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let db = Database::create(path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::InUse(shown.clone()),
            DatabaseError::Storage(redb::StorageError::Io(io)) => {
                StoreError::Unavailable(format!("opening {shown}: {io}"))
            }
            other => StoreError::Backend(format!("opening {shown}: {other}")),
        })?;
        let epoch = write_txn(&db, |txn| {
            // The new lease epoch: whatever the previous process claimed is void.
            let stale: Vec<String> = txn.keys_under(keys::OWNERS)?;
            for key in stale {
                txn.remove(&key)?;
            }
            let epoch = txn.meta(EPOCH)? + 1;
            txn.set_meta(EPOCH, epoch)?;
            txn.bump_revision()?;
            Ok(epoch)
        })?;
        Ok(Self {
            db: Arc::new(db),
            settings: Arc::new(settings),
            path: path.to_path_buf(),
            epoch,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many times this file was opened, this time included.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Txn<'_>, &EmbeddedSettings) -> Result<R, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        let settings = self.settings.clone();
        tokio::task::spawn_blocking(move || write_txn(&db, |txn| f(txn, &settings)))
            .await
            .map_err(|e| StoreError::Backend(format!("state-store task: {e}")))?
    }

    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Reader) -> Result<R, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(KV).map_err(backend)?;
            f(&Reader { table })
        })
        .await
        .map_err(|e| StoreError::Backend(format!("state-store task: {e}")))?
    }
}

#[async_trait]
impl StateStore for EmbeddedStore {
    async fn claim(&self, sync: &SyncId, node_id: &str) -> Result<Fence, StoreError> {
        if !keys::is_valid_segment(node_id) {
            return Err(StoreError::Invalid(format!("node id {node_id:?}")));
        }
        let (sync, node_id) = (sync.clone(), node_id.to_string());
        self.write(move |txn, _| {
            let key = keys::owner(&sync);
            if let Some(current) = txn.get::<OwnerValue>(&key)? {
                let owner = Owner {
                    node_id: current.value.node_id,
                    token: current.create_revision,
                    claimed_at: current.value.claimed_at,
                };
                return Err(StoreError::Owned { sync, owner });
            }
            let token = txn.put(
                &key,
                &OwnerValue {
                    node_id: node_id.clone(),
                    claimed_at: Utc::now(),
                },
            )?;
            Ok(Fence::new(sync, node_id, token))
        })
        .await
    }

    async fn release(&self, fence: &Fence) -> Result<(), StoreError> {
        let fence = fence.clone();
        self.write(move |txn, _| {
            let key = keys::owner(fence.sync());
            match txn.get::<OwnerValue>(&key)? {
                None => Ok(()),
                Some(current) if current.create_revision == fence.token() => txn.remove(&key),
                Some(current) => Err(StoreError::Fenced {
                    sync: fence.sync().clone(),
                    token: fence.token(),
                    current: Some(current.create_revision),
                }),
            }
        })
        .await
    }

    async fn current_owner(&self, sync: &SyncId) -> Result<Option<Owner>, StoreError> {
        let key = keys::owner(sync);
        self.read(move |r| {
            Ok(r.get::<OwnerValue>(&key)?.map(|v| Owner {
                node_id: v.value.node_id,
                token: v.create_revision,
                claimed_at: v.value.claimed_at,
            }))
        })
        .await
    }

    async fn get_cursor(&self, sync: &SyncId) -> Result<Option<CursorRecord>, StoreError> {
        let key = keys::cursor(sync);
        self.read(move |r| Ok(r.get::<CursorRecord>(&key)?.map(|v| v.value)))
            .await
    }

    async fn commit_cursor(
        &self,
        fence: &Fence,
        run_id: &str,
        cursor: &Value,
    ) -> Result<(), StoreError> {
        if !keys::is_valid_segment(run_id) {
            return Err(StoreError::Invalid(format!("run id {run_id:?}")));
        }
        let record = CursorRecord {
            value: cursor.clone(),
            committed_at: Utc::now(),
            run_id: run_id.to_string(),
            node_id: fence.node_id().to_string(),
            token: fence.token(),
        };
        let fence = fence.clone();
        self.write(move |txn, _| {
            txn.check_fence(&fence)?;
            txn.put(&keys::cursor(fence.sync()), &record).map(drop)
        })
        .await
    }

    async fn reset_cursor(&self, fence: &Fence) -> Result<(), StoreError> {
        let fence = fence.clone();
        self.write(move |txn, _| {
            txn.check_fence(&fence)?;
            txn.remove(&keys::cursor(fence.sync()))
        })
        .await
    }

    async fn put_run(&self, fence: &Fence, run: &RunRecord) -> Result<(), StoreError> {
        if run.sync != *fence.sync() {
            return Err(StoreError::Invalid(format!(
                "run {} of sync {} written under the fence of sync {}",
                run.run_id,
                run.sync,
                fence.sync()
            )));
        }
        if !keys::is_valid_segment(&run.run_id) {
            return Err(StoreError::Invalid(format!("run id {:?}", run.run_id)));
        }
        let (fence, mut run) = (fence.clone(), run.clone());
        self.write(move |txn, settings| {
            txn.check_fence(&fence)?;
            run.bound_errors(settings.errors_kept_per_run);
            let key = keys::run(fence.sync(), &run.run_id);
            let created = !txn.contains(&key)?;
            txn.put(&key, &run)?;
            if created {
                txn.trim_history(
                    &keys::runs_of(fence.sync()),
                    settings.runs_kept_per_sync.max(1),
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn get_run(&self, sync: &SyncId, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        if !keys::is_valid_segment(run_id) {
            return Ok(None);
        }
        let key = keys::run(sync, run_id);
        self.read(move |r| Ok(r.get::<RunRecord>(&key)?.map(|v| v.value)))
            .await
    }

    async fn list_runs(&self, sync: &SyncId, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let prefix = keys::runs_of(sync);
        self.read(move |r| {
            let mut newest_first = r.headers_under(&prefix)?;
            newest_first.sort_by_key(|(_, header)| std::cmp::Reverse(header.create_revision));
            newest_first.truncate(limit);
            let mut runs = Vec::with_capacity(newest_first.len());
            for (key, _) in newest_first {
                if let Some(v) = r.get::<RunRecord>(&key)? {
                    runs.push(v.value);
                }
            }
            Ok(runs)
        })
        .await
    }
}

/// A stored value and its key's revisions, as etcd reports them.
struct Versioned<T> {
    create_revision: u64,
    value: T,
}

/// The revisions in front of every stored value.
#[derive(Debug, Clone, Copy)]
struct Header {
    create_revision: u64,
    #[allow(dead_code)] // kept for parity with etcd (compare-and-swap on mod revision comes later)
    mod_revision: u64,
}

const HEADER_LEN: usize = 16;

/// Layout: create revision (u64 LE), mod revision (u64 LE), then the value as JSON. The header
/// comes first so history trimming and ordering read 16 bytes, not whole run records.
fn encode<T: Serialize>(header: Header, value: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::with_capacity(256);
    bytes.extend_from_slice(&header.create_revision.to_le_bytes());
    bytes.extend_from_slice(&header.mod_revision.to_le_bytes());
    serde_json::to_writer(&mut bytes, value)
        .map_err(|e| StoreError::Backend(format!("encoding a value: {e}")))?;
    Ok(bytes)
}

fn decode_header(key: &str, bytes: &[u8]) -> Result<Header, StoreError> {
    let corrupt = || StoreError::Corrupt {
        key: key.to_string(),
        reason: format!("{} bytes, shorter than the header", bytes.len()),
    };
    let create = bytes
        .get(0..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    let modified = bytes
        .get(8..HEADER_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    Ok(Header {
        create_revision: u64::from_le_bytes(create),
        mod_revision: u64::from_le_bytes(modified),
    })
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<Versioned<T>, StoreError> {
    let header = decode_header(key, bytes)?;
    let value = serde_json::from_slice(&bytes[HEADER_LEN..]).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })?;
    Ok(Versioned {
        create_revision: header.create_revision,
        value,
    })
}

fn backend(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(io) => StoreError::Unavailable(io.to_string()),
        redb::Error::DatabaseAlreadyOpen => StoreError::InUse("the state file".into()),
        other => StoreError::Backend(other.to_string()),
    }
}

/// Runs `f` in one write transaction: all of it is committed (durably) or none of it. An error
/// from `f` drops the transaction, which aborts it — a fenced write changes nothing.
fn write_txn<R>(
    db: &Database,
    f: impl FnOnce(&mut Txn<'_>) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    let mut txn = db.begin_write().map_err(backend)?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::Backend(e.to_string()))?;
    let out = {
        let kv = txn.open_table(KV).map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        let mut t = Txn {
            kv,
            meta,
            revision: None,
        };
        let out = f(&mut t)?;
        t.finish()?;
        out
    };
    txn.commit().map_err(backend)?;
    Ok(out)
}

/// One write transaction, etcd-style: all writes in it share one new revision.
struct Txn<'t> {
    kv: redb::Table<'t, &'static str, &'static [u8]>,
    meta: redb::Table<'t, &'static str, u64>,
    revision: Option<u64>,
}

impl Txn<'_> {
    fn meta(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self
            .meta
            .get(name)
            .map_err(backend)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    fn set_meta(&mut self, name: &str, value: u64) -> Result<(), StoreError> {
        self.meta.insert(name, value).map_err(backend).map(drop)
    }

    /// This transaction's revision (the first write allocates it).
    fn bump_revision(&mut self) -> Result<u64, StoreError> {
        match self.revision {
            Some(r) => Ok(r),
            None => {
                let r = self.meta(REVISION)? + 1;
                self.revision = Some(r);
                Ok(r)
            }
        }
    }

    fn finish(mut self) -> Result<(), StoreError> {
        if let Some(r) = self.revision {
            self.set_meta(REVISION, r)?;
        }
        Ok(())
    }

    fn header(&self, key: &str) -> Result<Option<Header>, StoreError> {
        match self.kv.get(key).map_err(backend)? {
            Some(bytes) => decode_header(key, bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    fn contains(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.kv.get(key).map_err(backend)?.is_some())
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Versioned<T>>, StoreError> {
        match self.kv.get(key).map_err(backend)? {
            Some(bytes) => decode(key, bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Writes `value`; returns the key's create revision (this transaction's, if it is new).
    fn put<T: Serialize>(&mut self, key: &str, value: &T) -> Result<u64, StoreError> {
        let revision = self.bump_revision()?;
        let create_revision = self.header(key)?.map_or(revision, |h| h.create_revision);
        let bytes = encode(
            Header {
                create_revision,
                mod_revision: revision,
            },
            value,
        )?;
        self.kv.insert(key, bytes.as_slice()).map_err(backend)?;
        Ok(create_revision)
    }

    fn remove(&mut self, key: &str) -> Result<(), StoreError> {
        self.bump_revision()?;
        self.kv.remove(key).map_err(backend)?;
        Ok(())
    }

    fn keys_under(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let end = keys::prefix_end(prefix);
        let mut out = Vec::new();
        for entry in self.kv.range(prefix..end.as_str()).map_err(backend)? {
            let (key, _) = entry.map_err(backend)?;
            out.push(key.value().to_string());
        }
        Ok(out)
    }

    /// The fence is the sync's current claim: the owner key exists and was created by the claim
    /// that made the fence (etcd: `create_revision(owner) == token` in the transaction's compare).
    fn check_fence(&self, fence: &Fence) -> Result<(), StoreError> {
        let current = self
            .header(&keys::owner(fence.sync()))?
            .map(|h| h.create_revision);
        if current == Some(fence.token()) {
            Ok(())
        } else {
            Err(StoreError::Fenced {
                sync: fence.sync().clone(),
                token: fence.token(),
                current,
            })
        }
    }

    /// Keeps the `keep` most recently created keys under `prefix`.
    fn trim_history(&mut self, prefix: &str, keep: usize) -> Result<(), StoreError> {
        let end = keys::prefix_end(prefix);
        let mut entries = Vec::new();
        for entry in self.kv.range(prefix..end.as_str()).map_err(backend)? {
            let (key, bytes) = entry.map_err(backend)?;
            let key = key.value().to_string();
            let header = decode_header(&key, bytes.value())?;
            entries.push((header.create_revision, key));
        }
        if entries.len() <= keep {
            return Ok(());
        }
        entries.sort();
        let excess = entries.len() - keep;
        for (_, key) in entries.into_iter().take(excess) {
            self.remove(&key)?;
        }
        Ok(())
    }
}

/// A read transaction's view of the keys.
struct Reader {
    table: redb::ReadOnlyTable<&'static str, &'static [u8]>,
}

impl Reader {
    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Versioned<T>>, StoreError> {
        match self.table.get(key).map_err(backend)? {
            Some(bytes) => decode(key, bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    fn headers_under(&self, prefix: &str) -> Result<Vec<(String, Header)>, StoreError> {
        let end = keys::prefix_end(prefix);
        let mut out = Vec::new();
        for entry in self.table.range(prefix..end.as_str()).map_err(backend)? {
            let (key, bytes) = entry.map_err(backend)?;
            let key = key.value().to_string();
            let header = decode_header(&key, bytes.value())?;
            out.push((key, header));
        }
        Ok(out)
    }
}

mod catalog;

#[cfg(test)]
mod tests;
