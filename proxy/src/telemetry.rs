//! OpenTelemetry traces over OTLP: one server span per request (`jitgate.decision_id`, `jitgate.principal`,
//! `jitgate.action`, `jitgate.resource`, `jitgate.decision`, the HTTP method, route and status) with one child
//! span per stage (`admit`, `authenticate`, `map`, `authorize`, `hold`, `forward`, `log`). The upstream gets a W3C
//! `traceparent` naming the `forward` span; a caller's own `traceparent` is continued only with
//! `[telemetry] trust_incoming = true`, and otherwise replaced. The decision record names the trace
//! (`context.trace_id`).
//!
//! Off unless an endpoint is named (`[telemetry] otlp_endpoint`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_ENDPOINT`); off, a request pays one `None` check per stage. Spans are exported in batches by
//! the SDK's own thread, never on the request path. `[telemetry]` wins over the matching `OTEL_*` variable.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

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

/// The trace settings of `[telemetry]`, validated (`None`: not written there; the `OTEL_*` variables decide).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceSettings {
    /// `otlp_endpoint`: the collector's base URL, without a trailing `/`.
    pub otlp_endpoint: Option<String>,
    /// `otlp_protocol`.
    pub otlp_protocol: Option<OtlpProtocol>,
    /// `service_name`.
    pub service_name: Option<String>,
    /// `trust_incoming`.
    pub trust_incoming: bool,
    /// `sample_ratio`, 0.0 to 1.0.
    pub sample_ratio: Option<f64>,
}

/// Why traces could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// An `OTEL_*` variable names something this build cannot do.
    #[error("{var}: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Why.
        reason: String,
    },
    /// The OTLP exporter could not be built (a malformed endpoint, ...).
    #[error("[telemetry] OTLP exporter for {endpoint}: {reason}")]
    Exporter {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
}

/// Where and how spans go, resolved from `[telemetry]` and the `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The full export URL (`.../v1/traces` for HTTP) or gRPC endpoint.
    pub endpoint: String,
    /// The transport.
    pub protocol: OtlpProtocol,
    /// `service.name`: the config's, else `jitgate` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
    /// names one (`None`: the SDK reads them).
    pub service_name: Option<String>,
    /// The sampling ratio, if set in the config (else the SDK reads `OTEL_TRACES_SAMPLER(_ARG)`).
    pub sample_ratio: Option<f64>,
}

/// The `OTEL_*` variables jitgate reads itself (the SDK reads the sampler, service name and resource ones).
const ENV_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const ENV_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
const ENV_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";

