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

/// Events kept for live views (the console's server-sent events) that read slower than events come.
const LIVE: usize = 256;

/// Hands events to the delivery task, and to live views.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: Option<mpsc::Sender<Event>>,
    live: tokio::sync::broadcast::Sender<Event>,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// A notifier for `hooks`; spawns the delivery task (needs a tokio runtime) when there is at least one hook.
    /// With `console` (`[console] public_url`), Slack-format messages link to the request in the console.
    pub fn new(hooks: Vec<WebhookConfig>, console: Option<String>, metrics: Arc<Metrics>) -> Self {
        let (live, _) = tokio::sync::broadcast::channel(LIVE);
        if hooks.is_empty() {
            return Notifier {
                tx: None,
                live,
                metrics,
            };
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(deliver_all(rx, Arc::new(hooks), console, metrics.clone()));
        Notifier {
            tx: Some(tx),
            live,
            metrics,
        }
    }

    /// Events from now on, as they are sent (a receiver that falls behind by more than a few hundred misses some).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    /// Queues `event` for every hook and live view; returns at once.
    pub fn send(&self, event: Event) {
        // No live view listening is not an error.
        let _ = self.live.send(event.clone());
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
    console: Option<String>,
    metrics: Arc<Metrics>,
) {
    let client = reqwest::Client::new();
    while let Some(event) = rx.recv().await {
        for hook in hooks.iter() {
            let body = body_with_link(&event, hook.format, console.as_deref());
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
    body_with_link(event, format, None)
}

/// The link to `event`'s request in the console at `public_url` (`[console] public_url`), if it names one.
pub fn console_link(public_url: &str, e: &Event) -> Option<String> {
    let id = e.request.as_ref()?.id.as_str();
    const FRAGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.');
    let id: String = percent_encoding::utf8_percent_encode(id, FRAGMENT).collect();
    Some(format!(
        "{}/ui/approvals#request-{id}",
        public_url.trim_end_matches('/')
    ))
}

/// The webhook body for `event`; with `console` (`[console] public_url`), a Slack-format message ends with a link to
/// the request in the console (`<url|open in the console>`).
pub fn body_with_link(event: &Event, format: WebhookFormat, console: Option<&str>) -> Vec<u8> {
    let link = console.and_then(|c| console_link(c, event));
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
        WebhookFormat::Slack => {
            let text = match &link {
                Some(url) => format!("{} <{url}|open in the console>", summary(event)),
                None => summary(event),
            };
            serde_json::json!({ "text": text })
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use jitgate_engine::EntityRef;
    use jitgate_engine::access::{AccessRequest, RequestState};

    use super::*;

    fn created() -> Event {
        Event {
            kind: EventKind::Created,
            actor: "User::\"alice\"".into(),
            request: Some(AccessRequest {
                id: "r-1 2".into(),
                requester: EntityRef::new("User", "alice"),
                role: "payments-writer".into(),
                scope: EntityRef::new("Service", "payments"),
                duration_secs: 1800,
                reason: "INC-1".into(),
                ticket: None,
                starts_at: None,
                state: RequestState::Pending,
                created_at: 0,
                expires_at: 3600,
                decided_at: None,
                request_digest: None,
            }),
            grant: None,
            comment: String::new(),
            policies: Vec::new(),
            at: 0,
        }
    }

    #[test]
    fn slack_messages_link_to_the_request_in_the_console() {
        let e = created();
        let body: serde_json::Value = serde_json::from_slice(&body_with_link(
            &e,
            WebhookFormat::Slack,
            Some("https://jitgate.example/"),
        ))
        .unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(
            text.ends_with(
                "<https://jitgate.example/ui/approvals#request-r-1%202|open in the console>"
            ),
            "{text}"
        );
        let plain: serde_json::Value =
            serde_json::from_slice(&body_of(&e, WebhookFormat::Slack)).unwrap();
        assert!(!plain["text"].as_str().unwrap().contains("console"));
    }

    #[tokio::test]
    async fn live_views_get_every_event_sent() {
        let n = Notifier::new(Vec::new(), None, Arc::new(Metrics::default()));
        let mut rx = n.subscribe();
        n.send(created());
        assert_eq!(rx.recv().await.unwrap().kind, EventKind::Created);
    }
}
