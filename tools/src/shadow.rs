//! `jitgate shadow`: show, start or stop shadow evaluation of a candidate bundle in a running proxy (admin API
//! `/v1/shadow`). The proxy serves the active bundle's decisions; this shows where the candidate would differ.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use crate::reload::{AdminArg, client, diagnostic, refusal, text, url, when};

/// Arguments of `jitgate shadow`.
#[derive(Debug, Args)]
pub struct ShadowArgs {
    /// Where the proxy's admin API listens.
    #[command(flatten)]
    pub admin: AdminArg,
    /// Start shadowing this candidate bundle directory (a path on the proxy's machine).
    #[arg(long, conflicts_with = "clear")]
    pub set: Option<PathBuf>,
    /// Stop shadow evaluation.
    #[arg(long)]
    pub clear: bool,
    /// Print the admin API's JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Shows the disagreements (exit 0), or sets/clears the candidate (exit 1 when the candidate does not load).
pub fn run(args: ShadowArgs) -> anyhow::Result<ExitCode> {
    let u = url(&args.admin, "/v1/shadow");
    let c = client(&args.admin)?;
    let token = args.admin.bearer()?;
    let resp = if let Some(path) = &args.set {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        c.post(&u).json(&serde_json::json!({ "path": path }))
    } else if args.clear {
        c.delete(&u)
    } else {
        c.get(&u)
    }
    .bearer_auth(token)
    .send()
    .with_context(|| u.clone())?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .with_context(|| format!("{u}: answer (HTTP {status}) is not JSON"))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&body)?);
    } else if let Some(errors) = body["errors"].as_array() {
        outln!("the candidate does not load; nothing changed:");
        for e in errors {
            outln!("  {}", diagnostic(e));
        }
    } else if body["message"].is_string() {
        eprintln!("{}", refusal(status, &body));
    } else if let Some(e) = body["error"].as_str() {
        outln!("{e}");
    } else if args.set.is_some() {
        outln!(
            "shadowing {} (revision {})",
            text(&body["path"]),
            text(&body["revision"])
        );
    } else if args.clear {
        outln!("stopped shadowing {}", text(&body["path"]));
    } else {
        print_status(&body);
    }
    Ok(match status.as_u16() {
        200..=299 => ExitCode::SUCCESS,
        404 if args.clear => ExitCode::SUCCESS,
        400..=499 => ExitCode::from(crate::exit::REFUSED),
        _ => ExitCode::from(crate::exit::UNREACHABLE),
    })
}

fn print_status(body: &Value) {
    let Some(c) = body["candidate"].as_object() else {
        outln!("no shadow bundle is set (jitgate shadow --set DIR)");
        return;
    };
    outln!(
        "candidate  {} (revision {}) since {}",
        c.get("path").map(text).unwrap_or("?"),
        c.get("revision").map(text).unwrap_or("?"),
        c.get("since").map(when).unwrap_or_default()
    );
    outln!(
        "compared   {} requests, {} disagreements",
        body["compared"],
        body["disagreements"]
    );
    let recent = body["recent"].as_array().cloned().unwrap_or_default();
    if recent.is_empty() {
        return;
    }
    outln!("recent disagreements (oldest first):");
    for d in &recent {
        outln!(
            "  {}  {} {} {}: active {} [{}] @ {}, shadow {} [{}] @ {}",
            when(&d["at"]),
            text(&d["principal"]),
            text(&d["action"]),
            text(&d["resource"]),
            text(&d["active"]["effect"]),
            list(&d["active"]["policies"]),
            short(&d["active"]["revision"]),
            text(&d["shadow"]["effect"]),
            list(&d["shadow"]["policies"]),
            short(&d["shadow"]["revision"]),
        );
    }
}

fn list(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn short(v: &Value) -> &str {
    let s = text(v);
    s.get(..12).unwrap_or(s)
}
