//! The policy-suite file format (YAML or JSON): raw serde structs with unknown fields rejected, validated while
//! parsing so every error carries the file, line and column. Running the cases is [`super::runner`]'s job.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::clock::{UnixTime, parse_duration, parse_rfc3339};
use crate::diag::{Diagnostic, Diagnostics, parse_yaml, read_file};
use crate::entity::EntityRef;
use crate::grant::{Grant, GrantStatus};
use crate::request::Resource;

/// A point in time in a suite: absolute RFC 3339 (`2026-11-23T10:00:00Z`), `now`, or an offset from the suite's
/// frozen `now` (`+30m`, `-1s`, `+1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSpec {
    /// A fixed instant.
    Absolute(UnixTime),
    /// Seconds relative to the suite's `now`.
    Offset(i64),
}

impl TimeSpec {
    /// The instant this denotes when the suite's clock reads `now`.
    pub fn resolve(self, now: UnixTime) -> UnixTime {
        match self {
            TimeSpec::Absolute(t) => t,
            TimeSpec::Offset(d) => now.saturating_add(d),
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "now" {
            return Ok(TimeSpec::Offset(0));
        }
        if let Some(rest) = s.strip_prefix('+') {
            return parse_duration(rest).map(TimeSpec::Offset);
        }
        if let Some(rest) = s.strip_prefix('-') {
            return parse_duration(rest).map(|d| TimeSpec::Offset(-d));
        }
        parse_rfc3339(s)
            .map(TimeSpec::Absolute)
            .map_err(|e| format!("{e} (expected RFC 3339 like 2026-11-23T10:00:00Z, `now`, or an offset like +30m / -1s)"))
    }
}

/// Deserializes a string through `parse` inside the visitor, so YAML errors point at the value itself.
fn parse_str<'de, D, T>(
    d: D,
    what: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T> {
        what: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }
    impl<T> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.what)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            (self.parse)(s).map_err(E::custom)
        }
    }
    d.deserialize_str(V { what, parse })
}

impl<'de> Deserialize<'de> for TimeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(
            d,
            "a time: RFC 3339, `now`, or an offset like +30m / -1s",
            TimeSpec::parse,
        )
    }
}

/// An absolute RFC 3339 instant (the suite's frozen clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant(pub UnixTime);

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "an RFC 3339 time", |s| {
            parse_rfc3339(s.trim())
                .map(Instant)
                .map_err(|e| format!("{e} (expected RFC 3339 like 2026-11-23T10:00:00Z)"))
        })
    }
}

/// A duration such as `30m`, `1h`, `90s` (seconds once parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSpec(pub i64);

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "a duration like 30m", |s| match parse_duration(s)? {
            secs if secs > 0 => Ok(DurationSpec(secs)),
            _ => Err(format!("duration `{s}` must be positive")),
        })
    }
}

/// A suite file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteFile {
    /// What the suite is about.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Bundle directories, relative to the suite file; every case runs on each and must give the same answer.
    #[serde(default)]
    pub bundles: Vec<String>,
    /// The frozen clock.
    pub now: Instant,
    /// Cedar JSON entity files (relative to the suite file) added to each Cedar bundle's own entity data for this
    /// suite's cases (Cedar bundles only).
    #[serde(default, deserialize_with = "one_or_many")]
    pub entities: Vec<String>,
    /// Entity data in the store's form (JSON arrays, as `jitgate entities put` takes them; relative to the suite
    /// file), put over each bundle's own data as the store's entity data is, Cedar and Rego alike.
    #[serde(default, deserialize_with = "one_or_many")]
    pub store_entities: Vec<String>,
    /// Fixture principals: their groups and token claims.
    #[serde(default)]
    pub principals: BTreeMap<EntityRef, PrincipalFixture>,
    /// Fixture grants, in any state.
    #[serde(default)]
    pub grants: Vec<GrantFixture>,
    /// Context defaults for every case (a case's own `context` overrides field by field, map key by map key).
    #[serde(default)]
    pub context: ContextSpec,
    /// The cases, run in order (a `consume: true` case affects the cases after it).
    pub cases: Vec<CaseSpec>,
}

/// A fixture principal.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalFixture {
    /// Group names.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Token claims put into `context.claims` of the principal's cases.
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The entity type of its groups (what an issuer's `groups_type` sets; default `Group`).
    #[serde(default)]
    pub group_type: Option<String>,
    /// Attributes of the principal entity, as an issuer's `principal_attrs` maps them from token claims (JSON,
    /// typed by the bundle's schema: `"manager": "bob"` is `User::"bob"` where `manager: User` is declared).
    #[serde(default)]
    pub attrs: serde_json::Map<String, serde_json::Value>,
}

/// A fixture grant.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawGrant")]
pub struct GrantFixture {
    /// The grant (times resolved against the suite's `now`).
    pub spec: RawGrant,
}

