//! A Cedar bundle's entity data (`entities = ["entities.json", ...]` in `bundle.toml`): Cedar's JSON entity format
//! (`uid`, `attrs`, `parents`, `tags`, with `__entity` / `__extn` escapes, implicit where the schema says the type),
//! parsed against the schema, checked for duplicates and parent cycles, and transitively closed, once per bundle load.
//!
//! A request never copies the data: it takes only the entities it can reach — the principal, its groups, the
//! resource and its parents, entity references in its context, entity literals of the policies — and, from each of
//! those, every entity reachable through attribute and tag values (so `resource.owner.team.name` works). The
//! hierarchy is closed at load, so `in` holds transitively without the ancestors themselves being present.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cedar_policy::Schema;
use cedar_policy_core::ast::{self, EntityUID, Literal, PartialValue, Value, ValueKind};
use cedar_policy_core::entities::{Entities as CoreEntities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;

pub(crate) use crate::diag::element_offsets;
use crate::diag::{Diagnostic, Diagnostics, read_file};

/// Up to this many visited entities, a walk checks repeats by scanning (cheaper than hashing).
const SMALL: usize = 32;

/// The bundle's entity data, transitively closed, with each entity's references to other data entities.
#[derive(Debug, Default)]
pub(crate) struct EntityData {
    entities: Vec<Arc<ast::Entity>>,
    index: HashMap<EntityUID, u32>,
    /// For each entity, the data entities its attribute and tag values name.
    refs: Vec<Box<[u32]>>,
    /// Data entities named by the policies themselves (entity literals), with all they reach: part of every request.
    pinned: Vec<u32>,
}

/// Where an entity was written.
struct Origin {
    file: PathBuf,
    line: usize,
    column: usize,
}

impl EntityData {
    /// Parses `files` against `schema`. Every problem is reported with file, line and the entity's uid: a JSON
    /// syntax error, an entity that does not conform to the schema (unknown type, attribute of the wrong type,
    /// missing required attribute, parent of a type the schema does not allow, unknown extension function), a uid
    /// given twice, a parent cycle.
    ///
    /// With `[cedar] validation = "warn"` (`lenient`), entity data that does not conform to the schema is read as
    /// `cedar authorize` without `--schema` reads it: every file without the schema (so escapes are needed where the
    /// schema would have given the type, and values are not converted), and each entity that did not conform is a
    /// warning, returned beside the data. Anything else (not JSON, a malformed entity, a uid given twice, a parent
    /// cycle) still refuses the data.
    pub(crate) fn load(
        schema: &Schema,
        files: &[PathBuf],
        lenient: bool,
    ) -> Result<(Self, Vec<Diagnostic>), Diagnostics> {
        let mut warnings = Vec::new();
        let mut read = read_entities(Some(schema), files);
        if lenient && read.read_errors.is_empty() && !read.entity_errors.is_empty() {
            let untyped = read_entities(None, files);
            if untyped.read_errors.is_empty() && untyped.entity_errors.is_empty() {
                warnings = read
                    .entity_errors
                    .into_iter()
                    .map(|d| {
                        Diagnostic {
                            message: format!(
                                "{} (validation = \"warn\": the entity data is read without the schema, as `cedar \
                                 authorize` without `--schema` reads it)",
                                d.message
                            ),
                            ..d
                        }
                    })
                    .collect();
                read = untyped;
            }
        }
        let ReadEntities {
            parsed,
            origins,
            read_errors,
            entity_errors,
        } = read;
        let mut errors = read_errors;
        errors.extend(entity_errors);
        if errors.is_empty() {
            if let Some(cycle) = find_cycle(&parsed) {
                let at = origins.get(&cycle[0]);
                let path = cycle
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" -> ");
                let msg = format!("entity {}: parent cycle {path}", cycle[0]);
                errors.push(match at {
                    Some(o) => Diagnostic::at(&o.file, o.line, o.column, msg),
                    None => Diagnostic::file(
                        files
                            .first()
                            .map(PathBuf::as_path)
                            .unwrap_or(Path::new("<entities>")),
                        msg,
                    ),
                });
            }
        }
        Diagnostics(errors).into_result()?;
        let closed = CoreEntities::from_entities(
            parsed,
            None::<&NoEntitiesSchema>,
            TCComputation::ComputeNow,
            Extensions::all_available(),
        )
        .map_err(|e| {
            Diagnostics::one(Diagnostic::file(
                files
                    .first()
                    .map(PathBuf::as_path)
                    .unwrap_or(Path::new("<entities>")),
                format!("entity data: {e}"),
            ))
        })?;
        Ok((Self::from_closed(&closed), warnings))
    }

    pub(crate) fn from_closed(closed: &CoreEntities) -> Self {
        let mut entities: Vec<Arc<ast::Entity>> =
            closed.iter().map(|e| Arc::new(e.clone())).collect();
        // A stable order (by uid text), so nothing depends on hash order.
        entities.sort_by_cached_key(|e| e.uid().to_string());
        let index: HashMap<EntityUID, u32> = entities
            .iter()
            .enumerate()
            .map(|(i, e)| (e.uid().clone(), i as u32))
            .collect();
        let refs = entities
            .iter()
            .map(|e| {
                let mut out: Vec<u32> = Vec::new();
                for (_, v) in e.attrs().chain(e.tags()) {
                    if let PartialValue::Value(v) = v {
                        uids_in(v, &mut |u| {
                            if let Some(i) = index.get(u) {
                                if !out.contains(i) {
                                    out.push(*i);
                                }
                            }
                        });
                    }
                }
                out.into_boxed_slice()
            })
            .collect();
        EntityData {
            entities,
            index,
            refs,
            pinned: Vec::new(),
        }
    }

    /// Pins the data entities the policies name as literals (e.g. `User::"admin".active`), with all they reach:
    /// they are part of every request.
    pub(crate) fn pin<'a>(&mut self, literals: impl IntoIterator<Item = &'a EntityUID>) {
        let seeds: Vec<u32> = literals
            .into_iter()
            .filter_map(|u| self.index.get(u).copied())
            .collect();
        let mut seen = Vec::new();
        self.walk(seeds, &mut seen);
        seen.sort_unstable();
        self.pinned = seen;
    }

    /// How many entities the data holds.
    pub(crate) fn len(&self) -> usize {
        self.entities.len()
    }

    /// Every entity, transitively closed.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<ast::Entity>> {
        self.entities.iter()
    }

    /// Whether the bundle has no entity data.
    pub(crate) fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// The data's entity for `uid`, if any (transitively closed: its ancestors are all of them).
    pub(crate) fn get(&self, uid: &EntityUID) -> Option<&Arc<ast::Entity>> {
        self.index
            .get(uid)
            .and_then(|i| self.entities.get(*i as usize))
    }

    /// Whether `e` is the data's own entity (not one built for a request).
    pub(crate) fn is_data(&self, e: &ast::Entity) -> bool {
        self.get(e.uid())
            .is_some_and(|d| std::ptr::eq(Arc::as_ptr(d), e))
    }

    /// Every data entity reachable from `seeds` (the seeds themselves when in the data, then through attribute and
    /// tag values), and the pinned ones when `pinned`, appended to `out`.
    pub(crate) fn reach<'a>(
        &self,
        seeds: impl IntoIterator<Item = &'a EntityUID>,
        pinned: bool,
        out: &mut Vec<Arc<ast::Entity>>,
    ) {
        if self.entities.is_empty() {
            return;
        }
        let mut start: Vec<u32> = seeds
            .into_iter()
            .filter_map(|u| self.index.get(u).copied())
            .collect();
        if pinned {
            start.extend(self.pinned.iter().copied());
        }
        let mut seen = Vec::new();
        self.walk(start, &mut seen);
        out.extend(
            seen.iter()
                .filter_map(|i| self.entities.get(*i as usize).cloned()),
        );
    }

    /// Depth-first over references from `stack`, every entity visited once, in `seen` (visit order).
    fn walk(&self, mut stack: Vec<u32>, seen: &mut Vec<u32>) {
        let mut big: Option<HashSet<u32>> = None;
        while let Some(i) = stack.pop() {
            let new = match &mut big {
                Some(set) => set.insert(i),
                None if seen.contains(&i) => false,
                None => true,
            };
            if !new {
                continue;
            }
            seen.push(i);
            if big.is_none() && seen.len() > SMALL {
                big = Some(seen.iter().copied().collect());
            }
            if let Some(r) = self.refs.get(i as usize) {
                stack.extend(r.iter().copied());
            }
        }
    }
}