/// Resolves the export settings: `None` when traces are off (no endpoint anywhere, `OTEL_SDK_DISABLED=true` or
/// `OTEL_TRACES_EXPORTER=none`). `env` reads a variable (the process environment in [`Telemetry::start`]).
pub fn resolve(
    cfg: &TraceSettings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Resolved>, TelemetryError> {
    let env = |k: &str| {
        env(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return Ok(None);
    }
    let protocol = match cfg.otlp_protocol {
        Some(p) => p,
        None => match env(ENV_TRACES_PROTOCOL)
            .map(|v| (ENV_TRACES_PROTOCOL, v))
            .or_else(|| env(ENV_PROTOCOL).map(|v| (ENV_PROTOCOL, v)))
        {
            None => OtlpProtocol::HttpProtobuf,
            Some((var, v)) => OtlpProtocol::parse(&v).ok_or_else(|| TelemetryError::Env {
                var,
                reason: format!("`{v}` is not supported: http/protobuf or grpc"),
            })?,
        },
    };
    // A base URL gets the signal's path for HTTP; the per-signal variable is the full URL (as the spec says).
    let (base, full) = match &cfg.otlp_endpoint {
        Some(e) => (Some(e.clone()), None),
        None => match env(ENV_TRACES_ENDPOINT) {
            Some(e) => (None, Some(e)),
            None => (env(ENV_ENDPOINT), None),
        },
    };
    let endpoint = match (base, full, protocol) {
        (_, Some(full), _) => full,
        (Some(base), None, OtlpProtocol::HttpProtobuf) => {
            format!("{}/v1/traces", base.trim_end_matches('/'))
        }
        (Some(base), None, OtlpProtocol::Grpc) => base,
        (None, None, _) => return Ok(None),
    };
    Ok(Some(Resolved {
        endpoint,
        protocol,
        service_name: match &cfg.service_name {
            Some(n) => Some(n.clone()),
            None if env("OTEL_SERVICE_NAME").is_some()
                || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name=")) =>
            {
                None
            }
            None => Some("jitgate".into()),
        },
        sample_ratio: cfg.sample_ratio,
    }))
}

/// The tracer of a proxy whose traces are on.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    trust_incoming: bool,
    /// Where spans go.
    pub resolved: Resolved,
}

impl Telemetry {
    /// Sets up the exporter when traces are on (`None` when off). Must run inside the tokio runtime (the gRPC
    /// channel is bound to it).
    pub fn start(cfg: &TraceSettings) -> Result<Option<Self>, TelemetryError> {
        let Some(resolved) = resolve(cfg, |k| std::env::var(k).ok())? else {
            return Ok(None);
        };
        let failed = |e: opentelemetry_otlp::ExporterBuildError| TelemetryError::Exporter {
            endpoint: resolved.endpoint.clone(),
            reason: e.to_string(),
        };
        let timeout = Duration::from_secs(10);
        let exporter = match resolved.protocol {
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(resolved.endpoint.clone())
                .with_timeout(timeout)
                .build()
                .map_err(failed)?,
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(resolved.endpoint.clone())
                .with_timeout(timeout)
                .build()
                .map_err(failed)?,
        };
        let mut resource = Resource::builder();
        if let Some(name) = &resolved.service_name {
            resource = resource.with_service_name(name.clone());
        }
        let mut builder = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build());
        if let Some(ratio) = resolved.sample_ratio {
            builder = builder.with_sampler(Sampler::ParentBased(Box::new(
                Sampler::TraceIdRatioBased(ratio),
            )));
        }
        let provider = builder.build();
        let tracer = provider.tracer("jitgate");
        Ok(Some(Self {
            provider,
            tracer,
            trust_incoming: cfg.trust_incoming,
            resolved,
        }))
    }

    /// Starts a request's span: a child of the caller's `traceparent` when it is trusted, else a new trace.
    pub fn request(&self, method: &str, headers: &HeaderMap, decision_id: &str) -> RequestSpan {
        let parent = if self.trust_incoming {
            TraceContextPropagator::new().extract(&Headers(headers))
        } else {
            Context::new()
        };
        let span = self
            .tracer
            .span_builder(method.to_string())
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("jitgate.decision_id", decision_id.to_string()),
                KeyValue::new("http.request.method", method.to_string()),
            ])
            .start_with_context(&self.tracer, &parent);
        RequestSpan {
            cx: Context::new().with_span(span),
            tracer: self.tracer.clone(),
        }
    }

    /// Exports every finished span now (blocks until the collector answered or the export timed out).
    pub fn force_flush(&self) -> Result<(), String> {
        self.provider.force_flush().map_err(|e| e.to_string())
    }

    /// Exports what is left and stops the exporter (blocking).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "telemetry: the last spans were not exported");
        }
    }
}

/// A request's span, ended when the request's log stage is done (or, for a caller that went away, when dropped).
#[derive(Debug)]
pub struct RequestSpan {
    cx: Context,
    tracer: SdkTracer,
}

impl RequestSpan {
    /// A child span for a stage, ended when dropped.
    pub fn stage(&self, name: &'static str) -> StageSpan {
        StageSpan(self.tracer.start_with_context(name, &self.cx))
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        self.cx.span().span_context().trace_id().to_string()
    }

    /// Names the route (`http.route`, and the span's name becomes `METHOD route`).
    pub fn set_route(&self, method: &str, route: &str) {
        let span = self.cx.span();
        span.update_name(format!("{method} {route}"));
        span.set_attribute(KeyValue::new("http.route", route.to_string()));
    }

