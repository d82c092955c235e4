//! Entity data kept in the store (issue 19, item 2) through the real proxy, the real admin API, the demo upstream and
//! real SQLite files: the shipped docs example bundle (owners, teams, clearances in its entities.json), whose
//! decisions change after `PUT /v1/entities` and after `DELETE` without a reload; the calls governed by policy and
//! recorded; bad input refused with uid, line and attribute, nothing stored; a new bundle that does not accept the
//! stored data refused. With `JITGATE_TEST_POSTGRES`, two replicas on one PostgreSQL store: a PUT through one changes
//! the other's decisions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod lifecycle_common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jitgate_engine::log::{Outcome, RecordKind};
use jitgate_engine::{Clock, EntityRef};
use jitgate_proxy::config::{Config, RawBundle, RawConfig, RawStore, RawUpstream};
use jitgate_proxy::demo::DemoUpstream;
use jitgate_proxy::run::{Running, start};
use lifecycle_common::{Env, groups, raw_config};
use serde_json::{Value, json};

/// The docs example bundle copied into `dir`, with the entity-data admin actions declared and allowed to SREs (and
/// `operate`, for reloads), and
/// teams that may sit in teams (so that a parent cycle can be written).
fn docs_bundle(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/docs-cedar");
    let dst = dir.join("docs-bundle");
    copy_dir(&src, &dst);
    let schema = dst.join("schema.cedarschema");
    let text = std::fs::read_to_string(&schema).unwrap().replace(
        "entity Team in [Organization]",
        "entity Team in [Organization, Team]",
    );
    assert!(text.contains("entity Team in [Organization, Team]"));
    std::fs::write(
        &schema,
        format!(
            "{text}\naction writeEntities, readEntities\n  appliesTo {{ principal: [User, Workload], resource: \
             [Service], context: LifecycleContext }};\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dst.join("policies/entities-admin.cedar"),
        "@id(\"sre-entities\")\npermit (principal in Group::\"sre\", action in [Action::\"writeEntities\", \
         Action::\"readEntities\"], resource == Service::\"jitgate\");\n\
         @id(\"sre-operate\")\npermit (principal in Group::\"sre\", action == Action::\"operate\", \
         resource == Service::\"jitgate\");\n",
    )
    .unwrap();
    dst
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

/// Points `raw` at `bundle` with the docs service on `upstream`.
fn use_docs(raw: &mut RawConfig, bundle: &Path) {
    raw.bundle = RawBundle {
        path: bundle.to_path_buf(),
        watch: false,
        shadow: None,
    };
    let url = raw.upstreams["billing"].url.clone();
    raw.upstreams.insert(
        "docs".into(),
        RawUpstream {
            url,
            connect_timeout: "2s".into(),
            timeout: "10s".into(),
            credential: None,
        },
    );
}

/// A memo in the plans folder owned by `owner`.
fn memo(owner: &str) -> Value {
    json!({
        "uid": {"type": "Document", "id": "memo"},
        "attrs": {"owner": {"type": "User", "id": owner}, "classification": 1},
        "parents": [{"type": "Folder", "id": "plans"}]
    })
}

async fn send(
    http: &reqwest::Client,
    method: &str,
    url: String,
    token: &str,
    body: Option<String>,
) -> (u16, Value) {
    let mut req = http
        .request(method.parse().unwrap(), url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

impl Env {
    async fn entities(
        &self,
        who: &str,
        method: &str,
        query: &str,
        body: Option<String>,
    ) -> (u16, Value) {
        send(
            &self.http,
            method,
            self.admin(&format!("/v1/entities{query}")),
            &self.token(who),
            body,
        )
        .await
    }

    async fn docs(&self, who: &str, method: &str, path: &str) -> u16 {
        send(&self.http, method, self.data(path), &self.token(who), None)
            .await
            .0
    }

    async fn stored(&self) -> Vec<Value> {
        let (s, v) = self.entities("sam", "GET", "", None).await;
        assert_eq!(s, 200, "{v}");
        v["entities"].as_array().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_follow_put_and_delete_without_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = docs_bundle(dir.path());
    let env = Env::start(dir.path(), Clock::system(), |raw| use_docs(raw, &bundle)).await;
    let revision = env.running.proxy.authorizer.bundle().revision.clone();

    // Nothing in the store: the memo has no owner in any data (the policy's `resource.owner` errs: a deny), and alice
    // reads the roadmap as a member of platform (in acme) with clearance 3, by the bundle's data.
    assert_eq!(env.docs("bob", "PUT", "/docs/plans/memo").await, 403);
    assert_eq!(env.docs("alice", "GET", "/docs/plans/roadmap").await, 200);

    // Only a caller the policies allow writes entity data; the refusal is recorded.
    let (s, v) = env
        .entities("alice", "PUT", "", Some(json!([memo("bob")]).to_string()))
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(env.stored().await.is_empty());

    // bob owns the memo now: he edits it.
    let (s, v) = env
        .entities("sam", "PUT", "", Some(json!([memo("bob")]).to_string()))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v, json!({"stored": 1, "total": 1}));
    assert_eq!(env.docs("bob", "PUT", "/docs/plans/memo").await, 200);
    assert_eq!(env.docs("alice", "PUT", "/docs/plans/memo").await, 403);

    // Replaced whole by uid: alice owns it, bob no longer edits it.
    let (s, _) = env
        .entities("sam", "PUT", "", Some(json!([memo("alice")]).to_string()))
        .await;
    assert_eq!(s, 200);
    assert_eq!(env.docs("bob", "PUT", "/docs/plans/memo").await, 403);
    assert_eq!(env.docs("alice", "PUT", "/docs/plans/memo").await, 200);

    // The store's alice replaces the bundle's whole: in no team now, she reads no roadmap (team membership synced
    // from elsewhere).
    let alice = json!({
        "uid": {"type": "User", "id": "alice"},
        "attrs": {"clearance": 3},
        "parents": []
    });
    let (s, v) = env
        .entities("sam", "PUT", "", Some(json!([alice]).to_string()))
        .await;
    assert_eq!((s, &v["total"]), (200, &json!(2)), "{v}");
    assert_eq!(env.docs("alice", "GET", "/docs/plans/roadmap").await, 403);
    let (s, v) = env
        .entities("sam", "GET", "?type=User&id=alice", None)
        .await;
    assert_eq!((s, v["entities"].clone()), (200, json!([alice])));

    // Deleted: the bundle's alice again (in platform).
    let (s, v) = env
        .entities("sam", "DELETE", "?uid=User::%22alice%22", None)
        .await;
    assert_eq!((s, v), (200, json!({"deleted": 1})));
    assert_eq!(env.docs("alice", "GET", "/docs/plans/roadmap").await, 200);
    // A body of uids works too.
    let (s, v) = env
        .entities(
            "sam",
            "DELETE",
            "",
            Some(r#"["Document::\"memo\""]"#.into()),
        )
        .await;
    assert_eq!((s, v), (200, json!({"deleted": 1})));
    assert_eq!(env.docs("alice", "PUT", "/docs/plans/memo").await, 403);
    assert!(env.stored().await.is_empty());
    assert_eq!(
        env.running.proxy.authorizer.bundle().revision,
        revision,
        "no reload happened"
    );

    // Each change is in the decision log: who, what, which uids, under which policy; the refusal too.
    env.running.proxy.log.flush().await;
    let records = jitgate_engine::log::query(
        &dir.path().join("decisions.db"),
        &jitgate_engine::log::Filter::default(),
        None,
        10_000,
    )
    .unwrap()
    .records;
    let writes: Vec<_> = records
        .iter()
        .filter(|r| r.action == "writeEntities")
        .collect();
    assert_eq!(writes.len(), 6, "{writes:#?}");
    assert_eq!(writes[0].decision, Some(Outcome::Deny));
    assert_eq!(writes[0].principal, r#"User::"alice""#);
    let put = writes[1];
    assert_eq!(
        (put.kind, put.decision, put.principal.as_str()),
        (RecordKind::Decision, Some(Outcome::Allow), r#"User::"sam""#)
    );
    assert_eq!(put.policies, ["sre-entities"]);
    assert_eq!(put.resource, r#"Service::"jitgate""#);
    assert_eq!(
        put.context["entities"],
        json!({"operation": "put", "uids": ["Document::\"memo\""]})
    );
    assert_eq!(
        writes[4].context["entities"],
        json!({"operation": "delete", "uids": ["User::\"alice\""]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entity_data_is_refused_with_uid_line_and_attribute_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = docs_bundle(dir.path());
    let env = Env::start(dir.path(), Clock::system(), |raw| use_docs(raw, &bundle)).await;
    let (s, _) = env
        .entities("sam", "PUT", "", Some(json!([memo("bob")]).to_string()))
        .await;
    assert_eq!(s, 200);
    let before = env.stored().await;

    // Not what the schema says: a classification that is no Long, on line 3 of the body; the good entity beside it
    // is not stored either.
    let body = "[\n  {\"uid\": {\"type\": \"Folder\", \"id\": \"new\"}, \"attrs\": {}, \"parents\": []},\n  \
                {\"uid\": {\"type\": \"Document\", \"id\": \"memo\"}, \"attrs\": {\"owner\": {\"type\": \"User\", \
                \"id\": \"alice\"}, \"classification\": \"high\"}, \"parents\": []}\n]";
    let (s, v) = env.entities("sam", "PUT", "", Some(body.into())).await;
    assert_eq!(s, 400, "{v}");
    let p = &v["problems"][0];
    assert_eq!(p["uid"], r#"Document::"memo""#, "{v}");
    assert_eq!(
        (p["line"].clone(), p["index"].clone()),
        (json!(3), json!(1)),
        "{v}"
    );
    assert_eq!(p["attribute"], "classification", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("nothing was stored"),
        "{v}"
    );
    assert_eq!(env.stored().await, before);
    assert_eq!(env.docs("bob", "PUT", "/docs/plans/memo").await, 200);

    // An unknown entity type.
    let (s, v) = env
        .entities(
            "sam",
            "PUT",
            "",
            Some(r#"[{"uid": {"type": "Nope", "id": "x"}, "attrs": {}, "parents": []}]"#.into()),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["problems"][0]["uid"], r#"Nope::"x""#, "{v}");

    // A parent cycle, through two teams of the bundle's data replaced by the store's.
    let team = |id: &str, parent: &str| {
        json!({"uid": {"type": "Team", "id": id}, "attrs": {"name": id},
               "parents": [{"type": "Team", "id": parent}]})
    };
    let (s, v) = env
        .entities(
            "sam",
            "PUT",
            "",
            Some(json!([team("platform", "finance"), team("finance", "platform")]).to_string()),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let reason = v["problems"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("parent cycle"), "{v}");
    assert!(
        reason.contains(r#"Team::"platform""#) && reason.contains(r#"Team::"finance""#),
        "{v}"
    );
    assert_eq!(env.stored().await, before);

    // Bad JSON: the line and column.
    let (s, v) = env
        .entities(
            "sam",
            "PUT",
            "",
            Some("[\n  {\"uid\": {\"type\": \"Doc\",\n  ]".into()),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["problems"][0]["line"], 3, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("invalid JSON"),
        "{v}"
    );

    // A DELETE naming no uid, or something that is no uid.
    let (s, v) = env.entities("sam", "DELETE", "", None).await;
    assert_eq!((s, v["field"].clone()), (400, json!("uid")), "{v}");
    let (s, v) = env.entities("sam", "DELETE", "?uid=memo", None).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(env.stored().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_whose_schema_refuses_the_stored_data_never_goes_live() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = docs_bundle(dir.path());
    let env = Env::start(dir.path(), Clock::system(), |raw| use_docs(raw, &bundle)).await;
    let (s, _) = env
        .entities("sam", "PUT", "", Some(json!([memo("bob")]).to_string()))
        .await;
    assert_eq!(s, 200);
    let active = env.running.proxy.authorizer.bundle().revision.clone();

    // The new schema wants a String classification: the stored memo does not fit, the bundle is refused naming it.
    let schema = bundle.join("schema.cedarschema");
    let text = std::fs::read_to_string(&schema).unwrap();
    let changed = text.replace("classification: Long,", "classification: String,");
    assert_ne!(changed, text);
    std::fs::write(&schema, changed).unwrap();
    let (s, v) = send(
        &env.http,
        "POST",
        env.admin("/v1/reload"),
        &env.token("sam"),
        None,
    )
    .await;
    // The bundle's own data has Long classifications too: it fails to load before the store's data is looked at.
    assert_eq!(s, 422, "{v}");
    assert_eq!(env.running.proxy.authorizer.bundle().revision, active);

    // A bundle whose own data fits but whose schema refuses the store's: documents need a title now.
    std::fs::write(&schema, &text).unwrap();
    let docs = bundle.join("entities.json");
    let data: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&docs).unwrap()).unwrap();
    // Documents leave the bundle's data (so that it still loads); the store's memo stays as it was.
    let kept: Vec<Value> = data
        .into_iter()
        .filter(|e| e["uid"]["type"] != "Document")
        .collect();
    std::fs::write(&docs, serde_json::to_string(&kept).unwrap()).unwrap();
    std::fs::write(
        &schema,
        text.replace(
            "  owner: User,\n  classification: Long,",
            "  owner: User,\n  title: String,\n  classification: Long,",
        ),
    )
    .unwrap();
    let (s, v) = send(
        &env.http,
        "POST",
        env.admin("/v1/reload"),
        &env.token("sam"),
        None,
    )
    .await;
    assert_eq!(s, 422, "{v}");
    let errors = v["errors"].to_string();
    assert!(
        errors.contains(r#"Document::\"memo\""#) && errors.contains("store's entity data"),
        "{v}"
    );
    assert_eq!(env.running.proxy.authorizer.bundle().revision, active);
    // The last good bundle, with the store's data over it, keeps deciding.
    assert_eq!(env.docs("bob", "PUT", "/docs/plans/memo").await, 200);
}

/// Two replicas on one PostgreSQL store: entity data put through one decides on the other (LISTEN/NOTIFY).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_put_through_one_replica_changes_decisions_on_another() {
    let Some(base) = jitgate_engine::postgres::scratch::test_url("entity_data_replicas") else {
        return;
    };
    let scratch = jitgate_engine::postgres::scratch::Scratch::new(&base, "entity_data").unwrap();
    let upstream = DemoUpstream::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let shared = tempfile::tempdir().unwrap();
    let bundle = docs_bundle(shared.path());
    let key = shared.path().join("key.pem");
    let mut dirs = Vec::new();
    let mut replicas: Vec<Running> = Vec::new();
    for i in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = raw_config(dir.path(), upstream.addr);
        use_docs(&mut raw, &bundle);
        raw.store.path = RawStore::default().path;
        raw.store.url = Some(scratch.url());
        raw.cluster.replica = Some(format!("replica-{i}"));
        raw.local_issuer.as_mut().unwrap().key_file = key.clone();
        let config = Config::validate(raw, &dir.path().join("jitgate.toml"), dir.path()).unwrap();
        replicas.push(start(config, Clock::system()).await.unwrap());
        dirs.push(dir);
    }
    let http = reqwest::Client::new();
    let token = |who: &str| {
        let now = jitgate_engine::clock::now_system();
        replicas[0]
            .proxy
            .local_issuer
            .as_ref()
            .unwrap()
            .mint_session(&EntityRef::new("User", who), &groups(who), now + 3600, now)
            .unwrap()
    };
    let edit = |i: usize| {
        let url = format!("http://{}/docs/plans/memo", replicas[i].addr);
        let (http, t) = (http.clone(), token("bob"));
        async move { send(&http, "PUT", url, &t, None).await.0 }
    };
    assert_eq!(edit(1).await, 403);

    // Through replica 0; replica 1 hears of it and decides with it.
    let admin0 = format!("http://{}/v1/entities", replicas[0].admin_addr.unwrap());
    let (s, v) = send(
        &http,
        "PUT",
        admin0.clone(),
        &token("sam"),
        Some(json!([memo("bob")]).to_string()),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        edit(0).await,
        200,
        "the replica written through decides at once"
    );
    let until = |want: u16| {
        let edit = &edit;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let got = edit(1).await;
                if got == want {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "replica 1 still answers {got}, not {want}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    until(200).await;
    assert_eq!(replicas[1].proxy.authorizer.store_entities().len(), 1);

    // A delete through replica 1 reaches replica 0.
    let admin1 = format!("http://{}/v1/entities", replicas[1].admin_addr.unwrap());
    let (s, v) = send(
        &http,
        "DELETE",
        format!("{admin1}?uid=Document::%22memo%22"),
        &token("sam"),
        None,
    )
    .await;
    assert_eq!((s, v), (200, json!({"deleted": 1})));
    assert_eq!(edit(1).await, 403);
    let deadline = Instant::now() + Duration::from_secs(10);
    while edit(0).await != 403 {
        assert!(
            Instant::now() < deadline,
            "replica 0 never heard of the delete"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(dirs);
}

/// The docs example in Rego (../policies/docs-rego) copied into `dir`, with the entity-data admin actions allowed to
/// SREs and two policies that read the store's entity data at `data.jitgate.entities`: the owner the store names
/// edits a document; a member (through the store's hierarchy) of an organization the store calls open reads.
fn docs_rego_bundle(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/docs-rego");
    let dst = dir.join("docs-rego-bundle");
    copy_dir(&src, &dst);
    std::fs::write(
        dst.join("policies/store.rego"),
        r#"package jitgate.authz

import rego.v1

allow contains "sre-entities" if {
	input.action == "writeEntities"
	"sre" in input.principal.groups
}

allow contains "sre-entities" if {
	input.action == "readEntities"
	"sre" in input.principal.groups
}

allow contains "store-owner-edits" if {
	input.action == "editDocument"
	data.jitgate.entities.Document[input.resource.id].attrs.owner.id == input.principal.id
}

allow contains "store-open-org-reads" if {
	input.action == "readDocument"
	some a in data.jitgate.entities.User[input.principal.id].ancestors
	a.type == "Organization"
	data.jitgate.entities.Organization[a.id].attrs.open == true
}
"#,
    )
    .unwrap();
    dst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rego_decisions_read_the_store_data_and_follow_put_and_delete_without_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = docs_rego_bundle(dir.path());
    let env = Env::start(dir.path(), Clock::system(), |raw| use_docs(raw, &bundle)).await;
    let revision = env.running.proxy.authorizer.bundle().revision.clone();

    // Nothing in the store: the memo is in no data, so nobody edits it; dave is in no team and reads nothing.
    assert_eq!(env.docs("bob", "PUT", "/docs/plans/memo").await, 403);
    assert_eq!(env.docs("dave", "GET", "/docs/plans/design").await, 403);

    // The store names bob the memo's owner: he edits it, alice does not.
    let (s, v) = env
        .entities("sam", "PUT", "", Some(json!([memo("bob")]).to_string()))
        .await;
    assert_eq!((s, &v), (200, &json!({"stored": 1, "total": 1})), "{v}");
    assert_eq!(env.docs("bob", "PUT", "/docs/plans/memo").await, 200);
    assert_eq!(env.docs("alice", "PUT", "/docs/plans/memo").await, 403);

    // Replaced whole by uid: alice owns it now.
    let (s, _) = env
        .entities("sam", "PUT", "", Some(json!([memo("alice")]).to_string()))
        .await;
    assert_eq!(s, 200);
    assert_eq!(env.docs("bob", "PUT", "/docs/plans/memo").await, 403);
    assert_eq!(env.docs("alice", "PUT", "/docs/plans/memo").await, 200);

    // A hierarchy in the store, escapes and all: dave in team ops, ops in org open (`__entity` parents); the
    // organization is open, so dave reads through `ancestors` (two levels up).
    let hierarchy = json!([
        {"uid": {"type": "User", "id": "dave"}, "attrs": {},
         "parents": [{"__entity": {"type": "Team", "id": "ops"}}]},
        {"uid": {"type": "Team", "id": "ops"}, "attrs": {},
         "parents": [{"type": "Organization", "id": "open"}]},
        {"uid": {"type": "Organization", "id": "open"}, "attrs": {"open": true}, "parents": []}
    ]);
    let (s, v) = env
        .entities("sam", "PUT", "", Some(hierarchy.to_string()))
        .await;
    assert_eq!((s, &v["total"]), (200, &json!(4)), "{v}");
    assert_eq!(env.docs("dave", "GET", "/docs/plans/design").await, 200);

    // A parent cycle is refused by uid and nothing changes.
    let cycle = json!([
        {"uid": {"type": "Organization", "id": "open"}, "attrs": {"open": true},
         "parents": [{"type": "User", "id": "dave"}]}
    ]);
    let (s, v) = env
        .entities("sam", "PUT", "", Some(cycle.to_string()))
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["problems"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("parent cycle"),
        "{v}"
    );
    assert_eq!(env.stored().await.len(), 4);
    assert_eq!(env.docs("dave", "GET", "/docs/plans/design").await, 200);

    // Deleted: the organization first (dave's ancestors still name it, but it is open no more), then the memo.
    let (s, v) = env
        .entities("sam", "DELETE", "?uid=Organization::%22open%22", None)
        .await;
    assert_eq!((s, v), (200, json!({"deleted": 1})));
    assert_eq!(env.docs("dave", "GET", "/docs/plans/design").await, 403);
    let (s, _) = env
        .entities(
            "sam",
            "DELETE",
            "",
            Some(r#"["Document::\"memo\""]"#.into()),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(env.docs("alice", "PUT", "/docs/plans/memo").await, 403);
    // The bundle's own data still decides as before.
    assert_eq!(env.docs("alice", "GET", "/docs/plans/roadmap").await, 200);
    assert_eq!(
        env.running.proxy.authorizer.bundle().revision,
        revision,
        "no reload happened"
    );
}
