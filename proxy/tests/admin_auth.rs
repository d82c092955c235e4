//! The admin API's own calls are authorized by the bundle's policies: status, reload and shadow need `operate`,
//! the decision log needs `readDecisions`; probes and metrics stay open. Real proxy, real tokens, real SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod lifecycle_common;

use jitgate_engine::Clock;
use lifecycle_common::{Env, T0};
use serde_json::Value;

/// `method path` on the admin API with an optional bearer token: (status, JSON body or Null).
async fn call(env: &Env, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = env.http.request(m, env.admin(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// GET `path` on the data plane as `who`: the status.
async fn data_get(env: &Env, who: &str, path: &str) -> u16 {
    env.http
        .get(env.data(path))
        .bearer_auth(env.token(who))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_calls_need_a_token_and_a_policy_that_allows_them() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |_| {}).await;
    let protected = [
        ("POST", "/v1/reload"),
        ("GET", "/v1/status"),
        ("GET", "/v1/shadow"),
        ("DELETE", "/v1/shadow"),
        ("GET", "/v1/decisions"),
    ];

    // No token, or a token that is not one: 401 with the lifecycle API's error body.
    for (m, path) in protected {
        let (s, body) = call(&env, m, path, None).await;
        assert_eq!(s, 401, "{m} {path} without a token: {body}");
        assert_eq!(body["error"], "unauthenticated", "{m} {path}: {body}");
        let (s, _) = call(&env, m, path, Some("not-a-token")).await;
        assert_eq!(s, 401, "{m} {path} with a bad token");
    }
    // POST /v1/shadow too, before its body is even looked at.
    let r = env
        .http
        .post(env.admin("/v1/shadow"))
        .json(&serde_json::json!({ "path": dir.path() }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(
        env.running.proxy.shadow.status().candidate.is_none(),
        "nothing was loaded"
    );

    // An engineer is authenticated but no policy lets them operate or read decisions: 403.
    let alice = env.token("alice");
    for (m, path) in protected {
        let (s, body) = call(&env, m, path, Some(&alice)).await;
        assert_eq!(s, 403, "{m} {path} as an engineer: {body}");
        assert_eq!(body["error"], "forbidden", "{m} {path}: {body}");
    }
    // Compliance reads decisions but does not operate.
    let erin = env.token("erin");
    assert_eq!(call(&env, "POST", "/v1/reload", Some(&erin)).await.0, 403);

    // An SRE operates.
    let sam = env.token("sam");
    let (s, body) = call(&env, "POST", "/v1/reload", Some(&sam)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["outcome"], "unchanged", "{body}");
    let (s, body) = call(&env, "GET", "/v1/status", Some(&sam)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["bundle"]["name"], "quickstart-cedar", "{body}");
    let (s, _) = call(&env, "GET", "/v1/shadow", Some(&sam)).await;
    assert_eq!(s, 200);

    // Probes and scrapers stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = env.http.get(env.admin(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path} needs no token");
    }
    env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compliance_reads_the_decision_log_with_filters_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |_| {}).await;
    // Two allows and two denies on the data plane (mallory is in no group).
    assert_eq!(data_get(&env, "alice", "/payments/p-1").await, 200);
    assert_eq!(data_get(&env, "alice", "/payments/p-2").await, 200);
    assert_eq!(data_get(&env, "mallory", "/payments/p-1").await, 403);
    assert_eq!(data_get(&env, "mallory", "/payments/p-3").await, 403);
    let erin = env.token("erin");

    let (s, body) = call(&env, "GET", "/v1/decisions?kind=decision", Some(&erin)).await;
    assert_eq!(s, 200, "{body}");
    let recs = body["records"].as_array().unwrap();
    assert_eq!(recs.len(), 4, "{body}");
    assert!(body["next"].is_null());
    assert!(
        recs.iter()
            .any(|r| r["principal"] == "User::\"alice\"" && r["decision"] == "allow")
    );

    let (s, body) = call(&env, "GET", "/v1/decisions?decision=deny", Some(&erin)).await;
    assert_eq!(s, 200, "{body}");
    let denies = body["records"].as_array().unwrap();
    assert_eq!(denies.len(), 2, "{body}");
    for r in denies {
        assert_eq!(r["decision"], "deny", "{r}");
        assert_eq!(r["principal"], "User::\"mallory\"", "{r}");
    }

    // Pages: limit 1 gives a cursor; `after` continues from it without repeating.
    let (s, p1) = call(
        &env,
        "GET",
        "/v1/decisions?decision=deny&limit=1",
        Some(&erin),
    )
    .await;
    assert_eq!(s, 200, "{p1}");
    assert_eq!(p1["records"].as_array().unwrap().len(), 1);
    let next = p1["next"].as_i64().unwrap();
    let (_, p2) = call(
        &env,
        "GET",
        &format!("/v1/decisions?decision=deny&limit=1&after={next}"),
        Some(&erin),
    )
    .await;
    assert_eq!(p2["records"].as_array().unwrap().len(), 1, "{p2}");
    assert_ne!(p1["records"][0]["seq"], p2["records"][0]["seq"]);
    assert_eq!(p2["records"][0], denies[1]);

    // A bad value is a 400 naming the parameter.
    for (query, field) in [
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("decision=maybe", "decision"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("after=x", "after"),
        ("kind=other", "kind"),
        ("colour=red", "colour"),
    ] {
        let (s, body) = call(&env, "GET", &format!("/v1/decisions?{query}"), Some(&erin)).await;
        assert_eq!(s, 400, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
        assert!(
            body["message"].as_str().unwrap().starts_with(field),
            "{query}: {body}"
        );
    }
    env.running.shutdown().await;
}
