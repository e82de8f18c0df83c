//! ArcSight Common Event Format, as firewalls and proxies send it inside syslog:
//! `CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|key=value key=value…`.
//!
//! Hand-written: no maintained Rust crate parses CEF, and the format is a few escape
//! rules. The extension is cut at ` key=` boundaries only, so a value may hold a bare `=`
//! (`request=https://x/?a=b`), as real senders write despite the spec asking for `\=`.

use serde_json::{Map, Value};

use crate::ecs::{canonical_ip, ecs, EcsBuilder};
use crate::error::ParseError;
use crate::zeek::epoch_to_rfc3339;

/// The seven header fields and the extension of one CEF record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Cef {
    pub(crate) version: String,
    pub(crate) vendor: String,
    pub(crate) product: String,
    pub(crate) device_version: String,
    pub(crate) signature_id: String,
    pub(crate) name: String,
    pub(crate) severity: String,
    pub(crate) extensions: Vec<(String, String)>,
}

/// Parses `CEF:…`; `None` when the text is not CEF at all.
pub(crate) fn parse(text: &str) -> Option<Result<Cef, ParseError>> {
    let start = text.find("CEF:")?;
    let body = &text[start + 4..];
    Some(parse_body(body))
}

fn parse_body(body: &str) -> Result<Cef, ParseError> {
    let mut header = Vec::with_capacity(7);
    let mut current = String::new();
    let mut chars = body.char_indices();
    let mut extension_start = None;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped @ ('|' | '\\'))) => current.push(escaped),
                Some((_, other)) => {
                    current.push('\\');
                    current.push(other);
                }
                None => current.push('\\'),
            },
            '|' => {
                header.push(std::mem::take(&mut current));
                if header.len() == 7 {
                    extension_start = Some(i + 1);
                    break;
                }
            }
            _ => current.push(c),
        }
    }
    let Some(extension_start) = extension_start else {
        return Err(ParseError::invalid_value(
            "cef",
            body,
            "does not have the 7 `|`-separated header fields",
        ));
    };
    let mut fields = header.into_iter();
    let mut next = || fields.next().unwrap_or_default();
    Ok(Cef {
        version: next(),
        vendor: next(),
        product: next(),
        device_version: next(),
        signature_id: next(),
        name: next(),
        severity: next(),
        extensions: parse_extensions(&body[extension_start..]),
    })
}

/// `key=value` pairs; a value runs to the space before the next `key=`.
fn parse_extensions(text: &str) -> Vec<(String, String)> {
    let starts = key_starts(text);
    let mut out = Vec::with_capacity(starts.len());
    for (n, &(key_start, eq)) in starts.iter().enumerate() {
        let value_end = starts
            .get(n + 1)
            .map_or(text.len(), |&(next_key, _)| next_key.saturating_sub(1));
        let key = &text[key_start..eq];
        let value = text.get(eq + 1..value_end).unwrap_or_default();
        out.push((key.to_owned(), unescape_value(value.trim_end())));
    }
    out
}

