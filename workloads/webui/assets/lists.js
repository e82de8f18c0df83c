// The case list, the approvals queue (pending response actions across cases), search and
// the SOC figures.

import * as api from "./api.js";
import { h, control, describe, level, message, parameters, table, time } from "./dom.js";

const PAGE = 50;

export async function caseList({ params, go }) {
  const status = params.get("status") ?? "";
  const offset = Number(params.get("offset") ?? 0) || 0;
  const cases = api.items(await api.get(`/api/v1/cases${api.query({ status, limit: PAGE, offset })}`));
  const [label, select] = control({ name: "status", label: "Status", enum: ["open", "in_progress", "closed"], value: status });
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter cases" },
    label,
    h("button", { type: "submit", class: "primary" }, "Apply filter"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    go(`/cases${api.query({ status: select.value })}`);
  });
  const rows = cases.map((c) =>
    h(
      "tr",
      {},
      h("td", {}, String(c.id)),
      h("td", {}, h("a", { href: `#/cases/${c.id}` }, c.title)),
      h("td", {}, level(c.severity)),
      h("td", {}, c.status),
      h("td", {}, String(c.alert_count ?? "")),
      h("td", {}, c.assignee ?? ""),
      h("td", {}, time(c.last_seen)),
    ),
  );
  return [
    h("h1", {}, "Cases"),
    form,
    cases.length
      ? table(["#", "Title", "Severity", "Status", "Alerts", "Assignee", "Last seen"], rows)
      : message("info", "No case matches this filter."),
    h(
      "nav",
      { class: "pager", "aria-label": "Pages" },
      offset > 0 ? h("a", { href: `#/cases${api.query({ status, offset: Math.max(0, offset - PAGE) })}` }, "Previous page") : null,
      cases.length === PAGE ? h("a", { href: `#/cases${api.query({ status, offset: offset + PAGE })}` }, "Next page") : null,
    ),
  ];
}

export async function approvals() {
  const actions = api.items(await api.get("/api/v1/actions?status=pending&limit=1000"));
  const rows = actions.map((a) =>
    h(
      "tr",
      {},
      h("td", {}, String(a.id)),
      h("td", {}, h("a", { href: `#/cases/${a.case_id}` }, `Case ${a.case_id}`)),
      h("td", {}, a.playbook ?? ""),
      h("td", {}, a.step ?? ""),
      h("td", {}, a.step_type ?? ""),
      h("td", {}, parameters(a.params)),
      h("td", {}, time(a.created_at)),
    ),
  );
  return [
    h("h1", {}, "Approvals"),
    h("p", { class: "muted" }, "Response actions waiting for a decision. Open the case to approve or reject them with its context in view."),
    actions.length
      ? table(["#", "Case", "Playbook", "Step", "Type", "Parameters", "Planned"], rows)
      : message("info", "No action is waiting for approval."),
  ];
}

export async function search({ params, go }) {
  const q = params.get("q") ?? "";
  const [label, input] = control({ name: "q", label: "Search cases and observables", value: q, inputType: "search" });
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Search" },
    label,
    h("button", { type: "submit", class: "primary" }, "Search"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    go(`/search${api.query({ q: input.value.trim() })}`);
  });
  const heading = h("h1", {}, "Search");
  if (!q) return [heading, form];
  if (!(await api.serves("GET", "/api/v1/search"))) {
    return [heading, form, message("info", "Search is not offered by this server yet; it comes with a later release of the case API. The alert queue can filter by rule and case meanwhile.")];
  }
  let result;
  try {
    result = await api.get(`/api/v1/search${api.query({ q })}`);
  } catch (error) {
    return [heading, form, message("error", describe(error))];
  }
  return [heading, form, results(result)];
}

// The answer's groups, whatever they are called: every array in it is a group of hits,
// each linked to its case or alert when it names one.
function results(result) {
  const groups = Array.isArray(result)
    ? [["Results", result]]
    : Object.entries(result ?? {}).filter(([, value]) => Array.isArray(value));
  const total = groups.reduce((n, [, hits]) => n + hits.length, 0);
  if (!total) return message("info", "Nothing matches.");
  return groups
    .filter(([, hits]) => hits.length)
    .map(([name, hits]) => [
      h("h2", {}, `${name[0].toUpperCase()}${name.slice(1).replace(/_/g, " ")} (${hits.length})`),
      h("ul", {}, hits.map((hit) => h("li", {}, hitLink(name, hit)))),
    ]);
}