/// A fixture grant as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrant {
    /// Unique id within the suite.
    pub id: String,
    /// Who holds it.
    pub principal: EntityRef,
    /// The role it confers.
    pub role: String,
    /// The subtree it covers.
    pub scope: EntityRef,
    /// First second of validity (default: the suite's `now`).
    #[serde(default)]
    pub starts_at: Option<TimeSpec>,
    /// First second of invalidity (or give `duration`).
    #[serde(default)]
    pub expires_at: Option<TimeSpec>,
    /// Length of the window from `starts_at` (or give `expires_at`).
    #[serde(default)]
    pub duration: Option<DurationSpec>,
    /// `active` (default), `revoked` or `consumed`.
    #[serde(default)]
    pub status: GrantStatus,
    /// Uses allowed, when limited.
    #[serde(default)]
    pub max_uses: Option<u32>,
    /// Uses already spent.
    #[serde(default)]
    pub uses: u32,
    /// Self-activated break-glass access.
    #[serde(default)]
    pub break_glass: bool,
    /// Who approved it.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// The requester's reason.
    #[serde(default)]
    pub reason: String,
}

impl TryFrom<RawGrant> for GrantFixture {
    type Error = String;
    fn try_from(g: RawGrant) -> Result<Self, String> {
        let ctx = format!("grant `{}`", g.id);
        if g.id.trim().is_empty() {
            return Err("grant: field `id` must not be empty".into());
        }
        match (g.expires_at, g.duration) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{ctx}: give either `expires_at` or `duration`, not both"
                ));
            }
            (None, None) => return Err(format!("{ctx}: missing `expires_at` (or `duration`)")),
            _ => {}
        }
        if g.max_uses == Some(0) {
            return Err(format!("{ctx}: field `max_uses` must be at least 1"));
        }
        if let Some(max) = g.max_uses {
            if g.uses > max {
                return Err(format!(
                    "{ctx}: field `uses` ({}) is more than `max_uses` ({max}); a grant never spends more uses than \
                     it has",
                    g.uses
                ));
            }
        }
        Ok(GrantFixture { spec: g })
    }
}

impl GrantFixture {
    /// The grant as the engine sees it, with times resolved against `now`.
    pub fn to_grant(&self, now: UnixTime) -> Result<Grant, String> {
        let g = &self.spec;
        let starts_at = g.starts_at.map_or(now, |t| t.resolve(now));
        let expires_at = match (g.expires_at, g.duration) {
            (Some(t), _) => t.resolve(now),
            (None, Some(d)) => starts_at.saturating_add(d.0),
            (None, None) => return Err(format!("grant `{}`: missing `expires_at`", g.id)),
        };
        if expires_at <= starts_at {
            return Err(format!(
                "grant `{}`: `expires_at` must be after `starts_at`",
                g.id
            ));
        }
        Ok(Grant {
            id: g.id.clone(),
            principal: g.principal.clone(),
            role: g.role.clone(),
            scope: g.scope.clone(),
            starts_at,
            expires_at,
            max_uses: g.max_uses,
            uses: g.uses,
            status: g.status,
            approvers: g.approvers.clone(),
            reason: g.reason.clone(),
            break_glass: g.break_glass,
            request_digest: None,
            request_id: None,
        })
    }
}

/// Request context fields a case (or the suite, as defaults) may set. Time, method, path and host come from the
/// case itself.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContextSpec {
    /// The client address.
    #[serde(default)]
    pub source_ip: Option<String>,
    /// Selected headers (lower-case names).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Token claims.
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Further attributes.
    #[serde(default)]
    pub attrs: serde_json::Map<String, serde_json::Value>,
}

impl ContextSpec {
    /// `self` with `over` laid on top (scalars replaced, maps merged key by key).
    pub fn merged(&self, over: &ContextSpec) -> ContextSpec {
        let mut out = self.clone();
        if over.source_ip.is_some() {
            out.source_ip.clone_from(&over.source_ip);
        }
        out.headers.extend(
            over.headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
        );
        out.claims
            .extend(over.claims.iter().map(|(k, v)| (k.clone(), v.clone())));
        out.attrs
            .extend(over.attrs.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }
}

/// The resource of a direct case: `Service::"payments"`, or `{ entity, parents, attrs }`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceSpec(pub Resource);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceMap {
    entity: EntityRef,
    #[serde(default)]
    parents: Vec<EntityRef>,
    #[serde(default)]
    attrs: serde_json::Map<String, serde_json::Value>,
}

impl<'de> Deserialize<'de> for ResourceSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ResourceSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an entity reference like Service::\"payments\", or a map with `entity`, `parents`, `attrs`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ResourceSpec, E> {
                let entity: EntityRef = s.parse().map_err(E::custom)?;
                Ok(ResourceSpec(Resource {
                    entity,
                    parents: Vec::new(),
                    attrs: Default::default(),
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ResourceSpec, A::Error> {
                let m = ResourceMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ResourceSpec(Resource {
                    entity: m.entity,
                    parents: m.parents,
                    attrs: m.attrs,
                }))
            }
        }
        d.deserialize_any(V)
    }
}

