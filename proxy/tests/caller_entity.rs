//! The caller as a full entity through the real proxy (issue 19, items 3 and 5): a real JWKS server, real tokens
//! whose claims become typed principal attributes (`principal_attrs`) and whose groups become `Team` parents
//! (`groups_type`), the shipped expenses example bundle whose entity data puts teams in departments in the
//! organization, and claims typed by the schema in the context (an `ipaddr`, a `User` reference).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use http::StatusCode;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use jitgate_proxy::config::RawUpstream;
use support::*;

fn expenses_bundle() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/expenses-cedar"
    ))
}

async fn start() -> Harness {
    Harness::start_with(|raw, _| {
        raw.bundle.path = expenses_bundle();
        let issuer = &mut raw.issuers[0];
        issuer.groups_type = Some("Team".into());
        issuer.principal_attrs = BTreeMap::from([
            ("job".to_string(), "job_title".to_string()),
            ("manager".to_string(), "/org/manager".to_string()),
        ]);
        let url = raw.upstreams["billing"].url.clone();
        raw.upstreams.insert(
            "expenses".into(),
            RawUpstream {
                url,
                connect_timeout: "2s".into(),
                timeout: "10s".into(),
                credential: None,
            },
        );
    })
    .await
}

/// A token for `sub` in `teams` with further claims.
fn token(h: &Harness, sub: &str, teams: &[&str], extra: Value) -> String {
    let mut c = claims(sub, teams, h.clock.now());
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    sign(Algorithm::RS256, "a", &RSA_A.enc, &c)
}

async fn call(h: &Harness, method: &str, path: &str, token: &str) -> Reply {
    let req = client()
        .request(method.parse().unwrap(), h.url(path))
        .bearer_auth(token);
    within(path, async { reply(req.send().await.unwrap()).await }).await
}

#[tokio::test]
async fn claims_decide_through_typed_attributes_and_a_team_inside_the_organization() {
    let h = start().await;
    // A manager in platform (a team in engineering, in the organization, by the bundle's data) reads a report of
    // a team inside his own.
    let manager = token(&h, "mark", &["platform"], json!({ "job_title": "manager" }));
    let r = call(&h, "GET", "/reports/sre/r1", &manager).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let rec = h.record(&r.upstream_decision_id());
    assert_eq!(rec.policies, ["managers-read"]);

    // The same caller, another job claim: the attribute decides.
    let engineer = token(
        &h,
        "mark",
        &["platform"],
        json!({ "job_title": "engineer" }),
    );
    let r = call(&h, "GET", "/reports/sre/r1", &engineer).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");

    // A manager whose team is outside the organization's data reaches no organization.
    let stranger = token(
        &h,
        "mark",
        &["elsewhere"],
        json!({ "job_title": "manager" }),
    );
    let r = call(&h, "GET", "/reports/sre/r1", &stranger).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");

    // No job claim: no attribute (the policy's `has` guard), a deny without errors.
    let none = token(&h, "mark", &["platform"], json!({}));
    let r = call(&h, "GET", "/reports/sre/r1", &none).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert!(h.record(&r.decision_id()).errors.is_empty());
}

#[tokio::test]
async fn claims_in_the_context_are_typed_by_the_schema() {
    let h = start().await;
    // mark approves erin's report: his approval limit comes from the data, his job from the token, and the
    // `office_net` claim is an `ipaddr` by the schema.
    let from = |net: &str| {
        token(
            &h,
            "mark",
            &["platform"],
            json!({ "job_title": "manager", "office_net": net }),
        )
    };
    let r = call(&h, "POST", "/reports/sre/r1/approve", &from("10.1.2.3")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        h.record(&r.upstream_decision_id()).policies,
        ["managers-approve"]
    );
    let r = call(&h, "POST", "/reports/sre/r1/approve", &from("192.168.1.10")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_eq!(
        h.record(&r.decision_id()).policies,
        ["approve-from-the-office"]
    );
    // A claim that is no address: a deny naming the claim.
    let r = call(
        &h,
        "POST",
        "/reports/sre/r1/approve",
        &from("not-an-address"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    let rec = h.record(&r.decision_id());
    assert!(
        rec.errors
            .iter()
            .any(|e| e.starts_with("context.claims.office_net: ")),
        "{:?}",
        rec.errors
    );

    // `acting_for` is a `User` by the schema: an id in the token, compared as an entity with the data's manager.
    let acting = |sub: &str, job: &str| {
        token(
            &h,
            sub,
            &["platform"],
            json!({ "job_title": job, "acting_for": "erin" }),
        )
    };
    let r = call(&h, "GET", "/reports/sre/r1", &acting("mark", "manager")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r = call(&h, "GET", "/reports/platform/r3", &acting("sam", "manager")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_eq!(
        h.record(&r.decision_id()).policies,
        ["acting-for-reports-only"]
    );
}
