//! Ferry's domain. Nothing in this crate performs I/O: it is shared by the pipeline (which
//! checks records before sending them) and by the bundled receiver (which enforces the same
//! rules on what it receives), so both always agree on what Mixpanel would accept.

pub mod ingest;
