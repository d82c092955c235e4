//! The request pipeline, stage by stage:
//! `admit -> authenticate -> map -> authorize -> [hold] -> forward -> respond -> log`.
//! Each stage is a small function; `handle` reads as the list of stages, and `log` always runs last.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Method, Request, Response, header};
use hyper::body::Incoming;
use jitgate_engine::{AuthzRequest, Bundle, Context, Decision, Effect, EntityRef, Principal};
use tracing::Instrument;

use crate::admit::normalize_path;
use crate::authenticate::Identity;
use crate::decision_log::LogEntry;
use crate::forward;
use crate::metrics::Histogram;
use crate::respond::{ProxyBody, Refusal};
use crate::state::Proxy;

/// Facts about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The principal from a verified client certificate (mTLS), if any.
    pub client_cert: Option<EntityRef>,
}

/// Headers jitgate sets towards the upstream; any client-supplied copy is removed first.
pub const IDENTITY_HEADERS: [&str; 4] = [
    "x-jitgate-principal",
    "x-jitgate-decision-id",
    "x-jitgate-grants",
    "x-jitgate-break-glass",
];

/// The header carrying an approval id when resending a held request.
pub const APPROVAL_HEADER: &str = "x-jitgate-approval";

/// Everything the log stage needs, filled in as the stages run.
struct Trace {
    decision_id: String,
    started: Instant,
    client: IpAddr,
    method: String,
    path: String,
    principal: Option<String>,
    action: Option<String>,
    resource: Option<String>,
    context: serde_json::Value,
    decision: Option<Decision>,
    error: Option<String>,
    /// The access request a hold created (recorded in the context as `approval_id`).
    approval_id: Option<String>,
    /// Why a trusted proxy's `X-Forwarded-For` could not be read (the request is then refused with 400).
    bad_forwarded_for: Option<String>,
}

