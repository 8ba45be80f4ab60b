//! Mirror's warehouse side: what a warehouse must offer so the snapshot-and-checksum engine
//! (in `ferry-coordinator`'s `mirror` module) can run on it.
//!
//! The engine keeps, per sync, a snapshot of the source in a staging schema Ferry owns, with an
//! MD5 checksum per row, and diffs the newest snapshot against the previous one *inside the
//! warehouse*; only the changed rows ever leave it. Two things differ per warehouse:
//!
//! 1. **The SQL dialect** ([`MirrorDialect`]): identifier quoting, the canonical text of a value
//!    (what is hashed; it must equal [`ferry_core::checksum`]'s text for the same value), bound
//!    bind-parameter markers, and table options. Every statement is written by one pure module,
//!    [`sql`], from these hooks; a dialect's golden tests pin the full text it produces.
//! 2. **Running statements** ([`MirrorWarehouse`]): execute DDL/DML, and run small queries
//!    (counts, listings) with bound text parameters. Changed rows are streamed with the
//!    ordinary [`Warehouse::read`] of a SQL source with a [`super::CursorFilter`] on
//!    `_mp_change_seq` (a `bigint`), which the implementation must support.
//!
//! Sessions that hash must print values deterministically: UTC time zone, ISO dates, shortest
//! exact floats, hex bytea (PostgreSQL sets these per session; see its implementation).
//!
//! The SQL stays within what both PostgreSQL 15 and Redshift accept: `CONCAT` is never used
//! (`||` instead), there is no `IS DISTINCT FROM`, and the FULL OUTER JOIN of the diff joins
//! only grouped hash columns (`varchar`), never a table's own columns, so a Redshift `SUPER`
//! column never enters it; rows are fetched afterwards by joining the changes back on the
//! snapshot's identity and row hash.

#[cfg(test)]
pub(crate) mod golden;
pub mod sql;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use ferry_core::spec::{SourceKind, SourceSpec};
use ferry_core::value::{ColumnKind, RowBatch};

use super::{Warehouse, WarehouseError};

pub use sql::{
    MirrorSql, SnapshotRef, CHANGE_SEQ, CHANGE_TYPE, KEY_HASH, NEW_HASH, NEW_ROWS, OLD_HASH,
    OLD_ROWS, ROW_HASH,
};

/// What happened to a row between two snapshots, as the changes table and the change read
/// (`_mp_change_type`) spell it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ChangeType {
    Delete,
    Update,
    Insert,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Delete => "delete",
            ChangeType::Update => "update",
            ChangeType::Insert => "insert",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "delete" => Some(ChangeType::Delete),
            "update" => Some(ChangeType::Update),
            "insert" => Some(ChangeType::Insert),
            _ => None,
        }
    }
}

/// One SQL statement with its bound parameters (text values; the SQL casts them where it
/// needs another type). Values are never spliced into SQL text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<String>,
}

impl Statement {
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    pub fn with_params(sql: impl Into<String>, params: Vec<String>) -> Self {
        Self {
            sql: sql.into(),
            params,
        }
    }
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql)
    }
}

/// The warehouse-specific pieces of Mirror's SQL. Implementations are pure and small; the
/// statements themselves are written by [`sql::MirrorSql`].
pub trait MirrorDialect: Send + Sync + fmt::Debug {
    /// `postgres`, `redshift`: for messages and golden files.
    fn name(&self) -> &'static str;

    /// Quotes an identifier (inner quotes doubled).
    fn quote_ident(&self, name: &str) -> String;

    /// A `varchar` expression for the canonical text of the value of `expr`, a column of
    /// `kind` (see [`ferry_core::checksum`] for the text of each kind). It must be NULL exactly
    /// when the value is NULL.
    fn canonical_text(&self, expr: &str, kind: &ColumnKind) -> String;

    /// The marker of bound parameter `n` (1-based), typed as text: `$1::text` on
    /// PostgreSQL, `:p1` on the Redshift Data API.
    fn bind_param(&self, n: usize) -> String;

    /// Text between `CREATE TABLE <name>` and `AS` for a snapshot whose rows are found by
    /// `identity_column` (Redshift: `DISTKEY(...) SORTKEY(...)`). Nothing by default.
    fn snapshot_table_options(&self, identity_column: &str) -> String {
        let _ = identity_column;
        String::new()
    }

    /// Whether a new snapshot or changes table needs `ANALYZE` before it is queried (PostgreSQL
    /// plans the diff and the change read from statistics a `CREATE TABLE AS` does not
    /// gather; Redshift analyzes `CREATE TABLE AS` tables itself).
    fn analyze_after_create(&self) -> bool {
        false
    }
}

/// A warehouse Mirror can run on: it reads like any [`Warehouse`], and also runs statements.
#[async_trait]
pub trait MirrorWarehouse: Warehouse {
    fn dialect(&self) -> &dyn MirrorDialect;

    /// Runs `statements` in order in one session, each committed on its own, stopping at the
    /// first failure. For DDL and DML; results are discarded.
    async fn execute(&self, statements: &[Statement]) -> Result<(), WarehouseError>;

    /// Runs one query and returns all its rows: only for small results (counts, listings).
    async fn query(&self, statement: &Statement) -> Result<RowBatch, WarehouseError>;
}

/// Opens the warehouse of `spec` for Mirror, or says why it cannot run Mirror.
pub fn open_mirror_warehouse(
    spec: &SourceSpec,
) -> Result<Arc<dyn MirrorWarehouse>, WarehouseError> {
    match &spec.kind {
        #[cfg(feature = "warehouse-postgres")]
        SourceKind::Postgres(options) => Ok(Arc::new(super::postgres::PostgresWarehouse::new(
            options.clone(),
        ))),
        #[cfg(feature = "warehouse-redshift")]
        SourceKind::Redshift(options) => Ok(Arc::new(super::redshift::RedshiftWarehouse::new(
            (**options).clone(),
        ))),
        #[allow(unreachable_patterns)]
        other => Err(WarehouseError::Config(format!(
            "source '{}': mirror mode is not available for {} sources in this build",
            spec.id,
            other.warehouse_type()
        ))),
    }
}
