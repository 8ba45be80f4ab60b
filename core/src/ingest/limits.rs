//! Numeric limits of the ingestion API. "Fewer than N" limits are stored as the exclusive bound.

/// Records per `/import`, `/engage` or `/groups` request.
pub const MAX_RECORDS_PER_REQUEST: usize = 2000;
/// Uncompressed body bytes per ingestion request (gzip does not raise it).
pub const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
/// One event or profile update, uncompressed JSON: must be smaller than this.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// An event must have fewer than this many properties.
pub const PROPERTIES_EXCLUSIVE: usize = 255;
/// A nested object must have fewer than this many keys.
pub const OBJECT_KEYS_EXCLUSIVE: usize = 255;
/// An array must have fewer than this many elements.
pub const ARRAY_ELEMENTS_EXCLUSIVE: usize = 255;
/// Objects may nest at most this deep inside a property value.
pub const MAX_OBJECT_DEPTH: usize = 3;
/// String values longer than this (in characters) are truncated, not rejected.
pub const MAX_STRING_CHARS: usize = 255;
/// `$insert_id`: at most this many bytes of `[A-Za-z0-9-]`.
pub const MAX_INSERT_ID_BYTES: usize = 36;
/// A profile may hold at most this many properties.
pub const MAX_PROFILE_PROPERTIES: usize = 2000;
/// Earliest accepted event time: 1971-01-01T00:00:00Z, in milliseconds.
pub const MIN_EVENT_TIME_MS: i64 = 31_536_000_000;
/// Lookup tables: uncompressed CSV bytes per replacement.
pub const MAX_LOOKUP_BYTES: usize = 100 * 1000 * 1000;
/// Lookup tables: replacements per table per rolling 24 hours.
pub const MAX_LOOKUP_REPLACEMENTS_PER_DAY: usize = 100;
/// Lookup tables: rows across all of a project's lookup tables must stay below this.
pub const LOOKUP_ROWS_PER_PROJECT_EXCLUSIVE: usize = 5_000_000;
/// Lookup tables: a failure body lists at most this many bad rows.
pub const MAX_LOOKUP_ERRORS_REPORTED: usize = 10;

/// Checks a whole request against the count and size limits (both answered with 413).
pub fn check_request(records: usize, uncompressed_bytes: usize) -> Result<(), String> {
    if uncompressed_bytes > MAX_REQUEST_BYTES {
        return Err(format!(
            "request exceeds max limit of {MAX_REQUEST_BYTES} bytes"
        ));
    }
    if records > MAX_RECORDS_PER_REQUEST {
        return Err(format!(
            "request exceeds max limit of {MAX_RECORDS_PER_REQUEST} records ({records} sent)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_limits_are_inclusive_at_the_documented_maximum() {
        assert!(check_request(2000, MAX_REQUEST_BYTES).is_ok());
        let err = check_request(2001, 10).unwrap_err();
        assert!(err.contains("2000 records"), "{err}");
        let err = check_request(1, MAX_REQUEST_BYTES + 1).unwrap_err();
        assert_eq!(err, "request exceeds max limit of 10485760 bytes");
    }
}
