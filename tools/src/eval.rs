//! `jitgate eval`: one decision against a bundle, its entity data and grant fixtures, as `opa eval` and `cedar
//! authorize` give one; with `--explain`, why (each policy of the action's partition, each of the caller's grants).
//! Nothing is spent or recorded: the grants come from a fixture file, and a use-limited grant keeps its uses.
//!
//! The caller is `--principal` (groups from `--group` or the fixtures), or the subject of `--token`: verified against
//! the issuers of `--config` as the proxy verifies it, or, for local use only, decoded without any check with
//! `--insecure-claims`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, ValueEnum};
use jitgate_engine::diag::{parse_yaml, read_file};
use jitgate_engine::explain::{Condition, Explanation};
use jitgate_engine::testing::suite::{
    ContextSpec, GrantFixture, Instant, PrincipalFixture, TimeSpec,
};
use jitgate_engine::{
    AuthzRequest, Bundle, Context, Effect, EngineKind, EntityRef, Grant, Principal, Resource,
    UnixTime,
};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::exit;

/// Output formats of `jitgate eval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Readable text (tables with `--explain`).
    Text,
    /// One JSON object: the request, the decision and, with `--explain`, the explanation.
    Json,
}

/// Arguments of `jitgate eval`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  jitgate eval --bundle policies/docs-cedar --principal 'User::\"alice\"' --action readDocument \\
      --resource 'Document::\"roadmap\"' --parent 'Folder::\"plans\"' --parent 'Service::\"docs\"'
  jitgate eval --bundle policies/docs-cedar --fixtures policy-tests/docs-entity-data.yaml \\
      --principal 'User::\"alice\"' --http DELETE /docs/plans/design --explain
  jitgate eval --config jitgate.toml --http POST /payments --token \"$ALICE\" --explain --output json

