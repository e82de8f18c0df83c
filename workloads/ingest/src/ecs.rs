//! What every parser shares when it builds an ECS event: a writer that puts values at
//! dotted paths, the `related.*` collector, and the checked readers for the values ECS
//! has opinions about (timestamps, IP addresses, ports).

use std::borrow::Cow;
use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use kastell_core::Event;
use serde_json::{Map, Value};

use crate::error::ParseError;

/// Room for the handful of fields an ECS object usually gets, so building one does not
/// regrow its table field by field.
const NESTED_CAPACITY: usize = 6;

/// An ECS event under construction.
///
/// Values are collected per top-level field (`source`, `event`, …) and the event's root
/// map is built once in [`EcsBuilder::finish`]: with serde_json's order-preserving maps
/// every map operation hashes its key, so walking from the root on each write would
/// roughly double the hashing.
#[derive(Default)]
pub(crate) struct EcsBuilder {
    groups: Vec<(String, Value)>,
    related_ip: Vec<String>,
    related_hosts: Vec<String>,
    related_user: Vec<String>,
    related_hash: Vec<String>,
}

impl EcsBuilder {
    pub(crate) fn new() -> Self {
        EcsBuilder {
            groups: Vec::with_capacity(24),
            ..Self::default()
        }
    }

    /// Writes a value at a dotted path, replacing whatever was there.
    pub(crate) fn put(&mut self, path: &str, value: impl Into<Value>) {
        let value = value.into();
        let (top, rest) = match split_dot(path) {
            Some((top, rest)) => (top, Some(rest)),
            None => (path, None),
        };
        let slot = self.group(top);
        let Some(rest) = rest else {
            *slot = value;
            return;
        };
        if !slot.is_object() {
            *slot = Value::Object(Map::with_capacity(NESTED_CAPACITY));
        }
        let Value::Object(map) = slot else {
            return;
        };
        let mut map = map;
        let mut key = rest;
        while let Some((part, next)) = split_dot(key) {
            // Not `entry`: it would allocate the key even when the object exists.
            if !matches!(map.get(part), Some(Value::Object(_))) {
                map.insert(
                    part.to_owned(),
                    Value::Object(Map::with_capacity(NESTED_CAPACITY)),
                );
            }
            let Some(Value::Object(inner)) = map.get_mut(part) else {
                return;
            };
            map = inner;
            key = next;
        }
        map.insert(key.to_owned(), value);
    }

    /// The value of the top-level field `name`, created as null when absent.
    fn group(&mut self, name: &str) -> &mut Value {
        // Groups are few (about fifteen) and written in bursts, so the last one written
        // is tried first.
        let index = match self.groups.iter().rposition(|(group, _)| group == name) {
            Some(index) => index,
            None => {
                self.groups.push((name.to_owned(), Value::Null));
                self.groups.len() - 1
            }
        };
        &mut self.groups[index].1
    }

    pub(crate) fn put_str(&mut self, path: &str, value: &str) {
        self.put(path, Value::String(value.to_owned()));
    }

    /// Writes `value` unless the path already holds one: for fields several source
    /// fields can fill, where the first (most specific) wins.
    pub(crate) fn put_str_if_absent(&mut self, path: &str, value: &str) {
        if self.get(path).is_none() {
            self.put_str(path, value);
        }
    }

    pub(crate) fn get(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let top = parts.next()?;
        let mut value = &self.groups.iter().find(|(name, _)| name == top)?.1;
        for part in parts {
            value = value.as_object()?.get(part)?;
        }
        (!value.is_null()).then_some(value)
    }

    pub(crate) fn put_strings(&mut self, path: &str, values: &[&str]) {
        let values = values.iter().map(|v| Value::String((*v).to_owned()));
        self.put(path, Value::Array(values.collect()));
    }

    pub(crate) fn related_ip(&mut self, ip: &str) {
        push_unique(&mut self.related_ip, ip);
    }

    pub(crate) fn related_host(&mut self, host: &str) {
        push_unique(&mut self.related_hosts, host);
    }

    pub(crate) fn related_user(&mut self, user: &str) {
        push_unique(&mut self.related_user, user);
    }

    pub(crate) fn related_hash(&mut self, hash: &str) {
        push_unique(&mut self.related_hash, hash);
    }

