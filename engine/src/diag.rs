//! Diagnostics for bad input: every error names the file, the line, the column and the reason.
//! Shared by bundles, manifests, routes, policy suites and the proxy's config.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in an input file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong, naming the field where there is one.
    pub message: String,
}

impl Diagnostic {
    /// A problem with a whole file (no position).
    pub fn file(file: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self {
            file: file.as_ref().to_path_buf(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// A problem at a 1-based line and column.
    pub fn at(
        file: impl AsRef<Path>,
        line: usize,
        column: usize,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.as_ref().to_path_buf(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }

    /// A problem at a byte offset into `source` (converted to line and column).
    pub fn at_offset(
        file: impl AsRef<Path>,
        source: &str,
        offset: usize,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = line_col(source, offset);
        Self::at(file, line, column, message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// One or more diagnostics: the error type of every loader. Loaders report all problems they find, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Wraps a single diagnostic.
    pub fn one(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }

    /// Whether there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Turns a non-empty list into an error.
    pub fn into_result(self) -> Result<(), Diagnostics> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// 1-based line and column (in characters) of a byte offset into `source`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before
        .get(line_start..)
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// Reads a file, turning an I/O error into a diagnostic that names it.
pub fn read_file(path: &Path) -> Result<String, Diagnostic> {
    std::fs::read_to_string(path)
        .map_err(|e| Diagnostic::file(path, format!("cannot read file: {e}")))
}

/// Parses TOML into `T`, reporting the line and column of the first error (serde's path is in the message).
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    source: &str,
) -> Result<T, Diagnostic> {
    toml::from_str(source).map_err(|e| {
        let msg = e.message().to_string();
        match e.span() {
            Some(span) => Diagnostic::at_offset(path, source, span.start, msg),
            None => Diagnostic::file(path, msg),
        }
    })
}

/// Parses YAML (or JSON, which is YAML) into `T`, reporting line and column.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    path: &Path,
    source: &str,
) -> Result<T, Diagnostic> {
    serde_yaml::from_str(source).map_err(|e| match e.location() {
        Some(loc) => Diagnostic::at(
            path,
            loc.line(),
            loc.column(),
            strip_yaml_position(&e.to_string()),
        ),
        None => Diagnostic::file(path, e.to_string()),
    })
}

/// serde_yaml appends " at line X column Y" to its messages; we report the position separately.
fn strip_yaml_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let src = "ab\ncd\nef";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 4), (2, 2));
        assert_eq!(line_col(src, 100), (3, 3));
    }

    #[test]
    fn toml_errors_name_line_and_field() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        let d = parse_toml::<T>(Path::new("x.toml"), "a = 1\nb = 2\n").unwrap_err();
        assert_eq!(d.line, Some(2));
        assert!(d.message.contains("unknown field `b`"), "{}", d.message);
        assert!(d.to_string().starts_with("x.toml:2:1: "), "{d}");
    }
}
