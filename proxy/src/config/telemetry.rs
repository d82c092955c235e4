//! `[telemetry]`: the format of jitgate's own log lines, and OpenTelemetry traces over OTLP.
//!
//! Traces are off unless an OTLP endpoint is named, here (`otlp_endpoint`) or by the standard
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` variables; what this section sets wins over
//! the matching `OTEL_*` variable (`OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`), which
//! applies where the section is silent. The variables are read when the proxy starts ([`crate::telemetry`]), not
//! here: `jitgate check` judges the file alone.

use serde::Deserialize;

use super::problems::Problems;
use crate::telemetry::{OtlpProtocol, TraceSettings};

/// `[telemetry]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// jitgate's own log lines on stderr: `text` (default) or `json`.
    #[serde(default)]
    pub log_format: Option<String>,
    /// The OTLP collector's base URL (`http://127.0.0.1:4318` for HTTP, `http://127.0.0.1:4317` for gRPC); for
    /// `http/protobuf` jitgate sends to `<endpoint>/v1/traces`. Empty or absent: `OTEL_EXPORTER_OTLP_*` decide.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` or `grpc` (absent: `OTEL_EXPORTER_OTLP_PROTOCOL`, else `http/protobuf`).
    #[serde(default)]
    pub otlp_protocol: Option<String>,
    /// The `service.name` of jitgate's spans (absent: `OTEL_SERVICE_NAME`, else `jitgate`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// Continue the caller's trace from its `traceparent` (default false: each request starts a new trace, and the
    /// caller's `traceparent`/`tracestate` are replaced before the upstream sees them).
    #[serde(default)]
    pub trust_incoming: bool,
    /// The share of new traces sampled, 0.0 to 1.0 (parent-based: a trusted caller's sampled flag is followed).
    /// Absent: `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, else every trace.
    #[serde(default)]
    pub sample_ratio: Option<f64>,
}

/// Validated `[telemetry]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryConfig {
    /// One JSON object per log line (`log_format = "json"`).
    pub json_logs: bool,
    /// The trace settings as written (the `OTEL_*` variables fill in the rest at start-up).
    pub traces: TraceSettings,
}

/// Validates `[telemetry]`.
pub(crate) fn check(raw: RawTelemetry, p: &mut Problems<'_>) -> TelemetryConfig {
    let mut t = TelemetryConfig::default();
    let traces = &mut t.traces;
    traces.trust_incoming = raw.trust_incoming;
    match raw.log_format.as_deref().map(str::trim) {
        None | Some("text") => {}
        Some("json") => t.json_logs = true,
        Some(other) => p.err(
            "telemetry.log_format",
            format!("`{other}` is not a log format: text or json"),
        ),
    }
    if let Some(e) = raw
        .otlp_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        match e.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
                traces.otlp_endpoint = Some(e.trim_end_matches('/').to_string());
            }
            _ => p.err(
                "telemetry.otlp_endpoint",
                format!("`{e}` is not an http:// or https:// URL with a host"),
            ),
        }
    }
    if let Some(s) = raw.otlp_protocol.as_deref() {
        match OtlpProtocol::parse(s) {
            Some(proto) => traces.otlp_protocol = Some(proto),
            None => p.err(
                "telemetry.otlp_protocol",
                format!("`{s}` is not an OTLP protocol: http/protobuf or grpc"),
            ),
        }
    }
    if let Some(n) = raw.service_name.as_deref().map(str::trim) {
        if n.is_empty() {
            p.err("telemetry.service_name", "must not be empty".into());
        } else {
            traces.service_name = Some(n.to_string());
        }
    }
    if let Some(r) = raw.sample_ratio {
        if (0.0..=1.0).contains(&r) {
            traces.sample_ratio = Some(r);
        } else {
            p.err(
                "telemetry.sample_ratio",
                format!("{r} is not a ratio between 0.0 and 1.0"),
            );
        }
    }
    t
}
