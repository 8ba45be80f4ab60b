//! Warehouses as sources. Each warehouse is one folder behind its own Cargo feature and
//! implements [`Warehouse`]; the pipeline only ever sees this trait.
//!
//! Reads stream pages of rows into a bounded channel, so memory stays bounded whatever the table
//! size: the channel's bound is the backpressure.

use async_trait::async_trait;
use ferry_core::error::{Classify, ErrorClass};
use ferry_core::value::{Column, RowBatch, Value};
use tokio::sync::mpsc;

/// What a sync reads: a table or view, or a SQL query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadSource {
    Table {
        schema: Option<String>,
        name: String,
    },
    Sql(String),
}

/// Append mode's filter: rows whose `column` is strictly greater than `after` (all rows when
/// `after` is `None`), in ascending order of `column`.
#[derive(Debug, Clone, PartialEq)]
pub struct CursorFilter {
    pub column: String,
    pub after: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReadRequest {
    pub source: ReadSource,
    pub cursor: Option<CursorFilter>,
    /// Rows per page sent on the channel.
    pub page_size: usize,
}

/// One page of rows. With a cursor, `complete_through` is the greatest cursor value `v` such
/// that every row with cursor ≤ `v` is in this page or an earlier one: the only values that can
/// be committed safely (rows sharing a cursor value may straddle pages).
#[derive(Debug, Clone)]
pub struct Page {
    pub batch: RowBatch,
    pub complete_through: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub schema: Option<String>,
    pub name: String,
    /// `table`, `view`, …, as the warehouse names it.
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadSummary {
    pub rows: u64,
    pub pages: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("cannot reach the warehouse at {target}: {message}")]
    Unreachable { target: String, message: String },
    #[error("the warehouse refused the credentials: {0}")]
    Authentication(String),
    #[error("TLS verification failed: {0}")]
    Tls(String),
    #[error("missing privilege: {0}")]
    Privilege(String),
    #[error("{object} does not exist: {message}")]
    NotFound { object: String, message: String },
    #[error("the query failed: {0}")]
    Query(String),
    #[error("the connection was lost mid-read: {0}")]
    ConnectionLost(String),
    #[error("column '{column}' has a value Ferry cannot read: {message}")]
    Value { column: String, message: String },
    #[error("invalid source configuration: {0}")]
    Config(String),
    /// The SSH tunnel to the database failed for a reason retrying will not fix (a refused
    /// key, a host key mismatch, forwarding refused). An unreachable bastion is `Unreachable`.
    #[error("SSH tunnel: {0}")]
    Tunnel(String),
    /// The consumer stopped listening (the run was cancelled or restarted).
    #[error("the reader was stopped")]
    Stopped,
    /// The warehouse's API refused the request for now (a rate or concurrency limit).
    #[error("the warehouse is throttling requests: {0}")]
    Throttled(String),
}

impl Classify for WarehouseError {
    fn class(&self) -> ErrorClass {
        match self {
            WarehouseError::Unreachable { .. }
            | WarehouseError::ConnectionLost(_)
            | WarehouseError::Throttled(_) => ErrorClass::Retryable,
            WarehouseError::Value { .. } => ErrorClass::PerRow,
            _ => ErrorClass::Fatal,
        }
    }
}

/// A warehouse connection. Implementations hold only connection settings and open sessions as
/// they need them, so a `Warehouse` can be shared by the actors of a sync.
#[async_trait]
pub trait Warehouse: Send + Sync {
    /// `postgres`, `sqlite`, … (the `$warehouse_type` property).
    fn kind(&self) -> &'static str;

    /// Opens a session and runs a trivial query; the error says what failed.
    async fn test_connection(&self) -> Result<(), WarehouseError>;

    async fn list_tables(&self) -> Result<Vec<TableInfo>, WarehouseError>;

    /// The columns a read of `source` returns, with their types.
    async fn columns(&self, source: &ReadSource) -> Result<Vec<Column>, WarehouseError>;

    /// The first `limit` rows of `source`.
    async fn preview(&self, source: &ReadSource, limit: usize) -> Result<RowBatch, WarehouseError>;

    /// Streams the rows of `request` into `out`, page by page. Returns when every row was sent,
    /// or with `WarehouseError::Stopped` when `out` was closed.
    async fn read(
        &self,
        request: &ReadRequest,
        out: mpsc::Sender<Page>,
    ) -> Result<ReadSummary, WarehouseError>;
}

pub mod mirror;
mod open;
mod paging;
pub use paging::Pager;

#[cfg(feature = "warehouse-postgres")]
pub mod postgres;
#[cfg(feature = "warehouse-redshift")]
pub mod redshift;
#[cfg(feature = "warehouse-sqlite")]
pub mod sqlite;

pub use open::open_warehouse;
