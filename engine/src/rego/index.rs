//! The action index of a Rego bundle: the decision rules split into buckets by the action they are written for, so
//! a decision evaluates only the `allow` / `deny` / `hold` definitions that can apply to its action.
//!
//! regorus evaluates every definition of a rule it is asked for, so without an index a bundle of 1,000 `allow`
//! rules costs a thousand body evaluations per decision even though each starts with `input.action == "..."`.
//!
//! # What is indexed
//! A definition of `allow`, `deny` or `hold` in the deciding package is *guarded* when every one of its bodies has,
//! as a top-level statement without `with`, one of
//! - `input.action == "<name>"` (either side; `=` too),
//! - `input.action in {"<a>", "<b>", ...}` or `input.action in ["<a>", ...]` (string literals only).
//!
//! A guarded definition cannot contribute for an action outside its guard: the statement is a conjunct of the body.
//! Set definitions (`contains`) cannot conflict, so leaving one out cannot hide an error either. Every other rule
//! (helpers, other packages, unguarded decision rules, complete rules) is kept in every bucket.
//!
//! A bundle in which any rule other than a `test_*` rule uses `with` is not indexed: `allow with input.action as
//! "x"` inside another rule would ask a bucket for an action whose rules it left out.
//!
//! # How buckets are built
//! The guarded actions are spread over at most [`MAX_BUCKETS`] buckets; unguarded-for actions use a fallback bucket
//! with no guarded definition at all. A bucket's sources are the bundle's files with the left-out definitions
//! replaced by their line breaks (and spaces for the text before the next rule on the same line), so every position
//! a runtime error reports is the position in the real file.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use parking_lot::Mutex;
use regorus::unstable::{AssignOp, BoolOp, Expr, Literal, Module, Ref, Rule, RuleHead};
use regorus::{Engine, Value};

use super::RULES;

/// At most this many buckets (each a prepared engine); beyond it several actions share one.
pub(super) const MAX_BUCKETS: usize = 256;

/// The buckets of an indexed bundle.
pub(super) struct ActionIndex {
    /// Prepared engines: one per bucket, the fallback last. Locked only to clone one for a thread.
    pub(super) engines: Vec<Mutex<Engine>>,
    /// For each engine, which of `deny`, `allow`, `hold` still has a definition in it.
    pub(super) declared: Vec<[bool; 3]>,
    /// Guarded action -> bucket.
    by_action: HashMap<String, usize>,
}

impl ActionIndex {
    /// No index: one engine decides every action.
    pub(super) fn single(engine: Engine, declared: [bool; 3]) -> Self {
        ActionIndex {
            engines: vec![Mutex::new(engine)],
            declared: vec![declared],
            by_action: HashMap::new(),
        }
    }

    /// How many engines decide (1 when the bundle is not indexed).
    pub(super) fn len(&self) -> usize {
        self.engines.len()
    }

    /// The bucket that decides `action`.
    pub(super) fn slot(&self, action: &str) -> usize {
        self.by_action
            .get(action)
            .copied()
            .unwrap_or(self.engines.len().saturating_sub(1))
    }
}

/// One guarded decision definition: where it sits and which actions it is written for.
struct Guarded {
    rule: usize,
    start: usize,
    end: usize,
    actions: BTreeSet<String>,
}

