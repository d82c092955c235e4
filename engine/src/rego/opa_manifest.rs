//! An OPA bundle's `.manifest` (OPA's own format: `revision`, `roots`, `metadata`, `rego_version`,
//! `file_rego_versions`), read when a Rego bundle has one, so that an OPA bundle directory loads as it is. Checked as
//! OPA checks it: the roots do not overlap, and every package and every data path lies under a root.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::diag::{Diagnostic, Diagnostics, line_col, read_file};

/// The manifest's file name, at the top of the bundle directory.
pub const OPA_MANIFEST_FILE: &str = ".manifest";

/// The fields OPA defines that jitgate reads (`wasm` is accepted only when empty).
const FIELDS: [&str; 6] = [
    "revision",
    "roots",
    "metadata",
    "rego_version",
    "file_rego_versions",
    "wasm",
];

/// A parsed, checked `.manifest`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpaManifest {
    /// The bundle's revision as its author set it ("" when absent). jitgate's own revision stays the content hash.
    pub revision: String,
    /// The paths under `data` this bundle owns, `/`-separated, without leading or trailing `/` (`[""]`, all of
    /// `data`, when absent).
    pub roots: Vec<String>,
    /// Free-form metadata.
    pub metadata: serde_json::Map<String, Value>,
    /// The Rego version of the policy files: 1 (Rego v1, the default) or 0 (Rego v0 syntax).
    pub rego_version: u8,
    /// Per-file Rego versions, by path relative to the bundle (a leading `/` is dropped), over `rego_version`.
    pub file_rego_versions: BTreeMap<String, u8>,
    /// Line and column of the `roots` field (1:1 when absent), where errors about the roots point.
    #[serde(skip)]
    roots_at: (usize, usize),
}

impl Default for OpaManifest {
    fn default() -> Self {
        OpaManifest {
            revision: String::new(),
            roots: vec![String::new()],
            metadata: serde_json::Map::new(),
            rego_version: 1,
            file_rego_versions: BTreeMap::new(),
            roots_at: (1, 1),
        }
    }
}

