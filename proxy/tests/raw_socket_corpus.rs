//! A corpus of raw-socket attacks on the data plane: each case is bytes written as they are onto a fresh TCP
//! connection to a real proxy, whose upstream records every byte it reads. Each case asserts the status the
//! attacker gets AND what the upstream saw: whether the request reached it at all, that nothing forbidden (a
//! smuggled request, a path outside the route, a spoofed identity, the caller's token, a body jitgate refused)
//! is in its bytes, and, for requests that pass, that jitgate's own identity headers are.
//!
//! The table is the test: add a case by adding a row. Families: request smuggling (CL+TE, TE obfuscation,
//! duplicate CL), path tricks (`..`, `%2e%2e`, `%252e`, backslash, NUL, overlong UTF-8), spoofed identity headers
//! (`x-jitgate-*`, `x-forwarded-*`, `Forwarded`), hop-by-hop header abuse (`Connection: x-jitgate-...`), JWT
//! algorithm confusion (`alg: none`, HS256 keyed with the RS256 public key), header and line size limits, junk in
//! `Host`, and a GET with a body.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey};
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------------------------------
// An upstream that records every byte it reads

/// A stream that copies every byte read from it into `seen`.
struct Recording {
    inner: TcpStream,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Recording {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let fresh = buf.filled()[before..].to_vec();
            self.seen.lock().unwrap().extend_from_slice(&fresh);
        }
        polled
    }
}

impl AsyncWrite for Recording {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An HTTP/1.1 upstream that answers every request 200 `upstream ok`, counting requests and recording the bytes
/// of every connection.
struct RecordingUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
    requests: Arc<AtomicU64>,
}

impl RecordingUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicU64::new(0));
        let (s, r) = (seen.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let io = Recording {
                    inner: stream,
                    seen: s.clone(),
                };
                let r = r.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        r.fetch_add(1, Ordering::SeqCst);
                        async move {
                            // Read the body, so that its bytes are recorded before the answer leaves.
                            let _ = req.into_body().collect().await;
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from_static(b"upstream ok"),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(io), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            requests,
        }
    }

    /// Everything read so far, and the number of requests.
    fn mark(&self) -> (usize, u64) {
        (
            self.seen.lock().unwrap().len(),
            self.requests.load(Ordering::SeqCst),
        )
    }

    /// What was read since `mark`, lower-cased, and how many requests arrived since.
    fn since(&self, mark: (usize, u64)) -> (String, u64) {
        let seen = self.seen.lock().unwrap();
        (
            String::from_utf8_lossy(&seen[mark.0..]).to_ascii_lowercase(),
            self.requests.load(Ordering::SeqCst) - mark.1,
        )
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The corpus

/// One attack: the bytes, and what must come of them.
struct Case {
    name: &'static str,
    /// Written as they are onto a fresh connection.
    bytes: Vec<u8>,
    /// The status of the (first) response.
    status: u16,
    /// Whether one request reaches the upstream (else none may).
    forwarded: bool,
    /// Never in what the upstream read (compared lower-cased).
    forbidden: Vec<String>,
    /// In what the upstream read when forwarded (compared lower-cased).
    required: Vec<String>,
}

/// Writes `bytes` onto a fresh connection and reads until the proxy closes it; returns the first status.
async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> (u16, String) {
    within("raw request", async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // The proxy may refuse (and close) before it has read everything: a failed write is not the test's point.
        let _ = s.write_all(bytes).await;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        let text = String::from_utf8_lossy(&buf).to_string();
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, text)
    })
    .await
}

/// A token signed with `alg: none` (an empty signature).
fn alg_none_token(claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"a"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    format!("{header}.{payload}.")
}

