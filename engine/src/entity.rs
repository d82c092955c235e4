//! Entity references (`Type::"id"`), the common currency of requests, grants and policies.
//! Parsing and printing only; no policy-language specifics live here.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A typed entity reference such as `Service::"payments"` or `User::"alice"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityRef {
    /// The entity type, e.g. `Service` (may be namespaced: `Ns::Type`).
    pub ty: String,
    /// The entity id, e.g. `payments`.
    pub id: String,
}

impl EntityRef {
    /// Builds a reference from a type and an id.
    pub fn new(ty: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            ty: ty.into(),
            id: id.into(),
        }
    }
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::\"", self.ty)?;
        for c in self.id.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

/// Why a string is not an entity reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid entity reference `{input}`: {reason} (expected Type::\"id\")")]
pub struct EntityRefError {
    /// The text that failed to parse.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for EntityRef {
    type Err = EntityRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| EntityRefError {
            input: s.to_string(),
            reason,
        };
        let s = s.trim();
        let (ty, rest) = s.split_once("::\"").ok_or_else(|| err("missing `::\"`"))?;
        if ty.is_empty()
            || !ty.split("::").all(|seg| {
                !seg.is_empty() && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        {
            return Err(err("the type must be an identifier path"));
        }
        let body = rest
            .strip_suffix('"')
            .ok_or_else(|| err("missing closing quote"))?;
        let mut id = String::with_capacity(body.len());
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('"' | '\\')) => id.push(e),
                    _ => return Err(err("unsupported escape in id")),
                },
                '"' => return Err(err("unescaped quote in id")),
                c => id.push(c),
            }
        }
        Ok(EntityRef {
            ty: ty.to_string(),
            id,
        })
    }
}

impl Serialize for EntityRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EntityRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor (not `String::deserialize` then parse) so that the parse error is raised while the
        // deserializer still knows where the value is: YAML errors then point at the bad reference itself.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = EntityRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an entity reference like Service::\"payments\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<EntityRef, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// A parent cycle among entities (as a path that ends where it starts), if any: a depth-first walk from each of
/// `roots` along `parents` (an entity's parents; one not known has none). Used by both engines' entity data.
pub(crate) fn find_parent_cycle<'a, K, I>(
    roots: impl IntoIterator<Item = &'a K>,
    parents: impl Fn(&'a K) -> I,
) -> Option<Vec<K>>
where
    K: Eq + Hash + Clone + 'a,
    I: Iterator<Item = &'a K>,
{
    // 0: not visited, 1: on the current path, 2: done.
    let mut state: HashMap<&'a K, u8> = HashMap::new();
    for root in roots {
        if state.get(root).copied().unwrap_or(0) != 0 {
            continue;
        }
        let mut path: Vec<&'a K> = vec![root];
        let mut iters: Vec<I> = vec![parents(root)];
        state.insert(root, 1);
        while let Some(it) = iters.last_mut() {
            match it.next() {
                Some(p) => match state.get(p).copied().unwrap_or(0) {
                    1 => {
                        let from = path.iter().position(|u| *u == p).unwrap_or(0);
                        let mut cycle: Vec<K> = path
                            .get(from..)
                            .unwrap_or(&[])
                            .iter()
                            .map(|u| (*u).clone())
                            .collect();
                        cycle.push(p.clone());
                        return Some(cycle);
                    }
                    0 => {
                        state.insert(p, 1);
                        path.push(p);
                        iters.push(parents(p));
                    }
                    _ => {}
                },
                None => {
                    iters.pop();
                    if let Some(done) = path.pop() {
                        state.insert(done, 2);
                    }
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let e: EntityRef = r#"Service::"pay\"ments""#.parse().unwrap();
        assert_eq!(e.ty, "Service");
        assert_eq!(e.id, "pay\"ments");
        assert_eq!(e.to_string(), r#"Service::"pay\"ments""#);
        let ns: EntityRef = r#"Acme::Db::"x""#.parse().unwrap();
        assert_eq!(ns.ty, "Acme::Db");
    }

    #[test]
    fn rejects_garbage() {
        assert!("Service".parse::<EntityRef>().is_err());
        assert!(r#"::"x""#.parse::<EntityRef>().is_err());
        assert!(r#"Service::"x"#.parse::<EntityRef>().is_err());
        assert!(r#"Ser vice::"x""#.parse::<EntityRef>().is_err());
    }
}
