//! End to end over plain HTTP: a real proxy on 127.0.0.1 with the quickstart bundle, RS256 tokens from a real JWKS
//! server, the demo upstream, SQLite store and decision log in a tempdir. Every test checks the upstream's view,
//! the caller's view and the decision record, and that the log has exactly one record per request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, StatusCode};
use jitgate_engine::EntityRef;
use jitgate_engine::log::Outcome;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use support::*;

#[tokio::test]
async fn allowed_request_reaches_upstream_with_our_identity_and_not_the_callers_headers() {
    let h = Harness::start().await;
    let token = h.token("alice", &["engineering"]);
    let resp = client()
        .get(h.url("/payments/p1/?q=1"))
        .bearer_auth(&token)
        // A caller trying to pick its own identity or decision for the upstream.
        .header("x-jitgate-principal", "User::\"admin\"")
        .header("x-jitgate-decision-id", "forged")
        .header("x-jitgate-grants", "g-forged")
        .header("x-jitgate-break-glass", "true")
        // The same with `_` for `-` (CGI-style servers read both as one variable), a jitgate header that does
        // not exist yet, a forwarding claim, and headers that make frameworks act on another method or path.
        .header("x_jitgate_principal", "User::\"admin\"")
        .header("x-jitgate-tenant", "forged")
        .header("x_forwarded_for", "10.0.0.1")
        .header("x-http-method-override", "DELETE")
        .header("x-original-url", "/admin")
        .header("x-request-note", "kept")
        .send()
        .await
        .unwrap();
    let r = reply(resp).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    let up = &r.json;
    for gone in [
        "x_jitgate_principal",
        "x-jitgate-tenant",
        "x_forwarded_for",
        "x-http-method-override",
        "x-original-url",
    ] {
        assert!(
            up["headers"].get(gone).is_none(),
            "{gone} reached the upstream: {up}"
        );
    }
    assert_eq!(up["headers"]["x-request-note"], "kept");
    assert_eq!(up["upstream"], "demo");
    assert_eq!(up["path"], "/payments/p1", "trailing slash stripped");
    assert_eq!(up["query"], "q=1");
    let headers = &up["headers"];
    assert_eq!(headers["x-jitgate-principal"], "User::\"alice\"");
    assert_eq!(headers["x-jitgate-grants"], "");
    assert_eq!(headers["x-jitgate-break-glass"], "false");
    // The caller's bearer token never reaches the upstream; jitgate's injected credential does.
    assert_eq!(
        headers["authorization"],
        format!("Bearer {UPSTREAM_SECRET}")
    );
    assert!(!up.to_string().contains(&token));
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");

    let id = r.upstream_decision_id();
    assert_ne!(id, "forged");
    let rec = h.record(&id);
    assert_eq!(rec.id, id);
    assert_eq!(rec.decision, Some(Outcome::Allow));
    assert_eq!(rec.status, Some(200));
    assert_eq!(rec.principal, "User::\"alice\"");
    assert_eq!(rec.action, "readPayment");
    assert_eq!(rec.resource, "Payment::\"p1\"");
    assert_eq!(rec.path.as_deref(), Some("/payments/p1"));
    assert_eq!(rec.method.as_deref(), Some("GET"));
    assert_eq!(rec.policies, vec!["engineers-read".to_string()]);
    assert_eq!(rec.engine, "cedar");
    assert!(!rec.revision.is_empty());
    assert_eq!(h.upstream.hits(), 1);

    // billing has no injected credential: the caller's Authorization header is simply gone.
    let r = reply(
        client()
            .get(h.url("/databases/db1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["headers"]["x-jitgate-principal"], "User::\"alice\"");
    assert!(
        r.json["headers"].get("authorization").is_none(),
        "{:?}",
        r.json
    );
    h.assert_log(2);
}

#[tokio::test]
async fn denied_request_is_403_json_with_decision_id_and_a_deny_record() {
    let h = Harness::start().await;
    let resp = client()
        .get(h.url("/databases/ledger"))
        .bearer_auth(h.token("dave", &["contractors"]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "application/json"
    );
    let r = reply(resp).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json["error"], "denied");
    assert_eq!(
        r.json["message"],
        "denied by policy contractors-no-databases"
    );
    let rec = h.record(&r.decision_id());
    assert_eq!(rec.decision, Some(Outcome::Deny));
    assert_eq!(rec.status, Some(403));
    assert_eq!(rec.principal, "User::\"dave\"");
    assert_eq!(rec.action, "readDatabase");
    assert_eq!(rec.resource, "Database::\"ledger\"");
    assert_eq!(rec.policies, vec!["contractors-no-databases".to_string()]);
    assert_eq!(
        h.upstream.hits(),
        0,
        "a denied request never reaches the upstream"
    );
    h.assert_log(1);
}

#[tokio::test]
async fn missing_and_bad_tokens_are_401_with_a_challenge_and_recorded() {
    let h = Harness::start().await;
    let now = h.clock.now();
    let alice = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims("alice", &["engineering"], now);
        f(&mut c);
        c
    };
    let none_token = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": "a"}).to_string()),
        URL_SAFE_NO_PAD.encode(alice(&|_| {}).to_string())
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        (
            "expired",
            Some(sign(
                Algorithm::RS256,
                "a",
                &RSA_A.enc,
                &alice(&|c| c["exp"] = json!(now - 120)),
            )),
        ),
        (
            "wrong audience",
            Some(sign(
                Algorithm::RS256,
                "a",
                &RSA_A.enc,
                &alice(&|c| c["aud"] = json!("someone-else")),
            )),
        ),
        (
            // Signed by key B but claiming key A's kid.
            "bad signature",
            Some(sign(Algorithm::RS256, "a", &RSA_B.enc, &alice(&|_| {}))),
        ),
        ("alg none", Some(none_token)),
        (
            // Key confusion: the issuer's public key used as an HMAC secret.
            "rs256 key as hmac secret",
            Some(sign(
                Algorithm::HS256,
                "a",
                &EncodingKey::from_secret(RSA_A.public_pem.as_bytes()),
                &alice(&|_| {}),
            )),
        ),
        ("garbage", Some("not.a.jwt".into())),
    ];
    let c = client();
    for (what, token) in &cases {
        let mut req = c.get(h.url("/payments/p1"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = reply(req.send().await.unwrap()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {:?}", r.json);
        let challenge = r.headers.get("www-authenticate").unwrap().to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
        if token.is_some() {
            assert!(challenge.contains("invalid_token"), "{what}: {challenge}");
        }
        assert_eq!(r.json["error"], "unauthenticated", "{what}");
        let rec = h.record(&r.decision_id());
        assert_eq!(rec.decision, Some(Outcome::Deny), "{what}");
        assert_eq!(rec.status, Some(401), "{what}");
        assert_eq!(rec.principal, "", "{what}: no principal was established");
        if token.is_some() {
            assert!(
                rec.errors
                    .iter()
                    .any(|e| e.starts_with("authentication failed")),
                "{what}: {:?}",
                rec.errors
            );
        }
    }
    assert_eq!(h.upstream.hits(), 0);
    h.assert_log(cases.len());
}

/// Issue #17 finding 2: a key rotated in is picked up on its first token (this used to be 401 for the issuer's
/// refresh interval); a further unknown kid within the interval of that refetch waits for it.
#[tokio::test]
async fn rotated_key_is_picked_up_on_its_first_token() {
    let h = Harness::start().await;
    let c = client();
    let get = |token: String| c.get(h.url("/payments/p1")).bearer_auth(token).send();
    let r = reply(get(h.token("alice", &["engineering"])).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(h.jwks.fetches(), 1);

    // The issuer rotates to key B.
    h.jwks
        .set(vec![RSA_A.jwk("a"), RSA_B.jwk("b"), RSA_B.jwk("c")]);
    let rotated = |kid: &str| {
        sign(
            Algorithm::RS256,
            kid,
            &RSA_B.enc,
            &claims("alice", &["engineering"], h.clock.now()),
        )
    };
    // The first refetch after a fetch is immediate: the new kid passes at once.
    let r = reply(get(rotated("b")).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(r.json["headers"]["x-jitgate-principal"], "User::\"alice\"");
    assert_eq!(h.jwks.fetches(), 2, "exactly one refetch for the new kid");
    // Within the issuer's refresh interval (1s) of that refetch, another unknown kid does not refetch.
    let r = reply(get(rotated("x")).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.jwks.fetches(), 2);
    h.jwks
        .set(vec![RSA_A.jwk("a"), RSA_B.jwk("b"), RSA_B.jwk("x")]);
    h.clock.advance(2);
    let r = reply(get(rotated("x")).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(h.jwks.fetches(), 3);
    h.assert_log(4);
}

#[tokio::test]
async fn unmatched_route_is_404_with_a_record() {
    let h = Harness::start().await;
    let r = reply(
        client()
            .get(h.url("/admin/secrets"))
            .bearer_auth(h.token("alice", &["engineering"]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json["error"], "no_route");
    let rec = h.record(&r.decision_id());
    assert_eq!(rec.decision, Some(Outcome::Deny));
    assert_eq!(rec.status, Some(404));
    assert_eq!(rec.principal, "User::\"alice\"");
    assert_eq!(rec.path.as_deref(), Some("/admin/secrets"));
    assert!(rec.errors.iter().any(|e| e.contains("no route")));
    // Without a credential an unmatched route says nothing about what exists: 401.
    let r = reply(client().get(h.url("/admin/secrets")).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.upstream.hits(), 0);
    h.assert_log(2);
}

#[tokio::test]
async fn path_tricks_are_decided_on_the_path_the_upstream_receives() {
    let h = Harness::start().await;
    let alice = h.token("alice", &["engineering"]);
    // (raw target, normalized path, action)
    let cases = [
        ("/payments/x/../p1", "/payments/p1", "readPayment"),
        (
            "/payments/../databases/db1",
            "/databases/db1",
            "readDatabase",
        ),
        (
            "/payments/%2e%2e/databases/db1",
            "/databases/db1",
            "readDatabase",
        ),
        (
            "/payments/%2E%2E/%2e/databases/db1",
            "/databases/db1",
            "readDatabase",
        ),
        ("//payments//p1", "/payments/p1", "readPayment"),
        ("/../../payments/p2/.", "/payments/p2", "readPayment"),
        ("/payments/%70%31", "/payments/p1", "readPayment"),
    ];
    for (target, normalized, action) in cases {
        let r = raw(h.addr, raw_get(target, Some(&alice))).await;
        assert_eq!(r.status, StatusCode::OK, "{target}: {:?}", r.json);
        assert_eq!(r.json["path"], normalized, "{target}");
        let rec = h.record(&r.upstream_decision_id());
        assert_eq!(
            rec.path.as_deref(),
            r.json["path"].as_str(),
            "{target}: the policy saw what the upstream got"
        );
        assert_eq!(rec.action, action, "{target}");
    }
    // A trick cannot walk a contractor out of the databases ban: decided as /databases/db1.
    let dave = h.token("dave", &["contractors"]);
    let r = raw(
        h.addr,
        raw_get("/payments/%2e%2e/databases/db1", Some(&dave)),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let rec = h.record(&r.decision_id());
    assert_eq!(rec.path.as_deref(), Some("/databases/db1"));
    assert_eq!(rec.policies, vec!["contractors-no-databases".to_string()]);

    // Encoded separators, dot segments with `;` parameters (which Tomcat or Spring resolve after cutting the
    // parameters) and escapes that are not UTF-8 (overlong dots too) are refused, not guessed at, and recorded.
    let hits = h.upstream.hits();
    let refused = [
        "/payments%2Fp1",
        "/payments/p1%2f..%2f..%2fdatabases",
        "/payments/a%5Cb",
        "/payments/..;/databases/db1",
        "/payments/%2e%2e;x=1/databases/db1",
        "/payments/%C0%AE%C0%AE/databases/db1",
        "/payments/%FF",
    ];
    for target in refused {
        let r = raw(h.addr, raw_get(target, Some(&alice))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{target}");
        assert_eq!(r.json["error"], "bad_path");
        let rec = h.record(&r.decision_id());
        assert_eq!(rec.status, Some(400));
        assert_eq!(rec.decision, Some(Outcome::Deny));
        assert_eq!(
            rec.path.as_deref(),
            Some(target),
            "the raw path is recorded"
        );
    }
    assert_eq!(h.upstream.hits(), hits);
    h.assert_log(cases.len() + 1 + refused.len());
}

#[tokio::test]
async fn http2_prior_knowledge_works_end_to_end() {
    let h = Harness::start().await;
    let c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(WAIT)
        .build()
        .unwrap();
    let token = h.token("alice", &["engineering"]);
    // Several requests multiplexed on one h2 connection.
    let (a, b) = tokio::join!(
        c.get(h.url("/payments/p1")).bearer_auth(&token).send(),
        c.get(h.url("/databases/db1")).bearer_auth(&token).send(),
    );
    for (resp, path) in [(a.unwrap(), "/payments/p1"), (b.unwrap(), "/databases/db1")] {
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let r = reply(resp).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
        assert_eq!(r.json["path"], path);
        assert_eq!(r.json["headers"]["x-jitgate-principal"], "User::\"alice\"");
        assert_eq!(h.record(&r.upstream_decision_id()).status, Some(200));
    }
    let r = reply(c.get(h.url("/databases/db1")).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    h.assert_log(3);
}

#[tokio::test]
async fn upstream_down_is_502_with_a_record() {
    let (_refusing, dead) = dead_addr();
    let h = Harness::start_with(|raw, _| {
        raw.upstreams.get_mut("billing").unwrap().url = format!("http://{dead}");
    })
    .await;
    let r = reply(
        client()
            .get(h.url("/databases/db1"))
            .bearer_auth(h.token("carol", &["engineering", "dba"]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json["error"], "upstream_unavailable");
    assert_eq!(r.json["message"], "the upstream service is unavailable");
    let rec = h.record(&r.decision_id());
    assert_eq!(rec.status, Some(502));
    assert_eq!(rec.decision, Some(Outcome::Allow), "the policy allowed it");
    assert!(
        rec.errors
            .iter()
            .any(|e| e.contains("upstream unavailable")),
        "{:?}",
        rec.errors
    );
    h.assert_log(1);
}

#[tokio::test]
async fn a_slow_upstream_is_504_with_a_record_and_its_time_in_the_upstream_histogram() {
    // Two ways to run out of time: the upstream's own `timeout`, and the whole-request `request_timeout`. The
    // gated upstream never answers. The upstream's timeout (200 ms) starts with the call; request_timeout (1 s)
    // starts with the request, so it is longer: authentication (the first JWKS fetch) and the decision come first.
    for cut_by in ["upstream timeout", "request_timeout"] {
        let gated = GatedUpstream::start().await;
        let up = gated.addr;
        let h = Harness::start_with(|raw, _| {
            raw.admin.listen = "127.0.0.1:0".into();
            let payments = raw.upstreams.get_mut("payments").unwrap();
            payments.url = format!("http://{up}");
            if cut_by == "upstream timeout" {
                payments.timeout = "200ms".into();
            } else {
                raw.server.request_timeout = "1s".into();
                raw.hold.wait = "500ms".into();
            }
        })
        .await;
        let r = reply(
            client()
                .get(h.url("/payments/p1"))
                .bearer_auth(h.token("alice", &["engineering"]))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{cut_by}");
        assert_eq!(r.json["error"], "upstream_timeout", "{cut_by}");
        let rec = h.record(&r.decision_id());
        assert_eq!(rec.status, Some(504), "{cut_by}");
        assert_eq!(rec.decision, Some(Outcome::Allow), "{cut_by}");
        assert!(
            rec.errors.iter().any(|e| e == "upstream timeout"),
            "{cut_by}: {:?}",
            rec.errors
        );
        h.assert_log(1);
        let page = h.metrics_page().await;
        let up = "jitgate_upstream_duration_seconds";
        assert_eq!(
            sample(&page, &format!("{up}_count{{service=\"payments\"}}")),
            1.0,
            "{cut_by}: the cut-off call is timed"
        );
        let sum = sample(&page, &format!("{up}_sum{{service=\"payments\"}}"));
        // The upstream's own timeout starts with the call; request_timeout started with the request, a little
        // before the call.
        let least = if cut_by == "upstream timeout" {
            0.2
        } else {
            0.5
        };
        assert!((least..5.0).contains(&sum), "{cut_by}: {sum} s upstream");
        assert_eq!(
            sample(
                &page,
                "jitgate_request_duration_seconds_count{class=\"5xx\"}"
            ),
            1.0,
            "{cut_by}"
        );
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_with_and_without_content_length() {
    let h = Harness::start_with(|raw, _| raw.server.max_body_bytes = 1024).await;
    // bob may create payments while his payments-writer grant is active.
    h.grant(
        "g-bob",
        "bob",
        "payments-writer",
        EntityRef::new("Service", "payments"),
    );
    let token = h.token("bob", &["engineering"]);
    let req = |body: TestBody| {
        Request::post("/payments")
            .header("host", "127.0.0.1")
            .header("authorization", format!("Bearer {token}"))
            .body(body)
            .unwrap()
    };

    // Declared length over the limit: refused up front, never forwarded.
    let r = raw(h.addr, req(full_body(vec![b'x'; 4096]))).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json["error"], "body_too_large");
    // The unread body ends the connection, and the client is told so rather than left to race the close.
    assert_eq!(r.headers["connection"], "close");
    assert_eq!(h.record(&r.decision_id()).status, Some(413));
    assert_eq!(h.upstream.hits(), 0);

    // Chunked, no declared length: cut off while streaming.
    let chunks = vec![Bytes::from(vec![b'y'; 512]); 8];
    let r = raw(h.addr, req(chunked_body(chunks))).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.json);
    assert_eq!(h.record(&r.decision_id()).status, Some(413));

    // Under the limit, both ways pass whole.
    let r = raw(h.addr, req(full_body(vec![b'x'; 1000]))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["body_bytes"], 1000);
    assert_eq!(
        h.record(&r.upstream_decision_id()).grants_used,
        vec!["g-bob".to_string()]
    );
    let r = raw(
        h.addr,
        req(chunked_body(vec![Bytes::from(vec![b'y'; 500]); 2])),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["body_bytes"], 1000);
    h.assert_log(4);
}

#[tokio::test]
async fn every_request_of_mixed_traffic_has_exactly_one_record_and_the_chain_verifies() {
    let h = Harness::start_with(|raw, _| raw.server.max_body_bytes = 1024).await;
    let alice = h.token("alice", &["engineering"]);
    let dave = h.token("dave", &["contractors"]);
    let c = client();
    let mut ids = Vec::new();
    for round in 0..3 {
        let reqs = vec![
            c.get(h.url(&format!("/payments/p{round}")))
                .bearer_auth(&alice),
            c.get(h.url("/databases/db1")).bearer_auth(&dave),
            c.get(h.url("/payments")),
            c.get(h.url("/healthz")),
            c.get(h.url("/nowhere")).bearer_auth(&alice),
            c.delete(h.url("/payments/p1")).bearer_auth(&alice),
            c.get(h.url("/payments/p1")).bearer_auth("bad"),
            c.post(h.url("/payments"))
                .bearer_auth(&alice)
                .body(vec![0u8; 2048]),
        ];
        for req in reqs {
            let r = reply(req.send().await.unwrap()).await;
            let id = if r.status == StatusCode::OK {
                r.upstream_decision_id()
            } else {
                r.decision_id()
            };
            ids.push((r.status.as_u16(), id));
        }
        let r = raw(h.addr, raw_get("/payments%2F1", Some(&alice))).await;
        ids.push((r.status.as_u16(), r.decision_id()));
    }
    let statuses: Vec<u16> = ids.iter().take(9).map(|(s, _)| *s).collect();
    assert_eq!(statuses, vec![200, 403, 401, 200, 404, 403, 401, 413, 400]);
    h.assert_log(ids.len());
    let records = h.records();
    for ((status, id), rec) in ids.iter().zip(&records) {
        assert_eq!(&rec.id, id, "records are in request order");
        assert_eq!(rec.status, Some(*status));
    }
    // The public health check is recorded as the anonymous principal.
    assert_eq!(records[3].principal, "Anonymous::\"anonymous\"");
}

#[tokio::test]
async fn fail_closed_log_refuses_with_503_when_the_queue_is_full() {
    let mut gated = GatedUpstream::start().await;
    let up = gated.addr;
    let h = Harness::start_with(|raw, _| {
        raw.log.queue_capacity = 1;
        raw.log.on_full = "fail_closed".into();
        raw.upstreams.get_mut("payments").unwrap().url = format!("http://{up}");
    })
    .await;
    let token = h.token("alice", &["engineering"]);
    let c = client();
    // The first request holds the only log slot while its upstream waits.
    let first = tokio::spawn(c.get(h.url("/payments/p1")).bearer_auth(&token).send());
    assert_eq!(
        within("arrival", gated.arrived.recv()).await.unwrap(),
        "/payments/p1"
    );
    let r = reply(
        c.get(h.url("/payments/p2"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json["error"], "log_unavailable");
    assert!(
        gated.arrived.try_recv().is_err(),
        "the refused request never reached the upstream"
    );
    gated.release.notify_one();
    let r = reply(within("first", first).await.unwrap().unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["path"], "/payments/p1");
    // Room again once the first record is committed.
    gated.release.notify_one();
    let r = reply(
        c.get(h.url("/payments/p3"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    h.assert_log(2);
}

/// The value of `series` (name and labels exactly as rendered) on a Prometheus text page; it must be there.
fn sample(page: &str, series: &str) -> f64 {
    metric_sample(page, series).unwrap_or_else(|| panic!("no sample {series} in:\n{page}"))
}

#[tokio::test]
async fn metrics_time_each_stage_and_count_the_log_writers_commits() {
    // The allowed request's upstream answers only when released, so its time upstream is known to be long.
    let mut gated = GatedUpstream::start().await;
    let up = gated.addr;
    let h = Harness::start_with(|raw, _| {
        raw.admin.listen = "127.0.0.1:0".into();
        raw.upstreams.get_mut("payments").unwrap().url = format!("http://{up}");
    })
    .await;
    let c = client();
    let alice = h.token("alice", &["engineering"]);
    let dave = h.token("dave", &["contractors"]);

    let started = std::time::Instant::now();
    let allowed = tokio::spawn(c.get(h.url("/payments/p1")).bearer_auth(&alice).send());
    within("arrival", gated.arrived.recv()).await.unwrap();
    // Not synchronization: the upstream's service time, which the histograms must show.
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    gated.release.notify_one();
    let r = reply(within("allowed", allowed).await.unwrap().unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    let allowed_took = started.elapsed().as_secs_f64();
    let denied = reply(
        c.get(h.url("/databases/db1"))
            .bearer_auth(&dave)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let anonymous = reply(c.get(h.url("/payments")).send().await.unwrap()).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    h.assert_log(3);

    let page = h.metrics_page().await;
    let req = "jitgate_request_duration_seconds";
    assert_eq!(sample(&page, &format!("{req}_count{{class=\"2xx\"}}")), 1.0);
    assert_eq!(sample(&page, &format!("{req}_count{{class=\"4xx\"}}")), 2.0);
    assert_eq!(sample(&page, &format!("{req}_count{{class=\"5xx\"}}")), 0.0);
    // The allowed request spent 30 ms or more upstream: over the 25 ms bucket, and never more than the caller saw.
    let up = "jitgate_upstream_duration_seconds";
    for (name, label) in [(up, "service=\"payments\""), (req, "class=\"2xx\"")] {
        assert_eq!(
            sample(&page, &format!("{name}_bucket{{{label},le=\"0.025\"}}")),
            0.0,
            "{name}"
        );
        assert_eq!(
            sample(&page, &format!("{name}_bucket{{{label},le=\"+Inf\"}}")),
            1.0,
            "{name}"
        );
        let sum = sample(&page, &format!("{name}_sum{{{label}}}"));
        assert!(
            (0.03..=allowed_took).contains(&sum),
            "{name}: {sum} s, the caller saw {allowed_took} s"
        );
    }
    // One series per configured upstream: billing was not called.
    assert_eq!(
        sample(&page, &format!("{up}_count{{service=\"payments\"}}")),
        1.0
    );
    assert_eq!(
        sample(&page, &format!("{up}_count{{service=\"billing\"}}")),
        0.0
    );
    // Two requests reached the policy (the 401 did not), and each was decided well under the upstream's time.
    assert_eq!(
        sample(&page, "jitgate_decision_duration_seconds_count"),
        2.0
    );
    assert_eq!(
        sample(
            &page,
            "jitgate_decision_duration_seconds_bucket{le=\"0.025\"}"
        ),
        2.0
    );
    // Every response waited for its record, and the writer committed each one before its response left.
    assert_eq!(sample(&page, "jitgate_log_wait_seconds_count"), 3.0);
    assert!(sample(&page, "jitgate_log_wait_seconds_sum") > 0.0);
    assert_eq!(sample(&page, "jitgate_log_records_committed_total"), 3.0);
    let batches = sample(&page, "jitgate_log_batches_total");
    assert!((1.0..=3.0).contains(&batches), "{batches} batches");
    assert_eq!(sample(&page, "jitgate_log_records_recovered_total"), 0.0);
}

#[tokio::test]
async fn a_caller_that_hangs_up_mid_request_still_gets_its_decision_recorded() {
    use tokio::io::AsyncWriteExt;
    let mut gated = GatedUpstream::start().await;
    let up = gated.addr;
    let h = Harness::start_with(|raw, _| {
        raw.upstreams.get_mut("payments").unwrap().url = format!("http://{up}");
    })
    .await;
    let token = h.token("alice", &["engineering"]);
    let mut conn = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let request = format!(
        "GET /payments/p7 HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\n\r\n",
        h.addr
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    // The request was allowed and reached the upstream; then the caller goes away before the answer.
    assert_eq!(
        within("arrival", gated.arrived.recv()).await.unwrap(),
        "/payments/p7"
    );
    drop(conn);
    gated.release.notify_one();
    // The upstream saw the request, so its decision must be in the log. Nothing signals a commit to a caller
    // that is gone: poll the store, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while h.records().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    h.assert_log(1);
    let rec = &h.records()[0];
    assert_eq!(rec.decision, Some(Outcome::Allow));
    assert_eq!(rec.path.as_deref(), Some("/payments/p7"));
    assert_eq!(rec.status, Some(499), "the caller never got a response");
    assert_eq!(
        rec.errors,
        ["the caller went away before the response"],
        "{rec:?}"
    );
}

#[tokio::test]
async fn requests_jitgate_cannot_decide_on_one_reading_are_refused_and_forwarding_claims_never_pass()
 {
    use http::{HeaderValue, Method};
    let h = Harness::start_with(|raw, _| {
        raw.server.trusted_proxies = vec!["127.0.0.1/32".into()];
        raw.server.context_headers = vec!["x-tenant".into()];
    })
    .await;
    let token = h.token("alice", &["engineering"]);
    let base = h.upstream.hits();
    let get = |target: &str| {
        Request::builder()
            .method(Method::GET)
            .uri(target)
            .header("authorization", format!("Bearer {token}"))
    };
    let send = |b: http::request::Builder| raw(h.addr, b.body(full_body(Bytes::new())).unwrap());
    let refused = |r: &Reply, status: u16, code: &str, why: &str| {
        assert_eq!(r.status.as_u16(), status, "{why}: {:?}", r.json);
        assert_eq!(r.json["error"], code, "{why}");
        let rec = h.record(&r.decision_id());
        assert_eq!(rec.status, Some(status), "{why}");
        assert!(!rec.errors.is_empty(), "{why}: the record says why");
    };

    // One host: a target naming one host and a Host header naming another is refused.
    let r = send(get("http://public.example/payments/p1").header("host", "admin.example")).await;
    refused(&r, 400, "bad_request", "authority and Host disagree");
    let r = send(
        get("/payments/p1")
            .header("host", "a.example")
            .header("host", "b.example"),
    )
    .await;
    refused(&r, 400, "bad_request", "two Host headers");
    // The host decided on (lowercased, no port or trailing dot) is the X-Forwarded-Host the upstream gets; what the
    // client claimed about forwarding never passes.
    let r = send(
        get("/payments/p1")
            .header("host", "API.Example.:8443")
            .header("x-forwarded-host", "admin.internal")
            .header("forwarded", "for=10.0.0.1;host=admin.internal")
            .header("x-forwarded-port", "1")
            .header("x-real-ip", "10.0.0.1"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    let up = &r.json["headers"];
    assert_eq!(up["x-forwarded-host"], "api.example");
    for claimed in ["forwarded", "x-forwarded-port", "x-real-ip"] {
        assert!(
            up.get(claimed).is_none(),
            "{claimed} reached the upstream: {up}"
        );
    }
    assert_eq!(
        h.record(&r.upstream_decision_id()).context["host"],
        "api.example"
    );

    // X-Forwarded-For from the trusted peer, read from the right: `ip:port` and `[v6]:port` are addresses.
    for (xff, client) in [
        ("198.51.100.1, 203.0.113.7:5555", "203.0.113.7"),
        ("198.51.100.1, [2001:db8::7]:443", "2001:db8::7"),
        ("198.51.100.1, 127.0.0.1", "198.51.100.1"),
    ] {
        let r = send(
            get("/payments/p1")
                .header("host", "h")
                .header("x-forwarded-for", xff),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{xff}: {:?}", r.json);
        assert_eq!(r.json["headers"]["x-forwarded-for"], client, "{xff}");
        let rec = h.record(&r.upstream_decision_id());
        assert_eq!(rec.context["source_ip"], client, "{xff}");
    }
    // An entry that is not an address, or a header that is not text: refused, never the proxy's own address.
    let r = send(
        get("/payments/p1")
            .header("host", "h")
            .header("x-forwarded-for", "198.51.100.1, 203.0.113.7:5555:1"),
    )
    .await;
    refused(
        &r,
        400,
        "bad_request",
        "an XFF entry that is not an address",
    );
    let r = send(get("/payments/p1").header("host", "h").header(
        "x-forwarded-for",
        HeaderValue::from_bytes(b"\xff, 203.0.113.7").unwrap(),
    ))
    .await;
    refused(&r, 400, "bad_request", "an XFF header that is not text");

    // TRACE is never forwarded; a lower-case method is not GET and matches no route.
    let r = send(
        Request::builder()
            .method(Method::TRACE)
            .uri("/payments/p1")
            .header("host", "h")
            .header("authorization", format!("Bearer {token}")),
    )
    .await;
    refused(&r, 405, "method_not_allowed", "TRACE");
    let r = send(
        Request::builder()
            .method(Method::from_bytes(b"get").unwrap())
            .uri("/payments/p1")
            .header("host", "h")
            .header("authorization", format!("Bearer {token}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.json);

    // A context header: sent twice is refused; made hop-by-hop, the policies see none, as the upstream gets none.
    let r = send(
        get("/payments/p1")
            .header("host", "h")
            .header("x-tenant", "acme")
            .header("x-tenant", "globex"),
    )
    .await;
    refused(&r, 400, "bad_request", "a context header twice");
    // ... and so is another spelling of it, which a CGI-style upstream would read as the same header.
    let r = send(
        get("/payments/p1")
            .header("host", "h")
            .header("x-tenant", "acme")
            .header("x_tenant", "globex"),
    )
    .await;
    refused(&r, 400, "bad_request", "a context header spelled two ways");
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("`x_tenant` is another spelling of `x-tenant`"),
        "{:?}",
        r.json
    );
    let r = send(
        get("/payments/p1")
            .header("host", "h")
            .header("connection", "x-tenant")
            .header("x-tenant", "acme"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert!(r.json["headers"].get("x-tenant").is_none());
    let rec = h.record(&r.upstream_decision_id());
    assert!(
        rec.context["headers"].get("x-tenant").is_none(),
        "{:?}",
        rec.context
    );

    // An Authorization header that is not text is a 401, not an anonymous request.
    let r = send(
        Request::builder()
            .method(Method::GET)
            .uri("/payments/p1")
            .header("host", "h")
            .header(
                "authorization",
                HeaderValue::from_bytes(b"Bearer \xff").unwrap(),
            ),
    )
    .await;
    refused(
        &r,
        401,
        "unauthenticated",
        "an unreadable Authorization header",
    );

    // A principal that is not ASCII is sent as its UTF-8 bytes.
    let jose = h.token("jos\u{e9}", &["engineering"]);
    let r = send(
        Request::builder()
            .method(Method::GET)
            .uri("/payments/p1")
            .header("host", "h")
            .header("authorization", format!("Bearer {jose}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(
        r.json["headers"]["x-jitgate-principal"],
        "User::\"jos\u{e9}\""
    );

    // A principal with a control character in `sub` is refused when authenticating (401 naming the claim: an id
    // with invisible or control characters is never a principal), before the forward stage's own check (which
    // answered 500 here before principal ids were checked) could be reached.
    let eve = h.token("eve\u{7f}", &["engineering"]);
    let r = send(
        Request::builder()
            .method(Method::GET)
            .uri("/payments/p1")
            .header("host", "h")
            .header("authorization", format!("Bearer {eve}")),
    )
    .await;
    refused(
        &r,
        401,
        "unauthenticated",
        "a principal id with a control character",
    );

    // Forwarded: the host check, three XFF forms, the hop-by-hop context header and the UTF-8 principal (6
    // requests); the rest never.
    assert_eq!(h.upstream.hits() - base, 6);
    h.assert_log(16);
}

/// Slow clients cannot hold connections: one that sends nothing, the start of the HTTP/2 preface, or half a
/// request head is closed after `header_timeout`, and the connection limit frees up again. Over the limit, a
/// connection is closed at once.
#[tokio::test]
async fn silent_and_slow_clients_are_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start_with(|raw, _| {
        raw.server.header_timeout = "300ms".into();
        raw.server.max_connections = 3;
    })
    .await;
    let started = std::time::Instant::now();
    let mut slow = Vec::new();
    for sent in [
        &b""[..],
        b"PRI * HTTP/2.0\r\n",
        b"GET /payments HTTP/1.1\r\nHost: 127",
    ] {
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        s.write_all(sent).await.unwrap();
        slow.push(s);
    }
    // The limit is taken: a fourth connection is closed without an answer.
    let mut over = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let mut buf = [0u8; 256];
    let n = within(
        "the connection over the limit is closed",
        over.read(&mut buf),
    )
    .await
    .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    // Each slow one is closed by the server (EOF or reset, perhaps after a 408 for the half-sent head).
    for (i, s) in slow.iter_mut().enumerate() {
        let mut seen = Vec::new();
        within("a slow client is closed", async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        let seen = String::from_utf8_lossy(&seen);
        assert!(
            seen.is_empty() || seen.starts_with("HTTP/1.1 408"),
            "client {i}: {seen}"
        );
    }
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    // The slots are free again (a closed connection gives its slot back as its task ends: retried briefly).
    let token = h.token("alice", &["engineering"]);
    let mut status = None;
    for _ in 0..50 {
        match client()
            .get(h.url("/payments/p1"))
            .bearer_auth(&token)
            .send()
            .await
        {
            Ok(r) => {
                status = Some(r.status());
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    assert_eq!(status, Some(StatusCode::OK));
}

/// A request written as raw bytes on a new connection (ending it with `Connection: close`), and the reply: status,
/// head (lower-cased) and the body as JSON.
async fn raw_bytes(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    within("raw bytes", async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        // The server closes after answering (`Connection: close`, or the request could not be read to its end).
        let _ = s.read_to_end(&mut buf).await;
        let text = String::from_utf8_lossy(&buf).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut body = body.to_string();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            let mut rest = body.as_str();
            let mut whole = String::new();
            while let Some((size, after)) = rest.split_once("\r\n") {
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                if n == 0 {
                    break;
                }
                whole.push_str(&after[..n]);
                rest = &after[n + 2..];
            }
            body = whole;
        }
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (
            status,
            head.to_ascii_lowercase(),
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    })
    .await
}

/// `%25` followed by an encoded `.`, `/`, `\` or NUL, in any case, is what a backend that decodes twice reads as a
/// dot segment or separator: refused with 400 and recorded, never forwarded; `[server] allow_double_encoding`
/// passes it on as it came.
#[tokio::test]
async fn double_encoded_dot_segments_and_separators_are_refused_and_never_reach_the_upstream() {
    let h = Harness::start().await;
    let alice = h.token("alice", &["engineering"]);
    let targets = [
        "/payments/%252e%252e/databases/db1",
        "/payments/%252E%252E/databases/db1",
        "/payments/p1%252f..%252f..%252fdatabases%252fdb1",
        "/payments/p1%252F..",
        "/payments/a%255cb",
        "/payments/a%255Cb",
        "/payments/p1%2500",
        "/payments/%25%32%65%25%32%65/databases/db1",
    ];
    for target in targets {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {alice}\r\nConnection: close\r\n\r\n"
        );
        let (status, _, json) = raw_bytes(h.addr, req.as_bytes()).await;
        assert_eq!(status, 400, "{target}: {json:?}");
        assert_eq!(json["error"], "bad_path", "{target}");
        let rec = h.record(json["decision_id"].as_str().unwrap());
        assert_eq!(rec.status, Some(400), "{target}");
        assert_eq!(
            rec.path.as_deref(),
            Some(target),
            "the raw path is recorded"
        );
    }
    assert_eq!(h.upstream.hits(), 0);
    h.assert_log(targets.len());

    // Allowed by configuration: passed on as it came, `%25` still encoded.
    let h = Harness::start_with(|raw, _| raw.server.allow_double_encoding = true).await;
    let alice = h.token("alice", &["engineering"]);
    let r = raw(h.addr, raw_get("/payments/p1%252e%252e", Some(&alice))).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(r.json["path"], "/payments/p1%252e%252e");
}

/// A chunked body that cannot be read (a bare LF after the chunk size, a chunk size that overflows) is the client's
/// fault: 400 `bad_request`, recorded as a bad request, not a 502 upstream failure.
#[tokio::test]
async fn a_malformed_chunked_body_is_a_400_bad_request_and_not_an_upstream_failure() {
    let h = Harness::start().await;
    h.grant(
        "g-bob",
        "bob",
        "payments-writer",
        EntityRef::new("Service", "payments"),
    );
    let token = h.token("bob", &["engineering"]);
    let head = format!(
        "POST /payments HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for (what, body) in [
        ("bare LF", "5\nhello\r\n0\r\n\r\n"),
        (
            "size overflow",
            "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
    ] {
        let (status, head, json) = raw_bytes(h.addr, format!("{head}{body}").as_bytes()).await;
        assert_eq!(status, 400, "{what}: {head}\n{json:?}");
        assert_eq!(json["error"], "bad_request", "{what}");
        let rec = h.record(json["decision_id"].as_str().unwrap());
        assert_eq!(rec.status, Some(400), "{what}");
        assert!(
            rec.errors.iter().any(|e| e.starts_with("bad request:")),
            "{what}: {:?}",
            rec.errors
        );
        assert!(
            !rec.errors.iter().any(|e| e.contains("upstream")),
            "{what}: {:?}",
            rec.errors
        );
    }
    // A well-formed chunked body still passes whole.
    let (status, _, json) =
        raw_bytes(h.addr, format!("{head}5\r\nhello\r\n0\r\n\r\n").as_bytes()).await;
    assert_eq!(status, 200, "{json:?}");
    assert_eq!(json["body_bytes"], 5);
    h.assert_log(3);
}

/// The upstream client sends no body with a GET or HEAD, so forwarding one that has a body (chunked, or a
/// `Content-Length` above 0) would drop the body silently: refused with 400 `bad_request` in the admit stage,
/// recorded as a bad request, and never forwarded. A GET with `Content-Length: 0` still passes.
#[tokio::test]
async fn a_get_or_head_with_a_body_is_a_400_and_never_reaches_the_upstream() {
    let h = Harness::start().await;
    let alice = h.token("alice", &["engineering"]);
    let cases = [
        (
            "GET chunked",
            format!(
                "GET /payments/p1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {alice}\r\n\
                 Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            ),
        ),
        (
            "HEAD chunked",
            format!(
                "HEAD /payments/p1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {alice}\r\n\
                 Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            ),
        ),
        (
            "GET content-length",
            format!(
                "GET /payments/p1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {alice}\r\n\
                 Content-Length: 5\r\nConnection: close\r\n\r\nhello"
            ),
        ),
        (
            "HEAD content-length",
            format!(
                "HEAD /payments/p1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {alice}\r\n\
                 Content-Length: 5\r\nConnection: close\r\n\r\nhello"
            ),
        ),
    ];
    for (what, req) in &cases {
        let (status, head, json) = raw_bytes(h.addr, req.as_bytes()).await;
        assert_eq!(status, 400, "{what}: {head}\n{json:?}");
        // A HEAD answer has no body: the decision id is read from the header.
        let id = head
            .lines()
            .find_map(|l| l.strip_prefix("x-jitgate-decision-id:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{what}: no decision id in {head}"));
        if what.starts_with("GET") {
            assert_eq!(json["error"], "bad_request", "{what}");
        }
        let rec = h.record(&id);
        assert_eq!(rec.status, Some(400), "{what}");
        assert!(
            rec.errors.iter().any(|e| e.starts_with("bad request:")),
            "{what}: {:?}",
            rec.errors
        );
    }
    assert_eq!(
        h.upstream.hits(),
        0,
        "no GET or HEAD with a body is forwarded"
    );
    // No body declared, or an empty one: forwarded.
    let (status, _, json) = raw_bytes(
        h.addr,
        format!(
            "GET /payments/p1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {alice}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{json:?}");
    assert_eq!(h.upstream.hits(), 1);
    h.assert_log(cases.len() + 1);
}

/// The host reaches routing, the policies, approvers and the log, so it is never free text: a `Host` (or an
/// absolute-form target) that is not a host name or IP literal with an optional port is refused with 400 and
/// never forwarded; host names (`_` included), IPv4 and bracketed IPv6 literals with a port still route.
#[tokio::test]
async fn hosts_that_are_not_host_names_or_ip_literals_are_refused() {
    let h = Harness::start().await;
    let alice = h.token("alice", &["engineering"]);
    let get = |target: &str, host: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {alice}\r\nConnection: close\r\n\r\n"
        )
    };
    let refused = [
        ("/payments/p1", "staging (dry run - safe to approve)"),
        ("/payments/p1", "staging approve"),
        ("/payments/p1", "user@api.example"),
        ("/payments/p1", "api.example:80:80"),
        ("/payments/p1", "api.example:99999"),
        ("/payments/p1", "[::1"),
        ("/payments/p1", "a..b"),
    ];
    for (target, host) in refused {
        let (status, _, json) = raw_bytes(h.addr, get(target, host).as_bytes()).await;
        assert_eq!(status, 400, "{host:?}: {json:?}");
        assert_eq!(json["error"], "bad_request", "{host:?}");
        assert!(
            json["message"].as_str().unwrap().contains("Host header"),
            "{host:?}: the message names the header: {json:?}"
        );
        let rec = h.record(json["decision_id"].as_str().unwrap());
        assert_eq!(rec.status, Some(400), "{host:?}");
        assert!(
            rec.context.get("host").is_none(),
            "{host:?}: {:?}",
            rec.context
        );
    }
    assert_eq!(h.upstream.hits(), 0);
    for (host, expected) in [
        ("API.example:8443", "api.example"),
        ("api.example.", "api.example"),
        ("127.0.0.1:9", "127.0.0.1"),
        ("[::1]:8080", "[::1]"),
        ("api_internal.example", "api_internal.example"),
    ] {
        let (status, _, json) = raw_bytes(h.addr, get("/payments/p1", host).as_bytes()).await;
        assert_eq!(status, 200, "{host}: {json:?}");
        assert_eq!(json["headers"]["x-forwarded-host"], expected, "{host}");
    }
    h.assert_log(refused.len() + 5);
}

/// Secrets in query strings never reach the decision log: values of parameters named in `[log] redact_query`
/// (by default `api_key`, `token`, ...) are masked in the record, while the upstream gets the real query and the
/// other parameters are kept.
#[tokio::test]
async fn query_secrets_are_redacted_in_the_record_but_reach_the_upstream() {
    let h = Harness::start().await;
    let alice = h.token("alice", &["engineering"]);
    let r = raw(
        h.addr,
        raw_get("/payments/p1?api_key=s3cret&x=1&Token=t0ken", Some(&alice)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(r.json["query"], "api_key=s3cret&x=1&Token=t0ken");
    let rec = h.record(&r.upstream_decision_id());
    assert_eq!(
        rec.context["query"],
        "api_key=[redacted]&x=1&Token=[redacted]"
    );
    assert_eq!(rec.redacted, vec!["query".to_string()]);
    let whole = serde_json::to_string(&rec).unwrap();
    assert!(
        !whole.contains("s3cret") && !whole.contains("t0ken"),
        "{whole}"
    );
    // Also in the files as written (the database, its WAL, a journal): no byte of the secret on disk.
    for f in std::fs::read_dir(h.log_path.parent().unwrap()).unwrap() {
        let f = f.unwrap().path();
        if f.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("decisions")
            && f.is_file()
        {
            let bytes = std::fs::read(&f).unwrap();
            assert!(!bytes.windows(6).any(|w| w == b"s3cret"), "{}", f.display());
        }
    }
    h.assert_log(1);
}
