//! `[hold]`: how held requests wait for approval.

use std::time::Duration;

use serde::Deserialize;

use super::problems::Problems;

/// `[hold]`: how held requests wait for approval.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHold {
    /// How long the connection waits for a verdict before answering 202 with the approval id.
    #[serde(default = "default_hold_wait")]
    pub wait: String,
    /// Largest body a held request may carry (it is buffered); larger is 413.
    #[serde(default = "default_hold_body")]
    pub max_body_bytes: u64,
    /// How long a held request may wait for a verdict, and an approval then stays usable for a resend.
    #[serde(default = "default_hold_ttl")]
    pub approval_ttl: String,
    /// Further headers an approval is bound to, beside `server.context_headers` and `Content-Type` (always bound):
    /// a resend that differs in one of them is not the approved request.
    #[serde(default)]
    pub bind_headers: Vec<String>,
    /// How many held connections of one principal may wait for a verdict at once; a held request beyond it is
    /// answered at once as when the wait ends (202 with the approval id), without holding its connection open.
    #[serde(default = "default_max_waiting")]
    pub max_waiting_per_principal: usize,
}

impl Default for RawHold {
    fn default() -> Self {
        RawHold {
            wait: default_hold_wait(),
            max_body_bytes: default_hold_body(),
            approval_ttl: default_hold_ttl(),
            bind_headers: Vec::new(),
            max_waiting_per_principal: default_max_waiting(),
        }
    }
}

fn default_hold_wait() -> String {
    "30s".into()
}
fn default_hold_body() -> u64 {
    1024 * 1024
}
fn default_max_waiting() -> usize {
    10
}
fn default_hold_ttl() -> String {
    "1h".into()
}

/// Validated `[hold]`.
#[derive(Debug, Clone)]
pub struct HoldConfig {
    /// How long a held connection waits.
    pub wait: Duration,
    /// Largest buffered body.
    pub max_body_bytes: u64,
    /// Pending lifetime of a held request and life of its approval.
    pub approval_ttl: Duration,
    /// `[hold] bind_headers`, lower-cased: bound into the request digest with the context headers and
    /// `Content-Type`.
    pub bind_headers: Vec<String>,
    /// Held connections one principal may keep waiting at once.
    pub max_waiting_per_principal: usize,
}

/// Validates `[hold]`; a held request must be answered (202) before the whole request's timeout (`request_timeout`,
/// written `raw_request_timeout`) ends it.
pub(crate) fn check(
    raw: RawHold,
    request_timeout: Duration,
    raw_request_timeout: &str,
    p: &mut Problems<'_>,
) -> HoldConfig {
    let hold = HoldConfig {
        wait: p.duration("hold.wait", &raw.wait),
        max_body_bytes: raw.max_body_bytes,
        approval_ttl: p.duration("hold.approval_ttl", &raw.approval_ttl),
        bind_headers: raw
            .bind_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        max_waiting_per_principal: raw.max_waiting_per_principal,
    };
    for (i, name) in raw.bind_headers.iter().enumerate() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            p.err(
                &format!("hold.bind_headers[{i}]"),
                format!("`{name}` is not a header name"),
            );
        } else if crate::headers::same_dashed(
            &name.to_ascii_lowercase(),
            crate::headers::APPROVAL_HEADER,
        ) {
            // The resend carries it and the held request did not: no resend could ever match its approval.
            p.err(
                &format!("hold.bind_headers[{i}]"),
                format!(
                    "`{name}` names the approval on the resend only, so binding it would make every approval \
                     unusable"
                ),
            );
        }
    }
    if hold.approval_ttl.as_secs() == 0 {
        p.err("hold.approval_ttl", "must be at least 1s".into());
    }
    if !request_timeout.is_zero() && hold.wait >= request_timeout {
        p.err(
            "hold.wait",
            format!(
                "`{}` must be shorter than server.request_timeout (`{}`): a held request would end in 504 before \
                 its caller is given the approval id to resend with",
                raw.wait, raw_request_timeout
            ),
        );
    }
    hold
}
