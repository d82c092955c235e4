//! `jitgate replay` against a real decision log and grant store written by a real proxy (the quickstart wiring on
//! 127.0.0.1): the live bundle replays with no change, a candidate that forbids one read reports exactly that.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use jitgate_proxy::quickstart::{self, QuickstartOptions};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn replay_reports_the_decisions_a_candidate_would_change() {
    let tmp = tempfile::tempdir().unwrap();
    let quickstart_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/quickstart-cedar");
    let live = tmp.path().join("live");
    copy_dir(&quickstart_dir, &live);
    let candidate = tmp.path().join("candidate");
    copy_dir(&quickstart_dir, &candidate);
    std::fs::write(
        candidate.join("policies/extra.cedar"),
        "@id(\"no-read-p-666\")\nforbid (principal, action == Action::\"readPayment\", resource == Payment::\"p-666\");\n",
    )
    .unwrap();
    let state = tmp.path().join("state");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let qs = quickstart::run(QuickstartOptions {
            dir: state.clone(),
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            bundle: Some(live.clone()),
        })
        .await
        .unwrap();
        let token = |who: &str| qs.tokens.iter().find(|(n, _)| n == who).unwrap().1.clone();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        for (who, path, want) in [
            ("alice", "/payments/p-666", 200),
            ("alice", "/payments/p-1", 200),
            ("dave", "/databases/orders", 403),
            ("alice", "/payments/p-666", 200),
        ] {
            let r = http
                .get(format!("http://{}{path}", qs.running.addr))
                .bearer_auth(token(who))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), want, "{who} {path}");
        }
        // Unauthenticated: refused before a decision, skipped by replay.
        http.get(format!("http://{}/payments", qs.running.addr))
            .send()
            .await
            .unwrap();
        // A refused admin API call (dave may not `operate`): a decision record, skipped by replay.
        let r = http
            .get(format!(
                "http://{}/v1/status",
                qs.running.admin_addr.unwrap()
            ))
            .bearer_auth(token("dave"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        qs.running.shutdown().await;
    });
    let replay = |bundle: &Path| {
        Command::new(env!("CARGO_BIN_EXE_jitgate"))
            .args(["replay", "--json", "--since", "1h", "--bundle"])
            .arg(bundle)
            .arg("--log")
            .arg(state.join("decisions.db"))
            .arg("--store")
            .arg(state.join("jitgate.db"))
            .output()
            .unwrap()
    };
    // Control: the live bundle itself changes nothing.
    let out = replay(&live);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{summary}");
    assert_eq!(summary["replayed"], 4);
    assert_eq!(summary["changed"], 0);
    assert_eq!(summary["skipped"]["refused before a decision"], 1);
    assert_eq!(summary["skipped"]["admin API call"], 1);

    let out = replay(&candidate);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{summary}");
    assert_eq!(summary["replayed"], 4);
    assert_eq!(summary["changed"], 2);
    assert_eq!(summary["transitions"]["allow -> deny"], 2);
    let c = &summary["changes"][0];
    assert_eq!(c["principal"], "User::\"alice\"");
    assert_eq!(c["request"], "GET /payments/p-666");
    assert_eq!(c["was_policies"], serde_json::json!(["engineers-read"]));
    assert_eq!(c["now_policies"], serde_json::json!(["no-read-p-666"]));
}
