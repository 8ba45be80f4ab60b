//! `POST /engage` and `POST /groups`: profile updates applied in order.
//!
//! Responses (the strict-mode shape is open in Mixpanel's public record; this is the choice):
//! - `strict=1`: 200 `{"code":200,"num_records_imported":N,"status":"OK"}`, or the `/import`-style
//!   400 partial success with `failed_records` (valid updates are applied either way);
//! - `verbose=1`: 200 `{"status":1,"error":null}` or `{"status":0,"error":"..."}`;
//! - otherwise 200 with `1` or `0`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_core::ingest::limits::{check_request, MAX_REQUEST_BYTES};
use ferry_core::ingest::profile::{
    validate_profile_update, ProfileKind, ProfileTarget, ProfileUpdate,
};
use ferry_core::ingest::FieldError;
use serde_json::{json, Value};

use super::{finish, flag, inject, now_ms, Before, Params, UNAUTHENTICATED};
use crate::auth::AuthError;
use crate::body::{frame_updates, is_gzip, BodyError};
use crate::reply::{self, FailedRecord};
use crate::App;

pub async fn engage(
    state: State<Arc<App>>,
    params: Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    updates(state, params, headers, body, ProfileKind::User).await
}

pub async fn groups(
    state: State<Arc<App>>,
    params: Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    updates(state, params, headers, body, ProfileKind::Group).await
}

async fn updates(
    State(app): State<Arc<App>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
    kind: ProfileKind,
) -> Response {
    let endpoint = match kind {
        ProfileKind::User => "engage",
        ProfileKind::Group => "groups",
    };
    let drop_after = match inject(&app).await {
        Before::Answer(r) => return finish(&app, UNAUTHENTICATED, endpoint, r, false),
        Before::Proceed { drop_after } => drop_after,
    };
    // The header is optional here: updates name their project by `$token`.
    let header_project = match crate::auth::authenticate(
        &app.config,
        &headers,
        params.get("project_id").map(String::as_str),
        true,
    ) {
        Ok((p, _)) => Some(p),
        Err(AuthError::Missing) => None,
        Err(e) => {
            return finish(
                &app,
                UNAUTHENTICATED,
                endpoint,
                super::auth_failure(e),
                false,
            )
        }
    };
    let counted_as = header_project
        .clone()
        .unwrap_or_else(|| UNAUTHENTICATED.to_owned());
    let response = handle(
        &app,
        kind,
        header_project.as_deref(),
        &params,
        &headers,
        &body,
    );
    finish(&app, &counted_as, endpoint, response, drop_after)
}

