//! A tenant's or sync's webhook (called on failed runs and volume deviations): its flags, its
//! definition-file form and its JSON.

use std::path::PathBuf;

use clap::Args;
use ferry_proto::admin::v1 as pb;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::CliError;
use super::read_secret;

#[derive(Args, Default)]
pub struct WebhookFlags {
    /// POST run failures and volume deviations here ("" removes the webhook).
    #[arg(long, value_name = "URL", help_heading = "Webhook")]
    webhook_url: Option<String>,
    /// A file holding the secret that signs each call (X-Ferry-Signature; `-`: stdin).
    #[arg(long, value_name = "PATH", help_heading = "Webhook")]
    webhook_secret_file: Option<PathBuf>,
    /// Notify on failed runs (default true).
    #[arg(long, value_name = "BOOL", help_heading = "Webhook")]
    webhook_on_failure: Option<bool>,
    /// Notify when a run's volume is off the recent median by more than this percent.
    #[arg(long, value_name = "PERCENT", help_heading = "Webhook")]
    webhook_volume_deviation: Option<u32>,
    /// Successful runs the median is taken over (default 5).
    #[arg(long, value_name = "RUNS", help_heading = "Webhook")]
    webhook_volume_window: Option<u32>,
    /// No volume notification before this many successful runs (default 3).
    #[arg(long, value_name = "RUNS", help_heading = "Webhook")]
    webhook_volume_min_runs: Option<u32>,
}

impl WebhookFlags {
    fn names_any(&self) -> bool {
        self.webhook_url.is_some()
            || self.webhook_secret_file.is_some()
            || self.webhook_on_failure.is_some()
            || self.webhook_volume_deviation.is_some()
            || self.webhook_volume_window.is_some()
            || self.webhook_volume_min_runs.is_some()
    }

    pub fn apply(&self, webhook: &mut Option<pb::Webhook>) -> Result<(), CliError> {
        if self.webhook_url.as_deref() == Some("") {
            *webhook = None;
            return Ok(());
        }
        if !self.names_any() {
            return Ok(());
        }
        let w = webhook.get_or_insert_with(Default::default);
        if let Some(url) = &self.webhook_url {
            w.url = url.clone();
        }
        if let Some(p) = &self.webhook_secret_file {
            w.secret = read_secret(p, "--webhook-secret-file")?;
        }
        if self.webhook_on_failure.is_some() {
            w.on_failure = self.webhook_on_failure;
        }
        if self.webhook_volume_deviation.is_some() {
            w.volume_deviation_percent = self.webhook_volume_deviation;
        }
        if let Some(n) = self.webhook_volume_window {
            w.volume_window = n;
        }
        if let Some(n) = self.webhook_volume_min_runs {
            w.volume_min_runs = n;
        }
        if w.url.is_empty() {
            return Err(CliError::usage("the webhook needs --webhook-url"));
        }
        Ok(())
    }
}

/// In a definition file: the shape `--output json` prints, plus the write-only `secret`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    pub url: String,
    #[serde(default)]
    pub secret: String,
    #[serde(default, rename = "secret_set")]
    _secret_set: Option<IgnoredAny>,
    #[serde(default)]
    pub on_failure: Option<bool>,
    #[serde(default)]
    pub volume_deviation_percent: Option<u32>,
    #[serde(default)]
    pub volume_window: u32,
    #[serde(default)]
    pub volume_min_runs: u32,
}

impl WebhookFile {
    pub fn into_proto(self) -> pb::Webhook {
        pb::Webhook {
            url: self.url,
            secret: self.secret,
            secret_set: false,
            on_failure: self.on_failure,
            volume_deviation_percent: self.volume_deviation_percent,
            volume_window: self.volume_window,
            volume_min_runs: self.volume_min_runs,
        }
    }
}

pub fn to_json(w: Option<&pb::Webhook>) -> Value {
    match w {
        Some(w) => json!({
            "url": w.url,
            "secret_set": w.secret_set,
            "on_failure": w.on_failure.unwrap_or(true),
            "volume_deviation_percent": w.volume_deviation_percent,
            "volume_window": w.volume_window,
            "volume_min_runs": w.volume_min_runs,
        }),
        None => Value::Null,
    }
}

/// One line for people.
pub fn text(w: Option<&pb::Webhook>) -> String {
    let Some(w) = w else {
        return String::new();
    };
    let mut parts = vec![w.url.clone()];
    if w.on_failure.unwrap_or(true) {
        parts.push("on failure".into());
    }
    if let Some(p) = w.volume_deviation_percent {
        parts.push(format!("volume ±{p}%"));
    }
    if w.secret_set {
        parts.push("signed".into());
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_set_change_and_remove_the_webhook() {
        let mut w = None;
        WebhookFlags {
            webhook_url: Some("http://hooks/x".into()),
            webhook_volume_deviation: Some(50),
            ..Default::default()
        }
        .apply(&mut w)
        .unwrap();
        assert_eq!(text(w.as_ref()), "http://hooks/x, on failure, volume ±50%");
        WebhookFlags {
            webhook_on_failure: Some(false),
            ..Default::default()
        }
        .apply(&mut w)
        .unwrap();
        assert_eq!(w.as_ref().unwrap().on_failure, Some(false));
        WebhookFlags {
            webhook_url: Some(String::new()),
            ..Default::default()
        }
        .apply(&mut w)
        .unwrap();
        assert!(w.is_none());
        let e = WebhookFlags {
            webhook_volume_window: Some(3),
            ..Default::default()
        }
        .apply(&mut None)
        .unwrap_err();
        assert!(e.message.contains("--webhook-url"));
    }
}
