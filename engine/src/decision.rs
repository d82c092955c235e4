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
}

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
        }
    }

    /// Whether the request may proceed.
    pub fn is_allow(&self) -> bool {
        self.effect == Effect::Allow
    }
}
