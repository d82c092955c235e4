//! Entry points for the fuzz targets in `tools/fuzz` (not a stable API): the parts of loading that work on text
//! alone, reachable without a bundle directory on disk. Each does exactly what the loader does with that text.

use std::collections::BTreeMap;
use std::path::Path;

use crate::bundle::{Role, validate_role};
use crate::diag::{Diagnostic, Diagnostics, parse_toml};
use crate::manifest::{Manifest, RoutesFile};
use crate::routes::RouteTable;

/// The text stage of [`crate::bundle::Bundle::load`] for a manifest at `path` whose text is `source`: the TOML
/// parsed into a [`Manifest`], its inline routes built into a table and every role's settings validated, with the
/// diagnostics the loader would give. Files the manifest names (policies, schema, routes file) are not read.
pub fn bundle_manifest(
    path: &Path,
    source: &str,
) -> Result<(Manifest, RouteTable, BTreeMap<String, Role>), Diagnostics> {
    let manifest: Manifest = parse_toml(path, source)?;
    let mut errors = Vec::new();
    let routes = RouteTable::build(path, source, &manifest.routes).map_err(|d| errors.extend(d.0));
    let mut roles = BTreeMap::new();
    for (name, spec) in &manifest.roles {
        match validate_role(spec) {
            Ok(r) => {
                roles.insert(name.clone(), r);
            }
            Err(msg) => {
                let field = msg.split(':').next().unwrap_or_default();
                errors.push(Diagnostic::at_toml_key(
                    path,
                    source,
                    &format!("roles.{name}.{field}"),
                    format!("roles.{name}: {msg}"),
                ));
            }
        }
    }
    Diagnostics(errors).into_result()?;
    match routes {
        Ok(routes) => Ok((manifest, routes, roles)),
        Err(()) => Err(Diagnostic::file(path, "bundle failed to load").into()),
    }
}

/// A routes file (`routes_file`) at `path` whose text is `source`, parsed and built into a route table as
/// [`crate::bundle::Bundle::load`] does.
pub fn routes_file(path: &Path, source: &str) -> Result<RouteTable, Diagnostics> {
    let file: RoutesFile = parse_toml(path, source)?;
    RouteTable::build(path, source, &file.routes)
}
