//! `jitgate reload` and `jitgate status`: ask a running proxy's admin API to reload its bundle now (and wait for
//! the outcome), or show what it is serving. Talks HTTP to the admin listener only; no local state.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use jitgate_proxy::reload::ReloadOutcome;
use serde::Deserialize as _;
use serde_json::Value;

/// The admin listener to talk to, and who is calling.
#[derive(Debug, Args)]
pub struct AdminArg {
    /// Base URL of the proxy's admin listener.
    #[arg(long, env = "JITGATE_ADMIN", default_value = "http://127.0.0.1:9090")]
    pub admin: String,
    /// Bearer token of someone the bundle's policies allow the call (or set JITGATE_TOKEN).
    #[arg(long, env = "JITGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate(s) to trust for an `https://` admin listener signed by a private CA (`[admin.tls]`),
    /// besides the system's roots.
    #[arg(long, env = "JITGATE_ADMIN_CA", value_name = "FILE")]
    pub admin_ca: Option<std::path::PathBuf>,
}

impl AdminArg {
    /// The bearer token; every admin API call but the probes needs one.
    pub(crate) fn bearer(&self) -> anyhow::Result<&str> {
        self.token
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("no token: pass --token or set JITGATE_TOKEN"))
    }
}

/// The admin API's refusal (`{"error", "message"}`) as one line, e.g. `forbidden (403): operate denied: ...`.
pub(crate) fn refusal(status: reqwest::StatusCode, body: &Value) -> String {
    format!(
        "{} ({}): {}",
        body["error"].as_str().unwrap_or("error"),
        status.as_u16(),
        body["message"].as_str().unwrap_or("")
    )
}

/// Arguments of `jitgate reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// Where the proxy's admin API listens.
    #[command(flatten)]
    pub admin: AdminArg,
    /// Print the admin API's JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `jitgate status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Where the proxy's admin API listens.
    #[command(flatten)]
    pub admin: AdminArg,
    /// Print the admin API's JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// An HTTP client for `admin`: HTTPS trusts the system's roots plus `--admin-ca`.
pub(crate) fn client(admin: &AdminArg) -> anyhow::Result<reqwest::blocking::Client> {
    let mut b = reqwest::blocking::Client::builder()
        // A 1,000-policy bundle with its tests reloads in well under this.
        .timeout(std::time::Duration::from_secs(120));
    if let Some(path) = &admin.admin_ca {
        let pem = std::fs::read(path).with_context(|| format!("--admin-ca {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--admin-ca {}: not PEM certificates", path.display()))?;
        if certs.is_empty() {
            anyhow::bail!("--admin-ca {}: no PEM certificate in it", path.display());
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().context("building the HTTP client")
}

pub(crate) fn url(admin: &AdminArg, path: &str) -> String {
    format!("{}{path}", admin.admin.trim_end_matches('/'))
}

/// Reloads now; exit 0 when the bundle went live or was unchanged, 1 when it failed the gate, 2 when the proxy
/// could not be asked.
pub fn run_reload(args: ReloadArgs) -> anyhow::Result<ExitCode> {
    let u = url(&args.admin, "/v1/reload");
    let resp = client(&args.admin)?
        .post(&u)
        .bearer_auth(args.admin.bearer()?)
        .send()
        .with_context(|| format!("POST {u}"))?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .with_context(|| format!("POST {u}: answer (HTTP {status}) is not JSON"))?;
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        anyhow::bail!("POST {u}: {}", refusal(status, &body));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        print!("{}", describe_attempt(&body));
    }
    let outcome = body
        .get("outcome")
        .and_then(|o| ReloadOutcome::deserialize(o).ok());
    Ok(match outcome {
        Some(ReloadOutcome::Live | ReloadOutcome::Unchanged) => ExitCode::SUCCESS,
        Some(ReloadOutcome::Failed) => ExitCode::from(1),
        None => anyhow::bail!("POST {u}: unexpected answer (HTTP {status}): {body}"),
    })
}

/// Shows the active bundle and the last reload attempt.
pub fn run_status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let u = url(&args.admin, "/v1/status");
    let resp = client(&args.admin)?
        .get(&u)
        .bearer_auth(args.admin.bearer()?)
        .send()
        .with_context(|| format!("GET {u}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body: Value = resp.json().unwrap_or(Value::Null);
        anyhow::bail!("GET {u}: {}", refusal(status, &body));
    }
    let body: Value = resp.json().with_context(|| format!("GET {u}: not JSON"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let b = &body["bundle"];
    let r = &body["reload"];
    println!(
        "bundle    {} ({}) at {}",
        text(&b["name"]),
        text(&b["engine"]),
        text(&b["path"])
    );
    println!(
        "revision  {} (live since {})",
        text(&b["revision"]),
        when(&r["active_since"])
    );
    println!(
        "contents  {} policies, {} routes; {} grants indexed",
        b["policies"], b["routes"], body["grants_indexed"]
    );
    match r.get("last_attempt") {
        Some(a) if !a.is_null() => {
            print!("last reload attempt ({} so far): ", r["attempts"]);
            print!("{}", describe_attempt(a));
        }
        _ => println!("no reload attempted since start"),
    }
    Ok(ExitCode::SUCCESS)
}

/// One attempt as lines: outcome, revision, duration, then each error as `file:line:column: message`.
pub(crate) fn describe_attempt(a: &Value) -> String {
    let mut out = format!(
        "{} at {}: revision {} ({} ms)\n",
        text(&a["outcome"]),
        when(&a["at"]),
        a["revision"].as_str().unwrap_or("-"),
        a["duration_ms"]
    );
    if let Some(errors) = a["errors"].as_array() {
        for e in errors {
            out.push_str(&format!("  {}\n", diagnostic(e)));
        }
        if !errors.is_empty() {
            out.push_str("  the active bundle keeps serving\n");
        }
    }
    out
}

/// A serialized `Diagnostic` as `file:line:column: message`.
pub(crate) fn diagnostic(e: &Value) -> String {
    let mut s = text(&e["file"]).to_string();
    if let Some(l) = e["line"].as_u64() {
        s.push_str(&format!(":{l}"));
        if let Some(c) = e["column"].as_u64() {
            s.push_str(&format!(":{c}"));
        }
    }
    format!("{s}: {}", text(&e["message"]))
}

pub(crate) fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

/// Unix seconds as RFC 3339.
pub(crate) fn when(v: &Value) -> String {
    v.as_i64()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .map(jitgate_engine::log::format_time)
        .unwrap_or_else(|| "?".into())
}
