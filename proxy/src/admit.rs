//! admit: the client's address, methods never forwarded, the body limit by declared length, the one path
//! normalization and the one host, before any other work. The path produced here is exactly what policies see and
//! what the upstream receives.

use std::net::{IpAddr, SocketAddr};

use http::{Method, Request, header};
use ipnet::IpNet;

use crate::config::{Config, TrailingSlash};
use crate::respond::Refusal;
use crate::trace::Trace;

/// A request admitted: its normalized path and its one host.
#[derive(Debug)]
pub struct Admitted {
    /// The normalized path (see [`normalize_path`]).
    pub path: String,
    /// The host, canonical (see [`request_host`]), if the request names one.
    pub host: Option<String>,
}

/// The admit stage: refuses what jitgate never forwards or will not decide on, and normalizes the path (also into
/// `trace`, for the record).
#[inline]
pub fn admit<B>(req: &Request<B>, config: &Config, trace: &mut Trace) -> Result<Admitted, Refusal> {
    if req.method() == Method::CONNECT || req.method() == Method::TRACE {
        return Err(Refusal::MethodNotAllowed(format!(
            "{} is never forwarded",
            req.method()
        )));
    }
    if let Some(why) = trace.bad_forwarded_for.take() {
        trace.error = Some(why.clone());
        return Err(Refusal::BadRequest(why));
    }
    if crate::headers::content_length(req.headers()).is_some_and(|n| n > config.max_body_bytes) {
        return Err(Refusal::BodyTooLarge);
    }
    if let Some(why) = body_on_get_or_head(req) {
        return Err(Refusal::BadRequest(why));
    }
    let path = normalize_path(
        req.uri().path(),
        config.trailing_slash,
        config.allow_double_encoding,
    )
    .map_err(|e| Refusal::BadPath(e.to_string()))?;
    trace.path = path.clone();
    let host = request_host(req).map_err(Refusal::BadRequest)?;
    Ok(Admitted { path, host })
}

/// Why a GET or HEAD is refused for its body, if it has one: `Transfer-Encoding` (any coding) or a
/// `Content-Length` other than 0. The upstream client sends no body for these methods, so forwarding one would drop
/// the body silently, and the upstream and the policies would see a request that is not what the client sent.
/// Refused rather than forwarded: no backend jitgate fronts should act on a GET body, and a client that sends one
/// is either broken or probing for a backend that reads it.
fn body_on_get_or_head<B>(req: &Request<B>) -> Option<String> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    if req.headers().contains_key(header::TRANSFER_ENCODING) {
        return Some(format!(
            "a {} request with a body (Transfer-Encoding) is not forwarded",
            req.method()
        ));
    }
    let declared = req
        .headers()
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .any(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) != Some(0));
    declared.then(|| {
        format!(
            "a {} request with a body (Content-Length) is not forwarded",
            req.method()
        )
    })
}

/// The client address: the peer, unless the peer is a trusted proxy, in which case the right-most address in
/// `X-Forwarded-For` that is not itself a trusted proxy. Entries are read from the right (the hops jitgate trusts)
/// and may be `ip`, `ip:port` or `[ipv6]:port`; a trusted proxy's header that is not text, or whose walk meets an
/// entry that is not an address, is an error (the request is refused), never a fallback to the proxy's own address.
pub fn client_ip<B>(
    trusted_proxies: &[IpNet],
    req: &Request<B>,
    peer: IpAddr,
) -> Result<IpAddr, String> {
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return Ok(peer);
    }
    let mut entries = Vec::new();
    for v in req.headers().get_all("x-forwarded-for") {
        let v = v.to_str().map_err(|_| {
            format!("X-Forwarded-For from trusted proxy {peer} is not readable text")
        })?;
        entries.extend(v.split(','));
    }
    for entry in entries.into_iter().rev() {
        let ip = forwarded_for_entry(entry).ok_or_else(|| {
            format!(
                "X-Forwarded-For from trusted proxy {peer}: `{}` is not an address",
                entry.trim()
            )
        })?;
        if !trusted(&ip) {
            return Ok(ip);
        }
    }
    Ok(peer)
}

/// One `X-Forwarded-For` entry: `ip`, `ip:port`, `[ipv6]` or `[ipv6]:port`.
fn forwarded_for_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    e.parse::<IpAddr>()
        .ok()
        .or_else(|| e.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            e.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|v| v.parse::<std::net::Ipv6Addr>().ok())
                .map(IpAddr::V6)
        })
        .map(|ip| ip.to_canonical())
}

