//! `jitgate import cedar-app`: turns a Cedar example application, laid out as the Cedar CLI and the
//! `cedar-examples` repository lay one out, into a jitgate bundle and a policy suite, mechanically. No policy is
//! rewritten: the policy files, the schema and the entity data are copied byte for byte; only the two formats jitgate
//! spells differently are translated (the CLI's template links file, and request files into suite cases).
//!
//! What it reads from `DIR` (each can be named with a flag instead):
//! - policies: `policies.cedar`, or every `*.cedar` file of `DIR` when there is none;
//! - schema: `policies.cedarschema`, another `*.cedarschema`, `*.cedarschema.json` or `schema.json`, in that order;
//! - entity data: `entities.json` (or `entity.json`), Cedar's JSON entity format;
//! - template links: `linked` (or `linked.json`), the CLI's `[{"template_id", "link_id", "args": {"?principal":
//!   "User::\"a\"", ...}}]`, written as jitgate's `links.json` (`[{"id", "template", "values"}]`);
//! - requests: `ALLOW/*.json` and `DENY/*.json` (also `allow_requests/`, `deny_requests/`), each in the CLI's
//!   `--request-json` form, become cases of `tests/requests.yaml` expecting allow or deny.
//!
//! What it writes to `--out BUNDLE`: `bundle.toml` (engine, schema, policies, entities, links, `tests = ["tests"]`,
//! no routes; with `--lenient`, `[cedar] validation = "warn"`), the copied files and `tests/requests.yaml`.
//! `jitgate check BUNDLE` then loads it and runs the cases; `jitgate test BUNDLE/tests` runs the cases alone.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use jitgate_engine::EntityRef;
use serde_json::{Map, Value, json};

/// The suite's `now`: any fixed instant (the engine's own `context.time`; an imported application's requests carry
/// their times in their own context).
const SUITE_NOW: &str = "2026-01-01T00:00:00Z";

/// `jitgate import` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Convert a Cedar application directory (policies, schema, entities.json, `linked`, ALLOW/ and DENY/ requests)
    /// into a jitgate bundle with a suite of its requests; no policy is rewritten.
    CedarApp(CedarAppArgs),
}

/// Arguments of `jitgate import cedar-app`.
#[derive(Debug, Args)]
#[command(after_help = "\
Example:
  jitgate import cedar-app ./document_cloud --out /tmp/document_cloud
  jitgate check /tmp/document_cloud          # loads the bundle and runs tests/requests.yaml

Exit codes: 0 written; 2 bad input (a missing schema or policy file, a request or links file that is not JSON, an \
output directory that is not empty without --force).")]
pub struct CedarAppArgs {
    /// The application directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The bundle directory to write (created; must be empty unless --force).
    #[arg(long, value_name = "BUNDLE")]
    pub out: PathBuf,
    /// The bundle's name (default: the application directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Policy files to take instead of `policies.cedar` (repeatable).
    #[arg(long = "policies", value_name = "FILE")]
    pub policies: Vec<PathBuf>,
    /// The schema file to take instead of the one found in DIR.
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// The entity data file to take instead of `entities.json`.
    #[arg(long, value_name = "FILE")]
    pub entities: Option<PathBuf>,
    /// Write into a non-empty output directory (files of the same name are replaced).
    #[arg(long)]
    pub force: bool,
    /// Write `[cedar] validation = "warn"`: policies Cedar's strict validator rejects load with warnings (and deny
    /// when they err), as `cedar authorize` decides without validating, and entity data that does not fit the schema
    /// is read without it. Default: strict, as every bundle.
    #[arg(long)]
    pub lenient: bool,
}

/// Runs an import subcommand.
pub fn run(cmd: ImportCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ImportCommand::CedarApp(args) => {
            let summary = cedar_app(&args)?;
            outln!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What an import found and wrote, for the summary line.
struct Summary {
    out: PathBuf,
    policies: usize,
    links: usize,
    allow: usize,
    deny: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wrote {}: {} policy file(s), {} link(s), {} case(s) ({} allow, {} deny); run `jitgate check {}`",
            self.out.display(),
            self.policies,
            self.links,
            self.allow + self.deny,
            self.allow,
            self.deny,
            self.out.display()
        )
    }
}

