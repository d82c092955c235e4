//! Hold for approval through the real proxy: a held DELETE approved while the connection waits is forwarded once;
//! past the wait bound the caller gets 202 and resends with `x-jitgate-approval`, accepted once and only for the
//! identical request; denied holds are 403; held bodies over the limit are 413.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod lifecycle_common;

use std::time::{Duration, Instant};

use jitgate_engine::Clock;
use lifecycle_common::{Env, T0};
use serde_json::{Value, json};

/// Gives alice an approved db-admin grant (so deleteDatabase is allowed, then held by `hold-database-delete`).
async fn db_admin(env: &Env) {
    let id = env.db_admin_request("cleanup").await;
    assert_eq!(env.approve("carol", &id).await.0, 200);
    assert_eq!(env.approve("erin", &id).await.0, 200);
}

/// Waits until a pending hold request exists (the held connection created it) and returns its id.
async fn pending_hold(env: &Env) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = env
            .get("carol", "/v1/requests?role=hold&state=pending&all=true")
            .await;
        if let Some(id) = v["requests"][0]["id"].as_str() {
            return id.to_string();
        }
        assert!(Instant::now() < deadline, "no hold request appeared: {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A proxy whose holds wait up to 20 s, and alice with an approved db-admin grant.
async fn waiting_env(dir: &std::path::Path) -> Env {
    let env = Env::start(dir, Clock::frozen(T0), |raw| raw.hold.wait = "20s".into()).await;
    db_admin(&env).await;
    env
}

/// alice resends her held `DELETE /databases/orders` with the approval id of its access request.
async fn resend_with_approval(env: &Env, id: &str) -> reqwest::Response {
    env.http
        .delete(env.data("/databases/orders"))
        .bearer_auth(env.token("alice"))
        .header("x-jitgate-approval", id)
        .send()
        .await
        .unwrap()
}

/// Alice's `DELETE /databases/orders` (held by policy), sent in the background; it answers once the hold ends.
fn held_delete(env: &Env) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let http = env.http.clone();
    let url = env.data("/databases/orders");
    let tok = env.token("alice");
    tokio::spawn(async move { http.delete(url).bearer_auth(tok).send().await })
}

