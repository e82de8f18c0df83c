// End-to-end test of the analyst page in Debian's Chromium, driven by playwright-core.
//
// Environment: KASTELL_BASE_URL (the cases stage, e.g. http://127.0.0.1:PORT),
// KASTELL_API_KEY (a lead's key), KASTELL_OIDC_ISSUER (the test identity provider,
// idp.mjs, whose tokens the server accepts), KASTELL_CHROMIUM (default /usr/bin/chromium) and
// KASTELL_SCREENSHOTS (the directory the screenshots are written to: the build's scratch
// directory, or docs/screenshots when the test is asked to refresh them). workloads/kastell/tests/browser.rs starts the server and runs this.
//
// Prints one "ok"/"not ok" line per step and "N passed, N failed" last; exits 1 when a
// step failed.

import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = required("KASTELL_BASE_URL");
const key = required("KASTELL_API_KEY");
const shots = required("KASTELL_SCREENSHOTS");
const executablePath = process.env.KASTELL_CHROMIUM || "/usr/bin/chromium";
// The test identity provider (idp.mjs) the server accepts tokens of.
const issuer = required("KASTELL_OIDC_ISSUER");

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set`);
    process.exit(2);
  }
  return value;
}

mkdirSync(shots, { recursive: true });
// A failure's screenshot from an earlier run would outlive the fix.
for (const name of readdirSync(shots).filter((n) => n.startsWith("failed-"))) rmSync(join(shots, name));

let passed = 0;
let failed = 0;
const notes = [];

async function step(name, body) {
  try {
    await body();
    passed += 1;
    console.log(`ok - ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`not ok - ${name}: ${error.message.split("\n")[0]}`);
    console.log(error.stack.split("\n").slice(0, 6).map((l) => `#   ${l}`).join("\n"));
    await page.screenshot({ path: join(shots, `failed-${name.replace(/\W+/g, "-")}.png`) }).catch(() => {});
    throw error;
  }
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const context = await browser.newContext({
  viewport: { width: 1280, height: 900 },
  colorScheme: "light",
  reducedMotion: "reduce",
});
const page = await context.newPage();
page.setDefaultTimeout(20000);

// Anything the page logs as an error, CSP refusals and uncaught exceptions included, fails
// the run; the browser's own "Failed to load resource" lines for the 401 of a wrong key
// are expected and left out.
const pageErrors = [];
page.on("console", (m) => {
  if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) pageErrors.push(m.text());
});
page.on("pageerror", (e) => pageErrors.push(e.message));