fn handle(
    app: &App,
    kind: ProfileKind,
    header_project: Option<&str>,
    params: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if is_gzip(headers) {
        return reply::error(
            StatusCode::BAD_REQUEST,
            "gzip is not accepted on profile endpoints: send the body uncompressed",
        );
    }
    if body.len() > MAX_REQUEST_BYTES {
        return reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request exceeds max limit of {MAX_REQUEST_BYTES} bytes"),
        );
    }
    let records = match frame_updates(headers, body) {
        Ok(r) => r,
        Err(BodyError::TooLarge) => {
            return reply::error(StatusCode::PAYLOAD_TOO_LARGE, "request too large")
        }
        Err(BodyError::Invalid(m)) => return reply::error(StatusCode::BAD_REQUEST, m),
    };
    if let Err(m) = check_request(records.len(), body.len()) {
        return reply::error(StatusCode::PAYLOAD_TOO_LARGE, m);
    }
    if let Some(p) = header_project {
        if !app.limits.admit(p, 0, body.len() as u64) {
            return reply::rate_limited();
        }
    }
    let mut failed: Vec<FailedRecord> = Vec::new();
    // project → (raw updates, parsed updates), in request order.
    let mut by_project: BTreeMap<String, (Vec<Value>, Vec<ProfileUpdate>)> = BTreeMap::new();
    for (index, record) in records.into_iter().enumerate() {
        let (raw, len) = match record {
            Ok(r) => r,
            Err(e) => {
                failed.push(failure(index, None, e));
                continue;
            }
        };
        let distinct_id = raw
            .get("$distinct_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let checked = validate_profile_update(&raw, len, kind).and_then(|u| {
            let project = project_of(app, &u, header_project)?;
            check_group_key(app, &project, &u)?;
            Ok((project, u))
        });
        match checked {
            Ok((project, update)) => {
                let slot = by_project.entry(project).or_default();
                slot.0.push(raw);
                slot.1.push(update);
            }
            Err(e) => failed.push(failure(index, distinct_id, e)),
        }
    }
    let now = now_ms();
    let mut applied = 0;
    for (project, (raw, parsed)) in by_project {
        let n = parsed.len() as u64;
        if let Err(e) = app
            .store
            .apply_profile_updates(&project, kind, now, raw, &parsed)
        {
            tracing::error!(error = %e, "receiver could not store profile updates");
            return reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("could not store the updates: {e}"),
            );
        }
        applied += parsed.len();
        app.stats.update(&project, |c| match kind {
            ProfileKind::User => c.profile_updates_applied += n,
            ProfileKind::Group => c.group_updates_applied += n,
        });
    }
    let failed_count = failed.len() as u64;
    app.stats.update(
        header_project.unwrap_or(super::UNAUTHENTICATED),
        |c| match kind {
            ProfileKind::User => c.profile_updates_failed += failed_count,
            ProfileKind::Group => c.group_updates_failed += failed_count,
        },
    );

    if flag(params, "strict") {
        return reply::import_result(applied, failed);
    }
    let ok = failed.is_empty();
    if flag(params, "verbose") {
        let error = failed
            .first()
            .map(|f| format!("record {}: {}: {}", f.index, f.field, f.message));
        return reply::json_reply(
            StatusCode::OK,
            json!({"status": if ok { 1 } else { 0 }, "error": error}),
        );
    }
    (StatusCode::OK, if ok { "1" } else { "0" }).into_response()
}

fn failure(index: usize, distinct_id: Option<String>, e: FieldError) -> FailedRecord {
    FailedRecord {
        index,
        insert_id: None,
        distinct_id,
        field: e.field,
        message: e.message,
    }
}

/// The project an update belongs to: the authenticated one (whose token it must carry, if any),
/// or the one its `$token` names.
fn project_of(
    app: &App,
    update: &ProfileUpdate,
    header_project: Option<&str>,
) -> Result<String, FieldError> {
    let by_token = update
        .token
        .as_deref()
        .map(|t| app.config.projects.iter().find(|p| p.token == t));
    match (header_project, by_token) {
        (Some(p), None) => Ok(p.to_owned()),
        (Some(p), Some(Some(found))) if found.id == p => Ok(p.to_owned()),
        (Some(_), Some(_)) => Err(FieldError::new(
            "$token",
            "'$token' does not belong to the authenticated project",
        )),
        (None, Some(Some(found))) => Ok(found.id.clone()),
        (None, Some(None)) => Err(FieldError::new("$token", "unknown project token")),
        (None, None) => Err(FieldError::new(
            "$token",
            "'$token' is required when the request carries no credentials",
        )),
    }
}

fn check_group_key(app: &App, project: &str, update: &ProfileUpdate) -> Result<(), FieldError> {
    let ProfileTarget::Group { group_key, .. } = &update.target else {
        return Ok(());
    };
    let Some(cfg) = app.config.projects.iter().find(|p| p.id == project) else {
        return Ok(());
    };
    match &cfg.group_keys {
        Some(keys) if !keys.contains(group_key) => Err(FieldError::new(
            "$group_key",
            format!("group key '{group_key}' is not configured in this project"),
        )),
        _ => Ok(()),
    }
}
