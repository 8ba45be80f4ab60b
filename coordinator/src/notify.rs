//! Webhooks about runs: a tenant's webhook (and a sync's own, if it has one) is called when a
//! run fails and when a successful run's volume — records sent — deviates from the median of
//! the recent successful runs by more than the webhook's `volume_deviation_percent`.
//!
//! Delivery happens off the run path: [`Notifier::run_finished`] only builds the payloads and
//! spawns their delivery. Each request has a timeout and is retried with backoff on network
//! errors, 429 and 5xx answers; a webhook that keeps failing is logged and given up, and never
//! affects the run.
//!
//! The request: `POST <url>` with a JSON body ([`Notification`]) and headers
//! `X-Ferry-Event` (`run_failed` or `volume_deviation`), `X-Ferry-Delivery` (the same for every
//! retry of one notification, so receivers can drop duplicates) and, with a secret,
//! `X-Ferry-Signature: sha256=<lowercase hex HMAC-SHA256 of the body with the secret>`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_core::spec::{SyncSpec, TenantSpec, WebhookSpec};
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::watch;

use crate::records::{RunCounts, RunErrorEntry, RunRecord, RunState};

/// Per-row errors included in a failure notification (the run log has them all).
pub const ERROR_SAMPLE: usize = 10;

#[derive(Debug, Clone)]
pub struct NotifierSettings {
    /// Per request.
    pub timeout: Duration,
    /// Tries per notification, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub first_backoff: Duration,
}

impl Default for NotifierSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            attempts: 4,
            first_backoff: Duration::from_secs(1),
        }
    }
}

/// How far a run's volume is from the recent median.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VolumeDeviation {
    /// Records sent by this run.
    pub volume: u64,
    /// The median of the compared runs' volumes.
    pub median: f64,
    /// `(volume - median) / median`: 0.8 is 80% more, -0.5 half. None when the median is 0.
    pub deviation: Option<f64>,
    /// The share allowed either way (0.5 for 50%).
    pub threshold: f64,
    /// How many previous successful runs were compared.
    pub runs_compared: usize,
}

/// The deviation of `volume` from the median of `previous` (the volumes of recent successful
/// runs), when it is more than `threshold` (a share: 0.5 is ±50%) either way and at least
/// `min_runs` previous volumes are given. A median of 0 makes any non-zero volume a deviation.
pub fn volume_deviation(
    volume: u64,
    previous: &[u64],
    threshold: f64,
    min_runs: usize,
) -> Option<VolumeDeviation> {
    if previous.is_empty() || previous.len() < min_runs {
        return None;
    }
    let mut sorted = previous.to_vec();
    sorted.sort_unstable();
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[mid] as f64
    } else {
        (sorted[mid - 1] as f64 + sorted[mid] as f64) / 2.0
    };
    let deviation = (median > 0.0).then(|| (volume as f64 - median) / median);
    let deviates = match deviation {
        Some(d) => d.abs() > threshold,
        None => volume > 0,
    };
    deviates.then_some(VolumeDeviation {
        volume,
        median,
        deviation,
        threshold,
        runs_compared: previous.len(),
    })
}

/// What a webhook receives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// `run_failed` or `volume_deviation`.
    pub event: &'static str,
    pub tenant: String,
    pub sync: String,
    pub run_id: String,
    pub import_id: String,
    pub state: RunState,
    pub message: Option<String>,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub counts: RunCounts,
    /// The first per-row errors (at most [`ERROR_SAMPLE`]).
    pub errors: Vec<RunErrorEntry>,
    /// Every per-row error of the run, including those not in the sample or the run log.
    pub errors_total: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeDeviation>,
}

impl Notification {
    fn of_run(event: &'static str, run: &RunRecord) -> Self {
        Self {
            event,
            tenant: run.sync.tenant().to_owned(),
            sync: run.sync.sync().to_owned(),
            run_id: run.run_id.clone(),
            import_id: run.import_id.clone(),
            state: run.state,
            message: run.message.clone(),
            queued_at: run.queued_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            counts: run.counts,
            errors: run.errors.iter().take(ERROR_SAMPLE).cloned().collect(),
            errors_total: run.errors.len() as u64 + run.errors_dropped,
            volume: None,
        }
    }
}

