//! The JIT access lifecycle through the real proxy, the real admin API and real SQLite files: request, approve,
//! use, revoke on an open keep-alive connection; separation of duties; N-of-M; pending TTL; auto-approval; break
//! glass; one-use grants under concurrency; restart; grant-bound tokens; webhooks down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod lifecycle_common;

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jitgate_engine::log::RecordKind;
use jitgate_engine::{Clock, EntityRef, Grant, GrantStatus};
use lifecycle_common::{Env, T0};
use serde_json::json;

/// One HTTP/1.1 connection kept open for several requests.
struct KeepAlive {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl KeepAlive {
    async fn open(addr: std::net::SocketAddr) -> KeepAlive {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        KeepAlive { send }
    }

    async fn call(&mut self, method: &str, path: &str, token: &str) -> u16 {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let resp = self.send.send_request(req).await.unwrap();
        let s = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        s
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_lifecycle_revoked_on_the_same_keep_alive_connection() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |_| {}).await;
    let alice = env.token("alice");
    let mut conn = KeepAlive::open(env.running.addr).await;
    assert_eq!(
        conn.call("POST", "/payments", &alice).await,
        403,
        "no standing access"
    );

    let req = env
        .request(
            "alice",
            "payments-writer",
            r#"Service::"payments""#,
            "30m",
            "INC-4211",
        )
        .await;
    let id = req["request"]["id"].as_str().unwrap().to_string();
    assert_eq!(req["request"]["state"], "pending");
    assert_eq!(
        conn.call("POST", "/payments", &alice).await,
        403,
        "pending is not access"
    );

    // Separation of duties: nobody approves their own request (bob may approve payments roles, not his own).
    let bobs = env
        .request(
            "bob",
            "payments-writer",
            r#"Service::"payments""#,
            "30m",
            "INC-1",
        )
        .await;
    let (s, v) = env
        .approve("bob", bobs["request"]["id"].as_str().unwrap())
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("no-self-approval"),
        "{v}"
    );
    // An engineer without approver rights cannot approve either.
    let (s, _) = env.approve("carol", &id).await;
    assert_eq!(s, 403);

