//! The CLI as a person or a script uses it, with the real `jitgate` binary against a real quickstart on 127.0.0.1
//! (ephemeral ports, a custom state directory, a temporary working directory as on a machine without the
//! repository): data on stdout and words on stderr, closed pipes, the banner's hints, one exit-code convention,
//! listings with headers, `request --wait`, `request show`, `whoami`, `--output`, `--quiet`, completions, and the
//! checks the access service makes before a request is filed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A running quickstart and what its banner said.
struct Served {
    child: Child,
    cwd: PathBuf,
    proxy: String,
    admin: String,
    env: HashMap<String, String>,
    banner: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `jitgate serve --state-dir st` on ephemeral ports in `cwd`; reads its banner (bounded: 60 s).
fn serve(cwd: &Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--state-dir",
            "st",
        ])
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut banner = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no complete banner within 60 s:\n{}", banner.join("\n")));
        let done = line.contains("decisions tail");
        banner.push(line);
        if done {
            break;
        }
    }
    let field = |prefix: &str| -> String {
        banner
            .iter()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_string()
    };
    let proxy = field("proxy");
    let admin = field("admin");
    let mut env = HashMap::new();
    for l in &banner {
        if let Some(rest) = l.trim_start().strip_prefix("export ") {
            let (name, value) = rest.split_once('=').unwrap();
            env.insert(
                name.to_string(),
                value.split_whitespace().next().unwrap().to_string(),
            );
        }
    }
    Served {
        child,
        cwd: cwd.to_path_buf(),
        proxy,
        admin,
        env,
        banner: banner.join("\n"),
    }
}

impl Served {
    /// `jitgate <args>` in the quickstart's directory with the banner's exports, and JITGATE_TOKEN as `who`.
    fn as_(&self, who: &str, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_jitgate"));
        c.args(args)
            .current_dir(&self.cwd)
            .envs(&self.env)
            .stdin(Stdio::null());
        if !who.is_empty() {
            c.env("JITGATE_TOKEN", &self.env[who]);
        }
        c.output().unwrap()
    }

