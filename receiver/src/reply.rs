//! Response bodies, shaped exactly as Mixpanel's.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

pub const RATE_LIMITED_MESSAGE: &str =
    "Project exceeded rate limits. Please retry the request with exponential backoff.";

/// One entry of `failed_records`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FailedRecord {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insert_id: Option<String>,
    #[serde(rename = "$distinct_id", skip_serializing_if = "Option::is_none")]
    pub distinct_id: Option<String>,
    pub field: String,
    pub message: String,
}

pub fn json_reply(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn status_text(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Request Entity Too Large",
        429 => "Too Many Requests",
        _ => status.canonical_reason().unwrap_or("Error"),
    }
}

/// `{"code": N, "error": "...", "status": "..."}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_reply(
        status,
        json!({"code": status.as_u16(), "error": message.into(), "status": status_text(status)}),
    )
}

pub fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "Invalid credentials")
}

pub fn rate_limited() -> Response {
    error(StatusCode::TOO_MANY_REQUESTS, RATE_LIMITED_MESSAGE)
}

/// 502 and 503 come from Mixpanel's load balancers, not its API: plain text, no JSON.
pub fn gateway(status: StatusCode) -> Response {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    (status, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
}

/// `/import` outcome: 200 when everything passed, else the strict-mode partial success.
pub fn import_result(imported: usize, failed: Vec<FailedRecord>) -> Response {
    if failed.is_empty() {
        return json_reply(
            StatusCode::OK,
            json!({"code": 200, "num_records_imported": imported, "status": "OK"}),
        );
    }
    json_reply(
        StatusCode::BAD_REQUEST,
        json!({
            "code": 400,
            "error": "some data points in the request failed validation",
            "status": "Bad Request",
            "num_records_imported": imported,
            "failed_records": failed,
        }),
    )
}
