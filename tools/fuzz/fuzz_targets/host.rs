//! The admit stage's host: a request target and `Host` headers (one per line after the first) give one canonical
//! host or a refusal, never a panic; a canonical host is lower-case, has no port and reads as itself again.
#![no_main]

use jitgate_proxy::fuzzing::request_host;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let target = lines.next().unwrap_or_default();
    let target: &[u8] = if target.is_empty() { b"/" } else { target };
    let hosts: Vec<&[u8]> = lines.collect();
    let Some(Ok(Some(host))) = request_host(target, &hosts) else {
        return;
    };
    assert_eq!(host, host.to_ascii_lowercase());
    assert!(
        !host.is_empty() && !host.contains(char::is_whitespace),
        "{host:?}"
    );
    assert!(
        !host.contains(':') || host.starts_with('['),
        "{host:?} keeps a port"
    );
    assert_eq!(
        request_host(b"/", &[host.as_bytes()]),
        Some(Ok(Some(host.clone()))),
        "the canonical host {host:?} is not canonical"
    );
});
