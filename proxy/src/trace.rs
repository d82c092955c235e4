//! What a request's stages found, kept for its decision record: each stage fills in its part, the log stage
//! ([`crate::pipeline`]) turns it into the record. A leaf: stages write to it without knowing one another.

use std::net::IpAddr;
use std::time::Instant;

use jitgate_engine::Decision;

/// Everything the log stage needs, filled in as the stages run.
#[derive(Debug)]
pub struct Trace {
    /// The decision id (also the record's and the request's id).
    pub decision_id: String,
    /// When the request arrived.
    pub started: Instant,
    /// The client address (the peer, or what a trusted proxy says).
    pub client: IpAddr,
    /// The method.
    pub method: String,
    /// The path: as received, then normalized once admitted.
    pub path: String,
    /// The principal, once known.
    pub principal: Option<String>,
    /// The action, once mapped.
    pub action: Option<String>,
    /// The resource, once mapped.
    pub resource: Option<String>,
    /// The context that mattered (see `map`).
    pub context: serde_json::Value,
    /// The decision, once made (a released hold's replaces the hold's).
    pub decision: Option<Decision>,
    /// Why the request failed, for the record (the caller sees the refusal's public message).
    pub error: Option<String>,
    /// The access request a hold created (recorded in the context as `approval_id`).
    pub approval_id: Option<String>,
    /// Why a trusted proxy's `X-Forwarded-For` could not be read (the request is then refused with 400).
    pub bad_forwarded_for: Option<String>,
    /// The request's OpenTelemetry span, when traces are on.
    pub otel: Option<crate::telemetry::RequestSpan>,
}

impl Trace {
    /// A child span of the request's for a stage, ended when dropped (`None`, and nothing done, with traces off).
    #[inline]
    pub fn stage(&self, name: &'static str) -> Option<crate::telemetry::StageSpan> {
        self.otel.as_ref().map(|o| o.stage(name))
    }
}
