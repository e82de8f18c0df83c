//! Offline detection for `kastell detect`: Sigma rule files read from paths, raw JSON events
//! (JSON lines or concatenated objects, as the SigmaHQ regression data ships them)
//! flattened to Sigma field names, and one JSON line written per match.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::correlation::CorrelationHit;
use crate::error::RuleError;
use crate::ruleset::{Evaluation, RuleDocument, RuleSet};

/// What `kastell detect` can fail on.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading events: {0}")]
    Input(std::io::Error),
    #[error("writing matches: {0}")]
    Write(#[from] std::io::Error),
}

/// One match, as printed: `event_index` for a detection rule, `group` and
/// `event_indices` for a correlation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DetectMatch {
    pub rule_id: String,
    pub rule_title: String,
    pub level: String,
    /// 0-based index of the event in the input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_index: Option<usize>,
    /// A correlation's group-by values (empty without group-by).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<BTreeMap<String, String>>,
    /// A correlation's events, by 0-based index, in event-time order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_indices: Option<Vec<usize>>,
}

/// Fields read for an event's time in raw mode, in order: ECS and Elastic, the Windows
/// `System/TimeCreated` attribute as flattened, Sysmon's `UtcTime`, NXLog, Zeek.
const TIME_FIELDS: [&str; 7] = [
    "@timestamp",
    "timestamp",
    "TimeCreated_SystemTime",
    "UtcTime",
    "EventTime",
    "time",
    "ts",
];

/// An event's time (ms since the epoch) from the first of [`TIME_FIELDS`] that reads as
/// RFC 3339, `YYYY-MM-DD hh:mm:ss[.fff]` (UTC) or epoch seconds.
pub fn event_time_ms(event: &Map<String, Value>) -> Option<i64> {
    TIME_FIELDS
        .iter()
        .filter_map(|field| event.get(*field))
        .find_map(|value| match value {
            Value::String(text) => parse_time(text),
            Value::Number(n) => n.as_f64().map(|secs| (secs * 1_000.0) as i64),
            _ => None,
        })
}

fn parse_time(text: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    let text = text.trim_end_matches(" UTC");
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
        .map(|t| t.and_utc().timestamp_millis())
}

/// The rule files under `paths`: a file as given, a directory searched recursively for
/// `*.yml` and `*.yaml`, sorted so the rule order is stable. Symbolic links are followed,
/// but each directory and each file is read once, by the first path that reaches it: a
/// link back up the tree (a loop) or a second link to the same place adds nothing.
///
/// # Errors
///
/// [`DetectError::Read`] when a path or directory cannot be read.
pub fn rule_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, DetectError> {
    let mut walk = RuleWalk::default();
    for path in paths {
        if path.is_dir() {
            walk.directory(path)?;
        } else {
            walk.file(path);
        }
    }
    Ok(walk.files)
}

/// The files found so far, and the real paths of what was read, to read each once.
#[derive(Default)]
struct RuleWalk {
    files: Vec<PathBuf>,
    seen: HashSet<PathBuf>,
}

impl RuleWalk {
    fn directory(&mut self, dir: &Path) -> Result<(), DetectError> {
        let read = |source| DetectError::Read {
            path: dir.to_path_buf(),
            source,
        };
        if !self.seen.insert(dir.canonicalize().map_err(read)?) {
            return Ok(());
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read)? {
            found.push(entry.map_err(read)?.path());
        }
        found.sort();
        for path in found {
            if path.is_dir() {
                self.directory(&path)?;
            } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
                self.file(&path);
            }
        }
        Ok(())
    }

    fn file(&mut self, path: &Path) {
        // A path that cannot be resolved (missing, a dangling link) is kept: reading it
        // reports the error with the path the user gave.
        let real = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if self.seen.insert(real) {
            self.files.push(path.to_path_buf());
        }
    }
}

/// Reads and compiles the rule files in raw mode. Rules that fail to compile are returned
/// with the reason; the others are in the set.
///
/// # Errors
///
/// [`DetectError::Read`] when a file cannot be read.
pub fn load_rules(paths: &[PathBuf]) -> Result<(RuleSet, Vec<RuleError>), DetectError> {
    let mut documents = Vec::new();
    for file in rule_files(paths)? {
        let text = std::fs::read_to_string(&file).map_err(|source| DetectError::Read {
            path: file.clone(),
            source,
        })?;
        documents.push(RuleDocument::sigma_file(file.display().to_string(), text));
    }
    Ok(RuleSet::compile_raw(documents))
}

