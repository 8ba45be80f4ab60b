//! SQLite, the embedded default source, through `rusqlite` (SQLite compiled in).
//!
//! rusqlite is blocking, so every call runs on tokio's blocking pool; a read walks its one
//! statement there and hands pages to the async side with `blocking_send`, which waits while the
//! channel is full: the channel bound is the only buffer. The database is opened read-only.
//!
//! Type mapping: see [`types`]. Append reads are `WHERE "col" IS NOT NULL AND "col" > ?1 ORDER BY
//! "col"`: rows with a NULL cursor are never read (they can never be placed after a cursor).
//! The cursor is bound as the value Ferry read: integers, reals, text as themselves; dates and
//! timestamps as SQLite's canonical text (`YYYY-MM-DD HH:MM:SS[.fff]`, UTC for zoned values),
//! so timestamp cursor columns must be stored in that form to compare correctly.

pub mod types;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use ferry_core::spec::SqliteOptions;
use ferry_core::value::{Column, RowBatch, Value};
use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;

use super::{
    Page, Pager, ReadRequest, ReadSource, ReadSummary, TableInfo, Warehouse, WarehouseError,
};

/// Quotes an SQLite identifier: wrapped in double quotes, inner double quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteWarehouse {
    path: PathBuf,
}

impl SqliteWarehouse {
    pub fn new(options: &SqliteOptions) -> Self {
        Self::open(&options.path)
    }

    pub fn open(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    fn connect(&self) -> Result<Connection, WarehouseError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(|e| {
            WarehouseError::Unreachable {
                target: self.path.display().to_string(),
                message: e.to_string(),
            }
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(map_err)?;
        Ok(conn)
    }

    /// Runs `f` with a fresh connection on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, WarehouseError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, WarehouseError> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = this.connect()?;
            f(&conn)
        })
        .await
        .map_err(|e| WarehouseError::Query(format!("the SQLite worker failed: {e}")))?
    }
}

/// `SELECT * FROM <source> AS ferry_src`.
fn select_all(source: &ReadSource) -> Result<String, WarehouseError> {
    let from = match source {
        ReadSource::Table { schema, name } => match schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(name)),
            None => quote_ident(name),
        },
        ReadSource::Sql(sql) => {
            let sql = sql.trim().trim_end_matches(';').trim();
            if sql.is_empty() {
                return Err(WarehouseError::Config("the SQL query is empty".into()));
            }
            format!("({sql})")
        }
    };
    Ok(format!("SELECT * FROM {from} AS ferry_src"))
}

fn map_err(e: rusqlite::Error) -> WarehouseError {
    use rusqlite::ErrorCode;
    let message = e.to_string();
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            _ if message.contains("no such table") => WarehouseError::NotFound {
                object: "table".into(),
                message,
            },
            _ if message.contains("no such column") => WarehouseError::NotFound {
                object: "column".into(),
                message,
            },
            ErrorCode::PermissionDenied | ErrorCode::AuthorizationForStatementDenied => {
                WarehouseError::Privilege(message)
            }
            ErrorCode::CannotOpen | ErrorCode::NotADatabase => WarehouseError::Unreachable {
                target: "sqlite".into(),
                message,
            },
            _ => WarehouseError::Query(message),
        },
        _ => WarehouseError::Query(message),
    }
}

fn columns_of(stmt: &rusqlite::Statement<'_>) -> Arc<[Column]> {
    stmt.columns()
        .iter()
        .map(|c| Column::new(c.name(), types::column_kind(c.decl_type())))
        .collect::<Vec<_>>()
        .into()
}

fn row_values(row: &rusqlite::Row<'_>, columns: &[Column]) -> Result<Vec<Value>, WarehouseError> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| types::cell(&c.kind, &c.name, row.get_ref(i).map_err(map_err)?))
        .collect()
}

/// The cursor value as SQLite compares it (see the module docs).
fn cursor_param(value: &Value) -> Result<ToSqlOutput<'static>, WarehouseError> {
    use rusqlite::types::Value as S;
    let fmt_naive = |t: &chrono::NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S%.f").to_string();
    Ok(ToSqlOutput::Owned(match value {
        Value::Null => S::Null,
        Value::Bool(b) => S::Integer(i64::from(*b)),
        Value::Int(i) => S::Integer(*i),
        Value::Float(f) => S::Real(*f),
        Value::Decimal(s) | Value::Text(s) => S::Text(s.clone()),
        Value::Bytes(b) => S::Blob(b.clone()),
        Value::Uuid(u) => S::Text(u.hyphenated().to_string()),
        Value::Date(d) => S::Text(d.format("%Y-%m-%d").to_string()),
        Value::Timestamp(t) => S::Text(fmt_naive(&t.naive_utc())),
        Value::TimestampNaive(t) => S::Text(fmt_naive(t)),
        Value::Json(j) => S::Text(j.to_string()),
        Value::JsonText(t) => S::Text(t.as_str().to_owned()),
        Value::Array(_) => {
            return Err(WarehouseError::Config(
                "an array cannot be a cursor value".into(),
            ))
        }
    }))
}

