//! Hot reload against a real proxy on 127.0.0.1 (quickstart wiring, real tokens, demo upstream, SQLite log):
//! swaps under load, broken bundles that never go live, rename-over and symlink swaps, shadow evaluation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod reload_common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jitgate_engine::log::Outcome;
use jitgate_proxy::reload::ReloadOutcome;
use reload_common::*;

const P666: &str = "/payments/p-666";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_swaps_under_load_serve_only_live_revisions() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    let rev_a = variant(&bundle, EXTRA_A);
    let rev_b = revision(&{
        let d = tmp.path().join("b");
        variant(&d, EXTRA_B);
        d
    });
    assert_ne!(rev_a, rev_b);
    let env = Env::start(&bundle, &tmp.path().join("state")).await;
    assert_eq!(env.proxy().reloader.status().active_revision, rev_a);

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
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.push(get(&http, addr, &token, P666).await);
            }
            seen
        }));
    }
    let extra = bundle.join("policies/extra.cedar");
    for i in 0..20 {
        let (content, rev) = if i % 2 == 0 {
            (EXTRA_B, &rev_b)
        } else {
            (EXTRA_A, &rev_a)
        };
        rename_over(&extra, content);
        env.wait_live(rev).await;
        // Let some requests run on each revision.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut responses = Vec::new();
    for c in clients {
        responses.extend(c.await.unwrap());
    }
    let reloads_ok = env.proxy().metrics.reloads.get("live");
    assert!(reloads_ok >= 20, "only {reloads_ok} reloads went live");
    let records = env.finish().await;

    let failures: Vec<&String> = responses.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failures.is_empty(), "requests failed: {failures:?}");
    let live: HashSet<&String> = [&rev_a, &rev_b].into_iter().collect();
    let (mut on_a, mut on_b) = (0, 0);
    for (status, id) in responses.iter().map(|r| r.as_ref().unwrap()) {
        let rec = records
            .get(id)
            .unwrap_or_else(|| panic!("no record for {id}"));
        assert!(
            live.contains(&rec.revision),
            "record {id} carries revision {} that was never live",
            rec.revision
        );
        // The served outcome is the one the record's revision decides: nothing failed for another reason.
        if rec.revision == rev_a {
            on_a += 1;
            assert_eq!(
                (*status, rec.decision),
                (200, Some(Outcome::Allow)),
                "{rec:?}"
            );
        } else {
            on_b += 1;
            assert_eq!(
                (*status, rec.decision),
                (403, Some(Outcome::Deny)),
                "{rec:?}"
            );
            assert_eq!(rec.policies, vec!["no-read-p-666".to_string()]);
        }
    }
    eprintln!(
        "{} requests during 20 swaps: {on_a} on A, {on_b} on B",
        responses.len()
    );
    assert!(
        on_a > 0 && on_b > 0,
        "both revisions must have served: A {on_a}, B {on_b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_bundles_never_go_live_and_report_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    let rev_a = variant(&bundle, EXTRA_A);
    let env = Env::start(&bundle, &tmp.path().join("state")).await;
    let extra = bundle.join("policies/extra.cedar");
    let admin = reqwest::Client::builder().no_proxy().build().unwrap();

    // 1. A half-written file: a syntax error on line 3 (swapped in whole, so the watcher sees only this content).
    let before = env.proxy().reloader.status().attempts;
    rename_over(
        &extra,
        "// half written\n@id(\"half\")\nforbid (principal, action == Action::\"readPayment\", resou",
    );
    let s = env.wait_failed(before).await;
    let a = s.last_attempt.unwrap();
    assert_eq!(s.active_revision, rev_a);
    assert!(
        a.errors
            .iter()
            .any(|e| e.file.ends_with("policies/extra.cedar") && e.line == Some(3)),
        "syntax error must name extra.cedar line 3: {:?}",
        a.errors
    );
    assert_eq!(
        env.get("alice", P666).await.0,
        200,
        "the old revision serves"
    );
    // The admin API shows it too, and an explicit reload refuses it with 422.
    let status: serde_json::Value = admin
        .get(env.admin("/v1/status"))
        .bearer_auth(env.sre_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["bundle"]["revision"], rev_a.as_str());
    assert_eq!(status["reload"]["last_attempt"]["outcome"], "failed");
    assert_eq!(status["reload"]["last_attempt"]["errors"][0]["line"], 3);
    let r = admin
        .post(env.admin("/v1/reload"))
        .bearer_auth(env.sre_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);

    // 2. A schema violation: an action the schema does not declare, on line 3.
    let before = env.proxy().reloader.status().attempts;
    rename_over(
        &extra,
        "// schema violation\n@id(\"bad-action\")\npermit (principal, action == Action::\"noSuchAction\", resource);\n",
    );
    let s = env.wait_failed(before).await;
    let a = s.last_attempt.unwrap();
    assert_eq!(s.active_revision, rev_a);
    assert!(
        a.errors
            .iter()
            .any(|e| e.file.ends_with("policies/extra.cedar") && e.line == Some(3)),
        "schema violation must name extra.cedar line 3: {:?}",
        a.errors
    );

    // 3. Valid Cedar that fails the bundle's own smoke suite: the health check is forbidden.
    let before = env.proxy().reloader.status().attempts;
    rename_over(
        &extra,
        "@id(\"no-health\")\nforbid (principal, action == Action::\"health\", resource);\n",
    );
    let s = env.wait_failed(before).await;
    let a = s.last_attempt.unwrap();
    assert_eq!(s.active_revision, rev_a);
    assert!(
        a.errors.iter().any(|e| e.file.ends_with("tests/smoke.yaml")
            && e.line.is_some()
            && e.message.contains("anyone calls the health check")),
        "a failing bundle test must name the suite, its line and the case: {:?}",
        a.errors
    );
    assert_eq!(
        env.get("alice", P666).await.0,
        200,
        "the old revision serves"
    );
    assert_eq!(
        env.proxy().metrics.reloads.get("live"),
        0,
        "nothing went live"
    );

    // 4. Fixed: the new revision goes live.
    std::fs::write(&extra, EXTRA_B).unwrap();
    let rev_b = revision(&bundle);
    env.wait_live(&rev_b).await;
    assert_eq!(env.get("alice", P666).await.0, 403);
    let failed = env.proxy().metrics.reloads.get("failed");
    assert!(failed >= 3, "failed reloads counted: {failed}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_that_fails_its_own_tests_does_not_start_and_leaves_no_state() {
    // The same bundle a reload refuses (step 3 above) must not go live by a restart either.
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    let state = tmp.path().join("state");
    layout(
        &bundle,
        "@id(\"no-health\")\nforbid (principal, action == Action::\"health\", resource);\n",
    );
    let started = jitgate_proxy::quickstart::run(jitgate_proxy::quickstart::QuickstartOptions {
        dir: state.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        bundle: Some(bundle.clone()),
    })
    .await;
    let err = match started {
        Ok(_) => panic!("a bundle that fails its own smoke suite went live at start-up"),
        Err(e) => e,
    };
    let jitgate_proxy::state::StartError::Bundle { diagnostics, .. } = &err else {
        panic!("expected a bundle refusal, got: {err}");
    };
    assert!(
        diagnostics
            .0
            .iter()
            .any(|d| d.file.ends_with("tests/smoke.yaml")
                && d.line.is_some()
                && d.message.contains("anyone calls the health check")),
        "the refusal must name the suite, its line and the case: {err}"
    );
    assert!(
        err.to_string().contains("tests/smoke.yaml"),
        "the message an operator reads names the suite: {err}"
    );
    for file in ["jitgate.db", "decisions.db", "dev-signing-key.pem"] {
        assert!(
            !state.join(file).exists(),
            "a refused start must not create {file}"
        );
    }

    // Fixed, the same directory starts and serves.
    std::fs::write(bundle.join("policies/extra.cedar"), EXTRA_A).unwrap();
    let env = Env::start(&bundle, &state).await;
    assert_eq!(env.get("alice", P666).await.0, 200);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_to_a_service_without_an_upstream_never_goes_live() {
    // The quickstart config has upstreams for payments and billing only.
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    let rev_a = variant(&bundle, EXTRA_A);
    let env = Env::start(&bundle, &tmp.path().join("state")).await;
    let manifest = bundle.join("bundle.toml");
    let original = std::fs::read_to_string(&manifest).unwrap();
    let route_line = original.lines().count() + 2;
    // Appends a `GET /ledger` route to `service` and reloads now.
    let reload_with_route_to = |service: &str| {
        std::fs::write(
            &manifest,
            format!(
                "{original}\n[[routes]]\nmethod = \"GET\"\npath = \"/ledger\"\nservice = \"{service}\"\naction = \"listPayments\"\n"
            ),
        )
        .unwrap();
        let reloader = env.proxy().reloader.clone();
        tokio::task::spawn_blocking(move || reloader.reload_now())
    };
    let attempt = reload_with_route_to("ledger").await.unwrap();
    assert_eq!(attempt.outcome, ReloadOutcome::Failed, "{attempt:?}");
    assert!(
        attempt
            .errors
            .iter()
            .any(|e| e.file.ends_with("bundle.toml")
                && e.line == Some(route_line)
                && e.message.contains("service `ledger` has no upstream")
                && e.message.contains("billing, payments")),
        "the refusal names the route's file and line and the configured upstreams: {:?}",
        attempt.errors
    );
    assert_eq!(env.proxy().reloader.status().active_revision, rev_a);
    assert_eq!(
        env.get("alice", P666).await.0,
        200,
        "the old revision serves"
    );

    // The same route to a configured service goes live.
    let attempt = reload_with_route_to("payments").await.unwrap();
    assert!(
        attempt.outcome == ReloadOutcome::Live || attempt.outcome == ReloadOutcome::Unchanged,
        "{attempt:?}"
    );
    env.wait_live(&revision(&bundle)).await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_over_and_configmap_symlink_swap_are_picked_up() {
    let tmp = tempfile::tempdir().unwrap();
    // The Kubernetes ConfigMap volume layout: visible names are symlinks through `..data` into a timestamped
    // directory; an update writes a new directory and renames a new `..data_tmp` symlink over `..data`.
    let cm = tmp.path().join("configmap");
    std::fs::create_dir_all(&cm).unwrap();
    let rev_a = variant(&cm.join("..2026_11_23_01"), EXTRA_A);
    let rev_b = variant(&cm.join("..2026_11_23_02"), EXTRA_B);
    std::fs::remove_dir_all(cm.join("..2026_11_23_02")).unwrap();
    std::os::unix::fs::symlink("..2026_11_23_01", cm.join("..data")).unwrap();
    for name in ["bundle.toml", "schema.cedarschema", "policies", "tests"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), cm.join(name)).unwrap();
    }
    // Hidden entries are not walked twice, and the revision is that of the same files in a plain directory.
    assert_eq!(revision(&cm), rev_a);
    let env = Env::start(&cm, &tmp.path().join("state")).await;
    assert_eq!(env.get("alice", P666).await.0, 200);

    variant(&cm.join("..2026_11_23_02"), EXTRA_B);
    std::os::unix::fs::symlink("..2026_11_23_02", cm.join("..data_tmp")).unwrap();
    std::fs::rename(cm.join("..data_tmp"), cm.join("..data")).unwrap();
    std::fs::remove_dir_all(cm.join("..2026_11_23_01")).unwrap();
    env.wait_live(&rev_b).await;
    assert_eq!(env.get("alice", P666).await.0, 403);

    // And back, this time by a rename-over write of one policy file inside the new directory.
    rename_over(&cm.join("..2026_11_23_02/policies/extra.cedar"), EXTRA_A);
    env.wait_live(&rev_a).await;
    assert_eq!(env.get("alice", P666).await.0, 200);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_bundle_directory_symlink_is_picked_up() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("bundles");
    let rev_a = variant(&root.join("v1"), EXTRA_A);
    let rev_b = variant(&root.join("v2"), EXTRA_B);
    let current = root.join("current");
    std::os::unix::fs::symlink("v1", &current).unwrap();
    let env = Env::start(&current, &tmp.path().join("state")).await;
    assert_eq!(env.proxy().reloader.status().active_revision, rev_a);

    std::os::unix::fs::symlink("v2", root.join("current.tmp")).unwrap();
    std::fs::rename(root.join("current.tmp"), &current).unwrap();
    env.wait_live(&rev_b).await;
    assert_eq!(env.get("alice", P666).await.0, 403);

    // The watch follows the new target: a change inside v2 is seen, a change inside v1 is not.
    let before = env.proxy().reloader.status().attempts;
    std::fs::write(root.join("v1/policies/extra.cedar"), "this is not cedar").unwrap();
    rename_over(&root.join("v2/policies/extra.cedar"), EXTRA_A);
    let s = env.wait_live(&rev_a).await;
    assert!(s.attempts > before);
    assert_eq!(s.last_attempt.unwrap().outcome, ReloadOutcome::Live);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_counts_disagreements_and_serves_the_active_decision() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    let rev_a = variant(&bundle, EXTRA_A);
    let candidate = tmp.path().join("candidate");
    let rev_b = variant(&candidate, EXTRA_B);
    let env = Env::start(&bundle, &tmp.path().join("state")).await;
    let admin = reqwest::Client::builder().no_proxy().build().unwrap();

    // A candidate that does not load is refused and changes nothing.
    let broken = tmp.path().join("broken");
    layout(&broken, "permit (");
    let r = admin
        .post(env.admin("/v1/shadow"))
        .bearer_auth(env.sre_token())
        .json(&serde_json::json!({ "path": broken }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(!env.proxy().shadow.is_active());

    let r = admin
        .post(env.admin("/v1/shadow"))
        .bearer_auth(env.sre_token())
        .json(&serde_json::json!({ "path": candidate }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let c: serde_json::Value = r.json().await.unwrap();
    assert_eq!(c["revision"], rev_b.as_str());

    let (status, denied_by_candidate) = env.get("alice", P666).await;
    assert_eq!(status, 200, "the active bundle's decision is served");
    assert_eq!(env.get("alice", "/payments/p-1").await.0, 200);
    assert_eq!(env.get("dave", "/databases/orders").await.0, 403);

    let s: serde_json::Value = admin
        .get(env.admin("/v1/shadow"))
        .bearer_auth(env.sre_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["compared"], 3);
    assert_eq!(s["disagreements"], 1);
    let d = &s["recent"][0];
    assert_eq!(d["principal"], "User::\"alice\"");
    assert_eq!(d["action"], "readPayment");
    assert_eq!(d["resource"], "Payment::\"p-666\"");
    assert_eq!(d["active"]["effect"], "allow");
    assert_eq!(d["active"]["revision"], rev_a.as_str());
    assert_eq!(d["shadow"]["effect"], "deny");
    assert_eq!(
        d["shadow"]["policies"],
        serde_json::json!(["no-read-p-666"])
    );
    assert_eq!(d["shadow"]["revision"], rev_b.as_str());
    assert_eq!(env.proxy().metrics.shadow_disagreements.get(), 1);
    let metrics = admin
        .get(env.admin("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("jitgate_shadow_disagreements_total 1"));

    // Cleared: no more comparisons; the last candidate's findings stay readable.
    let r = admin
        .delete(env.admin("/v1/shadow"))
        .bearer_auth(env.sre_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    env.get("alice", P666).await;
    assert_eq!(env.proxy().shadow.status().compared, 3);
    assert_eq!(env.proxy().shadow.status().recent.len(), 1);
    assert!(env.proxy().shadow.status().candidate.is_none());

    let records = env.finish().await;
    let rec = &records[&denied_by_candidate];
    assert_eq!(rec.decision, Some(Outcome::Allow));
    assert_eq!(
        rec.revision, rev_a,
        "the record carries the active revision"
    );
}

/// A file written without pause next to the bundle (a database in the same parent directory, which the watcher
/// watches for swaps of the bundle directory itself) must not hold a reload back: only events about the bundle
/// count against the debounce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_neighbour_in_the_parent_directory_does_not_postpone_reloads() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    variant(&bundle, EXTRA_A);
    let env = Env::start(&bundle, &tmp.path().join("state")).await;
    assert_eq!(env.get("alice", P666).await.0, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, busy) = (stop.clone(), tmp.path().join("busy.db"));
        std::thread::spawn(move || {
            let mut n = 0u64;
            // Bounded: at most 60 s of writes, every 5 ms (well inside the debounce).
            while !stop.load(Ordering::Relaxed) && n < 12_000 {
                if std::fs::write(&busy, n.to_le_bytes()).is_err() {
                    break; // the test ended and removed the directory
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let rev_b = {
        rename_over(&bundle.join("policies/extra.cedar"), EXTRA_B);
        revision(&bundle)
    };
    env.wait_live(&rev_b).await;
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(env.get("alice", P666).await.0, 403);
    env.finish().await;
}

/// Entity data reloads with its bundle: data that moves payment p-666 into a frozen service takes effect live, and
/// data that does not fit the schema is refused (file, line and uid named) while the last good bundle keeps deciding
/// with its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_data_reloads_and_bad_data_keeps_the_last_good_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    let rev_a = variant(&bundle, EXTRA_A);
    let env = Env::start(&bundle, &tmp.path().join("state")).await;
    assert_eq!(env.get("alice", P666).await.0, 200);

    // 1. Entity data puts p-666 inside Service::"frozen"; a policy forbids reading what is in it.
    let data = bundle.join("entities.json");
    std::fs::write(
        &data,
        "[\n  { \"uid\": { \"type\": \"Payment\", \"id\": \"p-666\" }, \"attrs\": {},\n    \"parents\": [{ \"type\": \"Service\", \"id\": \"frozen\" }] }\n]\n",
    )
    .unwrap();
    let manifest = bundle.join("bundle.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let text = text.replacen(
        "tests = [\"tests\"]\n",
        "tests = [\"tests\"]\nentities = [\"entities.json\"]\n",
        1,
    );
    std::fs::write(bundle.join("policies/frozen.cedar"), "@id(\"frozen\")\nforbid (principal, action == Action::\"readPayment\", resource in Service::\"frozen\");\n").unwrap();
    rename_over(&manifest, &text);
    let rev_b = revision(&bundle);
    assert_ne!(rev_a, rev_b);
    env.wait_live(&rev_b).await;
    assert_eq!(
        env.get("alice", P666).await.0,
        403,
        "the data now freezes p-666"
    );
    assert_eq!(env.get("alice", "/payments/p-1").await.0, 200);

    // 2. Data that does not fit the schema (Payment declares no attributes): refused, named, the data in force stays.
    let before = env.proxy().reloader.status().attempts;
    rename_over(
        &data,
        "[\n  { \"uid\": { \"type\": \"Payment\", \"id\": \"p-666\" }, \"attrs\": {},\n    \"parents\": [{ \"type\": \"Service\", \"id\": \"frozen\" }] },\n  { \"uid\": { \"type\": \"Payment\", \"id\": \"p-1\" }, \"attrs\": { \"amount\": 5 }, \"parents\": [] }\n]\n",
    );
    let s = env.wait_failed(before).await;
    assert_eq!(s.active_revision, rev_b);
    let a = s.last_attempt.unwrap();
    assert!(
        a.errors.iter().any(|e| e.file.ends_with("entities.json")
            && e.line == Some(4)
            && e.message.contains("Payment::\"p-1\"")),
        "bad entity data must name entities.json, line 4 and the uid: {:?}",
        a.errors
    );
    assert_eq!(
        env.get("alice", P666).await.0,
        403,
        "the last good data decides"
    );
}
