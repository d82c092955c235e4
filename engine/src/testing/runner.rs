//! Runs suites: each case on each bundle (loaded once per path), with the suite's frozen clock and its fixture
//! grants as mutable per-bundle state (so `consume` spends uses), compared against the case's expectations.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant as WallClock};

use regex::Regex;
use serde::Serialize;

use crate::bundle::Bundle;
use crate::clock::UnixTime;
use crate::decision::{Decision, EngineAnswer, EngineKind, PolicyError};
use crate::diag::{Diagnostic, Diagnostics};
use crate::entity::EntityRef;
use crate::grant::{Grant, GrantStatus};
use crate::rego::{RegoBackend, RegoTestResult};
use crate::request::{AuthzRequest, BoundHeader, Context, Principal, request_digest};
use crate::store::{GrantStore, MemStore, StoreError};

use super::suite::{
    CaseSpec, ContextSpec, Expect, ExpectErrors, ExpectedDecision, Suite, Target, discover,
};

/// How long an `approved_request` approval stays valid, from the case's time.
const APPROVAL_TTL: i64 = 15 * 60;

/// What to run and against what.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    filter: Option<Regex>,
    bundles: Vec<PathBuf>,
}

impl RunOptions {
    /// Run every case on the bundles each suite lists.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only report cases whose name matches `pattern` (earlier cases still run silently, so that the state they
    /// leave behind — spent uses — is the same as in a full run).
    pub fn with_filter(mut self, pattern: &str) -> Result<Self, regex::Error> {
        self.filter = Some(Regex::new(pattern)?);
        Ok(self)
    }

    /// Run every suite on these bundle directories instead of the ones it lists.
    pub fn with_bundles(mut self, bundles: Vec<PathBuf>) -> Self {
        self.bundles = bundles;
        self
    }

    /// The bundle override, if any.
    pub fn bundles(&self) -> &[PathBuf] {
        &self.bundles
    }

    fn selects(&self, name: &str) -> bool {
        self.filter.as_ref().is_none_or(|r| r.is_match(name))
    }
}

/// The result of one case on one bundle.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// The case name.
    pub name: String,
    /// Where the case is written (1-based line), when found.
    pub line: Option<usize>,
    /// Whether every expectation held.
    pub passed: bool,
    /// One line per expectation that did not hold.
    pub failures: Vec<String>,
    /// What was expected.
    pub expected: Expect,
    /// What came out.
    pub actual: Actual,
    /// The command that re-runs only this case.
    pub rerun: String,
    /// Wall time of the decision.
    #[serde(skip)]
    pub elapsed: Duration,
}

/// What a case produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Actual {
    /// `allow`, `deny`, `hold` or `unmatched`.
    pub decision: String,
    /// The action decided (for HTTP cases: the one the route mapped to).
    pub action: Option<String>,
    /// The resource decided.
    pub resource: Option<String>,
    /// Determining policies.
    pub policies: Vec<String>,
    /// Grants used.
    pub grants_used: Vec<String>,
    /// Evaluation errors.
    pub errors: Vec<String>,
    /// The erroring policies, each with its message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy_errors: Vec<PolicyError>,
    /// With errors: what the policy language itself answered, ignoring jitgate's fail-closed rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_answer: Option<EngineAnswer>,
    /// Break-glass flag.
    pub break_glass: bool,
}

/// One suite on one bundle.
#[derive(Debug, Clone, Serialize)]
pub struct BundleRun {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Its engine.
    pub engine: EngineKind,
    /// Its revision.
    pub revision: String,
    /// Case results, in suite order.
    pub cases: Vec<CaseResult>,
}

/// One suite on all its bundles.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    /// The suite file.
    pub file: PathBuf,
    /// The suite's name.
    pub name: String,
    /// One run per bundle that loaded.
    pub runs: Vec<BundleRun>,
}

/// Policies of one bundle that never determined a decision in the run.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Its engine.
    pub engine: EngineKind,
    /// How many policies it has.
    pub policies: usize,
    /// Ids that determined no decision.
    pub uncovered: Vec<String>,
}