/// Flattens an event to the field names Sigma rules use (see
/// `shared/corpora/sigma/REGRESSION_DATA.md`): an evtx_dump-style record
/// (`Event.System`, `Event.EventData`, `Event.UserData`) gives its children as top-level
/// fields, XML attributes become `Parent_attribute`, spaces are stripped from names. Any
/// other object is returned as it is, so plain flat events work too.
pub fn flatten_event(event: Value) -> Map<String, Value> {
    let Value::Object(mut top) = event else {
        return Map::new();
    };
    let Some(Value::Object(record)) = top.remove("Event") else {
        return top;
    };
    let mut flat = Map::new();
    for (section, value) in record {
        match (section.as_str(), value) {
            ("System" | "EventData", Value::Object(fields)) => flatten_into(&mut flat, fields),
            // UserData has one wrapper element whose children are the fields.
            ("UserData", Value::Object(wrapper)) => {
                for (_, inner) in wrapper {
                    if let Value::Object(fields) = inner {
                        flatten_into(&mut flat, fields);
                    }
                }
            }
            _ => {}
        }
    }
    flat
}

fn flatten_into(flat: &mut Map<String, Value>, fields: Map<String, Value>) {
    for (name, value) in fields {
        let name: String = name.chars().filter(|c| !c.is_whitespace()).collect();
        match value {
            Value::Object(mut inner) => {
                if let Some(Value::Object(attributes)) = inner.remove("#attributes") {
                    for (attribute, value) in attributes {
                        flat.insert(format!("{name}_{attribute}"), value);
                    }
                }
                if let Some(text) = inner.remove("#text") {
                    flat.insert(name.clone(), text);
                }
                if !inner.is_empty() {
                    flat.insert(name, Value::Object(inner));
                }
            }
            other => {
                flat.insert(name, other);
            }
        }
    }
}

/// Totals of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectStats {
    /// Events read, skipped ones included.
    pub events: usize,
    pub matches: usize,
    /// Input that is not JSON, skipped (see [`SkippedEvent`]).
    pub skipped: usize,
}

/// Input that is not a JSON value, skipped: where it is and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEvent {
    /// The event index it takes, so the indexes of the events after it still count the
    /// input's lines (JSON lines) or objects.
    pub index: usize,
    /// 1-based line of the input where the error is.
    pub line: usize,
    /// serde_json's reason.
    pub reason: String,
}

impl std::fmt::Display for SkippedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "event skipped: line {} (event {}): {}",
            self.line, self.index, self.reason
        )
    }
}

/// Evaluates every event of `input` (JSON objects, one per line or concatenated) against
/// the set in raw mode, calling `on_match` for each match in input order: the detection
/// rules an event matches, then the correlations it completes. Correlation windows run on
/// the events' own time ([`event_time_ms`]). Input that is not JSON is skipped and
/// counted; see [`detect_events_reporting`] to hear about each.
///
/// # Errors
///
/// The input cannot be read, or `on_match` fails.
pub fn detect_events(
    rules: &RuleSet,
    input: impl Read,
    on_match: impl FnMut(DetectMatch) -> Result<(), DetectError>,
) -> Result<DetectStats, DetectError> {
    detect_events_reporting(rules, input, on_match, |_| Ok(()))
}

