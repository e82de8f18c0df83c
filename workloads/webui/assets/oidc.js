// Sign-in by redirect to the organisation's OpenID Connect provider: the authorization
// code flow with PKCE (RFC 7636, S256) for a public client. The server tells the page the
// issuer and client id (/ui/config.json); the provider's endpoints come from its discovery
// document. Only the PKCE verifier and the state cross the redirect, in sessionStorage,
// and are removed when the provider sends the browser back; the access token itself is
// kept in memory (api.js), never in storage.

const PENDING = "kastell.oidc.pending";

let configuration;

// The server's sign-in configuration: { issuer, client_id, scope } or null.
export async function config() {
  if (configuration === undefined) {
    try {
      const response = await fetch("/ui/config.json", { headers: { Accept: "application/json" } });
      configuration = response.ok ? ((await response.json()).oidc ?? null) : null;
    } catch {
      configuration = null;
    }
  }
  return configuration;
}

async function discover(issuer) {
  const response = await fetch(`${issuer}/.well-known/openid-configuration`, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`the identity provider's discovery document answered ${response.status}`);
  const document = await response.json();
  // OIDC Discovery §4.3: the document must be the issuer's own.
  if (document.issuer !== issuer) throw new Error(`the discovery document names issuer ${document.issuer}, not ${issuer}`);
  return document;
}

function base64url(bytes) {
  let text = "";
  for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

const random = (length) => base64url(crypto.getRandomValues(new Uint8Array(length)));

// Where the provider sends the browser back: the page itself, which finishes below.
const redirectUri = () => `${location.origin}/`;

// Leaves for the provider's sign-in page; `back` is the view to return to.
export async function begin(settings, back) {
  const provider = await discover(settings.issuer);
  const verifier = random(32);
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const state = random(16);
  sessionStorage.setItem(PENDING, JSON.stringify({ state, verifier, back }));
  const url = new URL(provider.authorization_endpoint);
  for (const [name, value] of Object.entries({
    response_type: "code",
    client_id: settings.client_id,
    redirect_uri: redirectUri(),
    scope: settings.scope,
    state,
    code_challenge: challenge,
    code_challenge_method: "S256",
  })) {
    url.searchParams.set(name, value);
  }
  location.assign(url.href);
}

// When the provider sent the browser back (?code=…&state=… or ?error=…), exchanges the
// code for an access token and returns { token, back }; null on any other load. The query
// is removed from the address either way, so a reload never replays the code.
export async function complete(settings) {
  const params = new URLSearchParams(location.search);
  if (!params.has("code") && !params.has("error")) return null;
  const pending = JSON.parse(sessionStorage.getItem(PENDING) ?? "null");
  sessionStorage.removeItem(PENDING);
  history.replaceState(null, "", `${location.pathname}${pending?.back ?? ""}`);
  if (params.has("error")) {
    throw new Error(`the identity provider refused the sign-in: ${params.get("error_description") ?? params.get("error")}`);
  }
  if (!settings) throw new Error("this server does not sign in by redirect");
  // The state ties the answer to the request this tab made; without it another site
  // could sign the tab in with its own code.
  if (!pending || pending.state !== params.get("state")) throw new Error("the sign-in answer does not match a sign-in this tab started");
  const provider = await discover(settings.issuer);
  const response = await fetch(provider.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: params.get("code"),
      redirect_uri: redirectUri(),
      client_id: settings.client_id,
      code_verifier: pending.verifier,
    }),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok || !answer.access_token) {
    throw new Error(`the identity provider did not issue a token: ${answer.error_description ?? answer.error ?? response.status}`);
  }
  return { token: answer.access_token, back: pending.back };
}
