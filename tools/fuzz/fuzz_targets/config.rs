//! The serve config parser (`Config::parse`, what `jitgate serve` and `jitgate check` run on `jitgate.toml`): any
//! text gives a config or diagnostics naming file and line, never a panic.
#![no_main]

use std::path::Path;

use jitgate_proxy::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    // Relative paths resolve under a directory that does not exist: checks read no file of the machine's.
    if let Err(d) = Config::parse(Path::new("/nonexistent/jitgate-fuzz/jitgate.toml"), source) {
        assert!(!d.0.is_empty());
        let _ = d.to_string();
    }
});