/// [`detect_events`], calling `on_skip` for each piece of input that is not JSON. After a
/// syntax error the reading resumes at the next line, so one bad line of JSON lines costs
/// only itself; a broken object spread over several lines is skipped line by line.
///
/// # Errors
///
/// The input cannot be read, or `on_match` or `on_skip` fails.
pub fn detect_events_reporting(
    rules: &RuleSet,
    input: impl Read,
    mut on_match: impl FnMut(DetectMatch) -> Result<(), DetectError>,
    mut on_skip: impl FnMut(SkippedEvent) -> Result<(), DetectError>,
) -> Result<DetectStats, DetectError> {
    let mut stats = DetectStats::default();
    let mut state = rules.correlation_state::<usize>();
    // An event without a readable time is taken to happen with the one before it.
    let mut time_ms = 0;
    let mut values = JsonValues::new(input);
    while let Some(read) = values.next_value()? {
        let index = stats.events;
        stats.events += 1;
        let event = match read {
            Ok(event) => event,
            Err((line, reason)) => {
                stats.skipped += 1;
                on_skip(SkippedEvent {
                    index,
                    line,
                    reason,
                })?;
                continue;
            }
        };
        let flat = flatten_event(event);
        time_ms = event_time_ms(&flat).unwrap_or(time_ms);
        let evaluation = rules.evaluate_raw_with(&mut state, &flat, time_ms, &|| index);
        report(evaluation, index, &mut stats, &mut on_match)?;
    }
    // The input is over: windows judged at their end close with what they hold.
    for hit in rules.flush_correlations(&mut state) {
        stats.matches += 1;
        on_match(correlation_match(hit))?;
    }
    Ok(stats)
}

/// The JSON values of a stream, one per line or concatenated (objects may span lines),
/// with syntax errors reported by line and skipped to the next line. Reads line by line, so
/// a stream (stdin) is evaluated as it arrives.
struct JsonValues<R> {
    reader: BufReader<R>,
    /// Input read: `buffer[start..]` is not parsed yet, whole lines from line
    /// `first_line`. Parsed input is dropped from the front only once it is half the
    /// buffer, so a long line of many concatenated values is not moved once per value.
    buffer: Vec<u8>,
    start: usize,
    first_line: usize,
    /// Lines read so far.
    lines: usize,
    done: bool,
    /// Where the value being read stands once a parse found it incomplete; the parse is
    /// tried again only when a line may have completed it (see [`Nesting`]).
    incomplete: Option<Nesting>,
    /// Parses tried, for the test that a value of many lines is parsed a bounded number of
    /// times.
    parses: usize,
}

/// The brackets and string of an incomplete JSON value, followed byte by byte as lines
/// arrive. Parsing the pending input again after every line made a value of n lines cost
/// n² (a pretty-printed export of a few megabytes took hours); this scan costs each byte
/// once, and the parse is tried again only when the value's brackets are closed, or a
/// string has met a line end (JSON strings cannot hold one, so the parse fails for good and
/// says why).
#[derive(Debug, Default)]
struct Nesting {
    depth: i64,
    in_string: bool,
    escaped: bool,
    broken: bool,
}

impl Nesting {
    fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else {
                    match byte {
                        b'\\' => self.escaped = true,
                        b'"' => self.in_string = false,
                        b'\n' => self.broken = true,
                        _ => {}
                    }
                }
            } else {
                match byte {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => self.depth -= 1,
                    _ => {}
                }
            }
        }
    }

    fn may_be_complete(&self) -> bool {
        self.broken || (self.depth <= 0 && !self.in_string)
    }
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A value, or the line and reason of input that is not one.
type ValueRead = Result<Value, (usize, String)>;

