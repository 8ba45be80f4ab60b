//! The HTTP client: sends batches and lookup tables, retries what may be retried, and turns
//! every answer into an outcome per record or a classified error.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::{Method, Url};
use tokio::sync::Semaphore;

use super::batch::Batch;
use super::destination::DestinationConfig;
use super::error::{LookupRowError, MixpanelError, RetryReason};
use super::outcome::{
    attribute_failures, BatchOutcome, FailedEntry, KeyKind, RecordFailure, StrictReply,
};

/// Backoff for 429, 5xx, 408, timeouts and dropped connections.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Wait before the first retry; doubles with every further retry.
    pub initial_delay: Duration,
    /// The doubling stops here.
    pub max_delay: Duration,
    /// Each wait is lengthened by a random share in `[0, jitter)` of itself, so many senders
    /// backing off from one 429 do not come back in step.
    pub jitter: f64,
    /// Attempts per request, the first included; then [`MixpanelError::RetriesExhausted`].
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// Mixpanel's guidance: from 2 s, doubling to 60 s, with jitter. Twelve attempts wait
    /// about 6 to 9 minutes in all before the run is handed back as retryable.
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            jitter: 0.5,
            max_attempts: 12,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first retry), without jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1).min(31));
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }

    /// The wait before retry number `retry`, jitter included.
    pub fn delay(&self, retry: u32) -> Duration {
        let base = self.base_delay(retry);
        let share = if self.jitter > 0.0 {
            rand::rng().random_range(0.0..self.jitter)
        } else {
            0.0
        };
        base.saturating_add(base.mul_f64(share))
    }
}

/// How the client sends.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    /// Requests in flight at once, across all clones of one client. Waiting out a backoff
    /// does not hold a slot.
    pub max_in_flight: usize,
    /// Whole-request timeout (connect, upload, answer). A timed-out request is retried.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// gzip level for `/import` and lookup-table bodies: low, because the CPU spent on a
    /// better ratio costs more than the bytes it saves on a fast link.
    pub gzip_level: u32,
    pub retry: RetryPolicy,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            max_in_flight: 10,
            request_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            gzip_level: 1,
            retry: RetryPolicy::default(),
        }
    }
}

/// The record endpoints that take batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordEndpoint {
    /// `POST /import?strict=1`: events, gzip.
    Import,
    /// `POST /engage?strict=1`: user profile updates, never gzip.
    Engage,
    /// `POST /groups?strict=1`: group profile updates, never gzip.
    Groups,
}

impl RecordEndpoint {
    pub fn name(self) -> &'static str {
        match self {
            RecordEndpoint::Import => "import",
            RecordEndpoint::Engage => "engage",
            RecordEndpoint::Groups => "groups",
        }
    }

    /// Mixpanel's profile endpoints do not take gzip.
    fn gzip(self) -> bool {
        self == RecordEndpoint::Import
    }

    fn key_kind(self) -> KeyKind {
        match self {
            RecordEndpoint::Import => KeyKind::InsertId,
            RecordEndpoint::Engage | RecordEndpoint::Groups => KeyKind::DistinctId,
        }
    }
}

const DELETE_ENDPOINT: &str = "ferry/v1/events/delete";
const LOOKUP_ENDPOINT: &str = "lookup-tables";

/// The result of the receiver's event delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeleteOutcome {
    /// `accepted` counts the deletes the receiver processed, found or not.
    pub batch: BatchOutcome,
    /// Events removed. After a retried attempt this can be lower than requested: the dropped
    /// attempt may already have deleted them, and the retry finds them gone.
    pub deleted: u64,
    pub not_found: u64,
}

/// The result of replacing a lookup table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LookupOutcome {
    /// Data rows stored, when the server says.
    pub rows: Option<u64>,
    pub attempts: u32,
    pub retried_reasons: Vec<RetryReason>,
}

/// A request, ready to be sent as often as needed.
struct Prepared {
    endpoint: &'static str,
    method: Method,
    url: Url,
    body: Bytes,
    content_type: &'static str,
    gzip: bool,
}

/// What came back once no more retries were due.
struct Answer {
    status: u16,
    body: Bytes,
    attempts: u32,
    retried_reasons: Vec<RetryReason>,
}

