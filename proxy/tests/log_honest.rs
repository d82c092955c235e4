//! Honest decision records (#18): a resend whose approval is refused (spent, or another request's) is logged as a
//! `deny` with the reason and the approval id it presented, not as a `hold`, so `--decision deny` finds it and OCSF
//! calls it Blocked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod lifecycle_common;

use jitgate_engine::Clock;
use jitgate_engine::log::{DecisionRecord, Filter, Outcome, query};
use lifecycle_common::{Env, T0};

fn records(env: &Env) -> Vec<DecisionRecord> {
    query(
        &env.dir.join("decisions.db"),
        &Filter::default(),
        None,
        1000,
    )
    .unwrap()
    .records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_approval_reuse_is_a_deny_naming_the_approval() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |raw| {
        raw.hold.wait = "50ms".into()
    })
    .await;
    let grant = env.db_admin_request("cleanup").await;
    assert_eq!(env.approve("carol", &grant).await.0, 200);
    assert_eq!(env.approve("erin", &grant).await.0, 200);
    let alice = env.token("alice");
    let send = |approval: Option<&str>| {
        let mut rb = env
            .http
            .delete(env.data("/databases/orders"))
            .bearer_auth(alice.clone());
        if let Some(a) = approval {
            rb = rb.header("x-jitgate-approval", a);
        }
        async move { rb.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(send(None).await, 202);
    let held = records(&env)
        .into_iter()
        .rfind(|r| r.path.as_deref() == Some("/databases/orders"))
        .unwrap();
    assert_eq!(held.decision, Some(Outcome::Hold));
    let id = held.context["approval_id"].as_str().unwrap().to_string();
    assert_eq!(env.approve("carol", &id).await.0, 200);
    assert_eq!(send(Some(&id)).await, 200, "the approval is spent once");
    assert_eq!(send(Some(&id)).await, 403, "and refused after");
    env.running.proxy.log.flush().await;
    let reuse = records(&env)
        .into_iter()
        .rfind(|r| r.path.as_deref() == Some("/databases/orders"))
        .unwrap();
    assert_eq!(reuse.status, Some(403));
    assert_eq!(reuse.decision, Some(Outcome::Deny), "{reuse:?}");
    assert_eq!(reuse.context["approval_id"], id.as_str());
    assert!(
        reuse.errors.iter().any(|e| e.contains("already used")),
        "{:?}",
        reuse.errors
    );
    env.running.shutdown().await;
}

/// #19: a 403 that no permit determined says so in its record, with the permits that came nearest
/// (`context.explain`), inside the hashed context: the chain still verifies. An allow carries no explanation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deny_no_permit_matched_names_the_nearest_permits_in_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |_| {}).await;
    let alice = env.token("alice");
    let status = env
        .http
        .post(env.data("/payments"))
        .bearer_auth(alice.clone())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 403);
    let status = env
        .http
        .get(env.data("/payments"))
        .bearer_auth(alice)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 200);
    env.running.proxy.log.flush().await;
    let recs = records(&env);
    let denied = recs
        .iter()
        .rfind(|r| r.method.as_deref() == Some("POST") && r.path.as_deref() == Some("/payments"))
        .unwrap();
    assert_eq!(denied.decision, Some(Outcome::Deny));
    let explain = &denied.context["explain"];
    assert_eq!(explain["summary"], "no permit matched", "{denied:?}");
    let nearest: Vec<&str> = explain["nearest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["policy"].as_str().unwrap())
        .collect();
    assert_eq!(nearest, ["break-glass", "payments-writer"], "{explain}");
    assert!(
        explain["nearest"][1]["why"]
            .as_str()
            .unwrap()
            .starts_with("scope not matched: principal in Role::\"payments-writer\""),
        "{explain}"
    );
    let allowed = recs
        .iter()
        .rfind(|r| r.method.as_deref() == Some("GET") && r.path.as_deref() == Some("/payments"))
        .unwrap();
    assert!(allowed.context.get("explain").is_none(), "{allowed:?}");
    let report = jitgate_engine::log::verify_log(
        &env.dir.join("decisions.db"),
        &jitgate_engine::log::VerifyOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert!(report.ok, "{report:?}");
    env.running.shutdown().await;
}
