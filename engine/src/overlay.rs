//! Entity data kept in the store, as an overlay on the active bundle's: reading it from a request body (Cedar's JSON
//! entity format, an array), and the problems a refusal names. The backends parse and merge it
//! ([`crate::backend::PolicyBackend::set_store_entities`]); the [`crate::Authorizer`] keeps it in step with the store.
//!
//! Precedence: an entity in the store replaces the bundle's entity of the same uid whole (attributes, parents and
//! tags); the caller's token claims are merged on top of whatever the data says about the principal.

use serde::Serialize;

use crate::clock::UnixTime;
use crate::entity::EntityRef;
use crate::store::StoredEntity;

/// Why an entity was refused: where it was given, its uid, the attribute at fault when there is one, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntityProblem {
    /// The entity's uid as written (`Type::"id"`), or `(without a uid)`.
    pub uid: String,
    /// Its position in the array given (from 0); `None` for an entity already in the store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The line it starts on in the text given (from 1), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The attribute (or tag) at fault, when the reason names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl EntityProblem {
    /// A problem with the entity `uid`, its attribute read from `reason` when it names one (``attribute `x` ``).
    pub fn new(uid: impl Into<String>, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self {
            uid: uid.into(),
            index: None,
            line: None,
            attribute: attribute_in(&reason),
            reason,
        }
    }
}

impl std::fmt::Display for EntityProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(f, "entity {}", self.uid)?;
        if let Some(a) = &self.attribute {
            write!(f, ", attribute `{a}`")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// The first attribute or tag a Cedar message names (``attribute `owner` `` or ``tag `x` ``).
fn attribute_in(reason: &str) -> Option<String> {
    for key in ["attribute `", "attribute \"", "tag `"] {
        if let Some(start) = reason.find(key) {
            let rest = reason.get(start + key.len()..)?;
            let end = rest.find(['`', '"'])?;
            return rest.get(..end).map(str::to_string);
        }
    }
    None
}

/// The entities of a request body: a JSON array of Cedar JSON entities, each with a `uid` (`{"type", "id"}`, or the
/// same under `__entity`). Each comes with its line in `text`. Every problem is reported: invalid JSON (with its line
/// and column), a body that is not an array, an element without a uid, a uid given twice.
pub fn parse_body(
    text: &str,
    at: UnixTime,
) -> Result<Vec<(StoredEntity, usize)>, Vec<EntityProblem>> {
    let items = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Array(items)) => items,
        Ok(_) => {
            return Err(vec![EntityProblem {
                line: Some(1),
                ..EntityProblem::new(
                    "(none)",
                    "the body must be a JSON array of entities ({\"uid\", \"attrs\", \"parents\", \"tags\"})",
                )
            }]);
        }
        Err(e) => {
            return Err(vec![EntityProblem {
                line: Some(e.line()),
                ..EntityProblem::new(
                    "(none)",
                    format!(
                        "invalid JSON at line {} column {}: {e}",
                        e.line(),
                        e.column()
                    ),
                )
            }]);
        }
    };
    let offsets = crate::diag::element_offsets(text);
    let mut out: Vec<(StoredEntity, usize)> = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let line = offsets
            .get(i)
            .map(|o| crate::diag::line_col(text, *o).0)
            .unwrap_or(1);
        let at_item = |p: EntityProblem| EntityProblem {
            index: Some(i),
            line: Some(line),
            ..p
        };
        let Some(uid) = uid_of(&item) else {
            problems.push(at_item(EntityProblem::new(
                "(without a uid)",
                "each entity needs a `uid` of the form {\"type\": \"T\", \"id\": \"i\"}",
            )));
            continue;
        };
        if let Some((_, first)) = out.iter().find(|(e, _)| e.uid == uid) {
            problems.push(at_item(EntityProblem::new(
                uid.to_string(),
                format!("given twice (first at line {first})"),
            )));
            continue;
        }
        out.push((
            StoredEntity {
                uid,
                data: item,
                updated_at: at,
            },
            line,
        ));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Entity data in the store's form read from files (each a JSON array, as `PUT /v1/entities` takes it and `jitgate
/// entities get` prints it), for `jitgate eval --entities` and a suite's `store_entities`: the same data as the store
/// would hold, ordered as the store orders it (type, then id). Every problem is an error with file and line: invalid
/// JSON, a body that is not an array, an entity without a uid, a uid given twice (in one file or across files).
pub fn read_store_files(files: &[std::path::PathBuf]) -> Result<StoreFiles, crate::Diagnostics> {
    let mut errors = Vec::new();
    let mut by_uid: std::collections::BTreeMap<
        EntityRef,
        (StoredEntity, std::path::PathBuf, usize),
    > = std::collections::BTreeMap::new();
    for file in files {
        let text = match crate::diag::read_file(file) {
            Ok(t) => t,
            Err(d) => {
                errors.push(d);
                continue;
            }
        };
        match parse_body(&text, 0) {
            Ok(items) => {
                for (e, line) in items {
                    if let Some((_, f, l)) = by_uid.get(&e.uid) {
                        errors.push(crate::Diagnostic::at(
                            file,
                            line,
                            1,
                            format!(
                                "entity {} is given twice (first at {}:{l})",
                                e.uid,
                                f.display()
                            ),
                        ));
                        continue;
                    }
                    by_uid.insert(e.uid.clone(), (e, file.clone(), line));
                }
            }
            Err(problems) => errors.extend(problems.into_iter().map(|p| at_file(file, p))),
        }
    }
    crate::Diagnostics(errors).into_result()?;
    let mut entities = Vec::with_capacity(by_uid.len());
    let mut origins = std::collections::HashMap::with_capacity(by_uid.len());
    for (uid, (e, file, line)) in by_uid {
        origins.insert(uid.to_string(), (file, line));
        entities.push(e);
    }
    Ok(StoreFiles { entities, origins })
}