    /// Sets the outcome's attributes and ends the span.
    pub fn finish(&self, outcome: &Outcome<'_>) {
        let span = self.cx.span();
        let mut attrs = vec![
            KeyValue::new("http.response.status_code", i64::from(outcome.status)),
            KeyValue::new("url.path", outcome.path.to_string()),
            KeyValue::new("client.address", outcome.client.to_string()),
        ];
        for (k, v) in [
            ("jitgate.principal", outcome.principal),
            ("jitgate.action", outcome.action),
            ("jitgate.resource", outcome.resource),
            ("jitgate.decision", outcome.decision),
            ("jitgate.revision", outcome.revision),
        ] {
            if !v.is_empty() {
                attrs.push(KeyValue::new(k, v.to_string()));
            }
        }
        span.set_attributes(attrs);
        if outcome.status >= 500 {
            span.set_status(Status::error(format!("status {}", outcome.status)));
        }
        span.end();
    }
}

/// What a request's span says when it ends.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// The status served.
    pub status: u16,
    /// The normalized path.
    pub path: &'a str,
    /// The client address.
    pub client: &'a str,
    /// The principal (empty when unknown).
    pub principal: &'a str,
    /// The action (empty when unmapped).
    pub action: &'a str,
    /// The resource (empty when unmapped).
    pub resource: &'a str,
    /// `allow`, `deny`, `hold` or `error`.
    pub decision: &'a str,
    /// The bundle revision.
    pub revision: &'a str,
}

/// A stage's span; ends when dropped.
#[derive(Debug)]
pub struct StageSpan(opentelemetry_sdk::trace::Span);

impl StageSpan {
    /// The W3C `traceparent` (and `tracestate`, when the trace has one) naming this span, for the upstream.
    pub fn propagation_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let cx = Context::new().with_remote_span_context(self.0.span_context().clone());
        let mut out = Vec::with_capacity(2);
        TraceContextPropagator::new().inject_context(&cx, &mut Out(&mut out));
        out
    }
}

/// Reads W3C trace context headers.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Collects W3C trace context headers.
struct Out<'a>(&'a mut Vec<(HeaderName, HeaderValue)>);

impl Injector for Out<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes an empty `tracestate` for a trace without one: nothing worth sending.
        if value.is_empty() {
            return;
        }
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.push((k, v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn off_without_an_endpoint_and_when_disabled() {
        let cfg = TraceSettings::default();
        assert_eq!(resolve(&cfg, env(&[])).unwrap(), None);
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")];
        assert!(resolve(&cfg, env(&on)).unwrap().is_some());
        let off = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ];
        assert_eq!(resolve(&cfg, env(&off)).unwrap(), None);
    }

    #[test]
    fn the_config_wins_over_the_environment() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ];
        let from_env = resolve(&TraceSettings::default(), env(&vars))
            .unwrap()
            .unwrap();
        assert_eq!(from_env.endpoint, "http://env:4318/");
        assert_eq!(from_env.protocol, OtlpProtocol::Grpc);
        let cfg = TraceSettings {
            otlp_endpoint: Some("http://cfg:4318".into()),
            otlp_protocol: Some(OtlpProtocol::HttpProtobuf),
            ..TraceSettings::default()
        };
        let r = resolve(&cfg, env(&vars)).unwrap().unwrap();
        assert_eq!(r.endpoint, "http://cfg:4318/v1/traces");
        assert_eq!(r.protocol, OtlpProtocol::HttpProtobuf);
        // The per-signal variable is a full URL, taken as it is.
        let full = [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/x")];
        let r = resolve(&TraceSettings::default(), env(&full))
            .unwrap()
            .unwrap();
        assert_eq!(r.endpoint, "http://t:1/x");
    }

    #[test]
    fn an_unsupported_protocol_is_named() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ];
        let e = resolve(&TraceSettings::default(), env(&vars)).unwrap_err();
        assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{e}");
        assert!(e.to_string().contains("http/json"), "{e}");
    }
}