    /// Adds `related.*` and hands over the event.
    pub(crate) fn finish(mut self) -> Event {
        let related = [
            ("ip", std::mem::take(&mut self.related_ip)),
            ("hosts", std::mem::take(&mut self.related_hosts)),
            ("user", std::mem::take(&mut self.related_user)),
            ("hash", std::mem::take(&mut self.related_hash)),
        ];
        let mut related_map = Map::new();
        for (key, values) in related {
            if !values.is_empty() {
                let values = values.into_iter().map(Value::String).collect();
                related_map.insert(key.to_owned(), Value::Array(values));
            }
        }
        let mut groups = self.groups;
        if !related_map.is_empty() {
            groups.push(("related".to_owned(), Value::Object(related_map)));
        }
        // Built in one pass (sorted, then the nodes filled in order) rather than by one
        // search and insert per group; a name written twice keeps its last value, as
        // `insert` would.
        let root: Map<String, Value> = groups.into_iter().collect();
        Event::from_value(Value::Object(root)).unwrap_or_default()
    }
}

/// Splits at the first dot. A byte search: dotted paths are short ASCII, where `str`'s
/// generic pattern search costs more than the scan.
fn split_dot(path: &str) -> Option<(&str, &str)> {
    let dot = path.bytes().position(|b| b == b'.')?;
    Some((&path[..dot], &path[dot + 1..]))
}

fn push_unique(values: &mut Vec<String>, value: &str) {
    if !value.is_empty() && !values.iter().any(|v| v == value) {
        values.push(value.to_owned());
    }
}

/// Typed reads of one JSON object's members, naming the member by its full source path
/// in errors. A member of the wrong type is an error; a missing or null one is `None`.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: &'a str,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(map: &'a Map<String, Value>, prefix: &'a str) -> Self {
        Fields { map, prefix }
    }

    pub(crate) fn label(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// The member unless it is missing or null.
    pub(crate) fn present_value(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn str(&self, key: &str) -> Result<Option<&'a str>, ParseError> {
        match self.present_value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(ParseError::wrong_type(&self.label(key), "a string", other)),
        }
    }

    /// A string with Wazuh and Windows placeholders for "no value" (`""`, `"-"`) read as
    /// absent.
    pub(crate) fn text(&self, key: &str) -> Result<Option<&'a str>, ParseError> {
        Ok(self.str(key)?.filter(|s| !s.is_empty() && *s != "-"))
    }

    /// A string or a number as text, placeholders (`""`, `"-"`) read as absent: for
    /// producers that write the same field either way (Wazuh's json decoder keeps the
    /// type the agent sent, so `eventID` is `"4624"` from one and `4624` from another).
    pub(crate) fn scalar(&self, key: &str) -> Result<Option<Cow<'a, str>>, ParseError> {
        match self.present_value(key) {
            Some(Value::Number(n)) => Ok(Some(Cow::Owned(n.to_string()))),
            Some(Value::String(_)) => Ok(self.text(key)?.map(Cow::Borrowed)),
            None => Ok(None),
            Some(other) => Err(ParseError::wrong_type(
                &self.label(key),
                "a string or a number",
                other,
            )),
        }
    }

    pub(crate) fn u64(&self, key: &str) -> Result<Option<u64>, ParseError> {
        match self.present_value(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) => Ok(Some(n)),
                None => Err(ParseError::invalid_value(
                    &self.label(key),
                    &n.to_string(),
                    "is not a non-negative integer",
                )),
            },
            Some(other) => Err(ParseError::wrong_type(&self.label(key), "a number", other)),
        }
    }

    /// A non-negative integer written either as a JSON number or as a decimal string, as
    /// Wazuh writes every decoded value.
    pub(crate) fn u64_or_text(&self, key: &str) -> Result<Option<u64>, ParseError> {
        match self.present_value(key) {
            Some(Value::String(_)) => match self.text(key)? {
                None => Ok(None),
                Some(s) => s.parse().map(Some).map_err(|_| {
                    ParseError::invalid_value(&self.label(key), s, "is not a non-negative integer")
                }),
            },
            _ => self.u64(key),
        }
    }

    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, ParseError> {
        match self.present_value(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(ParseError::wrong_type(&self.label(key), "a boolean", other)),
        }
    }

    /// A nested object, read with `prefix` (its own source path) naming its members in
    /// errors.
    pub(crate) fn object(
        &self,
        key: &str,
        prefix: &'a str,
    ) -> Result<Option<Fields<'a>>, ParseError> {
        match self.present_value(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Fields { map, prefix })),
            Some(other) => Err(ParseError::wrong_type(&self.label(key), "an object", other)),
        }
    }

    pub(crate) fn array(&self, key: &str) -> Result<Option<&'a [Value]>, ParseError> {
        match self.present_value(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(other) => Err(ParseError::wrong_type(&self.label(key), "an array", other)),
        }
    }

    /// An array whose items must all be strings.
    pub(crate) fn strings(&self, key: &str) -> Result<Vec<&'a str>, ParseError> {
        let Some(items) = self.array(key)? else {
            return Ok(Vec::new());
        };
        items
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| ParseError::wrong_type(&self.label(key), "strings", item))
            })
            .collect()
    }

    /// An IP address, re-printed in canonical form so that `2001:0db8::0001` and
    /// `2001:db8::1` compare equal downstream.
    pub(crate) fn ip(&self, key: &str) -> Result<Option<String>, ParseError> {
        match self.text(key)? {
            None => Ok(None),
            // The field's label is only built for the error: most records have none.
            Some(raw) => try_canonical_ip(raw)
                .map(Some)
                .ok_or_else(|| ParseError::invalid_ip(&self.label(key), raw)),
        }
    }

    /// A port written as a JSON number.
    pub(crate) fn port(&self, key: &str) -> Result<Option<u16>, ParseError> {
        self.u64(key)?
            .map(|n| self.checked_port(key, n))
            .transpose()
    }

    /// A port written as a JSON number or a decimal string (Wazuh's decoded values).
    pub(crate) fn port_or_text(&self, key: &str) -> Result<Option<u16>, ParseError> {
        self.u64_or_text(key)?
            .map(|n| self.checked_port(key, n))
            .transpose()
    }

    fn checked_port(&self, key: &str, n: u64) -> Result<u16, ParseError> {
        u16::try_from(n).map_err(|_| {
            ParseError::invalid_value(&self.label(key), &n.to_string(), "is not a port number")
        })
    }

    /// An RFC 3339-style timestamp with an offset, returned as RFC 3339 UTC.
    pub(crate) fn timestamp(&self, key: &str) -> Result<Option<String>, ParseError> {
        match self.str(key)? {
            None => Ok(None),
            Some(raw) => parse_utc(raw.as_bytes())
                .map(|t| Some(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)))
                .ok_or_else(|| ParseError::invalid_timestamp(&self.label(key), raw)),
        }
    }
}

