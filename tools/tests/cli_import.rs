//! `jitgate import cedar-app` on a small Cedar application written for this test (not public example data): its
//! files are copied unchanged, its template links and requests translated, and `jitgate check` on the result runs
//! the requests as cases, so a request whose expected decision the engine does not reproduce fails the check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Output;

mod run_cli;
use run_cli::jitgate;

fn all(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A library application laid out as the Cedar CLI's examples are: its own `User` and `Role` types (none of
/// jitgate's), a policy without `@id`, a template with a link in the CLI's `linked` form, a `datetime` in the
/// context, and requests in ALLOW/ and DENY/.
const POLICIES: &str = r#"// Members read every book.
permit (principal in Role::"member", action == Action::"borrow", resource)
when { context.now < resource.due_back };

@id("curator")
permit (principal == ?principal, action == Action::"retire", resource in ?resource);

@id("no-rare-books")
forbid (principal, action == Action::"borrow", resource)
when { resource.rare };
"#;

const SCHEMA: &str = r#"entity Role;
entity User in [Role];
entity Shelf;
entity Book in [Shelf] = { rare: Bool, due_back: datetime };
action borrow appliesTo { principal: User, resource: Book, context: { now: datetime } };
action retire appliesTo { principal: User, resource: Book };
"#;

const ENTITIES: &str = r#"[
  {"uid": {"type": "Role", "id": "member"}, "attrs": {}, "parents": []},
  {"uid": {"type": "User", "id": "ada"}, "attrs": {}, "parents": [{"type": "Role", "id": "member"}]},
  {"uid": {"type": "User", "id": "bo"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Shelf", "id": "history"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Book", "id": "b1"}, "attrs": {"rare": false, "due_back": {"__extn": {"fn": "datetime", "arg": "2030-01-01"}}},
   "parents": [{"type": "Shelf", "id": "history"}]},
  {"uid": {"type": "Book", "id": "b2"}, "attrs": {"rare": true, "due_back": {"__extn": {"fn": "datetime", "arg": "2030-01-01"}}},
   "parents": [{"type": "Shelf", "id": "history"}]}
]"#;

const LINKED: &str = r#"[
  {"template_id": "curator", "link_id": "bo-curates-history",
   "args": {"?principal": "User::\"bo\"", "?resource": "Shelf::\"history\""}}
]"#;

fn request(principal: &str, action: &str, resource: &str) -> String {
    serde_json::json!({
        "principal": format!("User::\"{principal}\""),
        "action": format!("Action::\"{action}\""),
        "resource": format!("Book::\"{resource}\""),
        "context": if action == "borrow" {
            serde_json::json!({"now": {"fn": "datetime", "arg": "2026-11-23"}})
        } else {
            serde_json::json!({})
        },
    })
    .to_string()
}

