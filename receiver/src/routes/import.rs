//! `POST /import`: events, strict-mode validation, deduplication.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ferry_core::ingest::event::{insert_id_of, validate_event, DedupKey};
use ferry_core::ingest::limits::{check_request, MAX_REQUEST_BYTES};
use serde_json::Value;

use super::{admit, finish, flag, now_ms, Params};
use crate::body::{decode, parse_record, split_records, BodyError};
use crate::config::StoreMode;
use crate::reply::{self, FailedRecord};
use crate::App;

const ENDPOINT: &str = "import";

pub async fn import(
    State(app): State<Arc<App>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (project, drop_after) = match admit(&app, ENDPOINT, &params, &headers, true).await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let response = handle(&app, &project, &params, &headers, &body);
    finish(&app, &project, ENDPOINT, response, drop_after)
}

fn handle(app: &App, project: &str, params: &Params, headers: &HeaderMap, body: &[u8]) -> Response {
    let raw = match decode(headers, body, MAX_REQUEST_BYTES) {
        Ok(raw) => raw,
        Err(BodyError::TooLarge) => {
            return reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request exceeds max limit of {MAX_REQUEST_BYTES} bytes"),
            )
        }
        Err(BodyError::Invalid(m)) => return reply::error(StatusCode::BAD_REQUEST, m),
    };
    let records = match split_records(headers, &raw) {
        Ok(r) => r,
        Err(BodyError::TooLarge) => {
            return reply::error(StatusCode::PAYLOAD_TOO_LARGE, "request too large")
        }
        Err(BodyError::Invalid(m)) => return reply::error(StatusCode::BAD_REQUEST, m),
    };
    if let Err(m) = check_request(records.len(), raw.len()) {
        return reply::error(StatusCode::PAYLOAD_TOO_LARGE, m);
    }
    if !app
        .limits
        .admit(project, records.len() as u64, raw.len() as u64)
    {
        return reply::rate_limited();
    }
    // Without strict=1 Mixpanel drops invalid events silently; the receiver does the same but
    // still counts them.
    let strict = flag(params, "strict");
    let rules = app.config.rules.event_rules();
    let now = now_ms();
    // Counting mode keeps only dedup keys: each event is dropped as soon as it is validated, so
    // a request's events are never all alive at once.
    let keys_only = app.store.mode() == StoreMode::Memory;
    let mut accepted: Vec<(DedupKey, Value)> =
        Vec::with_capacity(if keys_only { 0 } else { records.len() });
    let mut accepted_keys: Vec<DedupKey> =
        Vec::with_capacity(if keys_only { records.len() } else { 0 });
    let mut failed = Vec::new();
    let mut truncated = 0u64;
    for (index, record) in records.into_iter().enumerate() {
        let (mut event, len) = match parse_record(record) {
            Ok(r) => r,
            Err(e) => {
                failed.push(FailedRecord {
                    index,
                    insert_id: None,
                    distinct_id: None,
                    field: e.field,
                    message: e.message,
                });
                continue;
            }
        };
        match validate_event(&mut event, len, &rules, now) {
            Ok(ok) => {
                truncated += ok.truncated_strings as u64;
                if keys_only {
                    accepted_keys.push(ok.key);
                } else {
                    accepted.push((ok.key, event));
                }
            }
            Err(e) => failed.push(FailedRecord {
                index,
                insert_id: insert_id_of(&event).map(str::to_owned),
                distinct_id: None,
                field: e.field,
                message: e.message,
            }),
        }
    }
    let imported = accepted.len() + accepted_keys.len();
    let stored = if keys_only {
        app.store.put_event_keys(project, &accepted_keys)
    } else {
        app.store.put_events(project, now, accepted)
    };
    let stored = match stored {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "receiver could not store events");
            return reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("could not store the events: {e}"),
            );
        }
    };
    let failed_count = failed.len() as u64;
    app.stats.update(project, |c| {
        c.events_imported += stored.new as u64;
        c.events_replaced += stored.replaced as u64;
        c.events_failed += failed_count;
        c.strings_truncated += truncated;
        c.uncompressed_bytes += raw.len() as u64;
    });
    if strict {
        reply::import_result(imported, failed)
    } else {
        reply::import_result(imported, Vec::new())
    }
}