/// The names under which a sensor writes a connection's two ends.
pub(crate) struct EndpointFields {
    pub source_ip: &'static str,
    pub destination_ip: &'static str,
    pub source_port: &'static str,
    pub destination_port: &'static str,
    pub transport: &'static str,
}

/// Maps a connection's addresses, ports and transport to ECS `source.*`,
/// `destination.*`, `network.type`, `network.transport` and `related.ip`.
pub(crate) fn map_endpoints(
    fields: Fields<'_>,
    names: &EndpointFields,
    out: &mut EcsBuilder,
) -> Result<(), ParseError> {
    let source = fields.ip(names.source_ip)?;
    let destination = fields.ip(names.destination_ip)?;
    if let Some(ip) = source.as_deref().or(destination.as_deref()) {
        out.put(
            "network.type",
            if ip.contains(':') { "ipv6" } else { "ipv4" },
        );
    }
    if let Some(ip) = source {
        out.related_ip(&ip);
        out.put("source.ip", ip);
    }
    if let Some(ip) = destination {
        out.related_ip(&ip);
        out.put("destination.ip", ip);
    }
    if let Some(port) = fields.port(names.source_port)? {
        out.put("source.port", port);
    }
    if let Some(port) = fields.port(names.destination_port)? {
        out.put("destination.port", port);
    }
    if let Some(proto) = fields.str(names.transport)? {
        out.put("network.transport", proto.to_ascii_lowercase());
    }
    Ok(())
}

pub(crate) fn canonical_ip(field: &str, raw: &str) -> Result<String, ParseError> {
    try_canonical_ip(raw).ok_or_else(|| ParseError::invalid_ip(field, raw))
}

