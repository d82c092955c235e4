//! The Rego backend (stub: filled in by the Rego work).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::PolicyBackend;
use crate::decision::{EngineKind, Evaluation};
use crate::diag::{Diagnostic, Diagnostics};
use crate::grant::Grant;
use crate::request::AuthzRequest;

/// A validated Rego policy set.
#[derive(Debug)]
pub struct RegoBackend {}

impl RegoBackend {
    /// Loads and validates `policy_files` with `package` as the deciding package.
    pub fn load(
        dir: &Path,
        _policy_files: &[PathBuf],
        _package: &str,
    ) -> Result<Self, Diagnostics> {
        Err(Diagnostic::file(dir, "the Rego backend is not built yet").into())
    }
}

impl PolicyBackend for RegoBackend {
    fn engine(&self) -> EngineKind {
        EngineKind::Rego
    }
    fn evaluate(&self, _request: &AuthzRequest, _grants: &[Arc<Grant>]) -> Evaluation {
        Evaluation {
            errors: vec!["not built".into()],
            ..Default::default()
        }
    }
    fn policy_ids(&self) -> Vec<String> {
        Vec::new()
    }
}
