//! The quickstart: `jitgate serve` with no config. The shipped Cedar quickstart bundle (from `policies/` when run
//! in the repository, else the copy embedded in the binary), SQLite files under `.jitgate/`, a demo upstream for
//! both services, jitgate's own development signing key, and ready tokens with `curl` lines to try.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use jitgate_engine::{Clock, EntityRef, Grant, GrantStatus};

use crate::authenticate::LocalIssuer;
use crate::config::{Config, RawBundle, RawConfig, RawLocalIssuer, RawUpstream};
use crate::demo::DemoUpstream;
use crate::run::{Running, start};
use crate::state::StartError;

/// The quickstart bundle's files, embedded so that the binary runs anywhere.
const EMBEDDED_BUNDLE: &[(&str, &str)] = &[
    (
        "bundle.toml",
        include_str!("../../policies/quickstart-cedar/bundle.toml"),
    ),
    (
        "schema.cedarschema",
        include_str!("../../policies/quickstart-cedar/schema.cedarschema"),
    ),
    (
        "policies/data-plane.cedar",
        include_str!("../../policies/quickstart-cedar/policies/data-plane.cedar"),
    ),
    (
        "policies/control-plane.cedar",
        include_str!("../../policies/quickstart-cedar/policies/control-plane.cedar"),
    ),
    (
        "tests/smoke.yaml",
        include_str!("../../policies/quickstart-cedar/tests/smoke.yaml"),
    ),
];

/// People in the quickstart, with their groups (see `policies/QUICKSTART.md`).
pub const PEOPLE: &[(&str, &[&str])] = &[
    ("alice", &["engineering"]),
    ("bob", &["engineering", "payments-approvers"]),
    ("carol", &["engineering", "dba"]),
    ("dave", &["contractors"]),
    ("erin", &["compliance", "dba"]),
    ("sam", &["sre"]),
];

/// The id prefix of carol's demo grant (the rest is when it was made).
pub const DEMO_GRANT: &str = "g-demo-carol-db-admin";

/// Options for [`run`].
#[derive(Debug, Clone)]
pub struct QuickstartOptions {
    /// State directory (SQLite files, signing key, extracted bundle).
    pub dir: PathBuf,
    /// Data-plane address.
    pub listen: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// Bundle directory; `None` picks `policies/quickstart-cedar` if present, else the embedded copy.
    pub bundle: Option<PathBuf>,
}

impl Default for QuickstartOptions {
    fn default() -> Self {
        QuickstartOptions {
            dir: PathBuf::from(".jitgate"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9090)),
            bundle: None,
        }
    }
}

