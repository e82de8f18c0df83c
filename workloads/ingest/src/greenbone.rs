//! Greenbone / OpenVAS scan reports: the XML a GMP `get_reports` answers with (or the
//! report file exported from the web UI). Each `<result>` under `<results>` becomes one
//! vulnerability finding: host, port, NVT OID and name, CVEs, CVSS severity, QoD and
//! solution, kept whole under `greenbone`.
//!
//! The report is one document over many lines, so a [`Document`] collects the lines of a
//! stream (bounded by `max_document_bytes`) and reads it when the stream ends. quick-xml
//! reads it as a stream of events: memory stays at the document plus one result.

use std::collections::BTreeMap;

use quick_xml::events::{BytesStart, Event as XmlEvent};
use quick_xml::Reader;
use serde_json::{Map, Value};

use crate::decoder::Decoded;
use crate::ecs::{canonical_ip, ecs, utc_timestamp, EcsBuilder, Output};
use crate::error::ParseError;
use crate::format::ParseContext;

pub(crate) const DATASET: &str = "greenbone.results";

/// Deeper nesting than any GMP report has (results sit at depth 4) is refused rather
/// than tracked without bound.
const MAX_DEPTH: usize = 64;

/// The lines of one report, collected until the stream ends.
#[derive(Debug)]
pub(crate) struct Document {
    bytes: Vec<u8>,
    first_line: u64,
    max: usize,
    len: usize,
}

impl Document {
    pub(crate) fn new(max: usize) -> Self {
        Document {
            bytes: Vec::new(),
            first_line: 0,
            max,
            len: 0,
        }
    }

    pub(crate) fn push(&mut self, number: u64, line: &[u8], len: usize) {
        // The line end between two lines counts; the last line's, which the stream may
        // not have, does not.
        let separator = usize::from(self.first_line != 0);
        if self.first_line == 0 {
            self.first_line = number;
        }
        self.len = self.len.saturating_add(separator + len);
        if self.len <= self.max {
            self.bytes.extend_from_slice(line);
            self.bytes.push(b'\n');
        } else {
            // Past the limit only the length is still counted: the document is refused.
            self.bytes = Vec::new();
        }
    }

    pub(crate) fn finish<O: Output>(&mut self, ctx: &ParseContext, out: &mut Vec<Decoded<O>>) {
        let document = std::mem::replace(self, Document::new(self.max));
        if document.first_line == 0 || document.bytes.iter().all(u8::is_ascii_whitespace) {
            if document.len > document.max {
                out.push(Decoded {
                    line: document.first_line,
                    result: Err(ParseError::TooLong {
                        len: document.len,
                        max: document.max,
                    }),
                });
            }
            return;
        }
        let first_line = document.first_line;
        match findings(&document.bytes) {
            Ok(found) => {
                for (offset, finding) in found {
                    out.push(Decoded {
                        line: first_line + line_of(&document.bytes, offset),
                        result: finding.normalise(ctx),
                    });
                }
            }
            Err((offset, error)) => out.push(Decoded {
                line: first_line + line_of(&document.bytes, offset),
                result: Err(error),
            }),
        }
    }
}

/// How many newlines precede `offset`.
fn line_of(bytes: &[u8], offset: usize) -> u64 {
    let end = offset.min(bytes.len());
    bytes[..end].iter().filter(|b| **b == b'\n').count() as u64
}

/// One line holding one `<result>` element (or a whole report with exactly one).
pub(crate) fn single_result<O: Output>(line: &[u8], ctx: &ParseContext) -> Result<O, ParseError> {
    let mut found = findings(line).map_err(|(_, e)| e)?;
    match found.len() {
        1 => found.remove(0).1.normalise(ctx),
        0 => Err(ParseError::MissingField { field: "result" }),
        n => Err(ParseError::invalid_value(
            "result",
            &n.to_string(),
            "results in one line: read a report through a Decoder",
        )),
    }
}

/// What the report says around its results.
#[derive(Debug, Default, Clone)]
struct ReportContext {
    report_id: Option<String>,
    task: Option<String>,
    scan_start: Option<String>,
    scan_end: Option<String>,
}