Exit codes: 0 allowed; 1 denied, held or no route matched; 2 bad input (a flag, the bundle, the fixtures, a token
that does not verify).")]
pub struct EvalArgs {
    /// The bundle directory (default with `--config`: the config's bundle).
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// A `serve` config: its bundle, and its issuers to verify `--token` with.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Grant and principal fixtures in the policy-suite format (a suite file, or a file with only `now`,
    /// `principals`, `grants` and `context`); the suite's `cases` are ignored.
    #[arg(long, value_name = "FILE")]
    pub fixtures: Option<PathBuf>,
    /// Entity data in the store's form (a JSON array, as `jitgate entities put` takes it and `jitgate entities get`
    /// prints it), put over the bundle's own data as the running proxy puts the store's (repeatable).
    #[arg(long = "entities", value_name = "FILE", conflicts_with = "store")]
    pub store_entities: Vec<PathBuf>,
    /// Put the entity data of a store over the bundle's, as the running proxy does: a SQLite store file or a
    /// `postgres://` URL; without a value, the store of `--config`.
    #[arg(long, value_name = "PATH|URL", num_args = 0..=1, default_missing_value = "")]
    pub store: Option<String>,
    /// The caller, e.g. `User::"alice"` (or give `--token`).
    #[arg(long, value_name = "ENTITY", conflicts_with = "token")]
    pub principal: Option<EntityRef>,
    /// The caller's groups (repeatable; default: the fixture principal's groups).
    #[arg(long = "group", value_name = "NAME", conflicts_with = "token")]
    pub groups: Vec<String>,
    /// The action id, e.g. `readDocument` (with `--resource`; or give `--http`).
    #[arg(long, requires = "resource", conflicts_with = "http")]
    pub action: Option<String>,
    /// The resource, e.g. `Document::"roadmap"`.
    #[arg(long, value_name = "ENTITY", requires = "action")]
    pub resource: Option<EntityRef>,
    /// An ancestor of the resource, nearest first (repeatable).
    #[arg(long = "parent", value_name = "ENTITY", requires = "resource")]
    pub parents: Vec<EntityRef>,
    /// Attributes of the resource, as a JSON object.
    #[arg(long, value_name = "JSON", requires = "resource")]
    pub resource_attrs: Option<String>,
    /// An HTTP request mapped through the bundle's routes, as the proxy maps it: `--http GET /docs/plans/roadmap`
    /// (a `?query` after the path is the query).
    #[arg(long, num_args = 2, value_names = ["METHOD", "PATH"])]
    pub http: Option<Vec<String>>,
    /// The HTTP request's host.
    #[arg(long, requires = "http")]
    pub host: Option<String>,
    /// Context fields as JSON or YAML, in the suite's `context` form: `{"source_ip": "10.1.2.3", "headers": {...},
    /// "claims": {...}, "attrs": {...}}`; laid over the fixtures' context.
    #[arg(long, value_name = "JSON")]
    pub context: Option<String>,
    /// A bearer token naming the caller (its subject, groups and claims). Verified against the issuers of
    /// `--config`, at the request's time; or give `--insecure-claims`.
    #[arg(long, value_name = "JWT")]
    pub token: Option<String>,
    /// Read `--token`'s claims without verifying anything (signature, issuer, audience, expiry): for trying
    /// policies locally with a token at hand, never to decide who someone is. The principal is the claim
    /// `principal_claim` of the matching `--config` issuer (default `sub`) as its `principal_type` (default
    /// `User`), its groups the `groups_claim` (default `groups`).
    #[arg(long, requires = "token")]
    pub insecure_claims: bool,
    /// The request's time: RFC 3339, or an offset from the fixtures' `now` (`+30m`, `-1h`). Default: the fixtures'
    /// `now`, else the current time.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Explain the decision: each policy of the action's partition (scope matched, condition held, false or
    /// erred) and each of the caller's grants (materialized, or why not). Rego: the package's document.
    #[arg(long)]
    pub explain: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// A fixture file: a policy suite, or the fixture part of one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixtures {
    #[serde(default)]
    name: Option<IgnoredAny>,
    #[serde(default)]
    description: Option<IgnoredAny>,
    #[serde(default)]
    bundles: Option<IgnoredAny>,
    #[serde(default)]
    cases: Option<IgnoredAny>,
    #[serde(default)]
    now: Option<Instant>,
    #[serde(default)]
    principals: BTreeMap<EntityRef, PrincipalFixture>,
    #[serde(default)]
    grants: Vec<GrantFixture>,
    #[serde(default)]
    context: ContextSpec,
}

/// Who the caller is.
struct Caller {
    principal: Principal,
    claims: serde_json::Map<String, serde_json::Value>,
}

