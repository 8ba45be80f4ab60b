//! Mirror on PostgreSQL: the dialect (how a value's canonical text is written in SQL) and the
//! statement runner. The statements come from [`crate::warehouse::mirror::sql`].
//!
//! Canonical text per column kind, matching [`ferry_core::checksum`]:
//! booleans `CASE … 't' / 'f'` (NULL stays NULL), floats through `float8` (a `real` is widened
//! exactly as the reader widens it), zoned timestamps `AT TIME ZONE 'UTC'`, JSON through `jsonb`
//! (so `json` and `jsonb` columns hash alike), everything else `CAST(… AS text)`.
//!
//! Every session Mirror opens first fixes the settings that change how values print, so a
//! checksum never depends on the server's or the role's defaults: `TimeZone = UTC`,
//! `DateStyle = ISO, MDY`, `IntervalStyle = postgres`, `extra_float_digits = 1` (shortest exact),
//! `bytea_output = hex`. It also sets `work_mem = 128MB`, so the diff's hash tables of a
//! million-row snapshot stay in memory instead of spilling to disk.
//!
//! New snapshots and changes tables are `ANALYZE`d before they are queried: without
//! statistics the planner sorts a whole snapshot to join a few changed rows.
//!
//! Known differences from the Rust checksum (they change no diff, which compares SQL hashes
//! with SQL hashes): arrays of zoned timestamps print with `+00`, `char(n)` loses its padding,
//! and JSON numbers print as PostgreSQL prints them.

use async_trait::async_trait;
use ferry_core::value::{Column, ColumnKind, RowBatch, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::types::Cell;
use super::{query_error, PostgresWarehouse};
use crate::warehouse::mirror::{MirrorDialect, MirrorWarehouse, Statement};
use crate::warehouse::WarehouseError;

const SESSION_SETTINGS: &str = "SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, MDY'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex'; \
     SET work_mem = '128MB'";

/// PostgreSQL's Mirror dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct PostgresDialect;

impl MirrorDialect for PostgresDialect {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn quote_ident(&self, name: &str) -> String {
        super::quote_ident(name)
    }

    fn canonical_text(&self, expr: &str, kind: &ColumnKind) -> String {
        match kind {
            ColumnKind::Bool => format!("CASE WHEN {expr} THEN 't' WHEN NOT {expr} THEN 'f' END"),
            ColumnKind::Float => format!("CAST(CAST({expr} AS float8) AS text)"),
            ColumnKind::Timestamp => format!("CAST(({expr} AT TIME ZONE 'UTC') AS text)"),
            ColumnKind::Json => format!("CAST(CAST({expr} AS jsonb) AS text)"),
            _ => format!("CAST({expr} AS text)"),
        }
    }

    fn bind_param(&self, n: usize) -> String {
        format!("${n}::text")
    }

    fn analyze_after_create(&self) -> bool {
        true
    }
}

impl PostgresWarehouse {
    async fn mirror_session(&self) -> Result<Client, WarehouseError> {
        let client = self.connect().await?;
        client
            .batch_execute(SESSION_SETTINGS)
            .await
            .map_err(query_error)?;
        Ok(client)
    }
}

fn params(statement: &Statement) -> Vec<&(dyn ToSql + Sync)> {
    statement
        .params
        .iter()
        .map(|p| p as &(dyn ToSql + Sync))
        .collect()
}

#[async_trait]
impl MirrorWarehouse for PostgresWarehouse {
    fn dialect(&self) -> &dyn MirrorDialect {
        &PostgresDialect
    }

    async fn execute(&self, statements: &[Statement]) -> Result<(), WarehouseError> {
        let client = self.mirror_session().await?;
        for statement in statements {
            if statement.params.is_empty() {
                client
                    .batch_execute(&statement.sql)
                    .await
                    .map_err(query_error)?;
            } else {
                client
                    .execute(statement.sql.as_str(), &params(statement))
                    .await
                    .map_err(query_error)?;
            }
        }
        Ok(())
    }

    async fn query(&self, statement: &Statement) -> Result<RowBatch, WarehouseError> {
        let client = self.mirror_session().await?;
        let prepared = client.prepare(&statement.sql).await.map_err(query_error)?;
        let rows = client
            .query(&prepared, &params(statement))
            .await
            .map_err(query_error)?;
        let columns: Vec<Column> = prepared
            .columns()
            .iter()
            .map(|c| Column::new(c.name(), super::types::plan(c.type_()).0))
            .collect();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut values: Vec<Value> = Vec::with_capacity(columns.len());
            for (i, column) in columns.iter().enumerate() {
                let cell: Cell = row.try_get(i).map_err(|e| WarehouseError::Value {
                    column: column.name.clone(),
                    message: e.to_string(),
                })?;
                values.push(cell.0);
            }
            out.push(values);
        }
        Ok(RowBatch::new(columns.into(), out))
    }
}

#[cfg(test)]
mod tests;