    let (s, v) = env.approve("bob", &id).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["request"]["state"], "approved");
    let grant_id = v["grant"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["grant"]["expires_at"].as_i64().unwrap(), T0 + 1800);
    assert_eq!(conn.call("POST", "/payments", &alice).await, 200);
    // Approving again is a clear conflict, not a silent no-op.
    let (s, v) = env.approve("bob", &id).await;
    assert_eq!(s, 409, "{v}");

    // Alice sees her grant; she may not revoke (only approvers revoke), bob may.
    let (s, v) = env.get("alice", "/v1/grants").await;
    assert_eq!(s, 200);
    assert_eq!(v["grants"][0]["id"], grant_id.as_str());
    let (s, _) = env
        .post("alice", &format!("/v1/grants/{grant_id}/revoke"), json!({}))
        .await;
    assert_eq!(s, 403);
    let (s, v) = env
        .post(
            "bob",
            &format!("/v1/grants/{grant_id}/revoke"),
            json!({"comment": "done"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["grant"]["status"], "revoked");
    assert_eq!(
        conn.call("POST", "/payments", &alice).await,
        403,
        "revocation visible on the open connection"
    );
    let (s, _) = env
        .post("bob", &format!("/v1/grants/{grant_id}/revoke"), json!({}))
        .await;
    assert_eq!(s, 409, "revoking twice is a conflict");

    // The decision log links request -> approval -> grant -> revocation.
    env.running.proxy.log.flush().await;
    let recs = jitgate_engine::log::tail(&dir.path().join("decisions.db"), 200).unwrap();
    let life: Vec<_> = recs
        .iter()
        .filter(|r| r.kind == RecordKind::Lifecycle && r.request_id.as_deref() == Some(id.as_str()))
        .map(|r| (r.action.clone(), r.grants_used.clone()))
        .collect();
    let actions: Vec<&str> = life.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "lifecycle.created",
            "lifecycle.approved",
            "lifecycle.revoked"
        ],
        "{life:?}"
    );
    assert_eq!(life[1].1, vec![grant_id.clone()]);
    // And the data-plane decision that used the grant names it.
    assert!(
        recs.iter()
            .any(|r| r.kind == RecordKind::Decision && r.grants_used.contains(&grant_id))
    );
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |_| {}).await;
    for (body, field) in [
        (
            json!({"role": "nope", "scope": "Service::\"payments\"", "duration": "10m", "reason": "x"}),
            "role",
        ),
        (
            json!({"role": "payments-writer", "scope": "Service::\"payments\"", "duration": "2h", "reason": "x"}),
            "duration",
        ),
        (
            json!({"role": "payments-writer", "scope": "Service::\"payments\"", "duration": "10m"}),
            "reason",
        ),
        (
            json!({"role": "payments-writer", "scope": "payments", "duration": "10m", "reason": "x"}),
            "scope",
        ),
        (
            json!({"role": "payments-writer", "scope": "Service::\"payments\"", "duration": "soon", "reason": "x"}),
            "duration",
        ),
        (
            json!({"role": "payments-writer", "scope": "Service::\"payments\"", "duration": "10m", "reason": "x", "colour": 1}),
            "colour",
        ),
        // A mistyped value names its field too.
        (
            json!({"role": 5, "scope": "Service::\"payments\"", "duration": "10m", "reason": "x"}),
            "role",
        ),
        (
            json!({"role": "payments-writer", "scope": "Service::\"payments\"", "duration": "10m", "reason": "x", "ticket": ["INC-1"]}),
            "ticket",
        ),
    ] {
        let (s, v) = env.post("alice", "/v1/requests", body).await;
        assert_eq!(s, 400, "{v}");
        assert_eq!(v["field"], field, "{v}");
    }
    // An unknown admin route, or a method a route does not take, is a JSON error like every other.
    for (method, path, status) in [
        (reqwest::Method::GET, "/v1/no-such-thing", 404),
        (reqwest::Method::DELETE, "/v1/requests", 405),
    ] {
        let r = env
            .http
            .request(method, env.admin(path))
            .bearer_auth(env.token("alice"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["message"].as_str().unwrap().contains(path), "{v}");
    }
    // Outside engineering and sre: the policy refuses.
    let (s, _) = env
        .post("erin", "/v1/requests", json!({"role": "payments-writer", "scope": "Service::\"payments\"", "duration": "10m", "reason": "x"}))
        .await;
    assert_eq!(s, 403);
    let (s, _) = env.approve("bob", "no-such-request").await;
    assert_eq!(s, 404);
    // Ids cannot be probed: a caller who may not list others' requests gets the same 403 for an unknown id as
    // for someone else's request; one who may list them learns that it does not exist.
    let alices = env
        .request(
            "alice",
            "payments-writer",
            r#"Service::"payments""#,
            "10m",
            "INC-2",
        )
        .await;
    let existing = alices["request"]["id"].as_str().unwrap().to_string();
    let (s, unknown) = env.get("mallory", "/v1/requests/no-such-request").await;
    assert_eq!(s, 403, "{unknown}");
    let (s, others) = env
        .get("mallory", &format!("/v1/requests/{existing}"))
        .await;
    assert_eq!(s, 403, "{others}");
    assert_eq!(unknown, others);
    let (s, v) = env.get("alice", "/v1/requests/no-such-request").await;
    assert_eq!(s, 404, "{v}");
    // The same holds for acting on a request or a grant: approve, deny, revoke, drop and token all answer an
    // unknown id exactly as they answer an existing one that no policy lets mallory act on.
    let (s, v) = env.approve("bob", &existing).await;
    assert_eq!(s, 200, "{v}");
    let grant = v["grant"]["id"].as_str().unwrap().to_string();
    for (path, kind) in [
        ("/v1/requests/{}/approve", "request"),
        ("/v1/requests/{}/deny", "request"),
        ("/v1/grants/{}/revoke", "grant"),
        ("/v1/grants/{}/drop", "grant"),
        ("/v1/grants/{}/token", "grant"),
    ] {
        let real = if kind == "request" { &existing } else { &grant };
        let (s, unknown) = env
            .post("mallory", &path.replace("{}", "no-such-id"), json!({}))
            .await;
        assert_eq!(s, 403, "{path} on an unknown id: {unknown}");
        let (s, others) = env
            .post("mallory", &path.replace("{}", real), json!({}))
            .await;
        assert_eq!(s, 403, "{path} on alice's {kind}: {others}");
        assert_eq!(
            unknown, others,
            "{path}: an unknown id must look like a refused one"
        );
        // A caller who may list requests (alice, engineering) is told that it does not exist.
        let (s, v) = env
            .post("alice", &path.replace("{}", "no-such-id"), json!({}))
            .await;
        assert_eq!(s, 404, "{path} by a lister: {v}");
    }
    let r = env.http.get(env.admin("/v1/grants")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // A body over the admin API's 2 MiB is 413 with the same error code as the data plane's, and creates nothing.
    let (_, before) = env.get("carol", "/v1/requests?all=true").await;
    let huge = format!(
        r#"{{"role": "payments-writer", "scope": "Service::\"payments\"", "duration": "10m", "reason": "{}"}}"#,
        "x".repeat(3 << 20)
    );
    let r = env
        .http
        .post(env.admin("/v1/requests"))
        .bearer_auth(env.token("alice"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // The unread rest of the body ends the connection: the client must not reuse it (it would race the close).
    assert_eq!(r.headers()["connection"], "close");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "body_too_large", "{v}");
    assert_eq!(env.get("carol", "/v1/requests?all=true").await.1, before);
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reason_or_ticket_over_1_kib_is_refused_naming_the_field_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |_| {}).await;
    let (_, before) = env.get("carol", "/v1/requests?all=true").await;
    for (body, field) in [
        (
            json!({"role": "payments-writer", "scope": "Service::\"payments\"", "duration": "10m", "reason": "x".repeat(2048)}),
            "reason",
        ),
        (
            json!({"role": "payments-writer", "scope": "Service::\"payments\"", "duration": "10m", "reason": "x", "ticket": "T".repeat(1025)}),
            "ticket",
        ),
    ] {
        let (s, v) = env.post("alice", "/v1/requests", body).await;
        assert_eq!(s, 400, "{v}");
        assert_eq!(v["field"], field, "{v}");
        assert!(v["message"].as_str().unwrap().contains("1024 bytes"), "{v}");
    }
    assert_eq!(env.get("carol", "/v1/requests?all=true").await.1, before);
    // Exactly 1 KiB is still fine.
    let (s, v) = env
        .post(
            "alice",
            "/v1/requests",
            json!({"role": "payments-writer", "scope": "Service::\"payments\"", "duration": "10m", "reason": "x".repeat(1024)}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_requests_per_principal_are_capped_and_a_decided_one_frees_a_slot() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |raw| {
        raw.store.max_pending_per_principal = 3;
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let v = env
            .request(
                "alice",
                "payments-writer",
                r#"Service::"payments""#,
                "10m",
                &format!("INC-{i}"),
            )
            .await;
        ids.push(v["request"]["id"].as_str().unwrap().to_string());
    }
    let fourth = json!({"role": "payments-writer", "scope": "Service::\"payments\"", "duration": "10m", "reason": "INC-4"});
    let (s, v) = env.post("alice", "/v1/requests", fourth.clone()).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("already has 3 pending access requests"),
        "{v}"
    );
    let (_, mine) = env.get("alice", "/v1/requests?state=pending").await;
    assert_eq!(
        mine["requests"].as_array().unwrap().len(),
        3,
        "nothing stored"
    );
    // Someone else is not affected by alice's cap.
    env.request(
        "bob",
        "payments-writer",
        r#"Service::"payments""#,
        "10m",
        "INC-9",
    )
    .await;
    // One approved frees a slot.
    assert_eq!(env.approve("bob", &ids[0]).await.0, 200);
    let (s, v) = env.post("alice", "/v1/requests", fourth).await;
    assert_eq!(s, 201, "{v}");
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listings_are_paged_with_a_cursor_and_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |raw| {
        raw.store.max_pending_per_principal = 1000;
    })
    .await;
    // All made in the same (frozen) second, so the order within a page is by id.
    for i in 0..150 {
        env.request(
            "alice",
            "payments-writer",
            r#"Service::"payments""#,
            "10m",
            &format!("INC-{i}"),
        )
        .await;
    }
    let (s, first) = env.get("alice", "/v1/requests").await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["requests"].as_array().unwrap().len(), 100);
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let (s, second) = env
        .get("alice", &format!("/v1/requests?cursor={cursor}"))
        .await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(second["requests"].as_array().unwrap().len(), 50);
    assert!(second["next_cursor"].is_null(), "{}", second["next_cursor"]);
    let mut ids: Vec<&str> = first["requests"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["requests"].as_array().unwrap())
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 150, "no duplicates, none missing");
    // A page size outside 1..=1000 and a cursor the listing never returned are 400s naming the parameter.
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("cursor=not-a-cursor", "cursor"),
    ] {
        let (s, v) = env.get("alice", &format!("/v1/requests?{q}")).await;
        assert_eq!(s, 400, "{q}: {v}");
        assert_eq!(v["field"], field, "{v}");
    }
    // Grants are paged the same way.
    let (_, mine) = env.get("alice", "/v1/requests?state=pending&limit=3").await;
    for r in mine["requests"].as_array().unwrap() {
        assert_eq!(env.approve("bob", r["id"].as_str().unwrap()).await.0, 200);
    }
    let (s, g1) = env.get("alice", "/v1/grants?limit=2").await;
    assert_eq!(s, 200, "{g1}");
    assert_eq!(g1["grants"].as_array().unwrap().len(), 2);
    let cursor = g1["next_cursor"].as_str().unwrap().to_string();
    let (_, g2) = env
        .get("alice", &format!("/v1/grants?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(g2["grants"].as_array().unwrap().len(), 1, "{g2}");
    assert!(g2["next_cursor"].is_null());
    assert_ne!(g1["grants"][0]["id"], g2["grants"][0]["id"]);
    assert_ne!(g1["grants"][1]["id"], g2["grants"][0]["id"]);
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn db_admin_needs_two_distinct_approvers_and_deny_wins() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |_| {}).await;
    let alice = env.token("alice");
    let req = env
        .request(
            "alice",
            "db-admin",
            r#"Service::"billing""#,
            "30m",
            "migration",
        )
        .await;
    let id = req["request"]["id"].as_str().unwrap().to_string();
    let (s, v) = env.approve("carol", &id).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["request"]["state"], "pending", "one of two approvals");
    assert!(v["grant"].is_null());
    let (s, v) = env.approve("carol", &id).await;
    assert_eq!(s, 409, "the same approver twice: {v}");
    assert!(v["message"].as_str().unwrap().contains("distinct"), "{v}");
    let put = |tok: String| {
        let http = env.http.clone();
        let url = env.data("/databases/orders/config");
        async move {
            http.put(url)
                .bearer_auth(tok)
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(put(alice.clone()).await, 403);
    let (s, v) = env.approve("erin", &id).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["request"]["state"], "approved");
    let approvers = v["grant"]["approvers"].as_array().unwrap();
    assert_eq!(approvers.len(), 2);
    assert_eq!(put(alice.clone()).await, 200);

    // Deny wins: one approval then a deny ends the request; a later approval is a conflict.
    let req = env
        .request("alice", "db-admin", r#"Service::"billing""#, "30m", "again")
        .await;
    let id = req["request"]["id"].as_str().unwrap().to_string();
    assert_eq!(env.approve("carol", &id).await.0, 200);
    let (s, v) = env
        .post(
            "erin",
            &format!("/v1/requests/{id}/deny"),
            json!({"comment": "no"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["request"]["state"], "denied");
    let (s, v) = env.approve("erin", &id).await;
    assert_eq!(s, 409, "{v}");
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_ttl_expires_undecided_requests() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::frozen(T0);
    let env = Env::start(dir.path(), clock.clone(), |_| {}).await;
    let req = env
        .request(
            "alice",
            "payments-writer",
            r#"Service::"payments""#,
            "30m",
            "INC-9",
        )
        .await;
    let id = req["request"]["id"].as_str().unwrap().to_string();
    // Default pending_ttl is 24h: one second before the edge it is still pending.
    clock.set(T0 + 86_400 - 1);
    let (s, v) = env.get("alice", &format!("/v1/requests/{id}")).await;
    assert_eq!((s, v["request"]["state"].as_str()), (200, Some("pending")));
    clock.set(T0 + 86_400);
    let (s, v) = env.approve("bob", &id).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");
    let (_, v) = env.get("alice", &format!("/v1/requests/{id}")).await;
    assert_eq!(v["request"]["state"], "expired");
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_approval_and_a_one_use_grant_under_20_concurrent_requests() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |_| {}).await;
    let (s, v) = env
        .post(
            "alice",
            "/v1/requests",
            json!({"role": "refund-once", "scope": "Service::\"payments\"", "duration": "15m", "reason": "customer", "ticket": "T-42"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["request"]["state"], "approved",
        "auto-approved by policy: {v}"
    );
    assert_eq!(v["grant"]["approvers"], json!(["policy"]));
    assert_eq!(v["grant"]["max_uses"], 1);
    // Without a ticket the policy does not auto-approve.
    let (_, v) = env
        .post(
            "alice",
            "/v1/requests",
            json!({"role": "refund-once", "scope": "Service::\"payments\"", "duration": "15m", "reason": "customer"}),
        )
        .await;
    assert_eq!(v["request"]["state"], "pending");

    let alice = env.token("alice");
    let before = env.upstream.hits();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let http = reqwest::Client::new();
        let url = env.data("/payments/p-1/refund");
        let tok = alice.clone();
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(tok)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 403).count(),
        19,
        "{statuses:?}"
    );
    assert_eq!(env.upstream.hits() - before, 1);
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn break_glass_is_self_activated_by_sre_only() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |_| {}).await;
    let (s, _) = env
        .post("alice", "/v1/requests", json!({"role": "break-glass", "scope": "Service::\"billing\"", "duration": "10m", "reason": "outage"}))
        .await;
    assert_eq!(s, 403);
    let v = env
        .request(
            "sam",
            "break-glass",
            r#"Service::"billing""#,
            "10m",
            "outage",
        )
        .await;
    assert_eq!(v["request"]["state"], "approved");
    assert_eq!(v["grant"]["break_glass"], true);
    let r = env
        .http
        .delete(env.data("/databases/orders"))
        .bearer_auth(env.token("sam"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "break glass skips the hold");
    env.running.shutdown().await;
    let recs = jitgate_engine::log::tail(&dir.path().join("decisions.db"), 50).unwrap();
    assert!(
        recs.iter()
            .any(|r| r.action == "lifecycle.break_glass" && r.break_glass)
    );
    assert!(
        recs.iter()
            .any(|r| r.kind == RecordKind::Decision && r.break_glass)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approved_grant_survives_a_restart_on_the_same_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::frozen(T0);
    let env = Env::start(dir.path(), clock.clone(), |_| {}).await;
    let v = env
        .request(
            "alice",
            "payments-writer",
            r#"Service::"payments""#,
            "30m",
            "INC-7",
        )
        .await;
    let (s, _) = env
        .approve("bob", v["request"]["id"].as_str().unwrap())
        .await;
    assert_eq!(s, 200);
    env.running.shutdown().await;
    drop(env.upstream);

    let env = Env::start(dir.path(), clock, |_| {}).await;
    let r = env
        .http
        .post(env.data("/payments"))
        .bearer_auth(env.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "the grant was committed before the approval returned"
    );
    env.running.shutdown().await;
}

/// alice asks for payments-writer on the payments service and bob approves: the grant's id.
async fn alices_writer_grant(env: &Env) -> String {
    let v = env
        .request(
            "alice",
            "payments-writer",
            r#"Service::"payments""#,
            "30m",
            "CI deploy",
        )
        .await;
    let (s, v) = env
        .approve("bob", v["request"]["id"].as_str().unwrap())
        .await;
    assert_eq!(s, 200, "{v}");
    v["grant"]["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grant_bound_tokens_die_with_their_grant() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |_| {}).await;
    let grant = alices_writer_grant(&env).await;
    let (s, _) = env
        .post("bob", &format!("/v1/grants/{grant}/token"), json!({}))
        .await;
    assert_eq!(s, 403, "tokens only for the holder");
    // A ttl under a second, or absurdly long, is refused rather than read as "until the grant ends".
    for ttl in ["0s", "500ms", "10000000000000000000s"] {
        let (s, e) = env
            .post(
                "alice",
                &format!("/v1/grants/{grant}/token"),
                json!({"ttl": ttl}),
            )
            .await;
        assert_eq!(s, 400, "{ttl}: {e}");
        assert_eq!(e["field"], "ttl", "{ttl}: {e}");
    }
    let (s, t) = env
        .post(
            "alice",
            &format!("/v1/grants/{grant}/token"),
            json!({"ttl": "10m"}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["expires_at"].as_i64().unwrap(), T0 + 600);
    let tok = t["token"].as_str().unwrap().to_string();
    let call = || {
        env.http
            .post(env.data("/payments"))
            .bearer_auth(tok.clone())
            .send()
    };
    assert_eq!(call().await.unwrap().status().as_u16(), 200);
    let (s, _) = env
        .post("alice", &format!("/v1/grants/{grant}/drop"), json!({}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        call().await.unwrap().status().as_u16(),
        401,
        "dropped grant: token useless"
    );
    env.running.shutdown().await;
}

/// A token bound to a grant carries that grant's authority only: not its holder's other grants on the data plane,
/// and nothing on the admin API (no requests, approvals, or a longer-lived token minted in the holder's name).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_bound_token_carries_only_its_grant() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |_| {}).await;
    let writer = alices_writer_grant(&env).await;
    let v = env
        .request(
            "alice",
            "db-admin",
            r#"Service::"billing""#,
            "30m",
            "INC-9 cleanup",
        )
        .await;
    let id = v["request"]["id"].as_str().unwrap().to_string();
    assert_eq!(env.approve("carol", &id).await.0, 200);
    let (s, v) = env.approve("erin", &id).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["grant"]["id"].is_string(), "{v}");
    let (s, t) = env
        .post(
            "alice",
            &format!("/v1/grants/{writer}/token"),
            json!({"ttl": "10m"}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let bound = t["token"].as_str().unwrap().to_string();

    let query = |token: String| {
        env.http
            .post(env.data("/databases/db1/query"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        query(env.token("alice")).await.unwrap().status().as_u16(),
        200,
        "alice's db-admin grant"
    );
    let r = query(bound.clone()).await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        403,
        "the payments-writer token must not use the db-admin grant"
    );
    let create = env
        .http
        .post(env.data("/payments"))
        .bearer_auth(bound.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(create.status().as_u16(), 200, "its own grant still works");

    // The admin API refuses it outright, each refusal recorded.
    for (path, body) in [
        (format!("/v1/grants/{writer}/token"), json!({})),
        (
            "/v1/requests".to_string(),
            json!({"role": "payments-writer", "scope": "Service::\"payments\"", "duration": "30m", "reason": "x"}),
        ),
    ] {
        let r = env
            .http
            .post(env.admin(&path))
            .bearer_auth(bound.clone())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{path}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert_eq!(e["error"], "forbidden", "{path}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains("data plane only"),
            "{e}"
        );
    }
    env.running.shutdown().await;
}

/// alice mints a token bound to `grant` (10 minutes).
async fn bound_token(env: &Env, who: &str, grant: &str) -> String {
    let (s, t) = env
        .post(
            who,
            &format!("/v1/grants/{grant}/token"),
            json!({"ttl": "10m"}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    t["token"].as_str().unwrap().to_string()
}

/// A grant-bound token does not use its holder's group permissions: alice's `engineering` group reads databases
/// and payments with no grant (`engineers-read`), but her payments-writer token only creates payments.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_bound_token_does_not_use_its_holders_group_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |_| {}).await;
    let writer = alices_writer_grant(&env).await;
    let bound = bound_token(&env, "alice", &writer).await;
    for path in ["/databases/db1", "/payments"] {
        let get = |token: String| env.http.get(env.data(path)).bearer_auth(token).send();
        assert_eq!(
            get(env.token("alice")).await.unwrap().status().as_u16(),
            200,
            "{path}: alice's group reads it"
        );
        let r = get(bound.clone()).await.unwrap();
        assert_eq!(
            r.status().as_u16(),
            403,
            "{path}: the payments-writer token must not read through alice's group"
        );
    }
    let create = env
        .http
        .post(env.data("/payments"))
        .bearer_auth(bound)
        .send()
        .await
        .unwrap();
    assert_eq!(create.status().as_u16(), 200, "its own grant still works");
    env.running.shutdown().await;
}

/// A grant-bound token is still bound by the forbids that name its holder's groups: a contractor's db-admin token
/// does not escape `contractors-no-databases`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_bound_token_is_still_forbidden_by_its_holders_groups() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |_| {}).await;
    let v = env
        .request(
            "dave",
            "db-admin",
            r#"Service::"billing""#,
            "30m",
            "INC-9 cleanup",
        )
        .await;
    let id = v["request"]["id"].as_str().unwrap().to_string();
    assert_eq!(env.approve("carol", &id).await.0, 200);
    let (s, v) = env.approve("erin", &id).await;
    assert_eq!(s, 200, "{v}");
    let grant = v["grant"]["id"].as_str().unwrap().to_string();
    let bound = bound_token(&env, "dave", &grant).await;
    for token in [env.token("dave"), bound] {
        let r = env
            .http
            .post(env.data("/databases/db1/query"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        let e: serde_json::Value = r.json().await.unwrap();
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("contractors-no-databases")),
            "{e}"
        );
    }
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_receiver_down_changes_nothing_and_failures_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    // A port bound but never listening: connections are refused, and no other test can take it meanwhile.
    let refusing = tokio::net::TcpSocket::new_v4().unwrap();
    refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}/hook", refusing.local_addr().unwrap());
    let env = Env::start(dir.path(), Clock::frozen(T0), |raw| {
        raw.webhooks = vec![
            toml::from_str(&format!(
                "url = \"{url}\"\nmax_attempts = 3\nbackoff = \"10ms\"\ntimeout = \"1s\""
            ))
            .unwrap(),
        ];
    })
    .await;
    let v = env
        .request(
            "alice",
            "payments-writer",
            r#"Service::"payments""#,
            "30m",
            "INC-5",
        )
        .await;
    let (s, _) = env
        .approve("bob", v["request"]["id"].as_str().unwrap())
        .await;
    assert_eq!(s, 200);
    let r = env
        .http
        .post(env.data("/payments"))
        .bearer_auth(env.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Two events (created, approved), three attempts each: 2 retries + 1 failure per event.
    let m = env.running.proxy.metrics.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while m.webhooks.get("failed") < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(m.webhooks.get("failed"), 2);
    assert_eq!(m.webhooks.get("retry"), 4);
    assert_eq!(m.webhooks.get("ok"), 0);
    env.running.shutdown().await;
}

/// Revocation -> next decision, in process, with 10,000 grants in the index. Reported, not asserted.
#[test]
fn measure_revoke_to_next_decision_with_10k_grants() {
    use jitgate_engine::sqlite::SqliteStore;
    use jitgate_engine::{Authorizer, AuthzRequest, Bundle, Context, Principal};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
    let bundle = Bundle::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/quickstart-cedar"),
    )
    .unwrap();
    let az = Authorizer::new(bundle, store, Clock::frozen(T0)).unwrap();
    let mk = |i: usize| Grant {
        id: format!("g{i}"),
        principal: EntityRef::new("User", format!("u{i}")),
        role: "payments-writer".into(),
        scope: r#"Service::"payments""#.parse().unwrap(),
        starts_at: T0 - 10,
        expires_at: T0 + 3600,
        max_uses: None,
        uses: 0,
        status: GrantStatus::Active,
        approvers: vec!["bob".into()],
        reason: String::new(),
        break_glass: false,
        request_digest: None,
        request_id: None,
    };
    az.grants().replace_all((0..10_000).map(mk));
    let b = az.bundle();
    let route = b.routes.find("POST", None, "/payments").unwrap();
    let mut samples = Vec::new();
    for i in 0..50 {
        let g = mk(i);
        az.put_grant(g.clone()).unwrap();
        let req = AuthzRequest {
            principal: Principal {
                entity: g.principal.clone(),
                groups: vec!["engineering".into()],
                group_type: None,
                attrs: Default::default(),
            },
            action: route.route.action.clone(),
            resource: route.resource.clone(),
            context: {
                let mut c = Context::at(T0);
                c.source_ip = Some("10.0.0.1".into());
                c
            },
            digest: None,
        };
        assert!(az.decide(&b, &req).is_allow());
        let start = Instant::now();
        az.revoke_grant(&g.id, "bob").unwrap();
        let d = az.decide(&b, &req);
        samples.push(start.elapsed());
        assert!(!d.is_allow());
    }
    samples.sort();
    eprintln!(
        "revoke -> next decision with 10,000 grants: median {:?}, p90 {:?}, max {:?} (includes the SQLite commit)",
        samples[samples.len() / 2],
        samples[samples.len() * 9 / 10],
        samples[samples.len() - 1]
    );
}
