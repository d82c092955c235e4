//! `jitgate request | approve | deny | revoke | drop | requests | grants | token`: the access lifecycle from the
//! command line, a thin client of the admin API (`/v1/requests`, `/v1/grants`). Human output by default, `--json`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::reload::{AdminArg, client, refusal, url};

/// Where the admin API is and who is calling.
#[derive(Debug, Args)]
pub struct Conn {
    /// The admin API and the caller's token.
    #[command(flatten)]
    admin: AdminArg,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
}

/// The lifecycle subcommands.
#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Ask for a role on a scope for a while.
    Request {
        /// The role, e.g. payments-writer.
        #[arg(long)]
        role: String,
        /// The scope, e.g. 'Service::"payments"'.
        #[arg(long)]
        scope: String,
        /// How long, e.g. 30m.
        #[arg(long = "for")]
        duration: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        /// A ticket reference.
        #[arg(long)]
        ticket: Option<String>,
        /// Start later (RFC 3339).
        #[arg(long)]
        starts_at: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Approve an access request.
    Approve {
        /// The request id.
        id: String,
        /// A comment.
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Deny an access request.
    Deny {
        /// The request id.
        id: String,
        /// A comment.
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke someone's grant (approvers).
    Revoke {
        /// The grant id.
        id: String,
        /// A comment.
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Drop your own grant.
    Drop {
        /// The grant id.
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List access requests (yours; `--all` for everyone's where policy allows).
    Requests {
        /// Only in this state (pending, approved, denied, expired).
        #[arg(long)]
        state: Option<String>,
        /// Only this role.
        #[arg(long)]
        role: Option<String>,
        /// Everyone's.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// List grants (yours; `--all` for everyone's where policy allows).
    Grants {
        /// Everyone's.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Mint a short-lived token bound to one of your grants.
    Token {
        /// The grant id.
        #[arg(long)]
        grant: String,
        /// Shorter than the grant's remaining time, e.g. 10m.
        #[arg(long)]
        ttl: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `id` as one path segment of an admin API URL, or an error: an id pasted from a ticket must not be able to name
/// another endpoint (`../grants/<id>/drop?`).
fn id_segment<'a>(what: &str, id: &'a str) -> anyhow::Result<&'a str> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    anyhow::ensure!(
        ok,
        "`{id}` is not a {what} id (letters, digits, `-`, `_`, `.` and `:` only)"
    );
    Ok(id)
}

/// `v` percent-encoded for a query string: only letters, digits and `-._~` stay as they are.
fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A prepared call: connection, method, path, JSON body, and how to print the answer.
type Call = (
    Conn,
    &'static str,
    String,
    Option<Value>,
    fn(&Value) -> String,
);

/// Runs one lifecycle subcommand. Exit 0 on success, 1 when the API refused, 2 on usage or connection errors.
pub fn run(cmd: AccessCommand) -> anyhow::Result<ExitCode> {
    use AccessCommand as C;
    let (conn, method, path, body, show): Call = match cmd {
        C::Request {
            role,
            scope,
            duration,
            reason,
            ticket,
            starts_at,
            conn,
        } => (
            conn,
            "POST",
            "/v1/requests".into(),
            Some(
                json!({"role": role, "scope": scope, "duration": duration, "reason": reason,
                        "ticket": ticket, "starts_at": starts_at}),
            ),
            show_request,
        ),
        C::Approve { id, comment, conn } => (
            conn,
            "POST",
            format!("/v1/requests/{}/approve", id_segment("request", &id)?),
            Some(json!({"comment": comment})),
            show_request,
        ),
        C::Deny { id, comment, conn } => (
            conn,
            "POST",
            format!("/v1/requests/{}/deny", id_segment("request", &id)?),
            Some(json!({"comment": comment})),
            show_request,
        ),
        C::Revoke { id, comment, conn } => (
            conn,
            "POST",
            format!("/v1/grants/{}/revoke", id_segment("grant", &id)?),
            Some(json!({"comment": comment})),
            show_ended,
        ),
        C::Drop { id, conn } => (
            conn,
            "POST",
            format!("/v1/grants/{}/drop", id_segment("grant", &id)?),
            Some(json!({})),
            show_ended,
        ),
        C::Requests {
            state,
            role,
            all,
            conn,
        } => {
            let mut q = vec![format!("all={all}")];
            if let Some(s) = state {
                q.push(format!("state={}", query_value(&s)));
            }
            if let Some(r) = role {
                q.push(format!("role={}", query_value(&r)));
            }
            (
                conn,
                "GET",
                format!("/v1/requests?{}", q.join("&")),
                None,
                show_requests,
            )
        }
        C::Grants { all, conn } => (
            conn,
            "GET",
            format!("/v1/grants?all={all}"),
            None,
            show_grants,
        ),
        C::Token { grant, ttl, conn } => (
            conn,
            "POST",
            format!("/v1/grants/{}/token", id_segment("grant", &grant)?),
            Some(json!({"ttl": ttl})),
            show_token,
        ),
    };
    let token = conn.admin.bearer()?;
    let url = url(&conn.admin, &path);
    let client = client(&conn.admin)?;
    let req = match method {
        "GET" => client.get(&url),
        _ => client.post(&url).json(&body.unwrap_or(Value::Null)),
    };
    let resp = req
        .bearer_auth(token)
        .send()
        .with_context(|| format!("cannot reach the admin API at {}", conn.admin.admin))?;
    let mut status = resp.status();
    let mut v: Value = resp.json().unwrap_or(Value::Null);
    // The listings come in pages: follow `next_cursor` to the end, so the output is the whole list, as one.
    if method == "GET" && status.is_success() {
        if let Some((s, body)) = follow_pages(&client, &url, token, &mut v)? {
            status = s;
            v = body;
        }
    }
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if status.is_success() {
        println!("{}", show(&v));
    } else {
        eprintln!("{}", refusal(status, &v));
    }
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Fetches the pages after `first` (a listing answer) while it names a `next_cursor`, appending each page's rows
/// to `first`'s array and dropping the cursor. Returns the status and body of a page that failed, if one did.
fn follow_pages(
    client: &reqwest::blocking::Client,
    url: &str,
    token: &str,
    first: &mut Value,
) -> anyhow::Result<Option<(reqwest::StatusCode, Value)>> {
    let Some(key) = ["requests", "grants"]
        .into_iter()
        .find(|k| first[*k].is_array())
    else {
        return Ok(None);
    };
    while let Some(cursor) = first["next_cursor"].as_str().map(str::to_string) {
        let sep = if url.contains('?') { '&' } else { '?' };
        let resp = client
            .get(format!("{url}{sep}cursor={}", query_value(&cursor)))
            .bearer_auth(token)
            .send()
            .context("cannot reach the admin API for the next page")?;
        let status = resp.status();
        let page: Value = resp.json().unwrap_or(Value::Null);
        if !status.is_success() {
            return Ok(Some((status, page)));
        }
        let rows = page[key].as_array().cloned().unwrap_or_default();
        if let Some(all) = first[key].as_array_mut() {
            all.extend(rows);
        }
        first["next_cursor"] = page["next_cursor"].clone();
    }
    if let Some(obj) = first.as_object_mut() {
        obj.remove("next_cursor");
    }
    Ok(None)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn time(v: &Value) -> String {
    v.as_i64()
        .map(jitgate_engine::clock::to_rfc3339)
        .unwrap_or_else(|| "-".into())
}

fn show_request(v: &Value) -> String {
    let r = &v["request"];
    let mut out = format!(
        "request {}: {} as {} on {} for {}s — {}",
        s(&r["id"]),
        s(&r["requester"]),
        s(&r["role"]),
        s(&r["scope"]),
        s(&r["duration_secs"]),
        s(&r["state"])
    );
    let approvals = v["approvals"].as_array().map(|a| a.len()).unwrap_or(0);
    if r["state"] == "pending" {
        out.push_str(&format!(
            " ({approvals} of {} approvals)",
            s(&v["approvals_required"])
        ));
    }
    if v["grant"].is_object() {
        out.push_str(&format!("\n{}", show_grant(&v["grant"])));
    }
    out
}

fn show_grant(g: &Value) -> String {
    format!(
        "grant {}: {} as {} on {} from {} until {} [{}]{}",
        s(&g["id"]),
        s(&g["principal"]),
        s(&g["role"]),
        s(&g["scope"]),
        time(&g["starts_at"]),
        time(&g["expires_at"]),
        s(&g["status"]),
        if g["break_glass"] == true {
            " BREAK GLASS"
        } else {
            ""
        }
    )
}

fn show_ended(v: &Value) -> String {
    show_grant(&v["grant"])
}

fn show_requests(v: &Value) -> String {
    let rows = v["requests"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return "no requests".into();
    }
    rows.iter()
        .map(|r| {
            format!(
                "{}  {:<9} {:<16} {:<28} {}",
                s(&r["id"]),
                s(&r["state"]),
                s(&r["role"]),
                s(&r["scope"]),
                s(&r["requester"])
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn show_grants(v: &Value) -> String {
    let rows = v["grants"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return "no active grants".into();
    }
    rows.iter().map(show_grant).collect::<Vec<_>>().join("\n")
}

fn show_token(v: &Value) -> String {
    format!(
        "{}\n(bound to grant {}, expires {})",
        s(&v["token"]),
        s(&v["grant_id"]),
        s(&v["expires_at_rfc3339"])
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_cannot_add_parameters() {
        assert_eq!(super::query_value("db-admin"), "db-admin");
        assert_eq!(super::query_value("x&all=true"), "x%26all%3Dtrue");
        assert_eq!(super::query_value("a b/c?"), "a%20b%2Fc%3F");
    }
}
