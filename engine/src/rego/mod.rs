//! The Rego backend: parses a bundle's `.rego` files into one prepared `regorus::Engine` and decides requests by
//! reading the `allow`, `deny` and `hold` sets of the bundle's package. Grant filtering stays in [`crate::bundle`].
//!
//! # The contract a Rego bundle follows
//! - `allow`, `deny` and `hold` in the deciding package are sets (`allow contains ... if { ... }`). Only `allow` is
//!   required. An element is a policy id (`"engineers-read"`) or `{"policy": "<id>", "role": "<role>"}` when the
//!   permit rests on a JIT role, so the engine can name the grant used.
//! - Any `deny` element denies; otherwise a non-empty `allow` allows, unless `hold` is non-empty (then: hold).
//!   An error, or a value of the wrong shape, denies and is reported in `Evaluation::errors`.
//! - Policy ids for coverage reports are found statically in the deciding package's files: every
//!   `allow|deny|hold contains "<id>"` head and every `"policy": "<id>"` object key. Write ids as literals there.
//! - Rules named `test_*` in any package are unit tests ([`RegoBackend::run_tests`]), run the way `opa test` does.
//! - Entity data kept in the store (`PUT /v1/entities`) is at `data.jitgate.entities[<type>][<id>]` (see
//!   `store_data` for the shape), updated when the store's data changes, without a reload.

mod index;
mod input;
pub mod opa_manifest;
mod store_data;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use regex::Regex;
use regorus::{Engine, Value};
use serde::Serialize;

use crate::backend::PolicyBackend;
use crate::decision::{Effect, EngineKind, Evaluation, PolicyError};
use crate::diag::{Diagnostic, Diagnostics, read_file};
use crate::entity::EntityRef;
use crate::explain::PolicyTraces;
use crate::grant::{Grant, GrantStatus};
use crate::input::DecisionInput;
use crate::request::{AuthzRequest, Context, Principal, Resource};

pub use self::opa_manifest::OpaManifest;

/// The three decision sets, in the order they are read.
const RULES: [&str; 3] = ["deny", "allow", "hold"];

/// How many prepared engines one thread keeps (one per live backend; old bundles fall out).
const CLONES_PER_THREAD: usize = 4;

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's clones of prepared engines, keyed by backend instance (most recently used last), one slot per
    /// deciding engine of that backend, cloned on first use.
    static CLONES: RefCell<Vec<(u64, Vec<Option<Engine>>)>> = const { RefCell::new(Vec::new()) };
}

/// A validated Rego policy set: one prepared engine, cloned once per thread that evaluates with it.
pub struct RegoBackend {
    /// Unique per load, so a reloaded bundle never reuses a thread's clone of the old one.
    instance: u64,
    /// The bundle directory it was loaded from (named in test results).
    dir: PathBuf,
    /// The prepared engine of the whole bundle (parsed, analysed, no input); runs the `test_*` rules.
    prepared: Mutex<Engine>,
    /// The engines that decide: the action index's buckets, or one engine when the bundle is not indexed.
    deciders: index::ActionIndex,
    /// `data.<package>.` prefix of the decision rules.
    rule_prefix: String,
    /// What `index_summary` reports.
    index_summary: String,
    /// The package's policy ids (static scan; see the module docs).
    policy_ids: Vec<String>,
    /// `test_*` rules found in the sources: (package path, rule name, file).
    tests: Vec<(String, String, PathBuf)>,
    /// The OPA `.manifest`, when the bundle has one.
    opa_manifest: Option<OpaManifest>,
    /// The engines with the store's entity data at `data.jitgate.entities`, while the store holds any; replaced
    /// (never changed) when it changes, so a decision keeps the engines it started with.
    store: ArcSwapOption<StoreEngines>,
}

/// The bundle's engines with the store's entity data added to `data` ([`store_data`]), prepared.
struct StoreEngines {
    /// Unique like [`RegoBackend::instance`], so a thread never decides with a clone made before the data changed.
    instance: u64,
    /// Parallel to the action index's engines.
    deciders: Vec<Mutex<Engine>>,
    /// The whole bundle's engine (for `explain`).
    prepared: Mutex<Engine>,
}

impl std::fmt::Debug for RegoBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegoBackend")
            .field("instance", &self.instance)
            .field("rule_prefix", &self.rule_prefix)
            .field("deciders", &self.deciders.len())
            .field("policy_ids", &self.policy_ids.len())
            .field("tests", &self.tests.len())
            .finish()
    }
}

