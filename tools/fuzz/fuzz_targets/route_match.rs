//! Route matching (`RouteTable::find`) on any method, host and path: the quickstart bundle's routes plus a table with
//! hosts, several parameters and a rest parameter. Input: `METHOD\nhost\npath` (an empty host line: no host). The
//! path is matched as the admit stage would pass it (normalized) and raw; a match renders a resource and never
//! panics, and hosts match without regard to case (an upper-cased host finds the same route and resource).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use jitgate_engine::fuzzing::{bundle_manifest, routes_file};
use jitgate_engine::routes::RouteTable;
use jitgate_proxy::admit::normalize_path;
use jitgate_proxy::config::TrailingSlash;
use libfuzzer_sys::fuzz_target;

const QUICKSTART: &str = include_str!("../../../policies/quickstart-cedar/bundle.toml");

/// Templates the quickstart does not use: a host, a rest parameter, parameters side by side, encoded literals.
const MORE: &str = r#"
[[routes]]
method = "*"
path = "/files/{bucket}/{key*}"
host = "Storage.Example.com"
service = "storage"
action = "readFile"
resource = 'File::"{bucket}/{key}"'
parents = ['Bucket::"{bucket}"', 'Service::"storage"']

[[routes]]
method = "GET"
path = "/users/%40all"
service = "directory"
action = "listAllUsers"

[[routes]]
method = "GET"
path = "/users/{id}"
service = "directory"
action = "readUser"
resource = 'User::"{id}"'

[[routes]]
method = "PATCH"
path = "/orgs/{org}/teams/{team}"
host = "[::1]"
service = "directory"
action = "updateTeam"
resource = 'Team::"{org}/{team}"'
parents = ['Org::"{org}"']
"#;

fn tables() -> &'static [RouteTable] {
    static TABLES: OnceLock<Vec<RouteTable>> = OnceLock::new();
    TABLES.get_or_init(|| {
        let quickstart = bundle_manifest(Path::new("bundle.toml"), QUICKSTART)
            .map(|(_, routes, _)| routes)
            .unwrap_or_else(|d| panic!("the quickstart routes: {d}"));
        let more = routes_file(Path::new("routes.toml"), MORE)
            .unwrap_or_else(|d| panic!("the fuzz target's routes: {d}"));
        vec![quickstart, more]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let method = lines.next().unwrap_or_default();
    let host = lines.next().filter(|h| !h.is_empty());
    let path = lines.next().unwrap_or_default();
    for table in tables() {
        if let Some(m) = table.find(method, host, path) {
            let _ = m.resource.entity.to_string();
        }
        if let Ok(normalized) = normalize_path(path, TrailingSlash::Strip, false) {
            let upper = host.map(str::to_ascii_uppercase);
            let first = table.find(method, host, &normalized);
            let again = table.find(method, upper.as_deref(), &normalized);
            assert_eq!(
                first.map(|m| (m.route.action.clone(), m.resource)),
                again.map(|m| (m.route.action.clone(), m.resource))
            );
        }
    }
});