impl<R: Read> JsonValues<R> {
    fn new(input: R) -> Self {
        JsonValues {
            reader: BufReader::new(input),
            buffer: Vec::new(),
            start: 0,
            first_line: 1,
            lines: 0,
            done: false,
            incomplete: None,
            parses: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    fn next_value(&mut self) -> Result<Option<ValueRead>, DetectError> {
        loop {
            let worth_parsing = self.done
                || self
                    .incomplete
                    .as_ref()
                    .is_none_or(Nesting::may_be_complete);
            if worth_parsing {
                self.parses += 1;
                let mut stream = serde_json::Deserializer::from_slice(self.pending()).into_iter();
                let parsed: Option<Result<Value, serde_json::Error>> = stream.next();
                let offset = stream.byte_offset();
                self.incomplete = None;
                match parsed {
                    Some(Ok(value)) => {
                        self.consume(offset);
                        return Ok(Some(Ok(value)));
                    }
                    // Only whitespace is pending.
                    None if self.done => return Ok(None),
                    None => {
                        self.consume(self.pending().len());
                    }
                    Some(Err(e)) if e.is_eof() && !self.done => {
                        let mut nesting = Nesting::default();
                        nesting.feed(self.pending());
                        self.incomplete = Some(nesting);
                    }
                    Some(Err(e)) => return Ok(Some(Err(self.skip_broken(&e)))),
                }
            }
            if self.done {
                return Ok(None);
            }
            let before = self.buffer.len();
            let read = self
                .reader
                .read_until(b'\n', &mut self.buffer)
                .map_err(DetectError::Input)?;
            if read == 0 {
                self.done = true;
            } else {
                // Windows tools start UTF-8 files with a byte-order mark; it is not JSON.
                if self.lines == 0 && self.pending().starts_with(UTF8_BOM) {
                    self.start += UTF8_BOM.len();
                }
                self.lines += 1;
                if let Some(nesting) = &mut self.incomplete {
                    nesting.feed(&self.buffer[before.max(self.start)..]);
                }
            }
        }
    }

    /// Drops the input of a value that is not JSON and says where and why. When the value
    /// began on an earlier line than the error (a truncated line read on into the next
    /// one), only the line it began on is dropped, with that line's own error: the next
    /// line is read afresh, so a good line after a cut one is not lost.
    fn skip_broken(&mut self, error: &serde_json::Error) -> (usize, String) {
        let lines = || self.pending().split_inclusive(|b| *b == b'\n');
        let start = lines()
            .position(|line| !line.iter().all(u8::is_ascii_whitespace))
            .map_or(1, |i| i + 1);
        let line_at = |n: usize| lines().nth(n - 1).unwrap_or_default();
        let own = (error.line() > start).then(|| {
            // Without its line end, so a string cut short ends at the end of the input.
            let line = line_at(start);
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            serde_json::from_slice::<Value>(line).err()
        });
        let (through, reason) = match own.flatten() {
            Some(own) => (start, reason_for(&own, line_at(start))),
            None => {
                let through = error.line().max(1);
                (through, reason_for(error, line_at(through)))
            }
        };
        let line = self.first_line + through - 1;
        let end = lines().take(through).map(<[u8]>::len).sum();
        self.consume(end);
        (line, reason)
    }

    /// Drops the first `bytes` of the pending input, keeping the line count of what stays.
    fn consume(&mut self, bytes: usize) {
        let bytes = bytes.min(self.pending().len());
        self.first_line += self.pending()[..bytes]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        self.start += bytes;
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        } else if self.start > self.buffer.len() / 2 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
    }
}

/// Why `line` (where `error` is) is not JSON: invalid UTF-8 named as such (serde_json
/// calls it an invalid code point), else serde_json's message.
fn reason_for(error: &serde_json::Error, line: &[u8]) -> String {
    match std::str::from_utf8(line) {
        Err(bad) if bad.valid_up_to() < error.column() => {
            format!("invalid UTF-8 at column {}", bad.valid_up_to() + 1)
        }
        _ => at_column(error),
    }
}

/// serde_json's message with the column only: the line it names counts from wherever the
/// parse began, and the skip report gives the input's own line number.
fn at_column(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let without = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(text, _)| text);
    format!("{without} at column {}", error.column())
}

/// Hands the matches of the event numbered `index` to `on_match`, counting them.
fn report(
    evaluation: Evaluation<'_, usize>,
    index: usize,
    stats: &mut DetectStats,
    on_match: &mut impl FnMut(DetectMatch) -> Result<(), DetectError>,
) -> Result<(), DetectError> {
    for rule in evaluation.rules {
        stats.matches += 1;
        on_match(DetectMatch {
            rule_id: rule.id.clone(),
            rule_title: rule.title.clone(),
            level: rule.level.to_string(),
            event_index: Some(index),
            group: None,
            event_indices: None,
        })?;
    }
    for hit in evaluation.correlations {
        stats.matches += 1;
        on_match(correlation_match(hit))?;
    }
    Ok(())
}

fn correlation_match(hit: CorrelationHit<'_, usize>) -> DetectMatch {
    DetectMatch {
        rule_id: hit.rule.id.clone(),
        rule_title: hit.rule.title.clone(),
        level: hit.rule.level.to_string(),
        event_index: None,
        group: Some(hit.group),
        event_indices: Some(hit.payload),
    }
}

