//! forward: a pooled hyper client per upstream; bodies streamed both ways, hop-by-hop headers removed, identity
//! headers and credentials set by jitgate only. Upstream failures become 502, slowness 504.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, Uri, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::Upstream;
use crate::headers::{strip_claimed, strip_hop_by_hop};
use crate::metrics::Histogram;
use crate::respond::{ProxyBody, Refusal};

/// An upstream and its connection pool.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    /// Validated settings.
    pub config: Upstream,
    /// Time to this upstream's response headers (`jitgate_upstream_duration_seconds{service}` on `/metrics`).
    pub latency: Arc<Histogram>,
    client: Client<HttpConnector, ProxyBody>,
    /// The upstream's authority and its `Host` header, taken from `config.base` once rather than per request.
    authority: Option<http::uri::Authority>,
    host: Option<HeaderValue>,
}

impl UpstreamClient {
    /// A pooled client for `config`.
    pub fn new(config: Upstream) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let authority = config.base.authority().cloned();
        let host = authority
            .as_ref()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        Self {
            config,
            latency: Arc::default(),
            client,
            authority,
            host,
        }
    }
}

/// Per-request facts the forward stage needs.
#[derive(Debug)]
pub struct ForwardCtx<'a> {
    /// Normalized path plus `?query`.
    pub path_and_query: &'a str,
    /// The client address.
    pub client_ip: IpAddr,
    /// Whether the client connection was TLS.
    pub tls: bool,
    /// Headers jitgate sets for the upstream.
    pub identity_headers: &'a [(&'static str, String)],
    /// The request's host as routed and decided on (see `admit::request_host`), sent as `X-Forwarded-Host`.
    pub host: Option<&'a str>,
    /// Body limit in bytes.
    pub max_body: u64,
    /// The W3C trace context for the upstream (traces on): replaces the caller's `traceparent` and `tracestate`.
    pub trace_headers: Option<&'a [(http::HeaderName, HeaderValue)]>,
}

/// What the forward stage needs of the request's earlier stages.
#[derive(Debug)]
pub struct Outbound<'a> {
    /// The route's service, whose upstream gets the request.
    pub service: &'a str,
    /// The principal the request was decided for.
    pub principal: &'a jitgate_engine::EntityRef,
    /// The allowing decision.
    pub decision: &'a jitgate_engine::Decision,
    /// The decision id.
    pub decision_id: &'a str,
    /// The normalized path.
    pub path: &'a str,
    /// The query, without `?`.
    pub query: &'a str,
    /// The host decided on.
    pub host: Option<&'a str>,
    /// The client address.
    pub client_ip: IpAddr,
    /// Whether the client connection was TLS.
    pub tls: bool,
    /// Body limit in bytes.
    pub max_body: u64,
    /// The W3C trace context for the upstream, when traces are on.
    pub trace_headers: Option<Vec<(http::HeaderName, HeaderValue)>>,
}

/// The forward stage: the request to its service's upstream, streamed, with identity headers set by us and
/// credentials injected; the upstream's latency is observed however the call ends.
#[inline]
pub async fn forward_stage(
    upstreams: &HashMap<String, UpstreamClient>,
    req: Request<ProxyBody>,
    out: Outbound<'_>,
) -> Result<Response<ProxyBody>, Refusal> {
    let upstream = upstreams.get(out.service).ok_or_else(|| {
        Refusal::UpstreamUnavailable(format!(
            "no upstream configured for service `{}`",
            out.service
        ))
    })?;
    let identity_headers = [
        ("x-jitgate-principal", out.principal.to_string()),
        ("x-jitgate-decision-id", out.decision_id.to_string()),
        ("x-jitgate-grants", out.decision.grants_used.join(",")),
        (
            "x-jitgate-break-glass",
            out.decision.break_glass.to_string(),
        ),
    ];
    let path_and_query = if out.query.is_empty() {
        out.path.to_string()
    } else {
        format!("{}?{}", out.path, out.query)
    };
    let ctx = ForwardCtx {
        path_and_query: &path_and_query,
        client_ip: out.client_ip,
        tls: out.tls,
        identity_headers: &identity_headers,
        host: out.host,
        max_body: out.max_body,
        trace_headers: out.trace_headers.as_deref(),
    };
    // Observed on drop: also when the whole-request timeout (or a caller hanging up) drops the call mid-way.
    let _timed = Timed {
        histogram: &upstream.latency,
        since: Instant::now(),
    };
    forward(upstream, req, ctx).await
}

