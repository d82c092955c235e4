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
    // A token bound to a grant carries that grant's authority, not every grant its holder has.
    let bound = mapped.bound_grant.as_deref();
    let decide = |r: &AuthzRequest| proxy.authorizer.decide_bound(bundle, r, bound);
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
            let (parts, body) = req.into_parts();
            let released = proxy
                .hold_stage(
                    &parts,
                    body,
                    &mut mapped.request,
                    &decide,
                    &decision,
                    &mut trace.approval_id,
                )
                .await?;
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
