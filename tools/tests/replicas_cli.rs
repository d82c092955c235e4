//! Stores and replicas with the real `jitgate` binary (issue 16): a second `serve` on the same SQLite store refuses
//! to start; `jitgate migrate` on a PostgreSQL store; two replicas on one PostgreSQL, one of them SIGKILLed right
//! after it acknowledged an approval, the other still serving it and a revocation through it holding when the first
//! comes back. The PostgreSQL tests run when `JITGATE_TEST_POSTGRES` names a server (skipped, and said so,
//! otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod run_cli;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use jitgate_engine::postgres::scratch::{Scratch, test_url};
use run_cli::serve;
use serde_json::{Value, json};

fn bundle() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/quickstart-cedar")
}

/// A config in `dir` with the quickstart bundle, ephemeral ports, and `store` as its `[store]` table body.
fn config(dir: &Path, store: &str, key: &Path, replica: &str) -> PathBuf {
    let path = dir.join(format!("{replica}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[bundle]
path = "{bundle}"
watch = false
[store]
{store}
[log]
path = "{log}"
[cluster]
replica = "{replica}"
[local_issuer]
key_file = "{key}"
issuer = "jitgate"
audience = "jitgate"
[upstreams.payments]
url = "http://127.0.0.1:9"
[upstreams.billing]
url = "http://127.0.0.1:9"
"#,
            bundle = bundle().display(),
            log = dir.join(format!("{replica}-decisions.db")).display(),
            key = key.display(),
        ),
    )
    .unwrap();
    path
}

/// A running `jitgate serve --config`, with the addresses its log announced.
fn jitgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jitgate"))
}

#[test]
fn a_second_serve_on_the_same_sqlite_store_refuses_to_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let store = format!("path = \"{}\"", dir.path().join("state.db").display());
    let first = serve(&config(dir.path(), &store, &key, "one")).unwrap();
    let e = match serve(&config(dir.path(), &store, &key, "two")) {
        Ok(_) => panic!("a second process started on the same SQLite store"),
        Err(e) => e,
    };
    assert!(
        e.contains("is in use by another jitgate process") && e.contains("state.db.writer.lock"),
        "{e}"
    );
    // The first one is unaffected; once it is gone the lock goes with it.
    drop(first);
    let again = serve(&config(dir.path(), &store, &key, "three"));
    assert!(again.is_ok(), "{:?}", again.err());
}

