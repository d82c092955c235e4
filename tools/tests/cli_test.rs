//! Runs the built `jitgate` binary: `test` and `check` exit 0 / 1 / 2 as documented, and the JUnit output is XML.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod run_cli;
use run_cli::{copy_dir, jitgate, repo};

/// A decision record: `User::"a"` reads `Doc::"<doc>"`.
fn doc_record(
    doc: &str,
    outcome: jitgate_engine::log::Outcome,
) -> jitgate_engine::log::DecisionRecord {
    jitgate_engine::log::DecisionRecord::decision(
        r#"User::"a""#,
        r#"Action::"read""#,
        format!(r#"Doc::"{doc}""#),
        outcome,
    )
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn wrong_suite(dir: &Path) -> PathBuf {
    let path = dir.join("wrong.yaml");
    let cedar = repo().join("policies/quickstart-cedar");
    std::fs::write(
        &path,
        format!(
            "name: wrong\nbundles: [\"{}\"]\nnow: 2026-11-23T10:00:00Z\ncontext: {{ source_ip: 10.1.2.3 }}\n\
             cases:\n  - name: nobody may list payments\n    principal: User::\"x\"\n    groups: [engineering]\n\
             \x20   http: {{ method: GET, path: /payments }}\n    expect: {{ decision: deny }}\n",
            cedar.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn test_passes_on_the_shipped_suites_by_default() {
    let o = jitgate(&["test"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
    assert!(
        out.contains("coverage: policies/quickstart-cedar [cedar]"),
        "{out}"
    );
}

#[test]
fn test_exits_1_on_a_failing_case_and_prints_the_rerun_command() {
    let dir = tempfile::tempdir().unwrap();
    let suite = wrong_suite(dir.path());
    let o = jitgate(&["test", suite.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL  nobody may list payments"), "{out}");
    assert!(out.contains("decision: expected deny, got allow"), "{out}");
    assert!(out.contains("--run '^nobody may list payments$'"), "{out}");
    assert!(out.contains("0 passed, 1 failed"), "{out}");
}

#[test]
fn test_exits_2_on_a_broken_suite_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, "name: b\nbundles: [x]\nnow: 2026-11-23T10:00:00Z\ncases:\n  - name: a\n    principal: nobody\n").unwrap();
    let o = jitgate(&["test", path.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains(&format!("{}:6:", path.display())), "{out}");
    // A missing path is broken too.
    assert_eq!(jitgate(&["test", "no/such/dir"]).status.code(), Some(2));
}

#[test]
fn run_filter_and_bundle_override() {
    let o = jitgate(&[
        "test",
        "policy-tests",
        "--run",
        "^a refund at 08:00:00 is allowed$",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("2 passed, 0 failed"),
        "one case on each of the two bundles: {out}"
    );
    let o = jitgate(&[
        "test",
        "policy-tests/time-and-network.yaml",
        "--bundle",
        "policies/quickstart-rego",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("rego: 10") && !out.contains("cedar:"), "{out}");
    // A filter matching nothing is not a pass.
    assert_eq!(
        jitgate(&["test", "--run", "^no such case$"]).status.code(),
        Some(1)
    );
}

#[test]
fn junit_and_json_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let suite = wrong_suite(dir.path());
    let o = jitgate(&["test", suite.to_str().unwrap(), "--format", "junit"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(1));
    assert!(out.starts_with("<?xml"), "{out}");
    assert!(
        out.contains("<testsuites") && out.contains("</testsuites>"),
        "{out}"
    );
    assert!(
        out.contains("<failure") && out.contains("nobody may list payments"),
        "{out}"
    );
    let o = jitgate(&[
        "test",
        "policy-tests/standing-access.yaml",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["failed"], 0);
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["suites"][0]["runs"].as_array().unwrap().len(), 2);
}

#[test]
fn check_loads_bundles_and_reports_broken_ones() {
    let o = jitgate(&[
        "check",
        "policies/quickstart-cedar",
        "policies/quickstart-rego",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("engine cedar") && out.contains("engine rego"),
        "{out}"
    );
    assert!(out.contains("25 policies, 11 routes"), "{out}");
    // Every quickstart Rego rule starts with an action guard, so every one is indexed.
    assert!(
        out.contains("action index: 25 of 25 decision rules guarded by action"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bundle.toml"),
        "name = \"x\"\nengine = \"cedar\"\npolicies = [\"p\"]\nbogus = 1\n",
    )
    .unwrap();
    let o = jitgate(&["check", dir.path().to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("bundle.toml:4:"), "{out}");
}

/// A bundle's own `tests` run against that bundle (their suites need not name it), and a failing one fails check.
#[test]
fn check_runs_the_tests_a_bundle_lists() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b");
    copy_dir(&repo().join("policies/quickstart-cedar"), &bundle);
    let manifest = std::fs::read_to_string(bundle.join("bundle.toml")).unwrap();
    // The shipped manifest lists `tests` (its smoke suite); older copies had `tests = []`.
    let manifest = manifest.replace("tests = []", "tests = [\"tests\"]");
    assert!(manifest.contains("tests = [\"tests\"]"));
    std::fs::write(bundle.join("bundle.toml"), manifest).unwrap();
    std::fs::create_dir_all(bundle.join("tests")).unwrap();
    // Only this test's own suite: the shipped smoke suite would change the counts checked below.
    let _ = std::fs::remove_file(bundle.join("tests/smoke.yaml"));
    let suite = "name: own\nnow: 2026-11-23T10:00:00Z\ncontext: { source_ip: 10.1.2.3 }\ncases:\n  - name: engineers list payments\n    \
                 principal: User::\"a\"\n    groups: [engineering]\n    http: { method: GET, path: /payments }\n    expect: { decision: EXPECT }\n";
    std::fs::write(
        bundle.join("tests/own.yaml"),
        suite.replace("EXPECT", "allow"),
    )
    .unwrap();
    let o = jitgate(&["check", bundle.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("1 test file(s)") && out.contains("1 passed, 0 failed"),
        "{out}"
    );
    std::fs::write(
        bundle.join("tests/own.yaml"),
        suite.replace("EXPECT", "deny"),
    )
    .unwrap();
    let o = jitgate(&["check", bundle.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn check_runs_rego_test_rules() {
    let o = jitgate(&["check", "policies/quickstart-rego"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("Rego test rules of policies/quickstart-rego"),
        "{out}"
    );
}

#[test]
fn decisions_verify_names_acknowledged_records_still_in_the_journal() {
    use jitgate_engine::log::{LogOptions, LogWriter, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("decisions.db");
    let w = LogWriter::start(&db, LogOptions::default()).unwrap();
    let first = doc_record("d", Outcome::Allow);
    w.append(first).unwrap().wait().unwrap();
    w.shutdown().unwrap();
    // Two acknowledged records a killed proxy left in its journal.
    let mut journal = Vec::new();
    for i in 0..2 {
        let r = doc_record(&format!("j{i}"), Outcome::Deny);
        journal.extend(serde_json::to_vec(&r).unwrap());
        journal.push(b'\n');
    }
    std::fs::write(dir.path().join("decisions.db.journal.1"), journal).unwrap();
    let db_arg = db.to_str().unwrap();

    let out = jitgate(&["decisions", "verify", "--log", db_arg]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("intact: 1 records"), "{said}");
    assert!(
        said.contains("note: 2 acknowledged records are in the journal"),
        "{said}"
    );

    // The next start commits them; then the chain holds all three and nothing is pending.
    LogWriter::start(&db, LogOptions::default())
        .unwrap()
        .shutdown()
        .unwrap();
    let out = jitgate(&["decisions", "verify", "--log", db_arg]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("intact: 3 records"), "{said}");
    assert!(!said.contains("note:"), "{said}");
}

#[test]
fn decisions_tail_follow_prints_records_as_they_are_committed() {
    use jitgate_engine::log::{DecisionRecord, LogOptions, LogWriter, Outcome};
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("decisions.db");
    let w = LogWriter::start(&db, LogOptions::default()).unwrap();
    let append = |doc: &str| {
        let r = doc_record(doc, Outcome::Allow);
        w.append(r).unwrap().wait().unwrap();
    };
    for doc in ["d1", "d2", "d3"] {
        append(doc);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args([
            "decisions",
            "tail",
            "-n",
            "2",
            "--follow",
            "--interval",
            "20ms",
            "--json",
            "--log",
        ])
        .arg(&db)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Lines arrive on a channel so that a hung command fails the test instead of hanging it.
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            if tx.send(l.unwrap()).is_err() {
                break;
            }
        }
    });
    let next = || {
        let l = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a record line from tail --follow");
        let r: DecisionRecord = serde_json::from_str(&l).unwrap();
        (r.seq, r.resource)
    };
    assert_eq!(
        next(),
        (2, r#"Doc::"d2""#.to_string()),
        "the newest two first"
    );
    assert_eq!(next(), (3, r#"Doc::"d3""#.to_string()));
    // Committed while the command runs: printed once each, in order.
    append("d4");
    append("d5");
    assert_eq!(next(), (4, r#"Doc::"d4""#.to_string()));
    assert_eq!(next(), (5, r#"Doc::"d5""#.to_string()));
    assert!(
        lines.recv_timeout(Duration::from_millis(200)).is_err(),
        "nothing is printed twice"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    w.shutdown().unwrap();
}

#[test]
fn decisions_tail_refuses_a_bad_interval_and_a_missing_log_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("decisions.db");
    let db_arg = db.to_str().unwrap();
    let o = jitgate(&[
        "decisions",
        "tail",
        "-f",
        "--interval",
        "soon",
        "--log",
        db_arg,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("invalid value 'soon' for '--interval"),
        "{}",
        text(&o)
    );
    let o = jitgate(&["decisions", "tail", "-f", "--log", db_arg]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("no decision log at"), "{}", text(&o));
    assert!(!db.exists(), "a missing log is not created by reading it");
}

#[test]
fn serve_refuses_a_bundle_that_fails_its_own_tests_and_creates_nothing() {
    // A restart is held to the reload gate: validation and the bundle's own tests.
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b");
    copy_dir(&repo().join("policies/quickstart-cedar"), &bundle);
    std::fs::write(
        bundle.join("policies/extra.cedar"),
        "@id(\"no-health\")\nforbid (principal, action == Action::\"health\", resource);\n",
    )
    .unwrap();
    let config = serve_config(dir.path(), &bundle, &["payments", "billing"]);
    let o = serve_until_exit(&config);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("refused")
            && out.contains("tests/smoke.yaml:")
            && out.contains("anyone calls the health check"),
        "the refusal names the suite, its line and the case: {out}"
    );
    for file in ["jitgate.db", "decisions.db", "key.pem"] {
        let state = dir.path().join("state");
        assert!(!state.join(file).exists(), "a refused start created {file}");
    }
}

/// Runs `jitgate serve --config config`, which must exit by itself (refuse to start) within 60 s.
fn serve_until_exit(config: &Path) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!(
                "serve started with {}: it should have refused",
                config.display()
            );
        }
    }
}

/// A config for `serve` in `dir`, on `bundle`, with an upstream for each of `services` (never contacted).
fn serve_config(dir: &Path, bundle: &Path, services: &[&str]) -> PathBuf {
    let state = dir.join("state");
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[bundle]\npath = \"{b}\"\n\
         [store]\npath = \"{s}/jitgate.db\"\n[log]\npath = \"{s}/decisions.db\"\n\
         [local_issuer]\nkey_file = \"{s}/key.pem\"\nissuer = \"jitgate\"\naudience = \"jitgate\"\n",
        b = bundle.display(),
        s = state.display()
    );
    for s in services {
        text.push_str(&format!("[upstreams.{s}]\nurl = \"http://127.0.0.1:9\"\n"));
    }
    let path = dir.join("jitgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_config_is_the_preflight_of_serve_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b");
    copy_dir(&repo().join("policies/quickstart-cedar"), &bundle);
    let state = dir.path().join("state");
    let created = || {
        ["jitgate.db", "decisions.db", "key.pem"]
            .into_iter()
            .filter(|f| state.join(f).exists())
            .collect::<Vec<_>>()
    };

    // Good: the config, the bundle and its smoke suite.
    let config = serve_config(dir.path(), &bundle, &["payments", "billing"]);
    let o = jitgate(&["check", "--config", config.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("jitgate.toml: ok")
            && out.contains("upstreams: billing, payments")
            && out.contains("key.pem does not exist yet")
            && out.contains("5 passed, 0 failed"),
        "{out}"
    );

    // A route to a service the config has no upstream for: exit 2, naming each such route by file and line.
    let config = serve_config(dir.path(), &bundle, &["payments"]);
    let o = jitgate(&["check", "--config", config.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    let manifest = std::fs::read_to_string(bundle.join("bundle.toml")).unwrap();
    let first_billing = manifest
        .lines()
        .position(|l| l.contains("service = \"billing\""))
        .unwrap();
    // The route's `[[routes]]` header is the line its diagnostic names.
    let header = manifest.lines().take(first_billing).collect::<Vec<_>>();
    let header_line = header
        .iter()
        .rposition(|l| l.trim() == "[[routes]]")
        .unwrap()
        + 1;
    assert!(
        out.contains(&format!("bundle.toml:{header_line}:1: route `"))
            && out.contains("service `billing` has no upstream in the config")
            && out.contains("bundle does not fit the config"),
        "{out}"
    );
    // serve refuses the same config for the same reason.
    let o = serve_until_exit(&config);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("service `billing` has no upstream"),
        "{}",
        text(&o)
    );

    // A TLS certificate that is not one: exit 2, naming the key and the file, and no "ok" for the config.
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate\n").unwrap();
    let tls = dir.path().join("tls.toml");
    std::fs::write(
        &tls,
        std::fs::read_to_string(&config).unwrap().replace(
            "[admin]\n",
            &format!(
                "[server.tls]\ncert = \"{c}\"\nkey = \"{c}\"\n[admin]\n",
                c = cert.display()
            ),
        ),
    )
    .unwrap();
    let o = jitgate(&["check", "--config", tls.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("server.tls: ") && out.contains("cert.pem") && !out.contains("tls.toml: ok"),
        "{out}"
    );

    // A bad key: exit 2, naming the key path; a failing bundle test: exit 1.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("[server]\n", "[server]\nlisten_port = 1\n"),
    )
    .unwrap();
    let o = jitgate(&["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("listen_port") && text(&o).contains("invalid config"),
        "{}",
        text(&o)
    );
    std::fs::write(
        bundle.join("policies/extra.cedar"),
        "@id(\"no-health\")\nforbid (principal, action == Action::\"health\", resource);\n",
    )
    .unwrap();
    let config = serve_config(dir.path(), &bundle, &["payments", "billing"]);
    let o = jitgate(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("FAIL  anyone calls the health check"),
        "{}",
        text(&o)
    );
    assert!(created().is_empty(), "check created {:?}", created());
}

/// A CA and a server certificate it signed for `localhost` and 127.0.0.1, written as `ca.pem`, `admin.pem` and
/// `admin.key` in `dir`.
fn admin_pki(dir: &Path) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "jitgate CLI test CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![
        rcgen::SanType::DnsName("localhost".try_into().unwrap()),
        rcgen::SanType::IpAddress([127, 0, 0, 1].into()),
    ];
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("admin.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("admin.key"), key.serialize_pem()).unwrap();
}

#[test]
fn the_cli_talks_to_an_https_admin_listener_it_trusts_with_admin_ca() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    admin_pki(dir.path());
    let bundle = repo().join("policies/quickstart-cedar");
    let config = serve_config(dir.path(), &bundle, &["payments", "billing"]);
    let with_tls = std::fs::read_to_string(&config).unwrap().replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[admin.tls]\ncert = \"{d}/admin.pem\"\nkey = \"{d}/admin.key\"\n",
            d = dir.path().display()
        ),
    );
    assert!(with_tls.contains("[admin.tls]"));
    std::fs::write(&config, with_tls).unwrap();
    // An SRE's token, signed with the key the proxy will load (operate is allowed to group sre).
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let key = dir.path().join("state/key.pem");
    let o = jitgate(&[
        "dev-token",
        "--key-file",
        key.to_str().unwrap(),
        "--principal",
        "User::\"sam\"",
        "--groups",
        "sre",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let token = String::from_utf8(o.stdout).unwrap().trim().to_string();

    let mut serve = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Ready once it logs that it is listening, with the admin listener's port (`admin=Some(127.0.0.1:PORT)`).
    let mut lines = std::io::BufReader::new(serve.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let port = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = serve.kill();
            panic!("serve ended before listening: {seen:#?}");
        };
        let port = line
            .contains("jitgate listening")
            .then(|| line.split_once("Some(127.0.0.1:"))
            .flatten()
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(port, _)| port.to_string());
        seen.push(line);
        if let Some(port) = port {
            break port;
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let admin = format!("https://localhost:{port}");
    let ca = dir.path().join("ca.pem");
    let status = |extra: &[&str]| {
        let mut args = vec![
            "status",
            "--admin",
            admin.as_str(),
            "--token",
            token.as_str(),
        ];
        args.extend_from_slice(extra);
        jitgate(&args)
    };
    let trusted = status(&["--admin-ca", ca.to_str().unwrap()]);
    let untrusted = status(&[]);
    let missing_ca = status(&["--admin-ca", "no-such-ca.pem"]);
    let _ = Command::new("kill").arg(serve.id().to_string()).status();
    let _ = serve.wait();

    assert_eq!(trusted.status.code(), Some(0), "{}", text(&trusted));
    assert!(text(&trusted).contains("revision"), "{}", text(&trusted));
    assert_ne!(untrusted.status.code(), Some(0), "{}", text(&untrusted));
    assert!(
        text(&untrusted).contains("cannot reach") || text(&untrusted).contains("certificate"),
        "{}",
        text(&untrusted)
    );
    assert_ne!(missing_ca.status.code(), Some(0));
    assert!(
        text(&missing_ca).contains("--admin-ca no-such-ca.pem"),
        "{}",
        text(&missing_ca)
    );
}

#[test]
fn ids_that_would_name_another_endpoint_are_refused_before_any_call() {
    // Nothing listens on port 1: a call that went out would fail with "cannot reach", not with the id's error.
    let conn = ["--admin", "http://127.0.0.1:1", "--token", "t"];
    for (args, what) in [
        (vec!["approve", "../grants/g1/drop?"], "request"),
        (vec!["deny", ".."], "request"),
        (vec!["revoke", "g1/../../requests/r1/approve"], "grant"),
        (vec!["drop", "g1?x=1"], "grant"),
        (vec!["token", "--grant", "g%2F1"], "grant"),
    ] {
        let mut all = args.clone();
        all.extend_from_slice(&conn);
        let o = jitgate(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains(&format!("is not a {what} id")),
            "{args:?}: {}",
            text(&o)
        );
    }
}

#[test]
fn export_never_writes_over_its_log_or_an_existing_file_and_leaves_nothing_half_written() {
    use jitgate_engine::log::{LogOptions, LogWriter, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("decisions.db");
    let w = LogWriter::start(&db, LogOptions::default()).unwrap();
    for i in 0..3 {
        let r = doc_record(&format!("d{i}"), Outcome::Allow);
        w.append(r).unwrap().wait().unwrap();
    }
    w.shutdown().unwrap();
    let db_arg = db.to_str().unwrap();
    let export = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["decisions", "export", "--log", db_arg, "--out"];
        args.push(out.to_str().unwrap());
        args.extend_from_slice(extra);
        jitgate(&args)
    };
    let intact = || {
        let o = jitgate(&["decisions", "verify", "--log", db_arg]);
        String::from_utf8_lossy(&o.stdout).starts_with("intact: 3 records")
    };

    // The log itself, or its WAL, even with --force (and through another spelling of the same path).
    let dotted = dir.path().join(".").join("decisions.db");
    for (out, extra) in [
        (db.clone(), vec![]),
        (dotted, vec!["--force"]),
        (dir.path().join("decisions.db-wal"), vec!["--force"]),
    ] {
        let o = export(&out, &extra);
        assert_eq!(o.status.code(), Some(2), "{}: {}", out.display(), text(&o));
        assert!(
            text(&o).contains("never writes over its source"),
            "{}",
            text(&o)
        );
        assert!(
            intact(),
            "the log is untouched after exporting to {}",
            out.display()
        );
    }

    // An existing file is replaced only with --force.
    let out = dir.path().join("out.jsonl");
    std::fs::write(&out, "keep me").unwrap();
    let o = export(&out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--force"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");
    let o = export(&out, &["--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 3);
    let o = jitgate(&["decisions", "verify", "--export", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // A manifest that cannot be written: nothing is left, not the export and not a partial file.
    let fresh = dir.path().join("fresh.jsonl");
    std::fs::create_dir(dir.path().join("fresh.jsonl.manifest.json.partial")).unwrap();
    let o = export(&fresh, &[]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!fresh.exists() && !dir.path().join("fresh.jsonl.partial").exists());
    assert!(intact());
}

#[test]
fn time_ranges_that_hold_nothing_or_cannot_be_named_are_refused() {
    use jitgate_engine::log::{LogOptions, LogWriter};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("decisions.db");
    LogWriter::start(&db, LogOptions::default())
        .unwrap()
        .shutdown()
        .unwrap();
    let db_arg = db.to_str().unwrap();
    for (args, expected) in [
        (
            vec!["decisions", "query", "--since", "1h", "--until", "2h"],
            "is not before --until",
        ),
        (
            vec!["decisions", "query", "--since", "99999999999d"],
            "before any date jitgate can name",
        ),
        (
            vec!["decisions", "prune", "--before", "2999-01-01T00:00:00Z"],
            "is in the future",
        ),
        (
            vec![
                "replay",
                "--bundle",
                "policies/quickstart-cedar",
                "--since",
                "1h",
                "--until",
                "2h",
            ],
            "nothing would be replayed",
        ),
    ] {
        let mut all = args.clone();
        all.extend_from_slice(&["--log", db_arg]);
        let o = jitgate(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(expected), "{args:?}: {}", text(&o));
    }
}

/// A discovery and JWKS server on 127.0.0.1 (one thread, one request per connection): `/jwks` serves one P-256
/// key with `kid` `ec-1` and `Cache-Control: max-age=120`; the OpenID configuration names the issuer `<base>`,
/// or `<base>/` with `slash`. Returns the base URL.
fn idp(slash: bool) -> String {
    use std::io::{BufRead, BufReader, Write};
    fn b64url(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = key.public_key_raw().to_vec();
    assert_eq!(point.len(), 65);
    let jwks = format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"ec-1","use":"sig","x":"{}","y":"{}"}}]}}"#,
        b64url(&point[1..33]),
        b64url(&point[33..])
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (b, advertised) = (
        base.clone(),
        if slash {
            format!("{base}/")
        } else {
            base.clone()
        },
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let (status, extra, body) = if line.starts_with("GET /jwks ") {
                ("200 OK", "Cache-Control: max-age=120\r\n", jwks.clone())
            } else if line.starts_with("GET /.well-known/openid-configuration ") {
                (
                    "200 OK",
                    "",
                    format!(r#"{{"issuer":"{advertised}","jwks_uri":"{b}/jwks"}}"#),
                )
            } else {
                ("404 Not Found", "", String::new())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    base
}

/// `check --config --online` reaches each issuer as start-up would and reports what it found; an issuer that
/// advertises its name with a trailing slash the config lacks is named as such, and one that cannot be reached
/// fails the check (exit 2). Without `--online` nothing is fetched.
#[test]
fn check_online_reports_each_issuers_discovery_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b");
    copy_dir(&repo().join("policies/quickstart-cedar"), &bundle);
    let config = serve_config(dir.path(), &bundle, &["payments", "billing"]);
    let base_text = std::fs::read_to_string(&config).unwrap();
    let with_issuer = |name: &str, issuer: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "{base_text}[[issuers]]\nissuer = \"{issuer}\"\naudiences = [\"api\"]\ndiscovery = true\n\
                 algorithms = [\"ES256\"]\nrefresh_min_interval_secs = 10\nrefresh_max_interval_secs = 600\n"
            ),
        )
        .unwrap();
        path
    };

    let good = idp(false);
    let path = with_issuer("good.toml", &good);
    let o = jitgate(&["check", "--config", path.to_str().unwrap(), "--online"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "issuer {good}: discovery ok — {good}/.well-known/openid-configuration names this issuer, jwks_uri {good}/jwks"
        )) && out.contains(&format!(
            "issuer {good}: keys ok — {good}/jwks: 1 key(s): ec-1 EC P-256 (verifies ES256); max-age 120s; refreshed every 120s"
        )),
        "{out}"
    );
    // Without --online, the same config is checked offline: no issuer line.
    let o = jitgate(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains("keys ok"), "{}", text(&o));

    let slash = idp(true);
    let path = with_issuer("slash.toml", &slash);
    let o = jitgate(&["check", "--config", path.to_str().unwrap(), "--online"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!("issuers[0] (`{slash}`)"))
            && out.contains(&format!("names issuer `{slash}/`, configured `{slash}`"))
            && out.contains("they differ only by a trailing slash"),
        "{out}"
    );

    // Nobody listens: exit 2, naming the issuer.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let path = with_issuer("dead.toml", &dead);
    let o = jitgate(&["check", "--config", path.to_str().unwrap(), "--online"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!("issuers[0] (`{dead}`)")) && out.contains("invalid config"),
        "{out}"
    );
}
