// One case: its facts and triage fields, closing it, the response actions waiting for a
// decision, and the observables, tasks and timeline when the server offers them.

import * as api from "./api.js";
import { h, act, ask, announce, control, describe, facts, level, message, parameters, table, time } from "./dom.js";

const RESOLUTIONS = ["true_positive", "false_positive", "benign", "duplicate"];
const OPEN_STATUSES = ["open", "in_progress"];

export async function caseView({ args, go, refresh }) {
  const id = args[0];
  const detail = await api.get(`/api/v1/cases/${id}?events=false`);
  const base = `/api/v1/cases/${id}`;
  const [significant, observables, tasks, timeline] = await Promise.all([
    optional("GET", "/api/v1/cases/{id}/significant-incident", `${base}/significant-incident`),
    optional("GET", "/api/v1/cases/{id}/observables", `${base}/observables`),
    optional("GET", "/api/v1/cases/{id}/tasks", `${base}/tasks`),
    optional("GET", "/api/v1/cases/{id}/timeline", `${base}/timeline`, readTimeline),
  ]);
  const context = { id, base, refresh, go, closed: detail.status === "closed" };
  return [
    h("h1", {}, `Case ${detail.id}: ${detail.title}`),
    summary(detail),
    h("section", { "aria-labelledby": "nis2-title" }, nis2Section(significant, context)),
    context.closed ? null : triageForm(detail, context),
    actionsSection(detail.actions ?? [], context),
    h("section", { "aria-labelledby": "tasks-title" }, await tasksSection(tasks, context)),
    h("section", { "aria-labelledby": "observables-title" }, await observablesSection(observables, context)),
    h("section", { "aria-labelledby": "timeline-title" }, await timelineSection(timeline, context)),
    alertsSection(detail.alerts ?? [], detail.alert_count),
  ];
}

// Reads an endpoint a later release of the case API brings: {data} when the server has
// it, {missing} when it does not document it or answers "no route", {error} otherwise.
async function optional(method, template, path, read = (p) => api.request(method, p)) {
  if (!(await api.serves(method, template))) return { missing: true };
  try {
    return { data: await read(path) };
  } catch (error) {
    return error.notBuilt ? { missing: true } : { error };
  }
}

const TIMELINE_PAGE = 1000;
const TIMELINE_PAGES = 20;
const TIMELINE_SHOWN = 50;

// The timeline is served oldest first in pages after an entry id; the view wants the
// latest lines, so it reads to the end (a busy case has an entry per attached alert).
async function readTimeline(path) {
  const entries = [];
  for (let page = 0; page < TIMELINE_PAGES; page += 1) {
    const after = entries.length ? entries[entries.length - 1].id : 0;
    const batch = api.items(await api.get(`${path}${api.query({ after, limit: TIMELINE_PAGE })}`));
    entries.push(...batch);
    if (batch.length < TIMELINE_PAGE || batch.every((e) => e.id === undefined)) break;
  }
  return entries;
}

function notOffered(what) {
  return message("info", `${what} are not offered by this server yet; they come with a later release of the case API.`);
}

function summary(detail) {
  return facts([
    ["Severity", level(detail.severity)],
    ["Status", detail.status],
    ["TLP / PAP", `${detail.tlp ?? ""} / ${detail.pap ?? ""}`],
    ["Assignee", detail.assignee ?? "unassigned"],
    ["Host", detail.host],
    ["Rule", detail.rule_id],
    ["First seen", time(detail.first_seen)],
    ["Last seen", time(detail.last_seen)],
    ["Alerts", String(detail.alert_count ?? (detail.alerts ?? []).length)],
    ["Tags", (detail.tags ?? []).join(", ")],
    ["Description", detail.description],
    ["Resolution", detail.resolution],
    ["Summary", detail.summary],
    ["Closed", detail.closed_at ? time(detail.closed_at) : null],
  ]);
}