/// Imports `app` into `out` (with `--lenient` when `lenient`), which must succeed; returns `out`.
fn import(app: &Path, out: &Path, lenient: bool) -> std::path::PathBuf {
    let (app, out_s) = (app.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["import", "cedar-app", app, "--out", out_s];
    if lenient {
        args.push("--lenient");
    }
    let o = jitgate(&args);
    assert!(o.status.success(), "{}", all(&o));
    out.to_path_buf()
}

fn write_app(dir: &Path) {
    std::fs::create_dir_all(dir.join("ALLOW")).unwrap();
    std::fs::create_dir_all(dir.join("DENY")).unwrap();
    std::fs::write(dir.join("policies.cedar"), POLICIES).unwrap();
    std::fs::write(dir.join("library.cedarschema"), SCHEMA).unwrap();
    std::fs::write(dir.join("entities.json"), ENTITIES).unwrap();
    std::fs::write(dir.join("linked"), LINKED).unwrap();
    std::fs::write(
        dir.join("ALLOW/ada_borrows.json"),
        request("ada", "borrow", "b1"),
    )
    .unwrap();
    std::fs::write(
        dir.join("ALLOW/bo_retires.json"),
        request("bo", "retire", "b2"),
    )
    .unwrap();
    std::fs::write(
        dir.join("DENY/ada_borrows_rare.json"),
        request("ada", "borrow", "b2"),
    )
    .unwrap();
    std::fs::write(
        dir.join("DENY/bo_borrows.json"),
        request("bo", "borrow", "b1"),
    )
    .unwrap();
}

#[test]
fn a_cedar_application_becomes_a_bundle_whose_check_runs_its_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("library");
    write_app(&app);
    let out = tmp.path().join("bundle");
    let o = jitgate(&[
        "import",
        "cedar-app",
        app.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", all(&o));
    assert!(
        all(&o).contains("1 link(s), 4 case(s) (2 allow, 2 deny)"),
        "{}",
        all(&o)
    );
    // Policies, schema and entity data are copied byte for byte: no policy is rewritten.
    for (from, to) in [
        ("policies.cedar", "policies/policies.cedar"),
        ("library.cedarschema", "library.cedarschema"),
        ("entities.json", "entities.json"),
    ] {
        assert_eq!(
            std::fs::read(app.join(from)).unwrap(),
            std::fs::read(out.join(to)).unwrap(),
            "{to}"
        );
    }
    let links: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("links.json")).unwrap()).unwrap();
    assert_eq!(
        links,
        serde_json::json!([{"id": "bo-curates-history", "template": "curator",
            "values": {"?principal": {"type": "User", "id": "bo"}, "?resource": {"type": "Shelf", "id": "history"}}}])
    );

    let check = jitgate(&["check", out.to_str().unwrap()]);
    let text = all(&check);
    assert!(check.status.success(), "{text}");
    // The policy without @id is named as the Cedar CLI names it, and check warns about it.
    assert!(
        text.contains("warning") && text.contains("`policy0`"),
        "{text}"
    );
    assert!(text.contains("4 passed"), "{text}");

    // A request whose expected decision the engine does not give fails the check, naming the file.
    std::fs::write(
        app.join("ALLOW/bo_borrows_too.json"),
        request("bo", "borrow", "b1"),
    )
    .unwrap();
    let again = jitgate(&[
        "import",
        "cedar-app",
        app.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!again.status.success(), "a non-empty --out needs --force");
    assert!(all(&again).contains("--force"), "{}", all(&again));
    let forced = jitgate(&[
        "import",
        "cedar-app",
        app.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--force",
    ]);
    assert!(forced.status.success(), "{}", all(&forced));
    let check = jitgate(&["check", out.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(1), "{}", all(&check));
    assert!(
        all(&check).contains("ALLOW/bo_borrows_too.json"),
        "{}",
        all(&check)
    );
}

#[test]
fn an_application_without_a_schema_is_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    write_app(&app);
    std::fs::remove_file(app.join("library.cedarschema")).unwrap();
    let out = tmp.path().join("bundle");
    let o = jitgate(&[
        "import",
        "cedar-app",
        app.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", all(&o));
    assert!(all(&o).contains("no schema"), "{}", all(&o));
    assert!(!out.exists(), "nothing is written");
}

/// A policy Cedar's strict validator rejects refuses the imported bundle (exit 2, naming it); with `--lenient` the
/// bundle loads, `check` prints the finding as a warning, and the requests that policy errs on are denies naming it.
#[test]
fn lenient_imports_load_what_strict_validation_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("library");
    write_app(&app);
    let mut policies = POLICIES.to_string();
    policies.push_str(
        "\n@id(\"odd\")\npermit (principal, action == Action::\"retire\", resource) when { resource.rare > 1 };\n",
    );
    std::fs::write(app.join("policies.cedar"), policies).unwrap();

    let strict = import(&app, &tmp.path().join("strict"), false);
    let check = jitgate(&["check", strict.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(2), "{}", all(&check));
    assert!(all(&check).contains("policy `odd`"), "{}", all(&check));

    let lenient = import(&app, &tmp.path().join("lenient"), true);
    assert!(
        std::fs::read_to_string(lenient.join("bundle.toml"))
            .unwrap()
            .contains("validation = \"warn\""),
    );
    let check = jitgate(&["check", lenient.to_str().unwrap()]);
    let text = all(&check);
    assert_eq!(check.status.code(), Some(1), "{text}");
    assert!(
        text.contains("warning") && text.contains("policy `odd`"),
        "{text}"
    );
    assert!(
        text.contains("3 passed, 1 failed") && text.contains("erred:    odd"),
        "{text}"
    );
}

/// Entity data that does not fit the application's schema (a type it does not declare, a parent type it does not
/// allow), as applications whose own tests run `cedar authorize` without `--schema` carry: strict refuses the bundle
/// naming the entity; with `--lenient` the data is read without the schema (a warning per entity), the request that
/// needs it is allowed, as Cedar allows it, and so is a request for an action the schema does not declare.
#[test]
fn lenient_imports_read_entity_data_the_schema_refuses_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("library");
    write_app(&app);
    let mut entities: Vec<serde_json::Value> = serde_json::from_str(ENTITIES).unwrap();
    entities.push(
        serde_json::json!({"uid": {"type": "Club", "id": "readers"}, "attrs": {},
        "parents": [{"type": "Role", "id": "member"}]}),
    );
    entities.push(
        serde_json::json!({"uid": {"type": "User", "id": "cy"}, "attrs": {},
        "parents": [{"type": "Club", "id": "readers"}]}),
    );
    std::fs::write(
        app.join("entities.json"),
        serde_json::to_string_pretty(&entities).unwrap(),
    )
    .unwrap();
    std::fs::write(
        app.join("ALLOW/cy_borrows.json"),
        request("cy", "borrow", "b1"),
    )
    .unwrap();
    // A request for an action the schema does not declare, which Cedar without a schema decides: a policy whose
    // action is unconstrained allows it.
    let mut policies = POLICIES.to_string();
    policies.push_str(
        "\n@id(\"cy-any\")\npermit (principal == User::\"cy\", action, resource is Book);\n",
    );
    std::fs::write(app.join("policies.cedar"), policies).unwrap();
    std::fs::write(
        app.join("ALLOW/cy_repairs.json"),
        request("cy", "repair", "b2"),
    )
    .unwrap();

    let strict = import(&app, &tmp.path().join("strict"), false);
    let check = jitgate(&["check", strict.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(2), "{}", all(&check));
    assert!(all(&check).contains("Club::\"readers\""), "{}", all(&check));

    let lenient = import(&app, &tmp.path().join("lenient"), true);
    let check = jitgate(&["check", lenient.to_str().unwrap()]);
    let text = all(&check);
    assert_eq!(check.status.code(), Some(0), "{text}");
    assert!(
        text.contains("warning")
            && text.contains("User::\"cy\"")
            && text.contains("read without the schema"),
        "{text}"
    );
    assert!(text.contains("6 passed, 0 failed"), "{text}");
}