/// The destination client. Cheap to clone; clones share the connection pool and the
/// in-flight limit.
#[derive(Clone)]
pub struct MixpanelClient {
    http: reqwest::Client,
    destination: Arc<DestinationConfig>,
    settings: Arc<ClientSettings>,
    in_flight: Arc<Semaphore>,
}

impl std::fmt::Debug for MixpanelClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MixpanelClient")
            .field("destination", &self.destination)
            .field("settings", &self.settings)
            .finish()
    }
}

impl MixpanelClient {
    pub fn new(
        destination: DestinationConfig,
        settings: ClientSettings,
    ) -> Result<Self, MixpanelError> {
        destination.validate()?;
        if settings.max_in_flight == 0 || settings.retry.max_attempts == 0 {
            return Err(MixpanelError::InvalidConfig(
                "max_in_flight and retry.max_attempts must be at least 1".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.connect_timeout)
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| MixpanelError::Client {
                endpoint: "client",
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            destination: Arc::new(destination),
            settings: Arc::new(settings),
        })
    }

    pub fn destination(&self) -> &DestinationConfig {
        &self.destination
    }

    /// `POST /import?strict=1`.
    pub async fn import_events(&self, batch: Batch) -> Result<BatchOutcome, MixpanelError> {
        self.send(RecordEndpoint::Import, batch).await
    }

    /// `POST /engage?strict=1`.
    pub async fn update_user_profiles(&self, batch: Batch) -> Result<BatchOutcome, MixpanelError> {
        self.send(RecordEndpoint::Engage, batch).await
    }

    /// `POST /groups?strict=1`.
    pub async fn update_group_profiles(&self, batch: Batch) -> Result<BatchOutcome, MixpanelError> {
        self.send(RecordEndpoint::Groups, batch).await
    }

    /// Sends one batch and accounts for every record in it.
    ///
    /// - 2xx: all accepted. 400 with `failed_records`: those fail, the rest are accepted; the
    ///   request is never sent again. 400 without them, and other 4xx: the whole request is
    ///   refused ([`MixpanelError::Rejected`], fatal).
    /// - 429, 5xx, 408, timeouts, dropped connections: retried with backoff. A retried request
    ///   may have been stored already; `$insert_id` makes the second copy harmless.
    /// - 413 should not happen with batches from a [`super::BatchBuilder`]; if a server's limit
    ///   is lower, the batch is split in half and each half sent (recursively). A single record
    ///   answered with 413 is a per-record failure.
    pub async fn send(
        &self,
        endpoint: RecordEndpoint,
        batch: Batch,
    ) -> Result<BatchOutcome, MixpanelError> {
        if batch.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let batch = Arc::new(batch);
        let body = self.record_body(&batch, endpoint.gzip()).await?;
        let url = self
            .destination
            .url(&[endpoint.name()], &[("strict", "1")])?;
        let request = Prepared {
            endpoint: endpoint.name(),
            method: Method::POST,
            url,
            body,
            content_type: "application/json",
            gzip: endpoint.gzip(),
        };
        let answer = self.exchange(&request).await?;
        drop(request);
        let batch = Arc::try_unwrap(batch).unwrap_or_else(|shared| (*shared).clone());
        match answer.status {
            200..=299 => Ok(all_accepted(&batch, &answer)),
            400 => {
                let reply = StrictReply::parse(&answer.body);
                match reply.failed_records {
                    Some(entries) => {
                        let outcome = partial(&batch, entries, endpoint.key_kind(), &answer);
                        if let Some(imported) = reply.num_records_imported {
                            if imported as usize != outcome.accepted {
                                tracing::warn!(
                                    endpoint = endpoint.name(),
                                    server_imported = imported,
                                    counted = outcome.accepted,
                                    "the destination's count of imported records differs from the failures it listed"
                                );
                            }
                        }
                        Ok(outcome)
                    }
                    None => Err(MixpanelError::Rejected {
                        endpoint: endpoint.name(),
                        status: 400,
                        message: message_of(&answer.body),
                    }),
                }
            }
            413 => self.split_after_413(endpoint, batch, answer).await,
            status => Err(refusal(endpoint.name(), status, &answer.body)),
        }
    }

    async fn split_after_413(
        &self,
        endpoint: RecordEndpoint,
        batch: Batch,
        answer: Answer,
    ) -> Result<BatchOutcome, MixpanelError> {
        if batch.len() == 1 {
            let failure = RecordFailure {
                index_in_batch: 0,
                insert_id: batch.records()[0]
                    .key
                    .clone()
                    .filter(|_| endpoint.key_kind() == KeyKind::InsertId),
                distinct_id: batch.records()[0]
                    .key
                    .clone()
                    .filter(|_| endpoint.key_kind() == KeyKind::DistinctId),
                field: String::new(),
                message: format!(
                    "record refused as too large (413): {}",
                    message_of(&answer.body)
                ),
            };
            return Ok(BatchOutcome {
                records: 1,
                accepted: 0,
                failed: vec![failure],
                unattributed_failures: Vec::new(),
                attempts: answer.attempts,
                retried_reasons: answer.retried_reasons,
            });
        }
        tracing::warn!(
            endpoint = endpoint.name(),
            records = batch.len(),
            bytes = batch.body_len(),
            "413 from the destination: splitting the batch in half"
        );
        let (first, rest) = batch.split_in_half();
        let offset = first.len();
        let mut outcome = Box::pin(self.send(endpoint, first)).await?;
        let rest = Box::pin(self.send(endpoint, rest)).await?;
        outcome.absorb(rest, offset);
        outcome.attempts += answer.attempts;
        let mut reasons = answer.retried_reasons;
        reasons.append(&mut outcome.retried_reasons);
        outcome.retried_reasons = reasons;
        Ok(outcome)
    }

    /// `POST /ferry/v1/events/delete` — the bundled receiver's Mirror delete. Records are
    /// events (at least `event`, `time`, `distinct_id`, `$insert_id`); only the dedup key is
    /// read. Refused unless the destination has `receiver_extensions`.
    pub async fn delete_events(&self, batch: Batch) -> Result<DeleteOutcome, MixpanelError> {
        if !self.destination.receiver_extensions {
            return Err(MixpanelError::ExtensionUnavailable {
                endpoint: DELETE_ENDPOINT,
            });
        }
        if batch.is_empty() {
            return Ok(DeleteOutcome::default());
        }
        let batch = Arc::new(batch);
        let body = self.record_body(&batch, true).await?;
        let url = self
            .destination
            .url(&["ferry", "v1", "events", "delete"], &[])?;
        let request = Prepared {
            endpoint: DELETE_ENDPOINT,
            method: Method::POST,
            url,
            body,
            content_type: "application/json",
            gzip: true,
        };
        let answer = self.exchange(&request).await?;
        let reply = StrictReply::parse(&answer.body);
        let (deleted, not_found) = (
            reply.num_records_deleted.unwrap_or(0),
            reply.num_records_not_found.unwrap_or(0),
        );
        let counts = |batch: BatchOutcome| DeleteOutcome {
            batch,
            deleted,
            not_found,
        };
        match answer.status {
            200..=299 => Ok(counts(all_accepted(&batch, &answer))),
            400 => match reply.failed_records {
                Some(entries) => Ok(counts(partial(&batch, entries, KeyKind::InsertId, &answer))),
                None => Err(MixpanelError::Rejected {
                    endpoint: DELETE_ENDPOINT,
                    status: 400,
                    message: message_of(&answer.body),
                }),
            },
            status => Err(refusal(DELETE_ENDPOINT, status, &answer.body)),
        }
    }

    /// `PUT /lookup-tables/{table_id}` — replaces the whole table with `csv` (RFC 4180, header
    /// first, key column first), gzipped. All or nothing: a refusal is fatal and names the bad
    /// rows the server listed. Needs a service account.
    pub async fn replace_lookup_table(
        &self,
        table_id: &str,
        csv: impl Into<Bytes>,
    ) -> Result<LookupOutcome, MixpanelError> {
        if !self.destination.is_service_account() {
            return Err(MixpanelError::ServiceAccountRequired {
                endpoint: LOOKUP_ENDPOINT,
            });
        }
        if table_id.trim().is_empty() {
            return Err(MixpanelError::InvalidConfig(
                "lookup table id must not be empty".into(),
            ));
        }
        let csv = csv.into();
        let level = self.settings.gzip_level;
        let body = tokio::task::spawn_blocking(move || gzip_bytes(&csv, level))
            .await
            .map_err(|e| MixpanelError::Compression(e.to_string()))??;
        let url = self.destination.url(&[LOOKUP_ENDPOINT, table_id], &[])?;
        let request = Prepared {
            endpoint: LOOKUP_ENDPOINT,
            method: Method::PUT,
            url,
            body,
            content_type: "text/csv",
            gzip: true,
        };
        let answer = self.exchange(&request).await?;
        match answer.status {
            200..=299 => {
                let rows = serde_json::from_slice::<serde_json::Value>(&answer.body)
                    .ok()
                    .and_then(|v| v.get("num_rows")?.as_u64());
                Ok(LookupOutcome {
                    rows,
                    attempts: answer.attempts,
                    retried_reasons: answer.retried_reasons,
                })
            }
            404 => Err(MixpanelError::LookupTableNotFound {
                table_id: table_id.to_owned(),
            }),
            400 => {
                let reply = StrictReply::parse(&answer.body);
                let rows = reply
                    .failed_records
                    .unwrap_or_default()
                    .into_iter()
                    .map(lookup_row_error)
                    .collect();
                Err(MixpanelError::LookupRejected {
                    table_id: table_id.to_owned(),
                    message: reply.error.unwrap_or_else(|| message_of(&answer.body)),
                    rows,
                })
            }
            status => Err(refusal(LOOKUP_ENDPOINT, status, &answer.body)),
        }
    }

    /// The JSON-array body of a batch; gzipped on a blocking thread, since compression is
    /// CPU-bound and would stall the async workers.
    async fn record_body(&self, batch: &Arc<Batch>, gzip: bool) -> Result<Bytes, MixpanelError> {
        if !gzip {
            // One copy of at most 10 MiB: cheap enough to do in place.
            return Ok(Bytes::from(batch.json_array()));
        }
        let batch = Arc::clone(batch);
        let level = self.settings.gzip_level;
        tokio::task::spawn_blocking(move || {
            batch
                .gzip_json_array(level)
                .map(Bytes::from)
                .map_err(|e| MixpanelError::Compression(e.to_string()))
        })
        .await
        .map_err(|e| MixpanelError::Compression(e.to_string()))?
    }

    /// Sends until an answer that is not retried, or until attempts run out.
    async fn exchange(&self, request: &Prepared) -> Result<Answer, MixpanelError> {
        let policy = &self.settings.retry;
        let mut retried_reasons = Vec::new();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = {
                let _slot = self
                    .in_flight
                    .acquire()
                    .await
                    .map_err(|e| MixpanelError::Client {
                        endpoint: request.endpoint,
                        message: e.to_string(),
                    })?;
                self.attempt(request).await?
            };
            let reason = match result {
                Ok((429, _)) => RetryReason::RateLimited,
                Ok((status @ (408 | 500..=599), _)) => RetryReason::ServerError(status),
                Ok((status, body)) => {
                    return Ok(Answer {
                        status,
                        body,
                        attempts: attempt,
                        retried_reasons,
                    })
                }
                Err(reason) => reason,
            };
            if attempt >= policy.max_attempts {
                return Err(MixpanelError::RetriesExhausted {
                    endpoint: request.endpoint,
                    attempts: attempt,
                    last: reason,
                });
            }
            let wait = policy.delay(attempt);
            tracing::warn!(endpoint = request.endpoint, attempt, %reason, wait_ms = wait.as_millis() as u64, "retrying after backoff");
            retried_reasons.push(reason);
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt: the status and body, or why it should be retried. `Err` only for failures
    /// of the client itself.
    async fn attempt(
        &self,
        request: &Prepared,
    ) -> Result<Result<(u16, Bytes), RetryReason>, MixpanelError> {
        let (user, password) = self.destination.basic_auth();
        let mut builder = self
            .http
            .request(request.method.clone(), request.url.clone())
            // reqwest marks the Authorization header sensitive, so it is never logged.
            .basic_auth(user, Some(password))
            .header(CONTENT_TYPE, request.content_type)
            .body(request.body.clone());
        if request.gzip {
            builder = builder.header(CONTENT_ENCODING, "gzip");
        }
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => return transport_failure(request.endpoint, e),
        };
        let status = response.status().as_u16();
        match response.bytes().await {
            Ok(body) => Ok(Ok((status, body))),
            Err(e) => transport_failure(request.endpoint, e),
        }
    }
}

/// Timeouts and connection failures are retried; a request the client could not even build
/// is not. The error's text is logged without the URL's query (it holds only the project id,
/// but logs should not need it).
fn transport_failure(
    endpoint: &'static str,
    e: reqwest::Error,
) -> Result<Result<(u16, Bytes), RetryReason>, MixpanelError> {
    if e.is_builder() {
        return Err(MixpanelError::Client {
            endpoint,
            message: e.without_url().to_string(),
        });
    }
    let reason = if e.is_timeout() {
        RetryReason::Timeout
    } else {
        RetryReason::Connection
    };
    tracing::debug!(endpoint, error = %e.without_url(), "request failed in transport");
    Ok(Err(reason))
}

fn gzip_bytes(data: &[u8], level: u32) -> Result<Bytes, MixpanelError> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::new(level),
    );
    encoder
        .write_all(data)
        .map_err(|e| MixpanelError::Compression(e.to_string()))?;
    encoder
        .finish()
        .map(Bytes::from)
        .map_err(|e| MixpanelError::Compression(e.to_string()))
}

