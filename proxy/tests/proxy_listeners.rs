//! The limits both listeners share (issue 17, finding 3): the admin listener closes silent callers after its header
//! timeout and refuses connections over its own limit while the data plane keeps answering, and an idle HTTP/2
//! connection is closed after `server.idle_timeout`, but not while a request on it is in flight.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection (EOF or reset); what it sent before.
async fn read_until_closed(s: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    within("the server closes the connection", async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&seen).into_owned()
}

/// `GET /healthz` on the admin listener, retried briefly: a closed connection gives its slot back as its task
/// ends, just after the client sees the close.
async fn healthz_answers(admin: SocketAddr) -> Option<StatusCode> {
    for _ in 0..50 {
        match client().get(format!("http://{admin}/healthz")).send().await {
            Ok(r) => return Some(r.status()),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    None
}

#[tokio::test]
async fn silent_and_slow_admin_connections_are_closed_after_the_header_timeout() {
    // `[admin] header_timeout` is unset: the admin listener takes the server's.
    let h = Harness::start_with(|raw, _| {
        raw.admin.listen = "127.0.0.1:0".into();
        raw.server.header_timeout = "300ms".into();
    })
    .await;
    let admin = h.running.as_ref().unwrap().admin_addr.unwrap();
    let started = Instant::now();
    let mut slow = Vec::new();
    for sent in [
        &b""[..],
        b"PRI * HTTP/2.0\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127",
    ] {
        let mut s = TcpStream::connect(admin).await.unwrap();
        s.write_all(sent).await.unwrap();
        slow.push(s);
    }
    for (i, s) in slow.iter_mut().enumerate() {
        let seen = read_until_closed(s).await;
        assert!(
            seen.is_empty() || seen.starts_with("HTTP/1.1 408"),
            "client {i}: {seen}"
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(healthz_answers(admin).await, Some(StatusCode::OK));
}

#[tokio::test]
async fn admin_connections_over_the_admin_limit_are_refused_while_the_data_plane_answers() {
    let h = Harness::start_with(|raw, _| {
        raw.admin.listen = "127.0.0.1:0".into();
        raw.admin.max_connections = 3;
        // Long enough that only the test ends the idle admin connections.
        raw.admin.header_timeout = Some("60s".into());
    })
    .await;
    let admin = h.running.as_ref().unwrap().admin_addr.unwrap();
    // Three idle admin callers take the admin listener's every slot (accepted in order: the fourth comes after).
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(admin).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        idle.push(s);
    }
    // A fourth is closed unanswered.
    let mut over = TcpStream::connect(admin).await.unwrap();
    let _ = over
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await;
    let seen = read_until_closed(&mut over).await;
    assert_eq!(seen, "", "a connection over the admin limit was served");
    // The data plane has limits of its own and answers throughout.
    let token = h.token("alice", &["engineering"]);
    let r = client()
        .get(h.url("/payments/p1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Once the idle callers go, the admin listener answers again.
    drop(idle);
    assert_eq!(healthz_answers(admin).await, Some(StatusCode::OK));
}

/// An HTTP/2 prior-knowledge connection to `addr`: its request sender, and its driver, which ends when the
/// connection does.
async fn h2_connect(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    (sender, tokio::spawn(conn))
}

fn h2_get(addr: SocketAddr, path: &str, token: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let h = Harness::start_with(|raw, _| raw.server.idle_timeout = "300ms".into()).await;
    let token = h.token("alice", &["engineering"]);
    let (mut sender, conn) = h2_connect(h.addr).await;
    let r = within("an HTTP/2 request", async {
        let r = sender
            .send_request(h2_get(h.addr, "/payments/p1", &token))
            .await
            .unwrap();
        let status = r.status();
        r.into_body().collect().await.unwrap();
        status
    })
    .await;
    assert_eq!(r, StatusCode::OK);
    let idle_since = Instant::now();
    // The server ends the connection (GOAWAY, then close) once nothing has been in flight for the idle timeout.
    let ended = within("the idle connection is closed", conn).await.unwrap();
    assert!(ended.is_ok(), "{ended:?}");
    assert!(idle_since.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn an_http2_connection_with_a_request_in_flight_is_not_idle() {
    let mut gated = GatedUpstream::start().await;
    let up = gated.addr;
    let h = Harness::start_with(|raw, _| {
        raw.server.idle_timeout = "200ms".into();
        raw.upstreams.get_mut("payments").unwrap().url = format!("http://{up}");
    })
    .await;
    let token = h.token("alice", &["engineering"]);
    let (mut sender, conn) = h2_connect(h.addr).await;
    let request = sender.send_request(h2_get(h.addr, "/payments/p1", &token));
    let response = tokio::spawn(async move {
        let r = request.await.unwrap();
        let status = r.status();
        r.into_body().collect().await.unwrap();
        status
    });
    within("the request reaches the upstream", gated.arrived.recv())
        .await
        .unwrap();
    // Three idle timeouts pass with the request in flight: the connection stays.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!conn.is_finished(), "closed with a request in flight");
    gated.release.notify_one();
    let status = within("the response", response).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    // Then it is idle, and closed.
    let ended = within("the idle connection is closed", conn).await.unwrap();
    assert!(ended.is_ok(), "{ended:?}");
}
