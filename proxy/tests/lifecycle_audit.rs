//! The audit trail of the access lifecycle through the real proxy, the real admin API and real SQLite files: every
//! move of a request to `expired` is logged exactly once whichever call finds it (approve, deny, get, list), listing
//! shows expired requests as `expired`, `approvals_required` is one number on every answer, a request shows its
//! ended grant across a restart, every control-plane call the policies refuse is a decision record, and an admin
//! call whose caller hangs up still commits its change with its record (shutdown waits for it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod lifecycle_common;

use jitgate_engine::Clock;
use jitgate_engine::log::{Outcome, RecordKind};
use jitgate_engine::store::RequestStore;
use lifecycle_common::{Env, T0};
use serde_json::{Value, json};

/// The quickstart's default pending TTL.
const PENDING_TTL: i64 = 86_400;

/// The `lifecycle.<event>` records of access request `id` in the decision log, after flushing it.
async fn lifecycle_records(env: &Env, id: &str, event: &str) -> usize {
    env.running.proxy.log.flush().await;
    let recs = jitgate_engine::log::tail(&env.dir.join("decisions.db"), 10_000).unwrap();
    let action = format!("lifecycle.{event}");
    recs.iter()
        .filter(|r| {
            r.kind == RecordKind::Lifecycle
                && r.action == action
                && r.request_id.as_deref() == Some(id)
        })
        .count()
}

async fn payments_request(env: &Env, who: &str, reason: &str) -> String {
    let v = env
        .request(
            who,
            "payments-writer",
            r#"Service::"payments""#,
            "30m",
            reason,
        )
        .await;
    assert_eq!(v["request"]["state"], "pending", "{v}");
    v["request"]["id"].as_str().unwrap().to_string()
}

