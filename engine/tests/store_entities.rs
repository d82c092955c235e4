//! Entity data kept in the store over a bundle's (issue 19, item 2), through the `Authorizer` with real stores (the
//! memory store and a SQLite file): the precedence (a stored uid replaces the bundle's entity whole, hierarchies
//! closed over both), refusals that change nothing, persistence across a restart, and a new bundle that must
//! accept the stored data. With `JITGATE_TEST_POSTGRES`, a change through one replica reaches the other's decisions
//! through the follower.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use jitgate_engine::authorize::EntityError;
use jitgate_engine::sqlite::SqliteStore;
use jitgate_engine::store::{EntityStore, MemStore, StoredEntity};
use jitgate_engine::{
    Authorizer, AuthzRequest, Bundle, Clock, Context, Effect, EntityRef, Principal,
};
use serde_json::{Value, json};

fn docs() -> Bundle {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/docs-cedar");
    Bundle::load(&dir).unwrap()
}

fn request(b: &Bundle, who: &str, method: &str, path: &str) -> AuthzRequest {
    let m = b.routes.find(method, None, path).unwrap();
    AuthzRequest {
        principal: Principal {
            entity: EntityRef::new("User", who),
            groups: Vec::new(),
            group_type: None,
            attrs: Default::default(),
        },
        action: m.route.action.clone(),
        resource: m.resource,
        context: Context::at(1_795_428_000),
        digest: None,
    }
}

fn effect(a: &Authorizer, who: &str, method: &str, path: &str) -> Effect {
    let b = a.bundle();
    a.decide(&b, &request(&b, who, method, path)).effect
}

fn entity(v: Value) -> StoredEntity {
    StoredEntity {
        uid: jitgate_engine::overlay::uid_of(&v).unwrap(),
        data: v,
        updated_at: 0,
    }
}

fn memo(owner: &str) -> StoredEntity {
    entity(json!({
        "uid": {"type": "Document", "id": "memo"},
        "attrs": {"owner": {"type": "User", "id": owner}, "classification": 1},
        "parents": [{"type": "Folder", "id": "plans"}]
    }))
}

fn authorizer(store: Arc<dyn jitgate_engine::store::Store>) -> Authorizer {
    Authorizer::new(docs(), store.clone(), Clock::frozen(1_795_428_000))
        .unwrap()
        .with_entity_store(store)
        .unwrap()
}

#[test]
fn stored_entities_decide_over_the_bundles_and_refusals_change_nothing() {
    let a = authorizer(Arc::new(MemStore::new()));
    assert_eq!(effect(&a, "bob", "PUT", "/docs/plans/memo"), Effect::Deny);
    assert_eq!(a.put_entities(vec![memo("bob")]).unwrap(), 1);
    assert_eq!(effect(&a, "bob", "PUT", "/docs/plans/memo"), Effect::Allow);

    // erin, whom the bundle's data does not know, reads no roadmap; the store's erin is in platform, which the
    // bundle's data puts in acme, so `principal in Organization::"acme"` holds transitively.
    assert_eq!(
        effect(&a, "erin", "GET", "/docs/plans/roadmap"),
        Effect::Deny
    );
    let erin = entity(
        json!({"uid": {"type": "User", "id": "erin"}, "attrs": {"clearance": 3},
                            "parents": [{"type": "Team", "id": "platform"}]}),
    );
    a.put_entities(vec![erin]).unwrap();
    assert_eq!(
        effect(&a, "erin", "GET", "/docs/plans/roadmap"),
        Effect::Allow
    );
    // Replaced whole: alice without her bundle attributes (no clearance) reads nothing any more.
    assert_eq!(
        effect(&a, "alice", "GET", "/docs/plans/roadmap"),
        Effect::Allow
    );
    a.put_entities(vec![entity(
        json!({"uid": {"type": "User", "id": "alice"}, "attrs": {}, "parents": []}),
    )])
    .unwrap();
    assert_eq!(
        effect(&a, "alice", "GET", "/docs/plans/roadmap"),
        Effect::Deny
    );
    // The store's team: a team the bundle knows moved out of the organization takes its members with it.
    a.put_entities(vec![entity(
        json!({"uid": {"type": "Team", "id": "platform"}, "attrs": {"name": "P"}, "parents": []}),
    )])
    .unwrap();
    assert_eq!(
        effect(&a, "erin", "GET", "/docs/plans/roadmap"),
        Effect::Deny
    );
    let before = a.store_entities();
    assert_eq!(before.len(), 4);

    // Refused: nothing written, nothing seen.
    let bad = entity(json!({"uid": {"type": "Document", "id": "memo"},
                            "attrs": {"owner": {"type": "User", "id": "carol"}, "classification": "high"},
                            "parents": []}));
    let Err(EntityError::Invalid(p)) = a.put_entities(vec![memo("carol"), bad]) else {
        panic!("a classification that is no Long was taken");
    };
    assert_eq!(p[0].uid, r#"Document::"memo""#);
    assert_eq!(
        p[0].attribute.as_deref(),
        Some("classification"),
        "{}",
        p[0]
    );
    assert_eq!(a.store_entities(), before);
    assert_eq!(effect(&a, "bob", "PUT", "/docs/plans/memo"), Effect::Allow);

    // Deleted: the bundle's entity of the uid decides again.
    assert_eq!(
        a.delete_entities(&[
            EntityRef::new("User", "alice"),
            EntityRef::new("Team", "platform"),
            EntityRef::new("User", "nobody")
        ])
        .unwrap(),
        2
    );
    assert_eq!(
        effect(&a, "alice", "GET", "/docs/plans/design"),
        Effect::Allow
    );
}

#[test]
fn a_parent_cycle_through_the_bundles_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The docs bundle with teams that may sit in teams.
    let bundle = dir.path().join("b");
    std::fs::create_dir_all(bundle.join("policies")).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/docs-cedar");
    for f in [
        "bundle.toml",
        "entities.json",
        "links.json",
        "policies/docs.cedar",
    ] {
        std::fs::copy(src.join(f), bundle.join(f)).unwrap();
    }
    let schema = std::fs::read_to_string(src.join("schema.cedarschema"))
        .unwrap()
        .replace(
            "entity Team in [Organization]",
            "entity Team in [Organization, Team]",
        );
    std::fs::write(bundle.join("schema.cedarschema"), schema).unwrap();
    let store = Arc::new(MemStore::new());
    let a = Authorizer::new(
        Bundle::load(&bundle).unwrap(),
        store.clone(),
        Clock::system(),
    )
    .unwrap()
    .with_entity_store(store.clone())
    .unwrap();
    // finance in platform is fine; platform in finance then closes a cycle.
    let team = |id: &str, parent: &str| {
        entity(
            json!({"uid": {"type": "Team", "id": id}, "attrs": {"name": id},
                      "parents": [{"type": "Team", "id": parent}]}),
        )
    };
    a.put_entities(vec![team("finance", "platform")]).unwrap();
    let Err(EntityError::Invalid(p)) = a.put_entities(vec![team("platform", "finance")]) else {
        panic!("a cycle was taken");
    };
    assert!(p[0].reason.contains("parent cycle"), "{}", p[0]);
    assert_eq!(store.load_entities().unwrap().len(), 1, "nothing written");
}

