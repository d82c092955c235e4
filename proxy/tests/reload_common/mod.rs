//! Shared by the reload tests: bundle variants on disk, a real proxy (the quickstart wiring: local issuer with a key
//! file in the tempdir, demo upstream, SQLite store and decision log), requests with real tokens, status polling.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jitgate_engine::Bundle;
use jitgate_proxy::quickstart::{self, Quickstart, QuickstartOptions};
use jitgate_proxy::reload::{ReloadOutcome, ReloadStatus};
use jitgate_proxy::state::Proxy;

/// Variant A: alice (engineering) may read payment p-666 (as in the quickstart).
pub const EXTRA_A: &str = "// variant A\n@id(\"extra-read-p-666\")\npermit (principal in Group::\"engineering\", action == Action::\"readPayment\", resource == Payment::\"p-666\");\n";
/// Variant B: nobody reads payment p-666.
pub const EXTRA_B: &str = "// variant B\n@id(\"no-read-p-666\")\nforbid (principal, action == Action::\"readPayment\", resource == Payment::\"p-666\");\n";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A copy of the Cedar quickstart (with its smoke suite) plus `policies/extra.cedar` = `extra`.
pub fn variant(dir: &Path, extra: &str) -> String {
    layout(dir, extra);
    revision(dir)
}

/// Like [`variant`] without loading it (the content may be broken).
pub fn layout(dir: &Path, extra: &str) {
    copy_dir(&repo().join("policies/quickstart-cedar"), dir);
    std::fs::write(dir.join("policies/extra.cedar"), extra).unwrap();
}

pub fn revision(dir: &Path) -> String {
    Bundle::load(dir)
        .unwrap_or_else(|d| panic!("{}: {d}", dir.display()))
        .revision
}

/// Replaces `path` by writing a sibling temp file and renaming it over (what editors and `git` do).
pub fn rename_over(path: &Path, content: &str) {
    let tmp = path.with_extension("cedar.tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub struct Env {
    pub qs: Quickstart,
    pub http: reqwest::Client,
    pub state: PathBuf,
}

impl Env {
    pub async fn start(bundle: &Path, state: &Path) -> Env {
        let qs = quickstart::run(QuickstartOptions {
            dir: state.to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            bundle: Some(bundle.to_path_buf()),
        })
        .await
        .unwrap();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Env {
            qs,
            http,
            state: state.to_path_buf(),
        }
    }

    pub fn proxy(&self) -> &Proxy {
        &self.qs.running.proxy
    }

    pub fn token(&self, who: &str) -> String {
        self.qs
            .tokens
            .iter()
            .find(|(n, _)| n == who)
            .map(|(_, t)| t.clone())
            .unwrap()
    }

    /// A session token of an SRE (`User::"sam"`, group sre), whom the quickstart policies allow to `operate`
    /// (admin API status, reload, shadow).
    pub fn sre_token(&self) -> String {
        let now = self.proxy().authorizer.clock().now();
        self.proxy()
            .local_issuer
            .as_ref()
            .unwrap()
            .mint_session(
                &jitgate_engine::EntityRef::new("User", "sam"),
                &["sre".into()],
                now + 3600,
                now,
            )
            .unwrap()
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.qs.running.admin_addr.unwrap())
    }

    /// GET `path` as `who`: the status and the decision id (from the upstream's echo or the refusal body).
    pub async fn get(&self, who: &str, path: &str) -> (u16, String) {
        get(&self.http, self.qs.running.addr, &self.token(who), path)
            .await
            .unwrap()
    }

    /// Polls the reloader's status every 20 ms, up to 30 s (a bound against hangs only), until `f` holds.
    pub async fn wait_status(&self, what: &str, f: impl Fn(&ReloadStatus) -> bool) -> ReloadStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.proxy().reloader.status();
            if f(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `revision` is live.
    pub async fn wait_live(&self, revision: &str) -> ReloadStatus {
        self.wait_status(&format!("revision {revision} live"), |s| {
            s.active_revision == revision
        })
        .await
    }

    /// Waits for a failed attempt after `attempts` attempts.
    pub async fn wait_failed(&self, after: u64) -> ReloadStatus {
        self.wait_status("a failed reload attempt", |s| {
            s.attempts > after
                && s.last_attempt
                    .as_ref()
                    .is_some_and(|a| a.outcome == ReloadOutcome::Failed)
        })
        .await
    }

    /// Stops the proxy (flushing the decision log) and returns every decision record, by id.
    pub async fn finish(
        self,
    ) -> std::collections::HashMap<String, jitgate_engine::log::DecisionRecord> {
        let log = self.state.join("decisions.db");
        self.qs.running.shutdown().await;
        let mut out = std::collections::HashMap::new();
        let mut page = None;
        loop {
            let p = jitgate_engine::log::query(&log, &Default::default(), page, 1000).unwrap();
            for r in p.records {
                out.insert(r.id.clone(), r);
            }
            match p.next {
                Some(c) => page = Some(c),
                None => break,
            }
        }
        out
    }
}

pub async fn get(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    token: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let resp = http
        .get(format!("http://{addr}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    let id = body["decision_id"]
        .as_str()
        .or_else(|| body["headers"]["x-jitgate-decision-id"].as_str())
        .ok_or_else(|| format!("no decision id in {body}"))?
        .to_string();
    Ok((status, id))
}
