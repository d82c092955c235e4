//! map: the route table turns an admitted, authenticated request into the policy input (principal, action,
//! resource, context). An unmatched request is denied (401 first when nobody is authenticated).

use http::{HeaderMap, Request};
use jitgate_engine::{AuthzRequest, Bundle, Context, EntityRef, Principal};

use crate::admit::Admitted;
use crate::authenticate::Identity;
use crate::config::Config;
use crate::respond::Refusal;
use crate::trace::Trace;

/// A request mapped to the policy input, with what forwarding needs of it.
#[derive(Debug)]
pub struct Mapped {
    /// What the policies decide on.
    pub request: AuthzRequest,
    /// The grant the caller's token is bound to, if any: it carries that grant's authority only.
    pub bound_grant: Option<String>,
    /// The route's upstream service.
    pub service: String,
    /// The normalized path.
    pub path: String,
    /// The query, without `?` (empty when none).
    pub query: String,
    /// The request's one host.
    pub host: Option<String>,
}

/// The map stage: the route for the request's method, host and path, then the policy input. Public routes take
/// requests without an identity, as the anonymous principal.
#[inline]
pub fn map<B>(
    bundle: &Bundle,
    config: &Config,
    req: &Request<B>,
    admitted: Admitted,
    identity: Option<Identity>,
    now: i64,
    trace: &mut Trace,
) -> Result<Mapped, Refusal> {
    let Admitted { path, host } = admitted;
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
    if let Some(o) = &trace.otel {
        o.set_route(req.method().as_str(), &route.route.path);
    }
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
    context.claims = identity.claims;
    for name in &config.context_headers {
        if let Some(v) = context_header(req.headers(), name).map_err(Refusal::BadRequest)? {
            context.headers.insert(name.clone(), v);
        }
    }
    trace.context = context_summary(&context);
    let request = AuthzRequest {
        principal: Principal {
            entity: identity.principal,
            groups: identity.groups,
            group_type: identity.group_type,
            attrs: identity.attrs,
        },
        action: route.route.action.clone(),
        resource: route.resource,
        context,
        digest: None,
    };
    Ok(Mapped {
        request,
        bound_grant: identity.grant_id,
        service,
        path,
        query,
        host,
    })
}

/// The principal of public routes called without a credential.
fn anonymous_identity() -> Identity {
    Identity {
        principal: EntityRef::new("Anonymous", "anonymous"),
        groups: Vec::new(),
        group_type: None,
        attrs: Default::default(),
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

/// A configured context header's value, as the upstream will get it: absent when the client sent none or made it
/// hop-by-hop (it is then never forwarded); refused when it is sent twice or is not text, since the policies decide
/// on one value.
fn context_header(h: &HeaderMap, name: &str) -> Result<Option<String>, String> {
    let Ok(header_name) = http::HeaderName::from_bytes(name.as_bytes()) else {
        return Ok(None);
    };
    if crate::headers::is_hop_by_hop(h, &header_name) {
        return Ok(None);
    }
    // `X_Tenant` beside `X-Tenant` would reach the upstream too, and a server that reads `_` as `-` might take it.
    if let Some(alias) = h
        .keys()
        .find(|k| **k != header_name && crate::headers::same_dashed(k.as_str(), name))
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
