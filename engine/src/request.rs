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

/// The digest that binds an approval to one exact request: principal, method, normalized path, query and a hash of
/// the body. Hex SHA-256; each part is length-prefixed so no two different requests share a digest.
pub fn request_digest(
    principal: &EntityRef,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> String {
    let body_hash = Sha256::digest(body);
    let mut h = Sha256::new();
    let principal = principal.to_string();
    for part in [
        principal.as_bytes(),
        method.as_bytes(),
        path.as_bytes(),
        query.as_bytes(),
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
        let p = EntityRef::new("User", "a");
        let a = request_digest(&p, "DELETE", "/db/x", "", b"");
        assert_eq!(a, request_digest(&p, "DELETE", "/db/x", "", b""));
        assert_ne!(a, request_digest(&p, "DELETE", "/db/x", "", b"{}"));
        assert_ne!(a, request_digest(&p, "DELETE", "/db/", "x", b""));
        assert_ne!(
            a,
            request_digest(&EntityRef::new("User", "b"), "DELETE", "/db/x", "", b"")
        );
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
