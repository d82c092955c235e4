//! `/readyz` tells a load balancer whether to send traffic: not once shutdown has begun (in-flight requests drain),
//! and not while the decision log's writer is gone (every request would be refused).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;

use http::StatusCode;
use support::*;

async fn readyz(admin: SocketAddr) -> (StatusCode, String) {
    let r = client()
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test]
async fn not_ready_while_draining() {
    let mut gated = GatedUpstream::start().await;
    let up = gated.addr;
    let mut h = Harness::start_with(|raw, _| {
        raw.admin.listen = "127.0.0.1:0".into();
        raw.upstreams.get_mut("payments").unwrap().url = format!("http://{up}");
    })
    .await;
    let admin = h.running.as_ref().unwrap().admin_addr.unwrap();
    assert_eq!(readyz(admin).await, (StatusCode::OK, "ready\n".into()));
    let request = tokio::spawn(
        client()
            .get(h.url("/payments/p1"))
            .bearer_auth(h.token("alice", &["engineering"]))
            .send(),
    );
    within("request reaches upstream", gated.arrived.recv())
        .await
        .unwrap();

    let shutdown = tokio::spawn(h.running.take().unwrap().shutdown());
    within("listener closes", async {
        while tokio::net::TcpStream::connect(h.addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // Draining: the admin listener still answers, and says not to send more.
    assert_eq!(
        readyz(admin).await,
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into())
    );

    gated.release.notify_one();
    let r = reply(within("drained response", request).await.unwrap().unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    within("shutdown completes", shutdown).await.unwrap();
}

#[tokio::test]
async fn not_ready_without_the_log_writer() {
    let h = Harness::start_with(|raw, _| raw.admin.listen = "127.0.0.1:0".into()).await;
    let running = h.running.as_ref().unwrap();
    let admin = running.admin_addr.unwrap();
    assert_eq!(readyz(admin).await, (StatusCode::OK, "ready\n".into()));

    let writer = running.proxy.log.writer().unwrap().clone();
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        readyz(admin).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "decision log unavailable\n".into()
        )
    );
}