/// A running quickstart.
#[derive(Debug)]
pub struct Quickstart {
    /// The proxy.
    pub running: Running,
    /// The demo upstream behind it.
    pub upstream: DemoUpstream,
    /// Ready tokens, by person.
    pub tokens: Vec<(String, String)>,
    /// The bundle in use.
    pub bundle: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Whether it runs in a checkout of the repository (the bundle is `policies/quickstart-cedar` beside a
    /// `Cargo.toml`): the banner's CLI lines then say `cargo run --release --`, else `jitgate`.
    pub in_checkout: bool,
}

/// Starts the quickstart.
pub async fn run(opts: QuickstartOptions) -> Result<Quickstart, StartError> {
    std::fs::create_dir_all(&opts.dir).map_err(|source| StartError::StateDir {
        path: opts.dir.clone(),
        source,
    })?;
    let mut in_checkout = false;
    let bundle = match &opts.bundle {
        Some(b) => b.clone(),
        None => {
            let local = PathBuf::from("policies/quickstart-cedar");
            if local.join("bundle.toml").is_file() {
                in_checkout = Path::new("Cargo.toml").is_file();
                local
            } else {
                extract_embedded(&opts.dir)?
            }
        }
    };
    let upstream = DemoUpstream::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|source| StartError::Bind {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        })?;
    let up = |_: &str| RawUpstream {
        url: format!("http://{}", upstream.addr),
        connect_timeout: "2s".into(),
        timeout: "30s".into(),
        credential: None,
    };
    let mut raw = RawConfig {
        bundle: RawBundle {
            path: bundle.clone(),
            watch: true,
            shadow: None,
        },
        ..RawConfig::default()
    };
    raw.server.listen = opts.listen.to_string();
    raw.admin.listen = opts.admin.to_string();
    raw.store.path = opts.dir.join("jitgate.db");
    raw.log.path = opts.dir.join("decisions.db");
    // Signed anchors of the decision log; `jitgate decisions verify` finds the public key beside the log.
    raw.log.anchor_key = Some(opts.dir.join("anchor.key"));
    raw.local_issuer = Some(RawLocalIssuer {
        key_file: opts.dir.join("dev-signing-key.pem"),
        issuer: "jitgate-quickstart".into(),
        audience: "jitgate".into(),
    });
    raw.upstreams.insert("payments".into(), up("payments"));
    raw.upstreams.insert("billing".into(), up("billing"));
    let config = Config::validate(raw, Path::new("<quickstart>"), Path::new(".")).map_err(|d| {
        StartError::Bundle {
            path: "<quickstart>".into(),
            diagnostics: d,
        }
    })?;
    let mut config = config;
    // The console's development sign-in: the demo people, picked by name. Set here, on the embedded quickstart's
    // validated config, and nowhere else; it is no config key, so a configured `serve` cannot turn it on.
    config.console_dev_users = PEOPLE
        .iter()
        .map(|(n, g)| (n.to_string(), g.iter().map(|g| g.to_string()).collect()))
        .collect();
    let running = start(config, Clock::system()).await?;
    let proxy = running.proxy.clone();
    let now = proxy.authorizer.clock().now();
    // A demo grant so that a held request can be tried at once: carol is db-admin on billing for 30 minutes. One
    // still active from an earlier start is kept as it is: re-dating it would make `jitgate replay` over the
    // earlier run report changes that are no policy's. Once it has ended, a new one (a new id) is made.
    let carol = EntityRef::new("User", "carol");
    let active_demo = proxy
        .authorizer
        .grants()
        .for_principal(&carol)
        .is_some_and(|l| {
            l.iter()
                .any(|g| g.id.starts_with(DEMO_GRANT) && g.is_active_at(now))
        });
    if !active_demo {
        let demo_grant = Grant {
            id: format!("{DEMO_GRANT}-{now}"),
            principal: carol,
            role: "db-admin".into(),
            scope: EntityRef::new("Service", "billing"),
            starts_at: now,
            expires_at: now + 30 * 60,
            max_uses: None,
            uses: 0,
            status: GrantStatus::Active,
            approvers: vec!["quickstart".into()],
            reason: "quickstart demo grant".into(),
            break_glass: false,
            request_digest: None,
            request_id: None,
        };
        proxy
            .authorizer
            .put_grant(demo_grant)
            .map_err(StartError::Store)?;
    }
    let mut tokens = Vec::new();
    if let Some(issuer) = &proxy.local_issuer {
        for (name, groups) in PEOPLE {
            let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
            let t = mint_dev_token(issuer, name, &groups, now).map_err(StartError::Auth)?;
            tokens.push((name.to_string(), t));
        }
    }
    Ok(Quickstart {
        running,
        upstream,
        tokens,
        bundle,
        state_dir: opts.dir,
        in_checkout,
    })
}

fn mint_dev_token(
    issuer: &LocalIssuer,
    name: &str,
    groups: &[String],
    now: i64,
) -> Result<String, crate::authenticate::AuthError> {
    issuer.mint_session(&EntityRef::new("User", name), groups, now + 8 * 3600, now)
}