/// `(key start, index of its '=')` for each key: a run of key characters at the start or
/// after a space, followed by an `=` that is not escaped.
fn key_starts(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let at_boundary = i == 0 || bytes[i - 1] == b' ';
        if at_boundary && is_key_byte(bytes[i]) {
            let mut j = i;
            while j < bytes.len() && is_key_byte(bytes[j]) {
                j += 1;
            }
            if bytes.get(j) == Some(&b'=') {
                starts.push((i, j));
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    starts
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'[' | b']')
}

fn unescape_value(value: &str) -> String {
    if !value.contains('\\') {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('=') => out.push('='),
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

impl Cef {
    /// Writes the ECS fields CEF fills, and the record itself under `cef`.
    pub(crate) fn map<'t>(self, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
        out.put(ecs!("event.module"), "cef");
        out.put(ecs!("event.dataset"), "cef");
        out.put(ecs!("observer.vendor"), self.vendor.clone());
        out.put(ecs!("observer.product"), self.product.clone());
        out.put(ecs!("observer.version"), self.device_version.clone());
        out.put(ecs!("event.code"), self.signature_id.clone());
        out.put(ecs!("message"), self.name.clone());
        if let Some(severity) = numeric_severity(&self.severity) {
            out.put(ecs!("event.severity"), severity);
        }
        let mut extensions = Map::with_capacity(self.extensions.len());
        for (key, value) in &self.extensions {
            map_extension(key, value, out)?;
            extensions.insert(key.clone(), Value::String(value.clone()));
        }
        let mut device = Map::new();
        device.insert("vendor".to_owned(), self.vendor.into());
        device.insert("product".to_owned(), self.product.into());
        device.insert("version".to_owned(), self.device_version.into());
        device.insert("event_class_id".to_owned(), self.signature_id.into());
        let mut cef = Map::new();
        cef.insert("version".to_owned(), self.version.into());
        cef.insert("device".to_owned(), Value::Object(device));
        cef.insert("name".to_owned(), self.name.into());
        cef.insert("severity".to_owned(), self.severity.into());
        cef.insert("extensions".to_owned(), Value::Object(extensions));
        out.put(ecs!("cef"), Value::Object(cef));
        Ok(())
    }
}

/// CEF severity is 0-10 or one of Low, Medium, High, Very-High (mapped to 3, 6, 8, 10,
/// the top of each band the CEF guide gives).
fn numeric_severity(severity: &str) -> Option<u64> {
    match severity.to_ascii_lowercase().as_str() {
        "unknown" => None,
        "low" => Some(3),
        "medium" => Some(6),
        "high" => Some(8),
        "very-high" => Some(10),
        number => number.parse().ok().filter(|n| *n <= 10),
    }
}

fn map_extension<'t>(key: &str, value: &str, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    if value.is_empty() {
        return Ok(());
    }
    let field = |k: &str| format!("cef.extensions.{k}");
    match key {
        "src" | "dst" | "c6a2" | "c6a3" => {
            let ip = canonical_ip(&field(key), value)?;
            out.related_ip(ip.clone());
            let side = if matches!(key, "src" | "c6a2") {
                ecs!("source.ip")
            } else {
                ecs!("destination.ip")
            };
            out.put_str_if_absent(side, &ip);
        }
        "spt" | "dpt" => {
            let port: u16 = value.parse().map_err(|_| {
                ParseError::invalid_value(&field(key), value, "is not a port number")
            })?;
            let side = if key == "spt" {
                "source"
            } else {
                "destination"
            };
            out.put_dyn(&format!("{side}.port"), port);
        }
        "suser" | "duser" => {
            out.related_user(value.to_owned());
            let side = if key == "suser" {
                "source"
            } else {
                "destination"
            };
            out.put_dyn(&format!("{side}.user.name"), value.to_owned());
        }
        "shost" | "dhost" => {
            out.related_host(value.to_owned());
            let side = if key == "shost" {
                "source"
            } else {
                "destination"
            };
            out.put_dyn(&format!("{side}.domain"), value.to_owned());
        }
        "smac" => out.put(ecs!("source.mac"), value.to_owned()),
        "dmac" => out.put(ecs!("destination.mac"), value.to_owned()),
        "proto" => out.put(ecs!("network.transport"), value.to_ascii_lowercase()),
        "act" => out.put(ecs!("event.action"), value.to_owned()),
        "outcome" => out.put(ecs!("event.outcome"), value.to_ascii_lowercase()),
        "request" => out.put(ecs!("url.original"), value.to_owned()),
        "requestMethod" => out.put(ecs!("http.request.method"), value.to_owned()),
        "requestClientApplication" => out.put(ecs!("user_agent.original"), value.to_owned()),
        "fname" => out.put(ecs!("file.name"), value.to_owned()),
        "filePath" => out.put(ecs!("file.path"), value.to_owned()),
        "fsize" => {
            if let Ok(size) = value.parse::<u64>() {
                out.put(ecs!("file.size"), size);
            }
        }
        "msg" => out.put(ecs!("event.reason"), value.to_owned()),
        "rt" | "end" | "start" => {
            if let Some(time) = cef_time(value) {
                let target = match key {
                    "rt" => ecs!("@timestamp"),
                    "start" => ecs!("event.start"),
                    _ => ecs!("event.end"),
                };
                out.put(target, time);
            }
        }
        _ => {}
    }
    Ok(())
}

/// CEF times are epoch milliseconds or `MMM dd yyyy HH:mm:ss[.SSS]` (in UTC when no zone
/// follows, which is how this reader takes them).
fn cef_time(value: &str) -> Option<String> {
    if let Ok(ms) = value.parse::<f64>() {
        return epoch_to_rfc3339(ms / 1000.0);
    }
    let formats = ["%b %d %Y %H:%M:%S%.f", "%b %d %Y %H:%M:%S"];
    formats.iter().find_map(|f| {
        chrono::NaiveDateTime::parse_from_str(value, f)
            .ok()
            .map(|t| crate::ecs::rfc3339_utc(&t.and_utc()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_escapes_and_equals_inside_values() {
        let text = r"CEF:0|Acme\|Corp|Gate|1.0|100|Blocked \\ request|7|src=10.0.0.1 request=https://x.test/?a=b&c=d msg=a \= b cs1=one two cs1Label=Rule";
        let cef = parse(text).unwrap().unwrap();
        assert_eq!(cef.vendor, "Acme|Corp");
        assert_eq!(cef.name, r"Blocked \ request");
        assert_eq!(
            cef.extensions,
            vec![
                ("src".into(), "10.0.0.1".into()),
                ("request".into(), "https://x.test/?a=b&c=d".into()),
                ("msg".into(), "a = b".into()),
                ("cs1".into(), "one two".into()),
                ("cs1Label".into(), "Rule".into()),
            ]
        );
    }

    #[test]
    fn short_headers_are_refused() {
        assert!(parse("CEF:0|a|b").unwrap().is_err());
        assert!(parse("not cef").is_none());
    }

    #[test]
    fn severities_by_number_or_name() {
        assert_eq!(numeric_severity("7"), Some(7));
        assert_eq!(numeric_severity("Very-High"), Some(10));
        assert_eq!(numeric_severity("11"), None);
    }
}