// NIS2 (art. 23): whether the case is a significant incident. Flagging starts the
// reporting deadlines `kastell report` tracks; the server lets only leads and admins do it.
function nis2Section(significant, { base, refresh }) {
  const title = h("h2", { id: "nis2-title" }, "NIS2");
  if (significant.missing) return [title, notOffered("Significant-incident flags")];
  if (significant.error) return [title, message("error", describe(significant.error))];
  const flagged = Boolean(significant.data?.significant_incident);
  const toggle = h(
    "button",
    {
      type: "button",
      class: flagged ? null : "danger",
      onclick: async () => {
        const done = await act(toggle, () => api.request("PUT", `${base}/significant-incident`, { significant_incident: !flagged }));
        if (done) {
          await refresh();
          announce("ok", flagged ? "The significant-incident flag was removed." : "Case flagged as a significant incident.");
        }
      },
    },
    flagged ? "Remove the significant-incident flag" : "Flag as significant incident",
  );
  return [
    title,
    h(
      "p",
      {},
      flagged
        ? "This case is a significant incident: the early warning is due 24 hours, the notification 72 hours and the final report a month after detection (see kastell report)."
        : "Not flagged as a significant incident.",
    ),
    h("div", { class: "inline-form" }, toggle),
  ];
}

function triageForm(detail, { base, refresh }) {
  const fields = [
    { name: "status", label: "Status", enum: OPEN_STATUSES, required: true, value: detail.status },
    { name: "severity", label: "Severity", enum: ["informational", "low", "medium", "high", "critical"], required: true, value: detail.severity },
    { name: "assignee", label: "Assignee", value: detail.assignee ?? "" },
    { name: "tags", label: "Tags (comma-separated)", value: (detail.tags ?? []).join(", ") },
  ].map(control);
  const save = h("button", { type: "submit", class: "primary" }, "Save");
  const close = h(
    "button",
    {
      type: "button",
      class: "danger",
      onclick: async () => {
        const values = await ask(
          "Close this case",
          [
            { name: "resolution", label: "Resolution", enum: RESOLUTIONS, required: true },
            { name: "summary", label: "Summary", multiline: true, required: true },
          ],
          "Close case",
        );
        if (!values) return;
        const done = await act(close, () => api.post(`${base}/close`, values));
        if (done) {
          await refresh();
          announce("ok", "Case closed.");
        }
      },
    },
    "Close case…",
  );
  const form = h(
    "form",
    { class: "inline-form", "aria-label": "Triage" },
    fields.map(([label]) => label),
    save,
    close,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = Object.fromEntries(fields.map(([, input, field]) => [field.name, input.value.trim()]));
    const change = {};
    if (values.status !== detail.status) change.status = values.status;
    if (values.severity !== detail.severity) change.severity = values.severity;
    if (values.assignee !== (detail.assignee ?? "")) change.assignee = values.assignee;
    const tags = values.tags.split(",").map((t) => t.trim()).filter(Boolean);
    if (tags.join(",") !== (detail.tags ?? []).join(",")) change.tags = tags;
    if (!Object.keys(change).length) {
      announce("info", "Nothing changed.");
      return;
    }
    const done = await act(save, () => api.patch(base, change));
    if (done) {
      await refresh();
      announce("ok", "Case saved.");
    }
  });
  return form;
}

function actionsSection(actions, { refresh }) {
  const pending = actions.filter((a) => a.status === "pending").length;
  const rows = actions.map((action) => {
    const buttons = [];
    if (action.status === "pending") {
      const approve = h(
        "button",
        {
          type: "button",
          class: "primary",
          "aria-label": `Approve action ${action.id}: ${action.step}`,
          onclick: async () => {
            const values = await ask(`Approve action ${action.id}`, [{ name: "comment", label: "Comment (optional)", multiline: true }], "Approve");
            if (!values) return;
            const body = values.comment.trim() ? { comment: values.comment.trim() } : {};
            const done = await act(approve, () => api.post(`/api/v1/actions/${action.id}/approve`, body));
            if (done) {
              await refresh();
              announce("ok", `Action ${action.id} approved.`);
            }
          },
        },
        "Approve",
      );
      const reject = h(
        "button",
        {
          type: "button",
          "aria-label": `Reject action ${action.id}: ${action.step}`,
          onclick: async () => {
            const values = await ask(`Reject action ${action.id}`, [{ name: "reason", label: "Reason", required: true, multiline: true }], "Reject");
            if (!values) return;
            const done = await act(reject, () => api.post(`/api/v1/actions/${action.id}/reject`, { reason: values.reason }));
            if (done) {
              await refresh();
              announce("ok", `Action ${action.id} rejected.`);
            }
          },
        },
        "Reject",
      );
      buttons.push(approve, reject);
    }
    return h(
      "tr",
      {},
      h("td", {}, String(action.id)),
      h("td", {}, action.playbook ?? ""),
      h("td", {}, action.step ?? ""),
      h("td", {}, action.step_type ?? ""),
      h("td", {}, action.status ?? ""),
      h("td", {}, parameters(action.params)),
      h("td", {}, action.decided_by ?? ""),
      h("td", {}, [action.reason, action.result ? describeObject(action.result) : null].filter(Boolean).join(" — ")),
      h("td", { class: "actions" }, buttons),
    );
  });
  return h(
    "section",
    { "aria-labelledby": "actions-title" },
    h("h2", { id: "actions-title" }, `Response actions (${pending} pending)`),
    actions.length
      ? table(["#", "Playbook", "Step", "Type", "Status", "Parameters", "Decided by", "Reason or result"], rows)
      : h("p", { class: "muted" }, "No playbook planned an action for this case."),
  );
}

