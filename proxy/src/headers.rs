//! Header rules shared by configuration and the pipeline: which headers are hop-by-hop, which a client may not
//! send upstream (jitgate sets them), and how a declared body length reads. A leaf: it uses nothing of the crate.

use http::{HeaderMap, HeaderName, header};

/// The header carrying an approval id when resending a held request.
pub const APPROVAL_HEADER: &str = "x-jitgate-approval";

/// Hop-by-hop headers (RFC 9110 §7.6.1) never forwarded in either direction. As `HeaderName`s, so that removing
/// them on every request parses no name.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers and those the `Connection` header nominates.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    if h.contains_key(header::CONNECTION) {
        for n in connection_nominated(h) {
            h.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

/// The headers the client's `Connection` header nominates as hop-by-hop: they never reach the upstream.
pub fn connection_nominated(h: &HeaderMap) -> Vec<HeaderName> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

/// Whether `name` never reaches the upstream as the client sent it: hop-by-hop, or nominated by `Connection`.
pub fn is_hop_by_hop(h: &HeaderMap, name: &HeaderName) -> bool {
    HOP_BY_HOP.iter().any(|n| name == n) || connection_nominated(h).contains(name)
}

/// Headers that ask an upstream framework to act on another method or path than the request line's (Express
/// method-override, Symfony, IIS URL rewrite): the decision was made on the request line, so they never pass.
const OVERRIDE_HEADERS: [&str; 5] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

/// Whether a client's header `name` (lowercase, as `HeaderMap` keeps names) is one it may not send upstream: what
/// jitgate sets itself (every `x-jitgate-*`, the upstream credential), what a client may claim about the way its
/// request came (`Forwarded`, every `X-Forwarded-*`, `X-Real-IP`), its token for jitgate (`Authorization`), and the
/// method and URL overrides. Names are compared with `_` read as `-`: CGI, WSGI and PHP servers map both to one
/// `HTTP_X_JITGATE_PRINCIPAL` variable, and which copy wins is theirs to choose.
pub fn is_claimed(name: &str, credential: Option<&HeaderName>) -> bool {
    let n = name.as_bytes();
    is(n, b"authorization")
        || is(n, b"forwarded")
        || is(n, b"x-real-ip")
        || starts(n, b"x-forwarded-")
        || starts(n, b"x-jitgate-")
        || OVERRIDE_HEADERS.iter().any(|o| is(n, o.as_bytes()))
        || credential.is_some_and(|c| is(n, c.as_str().as_bytes()))
}

/// Whether two header names are one to a server that reads `_` as `-` (CGI, WSGI, PHP).
pub fn same_dashed(a: &str, b: &str) -> bool {
    is(a.as_bytes(), b.as_bytes())
}

/// `name` with `_` read as `-` (no allocation: this runs for every header of every request).
fn dashed(name: &[u8]) -> impl Iterator<Item = u8> + '_ {
    name.iter().map(|b| if *b == b'_' { b'-' } else { *b })
}

fn is(name: &[u8], target: &[u8]) -> bool {
    name.len() == target.len() && dashed(name).eq(dashed(target))
}

fn starts(name: &[u8], prefix: &[u8]) -> bool {
    name.get(..prefix.len())
        .is_some_and(|head| dashed(head).eq(dashed(prefix)))
}

/// Removes every header [`is_claimed`] names. jitgate then sets its own identity headers, `X-Forwarded-For`,
/// `-Proto` and `-Host`, and the credential.
pub fn strip_claimed(h: &mut HeaderMap, credential: Option<&HeaderName>) {
    let claimed: Vec<HeaderName> = h
        .keys()
        .filter(|n| is_claimed(n.as_str(), credential))
        .cloned()
        .collect();
    for n in claimed {
        h.remove(n);
    }
}

/// The body length a request declares (`Content-Length`), when it is readable.
pub fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}
