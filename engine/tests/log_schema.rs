#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The JSON Schemas in `schemas/` and their examples agree with the Rust types and the hash chain.

use std::path::PathBuf;

use jitgate_engine::log::{DecisionRecord, ExportManifest, GENESIS_HASH};
use serde_json::Value;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

fn json(rel: &str) -> Value {
    serde_json::from_slice(&std::fs::read(repo(rel)).unwrap()).unwrap()
}

fn required(schema: &Value) -> Vec<String> {
    schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn decision_record_example_parses_and_its_hash_verifies() {
    let text = std::fs::read_to_string(repo("schemas/examples/decision-record.json")).unwrap();
    let rec: DecisionRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(rec.prev_hash, GENESIS_HASH);
    assert!(
        rec.hash_ok(),
        "the example's hash must be recomputable from its canonical bytes"
    );
}

#[test]
fn decision_record_schema_lists_every_field_in_canonical_order() {
    let schema = json("schemas/decision-record.schema.json");
    let example = json("schemas/examples/decision-record.json");
    let keys: Vec<String> = example.as_object().unwrap().keys().cloned().collect();
    let mut req = required(&schema);
    // serde_json without preserve_order sorts object keys when parsing, so compare as sets and check the order
    // against a freshly serialized record instead.
    let fresh = serde_json::to_string(&DecisionRecord::new(
        jitgate_engine::log::RecordKind::Decision,
    ))
    .unwrap();
    let mut last = 0;
    for k in &req {
        let at = fresh
            .find(&format!("\"{k}\":"))
            .unwrap_or_else(|| panic!("{k} not serialized"));
        assert!(at >= last, "{k} is out of order in the schema");
        last = at;
    }
    req.sort();
    let mut keys = keys;
    keys.sort();
    assert_eq!(req, keys);
    let props: Vec<String> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(props.len(), req.len());
}

#[test]
fn export_manifest_example_parses_and_matches_the_schema_fields() {
    let m: ExportManifest = serde_json::from_slice(
        &std::fs::read(repo("schemas/examples/export-manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m.sha256.len(), 64);
    let schema = json("schemas/export-manifest.schema.json");
    let mut req = required(&schema);
    req.sort();
    let mut keys: Vec<String> = serde_json::to_value(&m)
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    keys.sort();
    assert_eq!(req, keys);
}

#[test]
fn journal_lines_match_their_schema_which_is_the_record_schema_before_sealing() {
    let record = json("schemas/decision-record.schema.json");
    let journal = json("schemas/journal-line.schema.json");
    assert_eq!(required(&journal), required(&record));
    for (k, v) in record["properties"].as_object().unwrap() {
        if !["seq", "prev_hash", "hash"].contains(&k.as_str()) {
            assert_eq!(&journal["properties"][k], v, "property {k} differs");
        }
    }
    let validator = jsonschema::validator_for(&journal).unwrap();
    let example = json("schemas/examples/journal-line.json");
    assert!(validator.is_valid(&example), "the example is a valid line");

    // What a journaling writer really writes.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    let w = jitgate_engine::log::LogWriter::start(
        &db,
        jitgate_engine::log::LogOptions {
            journal: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut r = DecisionRecord::decision(
        r#"User::"alice""#,
        r#"Action::"read""#,
        r#"Doc::"d""#,
        jitgate_engine::log::Outcome::Allow,
    );
    r.context = serde_json::json!({"claims": {"sub": "alice"}, "source_ip": "127.0.0.1"})
        .as_object()
        .cloned()
        .unwrap();
    w.append_journaled(r, |_| {}).unwrap();
    w.shutdown().unwrap();
    let text = std::fs::read_to_string(dir.path().join("log.db.journal.1")).unwrap();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
    // A sealed record is not a journal line.
    let sealed = json("schemas/examples/decision-record.json");
    assert!(!validator.is_valid(&sealed));
}

/// #19: what a decision that erred, or that no permit determined, puts under `context.explain` fits the record
/// schema, and the sealed record's hash covers it.
#[test]
fn records_carrying_an_explanation_match_the_schema() {
    use jitgate_engine::{AuthzRequest, Bundle, Context, EntityRef, Principal, Resource};
    let schema = json("schemas/decision-record.schema.json");
    let validator = jsonschema::validator_for(&schema).unwrap();
    let bundle = Bundle::load(&repo("policies/docs-cedar")).unwrap();
    let request = |who: &str, action: &str, doc: &str| AuthzRequest {
        principal: Principal::new(EntityRef::new("User", who), vec![]),
        action: action.into(),
        resource: Resource {
            entity: EntityRef::new("Document", doc),
            parents: vec![
                EntityRef::new("Folder", "plans"),
                EntityRef::new("Service", "docs"),
            ],
            attrs: Default::default(),
        },
        context: Context::at(1_795_000_000),
        digest: None,
    };
    // dan reads a document the data does not know: org-members-read errs, his link alone would allow.
    let erred = bundle.decide(&request("dan", "readDocument", "draft"), &[]);
    // erin is nobody: no permit matched.
    let unmatched = bundle.decide(&request("erin", "deleteDocument", "design"), &[]);
    for (d, key) in [(&erred, "policy_errors"), (&unmatched, "nearest")] {
        let explain = d.explain_json().unwrap();
        assert!(explain.get(key).is_some(), "{explain}");
        let mut r = DecisionRecord::decision(
            r#"User::"x""#,
            r#"Action::"readDocument""#,
            r#"Document::"draft""#,
            jitgate_engine::log::Outcome::Deny,
        );
        r.context.insert("explain".into(), explain);
        r.seal(1, GENESIS_HASH);
        assert!(r.hash_ok());
        let v = serde_json::to_value(&r).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
    assert_eq!(
        erred.engine_answer.as_ref().map(|a| a.policies.clone()),
        Some(vec!["dan-views-plans".to_string()])
    );
    // The record schema refuses an explanation of another shape.
    let mut r = DecisionRecord::decision("", "", "", jitgate_engine::log::Outcome::Deny);
    r.context
        .insert("explain".into(), serde_json::json!({"nearest": "x"}));
    r.seal(1, GENESIS_HASH);
    assert!(!validator.is_valid(&serde_json::to_value(&r).unwrap()));
    assert!(
        bundle
            .decide(&request("dan", "readDocument", "roadmap"), &[])
            .explain_json()
            .is_none()
    );
}
