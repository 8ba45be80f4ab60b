//! How Ferry sorts failures. Every library error type says which class it belongs to, so the
//! pipeline decides uniformly: retry with backoff, stop the run, or log the row and go on.

use crate::ingest::lookup::LookupError;
use crate::ingest::FieldError;

/// What the pipeline does about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Transient (rate limit, timeout, connection reset, 5xx): retry with backoff, then resume
    /// from the last committed cursor.
    Retryable,
    /// Retrying cannot help (bad credentials, bad spec, missing table): stop the run, mark it
    /// failed, and tell the operator.
    Fatal,
    /// One row or record is wrong: record it in the run's row-error log and carry on.
    PerRow,
}

/// Implemented by every error type that crosses a crate boundary in Ferry.
pub trait Classify {
    fn class(&self) -> ErrorClass;

    fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }
}

impl ErrorClass {
    /// The class of an HTTP answer from an ingestion endpoint, as Mixpanel documents them:
    /// 429 and 502/503 (and other 5xx, and 408) are retried; a 400 on `/import` is a partial
    /// success whose failed records are per-row errors; other 4xx are fatal for the run
    /// (401 bad credentials, 404 unknown lookup table, 413 a batch the client should never
    /// have built). `None` for success codes.
    pub fn of_http_status(status: u16) -> Option<ErrorClass> {
        match status {
            200..=299 => None,
            400 => Some(ErrorClass::PerRow),
            408 | 429 | 500..=599 => Some(ErrorClass::Retryable),
            _ => Some(ErrorClass::Fatal),
        }
    }
}

impl Classify for FieldError {
    fn class(&self) -> ErrorClass {
        ErrorClass::PerRow
    }
}

impl Classify for LookupError {
    /// A lookup table is replaced all or nothing: any refusal fails the run.
    fn class(&self) -> ErrorClass {
        ErrorClass::Fatal
    }
}

impl Classify for crate::spec::SpecErrors {
    fn class(&self) -> ErrorClass {
        ErrorClass::Fatal
    }
}

impl Classify for crate::mapping::RowError {
    fn class(&self) -> ErrorClass {
        ErrorClass::PerRow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_are_classified_as_mixpanel_documents_them() {
        assert_eq!(ErrorClass::of_http_status(200), None);
        assert_eq!(ErrorClass::of_http_status(400), Some(ErrorClass::PerRow));
        assert_eq!(ErrorClass::of_http_status(401), Some(ErrorClass::Fatal));
        assert_eq!(ErrorClass::of_http_status(413), Some(ErrorClass::Fatal));
        for retry in [429, 502, 503, 500] {
            assert_eq!(
                ErrorClass::of_http_status(retry),
                Some(ErrorClass::Retryable)
            );
        }
        let e = FieldError::new("properties.time", "x");
        assert_eq!(e.class(), ErrorClass::PerRow);
        assert!(!e.is_retryable());
    }
}