fn extract_embedded(dir: &Path) -> Result<PathBuf, StartError> {
    let target = dir.join("quickstart-cedar");
    for (rel, content) in EMBEDDED_BUNDLE {
        let p = target.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|source| StartError::StateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&p, content).map_err(|source| StartError::StateDir {
            path: p.clone(),
            source,
        })?;
    }
    Ok(target)
}

impl Quickstart {
    /// The banner printed at start: tokens and `curl` lines that show an allowed, a denied and a held request, and
    /// CLI lines that reach this very proxy (its admin address, its state directory), as `jitgate` (or
    /// `cargo run --release --` in a checkout of the repository).
    pub fn banner(&self) -> String {
        let addr = self.running.addr;
        let admin = self
            .running
            .admin_addr
            .map(|a| a.to_string())
            .unwrap_or_default();
        let token = |who: &str| {
            self.tokens
                .iter()
                .find(|(n, _)| n == who)
                .map(|(_, t)| t.clone())
                .unwrap_or_default()
        };
        let b = self.running.proxy.authorizer.bundle();
        let cli = if self.in_checkout {
            "cargo run --release --"
        } else {
            "jitgate"
        };
        let state = self.state_dir.display().to_string();
        // The CLI's defaults are the quickstart's defaults; anything else is said where the CLI needs it.
        let admin_export = if admin == "127.0.0.1:9090" {
            String::new()
        } else {
            format!(
                "  export JITGATE_ADMIN=http://{admin}   # where the CLI finds this proxy's admin API\n"
            )
        };
        let log_flag = if self.state_dir == Path::new(".jitgate") {
            String::new()
        } else {
            format!(" --log {}", self.state_dir.join("decisions.db").display())
        };
        format!(
            r#"
jitgate quickstart is running
  proxy       http://{addr}    (demo upstream at http://{up})
  admin       http://{admin}   (/healthz /readyz /metrics, admin API under /v1)
  console     http://{admin}/ui/   (the approver console: sign in as any demo person)
  bundle      {bundle} ({engine}, revision {rev}); edit it and it reloads
  state       SQLite files under {state}/

Tokens (8 hours; people and groups are in policies/QUICKSTART.md; more with `{cli} dev-token --help`):
  export ALICE={alice}
  export BOB={bob}
  export CAROL={carol}
  export DAVE={dave}
  export ERIN={erin}
  export SAM={sam}      # sre: may reload, read status and run shadow evaluation (JITGATE_TOKEN=$SAM {cli} status)
{admin_export}
Try:
  # allowed: engineers read payments without any grant
  curl -i -H "Authorization: Bearer $ALICE" http://{addr}/payments/p-1001
  # denied (403 + decision id): writing needs a payments-writer grant
  curl -i -X POST -H "Authorization: Bearer $ALICE" http://{addr}/payments
  # held: carol has a demo db-admin grant, but deleting a database needs approval of that exact request;
  # the call waits up to 30s (then 202 with an approval id) while erin approves it from another terminal:
  #   JITGATE_TOKEN=$ERIN {cli} requests --all --state pending
  #   JITGATE_TOKEN=$ERIN {cli} approve <request id>
  curl -i -X DELETE -H "Authorization: Bearer $CAROL" http://{addr}/databases/staging
  # unauthenticated (401)
  curl -i http://{addr}/payments/p-1001

Just-in-time access (README: "Just-in-time access in five minutes"):
  JITGATE_TOKEN=$ALICE {cli} request --role payments-writer --scope 'Service::"payments"' --for 30m --reason INC-4211
  JITGATE_TOKEN=$BOB {cli} approve <request id>

Then look at the decision log:
  {cli} decisions tail{log_flag}
"#,
            up = self.upstream.addr,
            bundle = self.bundle.display(),
            engine = b.engine().as_str(),
            rev = b.short_revision(),
            alice = token("alice"),
            bob = token("bob"),
            carol = token("carol"),
            dave = token("dave"),
            erin = token("erin"),
            sam = token("sam"),
        )
    }
}