/// Builds the index, or `None` when the bundle has fewer than two guarded actions (nothing to gain) or a bucket
/// fails to build (the bundle then decides with the full engine, which the load has already validated).
///
/// `files` are the bundle's policy files in load order with their package (`data.x.y`) and source; `modules`
/// are the parsed modules of the full engine in the same order.
pub(super) fn build(
    files: &[(PathBuf, String, String)],
    modules: &[Ref<Module>],
    data: &[regorus::Value],
    data_package: &str,
    package_declared: [bool; 3],
    v0: &[bool],
) -> Option<ActionIndex> {
    if files.len() != modules.len() || uses_with(files, modules) {
        return None;
    }
    // Per file: the guarded definitions, and which decision rules have a definition that stays everywhere.
    let mut guarded: Vec<Vec<Guarded>> = Vec::with_capacity(files.len());
    let mut always = [false; 3];
    let mut actions: BTreeSet<String> = BTreeSet::new();
    for ((_, pkg, source), module) in files.iter().zip(modules) {
        let mut found = Vec::new();
        if pkg == data_package {
            for (rule, start, end) in regions(module, source.len()) {
                let Some(slot) = decision_root(rule) else {
                    continue;
                };
                // A range that is not inside the source (never seen) keeps the rule everywhere.
                match guard_of(rule).filter(|_| is_set_definition(rule) && start < end) {
                    Some(set) => {
                        actions.extend(set.iter().cloned());
                        found.push(Guarded {
                            rule: slot,
                            start,
                            end,
                            actions: set,
                        });
                    }
                    _ => {
                        if let Some(a) = always.get_mut(slot) {
                            *a = true;
                        }
                    }
                }
            }
        }
        found.sort_by_key(|g| g.start);
        guarded.push(found);
    }
    if actions.len() < 2 {
        return None;
    }

    let buckets = actions.len().min(MAX_BUCKETS);
    let by_action: HashMap<String, usize> = actions
        .iter()
        .enumerate()
        .map(|(i, a)| (a.clone(), i % buckets))
        .collect();
    let mut members: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); buckets + 1];
    for (action, bucket) in &by_action {
        if let Some(m) = members.get_mut(*bucket) {
            m.insert(action.as_str());
        }
    }

    let mut engines = Vec::with_capacity(buckets + 1);
    let mut declared = Vec::with_capacity(buckets + 1);
    for bucket_actions in &members {
        let mut engine = Engine::new();
        let mut present = always;
        for (i, ((file, _, source), defs)) in files.iter().zip(&guarded).enumerate() {
            let keep = |g: &Guarded| {
                g.actions
                    .iter()
                    .any(|a| bucket_actions.contains(a.as_str()))
            };
            for g in defs.iter().filter(|g| keep(g)) {
                if let Some(p) = present.get_mut(g.rule) {
                    *p = true;
                }
            }
            let text = blank_out(source, defs.iter().filter(|g| !keep(g)));
            engine.set_rego_v0(v0.get(i).copied().unwrap_or(false));
            engine.add_policy(file.display().to_string(), text).ok()?;
        }
        for d in data {
            engine.add_data(d.clone()).ok()?;
        }
        for (p, d) in present.iter_mut().zip(package_declared) {
            *p &= d;
        }
        // Prepare once (analysis, scheduling), so clones start prepared. A bucket may define no decision rule at
        // all (the fallback of a bundle whose every rule is guarded); then there is nothing to prepare.
        if let Some(rule) = RULES.iter().zip(present).find_map(|(r, p)| p.then_some(r)) {
            engine.eval_rule(format!("{data_package}.{rule}")).ok()?;
        }
        engines.push(Mutex::new(engine));
        declared.push(present);
    }
    Some(ActionIndex {
        engines,
        declared,
        by_action,
    })
}

/// Whether any rule other than a `test_*` rule, in any package, uses `with`. `allow with input.action as "x"` inside
/// another rule would evaluate `allow` for an action whose rules its bucket left out, so such a bundle is not
/// indexed. The scan is textual (comments and string literals skipped): a false alarm only costs speed.
fn uses_with(files: &[(PathBuf, String, String)], modules: &[Ref<Module>]) -> bool {
    files.iter().zip(modules).any(|((_, _, source), module)| {
        regions(module, source.len())
            .into_iter()
            .any(|(rule, start, end)| {
                !rule_name(rule).is_some_and(|n| n.starts_with("test_"))
                // An unreadable range counts as a `with`: the index is then off, which is always correct.
                && source.get(start..end).is_none_or(|text| has_code_word(text, "with"))
            })
    })
}