/// One `<result>`: its texts by path below it (`nvt/name`) and the attributes that
/// matter.
#[derive(Debug, Default)]
struct Finding {
    id: Option<String>,
    texts: BTreeMap<String, String>,
    nvt_oid: Option<String>,
    solution_type: Option<String>,
    severity_type: Option<String>,
    refs: Vec<(String, String)>,
    report: ReportContext,
}

struct Frame {
    name: String,
    text: String,
}

/// Every finding with the byte offset of its `<result>`, or the first XML error and
/// where it is.
#[allow(clippy::type_complexity)]
fn findings(bytes: &[u8]) -> Result<Vec<(usize, Finding)>, (usize, ParseError)> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        (
            e.valid_up_to(),
            ParseError::InvalidUtf8 {
                offset: e.valid_up_to(),
            },
        )
    })?;
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut report = ReportContext::default();
    let mut current: Option<(usize, usize, Finding)> = None;
    let mut found = Vec::new();
    let mut elements = 0usize;
    loop {
        let at = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader
            .read_event()
            .map_err(|e| (at, not_well_formed(e.to_string())))?;
        if let XmlEvent::Start(element) | XmlEvent::Empty(element) = &event {
            elements += 1;
            check_attributes(element).map_err(|e| (at, e))?;
        }
        match event {
            XmlEvent::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err((
                        at,
                        ParseError::invalid_value(
                            "greenbone report",
                            &stack.len().to_string(),
                            "levels of nesting is deeper than a GMP report goes",
                        ),
                    ));
                }
                let name = local_name(&start);
                let is_finding = current.is_none()
                    && name == "result"
                    && stack.last().is_none_or(|parent| parent.name == "results");
                if is_finding {
                    let finding = Finding {
                        id: attribute(&start, "id"),
                        report: report.clone(),
                        ..Finding::default()
                    };
                    current = Some((at, stack.len() + 1, finding));
                } else if let Some((_, depth, finding)) = current.as_mut() {
                    finding.attributes(&start, &stack[*depth..], &name);
                } else if name == "report" {
                    if let Some(id) = attribute(&start, "id") {
                        report.report_id = Some(id);
                    }
                }
                stack.push(Frame {
                    name,
                    text: String::new(),
                });
            }
            XmlEvent::Empty(empty) => {
                let name = local_name(&empty);
                if let Some((_, depth, finding)) = current.as_mut() {
                    finding.attributes(&empty, &stack[*depth..], &name);
                }
            }
            XmlEvent::Text(t) => {
                let text = t.decode().map_err(|e| (at, xml_error(e)))?;
                match stack.last_mut() {
                    Some(frame) => frame.text.push_str(&text),
                    // Outside every element only white space may stand.
                    None if text.trim().is_empty() => {}
                    None => return Err((at, outside_elements(&text))),
                }
            }
            XmlEvent::CData(t) => {
                let text = t.decode().map_err(|e| (at, xml_error(e)))?;
                match stack.last_mut() {
                    Some(frame) => frame.text.push_str(&text),
                    None => return Err((at, outside_elements(&text))),
                }
            }
            XmlEvent::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => {
                        let name = r.decode().map_err(|e| (at, xml_error(e)))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .map(str::to_owned)
                            .unwrap_or_else(|| format!("&{name};"))
                    }
                };
                match stack.last_mut() {
                    Some(frame) => frame.text.push_str(&resolved),
                    None => return Err((at, outside_elements(&resolved))),
                }
            }
            XmlEvent::End(_) => {
                let Some(frame) = stack.pop() else {
                    continue;
                };
                let text = frame.text.trim();
                match current.as_mut() {
                    Some((offset, depth, _)) if stack.len() + 1 == *depth => {
                        let offset = *offset;
                        if let Some((_, _, finding)) = current.take() {
                            found.push((offset, finding));
                        }
                    }
                    Some((_, depth, finding)) => {
                        if !text.is_empty() {
                            let mut path: Vec<&str> =
                                stack[*depth..].iter().map(|f| f.name.as_str()).collect();
                            path.push(&frame.name);
                            finding
                                .texts
                                .entry(path.join("/"))
                                .or_insert_with(|| text.to_owned());
                        }
                    }
                    None => report.take_text(&stack, &frame.name, text),
                }
            }
            XmlEvent::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        let at = text.len();
        return Err((
            at,
            ParseError::InvalidValue {
                field: "greenbone report".to_owned(),
                value: format!("<{}>", stack.last().map_or("", |f| f.name.as_str())),
                problem: "is not closed: the document ends early",
            },
        ));
    }
    if elements == 0 {
        return Err((
            0,
            ParseError::invalid_value(
                "greenbone report",
                &text.chars().take(40).collect::<String>(),
                "holds no XML element: not a GMP report",
            ),
        ));
    }
    Ok(found)
}

