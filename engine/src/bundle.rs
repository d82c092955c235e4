//! Bundles: a directory with `bundle.toml`, a schema, policy files, routes and optional tests, loaded and fully
//! validated into an immutable snapshot whose revision is a hash of its content. Nothing is half-loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::backend::PolicyBackend;
use crate::cedar::CedarBackend;
use crate::clock::parse_duration;
use crate::decision::{Decision, Effect, EngineKind};
use crate::diag::{Diagnostic, Diagnostics, parse_toml, read_file};
use crate::explain::{Explanation, grant_traces};
use crate::grant::Grant;
use crate::input::DecisionInput;
use crate::manifest::{MANIFEST_FILE, Manifest, RoleSettings, RoutesFile};
use crate::rego::RegoBackend;
use crate::request::AuthzRequest;
use crate::routes::{RouteSource, RouteTable};

/// Validated per-role settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// Longest grant, in seconds.
    pub max_duration: i64,
    /// Whether a reason is required.
    pub reason_required: bool,
    /// Distinct approvals needed.
    pub approvals_required: u32,
    /// Pending lifetime of a request, in seconds.
    pub pending_ttl: i64,
    /// How far ahead of the request time a requested `starts_at` may lie, in seconds (`pending_ttl` by default).
    pub max_start_delay: i64,
    /// Self-activated, loud access.
    pub break_glass: bool,
    /// Uses per grant, if limited.
    pub max_uses: Option<u32>,
    /// Free text.
    pub description: Option<String>,
}

/// A loaded, validated, immutable bundle.
#[derive(Debug)]
pub struct Bundle {
    /// The directory it was loaded from.
    pub dir: PathBuf,
    /// The manifest as written.
    pub manifest: Manifest,
    /// Content hash (hex SHA-256 of every file the bundle uses, with their relative paths).
    pub revision: String,
    /// The route table.
    pub routes: RouteTable,
    /// Per-role settings.
    pub roles: BTreeMap<String, Role>,
    /// Policy files, in load order.
    pub policy_files: Vec<PathBuf>,
    /// Suite files listed under `tests`.
    pub test_files: Vec<PathBuf>,
    /// Data the policies see: Cedar entity files (`entities`), or a Rego bundle's OPA data files (every
    /// `data.json` / `data.yaml` / `data.yml` under the bundle, placed under `data` by its directory).
    pub data_files: Vec<PathBuf>,
    backend: Box<dyn PolicyBackend>,
}

impl Bundle {
    /// Loads and validates the bundle in `dir`. Every problem found is reported, each with file, line and reason.
    pub fn load(dir: &Path) -> Result<Bundle, Diagnostics> {
        Self::load_with_entities(dir, &[])
    }

    /// [`Bundle::load`] with further Cedar JSON entity files beside the bundle's own (a policy suite's fixtures):
    /// part of the revision, validated against the schema like the bundle's own. Refused for a Rego bundle.
    pub fn load_with_entities(
        dir: &Path,
        extra_entities: &[PathBuf],
    ) -> Result<Bundle, Diagnostics> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let source = read_file(&manifest_path)?;
        let manifest: Manifest = parse_toml(&manifest_path, &source)?;
        let mut errors = Vec::new();
        let mut hashed: Vec<PathBuf> = vec![manifest_path.clone()];

        // Routes: inline, plus an optional routes file.
        let mut routes_result = RouteTable::build(&manifest_path, &source, &manifest.routes);
        if let Some(rf) = &manifest.routes_file {
            let path = dir.join(rf);
            hashed.push(path.clone());
            match read_file(&path)
                .and_then(|src| parse_toml::<RoutesFile>(&path, &src).map(|f| (src, f)))
            {
                Ok((src, file)) => {
                    // Both files' routes in one table, so that overlaps across files are caught; each error
                    // cites the file and line of its own route.
                    routes_result = RouteTable::build_from(&[
                        RouteSource {
                            file: &manifest_path,
                            source: &source,
                            specs: &manifest.routes,
                        },
                        RouteSource {
                            file: &path,
                            source: &src,
                            specs: &file.routes,
                        },
                    ]);
                }
                Err(d) => errors.push(d),
            }
        }
        let routes = match routes_result {
            Ok(r) => Some(r),
            Err(d) => {
                errors.extend(d.0);
                None
            }
        };

        let mut roles = BTreeMap::new();
        for (name, spec) in &manifest.roles {
            match validate_role(spec) {
                Ok(r) => {
                    roles.insert(name.clone(), r);
                }
                Err(msg) => {
                    // Each message starts with the field it is about; a field left out points at the role.
                    let field = msg.split(':').next().unwrap_or_default();
                    errors.push(Diagnostic::at_toml_key(
                        &manifest_path,
                        &source,
                        &format!("roles.{name}.{field}"),
                        format!("roles.{name}: {msg}"),
                    ))
                }
            }
        }

