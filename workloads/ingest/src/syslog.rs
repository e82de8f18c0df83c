//! Syslog messages, one per line: RFC 5424 (with structured data) and the BSD format of
//! RFC 3164, with or without the `<PRI>` that files written by a relay leave out. A
//! message that carries CEF is read as CEF too (see [`crate::cef`]).
//!
//! RFC 3164 times have neither a year nor a zone: the zone is the Sensor's `timezone`
//! (UTC unless set) and the year is the one that puts the time nearest to now, so a
//! December message read in January lands in the year before.
//!
//! Hand-written: the maintained Rust syslog crates either only send syslog or parse
//! one RFC each with chrono-tz and a clock built in; both formats share one priority and
//! header reader here and need only a few dozen lines each.

use std::net::SocketAddr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde_json::{Map, Value};

use crate::cef;
use crate::ecs::{ecs, utc_timestamp, EcsBuilder, Output};
use crate::error::ParseError;
use crate::format::ParseContext;

pub(crate) const DATASET: &str = "syslog";

const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

const SEVERITIES: [&str; 8] = [
    "emergency",
    "alert",
    "critical",
    "error",
    "warning",
    "notice",
    "informational",
    "debug",
];

/// Parses one syslog line; `sender` is the socket peer it came from, when it came over
/// the network (see [`put_sender`]).
pub(crate) fn parse<O: Output>(
    line: &str,
    ctx: &ParseContext,
    sender: Option<SocketAddr>,
) -> Result<O, ParseError> {
    parse_at(line, ctx, Utc::now(), sender)
}

/// As [`parse`], with "now" given, which RFC 3164's missing year is guessed from.
pub(crate) fn parse_at<O: Output>(
    line: &str,
    ctx: &ParseContext,
    now: DateTime<Utc>,
    sender: Option<SocketAddr>,
) -> Result<O, ParseError> {
    let mut out = EcsBuilder::new();
    out.put(ecs!("event.kind"), "event");
    out.put(ecs!("event.module"), "syslog");
    out.put(ecs!("event.dataset"), DATASET);
    out.put_str(ecs!("observer.name"), &ctx.sensor);
    let (priority, rest) = read_priority(line)?;
    if let Some(priority) = priority {
        out.put(ecs!("log.syslog.priority"), priority);
        let facility = priority / 8;
        let severity = priority % 8;
        out.put(ecs!("log.syslog.facility.code"), facility);
        out.put(ecs!("log.syslog.severity.code"), severity);
        if let Some(name) = FACILITIES.get(usize::from(facility)) {
            out.put(ecs!("log.syslog.facility.name"), *name);
        }
        if let Some(name) = SEVERITIES.get(usize::from(severity)) {
            out.put(ecs!("log.syslog.severity.name"), *name);
        }
    }
    let message = match rest.strip_prefix("1 ") {
        Some(rest5424) if priority.is_some() => rfc5424(rest5424, &mut out)?,
        _ => rfc3164(rest, ctx, now, &mut out)?,
    };
    let message = message.trim_start_matches('\u{feff}');
    if !message.is_empty() {
        out.put_str(ecs!("message"), message);
    }
    if let Some(parsed) = cef::parse(message) {
        parsed?.map(&mut out)?;
    }
    if ctx.options.keep_original {
        out.put_str(ecs!("event.original"), line);
    }
    if let Some(sender) = sender {
        put_sender(&mut out, sender);
    }
    Ok(out.finish())
}

/// Keeps the address a message came from, which the message itself does not carry (its
/// HOSTNAME is whatever the sender calls itself): `log.source.address` always, as
/// Filebeat's syslog input writes it, and `source.*` when the message named no source of
/// its own (a CEF `src=` does), so that a message from an unknown host is still traceable.
fn put_sender(out: &mut EcsBuilder<'_>, sender: SocketAddr) {
    let ip = sender.ip().to_canonical();
    out.put(
        ecs!("log.source.address"),
        SocketAddr::new(ip, sender.port()).to_string(),
    );
    if !out.has("source.ip") && !out.has("source.address") {
        let text = ip.to_string();
        out.related_ip(text.clone());
        out.put(ecs!("source.address"), text.clone());
        out.put(ecs!("source.ip"), text);
        out.put(ecs!("source.port"), u64::from(sender.port()));
    }
}

