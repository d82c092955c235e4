//! The request model: principal / action / resource / context, independent of either policy language.
//! The proxy builds these from HTTP requests (through the bundle's routes); policy suites build them from fixtures.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::UnixTime;
use crate::entity::EntityRef;

/// Who is asking: a person (`User`) or a workload (`Workload`), with the groups it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// The principal entity, e.g. `User::"alice"`.
    pub entity: EntityRef,
    /// Group names (become `Group::"name"` parents in Cedar, `input.principal.groups` in Rego).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// What is acted on: an entity with its ancestors (nearest first) and attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// The resource entity, e.g. `Database::"prod-eu"`.
    pub entity: EntityRef,
    /// Ancestors, nearest first, e.g. `[Service::"billing"]`.
    #[serde(default)]
    pub parents: Vec<EntityRef>,
    /// Attributes visible to policies (e.g. an access request's requester and role).
    #[serde(default)]
    pub attrs: serde_json::Map<String, serde_json::Value>,
}

impl Resource {
    /// Whether `scope` is this resource or one of its ancestors.
    pub fn is_within(&self, scope: &EntityRef) -> bool {
        &self.entity == scope || self.parents.iter().any(|p| p == scope)
    }
}

/// Facts about the request that policies may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// The request's own time; grants are materialized as of this instant.
    pub time: UnixTime,
    /// The client address (after trusted-proxy handling), if known.
    #[serde(default)]
    pub source_ip: Option<String>,
    /// HTTP method, for HTTP requests.
    #[serde(default)]
    pub method: Option<String>,
    /// The normalized path: exactly what the upstream receives.
    #[serde(default)]
    pub path: Option<String>,
    /// The request host.
    #[serde(default)]
    pub host: Option<String>,
    /// The raw query string.
    #[serde(default)]
    pub query: Option<String>,
    /// Selected request headers (lower-case names).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The verified token's claims.
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Further attributes (e.g. the requested role and duration of an access request).
    #[serde(default)]
    pub attrs: serde_json::Map<String, serde_json::Value>,
}

impl Context {
    /// A context with only a time.
    pub fn at(time: UnixTime) -> Self {
        Self {
            time,
            source_ip: None,
            method: None,
            path: None,
            host: None,
            query: None,
            headers: BTreeMap::new(),
            claims: serde_json::Map::new(),
            attrs: serde_json::Map::new(),
        }
    }
}

/// A complete authorization request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzRequest {
    /// Who.
    pub principal: Principal,
    /// The action id, e.g. `deleteDatabase` (Cedar: `Action::"deleteDatabase"`).
    pub action: String,
    /// On what.
    pub resource: Resource,
    /// When, from where, with which claims.
    pub context: Context,
    /// Digest of the exact HTTP request ([`request_digest`]); lets a grant bound to one request match it.
    #[serde(default)]
    pub digest: Option<String>,
}

/// The digest that binds an approval to one exact request: principal, method, host, normalized path, query, the
/// action and resource the routes mapped it to, and a hash of the body, all taken from `request` (the body is
/// passed separately). Binding the host keeps an approval given for one host from opening the same path on
/// another; binding the action and resource keeps it from opening whatever a later bundle maps the path to. Hex
/// SHA-256; each part is length-prefixed (an absent host is distinct from an empty one), so no two different
/// requests share a digest.
pub fn request_digest(request: &AuthzRequest, body: &[u8]) -> String {
    let body_hash = Sha256::digest(body);
    let mut h = Sha256::new();
    let principal = request.principal.entity.to_string();
    let resource = request.resource.entity.to_string();
    let ctx = &request.context;
    let text = |v: &Option<String>| v.as_deref().unwrap_or_default().as_bytes().to_vec();
    let host = match &ctx.host {
        Some(h) => [b"1".as_slice(), h.as_bytes()].concat(),
        None => b"0".to_vec(),
    };
    for part in [
        principal.as_bytes(),
        &text(&ctx.method),
        &host,
        &text(&ctx.path),
        &text(&ctx.query),
        request.action.as_bytes(),
        resource.as_bytes(),
        &body_hash[..],
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_separates_fields() {
        let base = || {
            let mut context = Context::at(0);
            context.method = Some("DELETE".into());
            context.host = Some("db.example.com".into());
            context.path = Some("/db/x".into());
            context.query = Some(String::new());
            AuthzRequest {
                principal: Principal {
                    entity: EntityRef::new("User", "a"),
                    groups: Vec::new(),
                },
                action: "deleteDatabase".into(),
                resource: Resource {
                    entity: EntityRef::new("Database", "x"),
                    parents: Vec::new(),
                    attrs: Default::default(),
                },
                context,
                digest: None,
            }
        };
        let a = request_digest(&base(), b"");
        assert_eq!(a, request_digest(&base(), b""));
        // Fields that are not part of the request's identity do not change it.
        let mut r = base();
        r.context.time = 99;
        r.context.source_ip = Some("10.0.0.1".into());
        r.principal.groups = vec!["sre".into()];
        assert_eq!(a, request_digest(&r, b""));
        type Change = fn(&mut AuthzRequest);
        let changed: Vec<(&str, Change)> = vec![
            ("principal", |r| {
                r.principal.entity = EntityRef::new("User", "b")
            }),
            ("method", |r| r.context.method = Some("GET".into())),
            ("host", |r| {
                r.context.host = Some("db.staging.example.com".into())
            }),
            ("no host", |r| r.context.host = None),
            ("empty host", |r| r.context.host = Some(String::new())),
            ("path", |r| r.context.path = Some("/db/".into())),
            ("path into query", |r| {
                r.context.path = Some("/db/".into());
                r.context.query = Some("x".into());
            }),
            ("action", |r| r.action = "readDatabase".into()),
            ("resource", |r| {
                r.resource.entity = EntityRef::new("Database", "y")
            }),
        ];
        let mut seen = std::collections::BTreeSet::from([a.clone()]);
        for (what, change) in &changed {
            let mut r = base();
            change(&mut r);
            assert!(
                seen.insert(request_digest(&r, b"")),
                "{what} must change the digest"
            );
        }
        assert_ne!(a, request_digest(&base(), b"{}"), "the body");
    }

    #[test]
    fn within_scope() {
        let r = Resource {
            entity: EntityRef::new("Database", "prod"),
            parents: vec![EntityRef::new("Service", "billing")],
            attrs: Default::default(),
        };
        assert!(r.is_within(&EntityRef::new("Service", "billing")));
        assert!(r.is_within(&EntityRef::new("Database", "prod")));
        assert!(!r.is_within(&EntityRef::new("Service", "payments")));
    }
}