fn cedar_app(args: &CedarAppArgs) -> anyhow::Result<Summary> {
    let dir = &args.dir;
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let policies = if args.policies.is_empty() {
        find_policies(dir)?
    } else {
        args.policies.clone()
    };
    let schema = match &args.schema {
        Some(s) => s.clone(),
        None => find_schema(dir)?,
    };
    let entities = match &args.entities {
        Some(e) => Some(e.clone()),
        None => first_existing(dir, &["entities.json", "entity.json"]),
    };
    let linked = first_existing(dir, &["linked", "linked.json"]);
    let name = match &args.name {
        Some(n) => n.clone(),
        None => dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "cedar-app".to_string()),
    };

    let out = &args.out;
    if out.exists() {
        let non_empty = std::fs::read_dir(out)
            .with_context(|| format!("{}: cannot read", out.display()))?
            .next()
            .is_some();
        if non_empty && !args.force {
            bail!(
                "{}: not empty (pass --force to write into it)",
                out.display()
            );
        }
    }
    std::fs::create_dir_all(out.join("policies"))
        .with_context(|| format!("{}: cannot create", out.display()))?;
    std::fs::create_dir_all(out.join("tests"))
        .with_context(|| format!("{}: cannot create", out.display()))?;

    let schema_name = file_name(&schema)?;
    copy(&schema, &out.join(&schema_name))?;
    let mut policy_names = Vec::new();
    for p in &policies {
        let n = file_name(p)?;
        copy(p, &out.join("policies").join(&n))?;
        policy_names.push(format!("policies/{n}"));
    }
    if let Some(e) = &entities {
        copy(e, &out.join("entities.json"))?;
    }
    let mut link_count = 0;
    if let Some(l) = &linked {
        let links = convert_links(l)?;
        link_count = links.len();
        write_json(&out.join("links.json"), &Value::Array(links))?;
    }

    let mut cases = Vec::new();
    let (mut allow, mut deny) = (0, 0);
    for (folder, decision) in [
        ("ALLOW", "allow"),
        ("allow_requests", "allow"),
        ("DENY", "deny"),
        ("deny_requests", "deny"),
    ] {
        for file in json_files(&dir.join(folder))? {
            cases.push(case(&file, folder, decision)?);
            if decision == "allow" {
                allow += 1;
            } else {
                deny += 1;
            }
        }
    }

    let mut manifest = format!(
        "# Imported by `jitgate import cedar-app` from {} (no policy rewritten). Its requests: tests/requests.yaml.\n\
         name = {}\nengine = \"cedar\"\nschema = {}\npolicies = [{}]\n",
        dir.display(),
        toml_str(&name),
        toml_str(&schema_name),
        policy_names
            .iter()
            .map(|p| toml_str(p))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if entities.is_some() {
        manifest.push_str("entities = [\"entities.json\"]\n");
    }
    if linked.is_some() {
        manifest.push_str("links = [\"links.json\"]\n");
    }
    manifest.push_str("tests = [\"tests\"]\n");
    if args.lenient {
        manifest.push_str("\n[cedar]\nvalidation = \"warn\"\n");
    }
    write(&out.join("bundle.toml"), &manifest)?;

    let suite = json!({
        "name": format!("{name}: the application's ALLOW and DENY requests"),
        "bundles": [".."],
        // The suite's frozen clock: a Cedar application's requests carry their own times in their context.
        "now": SUITE_NOW,
        "cases": cases,
    });
    let yaml = serde_yaml::to_string(&suite).context("rendering the suite")?;
    write(
        &out.join("tests").join("requests.yaml"),
        &format!(
            "# Imported by `jitgate import cedar-app` from {}: one case per request file, expecting the decision of \
             its folder.\n{yaml}",
            dir.display()
        ),
    )?;
    Ok(Summary {
        out: out.clone(),
        policies: policies.len(),
        links: link_count,
        allow,
        deny,
    })
}

/// `policies.cedar`, or every `*.cedar` file of `dir` (sorted).
fn find_policies(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if let Some(p) = first_existing(dir, &["policies.cedar"]) {
        return Ok(vec![p]);
    }
    let found = files_ending(dir, ".cedar")?;
    if found.is_empty() {
        bail!(
            "{}: no policies.cedar and no *.cedar file (name them with --policies)",
            dir.display()
        );
    }
    Ok(found)
}