/// The request's host, as routing, the policies (`context.host`) and the upstream (`X-Forwarded-Host`) all see it:
/// the target's authority (absolute-form, HTTP/2 `:authority`) or else the `Host` header, lowercased, without port
/// or trailing dot. Two `Host` headers, an unreadable one, one that is not a host name or IP literal (see
/// [`canonical_host`]), or an authority and a `Host` naming different hosts are refused: jitgate decides on one
/// host only, and a host is shown to approvers and written to the log, so it is never free text.
pub(crate) fn request_host<B>(req: &Request<B>) -> Result<Option<String>, String> {
    let mut headers = req.headers().get_all(header::HOST).iter();
    let header = match (headers.next(), headers.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => return Err("the request has more than one Host header".into()),
        (Some(v), None) => Some(
            v.to_str()
                .map_err(|_| "the Host header is not readable text".to_string())?,
        ),
    };
    let authority = req
        .uri()
        .authority()
        .map(|a| {
            canonical_host(a.as_str()).map_err(|why| format!("the request target's host {why}"))
        })
        .transpose()?;
    let header = header
        .map(|h| canonical_host(h).map_err(|why| format!("the Host header {why}")))
        .transpose()?;
    match (authority, header) {
        (Some(a), Some(h)) if a != h => Err(format!(
            "the request's target names host `{a}` and its Host header `{h}`"
        )),
        (Some(a), _) => Ok(Some(a)),
        (None, h) => Ok(h),
    }
}

/// The longest host name (RFC 1035: 253 characters without the trailing dot).
const MAX_HOST_NAME: usize = 253;

/// `Example.COM.:8443` -> `example.com`; `[::1]:8080` -> `[::1]`; `10.0.0.1:80` -> `10.0.0.1`. The host must be a
/// host name (labels of letters, digits, `-` and `_`, 1 to 63 characters, not starting or ending with `-`;
/// optionally a trailing dot), an IPv4 address or a bracketed IPv6 address, optionally followed by `:port`. Anything
/// else (spaces, userinfo, parentheses, an empty host or port) is refused: the error says why, for a 400.
fn canonical_host(h: &str) -> Result<String, String> {
    let shown = || h.escape_debug().to_string();
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{}` has an unclosed `[`", shown()))?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`{}` is not a valid IPv6 literal", shown()));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("`{}`: only a port may follow `]`", shown()))?,
            ),
        };
        (&h[..=v6.len() + 1], port)
    } else {
        match h.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("`{}` has an invalid port", shown()));
        }
        if port.parse::<u16>().is_err() {
            return Err(format!("`{}` has a port over 65535", shown()));
        }
    }
    if host.starts_with('[') {
        return Ok(host.to_ascii_lowercase());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(name.to_string());
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            // `_` is outside RFC 1123 but common in internal names (container services, SRV-style labels);
            // it is neither a space nor punctuation that could read as a sentence to an approver.
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > MAX_HOST_NAME || !name.split('.').all(label_ok) {
        return Err(format!(
            "`{}` is not a host name or IP literal (labels of letters, digits, `-` and `_`, an IPv4 address or a \
             bracketed IPv6 address, with an optional port)",
            shown()
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// Not an origin-form path.
    #[error("the request path must start with `/`")]
    NotOriginForm,
    /// `%2F`, `%5C` or `%00`: an encoded separator or NUL would mean different things to different servers.
    #[error("encoded `/`, `\\` or NUL is not allowed in the path")]
    EncodedSeparator,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding in the path")]
    BadEscape,
    /// A raw backslash, a control character or a non-ASCII byte.
    #[error("the path contains a backslash, a control character or a non-ASCII byte")]
    BadCharacter,
    /// Percent-encoded bytes that are not UTF-8 (overlong forms included): two such paths could name one resource.
    #[error("percent-encoded bytes in the path are not UTF-8")]
    NotUtf8,
    /// A `.` or `..` segment with `;` parameters (`/public/..;/admin`): servers that cut the parameters before
    /// resolving dot segments would climb where the policies did not look.
    #[error("a `.` or `..` path segment with `;` parameters is not allowed")]
    DotSegmentParameter,
    /// `%25` followed by an encoded `.`, `/`, `\` or NUL (`%252e`, `%25%32%66`): a backend that decodes twice would
    /// read a dot segment or a separator that the policies never saw (`[server] allow_double_encoding` allows it).
    #[error(
        "a double-encoded `.`, `/`, `\\` or NUL (`%25` followed by an escape) is not allowed in the path"
    )]
    DoubleEncoded,
}

/// Normalizes a request path (without the query):
/// - percent-encoded unreserved characters are decoded (`%2e` -> `.`, `%41` -> `A`), other escapes upper-cased;
/// - encoded separators (`%2F`, `%5C`) and NUL are refused rather than guessed at;
/// - empty segments (`//`) are dropped and dot segments resolved (`..` never climbs above `/`);
/// - a double-encoded `.`, `/`, `\` or NUL (`%252e`) is refused unless `allow_double_encoding`;
/// - a trailing slash is stripped or kept per configuration.
pub fn normalize_path(
    raw: &str,
    trailing: TrailingSlash,
    allow_double_encoding: bool,
) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let mut out: Vec<String> = Vec::new();
    // Whether the path ends in a directory: its last segment, decoded, is empty, `.` or `..` (`/a/%2e` is `/a/.`).
    let mut ends_with_slash = false;
    for seg in raw.split('/') {
        let seg = canonical_segment(seg, allow_double_encoding)?;
        ends_with_slash = matches!(seg.as_str(), "" | "." | "..");
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(seg),
        }
    }
    ends_with_slash &= raw.len() > 1;
    let mut path = String::with_capacity(raw.len());
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    if path.is_empty() {
        return Ok("/".to_string());
    }
    if ends_with_slash && trailing == TrailingSlash::Keep {
        path.push('/');
    }
    Ok(path)
}

