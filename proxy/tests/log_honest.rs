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
