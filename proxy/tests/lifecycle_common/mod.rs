//! Shared set-up for the lifecycle tests: the real proxy with the quickstart Cedar bundle, real SQLite files in a
//! temp directory, the demo upstream, and tokens minted by the proxy's own issuer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use jitgate_engine::{Clock, EntityRef};
use jitgate_proxy::config::{Config, RawBundle, RawConfig, RawLocalIssuer, RawUpstream};
use jitgate_proxy::demo::DemoUpstream;
use jitgate_proxy::run::{Running, start};
use serde_json::{Value, json};

/// 2026-11-23T10:00:00Z, a Monday inside business hours.
pub const T0: i64 = 1_795_428_000;

pub fn groups(who: &str) -> Vec<String> {
    let g: &[&str] = match who {
        "alice" => &["engineering"],
        "bob" => &["engineering", "payments-approvers"],
        "carol" => &["engineering", "dba"],
        "erin" => &["compliance", "dba"],
        "sam" => &["sre"],
        "dave" => &["engineering", "contractors"],
        _ => &[],
    };
    g.iter().map(|s| s.to_string()).collect()
}

pub struct Env {
    pub running: Running,
    pub upstream: DemoUpstream,
    pub clock: Clock,
    pub dir: PathBuf,
    pub http: reqwest::Client,
}

pub fn raw_config(dir: &Path, upstream: SocketAddr) -> RawConfig {
    let bundle = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/quickstart-cedar");
    let mut raw = RawConfig {
        bundle: RawBundle {
            path: bundle,
            watch: false,
            shadow: None,
        },
        ..RawConfig::default()
    };
    raw.server.listen = "127.0.0.1:0".into();
    raw.admin.listen = "127.0.0.1:0".into();
    raw.store.path = dir.join("jitgate.db");
    raw.log.path = dir.join("decisions.db");
    raw.local_issuer = Some(RawLocalIssuer {
        key_file: dir.join("key.pem"),
        issuer: "jitgate".into(),
        audience: "jitgate".into(),
    });
    for svc in ["payments", "billing"] {
        raw.upstreams.insert(
            svc.into(),
            RawUpstream {
                url: format!("http://{upstream}"),
                connect_timeout: "2s".into(),
                timeout: "10s".into(),
                credential: None,
            },
        );
    }
    raw
}

impl Env {
    pub async fn start(dir: &Path, clock: Clock, tweak: impl FnOnce(&mut RawConfig)) -> Env {
        let upstream = DemoUpstream::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut raw = raw_config(dir, upstream.addr);
        tweak(&mut raw);
        let config = Config::validate(raw, &dir.join("jitgate.toml"), dir).unwrap();
        let running = start(config, clock.clone()).await.unwrap();
        Env {
            running,
            upstream,
            clock,
            dir: dir.to_path_buf(),
            http: reqwest::Client::new(),
        }
    }

    pub fn token(&self, who: &str) -> String {
        let now = self.clock.now();
        self.running
            .proxy
            .local_issuer
            .as_ref()
            .unwrap()
            .mint_session(
                &EntityRef::new("User", who),
                &groups(who),
                now + 86_400 * 30,
                now,
            )
            .unwrap()
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.admin_addr.unwrap())
    }

    pub fn data(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.addr)
    }

    /// POST to the admin API as `who`: (status, body).
    pub async fn post(&self, who: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.admin(path))
            .bearer_auth(self.token(who))
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, who: &str, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.admin(path))
            .bearer_auth(self.token(who))
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Creates a request as `who`; returns its id (asserting 201).
    pub async fn request(
        &self,
        who: &str,
        role: &str,
        scope: &str,
        dur: &str,
        reason: &str,
    ) -> Value {
        let (s, v) = self
            .post(
                who,
                "/v1/requests",
                json!({"role": role, "scope": scope, "duration": dur, "reason": reason}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v
    }

    /// alice asks for db-admin on `Service::"billing"` for 30 minutes (two distinct dba approvals needed); the id.
    pub async fn db_admin_request(&self, reason: &str) -> String {
        let v = self
            .request("alice", "db-admin", r#"Service::"billing""#, "30m", reason)
            .await;
        v["request"]["id"].as_str().unwrap().to_string()
    }

    pub async fn approve(&self, who: &str, id: &str) -> (u16, Value) {
        self.post(
            who,
            &format!("/v1/requests/{id}/approve"),
            json!({"comment": "ok"}),
        )
        .await
    }
}

/// Takes the store's write lock as another writer would (`BEGIN IMMEDIATE` on `dir/jitgate.db`): the proxy's store
/// writes wait (up to their 5 s busy timeout) until the returned function is called.
pub fn lock_store(dir: &Path) -> impl FnOnce() {
    let conn = jitgate_engine::sqlite::open_connection(
        &dir.join("jitgate.db"),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    move || conn.execute_batch("COMMIT").unwrap()
}
