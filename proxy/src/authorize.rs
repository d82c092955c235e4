//! authorize: the engine decides the mapped request in-process, against the bundle snapshot the request started
//! with (any error is a deny); a hold waits for an approval of this exact request ([`crate::hold`]).

use std::sync::Arc;
use std::time::Instant;

use http::Request;
use hyper::body::Incoming;
use jitgate_engine::{AuthzRequest, Bundle, Decision, Effect};

use crate::map::Mapped;
use crate::respond::{ProxyBody, Refusal};
use crate::state::Proxy;
use crate::trace::Trace;

/// A request allowed: the decision that allowed it (a released hold's, when it was held), and the request with
/// its body, streamed, or buffered when it was held.
#[derive(Debug)]
pub struct Authorized {
    /// The allowing decision.
    pub decision: Decision,
    /// The request to forward.
    pub req: Request<ProxyBody>,
}

/// The authorize stage: allow, deny (403 with the determining policies), or hold.
#[inline]
pub async fn authorize(
    proxy: &Arc<Proxy>,
    bundle: &Arc<Bundle>,
    mapped: &mut Mapped,
    req: Request<Incoming>,
    trace: &mut Trace,
) -> Result<Authorized, Refusal> {
    // A token bound to a grant carries that grant's authority, not every grant (or group permission) its holder
    // has.
    let stage = trace.stage("authorize");
    let bound = mapped.bound_grant.as_deref();
    let decide = |r: &AuthzRequest| match bound {
        None => proxy.authorizer.decide(bundle, r),
        Some(id) => decide_grant_bound(proxy, bundle, r, id),
    };
    let deciding = Instant::now();
    let decision = decide(&mapped.request);
    proxy.metrics.decision_duration.observe(deciding.elapsed());
    proxy
        .shadow
        .observe(proxy.authorizer.grants(), &mapped.request, &decision);
    trace.decision = Some(decision.clone());
    proxy.metrics.decisions.inc(decision.effect.as_str());
    match decision.effect {
        Effect::Allow => Ok(Authorized {
            decision,
            req: req.map(crate::forward::stream_body),
        }),
        Effect::Deny => Err(Refusal::Denied {
            reason: deny_reason(&decision),
        }),
        Effect::Hold => {
            // hold: wait (bounded) for approval of this exact request.
            drop(stage);
            let hold_span = trace.stage("hold");
            let (parts, body) = req.into_parts();
            let held = proxy
                .hold_stage(
                    &parts,
                    body,
                    &mut mapped.request,
                    &decide,
                    &decision,
                    &mut trace.approval_id,
                )
                .await;
            let released = match held {
                Ok(r) => r,
                Err(refusal) => {
                    // A refused approval (spent, another request's, or denied) is a deny, with its reason.
                    if let Refusal::Denied { reason } = &refusal {
                        if let Some(d) = trace.decision.as_mut() {
                            d.effect = Effect::Deny;
                        }
                        trace.error = Some(reason.clone());
                    }
                    return Err(refusal);
                }
            };
            drop(hold_span);
            trace.decision = Some(released.decision.clone());
            proxy
                .metrics
                .decisions
                .inc(released.decision.effect.as_str());
            Ok(Authorized {
                decision: released.decision,
                req: Request::from_parts(parts, crate::respond::full(released.body)),
            })
        }
    }
}

/// The decision for a grant-bound token: its groups never permit, but they still forbid. Groups permit on their
/// own (`engineers-read`), so a token bound to a payments-writer grant would read databases through them; yet
/// dropping them outright would also drop the forbids that name a group (`contractors-no-databases`), and a
/// contractor's db-admin token would pass. So the request is decided with the groups first, without spending
/// anything: a deny (a forbid, or an error) stands, and so does a hold. Only an allow there is decided again, now
/// without groups and spending uses, and that decision is the answer: the grant's authority alone must allow it.
fn decide_grant_bound(
    proxy: &Proxy,
    bundle: &Bundle,
    request: &AuthzRequest,
    grant_id: &str,
) -> Decision {
    let grants: Vec<Arc<jitgate_engine::Grant>> = proxy
        .authorizer
        .grants()
        .for_principal(&request.principal.entity)
        .map(|g| {
            g.iter()
                .filter(|g| g.id == grant_id || g.request_digest.is_some())
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut without_groups = request.clone();
    without_groups.principal.groups.clear();
    let with_groups = bundle.decide(request, &grants);
    match with_groups.effect {
        Effect::Deny => with_groups,
        // Held: released only if the grant alone would allow it once approved, else refused now rather than
        // after an approver's time; the release decides again through here.
        Effect::Hold => {
            let alone = bundle.decide(&without_groups, &grants);
            if alone.effect == Effect::Deny {
                alone
            } else {
                with_groups
            }
        }
        Effect::Allow => proxy
            .authorizer
            .decide_bound(bundle, &without_groups, Some(grant_id)),
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