/// Decides (and explains) one request; the exit code says how it went.
pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    if args.action.is_none() && args.http.is_none() {
        bail!(
            "nothing to decide: give `--action A --resource R` or `--http METHOD PATH` (see `jitgate eval --help`)"
        );
    }
    if args.principal.is_none() && args.token.is_none() {
        bail!("no caller: give `--principal 'User::\"alice\"'` or `--token JWT`");
    }
    let config = match &args.config {
        Some(path) => Some(
            jitgate_proxy::config::Config::load(path)
                .map_err(|d| anyhow!("{d}"))
                .with_context(|| format!("loading {}", path.display()))?,
        ),
        None => None,
    };
    let bundle_dir = match (&args.bundle, &config) {
        (Some(b), _) => b.clone(),
        (None, Some(c)) => c.bundle_path.clone(),
        (None, None) => bail!("no bundle: give `--bundle DIR` or `--config FILE`"),
    };
    let bundle = Bundle::load(&bundle_dir)
        .map_err(|d| anyhow!("{d}"))
        .with_context(|| format!("loading bundle {}", bundle_dir.display()))?;
    let store_entities = store_data(&args, config.as_ref(), &bundle)?;
    let fixtures = match &args.fixtures {
        Some(path) => load_fixtures(path)?,
        None => Fixtures::default(),
    };
    let now = match (&args.at, &fixtures.now) {
        (Some(at), fixed) => {
            let base = fixed.map_or_else(jitgate_engine::clock::now_system, |i| i.0);
            let spec: TimeSpec = serde_json::from_value(serde_json::Value::String(at.clone()))
                .map_err(|e| anyhow!("--at: {e}"))?;
            spec.resolve(base)
        }
        (None, Some(i)) => i.0,
        (None, None) => jitgate_engine::clock::now_system(),
    };
    let caller = caller(&args, config.as_ref(), &fixtures, now)?;

    // The context: the fixtures' defaults, then the caller's claims, then `--context`.
    let over: ContextSpec = match &args.context {
        Some(text) => serde_yaml::from_str(text).context("--context: not a context object")?,
        None => ContextSpec::default(),
    };
    let base = ContextSpec {
        claims: caller.claims.clone(),
        ..ContextSpec::default()
    };
    let spec = base.merged(&fixtures.context).merged(&over);
    let mut context = Context::at(now);
    context.source_ip = spec.source_ip;
    context.headers = spec.headers;
    context.claims = spec.claims;
    context.attrs = spec.attrs;

    let (action, resource, route) = match &args.http {
        Some(http) => {
            let [method, target] = http.as_slice() else {
                bail!("--http takes METHOD and PATH");
            };
            let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
            if !path.starts_with('/') {
                bail!("--http: the path `{path}` must start with `/`");
            }
            let Some(m) = bundle.routes.find(method, args.host.as_deref(), path) else {
                return Ok(unmatched(&args, method, path, &bundle, &bundle_dir));
            };
            context.method = Some(method.clone());
            context.path = Some(path.to_string());
            context.host.clone_from(&args.host);
            context.query = Some(query.to_string());
            let route = format!(
                "{} {}",
                m.route.method.as_deref().unwrap_or("*"),
                m.route.path
            );
            (m.route.action.clone(), m.resource, Some(route))
        }
        None => {
            let (Some(action), Some(entity)) = (&args.action, &args.resource) else {
                bail!("give `--action` with `--resource`");
            };
            let attrs = match &args.resource_attrs {
                Some(text) => {
                    serde_json::from_str(text).context("--resource-attrs: not a JSON object")?
                }
                None => serde_json::Map::new(),
            };
            (
                action.clone(),
                Resource {
                    entity: entity.clone(),
                    parents: args.parents.clone(),
                    attrs,
                },
                None,
            )
        }
    };
    let request = AuthzRequest {
        principal: caller.principal,
        action,
        resource,
        context,
        digest: None,
    };
    let mut grants: Vec<Arc<Grant>> = Vec::new();
    for g in &fixtures.grants {
        let grant = g.to_grant(fixtures.now.map_or(now, |i| i.0)).map_err(|e| {
            anyhow!(
                "{}: {e}",
                args.fixtures.as_deref().unwrap_or(Path::new("")).display()
            )
        })?;
        if grant.principal == request.principal.entity {
            grants.push(Arc::new(grant));
        }
    }
    let explanation = bundle.explain(&request, &grants);
    match args.output {
        Output::Json => {
            let mut doc = serde_json::json!({
                "bundle": bundle_dir,
                "revision": bundle.revision,
                "request": request_json(&request, route.as_deref()),
            });
            if let Some(n) = store_entities {
                doc["store_entities"] = n.into();
            }
            if args.explain {
                doc["explanation"] = serde_json::to_value(&explanation)?;
            } else {
                doc["decision"] = serde_json::to_value(&explanation.decision)?;
            }
            outln!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Output::Text => out!(
            "{}",
            render_text(
                &bundle,
                &bundle_dir,
                &request,
                route.as_deref(),
                &explanation,
                args.explain
            )
        ),
    }
    Ok(ExitCode::from(
        if explanation.decision.effect == Effect::Allow {
            0
        } else {
            exit::REFUSED
        },
    ))
}

