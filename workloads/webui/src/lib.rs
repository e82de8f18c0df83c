//! Kastell's analyst web page: the alert queue, cases, approvals and search, as plain
//! HTML, CSS and JavaScript modules embedded in the binary and served by the cases stage
//! on the same origin as the API (`/` and `/ui/…`).
//!
//! The page has no build step and no framework (see `docs/web.md` for why): the files
//! under `assets/` are served exactly as they are written. Every answer carries a strict
//! Content-Security-Policy: scripts, styles and images from this origin only, no inline
//! script or style, no frames, and Trusted Types required so that no code path can turn a
//! string into markup.

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
];

/// The page's routes, to merge into the router that serves the API.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    ASSETS.iter().fold(Router::new(), |router, asset| {
        let asset = *asset;
        router.route(asset.path, get(move || async move { serve(asset) }))
    })
}

fn serve(asset: Asset) -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
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
        asset.body,
    )
        .into_response()
}