/// Detection over normalised events, routed by their source as the correlate stage routes
/// them (rules compiled in [`crate::Mode::Routed`]): for `kastell detect --format`, where
/// the events are a sensor's records as Kastell normalises them. Events are numbered in
/// the order given; an event's time is its `@timestamp`, else the time of the one before.
pub struct RoutedDetector<'r> {
    rules: &'r RuleSet,
    state: crate::CorrelationState<usize>,
    time_ms: i64,
    stats: DetectStats,
}

impl<'r> RoutedDetector<'r> {
    pub fn new(rules: &'r RuleSet) -> Self {
        RoutedDetector {
            rules,
            state: rules.correlation_state(),
            time_ms: 0,
            stats: DetectStats::default(),
        }
    }

    /// Evaluates the next event, handing each match to `on_match`.
    ///
    /// # Errors
    ///
    /// What `on_match` returns.
    pub fn event(
        &mut self,
        event: &kastell_core::Event,
        mut on_match: impl FnMut(DetectMatch) -> Result<(), DetectError>,
    ) -> Result<(), DetectError> {
        let index = self.stats.events;
        self.stats.events += 1;
        if let Some(time) = event.timestamp() {
            self.time_ms = time.timestamp_millis();
        }
        let evaluation = self
            .rules
            .evaluate_with(&mut self.state, event, self.time_ms, &|| index);
        report(evaluation, index, &mut self.stats, &mut on_match)
    }

    /// Closes the correlation windows judged at their end (the input is over).
    ///
    /// # Errors
    ///
    /// What `on_match` returns.
    pub fn finish(
        mut self,
        mut on_match: impl FnMut(DetectMatch) -> Result<(), DetectError>,
    ) -> Result<DetectStats, DetectError> {
        for hit in self.rules.flush_correlations(&mut self.state) {
            self.stats.matches += 1;
            on_match(correlation_match(hit))?;
        }
        Ok(self.stats)
    }
}

/// One match as the JSON line `kastell detect` prints.
///
/// # Errors
///
/// [`DetectError::Write`].
pub fn write_match(out: &mut impl Write, found: &DetectMatch) -> Result<(), DetectError> {
    let line = serde_json::to_string(found).map_err(std::io::Error::other)?;
    writeln!(out, "{line}")?;
    Ok(())
}

