//! `jitgate entities put FILE|- | get | delete UID...`: the entity data kept in the store (resource owners, team
//! membership synced from elsewhere), a thin client of the admin API's `/v1/entities`.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::access::query_value;
use crate::reload::{AdminArg, client, refusal, url};

/// `jitgate entities ...`.
#[derive(Debug, Subcommand)]
pub enum EntitiesCommand {
    /// Insert or replace entities (Cedar's JSON entity format: an array of {"uid", "attrs", "parents", "tags"}) from
    /// FILE, or from stdin with `-`. Checked against the active bundle's schema first: nothing is stored when one
    /// entity does not fit (each problem is printed with its line, uid and attribute; exit 2, bad input).
    Put {
        /// The JSON file, or `-` for stdin.
        file: String,
        #[command(flatten)]
        common: Common,
    },
    /// Print the stored entities as a JSON array (the form `put` takes), those of `--type` / `--id` when given.
    Get {
        /// Only entities of this type, e.g. `Doc` or `App::Team`.
        #[arg(long = "type")]
        ty: Option<String>,
        /// Only entities with this id.
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Remove entities by uid, e.g. `'Doc::"d1"'` (unknown ones are ignored).
    Delete {
        /// The uids, `Type::"id"`.
        #[arg(required = true)]
        uids: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
}

/// The admin API and the caller.
#[derive(Debug, Args)]
pub struct Common {
    #[command(flatten)]
    admin: AdminArg,
}

/// Runs one `entities` subcommand; exit codes as in `jitgate --help` (0 ok, 1 refused, 2 bad input, 3 unreachable).
pub fn run(cmd: EntitiesCommand) -> anyhow::Result<ExitCode> {
    let (common, method, path, body): (Common, reqwest::Method, String, Option<Vec<u8>>) = match cmd
    {
        EntitiesCommand::Put { file, common } => {
            let text = if file == "-" {
                let mut s = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut s)
                    .context("reading the entities from stdin")?;
                s
            } else {
                std::fs::read(&file).with_context(|| format!("cannot read {file}"))?
            };
            (
                common,
                reqwest::Method::PUT,
                "/v1/entities".into(),
                Some(text),
            )
        }
        EntitiesCommand::Get { ty, id, common } => {
            let mut q = Vec::new();
            if let Some(t) = ty {
                q.push(format!("type={}", query_value(&t)));
            }
            if let Some(i) = id {
                q.push(format!("id={}", query_value(&i)));
            }
            let path = if q.is_empty() {
                "/v1/entities".to_string()
            } else {
                format!("/v1/entities?{}", q.join("&"))
            };
            (common, reqwest::Method::GET, path, None)
        }
        EntitiesCommand::Delete { uids, common } => {
            for u in &uids {
                u.parse::<jitgate_engine::EntityRef>()
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let body = serde_json::to_vec(&uids)?;
            (
                common,
                reqwest::Method::DELETE,
                "/v1/entities".into(),
                Some(body),
            )
        }
    };
    let token = common.admin.bearer()?;
    let u = url(&common.admin, &path);
    let mut req = client(&common.admin)?
        .request(method.clone(), &u)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req
        .send()
        .with_context(|| format!("cannot reach the admin API at {}", common.admin.admin))?;
    let status = resp.status();
    let v: Value = resp.json().unwrap_or(Value::Null);
    if !status.is_success() {
        match v["problems"].as_array() {
            Some(problems) if !problems.is_empty() => {
                eprintln!("entity data refused, nothing was stored:");
                for p in problems {
                    eprintln!("  {}", problem(p));
                }
            }
            _ => eprintln!("{method} {path}: {}", refusal(status, &v)),
        }
        return Ok(ExitCode::from(crate::exit::of_status(status)));
    }
    match method {
        reqwest::Method::GET => outln!("{}", serde_json::to_string_pretty(&v["entities"])?),
        reqwest::Method::PUT => outln!(
            "stored {} entities ({} in the store now)",
            v["stored"],
            v["total"]
        ),
        _ => outln!("deleted {} entities", v["deleted"]),
    }
    Ok(ExitCode::SUCCESS)
}

/// One problem of a refusal: `line L: entity U, attribute A: reason`.
fn problem(p: &Value) -> String {
    let mut s = String::new();
    if let Some(l) = p["line"].as_u64() {
        s.push_str(&format!("line {l}: "));
    }
    s.push_str(&format!("entity {}", p["uid"].as_str().unwrap_or("?")));
    if let Some(a) = p["attribute"].as_str() {
        s.push_str(&format!(", attribute `{a}`"));
    }
    s.push_str(&format!(": {}", p["reason"].as_str().unwrap_or("")));
    s
}
