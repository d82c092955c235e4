//! Entity data in the store's form outside the proxy: `jitgate eval --entities FILE` and `--store PATH|URL` (a SQLite
//! file; a PostgreSQL store with `JITGATE_TEST_POSTGRES`; without a value, the store of `--config`) put it over a
//! bundle's own data as the running proxy puts the store's, and a policy suite's `store_entities` does the same, for
//! the shipped docs example in Cedar and in Rego (a copy whose policy reads `data.jitgate.entities`). Bad data is
//! exit 2 with file, line and uid.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Output;

mod run_cli;
use run_cli::{copy_dir, jitgate, repo};

use jitgate_engine::EntityRef;
use jitgate_engine::store::{EntityStore, StoredEntity};
use serde_json::json;

fn all(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A memo in the plans folder owned by bob, in the store's form.
fn memo() -> serde_json::Value {
    json!({
        "uid": {"type": "Document", "id": "memo"},
        "attrs": {"owner": {"type": "User", "id": "bob"}, "classification": 1},
        "parents": [{"type": "Folder", "id": "plans"}]
    })
}

/// The store-form file holding the memo.
fn store_file(dir: &Path) -> PathBuf {
    let path = dir.join("store.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json!([memo()])).unwrap(),
    )
    .unwrap();
    path
}

/// The Rego docs example with one more definition of `owner-edits`: the owner the store's data names.
fn rego_bundle(dir: &Path) -> PathBuf {
    let dst = dir.join("docs-rego");
    copy_dir(&repo().join("policies/docs-rego"), &dst);
    std::fs::write(
        dst.join("policies/store.rego"),
        "package jitgate.authz\n\nimport rego.v1\n\n\
         allow contains \"owner-edits\" if {\n\
         \tinput.action == \"editDocument\"\n\
         \tdata.jitgate.entities.Document[input.resource.id].attrs.owner.id == input.principal.id\n}\n",
    )
    .unwrap();
    dst
}

fn eval(bundle: &Path, who: &str, extra: &[&str]) -> Output {
    eval_from("--bundle", bundle, who, extra)
}

/// `eval FLAG PATH` (`--bundle DIR` or `--config FILE`) with `extra`, as `who` editing the memo, in JSON.
fn eval_from(flag: &str, path: &Path, who: &str, extra: &[&str]) -> Output {
    let principal = format!("User::\"{who}\"");
    let mut args = vec!["eval", flag, path.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "--principal",
        &principal,
        "--http",
        "PUT",
        "/docs/plans/memo",
        "--output",
        "json",
    ]);
    jitgate(&args)
}

fn decision(o: &Output) -> (Option<i32>, String, serde_json::Value) {
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", all(o)));
    (
        o.status.code(),
        v["decision"]["effect"].as_str().unwrap_or("").to_string(),
        v["decision"]["policies"].clone(),
    )
}

#[test]
fn eval_puts_an_entities_file_over_the_bundle_data_in_cedar_and_rego() {
    let dir = tempfile::tempdir().unwrap();
    let file = store_file(dir.path());
    let file = file.to_str().unwrap();
    let cedar = repo().join("policies/docs-cedar");
    let rego = rego_bundle(dir.path());
    for bundle in [&cedar, &rego] {
        // Without the data the memo is nobody's.
        let (code, effect, _) = decision(&eval(bundle, "bob", &[]));
        assert_eq!(
            (code, effect.as_str()),
            (Some(1), "deny"),
            "{}",
            bundle.display()
        );
        // With it, bob owns the memo: he edits it, alice does not.
        let o = eval(bundle, "bob", &["--entities", file]);
        let (code, effect, policies) = decision(&o);
        assert_eq!(
            (code, effect.as_str(), policies),
            (Some(0), "allow", json!(["owner-edits"])),
            "{}: {}",
            bundle.display(),
            all(&o)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["store_entities"], 1);
        let (code, _, _) = decision(&eval(bundle, "alice", &["--entities", file]));
        assert_eq!(code, Some(1), "{}", bundle.display());
    }
}

