//! The README's promise, with the real `jitgate` binary: `jitgate serve` with no arguments starts the quickstart,
//! its banner's `curl` lines work as printed, the "Just-in-time access in five minutes" flow works through the CLI,
//! and an approval that returned success survives the process being SIGKILLed right after it.
//!
//! Everything runs on 127.0.0.1 with ephemeral ports, in a temporary working directory (so the quickstart uses the
//! bundle embedded in the binary, as on a machine without the repository).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `jitgate serve` and what its banner said.
struct Served {
    child: Child,
    proxy: String,
    admin: String,
    tokens: HashMap<String, String>,
    curls: Vec<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the quickstart in `cwd` and reads its banner (bounded: 60 s).
fn serve(cwd: &Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
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
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "no complete banner within 60 s; got:\n{}",
                banner.join("\n")
            )
        });
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
            .unwrap_or_else(|| panic!("no `{prefix}` line in the banner:\n{}", banner.join("\n")))
            .to_string()
    };
    let proxy = field("proxy");
    let admin = format!("http://{}", field("admin").trim_start_matches("http://"));
    let mut tokens = HashMap::new();
    for l in &banner {
        if let Some(rest) = l.trim_start().strip_prefix("export ") {
            let (name, value) = rest.split_once('=').unwrap();
            let value = value.split_whitespace().next().unwrap();
            tokens.insert(name.to_string(), value.to_string());
        }
    }
    let curls = banner
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("curl "))
        .map(str::to_string)
        .collect();
    Served {
        child,
        proxy,
        admin,
        tokens,
        curls,
    }
}

impl Served {
    /// Runs one printed `curl` line as printed, in bash with the banner's tokens exported; returns its HTTP status.
    fn curl(&self, line: &str) -> u16 {
        let out = Command::new("bash")
            .args(["-c", &format!("{line} --max-time 60")])
            .envs(&self.tokens)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let status = text
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok());
        status.unwrap_or_else(|| panic!("`{line}` printed no status line: {text}"))
    }

    /// The printed `curl` line that contains `needle`.
    fn line(&self, needle: &str) -> String {
        self.curls
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no curl line with `{needle}`: {:?}", self.curls))
            .clone()
    }

    /// `jitgate <args> --admin <admin> --json` as `who`; returns the exit status and the JSON answer.
    fn cli(&self, who: &str, args: &[&str]) -> (Output, Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_jitgate"))
            .args(args)
            .args(["--admin", &self.admin, "--json"])
            .env("JITGATE_TOKEN", &self.tokens[who])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out, v)
    }

    /// Status of `method path` on the data plane as `who`.
    fn status(&self, who: &str, method: &str, path: &str) -> u16 {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        client
            .request(method.parse().unwrap(), format!("{}{path}", self.proxy))
            .bearer_auth(&self.tokens[who])
            .send()
            .unwrap()
            .status()
            .as_u16()
    }
}

#[test]
fn the_banner_curl_lines_work_as_printed_and_an_approval_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let qs = serve(dir.path());
    for who in ["ALICE", "BOB", "CAROL", "ERIN", "SAM"] {
        assert!(qs.tokens.contains_key(who), "banner exports {who}");
    }

    // The printed lines: allowed, denied, unauthenticated.
    assert_eq!(
        qs.curl(&qs.line("$ALICE\" http")),
        200,
        "engineers read payments"
    );
    assert_eq!(qs.curl(&qs.line("-X POST")), 403, "writes need a grant");
    let unauthenticated = qs
        .curls
        .iter()
        .find(|l| !l.contains("Authorization"))
        .unwrap()
        .clone();
    assert_eq!(qs.curl(&unauthenticated), 401);

    // The held line waits; erin approves that exact request from "another terminal"; it is forwarded once.
    let held = qs.line("DELETE");
    let waiting = {
        let (line, tokens) = (held.clone(), qs.tokens.clone());
        std::thread::spawn(move || {
            let out = Command::new("bash")
                .args(["-c", &format!("{line} --max-time 60")])
                .envs(&tokens)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let pending_id = loop {
        let (_, v) = qs.cli("ERIN", &["requests", "--all", "--state", "pending"]);
        if let Some(id) = v["requests"]
            .as_array()
            .and_then(|rs| rs.iter().find_map(|r| r["id"].as_str()))
        {
            break id.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the held request never showed as pending: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, v) = qs.cli("ERIN", &["approve", &pending_id]);
    assert!(out.status.success(), "erin approves the held request: {v}");
    let held_out = waiting.join().unwrap();
    assert!(
        held_out.starts_with("HTTP/1.1 200"),
        "the held request is forwarded after approval: {held_out}"
    );

    // Just-in-time access in five minutes: request, self-approval refused, approval by bob, use.
    let (out, v) = qs.cli(
        "ALICE",
        &[
            "request",
            "--role",
            "payments-writer",
            "--scope",
            r#"Service::"payments""#,
            "--for",
            "30m",
            "--reason",
            "INC-4211",
        ],
    );
    assert!(out.status.success(), "alice requests access: {v}");
    let request_id = v["request"]["id"].as_str().unwrap().to_string();
    let (out, _) = qs.cli("ALICE", &["approve", &request_id]);
    assert!(!out.status.success(), "nobody approves their own request");
    assert_eq!(
        qs.status("ALICE", "POST", "/payments"),
        403,
        "still pending"
    );
    let (out, v) = qs.cli("BOB", &["approve", &request_id]);
    assert!(out.status.success(), "bob approves: {v}");
    let grant_id = v["grant"]["id"].as_str().unwrap().to_string();

    // SIGKILL right after the approval returned: no drain, no flush.
    let mut qs = qs;
    qs.child.kill().unwrap();
    qs.child.wait().unwrap();
    drop(qs);

    let qs = serve(dir.path());
    assert_eq!(
        qs.status("ALICE", "POST", "/payments"),
        200,
        "the approved grant survived the kill"
    );
    let (out, v) = qs.cli("ALICE", &["grants"]);
    assert!(out.status.success());
    assert!(
        v["grants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == grant_id.as_str()),
        "alice's grant is listed after the restart: {v}"
    );
    let (out, v) = qs.cli("BOB", &["revoke", &grant_id]);
    assert!(out.status.success(), "bob revokes: {v}");
    assert_eq!(
        qs.status("ALICE", "POST", "/payments"),
        403,
        "revoked: the very next request is denied"
    );
    drop(qs);

    // Everything above, across the kill, is in a chain that verifies.
    let out = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["decisions", "verify", "--log"])
        .arg(dir.path().join(".jitgate/decisions.db"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "decisions verify: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.starts_with("intact: ") && said.contains("(seq 1.."),
        "verify says what it checked, in words: {said}"
    );
}