/// Everything a run found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Suites that ran (those with at least one selected case).
    pub suites: Vec<SuiteReport>,
    /// Suites or bundles that could not be loaded.
    pub broken: Vec<Diagnostic>,
    /// Per-bundle coverage.
    pub coverage: Vec<Coverage>,
    /// Rego `test_*` rules of the bundles that ran.
    pub rego_tests: Vec<RegoTestResult>,
}

impl Report {
    fn cases(&self) -> impl Iterator<Item = &CaseResult> {
        self.suites
            .iter()
            .flat_map(|s| s.runs.iter())
            .flat_map(|r| r.cases.iter())
    }

    /// Case runs (case × bundle) and Rego tests that passed.
    pub fn passed(&self) -> usize {
        self.cases().filter(|c| c.passed).count()
            + self.rego_tests.iter().filter(|t| t.passed).count()
    }

    /// Case runs and Rego tests that failed.
    pub fn failed(&self) -> usize {
        self.cases().filter(|c| !c.passed).count()
            + self.rego_tests.iter().filter(|t| !t.passed).count()
    }

    /// Case runs per engine.
    pub fn cases_per_engine(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for run in self.suites.iter().flat_map(|s| s.runs.iter()) {
            *m.entry(run.engine.as_str()).or_insert(0) += run.cases.len();
        }
        m
    }

    /// 0 when everything passed, 1 when a case failed (or nothing ran), 2 when a suite or bundle is broken.
    pub fn exit_code(&self) -> i32 {
        if !self.broken.is_empty() {
            2
        } else if self.failed() > 0 || self.passed() == 0 {
            1
        } else {
            0
        }
    }
}

#[derive(Debug, Default)]
struct Hits {
    shown: PathBuf,
    engine: Option<EngineKind>,
    ids: BTreeSet<String>,
    hit: BTreeSet<String>,
}

/// A loaded bundle's directory (canonical), its further entity files and the store entity files put over it.
type BundleKey = (PathBuf, Vec<PathBuf>, Vec<PathBuf>);

/// Loads bundles once per path and runs suites against them.
#[derive(Debug, Default)]
pub struct Runner {
    opts: RunOptions,
    /// By canonical directory, the suite's (and case's) entity files and the suite's store entity files.
    cache: BTreeMap<BundleKey, Result<Arc<Bundle>, Diagnostics>>,
    coverage: BTreeMap<PathBuf, Hits>,
    rego_done: BTreeSet<PathBuf>,
    rego_tests: Vec<RegoTestResult>,
}

impl Runner {
    /// A runner with `opts`.
    pub fn new(opts: RunOptions) -> Self {
        Self {
            opts,
            ..Self::default()
        }
    }

    /// The bundle in `dir`, loaded on first use and cached (by canonical path) for the rest of the run.
    pub fn bundle(&mut self, dir: &Path) -> Result<Arc<Bundle>, Diagnostics> {
        self.bundle_with(dir, &[], &[])
    }

    /// The bundle in `dir` with further Cedar JSON entity files, and the entity data of `store` files put over its
    /// own as the store's would be, loaded on first use and cached.
    fn bundle_with(
        &mut self,
        dir: &Path,
        entities: &[PathBuf],
        store: &[PathBuf],
    ) -> Result<Arc<Bundle>, Diagnostics> {
        let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        self.cache
            .entry((key, entities.to_vec(), store.to_vec()))
            .or_insert_with(|| {
                let bundle = Bundle::load_with_entities(dir, entities)?;
                if !store.is_empty() {
                    crate::overlay::read_store_files(store)?.apply(&bundle)?;
                }
                Ok(Arc::new(bundle))
            })
            .clone()
    }

    /// Makes `bundle` the one used for `dir` (the reload gate tests the snapshot it is about to swap in).
    pub fn insert_bundle(&mut self, dir: &Path, bundle: Arc<Bundle>) {
        let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        self.cache.insert((key, Vec::new(), Vec::new()), Ok(bundle));
    }

    /// Discovers suite files under `paths` and runs them all.
    pub fn run_paths(mut self, paths: &[PathBuf]) -> Report {
        let mut report = Report::default();
        self.run_paths_into(paths, &mut report);
        self.finish(report)
    }

