// Building the page from data without ever parsing a string as markup: every text goes
// through textContent, so an alert's hostile field cannot become an element (the policy
// also requires Trusted Types, which would refuse any string-to-markup sink).

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      element.className = value;
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function message(kind, text) {
  return h("p", { class: `message ${kind}` }, text);
}

// The polite live region under the header: what just happened, read out by screen
// readers without moving focus.
export function announce(kind, text) {
  const status = document.getElementById("status");
  status.replaceChildren(message(kind, text));
}

export function clearAnnouncement() {
  document.getElementById("status").replaceChildren();
}

export function level(value) {
  const name = value ?? "informational";
  return h("span", { class: `badge ${name}` }, name);
}

// Times as the API gives them (UTC), shortened to the second; a reader comparing with
// sensor logs wants UTC, not the browser's zone.
export function time(value) {
  if (!value) return "";
  return h("time", { datetime: value, class: "nowrap" }, value.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC"));
}

export function table(headings, rows, caption) {
  return h(
    "table",
    {},
    caption ? h("caption", { class: "muted" }, caption) : null,
    h("thead", {}, h("tr", {}, headings.map((text) => h("th", { scope: "col" }, text)))),
    h("tbody", {}, rows),
  );
}

export function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs
      .filter(([, value]) => value !== undefined && value !== null && value !== "")
      .map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
  );
}

// A modal form in a <dialog>: the browser traps focus in it and Escape cancels. Resolves
// to the values by field name, or null when cancelled.
export function ask(title, fields, submitLabel) {
  return new Promise((resolve) => {
    const inputs = fields.map((field) => control(field));
    const form = h(
      "form",
      { method: "dialog", class: "stack" },
      h("h2", {}, title),
      inputs.map(([label]) => label),
      h(
        "menu",
        {},
        h("button", { type: "button", value: "cancel", onclick: () => dialog.close("cancel") }, "Cancel"),
        h("button", { type: "submit", class: "primary", value: "ok" }, submitLabel),
      ),
    );
    const dialog = h("dialog", { "aria-label": title }, form);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      dialog.close("ok");
    });
    dialog.addEventListener("close", () => {
      const values = {};
      for (const [, input, field] of inputs) values[field.name] = input.value;
      dialog.remove();
      resolve(dialog.returnValue === "ok" ? values : null);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

// A labelled input, select or textarea for a field {name, label, enum, required,
// multiline, type, value}.
export function control(field) {
  const id = `f-${field.name}-${Math.random().toString(36).slice(2, 8)}`;
  let input;
  if (field.enum) {
    input = h(
      "select",
      { id, name: field.name, required: field.required },
      field.required ? null : h("option", { value: "" }, "(any)"),
      field.enum.map((value) => h("option", { value, selected: value === field.value }, value)),
    );
  } else if (field.type === "boolean") {
    input = h("input", { id, name: field.name, type: "checkbox", checked: Boolean(field.value) });
  } else if (field.multiline) {
    input = h("textarea", { id, name: field.name, rows: 3, required: field.required });
    input.value = field.value ?? "";
  } else {
    input = h("input", {
      id,
      name: field.name,
      type: field.type === "integer" ? "number" : field.inputType ?? "text",
      required: field.required,
      placeholder: field.placeholder,
      autocomplete: field.autocomplete ?? "off",
    });
    input.value = field.value ?? "";
  }
  const hint = field.hint ? h("span", { class: "muted hint" }, field.hint) : null;
  const label = h("label", { for: id }, field.label ?? field.name, input, hint);
  return [label, input, field];
}

// Runs an action from a button: disables it meanwhile, announces the outcome, and
// reports errors where the analyst looks rather than in the console.
export async function act(button, work, done) {
  button.disabled = true;
  try {
    const result = await work();
    if (done) announce("ok", done);
    return result;
  } catch (error) {
    announce("error", describe(error));
    return undefined;
  } finally {
    if (button.isConnected) button.disabled = false;
  }
}

export function describe(error) {
  if (error?.notBuilt) {
    return `This server does not offer that yet (${error.message}); it comes with a later release of the case API.`;
  }
  return error?.message ?? String(error);
}

// An action's parameters: the step type's inputs, often long (a webhook's whole body), so
// folded behind a summary that names them.
export function parameters(params) {
  const value = params ?? {};
  const names = Object.keys(value);
  if (!names.length) return h("span", { class: "muted" }, "none");
  return h("details", {}, h("summary", {}, names.join(", ")), h("pre", {}, JSON.stringify(value, null, 2)));
}