/// Puts the entity data of `--entities` or `--store` over the bundle's own; how many entities, when any was given.
fn store_data(
    args: &EvalArgs,
    config: Option<&jitgate_proxy::config::Config>,
    bundle: &Bundle,
) -> anyhow::Result<Option<usize>> {
    use jitgate_engine::store::EntityStore as _;
    if !args.store_entities.is_empty() {
        let files = jitgate_engine::overlay::read_store_files(&args.store_entities)
            .map_err(|d| anyhow!("{d}"))?;
        files.apply(bundle).map_err(|d| anyhow!("{d}"))?;
        return Ok(Some(files.entities.len()));
    }
    let Some(store) = &args.store else {
        return Ok(None);
    };
    let (url, path) = if store.is_empty() {
        let Some(c) = config else {
            bail!(
                "--store without a value reads the store of `--config`: give `--config FILE`, or `--store PATH|URL`"
            );
        };
        (c.store_url.clone(), Some(c.store_path.clone()))
    } else if store.starts_with("postgres://") || store.starts_with("postgresql://") {
        (Some(store.clone()), None)
    } else {
        (None, Some(PathBuf::from(store)))
    };
    let entities = match (url, path) {
        (Some(url), _) => jitgate_engine::postgres::PgStore::open(&url)
            .with_context(|| {
                format!(
                    "--store: opening {}",
                    jitgate_engine::postgres::redact_url(&url)
                )
            })?
            .load_entities()
            .context("--store: reading the entity data")?,
        (None, Some(path)) => {
            // Never create a store here: a path that names none is a mistake.
            if !path.is_file() {
                bail!("--store: no store file at {}", path.display());
            }
            jitgate_engine::sqlite::SqliteStore::open(&path)
                .with_context(|| format!("--store: opening {}", path.display()))?
                .load_entities()
                .context("--store: reading the entity data")?
        }
        (None, None) => bail!("--store: no store given"),
    };
    bundle.set_store_entities(&entities).map_err(|problems| {
        anyhow!(
            "--store: the store's entity data does not fit the bundle:\n  {}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n  ")
        )
    })?;
    Ok(Some(entities.len()))
}

fn load_fixtures(path: &Path) -> anyhow::Result<Fixtures> {
    let source = read_file(path).map_err(|d| anyhow!("{d}"))?;
    let f: Fixtures = parse_yaml(path, &source).map_err(|d| anyhow!("{d}"))?;
    // Read only to accept a whole suite file.
    let _ = (&f.name, &f.description, &f.bundles, &f.cases);
    Ok(f)
}

/// The caller: `--principal` with its groups (flags, else the fixtures), or the subject of `--token`.
fn caller(
    args: &EvalArgs,
    config: Option<&jitgate_proxy::config::Config>,
    fixtures: &Fixtures,
    now: UnixTime,
) -> anyhow::Result<Caller> {
    if let Some(p) = &args.principal {
        let fixture = fixtures.principals.get(p);
        let groups = if args.groups.is_empty() {
            fixture.map(|f| f.groups.clone()).unwrap_or_default()
        } else {
            args.groups.clone()
        };
        return Ok(Caller {
            principal: Principal {
                entity: p.clone(),
                groups,
                group_type: fixture.and_then(|f| f.group_type.clone()),
                attrs: fixture.map(|f| f.attrs.clone()).unwrap_or_default(),
            },
            claims: fixture.map(|f| f.claims.clone()).unwrap_or_default(),
        });
    }
    let Some(token) = &args.token else {
        bail!("no caller: give `--principal` or `--token`");
    };
    if args.insecure_claims {
        eprintln!(
            "warning: --insecure-claims: the token's claims are taken as they are; nothing was verified"
        );
        return insecure_caller(token, config);
    }
    let Some(config) = config else {
        bail!(
            "--token needs `--config FILE` to verify it against the configured issuers (or `--insecure-claims` \
             to read its claims unverified, for local use)"
        );
    };
    verified_caller(token, config, now)
}