    /// Discovers suite files under `paths` and runs them, adding to `report`.
    pub fn run_paths_into(&mut self, paths: &[PathBuf], report: &mut Report) {
        let files = match discover(paths) {
            Ok(f) => f,
            Err(d) => {
                report.broken.extend(d.0);
                return;
            }
        };
        if files.is_empty() {
            report.broken.push(Diagnostic::file(
                paths.first().map_or(Path::new("."), |p| p.as_path()),
                "no suite files (*.yaml, *.yml, *.json) found",
            ));
        }
        for file in files {
            match Suite::load(&file) {
                Ok(suite) => self.run_suite_into(&suite, report),
                Err(d) => report.broken.extend(d.0),
            }
        }
    }

    /// Runs one loaded suite (adds its results to `report`).
    pub fn run_suite_into(&mut self, suite: &Suite, report: &mut Report) {
        let bundles = if self.opts.bundles.is_empty() {
            suite.bundles.clone()
        } else {
            self.opts.bundles.clone()
        };
        if bundles.is_empty() {
            report.broken.push(Diagnostic::file(
                &suite.path,
                "bundles: the suite lists no bundles (list them, or pass --bundle)",
            ));
            return;
        }
        let Some(last) = suite
            .file
            .cases
            .iter()
            .rposition(|c| self.opts.selects(&c.name))
        else {
            return;
        };
        let mut out = SuiteReport {
            file: suite.path.clone(),
            name: suite.file.name.clone(),
            runs: Vec::new(),
        };
        for dir in &bundles {
            let bundle = match self.bundle_with(dir, &suite.entities, &suite.store_entities) {
                Ok(b) => b,
                Err(d) => {
                    for diag in d.0 {
                        if !report.broken.contains(&diag) {
                            report.broken.push(diag);
                        }
                    }
                    continue;
                }
            };
            let problems = fixture_problems(suite, &bundle);
            if !problems.is_empty() {
                for diag in problems {
                    if !report.broken.contains(&diag) {
                        report.broken.push(diag);
                    }
                }
                continue;
            }
            // Cases with entity files of their own run on the bundle loaded with those too.
            let mut own: BTreeMap<usize, Arc<Bundle>> = BTreeMap::new();
            let mut broken = false;
            for (i, case) in suite.file.cases.iter().enumerate().take(last + 1) {
                if case.entities.is_empty() {
                    continue;
                }
                let base = suite.path.parent().unwrap_or(Path::new("."));
                let mut files = suite.entities.clone();
                files.extend(case.entities.iter().map(|e| base.join(e)));
                match self.bundle_with(dir, &files, &suite.store_entities) {
                    Ok(b) => {
                        own.insert(i, b);
                    }
                    Err(d) => {
                        broken = true;
                        for diag in d.0 {
                            if !report.broken.contains(&diag) {
                                report.broken.push(diag);
                            }
                        }
                    }
                }
            }
            if broken {
                continue;
            }
            let run = self.run_on(suite, &bundle, &own, dir, last);
            self.rego_tests_of(&bundle, dir);
            out.runs.push(run);
        }
        report.suites.push(out);
    }

    fn run_on(
        &mut self,
        suite: &Suite,
        bundle: &Bundle,
        own: &BTreeMap<usize, Arc<Bundle>>,
        dir: &Path,
        last: usize,
    ) -> BundleRun {
        let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let hits = self.coverage.entry(key).or_default();
        if hits.engine.is_none() {
            hits.shown = dir.to_path_buf();
            hits.engine = Some(bundle.engine());
            hits.ids = bundle.backend().policy_ids().into_iter().collect();
        }
        let mut state = SuiteGrants::new(&suite.grants);
        let mut cases = Vec::new();
        for (i, case) in suite.file.cases.iter().enumerate().take(last + 1) {
            let started = WallClock::now();
            let on = own.get(&i).map_or(bundle, |b| b.as_ref());
            let actual = run_case(suite, case, on, &mut state);
            let elapsed = started.elapsed();
            if !self.opts.selects(&case.name) {
                continue;
            }
            hits.hit.extend(actual.policies.iter().cloned());
            let failures = compare(&case.expect, &actual);
            cases.push(CaseResult {
                name: case.name.clone(),
                line: suite.case_lines.get(i).copied().flatten(),
                passed: failures.is_empty(),
                failures,
                expected: case.expect.clone(),
                actual,
                rerun: rerun_command(&suite.path, &case.name, &self.opts.bundles),
                elapsed,
            });
        }
        BundleRun {
            bundle: dir.to_path_buf(),
            engine: bundle.engine(),
            revision: bundle.revision.clone(),
            cases,
        }
    }

