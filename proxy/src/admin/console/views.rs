//! The console's pages, rendered on the server. Everything that comes from a person or a request (reasons, ids,
//! paths, bodies, comments) goes through [`esc`]; the pages load no inline script (the Content-Security-Policy says
//! `script-src 'self'`), so text that looks like markup stays text.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jitgate_engine::access::{RequestFilter, RequestState};
use jitgate_engine::clock::to_rfc3339;
use jitgate_engine::lifecycle::{Action, HOLD_ROLE};

use super::{Console, SessionIdentity};
use crate::access::{CallInfo, Caller};
use crate::admin::error::ApiError;

/// The content type of every page.
pub(super) const HTML: &str = "text/html; charset=utf-8";

/// `s` as HTML text (element content or a quoted attribute value).
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Security headers of every page: no framing, no inline script, no sniffing, no caching of private pages.
pub(super) fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

fn html(status: StatusCode, body: String) -> Response {
    harden((status, [(header::CONTENT_TYPE, HTML)], body).into_response())
}

/// A page that goes to `to` (a same-site navigation; see `Console::begin`).
pub(super) fn redirect_page(to: &str) -> String {
    let to = esc(to);
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={to}\">\
         <title>Signed in</title></head><body><p>Signed in. <a href=\"{to}\">Continue</a>.</p></body></html>"
    )
}

fn shell(title: &str, nav: Option<(&str, &str, &str)>, main: &str) -> String {
    let (csrf, who, links) = match nav {
        Some((active, who, csrf)) => {
            let mut links = String::new();
            for (path, label) in [
                ("/ui/access", "My access"),
                ("/ui/approvals", "Approvals"),
                ("/ui/grants", "Grants"),
                ("/ui/decisions", "Decisions"),
                ("/ui/bundle", "Bundle"),
            ] {
                let current = if path == active {
                    " aria-current=\"page\""
                } else {
                    ""
                };
                let _ = write!(links, "<li><a href=\"{path}\"{current}>{label}</a></li>");
            }
            (
                format!("<meta name=\"csrf-token\" content=\"{}\">", esc(csrf)),
                format!(
                    "<span class=\"who\">Signed in as <strong id=\"whoami\">{}</strong></span> \
                     <button type=\"button\" id=\"logout\">Sign out</button>",
                    esc(who)
                ),
                format!("<nav aria-label=\"Console\"><ul>{links}</ul></nav>"),
            )
        }
        None => (String::new(), String::new(), String::new()),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{csrf}\
         <title>{t} · jitgate console</title><link rel=\"stylesheet\" href=\"/ui/assets/console.css\">\
         <script src=\"/ui/assets/console.js\" defer></script></head>\
         <body><a class=\"skip\" href=\"#main\">Skip to content</a><header><span class=\"brand\">jitgate</span>{links}\
         <div class=\"session\">{who}</div></header>\
         <div id=\"status\" role=\"status\" aria-live=\"polite\"></div>\
         <main id=\"main\" tabindex=\"-1\">{main}</main></body></html>",
        t = esc(title)
    )
}