#[test]
fn stored_entities_survive_a_restart_and_a_bundle_must_accept_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.db");
    {
        let a = authorizer(Arc::new(SqliteStore::open(&file).unwrap()));
        a.put_entities(vec![memo("bob")]).unwrap();
    }
    let a = authorizer(Arc::new(SqliteStore::open(&file).unwrap()));
    assert_eq!(effect(&a, "bob", "PUT", "/docs/plans/memo"), Effect::Allow);

    // A bundle whose schema wants a title on documents does not take the stored memo: refused, naming it; the
    // active bundle keeps deciding with the data.
    let copy = dir.path().join("b");
    std::fs::create_dir_all(copy.join("policies")).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/docs-cedar");
    for f in ["bundle.toml", "links.json", "policies/docs.cedar"] {
        std::fs::copy(src.join(f), copy.join(f)).unwrap();
    }
    let data: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(src.join("entities.json")).unwrap()).unwrap();
    let kept: Vec<Value> = data
        .into_iter()
        .filter(|e| e["uid"]["type"] != "Document")
        .collect();
    std::fs::write(
        copy.join("entities.json"),
        serde_json::to_string(&kept).unwrap(),
    )
    .unwrap();
    let schema = std::fs::read_to_string(src.join("schema.cedarschema")).unwrap();
    let titled = schema.replace("  owner: User,\n", "  owner: User,\n  title: String,\n");
    assert_ne!(titled, schema);
    std::fs::write(copy.join("schema.cedarschema"), titled).unwrap();
    let candidate = Arc::new(Bundle::load(&copy).unwrap());
    let active = a.bundle().revision.clone();
    let problems = a.try_swap_bundle(candidate).unwrap_err();
    assert_eq!(problems[0].uid, r#"Document::"memo""#);
    assert!(problems[0].reason.contains("title"), "{}", problems[0]);
    assert_eq!(a.bundle().revision, active);
    assert_eq!(effect(&a, "bob", "PUT", "/docs/plans/memo"), Effect::Allow);
}

/// Two replicas on one PostgreSQL store: a put through one is decided on by the other once its follower hears.
#[test]
fn a_put_through_one_replica_reaches_the_others_decisions() {
    use jitgate_engine::postgres::PgStore;
    use jitgate_engine::postgres::follow::{ChangeSink, FollowOptions, FollowStats, Follower};
    use jitgate_engine::postgres::scratch::{Scratch, test_url};
    use jitgate_engine::store::Freshness;
    struct Nothing;
    impl ChangeSink for Nothing {
        fn grant_changed(&self, _: &jitgate_engine::Grant) {}
        fn request_changed(&self, _: &jitgate_engine::access::AccessRequest) {}
    }
    let Some(base) = test_url("a_put_through_one_replica_reaches_the_others_decisions") else {
        return;
    };
    let scratch = Scratch::new(&base, "entities").unwrap();
    let a = authorizer(Arc::new(PgStore::open(&scratch.url()).unwrap()));
    let store_b = Arc::new(PgStore::open(&scratch.url()).unwrap());
    let b = Arc::new(authorizer(store_b.clone()));
    let freshness = Arc::new(Freshness::new(Duration::from_secs(2)));
    let stats = Arc::new(FollowStats::default());
    let _follower = Follower::start(
        store_b,
        b.clone(),
        freshness,
        Arc::new(Nothing),
        stats.clone(),
        FollowOptions {
            resync_every: Duration::from_secs(600),
            heartbeat_every: Duration::from_millis(200),
        },
    )
    .unwrap();
    let start = Instant::now();
    while stats.resyncs.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the follower never connected"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    a.put_entities(vec![memo("bob")]).unwrap();
    let until = |want: Effect| {
        let start = Instant::now();
        while effect(&b, "bob", "PUT", "/docs/plans/memo") != want {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "replica b never decided {want:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        start.elapsed()
    };
    let took = until(Effect::Allow);
    eprintln!("put reached the other replica in {took:?}");
    a.delete_entities(&[EntityRef::new("Document", "memo")])
        .unwrap();
    until(Effect::Deny);
}
