//! Decisions: `Allow`, `Deny` or `Hold`, with what determined them.

use serde::{Deserialize, Serialize};

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// The request may proceed.
    Allow,
    /// The request is refused (the default: only an explicit allow allows).
    #[default]
    Deny,
    /// The request may proceed only after someone approves this exact request.
    Hold,
}

impl Effect {
    /// `allow`, `deny` or `hold`.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::Hold => "hold",
        }
    }
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which policy language a bundle is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Cedar (`cedar-policy`).
    Cedar,
    /// Rego (`regorus`).
    Rego,
}

impl EngineKind {
    /// `cedar` or `rego`.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Cedar => "cedar",
            EngineKind::Rego => "rego",
        }
    }
}

/// A policy (Cedar) or decision rule (Rego) whose evaluation failed, with the language's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyError {
    /// The policy id (Cedar, a template link's id for a link) or the rule's path (Rego, e.g. `data.app.deny`).
    pub policy: String,
    /// What went wrong, as the language says it.
    pub message: String,
}

/// What the policy language itself answered when some policies erred, ignoring jitgate's fail-closed rule: Cedar
/// skips an erroring policy and decides with the others, so its answer may be `allow` where jitgate denies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineAnswer {
    /// The language's own effect (`hold` when it allowed and a hold policy fired).
    pub effect: Effect,
    /// The policies that determined it (for `hold`: the hold policies that fired).
    pub policies: Vec<String>,
}

/// A permit that came nearest to allowing a request that no permit allowed (the short form of an explanation, for
/// a 403's record): its scope matched but its condition did not hold, or else its scope is the part that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The permit's id.
    pub policy: String,
    /// `condition false` (its scope matched) or `scope not matched: <the scope that did not match>`.
    pub why: String,
}

/// What a policy backend concluded, before grant selection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Evaluation {
    /// The effect; any error must already have turned this into `Deny`.
    pub effect: Effect,
    /// Ids of the policies that determined the effect (for `Hold`: the hold policies that fired).
    pub policies: Vec<String>,
    /// Roles the determining permit policies rest on (used to pick the grant that was used).
    pub roles: Vec<String>,
    /// Evaluation errors (each one forces a deny).
    pub errors: Vec<String>,
    /// The erroring policies, each with its message (the same errors as `errors`, by policy).
    pub policy_errors: Vec<PolicyError>,
    /// With errors: what the language itself answered (see [`EngineAnswer`]); `None` without errors or when the
    /// language has no answer (a Rego rule that failed to evaluate).
    pub engine_answer: Option<EngineAnswer>,
    /// On a deny that no policy determined and no error caused: the permits nearest to allowing (at most
    /// [`MAX_CANDIDATES`]).
    pub nearest: Vec<Candidate>,
}

/// How many [`Candidate`]s a deny carries at most.
pub const MAX_CANDIDATES: usize = 3;

/// A final decision, as logged and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Allow, deny or hold.
    pub effect: Effect,
    /// Determining policy ids.
    pub policies: Vec<String>,
    /// Ids of the grants the decision rested on (at most one role grant, plus a request-bound approval).
    pub grants_used: Vec<String>,
    /// Evaluation errors; non-empty means the decision is a deny.
    pub errors: Vec<String>,
    /// The bundle revision that decided.
    pub revision: String,
    /// The bundle's engine.
    pub engine: EngineKind,
    /// Whether a break-glass grant was used.
    pub break_glass: bool,
    /// The erroring policies with their messages (non-empty means the decision is a deny).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_errors: Vec<PolicyError>,
    /// With errors: what the policy language itself answered, ignoring jitgate's fail-closed rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_answer: Option<EngineAnswer>,
    /// On a deny that no policy determined: the permits that came nearest (see [`Candidate`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nearest: Vec<Candidate>,
}

impl Decision {
    /// A deny caused by an error outside the policies (store, log, ...): fail closed.
    pub fn error(revision: &str, engine: EngineKind, error: impl Into<String>) -> Self {
        Decision {
            effect: Effect::Deny,
            policies: Vec::new(),
            grants_used: Vec::new(),
            errors: vec![error.into()],
            revision: revision.to_string(),
            engine,
            break_glass: false,
            policy_errors: Vec::new(),
            engine_answer: None,
            nearest: Vec::new(),
        }
    }

    /// Whether the request may proceed.
    pub fn is_allow(&self) -> bool {
        self.effect == Effect::Allow
    }

    /// What a decision record keeps of the explanation, under `context.explain` (see
    /// `schemas/decision-record.schema.json`): the erroring policies and the language's own answer, or, for a deny
    /// no policy determined, `"no permit matched"` with the nearest candidates. `None` when there is nothing to say
    /// (every allow, and denies a forbid determined).
    pub fn explain_json(&self) -> Option<serde_json::Value> {
        if !self.policy_errors.is_empty() || self.engine_answer.is_some() {
            let mut m = serde_json::Map::new();
            m.insert(
                "policy_errors".into(),
                serde_json::to_value(&self.policy_errors).unwrap_or_default(),
            );
            if let Some(a) = &self.engine_answer {
                m.insert(
                    "engine_answer".into(),
                    serde_json::to_value(a).unwrap_or_default(),
                );
            }
            return Some(serde_json::Value::Object(m));
        }
        if self.effect == Effect::Deny && self.policies.is_empty() && self.errors.is_empty() {
            return Some(serde_json::json!({
                "summary": "no permit matched",
                "nearest": self.nearest,
            }));
        }
        None
    }
}
