//! `jitgate replay`: re-decides logged decisions against a candidate bundle and reports which would change, before
//! anyone ships it. Reads the decision log and the grant store (read-only use); never talks to a running proxy.
//!
//! What is reconstructed from a `decision` record: the principal, the method, host and normalized path (mapped
//! again through the *candidate's* routes, so route changes show up too), the query, the copied headers, the
//! source IP, the time, the token's claims, and the principal's groups from the claim named by `--groups-claim`.
//! Grants: every grant in the store whose window covers the record's time, plus the grants the logged decision used
//! (judged usable then, even if revoked or used up since).
//!
//! What cannot be reconstructed, so a reported change may come from missing input rather than from the policy:
//! - grants revoked, consumed or deleted since, unless the logged decision used them (the store keeps only their
//!   present state), and the use count a use-limited grant had at the time;
//! - approvals of held requests (the request body is not logged, so the request digest cannot be recomputed): a
//!   held request that was approved and allowed replays as a hold;
//! - groups of mTLS workloads (from the proxy's config, not the record), and any context field masked by the log's
//!   `redact` setting;
//! - requests refused before a decision (authentication failures, unmatched routes) are skipped, and so are admin
//!   API calls the control-plane policies refused (their records are decisions too, but not data-plane requests).
//!
//! A control run against the bundle that was live (`--bundle` of the active bundle) should report no change; any
//! change it does report measures what the log cannot reconstruct.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::decisions::parse_when;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use jitgate_engine::log::{self, Cursor, DecisionRecord, Filter, Outcome, RecordKind};
use jitgate_engine::sqlite::SqliteStore;
use jitgate_engine::store::GrantStore;
use jitgate_engine::{
    AuthzRequest, Bundle, Context, Effect, EntityRef, Grant, GrantStatus, Principal,
};
use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;

/// Shown by `jitgate replay --help`: what a replay can and cannot know.
const LIMITS: &str = "\
Reconstructed from each decision record: principal, method, host, path (mapped again through the candidate's
routes), query, copied headers, source IP, time, token claims, and groups (from --groups-claim). Grants: those in
the store whose window covers the record's time, plus the grants the logged decision used.

Not reconstructable (a reported change may come from these rather than from the policy):
  - grants revoked, consumed or deleted since, unless the logged decision used them; past use counts;
  - approvals of held requests (the body is not logged): an approved hold replays as a hold;
  - groups of mTLS workloads (they come from the proxy's config), fields masked by the log's `redact`;
  - requests refused before a decision (authentication failures, unmatched routes) are skipped, and so are
    refused admin API calls (control-plane decisions).
Replay the bundle that was live as a control: it should report no change.

Exit codes: 0 no decision would change, 1 some would, 2 bad bundle, log or store.
--revision REV replays only the decisions made under that revision (for a log that spans reloads).";

/// Arguments of `jitgate replay`.
#[derive(Debug, Args)]
#[command(after_long_help = LIMITS)]
pub struct ReplayArgs {
    /// The candidate bundle directory.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Replay decisions from this time: RFC 3339, or a duration ago like `24h`.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Until this time (exclusive): RFC 3339, or a duration ago.
    #[arg(long)]
    pub until: Option<String>,
    /// The decision-log SQLite file.
    #[arg(long, default_value = ".jitgate/decisions.db")]
    pub log: PathBuf,
    /// The grant store (SQLite); without it, decisions are replayed with no grants.
    #[arg(long, default_value = ".jitgate/jitgate.db")]
    pub store: PathBuf,
    /// Only decisions made under this bundle revision (the full hash, or a prefix such as the 12 characters
    /// `jitgate status` shows): for a log that spans reloads.
    #[arg(long)]
    pub revision: Option<String>,
    /// The token claim holding the principal's groups.
    #[arg(long, default_value = "groups")]
    pub groups_claim: String,
    /// List at most this many changed decisions (the counts cover all).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// JSON output (one summary object with the changes).
    #[arg(long)]
    pub json: bool,
}

/// One decision that would change.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The record's id.
    pub id: String,
    /// The record's time.
    pub time: String,
    /// Principal.
    pub principal: String,
    /// `METHOD path`.
    pub request: String,
    /// Action the candidate mapped it to (empty: no route).
    pub action: String,
    /// Resource the candidate mapped it to.
    pub resource: String,
    /// Logged outcome.
    pub was: String,
    /// Logged determining policies.
    pub was_policies: Vec<String>,
    /// The candidate's outcome.
    pub now: String,
    /// The candidate's determining policies.
    pub now_policies: Vec<String>,
}