/// The outcome of one Rego unit test (a `test_*` rule), as [`RegoBackend::run_tests`] gives it and the policy-test
/// report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegoTestResult {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// `data.<package>.<rule>`.
    pub name: String,
    /// The file that defines the rule.
    #[serde(skip)]
    pub file: Option<PathBuf>,
    /// Whether the rule evaluated to exactly `true`.
    pub passed: bool,
    /// Why it failed: an evaluation error, or a note that it was undefined / not `true`.
    pub message: Option<String>,
}

impl RegoBackend {
    /// Loads and validates `policy_files` with `package` as the deciding package.
    ///
    /// Every file is parsed (all parse errors are reported, each with file, line and column), the package must
    /// declare `allow`, and the decision rules are evaluated once against a representative input so that a policy
    /// which fails at evaluation time is refused here rather than denying every request later.
    ///
    /// A bundle whose decision rules start with action guards is split into an action index (see `index.rs`), so
    /// a decision evaluates only the definitions that can apply to its action.
    pub fn load(dir: &Path, policy_files: &[PathBuf], package: &str) -> Result<Self, Diagnostics> {
        Self::load_with(dir, policy_files, package, &[], true)
    }

    /// [`RegoBackend::load`] with OPA bundle data: each of `data_files` (`data.json`, `data.yaml` or `data.yml`
    /// anywhere under `dir`) is placed under `data` at the path its directory names relative to `dir`
    /// (`dir/users/eu/data.json` is `data.users.eu`; one at the top is merged into `data` itself). A file that does
    /// not parse is an error with its line and column; two files that set the same key are an error naming both.
    ///
    /// An OPA `.manifest` at the top of `dir` is read ([`OpaManifest`]): its `rego_version` and
    /// `file_rego_versions` say which files are Rego v0, and every package and data path must lie under its
    /// `roots`, or the bundle is refused with an error naming the manifest's `roots` and the offending file.
    pub fn load_with_data(
        dir: &Path,
        policy_files: &[PathBuf],
        package: &str,
        data_files: &[PathBuf],
    ) -> Result<Self, Diagnostics> {
        Self::load_with(dir, policy_files, package, data_files, true)
    }