/// The sign-in page: the development people (quickstart only), the provider, and why the last attempt failed.
pub(super) fn login(dev: &[&str], issuer: Option<&str>, problem: Option<&str>) -> Response {
    let mut m = String::from("<h1>Sign in to the jitgate console</h1>");
    if let Some(p) = problem {
        let _ = write!(m, "<p class=\"error\" role=\"alert\">{}</p>", esc(p));
    }
    if let Some(i) = issuer {
        let _ = write!(
            m,
            "<p><a class=\"button\" href=\"/ui/login/oidc\">Sign in with {}</a></p>",
            esc(i)
        );
    }
    if !dev.is_empty() {
        m.push_str(
            "<form method=\"post\" action=\"/ui/login/dev\" class=\"card\"><h2>Development sign-in (quickstart only)</h2>\
             <p>Pick a demo person; their groups are in policies/QUICKSTART.md.</p><fieldset><legend>Person</legend>",
        );
        for (i, name) in dev.iter().enumerate() {
            let checked = if i == 0 { " checked" } else { "" };
            let _ = write!(
                m,
                "<label><input type=\"radio\" name=\"user\" value=\"{n}\"{checked}> {n}</label>",
                n = esc(name)
            );
        }
        m.push_str("</fieldset><button type=\"submit\" id=\"dev-sign-in\">Sign in</button></form>");
    }
    if issuer.is_none() && dev.is_empty() {
        m.push_str(
            "<p>No sign-in is configured: add a <code>[console]</code> section (issuer, client_id, redirect_url, \
             public_url) to the config.</p>",
        );
    }
    html(StatusCode::OK, shell("Sign in", None, &m))
}

/// A signed-in page's caller: the session's identity, as the admin API would see it.
struct Page {
    caller: Caller,
    who: String,
    csrf: String,
    fragment: bool,
}

fn page_of(
    c: &Console,
    s: Option<axum::Extension<SessionIdentity>>,
    path: &str,
    q: &HashMap<String, String>,
) -> Option<Page> {
    let axum::Extension(s) = s?;
    let call = CallInfo {
        client: s.client,
        method: "GET".into(),
        path: path.into(),
        query: String::new(),
        host: s.host,
    };
    Some(Page {
        who: s.identity.principal.to_string(),
        caller: c.proxy.access.session_caller(s.identity, call),
        csrf: s.csrf,
        fragment: q.get("fragment").is_some_and(|v| v == "1"),
    })
}

fn render(p: &Page, title: &str, active: &str, main: String) -> Response {
    if p.fragment {
        return html(StatusCode::OK, main);
    }
    html(
        StatusCode::OK,
        shell(title, Some((active, &p.who, &p.csrf)), &main),
    )
}

fn refused(e: ApiError) -> String {
    format!(
        "<p class=\"error\" role=\"alert\">{} {}</p>",
        e.status().as_u16(),
        esc(e.message())
    )
}

fn duration(secs: i64) -> String {
    jitgate_engine::clock::format_secs(secs)
}

fn countdown(expires_at: i64) -> String {
    format!(
        "<time class=\"countdown\" data-expires=\"{expires_at}\" datetime=\"{t}\">until {t}</time>",
        t = esc(&to_rfc3339(expires_at))
    )
}

type Q = Query<HashMap<String, String>>;

