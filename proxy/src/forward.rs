//! forward: a pooled hyper client per upstream; bodies streamed both ways, hop-by-hop headers removed, identity
//! headers and credentials set by jitgate only. Upstream failures become 502, slowness 504.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::Upstream;
use crate::metrics::Histogram;
use crate::respond::{ProxyBody, Refusal};

/// Hop-by-hop headers (RFC 9110 §7.6.1) never forwarded in either direction.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// An upstream and its connection pool.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    /// Validated settings.
    pub config: Upstream,
    /// Time to this upstream's response headers (`jitgate_upstream_duration_seconds{service}` on `/metrics`).
    pub latency: Arc<Histogram>,
    client: Client<HttpConnector, ProxyBody>,
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
        Self {
            config,
            latency: Arc::default(),
            client,
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
    /// The request's host as routed and decided on (see `pipeline::request_host`), sent as `X-Forwarded-Host`.
    pub host: Option<&'a str>,
    /// Body limit in bytes.
    pub max_body: u64,
}

/// Wraps a client body so that it streams through, refusing more than the limit would allow.
pub fn stream_body(body: Incoming) -> ProxyBody {
    body.map_err(|e| Box::new(e) as crate::respond::BoxError)
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
    let authority = up
        .config
        .base
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let uri: Uri = format!(
        "http://{authority}{}{}",
        up.config.prefix, ctx.path_and_query
    )
    .parse()
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
    if let Ok(v) = HeaderValue::from_str(&authority) {
        h.insert(header::HOST, v);
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

fn strip_hop_by_hop(h: &mut HeaderMap) {
    for n in connection_nominated(h) {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

/// The headers the client's `Connection` header nominates as hop-by-hop: they never reach the upstream.
pub fn connection_nominated(h: &HeaderMap) -> Vec<HeaderName> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

/// Whether `name` never reaches the upstream as the client sent it: hop-by-hop, or nominated by `Connection`.
pub fn is_hop_by_hop(h: &HeaderMap, name: &HeaderName) -> bool {
    HOP_BY_HOP.iter().any(|n| name == *n) || connection_nominated(h).contains(name)
}

/// Headers that ask an upstream framework to act on another method or path than the request line's (Express
/// method-override, Symfony, IIS URL rewrite): the decision was made on the request line, so they never pass.
const OVERRIDE_HEADERS: [&str; 5] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

/// Whether a client's header `name` (lowercase, as `HeaderMap` keeps names) is one it may not send upstream: what
/// jitgate sets itself (every `x-jitgate-*`, the upstream credential), what a client may claim about the way its
/// request came (`Forwarded`, every `X-Forwarded-*`, `X-Real-IP`), its token for jitgate (`Authorization`), and the
/// method and URL overrides. Names are compared with `_` read as `-`: CGI, WSGI and PHP servers map both to one
/// `HTTP_X_JITGATE_PRINCIPAL` variable, and which copy wins is theirs to choose.
pub fn is_claimed(name: &str, credential: Option<&HeaderName>) -> bool {
    let n = name.as_bytes();
    is(n, b"authorization")
        || is(n, b"forwarded")
        || is(n, b"x-real-ip")
        || starts(n, b"x-forwarded-")
        || starts(n, b"x-jitgate-")
        || OVERRIDE_HEADERS.iter().any(|o| is(n, o.as_bytes()))
        || credential.is_some_and(|c| is(n, c.as_str().as_bytes()))
}

/// Whether two header names are one to a server that reads `_` as `-` (CGI, WSGI, PHP).
pub fn same_dashed(a: &str, b: &str) -> bool {
    is(a.as_bytes(), b.as_bytes())
}

/// `name` with `_` read as `-` (no allocation: this runs for every header of every request).
fn dashed(name: &[u8]) -> impl Iterator<Item = u8> + '_ {
    name.iter().map(|b| if *b == b'_' { b'-' } else { *b })
}

fn is(name: &[u8], target: &[u8]) -> bool {
    name.len() == target.len() && dashed(name).eq(dashed(target))
}

fn starts(name: &[u8], prefix: &[u8]) -> bool {
    name.get(..prefix.len())
        .is_some_and(|head| dashed(head).eq(dashed(prefix)))
}

/// Removes every header [`is_claimed`] names. jitgate then sets its own identity headers, `X-Forwarded-For`,
/// `-Proto` and `-Host`, and the credential.
fn strip_claimed(h: &mut HeaderMap, credential: Option<&HeaderName>) {
    let claimed: Vec<HeaderName> = h
        .keys()
        .filter(|n| is_claimed(n.as_str(), credential))
        .cloned()
        .collect();
    for n in claimed {
        h.remove(n);
    }
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