fn all_accepted(batch: &Batch, answer: &Answer) -> BatchOutcome {
    BatchOutcome {
        records: batch.len(),
        accepted: batch.len(),
        failed: Vec::new(),
        unattributed_failures: Vec::new(),
        attempts: answer.attempts,
        retried_reasons: answer.retried_reasons.clone(),
    }
}

fn partial(
    batch: &Batch,
    entries: Vec<FailedEntry>,
    key_kind: KeyKind,
    answer: &Answer,
) -> BatchOutcome {
    let (failed, unattributed_failures) = attribute_failures(batch, entries, key_kind);
    BatchOutcome {
        records: batch.len(),
        accepted: batch.len() - failed.len() - unattributed_failures.len(),
        failed,
        unattributed_failures,
        attempts: answer.attempts,
        retried_reasons: answer.retried_reasons.clone(),
    }
}

fn lookup_row_error(entry: FailedEntry) -> LookupRowError {
    match entry {
        FailedEntry::Detailed {
            index,
            field,
            message,
            ..
        } => {
            let message = message.unwrap_or_default();
            let message = match field {
                Some(f) if !f.is_empty() => format!("{f}: {message}"),
                _ => message,
            };
            LookupRowError { index, message }
        }
        FailedEntry::Text(message) => LookupRowError {
            index: None,
            message,
        },
        FailedEntry::Other(value) => LookupRowError {
            index: None,
            message: value.to_string(),
        },
    }
}