/// quick-xml reads an element's attributes only when asked, and checks their quoting but
/// not their names, so `<result <<id="x">` would read as an attribute named `<<id`: names
/// are checked here (ASCII rules of XML's `Name`; any non-ASCII character is let through).
fn check_attributes(element: &BytesStart<'_>) -> Result<(), ParseError> {
    for attribute in element.attributes() {
        let attribute = attribute.map_err(|e| not_well_formed(e.to_string()))?;
        let name = attribute.key.as_ref();
        if !is_xml_name(name) {
            return Err(not_well_formed(format!(
                "attribute name {:?}",
                String::from_utf8_lossy(name)
            )));
        }
    }
    Ok(())
}

/// What quick-xml (or [`check_attributes`]) found wrong, as the report's reject.
fn not_well_formed(value: String) -> ParseError {
    ParseError::InvalidValue {
        field: "greenbone report".to_owned(),
        value,
        problem: "is not well-formed XML",
    }
}

fn is_xml_name(name: &[u8]) -> bool {
    let starts = |b: u8| b.is_ascii_alphabetic() || b == b'_' || b == b':' || !b.is_ascii();
    let continues = |b: u8| starts(b) || b.is_ascii_digit() || b == b'-' || b == b'.';
    match name.split_first() {
        Some((&first, rest)) => starts(first) && rest.iter().all(|&b| continues(b)),
        None => false,
    }
}

fn outside_elements(text: &str) -> ParseError {
    ParseError::invalid_value(
        "greenbone report",
        &text.trim().chars().take(40).collect::<String>(),
        "is text outside the report's elements: not well-formed XML",
    )
}

fn xml_error(e: impl std::fmt::Display) -> ParseError {
    ParseError::InvalidValue {
        field: "greenbone report".to_owned(),
        value: e.to_string(),
        problem: "is not valid text",
    }
}

fn local_name(start: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(start.local_name().as_ref()).into_owned()
}

fn attribute(start: &BytesStart<'_>, name: &str) -> Option<String> {
    start
        .try_get_attribute(name)
        .ok()
        .flatten()
        .and_then(|a| a.unescape_value().ok())
        .map(|v| v.into_owned())
}

impl ReportContext {
    fn take_text(&mut self, stack: &[Frame], name: &str, text: &str) {
        if text.is_empty() {
            return;
        }
        let parent = stack.last().map(|f| f.name.as_str());
        match (parent, name) {
            (_, "scan_start") => self.scan_start = Some(text.to_owned()),
            (_, "scan_end") => self.scan_end = Some(text.to_owned()),
            (Some("task"), "name") => self.task = Some(text.to_owned()),
            _ => {}
        }
    }
}

impl Finding {
    fn attributes(&mut self, element: &BytesStart<'_>, below: &[Frame], name: &str) {
        let parent = below.last().map(|f| f.name.as_str());
        match (parent, name) {
            (None, "nvt") => self.nvt_oid = attribute(element, "oid"),
            (Some("nvt"), "solution") => self.solution_type = attribute(element, "type"),
            (Some("refs"), "ref") => {
                if let (Some(kind), Some(id)) =
                    (attribute(element, "type"), attribute(element, "id"))
                {
                    self.refs.push((kind, id));
                }
            }
            (Some("severities"), "severity") if self.severity_type.is_none() => {
                self.severity_type = attribute(element, "type");
            }
            _ => {}
        }
    }