impl Proxy {
    /// Handles one request end to end. Never fails: every outcome is a response and a decision record.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> Response<ProxyBody> {
        let decision_id = uuid::Uuid::now_v7().to_string();
        let span = tracing::info_span!("request", decision_id = %decision_id, method = %req.method(), peer = %conn.peer);
        async move {
            // Canonical: on a dual-stack listener an IPv4 peer is `::ffff:a.b.c.d`, which no IPv4 range (trusted
            // proxies, a policy's `isInRange`) contains.
            let peer = conn.peer.ip().to_canonical();
            let (client, bad_forwarded_for) = match client_ip(&self, &req, peer) {
                Ok(ip) => (ip, None),
                Err(why) => (peer, Some(why)),
            };
            let trace = Trace {
                decision_id,
                started: Instant::now(),
                client,
                method: req.method().to_string(),
                path: req.uri().path().to_string(),
                principal: None,
                action: None,
                resource: None,
                context: serde_json::Value::Null,
                decision: None,
                error: None,
                approval_id: None,
                bad_forwarded_for,
            };
            self.metrics.requests_total.inc();
            // A log slot is reserved before anything reaches an upstream: with `on_full = fail_closed` a full queue
            // refuses here; with `wait` the request waits for room.
            let slot = match self.log.reserve().await {
                Ok(s) => s,
                Err(e) => {
                    self.metrics.log_queue_full.inc();
                    let response =
                        Refusal::LogUnavailable(e.to_string()).into_response(&trace.decision_id);
                    self.metrics
                        .request_duration
                        .observe(response.status().as_u16(), trace.started.elapsed());
                    return response;
                }
            };
            // From here the record is owed: if the caller goes away before the log stage (hyper then drops this
            // future, maybe while the upstream is working on the request), dropping `unlogged` queues it.
            let mut unlogged = Unlogged {
                proxy: &self,
                slot,
                trace,
                logged: false,
            };
            // The whole request, upstream included, is bounded; the log stage still runs after a timeout.
            let result = match tokio::time::timeout(
                self.config.request_timeout,
                self.stages(req, &conn, &mut unlogged.trace),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(Refusal::UpstreamTimeout),
            };
            let trace = &mut unlogged.trace;
            let response = match result {
                Ok(resp) => resp,
                Err(refusal) => {
                    if trace.error.is_none()
                        && matches!(
                            refusal,
                            Refusal::Internal(_)
                                | Refusal::BadRequest(_)
                                | Refusal::MethodNotAllowed(_)
                                | Refusal::UpstreamUnavailable(_)
                                | Refusal::UpstreamTimeout
                        )
                    {
                        trace.error = Some(refusal.to_string());
                    }
                    refusal.into_response(&trace.decision_id)
                }
            };
            self.log_stage(&mut unlogged, response).await
        }
        .instrument(span)
        .await
    }

    async fn stages(
        self: &Arc<Self>,
        req: Request<Incoming>,
        conn: &ConnInfo,
        trace: &mut Trace,
    ) -> Result<Response<ProxyBody>, Refusal> {
        // admit: methods never forwarded, the body limit by declared length, the one normalization, the one host.
        if req.method() == Method::CONNECT || req.method() == Method::TRACE {
            return Err(Refusal::MethodNotAllowed(format!(
                "{} is never forwarded",
                req.method()
            )));
        }
        if let Some(why) = trace.bad_forwarded_for.take() {
            trace.error = Some(why.clone());
            return Err(Refusal::BadRequest(why));
        }
        if content_length(req.headers()).is_some_and(|n| n > self.config.max_body_bytes) {
            return Err(Refusal::BodyTooLarge);
        }
        let path = normalize_path(req.uri().path(), self.config.trailing_slash)
            .map_err(|e| Refusal::BadPath(e.to_string()))?;
        trace.path = path.clone();
        let host = request_host(&req).map_err(Refusal::BadRequest)?;
        let bundle: Arc<Bundle> = self.authorizer.bundle();
        let now = self.authorizer.clock().now();

        // authenticate: a bearer token, else a client certificate; none is fine only for public routes.
        let auth_header = match req.headers().get(header::AUTHORIZATION) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| {
                self.metrics.auth_failures.inc();
                trace.error =
                    Some("authentication failed: the Authorization header is not text".into());
                Refusal::Unauthenticated {
                    message: "the Authorization header is not readable text".into(),
                    challenge: "Bearer realm=\"jitgate\", error=\"invalid_request\"".into(),
                }
            })?),
        };
        let identity: Option<Identity> = match (auth_header, &conn.client_cert) {
            (Some(h), _) => match self.auth.authenticate(Some(h), now).await {
                Ok(id) => Some(id),
                Err(e) => {
                    self.metrics.auth_failures.inc();
                    trace.error = Some(format!("authentication failed: {e}"));
                    return Err(Refusal::Unauthenticated {
                        message: e.public_message().to_string(),
                        challenge: e.www_authenticate(),
                    });
                }
            },
            (None, Some(cert)) => Some(certificate_identity(
                cert.clone(),
                self.workload_groups(cert),
            )),
            (None, None) => None,
        };
        if let Some(id) = &identity {
            trace.principal = Some(id.principal.to_string());
            // A grant-bound token is useless once its grant is not active (revoked, expired, used up).
            if let Some(gid) = &id.grant_id {
                if !crate::access::grant_is_active(&self.authorizer, &id.principal, gid, now) {
                    trace.error = Some(format!("token bound to grant {gid}, which is not active"));
                    return Err(Refusal::Unauthenticated {
                        message: "the token's grant is no longer active".into(),
                        challenge: "Bearer realm=\"jitgate\", error=\"invalid_token\"".into(),
                    });
                }
            }
        }

        // map: route table -> action and resource; unmatched is denied (401 first if there is no identity).
        let Some(route) = bundle
            .routes
            .find(req.method().as_str(), host.as_deref(), &path)
        else {
            if identity.is_none() {
                return Err(unauthenticated());
            }
            trace.error = Some("no route matches".into());
            return Err(Refusal::Unmatched);
        };
        let identity = match identity {
            Some(id) => id,
            None if route.route.public => anonymous_identity(),
            None => return Err(unauthenticated()),
        };
        trace.principal = Some(identity.principal.to_string());
        trace.action = Some(route.route.action.clone());
        trace.resource = Some(route.resource.entity.to_string());
        let service = route.route.service.clone();
        let query = req.uri().query().unwrap_or("").to_string();
        let mut context = Context::at(now);
        context.source_ip = Some(trace.client.to_string());
        context.method = Some(req.method().to_string());
        context.path = Some(path.clone());
        context.host = host.clone();
        context.query = Some(query.clone());
        context.claims = identity.claims.clone();
        for name in &self.config.context_headers {
            if let Some(v) = context_header(req.headers(), name).map_err(Refusal::BadRequest)? {
                context.headers.insert(name.clone(), v);
            }
        }
        trace.context = context_summary(&context);
        let mut request = AuthzRequest {
            principal: Principal {
                entity: identity.principal.clone(),
                groups: identity.groups.clone(),
            },
            action: route.route.action.clone(),
            resource: route.resource,
            context,
            digest: None,
        };

        // authorize: in-process, against the snapshot this request started with. Any error is a deny.
        // A token bound to a grant carries that grant's authority, not every grant its holder has.
        let bound = identity.grant_id.clone();
        let decide = |r: &AuthzRequest| self.authorizer.decide_bound(&bundle, r, bound.as_deref());
        let deciding = Instant::now();
        let decision = decide(&request);
        self.metrics.decision_duration.observe(deciding.elapsed());
        self.shadow
            .observe(self.authorizer.grants(), &request, &decision);
        trace.decision = Some(decision.clone());
        self.metrics.decisions.inc(decision.effect.as_str());
        let (decision, req) = match decision.effect {
            Effect::Allow => (decision, req.map(forward::stream_body)),
            Effect::Deny => {
                return Err(Refusal::Denied {
                    reason: deny_reason(&decision),
                });
            }
            Effect::Hold => {
                // hold: wait (bounded) for approval of this exact request; see `hold_stage`.
                let (parts, body) = req.into_parts();
                let released = self
                    .hold_stage(
                        &parts,
                        body,
                        &mut request,
                        &decide,
                        &decision,
                        &mut trace.approval_id,
                    )
                    .await?;
                trace.decision = Some(released.decision.clone());
                self.metrics
                    .decisions
                    .inc(released.decision.effect.as_str());
                (
                    released.decision,
                    Request::from_parts(parts, crate::respond::full(released.body)),
                )
            }
        };

        // forward: streamed, with identity headers set by us and credentials injected.
        let upstream = self.upstreams.get(&service).ok_or_else(|| {
            Refusal::UpstreamUnavailable(format!("no upstream configured for service `{service}`"))
        })?;
        let identity_headers = [
            ("x-jitgate-principal", request.principal.entity.to_string()),
            ("x-jitgate-decision-id", trace.decision_id.clone()),
            ("x-jitgate-grants", decision.grants_used.join(",")),
            ("x-jitgate-break-glass", decision.break_glass.to_string()),
        ];
        let path_and_query = if query.is_empty() {
            path.clone()
        } else {
            format!("{path}?{query}")
        };
        let ctx = forward::ForwardCtx {
            path_and_query: &path_and_query,
            client_ip: trace.client,
            tls: conn.tls,
            identity_headers: &identity_headers,
            host: host.as_deref(),
            max_body: self.config.max_body_bytes,
        };
        // Observed on drop: also when the whole-request timeout (or a caller hanging up) drops the call mid-way.
        let _timed = Timed {
            histogram: &upstream.latency,
            since: Instant::now(),
        };
        forward::forward(upstream, req, ctx).await
    }

    fn workload_groups(&self, principal: &EntityRef) -> Vec<String> {
        self.workload_groups
            .get(&principal.id)
            .cloned()
            .unwrap_or_default()
    }

    /// log: always runs; commits one record per request before the response leaves.
    async fn log_stage(
        &self,
        unlogged: &mut Unlogged<'_>,
        mut response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let status = response.status().as_u16();
        let (slot, entry) = unlogged.take(status);
        let logging = Instant::now();
        let committed = self.log.commit(slot, entry).await;
        self.metrics.log_wait.observe(logging.elapsed());
        if let Err(e) = committed {
            // The record could not be committed: the response must not claim success.
            tracing::error!(error = %e, "decision log commit failed; refusing the response");
            self.metrics.log_errors.inc();
            response =
                Refusal::LogUnavailable(e.to_string()).into_response(&unlogged.trace.decision_id);
        }
        self.metrics
            .request_duration
            .observe(response.status().as_u16(), unlogged.trace.started.elapsed());
        response
    }

    /// The decision record of a request, from what its stages found (moved out of `trace`).
    fn log_entry(&self, trace: &mut Trace, status: u16) -> LogEntry {
        let (decision, policies, grants_used, mut errors, revision, engine, break_glass) =
            match trace.decision.take() {
                Some(d) => (
                    d.effect.as_str().to_string(),
                    d.policies,
                    d.grants_used,
                    d.errors,
                    d.revision,
                    d.engine.as_str().to_string(),
                    d.break_glass,
                ),
                None => {
                    let b = self.authorizer.bundle();
                    (
                        "deny".to_string(),
                        Vec::new(),
                        Vec::new(),
                        Vec::new(),
                        b.revision.clone(),
                        b.engine().as_str().to_string(),
                        false,
                    )
                }
            };
        if let Some(e) = trace.error.take() {
            errors.push(e);
        }
        let mut context = std::mem::take(&mut trace.context);
        if let Some(id) = trace.approval_id.take() {
            context["approval_id"] = id.into();
        }
        LogEntry {
            id: trace.decision_id.clone(),
            request_id: trace.decision_id.clone(),
            principal: trace.principal.take().unwrap_or_default(),
            action: trace.action.take().unwrap_or_default(),
            resource: trace.resource.take().unwrap_or_default(),
            context,
            decision,
            policies,
            grants_used,
            errors,
            revision,
            engine,
            latency_us: trace.started.elapsed().as_micros() as u64,
            client_addr: trace.client.to_string(),
            method: std::mem::take(&mut trace.method),
            path: std::mem::take(&mut trace.path),
            status: Some(status),
            break_glass,
        }
    }
}

