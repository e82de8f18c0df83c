//! Helpers shared by the integration tests: fixture lines, parsing with a test sensor,
//! and reading values out of events.

#![allow(dead_code)]

use std::path::PathBuf;

use kastell_core::Event;
use kastell_ingest::{parse_line, Format, ParseContext, ParseError};
use serde_json::Value;

pub const SENSOR: &str = "test-sensor";

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The one line of a fixture that contains every needle; fails if there is not exactly
/// one, so a test cannot silently pick the wrong record.
pub fn line_with(file: &str, needles: &[&str]) -> String {
    let text = std::fs::read_to_string(fixture(file)).unwrap();
    let found: Vec<&str> = text
        .lines()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{needles:?} in {file}: {} lines",
        found.len()
    );
    found[0].to_owned()
}

pub fn nth_line(file: &str, n: usize) -> String {
    let text = std::fs::read_to_string(fixture(file)).unwrap();
    text.lines().nth(n - 1).unwrap().to_owned()
}

pub fn parse(format: Format, line: &str) -> Result<Event, ParseError> {
    parse_line(format, line.as_bytes(), &ParseContext::new(SENSOR))
}

pub fn suricata(line: &str) -> Event {
    parse(Format::SuricataEve, line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

pub fn wazuh(line: &str) -> Event {
    parse(Format::WazuhAlerts, line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

pub fn s<'a>(event: &'a Event, path: &str) -> &'a str {
    event
        .get_str(path)
        .unwrap_or_else(|| panic!("{path} is not a string in {}", pretty(event)))
}

pub fn u(event: &Event, path: &str) -> u64 {
    event
        .get(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} is not a u64 in {}", pretty(event)))
}

pub fn strings(event: &Event, path: &str) -> Vec<String> {
    let Some(Value::Array(items)) = event.get(path) else {
        panic!("{path} is not an array in {}", pretty(event));
    };
    items
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

pub fn pretty(event: &Event) -> String {
    serde_json::to_string_pretty(event).unwrap()
}

/// The shared corpora, found relative to this crate as in the repository layout.
pub fn corpora() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpora");
    dir.is_dir().then_some(dir)
}
