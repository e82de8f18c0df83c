// The case API as the page uses it: the credential (a pasted key kept for the tab's
// session, or a token from the sign-in by redirect kept in memory), one
// request helper that turns every failure into an ApiError, and the OpenAPI document to
// tell endpoints this server has from those it does not have yet.

const KEY = "kastell.credential";

// A token from the sign-in by redirect lives only here: gone on reload, never in storage
// where another script of the origin could read it later.
let token = null;

export function credential() {
  return token ?? sessionStorage.getItem(KEY);
}

export function setCredential(value) {
  sessionStorage.setItem(KEY, value);
}

export function setToken(value) {
  sessionStorage.removeItem(KEY);
  token = value;
}

export function forget() {
  token = null;
  sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  // The API answers 404 "no route for …" for a path it does not serve at all, which is
  // how an endpoint from a later release looks; a missing object says "no such …".
  get notBuilt() {
    return this.status === 404 && /^no route for /.test(this.message);
  }
}

// Called on any 401, so the page can return to sign-in wherever it is.
let onUnauthenticated = () => {};
export function whenUnauthenticated(handler) {
  onUnauthenticated = handler;
}

export async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = credential();
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "network", `the server did not answer (${e.message})`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const code = data?.error ?? "http";
    const message = data?.message ?? `${response.status} ${response.statusText}`;
    const error = new ApiError(response.status, code, message);
    if (response.status === 401) onUnauthenticated(error);
    throw error;
  }
  return data;
}

export const get = (path) => request("GET", path);
export const post = (path, body = {}) => request("POST", path, body);
export const patch = (path, body) => request("PATCH", path, body);

// A query string from the non-empty entries of an object.
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// A list answer may be a page ({items: [...]}) or a plain array; both become an array.
export function items(data) {
  if (Array.isArray(data)) return data;
  if (data && Array.isArray(data.items)) return data.items;
  return [];
}

let openapi = null;

// The server's OpenAPI document, read once (it needs no credential).
export async function document() {
  if (!openapi) {
    // A failed read is not kept: the next view asks again rather than treating every
    // endpoint as missing for the rest of the session.
    openapi = get("/api/openapi.json").catch(() => {
      openapi = null;
      return { paths: {} };
    });
  }
  return openapi;
}

// Whether the server documents `method` on the path template `path`.
export async function serves(method, path) {
  const doc = await document();
  return Boolean(doc.paths?.[path]?.[method.toLowerCase()]);
}

// The properties of a request body's schema, resolved through $ref: [{name, required,
// enum, type, description}], so a form follows the server's own field names.
export async function bodyFields(method, path) {
  const doc = await document();
  const operation = doc.paths?.[path]?.[method.toLowerCase()];
  let schema = operation?.requestBody?.content?.["application/json"]?.schema;
  schema = resolve(doc, schema);
  if (!schema?.properties) return [];
  const required = new Set(schema.required ?? []);
  return Object.entries(schema.properties).map(([name, property]) => {
    const resolved = resolve(doc, property) ?? {};
    const variants = resolved.oneOf ?? resolved.anyOf ?? [];
    const enumeration =
      resolved.enum ??
      variants.flatMap((v) => resolve(doc, v)?.enum ?? []).filter((v) => v !== null);
    const type = [resolved.type].flat().find((t) => t && t !== "null") ?? "string";
    return {
      name,
      required: required.has(name),
      enum: enumeration.length ? enumeration : null,
      type,
      description: resolved.description ?? property.description ?? "",
    };
  });
}

function resolve(doc, schema) {
  let current = schema;
  for (let depth = 0; current?.$ref && depth < 8; depth += 1) {
    const name = current.$ref.replace("#/components/schemas/", "");
    current = doc.components?.schemas?.[name];
  }
  return current;
}