    fn load_with(
        dir: &Path,
        policy_files: &[PathBuf],
        package: &str,
        data_files: &[PathBuf],
        indexed: bool,
    ) -> Result<Self, Diagnostics> {
        let manifest = dir.join(crate::manifest::MANIFEST_FILE);
        if !valid_package(package) {
            return Err(Diagnostic::file(
                &manifest,
                format!("rego.package: `{package}` is not a dotted Rego package name (e.g. `jitgate.authz`)"),
            )
            .into());
        }
        let data_package = format!("data.{package}");
        let opa = OpaManifest::read(dir)?;
        let opa_path = dir.join(opa_manifest::OPA_MANIFEST_FILE);
        let mut engine = Engine::new();
        let mut errors = Vec::new();
        let mut sources: Vec<(PathBuf, String, String)> = Vec::new();
        let mut v0: Vec<bool> = Vec::new();
        for file in policy_files {
            let source = match read_file(file) {
                Ok(s) => s,
                Err(d) => {
                    errors.push(d);
                    continue;
                }
            };
            let file_v0 = opa.as_ref().is_some_and(|m| m.is_v0(&relative(dir, file)));
            engine.set_rego_v0(file_v0);
            match engine.add_policy(file.display().to_string(), source.clone()) {
                Ok(pkg) => {
                    if let Some(m) = &opa {
                        if !m.permits_package(&pkg) {
                            errors.push(m.roots_error(
                                &opa_path,
                                format!(
                                    "roots: {:?} do not permit package `{}` of {}",
                                    m.roots,
                                    pkg.strip_prefix("data.").unwrap_or(&pkg),
                                    file.display()
                                ),
                            ));
                        }
                    }
                    sources.push((file.clone(), pkg, source));
                    v0.push(file_v0);
                }
                Err(e) => errors.push(diagnostic_from(&format!("{e:#}"), policy_files, Some(file))),
            }
        }
        let data = load_data(dir, data_files, opa.as_ref(), &mut errors);
        for (file, value) in &data {
            if let Err(e) = engine.add_data(value.clone()) {
                errors.push(Diagnostic::file(
                    file,
                    format!("data: cannot merge into `data` (a key another data file or a policy sets?): {e:#}"),
                ));
            }
        }
        Diagnostics(errors).into_result()?;
        let data: Vec<regorus::Value> = data.into_iter().map(|(_, v)| v).collect();

        let own: Vec<&(PathBuf, String, String)> = sources
            .iter()
            .filter(|(_, pkg, _)| *pkg == data_package)
            .collect();
        if own.is_empty() {
            return Err(Diagnostic::file(
                &manifest,
                format!("rego.package: no policy file declares `package {package}`"),
            )
            .into());
        }
        let mut declared = [false; 3];
        for (slot, rule) in declared.iter_mut().zip(RULES) {
            for (file, _, _) in &own {
                let path = file.display().to_string();
                *slot |= engine
                    .has_declared_rule_rooted_at(&path, rule)
                    .map_err(|e| {
                        Diagnostics::one(Diagnostic::file(
                            file,
                            format!("cannot inspect rule `{rule}`: {e:#}"),
                        ))
                    })?;
            }
        }
        if !declared[1] {
            return Err(Diagnostic::file(
                own.first().map_or(manifest.as_path(), |(f, _, _)| f.as_path()),
                format!("package `{package}` declares no `allow` rule (write `allow contains \"<policy-id>\" if {{ ... }}`)"),
            )
            .into());
        }

        let rule_prefix = format!("{data_package}.");
        // The probe prepares the engine (analysis, scheduling) once, before it is stored and cloned.
        probe(&mut engine, &rule_prefix, &declared, policy_files)?;

        let policy_ids = scan_policy_ids(own.iter().map(|(_, _, s)| s.as_str()));
        let tests = sources
            .iter()
            .flat_map(|(file, pkg, src)| {
                scan_tests(src)
                    .into_iter()
                    .map(move |t| (pkg.clone(), t, file.clone()))
            })
            .collect();
        let modules = engine.get_modules().clone();
        let deciders = indexed
            .then(|| index::build(&sources, &modules, &data, &data_package, declared, &v0))
            .flatten()
            .unwrap_or_else(|| index::ActionIndex::single(engine.clone(), declared));
        let (guarded, unguarded) = index::describe(&sources, &modules, &data_package);
        let index_summary = if deciders.len() > 1 {
            let mut line = format!(
                "action index: {guarded} of {} decision rules guarded by action, {} buckets",
                guarded + unguarded.len(),
                deciders.len()
            );
            if !unguarded.is_empty() {
                line.push_str(&format!(
                    "; evaluated for every action: {}",
                    unguarded.join(", ")
                ));
            }
            line
        } else {
            format!(
                "action index: not used ({guarded} of {} decision rules guarded by action; it needs guards naming two actions or more)",
                guarded + unguarded.len()
            )
        };
        Ok(RegoBackend {
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            dir: dir.to_path_buf(),
            prepared: Mutex::new(engine),
            deciders,
            rule_prefix,
            index_summary,
            policy_ids,
            tests,
            opa_manifest: opa,
            store: ArcSwapOption::empty(),
        })
    }

    /// The bundle's OPA `.manifest`, when it has one.
    pub fn opa_manifest(&self) -> Option<&OpaManifest> {
        self.opa_manifest.as_ref()
    }

    /// Runs every `test_*` rule of every package, the way `opa test` does: a test passes when its rule is `true`.
    ///
    /// Tests are found by scanning the sources for rule heads named `test_*` that start a line (functions with
    /// arguments are not tests). Each runs on a fresh clone of the prepared engine with no input.
    pub fn run_tests(&self) -> Vec<RegoTestResult> {
        let prepared = self.prepared.lock().clone();
        self.tests
            .iter()
            .map(|(pkg, rule, file)| {
                let name = format!("{pkg}.{rule}");
                let mut engine = prepared.clone();
                let (passed, message) = match engine.eval_rule(name.clone()) {
                    Ok(Value::Bool(true)) => (true, None),
                    Ok(Value::Undefined) => (
                        false,
                        Some("undefined: a condition did not hold".to_string()),
                    ),
                    Ok(other) => (
                        false,
                        Some(format!("evaluated to {} instead of true", show(&other))),
                    ),
                    Err(e) => (false, Some(compact_error(&format!("{e:#}")))),
                };
                RegoTestResult {
                    bundle: self.dir.clone(),
                    name,
                    file: Some(file.clone()),
                    passed,
                    message,
                }
            })
            .collect()
    }

