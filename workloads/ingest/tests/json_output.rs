//! The bytes the ingest stage publishes (`decode_reader_json`, `parse_line_json`) are
//! exactly `serde_json::to_vec` of the event the same record parses into (for Suricata
//! and Zeek, whose records are published in the order written, the same event), for every
//! record of the fixtures and of the shared corpora, in every format and with and without
//! `event.original`: the fast path writes the event without building it, so this is what
//! keeps the two from drifting apart.

mod common;

use std::path::{Path, PathBuf};

use common::{corpora, fixture, SENSOR};
use kastell_ingest::{
    decode_reader, decode_reader_json, parse_line, parse_line_json, Decoder, Format, ParseContext,
    ParseOptions,
};

fn contexts() -> Vec<ParseContext> {
    [false, true]
        .into_iter()
        .map(|keep_original| {
            ParseContext::new(SENSOR).with_options(ParseOptions {
                keep_original,
                ..ParseOptions::default()
            })
        })
        .collect()
}

/// Decodes `bytes` both ways and compares record by record; the number of events.
fn compare(format: Format, bytes: &[u8], origin: &str, ctx: &ParseContext) -> usize {
    let mut decoder = Decoder::new(format, ctx.clone()).with_origin(origin);
    let mut events = Vec::new();
    decode_reader(bytes, &mut decoder, |d| events.push(d)).unwrap();
    let mut decoder = Decoder::new(format, ctx.clone()).with_origin(origin);
    let mut json = Vec::new();
    decode_reader_json(bytes, &mut decoder, |d| json.push(d)).unwrap();

    assert_eq!(events.len(), json.len(), "{origin}: records");
    let mut published = 0;
    for (decoded, written) in events.iter().zip(&json) {
        let line = written.line;
        assert_eq!(decoded.line, line, "{origin}");
        match (&decoded.result, &written.result) {
            (Ok(event), Ok(bytes)) if matches!(format, Format::SuricataEve | Format::Zeek) => {
                // The record is published in the order the sensor wrote its members
                // (Suricata's as written, Zeek's JSON with its dotted names nested), so
                // the bytes are compared as the event they decode to.
                let published_event: serde_json::Value =
                    serde_json::from_slice(bytes.as_bytes()).unwrap();
                let event = serde_json::to_value(event).unwrap();
                assert!(
                    same_json(&published_event, &event),
                    "{origin}: line {line}:\n{published_event}\n{event}"
                );
                published += 1;
            }
            (Ok(event), Ok(bytes)) => {
                let expected = serde_json::to_vec(event).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(bytes.as_bytes()),
                    String::from_utf8_lossy(&expected),
                    "{origin}: line {line}"
                );
                published += 1;
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{origin}"),
            (a, b) => panic!("{origin}: line {line}: {a:?} against {b:?}"),
        }
    }
    published
}

/// JSON equality, floats within a few units in the last place: serde_json reads a float
/// back only to within one (it is not built with `float_roundtrip`), so a float read
/// from the published text may differ in its last bit from the one parsed from the
/// record.
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files(&path, out);
        } else if path.file_name().is_some_and(|n| n != "SOURCE.txt") {
            out.push(path);
        }
    }
}

fn format_of(path: &Path) -> Option<Format> {
    let text = path.to_string_lossy();
    if text.contains("/schema") {
        return None;
    }
    [
        ("/suricata/", Format::SuricataEve),
        ("/zeek/", Format::Zeek),
        ("/wazuh/", Format::WazuhAlerts),
        ("/greenbone/", Format::Greenbone),
        ("/filebeat/", Format::JsonLines),
    ]
    .into_iter()
    .find(|(dir, _)| text.contains(dir))
    .map(|(_, format)| format)
}

fn compare_dir(dir: &Path) -> usize {
    let mut paths = Vec::new();
    files(dir, &mut paths);
    let mut published = 0;
    for path in paths {
        let Some(format) = format_of(&path) else {
            continue;
        };
        let bytes = std::fs::read(&path).unwrap();
        let origin = path.display().to_string();
        for ctx in contexts() {
            published += compare(format, &bytes, &origin, &ctx);
        }
    }
    published
}

#[test]
fn fixtures_publish_the_bytes_of_their_events() {
    let published = compare_dir(&fixture(""));
    assert!(published > 100, "{published} events compared");
}

#[test]
fn corpora_publish_the_bytes_of_their_events() {
    let Some(corpora) = corpora() else {
        println!("SKIPPED: ../shared/corpora is absent");
        return;
    };
    let mut published = 0;
    for dir in ["suricata", "zeek", "wazuh/alerts"] {
        published += compare_dir(&corpora.join(dir));
    }
    assert!(published > 1000, "{published} events compared");
}

