//! Mixpanel's ingestion API, as a destination: `/import` (events), `/engage` (user profiles),
//! `/groups` (group profiles), `PUT /lookup-tables/{id}` (CSV), and the bundled receiver's
//! `POST /ferry/v1/events/delete` extension (Mirror deletes, only where the destination is
//! configured as the receiver).
//!
//! Usage, as the ImportShardActor does it: push serialized records into a [`BatchBuilder`];
//! send each complete [`Batch`] with a [`MixpanelClient`]; ack the records the
//! [`BatchOutcome`] reports accepted and log the [`RecordFailure`]s per row. An `Err` is a
//! [`MixpanelError`] whose class (`ferry_core::Classify`) says whether to retry the run later
//! or stop it.

mod batch;
mod client;
mod destination;
mod error;
mod outcome;

pub use batch::{Batch, BatchBuilder, BatchRecord};
pub use client::{
    ClientSettings, DeleteOutcome, LookupOutcome, MixpanelClient, RecordEndpoint, RetryPolicy,
};
pub use destination::{DestinationConfig, IngestionHost};
pub use error::{LookupRowError, MixpanelError, RetryReason};
pub use ferry_core::spec::{Auth, Region, Secret};
pub use outcome::{BatchOutcome, RecordFailure};