#[test]
fn eval_reads_the_entity_data_of_a_store_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jitgate.db");
    store_with_memo(&db, "bob");
    let cedar = repo().join("policies/docs-cedar");
    let o = eval(&cedar, "bob", &["--store", db.to_str().unwrap()]);
    assert_owner_edits(&o);
    let rego = rego_bundle(dir.path());
    let (code, _, _) = decision(&eval(&rego, "bob", &["--store", db.to_str().unwrap()]));
    assert_eq!(code, Some(0));

    // No store there: exit 2, and no file is made.
    let missing = dir.path().join("none.db");
    let o = jitgate(&[
        "eval",
        "--bundle",
        cedar.to_str().unwrap(),
        "--principal",
        "User::\"bob\"",
        "--http",
        "PUT",
        "/docs/plans/memo",
        "--store",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", all(&o));
    assert!(all(&o).contains("no store file"), "{}", all(&o));
    assert!(!missing.exists());
}

#[test]
fn eval_reads_the_entity_data_of_a_postgres_store() {
    let Some(base) = jitgate_engine::postgres::scratch::test_url("eval_store_postgres") else {
        return;
    };
    let scratch = jitgate_engine::postgres::scratch::Scratch::new(&base, "eval_store").unwrap();
    let url = scratch.url();
    jitgate_engine::postgres::PgStore::open(&url)
        .unwrap()
        .put_entities(&[StoredEntity {
            uid: EntityRef::new("Document", "memo"),
            data: memo(),
            updated_at: 0,
        }])
        .unwrap();
    let cedar = repo().join("policies/docs-cedar");
    let o = eval(&cedar, "bob", &["--store", &url]);
    assert_owner_edits(&o);
    let (code, _, _) = decision(&eval(&cedar, "alice", &["--store", &url]));
    assert_eq!(code, Some(1));
}

#[test]
fn bad_entity_data_is_exit_2_naming_file_line_and_uid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(
        &path,
        "[\n  {\"uid\": {\"type\": \"Folder\", \"id\": \"new\"}, \"attrs\": {}, \"parents\": []},\n  \
         {\"uid\": {\"type\": \"Document\", \"id\": \"memo\"}, \"attrs\": {\"owner\": {\"type\": \"User\", \
         \"id\": \"bob\"}, \"classification\": \"high\"}, \"parents\": []}\n]\n",
    )
    .unwrap();
    let cedar = repo().join("policies/docs-cedar");
    let o = eval(&cedar, "bob", &["--entities", path.to_str().unwrap()]);
    let out = all(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains(&format!("{}:3:", path.display())), "{out}");
    assert!(out.contains("Document::\"memo\""), "{out}");
    assert!(out.contains("classification"), "{out}");
}

