//! Several replicas on one PostgreSQL store (issue 16), each a real proxy on loopback with its own decision log, all
//! sharing the store, the signing key and one demo upstream. Run when `JITGATE_TEST_POSTGRES` names a server
//! (skipped, and said so, otherwise); each test works in a schema of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod lifecycle_common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jitgate_engine::postgres::scratch::{Scratch, test_url};
use jitgate_engine::{Clock, EntityRef, Grant, GrantStatus};
use jitgate_proxy::config::{Config, RawConfig, RawStore};
use jitgate_proxy::demo::DemoUpstream;
use jitgate_proxy::run::{Running, start};
use lifecycle_common::{groups, raw_config};
use serde_json::{Value, json};

struct Cluster {
    replicas: Vec<Running>,
    upstream: DemoUpstream,
    scratch: Scratch,
    http: reqwest::Client,
    _dirs: Vec<tempfile::TempDir>,
}

/// `n` replicas on a fresh schema; `tweak` adjusts replica `i`'s config.
async fn cluster(test: &str, n: usize, tweak: impl Fn(usize, &mut RawConfig)) -> Option<Cluster> {
    let base = test_url(test)?;
    let scratch = Scratch::new(&base, test).unwrap();
    let upstream = DemoUpstream::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let shared = tempfile::tempdir().unwrap();
    let key: PathBuf = shared.path().join("key.pem");
    let mut dirs = vec![shared];
    let mut replicas = Vec::new();
    for i in 0..n {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = raw_config(dir.path(), upstream.addr);
        raw.store.path = RawStore::default().path;
        raw.store.url = Some(scratch.url());
        raw.store.max_staleness = "2s".into();
        raw.cluster.replica = Some(format!("replica-{i}"));
        raw.local_issuer.as_mut().unwrap().key_file = key.clone();
        tweak(i, &mut raw);
        let config = Config::validate(raw, &dir.path().join("jitgate.toml"), dir.path()).unwrap();
        // One at a time: the first generates the signing key the others load.
        replicas.push(start(config, Clock::system()).await.unwrap());
        dirs.push(dir);
    }
    Some(Cluster {
        replicas,
        upstream,
        scratch,
        http: reqwest::Client::new(),
        _dirs: dirs,
    })
}

fn alice() -> EntityRef {
    EntityRef::new("User", "alice")
}

