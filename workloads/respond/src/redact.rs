//! Keeping secrets out of results, the case timeline and logs: header values and JSON
//! fields whose names say they hold a credential are replaced, and so are the values of
//! such query parameters in URLs. Steps take their credentials from secrets by name
//! (see `SecretSource`), so this is the second line: it catches a token a playbook
//! author wrote into a templated header or body.

use reqwest::Url;
use serde_json::{Map, Value};

/// What a redacted value reads as.
pub const REDACTED: &str = "[redacted]";

/// Name parts that mark a value as a credential, compared lower-cased.
const SENSITIVE: [&str; 9] = [
    "authorization",
    "token",
    "secret",
    "password",
    "passwd",
    "api-key",
    "api_key",
    "apikey",
    "cookie",
];

/// Whether a header, field or query parameter of this name holds a credential. Fields
/// that *name* a secret (`token_secret`, `secret_headers`) hold no credential and are
/// shown, so a reader can tell which secret a step uses.
pub fn is_sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if name.ends_with("_secret") || name == "secret_headers" {
        return false;
    }
    SENSITIVE.iter().any(|part| name.contains(part)) || name == "st2-api-key" || name == "key"
}

/// The document with every sensitive field's value replaced, at any depth.
pub fn json(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if k == "secret_headers" {
                        // Header name to secret name: nothing secret in it.
                        v.clone()
                    } else if is_sensitive(k) && !v.is_null() {
                        Value::String(REDACTED.into())
                    } else {
                        json(v)
                    };
                    (k.clone(), v)
                })
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(json).collect()),
        other => other.clone(),
    }
}

/// The URL without user info and with sensitive query values replaced.
pub fn url(url: &Url) -> String {
    let mut shown = url.clone();
    // Setting these cannot fail on the http(s) URLs the steps accept.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    if shown.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_sensitive(&k) {
                    REDACTED.to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credentials_are_replaced_at_any_depth() {
        let doc = json!({
            "headers": {"Authorization": "Bearer abc", "X-Case": "7", "St2-Api-Key": "k"},
            "body": [{"api_key": "k2", "ip": "203.0.113.9"}],
            "password": null,
            "config": {"token_secret": "AWX_TOKEN", "secret_headers": {"St2-Api-Key": "ST2"}},
        });
        let shown = json(&doc);
        assert_eq!(shown["headers"]["Authorization"], REDACTED);
        assert_eq!(shown["headers"]["St2-Api-Key"], REDACTED);
        assert_eq!(shown["headers"]["X-Case"], "7");
        assert_eq!(shown["body"][0]["api_key"], REDACTED);
        assert_eq!(shown["body"][0]["ip"], "203.0.113.9");
        assert!(!shown.to_string().contains("abc"));
        assert_eq!(shown["config"]["token_secret"], "AWX_TOKEN");
        assert_eq!(shown["config"]["secret_headers"]["St2-Api-Key"], "ST2");
    }

    #[test]
    fn urls_lose_user_info_and_secret_query_values() {
        let u = Url::parse("https://bob:pw@h.example.eu/x?access_token=abc&room=1").unwrap();
        let shown = url(&u);
        assert!(!shown.contains("abc") && !shown.contains("pw"), "{shown}");
        assert!(shown.contains("room=1"), "{shown}");
    }
}
