//! HTTP routes. Mixpanel's endpoints keep Mixpanel's paths; Ferry's extensions are under
//! `/ferry/v1/`.

mod export;
mod extensions;
mod import;
mod lookup;
mod profiles;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;

use crate::faults::Fault;
use crate::{reply, App, DropConnection};

/// Largest body read from the wire (lookup tables may be 100 MB; gzip may not shrink them).
const MAX_WIRE_BYTES: usize = 110 * 1000 * 1000;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/import", post(import::import))
        .route("/engage", post(profiles::engage))
        .route("/groups", post(profiles::groups))
        .route("/lookup-tables", get(lookup::list))
        .route("/lookup-tables/{id}", put(lookup::replace))
        .route("/api/2.0/export", get(export::export))
        .route("/ferry/v1/health", get(extensions::health))
        .route("/ferry/v1/events/delete", post(extensions::delete_events))
        .route("/ferry/v1/stats", get(extensions::stats))
        .route("/ferry/v1/projects/{id}/state", get(extensions::state))
        .route(
            "/ferry/v1/projects/{id}/lookup-tables",
            post(extensions::create_lookup_table),
        )
        .route(
            "/ferry/v1/faults",
            get(extensions::get_faults).put(extensions::set_faults),
        )
        .layer(DefaultBodyLimit::max(MAX_WIRE_BYTES))
        .with_state(app)
}

/// Query parameters: Mixpanel clients send extras (`ip`, `verbose`, …) that must be accepted.
pub type Params = HashMap<String, String>;

pub fn flag(params: &Params, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// What a fault drawn before handling turned into: an early answer, or go on (perhaps late).
pub enum Before {
    Proceed { drop_after: bool },
    Answer(Response),
}

/// Draws and applies the pre-handling part of a fault.
pub async fn inject(app: &App) -> Before {
    let fault = app.faults.draw();
    if fault != Fault::None {
        app.stats.fault(fault.name());
    }
    match fault {
        Fault::None => Before::Proceed { drop_after: false },
        Fault::Status429 => Before::Answer(reply::rate_limited()),
        Fault::Status502 => Before::Answer(reply::gateway(StatusCode::BAD_GATEWAY)),
        Fault::Status503 => Before::Answer(reply::gateway(StatusCode::SERVICE_UNAVAILABLE)),
        Fault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            Before::Proceed { drop_after: false }
        }
        Fault::Timeout(hold) => {
            tokio::time::sleep(hold).await;
            Before::Answer(dropped())
        }
        Fault::Drop => Before::Answer(dropped()),
        Fault::DropAfterStore => Before::Proceed { drop_after: true },
    }
}

/// A response that is never sent: the connection is closed instead.
pub fn dropped() -> Response {
    let mut r = Response::new(axum::body::Body::empty());
    r.extensions_mut().insert(DropConnection);
    r
}

/// Finishes a handled request: counts it, and applies a drop-after-store fault.
pub fn finish(
    app: &App,
    project: &str,
    endpoint: &str,
    response: Response,
    drop_after: bool,
) -> Response {
    app.stats
        .request(project, endpoint, response.status().as_u16());
    if drop_after {
        return dropped();
    }
    response
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The bucket used for counters of requests that were not authenticated.
pub const UNAUTHENTICATED: &str = "_unauthenticated";

pub fn auth_failure(e: crate::auth::AuthError) -> Response {
    match e {
        crate::auth::AuthError::ProjectIdRequired => reply::error(
            StatusCode::BAD_REQUEST,
            "project_id is required when authenticating with a service account",
        ),
        _ => reply::unauthorized(),
    }
}

/// Authenticates a request (see [`crate::auth::authenticate`]); `Err` is the counted answer.
pub fn authenticated(
    app: &App,
    endpoint: &str,
    params: &Params,
    headers: &HeaderMap,
    allow_token: bool,
) -> Result<String, Response> {
    crate::auth::authenticate(
        &app.config,
        headers,
        params.get("project_id").map(String::as_str),
        allow_token,
    )
    .map(|(project, _)| project)
    .map_err(|e| finish(app, UNAUTHENTICATED, endpoint, auth_failure(e), false))
}

/// The common start of a faultable endpoint: the fault draw, then authentication. `Ok` gives the
/// project and whether the connection is to be dropped after storing; `Err` is the answer.
pub async fn admit(
    app: &App,
    endpoint: &str,
    params: &Params,
    headers: &HeaderMap,
    allow_token: bool,
) -> Result<(String, bool), Response> {
    let drop_after = match inject(app).await {
        Before::Answer(r) => return Err(finish(app, UNAUTHENTICATED, endpoint, r, false)),
        Before::Proceed { drop_after } => drop_after,
    };
    Ok((
        authenticated(app, endpoint, params, headers, allow_token)?,
        drop_after,
    ))
}