/// The HTTP request of an HTTP case, mapped through the bundle's routes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// HTTP method.
    pub method: String,
    /// The normalized path, without the query.
    pub path: String,
    /// The request host.
    #[serde(default)]
    pub host: Option<String>,
    /// The raw query string (no leading `?`).
    #[serde(default)]
    pub query: String,
    /// The body (part of the request digest).
    #[serde(default)]
    pub body: String,
}

/// What a case expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpectedDecision {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
    /// Held for approval.
    Hold,
    /// No route matches the HTTP request (HTTP cases only).
    Unmatched,
}

impl ExpectedDecision {
    /// `allow`, `deny`, `hold` or `unmatched`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectedDecision::Allow => "allow",
            ExpectedDecision::Deny => "deny",
            ExpectedDecision::Hold => "hold",
            ExpectedDecision::Unmatched => "unmatched",
        }
    }
}

/// The expectations of a case; fields left out are not checked (except `errors`, which defaults to none).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The decision.
    pub decision: ExpectedDecision,
    /// The determining policies (compared as a set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<String>>,
    /// The grants the decision rested on (compared as a set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants_used: Option<Vec<String>>,
    /// Whether the decision is flagged as break glass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<bool>,
    /// Which evaluation errors are expected: `false` (the default) none, `true` some, or a list of the policies that
    /// must err (and no others). By default any error fails the case, so a broken policy cannot pass a suite of
    /// denies by failing closed.
    #[serde(default)]
    pub errors: ExpectErrors,
}

/// The evaluation errors a case expects (`expect.errors`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ExpectErrors {
    /// `false`: none; `true`: some, from whichever policies.
    Any(bool),
    /// Exactly these policies err (compared as a set; Rego: the decision rule's path, e.g. `data.app.deny`).
    Policies(Vec<String>),
}

impl Default for ExpectErrors {
    fn default() -> Self {
        ExpectErrors::Any(false)
    }
}

impl ExpectErrors {
    /// Whether some error is expected.
    pub fn expected(&self) -> bool {
        match self {
            ExpectErrors::Any(b) => *b,
            ExpectErrors::Policies(p) => !p.is_empty(),
        }
    }
}

impl<'de> Deserialize<'de> for ExpectErrors {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExpectErrors;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`true`, `false`, or a list of the policy ids that must err")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<ExpectErrors, E> {
                Ok(ExpectErrors::Any(b))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ExpectErrors, A::Error> {
                let mut ids = Vec::new();
                while let Some(id) = seq.next_element::<String>()? {
                    if id.trim().is_empty() {
                        return Err(de::Error::custom("`errors`: a policy id must not be empty"));
                    }
                    ids.push(id);
                }
                Ok(ExpectErrors::Policies(ids))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string or a list of strings.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// An entity uid as Cedar's JSON formats write it: `Type::"id"`, `{"type": ..., "id": ...}` or
/// `{"__entity": {"type": ..., "id": ...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct CedarUid(pub EntityRef);

impl<'de> Deserialize<'de> for CedarUid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct TypeAndId {
            #[serde(rename = "type")]
            ty: String,
            id: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Escaped { __entity: TypeAndId },
            Plain(TypeAndId),
        }
        match Form::deserialize(d).map_err(|_| {
            de::Error::custom(
                "expected an entity uid: `Type::\"id\"`, {type: ..., id: ...} or {__entity: {type: ..., id: ...}}",
            )
        })? {
            Form::Text(s) => s.parse().map(CedarUid).map_err(de::Error::custom),
            Form::Escaped { __entity: t } | Form::Plain(t) => Ok(CedarUid(EntityRef::new(t.ty, t.id))),
        }
    }
}

/// A request in the form Cedar's CLI takes (`cedar authorize --request-json`): principal, action, resource as
/// entity uids, context as Cedar JSON (`__entity` / `__extn` escapes, or plain values the schema types).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CedarRequest {
    /// The principal, e.g. `User::"alice"`.
    pub principal: CedarUid,
    /// The action, e.g. `Action::"view"` (its id is the action; a namespaced `Ns::Action` too).
    pub action: CedarUid,
    /// The resource, e.g. `Photo::"vacation.jpg"` (its parents come from the entity data).
    pub resource: CedarUid,
    /// The context record.
    #[serde(default)]
    pub context: serde_json::Map<String, serde_json::Value>,
}

/// A case as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCase {
    name: String,
    #[serde(default)]
    principal: Option<EntityRef>,
    #[serde(default)]
    request: Option<CedarRequest>,
    #[serde(default, deserialize_with = "one_or_many")]
    entities: Vec<String>,
    #[serde(default)]
    groups: Option<Vec<String>>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    resource: Option<ResourceSpec>,
    #[serde(default)]
    http: Option<HttpSpec>,
    #[serde(default)]
    context: ContextSpec,
    #[serde(default)]
    now: Option<Instant>,
    #[serde(default)]
    at: Option<TimeSpec>,
    #[serde(default)]
    approved_request: bool,
    #[serde(default)]
    consume: bool,
    expect: Expect,
}

