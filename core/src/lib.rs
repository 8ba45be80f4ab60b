//! Ferry's domain. Nothing in this crate performs I/O: it is shared by the pipeline (which
//! checks records before sending them) and by the bundled receiver (which enforces the same
//! rules on what it receives), so both always agree on what Mixpanel would accept.

pub mod checksum;
pub mod error;
pub mod ingest;
pub mod insert_id;
pub mod mapping;
pub mod schedule;
pub mod spec;
pub mod value;

pub use error::{Classify, ErrorClass};
pub use value::{Column, ColumnKind, RowBatch, Value};