/// A live db-admin grant of alice's on billing.
fn grant(id: &str, max_uses: Option<u32>) -> Grant {
    let now = jitgate_engine::clock::now_system();
    Grant {
        id: id.into(),
        principal: alice(),
        role: "db-admin".into(),
        scope: EntityRef::new("Service", "billing"),
        starts_at: now - 60,
        expires_at: now + 3600,
        max_uses,
        uses: 0,
        status: GrantStatus::Active,
        approvers: vec![r#"User::"carol""#.into()],
        reason: "replica test".into(),
        break_glass: false,
        request_digest: None,
        request_id: None,
    }
}

impl Cluster {
    fn token(&self, who: &str) -> String {
        let now = jitgate_engine::clock::now_system();
        self.replicas[0]
            .proxy
            .local_issuer
            .as_ref()
            .unwrap()
            .mint_session(&EntityRef::new("User", who), &groups(who), now + 3600, now)
            .unwrap()
    }

    fn admin(&self, i: usize, path: &str) -> String {
        format!("http://{}{path}", self.replicas[i].admin_addr.unwrap())
    }

    fn data(&self, i: usize, path: &str) -> String {
        format!("http://{}{path}", self.replicas[i].addr)
    }

    async fn post(&self, i: usize, who: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.admin(i, path))
            .bearer_auth(self.token(who))
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// alice's `POST /databases/orders/query` through replica `i`: the status.
    async fn query(&self, i: usize, token: &str) -> u16 {
        self.http
            .post(self.data(i, "/databases/orders/query"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Whether replica `i`'s index holds grant `id` with `status`.
    fn indexed(&self, i: usize, id: &str, status: GrantStatus) -> bool {
        self.replicas[i]
            .proxy
            .authorizer
            .grants()
            .for_principal(&alice())
            .is_some_and(|l| l.iter().any(|g| g.id == id && g.status == status))
    }

    /// Waits (5 s at most) until every replica's index holds `id` with `status`; returns how long it took.
    async fn everywhere(&self, id: &str, status: GrantStatus) -> Duration {
        let start = Instant::now();
        while !(0..self.replicas.len()).all(|i| self.indexed(i, id, status)) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "grant {id} did not become {status:?} on every replica"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        start.elapsed()
    }

    async fn put_grant(&self, g: Grant) {
        let a = self.replicas[0].proxy.authorizer.clone();
        tokio::task::spawn_blocking(move || a.put_grant(g).unwrap())
            .await
            .unwrap();
    }

    async fn shutdown(self) {
        for r in self.replicas {
            r.shutdown().await;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_through_one_replica_is_enforced_by_the_others_within_a_second() {
    let Some(c) = cluster("revocation", 3, |_, _| {}).await else {
        return;
    };
    let tok = c.token("alice");
    let mut took = Vec::new();
    for n in 0..100 {
        let id = format!("rev-{n}");
        c.put_grant(grant(&id, None)).await;
        c.everywhere(&id, GrantStatus::Active).await;
        if n == 0 {
            for i in 0..3 {
                assert_eq!(
                    c.query(i, &tok).await,
                    200,
                    "replica {i} allows on the grant"
                );
            }
        }
        // Through replica 0's admin API, as an approver would.
        let (s, v) = c
            .post(0, "carol", &format!("/v1/grants/{id}/revoke"), json!({}))
            .await;
        assert_eq!(s, 200, "{v}");
        let start = Instant::now();
        while !(1..3).all(|i| c.indexed(i, &id, GrantStatus::Revoked)) {
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "revocation {n} not enforced within 1 s"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        took.push(start.elapsed());
    }
    // With every grant revoked, no replica allows.
    for i in 0..3 {
        assert_eq!(
            c.query(i, &tok).await,
            403,
            "replica {i} allows on a revoked grant"
        );
    }
    took.sort();
    println!(
        "revocation visible on the two other replicas (100 revocations): p50 {:?}, p99 {:?}, max {:?}",
        percentile(&took, 0.50),
        percentile(&took, 0.99),
        took[took.len() - 1]
    );
    assert!(percentile(&took, 0.99) < Duration::from_secs(1));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_five_use_grant_under_200_concurrent_requests_over_three_replicas_passes_five_times() {
    let Some(c) = cluster("uselimit", 3, |_, _| {}).await else {
        return;
    };
    c.put_grant(grant("five", Some(5))).await;
    c.everywhere("five", GrantStatus::Active).await;
    let tok = c.token("alice");
    let before = c.upstream.hits();
    let mut tasks = Vec::new();
    for n in 0..200 {
        let (http, url, tok) = (
            c.http.clone(),
            c.data(n % 3, "/databases/orders/query"),
            tok.clone(),
        );
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
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            403 => {}
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(ok, 5, "exactly the grant's uses pass");
    assert_eq!(c.upstream.hits() - before, 5, "exactly five upstream hits");
    let g = c.replicas[1]
        .proxy
        .store
        .get_grant("five")
        .unwrap()
        .unwrap();
    assert_eq!((g.uses, g.status), (5, GrantStatus::Consumed));
    c.shutdown().await;
}

/// Waits until a pending hold request exists (seen through replica `i`) and returns its id.
async fn pending_hold(c: &Cluster, i: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c
            .http
            .get(c.admin(i, "/v1/requests?role=hold&state=pending&all=true"))
            .bearer_auth(c.token("carol"))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        if let Some(id) = v["requests"][0]["id"].as_str() {
            return id.to_string();
        }
        assert!(Instant::now() < deadline, "no hold request appeared: {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_held_on_one_replica_is_released_by_an_approval_through_another() {
    // Replica 0 holds callers up to 20 s; replica 2 answers 202 at once.
    let Some(c) = cluster("hold", 3, |i, raw| {
        raw.hold.wait = if i == 2 { "50ms" } else { "20s" }.into();
    })
    .await
    else {
        return;
    };
    c.put_grant(grant("dba", None)).await;
    c.everywhere("dba", GrantStatus::Active).await;
    let tok = c.token("alice");
    let before = c.upstream.hits();
    let held = {
        let (http, url, tok) = (c.http.clone(), c.data(0, "/databases/orders"), tok.clone());
        tokio::spawn(async move { http.delete(url).bearer_auth(tok).send().await.unwrap() })
    };
    let id = pending_hold(&c, 1).await;
    assert_eq!(c.upstream.hits(), before, "nothing forwarded while held");
    let approved_at = Instant::now();
    let (s, v) = c
        .post(
            1,
            "carol",
            &format!("/v1/requests/{id}/approve"),
            json!({"comment": "ok"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let r = held.await.unwrap();
    let released_in = approved_at.elapsed();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(c.upstream.hits() - before, 1);
    assert!(
        released_in < Duration::from_secs(2),
        "released after {released_in:?}"
    );
    println!(
        "held caller on replica 0 released {released_in:?} after the approval through replica 1"
    );
    // Its approval is spent: a resend through any replica is refused.
    for i in 0..3 {
        let r = c
            .http
            .delete(c.data(i, "/databases/orders"))
            .bearer_auth(&tok)
            .header("x-jitgate-approval", &id)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            403,
            "replica {i} let a spent approval through"
        );
    }

    // Past the wait (replica 2): 202, approved through replica 1, and of 30 identical resends spread over the
    // three replicas exactly one passes.
    let r = c
        .http
        .delete(c.data(2, "/databases/orders"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let v: Value = r.json().await.unwrap();
    let id = v["approval_id"].as_str().unwrap().to_string();
    let (s, v) = c
        .post(
            1,
            "carol",
            &format!("/v1/requests/{id}/approve"),
            json!({"comment": "ok"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let gid = v["grant"]["id"].as_str().unwrap().to_string();
    c.everywhere(&gid, GrantStatus::Active).await;
    let before = c.upstream.hits();
    let mut tasks = Vec::new();
    for n in 0..30 {
        let rb = c
            .http
            .delete(c.data(n % 3, "/databases/orders"))
            .bearer_auth(&tok)
            .header("x-jitgate-approval", &id);
        tasks.push(tokio::spawn(async move {
            rb.send().await.unwrap().status().as_u16()
        }));
    }
    let mut passed = 0;
    for t in tasks {
        if t.await.unwrap() == 200 {
            passed += 1;
        }
    }
    assert_eq!(passed, 1, "exactly one resend passes");
    assert_eq!(c.upstream.hits() - before, 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_whose_connections_are_killed_recover_and_never_allow_a_grant_revoked_meanwhile() {
    let Some(c) = cluster("terminate", 3, |_, _| {}).await else {
        return;
    };
    c.put_grant(grant("kept", None)).await;
    c.put_grant(grant("doomed", None)).await;
    c.everywhere("kept", GrantStatus::Active).await;
    c.everywhere("doomed", GrantStatus::Active).await;
    let reconnects = |i: usize| {
        c.replicas[i]
            .proxy
            .shared
            .as_ref()
            .unwrap()
            .follow
            .reconnects
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before: Vec<u64> = (0..3).map(reconnects).collect();
    // As a server restart would: every connection of the replicas ends; the grant is revoked behind their backs
    // (straight in the store) while they reconnect.
    assert!(c.scratch.terminate_connections().unwrap() >= 3);
    c.scratch
        .admin("UPDATE grants SET status = 'revoked', revoked_by = 'dba', revoked_at = 0 WHERE id = 'doomed'")
        .unwrap();
    let start = Instant::now();
    while !(0..3).all(|i| reconnects(i) > before[i] && !c.indexed(i, "doomed", GrantStatus::Active))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the replicas did not recover"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Now the revoked grant is gone everywhere and the kept one works.
    c.scratch
        .admin("UPDATE grants SET max_uses = NULL WHERE id = 'kept'")
        .unwrap();
    let tok = c.token("alice");
    c.everywhere("kept", GrantStatus::Active).await;
    for i in 0..3 {
        assert!(!c.indexed(i, "doomed", GrantStatus::Active));
        assert_eq!(c.query(i, &tok).await, 200, "replica {i} recovered");
        let ready = c.http.get(c.admin(i, "/readyz")).send().await.unwrap();
        assert_eq!(ready.status().as_u16(), 200);
    }
    c.scratch
        .admin("UPDATE grants SET status = 'revoked' WHERE id = 'kept'")
        .unwrap();
    c.everywhere("kept", GrantStatus::Revoked).await;
    for i in 0..3 {
        assert_eq!(
            c.query(i, &tok).await,
            403,
            "replica {i} allows on a revoked grant"
        );
    }
    c.shutdown().await;
}