/// What a case asks about: a direct principal/action/resource tuple, or an HTTP request.
#[derive(Debug, Clone)]
pub enum Target {
    /// `action` + `resource`.
    Direct {
        /// The action id.
        action: String,
        /// The resource with its parents and attributes.
        resource: Resource,
    },
    /// An HTTP request mapped through the bundle's routes.
    Http(HttpSpec),
}

/// A validated case.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawCase")]
pub struct CaseSpec {
    /// The case name (unique within the suite; `--run` matches it).
    pub name: String,
    /// Who asks.
    pub principal: EntityRef,
    /// Groups, replacing the fixture's when given.
    pub groups: Option<Vec<String>>,
    /// What is asked.
    pub target: Target,
    /// Context fields of this case.
    pub context: ContextSpec,
    /// When (default: the suite's `now`).
    pub at: Option<TimeSpec>,
    /// Add a grant bound to exactly this HTTP request (an approved held request).
    pub approved_request: bool,
    /// After an allow, spend one use of every grant used.
    pub consume: bool,
    /// What must come out.
    pub expect: Expect,
    /// Cedar JSON entity files of this case alone (relative to the suite file), beside the suite's.
    pub entities: Vec<String>,
    /// Given in Cedar's request form (`request`): the principal may be known from entity data alone.
    pub cedar_request: bool,
}

impl TryFrom<RawCase> for CaseSpec {
    type Error = String;
    fn try_from(c: RawCase) -> Result<Self, String> {
        let ctx = format!("case `{}`", c.name);
        if c.name.trim().is_empty() {
            return Err("case: field `name` must not be empty".into());
        }
        let cedar_request = c.request.is_some();
        let mut context = c.context;
        let (principal, action, resource) = match (c.request, c.principal) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{ctx}: give either `request` (Cedar's request form) or `principal`, not both"
                ));
            }
            (Some(r), None) => {
                if c.action.is_some() || c.resource.is_some() || c.http.is_some() {
                    return Err(format!(
                        "{ctx}: `request` names the action and resource; leave out `action`, `resource` and `http`"
                    ));
                }
                let action = r.action.0;
                if action.ty != "Action" && !action.ty.ends_with("::Action") {
                    return Err(format!(
                        "{ctx}: field `request.action`: `{action}` is not an action (expected Action::\"id\")"
                    ));
                }
                // Cedar's context is the whole record: its `claims` and `source_ip` are those the engine builds.
                for (k, v) in r.context {
                    match (k.as_str(), v) {
                        ("claims", serde_json::Value::Object(claims)) => {
                            context.claims.extend(claims)
                        }
                        ("source_ip", serde_json::Value::String(ip)) => {
                            context.source_ip = Some(ip)
                        }
                        (_, v) => {
                            context.attrs.insert(k, v);
                        }
                    }
                }
                (
                    r.principal.0,
                    Some(action.id),
                    Some(ResourceSpec(Resource {
                        entity: r.resource.0,
                        parents: Vec::new(),
                        attrs: Default::default(),
                    })),
                )
            }
            (None, Some(p)) => (p, c.action, c.resource),
            (None, None) => {
                return Err(format!(
                    "{ctx}: missing `principal` (or give `request` in Cedar's request form)"
                ));
            }
        };
        let target = match (action, resource, c.http) {
            (Some(action), Some(resource), None) => {
                if action.is_empty() || action.contains('"') {
                    return Err(format!(
                        "{ctx}: field `action` must be a non-empty id without quotes"
                    ));
                }
                Target::Direct {
                    action,
                    resource: resource.0,
                }
            }
            (None, None, Some(http)) => {
                if !http.path.starts_with('/') {
                    return Err(format!("{ctx}: field `http.path` must start with `/`"));
                }
                if http.path.contains('?') {
                    return Err(format!(
                        "{ctx}: field `http.path` must not contain `?`; put the query in `http.query`"
                    ));
                }
                if http.method.is_empty() || !http.method.chars().all(|ch| ch.is_ascii_alphabetic())
                {
                    return Err(format!(
                        "{ctx}: field `http.method`: `{}` is not an HTTP method",
                        http.method
                    ));
                }
                Target::Http(http)
            }
            (_, _, Some(_)) => {
                return Err(format!(
                    "{ctx}: give either `http` or `action` + `resource`, not both"
                ));
            }
            (None, _, None) => return Err(format!("{ctx}: missing `action` (or give `http`)")),
            (Some(_), None, None) => return Err(format!("{ctx}: missing `resource`")),
        };
        let is_http = matches!(target, Target::Http(_));
        if c.expect.decision == ExpectedDecision::Unmatched && !is_http {
            return Err(format!(
                "{ctx}: `expect.decision: unmatched` needs an `http` case"
            ));
        }
        if c.approved_request && !is_http {
            return Err(format!(
                "{ctx}: `approved_request` needs an `http` case (the approval binds to its digest)"
            ));
        }
        let at = match (c.now, c.at) {
            (Some(_), Some(_)) => {
                return Err(format!("{ctx}: give either `now` or `at`, not both"));
            }
            (Some(Instant(t)), None) => Some(TimeSpec::Absolute(t)),
            (None, at) => at,
        };
        Ok(CaseSpec {
            name: c.name,
            principal,
            groups: c.groups,
            target,
            context,
            at,
            approved_request: c.approved_request,
            consume: c.consume,
            expect: c.expect,
            entities: c.entities,
            cedar_request,
        })
    }
}

