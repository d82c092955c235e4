//! The bundle manifest (`bundle.toml`): raw structs as written, with unknown fields rejected.
//! Validation into usable types happens in [`crate::bundle`] and [`crate::routes`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::decision::EngineKind;

/// The file name of a bundle's manifest.
pub const MANIFEST_FILE: &str = "bundle.toml";

/// `bundle.toml` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// A human name for the bundle.
    pub name: String,
    /// `cedar` or `rego`.
    pub engine: EngineKind,
    /// Cedar schema file (`.cedarschema` or `.cedarschema.json`), relative to the bundle. Required for Cedar.
    #[serde(default)]
    pub schema: Option<String>,
    /// Policy files or directories (`*.cedar` / `*.rego`), relative to the bundle.
    pub policies: Vec<String>,
    /// Cedar bundles: entity data files or directories (`*.json`, Cedar's JSON entity format), relative to the
    /// bundle; parsed against the schema at load and seen by every decision.
    #[serde(default)]
    pub entities: Vec<String>,
    /// Cedar bundles: files linking the policies' templates (`*.json`, see `schemas/links.schema.json`), relative
    /// to the bundle.
    #[serde(default)]
    pub links: Vec<String>,
    /// Policy suite files or directories run by `jitgate check` and the reload gate.
    #[serde(default)]
    pub tests: Vec<String>,
    /// Cedar settings.
    #[serde(default)]
    pub cedar: Option<CedarSettings>,
    /// Rego settings.
    #[serde(default)]
    pub rego: Option<RegoSettings>,
    /// A separate TOML file holding more `[[routes]]`, relative to the bundle.
    #[serde(default)]
    pub routes_file: Option<String>,
    /// The route table (spans kept so that route errors name their line).
    #[serde(default)]
    pub routes: Vec<toml::Spanned<RouteSpec>>,
    /// Per-role settings that are numbers rather than logic.
    #[serde(default)]
    pub roles: BTreeMap<String, RoleSettings>,
}

/// `[rego]` in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegoSettings {
    /// The package whose `allow`, `deny` and `hold` rules decide, e.g. `jitgate.authz`.
    pub package: String,
}

/// `[cedar]`: Cedar settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CedarSettings {
    /// How policies are checked against the schema at load.
    #[serde(default)]
    pub validation: CedarValidation,
}

/// How a Cedar bundle's policies are checked against its schema when it loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CedarValidation {
    /// Strict validation: any policy the validator rejects refuses the bundle (the default).
    #[default]
    Strict,
    /// What strict validation finds is reported as warnings (`jitgate check` prints them) and the bundle loads, as
    /// `cedar authorize` decides without validating: a policy that errs when evaluated makes the decision a deny
    /// (fail closed), with the error named. Entity data that does not conform to the schema is read as `cedar
    /// authorize` without `--schema` reads it (every file without the schema, a warning per entity). For applications
    /// written for Cedar that its own validator rejects.
    Warn,
}

/// A file holding only routes (`routes_file`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesFile {
    /// The routes.
    #[serde(default)]
    pub routes: Vec<toml::Spanned<RouteSpec>>,
}

/// One `[[routes]]` entry: method + path template -> action and resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// HTTP method (`GET`, `DELETE`, ... or `*` for any).
    pub method: String,
    /// Path template: literal segments, `{name}` for one segment, `{name*}` (last) for the rest of the path.
    pub path: String,
    /// Only for this host (exact, case-insensitive), if set.
    #[serde(default)]
    pub host: Option<String>,
    /// The upstream service (a name in the proxy config); also the default resource parent `Service::"<service>"`.
    pub service: String,
    /// The action id, e.g. `deleteDatabase`.
    pub action: String,
    /// The resource template, e.g. `Database::"{db}"`. Defaults to the service entity.
    #[serde(default)]
    pub resource: Option<String>,
    /// Resource ancestors, nearest first, as templates. Defaults to `[Service::"<service>"]`.
    #[serde(default)]
    pub parents: Option<Vec<String>>,
    /// No credential needed (still decided and logged; the principal is `Anonymous::"anonymous"`).
    #[serde(default)]
    pub public: bool,
}

/// `[roles.<name>]`: numbers for a role, enforced by the access-request lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSettings {
    /// Longest grant that may be requested, e.g. `1h`.
    #[serde(default = "default_max_duration")]
    pub max_duration: String,
    /// Whether a request must carry a reason.
    #[serde(default)]
    pub reason_required: bool,
    /// Distinct approvers needed (0 means the policy must auto-approve).
    #[serde(default = "default_approvals")]
    pub approvals_required: u32,
    /// How long a request may wait for approval, e.g. `24h`.
    #[serde(default = "default_pending_ttl")]
    pub pending_ttl: String,
    /// How far ahead of the request time `starts_at` may lie, e.g. `2h`; absent: `pending_ttl`, so that a grant
    /// cannot be banked for a time long after the request was made and reviewed.
    #[serde(default)]
    pub max_start_delay: Option<String>,
    /// Break-glass: may be self-activated with a reason; loud in every record and notification.
    #[serde(default)]
    pub break_glass: bool,
    /// Uses per grant, if limited.
    #[serde(default)]
    pub max_uses: Option<u32>,
    /// Free text for requesters.
    #[serde(default)]
    pub description: Option<String>,
}

fn default_max_duration() -> String {
    "1h".into()
}
fn default_approvals() -> u32 {
    1
}
fn default_pending_ttl() -> String {
    "24h".into()
}
