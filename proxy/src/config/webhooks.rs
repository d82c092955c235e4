//! `[[webhooks]]`: where lifecycle events are POSTed, signed, with retries.

use std::time::Duration;

use serde::Deserialize;

use super::problems::Problems;

/// `[[webhooks]]`: where lifecycle events are POSTed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// The endpoint (http:// or https://).
    pub url: String,
    /// Environment variable holding the HMAC-SHA256 secret (signature header `x-jitgate-signature`).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// `json` (default) or `slack` (a Slack-compatible `{"text": ...}` body).
    #[serde(default = "default_webhook_format")]
    pub format: String,
    /// Attempts per event, the first included.
    #[serde(default = "default_webhook_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry; doubled after each.
    #[serde(default = "default_webhook_backoff")]
    pub backoff: String,
    /// Per-attempt timeout.
    #[serde(default = "default_webhook_timeout")]
    pub timeout: String,
}

fn default_webhook_format() -> String {
    "json".into()
}
fn default_webhook_attempts() -> u32 {
    4
}
fn default_webhook_backoff() -> String {
    "500ms".into()
}
fn default_webhook_timeout() -> String {
    "5s".into()
}

/// Body format of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// The event as JSON.
    Json,
    /// `{"text": "..."}` for Slack-compatible receivers.
    Slack,
}

/// Validated `[[webhooks]]` entry.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The endpoint.
    pub url: String,
    /// The HMAC secret, if configured.
    pub secret: Option<Vec<u8>>,
    /// Body format.
    pub format: WebhookFormat,
    /// Attempts per event.
    pub max_attempts: u32,
    /// First retry delay.
    pub backoff: Duration,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

/// Validates `[[webhooks]]`.
pub(crate) fn check(raw: &[RawWebhook], p: &mut Problems<'_>) -> Vec<WebhookConfig> {
    let mut webhooks = Vec::new();
    for (i, w) in raw.iter().enumerate() {
        let key = format!("webhooks[{i}]");
        if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
            p.err(
                &format!("{key}.url"),
                format!("`{}` must be an http:// or https:// URL", w.url),
            );
        }
        let format = match w.format.as_str() {
            "json" => WebhookFormat::Json,
            "slack" => WebhookFormat::Slack,
            other => {
                p.err(
                    &format!("{key}.format"),
                    format!("`{other}` must be `json` or `slack`"),
                );
                WebhookFormat::Json
            }
        };
        let secret = match &w.secret_env {
            None => None,
            Some(v) => match std::env::var(v) {
                Ok(s) if !s.is_empty() => Some(s.into_bytes()),
                _ => {
                    p.err(
                        &format!("{key}.secret_env"),
                        format!("environment variable `{v}` is not set"),
                    );
                    None
                }
            },
        };
        if w.max_attempts == 0 {
            p.err(&format!("{key}.max_attempts"), "must be at least 1".into());
        }
        webhooks.push(WebhookConfig {
            url: w.url.clone(),
            secret,
            format,
            max_attempts: w.max_attempts,
            backoff: p.duration(&format!("{key}.backoff"), &w.backoff),
            timeout: p.duration(&format!("{key}.timeout"), &w.timeout),
        });
    }
    webhooks
}
