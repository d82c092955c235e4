//! The admit stage's path normalization (`jitgate_proxy::admit::normalize_path`) on any request path: it never
//! panics, and what it produces is a fixed point (normalizing it again changes nothing), starts with `/` and holds
//! no empty, `.` or `..` segment. The first byte picks the settings; the rest is the path.
#![no_main]

use jitgate_proxy::admit::normalize_path;
use jitgate_proxy::config::TrailingSlash;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // hyper hands admit a `&str` path: only UTF-8 reaches it.
    let Ok(raw) = std::str::from_utf8(rest) else {
        return;
    };
    let trailing = if flags & 1 == 0 {
        TrailingSlash::Strip
    } else {
        TrailingSlash::Keep
    };
    let allow_double = flags & 2 != 0;
    let Ok(path) = normalize_path(raw, trailing, allow_double) else {
        return;
    };
    assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
    let inner = path.strip_suffix('/').unwrap_or(&path);
    if inner.len() > 1 {
        for seg in inner[1..].split('/') {
            assert!(!matches!(seg, "" | "." | ".."), "{raw:?} -> {path:?}");
        }
    }
    assert_eq!(
        normalize_path(&path, trailing, allow_double).as_deref(),
        Ok(path.as_str()),
        "normalizing {raw:?} twice"
    );
});
