//! The event model: one security event as ECS-shaped JSON, with typed accessors for the
//! fields every stage reads.
//!
//! Events keep the nested JSON shape of the Elastic Common Schema (`source.ip` is stored
//! as `{"source": {"ip": ...}}`) so they serialise to what ECS tooling expects, while the
//! stages read them through the accessors here instead of walking JSON by hand.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One normalised security event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Event {
    fields: Map<String, Value>,
}

/// What kind of observable a value is, in the terms MISP and ECS share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObservableKind {
    Ip,
    Domain,
    Url,
    Md5,
    Sha1,
    Sha256,
    Sha512,
    Email,
    Filename,
}

impl ObservableKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Domain => "domain",
            Self::Url => "url",
            Self::Md5 => "md5",
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
            Self::Email => "email",
            Self::Filename => "filename",
        }
    }
}

/// A value worth looking up in threat intelligence, with the event field it came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Observable {
    pub kind: ObservableKind,
    pub value: String,
    pub field: String,
}

/// A file hash found on an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHash<'a> {
    pub kind: ObservableKind,
    pub value: &'a str,
    pub field: &'static str,
}

const DOMAIN_FIELDS: &[&str] = &[
    "dns.question.name",
    "url.domain",
    "destination.domain",
    "source.domain",
    "tls.client.server_name",
];
const URL_FIELDS: &[&str] = &["url.full", "url.original"];
const HASH_FIELDS: &[(&str, ObservableKind)] = &[
    ("file.hash.md5", ObservableKind::Md5),
    ("file.hash.sha1", ObservableKind::Sha1),
    ("file.hash.sha256", ObservableKind::Sha256),
    ("file.hash.sha512", ObservableKind::Sha512),
    ("process.hash.md5", ObservableKind::Md5),
    ("process.hash.sha1", ObservableKind::Sha1),
    ("process.hash.sha256", ObservableKind::Sha256),
];
const IP_FIELDS: &[&str] = &["source.ip", "destination.ip", "client.ip", "server.ip"];
/// ECS declares the `email.*.address` fields arrays (a message has several recipients);
/// every string in them counts, as does a single string.
const EMAIL_FIELDS: &[&str] = &[
    "email.from.address",
    "email.to.address",
    "email.cc.address",
    "user.email",
];