    pub(crate) fn rego_tests_of(&mut self, bundle: &Bundle, dir: &Path) {
        if bundle.engine() != EngineKind::Rego || !self.rego_done.insert(dir.to_path_buf()) {
            return;
        }
        let Some(package) = bundle.manifest.rego.as_ref().map(|r| r.package.as_str()) else {
            return;
        };
        // `Bundle` hands out its backend only as `dyn PolicyBackend`, so the test rules run on a second load of the
        // same files; a bundle that loaded once loads again.
        match RegoBackend::load_with_data(
            &bundle.dir,
            &bundle.policy_files,
            package,
            &bundle.data_files,
        ) {
            Ok(rego) => self.rego_tests.extend(
                rego.run_tests()
                    .into_iter()
                    .filter(|t| self.opts.selects(&t.name))
                    // Named as the run named the bundle, which may differ from where it was loaded.
                    .map(|t| RegoTestResult {
                        bundle: dir.to_path_buf(),
                        ..t
                    }),
            ),
            Err(d) => self.rego_tests.push(RegoTestResult {
                bundle: dir.to_path_buf(),
                name: "(loading the Rego test rules)".into(),
                file: None,
                passed: false,
                message: Some(d.to_string()),
            }),
        }
    }

    /// Adds coverage and Rego test results to `report`.
    pub fn finish(self, mut report: Report) -> Report {
        report.coverage = self
            .coverage
            .into_values()
            .filter_map(|h| {
                let engine = h.engine?;
                let uncovered = h.ids.difference(&h.hit).cloned().collect();
                Some(Coverage {
                    bundle: h.shown,
                    engine,
                    policies: h.ids.len(),
                    uncovered,
                })
            })
            .collect();
        report.rego_tests = self.rego_tests;
        report
    }
}

/// What in a suite's fixtures and cases cannot happen with `bundle`: a grant for a role the bundle does not define
/// (the lifecycle refuses to create one), an entity type or action the schema does not declare, a resource the
/// action does not apply to. Such a case would pass or fail for a reason that no real request can have (a typo in a
/// principal's type makes every expected deny pass), so the suite is refused instead, each problem at its line. With
/// `[cedar] validation = "warn"`, cases in Cedar's request form are not checked against the schema.
fn fixture_problems(suite: &Suite, bundle: &Bundle) -> Vec<Diagnostic> {
    let backend = bundle.backend();
    let shown = bundle.dir.display();
    let mut out = Vec::new();
    let mut push = |line: Option<usize>, msg: String| {
        let msg = format!("{msg} (bundle {shown})");
        out.push(match line {
            Some(l) => Diagnostic::at(&suite.path, l, 1, msg),
            None => Diagnostic::file(&suite.path, msg),
        });
    };
    for (g, line) in suite.grants.iter().zip(&suite.grant_lines) {
        if !bundle.roles.contains_key(&g.role) {
            let defined: Vec<&str> = bundle.roles.keys().map(String::as_str).collect();
            push(
                *line,
                format!(
                    "grant `{}`: role `{}` is not defined in the bundle's [roles] (it defines: {})",
                    g.id,
                    g.role,
                    defined.join(", ")
                ),
            );
        }
        for (what, ty) in [("principal", &g.principal.ty), ("scope", &g.scope.ty)] {
            if let Err(msg) = backend.check_entity_type(ty) {
                push(*line, format!("grant `{}`: {what}: {msg}", g.id));
            }
        }
    }
    // `[cedar] validation = "warn"` decides as `cedar authorize` does without validating: a case in Cedar's request
    // form (an application's own request) is decided as it is, whatever the schema declares.
    let unvalidated = bundle
        .manifest
        .cedar
        .as_ref()
        .is_some_and(|c| c.validation == crate::manifest::CedarValidation::Warn);
    for (case, line) in suite.file.cases.iter().zip(&suite.case_lines) {
        let name = &case.name;
        if unvalidated && case.cedar_request {
            continue;
        }
        if let Err(msg) = backend.check_entity_type(&case.principal.ty) {
            push(*line, format!("case `{name}`: principal: {msg}"));
        }
        if let Target::Direct { action, resource } = &case.target {
            let parents: Vec<&str> = resource.parents.iter().map(|p| p.ty.as_str()).collect();
            if let Err(msg) = backend.check_route(action, &resource.entity.ty, &parents) {
                push(*line, format!("case `{name}`: {msg}"));
            }
        }
    }
    out
}

