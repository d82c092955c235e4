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
    /// The digest binds the configured context headers, `Content-Type` and `[hold] bind_headers` too. A resend with
    /// `x-jitgate-approval` whose value is not the id of an active approval of this caller for this exact request
    /// (another id, a digest mismatch), or whose approval is already spent, is refused with 403; it is not held
    /// again (a request that carries the header claims an approval, and a fresh hold would hide a wrong one).
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
        let bound = self.bound_header_names();
        let headers = bound_headers(&parts.headers, &bound);
        let digest = jitgate_engine::request::request_digest(request, &headers, &bytes);
        request.digest = Some(digest.clone());

        let redeem = |request: &mut jitgate_engine::AuthzRequest| {
            request.context.time = self.authorizer.clock().now();
            decide(request)
        };

        if let Some(named) = parts.headers.get(crate::headers::APPROVAL_HEADER) {
            // The value must name the approval of this exact request: an approval is spent only by a resend that
            // says which one it spends, as the 202 told the caller.
            let names_it = named
                .to_str()
                .is_ok_and(|id| self.names_approval(&request.principal.entity, id, &digest));
            // The record names the approval presented, whether or not it is refused.
            *approval_id = Some(String::from_utf8_lossy(named.as_bytes()).into_owned());
            // One answer for every way a resend fails, so it tells a caller nothing about other approvals.
            let refused = || Refusal::Denied {
                reason: format!(
                    "the approval that `{}` names does not match this exact request, or it was already used",
                    crate::headers::APPROVAL_HEADER
                ),
            };
            if !names_it {
                return Err(refused());
            }
            let d = redeem(request);
            return if d.effect == Effect::Allow {
                Ok(Released {
                    body: bytes,
                    decision: d,
                })
            } else {
                Err(refused())
            };
        }

        let id = jitgate_engine::lifecycle::new_request_id();
        let spec = jitgate_engine::lifecycle::HoldSpec {
            id: id.clone(),
            resource: request.resource.entity.clone(),
            digest: digest.clone(),
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
        // At most `[hold] max_waiting_per_principal` connections of one caller wait; beyond that the caller gets
        // at once the answer it gets when the wait ends (202 with the approval id).
        let who = request.principal.entity.to_string();
        let max_waiting = self.config.hold.max_waiting_per_principal;
        let mut waiter = self.access.holds().register(&id, &who, max_waiting);
        // What approvers see of it: the exact request (the query redacted as in the reason).
        self.access.holds().describe(
            &id,
            crate::access::HeldRequest::new(
                parts.method.as_str(),
                request.context.host.as_deref(),
                &path,
                &jitgate_engine::log::redacted_query(&query, &self.config.log_redact_query)
                    .unwrap_or_else(|| query.clone()),
                &bytes,
            ),
        );
        // Created and logged to the end even if the caller goes away: a pending request always has its `held`
        // record in the chain.
        let created = self
            .access
            .create_hold(request.principal.clone(), spec)
            .await;
        let waited = match created {
            Ok(w) => w,
            Err(e) => {
                // Nothing was created: the record must not name a request that does not exist.
                *approval_id = None;
                return Err(match e {
                    // The caller's pending requests are at `[store] max_pending_per_principal`.
                    crate::access::AccessError::Lifecycle(
                        jitgate_engine::lifecycle::LifecycleError::Conflict(reason),
                    ) => Refusal::Denied { reason },
                    e => Refusal::Internal(e.to_string()),
                });
            }
        };
        let mut already = HoldSignal::Waiting;
        if waited != id {
            // A retry of the same held request: it waits on the pending request it already has.
            drop(waiter);
            waiter = self.access.holds().register(&waited, &who, max_waiting);
            // An approval that landed before this registration is in the index already.
            if self.names_approval(&request.principal.entity, &waited, &digest) {
                already = HoldSignal::Approved;
            }
        }
        let id = waited;
        *approval_id = Some(id.clone());
        // The waiter was registered before the request existed (or the approval checked after registering), so no
        // verdict can have been missed; `wait_for` sees one that already landed.
        let signal = match (already, waiter.as_mut()) {
            (HoldSignal::Waiting, Some(w)) => {
                let wait = w.rx.wait_for(|s| *s != HoldSignal::Waiting);
                match tokio::time::timeout(self.config.hold.wait, wait).await {
                    Ok(Ok(s)) => *s,
                    _ => HoldSignal::Waiting,
                }
            }
            (s, _) => s,
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

    /// The header names bound into a held request's digest: the policies' context headers, `Content-Type`, and
    /// `[hold] bind_headers`.
    fn bound_header_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .config
            .context_headers
            .iter()
            .chain(&self.config.hold.bind_headers)
            .map(String::as_str)
            .collect();
        names.push(http::header::CONTENT_TYPE.as_str());
        names
    }

    /// Whether `id` is an active approval (a grant of `principal` from access request `id`) bound to `digest`, in
    /// the index the data plane decides on.
    fn names_approval(
        &self,
        principal: &jitgate_engine::EntityRef,
        id: &str,
        digest: &str,
    ) -> bool {
        let now = self.authorizer.clock().now();
        self.authorizer
            .grants()
            .for_principal(principal)
            .is_some_and(|grants| {
                grants.iter().any(|g| {
                    g.request_id.as_deref() == Some(id)
                        && g.request_digest.as_deref() == Some(digest)
                        && g.is_active_at(now)
                })
            })
    }
}

/// The bound headers of a request: each of `names` with all its values in order (none when absent), and any other
/// spelling of one of them (`X_Tenant` beside `x-tenant`, which a server reading `_` as `-` would take) under its
/// own name, so that it is bound too.
fn bound_headers<'a>(
    h: &'a http::HeaderMap,
    names: &[&'a str],
) -> Vec<jitgate_engine::request::BoundHeader<'a>> {
    let values = |name: &str| -> Vec<&'a [u8]> {
        h.get_all(name)
            .iter()
            .map(http::HeaderValue::as_bytes)
            .collect()
    };
    let mut out = Vec::new();
    for name in names {
        out.push(jitgate_engine::request::BoundHeader {
            name,
            values: values(name),
        });
        for alias in h
            .keys()
            .filter(|k| !k.as_str().eq_ignore_ascii_case(name))
            .filter(|k| crate::headers::same_dashed(k.as_str(), name))
        {
            out.push(jitgate_engine::request::BoundHeader {
                name: alias.as_str(),
                values: values(alias.as_str()),
            });
        }
    }
    out
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