/// What a finished run calls for at one webhook.
pub fn notifications_for(
    hook: &WebhookSpec,
    run: &RunRecord,
    recent_runs: &[RunRecord],
) -> Vec<Notification> {
    let mut out = Vec::new();
    if run.state == RunState::Failed && hook.on_failure {
        out.push(Notification::of_run("run_failed", run));
    }
    if let (RunState::Succeeded, Some(percent)) = (run.state, hook.volume_deviation_percent) {
        let previous: Vec<u64> = recent_runs
            .iter()
            .filter(|r| r.run_id != run.run_id && r.state == RunState::Succeeded)
            .take(hook.volume_window as usize)
            .map(|r| r.counts.records_sent)
            .collect();
        if let Some(deviation) = volume_deviation(
            run.counts.records_sent,
            &previous,
            f64::from(percent) / 100.0,
            hook.volume_min_runs as usize,
        ) {
            let mut n = Notification::of_run("volume_deviation", run);
            n.volume = Some(deviation);
            out.push(n);
        }
    }
    out
}

/// `sha256=<hex>` of the body under the secret.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length; the error case cannot happen.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in bytes.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Sends run notifications. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    http: reqwest::Client,
    settings: Arc<NotifierSettings>,
    in_flight: Arc<watch::Sender<usize>>,
}

impl Notifier {
    pub fn new(settings: NotifierSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self {
            http,
            settings: Arc::new(settings),
            in_flight: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Called by the run manager after every run; `recent_runs` is the sync's run history,
    /// newest first (it may include this run). Returns at once: delivery runs in the
    /// background, on the current tokio runtime.
    pub fn run_finished(
        &self,
        tenant: &TenantSpec,
        sync: &SyncSpec,
        run: &RunRecord,
        recent_runs: &[RunRecord],
    ) {
        let mut hooks: Vec<&WebhookSpec> = Vec::new();
        for hook in [tenant.webhook.as_ref(), sync.webhook.as_ref()]
            .into_iter()
            .flatten()
        {
            // One URL set on both gets each notification once (the sync's settings count).
            hooks.retain(|h| h.url != hook.url);
            hooks.push(hook);
        }
        for hook in hooks {
            for notification in notifications_for(hook, run, recent_runs) {
                self.spawn_delivery(hook, notification);
            }
        }
    }

    /// Waits until every notification handed over so far was delivered or given up.
    pub async fn flush(&self) {
        let mut rx = self.in_flight.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    fn spawn_delivery(&self, hook: &WebhookSpec, notification: Notification) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(url = %hook.url, "webhook not sent: no async runtime");
            return;
        };
        let body = match serde_json::to_vec(&notification) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "webhook payload not serializable");
                return;
            }
        };
        let signature = hook.secret.as_ref().map(|s| signature(s.expose(), &body));
        let url = hook.url.clone();
        let event = notification.event;
        let delivery = format!(
            "{}/{}/{}/{}",
            notification.tenant, notification.sync, notification.run_id, event
        );
        let this = self.clone();
        self.in_flight.send_modify(|n| *n += 1);
        runtime.spawn(async move {
            this.deliver(&url, event, &delivery, body, signature).await;
            this.in_flight.send_modify(|n| *n -= 1);
        });
    }

    async fn deliver(
        &self,
        url: &str,
        event: &str,
        delivery: &str,
        body: Vec<u8>,
        signature: Option<String>,
    ) {
        let mut backoff = self.settings.first_backoff;
        let attempts = self.settings.attempts.max(1);
        for attempt in 1..=attempts {
            let mut request = self
                .http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("X-Ferry-Event", event)
                .header("X-Ferry-Delivery", delivery)
                .body(body.clone());
            if let Some(sig) = &signature {
                request = request.header("X-Ferry-Signature", sig);
            }
            let retry = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    tracing::info!(%url, event, delivery, "webhook delivered");
                    return;
                }
                Ok(response) => {
                    let status = response.status();
                    let retry = status.is_server_error() || status.as_u16() == 429;
                    tracing::warn!(%url, event, delivery, attempt, %status, "webhook refused");
                    retry
                }
                Err(e) => {
                    tracing::warn!(%url, event, delivery, attempt, error = %e, "webhook not reached");
                    true
                }
            };
            if !retry {
                break;
            }
            if attempt < attempts {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
        }
        tracing::error!(%url, event, delivery, "webhook given up");
    }
}

#[cfg(test)]
mod tests;