/// A loaded suite: the file's content plus where it came from.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The suite file.
    pub path: PathBuf,
    /// The parsed content.
    pub file: SuiteFile,
    /// Bundle directories, resolved against the suite's directory.
    pub bundles: Vec<PathBuf>,
    /// The suite's Cedar JSON entity files, resolved against the suite's directory.
    pub entities: Vec<PathBuf>,
    /// The suite's store-form entity files, resolved against the suite's directory.
    pub store_entities: Vec<PathBuf>,
    /// The fixture grants, times resolved.
    pub grants: Vec<Grant>,
    /// 1-based line of each case (where its `name` is written), parallel to `file.cases`.
    pub case_lines: Vec<Option<usize>>,
    /// 1-based line of each fixture grant (where its `id` is written), parallel to `grants`.
    pub grant_lines: Vec<Option<usize>>,
}

impl Suite {
    /// Reads, parses and validates a suite file.
    pub fn load(path: &Path) -> Result<Suite, Diagnostics> {
        let source = read_file(path)?;
        Self::parse(path, &source)
    }

    /// Parses and validates suite text (`path` is used for messages and to resolve bundle paths).
    pub fn parse(path: &Path, source: &str) -> Result<Suite, Diagnostics> {
        let value: serde_yaml::Value = parse_yaml(path, source)?;
        let (file, case_lines) = if uses_merge_or_rows(&value) {
            parse_expanded(path, source, value)?
        } else {
            // The common form is read straight from the text, so every error keeps its exact position.
            let file: SuiteFile = parse_yaml(path, source)?;
            let lines = locate_names(source, "name", file.cases.iter().map(|c| c.name.as_str()));
            (file, lines)
        };
        let mut errors = Vec::new();

        let mut seen = BTreeSet::new();
        for (case, line) in file.cases.iter().zip(&case_lines) {
            // A typo in a case's principal would run it as a stranger with no groups, and every expected deny
            // would pass; the engine's own anonymous caller needs no fixture.
            let anonymous = case.principal.ty == "Anonymous" && case.principal.id == "anonymous";
            if case.groups.is_none()
                && !anonymous
                && !case.cedar_request
                && !file.principals.contains_key(&case.principal)
            {
                let declared: Vec<String> = file.principals.keys().map(|p| p.to_string()).collect();
                errors.push(at_line(
                    path,
                    *line,
                    format!(
                        "case `{}`: principal `{}` is not under `principals` (declare it, with `{{}}` for one with \
                         no groups, or give the case `groups`); declared: {}",
                        case.name,
                        case.principal,
                        if declared.is_empty() {
                            "none".to_string()
                        } else {
                            declared.join(", ")
                        }
                    ),
                ));
            }
            if !seen.insert(case.name.as_str()) {
                errors.push(at_line(
                    path,
                    *line,
                    format!(
                        "case `{}`: duplicate case name (names must be unique in a suite)",
                        case.name
                    ),
                ));
            }
        }
        if file.cases.is_empty() {
            errors.push(Diagnostic::file(
                path,
                "cases: a suite needs at least one case",
            ));
        }

        let grant_lines =
            locate_names(source, "id", file.grants.iter().map(|g| g.spec.id.as_str()));
        let mut grants = Vec::new();
        let mut ids = BTreeSet::new();
        for (g, line) in file.grants.iter().zip(&grant_lines) {
            if !ids.insert(g.spec.id.as_str()) {
                errors.push(at_line(
                    path,
                    *line,
                    format!("grant `{}`: duplicate grant id", g.spec.id),
                ));
            }
            match g.to_grant(file.now.0) {
                Ok(grant) => grants.push(grant),
                Err(msg) => errors.push(at_line(path, *line, msg)),
            }
        }

        let base = path.parent().unwrap_or(Path::new("."));
        let bundles = file
            .bundles
            .iter()
            .map(|b| normalize(&base.join(b)))
            .collect();
        let entities = file
            .entities
            .iter()
            .map(|e| normalize(&base.join(e)))
            .collect();
        let store_entities = file
            .store_entities
            .iter()
            .map(|e| normalize(&base.join(e)))
            .collect();
        Diagnostics(errors).into_result()?;
        Ok(Suite {
            path: path.to_path_buf(),
            file,
            bundles,
            entities,
            store_entities,
            grants,
            case_lines,
            grant_lines,
        })
    }
}