/// Loads the bundle in `dir` and runs its tests against it: the suites it lists under `tests` (whatever bundles
/// they name) and, for Rego, its `test_*` rules. `None` when it has neither.
pub fn check(dir: &Path) -> Result<(Arc<Bundle>, Option<Report>), Diagnostics> {
    let mut runner = Runner::new(RunOptions::new().with_bundles(vec![dir.to_path_buf()]));
    let bundle = runner.bundle(dir)?;
    let mut report = Report::default();
    runner.rego_tests_of(&bundle, dir);
    if !bundle.test_files.is_empty() {
        runner.run_paths_into(&bundle.test_files, &mut report);
    }
    let report = runner.finish(report);
    if report.suites.is_empty() && report.rego_tests.is_empty() && report.broken.is_empty() {
        return Ok((bundle, None));
    }
    Ok((bundle, Some(report)))
}

/// The grants of one suite's run on one bundle: a store that spends uses as the proxy's does, and the order the
/// grants were added in, which is the order a decision sees them.
struct SuiteGrants {
    store: MemStore,
    order: Vec<String>,
}

impl SuiteGrants {
    fn new(grants: &[Grant]) -> Self {
        Self {
            store: MemStore::with_grants(grants.iter().cloned()),
            order: grants.iter().map(|g| g.id.clone()).collect(),
        }
    }

    fn add(&mut self, grant: Grant) -> Result<(), StoreError> {
        self.store.put_grant(&grant)?;
        self.order.push(grant.id);
        Ok(())
    }

    fn of(&self, principal: &EntityRef) -> Result<Vec<Arc<Grant>>, StoreError> {
        let mut mine = Vec::new();
        for id in &self.order {
            if let Some(g) = self
                .store
                .get_grant(id)?
                .filter(|g| &g.principal == principal)
            {
                mine.push(Arc::new(g));
            }
        }
        Ok(mine)
    }

    /// Spends one use of each grant the decision used, as the proxy does after serving an allowed request.
    fn consume(&self, decision: &Decision, now: UnixTime) -> Result<(), StoreError> {
        for id in &decision.grants_used {
            self.store.consume_use(id, now)?;
        }
        Ok(())
    }
}