    fn text(&self, path: &str) -> Option<&str> {
        self.texts.get(path).map(String::as_str)
    }

    /// The CVEs from `<refs><ref type="cve">` (GMP 8 and later) or the comma-separated
    /// `<nvt><cve>` of older servers, `NOCVE` meaning none.
    fn cves(&self) -> Vec<String> {
        let mut cves: Vec<String> = self
            .refs
            .iter()
            .filter(|(kind, _)| kind.eq_ignore_ascii_case("cve"))
            .map(|(_, id)| id.clone())
            .collect();
        if let Some(list) = self.text("nvt/cve") {
            for cve in list.split(',').map(str::trim) {
                if !cve.is_empty() && cve != "NOCVE" && !cves.iter().any(|c| c == cve) {
                    cves.push(cve.to_owned());
                }
            }
        }
        cves
    }

    fn normalise<O: Output>(&self, ctx: &ParseContext) -> Result<O, ParseError> {
        let mut out = EcsBuilder::new();
        let time = ["creation_time", "modification_time"]
            .into_iter()
            .find_map(|p| self.text(p).map(|t| (p, t.to_owned())))
            .or_else(|| self.report.scan_end.clone().map(|t| ("scan_end", t)))
            .or_else(|| self.report.scan_start.clone().map(|t| ("scan_start", t)))
            .ok_or(ParseError::MissingField {
                field: "result/creation_time",
            })?;
        out.put(ecs!("@timestamp"), utc_timestamp(time.0, &time.1)?);
        out.put(ecs!("event.kind"), "state");
        out.put_constants(ecs!("event.category"), &["vulnerability"]);
        out.put_constants(ecs!("event.type"), &["info"]);
        out.put(ecs!("event.module"), "greenbone");
        out.put(ecs!("event.dataset"), DATASET);
        out.put_str(ecs!("observer.name"), &ctx.sensor);
        out.put(ecs!("observer.vendor"), "Greenbone");
        out.put(ecs!("observer.product"), "OpenVAS");
        out.put(ecs!("observer.type"), "vulnerability-scanner");
        out.put(ecs!("vulnerability.scanner.vendor"), "Greenbone");
        if let Some(id) = &self.id {
            out.put_str(ecs!("event.id"), id);
        }
        self.map_host(&mut out)?;
        self.map_port(&mut out)?;
        self.map_nvt(&mut out)?;
        out.put(ecs!("greenbone"), Value::Object(self.to_record()));
        Ok(out.finish())
    }

