//! Mirror mode: the snapshot-and-checksum engine. Each run copies the source (table or SQL)
//! into a staging schema Ferry owns (`ferry_staging`), with an MD5 checksum per row (the
//! scheme of `ferry_core::checksum`, computed by the warehouse), diffs it against the previous
//! snapshot *inside the warehouse*, and streams only the changed rows through the ordinary
//! pipeline (Warehouse read → RowMapper → import shards → fenced checkpoint). The warehouse
//! side (dialect, statements) is `ferry_connectors::warehouse::mirror`; Postgres and Redshift
//! implement it.
//!
//! ## A run, and what a crash at each point leaves
//!
//! The cursor ([`cursor::MirrorCursor`], committed through the fenced state-store write) names
//! the acknowledged snapshot `current` and, while one is being sent, the `pending` generation
//! with its changes table and the last acknowledged change number.
//!
//! 1. Drop the sync's staging tables the cursor does not name (a dead run's snapshot or
//!    changes table: never acknowledged, so never needed).
//! 2. If a generation is pending, send its changes after the last acknowledged one, then
//!    rotate (below). Nothing acknowledged is sent again; nothing unacknowledged is lost.
//! 3. Compare the source's columns with `current`'s: columns added at the end are fine;
//!    anything else fails the run before anything is created or sent, unless the sync sets
//!    `accept_schema_change`.
//! 4. Snapshot the source into `snap_<sync>_<n+1>_<run>`, diff it against `current` into
//!    `chg_<sync>_<n+1>_<run>` (numbered changes: deletes, updates, inserts), count them, and commit
//!    the cursor with this generation pending. A crash before that commit leaves only
//!    leftovers (step 1); after it, step 2 picks the generation up.
//! 5. Send the changes; each acknowledged page commits its last change number.
//! 6. Rotate: commit the pending generation as `current`, then drop the previous snapshot and
//!    the changes table. A crash between the two leaves leftovers for step 1.
//!
//! So a run killed anywhere loses nothing and re-sends at most the unacknowledged tail of one
//! page batch (harmless: the same `$insert_id`, the same `$set`, the same `$delete`).
//!
//! ## Changes → records
//!
//! See `ferry_actors::changes`: events are re-sent under the same dedup key (their identity in
//! the diff includes the dedup-key columns, so an event whose time or id changed is deleted and
//! inserted, not updated); deletes go to the bundled receiver's delete extension when the
//! destination has it and are otherwise counted and listed as not applied; profiles get
//! `$set`, `$unset` and `$delete`; a lookup table is replaced whole when anything changed.
//! Profile history rows are events at their start time, identified by id and start time.

pub mod cursor;
mod dry_run;
mod engine;
pub mod naming;
pub mod schema;
mod send;

use ferry_connectors::mixpanel::MixpanelError;
use ferry_connectors::warehouse::WarehouseError;
use ferry_core::error::{Classify, ErrorClass};
use ferry_core::spec::SpecErrors;

pub use dry_run::{dry_run, DryRunSample, MirrorDryRun};
pub use engine::{drop_staging, run, Executed, MirrorRun, MirrorTimings};

use crate::store::StoreError;

/// The schema Ferry keeps its snapshots in, in the source's database.
pub const STAGING_SCHEMA: &str = "ferry_staging";

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("{0}")]
    Spec(SpecErrors),
    #[error("source: {0}")]
    Warehouse(#[from] WarehouseError),
    #[error("cannot create the staging schema \"{schema}\" ({source}): Ferry needs CREATE on the database, or CREATE on an existing schema of that name")]
    Staging {
        schema: String,
        source: WarehouseError,
    },
    #[error("destination: {0}")]
    Destination(#[from] MixpanelError),
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("the source's columns changed since the last run: {0}. Nothing was sent. Set accept_schema_change = true on the sync to re-send the rows this changes, or restore the columns")]
    SchemaChanged(String),
    #[error("{0}")]
    Pipeline(String),
    #[error("the stored mirror state cannot be read: {0}")]
    Cursor(String),
    #[error("cancelled")]
    Cancelled,
}

impl Classify for MirrorError {
    fn class(&self) -> ErrorClass {
        match self {
            MirrorError::Warehouse(e) => e.class(),
            MirrorError::Destination(e) => e.class(),
            MirrorError::Store(e) => e.class(),
            MirrorError::Staging { .. }
            | MirrorError::Spec(_)
            | MirrorError::SchemaChanged(_)
            | MirrorError::Cursor(_)
            | MirrorError::Cancelled => ErrorClass::Fatal,
            MirrorError::Pipeline(_) => ErrorClass::Retryable,
        }
    }
}
