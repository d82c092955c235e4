//! Measurements, reported and not asserted (run: `cargo test --release -p jitgate-proxy --test reload_measure --
//! --ignored --nocapture`): file change to live for a 1,000-policy Cedar bundle with its tests, and request latency
//! p99 steady vs during a reload storm.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod reload_common;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reload_common::*;

/// 1,000 policies (each permits one group one action on one payment) and a suite of 50 cases over them.
fn generated(dir: &std::path::Path, salt: &str) {
    let mut cedar = String::new();
    for i in 0..1000 {
        let _ = writeln!(
            cedar,
            "@id(\"gen-{i}\")\npermit (principal in Group::\"team-{i}\", action == Action::\"readPayment\", resource == Payment::\"p-{i}\"){salt};\n"
        );
    }
    std::fs::write(dir.join("policies/generated.cedar"), cedar).unwrap();
    let mut suite = String::from(
        "name: generated\nnow: 2026-11-23T10:00:00Z\ncontext: { source_ip: 10.1.2.3 }\nprincipals:\n",
    );
    for i in (0..1000).step_by(20) {
        let _ = writeln!(suite, "  User::\"u{i}\": {{ groups: [team-{i}] }}");
    }
    suite.push_str("cases:\n");
    for i in (0..1000).step_by(20) {
        let _ = writeln!(
            suite,
            "  - name: team {i} reads p-{i}\n    principal: User::\"u{i}\"\n    http: {{ method: GET, path: /payments/p-{i} }}\n    expect: {{ decision: allow, policies: [gen-{i}] }}"
        );
    }
    std::fs::write(dir.join("tests/generated.yaml"), suite).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "measurement; run with --ignored --nocapture, preferably --release"]
async fn measure_change_to_live_for_1000_policies() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    layout(&bundle, EXTRA_A);
    generated(&bundle, "");
    let env = Env::start(&bundle, &tmp.path().join("state")).await;
    let policies = env.proxy().authorizer.bundle().backend().policy_ids().len();
    let mut times = Vec::new();
    let mut gate = Vec::new();
    for round in 0..6 {
        let before = env.proxy().reloader.status();
        let salt = if round % 2 == 0 {
            " when { context.time.hour >= 0 }"
        } else {
            ""
        };
        let staged = tmp.path().join("staged");
        std::fs::create_dir_all(staged.join("policies")).unwrap();
        std::fs::create_dir_all(staged.join("tests")).unwrap();
        generated(&staged, salt);
        let t0 = Instant::now();
        std::fs::rename(
            staged.join("policies/generated.cedar"),
            bundle.join("policies/generated.cedar"),
        )
        .unwrap();
        loop {
            let s = env.proxy().reloader.status();
            if s.active_revision != before.active_revision {
                times.push(t0.elapsed());
                gate.push(s.last_attempt.unwrap().duration_ms);
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "{s:#?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    times.sort();
    eprintln!(
        "change -> live, {policies} policies + 55 test cases: min {:?}, median {:?}, max {:?} (load + gate + swap alone: {gate:?} ms; debounce {:?})",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        jitgate_proxy::reload::DEBOUNCE
    );
    env.finish().await;
}

async fn p99_with(
    env: &Env,
    seconds: u64,
    storm: Option<(&std::path::Path, &str, &str)>,
) -> (Duration, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (http, addr, token, stop) = (
            env.http.clone(),
            env.qs.running.addr,
            env.token("alice"),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                get(&http, addr, &token, "/payments/p-1").await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut flip = false;
    while Instant::now() < end {
        match storm {
            // A reload every ~200 ms (just past the debounce), alternating between two valid variants.
            Some((extra, a, b)) => {
                rename_over(extra, if flip { a } else { b });
                flip = !flip;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await.unwrap());
    }
    all.sort();
    (all[all.len() * 99 / 100], all.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "measurement; run with --ignored --nocapture, preferably --release"]
async fn measure_p99_steady_vs_reload_storm() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    layout(&bundle, EXTRA_A);
    let env = Env::start(&bundle, &tmp.path().join("state")).await;
    let extra = bundle.join("policies/extra.cedar");
    // Both variants allow /payments/p-1: the storm changes the bundle, not the answers.
    let (steady, n1) = p99_with(&env, 4, None).await;
    let ok_before = env.proxy().metrics.reloads.get("live");
    let (storm, n2) = p99_with(&env, 4, Some((&extra, EXTRA_A, EXTRA_B))).await;
    let reloads = env.proxy().metrics.reloads.get("live") - ok_before;
    eprintln!(
        "p99 latency, 4 clients: steady {steady:?} ({n1} requests), reload storm {storm:?} ({n2} requests, {reloads} reloads went live)"
    );
    env.finish().await;
}