        let policy_ext = match manifest.engine {
            EngineKind::Cedar => "cedar",
            EngineKind::Rego => "rego",
        };
        let policy_files = match expand(
            dir,
            &manifest.policies,
            &[policy_ext],
            (&manifest_path, &source),
            "policies",
        ) {
            Ok(f) if f.is_empty() => {
                errors.push(Diagnostic::at_toml_key(
                    &manifest_path,
                    &source,
                    "policies",
                    format!("policies: no `.{policy_ext}` files found"),
                ));
                Vec::new()
            }
            Ok(f) => f,
            Err(d) => {
                errors.push(d);
                Vec::new()
            }
        };
        hashed.extend(policy_files.iter().cloned());
        let test_files = match expand(
            dir,
            &manifest.tests,
            &["yaml", "yml", "json"],
            (&manifest_path, &source),
            "tests",
        ) {
            Ok(f) => f,
            Err(d) => {
                errors.push(d);
                Vec::new()
            }
        };
        hashed.extend(test_files.iter().cloned());
        let mut entity_files = match expand(
            dir,
            &manifest.entities,
            &["json"],
            (&manifest_path, &source),
            "entities",
        ) {
            Ok(f) => f,
            Err(d) => {
                errors.push(d);
                Vec::new()
            }
        };
        if !extra_entities.is_empty() && manifest.engine != EngineKind::Cedar {
            errors.push(Diagnostic::file(
                &manifest_path,
                format!(
                    "Cedar JSON entity files ({}) are for Cedar bundles; this one is {}",
                    extra_entities
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    manifest.engine.as_str()
                ),
            ));
        } else {
            entity_files.extend(extra_entities.iter().cloned());
        }
        if !entity_files.is_empty() && manifest.engine != EngineKind::Cedar {
            errors.push(Diagnostic::at_toml_key(
                &manifest_path,
                &source,
                "entities",
                "entities: Cedar JSON entity data is for Cedar bundles",
            ));
        }
        hashed.extend(entity_files.iter().cloned());
        let link_files = match expand(
            dir,
            &manifest.links,
            &["json"],
            (&manifest_path, &source),
            "links",
        ) {
            Ok(f) => f,
            Err(d) => {
                errors.push(d);
                Vec::new()
            }
        };
        if !link_files.is_empty() && manifest.engine != EngineKind::Cedar {
            errors.push(Diagnostic::at_toml_key(
                &manifest_path,
                &source,
                "links",
                "links: template links are for Cedar bundles",
            ));
        }
        hashed.extend(link_files.iter().cloned());

        // OPA bundle layout: data files anywhere in the bundle, placed by their directory.
        let rego_data_files = if manifest.engine == EngineKind::Rego {
            let mut found = Vec::new();
            if let Err(e) = walk_named(dir, &["data.json", "data.yaml", "data.yml"], &mut found) {
                errors.push(Diagnostic::file(dir, format!("cannot read directory: {e}")));
            }
            found.sort();
            found
        } else {
            Vec::new()
        };
        hashed.extend(rego_data_files.iter().cloned());
        // An OPA `.manifest` (read by the Rego backend) is part of the bundle too.
        let opa_manifest = dir.join(crate::rego::opa_manifest::OPA_MANIFEST_FILE);
        if manifest.engine == EngineKind::Rego && opa_manifest.is_file() {
            hashed.push(opa_manifest);
        }
        let backend: Option<Box<dyn PolicyBackend>> = match manifest.engine {
            EngineKind::Cedar => match &manifest.schema {
                None => {
                    errors.push(Diagnostic::at_toml_key(
                        &manifest_path,
                        &source,
                        "engine",
                        "schema: a Cedar bundle needs a schema file",
                    ));
                    None
                }
                Some(schema) => {
                    let schema_path = dir.join(schema);
                    hashed.push(schema_path.clone());
                    if policy_files.is_empty() {
                        None
                    } else {
                        let validation = manifest
                            .cedar
                            .as_ref()
                            .map(|c| c.validation)
                            .unwrap_or_default();
                        match CedarBackend::load_with(
                            dir,
                            &schema_path,
                            &policy_files,
                            &entity_files,
                            &link_files,
                            validation,
                        ) {
                            Ok(b) => Some(Box::new(b)),
                            Err(d) => {
                                errors.extend(d.0);
                                None
                            }
                        }
                    }
                }
            },
            EngineKind::Rego => {
                let package = manifest.rego.as_ref().map(|r| r.package.clone());
                match package {
                    None => {
                        errors.push(Diagnostic::at_toml_key(
                            &manifest_path,
                            &source,
                            "engine",
                            "rego.package: a Rego bundle needs `[rego] package = \"...\"`",
                        ));
                        None
                    }
                    Some(_) if policy_files.is_empty() => None,
                    Some(pkg) => match RegoBackend::load_with_data(
                        dir,
                        &policy_files,
                        &pkg,
                        &rego_data_files,
                    ) {
                        Ok(b) => Some(Box::new(b)),
                        Err(d) => {
                            errors.extend(d.0);
                            None
                        }
                    },
                }
            }
        };