/// *My access*: the request form (roles from the bundle with their limits), my requests, my grants.
pub(super) async fn access(
    State(c): State<Arc<Console>>,
    s: Option<axum::Extension<SessionIdentity>>,
    Query(q): Q,
) -> Response {
    let Some(p) = page_of(&c, s, "/ui/access", &q) else {
        return super::see_other("/ui/login");
    };
    let bundle = c.proxy.authorizer.bundle();
    let mut m = String::from("<h1>My access</h1>");
    m.push_str("<section aria-labelledby=\"new-h\" class=\"card\"><h2 id=\"new-h\">Request access</h2><form id=\"request-form\">");
    m.push_str("<label for=\"role\">Role</label><select id=\"role\" name=\"role\" required>");
    for (name, r) in &bundle.manifest.roles {
        if name == HOLD_ROLE {
            continue;
        }
        let _ = write!(
            m,
            "<option value=\"{n}\">{n} (up to {max}, {a} approval{pl}{reason}{bg}){desc}</option>",
            n = esc(name),
            max = esc(&r.max_duration),
            a = r.approvals_required,
            pl = if r.approvals_required == 1 { "" } else { "s" },
            reason = if r.reason_required {
                ", reason required"
            } else {
                ""
            },
            bg = if r.break_glass { ", break-glass" } else { "" },
            desc = r
                .description
                .as_deref()
                .map(|d| format!(" — {}", esc(d)))
                .unwrap_or_default(),
        );
    }
    m.push_str("</select>");
    let mut services: Vec<&str> = bundle
        .routes
        .routes()
        .iter()
        .map(|r| r.service.as_str())
        .collect();
    services.sort_unstable();
    services.dedup();
    let first = services.first().copied().unwrap_or("payments");
    let _ = write!(
        m,
        "<label for=\"scope\">Scope</label><input id=\"scope\" name=\"scope\" list=\"scopes\" required value=\"{}\"><datalist id=\"scopes\">",
        esc(&format!("Service::\"{first}\""))
    );
    for s in &services {
        let _ = write!(
            m,
            "<option value=\"{}\">",
            esc(&format!("Service::\"{s}\""))
        );
    }
    m.push_str(
        "</datalist>\
         <label for=\"duration\">Duration</label><input id=\"duration\" name=\"duration\" value=\"30m\" required>\
         <label for=\"reason\">Reason</label><textarea id=\"reason\" name=\"reason\" rows=\"2\"></textarea>\
         <label for=\"ticket\">Ticket</label><input id=\"ticket\" name=\"ticket\">\
         <button type=\"submit\" id=\"request-submit\">Request</button></form></section>",
    );
    let me = p.caller.principal().entity.clone();
    let requests = c
        .proxy
        .access
        .list_requests(
            p.caller.clone(),
            RequestFilter {
                requester: Some(me),
                limit: Some(50),
                ..RequestFilter::default()
            },
            false,
        )
        .await;
    m.push_str("<section aria-labelledby=\"mine-h\"><h2 id=\"mine-h\">My requests</h2>");
    match requests {
        Err(e) => m.push_str(&refused(ApiError::from(e))),
        Ok(rows) if rows.is_empty() => m.push_str("<p>None yet.</p>"),
        Ok(rows) => {
            m.push_str("<table id=\"my-requests\"><thead><tr><th scope=\"col\">Request</th><th scope=\"col\">Role</th><th scope=\"col\">Scope</th><th scope=\"col\">For</th><th scope=\"col\">Reason</th><th scope=\"col\">State</th><th scope=\"col\">Approvals</th></tr></thead><tbody>");
            for r in rows {
                let q = &r.request;
                let _ = write!(
                    m,
                    "<tr id=\"my-request-{id}\"><td><code>{id}</code></td><td>{role}</td><td>{scope}</td><td>{d}</td><td class=\"reason\">{reason}</td><td class=\"state\">{state}</td><td>{a} of {n}</td></tr>",
                    id = esc(&q.id),
                    role = esc(&q.role),
                    scope = esc(&q.scope.to_string()),
                    d = esc(&duration(q.duration_secs)),
                    reason = esc(&q.reason),
                    state = esc(q.state.as_str()),
                    a = r.approvals,
                    n = r.approvals_required,
                );
            }
            m.push_str("</tbody></table>");
        }
    }
    m.push_str("</section>");
    m.push_str("<section aria-labelledby=\"grants-h\"><h2 id=\"grants-h\">My grants</h2>");
    match c.proxy.access.grants(p.caller.clone(), false).await {
        Err(e) => m.push_str(&refused(ApiError::from(e))),
        Ok(rows) if rows.is_empty() => m.push_str("<p>No active grants.</p>"),
        Ok(rows) => {
            m.push_str("<table id=\"my-grants\"><thead><tr><th scope=\"col\">Grant</th><th scope=\"col\">Role</th><th scope=\"col\">Scope</th><th scope=\"col\">Time left</th><th scope=\"col\">Uses left</th><th scope=\"col\"><span class=\"sr-only\">Actions</span></th></tr></thead><tbody>");
            for g in rows {
                let _ = write!(
                    m,
                    "<tr id=\"my-grant-{id}\"><td><code>{id}</code></td><td class=\"role\">{role}</td><td>{scope}</td><td>{cd}</td><td>{uses}</td>\
                     <td><button type=\"button\" data-action=\"/v1/grants/{id}/drop\" data-label=\"Dropped grant {id}\">Drop</button></td></tr>",
                    id = esc(&g.id),
                    role = esc(&g.role),
                    scope = esc(&g.scope.to_string()),
                    cd = countdown(g.expires_at),
                    uses = g
                        .max_uses
                        .map(|n| n.saturating_sub(g.uses).to_string())
                        .unwrap_or_else(|| "unlimited".into()),
                );
            }
            m.push_str("</tbody></table>");
        }
    }
    m.push_str("</section>");
    render(&p, "My access", "/ui/access", m)
}

