#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Every line of an OCSF export validates against `schemas/ocsf/api_activity-1.4.schema.json` (OCSF 1.4.0 API
//! Activity), for each kind of record the log holds, and the schema rejects broken events, so the check can fail.

use std::path::{Path, PathBuf};

use jitgate_engine::log::{
    self, DecisionRecord, Filter, Format, LogOptions, LogWriter, OCSF_VERSION, Outcome, RecordKind,
    export_to_file, ocsf_event,
};
use serde_json::{Value, json};
use time::OffsetDateTime;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

fn schema() -> Value {
    serde_json::from_slice(
        &std::fs::read(repo("schemas/ocsf/api_activity-1.4.schema.json")).unwrap(),
    )
    .unwrap()
}

fn validator() -> jsonschema::Validator {
    let schema = schema();
    jsonschema::meta::validate(&schema).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

fn errors(v: &jsonschema::Validator, ev: &Value) -> Vec<String> {
    v.iter_errors(ev)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect()
}

/// A request decision as the proxy records it.
fn request(outcome: Outcome, method: &str, status: u16) -> DecisionRecord {
    let mut r = DecisionRecord::decision(
        r#"User::"alice""#,
        r#"Action::"deleteDatabase""#,
        r#"Database::"orders""#,
        outcome,
    );
    r.request_id = Some(format!("req-{method}-{status}"));
    r.client_addr = Some("192.0.2.7:40000".into());
    r.method = Some(method.into());
    r.path = Some("/databases/orders".into());
    r.status = Some(status);
    r.policies = vec!["p1".into()];
    r.revision = "rev-1".into();
    r.engine = "cedar".into();
    r.context = json!({"source_ip": "192.0.2.7"})
        .as_object()
        .cloned()
        .unwrap();
    r
}

/// One record of each shape the log holds, in append order, with the `(disposition_id, action_id)` each maps to.
fn records() -> Vec<(DecisionRecord, (i64, i64))> {
    let mut v = vec![
        (request(Outcome::Allow, "GET", 200), (1, 1)),
        (request(Outcome::Deny, "DELETE", 403), (2, 2)),
        (request(Outcome::Hold, "POST", 202), (14, 0)),
    ];
    let mut error = request(Outcome::Error, "PUT", 403);
    error.errors = vec!["policy p9: type error".into(), "second".into()];
    error.policies.clear();
    v.push((error, (27, 2)));
    // Unauthenticated: no principal, no action, no resource; IPv6 client.
    let mut unauth = DecisionRecord::decision("", "", "", Outcome::Deny);
    unauth.request_id = Some("req-unauth".into());
    unauth.client_addr = Some("[2001:db8::1]:5555".into());
    unauth.method = Some("GET".into());
    unauth.path = Some("/databases".into());
    unauth.status = Some(401);
    unauth.errors = vec!["unauthenticated: no bearer token".into()];
    v.push((unauth, (2, 2)));
    // PATCH is not an OCSF 1.4.0 http_method; break-glass raises the severity.
    let mut patch = request(Outcome::Allow, "PATCH", 200);
    patch.break_glass = true;
    patch.grants_used = vec!["g1".into()];
    v.push((patch, (1, 1)));
    // Unmatched route (empty action and resource), odd client address, no status.
    let mut unmatched = DecisionRecord::decision(r#"User::"bob""#, "", "", Outcome::Deny);
    unmatched.request_id = Some(String::new());
    unmatched.client_addr = Some("unix:/run/jitgate.sock".into());
    unmatched.method = Some("OPTIONS".into());
    unmatched.path = Some(String::new());
    v.push((unmatched, (2, 2)));
    // Lifecycle events, as proxy/src/access/record.rs writes them: no client address, method or status.
    for (verb, outcome, want) in [
        ("approved", Outcome::Allow, (1, 1)),
        ("held", Outcome::Hold, (14, 0)),
        ("revoked", Outcome::Deny, (2, 2)),
    ] {
        let mut l = DecisionRecord::new(RecordKind::Lifecycle);
        l.principal = r#"User::"carol""#.into();
        l.action = format!("lifecycle.{verb}");
        l.resource = r#"AccessRequest::"ar-1""#.into();
        l.request_id = Some("ar-1".into());
        l.decision = Some(outcome);
        l.grants_used = vec!["g1".into()];
        l.context = json!({"access_request": "ar-1", "role": "dba"})
            .as_object()
            .cloned()
            .unwrap();
        v.push((l, want));
    }
    let mut expiry = DecisionRecord::new(RecordKind::Lifecycle);
    expiry.action = "lifecycle.expired".into();
    expiry.decision = Some(Outcome::Deny);
    v.push((expiry, (2, 2)));
    v
}

fn build(path: &Path) -> Vec<(i64, i64)> {
    let w = LogWriter::start(path, LogOptions::default()).unwrap();
    // Two old records, so that a prune leaves a checkpoint record at the end.
    let old = OffsetDateTime::now_utc() - time::Duration::days(30);
    for _ in 0..2 {
        let mut r = DecisionRecord::at(RecordKind::Decision, old);
        r.principal = r#"User::"old""#.into();
        r.action = r#"Action::"read""#.into();
        r.resource = r#"Database::"old""#.into();
        r.decision = Some(Outcome::Allow);
        w.append(r).unwrap().wait().unwrap();
    }
    let mut want = Vec::new();
    for (r, w_) in records() {
        w.append(r).unwrap().wait().unwrap();
        want.push(w_);
    }
    w.shutdown().unwrap();
    let pr = log::prune(path, OffsetDateTime::now_utc() - time::Duration::days(1)).unwrap();
    assert_eq!(pr.deleted, 2);
    want.push((0, 0)); // the checkpoint: no outcome
    want
}

#[test]
fn every_ocsf_export_line_validates_against_the_api_activity_schema() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    let want = build(&db);
    let out = dir.path().join("export.ocsf.jsonl");
    let m = export_to_file(&db, &Filter::default(), Format::Ocsf, &out).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), want.len());
    assert_eq!(m.records, want.len() as u64);

    let v = validator();
    let mut kinds = std::collections::BTreeSet::new();
    for (i, (ev, (disposition, action))) in events.iter().zip(&want).enumerate() {
        let errs = errors(&v, ev);
        assert!(
            errs.is_empty(),
            "line {}: {}\n{ev:#}",
            i + 1,
            errs.join("\n")
        );
        kinds.insert(ev["unmapped"]["kind"].as_str().unwrap().to_string());
        assert_eq!(ev["metadata"]["version"], OCSF_VERSION);
        assert_eq!(ev["disposition_id"], *disposition, "line {}", i + 1);
        assert_eq!(ev["action_id"], *action, "line {}", i + 1);
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["checkpoint", "decision", "lifecycle"]
    );

    // Spot checks of the mapping for the unusual records.
    let unauth = &events[4];
    assert_eq!(unauth["actor"]["user"]["name"], "anonymous");
    assert_eq!(unauth["src_endpoint"]["ip"], "2001:db8::1");
    assert_eq!(unauth["api"]["operation"], "GET");
    assert_eq!(unauth["http_response"]["code"], 401);
    assert!(unauth.get("resources").is_none());
    let patch = &events[5];
    assert_eq!(patch["activity_id"], 3, "PATCH is an update");
    assert!(patch["http_request"].get("http_method").is_none());
    assert_eq!(patch["unmapped"]["method"], "PATCH");
    assert_eq!(
        (patch["severity_id"].clone(), patch["is_alert"].clone()),
        (json!(3), json!(true))
    );
    let unmatched = &events[6];
    assert_eq!(unmatched["src_endpoint"]["name"], "unix:/run/jitgate.sock");
    assert!(unmatched["api"].get("request").is_none());
    assert!(unmatched.get("http_response").is_none());
    let lifecycle = &events[7];
    assert_eq!(lifecycle["src_endpoint"]["name"], "jitgate");
    assert_eq!(lifecycle["resources"][0]["type"], "AccessRequest");
    assert_eq!(events[10]["actor"]["app_name"], "jitgate");
    let checkpoint = events.last().unwrap();
    assert_eq!(checkpoint["unmapped"]["kind"], "checkpoint");
    assert_eq!(checkpoint["actor"]["app_name"], "jitgate");
    assert_eq!(checkpoint["api"]["operation"], "prune");
}