/// Observes the time since `since` in `histogram` when dropped, however the timed future ended.
struct Timed<'a> {
    histogram: &'a Histogram,
    since: Instant,
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.since.elapsed());
    }
}

/// An error reading the client's request body (a malformed chunked encoding, a connection cut mid-body): the
/// client's fault, so a 400 and not an upstream failure, though it surfaces from the upstream call.
#[derive(Debug, thiserror::Error)]
#[error("reading the request body: {0}")]
pub struct ClientBodyError(#[source] pub hyper::Error);

/// Wraps a client body so that it streams through, refusing more than the limit would allow. Its errors are
/// [`ClientBodyError`]s, so that the forward stage can tell them from the upstream's.
pub fn stream_body(body: Incoming) -> ProxyBody {
    body.map_err(|e| Box::new(ClientBodyError(e)) as crate::respond::BoxError)
        .boxed()
}

/// Sends `req` upstream. The request's path is replaced by `ctx.path_and_query` (the normalized one).
pub async fn forward(
    up: &UpstreamClient,
    req: Request<ProxyBody>,
    ctx: ForwardCtx<'_>,
) -> Result<Response<ProxyBody>, Refusal> {
    let (mut parts, body) = req.into_parts();
    let body = Limited::new(body, usize::try_from(ctx.max_body).unwrap_or(usize::MAX))
        .map_err(|e| e as crate::respond::BoxError)
        .boxed();
    let mut path = String::with_capacity(up.config.prefix.len() + ctx.path_and_query.len());
    path.push_str(&up.config.prefix);
    path.push_str(ctx.path_and_query);
    let mut uri = Uri::builder().scheme(http::uri::Scheme::HTTP);
    if let Some(a) = &up.authority {
        uri = uri.authority(a.clone());
    }
    let uri: Uri = uri
        .path_and_query(path)
        .build()
        .map_err(|e| Refusal::Internal(format!("upstream uri: {e}")))?;
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    strip_claimed(h, up.config.credential.as_ref().map(|(n, _)| n));
    for (name, value) in ctx.identity_headers {
        // An identity the upstream cannot be told is not forwarded without it (fail closed).
        // UTF-8 bytes as they are (RFC 9110 obs-text): a principal named `josé` is sent, not refused; control
        // characters are not header text and are never sent.
        let v = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
            Refusal::Internal(format!(
                "identity header {name}: {value:?} is not valid header text"
            ))
        })?;
        h.insert(*name, v);
    }
    if let Some(v) = &up.host {
        h.insert(header::HOST, v.clone());
    }
    // Traces on: the upstream's parent is jitgate's forward span, never a caller's unchecked claim.
    if let Some(trace_headers) = ctx.trace_headers {
        h.remove("traceparent");
        h.remove("tracestate");
        for (name, value) in trace_headers {
            h.insert(name.clone(), value.clone());
        }
    }
    // The host that was routed and decided on, never the client's own claim.
    if let Some(host) = ctx.host.and_then(|x| HeaderValue::from_str(x).ok()) {
        h.insert("x-forwarded-host", host);
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.client_ip.to_string()) {
        h.insert("x-forwarded-for", v);
    }
    h.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if ctx.tls { "https" } else { "http" }),
    );
    if let Some((name, value)) = &up.config.credential {
        h.insert(name.clone(), value.clone());
    }
    let req = Request::from_parts(parts, body);
    let resp = match tokio::time::timeout(up.config.timeout, up.client.request(req)).await {
        Err(_) => return Err(Refusal::UpstreamTimeout),
        Ok(Err(e)) => {
            if is_length_limit(&e) {
                return Err(Refusal::BodyTooLarge);
            }
            if let Some(client) = client_body_error(&e) {
                return Err(Refusal::BadRequest(format!(
                    "the request body is malformed or was cut short: {}",
                    describe(client)
                )));
            }
            return Err(Refusal::UpstreamUnavailable(describe(&e)));
        }
        Ok(Ok(resp)) => resp,
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        body.map_err(|e| Box::new(e) as crate::respond::BoxError)
            .boxed(),
    ))
}

fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The client body error in `e`'s chain, if the upstream call failed because the client's body could not be read.
fn client_body_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<ClientBodyError>() {
            return Some(err);
        }
        cur = err.source();
    }
    None
}

fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        s.push_str(": ");
        s.push_str(&err.to_string());
        cur = err.source();
    }
    s
}