/// *Approvals*: every pending request the caller may see, held requests with the exact request, approve / deny.
pub(super) async fn approvals(
    State(c): State<Arc<Console>>,
    s: Option<axum::Extension<SessionIdentity>>,
    Query(q): Q,
) -> Response {
    let Some(p) = page_of(&c, s, "/ui/approvals", &q) else {
        return super::see_other("/ui/login");
    };
    let mut m =
        String::from("<h1>Approvals</h1><p class=\"hint\">Pending requests update live.</p>");
    let rows = c
        .proxy
        .access
        .list_requests(
            p.caller.clone(),
            RequestFilter {
                state: Some(RequestState::Pending),
                limit: Some(200),
                ..RequestFilter::default()
            },
            true,
        )
        .await;
    match rows {
        Err(e) => m.push_str(&refused(ApiError::from(e))),
        Ok(rows) if rows.is_empty() => {
            m.push_str("<p id=\"no-pending\">Nothing is waiting for approval.</p>")
        }
        Ok(rows) => {
            m.push_str("<ul class=\"cards\" id=\"pending\">");
            for r in rows {
                let q = &r.request;
                let id = esc(&q.id);
                let held = q.role == HOLD_ROLE;
                let _ = write!(
                    m,
                    "<li class=\"card pending\" id=\"request-{id}\" data-request=\"{id}\"><h2>{title} <code>{id}</code></h2><dl>\
                     <dt>Requester</dt><dd class=\"requester\">{who}</dd>",
                    title = if held {
                        "Held request"
                    } else {
                        "Access request"
                    },
                    who = esc(&q.requester.to_string()),
                );
                if held {
                    if let Some(h) = c.proxy.access.holds().described(&q.id) {
                        let _ = write!(
                            m,
                            "<dt>Method</dt><dd class=\"held-method\">{}</dd><dt>Host</dt><dd class=\"held-host\">{}</dd>\
                             <dt>Path</dt><dd class=\"held-path\"><code>{}</code></dd><dt>Query</dt><dd class=\"held-query\"><code>{}</code></dd>\
                             <dt>Body</dt><dd class=\"held-body\">{} bytes, SHA-256 <code>{}</code></dd>",
                            esc(&h.method),
                            esc(h.host.as_deref().unwrap_or("(none)")),
                            esc(&h.path),
                            esc(if h.query.is_empty() {
                                "(none)"
                            } else {
                                &h.query
                            }),
                            h.body_bytes,
                            esc(&h.body_sha256),
                        );
                        if let Some(text) = h.body_preview.as_deref().filter(|t| !t.is_empty()) {
                            let _ = write!(
                                m,
                                "<dt>Body preview</dt><dd><pre class=\"held-preview\">{}</pre></dd>",
                                esc(text)
                            );
                        }
                    }
                    let _ = write!(
                        m,
                        "<dt>On</dt><dd>{}</dd><dt>Why held</dt><dd class=\"reason\">{}</dd>",
                        esc(&q.scope.to_string()),
                        esc(&q.reason)
                    );
                } else {
                    let _ = write!(
                        m,
                        "<dt>Role</dt><dd class=\"role\">{}</dd><dt>Scope</dt><dd>{}</dd><dt>Duration</dt><dd>{}</dd>\
                         <dt>Reason</dt><dd class=\"reason\">{}</dd><dt>Ticket</dt><dd>{}</dd>",
                        esc(&q.role),
                        esc(&q.scope.to_string()),
                        esc(&duration(q.duration_secs)),
                        esc(&q.reason),
                        esc(q.ticket.as_deref().unwrap_or("(none)")),
                    );
                }
                let _ = write!(
                    m,
                    "<dt>Approvals</dt><dd class=\"approvals\">{} of {}</dd><dt>Expires</dt><dd>{}</dd></dl>\
                     <label for=\"comment-{id}\">Comment</label><input id=\"comment-{id}\" class=\"comment\">\
                     <div class=\"actions\"><button type=\"button\" class=\"approve\" data-action=\"/v1/requests/{id}/approve\" data-comment=\"comment-{id}\" data-label=\"Approved {id}\">Approve</button>\
                     <button type=\"button\" class=\"deny\" data-action=\"/v1/requests/{id}/deny\" data-comment=\"comment-{id}\" data-label=\"Denied {id}\">Deny</button></div></li>",
                    r.approvals,
                    r.approvals_required,
                    countdown(q.expires_at),
                );
            }
            m.push_str("</ul>");
        }
    }
    render(&p, "Approvals", "/ui/approvals", m)
}

