//! Webhook notifications of lifecycle events: HMAC-signed JSON (or Slack-style text) POSTed by a background task,
//! retried with exponential backoff. Sending never blocks a caller and never changes a decision; outcomes are counted
//! in `metrics.webhooks` (`ok`, `retry`, `failed`, `dropped`).

use std::sync::Arc;

use hmac::{Hmac, Mac};
use jitgate_engine::lifecycle::{Event, EventKind};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::config::{WebhookConfig, WebhookFormat};
use crate::metrics::Metrics;

/// The signature header: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-jitgate-signature";

/// Events waiting for delivery; beyond this they are dropped (and counted) rather than slowing the caller.
const QUEUE: usize = 10_000;

/// Hands events to the delivery task.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: Option<mpsc::Sender<Event>>,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// A notifier for `hooks`; spawns the delivery task (needs a tokio runtime) when there is at least one hook.
    pub fn new(hooks: Vec<WebhookConfig>, metrics: Arc<Metrics>) -> Self {
        if hooks.is_empty() {
            return Notifier { tx: None, metrics };
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(deliver_all(rx, Arc::new(hooks), metrics.clone()));
        Notifier {
            tx: Some(tx),
            metrics,
        }
    }

    /// Queues `event` for every hook; returns at once.
    pub fn send(&self, event: Event) {
        if let Some(tx) = &self.tx {
            if tx.try_send(event).is_err() {
                self.metrics.webhooks.inc("dropped");
                tracing::warn!("webhook queue full; event dropped");
            }
        }
    }
}

async fn deliver_all(
    mut rx: mpsc::Receiver<Event>,
    hooks: Arc<Vec<WebhookConfig>>,
    metrics: Arc<Metrics>,
) {
    let client = reqwest::Client::new();
    while let Some(event) = rx.recv().await {
        for hook in hooks.iter() {
            let body = body_of(&event, hook.format);
            // Each delivery retries on its own, so one slow receiver does not hold up the others.
            tokio::spawn(deliver(client.clone(), hook.clone(), body, metrics.clone()));
        }
    }
}

async fn deliver(
    client: reqwest::Client,
    hook: WebhookConfig,
    body: Vec<u8>,
    metrics: Arc<Metrics>,
) {
    let signature = hook.secret.as_deref().map(|s| sign(s, &body));
    let mut delay = hook.backoff;
    for attempt in 1..=hook.max_attempts {
        let mut req = client
            .post(&hook.url)
            .timeout(hook.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some(sig) = &signature {
            req = req.header(SIGNATURE_HEADER, sig.as_str());
        }
        let outcome = match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("status {}", r.status())),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => {
                metrics.webhooks.inc("ok");
                return;
            }
            Err(e) if attempt < hook.max_attempts => {
                metrics.webhooks.inc("retry");
                tracing::info!(url = %hook.url, attempt, error = %e, "webhook failed; retrying");
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
            Err(e) => {
                metrics.webhooks.inc("failed");
                tracing::warn!(url = %hook.url, attempts = attempt, error = %e, "webhook gave up");
            }
        }
    }
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; the error case cannot happen, but fail to an empty signature, not a panic.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

/// The webhook body for `event`.
pub fn body_of(event: &Event, format: WebhookFormat) -> Vec<u8> {
    let v = match format {
        WebhookFormat::Json => serde_json::json!({
            "event": event.kind.as_str(),
            "at": jitgate_engine::clock::to_rfc3339(event.at),
            "actor": event.actor,
            "request": event.request,
            "grant": event.grant,
            "comment": event.comment,
            "policies": event.policies,
            "break_glass": event.kind == EventKind::BreakGlass
                || event.grant.as_ref().is_some_and(|g| g.break_glass),
        }),
        WebhookFormat::Slack => serde_json::json!({ "text": summary(event) }),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// One line for humans.
pub fn summary(e: &Event) -> String {
    let (id, who, role, scope) = match &e.request {
        Some(r) => (
            r.id.as_str(),
            r.requester.to_string(),
            r.role.as_str(),
            r.scope.to_string(),
        ),
        None => ("?", String::new(), "", String::new()),
    };
    let loud = if e.kind == EventKind::BreakGlass {
        ":rotating_light: BREAK GLASS "
    } else {
        ""
    };
    format!(
        "{loud}jitgate: request {id} ({who} as {role} on {scope}) {} by {}",
        e.kind.as_str(),
        e.actor
    )
}