/// Store-form entity data read from files ([`read_store_files`]), with where each entity was written.
#[derive(Debug, Clone, Default)]
pub struct StoreFiles {
    /// The entities, ordered by type then id.
    pub entities: Vec<StoredEntity>,
    /// Each entity's file and line, by uid as written (`Type::"id"`).
    origins: std::collections::HashMap<String, (std::path::PathBuf, usize)>,
}

impl StoreFiles {
    /// Puts these entities over `bundle`'s own data as the store's data is put there (see the module docs for the
    /// precedence); each problem is an error at the file and line of the entity it names.
    pub fn apply(&self, bundle: &crate::Bundle) -> Result<(), crate::Diagnostics> {
        bundle
            .set_store_entities(&self.entities)
            .map_err(|problems| {
                crate::Diagnostics(
                    problems
                        .into_iter()
                        .map(|p| match self.origins.get(&p.uid) {
                            Some((file, line)) => at_file(
                                file,
                                EntityProblem {
                                    line: Some(*line),
                                    ..p
                                },
                            ),
                            None => crate::Diagnostic::file(
                                self.origins
                                    .values()
                                    .next()
                                    .map_or(std::path::Path::new("<entities>"), |(f, _)| {
                                        f.as_path()
                                    }),
                                p.to_string(),
                            ),
                        })
                        .collect(),
                )
            })
    }
}

/// A problem found in `file`, at its line when known.
fn at_file(file: &std::path::Path, p: EntityProblem) -> crate::Diagnostic {
    let line = p.line;
    let message = EntityProblem { line: None, ..p }.to_string();
    match line {
        Some(l) => crate::Diagnostic::at(file, l, 1, message),
        None => crate::Diagnostic::file(file, message),
    }
}

/// The uid of a Cedar JSON entity, if it has a well-formed one.
pub fn uid_of(item: &serde_json::Value) -> Option<EntityRef> {
    let uid = item.get("uid")?;
    let uid = uid.get("__entity").unwrap_or(uid);
    match (uid.get("type")?.as_str(), uid.get("id")?.as_str()) {
        (Some(t), Some(id)) if !t.is_empty() => Some(EntityRef::new(t, id)),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_body_gives_entities_with_their_lines() {
        let text = "[\n  {\"uid\": {\"type\": \"Doc\", \"id\": \"a\"}, \"attrs\": {}, \"parents\": []},\n  {\"uid\": {\"__entity\": {\"type\": \"Doc\", \"id\": \"b\"}}}\n]";
        let got = parse_body(text, 7).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.uid, EntityRef::new("Doc", "a"));
        assert_eq!(got[0].1, 2);
        assert_eq!(got[1].0.uid, EntityRef::new("Doc", "b"));
        assert_eq!(got[1].1, 3);
        assert_eq!(got[1].0.updated_at, 7);
    }

    #[test]
    fn bad_bodies_name_line_and_reason() {
        let e = parse_body("[\n {\"uid\": 1,\n", 0).unwrap_err();
        assert_eq!(e[0].line, Some(3));
        assert!(e[0].reason.contains("invalid JSON"), "{}", e[0]);
        let e = parse_body("{}", 0).unwrap_err();
        assert!(e[0].reason.contains("JSON array"), "{}", e[0]);
        let e = parse_body(
            "[{\"uid\": {\"type\": \"Doc\", \"id\": \"a\"}},\n {\"attrs\": {}},\n {\"uid\": {\"type\": \"Doc\", \"id\": \"a\"}}]",
            0,
        )
        .unwrap_err();
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].index, e[0].line), (Some(1), Some(2)));
        assert_eq!(e[1].uid, "Doc::\"a\"");
        assert!(
            e[1].reason.contains("given twice (first at line 1)"),
            "{}",
            e[1]
        );
    }

    #[test]
    fn the_attribute_is_read_from_the_reason() {
        let p = EntityProblem::new(
            "Doc::\"a\"",
            "in attribute `owner` on `Doc::\"a\"`, type mismatch",
        );
        assert_eq!(p.attribute.as_deref(), Some("owner"));
        assert_eq!(EntityProblem::new("x", "no attribute here").attribute, None);
    }
}
