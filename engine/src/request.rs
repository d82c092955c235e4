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
    /// Group names (become `<group_type>::"name"` parents in Cedar, `input.principal.groups` in Rego).
    #[serde(default)]
    pub groups: Vec<String>,
    /// The entity type of the groups (`Team`, `UserGroup`, ...); `None` is `Group`. Set per issuer
    /// (`groups_type`); a hierarchy above them (a team in an organization) comes from the entity data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_type: Option<String>,
    /// Attributes of the principal entity, as JSON (Cedar: typed by the schema's declaration of the principal's
    /// type and merged over what the entity data says about it; Rego: `input.principal.attrs`). The proxy fills
    /// them from token claims per issuer (`principal_attrs`); empty when nothing is mapped.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub attrs: serde_json::Map<String, serde_json::Value>,
}

impl Principal {
    /// A principal with `groups` (of type `Group`) and no attributes.
    pub fn new(entity: EntityRef, groups: Vec<String>) -> Self {
        Self {
            entity,
            groups,
            group_type: None,
            attrs: serde_json::Map::new(),
        }
    }

    /// The entity type of the principal's groups: `group_type`, or `Group`.
    pub fn group_type(&self) -> &str {
        self.group_type.as_deref().unwrap_or("Group")
    }
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

/// One header an approval is bound to: its name and every value the request carried under it, in the order they
/// came. No values: the request did not carry it (distinct from one empty value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundHeader<'a> {
    /// The header name (compared and hashed lower-cased).
    pub name: &'a str,
    /// Every value, as bytes, in request order.
    pub values: Vec<&'a [u8]>,
}

/// The domain of [`request_digest`], hashed first. The first digest (no headers) started with the principal's
/// entity (`Type::"id"`, which always holds `::`); this tag holds none, so no request of either form hashes the
/// same bytes as one of the other, and an approval given under one form never matches a request under the other.
const DIGEST_DOMAIN: &[u8] = b"jitgate request digest v2";

