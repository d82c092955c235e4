// Browser tests of the approver console, in headless Chromium driven by playwright-core. Started by
// proxy/tests/console_browser.rs against a real quickstart (real proxy, real demo upstream) on 127.0.0.1:
//   JITGATE_ADMIN   the admin listener, e.g. http://127.0.0.1:9090
//   JITGATE_DATA    the data-plane listener
//   JITGATE_TOKENS  JSON {"alice": token, ...} for calls through the proxy outside the browser
//   JITGATE_SCREENSHOTS  where to write a screenshot of each view
//   CHROMIUM        the browser (default /usr/bin/chromium)
// Exits non-zero, naming the step, on the first failure.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import assert from "node:assert/strict";

const ADMIN = process.env.JITGATE_ADMIN;
const DATA = process.env.JITGATE_DATA;
const TOKENS = JSON.parse(process.env.JITGATE_TOKENS || "{}");
const SHOTS = process.env.JITGATE_SCREENSHOTS;
const TIMEOUT = 20000;
// The whole run is bounded too: a hang is a failure, not a stuck CI job.
setTimeout(() => { console.error(`FAILED: timed out at step "${stepName}"`); process.exit(2); }, 180000).unref();
if (!ADMIN || !DATA) throw new Error("JITGATE_ADMIN and JITGATE_DATA must be set");
if (SHOTS) mkdirSync(SHOTS, { recursive: true });

let stepName = "start";
function step(name) { stepName = name; console.log("step: " + name); }

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});