impl Event {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wraps a JSON object; any other JSON value is not an event.
    pub fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Object(fields) => Some(Self { fields }),
            _ => None,
        }
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.fields
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.fields)
    }

    /// Reads a field by its dotted ECS path.
    ///
    /// Nested objects are walked first; where a producer kept a dotted key as one flat
    /// key (Zeek's `id.orig_h`, Sigma-style flattened logs), that spelling is found too.
    pub fn get(&self, path: &str) -> Option<&Value> {
        lookup(&self.fields, path)
    }

    pub fn get_str(&self, path: &str) -> Option<&str> {
        self.get(path).and_then(Value::as_str)
    }

    /// Writes a field at a dotted path, creating intermediate objects. A non-object value
    /// standing where an object is needed is replaced, because the path wins.
    pub fn set(&mut self, path: &str, value: Value) {
        let mut current = &mut self.fields;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                current.insert(part.to_owned(), value);
                return;
            }
            let slot = current
                .entry(part.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            current = slot.as_object_mut().expect("slot was just made an object");
        }
    }

    /// Sets a field only when the value is present, which keeps parsers free of `if let`s.
    pub fn set_opt(&mut self, path: &str, value: Option<Value>) {
        if let Some(value) = value {
            self.set(path, value);
        }
    }

    /// `@timestamp`, the time the event happened.
    pub fn timestamp(&self) -> Option<DateTime<Utc>> {
        let raw = self.get_str("@timestamp")?;
        DateTime::parse_from_rfc3339(raw)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    pub fn source_ip(&self) -> Option<IpAddr> {
        self.ip_at("source.ip")
    }

    pub fn source_port(&self) -> Option<u16> {
        self.port_at("source.port")
    }

    pub fn destination_ip(&self) -> Option<IpAddr> {
        self.ip_at("destination.ip")
    }

    pub fn destination_port(&self) -> Option<u16> {
        self.port_at("destination.port")
    }

    /// Every domain name the event mentions, in field order, without duplicates.
    pub fn domains(&self) -> Vec<&str> {
        self.strings_at(DOMAIN_FIELDS)
    }

    /// Every URL the event mentions.
    pub fn urls(&self) -> Vec<&str> {
        self.strings_at(URL_FIELDS)
    }

    /// File and process hashes, each with the kind its field declares.
    pub fn file_hashes(&self) -> Vec<FileHash<'_>> {
        HASH_FIELDS
            .iter()
            .filter_map(|(field, kind)| {
                self.get_str(field).map(|value| FileHash {
                    kind: *kind,
                    value,
                    field,
                })
            })
            .collect()
    }

    pub fn user_name(&self) -> Option<&str> {
        self.get_str("user.name")
    }

    /// The host the event is about: the agent's host for endpoint events.
    pub fn host_name(&self) -> Option<&str> {
        self.get_str("host.name")
            .or_else(|| self.get_str("host.hostname"))
    }

    pub fn process_name(&self) -> Option<&str> {
        self.get_str("process.name")
    }

    pub fn process_executable(&self) -> Option<&str> {
        self.get_str("process.executable")
    }

    pub fn process_command_line(&self) -> Option<&str> {
        self.get_str("process.command_line")
    }

    pub fn process_pid(&self) -> Option<u64> {
        self.get("process.pid").and_then(as_u64)
    }

    /// The name of the Sensor resource that produced the event.
    pub fn sensor(&self) -> Option<&str> {
        self.get_str("observer.name")
    }

    /// `event.dataset`, e.g. `suricata.eve` or `wazuh.alerts`.
    pub fn dataset(&self) -> Option<&str> {
        self.get_str("event.dataset")
    }

    /// Every observable worth an intel lookup: addresses, domains, URLs, hashes, e-mail.
    pub fn observables(&self) -> Vec<Observable> {
        let mut out: Vec<Observable> = Vec::new();
        let mut push = |kind, value: &str, field: &str| {
            let candidate = Observable {
                kind,
                value: value.to_owned(),
                field: field.to_owned(),
            };
            if !out
                .iter()
                .any(|o| o.kind == kind && o.value == candidate.value)
            {
                out.push(candidate);
            }
        };
        for field in IP_FIELDS {
            if let Some(ip) = self.ip_at(field) {
                push(ObservableKind::Ip, &ip.to_string(), field);
            }
        }
        for field in DOMAIN_FIELDS {
            if let Some(value) = self.get_str(field) {
                push(ObservableKind::Domain, value, field);
            }
        }
        for field in URL_FIELDS {
            if let Some(value) = self.get_str(field) {
                push(ObservableKind::Url, value, field);
            }
        }
        for hash in self.file_hashes() {
            push(hash.kind, hash.value, hash.field);
        }
        for field in EMAIL_FIELDS {
            for value in self.strings_in(field) {
                push(ObservableKind::Email, value, field);
            }
        }
        out
    }

    /// The string at `path`, or each string of the array there.
    fn strings_in(&self, path: &str) -> Vec<&str> {
        match self.get(path) {
            Some(Value::String(value)) => vec![value.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    fn ip_at(&self, path: &str) -> Option<IpAddr> {
        self.get_str(path).and_then(|raw| raw.parse().ok())
    }

    fn port_at(&self, path: &str) -> Option<u16> {
        self.get(path)
            .and_then(as_u64)
            .and_then(|p| u16::try_from(p).ok())
    }

    fn strings_at(&self, fields: &[&str]) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for field in fields {
            if let Some(value) = self.get_str(field) {
                if !out.contains(&value) {
                    out.push(value);
                }
            }
        }
        out
    }
}

/// Numbers arrive as JSON numbers or as strings (Wazuh writes every `data.*` value as a
/// string), so both count.
fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn lookup<'a>(map: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = map.get(path) {
        return Some(value);
    }
    // Try each split point so both `a.b.c` nested and `a` -> `b.c` flat spellings resolve.
    let mut search_from = 0;
    while let Some(offset) = path[search_from..].find('.') {
        let dot = search_from + offset;
        if let Some(Value::Object(inner)) = map.get(&path[..dot]) {
            if let Some(found) = lookup(inner, &path[dot + 1..]) {
                return Some(found);
            }
        }
        search_from = dot + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(value: Value) -> Event {
        Event::from_value(value).unwrap()
    }

    #[test]
    fn reads_nested_and_flat_dotted_paths() {
        let e = event(json!({"source": {"ip": "10.0.0.1"}, "zeek": {"id.orig_h": "::1"}}));
        assert_eq!(e.get_str("source.ip"), Some("10.0.0.1"));
        assert_eq!(e.get_str("zeek.id.orig_h"), Some("::1"));
        assert_eq!(e.get_str("zeek.id"), None);
    }

    #[test]
    fn set_builds_nested_objects() {
        let mut e = Event::new();
        e.set("destination.port", json!(443));
        e.set("destination.ip", json!("2001:db8::1"));
        assert_eq!(e.destination_port(), Some(443));
        assert_eq!(e.destination_ip(), Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn ports_may_be_strings() {
        let e = event(json!({"source": {"port": "5353"}}));
        assert_eq!(e.source_port(), Some(5353));
        let e = event(json!({"source": {"port": 70000}}));
        assert_eq!(e.source_port(), None);
    }

    #[test]
    fn timestamp_parses_rfc3339_with_offset() {
        let e = event(json!({"@timestamp": "2023-11-01T00:46:35.638604+01:00"}));
        assert_eq!(
            e.timestamp().unwrap().to_rfc3339(),
            "2023-10-31T23:46:35.638604+00:00"
        );
    }

    #[test]
    fn every_address_of_an_email_array_is_an_observable() {
        let e = event(json!({
            "email": {
                "from": {"address": ["alice@example.org"]},
                "to": {"address": ["bob@example.org", "carol@example.net", "bob@example.org"]},
                "cc": {"address": ["dave@example.com", 7]},
            },
            "user": {"email": "alice@example.org"},
        }));
        let emails: Vec<_> = e
            .observables()
            .into_iter()
            .map(|o| (o.kind, o.value, o.field))
            .collect();
        let expected = [
            ("alice@example.org", "email.from.address"),
            ("bob@example.org", "email.to.address"),
            ("carol@example.net", "email.to.address"),
            ("dave@example.com", "email.cc.address"),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(v, f)| (ObservableKind::Email, (*v).to_owned(), (*f).to_owned()))
            .collect();
        assert_eq!(emails, expected);
    }

    #[test]
    fn observables_are_deduplicated_and_typed() {
        let e = event(json!({
            "source": {"ip": "192.0.2.1"},
            "destination": {"ip": "192.0.2.1", "domain": "example.org"},
            "dns": {"question": {"name": "example.org"}},
            "file": {"hash": {"sha256": "ab"}},
        }));
        let obs = e.observables();
        let kinds: Vec<_> = obs.iter().map(|o| (o.kind, o.value.as_str())).collect();
        assert_eq!(
            kinds,
            vec![
                (ObservableKind::Ip, "192.0.2.1"),
                (ObservableKind::Domain, "example.org"),
                (ObservableKind::Sha256, "ab"),
            ]
        );
    }
}