/// [`canonical_ip`] for callers that name the field only when it fails.
pub(crate) fn try_canonical_ip(raw: &str) -> Option<String> {
    match raw.parse::<IpAddr>() {
        // std accepts IPv4 only in dotted-decimal without leading zeros, which is already
        // the canonical spelling; re-printing it would cost more than the parse.
        Ok(IpAddr::V4(_)) => Some(raw.to_owned()),
        Ok(ip @ IpAddr::V6(_)) => Some(ip.to_string()),
        Err(_) => None,
    }
}

/// Reads `2023-11-01T00:46:35.638604+0100` (Suricata, Wazuh: offset without a colon) and
/// RFC 3339 proper, and writes RFC 3339 in UTC with a `Z`. A time without an offset is
/// refused: guessing the zone would silently shift the event.
pub(crate) fn utc_timestamp(field: &str, raw: &str) -> Result<String, ParseError> {
    parse_utc(raw.as_bytes())
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .ok_or_else(|| ParseError::invalid_timestamp(field, raw))
}

/// A timestamp that may lack its zone: with an offset it is read as [`utc_timestamp`]
/// does; without one (`2024-05-01T10:00:00`, or with a space for the `T`) it is taken to
/// be in `zone`, the Sensor's `timezone`.
pub(crate) fn zoned_timestamp(
    field: &str,
    raw: &str,
    zone: crate::zone::LocalZone,
) -> Result<String, ParseError> {
    let mut bytes = raw.as_bytes().to_vec();
    if bytes.get(10) == Some(&b' ') {
        bytes[10] = b'T';
    }
    if let Some(t) = parse_utc(&bytes) {
        return Ok(t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
    }
    match parse_local(&bytes) {
        Some((local, end)) if end == bytes.len() => {
            let utc = zone.to_utc(local);
            utc.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
                .ok_or_else(|| ParseError::invalid_timestamp(field, raw))
        }
        _ => Err(ParseError::invalid_timestamp(field, raw)),
    }
}

/// Certificate validity times, which Suricata prints in UTC without an offset.
pub(crate) fn naive_utc_timestamp(
    field: impl FnOnce() -> String,
    raw: &str,
) -> Result<String, ParseError> {
    match parse_local(raw.as_bytes()) {
        Some((local, end)) if end == raw.len() => {
            Ok(local.and_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true))
        }
        _ => Err(ParseError::invalid_timestamp(&field(), raw)),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]` followed by `Z`, `±HHMM` or `±HH:MM`.
///
/// Hand-written rather than chrono's format strings for two reasons: those cost more
/// than the rest of a record's mapping, and they accept years such as `-022` whose RFC
/// 3339 rendering no RFC 3339 reader accepts back.
fn parse_utc(b: &[u8]) -> Option<DateTime<Utc>> {
    let (local, i) = parse_local(b)?;
    let offset_seconds = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [h1, h2, m1, m2] => (two_digits(*h1, *h2)?, two_digits(*m1, *m2)?),
                [h1, h2, b':', m1, m2] => (two_digits(*h1, *h2)?, two_digits(*m1, *m2)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let seconds = i64::from(h * 3600 + m * 60);
            if *sign == b'-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => return None,
    };
    let utc = local.checked_sub_signed(chrono::TimeDelta::try_seconds(offset_seconds)?)?;
    Some(utc.and_utc())
}

/// The date and time of day, and the index where the offset starts.
fn parse_local(b: &[u8]) -> Option<(NaiveDateTime, usize)> {
    let digits = |from: usize, to: usize| -> Option<u32> {
        b.get(from..to)?.iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let separators_ok = b.get(4) == Some(&b'-')
        && b.get(7) == Some(&b'-')
        && matches!(b.get(10), Some(b'T' | b't'))
        && b.get(13) == Some(&b':')
        && b.get(16) == Some(&b':');
    if !separators_ok {
        return None;
    }
    let year = i32::try_from(digits(0, 4)?).ok()?;
    let date = NaiveDate::from_ymd_opt(year, digits(5, 7)?, digits(8, 10)?)?;
    let (hour, minute, second) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);
    let mut i = 19;
    let mut nanos = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let count = i - start;
        if count == 0 || count > 9 {
            return None;
        }
        nanos = digits(start, i)? * 10u32.pow(9 - u32::try_from(count).ok()?);
    }
    // chrono represents a leap second as the 59th second plus one more second of nanos.
    let time = if second == 60 {
        NaiveTime::from_hms_nano_opt(hour, minute, 59, 1_000_000_000 + nanos)?
    } else {
        NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?
    };
    Some((NaiveDateTime::new(date, time), i))
}

fn two_digits(a: u8, b: u8) -> Option<u32> {
    (a.is_ascii_digit() && b.is_ascii_digit())
        .then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
}

/// The last component of a Windows or POSIX path; `None` for a path ending in a separator.
pub(crate) fn base_name(path: &str) -> Option<&str> {
    let name = path.rsplit(['/', '\\']).next()?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_with_and_without_colon_in_the_offset_become_utc() {
        let cases = [
            (
                "2023-11-01T00:46:35.638604+0100",
                "2023-10-31T23:46:35.638604Z",
            ),
            ("2022-05-11T12:29:19.905+0000", "2022-05-11T12:29:19.905Z"),
            (
                "2016-06-16T15:07:24.422364-0600",
                "2016-06-16T21:07:24.422364Z",
            ),
            ("2023-11-01T00:46:35+01:00", "2023-10-31T23:46:35Z"),
            ("2023-11-01T00:46:35Z", "2023-11-01T00:46:35Z"),
            ("2016-12-31T23:59:60.5+0000", "2016-12-31T23:59:60.500Z"),
            ("2024-02-29T00:30:00.1-0130", "2024-02-29T02:00:00.100Z"),
        ];
        for (raw, want) in cases {
            assert_eq!(utc_timestamp("t", raw).unwrap(), want, "{raw}");
        }
        for bad in [
            "year-month-dayThours:minuts:seconds+0000",
            "2023-11-01T00:46:35.638604",
            "2023-13-01T00:46:35+0100",
            "2023-02-30T00:46:35+0100",
            "2023-11-01T00:46:35.+0100",
            "2023-11-01T00:46:35+01",
            "2023-11-01T00:46:35+0100 ",
            "-022-10-31T15:47:27.316446+0100",
            "+2022-10-31T15:47:27+0100",
            "2022-10-31T15:47:27+2400",
            "",
        ] {
            assert!(utc_timestamp("t", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv6_is_compressed_and_garbage_is_refused() {
        assert_eq!(
            canonical_ip("ip", "fe80:0000:0000:0000:d5e6:502a:54ce:e387").unwrap(),
            "fe80::d5e6:502a:54ce:e387"
        );
        assert_eq!(
            canonical_ip("ip", "FF02:0000:0000:0000:0000:0000:0001:0003").unwrap(),
            "ff02::1:3"
        );
        assert_eq!(canonical_ip("ip", "172.16.0.153").unwrap(), "172.16.0.153");
        assert_eq!(
            canonical_ip("ip", "::ffff:10.0.0.1").unwrap(),
            "::ffff:10.0.0.1"
        );
        for bad in [
            "172.16.0.256",
            "010.0.0.1",
            "10.1",
            "localhost",
            "fe80::1%eth0",
            " 10.0.0.1",
        ] {
            assert!(canonical_ip("ip", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_builder_nests_paths_and_keeps_related_unique() {
        let mut b = EcsBuilder::new();
        b.put("source.ip", "10.0.0.1");
        b.put("source.port", 53);
        b.put_str_if_absent("source.ip", "10.0.0.2");
        b.related_ip("10.0.0.1");
        b.related_ip("10.0.0.1");
        b.related_host("");
        let event = b.finish().into_value();
        assert_eq!(
            event,
            json!({"source": {"ip": "10.0.0.1", "port": 53}, "related": {"ip": ["10.0.0.1"]}})
        );
    }

    #[test]
    fn readers_name_the_source_field_on_wrong_types() {
        let record = json!({"http": {"status": "200"}});
        let http = Fields::new(record.as_object().unwrap(), "")
            .object("http", "http")
            .unwrap()
            .unwrap();
        let err = http.u64("status").unwrap_err();
        assert_eq!(
            err.to_string(),
            "field http.status: expected a number, found a string"
        );
    }

    #[test]
    fn base_names_of_both_path_styles() {
        assert_eq!(base_name("C:\\Windows\\System32\\cmd.exe"), Some("cmd.exe"));
        assert_eq!(base_name("/testdir0/example"), Some("example"));
        assert_eq!(base_name("eicar.com"), Some("eicar.com"));
        assert_eq!(base_name("/"), None);
    }
}
