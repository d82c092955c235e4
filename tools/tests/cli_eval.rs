//! Runs the built `jitgate eval` against the shipped docs bundles (Cedar and Rego, with entity data and links) and the
//! fixtures of their suite: decisions, explanations of policies and grants, erroring policies, exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Output;

mod run_cli;
use run_cli::jitgate;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn all(o: &Output) -> String {
    format!("{}{}", stdout(o), String::from_utf8_lossy(&o.stderr))
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", all(o)))
}

const FIXTURES: &str = "policy-tests/docs-entity-data.yaml";

fn eval(bundle: &str, principal: &str, method: &str, path: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "eval",
        "--bundle",
        bundle,
        "--fixtures",
        FIXTURES,
        "--principal",
        principal,
        "--http",
        method,
        path,
    ];
    args.extend_from_slice(extra);
    jitgate(&args)
}

#[test]
fn a_direct_request_is_decided_and_exit_0_means_allowed() {
    let o = jitgate(&[
        "eval",
        "--bundle",
        "policies/docs-cedar",
        "--principal",
        r#"User::"alice""#,
        "--action",
        "readDocument",
        "--resource",
        r#"Document::"roadmap""#,
        "--parent",
        r#"Folder::"plans""#,
        "--parent",
        r#"Service::"docs""#,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", all(&o));
    let out = stdout(&o);
    assert!(out.contains("decision   allow"), "{out}");
    assert!(out.contains("policies   org-members-read"), "{out}");
}

#[test]
fn explain_names_each_policy_and_why_each_grant_was_or_was_not_materialized() {
    // Her grant covers the plans folder: materialized and used.
    let o = eval(
        "policies/docs-cedar",
        r#"User::"alice""#,
        "DELETE",
        "/docs/plans/design",
        &["--explain"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", all(&o));
    let out = stdout(&o);
    assert!(out.contains("grants     g-alice-doc-admin"), "{out}");
    assert!(
        out.lines().any(|l| l.contains("doc-admins-delete")
            && l.contains("matched")
            && l.contains("held")
            && l.contains("yes")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.contains("g-alice-doc-admin")
            && l.contains("materialized")
            && l.contains("yes")),
        "{out}"
    );

    // Not another folder: denied, and the grant's line says why; the short form names the nearest permit.
    let o = eval(
        "policies/docs-cedar",
        r#"User::"alice""#,
        "DELETE",
        "/docs/hr/salaries",
        &["--explain"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", all(&o));
    let out = stdout(&o);
    assert!(out.contains("why        no permit matched"), "{out}");
    assert!(
        out.contains(
            "nearest    doc-admins-delete: scope not matched: principal in Role::\"doc-admin\""
        ),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("g-alice-doc-admin")
                && l.contains("scope does not cover the resource")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("doc-admins-delete") && l.contains("not matched")),
        "{out}"
    );

    // An hour later the grant has expired.
    let o = eval(
        "policies/docs-cedar",
        r#"User::"alice""#,
        "DELETE",
        "/docs/plans/design",
        &["--explain", "--at", "+1h", "--output", "json"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", all(&o));
    let v = json(&o);
    let x = &v["explanation"];
    assert_eq!(x["decision"]["effect"], "deny", "{v}");
    assert_eq!(x["grants"][0]["id"], "g-alice-doc-admin", "{v}");
    assert_eq!(x["grants"][0]["fate"], "expired", "{v}");
    assert_eq!(x["grants"][0]["used"], false, "{v}");
}

#[test]
fn an_erroring_policy_is_named_with_cedars_own_answer() {
    // The document is not in the entity data: org-members-read errs for dan; his link alone would allow.
    let o = eval(
        "policies/docs-cedar",
        r#"User::"dan""#,
        "GET",
        "/docs/plans/draft",
        &["--explain", "--output", "json"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", all(&o));
    let v = json(&o);
    let d = &v["explanation"]["decision"];
    assert_eq!(d["effect"], "deny", "{v}");
    assert_eq!(d["policy_errors"][0]["policy"], "org-members-read", "{v}");
    assert!(
        d["policy_errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("classification"),
        "{v}"
    );
    assert_eq!(d["engine_answer"]["effect"], "allow", "{v}");
    assert_eq!(
        d["engine_answer"]["policies"],
        serde_json::json!(["dan-views-plans"]),
        "{v}"
    );
    let policies = v["explanation"]["policies"].as_array().unwrap();
    let org = policies
        .iter()
        .find(|p| p["id"] == "org-members-read")
        .unwrap();
    assert_eq!(org["condition"]["outcome"], "error", "{v}");
    let link = policies
        .iter()
        .find(|p| p["id"] == "dan-views-plans")
        .unwrap();
    assert_eq!(link["condition"]["outcome"], "held", "{v}");
    assert_eq!(link["determining"], true, "{v}");

    // The text form says the same in words.
    let o = eval(
        "policies/docs-cedar",
        r#"User::"dan""#,
        "GET",
        "/docs/plans/draft",
        &[],
    );
    let out = stdout(&o);
    assert!(out.contains("erred      org-members-read: "), "{out}");
    assert!(
        out.contains("alone      cedar itself would allow (policies dan-views-plans)"),
        "{out}"
    );
}

#[test]
fn a_rego_bundle_shows_its_decision_document() {
    let o = eval(
        "policies/docs-rego",
        r#"User::"alice""#,
        "GET",
        "/docs/plans/roadmap",
        &["--explain", "--output", "json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", all(&o));
    let v = json(&o);
    let doc = &v["explanation"]["document"];
    assert_eq!(doc["allow"], serde_json::json!(["org-members-read"]), "{v}");
    assert!(
        v["explanation"]["note"]
            .as_str()
            .unwrap()
            .contains("opa eval"),
        "{v}"
    );
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn a_token_names_the_caller_only_when_verified_or_explicitly_insecure() {
    let payload =
        serde_json::json!({ "sub": "alice", "iss": "https://idp.example", "groups": ["eng"] });
    let token = format!(
        "{}.{}.{}",
        b64url(br#"{"alg":"none"}"#),
        b64url(payload.to_string().as_bytes()),
        "sig"
    );
    let o = jitgate(&[
        "eval",
        "--bundle",
        "policies/docs-cedar",
        "--http",
        "GET",
        "/docs/plans/roadmap",
        "--token",
        &token,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", all(&o));
    assert!(all(&o).contains("--insecure-claims"), "{}", all(&o));

    let o = jitgate(&[
        "eval",
        "--bundle",
        "policies/docs-cedar",
        "--http",
        "GET",
        "/docs/plans/roadmap",
        "--token",
        &token,
        "--insecure-claims",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", all(&o));
    assert!(
        stdout(&o).contains(r#"request    User::"alice" readDocument"#),
        "{}",
        all(&o)
    );
    assert!(stdout(&o).contains("groups     eng"), "{}", all(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nothing was verified"),
        "{}",
        all(&o)
    );
}

#[test]
fn bad_input_is_exit_2_and_an_unrouted_request_exit_1() {
    let o = eval(
        "policies/docs-cedar",
        r#"User::"alice""#,
        "GET",
        "/nowhere",
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", all(&o));
    assert!(
        stdout(&o).contains("no route matches GET /nowhere"),
        "{}",
        all(&o)
    );

    let o = eval("policies/nope", r#"User::"alice""#, "GET", "/docs/a/b", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", all(&o));

    let o = jitgate(&[
        "eval",
        "--bundle",
        "policies/docs-cedar",
        "--principal",
        "alice",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", all(&o));
}
