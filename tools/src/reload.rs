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
    /// Base URL of the proxy's admin listener (`host:port` means `http://host:port`).
    #[arg(long, env = "JITGATE_ADMIN", default_value = "http://127.0.0.1:9090", value_parser = admin_url)]
    pub admin: String,
    /// Bearer token of someone the bundle's policies allow the call [env: JITGATE_TOKEN; one of the two is needed].
    #[arg(long, env = "JITGATE_TOKEN", hide_env = true, hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate(s) to trust for an `https://` admin listener signed by a private CA (`[admin.tls]`),
    /// besides the system's roots.
    #[arg(long, env = "JITGATE_ADMIN_CA", value_name = "FILE")]
    pub admin_ca: Option<std::path::PathBuf>,
}

impl AdminArg {
    /// The bearer token; every admin API call but the probes needs one.
    pub(crate) fn bearer(&self) -> anyhow::Result<&str> {
        let token = match self.token.as_deref() {
            Some(t) => t,
            // clap reads an empty variable as no value: say what is wrong with it.
            None if std::env::var_os("JITGATE_TOKEN").is_some() => "",
            None => anyhow::bail!("no token: pass --token or set JITGATE_TOKEN"),
        };
        check_token(token)?;
        Ok(token)
    }
}

/// Refuses a token that cannot be one before it is sent: empty, or more than one line (a captured command output
/// with a note in it), or with spaces.
pub(crate) fn check_token(token: &str) -> anyhow::Result<()> {
    if token.trim().is_empty() {
        anyhow::bail!(
            "the token is empty: JITGATE_TOKEN (or --token) is set but holds nothing; set it to a token, e.g. one the quickstart banner prints"
        );
    }
    if token.trim().contains(['\n', '\r']) {
        anyhow::bail!(
            "the token holds more than one line; it must be the token alone (`jitgate token` prints only the token on stdout)"
        );
    }
    if token.trim().contains([' ', '\t']) {
        anyhow::bail!("the token holds a space; it must be the token alone, without `Bearer `");
    }
    Ok(())
}

/// `--admin`: a base URL; `host:port` (no scheme) means `http://host:port`. Anything else with no host, or with a
/// scheme other than http/https, is refused here, naming the flag.
pub(crate) fn admin_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| {
        format!("`{s}` is not an address of the admin API ({e}); expected e.g. http://127.0.0.1:9090 or 127.0.0.1:9090")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`{s}`: the admin API is reached over http:// or https://, not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{s}` names no host"));
    }
    Ok(with_scheme.trim_end_matches('/').to_string())
}

/// The admin API's refusal (`{"error", "message"}`) as one line, e.g. `forbidden (403): operate denied: ...`. An
/// answer of the data plane (`no_route`) means `--admin` names the proxy's port, which is said.
pub(crate) fn refusal(status: reqwest::StatusCode, body: &Value) -> String {
    // Every data-plane refusal carries a decision id; the admin API's errors never do.
    if body.get("decision_id").is_some() {
        return format!(
            "this address answers as jitgate's data plane (the proxy), not its admin API: pass the admin listener's \
             address with --admin or JITGATE_ADMIN (the quickstart's is printed as `admin` in its banner; default \
             http://127.0.0.1:9090) [{} ({})]",
            body["error"].as_str().unwrap_or("error"),
            status.as_u16()
        );
    }
    if body.is_null() {
        return format!(
            "HTTP {status} with no JSON answer: is this jitgate's admin API? (--admin / JITGATE_ADMIN)"
        );
    }
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
    let body: Value = resp.json().unwrap_or(Value::Null);
    // A refusal of the call itself (401, 403, 404...) is not a reload attempt: said on stderr, exit 1 (3 for 5xx).
    if !status.is_success() && status != reqwest::StatusCode::UNPROCESSABLE_ENTITY {
        eprintln!("POST {u}: {}", refusal(status, &body));
        return Ok(ExitCode::from(crate::exit::of_status(status)));
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        out!("{}", describe_attempt(&body));
    }
    let outcome = body
        .get("outcome")
        .and_then(|o| ReloadOutcome::deserialize(o).ok());
    Ok(match outcome {
        Some(ReloadOutcome::Live | ReloadOutcome::Unchanged) => ExitCode::SUCCESS,
        Some(ReloadOutcome::Failed) => ExitCode::from(1),
        None => {
            return Err(crate::exit::Unreachable(format!(
                "POST {u}: unexpected answer (HTTP {status}): {body}"
            ))
            .into());
        }
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
        eprintln!("GET {u}: {}", refusal(status, &body));
        return Ok(ExitCode::from(crate::exit::of_status(status)));
    }
    let body: Value = resp.json().with_context(|| format!("GET {u}: not JSON"))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let b = &body["bundle"];
    let r = &body["reload"];
    outln!(
        "bundle    {} ({}) at {}",
        text(&b["name"]),
        text(&b["engine"]),
        text(&b["path"])
    );
    outln!(
        "revision  {} (live since {})",
        text(&b["revision"]),
        when(&r["active_since"])
    );
    outln!(
        "contents  {} policies, {} routes; {} grants indexed",
        b["policies"],
        b["routes"],
        body["grants_indexed"]
    );
    match r.get("last_attempt") {
        Some(a) if !a.is_null() => {
            out!("last reload attempt ({} so far): ", r["attempts"]);
            out!("{}", describe_attempt(a));
        }
        _ => outln!("no reload attempted since start"),
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
