//! Packing already-serialized records into request bodies within Mixpanel's limits.
//!
//! Records arrive as JSON bytes, serialized once by the DiffActor. They are never parsed or
//! re-encoded here: a body is `[` + the records joined by `,` + `]`, so the size of a body is
//! known exactly from the sizes of its records.

use std::io::Write;

use bytes::Bytes;
use ferry_core::ingest::limits::{MAX_RECORDS_PER_REQUEST, MAX_RECORD_BYTES, MAX_REQUEST_BYTES};

use super::error::MixpanelError;

/// Bytes a JSON array adds around its first element: `[` and `]`.
const ARRAY_FRAME_BYTES: usize = 2;
/// Bytes added per further element: `,`.
const SEPARATOR_BYTES: usize = 1;

/// A record that can go into a batch: its JSON and the key the caller knows it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    /// One JSON object, serialized once upstream.
    pub json: Bytes,
    /// The record's `$insert_id` (events) or `$distinct_id` / group id (profiles). Reported
    /// back with failures when the server leaves it out, and used to attribute failures the
    /// server lists as plain strings.
    pub key: Option<String>,
}

/// Records that go together in one request, in order. Indices in a [`super::BatchOutcome`]
/// are positions in this batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    records: Vec<BatchRecord>,
    body_bytes: usize,
}

impl Batch {
    /// A batch of exactly these records, without checking the limits (the client still splits
    /// it if the server answers 413). Prefer [`BatchBuilder`].
    pub fn from_records(records: Vec<BatchRecord>) -> Self {
        let mut batch = Batch::default();
        for r in records {
            batch.body_bytes = batch.body_len_with(r.json.len());
            batch.records.push(r);
        }
        batch
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Uncompressed size of the JSON-array body.
    pub fn body_len(&self) -> usize {
        self.body_bytes
    }

    pub fn records(&self) -> &[BatchRecord] {
        &self.records
    }

    fn body_len_with(&self, record_bytes: usize) -> usize {
        if self.records.is_empty() {
            ARRAY_FRAME_BYTES + record_bytes
        } else {
            self.body_bytes + SEPARATOR_BYTES + record_bytes
        }
    }

    /// Writes the JSON-array body to `out` (a `Vec`, or a gzip encoder).
    pub(crate) fn write_json_array(&self, out: &mut impl Write) -> std::io::Result<()> {
        out.write_all(b"[")?;
        for (i, r) in self.records.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            out.write_all(&r.json)?;
        }
        out.write_all(b"]")
    }

    /// The JSON-array body gzipped at `level`, as the client sends it. Records go into the
    /// encoder in large staged chunks: each write into it has a fixed cost far above that of
    /// copying a ~1 KB record.
    pub fn gzip_json_array(&self, level: u32) -> std::io::Result<Vec<u8>> {
        const STAGING_BYTES: usize = 128 * 1024;
        let encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(self.body_bytes / 4 + 64),
            flate2::Compression::new(level),
        );
        let mut staged = std::io::BufWriter::with_capacity(STAGING_BYTES, encoder);
        self.write_json_array(&mut staged)?;
        staged.into_inner().map_err(|e| e.into_error())?.finish()
    }

    pub(crate) fn json_array(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.body_bytes);
        // Writing into a Vec cannot fail.
        let _ = self.write_json_array(&mut body);
        body
    }

    /// Splits into the first half and the rest (used when a server answers 413).
    pub(crate) fn split_in_half(mut self) -> (Batch, Batch) {
        let rest = self.records.split_off(self.records.len() / 2);
        (Batch::from_records(self.records), Batch::from_records(rest))
    }
}

/// Packs records into batches of at most [`MAX_RECORDS_PER_REQUEST`] records and
/// [`MAX_REQUEST_BYTES`] uncompressed body bytes (or smaller limits, for tests and tuning).
#[derive(Debug)]
pub struct BatchBuilder {
    max_records: usize,
    max_body_bytes: usize,
    current: Batch,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// Mixpanel's limits.
    pub fn new() -> Self {
        Self {
            max_records: MAX_RECORDS_PER_REQUEST,
            max_body_bytes: MAX_REQUEST_BYTES,
            current: Batch::default(),
        }
    }

    /// Tighter limits; anything above Mixpanel's is lowered to Mixpanel's, zero is raised to
    /// the least that can hold one record.
    pub fn with_limits(max_records: usize, max_body_bytes: usize) -> Self {
        Self {
            max_records: max_records.clamp(1, MAX_RECORDS_PER_REQUEST),
            max_body_bytes: max_body_bytes.clamp(ARRAY_FRAME_BYTES + 1, MAX_REQUEST_BYTES),
            current: Batch::default(),
        }
    }