/// The status recorded for a request whose caller went away before its response (nginx's "client closed request").
pub const CALLER_GONE_STATUS: u16 = 499;

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

/// A request's log slot and trace until the log stage takes them. If the request's future is dropped before that
/// (the caller closed its connection or reset its HTTP/2 stream), dropping this queues the record anyway, with
/// status [`CALLER_GONE_STATUS`]: the upstream may already have the request, and no request reaches an upstream
/// without a decision record. A hold dropped this way stops waiting; its access request stays pending, and an
/// approval then forwards nothing until the identical request is resent with it.
struct Unlogged<'a> {
    proxy: &'a Proxy,
    slot: crate::decision_log::Slot,
    trace: Trace,
    logged: bool,
}

impl Unlogged<'_> {
    /// The slot and the record, once (a second call, or the drop after it, logs nothing more).
    fn take(&mut self, status: u16) -> (crate::decision_log::Slot, LogEntry) {
        self.logged = true;
        let entry = self.proxy.log_entry(&mut self.trace, status);
        (std::mem::take(&mut self.slot), entry)
    }
}

impl Drop for Unlogged<'_> {
    fn drop(&mut self) {
        if self.logged {
            return;
        }
        let proxy = self.proxy;
        if self.trace.error.is_none() {
            self.trace.error = Some("the caller went away before the response".into());
        }
        proxy
            .metrics
            .request_duration
            .observe(CALLER_GONE_STATUS, self.trace.started.elapsed());
        let (slot, entry) = self.take(CALLER_GONE_STATUS);
        if let Err(e) = proxy.log.commit_detached(slot, entry) {
            proxy.metrics.log_errors.inc();
            tracing::error!(error = %e, decision_id = %self.trace.decision_id,
                "decision log: the record of a request whose caller went away was not queued");
        }
    }
}