/// The formats no fixture directory covers, and every format on one line each.
#[test]
fn every_format_publishes_the_bytes_of_its_event() {
    let ossec = "** Alert 1565277360.1234: mail  - syslog,sshd,authentication_failed,\n\
        2019 Aug 08 15:16:00 (web-01) 10.0.0.5->/var/log/secure\n\
        Rule: 5716 (level 5) -> 'SSHD authentication failed.'\n\
        Src IP: 10.0.0.9\nUser: root\n\
        Aug  8 15:15:59 web-01 sshd[1234]: Failed password for root from 10.0.0.9 port 4242 ssh2\n\n";
    let syslog = "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su 77 ID47 \
        [exampleSDID@32473 iut=\"3\" eventSource=\"Application\"] 'su root' failed\n\
        <13>Oct 11 22:14:15 fw CEF:0|Vendor|Product|1.0|100|Blocked|5|src=10.0.0.1 \
        dst=2001:db8::1 spt=1234 dpt=443 request=http://x/?a\\=b act=blocked\n";
    let json_lines = "{\"timestamp\":1700000000123,\"message\":\"hello\",\"n\":{\"x\":1.5}}\n";
    let zeek_escaped = b"{\"_path\":\"http\",\"ts\":1.5,\"uri\":\"/\xff\\\\x41\"}\n";
    for ctx in contexts() {
        assert_eq!(
            compare(Format::Ossec, ossec.as_bytes(), "alerts.log", &ctx),
            1
        );
        assert_eq!(
            compare(Format::Syslog, syslog.as_bytes(), "syslog", &ctx),
            2
        );
        assert_eq!(
            compare(Format::JsonLines, json_lines.as_bytes(), "j", &ctx),
            1
        );
        assert_eq!(compare(Format::Zeek, zeek_escaped, "http.log", &ctx), 1);
        // Names with escapes, nested by their dots or not (they were once written
        // without their escapes, which made the event unreadable).
        let names = br#"{"_path":"conn","uid":"C1","a\"b.c\u0001":1,"x\ty":2,"ts":1.5,"k.\"q":1,"k.r":2,"k":null}"#;
        assert_eq!(compare(Format::Zeek, names, "conn.log", &ctx), 1);
    }
    let line = br#"{"timestamp":"2023-11-01T00:46:35.638604+0100","event_type":"dns","src_ip":"fe80:0000:0000:0000:d5e6:502a:54ce:e387","dns":{"type":"answer","rrname":"a\u00e9","answers":[{"rrtype":"AAAA","rdata":"2001:0db8::0001"}]}}"#;
    let ctx = ParseContext::new(SENSOR);
    let event = parse_line(Format::SuricataEve, line, &ctx).unwrap();
    let bytes = parse_line_json(Format::SuricataEve, line, &ctx).unwrap();
    let published: serde_json::Value = serde_json::from_slice(bytes.as_bytes()).unwrap();
    assert_eq!(published, serde_json::to_value(&event).unwrap());
    // The record itself goes out as it came in: member order, `\u00e9`, `0000`.
    let text = String::from_utf8(bytes.into_bytes()).unwrap();
    let kept = format!(
        "\"suricata\":{{\"eve\":{}}}",
        std::str::from_utf8(line).unwrap()
    );
    assert!(text.contains(&kept), "{text}");
}

/// A record nested as deep as ingest accepts is published as an event every stage can read
/// back (serde_json reads no more than 128 levels); one nested deeper is refused, with the
/// reason, instead of being published unreadable.
#[test]
fn deep_records_are_refused_before_they_make_unreadable_events() {
    let ctx = ParseContext::new(SENSOR);
    let nested = |depth: usize| {
        let inner = format!("{}1{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
        [
            (
                Format::SuricataEve,
                format!(
                    r#"{{"timestamp":"2023-11-01T00:46:35.638604+0100","event_type":"dns","x":{inner}}}"#
                ),
            ),
            (
                Format::Zeek,
                format!(r#"{{"_path":"weird","ts":1.5,"x.y":{inner}}}"#),
            ),
            (
                Format::JsonLines,
                format!(r#"{{"timestamp":"2023-11-01T00:46:35Z","x":{inner}}}"#),
            ),
        ]
    };
    for (format, line) in nested(120) {
        let bytes = parse_line_json(format, line.as_bytes(), &ctx)
            .unwrap_or_else(|e| panic!("{format}: {e}"));
        serde_json::from_slice::<serde_json::Value>(bytes.as_bytes())
            .unwrap_or_else(|e| panic!("{format}: the event does not read back: {e}"));
    }
    for (format, line) in nested(121) {
        let error = parse_line_json(format, line.as_bytes(), &ctx).unwrap_err();
        assert!(
            error.to_string().contains("nested more than 120 levels"),
            "{format}: {error}"
        );
    }
}