/// Each rule of `module` with the byte range it owns in a source of `len` bytes: from its start to where the next
/// rule starts. A rule's span ends inside its last token (a closing quote is not part of a string token's span),
/// so the span's end cannot be used.
fn regions(module: &Module, len: usize) -> Vec<(&Ref<Rule>, usize, usize)> {
    let mut starts: Vec<usize> = module
        .policy
        .iter()
        .filter_map(|r| usize::try_from(rule_span(r).start).ok())
        .collect();
    starts.sort_unstable();
    module
        .policy
        .iter()
        .map(|rule| {
            let start = usize::try_from(rule_span(rule).start).unwrap_or(len);
            let end = starts.iter().copied().find(|s| *s > start).unwrap_or(len);
            (rule, start, end)
        })
        .collect()
}

fn rule_name(rule: &Rule) -> Option<&str> {
    let refr = match rule {
        Rule::Spec { head, .. } => match head {
            RuleHead::Set { refr, .. }
            | RuleHead::Compr { refr, .. }
            | RuleHead::Func { refr, .. } => refr,
        },
        Rule::Default { refr, .. } => refr,
    };
    root_var(refr)
}

/// Whether `word` appears as an identifier in Rego source, outside comments and string literals.
fn has_code_word(text: &str, word: &str) -> bool {
    let mut code = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                chars.by_ref().find(|c| *c == '\n');
                code.push(' ');
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match c {
                        _ if escaped => escaped = false,
                        '\\' => escaped = true,
                        '"' => break,
                        _ => {}
                    }
                }
                code.push(' ');
            }
            '`' => {
                chars.by_ref().find(|c| *c == '`');
                code.push(' ');
            }
            c => code.push(c),
        }
    }
    code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| w == word)
}

/// How the decision rules of `data_package` fall under the index: `(guarded, unguarded)`, each unguarded rule
/// named by its policy id when its head gives one, else by `file:line`.
pub(super) fn describe(
    files: &[(PathBuf, String, String)],
    modules: &[Ref<Module>],
    data_package: &str,
) -> (usize, Vec<String>) {
    let mut guarded = 0;
    let mut unguarded = Vec::new();
    for ((file, pkg, _), module) in files.iter().zip(modules) {
        if pkg != data_package {
            continue;
        }
        for rule in &module.policy {
            if decision_root(rule).is_none() {
                continue;
            }
            if is_set_definition(rule) && guard_of(rule).is_some() {
                guarded += 1;
            } else {
                let span = rule_span(rule);
                unguarded.push(
                    policy_id_of(rule)
                        .unwrap_or_else(|| format!("{}:{}", file.display(), span.line)),
                );
            }
        }
    }
    (guarded, unguarded)
}

/// The policy id in a decision rule's head: `allow contains "<id>"` or `allow contains {"policy": "<id>", ...}`.
fn policy_id_of(rule: &Rule) -> Option<String> {
    let Rule::Spec {
        head: RuleHead::Set { key: Some(key), .. },
        ..
    } = rule
    else {
        return None;
    };
    match key.as_ref() {
        Expr::Object { fields, .. } => fields.iter().find_map(|(_, k, v)| {
            (literal(k).as_deref() == Some("policy"))
                .then(|| literal(v))
                .flatten()
        }),
        other => literal(other),
    }
}

/// `source` with each left-out definition replaced by its line breaks, plus spaces up to where the text after it
/// starts, so the kept text keeps its line and column.
fn blank_out<'a>(source: &str, left_out: impl Iterator<Item = &'a Guarded>) -> String {
    let mut out = String::with_capacity(source.len());
    let mut at = 0;
    for g in left_out {
        if g.start < at {
            continue;
        }
        let (Some(before), Some(removed)) = (source.get(at..g.start), source.get(g.start..g.end))
        else {
            continue;
        };
        out.push_str(before);
        let newlines = removed.matches('\n').count();
        out.extend(std::iter::repeat_n('\n', newlines));
        let tail = removed.rsplit('\n').next().map_or(0, |t| t.chars().count());
        let pad = if newlines == 0 {
            removed.chars().count()
        } else {
            tail
        };
        out.extend(std::iter::repeat_n(' ', pad));
        at = g.end;
    }
    out.push_str(source.get(at..).unwrap_or(""));
    out
}

