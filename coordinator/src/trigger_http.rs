//! The per-sync HTTP trigger: `PUT /v1/tenants/{tenant}/syncs/{sync}/trigger` with
//! `Authorization: Bearer <token>` starts a run, as Mixpanel's warehouse-connector trigger URL
//! does. The tenant is in the path because sync ids are unique only within a tenant.
//!
//! | answer | when |
//! |---|---|
//! | 202 `{"run_id", "tenant", "sync"}` | a run was started |
//! | 401 | no bearer token, or one the node does not know |
//! | 403 | a tenant token of another tenant (operator tokens may trigger any sync) |
//! | 404 | no such sync |
//! | 409 `{"run_id"}` | the sync is running (the running run's id) or paused |
//! | 429 + `Retry-After` | over the sync's limit: 5 per hour by default ([`TriggerLimit`]) |
//! | 503 + `Retry-After` | the run could not be started now |
//!
//! Every error body is JSON: `{"error": "<code>", "message": "<what happened>"}`.
//!
//! On a cluster node the run starts on the node the sync is assigned to, as the gRPC
//! `TriggerSync` does ([`Peers::start_on_assigned_node`]); the answers name that node
//! (`"node"`), and a 503 says which node could not be reached.
//!
//! The limit is a sliding window kept in this node's memory: it counts the requests that
//! reached an existing sync (202 and 409) in the last `window`, is not shared between nodes
//! (behind a load balancer each node allows the limit) and starts empty when the node restarts.
//! Unauthenticated requests never use up a sync's budget.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde_json::json;

use crate::cluster::link::Peers;
use crate::records::SyncId;
use crate::schedule::{Clock, Scheduler, SyncTrigger, TriggerError, TriggerReason};

/// The URL the admin API hands out for a sync, from the node's public base URL
/// (`https://ferry.example.com`, with or without a trailing slash).
pub fn trigger_url(public_base_url: &str, sync: &SyncId) -> String {
    format!(
        "{}/v1/tenants/{}/syncs/{}/trigger",
        public_base_url.trim_end_matches('/'),
        sync.tenant(),
        sync.sync()
    )
}

/// Whose a bearer token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The operator: may trigger any sync.
    Operator,
    /// A tenant's API token: may trigger that tenant's syncs.
    Tenant(String),
}

/// Checks bearer tokens (the admin API's token store implements it).
#[async_trait]
pub trait TokenVerifier: Send + Sync {
    /// `Ok(None)`: the token is not known. `Err`: it could not be checked now.
    async fn verify(&self, bearer_token: &str) -> Result<Option<Caller>, String>;
}

/// How many triggers a sync accepts in a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerLimit {
    pub max: u32,
    pub window: Duration,
}

impl Default for TriggerLimit {
    /// 5 per hour, as Mixpanel limits its trigger URLs.
    fn default() -> Self {
        Self {
            max: 5,
            window: Duration::from_secs(3600),
        }
    }
}

/// What the trigger router needs.
#[derive(Clone)]
pub struct TriggerHttp {
    trigger: Arc<dyn SyncTrigger>,
    tokens: Arc<dyn TokenVerifier>,
    clock: Arc<dyn Clock>,
    limit: TriggerLimit,
    recent: Arc<Mutex<HashMap<SyncId, VecDeque<DateTime<Utc>>>>>,
    scheduler: Option<Scheduler>,
    peers: Option<Peers>,
}

impl TriggerHttp {
    pub fn new(
        trigger: Arc<dyn SyncTrigger>,
        tokens: Arc<dyn TokenVerifier>,
        clock: Arc<dyn Clock>,
        limit: TriggerLimit,
    ) -> Self {
        Self {
            trigger,
            tokens,
            clock,
            limit,
            recent: Arc::default(),
            scheduler: None,
            peers: None,
        }
    }

    /// A cluster node: start each run on the node its sync is assigned to.
    pub fn with_peers(mut self, peers: Option<Peers>) -> Self {
        self.peers = peers;
        self
    }

    /// Tells `scheduler` of every run started here, so an `every N` schedule counts its
    /// interval from that run.
    pub fn with_scheduler(mut self, scheduler: Scheduler) -> Self {
        self.scheduler = Some(scheduler);
        self
    }

    /// `Err(retry after)` when the sync has used its budget.
    fn check_limit(&self, sync: &SyncId, now: DateTime<Utc>) -> Result<(), Duration> {
        let window = chrono::Duration::from_std(self.limit.window).unwrap_or(chrono::Duration::MAX);
        let mut recent = self.recent.lock();
        let used = match recent.get_mut(sync) {
            Some(times) => {
                while times.front().is_some_and(|t| *t + window <= now) {
                    times.pop_front();
                }
                times.len()
            }
            None => 0,
        };
        if used == 0 {
            recent.remove(sync);
        }
        if used < self.limit.max as usize {
            return Ok(());
        }
        // The oldest counted request leaves the window first.
        Err(match recent.get(sync).and_then(|times| times.front()) {
            Some(oldest) => (*oldest + window - now).to_std().unwrap_or(Duration::ZERO),
            None => self.limit.window,
        })
    }