/// A suite over both bundles whose one case needs the memo's owner from `store` (when given).
fn suite(dir: &Path, rego: &Path, store: Option<&Path>) -> PathBuf {
    let path = dir.join(if store.is_some() {
        "with-store.yaml"
    } else {
        "without-store.yaml"
    });
    let store_line = store
        .map(|s| format!("store_entities: \"{}\"\n", s.display()))
        .unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            "name: store data\nbundles: [\"{}\", \"{}\"]\nnow: 2026-11-23T10:00:00Z\n{store_line}\
             principals:\n  User::\"bob\": {{}}\n  User::\"alice\": {{}}\ncases:\n\
             \x20 - name: the owner the store names edits the memo\n    principal: User::\"bob\"\n\
             \x20   http: {{ method: PUT, path: /docs/plans/memo }}\n\
             \x20   expect: {{ decision: allow, policies: [owner-edits] }}\n\
             \x20 - name: nobody else does\n    principal: User::\"alice\"\n\
             \x20   http: {{ method: PUT, path: /docs/plans/memo }}\n    expect: {{ decision: deny }}\n",
            repo().join("policies/docs-cedar").display(),
            rego.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_suite_names_store_entity_data_for_cedar_and_rego_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let rego = rego_bundle(dir.path());
    let file = store_file(dir.path());
    let with = suite(dir.path(), &rego, Some(&file));
    let o = jitgate(&["test", with.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", all(&o));
    assert!(all(&o).contains("4 passed, 0 failed"), "{}", all(&o));

    // The same cases without the data: the owner's case fails on both bundles (and Cedar's deny of the other is an
    // error on the missing owner, which that case does not expect).
    let without = suite(dir.path(), &rego, None);
    let o = jitgate(&["test", without.to_str().unwrap()]);
    let out = all(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("1 passed, 3 failed"), "{out}");
    assert_eq!(
        out.matches("FAIL  the owner the store names edits the memo")
            .count(),
        2,
        "{out}"
    );

    // A store file that does not fit: broken, exit 2, naming the file.
    std::fs::write(
        &file,
        "[{\"uid\": {\"type\": \"Nope\", \"id\": \"x\"}, \"attrs\": {}}]",
    )
    .unwrap();
    let o = jitgate(&["test", with.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", all(&o));
    assert!(all(&o).contains(&file.display().to_string()), "{}", all(&o));
}

/// A serve config whose bundle is the Cedar docs example and whose store is the SQLite file `db`.
fn store_config(dir: &Path, db: &Path) -> PathBuf {
    let path = dir.join("jitgate.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[bundle]\npath = \"{}\"\nwatch = false\n[store]\npath = \"{}\"\n",
            repo().join("policies/docs-cedar").display(),
            db.display()
        ),
    )
    .unwrap();
    path
}

/// A SQLite store file at `db` holding the memo, owned by `owner`.
/// `o` is an allow of the memo's edit by the owner's policy (exit 0, `owner-edits`).
fn assert_owner_edits(o: &Output) {
    let (code, effect, policies) = decision(o);
    assert_eq!(
        (code, effect.as_str(), policies),
        (Some(0), "allow", json!(["owner-edits"])),
        "{}",
        all(o)
    );
}

fn store_with_memo(db: &Path, owner: &str) {
    let mut data = memo();
    data["attrs"]["owner"]["id"] = json!(owner);
    let store = jitgate_engine::sqlite::SqliteStore::open(db).unwrap();
    store
        .put_entities(&[StoredEntity {
            uid: EntityRef::new("Document", "memo"),
            data,
            updated_at: 0,
        }])
        .unwrap();
}

/// `eval --config FILE` with `extra`, as `who` editing the memo, in JSON.
fn eval_config(config: &Path, who: &str, extra: &[&str]) -> Output {
    eval_from("--config", config, who, extra)
}

#[test]
fn eval_store_without_a_value_reads_the_store_of_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    store_with_memo(&db, "bob");
    let config = store_config(dir.path(), &db);

    // `--store` alone (followed by another flag): the config's store, where bob owns the memo.
    let o = eval_config(&config, "bob", &["--store"]);
    assert_owner_edits(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["store_entities"], 1, "{}", all(&o));
    let (code, _, _) = decision(&eval_config(&config, "alice", &["--store"]));
    assert_eq!(code, Some(1));

    // Without `--store` the config's store is not read: the memo is nobody's.
    let o = eval_config(&config, "bob", &[]);
    let (code, effect, _) = decision(&o);
    assert_eq!((code, effect.as_str()), (Some(1), "deny"), "{}", all(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v.get("store_entities").is_none(), "{}", all(&o));

    // A value names another store, which wins over the config's: there alice owns the memo.
    let other = dir.path().join("other.db");
    store_with_memo(&other, "alice");
    let o = eval_config(&config, "alice", &["--store", other.to_str().unwrap()]);
    let (code, effect, _) = decision(&o);
    assert_eq!((code, effect.as_str()), (Some(0), "allow"), "{}", all(&o));
    let (code, _, _) = decision(&eval_config(
        &config,
        "bob",
        &["--store", other.to_str().unwrap()],
    ));
    assert_eq!(code, Some(1));

    // `--store` alone with no `--config`: exit 2, saying what to give.
    let o = jitgate(&[
        "eval",
        "--bundle",
        repo().join("policies/docs-cedar").to_str().unwrap(),
        "--store",
        "--principal",
        "User::\"bob\"",
        "--http",
        "PUT",
        "/docs/plans/memo",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", all(&o));
    assert!(all(&o).contains("--config"), "{}", all(&o));

    // The config names a store file that is not there: exit 2, and none is made.
    let missing = dir.path().join("none.db");
    let config = store_config(dir.path(), &missing);
    let o = eval_config(&config, "bob", &["--store"]);
    assert_eq!(o.status.code(), Some(2), "{}", all(&o));
    assert!(all(&o).contains("no store file"), "{}", all(&o));
    assert!(!missing.exists());
}