/// Calls `f` with every entity uid inside `v` (sets and records included).
pub(crate) fn uids_in(v: &Value, f: &mut impl FnMut(&EntityUID)) {
    match v.value_kind() {
        ValueKind::Lit(Literal::EntityUID(u)) => f(u),
        ValueKind::Lit(_) | ValueKind::ExtensionValue(_) => {}
        ValueKind::Set(s) => {
            for x in s.iter() {
                uids_in(x, f);
            }
        }
        ValueKind::Record(r) => {
            for x in r.values() {
                uids_in(x, f);
            }
        }
    }
}

/// A parent cycle among `entities` (as a path that ends where it starts), if any.
pub(crate) fn find_cycle(entities: &[ast::Entity]) -> Option<Vec<EntityUID>> {
    let by_uid: HashMap<&EntityUID, &ast::Entity> = entities.iter().map(|e| (e.uid(), e)).collect();
    crate::entity::find_parent_cycle(entities.iter().map(|e| e.uid()), |u| {
        by_uid.get(u).into_iter().flat_map(|e| e.parents())
    })
}

/// The entity's uid as written (`Type::"id"`), for errors about an entity that did not parse.
/// Entities read from files, with what went wrong: `read_errors` (a file that cannot be read or is not a JSON
/// array, a uid given twice) and `entity_errors` (an entity Cedar does not accept, e.g. one that does not conform to
/// the schema).
struct ReadEntities {
    parsed: Vec<ast::Entity>,
    origins: HashMap<EntityUID, Origin>,
    read_errors: Vec<Diagnostic>,
    entity_errors: Vec<Diagnostic>,
}

