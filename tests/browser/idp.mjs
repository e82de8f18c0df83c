// A minimal OpenID Connect provider for the browser test of the page's sign-in by
// redirect, and for nothing else: discovery, an authorization endpoint with a one-button
// sign-in page, a token endpoint that checks PKCE (S256), and the JWKS of an RSA key made
// at start. It listens on 127.0.0.1 on a port the system picks and prints
// "issuer http://127.0.0.1:PORT" once ready. docs/testing.md says why it is not a real
// provider.
//
// Usage: node idp.mjs CLIENT_ID ROLE. Tokens name the subject "test-lead", carry `roles:
// [ROLE]` and have the client id as audience. Only redirect URIs on http://127.0.0.1 are
// accepted, and cross-origin reads are allowed from those origins only.

import { createHash, generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { createServer } from "node:http";

const [clientId, role] = process.argv.slice(2);
if (!clientId || !role) {
  console.error("usage: node idp.mjs CLIENT_ID ROLE");
  process.exit(2);
}

const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const kid = randomBytes(8).toString("hex");
const jwk = { ...publicKey.export({ format: "jwk" }), kid, alg: "RS256", use: "sig" };
const b64 = (data) => Buffer.from(data).toString("base64url");

let issuer;
// code -> what the authorization request asked, used once.
const codes = new Map();

const loopbackOrigin = (value) => {
  try {
    const url = new URL(value);
    return url.protocol === "http:" && url.hostname === "127.0.0.1" ? url.origin : null;
  } catch {
    return null;
  }
};

function send(response, status, body, headers = {}) {
  const json = typeof body !== "string";
  response.writeHead(status, {
    "Content-Type": json ? "application/json" : "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    ...headers,
  });
  response.end(json ? JSON.stringify(body) : body);
}

function cors(request) {
  const origin = loopbackOrigin(request.headers.origin ?? "");
  return origin ? { "Access-Control-Allow-Origin": origin, Vary: "Origin" } : {};
}

function token(audience) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64(JSON.stringify({ alg: "RS256", typ: "JWT", kid }));
  const claims = b64(
    JSON.stringify({ iss: issuer, sub: "test-lead", preferred_username: "test-lead", aud: audience, roles: [role], iat: now, exp: now + 600 }),
  );
  const signature = sign("sha256", Buffer.from(`${header}.${claims}`), privateKey).toString("base64url");
  return `${header}.${claims}.${signature}`;
}

async function form(request) {
  let text = "";
  for await (const chunk of request) text += chunk;
  return new URLSearchParams(text);
}

function authorize(params, response) {
  const problem =
    params.get("response_type") !== "code"
      ? "response_type must be code"
      : params.get("client_id") !== clientId
        ? "unknown client_id"
        : !loopbackOrigin(params.get("redirect_uri") ?? "")
          ? "redirect_uri is not registered"
          : params.get("code_challenge_method") !== "S256" || !params.get("code_challenge")
            ? "PKCE with S256 is required"
            : null;
  if (problem) return send(response, 400, `<!doctype html><title>Refused</title><h1>Refused</h1><p>${problem}</p>`);
  const hidden = [...params].map(([n, v]) => `<input type="hidden" name="${n}" value="${v.replace(/[&"<>]/g, (c) => `&#${c.charCodeAt(0)};`)}">`).join("");
  send(
    response,
    200,
    `<!doctype html><html lang="en"><title>Test identity provider</title><h1>Test identity provider</h1>` +
      `<form method="post" action="/authorize">${hidden}<button type="submit">Sign in as test-lead</button></form></html>`,
  );
}

async function grant(request, response) {
  const params = await form(request);
  const code = randomBytes(16).toString("hex");
  codes.set(code, Object.fromEntries(params));
  const back = new URL(params.get("redirect_uri"));
  back.searchParams.set("code", code);
  back.searchParams.set("state", params.get("state") ?? "");
  response.writeHead(302, { Location: back.href });
  response.end();
}

async function exchange(request, response) {
  const params = await form(request);
  const headers = cors(request);
  const asked = codes.get(params.get("code"));
  codes.delete(params.get("code"));
  const refuse = (description) => send(response, 400, { error: "invalid_grant", error_description: description }, headers);
  if (params.get("grant_type") !== "authorization_code") return send(response, 400, { error: "unsupported_grant_type" }, headers);
  if (!asked) return refuse("unknown or used code");
  if (params.get("client_id") !== asked.client_id) return refuse("client_id differs from the authorization request");
  if (params.get("redirect_uri") !== asked.redirect_uri) return refuse("redirect_uri differs from the authorization request");
  const challenge = createHash("sha256").update(params.get("code_verifier") ?? "").digest("base64url");
  if (challenge !== asked.code_challenge) return refuse("code_verifier does not match the code_challenge");
  send(response, 200, { access_token: token(asked.client_id), token_type: "Bearer", expires_in: 600 }, headers);
}

const server = createServer(async (request, response) => {
  const url = new URL(request.url, issuer);
  try {
    if (request.method === "GET" && url.pathname === "/.well-known/openid-configuration") {
      return send(
        response,
        200,
        {
          issuer,
          authorization_endpoint: `${issuer}/authorize`,
          token_endpoint: `${issuer}/token`,
          jwks_uri: `${issuer}/jwks`,
          response_types_supported: ["code"],
          subject_types_supported: ["public"],
          id_token_signing_alg_values_supported: ["RS256"],
          code_challenge_methods_supported: ["S256"],
          token_endpoint_auth_methods_supported: ["none"],
        },
        cors(request),
      );
    }
    if (request.method === "GET" && url.pathname === "/jwks") return send(response, 200, { keys: [jwk] });
    if (request.method === "GET" && url.pathname === "/authorize") return authorize(url.searchParams, response);
    if (request.method === "POST" && url.pathname === "/authorize") return await grant(request, response);
    if (request.method === "POST" && url.pathname === "/token") return await exchange(request, response);
    send(response, 404, { error: "not_found" });
  } catch (error) {
    send(response, 500, { error: "server_error", error_description: error.message });
  }
});

server.listen(0, "127.0.0.1", () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  console.log(`issuer ${issuer}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
