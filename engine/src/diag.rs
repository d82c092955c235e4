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

    /// A problem about the value at `key_path` (see [`toml_key_offset`]) in the TOML document `source`: placed at
    /// the key, or at the table that should hold it when the key is not written; a whole-file problem when the
    /// document has none of the path.
    pub fn at_toml_key(
        file: impl AsRef<Path>,
        source: &str,
        key_path: &str,
        message: impl Into<String>,
    ) -> Self {
        match toml_key_offset(source, key_path) {
            Some(offset) => Self::at_offset(file, source, offset, message),
            None => Self::file(file, message),
        }
    }
}

/// Where a key path such as `server.tls.cert`, `issuers[1].audience` or `upstreams.payments.url` is written in a
/// TOML document: the byte offset of the deepest part of the path that the document has (the key itself, else the
/// key or array element of the table that should hold it). A name may itself contain dots (`upstreams.api.v1.url`
/// finds the table `upstreams."api.v1"`). `None` when the document does not parse or has no part of the path.
pub fn toml_key_offset(source: &str, key_path: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(source).ok()?;
    let mut found: Option<usize> = None;
    let root = DeValue::Table(doc.into_inner());
    let mut value = &root;
    let mut rest = key_path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let Some((index, tail)) = after.split_once(']') else {
                break;
            };
            let DeValue::Array(items) = value else {
                break;
            };
            let Some(item) = index.parse::<usize>().ok().and_then(|i| items.get(i)) else {
                break;
            };
            found = Some(item.span().start);
            value = item.get_ref();
            rest = tail.strip_prefix('.').unwrap_or(tail);
            continue;
        }
        let DeValue::Table(table) = value else {
            break;
        };
        // The longest key that the rest of the path starts with, followed by the end, `.` or `[`.
        let next = table
            .iter()
            .filter(|(k, _)| {
                let k: &str = k.get_ref();
                rest.strip_prefix(k)
                    .is_some_and(|t| t.is_empty() || t.starts_with('.') || t.starts_with('['))
            })
            .max_by_key(|(k, _)| k.get_ref().len());
        let Some((key, item)) = next else {
            break;
        };
        found = Some(key.span().start);
        let tail = &rest[key.get_ref().len()..];
        rest = tail.strip_prefix('.').unwrap_or(tail);
        value = item.get_ref();
    }
    found
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

/// Byte offsets of the top-level array's elements in a JSON text (known to parse).
pub(crate) fn element_offsets(source: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut expect_element = false;
    for (i, c) in source.char_indices() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if c.is_whitespace() {
            continue;
        }
        if expect_element && depth == 1 && c != ']' {
            out.push(i);
            expect_element = false;
        }
        match c {
            '"' => in_string = true,
            '[' | '{' => {
                depth += 1;
                if depth == 1 {
                    expect_element = true;
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            ',' if depth == 1 => expect_element = true,
            _ => {}
        }
    }
    out
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
    fn key_paths_are_found_at_their_key_or_the_nearest_table() {
        let src = "\
title = \"x\"
[server]
listen = \"a\"
[server.tls]
cert = \"c\"

[[issuers]]
issuer = \"one\"
[[issuers]]
issuer = \"two\"
audience = \"aud\"

[upstreams.\"api.v1\"]
url = \"u\"
[upstreams.api]
url = \"w\"
";
        let line = |path: &str| toml_key_offset(src, path).map(|o| line_col(src, o).0);
        assert_eq!(line("title"), Some(1));
        assert_eq!(line("server.listen"), Some(3));
        assert_eq!(line("server.tls.cert"), Some(5));
        // Not written: the table that should hold it.
        assert_eq!(line("server.tls.client_ca"), Some(4));
        assert_eq!(line("issuers[1].audience"), Some(11));
        assert_eq!(line("issuers[0].audience"), Some(7));
        assert_eq!(line("issuers[0]"), Some(7));
        // Out of range: the array's key.
        assert_eq!(line("issuers[5].issuer"), Some(7));
        // A name with a dot in it, and the longer name wins over a shorter one that is a prefix.
        assert_eq!(line("upstreams.api.v1.url"), Some(14));
        assert_eq!(line("upstreams.api.url"), Some(16));
        assert_eq!(line("log.path"), None);
        assert_eq!(toml_key_offset("not = [toml", "not"), None);
        let d = Diagnostic::at_toml_key("c.toml", src, "server.tls.cert", "server.tls.cert: nope");
        assert_eq!(d.to_string(), "c.toml:5:1: server.tls.cert: nope");
        let d = Diagnostic::at_toml_key("c.toml", src, "hold.wait", "hold.wait: nope");
        assert_eq!(d.to_string(), "c.toml: hold.wait: nope");
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