// A form whose fields are the request body's properties in the server's OpenAPI
// document, so the page follows the API's own field names.
async function createForm(template, path, label, { refresh, closed }) {
  if (closed) return null;
  // Required fields first; the document lists properties alphabetically.
  const fields = (await api.bodyFields("POST", template)).sort((a, b) => Number(b.required) - Number(a.required));
  if (!fields.length) return null;
  const controls = fields.map((field) =>
    control({
      ...field,
      label: field.type === "array" ? `${field.name} (comma-separated)` : field.name,
      hint: field.description,
      multiline: field.name === "text",
    }),
  );
  const submit = h("button", { type: "submit" }, label);
  const form = h("form", { class: "inline-form", "aria-label": label }, controls.map(([l]) => l), submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {};
    for (const [, input, field] of controls) {
      if (field.type === "boolean") {
        body[field.name] = input.checked;
        continue;
      }
      const value = input.value.trim();
      if (value === "") continue;
      if (field.type === "integer" || field.type === "number") body[field.name] = Number(value);
      else if (field.type === "array") body[field.name] = value.split(",").map((v) => v.trim()).filter(Boolean);
      else body[field.name] = value;
    }
    const done = await act(submit, () => api.post(path, body));
    if (done) {
      await refresh();
      announce("ok", `${label}: done.`);
    }
  });
  return form;
}

// One line for any object: its scalar fields as "name: value".
function describeObject(value) {
  if (value === null || typeof value !== "object") return String(value ?? "");
  return Object.entries(value)
    .filter(([, v]) => v !== null && v !== undefined && typeof v !== "object")
    .map(([k, v]) => `${k}: ${v}`)
    .join(" · ");
}

// An enrichment result: an intel match reads "feed: indicator — context (tags)"; anything
// else as its fields.
function enrichmentLine(r) {
  if (r && r.feed && r.indicator) {
    const tags = (r.tags ?? []).length ? ` (${r.tags.join(", ")})` : "";
    return `${r.feed}: ${r.indicator}${r.context ? ` — ${r.context}` : ""}${tags}`;
  }
  return describeObject(r);
}

async function observablesSection(result, context) {
  const heading = h("h2", { id: "observables-title" }, "Observables");
  if (result.missing) return [heading, notOffered("Observables")];
  if (result.error) return [heading, message("error", describe(result.error))];
  const list = api.items(result.data);
  const rows = list.map((o) => {
    const kind = o.kind ?? o.type ?? o.data_type ?? "";
    const value = o.value ?? o.data ?? "";
    const flags = [o.ioc ? "IOC" : null, o.sighted ? "sighted" : null, ...(o.tags ?? [])].filter(Boolean);
    const enrichment = o.enrichment ?? o.enrichments ?? o.results ?? o.intel ?? [];
    // The same match can come once per alert that carried it; one line each is enough.
    const results = [...new Set((Array.isArray(enrichment) ? enrichment : [enrichment]).map(enrichmentLine))];
    return h(
      "tr",
      {},
      h("td", {}, kind),
      h(
        "td",
        {},
        value ? h("a", { href: `#/alerts${api.query({ observable: value })}`, "aria-label": `Alerts with ${value}` }, value) : "",
        flags.length ? h("div", { class: "muted" }, flags.join(" · ")) : null,
      ),
      h(
        "td",
        {},
        results.length
          ? h("ul", {}, results.map((line) => h("li", {}, line)))
          : h("span", { class: "muted" }, "no enrichment result"),
      ),
    );
  });
  return [
    heading,
    list.length ? table(["Kind", "Value", "Enrichment"], rows) : h("p", { class: "muted" }, "No observable yet."),
    await createForm("/api/v1/cases/{id}/observables", `${context.base}/observables`, "Add observable", context),
  ];
}