    /// A fresh clone of deciding engine `slot` of `engines` (the full engine if the slot does not exist, which
    /// cannot happen).
    fn clone_decider(&self, engines: &[Mutex<Engine>], slot: usize) -> Engine {
        match engines.get(slot) {
            Some(engine) => engine.lock().clone(),
            None => self.prepared.lock().clone(),
        }
    }

    /// Runs `f` on this thread's clone of deciding engine `slot` (with the store's entity data when it holds any),
    /// cloning it on first use.
    fn with_engine<R>(&self, slot: usize, f: impl FnOnce(&mut Engine) -> R) -> R {
        let store = self.store.load();
        let (instance, engines) = match store.as_ref() {
            Some(s) => (s.instance, s.deciders.as_slice()),
            None => (self.instance, self.deciders.engines.as_slice()),
        };
        CLONES.with(|cell| {
            let Ok(mut clones) = cell.try_borrow_mut() else {
                // Re-entered from inside an evaluation (not expected): use a private clone.
                return f(&mut self.clone_decider(engines, slot));
            };
            let pos = match clones.iter().position(|(id, _)| *id == instance) {
                Some(p) => p,
                None => {
                    if clones.len() >= CLONES_PER_THREAD {
                        clones.remove(0);
                    }
                    let slots = std::iter::repeat_with(|| None)
                        .take(self.deciders.len())
                        .collect();
                    clones.push((instance, slots));
                    clones.len() - 1
                }
            };
            // Keep the most recently used last so eviction drops the stalest bundle.
            let last = clones.len() - 1;
            clones.swap(pos, last);
            let Some(entry) = clones.last_mut().and_then(|(_, slots)| slots.get_mut(slot)) else {
                return f(&mut self.clone_decider(engines, slot));
            };
            let engine = entry.get_or_insert_with(|| self.clone_decider(engines, slot));
            f(engine)
        })
    }

    fn decide(&self, engine: &mut Engine, declared: [bool; 3], input: Value) -> Evaluation {
        engine.set_input(input);
        let mut sets: [Vec<Element>; 3] = Default::default();
        for (i, rule) in RULES.iter().enumerate() {
            if !declared.get(i).copied().unwrap_or(false) {
                if i == 1 {
                    // No `allow` definition can apply (an action index bucket without one): default deny.
                    return Evaluation::default();
                }
                continue;
            }
            let elements = match eval_set(engine, &self.rule_prefix, rule) {
                Ok(e) => e,
                Err(error) => {
                    let mut eval = deny_with(error.clone());
                    eval.policy_errors.push(PolicyError {
                        policy: format!("{}{rule}", self.rule_prefix),
                        message: error,
                    });
                    return eval;
                }
            };
            if i == 0 && !elements.is_empty() {
                // Deny wins: the other sets cannot change the outcome.
                return Evaluation {
                    effect: Effect::Deny,
                    policies: dedup(elements.into_iter().map(|e| e.policy)),
                    ..Default::default()
                };
            }
            if i == 1 && elements.is_empty() {
                return Evaluation::default();
            }
            if let Some(slot) = sets.get_mut(i) {
                *slot = elements;
            }
        }
        let [_, allow, hold] = sets;
        let roles: Vec<String> = dedup(allow.iter().filter_map(|e| e.role.clone()));
        if hold.is_empty() {
            Evaluation {
                effect: Effect::Allow,
                policies: dedup(allow.into_iter().map(|e| e.policy)),
                roles,
                ..Default::default()
            }
        } else {
            Evaluation {
                effect: Effect::Hold,
                policies: dedup(hold.into_iter().map(|e| e.policy)),
                roles,
                ..Default::default()
            }
        }
    }
}

impl PolicyBackend for RegoBackend {
    fn engine(&self) -> EngineKind {
        EngineKind::Rego
    }

    fn evaluate(&self, input: &DecisionInput<'_>) -> Evaluation {
        let slot = self.deciders.slot(input.action());
        let input = input::build(input);
        let declared = self
            .deciders
            .declared
            .get(slot)
            .copied()
            .unwrap_or([false; 3]);
        self.with_engine(slot, |engine| self.decide(engine, declared, input))
    }