#[test]
fn migrate_brings_a_postgres_store_up_to_date_and_names_a_bad_url() {
    let Some(base) = test_url("migrate_brings_a_postgres_store_up_to_date_and_names_a_bad_url")
    else {
        return;
    };
    let scratch = Scratch::new(&base, "cli_migrate").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let cfg = config(
        dir.path(),
        &format!("url = \"{}\"", scratch.url()),
        &key,
        "m",
    );
    let run = || {
        let out = jitgate()
            .args(["migrate", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let known = jitgate_engine::postgres::known_version();
    let (code, out) = run();
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("schema version 0 -> {known}")),
        "{out}"
    );
    let (code, out) = run();
    assert_eq!(code, Some(0));
    assert!(
        out.contains(&format!("schema version {known} -> {known}")),
        "{out}"
    );

    let bad = config(
        dir.path(),
        "url = \"postgres://postgres:hunter2@127.0.0.1:1/test\"",
        &key,
        "bad",
    );
    let out = jitgate()
        .args(["migrate", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("[store] url `postgres://postgres:***@127.0.0.1:1/test`")
            && err.contains("onnection refused")
            && !err.contains("hunter2"),
        "{err}"
    );
    // `serve` says the same and does not start.
    let e = serve(&bad).err().unwrap();
    assert!(
        e.contains("[store] url") && e.contains("onnection refused"),
        "{e}"
    );
    // `path` and `url` together: refused, naming both.
    let both = config(
        dir.path(),
        &format!("path = \"x.db\"\nurl = \"{}\"", scratch.url()),
        &key,
        "both",
    );
    let out = jitgate()
        .args(["migrate", "--config"])
        .arg(&both)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("store.url") && err.contains("exclusive"),
        "{err}"
    );
}

fn token(key: &Path, who: &str, groups: &str) -> String {
    let out = jitgate()
        .args(["dev-token", "--key-file"])
        .arg(key)
        .args([
            "--principal",
            &format!("User::\"{who}\""),
            "--groups",
            groups,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_replica_killed_after_acknowledging_an_approval_loses_nothing_and_the_other_keeps_serving() {
    let Some(base) = test_url(
        "a_replica_killed_after_acknowledging_an_approval_loses_nothing_and_the_other_keeps_serving",
    ) else {
        return;
    };
    let scratch = Scratch::new(&base, "cli_kill").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let store = format!("url = \"{}\"\nmax_staleness = \"2s\"", scratch.url());
    let cfg_a = config(dir.path(), &store, &key, "a");
    let cfg_b = config(dir.path(), &store, &key, "b");
    let mut a = serve(&cfg_a).unwrap();
    let b = serve(&cfg_b).unwrap();
    let http = reqwest::blocking::Client::new();
    let alice = token(&key, "alice", "engineering");
    let carol = token(&key, "carol", "engineering,dba");
    let erin = token(&key, "erin", "compliance,dba");
    let post = |base: &str, tok: &str, path: &str, body: Value| {
        let r = http
            .post(format!("{base}{path}"))
            .bearer_auth(tok)
            .json(&body)
            .send()
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json::<Value>().unwrap_or(Value::Null))
    };
    let (s, v) = post(
        &a.admin,
        &alice,
        "/v1/requests",
        json!({"role": "db-admin", "scope": "Service::\"billing\"", "duration": "30m", "reason": "kill test"}),
    );
    assert_eq!(s, 201, "{v}");
    let id = v["request"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        post(
            &a.admin,
            &carol,
            &format!("/v1/requests/{id}/approve"),
            json!({})
        )
        .0,
        200
    );
    let (s, v) = post(
        &a.admin,
        &erin,
        &format!("/v1/requests/{id}/approve"),
        json!({}),
    );
    assert_eq!(s, 200, "{v}");
    let gid = v["grant"]["id"].as_str().unwrap().to_string();
    // SIGKILL right after the acknowledgement.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    // B serves the approval A acknowledged (its upstream is not there: 502 means the decision allowed it).
    let query = |base: &str| {
        http.post(format!("{base}/databases/orders/query"))
            .bearer_auth(&alice)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while query(&b.proxy) != 502 {
        assert!(
            Instant::now() < deadline,
            "replica b never allowed on the approved grant"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A revocation through B, acknowledged, holds on A when it comes back.
    let (s, v) = post(
        &b.admin,
        &carol,
        &format!("/v1/grants/{gid}/revoke"),
        json!({}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(query(&b.proxy), 403);
    let a = serve(&cfg_a).unwrap();
    assert_eq!(
        query(&a.proxy),
        403,
        "the restarted replica allowed on a revoked grant"
    );
    let (s, v) = {
        let r = http
            .get(format!("{}/v1/requests/{id}", a.admin))
            .bearer_auth(&carol)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    assert_eq!(s, 200);
    assert_eq!(v["request"]["state"], "approved", "{v}");
}

/// A throwaway PostgreSQL cluster of the test's own that asks for a password (SCRAM), on a free loopback port in a
/// temporary directory; stopped (and removed) on drop.
struct PasswordCluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl PasswordCluster {
    /// `None` (and says so) when no PostgreSQL server binaries are installed.
    fn start(password: &str) -> Option<PasswordCluster> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())?;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, format!("{password}\n")).unwrap();
        // PostgreSQL refuses to run as root: as root, run it as the `postgres` user, who owns the directory.
        let uid = Command::new("id").arg("-u").output().unwrap();
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        if as_postgres {
            let st = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success());
        }
        // A free loopback port: bound, read, released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = PasswordCluster {
            bin,
            data,
            port,
            as_postgres,
            _dir: dir,
        };
        let out = c
            .tool("initdb")
            .arg("-D")
            .arg(&c.data)
            .args(["-U", "postgres", "--auth=scram-sha-256", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sockets = c.data.parent().unwrap().to_path_buf();
        // `-w`: returns once the server accepts connections.
        let out = c
            .tool("pg_ctl")
            .arg("-D")
            .arg(&c.data)
            .arg("-l")
            .arg(sockets.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-p {} -h 127.0.0.1 -k {}",
                c.port,
                sockets.display()
            ))
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(sockets.join("server.log")).unwrap_or_default()
        );
        Some(c)
    }

    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn url(&self, password: &str) -> String {
        format!(
            "postgres://postgres:{password}@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for PasswordCluster {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Issue 16, bad input: a wrong password fails start-up (and `jitgate migrate`) with the key and the server's
/// cause, the password masked; the right one works, so the password is what was wrong.
#[test]
fn a_wrong_store_password_fails_start_up_naming_the_key_and_the_cause() {
    let Some(cluster) = PasswordCluster::start("right-pw") else {
        println!(
            "a_wrong_store_password_fails_start_up_naming_the_key_and_the_cause: skipped: no PostgreSQL server \
             binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let wrong = config(
        dir.path(),
        &format!("url = \"{}\"", cluster.url("hunter2-wrong")),
        &key,
        "wrongpw",
    );
    let e = serve(&wrong).err().unwrap();
    assert!(
        e.contains("[store] url")
            && e.contains(&format!(
                "postgres://postgres:***@127.0.0.1:{}/postgres",
                cluster.port
            ))
            && e.contains("password authentication failed for user \"postgres\"")
            && !e.contains("hunter2-wrong"),
        "{e}"
    );
    let out = jitgate()
        .args(["migrate", "--config"])
        .arg(&wrong)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("[store] url") && err.contains("password authentication failed"),
        "{err}"
    );
    // Nothing was created by the failed attempts; the right password migrates.
    let right = config(
        dir.path(),
        &format!("url = \"{}\"", cluster.url("right-pw")),
        &key,
        "rightpw",
    );
    let out = jitgate()
        .args(["migrate", "--config"])
        .arg(&right)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "schema version 0 -> {}",
            jitgate_engine::postgres::known_version()
        )),
        "{text}"
    );
}