#[test]
fn the_schema_rejects_broken_events() {
    let v = validator();
    let good = ocsf_event(&request(Outcome::Allow, "GET", 200));
    assert!(errors(&v, &good).is_empty(), "{:?}", errors(&v, &good));

    let broken = |name: &str, f: &dyn Fn(&mut Value)| {
        let mut ev = good.clone();
        f(&mut ev);
        assert!(!errors(&v, &ev).is_empty(), "{name} was accepted: {ev:#}");
    };
    broken("time as a string", &|ev| {
        ev["time"] = json!("2026-11-23T10:00:00.123Z")
    });
    broken("time with a fraction", &|ev| {
        ev["time"] = json!(1_700_000_000.5)
    });
    broken("missing class_uid", &|ev| {
        ev.as_object_mut().unwrap().remove("class_uid");
    });
    broken("another class_uid", &|ev| ev["class_uid"] = json!(3003));
    broken("unknown disposition_id", &|ev| {
        ev["disposition_id"] = json!(42)
    });
    broken("unknown action_id", &|ev| ev["action_id"] = json!(7));
    broken("type_uid of another activity", &|ev| {
        ev["type_uid"] = json!(600301)
    });
    broken("missing severity_id", &|ev| {
        ev.as_object_mut().unwrap().remove("severity_id");
    });
    broken("missing metadata.version", &|ev| {
        ev["metadata"].as_object_mut().unwrap().remove("version");
    });
    broken("missing src_endpoint", &|ev| {
        ev.as_object_mut().unwrap().remove("src_endpoint");
    });
    broken("misspelled attribute", &|ev| {
        ev["dispositon_id"] = json!(1);
    });
    broken("misspelled nested attribute", &|ev| {
        ev["actor"]["user"]["uuid"] = json!("x");
    });
    broken("empty actor", &|ev| ev["actor"] = json!({}));
    broken("null attribute", &|ev| {
        ev["api"]["request"]["uid"] = Value::Null
    });
    broken("not an IP", &|ev| {
        ev["src_endpoint"]["ip"] = json!("192.0.2.7:40000")
    });
    broken("PATCH is not a 1.4.0 http_method", &|ev| {
        ev["http_request"]["http_method"] = json!("PATCH")
    });
    broken("http_response without code", &|ev| {
        ev["http_response"] = json!({"status": "OK"})
    });
}
