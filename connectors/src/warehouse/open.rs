//! From a source spec to a live [`Warehouse`], choosing the implementation by kind. A kind whose
//! Cargo feature is not compiled in is refused with a message that names the feature.

use std::sync::Arc;

use ferry_core::spec::{SourceKind, SourceSpec};

use super::{Warehouse, WarehouseError};

/// Builds the warehouse a source spec describes. Nothing connects yet: sessions are opened by
/// the operations that need them.
pub fn open_warehouse(spec: &SourceSpec) -> Result<Arc<dyn Warehouse>, WarehouseError> {
    match &spec.kind {
        #[cfg(feature = "warehouse-postgres")]
        SourceKind::Postgres(options) => Ok(Arc::new(super::postgres::PostgresWarehouse::new(options.clone()))),
        #[cfg(feature = "warehouse-sqlite")]
        SourceKind::Sqlite(options) => Ok(Arc::new(super::sqlite::SqliteWarehouse::new(options))),
        #[cfg(feature = "warehouse-redshift")]
        SourceKind::Redshift(options) => Ok(Arc::new(super::redshift::RedshiftWarehouse::new(
            (**options).clone(),
        ))),
        #[allow(unreachable_patterns)]
        other => Err(WarehouseError::Config(format!(
            "source '{}': this build of Ferry has no '{}' support (enable the Cargo feature warehouse-{})",
            spec.id,
            other.warehouse_type(),
            other.warehouse_type()
        ))),
    }
}