/// Builds the case's request, decides it on `bundle`, and applies `consume` to `state`.
fn run_case(suite: &Suite, case: &CaseSpec, bundle: &Bundle, state: &mut SuiteGrants) -> Actual {
    let now = case
        .at
        .map_or(suite.file.now.0, |t| t.resolve(suite.file.now.0));
    let fixture = suite.file.principals.get(&case.principal);
    let groups = case
        .groups
        .clone()
        .or_else(|| fixture.map(|f| f.groups.clone()))
        .unwrap_or_default();
    let base = ContextSpec {
        claims: fixture.map(|f| f.claims.clone()).unwrap_or_default(),
        ..ContextSpec::default()
    };
    let spec = base.merged(&suite.file.context).merged(&case.context);
    let mut context = Context::at(now);
    context.source_ip = spec.source_ip;
    context.headers = spec.headers;
    context.claims = spec.claims;
    context.attrs = spec.attrs;
    let principal = Principal {
        entity: case.principal.clone(),
        groups,
        group_type: fixture.and_then(|f| f.group_type.clone()),
        attrs: fixture.map(|f| f.attrs.clone()).unwrap_or_default(),
    };

    // An HTTP case has a digest (of the request and its body); a direct one does not.
    let (action, resource, body) = match &case.target {
        Target::Direct { action, resource } => (action.clone(), resource.clone(), None),
        Target::Http(http) => {
            let Some(m) = bundle
                .routes
                .find(&http.method, http.host.as_deref(), &http.path)
            else {
                return Actual {
                    decision: ExpectedDecision::Unmatched.as_str().into(),
                    ..Actual::default()
                };
            };
            let method = http.method.to_ascii_uppercase();
            context.method = Some(method.clone());
            context.path = Some(http.path.clone());
            context.host.clone_from(&http.host);
            context.query = Some(http.query.clone());
            (
                m.route.action.clone(),
                m.resource,
                Some(http.body.as_bytes()),
            )
        }
    };
    let mut request = AuthzRequest {
        principal,
        action,
        resource,
        context,
        digest: None,
    };
    if let Some(body) = body {
        // The suite's context headers stand for those the proxy binds (its context headers).
        let headers: Vec<BoundHeader<'_>> = request
            .context
            .headers
            .iter()
            .map(|(name, value)| BoundHeader {
                name,
                values: vec![value.as_bytes()],
            })
            .collect();
        let digest = request_digest(&request, &headers, body);
        if case.approved_request {
            if let Err(e) = state.add(approval(case, &request.resource.entity, &digest, now)) {
                return store_failed(e);
            }
        }
        request.digest = Some(digest);
    }
    let mine = match state.of(&case.principal) {
        Ok(mine) => mine,
        Err(e) => return store_failed(e),
    };
    let decision = bundle.decide(&request, &mine);
    if case.consume && decision.is_allow() {
        if let Err(e) = state.consume(&decision, now) {
            return store_failed(e);
        }
    }
    Actual {
        decision: decision.effect.as_str().into(),
        action: Some(request.action),
        resource: Some(request.resource.entity.to_string()),
        policies: decision.policies,
        grants_used: decision.grants_used,
        errors: decision.errors,
        policy_errors: decision.policy_errors,
        engine_answer: decision.engine_answer,
        break_glass: decision.break_glass,
    }
}

/// A grant bound to exactly this request, as an approver's "yes" to a held request would create.
fn approval(case: &CaseSpec, scope: &EntityRef, digest: &str, now: UnixTime) -> Grant {
    Grant {
        id: format!("approval:{}", case.name),
        principal: case.principal.clone(),
        role: "approval".into(),
        scope: scope.clone(),
        starts_at: now,
        expires_at: now.saturating_add(APPROVAL_TTL),
        max_uses: Some(1),
        uses: 0,
        status: GrantStatus::Active,
        approvers: vec!["policy-suite".into()],
        reason: format!("approved_request in case `{}`", case.name),
        break_glass: false,
        request_digest: Some(digest.to_string()),
        request_id: None,
    }
}

/// A case whose grants could not be read or spent: an evaluation error, as a store error is on the decision path.
fn store_failed(e: StoreError) -> Actual {
    Actual {
        decision: crate::decision::Effect::Deny.as_str().into(),
        errors: vec![e.to_string()],
        ..Actual::default()
    }
}

fn compare(expect: &Expect, actual: &Actual) -> Vec<String> {
    let mut out = Vec::new();
    if expect.decision.as_str() != actual.decision {
        out.push(format!(
            "decision: expected {}, got {}",
            expect.decision.as_str(),
            actual.decision
        ));
    }
    if let Some(p) = &expect.policies {
        if !same_set(p, &actual.policies) {
            out.push(format!(
                "policies: expected {}, got {}",
                list(p),
                list(&actual.policies)
            ));
        }
    }
    if let Some(g) = &expect.grants_used {
        if !same_set(g, &actual.grants_used) {
            out.push(format!(
                "grants_used: expected {}, got {}",
                list(g),
                list(&actual.grants_used)
            ));
        }
    }
    if let Some(b) = expect.break_glass {
        if b != actual.break_glass {
            out.push(format!(
                "break_glass: expected {b}, got {}",
                actual.break_glass
            ));
        }
    }
    match (&expect.errors, actual.errors.is_empty()) {
        (ExpectErrors::Any(false), false) => out.push(format!(
            "errors: evaluation failed: {}",
            actual.errors.join("; ")
        )),
        (ExpectErrors::Any(true), true) => {
            out.push("errors: expected evaluation errors, got none".into());
        }
        (ExpectErrors::Policies(want), _) => {
            let got: Vec<String> = actual
                .policy_errors
                .iter()
                .map(|e| e.policy.clone())
                .collect();
            // An error outside the policies (a request that could not be built, a store failure) names none.
            if !same_set(want, &got) || (got.is_empty() && !actual.errors.is_empty()) {
                out.push(format!(
                    "errors: expected policies {} to err, got {}{}",
                    list(want),
                    list(&got),
                    if actual.errors.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", actual.errors.join("; "))
                    }
                ));
            }
        }
        _ => {}
    }
    out
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
}

