//! `/readyz` tells a load balancer whether to send traffic: not once shutdown has begun (in-flight requests drain),
//! not while the decision log's writer is gone (every request would be refused), and not while an issuer's keys
//! have not been fetched (its tokens would be refused).
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

/// Issue #17 finding 2: an issuer whose keys cannot be fetched at start-up keeps the proxy not ready, and its tokens
/// are refused (401, never forwarded) while start-up keeps retrying; once it answers, the proxy is ready and the
/// same token passes.
#[tokio::test]
async fn not_ready_until_each_issuers_keys_are_fetched() {
    let jwks = JwksServer::start(vec![RSA_A.jwk("a")]).await;
    jwks.set_failing(true);
    let url = jwks.url.clone();
    let h = Harness::start_with(move |raw, _| {
        raw.admin.listen = "127.0.0.1:0".into();
        raw.issuers[0].jwks_url = Some(url);
    })
    .await;
    let admin = h.running.as_ref().unwrap().admin_addr.unwrap();
    assert_eq!(
        jwks.fetches(),
        1,
        "fetched once before the listeners opened"
    );
    assert_eq!(
        readyz(admin).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("issuer keys not fetched yet: {ISS}\n")
        )
    );
    let token = h.token("alice", &["engineering"]);
    let r = reply(
        client()
            .get(h.url("/payments/p1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.json);
    assert_eq!(h.upstream.hits(), 0);

    jwks.set_failing(false);
    // The retry (after 1s, then 2s ...) gets the keys: ready, as a load balancer polling /readyz sees.
    within("ready", async {
        while readyz(admin).await.0 != StatusCode::OK {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let r = reply(
        client()
            .get(h.url("/payments/p1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    h.assert_log(2);
}