/// Whether a suite uses YAML merge keys (`<<: *anchor`) or table-driven cases (`rows`), which are expanded before
/// the suite is read.
fn uses_merge_or_rows(v: &serde_yaml::Value) -> bool {
    fn has_merge(v: &serde_yaml::Value) -> bool {
        match v {
            serde_yaml::Value::Mapping(m) => m
                .iter()
                .any(|(k, v)| k.as_str() == Some("<<") || has_merge(v)),
            serde_yaml::Value::Sequence(s) => s.iter().any(has_merge),
            serde_yaml::Value::Tagged(t) => has_merge(&t.value),
            _ => false,
        }
    }
    has_merge(v)
        || v.get("cases")
            .and_then(serde_yaml::Value::as_sequence)
            .is_some_and(|cases| cases.iter().any(|c| c.get("rows").is_some()))
}

/// Reads a suite with merge keys applied and each table-driven case (one with `rows`) expanded into one case per
/// row: every `{key}` in the case's strings replaced by that row's value (a string that is only `{key}` takes the
/// value as it is, a number or a boolean too). Errors name the line of the case (its template's `name`).
fn parse_expanded(
    path: &Path,
    source: &str,
    mut value: serde_yaml::Value,
) -> Result<(SuiteFile, Vec<Option<usize>>), Diagnostics> {
    value
        .apply_merge()
        .map_err(|e| Diagnostic::file(path, format!("merge keys (`<<`): {e}")))?;
    let raw_cases = match value.get_mut("cases") {
        Some(c) => std::mem::replace(c, serde_yaml::Value::Sequence(Vec::new())),
        None => serde_yaml::Value::Sequence(Vec::new()),
    };
    let mut file: SuiteFile =
        serde_yaml::from_value(value).map_err(|e| Diagnostic::file(path, e.to_string()))?;
    let serde_yaml::Value::Sequence(raw_cases) = raw_cases else {
        return Err(Diagnostic::file(path, "cases: expected a list of cases").into());
    };
    let template_names: Vec<String> = raw_cases
        .iter()
        .map(|c| {
            c.get("name")
                .and_then(serde_yaml::Value::as_str)
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let template_lines = locate_names(source, "name", template_names.iter().map(String::as_str));
    let mut errors = Vec::new();
    let mut lines = Vec::new();
    for ((i, mut case), line) in raw_cases.into_iter().enumerate().zip(template_lines) {
        let shown = template_names
            .get(i)
            .filter(|n| !n.is_empty())
            .map_or_else(|| format!("case #{}", i + 1), |n| format!("case `{n}`"));
        let rows = case.as_mapping_mut().and_then(|m| m.remove("rows"));
        let instances: Vec<serde_yaml::Value> = match rows {
            None => vec![case],
            Some(serde_yaml::Value::Sequence(rows)) if !rows.is_empty() => {
                let mut out = Vec::with_capacity(rows.len());
                for (r, row) in rows.iter().enumerate() {
                    match row.as_mapping() {
                        Some(m) => out.push(substitute(&case, m)),
                        None => errors.push(at_line(
                            path,
                            line,
                            format!(
                                "{shown}: rows[{r}]: expected a map of values (`{{ key: value }}`)"
                            ),
                        )),
                    }
                }
                out
            }
            Some(_) => {
                errors.push(at_line(
                    path,
                    line,
                    format!("{shown}: field `rows`: expected a non-empty list of maps"),
                ));
                Vec::new()
            }
        };
        for (r, instance) in instances.into_iter().enumerate() {
            match serde_yaml::from_value::<CaseSpec>(instance) {
                Ok(c) => {
                    file.cases.push(c);
                    lines.push(line);
                }
                Err(e) => errors.push(at_line(path, line, format!("{shown} (row {}): {e}", r + 1))),
            }
        }
    }
    Diagnostics(errors).into_result()?;
    Ok((file, lines))
}

/// `template` with each `{key}` of `row` substituted in its strings.
fn substitute(template: &serde_yaml::Value, row: &serde_yaml::Mapping) -> serde_yaml::Value {
    use serde_yaml::Value as Y;
    match template {
        Y::String(s) => {
            let inner = s.strip_prefix('{').and_then(|x| x.strip_suffix('}'));
            if let Some(v) = inner.and_then(|k| row.get(k)) {
                return v.clone();
            }
            let mut out = s.clone();
            for (k, v) in row {
                let (Some(k), Some(text)) = (k.as_str(), scalar_text(v)) else {
                    continue;
                };
                out = out.replace(&format!("{{{k}}}"), &text);
            }
            Y::String(out)
        }
        Y::Sequence(items) => Y::Sequence(items.iter().map(|i| substitute(i, row)).collect()),
        Y::Mapping(m) => Y::Mapping(
            m.iter()
                .map(|(k, v)| (k.clone(), substitute(v, row)))
                .collect(),
        ),
        Y::Tagged(t) => Y::Tagged(Box::new(serde_yaml::value::TaggedValue {
            tag: t.tag.clone(),
            value: substitute(&t.value, row),
        })),
        other => other.clone(),
    }
}

fn scalar_text(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Resolves `.` and `..` lexically (`policy-tests/../policies/x` -> `policies/x`) so reports show short paths.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

fn at_line(path: &Path, line: Option<usize>, msg: String) -> Diagnostic {
    match line {
        Some(l) => Diagnostic::at(path, l, 1, msg),
        None => Diagnostic::file(path, msg),
    }
}

/// Finds, for each name in order, the first line at or after the previous hit where `key` is written with that
/// value (`name: x`, `- name: "x"`, `{ id: x, ... }`, `"name": "x"`), else the first that merely contains it. Serde
/// gives us no spans for values that parsed fine, so this is how a failing case or a cross-case error points at its
/// source; matching the key and the whole value keeps a case named `a` from pointing at the first line with an `a`.
fn locate_names<'a>(
    source: &str,
    key: &str,
    names: impl Iterator<Item = &'a str>,
) -> Vec<Option<usize>> {
    let lines: Vec<&str> = source.lines().collect();
    let mut from = 0usize;
    names
        .map(|name| {
            let after = || lines.iter().enumerate().skip(from);
            // `name: x`, or a block scalar (`name: >-`) whose first line of text starts the name.
            let writes = |i: usize, l: &str| {
                values_of(l, key).any(|v| {
                    v == name
                        || (v.starts_with(['>', '|'])
                            && lines[i + 1..]
                                .iter()
                                .map(|n| n.trim())
                                .find(|n| !n.is_empty())
                                .is_some_and(|n| name.starts_with(n)))
                })
            };
            let hit = after()
                .find(|(i, l)| writes(*i, l))
                .or_else(|| after().find(|(_, l)| l.contains(name)))
                .map(|(i, _)| i);
            let line = hit.map(|i| i + 1);
            if let Some(l) = line {
                from = l;
            }
            line
        })
        .collect()
}

/// The values written for `key` on one line of YAML or JSON, quotes removed (no escapes are interpreted).
fn values_of<'l>(line: &'l str, key: &'l str) -> impl Iterator<Item = &'l str> + 'l {
    line.match_indices(key).filter_map(move |(at, _)| {
        let before = line[..at].chars().next_back();
        let quoted = before == Some('"') || before == Some('\'');
        let open = if quoted { at - 1 } else { at };
        let lead = line[..open].chars().next_back();
        if !matches!(lead, None | Some(' ' | '\t' | '{' | ',' | '-')) {
            return None;
        }
        let mut rest = &line[at + key.len()..];
        if quoted {
            rest = rest.strip_prefix(before?)?;
        }
        let rest = rest.trim_start().strip_prefix(':')?.trim_start();
        match rest.chars().next() {
            Some(q @ ('"' | '\'')) => rest[1..].split(q).next(),
            _ => rest
                .split([',', '}', '#'])
                .next()
                .map(str::trim_end)
                .filter(|v| !v.is_empty()),
        }
    })
}

/// Every suite file (`*.yaml`, `*.yml`, `*.json`) under `paths` (files are taken as given; directories are walked
/// recursively, skipping hidden entries), sorted and deduplicated.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Diagnostics> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.is_dir() {
            if let Err(e) = walk(p, &mut out) {
                errors.push(Diagnostic::file(p, format!("cannot read directory: {e}")));
            }
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            errors.push(Diagnostic::file(p, "no such file or directory"));
        }
    }
    Diagnostics(errors).into_result()?;
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn time_offsets_at_the_edges_are_errors_not_panics() {
        for spec in ["-9223372036854775808s", "+10000000000000000000s", "-36601d"] {
            let e = TimeSpec::parse(spec).unwrap_err();
            assert!(e.contains("too long"), "{spec}: {e}");
        }
        assert!(matches!(
            TimeSpec::parse("-30m"),
            Ok(TimeSpec::Offset(-1800))
        ));
    }

    const GOOD: &str = r#"