/// `<PRI>` as a number 0-191, and what follows it.
fn read_priority(line: &str) -> Result<(Option<u8>, &str), ParseError> {
    let Some(rest) = line.strip_prefix('<') else {
        return Ok((None, line));
    };
    let (digits, rest) = rest.split_once('>').ok_or_else(|| {
        ParseError::invalid_value("log.syslog.priority", line, "has no closing `>`")
    })?;
    let priority = digits
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= 191 && !digits.is_empty() && digits.len() <= 3)
        .ok_or_else(|| {
            ParseError::invalid_value("log.syslog.priority", digits, "is not a priority 0-191")
        })?;
    Ok((Some(priority), rest))
}

/// `TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [MSG]`, `-` for nil.
fn rfc5424<'t>(rest: &'t str, out: &mut EcsBuilder<'t>) -> Result<&'t str, ParseError> {
    out.put(ecs!("log.syslog.version"), "1");
    let mut parts = rest.splitn(6, ' ');
    let mut next =
        |what: &'static str| parts.next().ok_or(ParseError::MissingField { field: what });
    let timestamp = next("the RFC 5424 timestamp")?;
    let hostname = next("the RFC 5424 hostname")?;
    let app = next("the RFC 5424 app-name")?;
    let procid = next("the RFC 5424 procid")?;
    let msgid = next("the RFC 5424 msgid")?;
    let tail = parts.next().unwrap_or_default();
    if timestamp != "-" {
        out.put(
            ecs!("@timestamp"),
            utc_timestamp("log.syslog.timestamp", timestamp)?,
        );
    }
    if hostname != "-" {
        out.related_host(hostname);
        out.put_str(ecs!("host.hostname"), hostname);
        out.put_str(ecs!("log.syslog.hostname"), hostname);
    }
    if app != "-" {
        out.put_str(ecs!("process.name"), app);
        out.put_str(ecs!("log.syslog.appname"), app);
    }
    if procid != "-" {
        put_procid(procid, out);
    }
    if msgid != "-" {
        out.put_str(ecs!("log.syslog.msgid"), msgid);
    }
    let (data, message) = structured_data(tail)?;
    if !data.is_empty() {
        out.put(ecs!("log.syslog.structured_data"), Value::Object(data));
    }
    Ok(message)
}

fn put_procid<'t>(procid: &'t str, out: &mut EcsBuilder<'t>) {
    out.put_str(ecs!("log.syslog.procid"), procid);
    if let Ok(pid) = procid.parse::<u64>() {
        out.put(ecs!("process.pid"), pid);
    }
}

/// `-` or `[id name="value" …]…`, then the message after one space. Values unescape
/// `\"`, `\\` and `\]`; an element id seen twice keeps its first parameters and adds
/// the new ones.
fn structured_data(text: &str) -> Result<(Map<String, Value>, &str), ParseError> {
    let mut data = Map::new();
    if let Some(message) = text.strip_prefix('-') {
        return Ok((data, message.strip_prefix(' ').unwrap_or(message)));
    }
    let bad = |problem| ParseError::invalid_value("log.syslog.structured_data", text, problem);
    let mut rest = text;
    while let Some(element) = rest.strip_prefix('[') {
        let id_end = element
            .find([' ', ']'])
            .ok_or_else(|| bad("has an unclosed element"))?;
        let id = &element[..id_end];
        let mut params = Map::new();
        let mut cursor = &element[id_end..];
        loop {
            cursor = cursor.trim_start_matches(' ');
            if let Some(after) = cursor.strip_prefix(']') {
                rest = after;
                break;
            }
            let (name, after) = cursor
                .split_once("=\"")
                .ok_or_else(|| bad("has a parameter without =\"value\""))?;
            let (value, after) = quoted_value(after).ok_or_else(|| bad("has an unclosed value"))?;
            params.insert(name.to_owned(), Value::String(value));
            cursor = after;
        }
        match data.get_mut(id) {
            Some(Value::Object(existing)) => existing.extend(params),
            _ => {
                data.insert(id.to_owned(), Value::Object(params));
            }
        }
    }
    if data.is_empty() {
        return Err(bad("is neither `-` nor `[…]`"));
    }
    Ok((data, rest.strip_prefix(' ').unwrap_or(rest)))
}

