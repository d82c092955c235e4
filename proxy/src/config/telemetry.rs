//! `[telemetry]`: the format of jitgate's own log lines, and OpenTelemetry traces over OTLP.
//!
//! Traces are off unless an OTLP endpoint is named, here (`otlp_endpoint`) or by the standard
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` variables; what this section sets wins over
//! the matching `OTEL_*` variable (`OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`), which
//! applies where the section is silent. The variables are read when the proxy starts ([`crate::telemetry`]), not
//! here: `jitgate check` judges the file alone.

use serde::Deserialize;

use super::problems::Problems;

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

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP POST (`/v1/traces`).
    HttpProtobuf,
    /// gRPC (`TraceService/Export`), plaintext HTTP/2.
    Grpc,
}

impl OtlpProtocol {
    /// Reads the names the OpenTelemetry specification uses (`http/protobuf`, `grpc`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "http/protobuf" => Some(Self::HttpProtobuf),
            "grpc" => Some(Self::Grpc),
            _ => None,
        }
    }
}

/// Validated `[telemetry]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryConfig {
    /// One JSON object per log line (`log_format = "json"`).
    pub json_logs: bool,
    /// `otlp_endpoint`, if set.
    pub otlp_endpoint: Option<String>,
    /// `otlp_protocol`, if set.
    pub otlp_protocol: Option<OtlpProtocol>,
    /// `service_name`, if set.
    pub service_name: Option<String>,
    /// `trust_incoming`.
    pub trust_incoming: bool,
    /// `sample_ratio`, if set.
    pub sample_ratio: Option<f64>,
}

/// Validates `[telemetry]`.
pub(crate) fn check(raw: RawTelemetry, p: &mut Problems<'_>) -> TelemetryConfig {
    let mut t = TelemetryConfig {
        trust_incoming: raw.trust_incoming,
        ..TelemetryConfig::default()
    };
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
                t.otlp_endpoint = Some(e.trim_end_matches('/').to_string());
            }
            _ => p.err(
                "telemetry.otlp_endpoint",
                format!("`{e}` is not an http:// or https:// URL with a host"),
            ),
        }
    }
    if let Some(s) = raw.otlp_protocol.as_deref() {
        match OtlpProtocol::parse(s) {
            Some(proto) => t.otlp_protocol = Some(proto),
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
            t.service_name = Some(n.to_string());
        }
    }
    if let Some(r) = raw.sample_ratio {
        if (0.0..=1.0).contains(&r) {
            t.sample_ratio = Some(r);
        } else {
            p.err(
                "telemetry.sample_ratio",
                format!("{r} is not a ratio between 0.0 and 1.0"),
            );
        }
    }
    t
}