async function tasksSection(result, context) {
  const heading = h("h2", { id: "tasks-title" }, "Tasks");
  if (result.missing) return [heading, notOffered("Tasks")];
  if (result.error) return [heading, message("error", describe(result.error))];
  const list = api.items(result.data);
  const patchFields = await api.bodyFields("PATCH", "/api/v1/cases/{id}/tasks/{task_id}");
  const statusField = patchFields.find((f) => f.name === "status" && f.enum);
  const items = list.map((task) => {
    const title = task.title ?? task.name ?? `Task ${task.id}`;
    let status = h("span", { class: "muted" }, task.status ?? "");
    if (statusField && !context.closed) {
      const select = h(
        "select",
        { name: "status", "aria-label": `Status of ${title}` },
        statusField.enum.map((value) => h("option", { value, selected: value === task.status }, value)),
      );
      select.addEventListener("change", async () => {
        const done = await act(select, () => api.patch(`${context.base}/tasks/${task.id}`, { status: select.value }));
        if (done) announce("ok", `Task "${title}" is now ${select.value}.`);
      });
      status = select;
    }
    return h("li", {}, h("span", {}, title, task.assignee ? ` (${task.assignee})` : ""), status);
  });
  return [
    heading,
    list.length ? h("ul", { class: "tasks" }, items) : h("p", { class: "muted" }, "No task yet."),
    await createForm("/api/v1/cases/{id}/tasks", `${context.base}/tasks`, "Add task", context),
  ];
}

async function timelineSection(result, context) {
  const heading = h("h2", { id: "timeline-title" }, "Timeline");
  if (result.missing) return [heading, notOffered("The timeline and comments")];
  if (result.error) return [heading, message("error", describe(result.error))];
  const all = api.items(result.data);
  // Newest first, and only the latest lines: a case with many alerts has a line for each.
  const entries = all.slice(-TIMELINE_SHOWN).reverse();
  return [
    heading,
    all.length > entries.length ? h("p", { class: "muted" }, `The latest ${entries.length} of ${all.length} lines, newest first.`) : null,
    entries.length
      ? h(
          "ol",
          { class: "timeline", reversed: true },
          entries.map((e) =>
            h(
              "li",
              {},
              time(e.at ?? e.timestamp ?? e.created_at),
              " ",
              h("strong", {}, e.kind ?? e.action ?? e.type ?? ""),
              e.actor ?? e.author ? ` by ${e.actor ?? e.author}` : "",
              h("div", {}, e.message ?? e.text ?? e.details?.text ?? describeObject(e.details ?? "")),
            ),
          ),
        )
      : h("p", { class: "muted" }, "Nothing on the timeline yet."),
    await createForm("/api/v1/cases/{id}/comments", `${context.base}/comments`, "Add comment", context),
  ];
}

function alertsSection(alerts, count) {
  const shown = alerts.length < (count ?? 0) ? ` (first ${alerts.length} of ${count})` : ` (${alerts.length})`;
  return h(
    "section",
    { "aria-labelledby": "alerts-title" },
    h("h2", { id: "alerts-title" }, `Alerts${shown}`),
    alerts.length
      ? table(
          ["Event time", "Level", "Rule", "Host", "Status"],
          alerts.map((a) =>
            h(
              "tr",
              {},
              h("td", {}, time(a.timestamp)),
              h("td", {}, level(a.rule?.level)),
              h("td", {}, h("a", { href: `#/alerts/${encodeURIComponent(a.id)}` }, a.rule?.title ?? a.id)),
              h("td", {}, a.host ?? ""),
              h("td", {}, a.status ?? ""),
            ),
          ),
        )
      : h("p", { class: "muted" }, "No alert in this case."),
  );
}
