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
}

impl Default for RawHold {
    fn default() -> Self {
        RawHold {
            wait: default_hold_wait(),
            max_body_bytes: default_hold_body(),
            approval_ttl: default_hold_ttl(),
        }
    }
}

fn default_hold_wait() -> String {
    "30s".into()
}
fn default_hold_body() -> u64 {
    1024 * 1024
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
    };
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
