//! End to end over TLS: a test CA (rcgen) signs the proxy's server certificate and the workloads' client
//! certificates; HTTP/1.1 and HTTP/2 are negotiated by ALPN; a verified client certificate's SAN becomes the
//! `Workload` principal, and without a certificate the handshake fails when one is required.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;

use http::StatusCode;
use jitgate_engine::log::Outcome;
use jitgate_proxy::config::RawTls;
use support::*;

const CI_URI: &str = "spiffe://example.org/ci/runner";
const CI_DNS: &str = "ci-runner.internal";

/// A proxy with TLS and mandatory client certificates; both CI identities are in group `ci`.
async fn mtls_proxy(pki: &Pki) -> Harness {
    let server = pki.server();
    let ca = pki.ca_pem.clone();
    Harness::start_with(move |raw, dir: &Path| {
        std::fs::write(dir.join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(dir.join("server.key"), &server.key_pem).unwrap();
        std::fs::write(dir.join("clients-ca.pem"), &ca).unwrap();
        raw.server.tls = Some(RawTls {
            cert: "server.pem".into(),
            key: "server.key".into(),
            client_ca: Some("clients-ca.pem".into()),
            require_client_cert: true,
            client_principal_type: "Workload".into(),
            workload_groups: [
                (CI_URI.to_string(), vec!["ci".to_string()]),
                (CI_DNS.to_string(), vec!["ci".to_string()]),
            ]
            .into_iter()
            .collect(),
        });
    })
    .await
}

fn tls_client(pki: &Pki, identity: Option<reqwest::Identity>, h1_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .tls_built_in_root_certs(false)
        .add_root_certificate(pki.root())
        .use_rustls_tls();
    if let Some(id) = identity {
        b = b.identity(id);
    }
    if h1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

fn https(h: &Harness, path: &str) -> String {
    format!("https://localhost:{}{path}", h.addr.port())
}

#[tokio::test]
async fn client_certificate_becomes_the_workload_principal_over_h1_and_h2() {
    let pki = Pki::new("test CA");
    let h = mtls_proxy(&pki).await;
    let uri_cert = pki.client_uri(CI_URI);
    for (h1_only, version) in [
        (true, http::Version::HTTP_11),
        (false, http::Version::HTTP_2),
    ] {
        let c = tls_client(&pki, Some(uri_cert.identity()), h1_only);
        let resp = c.get(https(&h, "/payments/x")).send().await.unwrap();
        assert_eq!(resp.version(), version, "ALPN picked {version:?}");
        let r = reply(resp).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
        assert_eq!(r.json["path"], "/payments/x");
        let headers = &r.json["headers"];
        assert_eq!(
            headers["x-jitgate-principal"],
            format!("Workload::\"{CI_URI}\"")
        );
        assert_eq!(headers["x-forwarded-proto"], "https");
        let rec = h.record(&r.upstream_decision_id());
        assert_eq!(rec.principal, format!("Workload::\"{CI_URI}\""));
        assert_eq!(rec.policies, vec!["ci-read-payments".to_string()]);
        assert_eq!(rec.decision, Some(Outcome::Allow));

        // Group `ci` reads payments only: a database is denied for the same workload.
        let r = reply(c.get(https(&h, "/databases/db1")).send().await.unwrap()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(
            h.record(&r.decision_id()).principal,
            format!("Workload::\"{CI_URI}\"")
        );
    }

    // A DNS SAN names the workload when there is no URI SAN.
    let c = tls_client(&pki, Some(pki.client_dns(CI_DNS).identity()), false);
    let r = reply(c.get(https(&h, "/payments/y")).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json["headers"]["x-jitgate-principal"],
        format!("Workload::\"{CI_DNS}\"")
    );

    // A bearer token on a certificate connection: the token names the caller.
    let r = reply(
        c.get(https(&h, "/databases/db1"))
            .bearer_auth(h.token("alice", &["engineering"]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["headers"]["x-jitgate-principal"], "User::\"alice\"");
    h.assert_log(6);
}

#[tokio::test]
async fn without_a_trusted_client_certificate_the_handshake_fails() {
    let pki = Pki::new("test CA");
    let h = mtls_proxy(&pki).await;
    // No certificate at all, even with a valid token.
    let c = tls_client(&pki, None, false);
    let err = c
        .get(https(&h, "/payments/x"))
        .bearer_auth(h.token("alice", &["engineering"]))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_status(), "no HTTP response at all: {err:?}");
    // A certificate from another CA with the same SAN.
    let rogue = Pki::new("rogue CA");
    let c = tls_client(&pki, Some(rogue.client_uri(CI_URI).identity()), false);
    let err = c.get(https(&h, "/payments/x")).send().await.unwrap_err();
    assert!(!err.is_status(), "{err:?}");
    // Plain HTTP to the TLS port gets nowhere either.
    let err = client()
        .get(h.url("/payments/x"))
        .send()
        .await
        .map(|r| r.status());
    assert!(
        err.is_err() || err.as_ref().is_ok_and(|s| !s.is_success()),
        "{err:?}"
    );
    assert_eq!(h.upstream.hits(), 0);
    h.assert_log(0);
}

#[tokio::test]
async fn the_admin_api_serves_https_over_h1_and_h2_and_knows_its_callers() {
    let pki = Pki::new("jitgate admin test CA");
    let server = pki.server();
    let h = Harness::start_with(move |raw, dir: &Path| {
        std::fs::write(dir.join("admin.pem"), &server.cert_pem).unwrap();
        std::fs::write(dir.join("admin.key"), &server.key_pem).unwrap();
        raw.admin.listen = "127.0.0.1:0".into();
        raw.admin.tls = Some(jitgate_proxy::config::RawAdminTls {
            cert: "admin.pem".into(),
            key: "admin.key".into(),
        });
    })
    .await;
    let admin = h.running.as_ref().unwrap().admin_addr.unwrap();
    let url = |path: &str| format!("https://localhost:{}{path}", admin.port());
    let alice = h.token("alice", &["engineering"]);
    for (h1_only, version) in [
        (true, http::Version::HTTP_11),
        (false, http::Version::HTTP_2),
    ] {
        let c = tls_client(&pki, None, h1_only);
        let r = c.get(url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.version(), version);
        // The admin API itself: authenticated and authorized by the bundle's policies, as over plain HTTP.
        let r = c
            .get(url("/v1/grants"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{version:?}");
        let r = c
            .get(url("/v1/status"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "alice may not operate");
    }
    // Each refusal is recorded with the caller's address, which the TLS listener passes on.
    let refused: Vec<_> = h
        .records()
        .into_iter()
        .filter(|r| r.action == "operate")
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|r| r.client_addr.as_deref() == Some("127.0.0.1") && r.status == Some(403)),
        "{refused:?}"
    );
    // Plain HTTP to the HTTPS listener gets no answer, and neither does a client that does not trust the CA.
    assert!(
        client()
            .get(format!("http://{admin}/healthz"))
            .send()
            .await
            .is_err()
    );
    let untrusting = reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .tls_built_in_root_certs(false)
        .use_rustls_tls()
        .build()
        .unwrap();
    assert!(untrusting.get(url("/healthz")).send().await.is_err());
}