/// The cases, for a proxy whose issuer signs `alice` (group `engineering`, who may GET `/payments/{id}`) with
/// `token`, at `now`.
fn corpus(token: &str, now: i64) -> Vec<Case> {
    let auth = format!("Authorization: Bearer {token}\r\n");
    // A request head: `line`, then Host, the token, `extra` header lines and `Connection: close`, then `body`.
    let req = |line: &str, extra: &str, body: &str| -> Vec<u8> {
        format!("{line}\r\nHost: api.test\r\n{auth}{extra}Connection: close\r\n\r\n{body}")
            .into_bytes()
    };
    let get = |target: &str, extra: &str| req(&format!("GET {target} HTTP/1.1"), extra, "");
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // What the upstream must see on every request that passes: jitgate's identity, not the caller's token.
    let ours = s(&[
        "x-jitgate-principal: user::\"alice\"",
        "x-jitgate-decision-id: ",
    ]);
    let lower_token = token.to_ascii_lowercase();
    let never = |extra: &[&str]| {
        let mut v = s(&["/admin", "mallory", "evil", &lower_token]);
        v.extend(s(extra));
        v
    };
    let smuggle_tail = "GET /admin/smuggled HTTP/1.1\r\nHost: api.test\r\nX-Who: mallory\r\n\r\n";
    let big = "a".repeat(20 * 1024);
    let many_headers: String = (0..400)
        .map(|i| format!("X-Filler-{i}: {}\r\n", "b".repeat(60)))
        .collect();
    let none = alg_none_token(&claims("alice", &["engineering"], now));
    let hs256_with_public_key = sign(
        Algorithm::HS256,
        "a",
        &EncodingKey::from_secret(RSA_A.public_pem.as_bytes()),
        &claims("alice", &["engineering"], now),
    );
    let raw_with_token = |t: &str, target: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n")
            .into_bytes()
    };
    let case =
        |name, bytes, status, forwarded, forbidden: Vec<String>, required: Vec<String>| Case {
            name,
            bytes,
            status,
            forwarded,
            forbidden,
            required,
        };
    vec![
        // --- The control: a plain allowed request passes with jitgate's identity and without the caller's token.
        case("control: allowed GET", get("/payments/p1", ""), 200, true, never(&[]), ours.clone()),
        // --- Request smuggling. With both framings, hyper reads the body as chunked, drops `Content-Length` and
        // closes the connection after the answer: the request (alice may create payments through her grant) is
        // forwarded with its chunked body, the bytes after it are never read as a request.
        case(
            "smuggling: CL + TE (TE.CL desync)",
            format!(
                "POST /payments HTTP/1.1\r\nHost: api.test\r\n{auth}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggle_tail}"
            )
            .into_bytes(),
            200,
            true,
            never(&["smuggled"]),
            s(&["post /payments http/1.1", "x-jitgate-principal: user::\"alice\""]),
        ),
        case(
            "smuggling: TE + CL (CL.TE desync)",
            format!(
                "POST /payments HTTP/1.1\r\nHost: api.test\r\n{auth}Transfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n{smuggle_tail}"
            )
            .into_bytes(),
            200,
            true,
            never(&["smuggled"]),
            s(&["post /payments http/1.1", "x-jitgate-principal: user::\"alice\""]),
        ),
        case(
            "smuggling: TE obfuscated (xchunked)",
            format!(
                "POST /payments HTTP/1.1\r\nHost: api.test\r\n{auth}Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggle_tail}"
            )
            .into_bytes(),
            400,
            false,
            never(&["smuggled"]),
            vec![],
        ),
        case(
            "smuggling: TE obfuscated (space before the colon)",
            format!(
                "POST /payments HTTP/1.1\r\nHost: api.test\r\n{auth}Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggle_tail}"
            )
            .into_bytes(),
            400,
            false,
            never(&["smuggled"]),
            vec![],
        ),
        case(
            "smuggling: TE obfuscated (chunked, identity)",
            format!(
                "POST /payments HTTP/1.1\r\nHost: api.test\r\n{auth}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggle_tail}"
            )
            .into_bytes(),
            400,
            false,
            never(&["smuggled"]),
            vec![],
        ),
        case(
            "smuggling: two TE headers",
            format!(
                "POST /payments HTTP/1.1\r\nHost: api.test\r\n{auth}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{smuggle_tail}"
            )
            .into_bytes(),
            400,
            false,
            never(&["smuggled"]),
            vec![],
        ),
        case(
            "smuggling: duplicate Content-Length",
            format!(
                "POST /payments HTTP/1.1\r\nHost: api.test\r\n{auth}Content-Length: 0\r\nContent-Length: 60\r\n\r\n{smuggle_tail}"
            )
            .into_bytes(),
            400,
            false,
            never(&["smuggled"]),
            vec![],
        ),
        case(
            "smuggling: Content-Length with a sign",
            format!(
                "POST /payments HTTP/1.1\r\nHost: api.test\r\n{auth}Content-Length: +0\r\n\r\n{smuggle_tail}"
            )
            .into_bytes(),
            400,
            false,
            never(&["smuggled"]),
            vec![],
        ),
        case(
            "smuggling: bare LF line endings",
            format!(
                "GET /payments/p1 HTTP/1.1\nHost: api.test\n{}\nConnection: close\nContent-Length: {}\n\n{smuggle_tail}",
                auth.trim_end(),
                smuggle_tail.len()
            )
            .into_bytes(),
            400,
            false,
            never(&["smuggled"]),
            vec![],
        ),
        // --- Path tricks: nothing outside the route ever reaches the upstream.
        case("path: ../ out of the route", get("/payments/../admin/x", ""), 404, false, never(&[]), vec![]),
        case("path: %2e%2e", get("/payments/%2e%2e/admin/x", ""), 404, false, never(&[]), vec![]),
        case("path: %2E%2E upper case", get("/payments/%2E%2E/admin", ""), 404, false, never(&[]), vec![]),
        case("path: double-encoded %252e%252e", get("/payments/%252e%252e/admin/x", ""), 400, false, never(&["%252e"]), vec![]),
        case("path: double-encoded slash %252f", get("/payments/p1%252f..%252fadmin", ""), 400, false, never(&["%252f"]), vec![]),
        case("path: encoded slash %2f", get("/payments/p1%2f..%2fadmin", ""), 400, false, never(&[]), vec![]),
        case("path: backslash", get("/payments/..\\admin", ""), 400, false, never(&[]), vec![]),
        case("path: encoded backslash %5c", get("/payments/..%5cadmin", ""), 400, false, never(&[]), vec![]),
        case("path: encoded NUL", get("/payments/p1%00.json", ""), 400, false, never(&["%00"]), vec![]),
        case("path: raw NUL", get("/payments/p1\0", ""), 400, false, never(&[]), vec![]),
        case("path: overlong UTF-8 dots", get("/payments/%c0%ae%c0%ae/admin", ""), 400, false, never(&["%c0"]), vec![]),
        case(
            "path: absolute form naming another host",
            get("http://evil.example/payments/p1", ""),
            400,
            false,
            never(&[]),
            vec![],
        ),
        // --- Spoofed identity headers: the upstream gets jitgate's, never the caller's.
        case(
            "spoof: x-jitgate-principal",
            get("/payments/p1", "X-Jitgate-Principal: User::\"mallory\"\r\n"),
            200,
            true,
            never(&[]),
            ours.clone(),
        ),
        case(
            "spoof: x-jitgate-* grant, groups, decision id",
            get(
                "/payments/p1",
                "X-Jitgate-Grant: evil-grant\r\nX-Jitgate-Groups: evil-admins\r\nX-Jitgate-Decision-Id: evil-id\r\n",
            ),
            200,
            true,
            never(&[]),
            ours.clone(),
        ),
        case(
            "spoof: x-forwarded-* and Forwarded from an untrusted peer",
            get(
                "/payments/p1",
                "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: evil\r\n\
                 Forwarded: for=6.6.6.6;host=evil.example\r\nX-Real-IP: 6.6.6.6\r\n",
            ),
            200,
            true,
            never(&["6.6.6.6"]),
            {
                let mut r = ours.clone();
                r.extend(s(&["x-forwarded-for: 127.0.0.1", "x-forwarded-host: api.test"]));
                r
            },
        ),
        case(
            "spoof: identity header without a token",
            b"GET /payments/p1 HTTP/1.1\r\nHost: api.test\r\nX-Jitgate-Principal: User::\"alice\"\r\nConnection: close\r\n\r\n"
                .to_vec(),
            401,
            false,
            never(&[]),
            vec![],
        ),
        // --- Hop-by-hop abuse: a header the caller nominates is dropped as the caller sent it, never jitgate's own.
        case(
            "hop-by-hop: Connection nominates x-jitgate-principal",
            req(
                "GET /payments/p1 HTTP/1.1",
                "Connection: x-jitgate-principal, x-jitgate-decision-id\r\n",
                "",
            ),
            200,
            true,
            never(&[]),
            ours.clone(),
        ),
        case(
            "hop-by-hop: Connection nominates x-forwarded-for",
            req("GET /payments/p1 HTTP/1.1", "Connection: x-forwarded-for\r\nX-Forwarded-For: 6.6.6.6\r\n", ""),
            200,
            true,
            never(&["6.6.6.6"]),
            {
                let mut r = ours.clone();
                r.push("x-forwarded-for: 127.0.0.1".into());
                r
            },
        ),
        case(
            "hop-by-hop: Connection nominates the upstream credential",
            req("GET /payments/p1 HTTP/1.1", "Connection: authorization\r\n", ""),
            200,
            true,
            never(&[]),
            {
                let mut r = ours.clone();
                r.push(format!("authorization: bearer {UPSTREAM_SECRET}"));
                r
            },
        ),
        case(
            "hop-by-hop: an h2c upgrade is not passed on",
            req(
                "GET /payments/p1 HTTP/1.1",
                "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
                "",
            ),
            200,
            true,
            never(&["h2c", "http2-settings"]),
            ours.clone(),
        ),
        // --- JWT algorithm confusion.
        case(
            "jwt: alg none",
            raw_with_token(&none, "/payments/p1"),
            401,
            false,
            never(&[]),
            vec![],
        ),
        case(
            "jwt: HS256 keyed with the RS256 public key",
            raw_with_token(&hs256_with_public_key, "/payments/p1"),
            401,
            false,
            never(&[]),
            vec![],
        ),
        case(
            "jwt: signature stripped",
            raw_with_token(&format!("{}.", token.rsplit_once('.').unwrap().0), "/payments/p1"),
            401,
            false,
            never(&[]),
            vec![],
        ),
        // --- Size limits.
        case("limits: a 20 KiB header line", get("/payments/p1", &format!("X-Big: {big}\r\n")), 431, false, never(&[]), vec![]),
        case("limits: 400 headers", get("/payments/p1", &many_headers), 431, false, never(&[]), vec![]),
        case("limits: a 20 KiB request target", get(&format!("/payments/{big}"), ""), 431, false, never(&[]), vec![]),
        // --- Host junk.
        case(
            "host: free text",
            format!("GET /payments/p1 HTTP/1.1\r\nHost: staging (dry run - safe to approve)\r\n{auth}Connection: close\r\n\r\n").into_bytes(),
            400,
            false,
            never(&["dry run"]),
            vec![],
        ),
        case(
            "host: user info",
            format!("GET /payments/p1 HTTP/1.1\r\nHost: user@evil.example\r\n{auth}Connection: close\r\n\r\n").into_bytes(),
            400,
            false,
            never(&[]),
            vec![],
        ),
        case(
            "host: two Host headers",
            format!("GET /payments/p1 HTTP/1.1\r\nHost: api.test\r\nHost: evil.example\r\n{auth}Connection: close\r\n\r\n").into_bytes(),
            400,
            false,
            never(&[]),
            vec![],
        ),
        // --- A GET with a body is refused, never forwarded without it.
        case(
            "body: GET with Content-Length",
            req("GET /payments/p1 HTTP/1.1", "Content-Length: 16\r\n", "secret-body-1234"),
            400,
            false,
            never(&["secret-body"]),
            vec![],
        ),
        case(
            "body: GET with a chunked body",
            req("GET /payments/p1 HTTP/1.1", "Transfer-Encoding: chunked\r\n", "10\r\nsecret-body-1234\r\n0\r\n\r\n"),
            400,
            false,
            never(&["secret-body"]),
            vec![],
        ),
    ]
}

