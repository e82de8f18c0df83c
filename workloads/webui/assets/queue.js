// The alert queue (filters, paging and the triage buttons on each row) and the view of
// one alert with its rule, intel matches and events.

import * as api from "./api.js";
import { h, act, ask, announce, control, facts, level, message, table, time } from "./dom.js";

const PAGE = 50;
const LEVELS = ["informational", "low", "medium", "high", "critical"];
const STATUSES = ["new", "acknowledged", "ignored"];

export async function alertQueue({ params, go, refresh }) {
  const filters = {
    level: params.get("level") ?? "",
    status: params.get("status") ?? "",
    rule: params.get("rule") ?? "",
    observable: params.get("observable") ?? "",
    case: params.get("case") ?? "",
  };
  const offset = Number(params.get("offset") ?? 0) || 0;
  const notes = [];
  const documented = await alertParameters();
  if (filters.observable && !documented.has("observable")) {
    notes.push(message("warn", "This server cannot filter alerts by observable yet (it comes with a later release of the case API); the filter is left out."));
    filters.observable = "";
  }
  const page = await api.get(`/api/v1/alerts${api.query({ ...filters, limit: PAGE, offset })}`);
  const alerts = api.items(page);

  const form = filterForm(filters, (values) => go(`/alerts${api.query(values)}`));
  const rows = alerts.map((alert) =>
    h(
      "tr",
      {},
      h("td", {}, time(alert.timestamp)),
      h("td", {}, level(alert.rule?.level)),
      h("td", {}, h("a", { href: `#/alerts/${encodeURIComponent(alert.id)}` }, alert.rule?.title ?? alert.id)),
      h("td", {}, alert.host ?? ""),
      h("td", {}, alert.status ?? ""),
      h("td", { class: "nowrap" }, alert.case_id ? h("a", { href: `#/cases/${alert.case_id}` }, `Case ${alert.case_id}`) : ""),
      h("td", { class: "actions" }, triageButtons(alert, { go, refresh })),
    ),
  );
  const pager = h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    offset > 0
      ? h("a", { href: `#/alerts${api.query({ ...filters, offset: Math.max(0, offset - PAGE) })}` }, "Previous page")
      : null,
    h("span", { class: "muted" }, alerts.length ? `Alerts ${offset + 1}–${offset + alerts.length}` : "No alerts"),
    alerts.length === PAGE
      ? h("a", { href: `#/alerts${api.query({ ...filters, offset: offset + PAGE })}` }, "Next page")
      : null,
  );
  return [
    h("h1", {}, "Alert queue"),
    notes,
    form,
    alerts.length
      ? table(["Event time", "Level", "Rule", "Host", "Status", "Case", "Triage"], rows, "Oldest event first")
      : message("info", "No alert matches these filters."),
    pager,
  ];
}

async function alertParameters() {
  const doc = await api.document();
  const parameters = doc.paths?.["/api/v1/alerts"]?.get?.parameters ?? [];
  return new Set(parameters.map((p) => p.name));
}

function filterForm(filters, apply) {
  const fields = [
    { name: "level", label: "Minimum level", enum: LEVELS, value: filters.level },
    { name: "status", label: "Status", enum: STATUSES, value: filters.status },
    { name: "rule", label: "Rule id", value: filters.rule, placeholder: "suricata-2030053" },
    { name: "observable", label: "Observable", value: filters.observable, placeholder: "IP, domain, hash…" },
    { name: "case", label: "Case", value: filters.case, type: "integer" },
  ].map(control);
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter alerts" },
    fields.map(([label]) => label),
    h("button", { type: "submit", class: "primary" }, "Apply filters"),
    h("button", { type: "reset" }, "Clear"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const values = {};
    for (const [, input, field] of fields) values[field.name] = input.value.trim();
    apply(values);
  });
  form.addEventListener("reset", (event) => {
    event.preventDefault();
    apply({});
  });
  return form;
}

