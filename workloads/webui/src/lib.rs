//! Kastell's analyst web page: the alert queue, cases, approvals and search, as plain
//! HTML, CSS and JavaScript modules embedded in the binary and served by the cases stage
//! on the same origin as the API (`/` and `/ui/…`).
//!
//! The page has no build step and no framework (see `docs/web.md` for why): the files
//! under `assets/` are served exactly as they are written. Every answer carries a strict
//! Content-Security-Policy: scripts, styles and images from this origin only, no inline
//! script or style, no frames, and Trusted Types required so that no code path can turn a
//! string into markup.

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The policy every page and asset is served with.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; \
     trusted-types 'none'";

/// One embedded file and where it is served.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The URL path, from the root.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! asset {
    ($path:literal, $file:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $file)),
        }
    };
}

/// Every file of the page. A fixed list rather than a directory walk (rust-embed): a
/// dozen files known at compile time need no extra crate, and a file missing from the
/// list is caught by the test that follows every reference in `index.html` and the
/// modules' imports.
pub const ASSETS: &[Asset] = &[
    asset!("/", "index.html", HTML),
    asset!("/ui/app.css", "app.css", CSS),
    asset!("/ui/icon.svg", "icon.svg", SVG),
    asset!("/ui/main.js", "main.js", JS),
    asset!("/ui/api.js", "api.js", JS),
    asset!("/ui/dom.js", "dom.js", JS),
    asset!("/ui/queue.js", "queue.js", JS),
    asset!("/ui/case.js", "case.js", JS),
    asset!("/ui/lists.js", "lists.js", JS),
    asset!("/ui/oidc.js", "oidc.js", JS),
];

/// Where the page reads how it may sign in (`{"oidc": …}`), served beside [`ASSETS`].
pub const CONFIG_PATH: &str = "/ui/config.json";

/// The issuer of the tokens the page signs in with by redirect; the same variable tells
/// the API which `iss` to accept.
pub const ENV_ISSUER: &str = "KASTELL_OIDC_ISSUER";
/// The page's client id at the identity provider (a public client: no secret, PKCE).
pub const ENV_CLIENT_ID: &str = "KASTELL_OIDC_CLIENT_ID";
/// The scopes the page asks for; default `openid`.
pub const ENV_SCOPE: &str = "KASTELL_OIDC_SCOPE";

/// Sign-in by redirect to an OpenID Connect provider (authorization code with PKCE), as
/// the page receives it from `/ui/config.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OidcSignIn {
    pub issuer: String,
    pub client_id: String,
    pub scope: String,
    /// `scheme://host[:port]` of the issuer: the page fetches its discovery document and
    /// token endpoint there, so the policy's `connect-src` must allow it.
    #[serde(skip)]
    origin: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{ENV_ISSUER} {issuer:?} is not an http(s) URL: {reason}")]
    Issuer { issuer: String, reason: String },
}

impl OidcSignIn {
    /// # Errors
    /// When the issuer is not an absolute `http`/`https` URL.
    pub fn new(issuer: &str, client_id: &str, scope: &str) -> Result<Self, ConfigError> {
        let bad = |reason: String| ConfigError::Issuer {
            issuer: issuer.to_owned(),
            reason,
        };
        let url = url::Url::parse(issuer).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad("it needs an http or https scheme and a host".to_owned()));
        }
        Ok(OidcSignIn {
            issuer: issuer.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            origin: url.origin().ascii_serialization(),
        })
    }

    /// The sign-in the environment configures: both [`ENV_ISSUER`] and [`ENV_CLIENT_ID`]
    /// set. A malformed issuer is logged and leaves the page with pasted credentials only,
    /// as the API would refuse its tokens anyway.
    pub fn from_env() -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let (issuer, client_id) = (var(ENV_ISSUER)?, var(ENV_CLIENT_ID)?);
        let scope = var(ENV_SCOPE).unwrap_or_else(|| "openid".to_owned());
        match OidcSignIn::new(&issuer, &client_id, &scope) {
            Ok(sign_in) => Some(sign_in),
            Err(error) => {
                tracing::error!(%error, "oidc sign-in by redirect left out");
                None
            }
        }
    }
}

/// The policy the page is served with when it signs in by redirect: the strict one, with
/// the issuer's origin added to `connect-src` for discovery and the code exchange.
pub fn content_security_policy(oidc: Option<&OidcSignIn>) -> String {
    match oidc {
        Some(sign_in) => CONTENT_SECURITY_POLICY.replace(
            "connect-src 'self';",
            &format!("connect-src 'self' {};", sign_in.origin),
        ),
        None => CONTENT_SECURITY_POLICY.to_owned(),
    }
}

/// The page's routes, to merge into the router that serves the API, with the OIDC
/// sign-in the environment configures ([`OidcSignIn::from_env`]).
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router_with(OidcSignIn::from_env())
}

/// The page's routes with the given OIDC sign-in; `/ui/config.json` tells the page about
/// it (`{"oidc": null}` without).
pub fn router_with<S>(oidc: Option<OidcSignIn>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let policy = HeaderValue::from_str(&content_security_policy(oidc.as_ref()))
        .expect("a URL origin is a valid header value");
    let config = Bytes::from(
        serde_json::to_vec(&serde_json::json!({ "oidc": oidc })).expect("the config serialises"),
    );
    let router = ASSETS.iter().fold(Router::new(), |router, asset| {
        let (asset, policy) = (*asset, policy.clone());
        let body = Bytes::from_static(asset.body);
        router.route(
            asset.path,
            get(move || async move { serve(asset.content_type, body, policy) }),
        )
    });
    router.route(
        CONFIG_PATH,
        get(move || async move { serve("application/json", config, policy) }),
    )
}

fn serve(content_type: &'static str, body: Bytes, policy: HeaderValue) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_SECURITY_POLICY, policy),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            // The files change with the binary, not on their own: revalidating each load
            // is cheap (they are small) and never shows a page older than its server.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}