fn states(list: &Value) -> Vec<(String, String)> {
    list["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_verdict_on_a_request_past_its_ttl_is_refused_and_the_expiry_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::frozen(T0);
    let env = Env::start(dir.path(), clock.clone(), |_| {}).await;
    let approve_me = payments_request(&env, "alice", "INC-1").await;
    let deny_me = payments_request(&env, "alice", "INC-2").await;
    let forbidden = payments_request(&env, "alice", "INC-3").await;
    clock.set(T0 + PENDING_TTL);

    // Approve: refused as expired, and the move to `expired` is in the log before anything reads the request.
    let (s, v) = env.approve("bob", &approve_me).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"], "conflict", "{v}");
    assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");
    assert_eq!(lifecycle_records(&env, &approve_me, "expired").await, 1);

    // Deny: the same.
    let deny = format!("/v1/requests/{deny_me}/deny");
    let (s, v) = env.post("bob", &deny, json!({"comment": "no"})).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");
    assert_eq!(lifecycle_records(&env, &deny_me, "expired").await, 1);

    // A caller the policies refuse (carol may not approve payments roles) finds it due all the same: 403, logged.
    let (s, v) = env.approve("carol", &forbidden).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(lifecycle_records(&env, &forbidden, "expired").await, 1);

    // Later calls, whatever they are, add no second record.
    for id in [&approve_me, &deny_me, &forbidden] {
        let (s, v) = env.approve("bob", id).await;
        assert_eq!(s, 409, "{v}");
        let (s, v) = env
            .post("bob", &format!("/v1/requests/{id}/deny"), json!({}))
            .await;
        assert_eq!(s, 409, "{v}");
        let (s, v) = env.get("alice", &format!("/v1/requests/{id}")).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["request"]["state"], "expired");
        assert_eq!(v["request"]["decided_at"], T0 + PENDING_TTL);
        assert!(v["approvals"].as_array().unwrap().is_empty(), "{v}");
    }
    let (s, v) = env.get("alice", "/v1/requests").await;
    assert_eq!(s, 200, "{v}");
    for id in [&approve_me, &deny_me, &forbidden] {
        assert_eq!(lifecycle_records(&env, id, "expired").await, 1, "{id}");
        assert_eq!(lifecycle_records(&env, id, "approved").await, 0, "{id}");
        assert_eq!(lifecycle_records(&env, id, "denied").await, 0, "{id}");
    }
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_of_a_request_past_its_ttl_logs_the_expiry_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::frozen(T0);
    let env = Env::start(dir.path(), clock.clone(), |_| {}).await;
    let id = payments_request(&env, "alice", "INC-4").await;
    clock.set(T0 + PENDING_TTL - 1);
    let (_, v) = env.get("alice", &format!("/v1/requests/{id}")).await;
    assert_eq!(
        v["request"]["state"], "pending",
        "one second before the edge"
    );
    assert_eq!(lifecycle_records(&env, &id, "expired").await, 0);
    clock.set(T0 + PENDING_TTL);
    for _ in 0..3 {
        let (s, v) = env.get("alice", &format!("/v1/requests/{id}")).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["request"]["state"], "expired");
    }
    assert_eq!(lifecycle_records(&env, &id, "expired").await, 1);
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listing_shows_requests_past_their_ttl_as_expired_and_logs_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::frozen(T0);
    let env = Env::start(dir.path(), clock.clone(), |_| {}).await;
    let old_a = payments_request(&env, "alice", "INC-5").await;
    let old_b = payments_request(&env, "alice", "INC-6").await;
    let bobs = payments_request(&env, "bob", "INC-7").await;
    clock.set(T0 + 3_600);
    let fresh = payments_request(&env, "alice", "INC-8").await;
    clock.set(T0 + PENDING_TTL);

    // A `state=pending` filter sees the new state: the due ones are not pending any more.
    let (s, v) = env.get("alice", "/v1/requests?state=pending").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(states(&v), vec![(fresh.clone(), "pending".to_string())]);
    assert_eq!(lifecycle_records(&env, &old_a, "expired").await, 1);
    assert_eq!(lifecycle_records(&env, &old_b, "expired").await, 1);
    assert_eq!(
        lifecycle_records(&env, &bobs, "expired").await,
        0,
        "alice's listing does not touch bob's requests"
    );

    // Unfiltered: newest first, the due ones `expired`; listing again logs nothing more.
    for _ in 0..2 {
        let (s, v) = env.get("alice", "/v1/requests").await;
        assert_eq!(s, 200, "{v}");
        let mut got = states(&v);
        got.sort();
        let mut want = vec![
            (old_a.clone(), "expired".to_string()),
            (old_b.clone(), "expired".to_string()),
            (fresh.clone(), "pending".to_string()),
        ];
        want.sort();
        assert_eq!(got, want);
    }
    assert_eq!(lifecycle_records(&env, &old_a, "expired").await, 1);
    assert_eq!(lifecycle_records(&env, &old_b, "expired").await, 1);
    assert_eq!(lifecycle_records(&env, &fresh, "expired").await, 0);

    // Everyone's, with a `state=expired` filter (erin may list): bob's due request is found and expired by it.
    let (s, v) = env.get("erin", "/v1/requests?all=true&state=expired").await;
    assert_eq!(s, 200, "{v}");
    let mut got: Vec<String> = states(&v).into_iter().map(|(id, _)| id).collect();
    got.sort();
    let mut want = vec![old_a.clone(), old_b.clone(), bobs.clone()];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(lifecycle_records(&env, &bobs, "expired").await, 1);

    // Reading one afterwards finds it expired already: still one record each.
    for id in [&old_a, &old_b, &bobs] {
        let (_, v) = env.get("erin", &format!("/v1/requests/{id}")).await;
        assert_eq!(v["request"]["state"], "expired");
        assert_eq!(lifecycle_records(&env, id, "expired").await, 1);
    }
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approvals_required_is_the_same_number_on_every_answer() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |_| {}).await;
    let show = |id: String| {
        let env = &env;
        async move {
            let (s, v) = env.get("erin", &format!("/v1/requests/{id}")).await;
            assert_eq!(s, 200, "{v}");
            v
        }
    };

    // Break glass: self-activated, no approver, on creation and later.
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
    assert_eq!(v["approvals_required"], 0, "{v}");
    let id = v["request"]["id"].as_str().unwrap().to_string();
    assert_eq!(show(id).await["approvals_required"], 0);

    // One approver: 1 on creation, read and approval.
    let v = env
        .request(
            "alice",
            "payments-writer",
            r#"Service::"payments""#,
            "30m",
            "x",
        )
        .await;
    assert_eq!(v["approvals_required"], 1, "{v}");
    let id = v["request"]["id"].as_str().unwrap().to_string();
    assert_eq!(show(id.clone()).await["approvals_required"], 1);
    let (s, v) = env.approve("bob", &id).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["approvals_required"], 1, "{v}");
    assert_eq!(show(id).await["approvals_required"], 1);

    // Two approvers: the total, not what is still missing, on every answer.
    let v = env
        .request(
            "alice",
            "db-admin",
            r#"Service::"billing""#,
            "30m",
            "migration",
        )
        .await;
    assert_eq!(v["approvals_required"], 2, "{v}");
    let id = v["request"]["id"].as_str().unwrap().to_string();
    let (_, v) = env.approve("carol", &id).await;
    assert_eq!(
        (
            v["request"]["state"].as_str(),
            v["approvals_required"].as_u64()
        ),
        (Some("pending"), Some(2)),
        "{v}"
    );
    let (_, v) = env.approve("erin", &id).await;
    assert_eq!(
        (
            v["request"]["state"].as_str(),
            v["approvals_required"].as_u64()
        ),
        (Some("approved"), Some(2)),
        "{v}"
    );
    assert_eq!(show(id).await["approvals_required"], 2);

    // Auto-approved by policy: the role's number, on creation and later.
    let (s, v) = env
        .post(
            "alice",
            "/v1/requests",
            json!({"role": "refund-once", "scope": "Service::\"payments\"", "duration": "15m", "reason": "customer", "ticket": "T-1"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["request"]["state"], "approved", "{v}");
    assert_eq!(v["approvals_required"], 1, "{v}");
    let id = v["request"]["id"].as_str().unwrap().to_string();
    assert_eq!(show(id).await["approvals_required"], 1);
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_shows_its_ended_grant_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::frozen(T0);
    let env = Env::start(dir.path(), clock.clone(), |_| {}).await;
    let approve = |id: String| {
        let env = &env;
        async move {
            let (s, v) = env.approve("bob", &id).await;
            assert_eq!(s, 200, "{v}");
            v["grant"]["id"].as_str().unwrap().to_string()
        }
    };
    let revoked_req = payments_request(&env, "alice", "INC-9").await;
    let revoked_grant = approve(revoked_req.clone()).await;
    let expired_req = payments_request(&env, "alice", "INC-10").await;
    let expired_grant = approve(expired_req.clone()).await;
    let live_req = payments_request(&env, "alice", "INC-11").await;
    let (s, v) = env
        .post(
            "bob",
            &format!("/v1/grants/{revoked_grant}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    env.running.shutdown().await;
    drop(env.upstream);

    // 40 minutes on: the second grant (30m) has expired too; a third request is approved after the restart.
    clock.set(T0 + 2_400);
    let env = Env::start(dir.path(), clock, |_| {}).await;
    let (s, v) = env.approve("bob", &live_req).await;
    assert_eq!(s, 200, "{v}");
    let live_grant = v["grant"]["id"].as_str().unwrap().to_string();
    for (req, grant, status) in [
        (&revoked_req, &revoked_grant, "revoked"),
        (&expired_req, &expired_grant, "active"),
        (&live_req, &live_grant, "active"),
    ] {
        let (s, v) = env.get("alice", &format!("/v1/requests/{req}")).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["request"]["state"], "approved");
        assert_eq!(v["grant"]["id"], grant.as_str(), "{v}");
        assert_eq!(v["grant"]["request_id"], req.as_str(), "{v}");
        assert_eq!(v["grant"]["status"], status, "{v}");
    }
    // The expired one is `active` in the store but past its end, as the data plane sees it: no access.
    let (_, v) = env
        .get("alice", &format!("/v1/requests/{expired_req}"))
        .await;
    assert_eq!(v["grant"]["expires_at"], T0 + 1_800);
    // Listing grants shows only the live one (ended grants are not "grants that may still matter").
    let (_, v) = env.get("alice", "/v1/grants").await;
    let ids: Vec<&str> = v["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![live_grant.as_str()]);
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_calls_refused_by_the_policies_or_unauthenticated_are_decision_records() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |_| {}).await;
    let id = payments_request(&env, "alice", "INC-7").await;
    let request = format!("AccessRequest::\"{id}\"");

    // Separation of duties: alice may not approve her own request.
    let (s, v) = env.approve("alice", &id).await;
    assert_eq!(s, 403, "{v}");
    // mallory may neither read it, nor approve an id that does not exist, nor read the proxy's status.
    let (s, v) = env.get("mallory", &format!("/v1/requests/{id}")).await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = env.approve("mallory", "no-such-request").await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = env.get("mallory", "/v1/status").await;
    assert_eq!(s, 403, "{v}");
    // No token at all: refused before any decision, and recorded like the data plane's 401s.
    let r = env.http.get(env.admin("/v1/grants")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Allowed calls that change nothing are not decisions of their own: bob reads the request.
    let (s, v) = env.get("bob", &format!("/v1/requests/{id}")).await;
    assert_eq!(s, 200, "{v}");

    env.running.proxy.log.flush().await;
    let log = env.dir.join("decisions.db");
    let recs = jitgate_engine::log::tail(&log, 10_000).unwrap();
    let refused: Vec<_> = recs
        .iter()
        .filter(|r| r.kind == RecordKind::Decision)
        .map(|r| {
            assert_eq!(r.decision, Some(Outcome::Deny), "{r:?}");
            assert_eq!(r.context["api"], "admin", "{r:?}");
            if r.status == Some(401) {
                assert!(!r.errors.is_empty(), "a 401 names its reason: {r:?}");
            }
            assert!(r.client_addr.is_some() && !r.revision.is_empty(), "{r:?}");
            (
                r.status,
                r.principal.as_str(),
                r.action.as_str(),
                r.resource.as_str(),
                r.policies.clone(),
                r.method.as_deref(),
                r.path.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        vec![
            (
                Some(403),
                "User::\"alice\"",
                "approve",
                request.as_str(),
                vec!["no-self-approval".to_string()],
                Some("POST"),
                format!("/v1/requests/{id}/approve"),
            ),
            (
                Some(403),
                "User::\"mallory\"",
                "listRequests",
                request.as_str(),
                vec![],
                Some("GET"),
                format!("/v1/requests/{id}"),
            ),
            (
                Some(403),
                "User::\"mallory\"",
                "approve",
                "AccessRequest::\"no-such-request\"",
                vec![],
                Some("POST"),
                "/v1/requests/no-such-request/approve".to_string(),
            ),
            (
                Some(403),
                "User::\"mallory\"",
                "operate",
                "Service::\"jitgate\"",
                vec![],
                Some("GET"),
                "/v1/status".to_string(),
            ),
            (
                Some(401),
                "",
                "",
                "",
                vec![],
                Some("GET"),
                "/v1/grants".to_string(),
            ),
        ],
        "each refusal, in order, and nothing else"
    );
    // They are in the same chain as the lifecycle events, and it verifies.
    let report = jitgate_engine::log::verify_store(&log).unwrap();
    assert!(report.ok, "{report:?}");
    env.running.shutdown().await;
}

/// Sends an admin POST on a raw connection and, once the proxy has taken the call in (it runs as one of
/// [`jitgate_proxy::state::Proxy::tasks`]), hangs up (FIN). Returns when the proxy has closed its side without an
/// answer: nobody is left to read one, and hyper has dropped the call's future.
async fn post_and_hang_up(env: &Env, who: &str, path: &str, body: Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tasks = &env.running.proxy.tasks;
    let before = tasks.len();
    let mut s = tokio::net::TcpStream::connect(env.running.admin_addr.unwrap())
        .await
        .unwrap();
    let body = body.to_string();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: jitgate\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        env.token(who),
        body.len()
    );
    s.write_all(format!("{head}{body}").as_bytes())
        .await
        .unwrap();
    eventually("the proxy takes the call in", async || {
        (tasks.len() > before).then_some(())
    })
    .await;
    s.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_to_end(&mut answer),
    )
    .await
    .expect("the proxy closes a connection whose caller hung up")
    .ok();
    assert!(
        answer.is_empty(),
        "the call was still waiting for the store when its caller left: {}",
        String::from_utf8_lossy(&answer)
    );
}

/// `who` approves request `id` and hangs up once the proxy has taken the call in ([`post_and_hang_up`]).
async fn approve_and_hang_up(env: &Env, who: &str, id: &str) {
    let path = format!("/v1/requests/{id}/approve");
    post_and_hang_up(env, who, &path, json!({"comment": "ok"})).await;
}

/// Polls (10 s at most) until `f` returns something.
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_caller_that_hangs_up_mid_call_cannot_leave_a_change_without_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |_| {}).await;
    let id = payments_request(&env, "alice", "INC-7").await;
    // Another writer holds the store, so each call below waits in its store write when its caller hangs up.
    let release = lifecycle_common::lock_store(dir.path());
    approve_and_hang_up(&env, "bob", &id).await;
    post_and_hang_up(
        &env,
        "sam",
        "/v1/requests",
        json!({"role": "break-glass", "scope": "Service::\"billing\"", "duration": "10m", "reason": "outage"}),
    )
    .await;
    release();

    // Both changes are committed once the store is free, and each has its record in the chain.
    let store = env.running.proxy.store.clone();
    eventually("the approval is committed", async || {
        let r = store.get_access_request(&id).unwrap().unwrap();
        (r.state.as_str() == "approved").then_some(())
    })
    .await;
    eventually("the approval's record", async || {
        (lifecycle_records(&env, &id, "approved").await == 1).then_some(())
    })
    .await;
    let glass = eventually("the break-glass request is committed", async || {
        let (_, v) = env.get("sam", "/v1/requests").await;
        v["requests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["role"] == "break-glass")
            .map(|r| r["id"].as_str().unwrap().to_string())
    })
    .await;
    eventually("the break-glass record", async || {
        (lifecycle_records(&env, &glass, "break_glass").await == 1).then_some(())
    })
    .await;
    let report = jitgate_engine::log::verify_store(&dir.path().join("decisions.db")).unwrap();
    assert!(report.ok, "{report:?}");
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_waits_for_an_admin_call_in_progress_and_logs_its_change() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |_| {}).await;
    let id = payments_request(&env, "alice", "INC-8").await;
    let release = lifecycle_common::lock_store(dir.path());
    approve_and_hang_up(&env, "bob", &id).await;
    // Shutdown starts while the approval waits for the store, and reaches the wait for calls in progress.
    let Env {
        running,
        dir: state,
        ..
    } = env;
    let proxy = running.proxy.clone();
    let stopping = tokio::spawn(running.shutdown());
    eventually("shutdown waits for calls in progress", async || {
        proxy.tasks.is_closed().then_some(())
    })
    .await;
    assert!(
        !stopping.is_finished(),
        "shutdown did not wait for the call"
    );
    release();
    stopping.await.unwrap();
    // Once shutdown has returned, the approval and its record are both there.
    let r = proxy.store.get_access_request(&id).unwrap().unwrap();
    assert_eq!(r.state.as_str(), "approved");
    let recs = jitgate_engine::log::tail(&state.join("decisions.db"), 10_000).unwrap();
    assert!(
        recs.iter()
            .any(|r| r.action == "lifecycle.approved"
                && r.request_id.as_deref() == Some(id.as_str())),
        "the approval's record was flushed before shutdown returned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_approvers_at_once_are_both_counted_and_each_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |_| {}).await;
    // db-admin needs two distinct approvers; carol and erin approve at the same moment, sixteen times.
    for trial in 0..16 {
        let id = env.db_admin_request(&format!("cleanup {trial}")).await;
        let (carol, erin) = tokio::join!(env.approve("carol", &id), env.approve("erin", &id));
        assert_eq!(
            (carol.0, erin.0),
            (200, 200),
            "trial {trial}: {carol:?} {erin:?}"
        );
        let (_, shown) = env.get("alice", &format!("/v1/requests/{id}")).await;
        assert_eq!(shown["request"]["state"], "approved", "{shown}");
        let mut approvers: Vec<&str> = shown["grant"]["approvers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        approvers.sort();
        assert_eq!(approvers, ["User::\"carol\"", "User::\"erin\""], "{shown}");
        assert_eq!(lifecycle_records(&env, &id, "approval_recorded").await, 1);
        assert_eq!(lifecycle_records(&env, &id, "approved").await, 1);
    }
    env.running.shutdown().await;
}