        // Every route's action and resource must fit the schema, or its requests would all be denied.
        if let (Some(routes), Some(backend)) = (&routes, &backend) {
            for route in routes.routes() {
                let parents: Vec<&str> = route.parent_types().collect();
                if let Err(msg) =
                    backend.check_route(&route.action, route.resource_type(), &parents)
                {
                    errors.push(Diagnostic::at(
                        &route.origin.0,
                        route.origin.1,
                        1,
                        format!(
                            "route `{} {}`: {msg}",
                            route.method.as_deref().unwrap_or("*"),
                            route.path
                        ),
                    ));
                }
            }
        }
        Diagnostics(errors).into_result()?;
        let (Some(routes), Some(backend)) = (routes, backend) else {
            return Err(Diagnostic::file(&manifest_path, "bundle failed to load").into());
        };
        let revision = revision_of(dir, &hashed)?;
        let data_files = match manifest.engine {
            EngineKind::Cedar => entity_files,
            EngineKind::Rego => rego_data_files,
        };
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest,
            revision,
            routes,
            roles,
            policy_files,
            test_files,
            data_files,
            backend,
        })
    }

    /// What loaded but deserves a word (see [`PolicyBackend::warnings`]).
    pub fn warnings(&self) -> Vec<Diagnostic> {
        self.backend.warnings()
    }

    /// The engine (language) of this bundle.
    pub fn engine(&self) -> EngineKind {
        self.manifest.engine
    }

    /// The policy backend.
    pub fn backend(&self) -> &dyn PolicyBackend {
        self.backend.as_ref()
    }

    /// Short revision for display (first 12 hex digits).
    pub fn short_revision(&self) -> &str {
        self.revision.get(..12).unwrap_or(&self.revision)
    }

    /// Decides `request` given the caller's grants (any status; materialized by [`DecisionInput::new`]).
    pub fn decide(&self, request: &AuthzRequest, grants: &[Arc<Grant>]) -> Decision {
        self.decide_input(&DecisionInput::new(request, grants))
    }

    /// Puts the store's entity data over this bundle's for the decisions made with it from now on (see
    /// [`crate::overlay`] for the precedence); checked whole first: on `Err` nothing changes and every problem is
    /// named by uid.
    pub fn set_store_entities(
        &self,
        entities: &[crate::store::StoredEntity],
    ) -> Result<(), Vec<crate::overlay::EntityProblem>> {
        self.backend.set_store_entities(entities)
    }

    /// Checks the store's entity data (all of it, as it would be) against this bundle, changing nothing.
    pub fn check_store_entities(
        &self,
        entities: &[crate::store::StoredEntity],
    ) -> Result<(), Vec<crate::overlay::EntityProblem>> {
        self.backend.check_store_entities(entities)
    }

    /// Decides against an assembled input. A `Hold` is turned into `Allow` when an active grant bound to this exact
    /// request (its digest) exists: that grant is then named as used, so the caller consumes it.
    pub fn decide_input(&self, input: &DecisionInput<'_>) -> Decision {
        let eval = self.backend.evaluate(input);
        let mut decision = Decision {
            effect: eval.effect,
            policies: eval.policies,
            grants_used: Vec::new(),
            errors: eval.errors,
            revision: self.revision.clone(),
            engine: self.engine(),
            break_glass: false,
            policy_errors: eval.policy_errors,
            engine_answer: eval.engine_answer,
            nearest: eval.nearest,
        };
        if !decision.errors.is_empty() {
            decision.effect = Effect::Deny;
            return decision;
        }
        if matches!(decision.effect, Effect::Allow | Effect::Hold) {
            if let Some(g) = pick_grant(input.grants(), &eval.roles) {
                decision.break_glass = g.break_glass;
                decision.grants_used.push(g.id.clone());
            }
        }
        if decision.effect == Effect::Hold {
            if let Some(approval) = input.approval() {
                decision.effect = Effect::Allow;
                decision.grants_used.push(approval.id.clone());
            }
        }
        decision
    }
}