/// The identity of a verified client certificate (mTLS): no claims, groups from configuration.
fn certificate_identity(principal: EntityRef, groups: Vec<String>) -> Identity {
    Identity {
        principal,
        groups,
        claims: Default::default(),
        issuer: "mtls".into(),
        expires_at: i64::MAX,
        grant_id: None,
    }
}

/// The principal of public routes called without a credential.
fn anonymous_identity() -> Identity {
    Identity {
        principal: EntityRef::new("Anonymous", "anonymous"),
        groups: Vec::new(),
        claims: Default::default(),
        issuer: String::new(),
        expires_at: i64::MAX,
        grant_id: None,
    }
}

fn unauthenticated() -> Refusal {
    Refusal::Unauthenticated {
        message: "a bearer token is required".into(),
        challenge: "Bearer realm=\"jitgate\"".into(),
    }
}

/// The reason a caller may see: the determining policy ids, or that nothing allowed it.
pub fn deny_reason(d: &Decision) -> String {
    if !d.errors.is_empty() {
        "denied: the decision could not be evaluated".into()
    } else if d.policies.is_empty() {
        "denied: no policy allows this request".into()
    } else {
        format!("denied by policy {}", d.policies.join(", "))
    }
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The client address: the peer, unless the peer is a trusted proxy, in which case the right-most address in
/// `X-Forwarded-For` that is not itself a trusted proxy. Entries are read from the right (the hops jitgate trusts)
/// and may be `ip`, `ip:port` or `[ipv6]:port`; a trusted proxy's header that is not text, or whose walk meets an
/// entry that is not an address, is an error (the request is refused), never a fallback to the proxy's own address.
fn client_ip(proxy: &Proxy, req: &Request<Incoming>, peer: IpAddr) -> Result<IpAddr, String> {
    let trusted = |ip: &IpAddr| proxy.config.trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return Ok(peer);
    }
    let mut entries = Vec::new();
    for v in req.headers().get_all("x-forwarded-for") {
        let v = v.to_str().map_err(|_| {
            format!("X-Forwarded-For from trusted proxy {peer} is not readable text")
        })?;
        entries.extend(v.split(','));
    }
    for entry in entries.into_iter().rev() {
        let ip = forwarded_for_entry(entry).ok_or_else(|| {
            format!(
                "X-Forwarded-For from trusted proxy {peer}: `{}` is not an address",
                entry.trim()
            )
        })?;
        if !trusted(&ip) {
            return Ok(ip);
        }
    }
    Ok(peer)
}

