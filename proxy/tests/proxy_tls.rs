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
    mtls_proxy_with(pki, None, &[]).await
}

/// [`mtls_proxy`] with a SPIFFE trust domain and more principals in group `ci`.
async fn mtls_proxy_with(pki: &Pki, trust_domain: Option<&str>, ci: &[&str]) -> Harness {
    let trust_domain = trust_domain.map(str::to_string);
    let ci: Vec<String> = ci.iter().map(|c| c.to_string()).collect();
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
            workload_groups: [CI_URI.to_string(), CI_DNS.to_string()]
                .into_iter()
                .chain(ci)
                .map(|id| (id, vec!["ci".to_string()]))
                .collect(),
            spiffe_trust_domain: trust_domain,
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

fn uri(u: &str) -> rcgen::SanType {
    rcgen::SanType::URI(u.try_into().unwrap())
}

fn dns(d: &str) -> rcgen::SanType {
    rcgen::SanType::DnsName(d.try_into().unwrap())
}

fn email(e: &str) -> rcgen::SanType {
    rcgen::SanType::Rfc822Name(e.try_into().unwrap())
}

/// Issue #17 finding 12: the principal of a client certificate records which kind of name it came from: the first
/// URI SAN, else the first DNS SAN, else the first email SAN, else the subject CN. Policies see it as
/// `context.claims.san_kind`, and the decision record keeps it.
#[tokio::test]
async fn a_certificate_principal_records_the_kind_of_name_it_came_from() {
    let pki = Pki::new("test CA");
    let h = mtls_proxy_with(&pki, None, &["ci@example.org", "ci-runner-cn"]).await;
    let cases = [
        (
            "URI before DNS",
            pki.client_named(vec![dns(CI_DNS), uri(CI_URI)], Some("ignored-cn")),
            CI_URI,
            "uri",
        ),
        (
            "DNS before email and CN",
            pki.client_named(
                vec![email("ci@example.org"), dns(CI_DNS)],
                Some("ignored-cn"),
            ),
            CI_DNS,
            "dns",
        ),
        (
            "email before CN",
            pki.client_named(vec![email("ci@example.org")], Some("ignored-cn")),
            "ci@example.org",
            "email",
        ),
        (
            "CN when there is no SAN",
            pki.client_named(vec![], Some("ci-runner-cn")),
            "ci-runner-cn",
            "cn",
        ),
    ];
    for (what, leaf, id, kind) in cases {
        let c = tls_client(&pki, Some(leaf.identity()), false);
        let r = reply(c.get(https(&h, "/payments/x")).send().await.unwrap()).await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {:?}", r.json);
        assert_eq!(
            r.json["headers"]["x-jitgate-principal"],
            format!("Workload::\"{id}\""),
            "{what}"
        );
        let rec = h.record(&r.upstream_decision_id());
        assert_eq!(rec.principal, format!("Workload::\"{id}\""), "{what}");
        assert_eq!(
            rec.context["claims"]["san_kind"], kind,
            "{what}: {:?}",
            rec.context
        );
    }
    // A token on a certificate connection names the caller: its claims, no `san_kind`.
    let c = tls_client(&pki, Some(pki.client_uri(CI_URI).identity()), false);
    let r = reply(
        c.get(https(&h, "/payments/y"))
            .bearer_auth(h.token("alice", &["engineering"]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let rec = h.record(&r.upstream_decision_id());
    assert_eq!(rec.principal, "User::\"alice\"");
    assert!(
        rec.context["claims"].get("san_kind").is_none(),
        "{:?}",
        rec.context
    );
    h.assert_log(5);
}

/// Issue #17 finding 12: with `spiffe_trust_domain`, a certificate names its workload only by its one URI SAN, a
/// SPIFFE ID in that trust domain; any other certificate's requests are refused with 401 (a bearer token does not
/// make up for it) and never reach the upstream.
#[tokio::test]
async fn with_a_spiffe_trust_domain_only_its_spiffe_ids_name_workloads() {
    let pki = Pki::new("test CA");
    let h = mtls_proxy_with(&pki, Some("example.org"), &[]).await;
    let c = tls_client(&pki, Some(pki.client_uri(CI_URI).identity()), false);
    let r = reply(c.get(https(&h, "/payments/x")).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(
        r.json["headers"]["x-jitgate-principal"],
        format!("Workload::\"{CI_URI}\"")
    );
    assert_eq!(
        h.record(&r.upstream_decision_id()).context["claims"]["san_kind"],
        "uri"
    );
    let hits = h.upstream.hits();

    let refused = [
        (
            "another trust domain",
            vec![uri("spiffe://evil.org/ci/runner")],
            "trust domain `evil.org`",
        ),
        (
            "a look-alike trust domain",
            vec![uri("spiffe://example.org.evil.org/ci/runner")],
            "trust domain `example.org.evil.org`",
        ),
        ("no URI SAN, a DNS one", vec![dns(CI_DNS)], "no URI SAN"),
        (
            "a URI SAN that is not SPIFFE",
            vec![uri("https://example.org/ci/runner")],
            "not a SPIFFE ID",
        ),
        (
            "the trust domain itself",
            vec![uri("spiffe://example.org")],
            "path is empty",
        ),
        (
            "a dot segment",
            vec![uri("spiffe://example.org/ci/../admin")],
            "path segment `..`",
        ),
        (
            "two URI SANs",
            vec![uri(CI_URI), uri("spiffe://example.org/other")],
            "2 URI SANs",
        ),
    ];
    for (what, sans, why) in &refused {
        let leaf = pki.client_named(sans.clone(), Some("ci-runner"));
        let c = tls_client(&pki, Some(leaf.identity()), false);
        for token in [None, Some(h.token("alice", &["engineering"]))] {
            let mut req = c.get(https(&h, "/payments/x"));
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            let r = reply(req.send().await.unwrap()).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{what} (token: {}): {:?}",
                token.is_some(),
                r.json
            );
            let rec = h.record(&r.decision_id());
            assert_eq!(rec.status, Some(401), "{what}");
            assert!(
                rec.errors.iter().any(|e| e.contains(why)),
                "{what}: {:?} should say {why}",
                rec.errors
            );
        }
    }
    assert_eq!(
        h.upstream.hits(),
        hits,
        "no refused request reached the upstream"
    );
    h.assert_log(1 + 2 * refused.len());
}

/// `spiffe_trust_domain` must be a trust domain name and needs client certificates.
#[test]
fn a_spiffe_trust_domain_is_checked_in_the_config() {
    use jitgate_proxy::config::Config;
    let dir = tempfile::tempdir().unwrap();
    for f in ["server.pem", "server.key", "ca.pem"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    for (domain, client_ca, why) in [
        ("spiffe://example.org", true, "is not a trust domain name"),
        ("Example.org", true, "is not a trust domain name"),
        ("example.org", false, "needs `client_ca`"),
    ] {
        let mut raw = base_config(
            dir.path(),
            "https://idp.test/jwks",
            "127.0.0.1:9".parse().unwrap(),
        );
        raw.server.tls = Some(RawTls {
            cert: "server.pem".into(),
            key: "server.key".into(),
            client_ca: client_ca.then(|| "ca.pem".into()),
            require_client_cert: false,
            client_principal_type: "Workload".into(),
            workload_groups: Default::default(),
            spiffe_trust_domain: Some(domain.into()),
        });
        let err = Config::validate(raw, Path::new("<test>"), dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("server.tls.spiffe_trust_domain") && text.contains(why),
            "{domain}: {text}"
        );
    }
}