/// What a replay found.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// The candidate's revision.
    pub revision: String,
    /// Decisions re-decided.
    pub replayed: u64,
    /// Same outcome.
    pub unchanged: u64,
    /// Different outcome.
    pub changed: u64,
    /// Changes by `was -> now`.
    pub transitions: BTreeMap<String, u64>,
    /// Records skipped, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// The changes (at most `--limit`).
    pub changes: Vec<Change>,
}

/// Runs the replay: exit 0 when no decision would change, 1 when some would, 2 on a bad bundle or log.
pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let bundle = Bundle::load(&args.bundle)
        .map_err(|d| anyhow::anyhow!("candidate bundle {}:\n{d}", args.bundle.display()))?;
    if !args.log.is_file() {
        anyhow::bail!(
            "no decision log at {} (pass --log FILE)",
            args.log.display()
        );
    }
    let grants = Grants::open(&args)?;
    let since = parse_when(&args.since)?;
    let until = args.until.as_deref().map(parse_when).transpose()?;
    if let Some(u) = until {
        anyhow::ensure!(
            since < u,
            "--since {} is not before --until {}: nothing would be replayed",
            args.since,
            args.until.as_deref().unwrap_or_default()
        );
    }
    let filter = Filter {
        since: Some(since),
        until,
        kind: Some(RecordKind::Decision),
        ..Filter::default()
    };
    let mut summary = Summary {
        revision: bundle.revision.clone(),
        ..Summary::default()
    };
    let mut page: Option<Cursor> = None;
    loop {
        let p = log::query(&args.log, &filter, page, 1000).context("reading the decision log")?;
        for rec in &p.records {
            replay_one(&bundle, &grants, &args, rec, &mut summary);
        }
        match p.next {
            Some(c) => page = Some(c),
            None => break,
        }
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&args, &summary);
    }
    Ok(if summary.changed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn replay_one(
    bundle: &Bundle,
    grants: &Grants,
    args: &ReplayArgs,
    rec: &DecisionRecord,
    summary: &mut Summary,
) {
    if args
        .revision
        .as_deref()
        .is_some_and(|want| !rec.revision.starts_with(want))
    {
        return;
    }
    let mut skip = |why: &str| *summary.skipped.entry(why.to_string()).or_default() += 1;
    let Some(was) = rec.decision else {
        return skip("no outcome");
    };
    // A refused admin API call is a control-plane decision; replay re-decides data-plane requests only.
    if rec.context.get("api").and_then(Value::as_str) == Some("admin") {
        return skip("admin API call");
    }
    // No action: refused before a decision (authentication, unmatched route, log unavailable).
    if rec.action.is_empty() {
        return skip("refused before a decision");
    }
    let Ok(principal) = EntityRef::from_str(&rec.principal) else {
        return skip("principal unreadable");
    };
    let (Some(method), Some(path)) = (rec.method.as_deref(), rec.path.as_deref()) else {
        return skip("no method or path");
    };
    let ctx = &rec.context;
    let time = ctx
        .get("time")
        .and_then(Value::as_i64)
        .or_else(|| {
            log::parse_time(&rec.time)
                .ok()
                .map(OffsetDateTime::unix_timestamp)
        })
        .unwrap_or_default();
    let host = ctx.get("host").and_then(Value::as_str);
    let claims: Map<String, Value> = ctx
        .get("claims")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let groups: Vec<String> = claims
        .get(&args.groups_claim)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let was_str = match was {
        Outcome::Error => "deny",
        o => o.as_str(),
    };
    summary.replayed += 1;
    let (now, now_policies, action, resource) = match bundle.routes.find(method, host, path) {
        None => ("deny".to_string(), Vec::new(), String::new(), String::new()),
        Some(route) => {
            let mut context = Context::at(time);
            context.source_ip = ctx
                .get("source_ip")
                .and_then(Value::as_str)
                .map(String::from);
            context.method = Some(method.to_string());
            context.path = Some(path.to_string());
            context.host = host.map(String::from);
            context.query = ctx.get("query").and_then(Value::as_str).map(String::from);
            if let Some(h) = ctx.get("headers").and_then(Value::as_object) {
                for (k, v) in h {
                    if let Some(v) = v.as_str() {
                        context.headers.insert(k.clone(), v.to_string());
                    }
                }
            }
            context.claims = claims;
            let request = AuthzRequest {
                principal: Principal {
                    entity: principal.clone(),
                    groups,
                    group_type: None,
                    attrs: Default::default(),
                },
                action: route.route.action.clone(),
                resource: route.resource,
                context,
                digest: None,
            };
            let d = bundle.decide(&request, &grants.at(&principal, time, &rec.grants_used));
            let effect = match d.effect {
                Effect::Allow => "allow",
                Effect::Deny => "deny",
                Effect::Hold => "hold",
            };
            (
                effect.to_string(),
                d.policies,
                request.action,
                request.resource.entity.to_string(),
            )
        }
    };
    if now == was_str {
        summary.unchanged += 1;
        return;
    }
    summary.changed += 1;
    *summary
        .transitions
        .entry(format!("{was_str} -> {now}"))
        .or_default() += 1;
    if summary.changes.len() < args.limit {
        summary.changes.push(Change {
            id: rec.id.clone(),
            time: rec.time.clone(),
            principal: rec.principal.clone(),
            request: format!("{method} {path}"),
            action,
            resource,
            was: was_str.to_string(),
            was_policies: rec.policies.clone(),
            now,
            now_policies,
        });
    }
}

/// The store's grants, by principal, and a way to see them as of a record's time.
struct Grants {
    by_principal: HashMap<EntityRef, Vec<Grant>>,
    store: Option<SqliteStore>,
}

impl Grants {
    fn open(args: &ReplayArgs) -> anyhow::Result<Grants> {
        if !args.store.is_file() {
            eprintln!(
                "note: no grant store at {}; replaying without grants",
                args.store.display()
            );
            return Ok(Grants {
                by_principal: HashMap::new(),
                store: None,
            });
        }
        let store = SqliteStore::open(&args.store)
            .with_context(|| format!("opening the grant store {}", args.store.display()))?;
        // Every grant still marked active, expired or not: the window is judged per record.
        let mut by_principal: HashMap<EntityRef, Vec<Grant>> = HashMap::new();
        for g in store.load_grants(i64::MIN).context("reading grants")? {
            by_principal.entry(g.principal.clone()).or_default().push(g);
        }
        Ok(Grants {
            by_principal,
            store: Some(store),
        })
    }

    /// Grants of `principal` usable at `time`: active-status grants whose window covers it, and the grants the
    /// logged decision used (usable then by definition, whatever their state now; their use count is unknown).
    fn at(&self, principal: &EntityRef, time: i64, used: &[String]) -> Vec<Arc<Grant>> {
        let mut out: Vec<Arc<Grant>> = Vec::new();
        for g in self.by_principal.get(principal).into_iter().flatten() {
            if used.contains(&g.id) {
                continue;
            }
            if g.is_active_at(time) {
                out.push(Arc::new(g.clone()));
            }
        }
        for id in used {
            let Some(store) = &self.store else { break };
            if let Ok(Some(mut g)) = store.get_grant(id) {
                g.status = GrantStatus::Active;
                g.uses = 0;
                out.push(Arc::new(g));
            }
        }
        out
    }
}

fn print_summary(args: &ReplayArgs, s: &Summary) {
    outln!(
        "replayed {} decisions since {} against {} (revision {})",
        s.replayed,
        args.since,
        args.bundle.display(),
        s.revision.get(..12).unwrap_or(&s.revision)
    );
    outln!("  unchanged {}, changed {}", s.unchanged, s.changed);
    for (t, n) in &s.transitions {
        outln!("  {t}: {n}");
    }
    for (why, n) in &s.skipped {
        outln!("  skipped ({why}): {n}");
    }
    if s.changes.is_empty() {
        return;
    }
    outln!("changed decisions:");
    for c in &s.changes {
        outln!(
            "  {}  {} {} ({} {}): {} [{}] -> {} [{}]",
            c.time,
            c.principal,
            c.request,
            c.action,
            c.resource,
            c.was,
            c.was_policies.join(", "),
            c.now,
            c.now_policies.join(", ")
        );
    }
    if (s.changed as usize) > s.changes.len() {
        outln!(
            "  ... {} more (raise --limit or use --json)",
            s.changed as usize - s.changes.len()
        );
    }
    outln!(
        "note: groups, grants and held-request approvals are reconstructed from the log and the store as far as \
         they can be; replay the live bundle as a control (see `jitgate replay --help`)."
    );
}