/// The application's schema: `policies.cedarschema`, another `*.cedarschema`, a `*.cedarschema.json`, `schema.json`.
fn find_schema(dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = first_existing(dir, &["policies.cedarschema"]) {
        return Ok(p);
    }
    for ending in [".cedarschema", ".cedarschema.json"] {
        if let Some(p) = files_ending(dir, ending)?.into_iter().next() {
            return Ok(p);
        }
    }
    first_existing(dir, &["schema.json"]).ok_or_else(|| {
        anyhow!(
            "{}: no schema (*.cedarschema, *.cedarschema.json or schema.json); a jitgate bundle needs one (name it \
             with --schema)",
            dir.display()
        )
    })
}

fn first_existing(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Files of `dir` (not recursive) whose name ends with `ending`, sorted; none when `dir` does not exist.
fn files_ending(dir: &Path, ending: &str) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot read", dir.display()))?
    {
        let path = entry
            .with_context(|| format!("{}: cannot read", dir.display()))?
            .path();
        if path.is_file() && path.to_string_lossy().ends_with(ending) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn json_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    files_ending(dir, ".json")
}

fn file_name(p: &Path) -> anyhow::Result<String> {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("{}: not a file name", p.display()))
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .map(|_| ())
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("{}: cannot write", path.display()))
}

fn write_json(path: &Path, v: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v).context("rendering JSON")?;
    write(path, &format!("{text}\n"))
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "{}:{}:{}: not JSON: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The CLI's links file as jitgate's links: `{"template_id", "link_id", "args"}` -> `{"id", "template", "values"}`,
/// each slot's entity as `{"type", "id"}`.
fn convert_links(path: &Path) -> anyhow::Result<Vec<Value>> {
    let v = read_json(path)?;
    let items = v.as_array().ok_or_else(|| {
        anyhow!(
            "{}: links must be a JSON array of {{\"template_id\", \"link_id\", \"args\"}}",
            path.display()
        )
    })?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = || format!("{}: link #{}", path.display(), i + 1);
        let field = |k: &str| {
            item.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| anyhow!("{}: `{k}` must be a string", at()))
        };
        let (template, id) = (field("template_id")?, field("link_id")?);
        let args = item
            .get("args")
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow!("{}: `args` must be an object", at()))?;
        let mut values = Map::new();
        for (slot, entity) in args {
            values.insert(
                slot.clone(),
                entity_json(entity).with_context(|| format!("{}: {slot}", at()))?,
            );
        }
        out.push(json!({ "id": id, "template": template, "values": values }));
    }
    Ok(out)
}

/// An entity reference in any of the CLI's forms (`T::"id"`, `{"type", "id"}`, `{"__entity": ...}`) as
/// `{"type", "id"}`.
fn entity_json(v: &Value) -> anyhow::Result<Value> {
    match v {
        Value::String(s) => {
            let e: EntityRef = s.parse().map_err(|e| anyhow!("{e}"))?;
            Ok(json!({ "type": e.ty, "id": e.id }))
        }
        Value::Object(o) => {
            let inner = o.get("__entity").unwrap_or(v);
            match (
                inner.get("type").and_then(Value::as_str),
                inner.get("id").and_then(Value::as_str),
            ) {
                (Some(t), Some(id)) => Ok(json!({ "type": t, "id": id })),
                _ => bail!("not an entity reference: {v}"),
            }
        }
        _ => bail!("not an entity reference: {v}"),
    }
}

/// One suite case from a request file: its principal, action, resource and context as the file gives them (the
/// suite reads Cedar's request form), expecting `decision`.
fn case(file: &Path, folder: &str, decision: &str) -> anyhow::Result<Value> {
    let v = read_json(file)?;
    let obj = v
        .as_object()
        .ok_or_else(|| anyhow!("{}: a request must be a JSON object", file.display()))?;
    let mut request = Map::new();
    for key in ["principal", "action", "resource"] {
        let part = obj
            .get(key)
            .ok_or_else(|| anyhow!("{}: the request has no `{key}`", file.display()))?;
        request.insert(key.to_string(), part.clone());
    }
    request.insert(
        "context".to_string(),
        obj.get("context").cloned().unwrap_or_else(|| json!({})),
    );
    Ok(json!({
        "name": format!("{folder}/{}", file_name(file)?),
        "request": request,
        "expect": { "decision": decision },
    }))
}