impl OpaManifest {
    /// Reads `dir/.manifest` when there is one. A problem is an error naming the file, the field's line and what is
    /// wrong: invalid JSON, a field of the wrong type, an unknown field, a Rego version other than 0 or 1, a non-empty
    /// `wasm`, overlapping roots.
    pub fn read(dir: &Path) -> Result<Option<Self>, Diagnostics> {
        let path = dir.join(OPA_MANIFEST_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let source = read_file(&path)?;
        Self::parse(&path, &source).map(Some)
    }

    /// Parses and checks a manifest's text (`path` is named in errors).
    pub fn parse(path: &Path, source: &str) -> Result<Self, Diagnostics> {
        let value: Value = serde_json::from_str(source).map_err(|e| {
            Diagnostics::one(Diagnostic::at(
                path,
                e.line(),
                e.column(),
                format!("invalid JSON: {e}"),
            ))
        })?;
        let Value::Object(fields) = value else {
            return Err(Diagnostic::at(path, 1, 1, "a .manifest must be a JSON object").into());
        };
        let at = |field: &str, msg: String| field_diagnostic(path, source, field, msg);
        let mut m = OpaManifest::default();
        let mut errors = Vec::new();
        for (key, v) in &fields {
            match key.as_str() {
                "revision" => match v {
                    Value::String(s) => m.revision = s.clone(),
                    other => errors.push(at(
                        key,
                        format!("revision: expected a string, got {}", kind(other)),
                    )),
                },
                "roots" => match v {
                    Value::Array(items) => {
                        let mut roots = Vec::with_capacity(items.len());
                        for (i, r) in items.iter().enumerate() {
                            match r {
                                Value::String(s) => roots.push(s.trim_matches('/').to_string()),
                                other => errors.push(at(
                                    key,
                                    format!(
                                        "roots[{i}]: expected a string (a path under `data` such as \"people/eu\"), got {}",
                                        kind(other)
                                    ),
                                )),
                            }
                        }
                        m.roots = roots;
                    }
                    other => errors.push(at(
                        key,
                        format!("roots: expected an array of strings, got {}", kind(other)),
                    )),
                },
                "metadata" => match v {
                    Value::Object(o) => m.metadata = o.clone(),
                    other => errors.push(at(
                        key,
                        format!("metadata: expected an object, got {}", kind(other)),
                    )),
                },
                "rego_version" => match version(v) {
                    Ok(n) => m.rego_version = n,
                    Err(e) => errors.push(at(key, format!("rego_version: {e}"))),
                },
                "file_rego_versions" => match v {
                    Value::Object(o) => {
                        for (file, n) in o {
                            match version(n) {
                                Ok(n) => {
                                    m.file_rego_versions
                                        .insert(file.trim_start_matches('/').to_string(), n);
                                }
                                Err(e) => errors
                                    .push(at(key, format!("file_rego_versions.{file}: {e}"))),
                            }
                        }
                    }
                    other => errors.push(at(
                        key,
                        format!(
                            "file_rego_versions: expected an object of file paths to 0 or 1, got {}",
                            kind(other)
                        ),
                    )),
                },
                "wasm" => {
                    if !matches!(v, Value::Array(a) if a.is_empty()) && !v.is_null() {
                        errors.push(at(
                            key,
                            "wasm: WebAssembly modules are not supported (jitgate evaluates Rego source)".into(),
                        ));
                    }
                }
                other => errors.push(at(
                    other,
                    format!(
                        "unknown field `{other}` (a .manifest may have: {})",
                        FIELDS.join(", ")
                    ),
                )),
            }
        }
        for (i, a) in m.roots.iter().enumerate() {
            for b in m.roots.iter().skip(i + 1) {
                if overlap(a, b) {
                    errors.push(at(
                        "roots",
                        format!("roots: `{a}` and `{b}` overlap (one contains the other)"),
                    ));
                }
            }
        }
        Diagnostics(errors).into_result()?;
        let roots = field_diagnostic(path, source, "roots", String::new());
        m.roots_at = (roots.line.unwrap_or(1), roots.column.unwrap_or(1));
        Ok(m)
    }

    /// A problem with what the roots permit, placed at the `roots` field of the manifest at `path`.
    pub fn roots_error(&self, path: &Path, message: String) -> Diagnostic {
        Diagnostic::at(path, self.roots_at.0, self.roots_at.1, message)
    }

    /// Whether the policy file `rel` (relative to the bundle, `/`-separated) is Rego v0.
    pub fn is_v0(&self, rel: &str) -> bool {
        self.file_rego_versions
            .get(rel)
            .copied()
            .unwrap_or(self.rego_version)
            == 0
    }

    /// Whether the package `pkg` (`data.a.b` or `a.b`) lies under one of the roots.
    pub fn permits_package(&self, pkg: &str) -> bool {
        let pkg = pkg.strip_prefix("data.").unwrap_or(pkg);
        let path: Vec<&str> = pkg.split('.').collect();
        self.roots.iter().any(|r| contains(r, &path))
    }

    /// The first data path in `value` (a data file's document, already nested by its directory) that lies outside
    /// every root, as OPA finds it: a path under a root is fine; an object on the way to a root is looked into;
    /// anything else is outside.
    pub fn data_outside_roots(&self, value: &Value) -> Option<String> {
        let mut path: Vec<String> = Vec::new();
        self.first_outside(value, &mut path)
    }

    fn first_outside(&self, value: &Value, path: &mut Vec<String>) -> Option<String> {
        let segs: Vec<&str> = path.iter().map(String::as_str).collect();
        if self.roots.iter().any(|r| contains(r, &segs)) {
            return None;
        }
        if let Value::Object(o) = value {
            let toward_root = self.roots.iter().any(|r| {
                segs.iter().zip(r.split('/')).all(|(a, b)| *a == b)
                    && r.split('/').count() > segs.len()
            });
            if toward_root {
                for (k, v) in o {
                    path.push(k.clone());
                    let found = self.first_outside(v, path);
                    path.pop();
                    if found.is_some() {
                        return found;
                    }
                }
                return None;
            }
        }
        Some(format!("/{}", path.join("/")))
    }
}

/// Whether root `root` contains the path `path` (segment by segment; the root `""` contains everything).
fn contains(root: &str, path: &[&str]) -> bool {
    if root.is_empty() {
        return true;
    }
    let r: Vec<&str> = root.split('/').collect();
    r.len() <= path.len() && r.iter().zip(path).all(|(a, b)| a == b)
}

/// Whether two roots overlap: one is the other or lies inside it.
fn overlap(a: &str, b: &str) -> bool {
    let av: Vec<&str> = if a.is_empty() {
        Vec::new()
    } else {
        a.split('/').collect()
    };
    let bv: Vec<&str> = if b.is_empty() {
        Vec::new()
    } else {
        b.split('/').collect()
    };
    contains(a, &bv) || contains(b, &av)
}

fn version(v: &Value) -> Result<u8, String> {
    match v.as_u64() {
        Some(0) => Ok(0),
        Some(1) => Ok(1),
        _ => Err(format!("expected 0 (Rego v0) or 1 (Rego v1), got {v}")),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A diagnostic at the line of `"field":` in the manifest's text (line 1 when it cannot be found).
fn field_diagnostic(path: &Path, source: &str, field: &str, msg: String) -> Diagnostic {
    let needle = format!("\"{field}\"");
    let (line, column) = source
        .match_indices(&needle)
        .find(|(i, _)| {
            source
                .get(i + needle.len()..)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|(i, _)| line_col(source, i))
        .unwrap_or((1, 1));
    Diagnostic::at(path, line, column, msg)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> Result<OpaManifest, Diagnostics> {
        OpaManifest::parse(Path::new("b/.manifest"), text)
    }

    #[test]
    fn fields_are_read_and_defaults_filled() {
        let m = parse(
            r#"{"revision": "r7", "roots": ["/people/", "jitgate"], "metadata": {"team": "sec"},
                "file_rego_versions": {"/old/p.rego": 0}}"#,
        )
        .unwrap();
        assert_eq!(m.revision, "r7");
        assert_eq!(m.roots, ["people", "jitgate"]);
        assert_eq!(m.metadata["team"], "sec");
        assert!(m.is_v0("old/p.rego") && !m.is_v0("new.rego"));
        assert_eq!(parse("{}").unwrap(), OpaManifest::default());
        let m = parse("{\n  \"revision\": \"x\",\n  \"roots\": [\"a\"]\n}").unwrap();
        assert_eq!(m.roots_error(Path::new("m"), String::new()).line, Some(3));
        assert!(OpaManifest::default().permits_package("data.anything.at.all"));
    }

    #[test]
    fn bad_fields_name_the_field_and_its_line() {
        let err = parse("{\n  \"revision\": 7,\n  \"roots\": [\"a\", 1],\n  \"rego_version\": 2,\n  \"rots\": []\n}")
            .unwrap_err();
        let lines: Vec<(Option<usize>, &str)> =
            err.0.iter().map(|d| (d.line, d.message.as_str())).collect();
        assert_eq!(err.0.len(), 4, "{err}");
        assert!(
            lines.contains(&(Some(2), "revision: expected a string, got a number")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|(l, m)| *l == Some(3) && m.starts_with("roots[1]: expected a string")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|(l, m)| *l == Some(4) && m.starts_with("rego_version: expected 0")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|(l, m)| *l == Some(5) && m.starts_with("unknown field `rots`")),
            "{lines:?}"
        );
        let err = parse("{\"roots\": [\"a\"],}").unwrap_err();
        assert!(err.0[0].message.starts_with("invalid JSON"), "{err}");
        let err = parse("{\"wasm\": [{\"entrypoint\": \"x\"}]}").unwrap_err();
        assert!(err.0[0].message.starts_with("wasm:"), "{err}");
    }

    #[test]
    fn overlapping_roots_are_refused() {
        let err = parse(r#"{"roots": ["a/b", "a"]}"#).unwrap_err();
        assert!(err.0[0].message.contains("`a/b` and `a` overlap"), "{err}");
        assert!(parse(r#"{"roots": ["", "a"]}"#).is_err());
        assert!(parse(r#"{"roots": ["a/b", "a/c", "ab"]}"#).is_ok());
    }

    #[test]
    fn packages_and_data_must_lie_under_a_root() {
        let m = parse(r#"{"roots": ["jitgate/authz", "people/eu"]}"#).unwrap();
        assert!(m.permits_package("data.jitgate.authz"));
        assert!(m.permits_package("jitgate.authz.helpers"));
        assert!(!m.permits_package("data.jitgate"));
        assert!(!m.permits_package("data.other"));
        let ok = serde_json::json!({"people": {"eu": {"alice": {}}}});
        assert_eq!(m.data_outside_roots(&ok), None);
        let bad = serde_json::json!({"people": {"eu": {}, "us": {"bob": {}}}});
        assert_eq!(m.data_outside_roots(&bad).as_deref(), Some("/people/us"));
        let bad = serde_json::json!({"people": 3});
        assert_eq!(m.data_outside_roots(&bad).as_deref(), Some("/people"));
        assert_eq!(
            m.data_outside_roots(&serde_json::json!({"limits": 1}))
                .as_deref(),
            Some("/limits")
        );
    }
}