/// Verifies `token` as the proxy does, against the config's issuers (and jitgate's own issuer when its key file
/// exists), at the request's time. Keys are fetched from the issuers as at start-up.
fn verified_caller(
    token: &str,
    config: &jitgate_proxy::config::Config,
    now: UnixTime,
) -> anyhow::Result<Caller> {
    use jitgate_proxy::authenticate::{Authenticator, LocalIssuer};
    let local = match &config.local_issuer {
        Some(l) if LocalIssuer::check_key_file(&l.key_file).unwrap_or(false) => Some(
            LocalIssuer::load_or_generate(&l.key_file, &l.issuer, &l.audience)
                .map_err(|e| anyhow!("{e}"))?,
        ),
        _ => None,
    };
    let auth = Authenticator::new(config.issuers.clone(), local).map_err(|e| anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let header = format!("Bearer {token}");
    let identity = runtime
        .block_on(auth.authenticate(Some(&header), now))
        .map_err(|e| anyhow!("--token does not verify: {e}"))?;
    Ok(Caller {
        principal: Principal {
            entity: identity.principal,
            groups: identity.groups,
            group_type: identity.group_type,
            attrs: identity.attrs,
        },
        claims: identity.claims,
    })
}

/// The caller a token names, its claims read without any check.
fn insecure_caller(
    token: &str,
    config: Option<&jitgate_proxy::config::Config>,
) -> anyhow::Result<Caller> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| anyhow!("--token: not a JWT (header.payload.signature)"))?;
    let bytes = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|e| anyhow!("--token: the payload is not base64url: {e}"))?
    };
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).context("--token: the payload is not a JSON object")?;
    let iss = claims.get("iss").and_then(|v| v.as_str());
    let issuer = config.and_then(|c| c.issuers.iter().find(|i| Some(i.issuer.as_str()) == iss));
    let (claim, ty, groups_claim) = issuer.map_or(("sub", "User", "groups"), |i| {
        (
            i.principal_claim.as_str(),
            i.principal_type.as_str(),
            i.groups_claim.as_str(),
        )
    });
    let id = claims
        .get(claim)
        .and_then(|v| v.as_str())
        .ok_or_else(|| anyhow!("--token: no string claim `{claim}` to name the principal"))?;
    let groups = claims
        .get(groups_claim)
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    // The issuer's groups type applies; its claim-to-attribute mapping does not (the claims are shown as they are).
    let group_type = issuer.and_then(|i| i.groups_type.clone());
    Ok(Caller {
        principal: Principal {
            entity: EntityRef::new(ty, id),
            groups,
            group_type,
            attrs: serde_json::Map::new(),
        },
        claims,
    })
}

fn request_json(r: &AuthzRequest, route: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "principal": r.principal.entity.to_string(),
        "groups": r.principal.groups,
        "action": r.action,
        "resource": r.resource.entity.to_string(),
        "parents": r.resource.parents.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "time": r.context.time,
        "route": route,
    })
}

/// No route matched: the proxy denies such a request before any policy.
fn unmatched(args: &EvalArgs, method: &str, path: &str, bundle: &Bundle, dir: &Path) -> ExitCode {
    match args.output {
        Output::Json => outln!(
            "{}",
            serde_json::json!({
                "bundle": dir,
                "revision": bundle.revision,
                "request": { "method": method, "path": path, "host": args.host },
                "decision": { "effect": "deny", "unmatched": true },
            })
        ),
        Output::Text => {
            outln!(
                "decision   deny (no route matches {method} {path}; the proxy denies it before any policy)"
            );
        }
    }
    ExitCode::from(exit::REFUSED)
}

/// Unix seconds as RFC 3339 (UTC).
fn when(t: UnixTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

fn dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

/// Pads `rows` into columns under `header` (the last column is not padded).
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&head).chain(rows) {
        let mut s = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                s.push_str(cell);
            } else {
                let pad = w.saturating_sub(cell.chars().count());
                s.push_str(cell);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        let _ = writeln!(out, "  {}", s.trim_end());
    }
}

