//! The embedded page as a browser receives it: every file served with its type and the
//! strict policy, every file the page references served too, nothing inline or external,
//! and the palette's text colours readable on their backgrounds.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use kastell_webui::{router, ASSETS, CONTENT_SECURITY_POLICY};
use tower::ServiceExt;

async fn fetch(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let app: Router = router();
    let response = app
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

fn text(path: &str) -> &'static str {
    let asset = ASSETS.iter().find(|a| a.path == path).unwrap();
    std::str::from_utf8(asset.body).unwrap()
}

#[tokio::test]
async fn every_asset_is_served_with_its_type_and_the_policy() {
    for asset in ASSETS {
        let (status, headers, body) = fetch(asset.path).await;
        assert_eq!(status, StatusCode::OK, "{}", asset.path);
        assert_eq!(
            headers[header::CONTENT_TYPE],
            asset.content_type,
            "{}",
            asset.path
        );
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(body.as_bytes(), asset.body);
    }
    let (status, _, _) = fetch("/ui/missing.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn the_policy_allows_nothing_inline_and_nothing_from_elsewhere() {
    for directive in [
        "script-src 'self'",
        "style-src 'self'",
        "default-src 'none'",
    ] {
        assert!(CONTENT_SECURITY_POLICY.contains(directive), "{directive}");
    }
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    assert!(CONTENT_SECURITY_POLICY.contains("require-trusted-types-for 'script'"));
}

/// The values of `attribute="…"` in `html`.
fn attribute_values<'a>(html: &'a str, attribute: &str) -> Vec<&'a str> {
    let needle = format!("{attribute}=\"");
    html.match_indices(&needle)
        .map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect()
}

/// The modules a module imports: `from "./x.js"`.
fn imports(js: &str) -> Vec<String> {
    js.match_indices("from \"./")
        .map(|(at, _)| {
            let rest = &js[at + "from \"./".len()..];
            format!("/ui/{}", &rest[..rest.find('"').unwrap()])
        })
        .collect()
}

#[test]
fn every_file_the_page_references_is_embedded() {
    let served: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
    let html = text("/");
    let mut referenced: Vec<String> = attribute_values(html, "src")
        .into_iter()
        .chain(
            attribute_values(html, "href")
                .into_iter()
                .filter(|h| h.starts_with('/')),
        )
        .map(str::to_owned)
        .collect();
    for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
        referenced.extend(imports(text(asset.path)));
    }
    assert!(referenced.len() > ASSETS.len() / 2, "{referenced:?}");
    for path in &referenced {
        assert!(
            served.contains(&path.as_str()),
            "{path} is referenced but not embedded"
        );
    }
}

#[test]
fn nothing_is_inline_or_external() {
    let html = text("/");
    // Every <script> has a src, and no element carries a style or an event handler, which
    // the policy would refuse anyway; this finds them before a browser does.
    for (at, _) in html.match_indices("<script") {
        let tag = &html[at..at + html[at..].find('>').unwrap()];
        assert!(tag.contains(" src=\"/ui/"), "inline script: {tag}");
    }
    assert!(!html.contains(" style=\""));
    assert!(!html.contains(" onclick=") && !html.contains(" onload="));
    for asset in ASSETS {
        let body = std::str::from_utf8(asset.body).unwrap();
        for line in body.lines() {
            // The SVG's namespace is an identifier, not a fetch.
            let outside =
                line.contains("http://") || line.contains("https://") || line.contains("//cdn");
            assert!(
                !outside || line.contains("xmlns=\"http://www.w3.org/2000/svg\""),
                "{} refers outside: {line}",
                asset.path
            );
        }
        assert!(
            !body.contains("innerHTML")
                && !body.contains("insertAdjacentHTML")
                && !body.contains("eval(")
        );
    }
}

/// The palette's custom properties: `--name: #rrggbb;`.
fn palette() -> Vec<(String, [u8; 3])> {
    text("/ui/app.css")
        .lines()
        .filter_map(|line| {
            let (name, value) = line.trim().strip_prefix("--")?.split_once(':')?;
            let hex = value.trim().strip_prefix('#')?.strip_suffix(';')?;
            let channel = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
            Some((name.to_owned(), [channel(0)?, channel(2)?, channel(4)?]))
        })
        .collect()
}

/// WCAG 2.x contrast ratio.
fn contrast(a: [u8; 3], b: [u8; 3]) -> f64 {
    let luminance = |c: [u8; 3]| {
        let lin = |v: u8| {
            let s = f64::from(v) / 255.0;
            if s <= 0.03928 {
                s / 12.92
            } else {
                ((s + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])
    };
    let (x, y) = (luminance(a), luminance(b));
    (x.max(y) + 0.05) / (x.min(y) + 0.05)
}

/// Every text colour with every background it is drawn on, as app.css pairs them and
/// docs/web.md lists them.
const PAIRS: &[(&str, &str)] = &[
    ("text", "page"),
    ("text", "panel"),
    ("muted", "page"),
    ("muted", "panel"),
    ("link", "page"),
    ("link", "panel"),
    ("bar-text", "bar"),
    ("primary-text", "primary"),
    ("danger-text", "danger"),
    ("badge-text", "critical"),
    ("badge-text", "high"),
    ("badge-text", "medium"),
    ("badge-text", "low"),
    ("badge-text", "informational"),
    ("error-text", "error-bg"),
    ("info-text", "info-bg"),
    ("warn-text", "warn-bg"),
    ("ok-text", "ok-bg"),
    ("focus", "page"),
];

#[test]
fn palette_pairs_meet_wcag_aa() {
    let colours = palette();
    let colour = |name: &str| {
        colours
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("--{name} is not in app.css"))
            .1
    };
    for (fg, bg) in PAIRS {
        let ratio = contrast(colour(fg), colour(bg));
        println!("--{fg} on --{bg}: {ratio:.2}:1");
        assert!(ratio >= 4.5, "--{fg} on --{bg} is only {ratio:.2}:1");
    }
    // The check itself: black on white is the maximum, 21:1.
    assert!((contrast([0, 0, 0], [255, 255, 255]) - 21.0).abs() < 0.01);
}

#[tokio::test]
async fn the_config_names_the_redirect_sign_in_and_the_policy_allows_only_its_issuer() {
    use kastell_webui::{content_security_policy, router_with, OidcSignIn};
    let sign_in =
        OidcSignIn::new("https://id.example.eu/realms/soc/", "kastell-web", "openid").unwrap();
    let app: Router = router_with(Some(sign_in.clone()));
    let response = app
        .oneshot(Request::get("/ui/config.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let policy = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        config,
        serde_json::json!({"oidc": {
            "issuer": "https://id.example.eu/realms/soc",
            "client_id": "kastell-web",
            "scope": "openid",
        }})
    );
    // The issuer's origin, not its path, and nothing else is added.
    assert_eq!(policy, content_security_policy(Some(&sign_in)));
    assert!(
        policy.contains("connect-src 'self' https://id.example.eu;"),
        "{policy}"
    );
    assert_eq!(
        policy.replace(" https://id.example.eu", ""),
        CONTENT_SECURITY_POLICY
    );

    let (_, headers, body) = fetch("/ui/config.json").await;
    assert_eq!(body, r#"{"oidc":null}"#);
    assert_eq!(
        headers[header::CONTENT_SECURITY_POLICY],
        CONTENT_SECURITY_POLICY
    );

    for bad in ["ftp://id.example.eu", "not a url", "file:///etc/issuer"] {
        assert!(
            OidcSignIn::new(bad, "kastell-web", "openid").is_err(),
            "{bad}"
        );
    }
}
