//! The hold stage: a request the policies hold waits on its open connection for a verdict on that exact request.
//! Its access request, the request's record and the release on a verdict belong to the access service.

use std::sync::Arc;

use crate::access::HoldSignal;

/// What the hold stage concluded.
#[derive(Debug)]
pub struct Released {
    /// The buffered body, to forward once.
    pub body: bytes::Bytes,
    /// The decision that let it through (it spent the request-bound approval).
    pub decision: jitgate_engine::Decision,
}

impl crate::state::Proxy {
    /// The hold stage: buffer the body (up to `[hold] max_body_bytes`, else 413), bind the request to its digest,
    /// and either redeem an approval named by `x-jitgate-approval` or create a pending `hold` request, notify, and
    /// wait up to `[hold] wait` for a verdict. Approved -> the decision made again with the digest (spending the
    /// one-use, request-bound grant) and the buffered body returned for forwarding. Denied -> 403. No verdict in
    /// time -> 202 with the approval id.
    ///
    /// A resend with `x-jitgate-approval` whose request differs from the approved one (digest mismatch), or whose
    /// approval is already spent, is refused with 403; it is not held again.
    pub(crate) async fn hold_stage(
        self: &Arc<Self>,
        parts: &http::request::Parts,
        body: hyper::body::Incoming,
        request: &mut jitgate_engine::AuthzRequest,
        decide: &(dyn Fn(&jitgate_engine::AuthzRequest) -> jitgate_engine::Decision + Sync),
        held: &jitgate_engine::Decision,
        approval_id: &mut Option<String>,
    ) -> Result<Released, crate::respond::Refusal> {
        use crate::respond::Refusal;
        use http_body_util::BodyExt;
        use jitgate_engine::Effect;

        let limit = self.config.hold.max_body_bytes;
        let declared = crate::headers::content_length(&parts.headers);
        if declared.is_some_and(|n| n > limit) {
            return Err(Refusal::BodyTooLarge);
        }
        let bytes =
            http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
                .collect()
                .await
                .map_err(|_| Refusal::BodyTooLarge)?
                .to_bytes();
        let path = request.context.path.clone().unwrap_or_default();
        let query = request.context.query.clone().unwrap_or_default();
        let digest = jitgate_engine::request::request_digest(request, &bytes);
        request.digest = Some(digest.clone());

        let redeem = |request: &mut jitgate_engine::AuthzRequest| {
            request.context.time = self.authorizer.clock().now();
            decide(request)
        };

        if parts.headers.contains_key(crate::headers::APPROVAL_HEADER) {
            let d = redeem(request);
            return if d.effect == Effect::Allow {
                Ok(Released {
                    body: bytes,
                    decision: d,
                })
            } else {
                Err(Refusal::Denied {
                    reason:
                        "the approval does not match this exact request, or it was already used"
                            .into(),
                })
            };
        }

        let id = jitgate_engine::lifecycle::new_request_id();
        let spec = jitgate_engine::lifecycle::HoldSpec {
            id: id.clone(),
            resource: request.resource.entity.clone(),
            digest,
            // One labelled field per fact, never a sentence a request could finish: the host is a validated host
            // name or IP literal (admit), the path and query are URI text, and the query's secrets are redacted.
            reason: hold_reason(
                parts.method.as_str(),
                &path,
                &jitgate_engine::log::redacted_query(&query, &self.config.log_redact_query)
                    .unwrap_or_else(|| query.clone()),
                request.context.host.as_deref(),
                &request.action,
                &held.policies,
            ),
            ttl_secs: i64::try_from(self.config.hold.approval_ttl.as_secs()).unwrap_or(i64::MAX),
        };
        // Known to the log stage from now on: a caller that goes away while the request is created, or while it
        // waits, is recorded with the id its approval will carry.
        *approval_id = Some(id.clone());
        let mut waiter = self.access.holds().register(&id);
        // Created and logged to the end even if the caller goes away: a pending request always has its `held`
        // record in the chain.
        let created = self
            .access
            .create_hold(request.principal.clone(), spec)
            .await;
        if let Err(e) = created {
            // Nothing was created: the record must not name a request that does not exist.
            *approval_id = None;
            return Err(Refusal::Internal(e.to_string()));
        }
        // The waiter was registered before the request existed, so no verdict can have been missed; `wait_for`
        // sees one that already landed.
        let wait = waiter.rx.wait_for(|s| *s != HoldSignal::Waiting);
        let signal = match tokio::time::timeout(self.config.hold.wait, wait).await {
            Ok(Ok(s)) => *s,
            _ => HoldSignal::Waiting,
        };
        drop(waiter);
        match signal {
            HoldSignal::Approved => {
                let d = redeem(request);
                if d.effect == Effect::Allow {
                    Ok(Released {
                        body: bytes,
                        decision: d,
                    })
                } else {
                    Err(Refusal::Denied {
                        reason: "the approval was already used".into(),
                    })
                }
            }
            HoldSignal::Denied => Err(Refusal::Denied {
                reason: format!("approval {id} was denied"),
            }),
            HoldSignal::Waiting => Err(Refusal::Held {
                approval_id: id.clone(),
                message: format!(
                    "approval required by policy {}; once approved, resend the identical request with `{}: {id}`",
                    held.policies.join(", "),
                    crate::headers::APPROVAL_HEADER
                ),
            }),
        }
    }
}

/// The reason an access request for a hold shows approvers: labelled fields (`method=DELETE path=/databases/db1
/// host=api.example action=deleteDatabase policies=p`), each value a single token that admit has validated.
fn hold_reason(
    method: &str,
    path: &str,
    query: &str,
    host: Option<&str>,
    action: &str,
    policies: &[String],
) -> String {
    let mut reason = format!("held for approval: method={method} path={path}");
    if !query.is_empty() {
        reason.push_str(" query=");
        reason.push_str(query);
    }
    if let Some(host) = host {
        reason.push_str(" host=");
        reason.push_str(host);
    }
    reason.push_str(" action=");
    reason.push_str(action);
    reason.push_str(" policies=");
    reason.push_str(&policies.join(","));
    reason
}