// Acknowledge, ignore, promote and merge: the same four buttons on a queue row and on the
// alert's own view.
export function triageButtons(alert, { go, refresh }) {
  const id = encodeURIComponent(alert.id);
  const label = alert.rule?.title ?? alert.id;
  // The row's state changed: re-read the view, and say what happened in the live region.
  const again = async (notice) => {
    await refresh();
    announce("ok", notice);
  };
  const acknowledge = h(
    "button",
    {
      type: "button",
      "aria-label": `Acknowledge ${label}`,
      onclick: async () => {
        const done = await act(acknowledge, () => api.post(`/api/v1/alerts/${id}/acknowledge`));
        if (done) again("Alert acknowledged.");
      },
    },
    "Acknowledge",
  );
  const ignore = h(
    "button",
    {
      type: "button",
      "aria-label": `Ignore ${label}`,
      onclick: async () => {
        const values = await ask("Ignore this alert", [{ name: "reason", label: "Why it needs no work", required: true, multiline: true }], "Ignore");
        if (!values) return;
        const done = await act(ignore, () => api.post(`/api/v1/alerts/${id}/ignore`, { reason: values.reason }));
        if (done) again("Alert ignored.");
      },
    },
    "Ignore",
  );
  const promote = h(
    "button",
    {
      type: "button",
      "aria-label": `Promote ${label} to a case`,
      onclick: async () => {
        const created = await act(promote, () => api.post(`/api/v1/alerts/${id}/promote`));
        const caseId = created?.id ?? created?.case?.id ?? created?.case_id;
        if (caseId !== undefined) go(`/cases/${caseId}`, ["ok", `Alert promoted to case ${caseId}.`]);
      },
    },
    "Promote",
  );
  const merge = h(
    "button",
    {
      type: "button",
      "aria-label": `Merge ${label} into a case`,
      onclick: async () => {
        const values = await ask("Merge into a case", [{ name: "case_id", label: "Case number", required: true, type: "integer" }], "Merge");
        if (!values) return;
        const caseId = Number(values.case_id);
        const done = await act(merge, () => api.post(`/api/v1/alerts/${id}/merge`, { case_id: caseId }));
        if (done) again(`Alert merged into case ${caseId}.`);
      },
    },
    "Merge",
  );
  return [acknowledge, ignore, promote, merge];
}

export async function alertView({ args, go, refresh }) {
  const alert = await api.get(`/api/v1/alerts/${encodeURIComponent(args[0])}`);
  const rule = alert.rule ?? {};
  const source = rule.source
    ? [rule.source.resource, rule.source.path, rule.source.commit].filter(Boolean).join(" · ")
    : null;
  const intel = alert.intel ?? [];
  return [
    h("h1", {}, rule.title ?? "Alert"),
    h("div", { class: "inline-form" }, triageButtons(alert, { go, refresh })),
    facts([
      ["Level", level(rule.level)],
      ["Status", [alert.status, alert.status_reason ? ` — ${alert.status_reason}` : ""].join("")],
      ["Triaged by", alert.triaged_by ? [alert.triaged_by, " ", time(alert.triaged_at)] : null],
      ["Event time", time(alert.timestamp)],
      ["Detected", time(alert.detected_at)],
      ["Sensor", alert.sensor],
      ["Host", alert.host],
      ["Case", alert.case_id ? h("a", { href: `#/cases/${alert.case_id}` }, `Case ${alert.case_id}`) : "none"],
      ["Rule", rule.id],
      ["Rule source", source],
      ["Rule author", rule.author],
      ["Tags", (rule.tags ?? []).join(", ")],
      ["Alert id", alert.id],
    ]),
    h("h2", {}, `Intel matches (${intel.length})`),
    intel.length
      ? table(
          ["Observable", "Kind", "Field", "Feed", "Indicator", "Context"],
          intel.map((m) =>
            h(
              "tr",
              {},
              h("td", {}, h("a", { href: `#/alerts${api.query({ observable: m.observable })}` }, m.observable)),
              h("td", {}, m.kind ?? ""),
              h("td", {}, m.field ?? ""),
              h("td", {}, m.feed ?? ""),
              h("td", {}, m.indicator ?? ""),
              h("td", {}, [m.context, m.reference, (m.tags ?? []).join(", ")].filter(Boolean).join(" · ")),
            ),
          ),
        )
      : h("p", { class: "muted" }, "No threat-intel indicator matched this alert."),
    h("h2", {}, `Events (${(alert.events ?? []).length})`),
    (alert.events ?? []).map((event) => h("pre", { tabindex: "0", "aria-label": "Event JSON" }, JSON.stringify(event, null, 2))),
  ];
}
