//! Graceful shutdown end to end: a request in flight when the proxy is told to stop still completes (200) and is
//! recorded, while the listener stops taking new connections.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use http::StatusCode;
use jitgate_engine::log::Outcome;
use support::*;

#[tokio::test]
async fn shutdown_drains_an_in_flight_request() {
    let mut gated = GatedUpstream::start().await;
    let up = gated.addr;
    let mut h = Harness::start_with(|raw, _| {
        raw.upstreams.get_mut("payments").unwrap().url = format!("http://{up}");
    })
    .await;
    let request = tokio::spawn(
        client()
            .get(h.url("/payments/p1"))
            .bearer_auth(h.token("alice", &["engineering"]))
            .send(),
    );
    // The request is at the upstream, waiting for us.
    assert_eq!(
        within("request reaches upstream", gated.arrived.recv())
            .await
            .unwrap(),
        "/payments/p1"
    );

    let running = h.running.take().unwrap();
    let shutdown = tokio::spawn(running.shutdown());
    // The listener closes: new connections are refused while the old one drains.
    within("listener closes", async {
        while tokio::net::TcpStream::connect(h.addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        !shutdown.is_finished(),
        "shutdown must wait for the in-flight request"
    );
    assert!(!request.is_finished());

    gated.release.notify_one();
    let r = reply(within("drained response", request).await.unwrap().unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["path"], "/payments/p1");
    within("shutdown completes", shutdown).await.unwrap();

    let records = h.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, Some(200));
    assert_eq!(records[0].decision, Some(Outcome::Allow));
    assert_eq!(records[0].path.as_deref(), Some("/payments/p1"));
    h.assert_log(1);
}