/// *Grants*: active grants the caller may see, with approvers and uses left; revoke.
pub(super) async fn grants(
    State(c): State<Arc<Console>>,
    s: Option<axum::Extension<SessionIdentity>>,
    Query(q): Q,
) -> Response {
    let Some(p) = page_of(&c, s, "/ui/grants", &q) else {
        return super::see_other("/ui/login");
    };
    let mut m = String::from("<h1>Grants</h1>");
    match c.proxy.access.grants(p.caller.clone(), true).await {
        Err(e) => m.push_str(&refused(ApiError::from(e))),
        Ok(rows) if rows.is_empty() => m.push_str("<p>No active grants.</p>"),
        Ok(rows) => {
            m.push_str("<table id=\"grants\"><thead><tr><th scope=\"col\">Grant</th><th scope=\"col\">Holder</th><th scope=\"col\">Role</th><th scope=\"col\">Scope</th><th scope=\"col\">Approved by</th><th scope=\"col\">Reason</th><th scope=\"col\">Uses left</th><th scope=\"col\">Time left</th><th scope=\"col\"><span class=\"sr-only\">Actions</span></th></tr></thead><tbody>");
            for g in rows {
                let _ = write!(
                    m,
                    "<tr id=\"grant-{id}\"><td><code>{id}</code></td><td class=\"holder\">{who}</td><td class=\"role\">{role}</td><td>{scope}</td><td>{by}</td><td class=\"reason\">{reason}</td><td>{uses}</td><td>{cd}</td>\
                     <td><label class=\"sr-only\" for=\"revoke-comment-{id}\">Comment</label><input id=\"revoke-comment-{id}\" placeholder=\"comment\">\
                     <button type=\"button\" class=\"revoke\" data-action=\"/v1/grants/{id}/revoke\" data-comment=\"revoke-comment-{id}\" data-label=\"Revoked {id}\">Revoke</button></td></tr>",
                    id = esc(&g.id),
                    who = esc(&g.principal.to_string()),
                    role = esc(&g.role),
                    scope = esc(&g.scope.to_string()),
                    by = esc(&g.approvers.join(", ")),
                    reason = esc(&g.reason),
                    uses = g
                        .max_uses
                        .map(|n| n.saturating_sub(g.uses).to_string())
                        .unwrap_or_else(|| "unlimited".into()),
                    cd = countdown(g.expires_at),
                );
            }
            m.push_str("</tbody></table>");
        }
    }
    render(&p, "Grants", "/ui/grants", m)
}

