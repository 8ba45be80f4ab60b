//! Ferry extensions — NOT part of Mixpanel's API. They exist for Mirror deletes, for tests and
//! for people inspecting a dry run. Everything here lives under `/ferry/v1/`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use ferry_core::ingest::event::{validate_event, EventRules};
use ferry_core::ingest::limits::{check_request, MAX_REQUEST_BYTES};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{authenticated, finish, now_ms, Params};
use crate::body::{decode, frame_records, BodyError};
use crate::config::{FaultConfig, StoreMode};
use crate::reply::{self, FailedRecord};
use crate::App;

pub async fn health() -> Response {
    reply::json_reply(StatusCode::OK, json!({"status": "ok"}))
}

/// `POST /ferry/v1/events/delete?project_id=` — deletes events by their dedup key. The body is
/// shaped like an `/import` body (events with `event`, `time`, `distinct_id`, `$insert_id`);
/// other properties are ignored. Auth as `/import`.
pub async fn delete_events(
    State(app): State<Arc<App>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const ENDPOINT: &str = "ferry-delete";
    let project = match authenticated(&app, ENDPOINT, &params, &headers, true) {
        Ok(project) => project,
        Err(answer) => return answer,
    };
    let response = (|| {
        let raw = decode(&headers, &body, MAX_REQUEST_BYTES).map_err(body_error)?;
        let records = frame_records(&headers, &raw).map_err(body_error)?;
        check_request(records.len(), raw.len())
            .map_err(|m| reply::error(StatusCode::PAYLOAD_TOO_LARGE, m))?;
        // Key extraction only: the time window does not apply to deleting what is stored.
        let rules = EventRules {
            future_tolerance_ms: i64::MAX / 4,
            ..app.config.rules.event_rules()
        };
        let mut keys = Vec::new();
        let mut failed = Vec::new();
        for (index, record) in records.into_iter().enumerate() {
            let key = record.and_then(|(mut ev, len)| {
                if let Some(props) = ev.get_mut("properties").and_then(Value::as_object_mut) {
                    props.retain(|k, _| {
                        matches!(
                            k.as_str(),
                            "time" | "distinct_id" | "$insert_id" | "$user_id" | "$device_id"
                        )
                    });
                }
                validate_event(&mut ev, len, &rules, now_ms()).map(|ok| ok.key)
            });
            match key {
                Ok(k) => keys.push(k),
                Err(e) => failed.push(FailedRecord {
                    index,
                    insert_id: None,
                    distinct_id: None,
                    field: e.field,
                    message: e.message,
                }),
            }
        }
        let requested = keys.len();
        let deleted = app.store.delete_events(&project, keys).map_err(|e| {
            reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("could not delete: {e}"),
            )
        })?;
        app.stats
            .update(&project, |c| c.events_deleted += deleted as u64);
        let mut body = json!({
            "code": if failed.is_empty() { 200 } else { 400 },
            "status": if failed.is_empty() { "OK" } else { "Bad Request" },
            "num_records_deleted": deleted,
            "num_records_not_found": requested - deleted,
        });
        if !failed.is_empty() {
            body["failed_records"] = json!(failed);
            return Ok(reply::json_reply(StatusCode::BAD_REQUEST, body));
        }
        Ok::<_, Response>(reply::json_reply(StatusCode::OK, body))
    })()
    .unwrap_or_else(|r| r);
    finish(&app, &project, ENDPOINT, response, false)
}

fn body_error(e: BodyError) -> Response {
    match e {
        BodyError::TooLarge => reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request exceeds max limit of {MAX_REQUEST_BYTES} bytes"),
        ),
        BodyError::Invalid(m) => reply::error(StatusCode::BAD_REQUEST, m),
    }
}

/// `GET /ferry/v1/stats` — counters of requests and records by outcome, for every project.
pub async fn stats(State(app): State<Arc<App>>) -> Response {
    reply::json_reply(StatusCode::OK, app.stats.snapshot())
}

#[derive(Deserialize)]
pub struct StateParams {
    /// Set to `false` to leave the (possibly large) event list out.
    events: Option<bool>,
}

/// `GET /ferry/v1/projects/{id}/state` — what the project holds now, and its counters.
pub async fn state(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<StateParams>,
) -> Response {
    let with_events = q.events.unwrap_or(true) && app.store.mode() == StoreMode::Disk;
    let body = app.store.read(&id, |data| {
        let mut events: Vec<_> = if with_events { data.events.iter().collect() } else { Vec::new() };
        events.sort_by(|a, b| a.0.cmp(b.0));
        let profiles: Map<String, Value> = data.profiles.iter().map(|(k, p)| (k.clone(), json!(p))).collect();
        let groups: Vec<Value> = data
            .groups
            .iter()
            .map(|((key, gid), p)| json!({"group_key": key, "group_id": gid, "properties": p.properties, "last_seen_ms": p.last_seen_ms}))
            .collect();
        let lookup: Map<String, Value> = data.lookup_tables.iter().map(|(k, s)| (k.clone(), json!({"name": s.name, "table": s.table}))).collect();
        json!({
            "project_id": id,
            "store": app.store.mode(),
            "event_count": data.event_count(),
            "events": events.into_iter().map(|(_, s)| &s.event).collect::<Vec<_>>(),
            "profiles": profiles,
            "groups": groups,
            "lookup_tables": lookup,
        })
    });
    match body {
        Some(mut b) => {
            b["counters"] = json!(app.stats.project(&id));
            reply::json_reply(StatusCode::OK, b)
        }
        None => reply::error(StatusCode::NOT_FOUND, format!("unknown project '{id}'")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLookupTable {
    id: String,
    name: String,
}

/// `POST /ferry/v1/projects/{id}/lookup-tables` — declares a lookup table, standing in for
/// creating it in Mixpanel's UI. 201 when created, 200 when it already existed.
pub async fn create_lookup_table(
    State(app): State<Arc<App>>,
    Path(project): Path<String>,
    Json(t): Json<NewLookupTable>,
) -> Response {
    if t.id.trim().is_empty() {
        return reply::error(StatusCode::BAD_REQUEST, "'id' must not be empty");
    }
    match app.store.create_lookup_table(&project, &t.id, &t.name) {
        Ok(true) => reply::json_reply(StatusCode::CREATED, json!({"id": t.id, "name": t.name})),
        Ok(false) => reply::json_reply(StatusCode::OK, json!({"id": t.id, "name": t.name})),
        Err(crate::store::StoreError::UnknownProject(p)) => {
            reply::error(StatusCode::NOT_FOUND, format!("unknown project '{p}'"))
        }
        Err(e) => reply::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn get_faults(State(app): State<Arc<App>>) -> Response {
    reply::json_reply(StatusCode::OK, json!(app.faults.config()))
}

/// `PUT /ferry/v1/faults` — replaces the fault configuration (and reseeds).
pub async fn set_faults(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let config: FaultConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return reply::error(
                StatusCode::BAD_REQUEST,
                format!("invalid fault configuration: {e}"),
            )
        }
    };
    if let Err(m) = config.validate() {
        return reply::error(StatusCode::BAD_REQUEST, m);
    }
    app.faults.set(config.clone());
    reply::json_reply(StatusCode::OK, json!(config))
}
