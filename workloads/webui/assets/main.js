// The page's entry point: sign-in, the navigation bar and the hash router. Routes live in
// the fragment (#/cases/3) so that the server serves one document and every view can be
// bookmarked and reloaded.

import * as api from "./api.js";
import * as oidc from "./oidc.js";
import { h, announce, clearAnnouncement, describe } from "./dom.js";
import { alertQueue, alertView } from "./queue.js";
import { caseView } from "./case.js";
import { caseList, approvals, search, figures } from "./lists.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signout = document.getElementById("signout");

const routes = [
  [/^\/alerts$/, alertQueue],
  [/^\/alerts\/([^/]+)$/, alertView],
  [/^\/cases$/, caseList],
  [/^\/cases\/(\d+)$/, caseView],
  [/^\/approvals$/, approvals],
  [/^\/search$/, search],
  [/^\/figures$/, figures],
];

// Shown after the next navigation, which otherwise clears the last announcement.
let notice = null;

function go(path, after) {
  notice = after ?? null;
  if (location.hash === `#${path}`) {
    showNotice();
    render();
  } else {
    location.hash = path;
  }
}

function showNotice() {
  clearAnnouncement();
  if (notice) announce(...notice);
  notice = null;
}

function current() {
  const fragment = location.hash.slice(1);
  const [path, search = ""] = fragment.split("?");
  return { path, params: new URLSearchParams(search) };
}

let rendering = 0;

async function render() {
  // Fragments that are not routes (the skip link's #main) only move focus.
  if (location.hash && !location.hash.startsWith("#/")) return;
  const { path, params } = current();
  if (!api.credential()) {
    showSignIn();
    return;
  }
  const found = routes.find(([pattern]) => pattern.test(path));
  if (!found) {
    location.replace("#/alerts");
    return;
  }
  const [pattern, view] = found;
  const args = path.match(pattern).slice(1).map(decodeURIComponent);
  showNav(path);
  const ticket = ++rendering;
  delete main.dataset.ready;
  const content = h("div", { "aria-busy": "true" });
  main.replaceChildren(content);
  try {
    const nodes = await view({ args, params, go, refresh: render });
    // A later navigation wins over a slow answer for an earlier one.
    if (ticket !== rendering) return;
    content.replaceChildren(...[nodes].flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
  } catch (error) {
    if (ticket !== rendering) return;
    if (error?.status === 401) return;
    content.replaceChildren(h("h1", {}, "Something went wrong"), h("p", { class: "message error" }, describe(error)));
  }
  content.removeAttribute("aria-busy");
  // Which view is on screen and finished, for tests and tools that wait on the page.
  main.dataset.ready = location.hash;
  const heading = main.querySelector("h1");
  // Focus goes to the new view's heading so keyboard and screen-reader users start there,
  // not at the bottom of the previous page.
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus();
  }
}

function showNav(path) {
  nav.hidden = false;
  signout.hidden = false;
  for (const link of nav.querySelectorAll("a")) {
    const target = link.getAttribute("href").slice(1);
    if (path === target || path.startsWith(`${target}/`)) {
      link.setAttribute("aria-current", "page");
    } else {
      link.removeAttribute("aria-current");
    }
  }
}

function showSignIn(reason) {
  nav.hidden = true;
  signout.hidden = true;
  const input = h("input", {
    id: "credential",
    name: "credential",
    type: "password",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    "aria-describedby": "credential-help",
  });
  const error = h("div", { role: "alert" }, reason ? h("p", { class: "message error" }, reason) : null);
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "stack", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to Kastell"),
    h("label", { for: "credential" }, "API key or OIDC access token", input),
    h(
      "p",
      { id: "credential-help", class: "muted" },
      "An API key from `kastell apikey create` (kst_…) or an access token from your identity provider. It is kept in this tab only and sent as a bearer token.",
    ),
    error,
    h("div", {}, submit),
    redirectSignIn(error),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    submit.disabled = true;
    api.setCredential(value);
    try {
      // Any authenticated read proves the credential; the case list is the cheapest.
      await api.get("/api/v1/cases?limit=1");
      clearAnnouncement();
      if (!location.hash.startsWith("#/") || location.hash.startsWith("#/signin")) {
        location.hash = "#/alerts";
      } else {
        render();
      }
    } catch (e) {
      api.forget();
      submit.disabled = false;
      error.replaceChildren(h("p", { class: "message error" }, describe(e)));
      input.focus();
    }
  });
  main.replaceChildren(form);
  input.focus();
}

// The sign-in by redirect the server offers (null when it offers none).
let signInByRedirect = null;

function redirectSignIn(error) {
  if (!signInByRedirect) return null;
  const button = h("button", { type: "button", class: "primary" }, "Sign in with your identity provider");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const back = location.hash.startsWith("#/") ? location.hash : "#/alerts";
      await oidc.begin(signInByRedirect, back);
    } catch (e) {
      button.disabled = false;
      error.replaceChildren(h("p", { class: "message error" }, describe(e)));
    }
  });
  return h(
    "div",
    { class: "stack" },
    h("p", { class: "muted" }, `Or sign in at ${new URL(signInByRedirect.issuer).host}; the token is kept in this page's memory only, so a reload asks again.`),
    h("div", {}, button),
  );
}

api.whenUnauthenticated((error) => {
  api.forget();
  showSignIn(`Signed out: ${error.message}`);
});

signout.addEventListener("click", () => {
  api.forget();
  clearAnnouncement();
  showSignIn();
  announce("info", "Signed out.");
});

window.addEventListener("hashchange", () => {
  showNotice();
  render();
});

// Finishes a sign-in by redirect when the provider has just sent the browser back, then
// shows the view the analyst was on.
async function start() {
  signInByRedirect = await oidc.config();
  let finished;
  try {
    finished = await oidc.complete(signInByRedirect);
  } catch (e) {
    showSignIn(describe(e));
    return;
  }
  if (finished) {
    api.setToken(finished.token);
    const back = finished.back?.startsWith("#/") ? finished.back : "#/alerts";
    if (location.hash !== back) {
      location.hash = back;
      return;
    }
  }
  render();
}

start();
