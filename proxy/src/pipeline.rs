//! The request pipeline, stage by stage:
//! `admit -> authenticate -> map -> authorize -> [hold] -> forward -> respond -> log`.
//! Each stage is a module named after its verb, taking the previous stage's output and returning its own or a
//! [`Refusal`]; this module only composes them, and owns the guarantee that `log` runs last, once, for every request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;
use jitgate_engine::log::{DecisionRecord, Outcome, RecordKind};
use jitgate_engine::{Bundle, Decision, Effect, EntityRef};
use tracing::Instrument;

use crate::admit::{admit, client_ip};
use crate::authenticate::request::{Credentials, authenticate};
use crate::authorize::authorize;
use crate::forward::{Outbound, forward_stage};
use crate::map::map;
use crate::respond::{ProxyBody, Refusal};
use crate::state::Proxy;
use crate::trace::Trace;

/// Facts about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// What the connection's verified client certificate (mTLS) says, if it has one that names somebody.
    pub client_cert: Option<crate::authenticate::request::ClientCert>,
}

impl Proxy {
    /// Handles one request end to end. Never fails: every outcome is a response and a decision record.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> Response<ProxyBody> {
        let decision_id = uuid::Uuid::now_v7().to_string();
        // At debug level: with the default `info` filter the span is disabled and costs nothing, where an enabled
        // one is created, formatted and entered on every poll of every request. Events of the request path that
        // matter at `info` and above name the decision id themselves.
        let span = tracing::debug_span!("request", decision_id = %decision_id, method = %req.method(), peer = %conn.peer);
        async move {
            // Canonical: on a dual-stack listener an IPv4 peer is `::ffff:a.b.c.d`, which no IPv4 range (trusted
            // proxies, a policy's `isInRange`) contains.
            let peer = conn.peer.ip().to_canonical();
            let (client, bad_forwarded_for) =
                match client_ip(&self.config.trusted_proxies, &req, peer) {
                    Ok(ip) => (ip, None),
                    Err(why) => (peer, Some(why)),
                };
            // Traces on: the request's span, a child of the caller's only when `trust_incoming` says so.
            let otel = self
                .telemetry
                .as_ref()
                .map(|t| t.request(req.method().as_str(), req.headers(), &decision_id));
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
                otel,
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
                                | Refusal::Unauthenticated { .. }
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

    /// The stages up to the upstream's response, each taking the previous one's output. Each call is where the
    /// stage's span goes, once there is one per stage.
    async fn stages(
        self: &Arc<Self>,
        req: Request<Incoming>,
        conn: &ConnInfo,
        trace: &mut Trace,
    ) -> Result<Response<ProxyBody>, Refusal> {
        let stage = trace.stage("admit");
        let admitted = admit(&req, &self.config, trace)?;
        drop(stage);
        let bundle: Arc<Bundle> = self.authorizer.bundle();
        let now = self.authorizer.clock().now();
        let credentials = Credentials {
            client_cert: conn.client_cert.as_ref(),
            cert_groups: |cert: &EntityRef| {
                self.workload_groups
                    .get(&cert.id)
                    .cloned()
                    .unwrap_or_default()
            },
            grant_active: |principal: &EntityRef, grant: &str| {
                crate::access::grant_is_active(&self.authorizer, principal, grant, now)
            },
            failures: &self.metrics.auth_failures,
            now,
        };
        let stage = trace.stage("authenticate");
        let identity = authenticate(&self.auth, &req, credentials, trace).await?;
        drop(stage);
        let stage = trace.stage("map");
        let mut mapped = map(&bundle, &self.config, &req, admitted, identity, now, trace)
            .inspect_err(|r| {
                // The one 401 of this stage: no credential on a route that needs one.
                if matches!(r, Refusal::Unauthenticated { .. }) {
                    self.metrics.auth_failures.inc();
                }
            })?;
        drop(stage);
        let authorized = authorize(self, &bundle, &mut mapped, req, trace).await?;
        let stage = trace.stage("forward");
        let out = Outbound {
            service: &mapped.service,
            principal: &mapped.request.principal.entity,
            decision: &authorized.decision,
            decision_id: &trace.decision_id,
            path: &mapped.path,
            query: &mapped.query,
            host: mapped.host.as_deref(),
            client_ip: trace.client,
            tls: conn.tls,
            max_body: self.config.max_body_bytes,
            // The forward span's trace context for the upstream, replacing whatever the caller sent.
            trace_headers: stage
                .as_ref()
                .map(crate::telemetry::StageSpan::propagation_headers),
        };
        forward_stage(&self.upstreams, authorized.req, out).await
    }

    /// log: always runs; commits one record per request before the response leaves.
    async fn log_stage(
        &self,
        unlogged: &mut Unlogged<'_>,
        mut response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let status = response.status().as_u16();
        let (slot, entry) = unlogged.take(status);
        let otel = unlogged.trace.otel.take();
        let stage = otel.as_ref().map(|o| o.stage("log"));
        let logging = Instant::now();
        let span_outcome = otel.as_ref().map(|_| SpanOutcome::of(&entry));
        let committed = self.log.commit(slot, entry).await;
        self.metrics.log_wait.observe(logging.elapsed());
        drop(stage);
        if let Err(e) = committed {
            // The record could not be committed: the response must not claim success.
            tracing::error!(error = %e, decision_id = %unlogged.trace.decision_id,
                "decision log commit failed; refusing the response");
            self.metrics.log_errors.inc();
            response =
                Refusal::LogUnavailable(e.to_string()).into_response(&unlogged.trace.decision_id);
        }
        self.metrics
            .request_duration
            .observe(response.status().as_u16(), unlogged.trace.started.elapsed());
        if let (Some(o), Some(s)) = (otel, span_outcome) {
            o.finish(&s.outcome(response.status().as_u16()));
        }
        response
    }

    /// The decision record of a request, from what its stages found (moved out of `trace`).
    fn record(&self, trace: &mut Trace, status: u16) -> DecisionRecord {
        let mut r = DecisionRecord::with_id(
            RecordKind::Decision,
            trace.decision_id.clone(),
            time::OffsetDateTime::now_utc(),
        );
        // Erroring policies with the language's own answer, or a deny's nearest permits (`context.explain`);
        // nothing for an allow.
        let mut explain = None;
        match trace.decision.take() {
            Some(d) => {
                explain = d.explain_json();
                r.decision = Some(outcome(&d));
                r.policies = d.policies;
                r.grants_used = d.grants_used;
                r.errors = d.errors;
                r.revision = d.revision;
                r.engine = d.engine.as_str().to_string();
                r.break_glass = d.break_glass;
            }
            // Refused before a decision (unauthenticated, unmatched, a bad request): a deny by the active bundle.
            None => {
                let b = self.authorizer.bundle();
                r.decision = Some(Outcome::Deny);
                r.revision = b.revision.clone();
                r.engine = b.engine().as_str().to_string();
            }
        }
        if let Some(e) = trace.error.take() {
            r.errors.push(e);
        }
        if let serde_json::Value::Object(context) = std::mem::take(&mut trace.context) {
            r.context = context;
        }
        if let Some(id) = trace.approval_id.take() {
            r.context.insert("approval_id".into(), id.into());
        }
        if let Some(x) = explain {
            r.context.insert("explain".into(), x);
        }
        if let Some(o) = &trace.otel {
            r.context.insert("trace_id".into(), o.trace_id().into());
        }
        r.request_id = Some(trace.decision_id.clone());
        r.principal = trace.principal.take().unwrap_or_default();
        r.action = trace.action.take().unwrap_or_default();
        r.resource = trace.resource.take().unwrap_or_default();
        r.latency_us = trace.started.elapsed().as_micros() as u64;
        r.client_addr = Some(trace.client.to_string());
        r.method = Some(std::mem::take(&mut trace.method));
        r.path = Some(std::mem::take(&mut trace.path));
        r.status = Some(status);
        r
    }
}

/// The logged outcome of a decision: a deny that no policy determined because evaluation failed is an error.
fn outcome(d: &Decision) -> Outcome {
    match d.effect {
        Effect::Allow => Outcome::Allow,
        Effect::Hold => Outcome::Hold,
        Effect::Deny if d.policies.is_empty() && d.errors.iter().any(|e| !e.is_empty()) => {
            Outcome::Error
        }
        Effect::Deny => Outcome::Deny,
    }
}

/// What a request's span says of its record, copied before the record goes to the log.
struct SpanOutcome {
    path: String,
    client: String,
    principal: String,
    action: String,
    resource: String,
    decision: String,
    revision: String,
}

impl SpanOutcome {
    fn of(r: &DecisionRecord) -> Self {
        Self {
            path: r.path.clone().unwrap_or_default(),
            client: r.client_addr.clone().unwrap_or_default(),
            principal: r.principal.clone(),
            action: r.action.clone(),
            resource: r.resource.clone(),
            decision: r
                .decision
                .map(|d| d.as_str().to_string())
                .unwrap_or_default(),
            revision: r.revision.clone(),
        }
    }

    fn outcome(&self, status: u16) -> crate::telemetry::Outcome<'_> {
        crate::telemetry::Outcome {
            status,
            path: &self.path,
            client: &self.client,
            principal: &self.principal,
            action: &self.action,
            resource: &self.resource,
            decision: &self.decision,
            revision: &self.revision,
        }
    }
}

/// The status recorded for a request whose caller went away before its response (nginx's "client closed request").
pub const CALLER_GONE_STATUS: u16 = 499;

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
    fn take(&mut self, status: u16) -> (crate::decision_log::Slot, DecisionRecord) {
        self.logged = true;
        let entry = self.proxy.record(&mut self.trace, status);
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