/// [`detect_events`] writing each match as one JSON line to `out`, and each skipped piece
/// of input as one line to `skipped` (`event skipped: line N (event I): reason`).
///
/// # Errors
///
/// As [`detect_events`], and [`DetectError::Write`].
pub fn detect_to_jsonl(
    rules: &RuleSet,
    input: impl Read,
    out: &mut impl Write,
    skipped: &mut impl Write,
) -> Result<DetectStats, DetectError> {
    detect_events_reporting(
        rules,
        input,
        |m| write_match(out, &m),
        |skip| {
            writeln!(skipped, "{skip}")?;
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RULE: &str = r#"
title: Sc Stop
id: 11111111-2222-3333-4444-555555555555
level: low
logsource: {category: process_creation, product: windows}
detection:
  selection:
    Image|endswith: '\sc.exe'
    CommandLine|contains: ' stop '
  condition: selection
"#;

    /// A directory of this test's own under the system's temporary directory, removed
    /// when dropped.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[cfg(unix)]
    #[test]
    fn linked_directories_are_read_once_and_loops_end() {
        use std::os::unix::fs::symlink;
        let root = Scratch(std::env::temp_dir().join(format!(
            "kastell-rule-walk-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )));
        let dir = &root.0;
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.yml"), RULE).unwrap();
        std::fs::write(dir.join("sub/b.yaml"), RULE).unwrap();
        // A loop back up, two links to the top (exponentially many paths when followed
        // blindly), a link to a file already found, and a dangling link.
        symlink("..", dir.join("sub/up")).unwrap();
        symlink(".", dir.join("x")).unwrap();
        symlink(".", dir.join("y")).unwrap();
        symlink("a.yml", dir.join("z.yml")).unwrap();
        symlink("missing.yml", dir.join("gone.yml")).unwrap();
        let files = rule_files(&[dir.clone(), dir.join("a.yml")]).unwrap();
        assert_eq!(
            files,
            [
                dir.join("a.yml"),
                dir.join("gone.yml"),
                dir.join("sub/b.yaml")
            ]
        );
    }

    fn set() -> RuleSet {
        let (set, errors) = RuleSet::compile_raw([RuleDocument::new("t", RULE)]);
        assert!(errors.is_empty(), "{errors:?}");
        set
    }

    #[test]
    fn evtx_records_are_flattened_to_sigma_names() {
        let flat = flatten_event(json!({"Event": {
            "System": {"EventID": 1, "Provider": {"#attributes": {"Name": "Sysmon"}}},
            "EventData": {"Image": "C:\\sc.exe", "Threat Name": "x"},
            "UserData": {"Op": {"User": "bob"}}}}));
        assert_eq!(flat["EventID"], json!(1));
        assert_eq!(flat["Provider_Name"], json!("Sysmon"));
        assert_eq!(flat["ThreatName"], json!("x"));
        assert_eq!(flat["User"], json!("bob"));
        assert_eq!(flat["Image"], json!("C:\\sc.exe"));
    }

    #[test]
    fn concatenated_objects_and_lines_give_indexed_matches() {
        let input = concat!(
            r#"{"Image": "C:\\sc.exe", "CommandLine": "sc stop x"}"#,
            "\n",
            r#"{"Image": "C:\\cmd.exe", "CommandLine": "sc stop x"}"#,
            r#" {"Event": {"EventData": {"Image": "C:\\sc.exe", "CommandLine": "sc stopx"}}}"#,
            r#"{"Event": {"EventData": {"Image": "C:\\sc.exe", "CommandLine": "sc stop x"}}}"#
        );
        let mut out = Vec::new();
        let stats = detect_to_jsonl(&set(), input.as_bytes(), &mut out, &mut Vec::new()).unwrap();
        assert_eq!(
            stats,
            DetectStats {
                events: 4,
                matches: 2,
                skipped: 0
            }
        );
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["event_index"], json!(0));
        assert_eq!(lines[1]["event_index"], json!(3));
        assert_eq!(
            lines[0]["rule_id"],
            json!("11111111-2222-3333-4444-555555555555")
        );
        assert_eq!(lines[0]["level"], json!("low"));
    }

    #[test]
    fn a_byte_order_mark_at_the_start_is_not_an_event() {
        let input = "\u{feff}{\"Image\": \"C:\\\\sc.exe\", \"CommandLine\": \"sc stop x\"}\n";
        let mut out = Vec::new();
        let stats = detect_to_jsonl(&set(), input.as_bytes(), &mut out, &mut Vec::new()).unwrap();
        assert_eq!(
            stats,
            DetectStats {
                events: 1,
                matches: 1,
                skipped: 0
            }
        );
    }

    /// The indexes of the events that matched, what was skipped, and the counts.
    fn run(input: &[u8]) -> (Vec<usize>, Vec<SkippedEvent>, DetectStats) {
        let (mut matched, mut skipped) = (Vec::new(), Vec::new());
        let stats = detect_events_reporting(
            &set(),
            input,
            |m| {
                matched.push(m.event_index.unwrap());
                Ok(())
            },
            |s| {
                skipped.push(s);
                Ok(())
            },
        )
        .unwrap();
        (matched, skipped, stats)
    }

    #[test]
    fn a_cut_line_costs_only_itself_and_is_reported_on_its_own_line() {
        let hit = r#"{"Image": "C:\\sc.exe", "CommandLine": "sc stop x"}"#;
        for cut in [20, 30, hit.len() - 1] {
            let input = format!("{hit}\n{}\n{hit}\n\n{hit}\n", &hit[..cut]);
            let (matched, skipped, stats) = run(input.as_bytes());
            assert_eq!(matched, [0, 2, 3], "cut at {cut}");
            assert_eq!(stats.events, 4, "cut at {cut}");
            assert_eq!(skipped.len(), 1, "cut at {cut}: {skipped:?}");
            let SkippedEvent {
                index,
                line,
                reason,
            } = &skipped[0];
            assert_eq!((*index, *line), (1, 2), "cut at {cut}");
            assert!(
                reason.starts_with("EOF while parsing")
                    && reason.ends_with(&format!("at column {cut}")),
                "cut at {cut}: {reason}"
            );
        }
    }

    #[test]
    fn a_value_of_many_lines_is_parsed_a_bounded_number_of_times() {
        // A pretty-printed object, a pretty-printed array, then a line: each is parsed when
        // it is whole (and once before, when its first line finds it cut short), so the
        // parses do not grow with the object's lines.
        let parses = |lines: usize| {
            let keys: Vec<String> = (0..lines)
                .map(|i| format!("  \"k{i}\": \"v{i}\""))
                .collect();
            let object = format!("{{\n{}\n}}\n", keys.join(",\n"));
            let array =
                "[\n  {\"Image\": \"C:\\\\sc.exe\",\n   \"CommandLine\": \"sc stop x\"},\n  1\n]\n";
            let input = format!("{object}{array}{{\"a\": \"b\"}}\n");
            let mut values = JsonValues::new(input.as_bytes());
            let mut read = Vec::new();
            while let Some(value) = values.next_value().unwrap() {
                read.push(value.unwrap());
            }
            assert_eq!(read.len(), 3);
            assert_eq!(read[0].as_object().map(Map::len), Some(lines));
            assert_eq!(read[1].as_array().map(Vec::len), Some(2));
            values.parses
        };
        assert_eq!(parses(20_000), parses(2));

        // A string cut by a line end fails at once and costs only its own line.
        let input = "{\"a\": \"cut\n{\"b\": 1}\n";
        let mut values = JsonValues::new(input.as_bytes());
        assert!(values.next_value().unwrap().unwrap().is_err());
        assert_eq!(values.next_value().unwrap().unwrap().unwrap()["b"], 1);
        assert!(values.next_value().unwrap().is_none());
    }

    #[test]
    fn a_long_line_of_concatenated_values_is_read_whole() {
        let one = r#"{"Image": "C:\\sc.exe"}"#;
        let input = format!("{}\n{one}", one.repeat(50_000));
        let mut values = JsonValues::new(input.as_bytes());
        let mut count = 0;
        while let Some(value) = values.next_value().unwrap() {
            assert_eq!(value.unwrap()["Image"], "C:\\sc.exe");
            count += 1;
        }
        assert_eq!(count, 50_001);
    }

    #[test]
    fn invalid_utf8_is_named_as_such() {
        let hit = r#"{"Image": "C:\\sc.exe", "CommandLine": "sc stop x"}"#;
        let mut input = format!("{hit}\n").into_bytes();
        input.extend_from_slice(b"{\"Image\": \"a\xff\xfeb\"}\n");
        input.extend_from_slice(format!("{hit}\n").as_bytes());
        let (matched, skipped, _) = run(&input);
        let skipped: Vec<String> = skipped.iter().map(ToString::to_string).collect();
        assert_eq!(matched, [0, 2]);
        assert_eq!(
            skipped,
            ["event skipped: line 2 (event 1): invalid UTF-8 at column 13"]
        );
    }

    #[test]
    fn input_that_is_not_json_is_reported_by_line_and_skipped() {
        let hit = r#"{"Image": "C:\\sc.exe", "CommandLine": "sc stop x"}"#;
        let input = format!(
            "{hit}\nnot json at all\n{hit}\n{{\"Image\": \n  \"C:\\\\sc.exe\",\n  \
             \"CommandLine\": \"sc stop x\"}}\n{{\"Image\": oops}}\n{hit}\n{{\"cut"
        );
        let (matched, skipped, stats) = run(input.as_bytes());
        let skipped: Vec<(usize, usize)> = skipped.iter().map(|s| (s.index, s.line)).collect();
        // The multi-line object (lines 4-6) is event 3; each bad line keeps its index.
        assert_eq!(matched, [0, 2, 3, 5]);
        assert_eq!(skipped, [(1, 2), (4, 7), (6, 9)]);
        assert_eq!(stats.skipped, 3);
        assert_eq!(stats.events, 7);
        let mut err = Vec::new();
        detect_to_jsonl(&set(), "nope\n".as_bytes(), &mut Vec::new(), &mut err).unwrap();
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.starts_with("event skipped: line 1 (event 0): expected"),
            "{err}"
        );
    }

    #[test]
    fn windash_matches_any_dash_and_refuses_all() {
        let rule = "title: W\nid: w\nlogsource: {product: windows}\ndetection:\n  sel:\n    \
            CommandLine|contains|windash: ' -accepteula'\n  condition: sel\n";
        let (set, errors) = RuleSet::compile_raw([RuleDocument::new("w", rule)]);
        assert!(errors.is_empty(), "{errors:?}");
        for (line, hit) in [
            ("p.exe /accepteula", true),
            ("p.exe \u{2014}accepteula", true),
            ("p.exe -accepteula", true),
            ("p.exe accepteula", false),
        ] {
            let event = flatten_event(json!({ "CommandLine": line }));
            assert_eq!(set.evaluate_raw(&event).count() == 1, hit, "{line}");
        }
        let all = rule.replace("contains|windash", "contains|all|windash");
        let (_, errors) = RuleSet::compile_raw([RuleDocument::new("w", all)]);
        assert_eq!(errors.len(), 1);
    }

    /// The raw-mode index skips a rule only when none of its required keys is in the
    /// event: negations, nulls, `exists: false`, ORs and alternatives of a list of maps
    /// must still be tried on events without the fields they name.
    #[test]
    fn rules_are_skipped_only_when_they_cannot_match() {
        let rule = |id: &str, detection: &str| {
            RuleDocument::new(
                id,
                format!("title: {id}\nid: {id}\nlogsource: {{product: windows}}\ndetection:\n{detection}"),
            )
        };
        let documents = [
            rule("not", "  sel: {Image: x}\n  condition: not sel\n"),
            rule("isnull", "  sel: {Image: null}\n  condition: sel\n"),
            rule("absent", "  sel: {Image|exists: false}\n  condition: sel\n"),
            rule(
                "or",
                "  a: {Image: x}\n  b: {CommandLine|contains: run}\n  condition: a or b\n",
            ),
            rule(
                "list",
                "  sel:\n    - {Image: x}\n    - {CommandLine|contains: run}\n  condition: sel\n",
            ),
            rule(
                "and",
                "  a: {CommandLine|contains: run}\n  b: {Image: x}\n  condition: a and not b\n",
            ),
            rule("keywords", "  words: [run]\n  condition: words\n"),
            rule("image", "  sel: {Image: x}\n  condition: sel\n"),
        ];
        let (set, errors) = RuleSet::compile_raw(documents);
        assert!(errors.is_empty(), "{errors:?}");
        let ids = |event: Value| -> Vec<String> {
            let event = flatten_event(event);
            set.evaluate_raw(&event).map(|r| r.id.clone()).collect()
        };
        assert_eq!(
            ids(json!({"CommandLine": "go run"})),
            ["not", "isnull", "absent", "or", "list", "and", "keywords"]
        );
        assert_eq!(ids(json!({"Image": "x"})), ["or", "list", "image"]);
        assert_eq!(ids(json!({"User": "u"})), ["not", "isnull", "absent"]);
    }

    #[test]
    fn wide_base64offset_finds_the_value_at_any_offset() {
        use base64::Engine;
        // The value and modifiers of SigmaHQ's CVE-2025-53770 indicators rule.
        let rule = "title: E\nid: e\nlogsource: {product: windows}\ndetection:\n  sel:\n    \
            CommandLine|wide|base64offset|contains: 'spinstall0.aspx'\n  condition: sel\n";
        let (set, errors) = RuleSet::compile_raw([RuleDocument::new("e", rule)]);
        assert!(errors.is_empty(), "{errors:?}");
        for prefix in ["", "a", "ab", "abc"] {
            let script: Vec<u8> = format!("{prefix}spinstall0.aspx; exit")
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect();
            let encoded = base64::engine::general_purpose::STANDARD.encode(script);
            let event =
                flatten_event(json!({ "CommandLine": format!("powershell -enc {encoded}") }));
            assert_eq!(set.evaluate_raw(&event).count(), 1, "prefix {prefix:?}");
            let lower = flatten_event(json!({ "CommandLine": encoded.to_lowercase() }));
            assert_eq!(
                set.evaluate_raw(&lower).count(),
                0,
                "base64 is case-sensitive"
            );
        }
    }
}
