//! Bad input of every kind becomes a typed, explained rejection, never a panic.

mod common;

use common::*;
use kastell_ingest::{parse_line, Format, ParseContext, ParseError, RejectReason};

fn reject(format: Format, line: &[u8]) -> ParseError {
    parse_line(format, line, &ParseContext::new(SENSOR)).unwrap_err()
}

fn both(line: &[u8]) -> [ParseError; 2] {
    [
        reject(Format::SuricataEve, line),
        reject(Format::WazuhAlerts, line),
    ]
}

#[test]
fn truncated_json() {
    let line = nth_line("suricata/xhpx-eve.json", 1);
    let cut = &line.as_bytes()[..line.len() / 2];
    for err in both(cut) {
        assert_eq!(err.reason(), RejectReason::InvalidJson);
        assert!(err.to_string().contains("EOF while parsing"), "{err}");
    }
}

#[test]
fn json_that_is_not_an_object() {
    for (line, found) in [
        (&b"[1, 2, 3]"[..], "an array"),
        (b"42", "a number"),
        (b"\"text\"", "a string"),
        (b"null", "null"),
    ] {
        for err in both(line) {
            assert_eq!(err, ParseError::NotAnObject { found });
            assert_eq!(
                err.to_string(),
                format!("JSON value is {found}, not an object")
            );
        }
    }
    let array = format!("[{}]", nth_line("suricata/xhpx-eve.json", 1));
    assert_eq!(
        reject(Format::SuricataEve, array.as_bytes()).reason(),
        RejectReason::NotAnObject
    );
}

#[test]
fn invalid_ip_text() {
    // The real xhpx alert with its src_ip "10.8.8.1" made one octet too long.
    let line = nth_line("suricata/xhpx-eve.json", 1).replace("\"10.8.8.1\"", "\"10.8.8.1000\"");
    let err = reject(Format::SuricataEve, line.as_bytes());
    assert_eq!(err.reason(), RejectReason::InvalidIp);
    assert_eq!(
        err.to_string(),
        "field src_ip: \"10.8.8.1000\" is not an IP address"
    );
}

#[test]
fn over_long_line() {
    // A real record padded past 2 MiB inside a string, so it is still valid JSON.
    let line = nth_line("suricata/xhpx-eve.json", 1);
    let padded = line.replacen(
        "\"payload\":\"",
        &format!("\"payload\":\"{}", "A".repeat(2 << 20)),
        1,
    );
    assert!(padded.len() > 2 << 20);
    for err in both(padded.as_bytes()) {
        assert_eq!(
            err,
            ParseError::TooLong {
                len: padded.len(),
                max: 1 << 20
            }
        );
        assert_eq!(err.reason(), RejectReason::TooLong);
    }
}

#[test]
fn invalid_utf8() {
    let mut line = nth_line("suricata/xhpx-eve.json", 1).into_bytes();
    // An ISO-8859-1 "é" (0xE9) inside the signature, as a mis-encoded producer writes it.
    let at = line.windows(8).position(|w| w == b"ssh test").unwrap() + 3;
    line[at] = 0xE9;
    for err in both(&line) {
        assert_eq!(err, ParseError::InvalidUtf8 { offset: at });
        assert_eq!(err.reason(), RejectReason::InvalidUtf8);
    }
}

#[test]
fn wrong_types_name_the_field() {
    let line = nth_line("suricata/xhpx-eve.json", 1);
    let cases = [
        (
            line.replace("\"src_port\":57649", "\"src_port\":\"57649\""),
            "field src_port: expected a number, found a string",
        ),
        (
            line.replace("\"dest_port\":22", "\"dest_port\":70000"),
            "field dest_port: \"70000\" is not a port number",
        ),
        (
            line.replace("\"severity\":1", "\"severity\":-1"),
            "field alert.severity: \"-1\" is not a non-negative integer",
        ),
        (
            line.replace("\"event_type\":\"alert\"", "\"event_type\":7"),
            "field event_type: expected a string, found a number",
        ),
        (
            line.replace("\"alert\":{", "\"alert\":[{")
                .replace(",\"flow\"", "],\"flow\""),
            "field alert: expected an object, found an array",
        ),
    ];
    for (bad, want) in cases {
        let err = reject(Format::SuricataEve, bad.as_bytes());
        assert_eq!(err.to_string(), want, "{bad}");
    }
}

#[test]
fn missing_or_garbled_timestamps_are_rejected() {
    let line = nth_line("suricata/xhpx-eve.json", 1);
    let without = line.replace("\"timestamp\":\"2019-11-26T16:41:02.504203+0800\",", "");
    assert_eq!(
        reject(Format::SuricataEve, without.as_bytes()),
        ParseError::MissingField { field: "timestamp" }
    );
    // No offset: guessing the zone would shift the event silently.
    let naive = line.replace("+0800\",\"flow_id\"", "\",\"flow_id\"");
    assert_eq!(
        reject(Format::SuricataEve, naive.as_bytes()).reason(),
        RejectReason::InvalidTimestamp
    );
}

#[test]
fn records_of_one_format_are_refused_by_the_other() {
    let alert = nth_line("wazuh/sshd-5712.jsonl", 1);
    assert_eq!(
        reject(Format::SuricataEve, alert.as_bytes()),
        ParseError::MissingField {
            field: "event_type"
        }
    );
    let eve = nth_line("suricata/xhpx-eve.json", 1);
    assert_eq!(
        reject(Format::WazuhAlerts, eve.as_bytes()),
        ParseError::MissingField { field: "rule" }
    );
}

#[test]
fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
    let line = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for err in both(line.as_bytes()) {
        assert_eq!(err.reason(), RejectReason::InvalidJson);
    }
}

#[test]
fn a_year_that_is_not_four_digits_is_refused() {
    // Found by the parse_line fuzz target: chrono's own parser read the year `-022`, and
    // the event's `@timestamp` then failed every RFC 3339 reader downstream.
    let line = nth_line("suricata/derived.jsonl", 1).replace(
        "\"timestamp\":\"2022-10-31T15:47:27.316446+0100\"",
        "\"timestamp\":\"-022-10-31T15:47:27.316446+0100\"",
    );
    assert_eq!(
        reject(Format::SuricataEve, line.as_bytes()).reason(),
        RejectReason::InvalidTimestamp
    );
}