/// The error of a refused request, by status.
fn refusal(endpoint: &'static str, status: u16, body: &[u8]) -> MixpanelError {
    let message = message_of(body);
    match status {
        401 | 403 => MixpanelError::Unauthorized {
            endpoint,
            status,
            message,
        },
        404 => MixpanelError::NotFound { endpoint, message },
        _ => MixpanelError::Rejected {
            endpoint,
            status,
            message,
        },
    }
}

/// The `error` of a JSON error body, else the body's start as text.
fn message_of(body: &[u8]) -> String {
    if let Some(error) = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
    {
        return error;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None if text.is_empty() => "(empty body)".to_owned(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_bounded_jitter() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (1..=7).map(|n| p.base_delay(n).as_secs()).collect();
        assert_eq!(secs, vec![2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(p.base_delay(1000), Duration::from_secs(60));
        for n in 1..10 {
            let d = p.delay(n);
            assert!(
                d >= p.base_delay(n) && d <= p.base_delay(n).mul_f64(1.5),
                "{d:?}"
            );
        }
        let no_jitter = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        assert_eq!(no_jitter.delay(2), Duration::from_secs(4));
    }

    #[test]
    fn error_bodies_are_summarized() {
        assert_eq!(
            message_of(br#"{"code":401,"error":"Invalid credentials","status":"Unauthorized"}"#),
            "Invalid credentials"
        );
        assert_eq!(message_of(b"502 Bad Gateway\n"), "502 Bad Gateway");
        assert_eq!(message_of(b""), "(empty body)");
        assert!(message_of("x".repeat(1000).as_bytes()).chars().count() <= 301);
    }
}