/// Polls the decision log until a record matches `pred` (10 s at most) and returns it.
async fn wait_for_record(
    env: &Env,
    what: &str,
    pred: impl Fn(&jitgate_engine::log::DecisionRecord) -> bool,
) -> jitgate_engine::log::DecisionRecord {
    use jitgate_engine::log::{Filter, query};
    let log = env.dir.join("decisions.db");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = query(&log, &Filter::default(), None, 1000).unwrap();
        if let Some(r) = page.records.into_iter().find(&pred) {
            return r;
        }
        assert!(Instant::now() < deadline, "no record of {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for the decision record of alice's `DELETE /databases/orders`.
async fn delete_record(env: &Env) -> jitgate_engine::log::DecisionRecord {
    wait_for_record(env, "the held request", |r| {
        r.path.as_deref() == Some("/databases/orders")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_request_approved_while_waiting_is_forwarded_once() {
    let dir = tempfile::tempdir().unwrap();
    let env = waiting_env(dir.path()).await;
    let before = env.upstream.hits();
    let held = held_delete(&env);
    let id = pending_hold(&env).await;
    assert_eq!(env.upstream.hits(), before, "nothing forwarded while held");
    // Approvers see labelled fields, not a sentence composed from what the caller sent.
    let (_, v) = env
        .get("carol", "/v1/requests?role=hold&state=pending&all=true")
        .await;
    let reason = v["requests"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("held for approval: method=DELETE path=/databases/orders ")
            && reason.contains(" action=deleteDatabase ")
            && reason.contains(" policies="),
        "{reason}"
    );
    // The requester cannot approve her own held request; a dba can.
    let (s, _) = env.approve("alice", &id).await;
    assert_eq!(s, 403);
    let (s, v) = env.approve("carol", &id).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["grant"]["max_uses"], 1);
    assert!(v["grant"]["request_digest"].is_string());
    assert_eq!(held.await.unwrap().unwrap().status().as_u16(), 200);
    assert_eq!(env.upstream.hits() - before, 1);
    // Replaying the approval is refused.
    let r = resend_with_approval(&env, &id).await;
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(env.upstream.hits() - before, 1);
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_request_denied_while_waiting_is_403() {
    let dir = tempfile::tempdir().unwrap();
    let env = waiting_env(dir.path()).await;
    let before = env.upstream.hits();
    let held = held_delete(&env);
    let id = pending_hold(&env).await;
    let (s, _) = env
        .post(
            "carol",
            &format!("/v1/requests/{id}/deny"),
            json!({"comment": "not today"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(held.await.unwrap().unwrap().status().as_u16(), 403);
    assert_eq!(env.upstream.hits(), before);
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_the_wait_a_resend_with_the_approval_passes_once_and_only_if_identical() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |raw| {
        raw.hold.wait = "50ms".into()
    })
    .await;
    db_admin(&env).await;
    let before = env.upstream.hits();
    let alice = env.token("alice");
    let send = |approval: Option<String>, query: &'static str| {
        let mut rb = env
            .http
            .delete(env.data(&format!("/databases/orders{query}")))
            .bearer_auth(alice.clone());
        if let Some(a) = approval {
            rb = rb.header("x-jitgate-approval", a);
        }
        async move {
            let r = rb.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, v) = send(None, "").await;
    assert_eq!(s, 202, "{v}");
    let id = v["approval_id"].as_str().unwrap().to_string();
    // Resending before approval: not approved yet.
    assert_eq!(send(Some(id.clone()), "").await.0, 403);
    let (s, _) = env.approve("carol", &id).await;
    assert_eq!(s, 200);
    // A different request (another query) with the approval: refused, and the approval is not spent.
    assert_eq!(send(Some(id.clone()), "?force=1").await.0, 403);
    // The same method and path sent to another host (the route matches any host): refused too, so an approval
    // given for one host cannot open the same path on another.
    let other_host = env
        .http
        .delete(env.data("/databases/orders"))
        .bearer_auth(alice.clone())
        .header("host", "billing.staging.example")
        .header("x-jitgate-approval", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(other_host.status(), 403);
    let body: Value = other_host.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|r| r.contains("does not match this exact request")),
        "{body}"
    );
    // 20 concurrent identical resends: exactly one passes.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        tasks.push(tokio::spawn(send(Some(id.clone()), "")));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().0 == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(env.upstream.hits() - before, 1);
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_body_over_the_limit_is_413() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |raw| {
        raw.hold.wait = "50ms".into();
        raw.hold.max_body_bytes = 16;
    })
    .await;
    db_admin(&env).await;
    let r = env
        .http
        .delete(env.data("/databases/orders"))
        .bearer_auth(env.token("alice"))
        .body(vec![b'x'; 64])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_caller_that_hangs_up_ends_the_hold_and_nothing_is_forwarded_for_it() {
    use jitgate_engine::log::Outcome;
    let dir = tempfile::tempdir().unwrap();
    let env = waiting_env(dir.path()).await;
    let before = env.upstream.hits();
    let held = held_delete(&env);
    let id = pending_hold(&env).await;
    // The caller gives up (its connection closes) long before the 20 s wait.
    held.abort();
    let _ = held.await;
    // The hold ends at once: a hold decision, recorded with the caller-gone status and the approval id.
    let record = delete_record(&env).await;
    assert_eq!(record.decision, Some(Outcome::Hold));
    assert_eq!(record.status, Some(499));
    assert!(
        record.errors.iter().any(|e| e.contains("caller went away")),
        "{:?}",
        record.errors
    );
    assert_eq!(record.context["approval_id"], id.as_str());
    // Approving it later forwards nothing: nobody is waiting. The approval stays usable by an identical resend.
    assert_eq!(env.approve("carol", &id).await.0, 200);
    assert_eq!(
        env.upstream.hits(),
        before,
        "nothing forwarded for the caller who left"
    );
    let r = resend_with_approval(&env, &id).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(env.upstream.hits() - before, 1);
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_that_hangs_up_while_its_hold_is_being_created_still_leaves_the_whole_trail() {
    use jitgate_engine::log::RecordKind;
    let dir = tempfile::tempdir().unwrap();
    let env = waiting_env(dir.path()).await;
    let before = env.upstream.hits();
    let holds_before = env.running.proxy.metrics.decisions.get("hold");
    // Another writer holds the store, so the hold's access request cannot be created until it lets go.
    let release = lifecycle_common::lock_store(dir.path());
    let held = held_delete(&env);
    // The hold decision is counted in the same poll that starts creating the request; the caller's future can only
    // be dropped after that poll, while the creation waits for the store.
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.running.proxy.metrics.decisions.get("hold") == holds_before {
        assert!(Instant::now() < deadline, "the DELETE was never held");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    held.abort();
    let _ = held.await;
    // The caller-gone record is written while the creation still waits, and already names the approval id.
    let record = delete_record(&env).await;
    assert_eq!(record.status, Some(499));
    let id = record
        .context
        .get("approval_id")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no approval id in {:?}", record.context))
        .to_string();
    release();
    // The creation then completes under that id, and its `held` event is in the chain.
    wait_for_record(&env, "the `held` event", |r| {
        r.kind == RecordKind::Lifecycle
            && r.action == "lifecycle.held"
            && r.request_id.as_deref() == Some(id.as_str())
    })
    .await;
    let (_, v) = env
        .get("carol", "/v1/requests?role=hold&state=pending&all=true")
        .await;
    assert_eq!(v["requests"][0]["id"], id.as_str(), "{v}");
    // Its approval forwards nothing (nobody waits) and is then usable once by the identical resend.
    assert_eq!(env.approve("carol", &id).await.0, 200);
    assert_eq!(env.upstream.hits(), before);
    assert_eq!(resend_with_approval(&env, &id).await.status().as_u16(), 200);
    assert_eq!(env.upstream.hits() - before, 1);
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_request_holding_the_last_log_slot_is_still_approved_and_every_event_logged() {
    use jitgate_engine::log::RecordKind;
    // One data-plane log slot, taken by the held request while it waits. The hold's creation and its approval are
    // recorded all the same (they have room of their own), under either `on_full`.
    for on_full in ["fail_closed", "wait"] {
        let dir = tempfile::tempdir().unwrap();
        let env = Env::start(dir.path(), Clock::frozen(T0), |raw| {
            raw.hold.wait = "20s".into();
            raw.log.queue_capacity = 1;
            raw.log.on_full = on_full.into();
        })
        .await;
        db_admin(&env).await;
        let before = env.upstream.hits();
        let held = held_delete(&env);
        let id = pending_hold(&env).await;
        assert_eq!(
            env.running.proxy.log.queued(),
            1,
            "{on_full}: the hold has the slot"
        );
        let (s, v) = tokio::time::timeout(Duration::from_secs(10), env.approve("carol", &id))
            .await
            .unwrap_or_else(|_| {
                panic!("{on_full}: the approval waited for the held request's slot")
            });
        assert_eq!(s, 200, "{on_full}: {v}");
        let r = tokio::time::timeout(Duration::from_secs(10), held)
            .await
            .unwrap_or_else(|_| panic!("{on_full}: the held request was not released"))
            .unwrap()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{on_full}");
        assert_eq!(env.upstream.hits() - before, 1, "{on_full}");
        for event in ["lifecycle.held", "lifecycle.approved"] {
            wait_for_record(&env, event, |r| {
                r.kind == RecordKind::Lifecycle
                    && r.action == event
                    && r.request_id.as_deref() == Some(id.as_str())
            })
            .await;
        }
        delete_record(&env).await;
        env.running.shutdown().await;
        let report = jitgate_engine::log::verify_store(&dir.path().join("decisions.db")).unwrap();
        assert!(report.ok, "{on_full}: {report:?}");
    }
}

/// A token bound to a grant waits on a held request like any caller, and the approval releases it: the grant for
/// that one exact request is not among the holder's other grants that a bound token leaves out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_bound_token_redeems_its_approved_hold() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |raw| {
        raw.hold.wait = "20s".into()
    })
    .await;
    let id = env.db_admin_request("cleanup").await;
    assert_eq!(env.approve("carol", &id).await.0, 200);
    let (s, v) = env.approve("erin", &id).await;
    assert_eq!(s, 200, "{v}");
    let gid = v["grant"]["id"].as_str().unwrap().to_string();
    let (s, t) = env
        .post(
            "alice",
            &format!("/v1/grants/{gid}/token"),
            json!({"ttl": "10m"}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let bound = t["token"].as_str().unwrap().to_string();
    let before = env.upstream.hits();
    let http = env.http.clone();
    let url = env.data("/databases/orders");
    let held = tokio::spawn(async move { http.delete(url).bearer_auth(bound).send().await });
    let hold = pending_hold(&env).await;
    let (s, v) = env.approve("carol", &hold).await;
    assert_eq!(s, 200, "{v}");
    let r = held.await.unwrap().unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    assert_eq!(
        status, 200,
        "the approved hold was not released for a bound token: {body}"
    );
    assert_eq!(env.upstream.hits() - before, 1);
    env.running.shutdown().await;
}

/// A held request's query secrets are masked in the reason approvers see and in the records; the digest still binds
/// the real query (the approval is for exactly that request).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_requests_query_secrets_are_redacted_in_its_reason_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let env = waiting_env(dir.path()).await;
    let http = env.http.clone();
    let url = env.data("/databases/orders?api_key=s3cret&x=1");
    let tok = env.token("alice");
    let held = tokio::spawn(async move { http.delete(url).bearer_auth(tok).send().await });
    let id = pending_hold(&env).await;
    let (_, v) = env
        .get("carol", "/v1/requests?role=hold&state=pending&all=true")
        .await;
    let reason = v["requests"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(" query=api_key=[redacted]&x=1 ") && !reason.contains("s3cret"),
        "{reason}"
    );
    let (s, v) = env.approve("carol", &id).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(held.await.unwrap().unwrap().status().as_u16(), 200);
    let rec = delete_record(&env).await;
    assert_eq!(rec.context["query"], "api_key=[redacted]&x=1");
    use jitgate_engine::log::{Filter, query};
    let page = query(
        &env.dir.join("decisions.db"),
        &Filter::default(),
        None,
        1000,
    )
    .unwrap();
    let all = serde_json::to_string(&page.records).unwrap();
    assert!(!all.contains("s3cret"), "{all}");
    env.running.shutdown().await;
}

/// The headers of the held request the binding tests approve: a tenant the policies see (`x-tenant`, a context
/// header), a body type, and a header bound by `[hold] bind_headers`.
const BOUND: [(&str, &str); 3] = [
    ("x-tenant", "acme"),
    ("content-type", "application/json"),
    ("x-change-ticket", "CHG-1"),
];

/// A proxy that answers holds with 202 after 50 ms, gives the policies `x-tenant` and binds `x-change-ticket`, and
/// alice with an approved db-admin grant.
async fn binding_env(dir: &std::path::Path) -> Env {
    let env = Env::start(dir, Clock::frozen(T0), |raw| {
        raw.hold.wait = "50ms".into();
        raw.hold.bind_headers = vec!["X-Change-Ticket".into()];
        raw.server.context_headers = vec!["x-tenant".into()];
    })
    .await;
    db_admin(&env).await;
    env
}

/// alice's `DELETE /databases/orders` with body `{}`, the headers `BOUND` with `change` applied (a value of `None`
/// leaves the header out), and `x-jitgate-approval: approval` when given.
async fn bound_delete(
    env: &Env,
    change: &[(&str, Option<&str>)],
    approval: Option<&str>,
) -> (u16, Value) {
    let mut rb = env
        .http
        .delete(env.data("/databases/orders"))
        .bearer_auth(env.token("alice"))
        .body("{}");
    for (name, value) in BOUND {
        let value = match change.iter().find(|(n, _)| *n == name) {
            Some((_, v)) => *v,
            None => Some(value),
        };
        if let Some(v) = value {
            rb = rb.header(name, v);
        }
    }
    for (name, value) in change {
        if let (false, Some(v)) = (BOUND.iter().any(|(n, _)| n == name), value) {
            rb = rb.header(*name, *v);
        }
    }
    if let Some(a) = approval {
        rb = rb.header("x-jitgate-approval", a);
    }
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json::<Value>().await.unwrap_or(Value::Null))
}

/// Holds alice's bound DELETE past the wait, approves it and returns the approval id.
async fn approved_bound_delete(env: &Env) -> String {
    let (s, v) = bound_delete(env, &[], None).await;
    assert_eq!(s, 202, "{v}");
    let id = v["approval_id"].as_str().unwrap().to_string();
    let (s, v) = env.approve("carol", &id).await;
    assert_eq!(s, 200, "{v}");
    id
}

/// After the refused resends, the identical request with its approval still passes, exactly once.
async fn the_identical_resend_passes_once(env: &Env, id: &str, before: u64) {
    assert_eq!(
        env.upstream.hits(),
        before,
        "a refused resend was forwarded"
    );
    let (s, v) = bound_delete(env, &[], Some(id)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(bound_delete(env, &[], Some(id)).await.0, 403);
    assert_eq!(env.upstream.hits() - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_does_not_release_a_resend_with_another_context_header() {
    let dir = tempfile::tempdir().unwrap();
    let env = binding_env(dir.path()).await;
    let before = env.upstream.hits();
    let id = approved_bound_delete(&env).await;
    for change in [
        ("x-tenant", Some("globex")),
        ("x-tenant", None),
        ("x-tenant", Some("")),
    ] {
        let (s, v) = bound_delete(&env, &[change], Some(&id)).await;
        assert_eq!(s, 403, "{change:?} was let through: {v}");
    }
    // Another spelling beside the approved value, which a server reading `_` as `-` might take instead.
    let (s, v) = bound_delete(&env, &[("x_tenant", Some("globex"))], Some(&id)).await;
    assert!(s == 400 || s == 403, "x_tenant was let through: {s} {v}");
    the_identical_resend_passes_once(&env, &id, before).await;
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_does_not_release_a_resend_with_another_content_type_or_bound_header() {
    let dir = tempfile::tempdir().unwrap();
    let env = binding_env(dir.path()).await;
    let before = env.upstream.hits();
    let id = approved_bound_delete(&env).await;
    for change in [
        ("content-type", Some("text/plain")),
        ("content-type", None),
        ("x-change-ticket", Some("CHG-2")),
        ("x-change-ticket", None),
    ] {
        let (s, v) = bound_delete(&env, &[change], Some(&id)).await;
        assert_eq!(s, 403, "{change:?} was let through: {v}");
    }
    // A header that is not bound may differ.
    let (s, v) = bound_delete(&env, &[("x-unbound", Some("1"))], Some(&id)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(env.upstream.hits() - before, 1);
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resend_whose_approval_header_names_another_request_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let env = binding_env(dir.path()).await;
    let before = env.upstream.hits();
    let id = approved_bound_delete(&env).await;
    // alice's own approved db-admin request is an approval id too, but not of this request.
    let (_, v) = env
        .get("alice", "/v1/requests?role=db-admin&state=approved")
        .await;
    let other = v["requests"][0]["id"].as_str().unwrap().to_string();
    assert_ne!(other, id);
    for wrong in [
        "yes",
        "",
        other.as_str(),
        &id.to_uppercase(),
        &format!("{id},{id}"),
    ] {
        if wrong == id {
            continue;
        }
        let (s, v) = bound_delete(&env, &[], Some(wrong)).await;
        assert_eq!(s, 403, "`x-jitgate-approval: {wrong}` was let through: {v}");
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("x-jitgate-approval")),
            "{v}"
        );
    }
    the_identical_resend_passes_once(&env, &id, before).await;
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retrying_the_same_held_request_waits_on_one_access_request() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |raw| {
        raw.hold.wait = "50ms".into()
    })
    .await;
    db_admin(&env).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let r = env
            .http
            .delete(env.data("/databases/orders"))
            .bearer_auth(env.token("alice"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let v: Value = r.json().await.unwrap();
        ids.push(v["approval_id"].as_str().unwrap().to_string());
    }
    let (_, v) = env.get("carol", "/v1/requests?role=hold&all=true").await;
    assert_eq!(v["requests"].as_array().unwrap().len(), 1, "{v}");
    assert!(ids.iter().all(|i| i == &ids[0]), "{ids:?}");
    // Another request (another query) is another hold.
    let r = env
        .http
        .delete(env.data("/databases/orders?force=1"))
        .bearer_auth(env.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let (_, v) = env.get("carol", "/v1/requests?role=hold&all=true").await;
    assert_eq!(v["requests"].as_array().unwrap().len(), 2, "{v}");
    // Approved, the retried request passes once with the one approval id.
    assert_eq!(env.approve("carol", &ids[0]).await.0, 200);
    assert_eq!(
        resend_with_approval(&env, &ids[0]).await.status().as_u16(),
        200
    );
    env.running.shutdown().await;
}

/// Retries of one held request sent at once make one access request between them: the store finds or inserts the
/// pending hold in one transaction (a look-up, then an insert, let two of them through).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_the_same_held_request_make_one_access_request() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |raw| {
        raw.hold.wait = "50ms".into()
    })
    .await;
    db_admin(&env).await;
    let sent: Vec<_> = (0..8)
        .map(|_| {
            let req = env
                .http
                .delete(env.data("/databases/orders"))
                .bearer_auth(env.token("alice"));
            tokio::spawn(async move {
                let r = req.send().await.unwrap();
                assert_eq!(r.status().as_u16(), 202);
                let v: Value = r.json().await.unwrap();
                v["approval_id"].as_str().unwrap().to_string()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for s in sent {
        ids.push(s.await.unwrap());
    }
    assert!(ids.iter().all(|i| i == &ids[0]), "{ids:?}");
    let (_, v) = env.get("carol", "/v1/requests?role=hold&all=true").await;
    assert_eq!(v["requests"].as_array().unwrap().len(), 1, "{v}");
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_connections_beyond_the_per_principal_cap_are_answered_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |raw| {
        raw.hold.wait = "20s".into();
        raw.hold.max_waiting_per_principal = 0;
    })
    .await;
    db_admin(&env).await;
    let started = Instant::now();
    let r = env
        .http
        .delete(env.data("/databases/orders"))
        .bearer_auth(env.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert!(started.elapsed() < Duration::from_secs(10), "it waited");
    let v: Value = r.json().await.unwrap();
    assert!(v["approval_id"].as_str().is_some(), "{v}");
    env.running.shutdown().await;
}