function hitLink(group, hit) {
  const text = hit.title ?? hit.rule?.title ?? hit.value ?? hit.data ?? hit.name ?? JSON.stringify(hit);
  const detail = [hit.kind ?? hit.type, hit.status, hit.host].filter(Boolean).join(" · ");
  let href = null;
  if (/case/i.test(group) && hit.id !== undefined) href = `#/cases/${hit.id}`;
  else if (/alert/i.test(group) && hit.id !== undefined) href = `#/alerts/${encodeURIComponent(hit.id)}`;
  else if (hit.case_id !== undefined) href = `#/cases/${hit.case_id}`;
  return [href ? h("a", { href }, text) : text, detail ? h("span", { class: "muted" }, ` — ${detail}`) : null];
}

const HOUR = 3600 * 1000;
const RANGES = { "24h": 24 * HOUR, "7d": 7 * 24 * HOUR, "30d": 30 * 24 * HOUR };

// The SOC figures (GET /api/v1/figures): mean time to detect, acknowledge and resolve by
// severity over a trailing range, the numbers the report and the dashboards show.
export async function figures({ params, go }) {
  const range = RANGES[params.get("range")] ? params.get("range") : "24h";
  const [label, select] = control({ name: "range", label: "Over the last", enum: Object.keys(RANGES), value: range, required: true });
  const form = h(
    "form",
    { class: "filters", "aria-label": "Range of the figures" },
    label,
    h("button", { type: "submit", class: "primary" }, "Show"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    go(`/figures${api.query({ range: select.value })}`);
  });
  const heading = h("h1", {}, "SOC figures");
  if (!(await api.serves("GET", "/api/v1/figures"))) {
    return [heading, message("info", "This server does not offer the SOC figures yet; they come with a later release of the case API.")];
  }
  const to = new Date();
  const from = new Date(to.getTime() - RANGES[range]);
  const answer = await api.get(`/api/v1/figures${api.query({ from: from.toISOString(), to: to.toISOString() })}`);
  // Most severe first, as an analyst reads a queue.
  const rows = [...(answer.by_severity ?? [])].reverse().map((f) =>
    h(
      "tr",
      {},
      h("td", {}, level(f.severity)),
      h("td", { class: "number" }, String(f.alerts)),
      h("td", { class: "number" }, duration(f.mean_time_to_detect)),
      h("td", { class: "number" }, String(f.acknowledged)),
      h("td", { class: "number" }, duration(f.mean_time_to_acknowledge)),
      h("td", { class: "number" }, String(f.resolved)),
      h("td", { class: "number" }, duration(f.mean_time_to_resolve)),
    ),
  );
  return [
    heading,
    form,
    h("p", { class: "muted" }, ["From ", time(answer.from), " to ", time(answer.to), ". Detect: event to alert; acknowledge: alert to its first triage; resolve: case opened to closed. Times are means."]),
    rows.length
      ? table(["Severity", "Alerts", "Mean time to detect", "Acknowledged", "Mean time to acknowledge", "Resolved", "Mean time to resolve"], rows, "Most severe first")
      : message("info", "No alert was detected and no case closed in this range."),
  ];
}

// Seconds as the two largest units a person reads ("3 d 4 h", "12 min 5 s"); "—" when
// nothing was measured.
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const units = [["d", 86400], ["h", 3600], ["min", 60], ["s", 1]];
  let rest = Math.round(seconds);
  if (rest < 1) return "< 1 s";
  const parts = [];
  for (const [name, size] of units) {
    const count = Math.floor(rest / size);
    if (count || parts.length) parts.push(count ? `${count} ${name}` : null);
    rest -= count * size;
    if (parts.length === 2) break;
  }
  return parts.filter(Boolean).join(" ");
}