fn canonical_segment(seg: &str, allow_double_encoding: bool) -> Result<String, PathError> {
    let bytes = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    // The segment decoded once, as a backend that decodes would read it, to look for escapes that survive one decoding.
    let mut decoded: Vec<u8> = Vec::with_capacity(seg.len());
    // The escaped bytes in a row, which must decode to UTF-8 together.
    let mut escaped: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes.get(i).copied().unwrap_or(0);
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| (*c as char).to_digit(16));
            let lo = bytes.get(i + 2).and_then(|c| (*c as char).to_digit(16));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BadEscape);
            };
            let v = (hi * 16 + lo) as u8;
            if v == b'/' || v == b'\\' || v == 0 {
                return Err(PathError::EncodedSeparator);
            }
            escaped.push(v);
            decoded.push(v);
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                out.push(v as char);
            } else {
                out.push('%');
                out.push_str(&format!("{v:02X}"));
            }
            i += 3;
        } else {
            utf8(&mut escaped)?;
            // Refused here rather than left to hyper and `http` (which accept UTF-8 in a request target): the path
            // can then never be transcoded (a byte pushed as a `char` would become two bytes of UTF-8).
            if b == b'\\' || b.is_ascii_control() || !b.is_ascii() {
                return Err(PathError::BadCharacter);
            }
            out.push(b as char);
            decoded.push(b);
            i += 1;
        }
    }
    utf8(&mut escaped)?;
    if !allow_double_encoding && escapes_a_separator(&decoded) {
        return Err(PathError::DoubleEncoded);
    }
    if let Some((name, _)) = out.split_once(';') {
        if name == "." || name == ".." {
            return Err(PathError::DotSegmentParameter);
        }
    }
    Ok(out)
}

/// Whether `decoded` (a segment decoded once) still holds an escape of `.`, `/`, `\\` or NUL, any case: a second
/// decoding would turn it into a dot segment, a separator or a NUL.
fn escapes_a_separator(decoded: &[u8]) -> bool {
    let hex = |c: &u8| (*c as char).to_digit(16);
    decoded.windows(3).any(|w| match w {
        [b'%', hi, lo] => match (hex(hi), hex(lo)) {
            (Some(hi), Some(lo)) => matches!(hi * 16 + lo, 0x2e | 0x2f | 0x5c | 0),
            _ => false,
        },
        _ => false,
    })
}