    fn explain(&self, input: &DecisionInput<'_>, _determining: &[String]) -> PolicyTraces {
        let package = self.rule_prefix.trim_end_matches('.').to_string();
        let mut engine = match self.store.load().as_ref() {
            Some(s) => s.prepared.lock().clone(),
            None => self.prepared.lock().clone(),
        };
        engine.set_input(input::build(input));
        let note = Some(format!(
            "Rego has no per-policy scope: `document` is {package} for this input (every rule that evaluated to a \
             value; an undefined rule is absent), as `opa eval '{package}'` shows it"
        ));
        match engine.eval_query(package.clone(), false) {
            Ok(results) => {
                let value = results
                    .result
                    .first()
                    .and_then(|r| r.expressions.first())
                    .map(|e| e.value.clone())
                    .unwrap_or(Value::Undefined);
                let document = value
                    .to_json_str()
                    .ok()
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or(serde_json::Value::Null);
                PolicyTraces {
                    document: Some(document),
                    note,
                    ..PolicyTraces::default()
                }
            }
            Err(e) => PolicyTraces {
                note: Some(format!(
                    "evaluating {package} failed: {}",
                    compact_error(&format!("{e:#}"))
                )),
                ..PolicyTraces::default()
            },
        }
    }

    fn policy_ids(&self) -> Vec<String> {
        self.policy_ids.clone()
    }

    fn index_summary(&self) -> Option<String> {
        Some(self.index_summary.clone())
    }

    fn check_store_entities(
        &self,
        entities: &[crate::store::StoredEntity],
    ) -> Result<(), Vec<crate::overlay::EntityProblem>> {
        if entities.is_empty() {
            return Ok(());
        }
        let doc = store_data::document(entities)?;
        let mut engine = self.prepared.lock().clone();
        engine.add_data(doc).map_err(|e| vec![data_conflict(&e)])
    }

    fn set_store_entities(
        &self,
        entities: &[crate::store::StoredEntity],
    ) -> Result<(), Vec<crate::overlay::EntityProblem>> {
        if entities.is_empty() {
            self.store.store(None);
            return Ok(());
        }
        let doc = store_data::document(entities)?;
        // Each engine with the data, prepared again (the data changed) once here rather than in every thread.
        let with_data = |engine: &Mutex<Engine>, declared: [bool; 3]| {
            let mut engine = engine.lock().clone();
            engine
                .add_data(doc.clone())
                .map_err(|e| vec![data_conflict(&e)])?;
            if let Some(rule) = RULES.iter().zip(declared).find_map(|(r, p)| p.then_some(r)) {
                // An error here is the rule's without input; decisions report their own.
                let _ = engine.eval_rule(format!("{}{rule}", self.rule_prefix));
            }
            Ok::<_, Vec<crate::overlay::EntityProblem>>(Mutex::new(engine))
        };
        let deciders = self
            .deciders
            .engines
            .iter()
            .zip(&self.deciders.declared)
            .map(|(e, d)| with_data(e, *d))
            .collect::<Result<Vec<_>, _>>()?;
        let prepared = with_data(&self.prepared, [false, true, false])?;
        self.store.store(Some(Arc::new(StoreEngines {
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            deciders,
            prepared,
        })));
        Ok(())
    }
}

/// The store's entity data cannot be merged into the bundle's `data` (its own data sets `data.jitgate.entities`).
fn data_conflict(e: &dyn std::fmt::Display) -> crate::overlay::EntityProblem {
    crate::overlay::EntityProblem::new(
        "(entity data)",
        format!(
            "the store's entity data goes to data.{}, which the bundle's own data sets too: {e}",
            store_data::PATH.join(".")
        ),
    )
}

/// One element of a decision set.
struct Element {
    policy: String,
    role: Option<String>,
}

fn deny_with(error: String) -> Evaluation {
    Evaluation {
        effect: Effect::Deny,
        errors: vec![error],
        ..Default::default()
    }
}

/// Sorted and unique, so decisions list policies and roles the same way whatever the set order.
fn dedup(items: impl Iterator<Item = String>) -> Vec<String> {
    items.collect::<BTreeSet<_>>().into_iter().collect()
}

/// Evaluates `data.<package>.<rule>` and checks it is a set of well-formed elements.
fn eval_set(engine: &mut Engine, prefix: &str, rule: &str) -> Result<Vec<Element>, String> {
    let value = engine
        .eval_rule(format!("{prefix}{rule}"))
        .map_err(|e| compact_error(&format!("{e:#}")))?;
    let set = match &value {
        Value::Set(s) => s,
        Value::Undefined => {
            return Err(format!(
                "{prefix}{rule} is undefined (it must be a set: `{rule} contains ...`)"
            ));
        }
        other => {
            return Err(format!(
                "{prefix}{rule} must be a set (`{rule} contains ...`), got {}",
                show(other)
            ));
        }
    };
    set.iter()
        .map(|v| element(v).ok_or_else(|| bad_element(prefix, rule, v)))
        .collect()
}