async function shot(page, name) {
  if (!SHOTS) return;
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

async function signIn(name) {
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  ctx.setDefaultTimeout(TIMEOUT);
  const page = await ctx.newPage();
  page.on("pageerror", (e) => console.log(`[${name}] page error: ${e.message}`));
  await page.goto(ADMIN + "/ui/");
  await page.waitForURL("**/ui/login");
  if (name === "alice") await shot(page, "sign-in");
  await page.check(`input[name="user"][value="${name}"]`);
  await page.click("#dev-sign-in");
  await page.waitForURL("**/ui/access");
  assert.equal(await page.textContent("#whoami"), `User::"${name}"`);
  return { ctx, page };
}

async function live(page) {
  // The page's event stream is open: changes from now on arrive without a reload.
  // (A locator, not waitForFunction: the console's Content-Security-Policy forbids the eval that polling uses.)
  await page.locator('body[data-live="1"]').waitFor({ state: "attached" });
}

async function through(method, path, who, body) {
  const r = await fetch(DATA + path, {
    method,
    headers: { authorization: "Bearer " + TOKENS[who], "content-type": "application/json" },
    body,
  });
  await r.arrayBuffer();
  return r.status;
}

const XSS = `INC-4211 <script>window.__xss = 1</script> "><img src=x onerror="window.__xss = 2">`;

try {
  step("alice and bob sign in; bob watches Approvals");
  const alice = await signIn("alice");
  const bob = await signIn("bob");
  await bob.page.goto(ADMIN + "/ui/approvals");
  await live(bob.page);
  await bob.page.evaluate(() => { window.__noReload = true; });

  step("alice requests payments-writer with a reason holding markup");
  assert.equal(await through("POST", "/payments", "alice", "{}"), 403, "alice may not write before a grant");
  await live(alice.page);
  await alice.page.selectOption("#role", "payments-writer");
  await alice.page.fill("#scope", 'Service::"payments"');
  await alice.page.fill("#duration", "30m");
  await alice.page.fill("#reason", XSS);
  await alice.page.fill("#ticket", "INC-4211");
  await alice.page.click("#request-submit");
  await alice.page.waitForSelector("#status.ok");
  assert.match(await alice.page.textContent("#status"), /Requested payments-writer/);
  await alice.page.waitForSelector("#my-requests td.state:text('pending')");

  step("bob sees it live, with its reason as text");
  const card = bob.page.locator("li.pending", { has: bob.page.locator(".role", { hasText: "payments-writer" }) });
  await card.waitFor();
  assert.equal(await bob.page.evaluate(() => window.__noReload), true, "the page was not reloaded");
  assert.equal(await card.locator(".requester").textContent(), 'User::"alice"');
  assert.equal(await card.locator(".reason").textContent(), XSS, "the reason is shown exactly, as text");
  assert.equal(await card.locator(".reason img, .reason script").count(), 0, "no element came from the reason");
  assert.equal(await bob.page.evaluate(() => window.__xss), undefined, "no script from the reason ran");
  await shot(bob.page, "approvals");

  step("bob approves");
  await card.locator("input.comment").fill("ok, for INC-4211");
  await card.locator("button.approve").click();
  await bob.page.waitForSelector("#status.ok");
  assert.match(await bob.page.textContent("#status"), /Approved/);

  step("alice sees her grant with its countdown, live");
  const grantRow = alice.page.locator("#my-grants tr", { has: alice.page.locator(".role", { hasText: "payments-writer" }) });
  await grantRow.waitFor();
  const first = await grantRow.locator(".countdown").textContent();
  assert.match(first, /^(29m|30m) \d\ds left$/, `countdown shows time left: ${first}`);
  // It counts down: the text changes within a couple of seconds.
  await grantRow.locator(".countdown").filter({ hasNotText: first }).waitFor();
  await shot(alice.page, "my-access");
  assert.ok((await through("POST", "/payments", "alice", "{}")) < 400, "alice may write with the grant");

  step("bob revokes it from Grants");
  await bob.page.goto(ADMIN + "/ui/grants");
  const row = bob.page.locator("#grants tr", { has: bob.page.locator(".holder", { hasText: 'User::"alice"' }) })
    .filter({ has: bob.page.locator(".role", { hasText: "payments-writer" }) });
  await row.waitFor();
  await shot(bob.page, "grants");
  await row.locator("button.revoke").click();
  await bob.page.waitForSelector("#status.ok");
  assert.match(await bob.page.textContent("#status"), /Revoked/);

  step("alice's next write through the proxy is 403");
  assert.equal(await through("POST", "/payments", "alice", "{}"), 403);
  await alice.page.waitForSelector("#my-grants .role:text('payments-writer')", { state: "detached" });

  step("a held DELETE: erin sees the exact request and approves; the waiting caller gets its answer");
  const erin = await signIn("erin");
  await erin.page.goto(ADMIN + "/ui/approvals");
  await live(erin.page);
  const held = through("DELETE", "/databases/staging?dry_run=false", "carol");
  const heldCard = erin.page.locator("li.pending", { has: erin.page.locator(".held-method", { hasText: "DELETE" }) });
  await heldCard.waitFor();
  assert.equal(await heldCard.locator(".held-path").textContent(), "/databases/staging");
  assert.equal(await heldCard.locator(".held-query").textContent(), "dry_run=false");
  assert.match(await heldCard.locator(".held-body").textContent(), /^0 bytes, SHA-256 e3b0c442/);
  assert.match(await heldCard.locator(".reason").textContent(), /method=DELETE path=\/databases\/staging/);
  await shot(erin.page, "approvals-held");
  await heldCard.locator("button.approve").click();
  assert.equal(await held, 200, "the held caller got the upstream's answer");

  step("Decisions (erin, compliance) and Bundle (sam, sre)");
  await erin.page.goto(ADMIN + "/ui/decisions");
  await erin.page.waitForSelector("#chain-status .ok");
  await erin.page.waitForSelector("#decision-chart rect");
  await shot(erin.page, "decisions");
  await erin.page.fill("#principal", 'User::"alice"');
  await erin.page.selectOption("#decision", "deny");
  await erin.page.click("#decision-search button");
  await erin.page.waitForURL(/principal=/);
  const shown = await erin.page.locator("#decisions tbody tr").count();
  assert.ok(shown >= 2, "alice's two refused writes are found");
  for (const d of await erin.page.locator("#decisions tbody td.deny").allTextContents()) assert.equal(d, "deny");
  const sam = await signIn("sam");
  await sam.page.goto(ADMIN + "/ui/bundle");
  await sam.page.waitForSelector("#revision");
  await shot(sam.page, "bundle");
  await bob.page.goto(ADMIN + "/ui/bundle");
  assert.match(await bob.page.textContent("main .error"), /^403 /, "bob may not operate: the API's 403");

  step("a cross-site POST without the CSRF token is refused");
  const pendingId = await (async () => {
    await alice.page.goto(ADMIN + "/ui/access");
    await alice.page.selectOption("#role", "payments-writer");
    await alice.page.fill("#scope", 'Service::"payments"');
    await alice.page.fill("#reason", "second");
    await alice.page.click("#request-submit");
    await alice.page.waitForSelector("#status.ok, #status.error");
    assert.equal(await alice.page.getAttribute("#status", "class"), "ok", await alice.page.textContent("#status"));
    return (await alice.page.textContent("#status")).match(/\(([^)]+)\)/)[1];
  })();
  const evil = await bob.ctx.newPage();
  await evil.route("http://127.0.0.1:9/evil", (route) => route.fulfill({
    contentType: "text/html",
    body: `<form id=f method=post action="${ADMIN}/v1/requests/${pendingId}/approve" enctype="text/plain">
           <input name='{"comment":"' value='x"}'></form><script>document.getElementById("f").submit()</script>`,
  }));
  await evil.goto("http://127.0.0.1:9/evil");
  await evil.waitForURL(`${ADMIN}/v1/requests/**`);
  assert.match(await evil.textContent("body"), /"error":"csrf"/);
  const sameOrigin = await bob.page.evaluate(async (id) =>
    (await fetch(`/v1/requests/${id}/approve`, { method: "POST", body: "{}" })).status, pendingId);
  assert.equal(sameOrigin, 403, "a call without the token is refused even from the console's own origin");
  await bob.page.goto(ADMIN + "/ui/approvals");
  await bob.page.locator(`#request-${pendingId}`).waitFor();

  step("a signed-out session cannot act");
  const cookies = await bob.ctx.cookies();
  const token = await bob.page.getAttribute('meta[name="csrf-token"]', "content");
  await bob.page.click("#logout");
  await bob.page.waitForURL("**/ui/login");
  await bob.ctx.addCookies(cookies);
  const after = await bob.page.evaluate(async ([id, t]) =>
    (await fetch(`/v1/requests/${id}/approve`, { method: "POST", headers: { "x-csrf-token": t }, body: "{}" })).status,
    [pendingId, token]);
  assert.equal(after, 401, "the old cookie and token no longer act");
  await bob.page.goto(ADMIN + "/ui/approvals");
  await bob.page.waitForURL("**/ui/login");

  console.log("console browser tests: all passed");
  await browser.close();
} catch (e) {
  console.error(`FAILED at step "${stepName}": ${e.stack || e}`);
  await browser.close();
  process.exit(1);
}