    fn count(&self, sync: &SyncId, now: DateTime<Utc>) {
        self.recent
            .lock()
            .entry(sync.clone())
            .or_default()
            .push_back(now);
    }
}

/// The router to mount on the node's HTTP port.
pub fn router(state: TriggerHttp) -> Router {
    Router::new()
        .route("/v1/tenants/{tenant}/syncs/{sync}/trigger", put(trigger))
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": code, "message": message.into() })),
    )
        .into_response()
}

fn with_retry_after(mut response: Response, after: Duration) -> Response {
    // Whole seconds, rounded up, so a client that waits exactly this long is let in.
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn trigger(
    State(state): State<TriggerHttp>,
    Path((tenant, sync)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = bearer(&headers) else {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send the tenant's API token as 'Authorization: Bearer <token>'",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    let caller = match state.tokens.verify(token).await {
        Ok(Some(caller)) => caller,
        Ok(None) => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the bearer token is not valid (unknown or deleted)",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            return response;
        }
        Err(reason) => {
            tracing::warn!(error = %reason, "trigger: token check failed");
            return with_retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the token could not be checked now; try again",
                ),
                Duration::from_secs(5),
            );
        }
    };
    if let Caller::Tenant(own) = &caller {
        if *own != tenant {
            return error(
                StatusCode::FORBIDDEN,
                "permission_denied",
                format!("this token belongs to another tenant, not to '{tenant}'"),
            );
        }
    }
    let Ok(sync_id) = SyncId::new(&tenant, &sync) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("'{tenant}/{sync}' is not a valid sync id"),
        );
    };
    let now = state.clock.now();
    if let Err(after) = state.check_limit(&sync_id, now) {
        let limit = state.limit;
        return with_retry_after(
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "sync {sync_id} accepts {} triggers per {} s; try again in {} s",
                    limit.max,
                    limit.window.as_secs(),
                    after.as_secs_f64().ceil()
                ),
            ),
            after,
        );
    }
    if let Some(peers) = &state.peers {
        match peers
            .start_on_assigned_node(&sync_id, TriggerReason::Http)
            .await
        {
            Ok(Some(forwarded)) => return forwarded_answer(&state, &sync_id, now, forwarded),
            Ok(None) => {}
            Err(status) => {
                return with_retry_after(
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        format!(
                            "where sync {sync_id} runs could not be read: {}",
                            status.message()
                        ),
                    ),
                    Duration::from_secs(5),
                )
            }
        }
    }
    match state.trigger.trigger(&sync_id, TriggerReason::Http).await {
        Ok(run_id) => {
            state.count(&sync_id, now);
            if let Some(scheduler) = &state.scheduler {
                scheduler.note_triggered(&sync_id, now);
            }
            tracing::info!(sync = %sync_id, run = %run_id, "run triggered over HTTP");
            (
                StatusCode::ACCEPTED,
                Json(json!({ "run_id": run_id, "tenant": tenant, "sync": sync })),
            )
                .into_response()
        }
        Err(TriggerError::AlreadyRunning { sync, run_id }) => {
            state.count(&sync_id, now);
            let message = format!("sync {sync} is already running (run {run_id}); trigger it again when that run has finished");
            (
                StatusCode::CONFLICT,
                Json(json!({ "error": "already_running", "message": message, "run_id": run_id })),
            )
                .into_response()
        }
        Err(e @ TriggerError::Paused(_)) => {
            state.count(&sync_id, now);
            error(
                StatusCode::CONFLICT,
                "paused",
                format!("{e}: resume it to trigger runs"),
            )
        }
        Err(e @ TriggerError::NotFound(_)) => {
            error(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        Err(e @ TriggerError::Unavailable { .. }) => with_retry_after(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            Duration::from_secs(30),
        ),
    }
}

/// The answer for a trigger passed on to the sync's node: its refusals keep their meaning
/// (the node's own message, its id in `"node"`).
fn forwarded_answer(
    state: &TriggerHttp,
    sync_id: &SyncId,
    now: DateTime<Utc>,
    forwarded: crate::cluster::link::Forwarded,
) -> Response {
    let node = forwarded.node;
    let refused = match forwarded.run {
        Ok(run_id) => {
            state.count(sync_id, now);
            return (
                StatusCode::ACCEPTED,
                Json(json!({
                    "run_id": run_id,
                    "tenant": sync_id.tenant(),
                    "sync": sync_id.sync(),
                    "node": node,
                })),
            )
                .into_response();
        }
        Err(refused) => refused,
    };
    let (status, code) = match refused.code() {
        tonic::Code::AlreadyExists => (StatusCode::CONFLICT, "already_running"),
        tonic::Code::FailedPrecondition => (StatusCode::CONFLICT, "paused"),
        tonic::Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    if status == StatusCode::CONFLICT {
        state.count(sync_id, now);
    }
    let mut body = json!({ "error": code, "message": refused.message(), "node": node });
    if let Some(run_id) = refused
        .metadata()
        .get(crate::admin::errors::RUNNING_RUN)
        .and_then(|v| v.to_str().ok())
    {
        body["run_id"] = run_id.into();
    }
    let response = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        with_retry_after(response, Duration::from_secs(30))
    } else {
        response
    }
}

#[cfg(test)]
mod tests;