    fn map_host<'t>(&'t self, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
        if let Some(host) = self.text("host") {
            match canonical_ip("host", host) {
                Ok(ip) => {
                    out.related_ip(ip.clone());
                    out.put(ecs!("host.ip"), vec![ip]);
                }
                Err(_) => {
                    out.related_host(host);
                    out.put_str(ecs!("host.name"), host);
                }
            }
        }
        if let Some(name) = self.text("host/hostname") {
            out.related_host(name);
            out.put_str(ecs!("host.hostname"), name);
            out.put_str_if_absent(ecs!("host.name"), name);
        }
        Ok(())
    }

    /// `22/tcp`, `general/tcp`, `general/icmp`, `package`.
    fn map_port<'t>(&'t self, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
        let Some(port) = self.text("port") else {
            return Ok(());
        };
        let (number, transport) = port.split_once('/').unwrap_or((port, ""));
        if !transport.is_empty() {
            out.put(ecs!("network.transport"), transport.to_ascii_lowercase());
        }
        if let Ok(number) = number.parse::<u16>() {
            out.put(ecs!("destination.port"), number);
            out.put(ecs!("service.port"), number);
        }
        Ok(())
    }

    fn map_nvt<'t>(&'t self, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
        if let Some(oid) = &self.nvt_oid {
            out.put_str(ecs!("rule.id"), oid);
            out.put_str(ecs!("vulnerability.scanner.id"), oid);
        }
        let name = self.text("nvt/name").or(self.text("name"));
        if let Some(name) = name {
            out.put_str(ecs!("rule.name"), name);
            out.put_str(ecs!("message"), name);
        }
        if let Some(family) = self.text("nvt/family") {
            out.put_strings(ecs!("vulnerability.category"), &[family]);
        }
        let cves = self.cves();
        if !cves.is_empty() {
            out.put(ecs!("vulnerability.enumeration"), "CVE");
            out.put(
                ecs!("vulnerability.id"),
                Value::Array(cves.into_iter().map(Value::String).collect()),
            );
        }
        if let Some(score) = self.text("severity") {
            let score: f64 = score
                .parse()
                .map_err(|_| ParseError::invalid_value("severity", score, "is not a CVSS score"))?;
            out.put(ecs!("vulnerability.score.base"), score);
            out.put(ecs!("vulnerability.classification"), "CVSS");
            if let Some(version) = self.severity_type.as_deref().and_then(cvss_version) {
                out.put(ecs!("vulnerability.score.version"), version);
            }
        }
        if let Some(threat) = self.text("threat") {
            out.put_str(ecs!("vulnerability.severity"), threat);
        }
        if let Some(description) = self.text("description") {
            out.put_str(ecs!("vulnerability.description"), description);
        }
        Ok(())
    }

    /// The result as a JSON tree: every text by its path, the attributes, the report
    /// context, and the NVT tags split into their `name=value` pairs.
    fn to_record(&self) -> Map<String, Value> {
        let mut root = Map::new();
        for (path, text) in &self.texts {
            insert_path(&mut root, path, Value::String(text.clone()));
        }
        if let Some(tags) = self.text("nvt/tags") {
            let mut parsed = Map::new();
            for pair in tags.split('|') {
                if let Some((key, value)) = pair.split_once('=') {
                    parsed.insert(key.to_owned(), Value::String(value.to_owned()));
                }
            }
            insert_path(&mut root, "nvt/tags", Value::Object(parsed));
        }
        let cves = self.cves();
        if let Some(id) = &self.id {
            root.insert("id".to_owned(), id.as_str().into());
        }
        if let Some(oid) = &self.nvt_oid {
            insert_path(&mut root, "nvt/oid", oid.as_str().into());
        }
        if let Some(kind) = &self.solution_type {
            insert_path(&mut root, "nvt/solution_type", kind.as_str().into());
        }
        if !self.refs.is_empty() {
            let refs = self
                .refs
                .iter()
                .map(|(kind, id)| {
                    let mut r = Map::new();
                    r.insert("type".to_owned(), kind.as_str().into());
                    r.insert("id".to_owned(), id.as_str().into());
                    Value::Object(r)
                })
                .collect();
            insert_path(&mut root, "nvt/refs", Value::Array(refs));
        }
        if !cves.is_empty() {
            insert_path(
                &mut root,
                "nvt/cves",
                Value::Array(cves.into_iter().map(Value::String).collect()),
            );
        }
        let report = [
            ("id", &self.report.report_id),
            ("task", &self.report.task),
            ("scan_start", &self.report.scan_start),
            ("scan_end", &self.report.scan_end),
        ];
        let report: Map<String, Value> = report
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), Value::String(v.clone()))))
            .collect();
        if !report.is_empty() {
            root.insert("report".to_owned(), Value::Object(report));
        }
        root
    }
}

/// `cvss_base_v3` → `3`, `cvss_base_v2` → `2`.
fn cvss_version(kind: &str) -> Option<&'static str> {
    if kind.ends_with("v4") {
        Some("4.0")
    } else if kind.ends_with("v3") {
        Some("3")
    } else if kind.ends_with("v2") {
        Some("2.0")
    } else {
        None
    }
}

/// Puts a value at an `a/b/c` path. An element with both text and children
/// (`<host>10.0.0.1<hostname>x</hostname></host>`) keeps its text as `#text`.
fn insert_path(root: &mut Map<String, Value>, path: &str, value: Value) {
    let mut map = root;
    let mut parts = path.split('/').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            map.insert(part.to_owned(), value);
            return;
        }
        let slot = map
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            let text = std::mem::replace(slot, Value::Object(Map::new()));
            if let Value::Object(inner) = slot {
                inner.insert("#text".to_owned(), text);
            }
        }
        let Value::Object(inner) = slot else {
            return;
        };
        map = inner;
    }
}