/// Which decision set (`deny`, `allow`, `hold`) a rule defines, in any form (`contains`, complete, `default`,
/// a path below it), if any.
fn decision_root(rule: &Rule) -> Option<usize> {
    let name = rule_name(rule)?;
    RULES.iter().position(|r| *r == name)
}

/// `allow contains x` (or `deny` / `hold`) written directly on the name, the only form the index leaves out.
fn is_set_definition(rule: &Rule) -> bool {
    matches!(
        rule,
        Rule::Spec {
            head: RuleHead::Set { refr, key: Some(_), .. },
            ..
        } if matches!(refr.as_ref(), Expr::Var { .. })
    )
}

/// The variable a reference starts from (`deny` for `deny`, `deny.x`, `deny[x]`).
fn root_var(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Var { value, .. } => string(value),
        Expr::RefDot { refr, .. } | Expr::RefBrack { refr, .. } => root_var(refr),
        _ => None,
    }
}

fn rule_span(rule: &Rule) -> &regorus::unstable::Span {
    match rule {
        Rule::Spec { span, .. } | Rule::Default { span, .. } => span,
    }
}

/// The union of a rule's bodies' guards; `None` when a body has no guard.
fn guard_of(rule: &Rule) -> Option<BTreeSet<String>> {
    let Rule::Spec { bodies, .. } = rule else {
        return None;
    };
    if bodies.is_empty() {
        return None;
    }
    let mut all = BTreeSet::new();
    for body in bodies {
        let set = body
            .query
            .stmts
            .iter()
            .filter(|s| s.with_mods.is_empty())
            .find_map(|s| match &s.literal {
                Literal::Expr { expr, .. } => actions_of(expr),
                _ => None,
            })?;
        all.extend(set);
    }
    Some(all)
}

/// The actions a guard expression admits.
fn actions_of(expr: &Expr) -> Option<BTreeSet<String>> {
    match expr {
        Expr::BoolExpr {
            op: BoolOp::Eq,
            lhs,
            rhs,
            ..
        }
        | Expr::AssignExpr {
            op: AssignOp::Eq,
            lhs,
            rhs,
            ..
        } => {
            let name = if is_input_action(lhs) {
                literal(rhs)?
            } else if is_input_action(rhs) {
                literal(lhs)?
            } else {
                return None;
            };
            Some(BTreeSet::from([name]))
        }
        Expr::Membership {
            key: None,
            value,
            collection,
            ..
        } if is_input_action(value) => match collection.as_ref() {
            Expr::Set { items, .. } | Expr::Array { items, .. } if !items.is_empty() => {
                items.iter().map(|i| literal(i)).collect()
            }
            _ => None,
        },
        _ => None,
    }
}

fn is_input_action(expr: &Expr) -> bool {
    let Expr::RefDot { refr, field, .. } = expr else {
        return false;
    };
    let Expr::Var { value, .. } = refr.as_ref() else {
        return false;
    };
    string(value) == Some("input") && string(&field.1) == Some("action")
}

fn literal(expr: &Expr) -> Option<String> {
    match expr {
        Expr::String { value, .. } | Expr::RawString { value, .. } => {
            string(value).map(str::to_string)
        }
        _ => None,
    }
}

fn string(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s.as_ref()),
        _ => None,
    }
}

/// How the index split a bundle, for tests and diagnostics: bucket -> actions.
#[cfg(test)]
pub(super) fn layout(index: &ActionIndex) -> std::collections::BTreeMap<usize, BTreeSet<String>> {
    let mut out: std::collections::BTreeMap<usize, BTreeSet<String>> = Default::default();
    for (a, b) in &index.by_action {
        out.entry(*b).or_default().insert(a.clone());
    }
    out
}