fn element(v: &Value) -> Option<Element> {
    match v {
        Value::String(s) if !s.is_empty() => Some(Element {
            policy: s.to_string(),
            role: None,
        }),
        Value::Object(o) => {
            let mut policy = None;
            let mut role = None;
            for (k, v) in o.iter() {
                match (k, v) {
                    (Value::String(k), Value::String(v))
                        if k.as_ref() == "policy" && !v.is_empty() =>
                    {
                        policy = Some(v.to_string());
                    }
                    (Value::String(k), Value::String(v))
                        if k.as_ref() == "role" && !v.is_empty() =>
                    {
                        role = Some(v.to_string());
                    }
                    _ => return None,
                }
            }
            Some(Element {
                policy: policy?,
                role,
            })
        }
        _ => None,
    }
}

fn bad_element(prefix: &str, rule: &str, v: &Value) -> String {
    format!(
        "{prefix}{rule} has an element that is neither a policy id nor {{\"policy\": \"<id>\", \"role\": \"<role>\"}}: {}",
        show(v)
    )
}

fn show(v: &Value) -> String {
    v.to_json_str()
        .unwrap_or_else(|_| format!("{v:?}"))
        .replace('\n', " ")
}

/// Evaluates each declared decision rule once against a representative request, so that runtime errors (type
/// errors, conflicting values, unsafe variables found at preparation) and wrongly shaped rules fail the load.
fn probe(
    engine: &mut Engine,
    prefix: &str,
    declared: &[bool; 3],
    files: &[PathBuf],
) -> Result<(), Diagnostics> {
    let request = probe_request();
    let now = request.context.time;
    let grants: Vec<Arc<Grant>> = ["payments-writer", "break-glass"]
        .iter()
        .map(|role| {
            Arc::new(Grant {
                id: format!("probe-{role}"),
                principal: request.principal.entity.clone(),
                role: (*role).to_string(),
                scope: EntityRef::new("Service", "probe"),
                starts_at: now - 60,
                expires_at: now + 3_600,
                max_uses: Some(3),
                uses: 1,
                status: GrantStatus::Active,
                approvers: vec!["User::\"approver\"".into()],
                reason: "probe".into(),
                break_glass: *role == "break-glass",
                request_digest: None,
                request_id: None,
            })
        })
        .collect();
    // Prepare the stored engine (analysis, scheduling) so every clone starts prepared; no input is left behind.
    if let Err(e) = engine.eval_rule(format!("{prefix}allow")) {
        return Err(diagnostic_from(&format!("{e:#}"), files, None).into());
    }
    let mut probe_engine = engine.clone();
    probe_engine.set_input(input::build(&DecisionInput::materialized(
        &request, &grants,
    )));
    let mut errors = Vec::new();
    for (i, rule) in RULES.iter().enumerate() {
        if !declared.get(i).copied().unwrap_or(false) {
            continue;
        }
        let path = format!("{prefix}{rule}");
        match probe_engine.eval_rule(path.clone()) {
            Err(e) => errors.push(diagnostic_from(&format!("{e:#}"), files, None)),
            Ok(Value::Set(s)) => {
                if let Some(bad) = s.iter().find(|v| element(v).is_none()) {
                    errors.push(Diagnostic::file(
                        first_file(files),
                        bad_element(prefix, rule, bad),
                    ));
                }
            }
            // A set rule with no elements is an empty set; undefined means a non-set rule that did not fire.
            Ok(Value::Undefined) => {}
            Ok(other) => errors.push(Diagnostic::file(
                first_file(files),
                format!(
                    "{path} must be a set (write `{rule} contains ...`), got {}",
                    show(&other)
                ),
            )),
        }
    }
    Diagnostics(dedup_diags(errors)).into_result()
}

