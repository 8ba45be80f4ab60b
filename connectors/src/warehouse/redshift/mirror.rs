//! Mirror on Redshift: the dialect (how a value's canonical text is written in Redshift SQL) and
//! the statement runner over the Data API. The statements come from
//! [`crate::warehouse::mirror::sql`]; their Redshift text is pinned by `mirror/golden.sql`.
//!
//! Canonical text per column kind (Redshift has no `bool::varchar`, and a bare `VARCHAR` in a
//! cast means `VARCHAR(256)`, which would cut long values and hide their changes):
//! booleans `CASE … 't' / 'f'` (NULL stays NULL); floats through `FLOAT8`; zoned timestamps
//! `AT TIME ZONE 'UTC'` first; `SUPER` through `JSON_SERIALIZE` (a `SUPER` object or array cast
//! to `VARCHAR` is NULL on Redshift); everything else `CAST(… AS VARCHAR(65535))`, Redshift's
//! longest `VARCHAR`.
//!
//! Snapshots are distributed and sorted on their identity hash (`DISTKEY(…) SORTKEY(…)`), so
//! the diff's grouping and join of two snapshots stay on each slice.
//!
//! Each statement is its own Data API statement (so each commits on its own); bound values are
//! Data API parameters `:p1`, `:p2`, … in the order of [`Statement::params`].
//!
//! Known differences from the Rust checksum (they change no diff, which compares SQL hashes with
//! SQL hashes): `JSON_SERIALIZE` prints compact JSON, and Redshift prints floats with its own
//! digits.

use async_trait::async_trait;
use ferry_core::value::{ColumnKind, RowBatch};

use super::RedshiftWarehouse;
use crate::warehouse::mirror::{MirrorDialect, MirrorWarehouse, Statement};
use crate::warehouse::WarehouseError;

/// Redshift's Mirror dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedshiftDialect;

impl MirrorDialect for RedshiftDialect {
    fn name(&self) -> &'static str {
        "redshift"
    }

    fn quote_ident(&self, name: &str) -> String {
        super::quote_ident(name)
    }

    fn canonical_text(&self, expr: &str, kind: &ColumnKind) -> String {
        match kind {
            ColumnKind::Bool => format!("CASE WHEN {expr} THEN 't' WHEN NOT {expr} THEN 'f' END"),
            ColumnKind::Float => format!("CAST(CAST({expr} AS FLOAT8) AS VARCHAR(65535))"),
            ColumnKind::Timestamp => {
                format!("CAST(({expr} AT TIME ZONE 'UTC') AS VARCHAR(65535))")
            }
            ColumnKind::Json => format!("JSON_SERIALIZE({expr})"),
            _ => format!("CAST({expr} AS VARCHAR(65535))"),
        }
    }

    fn bind_param(&self, n: usize) -> String {
        format!(":p{n}")
    }

    fn snapshot_table_options(&self, identity_column: &str) -> String {
        format!("DISTKEY({identity_column}) SORTKEY({identity_column})")
    }
}

/// The Data API parameters of a statement: `p1`, `p2`, … in order.
fn parameters(statement: &Statement) -> Vec<(String, String)> {
    statement
        .params
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("p{}", i + 1), v.clone()))
        .collect()
}

#[async_trait]
impl MirrorWarehouse for RedshiftWarehouse {
    fn dialect(&self) -> &dyn MirrorDialect {
        &RedshiftDialect
    }

    async fn execute(&self, statements: &[Statement]) -> Result<(), WarehouseError> {
        for statement in statements {
            self.run_statement(&statement.sql, &parameters(statement))
                .await?;
        }
        Ok(())
    }

    async fn query(&self, statement: &Statement) -> Result<RowBatch, WarehouseError> {
        self.query_all(&statement.sql, &parameters(statement)).await
    }
}

#[cfg(test)]
mod tests;
