//! `jitgate request | approve | deny | revoke | drop | requests | grants | token`: the access lifecycle from the
//! command line, a thin client of the admin API (`/v1/requests`, `/v1/grants`). Human output by default, `--json`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::reload::{AdminArg, client, refusal, url};

/// Where the admin API is and who is calling, and how to print the answer.
#[derive(Debug, Args)]
pub struct Conn {
    /// The admin API and the caller's token.
    #[command(flatten)]
    admin: AdminArg,
    /// Print the API's JSON answer (as `--output json`).
    #[arg(long)]
    json: bool,
    /// How to print the answer: `table` for people (the default), `json` or `yaml` (the API's answer, whole).
    #[arg(long, short = 'o', value_enum)]
    output: Option<Output>,
    /// Print ids only, one per line (of the request, the grant, or each row listed): for scripts.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Output formats of the lifecycle commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Lines and tables with headers, for people.
    Table,
    /// The API's answer as JSON.
    Json,
    /// The API's answer as YAML.
    Yaml,
}

impl Conn {
    fn output(&self) -> Output {
        match (self.json, self.output) {
            (true, _) => Output::Json,
            (false, Some(o)) => o,
            (false, None) => Output::Table,
        }
    }
}

/// The lifecycle subcommands.
// Parsed once per process: the size of the largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Ask for a role on a scope for a while (`request show <id>` shows one request).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Request {
        /// `show <id>`: one request, its approvals so far and its grant.
        #[command(subcommand)]
        sub: Option<RequestSub>,
        /// The role, e.g. payments-writer.
        #[arg(long, required = true)]
        role: Option<String>,
        /// The scope, e.g. 'Service::"payments"'.
        #[arg(long, required = true)]
        scope: Option<String>,
        /// How long, e.g. 30m.
        #[arg(long = "for", required = true, allow_hyphen_values = true)]
        duration: Option<String>,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        /// A ticket reference.
        #[arg(long)]
        ticket: Option<String>,
        /// Start later (RFC 3339).
        #[arg(long, allow_hyphen_values = true)]
        starts_at: Option<String>,
        /// Wait until the request is decided, then print the grant (exit 1 when denied or expired).
        #[arg(long)]
        wait: bool,
        /// With `--wait`: give up after this long (exit 1), e.g. 10m; default: until the request expires.
        #[arg(long, value_parser = humantime::parse_duration, requires = "wait")]
        timeout: Option<std::time::Duration>,
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
    /// List access requests (yours; `--all` for everyone's where policy allows), newest first.
    Requests {
        /// Only in this state.
        #[arg(long, value_parser = ["pending", "approved", "denied", "expired", "cancelled"])]
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
    /// List grants that are active or not yet started (yours; `--all` for everyone's where policy allows). An ended
    /// grant is shown by `request show <request id>`.
    Grants {
        /// Everyone's.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Mint a short-lived token bound to one of your grants; prints the token alone on stdout
    /// (`T=$(jitgate token --grant G)`), what it is bound to on stderr.
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
    /// Who your token says you are: principal, groups, and your active and upcoming grants.
    Whoami {
        #[command(flatten)]
        conn: Conn,
    },
}

/// Subcommands of `request`.
#[derive(Debug, Subcommand)]
pub enum RequestSub {
    /// Show one request: state, age, approvals so far, and its grant once approved.
    Show {
        /// The request id.
        id: String,
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
pub(crate) fn query_value(v: &str) -> String {
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

/// How to print a successful answer as a table, and its ids for `--quiet`.
#[derive(Clone, Copy)]
struct Show {
    table: fn(&Value, i64) -> String,
    ids: fn(&Value) -> Vec<String>,
    /// A note for people, on stderr (so that stdout holds the data alone).
    note: Option<fn(&Value) -> String>,
}

const REQUEST: Show = Show {
    table: show_request,
    ids: |v| vec![s(&v["request"]["id"])],
    note: None,
};
const ENDED: Show = Show {
    table: show_ended,
    ids: |v| vec![s(&v["grant"]["id"])],
    note: None,
};
const REQUESTS: Show = Show {
    table: show_requests,
    ids: |v| rows(v, "requests").iter().map(|r| s(&r["id"])).collect(),
    note: None,
};
const GRANTS: Show = Show {
    table: show_grants,
    ids: |v| rows(v, "grants").iter().map(|g| s(&g["id"])).collect(),
    note: None,
};
const TOKEN: Show = Show {
    table: |v, _| s(&v["token"]),
    ids: |v| vec![s(&v["token"])],
    note: Some(|v| {
        format!(
            "(bound to grant {}, expires {})",
            s(&v["grant_id"]),
            s(&v["expires_at_rfc3339"])
        )
    }),
};
const WHOAMI: Show = Show {
    table: show_whoami,
    ids: |v| vec![s(&v["principal"])],
    note: None,
};

/// A prepared call: connection, method, path, JSON body, and how to print the answer.
type Call = (Conn, &'static str, String, Option<Value>, Show);

/// Runs one lifecycle subcommand; exit codes as in `jitgate --help` (0 ok, 1 refused, 2 bad input, 3 unreachable).
pub fn run(cmd: AccessCommand) -> anyhow::Result<ExitCode> {
    use AccessCommand as C;
    let mut wait = None;
    let (conn, method, path, body, show): Call = match cmd {
        C::Request {
            sub: Some(RequestSub::Show { id, conn }),
            ..
        } => (
            conn,
            "GET",
            format!("/v1/requests/{}", id_segment("request", &id)?),
            None,
            REQUEST,
        ),
        C::Request {
            sub: None,
            role,
            scope,
            duration,
            reason,
            ticket,
            starts_at,
            wait: w,
            timeout,
            conn,
        } => {
            if w {
                wait = Some(timeout);
            }
            (
                conn,
                "POST",
                "/v1/requests".into(),
                Some(
                    json!({"role": role.unwrap_or_default(), "scope": scope.unwrap_or_default(),
                            "duration": duration.unwrap_or_default(), "reason": reason,
                            "ticket": ticket, "starts_at": starts_at}),
                ),
                REQUEST,
            )
        }
        C::Approve { id, comment, conn } => (
            conn,
            "POST",
            format!("/v1/requests/{}/approve", id_segment("request", &id)?),
            Some(json!({"comment": comment})),
            REQUEST,
        ),
        C::Deny { id, comment, conn } => (
            conn,
            "POST",
            format!("/v1/requests/{}/deny", id_segment("request", &id)?),
            Some(json!({"comment": comment})),
            REQUEST,
        ),
        C::Revoke { id, comment, conn } => (
            conn,
            "POST",
            format!("/v1/grants/{}/revoke", id_segment("grant", &id)?),
            Some(json!({"comment": comment})),
            ENDED,
        ),
        C::Drop { id, conn } => (
            conn,
            "POST",
            format!("/v1/grants/{}/drop", id_segment("grant", &id)?),
            Some(json!({})),
            ENDED,
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
                REQUESTS,
            )
        }
        C::Grants { all, conn } => (conn, "GET", format!("/v1/grants?all={all}"), None, GRANTS),
        C::Token { grant, ttl, conn } => (
            conn,
            "POST",
            format!("/v1/grants/{}/token", id_segment("grant", &grant)?),
            Some(json!({"ttl": ttl})),
            TOKEN,
        ),
        C::Whoami { conn } => (conn, "GET", "/v1/whoami".into(), None, WHOAMI),
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
    if !status.is_success() {
        eprintln!("{}", refusal(status, &v));
        if conn.output() != Output::Table {
            print_answer(&conn, &v, show)?;
        }
        return Ok(ExitCode::from(crate::exit::of_status(status)));
    }
    if let Some(timeout) = wait {
        if v["request"]["state"] == "pending" {
            if !conn.quiet {
                eprintln!("{}", show_request(&v, now()));
            }
            v = wait_for_decision(&client, &conn, token, &v, timeout)?;
        }
    }
    // E.g. a token alone on stdout, so that `T=$(jitgate token ...)` captures it; what it is bound to, on stderr.
    if let (Some(note), Output::Table, false) = (show.note, conn.output(), conn.quiet) {
        eprintln!("{}", note(&v));
    }
    print_answer(&conn, &v, show)?;
    // `--wait` ends with the verdict: 0 with a grant, 1 denied, expired or still pending at the timeout.
    if wait.is_some() && v["request"].is_object() && v["request"]["state"] != "approved" {
        eprintln!(
            "request {}: {}",
            s(&v["request"]["id"]),
            s(&v["request"]["state"])
        );
        return Ok(ExitCode::from(crate::exit::REFUSED));
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a (successful) answer as `--output`/`--quiet` ask.
fn print_answer(conn: &Conn, v: &Value, show: Show) -> anyhow::Result<()> {
    if conn.quiet {
        for id in (show.ids)(v) {
            outln!("{id}");
        }
        return Ok(());
    }
    match conn.output() {
        Output::Json => outln!("{}", serde_json::to_string_pretty(v)?),
        Output::Yaml => out!("{}", serde_yaml::to_string(v)?),
        Output::Table => outln!("{}", (show.table)(v, now())),
    }
    Ok(())
}

/// Polls request `view` until it leaves `pending` (or `timeout` passes); returns its last view.
fn wait_for_decision(
    client: &reqwest::blocking::Client,
    conn: &Conn,
    token: &str,
    view: &Value,
    timeout: Option<std::time::Duration>,
) -> anyhow::Result<Value> {
    let id = s(&view["request"]["id"]);
    let u = url(
        &conn.admin,
        &format!("/v1/requests/{}", id_segment("request", &id)?),
    );
    let started = std::time::Instant::now();
    if !conn.quiet {
        eprintln!(
            "waiting for a decision on request {id} (Ctrl-C stops waiting; the request stays)"
        );
    }
    let mut last = view.clone();
    loop {
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            eprintln!("no decision within the --timeout");
            return Ok(last);
        }
        // The admin API has no push: one read a second is light, and a decision shows within a second.
        std::thread::sleep(std::time::Duration::from_secs(1));
        let resp = client
            .get(&u)
            .bearer_auth(token)
            .send()
            .with_context(|| format!("cannot reach the admin API at {}", conn.admin.admin))?;
        let status = resp.status();
        let v: Value = resp.json().unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(crate::exit::Unreachable(format!(
                "while waiting for request {id}: {}",
                refusal(status, &v)
            ))
            .into());
        }
        if v["request"]["state"] != "pending" {
            return Ok(v);
        }
        last = v;
    }
}

/// Now, in Unix seconds.
fn now() -> i64 {
    jitgate_engine::clock::now_system()
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

/// The rows of a listing answer.
fn rows<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// How long ago `t` was (Unix seconds), e.g. `5m`, `2h`, `3d`.
fn ago(t: &Value, now: i64) -> String {
    t.as_i64()
        .map(|t| short_span(now.saturating_sub(t)))
        .unwrap_or_else(|| "-".into())
}

/// `secs` in one or two units, e.g. `45s`, `12m`, `2h5m`, `3d`; negative spans count as 0.
fn short_span(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 if secs % 3600 >= 60 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// Rows under a header, each column as wide as its widest cell; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, &w))| {
                if i + 1 == n {
                    c.to_string()
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

/// The reason cut to `n` characters for a table cell.
fn cut(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        return text.to_string();
    }
    let mut s: String = text.chars().take(n.saturating_sub(1)).collect();
    s.push('…');
    s
}

fn show_request(v: &Value, now: i64) -> String {
    let r = &v["request"];
    let approvals = v["approvals"]
        .as_array()
        .map(|a| a.iter().filter(|x| x["verdict"] == "approve").count())
        .unwrap_or(0);
    let mut lines = vec![
        format!("request     {}", s(&r["id"])),
        format!("state       {}", s(&r["state"])),
        format!("requester   {}", s(&r["requester"])),
        format!("role        {}", s(&r["role"])),
        format!("scope       {}", s(&r["scope"])),
        format!(
            "for         {}",
            r["duration_secs"]
                .as_i64()
                .map(jitgate_engine::clock::format_secs)
                .unwrap_or_else(|| "-".into())
        ),
        format!("reason      {}", s(&r["reason"])),
    ];
    if !r["ticket"].is_null() {
        lines.push(format!("ticket      {}", s(&r["ticket"])));
    }
    if !r["starts_at"].is_null() {
        lines.push(format!("starts at   {}", time(&r["starts_at"])));
    }
    lines.push(format!(
        "created     {} ({} ago)",
        time(&r["created_at"]),
        ago(&r["created_at"], now)
    ));
    lines.push(format!(
        "approvals   {approvals} of {}",
        s(&v["approvals_required"])
    ));
    for a in v["approvals"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let comment = a["comment"].as_str().filter(|c| !c.is_empty());
        lines.push(format!(
            "  {} {} at {}{}",
            s(&a["approver"]),
            s(&a["verdict"]),
            time(&a["at"]),
            comment.map(|c| format!(": {c}")).unwrap_or_default()
        ));
    }
    if r["state"] == "pending" {
        lines.push(format!(
            "expires     {} (if not decided)",
            time(&r["expires_at"])
        ));
    }
    if v["grant"].is_object() {
        lines.push(format!("grant       {}", show_grant(&v["grant"])));
    }
    lines.join("\n")
}

fn show_grant(g: &Value) -> String {
    format!(
        "{}: {} as {} on {} from {} until {} [{}]{}",
        s(&g["id"]),
        s(&g["principal"]),
        s(&g["role"]),
        s(&g["scope"]),
        time(&g["starts_at"]),
        time(&g["expires_at"]),
        s(&g["status"]),
        if g["break_glass"] == true {
            " BREAK-GLASS"
        } else {
            ""
        }
    )
}

fn show_ended(v: &Value, _now: i64) -> String {
    format!("grant {}", show_grant(&v["grant"]))
}

fn show_requests(v: &Value, now: i64) -> String {
    let rows = rows(v, "requests");
    if rows.is_empty() {
        return "no requests".into();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                s(&r["id"]),
                s(&r["state"]),
                s(&r["requester"]),
                s(&r["role"]),
                s(&r["scope"]),
                r["duration_secs"]
                    .as_i64()
                    .map(short_span)
                    .unwrap_or_else(|| "-".into()),
                ago(&r["created_at"], now),
                format!("{}/{}", s(&r["approvals"]), s(&r["approvals_required"])),
                cut(r["reason"].as_str().unwrap_or(""), 40),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STATE",
            "REQUESTER",
            "ROLE",
            "SCOPE",
            "FOR",
            "AGE",
            "APPROVALS",
            "REASON",
        ],
        &cells,
    )
}

fn grant_rows(grants: &[Value], now: i64) -> Vec<Vec<String>> {
    grants
        .iter()
        .map(|g| {
            let left = g["expires_at"].as_i64().map(|e| e.saturating_sub(now));
            let starts = g["starts_at"].as_i64().unwrap_or(0);
            vec![
                s(&g["id"]),
                s(&g["principal"]),
                s(&g["role"]),
                s(&g["scope"]),
                if starts > now {
                    format!("starts in {}", short_span(starts - now))
                } else {
                    s(&g["status"])
                },
                time(&g["expires_at"]),
                left.map(short_span).unwrap_or_else(|| "-".into()),
                if g["break_glass"] == true {
                    "BREAK-GLASS".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect()
}

const GRANT_HEADER: [&str; 8] = [
    "ID",
    "PRINCIPAL",
    "ROLE",
    "SCOPE",
    "STATUS",
    "EXPIRES",
    "LEFT",
    "",
];

fn show_grants(v: &Value, now: i64) -> String {
    let grants = rows(v, "grants");
    if grants.is_empty() {
        return "no active or upcoming grants".into();
    }
    table(&GRANT_HEADER, &grant_rows(grants, now))
}

fn show_whoami(v: &Value, now: i64) -> String {
    let groups: Vec<String> = rows(v, "groups").iter().map(s).collect();
    let mut out = format!(
        "principal   {}\ngroups      {}\n",
        s(&v["principal"]),
        if groups.is_empty() {
            "-".to_string()
        } else {
            groups.join(", ")
        }
    );
    let grants = rows(v, "grants");
    if grants.is_empty() {
        out.push_str("grants      none active or upcoming");
    } else {
        out.push_str("grants\n");
        out.push_str(&table(&GRANT_HEADER, &grant_rows(grants, now)));
    }
    out
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