const heading = () => page.locator("main h1");
// The page marks main with the fragment of the view it finished drawing.
const ready = (fragment) => page.locator(`main[data-ready="${fragment}"]`).waitFor({ state: "attached" });
const status = () => page.locator("#status");
const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`) });

// WCAG 2.x contrast of every visible text on the page against the background it is drawn
// on (the nearest ancestor with an opaque background, else the page's).
async function contrastProblems() {
  return page.evaluate(() => {
    const rgb = (value) => (value.match(/[\d.]+/g) ?? []).map(Number);
    const luminance = ([r, g, b]) => {
      const channel = (c) => {
        const s = c / 255;
        return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
    };
    const ratio = (a, b) => {
      const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
      return (hi + 0.05) / (lo + 0.05);
    };
    const background = (element) => {
      for (let e = element; e; e = e.parentElement) {
        const colour = rgb(getComputedStyle(e).backgroundColor);
        if (colour.length === 3 || (colour.length === 4 && colour[3] === 1)) return colour.slice(0, 3);
      }
      return [255, 255, 255];
    };
    const problems = [];
    let lowest = Infinity;
    for (const element of document.querySelectorAll("body *")) {
      const hasText = [...element.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
      if (!hasText || !element.checkVisibility()) continue;
      const style = getComputedStyle(element);
      const size = parseFloat(style.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
      const value = ratio(rgb(style.color).slice(0, 3), background(element));
      lowest = Math.min(lowest, value);
      if (value < (large ? 3 : 4.5)) {
        problems.push(`${element.tagName.toLowerCase()} "${element.textContent.trim().slice(0, 30)}" ${value.toFixed(2)}:1`);
      }
    }
    return { problems, lowest };
  });
}

async function checkContrast(where) {
  const { problems, lowest } = await contrastProblems();
  check(problems.length === 0, `text below WCAG AA contrast on ${where}: ${problems.slice(0, 5).join("; ")}`);
  notes.push(`lowest text contrast on ${where}: ${lowest.toFixed(2)}:1`);
}

// What the focused element is, as a person hears it: its role and accessible-ish name.
async function focused() {
  return page.evaluate(() => {
    const e = document.activeElement;
    const labelText = e.labels?.[0]?.firstChild?.textContent?.trim();
    const name = e.getAttribute("aria-label") ?? labelText ?? e.textContent.trim();
    const outline = getComputedStyle(e);
    return {
      tag: e.tagName.toLowerCase(),
      name,
      ring: outline.outlineStyle !== "none" && parseFloat(outline.outlineWidth) >= 2,
    };
  });
}

try {
  await step("sign-in refuses a wrong key and accepts the lead's key", async () => {
    await page.goto(`${base}/`);
    await heading().filter({ hasText: "Sign in to Kastell" }).waitFor();
    check(!(await page.locator("#nav").isVisible()), "the navigation shows before sign-in");
    await checkContrast("the sign-in page");
    await shot("signin");
    await page.fill("#credential", "kst_0000000000000000_wrong");
    await page.press("#credential", "Enter");
    await page.locator("[role=alert] .message.error").waitFor();
    await page.fill("#credential", key);
    await page.press("#credential", "Enter");
    await heading().filter({ hasText: "Alert queue" }).waitFor();
  });

  await step("forms read their fields from the server's OpenAPI document", async () => {
    const fields = await page.evaluate(async () => {
      const api = await import("/ui/api.js");
      return {
        update: await api.bodyFields("PATCH", "/api/v1/cases/{id}"),
        ignore: await api.bodyFields("POST", "/api/v1/alerts/{id}/ignore"),
        absent: await api.bodyFields("POST", "/api/v1/no-such-endpoint"),
      };
    });
    const field = (list, name) => list.find((f) => f.name === name);
    const status = field(fields.update, "status");
    check(status && JSON.stringify(status.enum) === JSON.stringify(["open", "in_progress", "closed"]), `case status field: ${JSON.stringify(status)}`);
    const severity = field(fields.update, "severity");
    check(severity?.enum?.includes("critical") && !severity.required, `case severity field: ${JSON.stringify(severity)}`);
    const reason = field(fields.ignore, "reason");
    check(reason?.required && reason.type === "string", `ignore reason field: ${JSON.stringify(reason)}`);
    check(fields.absent.length === 0, "an undocumented endpoint has no fields");
  });

  await step("the queue's keyboard focus order and focus ring", async () => {
    await page.locator("table tbody tr").first().waitFor();
    await page.focus("a.skip");
    const order = [await focused()];
    for (let i = 0; i < 20; i += 1) {
      await page.keyboard.press("Tab");
      order.push(await focused());
    }
    const names = order.map((f) => `${f.tag}:${f.name}`);
    const expected = [
      "a:Skip to content",
      "a:Alert queue",
      "a:Cases",
      "a:Approvals",
      "a:Search",
      "a:Figures",
      "button:Sign out",
      "select:Minimum level",
      "select:Status",
      "input:Rule id",
      "input:Observable",
      "input:Case",
      "button:Apply filters",
      "button:Clear",
    ];
    check(
      JSON.stringify(names.slice(0, expected.length)) === JSON.stringify(expected),
      `focus order was ${names.slice(0, expected.length).join(" → ")}`,
    );
    const row = names.slice(expected.length);
    check(row[0].startsWith("a:") && row[1].startsWith("a:Case "), `first row starts ${row.slice(0, 2).join(", ")}`);
    const buttons = ["Acknowledge", "Ignore", "Promote", "Merge"];
    buttons.forEach((word, i) =>
      check(row[2 + i].startsWith(`button:${word} `), `row button ${i + 1} was ${row[2 + i]}, wanted ${word}`),
    );
    const ringless = order.filter((f) => !f.ring).map((f) => `${f.tag}:${f.name}`);
    check(ringless.length === 0, `no visible focus ring on ${ringless.join(", ")}`);
  });

  await step("the queue filters by level", async () => {
    await page.selectOption("select[name=level]", "high");
    await page.click("text=Apply filters");
    await ready("#/alerts?level=high");
    await page.locator("table tbody tr").first().waitFor();
    const levels = await page.locator("table tbody tr td:nth-child(2)").allTextContents();
    check(levels.length > 0 && levels.every((l) => ["high", "critical"].includes(l)), `levels shown: ${[...new Set(levels)]}`);
    await checkContrast("the alert queue");
    await shot("queue");
  });

  await step("acknowledge one alert and ignore another from the queue", async () => {
    const rows = page.locator("main table tbody tr");
    const statusOf = (i) => rows.nth(i).locator("td:nth-child(5)");
    await rows.nth(0).locator("button", { hasText: "Acknowledge" }).click();
    await status().filter({ hasText: "Alert acknowledged." }).waitFor();
    check((await statusOf(0).textContent()) === "acknowledged", `first row is ${await statusOf(0).textContent()}`);
    await rows.nth(1).locator("button", { hasText: "Ignore" }).click();
    const dialog = page.locator("dialog[open]");
    await dialog.locator("textarea").waitFor();
    // The dialog takes focus and Escape cancels without a request.
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "detached" });
    check((await statusOf(1).textContent()) === "new", "a cancelled ignore changed the alert");
    await rows.nth(1).locator("button", { hasText: "Ignore" }).click();
    await dialog.locator("textarea").fill("lab host, expected traffic");
    await page.keyboard.press("Tab");
    await page.keyboard.press("Tab");
    await page.keyboard.press("Enter");
    await status().filter({ hasText: "Alert ignored." }).waitFor();
    check((await statusOf(1).textContent()) === "ignored", `second row is ${await statusOf(1).textContent()}`);
  });

  let promoted = false;
  await step("open an alert from the bundled run", async () => {
    const link = page.locator("table tbody tr td:nth-child(3) a").first();
    const title = (await link.textContent()).trim();
    await link.click();
    await heading().filter({ hasText: title }).waitFor();
    await page.locator("h2", { hasText: "Intel matches" }).waitFor();
    await page.locator("pre").first().waitFor();
    await checkContrast("an alert");
    await shot("alert");
  });

  await step("promote the alert to a case", async () => {
    await page.click("main .inline-form button:text-is('Promote')");
    const outcome = await Promise.race([
      heading().filter({ hasText: /^Case \d+:/ }).waitFor().then(() => "promoted"),
      status().filter({ hasText: "does not offer that yet" }).waitFor().then(() => "not built"),
    ]);
    if (outcome === "promoted") {
      promoted = true;
      await status().filter({ hasText: /promoted to case \d+/ }).waitFor();
      notes.push(`promoted: ${await heading().textContent()}`);
    } else {
      notes.push("the promote endpoint is not on this server yet: the page said so, and the test opens an existing case instead");
    }
  });

  await step("approve a pending action", async () => {
    const pendingHere = promoted ? await page.locator("button:text-is('Approve')").count() : 0;
    if (!pendingHere) {
      await page.click("nav a:text-is('Approvals')");
      await heading().filter({ hasText: "Approvals" }).waitFor();
      await page.locator("table tbody tr").first().waitFor();
      await checkContrast("the approvals queue");
      await shot("approvals");
      await page.locator("table tbody tr td:nth-child(2) a").first().click();
      await heading().filter({ hasText: /^Case \d+:/ }).waitFor();
      notes.push(`approving in ${await heading().textContent()}`);
    }
    const approve = page.locator("main table button:text-is('Approve')").first();
    const label = await approve.getAttribute("aria-label");
    const id = label.match(/action (\d+)/)[1];
    await approve.click();
    const dialog = page.locator("dialog[open]");
    await dialog.locator("textarea").fill("approved by the browser test");
    await dialog.locator("button[type=submit]").click();
    await status().filter({ hasText: `Action ${id} approved.` }).waitFor();
    const row = page.locator("main table tbody tr", { has: page.locator(`td:first-child:text-is('${id}')`) });
    const state = (await row.locator("td:nth-child(5)").textContent()).trim();
    check(["approved", "succeeded", "failed"].includes(state), `action ${id} is ${state} after approval`);
    await checkContrast("a case");
    await shot("case");
  });

  await step("work the case: observables with enrichment, a task, a comment", async () => {
    const observables = page.locator("section[aria-labelledby=observables-title]");
    if (await observables.locator(".message", { hasText: "not offered" }).count()) {
      notes.push("observables, tasks and the timeline are not on this server yet: the page said so");
      return;
    }
    const rows = observables.locator("table tbody tr");
    await rows.first().waitFor();
    const enriched = await observables.locator("td li").allTextContents();
    notes.push(`${await rows.count()} observables, ${enriched.length} enrichment results in this case`);
    check(
      enriched.some((line) => /^[\w./-]+: \S+/.test(line)),
      `no enrichment result reads "feed: indicator": ${enriched.slice(0, 3).join(" | ")}`,
    );

    const tasks = page.locator("section[aria-labelledby=tasks-title]");
    await tasks.locator("input[name=title]").fill("Pull the proxy logs for the host");
    await tasks.locator("button", { hasText: "Add task" }).click();
    await status().filter({ hasText: "Add task: done." }).waitFor();
    const task = tasks.locator("ul.tasks li", { hasText: "Pull the proxy logs for the host" });
    await task.locator("select").selectOption("done");
    await status().filter({ hasText: "is now done" }).waitFor();

    const timeline = page.locator("section[aria-labelledby=timeline-title]");
    await timeline.locator("textarea[name=text]").fill("Proxy logs show the same domain on two more hosts.");
    await timeline.locator("button", { hasText: "Add comment" }).click();
    await status().filter({ hasText: "Add comment: done." }).waitFor();
    // Newest first: the comment heads the timeline.
    await timeline.locator("ol.timeline li").first().filter({ hasText: "Proxy logs show the same domain on two more hosts." }).waitFor();
    const kinds = await timeline.locator("ol.timeline li strong").allTextContents();
    check(kinds.includes("task_updated") || kinds.includes("task_created"), `the timeline has no task line: ${kinds}`);
    check((await task.locator("select").inputValue()) === "done", "the task is not done after a reload");
    await checkContrast("a worked case");
    // The case's lower half: tasks, observables with their enrichment, the timeline.
    await tasks.evaluate((section) => section.scrollIntoView());
    await shot("case-worked");
    await page.evaluate(() => window.scrollTo(0, 0));
  });

  await step("flag the case as a significant incident (NIS2)", async () => {
    const nis2 = page.locator("section[aria-labelledby=nis2-title]");
    await nis2.locator("button", { hasText: "Flag as significant incident" }).click();
    await status().filter({ hasText: "Case flagged as a significant incident." }).waitFor();
    await nis2.locator("p", { hasText: "This case is a significant incident" }).waitFor();
    const caseId = (await heading().textContent()).match(/^Case (\d+):/)[1];
    const flag = await page.evaluate(async (id) => {
      const api = await import("/ui/api.js");
      return api.get(`/api/v1/cases/${id}/significant-incident`);
    }, caseId);
    check(flag.significant_incident === true, `the server says ${JSON.stringify(flag)}`);
    await checkContrast("a flagged case");
  });

  await step("close the case", async () => {
    await page.click("button:text-is('Close case…')");
    const dialog = page.locator("dialog[open]");
    await dialog.locator("select").selectOption("true_positive");
    await dialog.locator("textarea").fill("Confirmed by the browser test; contained.");
    await dialog.locator("button[type=submit]").click();
    await status().filter({ hasText: "Case closed." }).waitFor();
    await page.locator("dl.facts dd", { hasText: /^closed$/ }).waitFor();
    await page.locator("dl.facts dd", { hasText: "true_positive" }).waitFor();
    await shot("case-closed");
  });

  await step("reject a pending action with a reason", async () => {
    await page.click("nav a:text-is('Approvals')");
    await ready("#/approvals");
    await page.locator("main table tbody tr td:nth-child(2) a").first().click();
    await heading().filter({ hasText: /^Case \d+:/ }).waitFor();
    const reject = page.locator("main table button:text-is('Reject')").first();
    const id = (await reject.getAttribute("aria-label")).match(/action (\d+)/)[1];
    await reject.click();
    const dialog = page.locator("dialog[open]");
    await dialog.locator("button[type=submit]").click();
    // A blank reason is refused by the form before any request.
    check((await dialog.count()) === 1, "the dialog closed without a reason");
    await dialog.locator("textarea").fill("the destination is our own proxy");
    await dialog.locator("button[type=submit]").click();
    await status().filter({ hasText: `Action ${id} rejected.` }).waitFor();
    const row = page.locator("main table tbody tr", { has: page.locator(`td:first-child:text-is('${id}')`) });
    check((await row.locator("td:nth-child(5)").textContent()) === "rejected", `action ${id} is not rejected`);
  });

  await step("the case list shows the closed case", async () => {
    await page.click("nav a:text-is('Cases')");
    await heading().filter({ hasText: "Cases" }).waitFor();
    await page.selectOption("select[name=status]", "closed");
    await page.click("text=Apply filter");
    await ready("#/cases?status=closed");
    const statuses = await page.locator("table tbody tr td:nth-child(4)").allTextContents();
    check(statuses.length >= 1 && statuses.every((s) => s === "closed"), `statuses: ${statuses}`);
    await page.click("nav a:text-is('Cases')");
    await ready("#/cases");
    await checkContrast("the case list");
    await shot("cases");
  });

  await step("search", async () => {
    await page.click("nav a:text-is('Search')");
    await heading().filter({ hasText: "Search" }).waitFor();
    await page.fill("input[name=q]", "172.16.0.153");
    await page.press("input[name=q]", "Enter");
    await ready("#/search?q=172.16.0.153");
    const offered = (await page.locator("main .message", { hasText: "not offered by this server yet" }).count()) === 0;
    if (offered) {
      const hits = await page.locator("main li a").count();
      check(hits > 0, "searching a host of the bundled run found nothing");
      notes.push(`search for 172.16.0.153: ${hits} hits`);
    } else {
      notes.push("the search endpoint is not on this server yet: the page said so");
    }
    await shot("search");
  });

  await step("merge an alert into an existing case", async () => {
    const { alertId, caseId } = await page.evaluate(async () => {
      const api = await import("/ui/api.js");
      const alerts = api.items(await api.get("/api/v1/alerts?limit=1000"));
      const open = api.items(await api.get("/api/v1/cases?status=open&limit=1"));
      // Every alert of the bundled run is grouped into a case: merging moves one from
      // another case into this one.
      const other = alerts.find((a) => a.case_id !== open[0]?.id && a.status !== "ignored");
      return { alertId: other?.id, caseId: open[0]?.id };
    });
    check(alertId && caseId, `no alert outside case ${caseId} (${alertId}) or no open case in the bundled run`);
    await page.goto(`${base}/#/alerts/${encodeURIComponent(alertId)}`);
    await ready(`#/alerts/${encodeURIComponent(alertId)}`);
    check((await page.locator(`dl.facts dd a[href="#/cases/${caseId}"]`).count()) === 0, `alert ${alertId} is already in case ${caseId}`);
    await page.click("main .inline-form button:text-is('Merge')");
    const dialog = page.locator("dialog[open]");
    await dialog.locator("input[name=case_id]").fill(String(caseId));
    await dialog.locator("button[type=submit]").click();
    await status().filter({ hasText: `Alert merged into case ${caseId}.` }).waitFor();
    await page.locator(`dl.facts dd a[href="#/cases/${caseId}"]`).waitFor();
    notes.push(`merged alert ${alertId} into case ${caseId}`);
  });

  await step("filter the alert queue by an observable", async () => {
    const { alertId, observable, total } = await page.evaluate(async () => {
      const api = await import("/ui/api.js");
      const alerts = api.items(await api.get("/api/v1/alerts?limit=1000"));
      const matched = alerts.find((a) => (a.intel ?? []).length);
      return { alertId: matched?.id, observable: matched?.intel[0].observable, total: alerts.length };
    });
    check(alertId, "no alert of the bundled run has an intel match");
    await page.goto(`${base}/#/alerts/${encodeURIComponent(alertId)}`);
    await page.locator("h2", { hasText: "Intel matches" }).waitFor();
    // The observable in the intel table links to the queue filtered by it.
    await page.locator("main table td a", { hasText: observable }).first().click();
    await ready(`#/alerts?observable=${encodeURIComponent(observable)}`);
    check((await page.inputValue("input[name=observable]")) === observable, "the filter form does not show the observable");
    const links = await page.locator("main table tbody tr td:nth-child(3) a").evaluateAll((as) => as.map((a) => a.getAttribute("href")));
    check(links.includes(`#/alerts/${encodeURIComponent(alertId)}`), `the alert carrying ${observable} is not listed`);
    check(links.length < total, `filtering by ${observable} kept all ${total} alerts`);
    notes.push(`observable ${observable}: ${links.length} of ${total} alerts`);
  });

  await step("the SOC figures by severity", async () => {
    await page.click("nav a:text-is('Figures')");
    await ready("#/figures");
    await heading().filter({ hasText: "SOC figures" }).waitFor();
    const rows = page.locator("main table tbody tr");
    await rows.first().waitFor();
    const severities = await rows.locator("td:nth-child(1)").allTextContents();
    check(severities.length > 0 && severities.every((s) => ["informational", "low", "medium", "high", "critical"].includes(s)), `severities: ${severities}`);
    const column = async (n) => (await rows.locator(`td:nth-child(${n})`).allTextContents()).filter((t) => t !== "—");
    // Earlier steps acknowledged an alert and closed a case, both within the last 24 hours.
    check((await column(3)).length > 0, "no mean time to detect shown");
    check((await column(5)).length > 0, "no mean time to acknowledge shown after an acknowledgement");
    check((await column(7)).length > 0, "no mean time to resolve shown after closing a case");
    await page.selectOption("select[name=range]", "7d");
    await page.click("text=Show");
    await ready("#/figures?range=7d");
    await rows.first().waitFor();
    await checkContrast("the SOC figures");
    await shot("figures");
  });

  await step("a refused credential returns to sign-in", async () => {
    await page.evaluate(() => sessionStorage.setItem("kastell.credential", "kst_0000000000000000_revoked"));
    await page.click("nav a:text-is('Approvals')");
    await heading().filter({ hasText: "Sign in to Kastell" }).waitFor();
    await page.locator("[role=alert] .message.error", { hasText: "Signed out" }).waitFor();
    check((await page.evaluate(() => sessionStorage.getItem("kastell.credential"))) === null, "the refused key was kept");
  });

  await step("sign in by redirect to the identity provider (authorization code with PKCE)", async () => {
    // The previous step left the page on sign-in, on its way to the approvals.
    await page.click("button:text-is('Sign in with your identity provider')");
    await page.waitForURL((url) => url.href.startsWith(`${issuer}/authorize`));
    const asked = new URL(page.url()).searchParams;
    check(asked.get("code_challenge_method") === "S256", `code_challenge_method ${asked.get("code_challenge_method")}`);
    check(/^[\w-]{43}$/.test(asked.get("code_challenge") ?? ""), `code_challenge ${asked.get("code_challenge")}`);
    check(asked.get("redirect_uri") === `${base}/`, `redirect_uri ${asked.get("redirect_uri")}`);
    await page.click("button:text-is('Sign in as test-lead')");
    await ready("#/approvals");
    await heading().filter({ hasText: "Approvals" }).waitFor();
    check(!page.url().includes("code="), `the code stayed in the address: ${page.url()}`);
    const stored = await page.evaluate(() => JSON.stringify([{ ...sessionStorage }, { ...localStorage }]));
    // A JWT starts with the base64url of '{"': the token must be in memory only.
    check(!stored.includes("eyJ"), `a token was stored: ${stored}`);
  });

  await step("the page acts with the provider's token", async () => {
    await page.click("nav a:text-is('Alert queue')");
    await ready("#/alerts");
    await page.selectOption("select[name=status]", "new");
    await page.click("text=Apply filters");
    await ready("#/alerts?status=new");
    const row = page.locator("main table tbody tr").first();
    const href = await row.locator("td:nth-child(3) a").getAttribute("href");
    await row.locator("button", { hasText: "Acknowledge" }).click();
    await status().filter({ hasText: "Alert acknowledged." }).waitFor();
    await page.evaluate((fragment) => {
      location.hash = fragment;
    }, href);
    await ready(href);
    // The audit names the token's subject, not the API key of the earlier steps.
    await page.locator("dl.facts dd", { hasText: "oidc:test-lead" }).waitFor();
  });

  await step("a reload forgets the token and a replayed answer is refused", async () => {
    await page.reload();
    await heading().filter({ hasText: "Sign in to Kastell" }).waitFor();
    await page.goto(`${base}/?code=replayed&state=forged#/alerts`);
    await page.locator("[role=alert] .message.error", { hasText: "does not match a sign-in this tab started" }).waitFor();
    check(!page.url().includes("code="), `the forged code stayed in the address: ${page.url()}`);
  });

  await step("no script error or policy violation was logged", async () => {
    check(pageErrors.length === 0, pageErrors.join(" | "));
  });
} catch {
  // The failed step has been reported; the steps after it depend on it.
} finally {
  await browser.close();
}

for (const note of notes) console.log(`# ${note}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