name: sample
bundles: [../b]
now: 2026-11-23T10:00:00Z
principals:
  User::"alice": { groups: [engineering] }
grants:
  - { id: g1, principal: User::"alice", role: payments-writer, scope: Service::"payments", starts_at: -30m, duration: 1h }
cases:
  - name: direct
    principal: User::"alice"
    action: createPayment
    resource: Service::"payments"
    at: +1s
    expect: { decision: allow, grants_used: [g1] }
  - name: http
    principal: User::"alice"
    http: { method: DELETE, path: /databases/x }
    resource_free: true
    expect: { decision: hold }
"#;

    #[test]
    fn parses_and_reports_unknown_fields_with_line() {
        let e = Suite::parse(Path::new("s.yaml"), GOOD).unwrap_err();
        let d = &e.0[0];
        assert_eq!(d.line, Some(19), "{e}");
        assert!(d.message.contains("resource_free"), "{e}");
        let ok = GOOD.replace("    resource_free: true\n", "");
        let s = Suite::parse(Path::new("dir/s.yaml"), &ok).unwrap();
        assert_eq!(s.bundles, vec![PathBuf::from("b")]);
        let now = parse_rfc3339("2026-11-23T10:00:00Z").unwrap();
        assert_eq!(s.grants[0].starts_at, now - 1800);
        assert_eq!(s.grants[0].expires_at, now + 1800);
        assert_eq!(s.file.cases[0].at.map(|t| t.resolve(now)), Some(now + 1));
        assert_eq!(s.case_lines, vec![Some(10), Some(16)]);
    }

    #[test]
    fn bad_values_name_their_line() {
        let bad_ref = GOOD.replace(
            "    principal: User::\"alice\"\n    action",
            "    principal: alice\n    action",
        );
        let e = Suite::parse(Path::new("s.yaml"), &bad_ref).unwrap_err();
        assert_eq!(e.0[0].line, Some(11), "{e}");
        assert!(e.0[0].message.contains("invalid entity reference"), "{e}");

        let bad_time = GOOD.replace("at: +1s", "at: tomorrow");
        let e = Suite::parse(Path::new("s.yaml"), &bad_time).unwrap_err();
        assert_eq!(e.0[0].line, Some(14), "{e}");
        assert!(e.0[0].message.contains("RFC 3339"), "{e}");

        let both = GOOD.replace("duration: 1h", "duration: 1h, expires_at: +1h");
        let e = Suite::parse(Path::new("s.yaml"), &both).unwrap_err();
        assert!(
            e.0[0].message.contains("either `expires_at` or `duration`"),
            "{e}"
        );
        assert_eq!(e.0[0].line, Some(8), "{e}");
    }

    const TABLE: &str = r#"
