//! The rules of Mixpanel's ingestion API (`/import`, `/engage`, `/groups`, `/lookup-tables`),
//! as documented publicly. One implementation, used on both sides of the wire.

pub mod event;
pub mod ids;
pub mod limits;
pub mod lookup;
pub mod profile;

use serde::Serialize;

/// Why one record was refused. `field` uses Mixpanel's dotted notation (`properties.time`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