/// One `X-Forwarded-For` entry: `ip`, `ip:port`, `[ipv6]` or `[ipv6]:port`.
fn forwarded_for_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    e.parse::<IpAddr>()
        .ok()
        .or_else(|| e.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            e.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|v| v.parse::<std::net::Ipv6Addr>().ok())
                .map(IpAddr::V6)
        })
        .map(|ip| ip.to_canonical())
}

/// The request's host, as routing, the policies (`context.host`) and the upstream (`X-Forwarded-Host`) all see it:
/// the target's authority (absolute-form, HTTP/2 `:authority`) or else the `Host` header, lowercased, without port
/// or trailing dot. Two `Host` headers, an unreadable one, or an authority and a `Host` naming different hosts are
/// refused: jitgate decides on one host only.
fn request_host(req: &Request<Incoming>) -> Result<Option<String>, String> {
    let mut headers = req.headers().get_all(header::HOST).iter();
    let header = match (headers.next(), headers.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => return Err("the request has more than one Host header".into()),
        (Some(v), None) => Some(
            v.to_str()
                .map_err(|_| "the Host header is not readable text".to_string())?,
        ),
    };
    let authority = req.uri().authority().map(|a| canonical_host(a.as_str()));
    let header = header.map(canonical_host);
    match (authority, header) {
        (Some(a), Some(h)) if a != h => Err(format!(
            "the request's target names host `{a}` and its Host header `{h}`"
        )),
        (Some(a), _) => Ok(Some(a)),
        (None, h) => Ok(h),
    }
}

