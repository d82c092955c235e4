//! The bundle manifest parser: `bundle.toml` text parsed, its routes built into a table and its roles validated as
//! `Bundle::load` does (the same text also read as a `routes_file`); diagnostics, never a panic.
#![no_main]

use std::path::Path;

use jitgate_engine::fuzzing::{bundle_manifest, routes_file};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    match bundle_manifest(Path::new("bundle.toml"), source) {
        Ok((_, routes, _)) => {
            for r in routes.routes() {
                let _ = (r.resource_type(), r.parent_types().count());
            }
        }
        Err(d) => {
            assert!(!d.0.is_empty());
            let _ = d.to_string();
        }
    }
    if let Err(d) = routes_file(Path::new("routes.toml"), source) {
        assert!(!d.0.is_empty());
    }
});