/// A parameter value up to its closing quote, unescaped, and what follows the quote.
fn quoted_value(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, escaped @ ('"' | '\\' | ']'))) => value.push(escaped),
                Some((_, other)) => {
                    value.push('\\');
                    value.push(other);
                }
                None => return None,
            },
            _ => value.push(c),
        }
    }
    None
}

/// `Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG`; also accepts an RFC 3339 time in place of
/// the BSD one (rsyslog's file format) and a missing hostname.
fn rfc3164<'t>(
    rest: &'t str,
    ctx: &'t ParseContext,
    now: DateTime<Utc>,
    out: &mut EcsBuilder<'t>,
) -> Result<&'t str, ParseError> {
    let (time, rest) = match rest.split_once(' ') {
        Some((first, after)) if first.len() >= 19 && first.as_bytes().get(4) == Some(&b'-') => {
            (utc_timestamp("log.syslog.timestamp", first)?, after)
        }
        _ => {
            let stamp = rest.get(..15).ok_or(ParseError::MissingField {
                field: "the RFC 3164 timestamp",
            })?;
            let time = bsd_time(stamp, ctx, now)
                .ok_or_else(|| ParseError::invalid_timestamp("log.syslog.timestamp", stamp))?;
            (time, rest.get(16..).unwrap_or_default())
        }
    };
    out.put(ecs!("@timestamp"), time);
    let (host, after_host) = rest.split_once(' ').unwrap_or((rest, ""));
    // A tag ends in `:` or `[pid]:`; a first word that does is the tag of a message sent
    // without a hostname.
    let tag_part = if is_tag(host) {
        rest
    } else {
        out.related_host(host);
        out.put_str(ecs!("host.hostname"), host);
        out.put_str(ecs!("log.syslog.hostname"), host);
        after_host
    };
    let (tag, message) = match tag_part.split_once(' ') {
        Some((tag, message)) if is_tag(tag) => (Some(tag), message),
        _ if is_tag(tag_part) => (Some(tag_part), ""),
        _ => (None, tag_part),
    };
    if let Some(tag) = tag {
        let tag = tag.trim_end_matches(':');
        let (name, pid) = match tag.split_once('[') {
            Some((name, pid)) => (name, pid.strip_suffix(']')),
            None => (tag, None),
        };
        out.put_str(ecs!("process.name"), name);
        out.put_str(ecs!("log.syslog.appname"), name);
        if let Some(pid) = pid {
            put_procid(pid, out);
        }
    }
    Ok(message)
}

fn is_tag(word: &str) -> bool {
    word.len() > 1 && word.ends_with(':') && !word.contains('=')
}