#[tokio::test]
async fn raw_socket_attacks_are_refused_and_never_reach_the_upstream() {
    let upstream = RecordingUpstream::start().await;
    let up = upstream.addr;
    let h = Harness::start_with(move |raw, _| {
        for u in raw.upstreams.values_mut() {
            u.url = format!("http://{up}");
        }
    })
    .await;
    let token = h.token("alice", &["engineering"]);
    // alice may create payments: a smuggling attempt rides on a request that is forwarded.
    h.grant(
        "g-writer",
        "alice",
        "payments-writer",
        jitgate_engine::EntityRef::new("Service", "payments"),
    );
    let cases = corpus(&token, h.clock.now());
    let mut failures = Vec::new();
    for case in &cases {
        let mark = upstream.mark();
        let (status, response) = send_raw(h.addr, &case.bytes).await;
        let (seen, requests) = upstream.since(mark);
        let mut wrong = Vec::new();
        if status != case.status {
            wrong.push(format!("status {status}, expected {}", case.status));
        }
        let expected_requests = u64::from(case.forwarded);
        if requests != expected_requests {
            wrong.push(format!(
                "{requests} request(s) reached the upstream, expected {expected_requests}"
            ));
        }
        for f in &case.forbidden {
            if seen.contains(&f.to_ascii_lowercase()) {
                wrong.push(format!("the upstream saw `{f}`"));
            }
        }
        if case.forwarded {
            for r in &case.required {
                if !seen.contains(&r.to_ascii_lowercase()) {
                    wrong.push(format!("the upstream did not see `{r}`"));
                }
            }
        }
        if !wrong.is_empty() {
            let head = response
                .split("\r\n\r\n")
                .next()
                .unwrap_or_default()
                .to_string();
            failures.push(format!(
                "{}: {}\n  response head: {head:?}\n  upstream saw: {seen:?}",
                case.name,
                wrong.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
