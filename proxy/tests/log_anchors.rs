//! Signed anchors of a real proxy's decision log (#18): `[log] anchor_key` is generated 0600 (its public key beside
//! it), the writer signs the head at start, every `anchor_records` records and at shutdown, into the anchors file and
//! the JSON Lines sink; the log the proxy wrote verifies against them with the public key alone, and a copy of it
//! whose newest records were cut off (the head rewound to match) does not. A 401 without credentials says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::os::unix::fs::PermissionsExt;

use jitgate_engine::log::{self, AnchorReason, VerifyOptions, verify_log, verify_store};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_signs_its_log_and_a_rewound_copy_is_caught() {
    let mut h = Harness::start_with(|raw, dir| {
        raw.log.anchor_key = Some(dir.join("keys/anchor.key"));
        raw.log.anchor_records = Some(5);
        raw.log.jsonl = Some(dir.join("sink.jsonl").display().to_string());
    })
    .await;
    let key = h.dir.path().join("keys/anchor.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the key is the owner's alone");
    let public = log::load_public_key(&log::public_key_path(&key)).unwrap();

    let token = h.token("alice", &["engineering"]);
    for i in 0..12 {
        let resp = client()
            .get(h.url(&format!("/payments/p{i}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
    // No credentials: a deny whose errors say so.
    let resp = client().get(h.url("/payments/p0")).send().await.unwrap();
    let unauthenticated = reply(resp).await;
    assert_eq!(unauthenticated.status.as_u16(), 401);
    let r = h.record(&unauthenticated.decision_id());
    assert!(
        r.errors.iter().any(|e| e.contains("unauthenticated")),
        "{:?}",
        r.errors
    );
    h.running.take().unwrap().shutdown().await;

    let opts = VerifyOptions {
        public_key: Some(public),
        anchors: None,
    };
    let report = verify_log(&h.log_path, &opts, &mut |_| {}).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 13);
    assert_eq!(report.anchored_seq, Some(13));
    let anchors = log::anchors_path(&h.log_path);
    let latest = log::latest_anchor(&anchors).unwrap().unwrap();
    assert_eq!((latest.seq, latest.reason), (13, AnchorReason::Shutdown));
    // start, after 5 and 10 records, shutdown
    assert!(report.anchors >= 4, "{report:?}");
    // The sink holds the same anchors, so a copy elsewhere verifies too.
    let sink = h.dir.path().join("sink.jsonl");
    let via_sink = VerifyOptions {
        public_key: Some(public),
        anchors: Some(sink),
    };
    assert!(verify_log(&h.log_path, &via_sink, &mut |_| {}).unwrap().ok);

    // A copy with the three newest records cut off and the head rewound: the chain alone says intact.
    let copy = h.dir.path().join("copy.db");
    std::fs::copy(&h.log_path, &copy).unwrap();
    std::fs::copy(&anchors, log::anchors_path(&copy)).unwrap();
    {
        let conn = rusqlite::Connection::open(&copy).unwrap();
        conn.execute_batch(
            "DELETE FROM decisions WHERE seq > 10; DELETE FROM decision_grants WHERE seq > 10;",
        )
        .unwrap();
        let h10: String = conn
            .query_row("SELECT hash FROM decisions WHERE seq = 10", [], |r| {
                r.get(0)
            })
            .unwrap();
        conn.execute("UPDATE log_head SET seq = 10, hash = ?1", [h10])
            .unwrap();
    }
    assert!(verify_store(&copy).unwrap().ok);
    let report = verify_log(&copy, &opts, &mut |_| {}).unwrap();
    assert!(!report.ok);
    assert_eq!(report.failure.unwrap().seq, Some(11));
}