/// Reads every entity of `files`, against `schema` when given (action entities are left out: the schema's own are
/// what requests use).
fn read_entities(schema: Option<&Schema>, files: &[PathBuf]) -> ReadEntities {
    let mut out = ReadEntities {
        parsed: Vec::new(),
        origins: HashMap::new(),
        read_errors: Vec::new(),
        entity_errors: Vec::new(),
    };
    for file in files {
        let (source, items) = match read_json_array(
            file,
            "entity data must be a JSON array of entities ({\"uid\", \"attrs\", \"parents\", \"tags\"})",
        ) {
            Ok(x) => x,
            Err(d) => {
                out.read_errors.push(d);
                continue;
            }
        };
        let positions = element_positions(&source);
        for (i, item) in items.into_iter().enumerate() {
            let (line, column) = positions.get(i).copied().unwrap_or((1, 1));
            let named = uid_text(&item);
            let entity = match cedar_policy::Entity::from_json_value(item, schema) {
                Ok(e) => AsRef::<ast::Entity>::as_ref(&e).clone(),
                Err(e) => {
                    // Cedar's entity errors carry no position (the entity's is given) and keep their detail in the
                    // error's sources and help.
                    let msg = entity_error_message(&e);
                    out.entity_errors.push(Diagnostic::at(
                        file,
                        line,
                        column,
                        format!("entity {named}: {msg}"),
                    ));
                    continue;
                }
            };
            if entity.uid().entity_type().is_action() {
                continue;
            }
            if let Some(first) = out.origins.get(entity.uid()) {
                out.read_errors.push(Diagnostic::at(
                    file,
                    line,
                    column,
                    format!(
                        "entity {} is given twice (first at {}:{}:{})",
                        entity.uid(),
                        first.file.display(),
                        first.line,
                        first.column
                    ),
                ));
                continue;
            }
            out.origins.insert(
                entity.uid().clone(),
                Origin {
                    file: file.clone(),
                    line,
                    column,
                },
            );
            out.parsed.push(entity);
        }
    }
    out
}

fn uid_text(item: &serde_json::Value) -> String {
    let uid = &item["uid"];
    let uid = uid.get("__entity").unwrap_or(uid);
    match (uid["type"].as_str(), uid["id"].as_str()) {
        (Some(t), Some(id)) => format!("{t}::{id:?}"),
        _ => "(without a uid)".to_string(),
    }
}

/// Cedar's message for an entity that does not parse, with the detail it keeps in the error's sources and help
/// (its entity errors carry no position: the entity's is given beside it).
pub(crate) fn entity_error_message(e: &dyn miette::Diagnostic) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    if let Some(help) = e.help() {
        msg.push_str(&format!(" (help: {help})"));
    }
    msg
}

/// 1-based line and column (in characters) of each top-level array element in a JSON text (known to parse), in one
/// pass: computing each from the start of the text would be quadratic in the number of entities.
pub(crate) fn element_positions(source: &str) -> Vec<(usize, usize)> {
    let offsets = element_offsets(source);
    let mut out = Vec::with_capacity(offsets.len());
    let (mut line, mut column, mut pos) = (1usize, 1usize, 0usize);
    for o in offsets {
        for c in source.get(pos..o).unwrap_or("").chars() {
            if c == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        pos = o.max(pos);
        out.push((line, column));
    }
    out
}

/// Reads `file` as a JSON array (entity data, links): its text (for line numbers) and its elements, or the
/// diagnostic naming the file and where it went wrong; `shape` says what the array should hold.
pub(crate) fn read_json_array(
    file: &std::path::Path,
    shape: &str,
) -> Result<(String, Vec<serde_json::Value>), Diagnostic> {
    let source = read_file(file)?;
    match serde_json::from_str(&source) {
        Ok(serde_json::Value::Array(items)) => Ok((source, items)),
        Ok(_) => Err(Diagnostic::at(file, 1, 1, shape)),
        Err(e) => Err(Diagnostic::at(
            file,
            e.line(),
            e.column(),
            format!("invalid JSON: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::element_offsets;

    #[test]
    fn positions_agree_with_line_col() {
        let src = "[\n {\"a\": \"é\"}, {\"b\": 1},\n\n  {\"c\": [2, 3]}, 4]";
        let expected: Vec<(usize, usize)> = element_offsets(src)
            .iter()
            .map(|o| crate::diag::line_col(src, *o))
            .collect();
        assert_eq!(super::element_positions(src), expected);
        assert_eq!(expected.len(), 4);
    }

    #[test]
    fn offsets_of_top_level_elements() {
        let src = "[\n {\"a\": [1, {\"b\": \"],\"}]},\n  {\"c\": 2}\n]";
        let o = element_offsets(src);
        assert_eq!(o.len(), 2);
        assert_eq!(&src[o[0]..o[0] + 1], "{");
        assert_eq!(&src[o[1]..o[1] + 6], "{\"c\": ");
    }
}