/// The digest that binds an approval to one exact request: principal, method, host, normalized path, query, the
/// action and resource the routes mapped it to, the bound `headers`, and a hash of the body, all but the headers and
/// body taken from `request`. Binding the host keeps an approval given for one host from opening the same path on
/// another; binding the action and resource keeps it from opening whatever a later bundle maps the path to; binding
/// the headers (the proxy passes the policies' context headers, `Content-Type` and `[hold] bind_headers`) keeps an
/// approved request from being resent with another tenant or body type. Headers are canonical: names lower-cased,
/// sorted and each taken once (the first entry of a name wins), so the order they are configured in does not
/// matter; each value is hashed as bytes, in order, with its count, so an absent header differs from an empty one
/// and a repeated one from a single one. Hex SHA-256; each part is length-prefixed (an absent host is distinct from
/// an empty one), so no two different requests share a digest.
pub fn request_digest(request: &AuthzRequest, headers: &[BoundHeader<'_>], body: &[u8]) -> String {
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
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    for p in [
        DIGEST_DOMAIN,
        principal.as_bytes(),
        &text(&ctx.method),
        &host,
        &text(&ctx.path),
        &text(&ctx.query),
        request.action.as_bytes(),
        resource.as_bytes(),
        &body_hash[..],
    ] {
        part(p);
    }
    let mut canonical: BTreeMap<String, &[&[u8]]> = BTreeMap::new();
    for header in headers {
        canonical
            .entry(header.name.to_ascii_lowercase())
            .or_insert(&header.values);
    }
    part(&(canonical.len() as u64).to_be_bytes());
    for (name, values) in &canonical {
        part(name.as_bytes());
        part(&(values.len() as u64).to_be_bytes());
        for v in values.iter() {
            part(v);
        }
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_separates_fields() {
        let base = || {
            let mut r = held_delete();
            r.context.host = Some("db.example.com".into());
            r.context.query = Some(String::new());
            r
        };
        let a = request_digest(&base(), &[], b"");
        assert_eq!(a, request_digest(&base(), &[], b""));
        // Fields that are not part of the request's identity do not change it.
        let mut r = base();
        r.context.time = 99;
        r.context.source_ip = Some("10.0.0.1".into());
        r.principal.groups = vec!["sre".into()];
        assert_eq!(a, request_digest(&r, &[], b""));
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
                seen.insert(request_digest(&r, &[], b"")),
                "{what} must change the digest"
            );
        }
        assert_ne!(a, request_digest(&base(), &[], b"{}"), "the body");
    }

    fn held_delete() -> AuthzRequest {
        let mut context = Context::at(0);
        context.method = Some("DELETE".into());
        context.path = Some("/db/x".into());
        AuthzRequest {
            principal: Principal {
                entity: EntityRef::new("User", "a"),
                groups: Vec::new(),
                group_type: None,
                attrs: Default::default(),
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
    }

    fn header<'a>(name: &'a str, values: &[&'a [u8]]) -> BoundHeader<'a> {
        BoundHeader {
            name,
            values: values.to_vec(),
        }
    }

    #[test]
    fn digest_binds_header_values() {
        let r = held_delete();
        let with = |tenant: &[&[u8]]| {
            request_digest(
                &r,
                &[
                    header("x-tenant", tenant),
                    header("content-type", &[b"application/json"]),
                ],
                b"",
            )
        };
        let a = with(&[b"acme"]);
        assert_eq!(a, with(&[b"acme"]));
        let mut seen = std::collections::BTreeSet::from([a.clone()]);
        for (what, tenant) in [
            ("another value", &[b"globex".as_slice()][..]),
            ("absent", &[][..]),
            ("empty", &[b"".as_slice()][..]),
            ("repeated", &[b"acme".as_slice(), b"acme"][..]),
            ("split", &[b"ac".as_slice(), b"me"][..]),
            ("reordered", &[b"me".as_slice(), b"ac"][..]),
        ] {
            assert!(seen.insert(with(tenant)), "{what} must change the digest");
        }
        let other_type = request_digest(
            &r,
            &[
                header("x-tenant", &[b"acme"]),
                header("content-type", &[b"text/plain"]),
            ],
            b"",
        );
        assert_ne!(a, other_type, "the content type");
        // Binding a header at all changes the digest, even one the request does not carry.
        assert_ne!(
            request_digest(&r, &[], b""),
            request_digest(&r, &[header("x-tenant", &[])], b"")
        );
    }

    #[test]
    fn digest_headers_are_canonical() {
        let r = held_delete();
        let a = request_digest(
            &r,
            &[
                header("x-tenant", &[b"acme"]),
                header("content-type", &[b"application/json"]),
            ],
            b"",
        );
        // Configured order and the case of the names do not matter; a name given twice is taken once.
        let b = request_digest(
            &r,
            &[
                header("Content-Type", &[b"application/json"]),
                header("X-Tenant", &[b"acme"]),
                header("x-tenant", &[b"acme"]),
            ],
            b"",
        );
        assert_eq!(a, b);
        // Values are bytes: their case matters.
        let c = request_digest(
            &r,
            &[
                header("x-tenant", &[b"ACME"]),
                header("content-type", &[b"application/json"]),
            ],
            b"",
        );
        assert_ne!(a, c);
    }

    #[test]
    fn digest_is_domain_separated_from_the_first_form() {
        // The first form: length-prefixed parts starting with the principal, no domain tag and no headers.
        let r = held_delete();
        let mut h = Sha256::new();
        for part in [
            b"User::\"a\"".as_slice(),
            b"DELETE",
            b"0",
            b"/db/x",
            b"",
            b"deleteDatabase",
            b"Database::\"x\"",
            &Sha256::digest(b"")[..],
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        let first = hex::encode(h.finalize());
        assert_ne!(first, request_digest(&r, &[], b""));
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