fn render_text(
    bundle: &Bundle,
    dir: &Path,
    request: &AuthzRequest,
    route: Option<&str>,
    x: &Explanation,
    explain: bool,
) -> String {
    let d = &x.decision;
    let mut out = String::new();
    let _ = writeln!(out, "decision   {}", d.effect);
    let _ = writeln!(
        out,
        "request    {} {} on {}{}",
        request.principal.entity,
        request.action,
        request.resource.entity,
        route.map(|r| format!(" (route {r})")).unwrap_or_default()
    );
    if !request.principal.groups.is_empty() {
        let _ = writeln!(out, "groups     {}", request.principal.groups.join(", "));
    }
    let _ = writeln!(
        out,
        "bundle     {} @ {} ({})",
        dir.display(),
        bundle.short_revision(),
        bundle.engine().as_str()
    );
    let _ = writeln!(out, "policies   {}", dash(&d.policies));
    let _ = writeln!(out, "grants     {}", dash(&d.grants_used));
    if d.break_glass {
        let _ = writeln!(out, "break glass");
    }
    for e in &d.policy_errors {
        let _ = writeln!(out, "erred      {}: {}", e.policy, e.message);
    }
    if d.policy_errors.is_empty() {
        for e in &d.errors {
            let _ = writeln!(out, "error      {e}");
        }
    }
    if let Some(a) = &d.engine_answer {
        let _ = writeln!(
            out,
            "alone      {} itself would {} ({}); jitgate denies: an error is a deny",
            bundle.engine().as_str(),
            a.effect,
            if a.policies.is_empty() {
                "no policy determined it".to_string()
            } else {
                format!("policies {}", a.policies.join(", "))
            }
        );
    }
    if d.effect == Effect::Deny && d.policies.is_empty() && d.errors.is_empty() {
        let _ = writeln!(out, "why        no permit matched");
        for c in &d.nearest {
            let _ = writeln!(out, "nearest    {}: {}", c.policy, c.why);
        }
    }
    if !explain {
        return out;
    }
    let t = &x.traces;
    if !t.policies.is_empty() {
        let _ = writeln!(out, "\npolicies of action {}:", request.action);
        let rows: Vec<Vec<String>> = t
            .policies
            .iter()
            .map(|p| {
                let mut effect = p.effect.to_string();
                if p.hold {
                    effect.push_str(" (hold)");
                }
                let condition = match &p.condition {
                    Condition::Error(m) => format!("error: {m}"),
                    c => c.as_str().to_string(),
                };
                vec![
                    p.id.clone(),
                    effect,
                    if p.scope_matched {
                        "matched"
                    } else {
                        "not matched"
                    }
                    .into(),
                    condition,
                    if p.determining { "yes" } else { "" }.into(),
                    p.scope.clone(),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "POLICY",
                "EFFECT",
                "SCOPE",
                "CONDITION",
                "DETERMINING",
                "SCOPE AS WRITTEN",
            ],
            &rows,
        );
    }
    if let Some(doc) = &t.document {
        let _ = writeln!(out, "\ndocument:");
        let text = serde_json::to_string_pretty(doc).unwrap_or_default();
        for line in text.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    if let Some(note) = &t.note {
        let _ = writeln!(out, "\nnote: {note}");
    }
    let _ = writeln!(out, "\ngrants of {}:", request.principal.entity);
    if x.grants.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        let rows: Vec<Vec<String>> = x
            .grants
            .iter()
            .map(|g| {
                vec![
                    g.id.clone(),
                    g.role.clone(),
                    g.scope.clone(),
                    format!("{} .. {}", when(g.starts_at), when(g.expires_at)),
                    g.uses_left.map_or("-".into(), |u| u.to_string()),
                    if g.used { "yes" } else { "" }.into(),
                    g.fate.describe().into(),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "GRANT",
                "ROLE",
                "SCOPE",
                "WINDOW",
                "USES LEFT",
                "USED",
                "FATE",
            ],
            &rows,
        );
    }
    if bundle.engine() == EngineKind::Rego {
        let _ = writeln!(
            out,
            "\nRego decides by the package's `deny`, `allow` and `hold` sets; it has no per-policy scope, so the \
             document above (the rules that evaluated, as `opa eval` shows them) stands in for the policy table."
        );
    }
    out
}