    fn token(&self, who: &str) -> &str {
        &self.env[who]
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn both(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", stdout(o), stderr(o))
}

const PAYMENTS: &str = r#"Service::"payments""#;

#[test]
fn a_requester_and_an_approver_on_custom_ports_with_pipes_tables_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let qs = serve(dir.path());

    // The banner's hints reach this proxy: `jitgate` outside a checkout, its admin address, its state directory,
    // and a token for each person QUICKSTART.md names (dave too).
    assert!(!qs.banner.contains("cargo run"), "{}", qs.banner);
    assert!(
        qs.banner
            .contains("JITGATE_TOKEN=$ERIN jitgate requests --all --state pending"),
        "{}",
        qs.banner
    );
    assert_eq!(
        qs.env.get("JITGATE_ADMIN").map(String::as_str),
        Some(qs.admin.as_str()),
        "the banner exports the admin address the CLI needs: {}",
        qs.banner
    );
    assert!(
        qs.banner
            .contains("jitgate decisions tail --log st/decisions.db"),
        "{}",
        qs.banner
    );
    assert!(
        qs.banner.contains("SQLite files under st/") && !qs.banner.contains(".jitgate"),
        "{}",
        qs.banner
    );
    for who in ["ALICE", "BOB", "CAROL", "DAVE", "ERIN", "SAM"] {
        assert!(qs.env.contains_key(who), "banner exports {who}");
    }

    // whoami: who the token says, in a table or as data.
    let o = qs.as_("ALICE", &["whoami"]);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    assert!(
        stdout(&o).contains(r#"User::"alice""#) && stdout(&o).contains("engineering"),
        "{}",
        both(&o)
    );
    let o = qs.as_("CAROL", &["whoami", "--output", "json"]);
    let me: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(me["principal"], r#"User::"carol""#);
    let demo_grant = me["grants"][0]["id"].as_str().unwrap().to_string();
    assert!(demo_grant.starts_with("g-demo-carol-db-admin"), "{me}");

    // Requests that could never be used are refused by the service, naming the field; exit 2 (bad input).
    for (args, needle) in [
        (
            vec!["--scope", r#"Service::"paymentz""#, "--for", "30m"],
            "scope: `Service::\"paymentz\"` names no service",
        ),
        (
            vec!["--scope", r#"Pizza::"margherita""#, "--for", "30m"],
            "no route decides on a `Pizza`",
        ),
        // A role on resources it never applies to: payments-writer's permits open payment routes only.
        (
            vec!["--scope", r#"Service::"billing""#, "--for", "30m"],
            "role `payments-writer` opens createPayment on",
        ),
        (
            vec![
                "--scope",
                PAYMENTS,
                "--for",
                "30m",
                "--starts-at",
                "2020-01-01T00:00:00Z",
            ],
            "starts_at: `2020-01-01T00:00:00Z` is in the past",
        ),
        (
            vec!["--scope", PAYMENTS, "--for", "-5m"],
            "duration: `-5m` is negative",
        ),
        (
            vec!["--scope", PAYMENTS, "--for", "99999h"],
            "duration: 99999h is longer than role `payments-writer` allows (1h)",
        ),
    ] {
        let mut all = vec!["request", "--role", "payments-writer", "--reason", "x"];
        all.extend_from_slice(&args);
        let o = qs.as_("ALICE", &all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", both(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", both(&o));
        assert!(stdout(&o).is_empty(), "{args:?}: {}", both(&o));
    }

    // `--quiet`: the id alone; the same request filed again is refused (exit 1), naming the pending one.
    let request = [
        "request",
        "--role",
        "payments-writer",
        "--scope",
        PAYMENTS,
        "--for",
        "30m",
        "--reason",
        "INC-4211",
    ];
    let mut quiet = request.to_vec();
    quiet.push("--quiet");
    let o = qs.as_("ALICE", &quiet);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    let id = stdout(&o).trim().to_string();
    assert_eq!(stdout(&o), format!("{id}\n"), "one id, one line");
    let o = qs.as_("ALICE", &request);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(
        stderr(&o).contains("already have this request pending") && stderr(&o).contains(&id),
        "{}",
        both(&o)
    );

    // The listing has a header, the reason, the age and the approvals so far.
    let o = qs.as_("ERIN", &["requests", "--all", "--state", "pending"]);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    let listing = stdout(&o);
    let header = listing.lines().next().unwrap();
    for col in [
        "ID",
        "STATE",
        "REQUESTER",
        "ROLE",
        "SCOPE",
        "AGE",
        "APPROVALS",
        "REASON",
    ] {
        assert!(header.contains(col), "{listing}");
    }
    let row = listing.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(
        row.contains("INC-4211") && row.contains("0/1") && row.contains("pending"),
        "{listing}"
    );
    let o = qs.as_("ERIN", &["requests", "--all", "--state", "pending", "-q"]);
    assert!(stdout(&o).lines().any(|l| l == id), "{}", both(&o));

    // `request show`: one request with its approvals so far; YAML on request.
    let o = qs.as_("ALICE", &["request", "show", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    assert!(stdout(&o).contains("approvals   0 of 1"), "{}", both(&o));
    let o = qs.as_("ALICE", &["request", "show", &id, "--output", "yaml"]);
    assert!(
        stdout(&o).contains("state: pending") && stdout(&o).contains("approvals_required: 1"),
        "{}",
        both(&o)
    );

    // A refusal exits 1 with the reason on stderr and nothing on stdout.
    let o = qs.as_("ALICE", &["approve", &id]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(stdout(&o).is_empty() && stderr(&o).contains("forbidden (403)"));
    let o = qs.as_("ALICE", &["reload"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a refused reload exits as a refused approve: {}",
        both(&o)
    );

    // `request --wait` blocks until bob approves, then prints the grant (exit 0).
    let waiting = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args([
            "request",
            "--role",
            "refund-once",
            "--scope",
            PAYMENTS,
            "--for",
            "10m",
            "--reason",
            "WAIT-1",
            "--wait",
            "--timeout",
            "60s",
        ])
        .current_dir(&qs.cwd)
        .envs(&qs.env)
        .env("JITGATE_TOKEN", qs.token("ALICE"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let wait_id = loop {
        let o = qs.as_(
            "ALICE",
            &[
                "requests",
                "--state",
                "pending",
                "--role",
                "refund-once",
                "-q",
            ],
        );
        if let Some(l) = stdout(&o).lines().next() {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "the waited request never showed");
        std::thread::sleep(Duration::from_millis(100));
    };
    let o = qs.as_("BOB", &["approve", &wait_id]);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    let waited = waiting.wait_with_output().unwrap();
    assert_eq!(waited.status.code(), Some(0), "{}", both(&waited));
    assert!(
        stdout(&waited).contains("state       approved") && stdout(&waited).contains("grant "),
        "{}",
        both(&waited)
    );
    assert!(
        stderr(&waited).contains("waiting for a decision"),
        "{}",
        both(&waited)
    );

    // Approve the first request; the token is alone on stdout, so that `$(...)` captures it and works.
    let o = qs.as_("BOB", &["approve", &id, "--output", "json"]);
    let approved: Value = serde_json::from_slice(&o.stdout).unwrap();
    let grant = approved["grant"]["id"].as_str().unwrap().to_string();
    let o = qs.as_("ALICE", &["token", "--grant", &grant]);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    let t = stdout(&o);
    assert_eq!(t.lines().count(), 1, "the token alone: {}", both(&o));
    assert!(
        stderr(&o).contains(&format!("bound to grant {grant}")),
        "{}",
        both(&o)
    );
    let status = reqwest::blocking::Client::new()
        .post(format!("{}/payments", qs.proxy))
        .bearer_auth(t.trim())
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 200, "the captured token works as is");

    // grants: a table with a header.
    let o = qs.as_("ALICE", &["grants"]);
    let first = stdout(&o).lines().next().unwrap_or("").to_string();
    assert!(
        first.starts_with("ID") && first.contains("EXPIRES"),
        "{}",
        both(&o)
    );
    assert!(stdout(&o).contains(&grant), "{}", both(&o));

    // One convention for errors around the call: empty token and bad --admin are usage (2), the data plane's
    // port is named as such (1), a closed port is "cannot reach" (3); `host:port` is accepted.
    let o = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["requests"])
        .envs(&qs.env)
        .env("JITGATE_TOKEN", "")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", both(&o));
    assert!(stderr(&o).contains("the token is empty"), "{}", both(&o));
    let bare = qs.admin.trim_start_matches("http://").to_string();
    let o = qs.as_("ALICE", &["grants", "--admin", &bare]);
    assert_eq!(o.status.code(), Some(0), "--admin host:port: {}", both(&o));
    let o = qs.as_("ALICE", &["grants", "--admin", &qs.proxy]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(stderr(&o).contains("data plane"), "{}", both(&o));
    let o = qs.as_("ALICE", &["grants", "--admin", "http://127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(3), "{}", both(&o));
    let o = qs.as_("ALICE", &["grants", "--admin", "ftp://x"]);
    assert_eq!(o.status.code(), Some(2), "{}", both(&o));
    assert!(stderr(&o).contains("--admin"), "{}", both(&o));

    // The admin API's 401 says how to authenticate.
    let r = reqwest::blocking::get(format!("{}/v1/whoami", qs.admin)).unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"].to_str().unwrap(),
        "Bearer realm=\"jitgate\""
    );

    // Metrics: a 401 without any credential counts as an authentication failure; the active revision shows.
    let metrics = || {
        reqwest::blocking::get(format!("{}/metrics", qs.admin))
            .unwrap()
            .text()
            .unwrap()
    };
    let failures = |m: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix("jitgate_auth_failures_total "))
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = failures(&metrics());
    let anon = reqwest::blocking::get(format!("{}/payments/p-1", qs.proxy)).unwrap();
    assert_eq!(anon.status(), 401);
    let m = metrics();
    assert_eq!(failures(&m), before + 1, "{m}");
    assert!(m.contains("jitgate_bundle_info{revision=\""), "{m}");
    assert!(m.contains("jitgate_reload_last_failed 0"), "{m}");
    // Every metric the shipped Grafana dashboard queries is one /metrics exposes.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("schemas/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut queried = Vec::new();
    collect_exprs(&dashboard, &mut queried);
    assert!(queried.len() >= 15, "{queried:?}");
    for expr in &queried {
        for name in metric_names(expr) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|b| m.contains(&format!("# TYPE {b} histogram")))
                })
                .unwrap_or(&name);
            assert!(
                m.contains(&format!("# TYPE {base} ")),
                "the dashboard queries {name} (in `{expr}`), which /metrics does not expose"
            );
        }
    }

    // bob revokes; the log names the grant for the revocation and what each lifecycle record was.
    let o = qs.as_("BOB", &["revoke", &grant]);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    let o = qs.as_(
        "",
        &["decisions", "tail", "-n", "200", "--log", "st/decisions.db"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    let tail = stdout(&o);
    let line = |what: &str| {
        tail.lines()
            .find(|l| l.contains(&format!(" lifecycle.{what} ")))
            .unwrap_or_else(|| panic!("no {what} line:\n{tail}"))
            .to_string()
    };
    assert!(line("created").contains(" created "), "{tail}");
    let revoked = line("revoked");
    assert!(
        revoked.contains(" revoked ") && revoked.contains(&format!("Grant::\"{grant}\"")),
        "{revoked}"
    );
    assert!(
        tail.lines()
            .any(|l| l.contains("createPayment") && l.contains(&format!("grant={grant}"))),
        "the allowed write names its grant:\n{tail}"
    );

    // A reader that goes away ends the command quietly (exit 0 on the writer's side), never a panic.
    for cmd in [
        "jitgate decisions query --log st/decisions.db --limit 1000 | head -1",
        "jitgate decisions tail -n 500 --log st/decisions.db | head -1",
        "jitgate requests --all | head -1",
    ] {
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_jitgate")).parent().unwrap();
        let o = Command::new("bash")
            .args([
                "-c",
                &format!("{cmd}; echo \"exit=${{PIPESTATUS[0]}}\" >&2"),
            ])
            .current_dir(&qs.cwd)
            .envs(&qs.env)
            .env("JITGATE_TOKEN", qs.token("ERIN"))
            .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
            .output()
            .unwrap();
        assert!(stderr(&o).contains("exit=0"), "{cmd}: {}", both(&o));
        assert!(!stderr(&o).contains("panicked"), "{cmd}: {}", both(&o));
    }

    // A restart keeps carol's demo grant as it was (replay over the earlier run sees no re-dated grant).
    drop(qs);
    let qs = serve(dir.path());
    let o = qs.as_("CAROL", &["whoami", "-o", "json"]);
    let me: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(me["grants"][0]["id"], demo_grant.as_str(), "{me}");

    // dev-token without flags signs as the quickstart does (its key, issuer jitgate-quickstart).
    let o = qs.as_(
        "",
        &[
            "dev-token",
            "--state-dir",
            "st",
            "--principal",
            r#"User::"zoe""#,
            "--groups",
            "sre",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    let zoe = stdout(&o).trim().to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["whoami", "--token", &zoe])
        .envs(&qs.env)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    assert!(stdout(&o).contains(r#"User::"zoe""#), "{}", both(&o));

    // replay --revision: only the decisions of that revision.
    let o = qs.as_(
        "",
        &[
            "replay",
            "--bundle",
            "st/quickstart-cedar",
            "--log",
            "st/decisions.db",
            "--store",
            "st/jitgate.db",
            "--revision",
            "0000000000",
            "--json",
        ],
    );
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    assert_eq!(summary["replayed"], 0, "{}", both(&o));

    // prune speaks in words.
    let o = qs.as_(
        "",
        &[
            "decisions",
            "prune",
            "--before",
            "0s",
            "--log",
            "st/decisions.db",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    assert!(stdout(&o).starts_with("pruned "), "{}", both(&o));
}

#[test]
fn help_completions_check_and_config_errors() {
    let jitgate = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_jitgate"))
            .args(args)
            .current_dir(repo())
            .env_remove("JITGATE_TOKEN")
            .output()
            .unwrap()
    };
    let o = jitgate(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("Exit codes") && stdout(&o).contains("3  cannot reach"),
        "{}",
        both(&o)
    );
    let o = jitgate(&["requests", "--help"]);
    assert!(stdout(&o).contains("cancelled"), "{}", both(&o));
    let o = jitgate(&["serve", "--help"]);
    assert!(
        stdout(&o).contains("schemas/examples/jitgate.example.toml"),
        "{}",
        both(&o)
    );
    let o = jitgate(&["check", "--help"]);
    assert!(!stdout(&o).contains("module docs"), "{}", both(&o));
    // A usage error exits 2.
    assert_eq!(
        jitgate(&["requests", "--state", "nope"]).status.code(),
        Some(2)
    );
    assert_eq!(jitgate(&["no-such-command"]).status.code(), Some(2));

    for (shell, needle) in [
        ("bash", "_jitgate()"),
        ("zsh", "#compdef jitgate"),
        ("fish", "complete -c jitgate"),
    ] {
        let o = jitgate(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{shell}");
        assert!(stdout(&o).contains(needle), "{shell}: {}", both(&o));
        assert!(stdout(&o).contains("approve"), "{shell}");
    }

    // `jitgate check` alone says what to give it.
    let o = jitgate(&["check"]);
    assert_eq!(o.status.code(), Some(2), "{}", both(&o));
    assert!(stderr(&o).contains("--config"), "{}", both(&o));

    // A bundle whose tests fail does not say `ok` on its first line.
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b");
    copy_dir(&repo().join("policies/quickstart-cedar"), &bundle);
    let smoke = bundle.join("tests/smoke.yaml");
    let text = std::fs::read_to_string(&smoke).unwrap();
    let broken = text.replacen("decision: allow", "decision: deny", 1);
    assert_ne!(text, broken);
    std::fs::write(&smoke, broken).unwrap();
    let o = jitgate(&["check", bundle.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    let first = stdout(&o).lines().next().unwrap_or("").to_string();
    assert!(
        first.contains("FAILED its tests") && !first.contains(": ok"),
        "{}",
        both(&o)
    );

    // Every unknown key of a config at once, each with its line.
    let config = dir.path().join("jitgate.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\nlistn = \"x\"\n[admin]\nlisten = \"127.0.0.1:0\"\nadmn = 1\n\
         [bundle]\npath = \"b\"\n",
    )
    .unwrap();
    let o = jitgate(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", both(&o));
    let said = stderr(&o);
    assert!(
        said.contains(":3:")
            && said.contains("`listn`")
            && said.contains(":6:")
            && said.contains("`admn`"),
        "{said}"
    );
}

/// Every `expr` string in the dashboard (panel targets and annotations).
fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The `jitgate_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("jitgate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