name: table
bundles: [../b]
now: 2026-11-23T10:00:00Z
principals:
  User::"alice": { groups: [eng], group_type: Team, attrs: { job: manager } }
cases:
  - &base
    name: "{who} reads: {decision}"
    principal: 'User::"{who}"'
    groups: [eng]
    action: read
    resource: Doc::"d1"
    expect: { decision: "{decision}" }
    rows:
      - { who: alice, decision: allow }
      - { who: bob, decision: deny }
  - <<: *base
    name: "{who} edits: {decision}"
    action: edit
  - name: cedar form
    entities: people.json
    request:
      principal: { __entity: { type: User, id: carol } }
      action: { type: Action, id: read }
      resource: 'Doc::"d2"'
      context: { claims: { office: 10.0.0.1 }, source_ip: 10.9.9.9, who: { type: User, id: dan } }
    expect: { decision: allow }
"#;

    #[test]
    fn rows_and_merge_keys_expand_and_cedar_requests_map_to_cases() {
        let s = Suite::parse(Path::new("dir/s.yaml"), TABLE).unwrap_or_else(|d| panic!("{d}"));
        let names: Vec<&str> = s.file.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "alice reads: allow",
                "bob reads: deny",
                "alice edits: allow",
                "bob edits: deny",
                "cedar form"
            ]
        );
        assert_eq!(s.file.cases[1].principal, EntityRef::new("User", "bob"));
        assert_eq!(s.file.cases[1].expect.decision, ExpectedDecision::Deny);
        assert!(
            matches!(&s.file.cases[3].target, Target::Direct { action, .. } if action == "edit")
        );
        // Every expanded case points at its template's line.
        assert_eq!(s.case_lines[..4], [Some(9), Some(9), Some(19), Some(19)]);
        let alice = &s.file.principals[&EntityRef::new("User", "alice")];
        assert_eq!(alice.group_type.as_deref(), Some("Team"));
        assert_eq!(alice.attrs["job"], "manager");
        let c = &s.file.cases[4];
        assert!(c.cedar_request);
        assert_eq!(c.principal, EntityRef::new("User", "carol"));
        assert_eq!(c.entities, ["people.json"]);
        assert!(
            matches!(&c.target, Target::Direct { action, resource } if action == "read" && resource.entity.id == "d2")
        );
        assert_eq!(c.context.claims["office"], "10.0.0.1");
        assert_eq!(c.context.source_ip.as_deref(), Some("10.9.9.9"));
        assert_eq!(c.context.attrs["who"]["id"], "dan");
    }

    #[test]
    fn bad_rows_and_bad_cedar_requests_name_the_case_and_line() {
        let bad_rows = TABLE.replace("      - { who: bob, decision: deny }", "      - just text");
        let e = Suite::parse(Path::new("s.yaml"), &bad_rows).unwrap_err();
        assert!(
            e.0.iter()
                .any(|d| d.line == Some(9) && d.message.contains("rows[1]")),
            "{e}"
        );
        let bad_value = TABLE.replace("decision: deny }", "decision: maybe }");
        let e = Suite::parse(Path::new("s.yaml"), &bad_value).unwrap_err();
        assert!(
            e.0.iter().any(|d| d.line == Some(9)
                && d.message.contains("(row 2)")
                && d.message.contains("maybe")),
            "{e}"
        );
        let not_action = TABLE.replace("{ type: Action, id: read }", "{ type: User, id: read }");
        let e = Suite::parse(Path::new("s.yaml"), &not_action).unwrap_err();
        assert!(
            e.0.iter().any(|d| d.message.contains("request.action")),
            "{e}"
        );
        let both = TABLE.replace(
            "    entities: people.json\n",
            "    principal: User::\"x\"\n",
        );
        let e = Suite::parse(Path::new("s.yaml"), &both).unwrap_err();
        assert!(
            e.0.iter().any(|d| d.message.contains("either `request`")),
            "{e}"
        );
    }
}