/// `[a, b]`, or `[]`.
pub(crate) fn list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

/// `jitgate test <file> --run '^<name>$'` (plus the bundle override, if any), quoted for a POSIX shell.
fn rerun_command(file: &Path, name: &str, bundles: &[PathBuf]) -> String {
    let mut cmd = format!(
        "jitgate test {} --run {}",
        shell_quote(&file.to_string_lossy()),
        shell_quote(&format!("^{}$", regex::escape(name)))
    );
    for b in bundles {
        cmd.push_str(" --bundle ");
        cmd.push_str(&shell_quote(&b.to_string_lossy()));
    }
    cmd
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn rerun_is_exact_and_quoted() {
        let c = rerun_command(
            Path::new("policy-tests/a b.yaml"),
            "alice's (one) grant",
            &[],
        );
        assert_eq!(
            c,
            r"jitgate test 'policy-tests/a b.yaml' --run '^alice'\''s \(one\) grant$'"
        );
        let c = rerun_command(Path::new("t.yaml"), "x", &[PathBuf::from("b")]);
        assert_eq!(c, "jitgate test t.yaml --run '^x$' --bundle b");
    }

    #[test]
    fn expected_erroring_policies_are_compared_as_a_set() {
        let expect = Expect {
            decision: ExpectedDecision::Deny,
            policies: None,
            grants_used: None,
            break_glass: None,
            errors: ExpectErrors::Policies(vec!["p1".into()]),
        };
        let erred = |ids: &[&str]| Actual {
            decision: "deny".into(),
            errors: ids.iter().map(|i| format!("error in {i}")).collect(),
            policy_errors: ids
                .iter()
                .map(|i| PolicyError {
                    policy: (*i).into(),
                    message: "boom".into(),
                })
                .collect(),
            ..Actual::default()
        };
        assert!(compare(&expect, &erred(&["p1"])).is_empty());
        let f = compare(&expect, &erred(&["p1", "p2"]));
        assert_eq!(
            f,
            vec!["errors: expected policies [p1] to err, got [p1, p2] (error in p1; error in p2)"]
        );
        assert_eq!(
            compare(&expect, &erred(&[])).len(),
            1,
            "no error at all fails"
        );
        // An error outside the policies names none, and does not pass for an expected policy error.
        let outside = Actual {
            decision: "deny".into(),
            errors: vec!["store down".into()],
            ..Actual::default()
        };
        assert_eq!(compare(&expect, &outside).len(), 1);
    }

    #[test]
    fn compare_flags_every_mismatch_and_errors_by_default() {
        let expect = Expect {
            decision: ExpectedDecision::Deny,
            policies: Some(vec!["a".into(), "b".into()]),
            grants_used: None,
            break_glass: Some(false),
            errors: ExpectErrors::Any(false),
        };
        let ok = Actual {
            decision: "deny".into(),
            policies: vec!["b".into(), "a".into()],
            ..Actual::default()
        };
        assert!(compare(&expect, &ok).is_empty());
        let broken = Actual {
            errors: vec!["boom".into()],
            ..ok.clone()
        };
        assert_eq!(
            compare(&expect, &broken).len(),
            1,
            "a deny caused by an error must not pass"
        );
        let wrong = Actual {
            decision: "allow".into(),
            policies: vec!["a".into()],
            break_glass: true,
            ..ok
        };
        assert_eq!(compare(&expect, &wrong).len(), 3);
    }
}