/// `Oct 11 22:14:15` (day space-padded) in the Sensor's zone, in the year nearest `now`.
fn bsd_time(stamp: &str, ctx: &ParseContext, now: DateTime<Utc>) -> Option<String> {
    let month = match stamp.get(..3)? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let day: u32 = stamp.get(4..6)?.trim_start().parse().ok()?;
    if stamp.as_bytes().get(3) != Some(&b' ') || stamp.as_bytes().get(6) != Some(&b' ') {
        return None;
    }
    let time = NaiveTime::parse_from_str(stamp.get(7..15)?, "%H:%M:%S").ok()?;
    let zone = ctx.options.timezone;
    let this_year = zone.year_at(now);
    // The year before, this one and the next; the nearest to now wins.
    let candidates = [this_year - 1, this_year, this_year + 1]
        .into_iter()
        .filter_map(|year| NaiveDate::from_ymd_opt(year, month, day))
        .filter_map(|date| zone.to_utc(NaiveDateTime::new(date, time)));
    let best = candidates.min_by_key(|t| (*t - now).num_seconds().abs())?;
    Some(crate::ecs::rfc3339_utc(&best))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
    }

    #[test]
    fn bsd_years_are_the_nearest_to_now() {
        let ctx = ParseContext::new("s");
        let jan = at("2026-01-02T00:00:00Z");
        assert_eq!(
            bsd_time("Dec 31 23:00:00", &ctx, jan).unwrap(),
            "2025-12-31T23:00:00Z"
        );
        assert_eq!(
            bsd_time("Jan  1 10:00:00", &ctx, jan).unwrap(),
            "2026-01-01T10:00:00Z"
        );
        assert!(bsd_time("Feb 30 10:00:00", &ctx, jan).is_none());
        assert!(bsd_time("Foo  1 10:00:00", &ctx, jan).is_none());
    }

    #[test]
    fn structured_data_unescapes_and_groups_by_id() {
        let (data, message) =
            structured_data(r#"[a@1 x="q\"uote" y="br\]acket"][b z="1"] hello"#).unwrap();
        assert_eq!(data["a@1"]["x"], "q\"uote");
        assert_eq!(data["a@1"]["y"], "br]acket");
        assert_eq!(data["b"]["z"], "1");
        assert_eq!(message, "hello");
        assert!(structured_data(r#"[a x="open"#).is_err());
    }

    #[test]
    fn priorities_out_of_range_are_refused() {
        assert!(read_priority("<192>x").is_err());
        assert!(read_priority("<1x>x").is_err());
        assert_eq!(read_priority("<34>x").unwrap(), (Some(34), "x"));
        assert_eq!(read_priority("no pri").unwrap(), (None, "no pri"));
    }

    #[test]
    fn the_sender_is_kept_unless_the_message_names_its_own_source() {
        use crate::ecs::EventJson;
        use kastell_core::Event;

        let ctx = ParseContext::new("s");
        let now = at("2026-12-05T12:00:00Z");
        let bsd = "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8";
        let cef = "<134>Oct 11 22:14:15 fw CEF:0|Vendor|FW|1.0|100|Blocked|5|src=10.0.0.1 dst=10.0.0.2 spt=4444";
        let cases = [
            (bsd, "192.0.2.7:5140", Some("192.0.2.7"), "192.0.2.7:5140"),
            // An IPv4 sender seen on a dual-stack socket is written as IPv4.
            (
                bsd,
                "[::ffff:192.0.2.7]:514",
                Some("192.0.2.7"),
                "192.0.2.7:514",
            ),
            (
                bsd,
                "[2001:db8::7]:514",
                Some("2001:db8::7"),
                "[2001:db8::7]:514",
            ),
            (cef, "192.0.2.7:5140", None, "192.0.2.7:5140"),
        ];
        for (line, peer, source, address) in cases {
            let peer: SocketAddr = peer.parse().unwrap();
            let event: Event = parse_at(line, &ctx, now, Some(peer)).unwrap();
            let json: EventJson = parse_at(line, &ctx, now, Some(peer)).unwrap();
            assert_eq!(
                json.as_bytes(),
                serde_json::to_vec(&event).unwrap(),
                "{line} from {peer}"
            );
            assert_eq!(event.get_str("log.source.address"), Some(address));
            let related: Vec<&str> = event
                .get("related.ip")
                .and_then(Value::as_array)
                .map(|ips| ips.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match source {
                Some(ip) => {
                    assert_eq!(event.get_str("source.ip"), Some(ip));
                    assert_eq!(event.get_str("source.address"), Some(ip));
                    assert_eq!(
                        event.get("source.port").and_then(Value::as_u64),
                        Some(u64::from(peer.port()))
                    );
                    assert_eq!(related, [ip]);
                }
                None => {
                    // CEF's own source stays; the sender is only in log.source.address.
                    assert_eq!(event.get_str("source.ip"), Some("10.0.0.1"));
                    assert_eq!(event.get("source.port").and_then(Value::as_u64), Some(4444));
                    assert!(!related.contains(&"192.0.2.7"), "{related:?}");
                }
            }
            let unsent: Event = parse_at(line, &ctx, now, None).unwrap();
            assert!(unsent.get("log.source.address").is_none());
        }
    }
}
