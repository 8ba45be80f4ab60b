//! Errors of the Mixpanel client, classified with `ferry_core::ErrorClass` so the pipeline
//! decides uniformly: retry the run later, stop it, or log the row and go on.
//!
//! Per-record refusals inside an accepted request (a strict-mode 400) are not errors: they are
//! [`super::RecordFailure`]s in a [`super::BatchOutcome`].

use std::fmt;

use ferry_core::{Classify, ErrorClass};
use serde::Serialize;

/// Why one attempt was retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryReason {
    /// 429: the project's rate limit.
    RateLimited,
    /// 502, 503, other 5xx, or 408.
    ServerError(u16),
    /// No answer within the request timeout.
    Timeout,
    /// The connection failed or was closed before an answer was read. The request may have
    /// been stored; re-sending is harmless because `$insert_id` deduplicates.
    Connection,
}

impl fmt::Display for RetryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryReason::RateLimited => f.write_str("429 rate limited"),
            RetryReason::ServerError(status) => write!(f, "server error {status}"),
            RetryReason::Timeout => f.write_str("timed out"),
            RetryReason::Connection => f.write_str("connection failed or dropped"),
        }
    }
}

/// One bad row in a refused lookup-table CSV (`index` counts data rows from 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LookupRowError {
    pub index: Option<usize>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MixpanelError {
    #[error("invalid Mixpanel destination: {0}")]
    InvalidConfig(String),

    /// 401 or 403.
    #[error("{endpoint}: the destination refused the credentials ({status}: {message}); check the service account (it needs the Owner or Admin role) or project token, and the project id")]
    Unauthorized {
        endpoint: &'static str,
        status: u16,
        message: String,
    },

    #[error("{endpoint}: 404 not found ({message}); check the destination's base URL and region")]
    NotFound {
        endpoint: &'static str,
        message: String,
    },

    #[error("lookup table '{table_id}' does not exist in the project; create it in Mixpanel's UI first (the API only replaces contents)")]
    LookupTableNotFound { table_id: String },

    #[error("lookup table '{table_id}' was refused and left unchanged: {message}{}", format_rows(.rows))]
    LookupRejected {
        table_id: String,
        message: String,
        rows: Vec<LookupRowError>,
    },

    /// A request the server refused as a whole (a 400 without per-record failures, or another
    /// 4xx): sending it again cannot help.
    #[error("{endpoint}: the destination refused the request ({status}: {message})")]
    Rejected {
        endpoint: &'static str,
        status: u16,
        message: String,
    },

    #[error("{endpoint} needs a service account; project-token auth is not accepted there")]
    ServiceAccountRequired { endpoint: &'static str },

    #[error("{endpoint} is a Ferry receiver extension; this destination does not have receiver_extensions enabled (Mixpanel has no public per-event delete)")]
    ExtensionUnavailable { endpoint: &'static str },

    /// A single record too large for any request (per row).
    #[error("record of {bytes} bytes is larger than the {limit}-byte limit")]
    RecordTooLarge { bytes: usize, limit: usize },

    #[error("{endpoint}: gave up after {attempts} attempts; last: {last}")]
    RetriesExhausted {
        endpoint: &'static str,
        attempts: u32,
        last: RetryReason,
    },

    /// A failure of the HTTP client itself (not of the network or the server).
    #[error("{endpoint}: HTTP client error: {message}")]
    Client {
        endpoint: &'static str,
        message: String,
    },

    #[error("compressing the request body failed: {0}")]
    Compression(String),
}

fn format_rows(rows: &[LookupRowError]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let listed: Vec<String> = rows
        .iter()
        .map(|r| match r.index {
            Some(i) => format!("row {i}: {}", r.message),
            None => r.message.clone(),
        })
        .collect();
    format!(" [{}]", listed.join("; "))
}

impl Classify for MixpanelError {
    fn class(&self) -> ErrorClass {
        match self {
            MixpanelError::RetriesExhausted { .. } => ErrorClass::Retryable,
            MixpanelError::RecordTooLarge { .. } => ErrorClass::PerRow,
            MixpanelError::InvalidConfig(_)
            | MixpanelError::Unauthorized { .. }
            | MixpanelError::NotFound { .. }
            | MixpanelError::LookupTableNotFound { .. }
            | MixpanelError::LookupRejected { .. }
            | MixpanelError::Rejected { .. }
            | MixpanelError::ServiceAccountRequired { .. }
            | MixpanelError::ExtensionUnavailable { .. }
            | MixpanelError::Client { .. }
            | MixpanelError::Compression(_) => ErrorClass::Fatal,
        }
    }
}