    /// Adds a record. Returns a batch when one is complete: the previous batch, when this
    /// record does not fit in it, or the batch this record filled to the record limit.
    ///
    /// A record of [`MAX_RECORD_BYTES`] or more is refused ([`MixpanelError::RecordTooLarge`],
    /// a per-row error): Mixpanel would refuse it, and the largest could not fit in any body.
    pub fn push(
        &mut self,
        json: impl Into<Bytes>,
        key: Option<String>,
    ) -> Result<Option<Batch>, MixpanelError> {
        let json = json.into();
        let single_limit =
            MAX_RECORD_BYTES.min(self.max_body_bytes.saturating_sub(ARRAY_FRAME_BYTES) + 1);
        if json.len() >= single_limit {
            return Err(MixpanelError::RecordTooLarge {
                bytes: json.len(),
                limit: single_limit - 1,
            });
        }
        let mut complete = None;
        if !self.current.is_empty() && self.current.body_len_with(json.len()) > self.max_body_bytes
        {
            complete = Some(std::mem::take(&mut self.current));
        }
        self.current.body_bytes = self.current.body_len_with(json.len());
        self.current.records.push(BatchRecord { json, key });
        if self.current.len() >= self.max_records {
            // Only one of the two can be complete: a full batch was emptied just above.
            debug_assert!(complete.is_none() || self.max_records == 1);
            if complete.is_none() {
                complete = Some(std::mem::take(&mut self.current));
            }
        }
        Ok(complete)
    }

    /// The records not yet in a complete batch, as a batch (`None` when there are none).
    pub fn flush(&mut self) -> Option<Batch> {
        (!self.current.is_empty()).then(|| std::mem::take(&mut self.current))
    }

    pub fn pending_records(&self) -> usize {
        self.current.len()
    }

    pub fn pending_body_bytes(&self) -> usize {
        self.current.body_len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::Classify;

    fn record(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn splits_at_the_record_limit() {
        let mut b = BatchBuilder::new();
        let mut done = Vec::new();
        for i in 0..2001 {
            done.extend(
                b.push(Bytes::from_static(b"{}"), Some(i.to_string()))
                    .unwrap(),
            );
        }
        done.extend(b.flush());
        assert_eq!(
            done.iter().map(Batch::len).collect::<Vec<_>>(),
            vec![2000, 1]
        );
        assert_eq!(done[0].body_len(), done[0].json_array().len());
        assert_eq!(done[1].records()[0].key.as_deref(), Some("2000"));
        assert!(b.flush().is_none());
    }

    #[test]
    fn splits_at_the_byte_limit_counting_brackets_and_commas() {
        let mut b = BatchBuilder::with_limits(100, 2 + 10 + 1 + 10);
        assert!(b.push(record(10), None).unwrap().is_none());
        assert!(b.push(record(10), None).unwrap().is_none());
        assert_eq!(b.pending_body_bytes(), 23);
        let full = b.push(record(1), None).unwrap().unwrap();
        assert_eq!(full.len(), 2);
        assert_eq!(full.json_array().len(), 23);
        assert_eq!(b.pending_records(), 1);
    }

    #[test]
    fn records_that_cannot_fit_are_refused_per_row() {
        let mut b = BatchBuilder::new();
        let err = b.push(record(MAX_RECORD_BYTES), None).unwrap_err();
        assert_eq!(err.class(), ferry_core::ErrorClass::PerRow);
        let mut small = BatchBuilder::with_limits(10, 12);
        assert!(small.push(record(11), None).is_err());
        assert!(small.push(record(10), None).unwrap().is_none());
    }

    #[test]
    fn the_gzip_body_is_the_json_array() {
        let mut b = BatchBuilder::new();
        for i in 0..500 {
            b.push(
                format!(r#"{{"event":"e","properties":{{"n":{i}}}}}"#).into_bytes(),
                None,
            )
            .unwrap();
        }
        let batch = b.flush().unwrap();
        let gz = batch.gzip_json_array(1).unwrap();
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain).unwrap();
        assert_eq!(plain, batch.json_array());
        assert!(
            gz.len() < plain.len() / 3,
            "{} of {}",
            gz.len(),
            plain.len()
        );
    }

    #[test]
    fn the_body_is_the_records_joined_not_re_encoded() {
        let batch = Batch::from_records(vec![
            BatchRecord {
                json: Bytes::from_static(br#"{"a": 1}"#),
                key: None,
            },
            BatchRecord {
                json: Bytes::from_static(br#"{"b":"\u00e9"}"#),
                key: None,
            },
        ]);
        assert_eq!(batch.json_array(), br#"[{"a": 1},{"b":"\u00e9"}]"#.to_vec());
        let (first, rest) = batch.split_in_half();
        assert_eq!((first.len(), rest.len()), (1, 1));
        assert_eq!(rest.body_len(), rest.json_array().len());
    }
}