/// The chart's buckets.
const BUCKETS: usize = 24;

/// Allow / deny / hold per time bucket as an inline SVG bar chart.
fn chart(records: &[jitgate_engine::log::DecisionRecord]) -> String {
    let times: Vec<(i64, &str)> = records
        .iter()
        .filter_map(|r| {
            let t = jitgate_engine::clock::parse_rfc3339(&r.time).ok()?;
            let d = r.decision.as_ref()?;
            Some((t, d.as_str()))
        })
        .collect();
    let (Some(min), Some(max)) = (
        times.iter().map(|t| t.0).min(),
        times.iter().map(|t| t.0).max(),
    ) else {
        return "<p>No decisions to chart.</p>".into();
    };
    let span = (max - min).max(1);
    let mut counts = vec![[0u32; 3]; BUCKETS];
    for (t, d) in &times {
        let b = usize::try_from((t - min) * (BUCKETS as i64 - 1) / span).unwrap_or(0);
        // An error is a deny.
        let k = match *d {
            "allow" => 0,
            "hold" => 2,
            _ => 1,
        };
        if let Some(row) = counts.get_mut(b.min(BUCKETS - 1)) {
            row[k] += 1;
        }
    }
    let top = counts
        .iter()
        .map(|c| c.iter().sum::<u32>())
        .max()
        .unwrap_or(1)
        .max(1);
    let (w, h) = (720u32, 160u32);
    let bw = w / BUCKETS as u32;
    let mut svg = format!(
        "<figure><svg id=\"decision-chart\" role=\"img\" viewBox=\"0 0 {w} {hh}\" width=\"100%\" aria-labelledby=\"chart-t\"><title id=\"chart-t\">Allow, deny and hold decisions over time, {} to {}</title>",
        esc(&to_rfc3339(min)),
        esc(&to_rfc3339(max)),
        hh = h + 20
    );
    for (i, c) in counts.iter().enumerate() {
        let mut y = h;
        for (k, class) in ["allow", "deny", "hold"].iter().enumerate() {
            let bh = c[k] * (h - 10) / top;
            if bh == 0 {
                continue;
            }
            y -= bh;
            let _ = write!(
                svg,
                "<rect class=\"{class}\" x=\"{}\" y=\"{y}\" width=\"{}\" height=\"{bh}\"><title>{} {class}</title></rect>",
                i as u32 * bw + 1,
                bw.saturating_sub(2),
                c[k]
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{}\">{}</text><text x=\"{w}\" y=\"{}\" text-anchor=\"end\">{}</text></svg>\
         <figcaption><span class=\"key allow\">allow</span> <span class=\"key deny\">deny</span> <span class=\"key hold\">hold</span></figcaption></figure>",
        h + 16,
        esc(&to_rfc3339(min)),
        h + 16,
        esc(&to_rfc3339(max))
    );
    svg
}

/// *Decisions*: search by principal, action, decision and time; a chart; the chain's verify status.
pub(super) async fn decisions(
    State(c): State<Arc<Console>>,
    s: Option<axum::Extension<SessionIdentity>>,
    Query(q): Q,
) -> Response {
    let Some(p) = page_of(&c, s, "/ui/decisions", &q) else {
        return super::see_other("/ui/login");
    };
    let val = |k: &str| esc(q.get(k).map(String::as_str).unwrap_or(""));
    let mut m = format!(
        "<h1>Decisions</h1><form id=\"decision-search\" method=\"get\" action=\"/ui/decisions\" class=\"search\">\
         <label for=\"principal\">Principal</label><input id=\"principal\" name=\"principal\" value=\"{}\" placeholder='User::\"alice\"'>\
         <label for=\"action\">Action</label><input id=\"action\" name=\"action\" value=\"{}\">\
         <label for=\"decision\">Decision</label><select id=\"decision\" name=\"decision\">",
        val("principal"),
        val("action")
    );
    for d in ["", "allow", "deny", "hold", "error"] {
        let sel = if q.get("decision").map(String::as_str).unwrap_or("") == d {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            m,
            "<option value=\"{d}\"{sel}>{}</option>",
            if d.is_empty() { "any" } else { d }
        );
    }
    let _ = write!(
        m,
        "</select><label for=\"since\">Since</label><input id=\"since\" name=\"since\" value=\"{}\" placeholder=\"2026-01-31T09:00:00Z\">\
         <label for=\"until\">Until</label><input id=\"until\" name=\"until\" value=\"{}\"><button type=\"submit\">Search</button></form>",
        val("since"),
        val("until")
    );
    let mut pairs: Vec<(String, String)> = ["principal", "action", "decision", "since", "until"]
        .iter()
        .filter_map(|k| {
            q.get(*k)
                .filter(|v| !v.is_empty())
                .map(|v| (k.to_string(), v.clone()))
        })
        .collect();
    // The last day unless a start is given; at most 1000 decisions from the start.
    if !pairs.iter().any(|(k, _)| k == "since") {
        let day_ago = c.proxy.authorizer.clock().now().saturating_sub(24 * 3600);
        pairs.push(("since".into(), to_rfc3339(day_ago)));
    }
    pairs.push(("kind".into(), "decision".into()));
    pairs.push(("limit".into(), "1000".into()));
    let since = pairs
        .iter()
        .find(|(k, _)| k == "since")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    match crate::admin::read_decisions(&c.proxy, p.caller.clone(), Ok(pairs)).await {
        Err(e) => m.push_str(&refused(e)),
        Ok(page) => {
            let path = c.proxy.config.log_path.clone();
            let verified =
                tokio::task::spawn_blocking(move || jitgate_engine::log::verify_store(&path)).await;
            m.push_str("<section aria-labelledby=\"chain-h\"><h2 id=\"chain-h\">Chain</h2><p id=\"chain-status\">");
            match verified {
                Ok(Ok(r)) if r.ok => {
                    let _ = write!(
                        m,
                        "<span class=\"ok\">verified</span>: {} records, the chain is intact",
                        r.records
                    );
                }
                Ok(Ok(r)) => {
                    let _ = write!(
                        m,
                        "<span class=\"bad\">does not verify</span>: {}",
                        esc(&r.failure.map(|f| f.to_string()).unwrap_or_default())
                    );
                }
                Ok(Err(e)) => {
                    let _ = write!(
                        m,
                        "<span class=\"bad\">cannot be read</span>: {}",
                        esc(&e.to_string())
                    );
                }
                Err(e) => {
                    let _ = write!(
                        m,
                        "<span class=\"bad\">not checked</span>: {}",
                        esc(&e.to_string())
                    );
                }
            }
            m.push_str("</p></section><section aria-labelledby=\"chart-h\"><h2 id=\"chart-h\">Over time</h2>");
            m.push_str(&chart(&page.records));
            let _ = write!(
                m,
                "</section><section aria-labelledby=\"rec-h\"><h2 id=\"rec-h\">Newest decisions</h2><p class=\"hint\">From {}{}; \
                 at most 1000 are read, the newest 200 shown.</p>",
                esc(&since),
                if page.next.is_some() {
                    " (more follow: narrow the search or move the start)"
                } else {
                    ""
                }
            );
            if page.records.is_empty() {
                m.push_str("<p>No decision matches.</p>");
            } else {
                m.push_str("<table id=\"decisions\"><thead><tr><th scope=\"col\">Time</th><th scope=\"col\">Principal</th><th scope=\"col\">Action</th><th scope=\"col\">Resource</th><th scope=\"col\">Decision</th><th scope=\"col\">Status</th></tr></thead><tbody>");
                for r in page.records.iter().rev().take(200) {
                    let d = r.decision.as_ref().map(|d| d.as_str()).unwrap_or("");
                    let _ = write!(
                        m,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{d}\">{d}</td><td>{}</td></tr>",
                        esc(&r.time),
                        esc(&r.principal),
                        esc(&r.action),
                        esc(&r.resource),
                        r.status.map(|s| s.to_string()).unwrap_or_default()
                    );
                }
                m.push_str("</tbody></table>");
            }
            m.push_str("</section>");
        }
    }
    render(&p, "Decisions", "/ui/decisions", m)
}

/// *Bundle*: the live revision, the last reload attempt and its errors (`operate`, like `GET /v1/status`).
pub(super) async fn bundle(
    State(c): State<Arc<Console>>,
    s: Option<axum::Extension<SessionIdentity>>,
    Query(q): Q,
) -> Response {
    let Some(p) = page_of(&c, s, "/ui/bundle", &q) else {
        return super::see_other("/ui/login");
    };
    let mut m = String::from("<h1>Bundle</h1>");
    if let Err(e) = c
        .proxy
        .access
        .require(p.caller.clone(), Action::Operate)
        .await
    {
        m.push_str(&refused(ApiError::from(e)));
        return render(&p, "Bundle", "/ui/bundle", m);
    }
    let b = c.proxy.authorizer.bundle();
    let st = c.proxy.reloader.status();
    let _ = write!(
        m,
        "<dl class=\"card\"><dt>Name</dt><dd>{}</dd><dt>Engine</dt><dd>{}</dd><dt>Live revision</dt><dd><code id=\"revision\">{}</code></dd>\
         <dt>Live since</dt><dd>{}</dd><dt>Routes</dt><dd>{}</dd><dt>Reload attempts</dt><dd>{}</dd></dl>",
        esc(&b.manifest.name),
        esc(b.engine().as_str()),
        esc(&b.revision),
        esc(&to_rfc3339(st.active_since)),
        b.routes.len(),
        st.attempts
    );
    m.push_str("<h2>Last reload attempt</h2>");
    match &st.last_attempt {
        None => m.push_str("<p>None since start.</p>"),
        Some(a) => {
            let _ = write!(
                m,
                "<p id=\"last-attempt\">Attempt at {}: <strong>{}</strong>{} ({} ms)</p>",
                esc(&to_rfc3339(a.at)),
                esc(&format!("{:?}", a.outcome).to_lowercase()),
                a.revision
                    .as_deref()
                    .map(|r| format!(", revision <code>{}</code>", esc(r)))
                    .unwrap_or_default(),
                a.duration_ms
            );
            if !a.errors.is_empty() {
                m.push_str("<ul class=\"errors\">");
                for e in &a.errors {
                    let _ = write!(m, "<li><code>{}</code></li>", esc(&e.to_string()));
                }
                m.push_str("</ul>");
            }
        }
    }
    render(&p, "Bundle", "/ui/bundle", m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_in_text_and_attributes() {
        let reason = r#"<script>alert(1)</script> "><img src=x onerror=alert(2)> & 'q'"#;
        let out = esc(reason);
        assert_eq!(
            out,
            "&lt;script&gt;alert(1)&lt;/script&gt; &quot;&gt;&lt;img src=x onerror=alert(2)&gt; &amp; &#39;q&#39;"
        );
        assert!(!out.contains('<') && !out.contains('>') && !out.contains('"'));
    }

    async fn body(r: Response) -> String {
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        String::from_utf8_lossy(&b).into_owned()
    }

    #[tokio::test]
    async fn login_page_offers_dev_sign_in_only_when_given_people() {
        let with = body(login(&["alice", "bob"], None, None)).await;
        assert!(with.contains("/ui/login/dev") && with.contains("value=\"bob\""));
        let without = body(login(&[], Some("https://id.example"), None)).await;
        assert!(!without.contains("/ui/login/dev"));
        assert!(without.contains("Sign in with https://id.example"));
    }
}
