// The jitgate console's script: actions are calls of the admin API (/v1/...) with the session's CSRF token; the
// page refreshes its view (server-rendered) when the server says something changed, and counts grants down.
"use strict";
(function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";
  const status = document.getElementById("status");
  const main = document.getElementById("main");

  function say(text, bad) {
    if (!status) return;
    status.textContent = text;
    status.className = bad ? "error" : "ok";
  }

  async function call(method, url, body) {
    const r = await fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let j = {};
    try { j = await r.json(); } catch (_) { /* no JSON body */ }
    return { ok: r.ok, status: r.status, body: j };
  }

  let refreshing = null;
  async function refresh() {
    if (!main || !csrf) return;
    if (refreshing) return refreshing;
    const u = new URL(location.href);
    u.searchParams.set("fragment", "1");
    refreshing = (async () => {
      try {
        const r = await fetch(u, { credentials: "same-origin" });
        if (r.redirected || r.url.indexOf("/ui/login") >= 0) { location.href = "/ui/login"; return; }
        if (!r.ok) return;
        const html = await r.text();
        // Keep what someone is typing in the request form.
        const keep = {};
        main.querySelectorAll("input[id], textarea[id], select[id]").forEach(function (el) { keep[el.id] = el.value; });
        const focused = document.activeElement && document.activeElement.id;
        main.innerHTML = html;
        Object.keys(keep).forEach(function (id) { const el = document.getElementById(id); if (el) el.value = keep[id]; });
        if (focused) { const el = document.getElementById(focused); if (el) el.focus(); }
        tick();
        document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
      } finally {
        refreshing = null;
      }
    })();
    return refreshing;
  }

  function left(secs) {
    if (secs <= 0) return "expired";
    const h = Math.floor(secs / 3600), m = Math.floor((secs % 3600) / 60), s = secs % 60;
    const two = function (n) { return (n < 10 ? "0" : "") + n; };
    return (h > 0 ? h + "h " + two(m) + "m " : m + "m ") + two(s) + "s left";
  }
  function tick() {
    const now = Math.floor(Date.now() / 1000);
    document.querySelectorAll(".countdown[data-expires]").forEach(function (el) {
      el.textContent = left(Number(el.dataset.expires) - now);
    });
  }
  setInterval(tick, 1000);
  tick();

  document.addEventListener("click", async function (e) {
    const b = e.target.closest("button[data-action]");
    if (b) {
      e.preventDefault();
      const c = b.dataset.comment ? document.getElementById(b.dataset.comment) : null;
      b.disabled = true;
      const r = await call("POST", b.dataset.action, { comment: c ? c.value : "" });
      b.disabled = false;
      if (r.ok) say(b.dataset.label || "Done", false);
      else say(r.status + " " + (r.body.message || r.body.error || "refused"), true);
      await refresh();
      return;
    }
    if (e.target.id === "logout") {
      await call("POST", "/ui/logout");
      location.href = "/ui/login";
    }
  });

  document.addEventListener("submit", async function (e) {
    if (e.target.id !== "request-form") return;
    e.preventDefault();
    const f = e.target;
    const v = function (n) { return f.elements[n].value; };
    const body = { role: v("role"), scope: v("scope"), duration: v("duration"), reason: v("reason") };
    if (v("ticket")) body.ticket = v("ticket");
    const r = await call("POST", "/v1/requests", body);
    if (r.ok) {
      const id = r.body.request ? r.body.request.id : "";
      say("Requested " + body.role + (id ? " (" + id + ")" : "") + ": " + (r.body.request ? r.body.request.state : ""), false);
      f.elements.reason.value = "";
      f.elements.ticket.value = "";
    } else {
      say(r.status + " " + (r.body.message || r.body.error || "refused"), true);
    }
    await refresh();
  });

  if (csrf && window.EventSource) {
    const es = new EventSource("/ui/events");
    es.addEventListener("change", function () { refresh(); });
    es.addEventListener("open", function () { document.body.dataset.live = "1"; });
  }
})();