/// Checks that a run of escaped bytes is UTF-8 (overlong forms such as `%C0%AE` are not), then clears it.
fn utf8(escaped: &mut Vec<u8>) -> Result<(), PathError> {
    if !escaped.is_empty() {
        std::str::from_utf8(escaped).map_err(|_| PathError::NotUtf8)?;
        escaped.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize_path(p, TrailingSlash::Strip, false)
    }

    /// An IPv4 client behind a dual-stack hop is `::ffff:a.b.c.d`: read as the IPv4 address it is, so IPv4
    /// ranges (trusted proxies, a policy's `isInRange`) contain it.
    #[test]
    fn forwarded_for_entries_are_canonical() {
        for (entry, expected) in [
            ("203.0.113.7", "203.0.113.7"),
            (" 203.0.113.7:443 ", "203.0.113.7"),
            ("::ffff:203.0.113.7", "203.0.113.7"),
            ("[::ffff:203.0.113.7]:8080", "203.0.113.7"),
            ("[::ffff:203.0.113.7]", "203.0.113.7"),
            ("2001:db8::1", "2001:db8::1"),
        ] {
            assert_eq!(
                forwarded_for_entry(entry)
                    .map(|ip| ip.to_string())
                    .as_deref(),
                Some(expected),
                "{entry}"
            );
        }
        assert_eq!(forwarded_for_entry("unknown"), None);
    }

    /// Hosts are shown to approvers and logged: only host names and IP literals, with an optional port, pass.
    #[test]
    fn hosts_are_host_names_or_ip_literals() {
        for (raw, expected) in [
            ("Example.COM.:8443", "example.com"),
            ("api.example", "api.example"),
            ("h", "h"),
            ("a-b.c1", "a-b.c1"),
            ("10.0.0.1:80", "10.0.0.1"),
            ("[::1]:8080", "[::1]"),
            ("[2001:DB8::1]", "[2001:db8::1]"),
            ("localhost:65535", "localhost"),
            ("payments_api:8080", "payments_api"),
        ] {
            assert_eq!(canonical_host(raw).as_deref(), Ok(expected), "{raw}");
        }
        let long_label = "a".repeat(64);
        let long_name = vec!["a"; 130].join(".");
        for raw in [
            "staging (dry run - safe to approve)",
            "staging approve",
            "",
            ".",
            "a..b",
            "-a.example",
            "a-.example",
            "user@api.example",
            "api.example:",
            "api.example:80:80",
            "api.example:70000",
            "api.example:8o",
            "[::1",
            "[::1]x",
            "[not-v6]:80",
            "::1",
            "caf\u{e9}.example",
            "a\u{200b}b",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(canonical_host(raw).is_err(), "{raw:?} was accepted");
        }
    }

    #[test]
    fn resolves_tricks_to_one_path() {
        assert_eq!(n("/a/../admin").unwrap(), "/admin");
        assert_eq!(n("/a/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(n("/a/%2E%2E/admin").unwrap(), "/admin");
        assert_eq!(n("//admin").unwrap(), "/admin");
        assert_eq!(n("/./admin/.").unwrap(), "/admin");
        assert_eq!(n("/../../admin").unwrap(), "/admin");
        assert_eq!(n("/payments/").unwrap(), "/payments");
        assert_eq!(
            normalize_path("/payments/", TrailingSlash::Keep, false).unwrap(),
            "/payments/"
        );
        assert_eq!(n("/").unwrap(), "/");
        assert_eq!(n("/%41b%7e").unwrap(), "/Ab~");
        assert_eq!(n("/a%20b%3f").unwrap(), "/a%20b%3F");
    }

    #[test]
    fn refuses_ambiguous_paths() {
        assert_eq!(n("/a%2Fb"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a%00"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(n("/a%2"), Err(PathError::BadEscape));
        assert_eq!(n("/a\\b"), Err(PathError::BadCharacter));
        assert_eq!(n("a"), Err(PathError::NotOriginForm));
        assert_eq!(n("/caf\u{e9}"), Err(PathError::BadCharacter));
        // Bytes that are not UTF-8, and overlong forms of `.` and `/`.
        assert_eq!(n("/databases/%FF"), Err(PathError::NotUtf8));
        assert_eq!(n("/a/%C0%AE%C0%AE/admin"), Err(PathError::NotUtf8));
        assert_eq!(n("/a/%E2%82"), Err(PathError::NotUtf8));
        assert_eq!(n("/caf%C3%A9").unwrap(), "/caf%C3%A9");
        // Dot segments with path parameters, which Tomcat, Jetty and Spring resolve after cutting the `;...`.
        for p in [
            "/public/..;/admin",
            "/public/%2e%2e;/admin",
            "/public/..;jsessionid=1/admin",
            "/public/.;/admin",
            "/public/..;",
        ] {
            assert_eq!(n(p), Err(PathError::DotSegmentParameter), "{p}");
        }
        assert_eq!(n("/a/b;v=1/c").unwrap(), "/a/b;v=1/c");
        assert_eq!(n("/a/...;x").unwrap(), "/a/...;x");
    }

    /// `%25` followed by an escape of `.`, `/`, `\` or NUL, in any case and however the escape itself is written,
    /// is what a backend that decodes twice reads as a dot segment or separator: refused unless allowed, and then
    /// passed on as it came (`%25` stays encoded, so the backend sees the same bytes).
    #[test]
    fn double_encoded_dots_and_separators_are_refused_unless_allowed() {
        for p in [
            "/public/%252e%252e/admin/x",
            "/public/%252E%252E/admin/x",
            "/public/%252f..%252fadmin",
            "/public/%252F",
            "/public/a%255cb",
            "/public/a%255Cb",
            "/public/a%2500",
            "/public/%25%32%65%25%32%65/admin",
            "/public/%25%32%45",
        ] {
            assert_eq!(n(p), Err(PathError::DoubleEncoded), "{p}");
            assert!(
                normalize_path(p, TrailingSlash::Strip, true).is_ok(),
                "{p} allowed"
            );
        }
        assert_eq!(
            normalize_path("/public/%252e%252e/admin/x", TrailingSlash::Strip, true).unwrap(),
            "/public/%252e%252e/admin/x"
        );
        // A literal percent sign that escapes nothing dangerous stays allowed.
        assert_eq!(n("/a%2541").unwrap(), "/a%2541");
        assert_eq!(n("/a%25").unwrap(), "/a%25");
        assert_eq!(n("/100%25/x").unwrap(), "/100%25/x");
    }

    /// A path that ends in a dot segment ends in a directory however its dots are written.
    #[test]
    fn the_trailing_slash_follows_the_decoded_last_segment() {
        let keep = |p| normalize_path(p, TrailingSlash::Keep, false).unwrap();
        for (raw, expected) in [
            ("/a/b/..", "/a/"),
            ("/a/b/%2e%2e", "/a/"),
            ("/a/b/.%2E", "/a/"),
            ("/a/.", "/a/"),
            ("/a/%2e", "/a/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("/..", "/"),
        ] {
            assert_eq!(keep(raw), expected, "{raw}");
        }
    }

    /// Every path built from up to four tricky segments, with and without a trailing slash, in both trailing-slash
    /// modes: the result is canonical (normalizing it again changes nothing, so an upstream that normalizes too
    /// sees what the policy saw), has no empty or dot segments, and never decodes a reserved escape.
    #[test]
    fn normalization_is_idempotent_and_leaves_no_dot_or_empty_segments() {
        const SEGMENTS: [&str; 12] = [
            "", ".", "..", "%2e", "%2E%2e", ".%2e", "a", "%41", "%7e", "%3f", "b%20c", "...",
        ];
        let mut checked = 0;
        let mut paths = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for p in &paths {
                for s in SEGMENTS {
                    next.push(format!("{p}/{s}"));
                }
            }
            for p in &next {
                for raw in [p.clone(), format!("{p}/")] {
                    for mode in [TrailingSlash::Strip, TrailingSlash::Keep] {
                        let once = normalize_path(&raw, mode, false).unwrap();
                        assert_eq!(
                            normalize_path(&once, mode, false).unwrap(),
                            once,
                            "{raw:?} -> {once:?} is not canonical ({mode:?})"
                        );
                        assert!(once.starts_with('/'), "{raw:?} -> {once:?}");
                        let body = once.strip_suffix('/').unwrap_or(&once);
                        for seg in body.split('/').skip(1) {
                            assert!(
                                !seg.is_empty() && seg != "." && seg != "..",
                                "{raw:?} -> {once:?} keeps segment {seg:?}"
                            );
                        }
                        // `%3f` decoded would start a query, `%20` would end the request line.
                        assert!(
                            !once.contains('?') && !once.contains(' '),
                            "{raw:?} -> {once:?}: a reserved escape was decoded"
                        );
                        checked += 1;
                    }
                }
            }
            paths = next;
        }
        assert!(checked > 80_000, "{checked} paths checked");
    }
}
