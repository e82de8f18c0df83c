//! `kastell parse` as a user runs it: events on stdout, rejects on stderr with their line
//! number and reason, exit 0 whenever the input could be read.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn kastell(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kastell"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kastell");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ingest/tests/fixtures")
        .join(name)
}

fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_zeek_tsv_file_prints_one_event_per_row() {
    let path = fixture("zeek/cchostak-conn.log");
    let output = kastell(&["parse", "--format", "zeek", path.to_str().unwrap()], None);
    assert!(output.status.success());
    assert_eq!(output.stderr, b"");
    let events = json_lines(&output);
    assert_eq!(events.len(), 76);
    assert_eq!(events[0]["event"]["dataset"], "zeek.conn");
    assert_eq!(events[0]["observer"]["name"], "parse");
}

#[test]
fn rejects_go_to_stderr_with_line_and_reason_and_the_exit_is_zero() {
    let input = b"{\"timestamp\":\"2024-01-01T00:00:00Z\",\"event_type\":\"flow\"}\nnot json\n\n{\"event_type\":\"dns\"}\n";
    let output = kastell(&["parse", "--format", "suricata-eve", "-"], Some(input));
    assert!(output.status.success());
    assert_eq!(json_lines(&output).len(), 1);
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with("line 2: invalid_json: "), "{stderr}");
    assert_eq!(lines[1], "line 4: missing_field: missing timestamp");
}

#[test]
fn every_format_name_of_the_issue_is_accepted() {
    let cases: [(&str, &[u8]); 7] = [
        ("suricata-eve", b""),
        ("zeek", b""),
        ("wazuh-alerts", b""),
        ("ossec", b"** Alert 1565277360.1: - syslog,\n2019 Aug 08 15:16:00 h->/var/log/x\nRule: 1 (level 3) -> 'x'\nlog\n"),
        ("syslog", b"<34>1 2003-10-11T22:14:15.003Z h app - - - hello\n"),
        ("json-lines", b"{\"@timestamp\":\"2024-01-01T00:00:00Z\"}\n"),
        ("greenbone", b""),
    ];
    for (format, input) in cases {
        let output = kastell(&["parse", "--format", format], Some(input));
        assert!(output.status.success(), "{format}: {:?}", output);
        assert_eq!(output.stderr, b"", "{format}");
        assert_eq!(
            json_lines(&output).len(),
            usize::from(!input.is_empty()),
            "{format}"
        );
    }
}

#[test]
fn json_lines_take_the_timestamp_field_and_timezone_flags() {
    let input = b"{\"seen\":\"2024-05-01 10:00:00\"}\n";
    let output = kastell(
        &[
            "parse",
            "--format",
            "json-lines",
            "--timestamp-field",
            "seen",
            "--timezone",
            "+02:00",
        ],
        Some(input),
    );
    assert!(output.status.success());
    assert_eq!(json_lines(&output)[0]["@timestamp"], "2024-05-01T08:00:00Z");
}

#[test]
fn a_greenbone_report_prints_one_event_per_result() {
    let path = fixture("greenbone/gmp-report.xml");
    let output = kastell(
        &["parse", "--format", "greenbone", path.to_str().unwrap()],
        None,
    );
    assert!(output.status.success());
    let events = json_lines(&output);
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["vulnerability"]["id"][0], "CVE-2023-38408");
}

#[test]
fn an_unreadable_file_or_unknown_format_fails() {
    let output = kastell(
        &["parse", "--format", "zeek", "/nonexistent/conn.log"],
        None,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("opening /nonexistent/conn.log"), "{stderr}");

    let output = kastell(&["parse", "--format", "nessus", "-"], None);
    assert!(!output.status.success());
    assert!(String::from_utf8(output.stderr)
        .unwrap()
        .contains("unknown format"));
}