fn dedup_diags(diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = Vec::new();
    for d in diags {
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

fn first_file(files: &[PathBuf]) -> &Path {
    files.first().map_or(Path::new("."), |f| f.as_path())
}

fn probe_request() -> AuthzRequest {
    let mut context = Context::at(1_704_110_400); // 2024-01-01T12:00:00Z, a Monday
    context.source_ip = Some("10.1.2.3".into());
    context.method = Some("POST".into());
    context.path = Some("/probe/1".into());
    context.host = Some("probe.local".into());
    context.query = Some("a=1".into());
    context
        .headers
        .insert("user-agent".into(), "jitgate-probe".into());
    context.claims.insert("sub".into(), "probe".into());
    context
        .claims
        .insert("groups".into(), serde_json::json!(["engineering"]));
    AuthzRequest {
        principal: Principal {
            entity: EntityRef::new("User", "probe"),
            groups: vec!["engineering".into()],
            group_type: None,
            attrs: Default::default(),
        },
        action: "probe".into(),
        resource: Resource {
            entity: EntityRef::new("Probe", "1"),
            parents: vec![EntityRef::new("Service", "probe")],
            attrs: serde_json::Map::from_iter([
                (
                    "requester".to_string(),
                    serde_json::json!("User::\"probe\""),
                ),
                ("role".to_string(), serde_json::json!("probe")),
                ("scope".to_string(), serde_json::json!("Service::\"probe\"")),
                ("duration".to_string(), serde_json::json!(600)),
                ("reason".to_string(), serde_json::json!("probe")),
                ("ticket".to_string(), serde_json::json!("")),
                ("starts_at".to_string(), serde_json::json!(0)),
            ]),
        },
        context,
        digest: None,
    }
}

fn valid_package(p: &str) -> bool {
    !p.is_empty()
        && p.split('.').all(|seg| {
            seg.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

static POSITION: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"-->\s*(?P<file>.+?):(?P<line>\d+):(?P<col>\d+)\s*$").ok());

/// Turns a regorus error (`\n--> file:line:col\n | source\n | ^\nerror: reason`) into a diagnostic.
///
/// The file is matched against the bundle's files (the name regorus prints is the one we gave it); when no
/// position can be found the diagnostic names `fallback` (or the first file) without one.
fn diagnostic_from(message: &str, files: &[PathBuf], fallback: Option<&PathBuf>) -> Diagnostic {
    let reason = reason_of(message);
    let fallback_file = fallback.map_or_else(|| first_file(files).to_path_buf(), Clone::clone);
    let Some(re) = POSITION.as_ref() else {
        return Diagnostic::file(fallback_file, reason);
    };
    for line in message.lines() {
        if let Some(c) = re.captures(line.trim_end()) {
            let file_text = c.name("file").map_or("", |m| m.as_str());
            let file = files
                .iter()
                .find(|f| f.display().to_string() == file_text)
                .cloned()
                .unwrap_or_else(|| PathBuf::from(file_text));
            let num = |n: &str| c.name(n).and_then(|m| m.as_str().parse::<usize>().ok());
            if let (Some(l), Some(col)) = (num("line"), num("col")) {
                return Diagnostic::at(file, l, col, reason);
            }
        }
    }
    Diagnostic::file(fallback_file, reason)
}

/// The reason part of a regorus message: the text after the last `error:` marker, or the whole message on one line.
fn reason_of(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(i) = lines.iter().rposition(|l| l.starts_with("error:")) {
        let rest: Vec<&str> = lines.iter().skip(i).copied().collect();
        let joined = rest.join(" ");
        return joined
            .strip_prefix("error:")
            .unwrap_or(&joined)
            .trim()
            .to_string();
    }
    lines.join(" ")
}

/// A regorus error as one line: `file:line:col: reason` when it carries a position.
fn compact_error(message: &str) -> String {
    let reason = reason_of(message);
    match POSITION
        .as_ref()
        .and_then(|re| message.lines().find_map(|l| re.captures(l.trim_end())))
    {
        Some(c) => format!(
            "{}:{}:{}: {reason}",
            c.name("file").map_or("", |m| m.as_str()),
            c.name("line").map_or("", |m| m.as_str()),
            c.name("col").map_or("", |m| m.as_str())
        ),
        None => reason,
    }
}

static ID_IN_HEAD: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"(?m)^\s*(?:allow|deny|hold)\s+contains\s+"([^"\\]+)""#).ok());
static ID_IN_OBJECT: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#""policy"\s*:\s*"([^"\\]+)""#).ok());
static TEST_HEAD: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?m)^[ \t]*(test_[A-Za-z0-9_]*)[ \t]*(?:if\b|\{|:=|=[^=])").ok());

fn scan_policy_ids<'a>(sources: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut ids = BTreeSet::new();
    for src in sources {
        let src = strip_comments(src);
        for re in [ID_IN_HEAD.as_ref(), ID_IN_OBJECT.as_ref()]
            .into_iter()
            .flatten()
        {
            ids.extend(
                re.captures_iter(&src)
                    .filter_map(|c| c.get(1))
                    .map(|m| m.as_str().to_string()),
            );
        }
    }
    ids.into_iter().collect()
}

fn scan_tests(src: &str) -> Vec<String> {
    let src = strip_comments(src);
    let Some(re) = TEST_HEAD.as_ref() else {
        return Vec::new();
    };
    let mut seen = BTreeSet::new();
    re.captures_iter(&src)
        .filter_map(|c| c.get(1))
        .map(|m| m.as_str().to_string())
        // A test may be defined by several bodies (incremental definition); it runs once.
        .filter(|n| seen.insert(n.clone()))
        .collect()
}

/// Blanks `#` comments (outside strings) so commented-out rules are not picked up.
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    for line in src.lines() {
        let mut in_string = false;
        let mut escaped = false;
        let mut in_raw = false;
        let mut cut = line.len();
        for (i, c) in line.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_string => escaped = true,
                '"' if !in_raw => in_string = !in_string,
                '`' if !in_string => in_raw = !in_raw,
                '#' if !in_string && !in_raw => {
                    cut = i;
                    break;
                }
                _ => {}
            }
        }
        out.push_str(line.get(..cut).unwrap_or(line));
        out.push('\n');
    }
    out
}

/// `file` relative to `dir`, `/`-separated (as a `.manifest`'s `file_rego_versions` names it).
fn relative(dir: &Path, file: &Path) -> String {
    file.strip_prefix(dir)
        .unwrap_or(file)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Reads OPA data files, each as a `data` document nested at the path its directory names under `dir`; with a
/// `.manifest`, a file whose data lies outside its roots is an error.
fn load_data(
    dir: &Path,
    files: &[PathBuf],
    opa: Option<&OpaManifest>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<(PathBuf, regorus::Value)> {
    let mut out = Vec::new();
    for file in files {
        let source = match read_file(file) {
            Ok(s) => s,
            Err(d) => {
                errors.push(d);
                continue;
            }
        };
        let yaml = file.extension().is_some_and(|e| e == "yaml" || e == "yml");
        let parsed: Result<serde_json::Value, Diagnostic> = if yaml {
            serde_yaml::from_str::<serde_json::Value>(&source).map_err(|e| {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((1, 1));
                Diagnostic::at(file, line, column, format!("invalid YAML data: {e}"))
            })
        } else {
            serde_json::from_str::<serde_json::Value>(&source).map_err(|e| {
                Diagnostic::at(
                    file,
                    e.line(),
                    e.column(),
                    format!("invalid JSON data: {e}"),
                )
            })
        };
        let mut value = match parsed {
            Ok(v) => v,
            Err(d) => {
                errors.push(d);
                continue;
            }
        };
        let segments: Vec<String> = file
            .parent()
            .and_then(|p| p.strip_prefix(dir).ok())
            .map(|rel| {
                rel.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if segments.is_empty() && !value.is_object() {
            errors.push(Diagnostic::at(
                file,
                1,
                1,
                "data at the top of the bundle must be a JSON object (its keys go under `data`)",
            ));
            continue;
        }
        for seg in segments.iter().rev() {
            let mut m = serde_json::Map::new();
            m.insert(seg.clone(), value);
            value = serde_json::Value::Object(m);
        }
        if let Some(outside) = opa.and_then(|m| m.data_outside_roots(&value).map(|p| (m, p))) {
            let (m, path) = outside;
            errors.push(m.roots_error(
                &dir.join(opa_manifest::OPA_MANIFEST_FILE),
                format!(
                    "roots: {:?} do not permit data at `{path}` (from {}; a data file's directory names its place under `data`)",
                    m.roots,
                    file.display()
                ),
            ));
            continue;
        }
        match serde_json::to_string(&value)
            .map_err(|e| e.to_string())
            .and_then(|t| regorus::Value::from_json_str(&t).map_err(|e| format!("{e:#}")))
        {
            Ok(v) => out.push((file.clone(), v)),
            Err(e) => errors.push(Diagnostic::file(file, format!("data: {e}"))),
        }
    }
    out
}

#[cfg(test)]
mod tests;
