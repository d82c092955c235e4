//! `[log] acknowledge = "journal"` end to end: each served decision is in the acknowledgement journal by the time
//! its response arrives, reaches the SQLite chain without anyone waiting for it, and a stop commits everything.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use http::StatusCode;
use jitgate_engine::log::{LogOptions, LogWriter, Outcome};
use support::*;

/// The journal files' text (every generation).
fn journal_text(h: &Harness) -> String {
    let name = h
        .log_path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut text = String::new();
    for e in std::fs::read_dir(h.log_path.parent().unwrap()).unwrap() {
        let p = e.unwrap().path();
        let f = p.file_name().unwrap().to_str().unwrap().to_string();
        if f.strip_prefix(&format!("{name}.journal."))
            .is_some_and(|g| g.parse::<u64>().is_ok())
        {
            text.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
    text
}

#[tokio::test]
async fn journaled_decisions_are_acknowledged_before_the_response_and_committed_in_order() {
    let mut h = Harness::start_with(|raw, _| raw.log.acknowledge = "journal".into()).await;
    let c = client();
    let mut ids = Vec::new();
    for (path, groups, status) in [
        ("/payments/p1", &["engineering"][..], StatusCode::OK),
        ("/payments/p1", &[][..], StatusCode::FORBIDDEN),
        ("/payments/p2", &["engineering"][..], StatusCode::OK),
    ] {
        let r = reply(
            c.get(h.url(path))
                .bearer_auth(h.token("alice", groups))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, status);
        let id = if status == StatusCode::OK {
            r.upstream_decision_id()
        } else {
            r.decision_id()
        };
        // Written before the response left: the journal holds it now, whatever SQLite has.
        assert!(
            journal_text(&h).contains(&id),
            "decision {id} is not in the journal"
        );
        ids.push(id);
    }
    let no_token = reply(c.get(h.url("/payments/p1")).send().await.unwrap()).await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);

    // A stop commits what is pending; the chain then holds every decision once, in the order served.
    let running = h.running.take().unwrap();
    within("shutdown", running.shutdown()).await;
    h.assert_log(4);
    let records = h.records();
    let served: Vec<String> = records
        .iter()
        .filter_map(|r| r.request_id.clone())
        .take(3)
        .collect();
    assert_eq!(served, ids);
    assert_eq!(records[1].decision, Some(Outcome::Deny));
    assert_eq!(records[3].status, Some(401));
    // Nothing is left for the next start to commit.
    let w = LogWriter::start(&h.log_path, LogOptions::default()).unwrap();
    assert_eq!(w.stats().recovered, 0);
    w.shutdown().unwrap();
    h.assert_log(4);
}
