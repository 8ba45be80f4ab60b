//! `PUT /lookup-tables/{id}` (replace, all or nothing) and `GET /lookup-tables` (list).
//! Service-account (or secret) auth; a project token is refused as Mixpanel refuses it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ferry_core::ingest::limits::{LOOKUP_ROWS_PER_PROJECT_EXCLUSIVE, MAX_LOOKUP_BYTES};
use ferry_core::ingest::lookup::{parse_lookup_csv, LookupError};
use serde_json::json;

use super::{admit, authenticated, finish, now_ms, Params};
use crate::body::{decode, BodyError};
use crate::reply;
use crate::store::{LookupRefusal, StoreError};
use crate::App;

const ENDPOINT: &str = "lookup-tables";

pub async fn list(
    State(app): State<Arc<App>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let project = match authenticated(&app, ENDPOINT, &params, &headers, false) {
        Ok(project) => project,
        Err(answer) => return answer,
    };
    let results = app
        .store
        .read(&project, |d| {
            d.lookup_tables
                .iter()
                .map(|(id, slot)| json!({"id": id, "name": slot.name}))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let response = reply::json_reply(
        StatusCode::OK,
        json!({"code": 200, "status": "OK", "results": results}),
    );
    finish(&app, &project, ENDPOINT, response, false)
}

pub async fn replace(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (project, drop_after) = match admit(&app, ENDPOINT, &params, &headers, false).await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let response = handle(&app, &project, &id, &headers, &body);
    finish(&app, &project, ENDPOINT, response, drop_after)
}

fn handle(app: &App, project: &str, id: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    if app
        .store
        .read(project, |d| d.lookup_tables.contains_key(id))
        != Some(true)
    {
        return reply::error(
            StatusCode::NOT_FOUND,
            format!("lookup table '{id}' not found"),
        );
    }
    let csv = match decode(headers, body, MAX_LOOKUP_BYTES) {
        Ok(csv) => csv,
        Err(BodyError::TooLarge) => {
            return reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request exceeds max limit of {MAX_LOOKUP_BYTES} bytes"),
            )
        }
        Err(BodyError::Invalid(m)) => return reply::error(StatusCode::BAD_REQUEST, m),
    };
    let table = match parse_lookup_csv(&csv) {
        Ok(t) => t,
        Err(LookupError::TooLarge) => {
            return reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request exceeds max limit of {MAX_LOOKUP_BYTES} bytes"),
            )
        }
        Err(LookupError::Header(m)) => return reply::error(StatusCode::BAD_REQUEST, m),
        Err(LookupError::Rows { rows, total }) => {
            return reply::json_reply(
                StatusCode::BAD_REQUEST,
                json!({
                    "code": 400,
                    "error": format!("{total} rows failed validation; the table was not changed"),
                    "status": "Bad Request",
                    "failed_records": rows,
                }),
            )
        }
    };
    let rows = table.rows.len();
    match app.store.replace_lookup_table(project, id, now_ms(), table) {
        Ok(Ok(())) => {
            app.stats.update(project, |c| c.lookup_replacements += 1);
            reply::json_reply(StatusCode::OK, json!({"code": 200, "status": "OK", "num_rows": rows}))
        }
        Ok(Err(LookupRefusal::RateLimited)) => reply::error(
            StatusCode::TOO_MANY_REQUESTS,
            "lookup table replaced too often: at most 100 replacements per table per 24 hours",
        ),
        Ok(Err(LookupRefusal::TooManyRows(n))) => reply::error(
            StatusCode::BAD_REQUEST,
            format!("the project's lookup tables would hold {n} rows; they must stay below {LOOKUP_ROWS_PER_PROJECT_EXCLUSIVE}"),
        ),
        Err(StoreError::UnknownLookupTable(_)) => reply::error(StatusCode::NOT_FOUND, format!("lookup table '{id}' not found")),
        Err(e) => reply::error(StatusCode::INTERNAL_SERVER_ERROR, format!("could not store the table: {e}")),
    }
}