#[async_trait]
impl Warehouse for SqliteWarehouse {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn test_connection(&self) -> Result<(), WarehouseError> {
        self.blocking(|conn| {
            // Reading the schema fails on a file that is not a database.
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn list_tables(&self) -> Result<Vec<TableInfo>, WarehouseError> {
        self.blocking(|conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT name, type FROM sqlite_schema \
                     WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
                     ORDER BY name",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(TableInfo {
                        schema: None,
                        name: r.get(0)?,
                        kind: r.get(1)?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
        .await
    }

    async fn columns(&self, source: &ReadSource) -> Result<Vec<Column>, WarehouseError> {
        let sql = select_all(source)?;
        self.blocking(move |conn| {
            let stmt = conn.prepare(&sql).map_err(map_err)?;
            Ok(columns_of(&stmt).to_vec())
        })
        .await
    }

    async fn preview(&self, source: &ReadSource, limit: usize) -> Result<RowBatch, WarehouseError> {
        let sql = format!("{} LIMIT ?1", select_all(source)?);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.blocking(move |conn| {
            let mut stmt = conn.prepare(&sql).map_err(map_err)?;
            let columns = columns_of(&stmt);
            let mut rows = stmt.query([limit]).map_err(map_err)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(map_err)? {
                out.push(row_values(row, &columns)?);
            }
            Ok(RowBatch::new(columns, out))
        })
        .await
    }

    async fn read(
        &self,
        request: &ReadRequest,
        out: mpsc::Sender<Page>,
    ) -> Result<ReadSummary, WarehouseError> {
        let mut sql = select_all(&request.source)?;
        let mut param = None;
        if let Some(cursor) = &request.cursor {
            let col = quote_ident(&cursor.column);
            sql.push_str(&format!(" WHERE {col} IS NOT NULL"));
            if let Some(after) = &cursor.after {
                sql.push_str(&format!(" AND {col} > ?1"));
                param = Some(cursor_param(after)?);
            }
            sql.push_str(&format!(" ORDER BY {col}"));
        }
        let cursor_column = request.cursor.as_ref().map(|c| c.column.clone());
        let page_size = request.page_size;
        self.blocking(move |conn| {
            let mut stmt = conn.prepare(&sql).map_err(map_err)?;
            let columns = columns_of(&stmt);
            let cursor_index = match &cursor_column {
                Some(name) => Some(ferry_core::value::column_index(&columns, name).ok_or_else(
                    || WarehouseError::NotFound {
                        object: format!("cursor column '{name}'"),
                        message: "the source has no such column".into(),
                    },
                )?),
                None => None,
            };
            let mut rows = match &param {
                Some(p) => stmt.query([p]),
                None => stmt.query([]),
            }
            .map_err(map_err)?;
            let mut pager = Pager::new(columns.clone(), cursor_index, page_size);
            let mut summary = ReadSummary::default();
            let send = |page: Page, summary: &mut ReadSummary| {
                summary.rows += page.batch.len() as u64;
                summary.pages += 1;
                out.blocking_send(page).map_err(|_| WarehouseError::Stopped)
            };
            while let Some(row) = rows.next().map_err(map_err)? {
                if let Some(page) = pager.push(row_values(row, &columns)?) {
                    send(page, &mut summary)?;
                }
            }
            if let Some(page) = pager.finish() {
                send(page, &mut summary)?;
            }
            Ok(summary)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_once() {
        assert_eq!(quote_ident("a"), "\"a\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(
            select_all(&ReadSource::Table {
                schema: Some("main".into()),
                name: "t\"x".into()
            })
            .unwrap(),
            "SELECT * FROM \"main\".\"t\"\"x\" AS ferry_src"
        );
        assert_eq!(
            select_all(&ReadSource::Sql("select 1;".into())).unwrap(),
            "SELECT * FROM (select 1) AS ferry_src"
        );
    }
}
