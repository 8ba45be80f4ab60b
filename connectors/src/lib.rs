//! Ferry's connectors: the code that talks to systems outside Ferry. No actors live here; the
//! pipeline (`ferry-actors`) drives these clients.
//!
//! - [`mixpanel`]: the destination client for Mixpanel's ingestion API (and the bundled
//!   receiver, which speaks the same API plus Ferry's extensions).

pub mod mixpanel;
pub mod warehouse;