/// `Example.COM.:8443` -> `example.com`; `[::1]:8080` -> `[::1]`.
fn canonical_host(h: &str) -> String {
    let h = h.rsplit_once('@').map_or(h, |(_, host)| host);
    let host = if h.starts_with('[') {
        h.find(']').map_or(h, |end| &h[..=end])
    } else {
        h.split(':').next().unwrap_or(h)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// A configured context header's value, as the upstream will get it: absent when the client sent none or made it
/// hop-by-hop (it is then never forwarded); refused when it is sent twice or is not text, since the policies decide
/// on one value.
fn context_header(h: &HeaderMap, name: &str) -> Result<Option<String>, String> {
    let Ok(header_name) = http::HeaderName::from_bytes(name.as_bytes()) else {
        return Ok(None);
    };
    if forward::is_hop_by_hop(h, &header_name) {
        return Ok(None);
    }
    // `X_Tenant` beside `X-Tenant` would reach the upstream too, and a server that reads `_` as `-` might take it.
    if let Some(alias) = h
        .keys()
        .find(|k| **k != header_name && forward::same_dashed(k.as_str(), name))
    {
        return Err(format!(
            "header `{alias}` is another spelling of `{name}`, which the policies decide on; send one"
        ));
    }
    let mut values = h.get_all(&header_name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(format!(
            "header `{name}` appears more than once; the policies decide on one value"
        )),
        (Some(v), None) => v
            .to_str()
            .map(|v| Some(v.to_string()))
            .map_err(|_| format!("header `{name}` is not readable text")),
    }
}

/// The context fields that matter for the record (claims are summarized by the redaction settings of the log).
fn context_summary(c: &Context) -> serde_json::Value {
    // Keys in sorted order: the decision log's canonical form, which the writer then need not re-sort.
    serde_json::json!({
        "claims": c.claims,
        "headers": c.headers,
        "host": c.host,
        "query": c.query,
        "source_ip": c.source_ip,
        "time": c.time,
    })
}

/// Sets a header, ignoring values that are not valid header text.
pub fn set_header(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 client behind a dual-stack hop is `::ffff:a.b.c.d`: read as the IPv4 address it is, so IPv4
    /// ranges (trusted proxies, a policy's `isInRange`) contain it.
    #[test]
    fn forwarded_for_entries_are_canonical() {
        for (entry, expected) in [
            ("203.0.113.7", "203.0.113.7"),
            (" 203.0.113.7:443 ", "203.0.113.7"),
            ("::ffff:203.0.113.7", "203.0.113.7"),
            ("[::ffff:203.0.113.7]:8080", "203.0.113.7"),
            ("[::ffff:203.0.113.7]", "203.0.113.7"),
            ("2001:db8::1", "2001:db8::1"),
        ] {
            assert_eq!(
                forwarded_for_entry(entry)
                    .map(|ip| ip.to_string())
                    .as_deref(),
                Some(expected),
                "{entry}"
            );
        }
        assert_eq!(forwarded_for_entry("unknown"), None);
    }
}
