//! The Cedar backend (stub: filled in by the Cedar work).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::PolicyBackend;
use crate::decision::{EngineKind, Evaluation};
use crate::diag::{Diagnostic, Diagnostics};
use crate::grant::Grant;
use crate::request::AuthzRequest;

/// A validated Cedar policy set with its schema.
#[derive(Debug)]
pub struct CedarBackend {}

impl CedarBackend {
    /// Loads and validates `schema` and `policy_files` (paths are absolute or relative to the working directory).
    pub fn load(
        _dir: &Path,
        schema: &Path,
        _policy_files: &[PathBuf],
    ) -> Result<Self, Diagnostics> {
        Err(Diagnostic::file(schema, "the Cedar backend is not built yet").into())
    }
}

impl PolicyBackend for CedarBackend {
    fn engine(&self) -> EngineKind {
        EngineKind::Cedar
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
