//! `jitgate entities put|get|delete` with the real binary against a real `jitgate serve` (SQLite store) running the
//! docs example bundle with the entity-data actions permitted to SREs: what is put is read back and decides, bad
//! entity data is refused with line, uid and attribute (exit 2, nothing stored), a caller the policies refuse gets
//! a clear refusal, and bad arguments are usage errors (exit 2).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod run_cli;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use run_cli::{Served, copy_dir};

fn jitgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jitgate"))
}

/// The docs example bundle in `dir`, `writeEntities` / `readEntities` declared and permitted to SREs.
fn bundle(dir: &Path) -> PathBuf {
    let dst = dir.join("bundle");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/docs-cedar"),
        &dst,
    );
    let schema = dst.join("schema.cedarschema");
    let mut text = std::fs::read_to_string(&schema).unwrap();
    text.push_str(
        "\naction writeEntities, readEntities\n  appliesTo { principal: [User, Workload], resource: [Service], \
         context: LifecycleContext };\n",
    );
    std::fs::write(&schema, text).unwrap();
    std::fs::write(
        dst.join("policies/entities-admin.cedar"),
        "@id(\"sre-entities\")\npermit (principal in Group::\"sre\", action in [Action::\"writeEntities\", \
         Action::\"readEntities\"], resource == Service::\"jitgate\");\n",
    )
    .unwrap();
    dst
}

fn serve(dir: &Path) -> Served {
    let config = dir.join("jitgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[bundle]\npath = \"{}\"\n\
             watch = false\n[store]\npath = \"{}\"\n[log]\npath = \"{}\"\n[local_issuer]\nkey_file = \"{}\"\n\
             issuer = \"jitgate\"\naudience = \"jitgate\"\n[upstreams.docs]\nurl = \"http://127.0.0.1:9\"\n",
            bundle(dir).display(),
            dir.join("state.db").display(),
            dir.join("decisions.db").display(),
            dir.join("key.pem").display(),
        ),
    )
    .unwrap();
    run_cli::serve(&config).unwrap_or_else(|e| panic!("serve never listened: {e}"))
}

fn token(dir: &Path, who: &str, groups: &str) -> String {
    let out = jitgate()
        .args(["dev-token", "--key-file"])
        .arg(dir.join("key.pem"))
        .args([
            "--principal",
            &format!("User::\"{who}\""),
            "--groups",
            groups,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn run(s: &Served, token: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = jitgate()
        .arg("entities")
        .args(args)
        .args(["--admin", &s.admin, "--token", token])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn put_get_delete_through_the_admin_api_with_clear_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path());
    let sam = token(dir.path(), "sam", "sre");
    let memo = r#"[
  {"uid": {"type": "Document", "id": "memo"},
   "attrs": {"owner": {"type": "User", "id": "bob"}, "classification": 1},
   "parents": [{"type": "Folder", "id": "plans"}]}
]"#;
    let file = dir.path().join("memo.json");
    std::fs::write(&file, memo).unwrap();

    let o = run(&s, &sam, &["put", file.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        text(&o.stdout).trim(),
        "stored 1 entities (1 in the store now)"
    );
    let o = run(&s, &sam, &["get", "--type", "Document"], None);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        got,
        serde_json::from_str::<serde_json::Value>(memo).unwrap()
    );

    // Bad entity data from stdin: every problem with its line, uid and attribute; nothing stored.
    let bad = "[\n  {\"uid\": {\"type\": \"Document\", \"id\": \"memo\"},\n   \"attrs\": {\"owner\": {\"type\": \
               \"User\", \"id\": \"carol\"}, \"classification\": \"high\"}, \"parents\": []}\n]";
    let o = run(&s, &sam, &["put", "-"], Some(bad));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = text(&o.stderr);
    assert!(err.contains("nothing was stored"), "{err}");
    assert!(
        err.contains("line 2: entity Document::\"memo\", attribute `classification`"),
        "{err}"
    );
    let o = run(
        &s,
        &sam,
        &["get", "--type", "Document", "--id", "memo"],
        None,
    );
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(got[0]["attrs"]["owner"]["id"], "bob");

    // A caller the policies refuse.
    let alice = token(dir.path(), "alice", "engineering");
    let o = run(&s, &alice, &["delete", "Document::\"memo\""], None);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(text(&o.stderr).contains("forbidden (403)"), "{o:?}");

    // Bad arguments: no request is sent.
    let o = run(&s, &sam, &["delete", "memo"], None);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        text(&o.stderr).contains("invalid entity reference `memo`"),
        "{o:?}"
    );
    let o = run(&s, &sam, &["put", "/no/such/file.json"], None);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        text(&o.stderr).contains("cannot read /no/such/file.json"),
        "{o:?}"
    );

    let o = run(&s, &sam, &["delete", "Document::\"memo\""], None);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(text(&o.stdout).trim(), "deleted 1 entities");
    let o = run(&s, &sam, &["get"], None);
    assert_eq!(text(&o.stdout).trim(), "[]");
}
