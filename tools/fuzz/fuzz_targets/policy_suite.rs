//! The policy-suite parser (`Suite::parse`, what `jitgate test` reads): any YAML or JSON text gives a suite or
//! diagnostics naming file and line, never a panic.
#![no_main]

use std::path::Path;

use jitgate_engine::testing::suite::Suite;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(d) = Suite::parse(Path::new("policy-tests/fuzz.yaml"), source) {
        assert!(!d.0.is_empty());
        let _ = d.to_string();
    }
});