impl Bundle {
    /// Decides `request` with the caller's `grants` (any status) as [`Bundle::decide`] does, and explains it: each
    /// policy that can apply (scope matched, condition held / false / erred) and each of the caller's grants (why it
    /// was or was not materialized). Uses are not spent. Not for the decision path: it evaluates every policy again.
    pub fn explain(&self, request: &AuthzRequest, grants: &[Arc<Grant>]) -> Explanation {
        let input = DecisionInput::new(request, grants);
        let decision = self.decide_input(&input);
        // For an erroring request the policies Cedar itself would have applied are the interesting ones.
        let determining = decision
            .engine_answer
            .as_ref()
            .map_or(&decision.policies, |a| &a.policies);
        let traces = self.backend.explain(&input, determining);
        let grants = grant_traces(request, grants, &decision);
        Explanation {
            decision,
            traces,
            grants,
        }
    }
}

/// The grant a decision rests on: among active grants for the determining policies' roles, the one that ends first
/// (then the smallest id), so the choice is deterministic and the shortest-lived access is spent first.
pub fn pick_grant<'a>(active: &'a [Arc<Grant>], roles: &[String]) -> Option<&'a Arc<Grant>> {
    active
        .iter()
        .filter(|g| roles.iter().any(|r| r == &g.role))
        .min_by(|a, b| (a.expires_at, &a.id).cmp(&(b.expires_at, &b.id)))
}

pub(crate) fn validate_role(spec: &RoleSettings) -> Result<Role, String> {
    let max_duration =
        parse_duration(&spec.max_duration).map_err(|e| format!("max_duration: {e}"))?;
    let pending_ttl = parse_duration(&spec.pending_ttl).map_err(|e| format!("pending_ttl: {e}"))?;
    if max_duration <= 0 {
        return Err("max_duration: must be positive".into());
    }
    if pending_ttl <= 0 {
        return Err(
            "pending_ttl: must be at least 1s (a request would expire as it is made)".into(),
        );
    }
    let max_start_delay = match &spec.max_start_delay {
        None => pending_ttl,
        Some(d) => parse_duration(d).map_err(|e| format!("max_start_delay: {e}"))?,
    };
    if max_start_delay < 0 {
        return Err("max_start_delay: must not be negative".into());
    }
    if spec.break_glass && !spec.reason_required {
        return Err("reason_required: a break-glass role must require a reason".into());
    }
    if spec.max_uses == Some(0) {
        return Err("max_uses: must be at least 1 when set".into());
    }
    Ok(Role {
        max_duration,
        reason_required: spec.reason_required,
        approvals_required: spec.approvals_required,
        pending_ttl,
        max_start_delay,
        break_glass: spec.break_glass,
        max_uses: spec.max_uses,
        description: spec.description.clone(),
    })
}

/// Expands files and directories (non-recursive into hidden entries; sorted) keeping files with the given extensions.
fn expand(
    dir: &Path,
    entries: &[String],
    exts: &[&str],
    manifest: (&Path, &str),
    field: &str,
) -> Result<Vec<PathBuf>, Diagnostic> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let p = dir.join(e);
        if p.is_dir() {
            walk(&p, exts, &mut out)
                .map_err(|err| Diagnostic::file(&p, format!("cannot read directory: {err}")))?;
        } else if p.is_file() {
            out.push(p);
        } else {
            return Err(Diagnostic::at_toml_key(
                manifest.0,
                manifest.1,
                &format!("{field}[{i}]"),
                format!("{field}: `{e}` does not exist in the bundle"),
            ));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Whether a file name is an editor's or a tool's temp file (vim swap files and its `4913` probe, backups, emacs
/// locks and autosaves, `.tmp`): such files are never part of a bundle, and writing one is no change to it.
pub fn is_temp_file(name: &str) -> bool {
    name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".tmp")
        || name == "4913"
        || (name.starts_with('#') && name.ends_with('#'))
}

fn walk(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // Editor temp files and hidden entries never load.
        if name.starts_with('.') || is_temp_file(name) {
            continue;
        }
        if path.is_dir() {
            walk(&path, exts, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| exts.contains(&e))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Files named one of `names` under `dir`, recursively (hidden entries skipped).
fn walk_named(dir: &Path, names: &[&str], out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || is_temp_file(name) {
            continue;
        }
        if path.is_dir() {
            walk_named(&path, names, out)?;
        } else if names.contains(&name) {
            out.push(path);
        }
    }
    Ok(())
}

fn revision_of(dir: &Path, files: &[PathBuf]) -> Result<String, Diagnostic> {
    let mut files: Vec<&PathBuf> = files.iter().collect();
    files.sort();
    files.dedup();
    let mut h = Sha256::new();
    for f in files {
        let rel = f
            .strip_prefix(dir)
            .unwrap_or(f)
            .to_string_lossy()
            .replace('\\', "/");
        let bytes =
            std::fs::read(f).map_err(|e| Diagnostic::file(f, format!("cannot read file: {e}")))?;
        h.update((rel.len() as u64).to_be_bytes());
        h.update(rel.as_bytes());
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(&bytes);
    }
    Ok(hex::encode(h.finalize()))
}
