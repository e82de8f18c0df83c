//! Zeek logs, in both writers' shapes: the ASCII writer's TSV (a `#`-header then one row
//! per record) and its JSON mode (one object per line, optionally with `_path` as the
//! json-streaming-logs package writes it). Each record is mapped to ECS by its log path
//! (conn, dns, http, ssl, files, notice, weird, x509, ssh; any other log gets the common
//! fields) and kept whole under `zeek.<path>`.
//!
//! TSV rows need their file's header, so they are read through a [`TsvHeader`] that a
//! [`crate::Decoder`] keeps per stream; JSON lines stand alone.

use std::borrow::Cow;

use serde_json::{Map, Number, Value};

use crate::ecs::{
    canonical_ip, ecs, map_endpoints, utc_timestamp, EcsBuilder, EndpointFields, Fields, Node,
    Output,
};
use crate::error::ParseError;
use crate::format::ParseContext;
use crate::json::{Doc, Members};

pub(crate) const DATASET_PREFIX: &str = "zeek";

/// How many columns a `#fields` header may declare: far above any Zeek log (conn has 22)
/// and low enough that a hostile header cannot make every row allocate without bound.
const MAX_COLUMNS: usize = 512;

/// What a TSV file's header has said so far.
#[derive(Debug, Clone)]
pub(crate) struct TsvHeader {
    separator: Vec<u8>,
    set_separator: Vec<u8>,
    empty_field: Vec<u8>,
    unset_field: Vec<u8>,
    path: Option<String>,
    fields: Vec<String>,
    types: Vec<String>,
}

impl Default for TsvHeader {
    fn default() -> Self {
        TsvHeader {
            separator: b"\t".to_vec(),
            set_separator: b",".to_vec(),
            empty_field: b"(empty)".to_vec(),
            unset_field: b"-".to_vec(),
            path: None,
            fields: Vec::new(),
            types: Vec::new(),
        }
    }
}

/// What one line of a Zeek stream is.
pub(crate) enum Line<'a> {
    /// A header, footer or comment line: no event.
    Meta,
    /// A header line that cannot be used, and why (reported as the line's reject); what
    /// it declared is not taken in.
    BadHeader(ParseError),
    Row(&'a [u8]),
    Json(&'a [u8]),
}

impl TsvHeader {
    /// Sorts a line and takes in what a header line declares. A new `#separator` starts a
    /// new file (logs concatenated, or a rotated file followed), so it resets the rest.
    pub(crate) fn classify<'a>(&mut self, line: &'a [u8]) -> Line<'a> {
        let line = trim_line_end(line);
        if line.first() == Some(&b'{') {
            return Line::Json(line);
        }
        if line.first() != Some(&b'#') {
            return Line::Row(line);
        }
        if let Some(value) = line.strip_prefix(b"#separator ") {
            // A separator that cannot be read leaves the default (a tab, what Zeek writes),
            // so the rows can still be read if that is what they use.
            let separator = strict_unescape(value).filter(|s| !s.is_empty());
            let readable = separator.is_some();
            *self = TsvHeader {
                separator: separator.unwrap_or_else(|| b"\t".to_vec()),
                ..TsvHeader::default()
            };
            if readable {
                return Line::Meta;
            }
            return Line::BadHeader(ParseError::invalid_value(
                "#separator",
                &lossy_escaped(value),
                "is not a separator (plain bytes or \\xNN escapes): a tab is used",
            ));
        }
        let Some(rest) = line.get(1..) else {
            return Line::Meta;
        };
        let (key, value) = match find(rest, &self.separator) {
            Some(at) => (&rest[..at], &rest[at + self.separator.len()..]),
            None => (rest, &b""[..]),
        };
        match key {
            b"set_separator" => self.set_separator = unescape_bytes(value),
            b"empty_field" => self.empty_field = value.to_vec(),
            b"unset_field" => self.unset_field = value.to_vec(),
            b"path" => self.path = Some(lossy_escaped(value)),
            b"fields" => {
                let names = self.split_names(value);
                if let Some(problem) = names_problem(&names) {
                    self.fields = Vec::new();
                    return Line::BadHeader(problem);
                }
                self.fields = names;
                return self.check_types();
            }
            b"types" => {
                self.types = self.split_names(value);
                return self.check_types();
            }
            // `#open`, `#close` and comments such as btest's banner carry no schema.
            _ => {}
        }
        Line::Meta
    }

    /// `#types` and `#fields` must name as many columns. When they do not, the header line
    /// is reported; the types still apply column by column (a column without one is read
    /// as a string, extra types are unused), so the rows are read as far as they can be.
    fn check_types<'a>(&self) -> Line<'a> {
        if self.fields.is_empty() || self.types.is_empty() || self.fields.len() == self.types.len()
        {
            return Line::Meta;
        }
        Line::BadHeader(ParseError::invalid_value(
            "#types",
            &format!(
                "{} types for {} #fields",
                self.types.len(),
                self.fields.len()
            ),
            "do not match the columns: a column without a type is read as a string",
        ))
    }

    fn split_names(&self, value: &[u8]) -> Vec<String> {
        split(value, &self.separator)
            .take(MAX_COLUMNS)
            .map(lossy_escaped)
            .collect()
    }

    /// One data row as the flat record Zeek's JSON writer would have written for it:
    /// unset fields left out, sets and vectors as arrays, numbers as numbers.
    pub(crate) fn row(&self, row: &[u8]) -> Result<Map<String, Value>, ParseError> {
        if self.fields.is_empty() {
            return Err(ParseError::MissingField {
                field: "#fields header before the first row",
            });
        }
        let count = split(row, &self.separator).count();
        if count != self.fields.len() {
            return Err(ParseError::ColumnCount {
                found: count,
                expected: self.fields.len(),
            });
        }
        let mut record = Map::with_capacity(self.fields.len());
        for (i, raw) in split(row, &self.separator).enumerate() {
            if raw == self.unset_field.as_slice() {
                continue;
            }
            let name = &self.fields[i];
            let kind = self.types.get(i).map_or("string", String::as_str);
            record.insert(name.clone(), self.value(name, kind, raw)?);
        }
        Ok(record)
    }

    fn value(&self, name: &str, kind: &str, raw: &[u8]) -> Result<Value, ParseError> {
        if let Some(inner) = kind
            .strip_prefix("set[")
            .or_else(|| kind.strip_prefix("vector["))
            .and_then(|k| k.strip_suffix(']'))
        {
            if raw == self.empty_field.as_slice() {
                return Ok(Value::Array(Vec::new()));
            }
            return split(raw, &self.set_separator)
                .map(|item| {
                    if item == self.unset_field.as_slice() {
                        Ok(Value::Null)
                    } else {
                        scalar(name, inner, item)
                    }
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array);
        }
        if raw == self.empty_field.as_slice() && kind == "string" {
            return Ok(Value::String(String::new()));
        }
        scalar(name, kind, raw)
    }

    pub(crate) fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }
}

/// One TSV value of a scalar Zeek type, as Zeek's JSON writer types it.
fn scalar(name: &str, kind: &str, raw: &[u8]) -> Result<Value, ParseError> {
    let text = || lossy_escaped(raw);
    let invalid = |problem| ParseError::invalid_value(name, &text(), problem);
    match kind {
        "count" | "port" => std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Value::from)
            .ok_or_else(|| invalid("is not a non-negative integer")),
        "int" => std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .map(Value::from)
            .ok_or_else(|| invalid("is not an integer")),
        "time" | "interval" | "double" => std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| {
                if kind == "time" {
                    ParseError::invalid_timestamp(name, &text())
                } else {
                    invalid("is not a number")
                }
            }),
        "bool" => match raw {
            b"T" => Ok(Value::Bool(true)),
            b"F" => Ok(Value::Bool(false)),
            _ => Err(invalid("is not T or F")),
        },
        _ => Ok(Value::String(text())),
    }
}

/// Parses one Zeek JSON line. Raw invalid UTF-8 inside a string (a writer that did not
/// escape, a file cut mid-character) is escaped as `\xNN`, the form Zeek itself uses for
/// such bytes, instead of costing the whole record.
pub(crate) fn json_record(line: &[u8]) -> Result<Members<'_>, ParseError> {
    crate::json::check_depth(line)?;
    match std::str::from_utf8(line) {
        // Kept in Zeek's order, which is the order the record is published in.
        Ok(text) => crate::json::members_of(crate::json::doc_in_written_order(text)),
        Err(_) => {
            let escaped = escape_invalid_utf8_in_json(line);
            crate::json::members_of(
                crate::json::doc_in_written_order(&escaped).map(Doc::into_owned),
            )
        }
    }
}

/// Maps one flat Zeek record (keys as Zeek names them, `id.orig_h`). `path_hint` is the
/// TSV header's `#path` or what the stream's origin says; `_path` in the record wins.
pub(crate) fn normalise<O: Output>(
    mut record: Members<'_>,
    path_hint: Option<&str>,
    original: Option<&str>,
    ctx: &ParseContext,
) -> Result<O, ParseError> {
    let path = match record.remove("_path") {
        Some(Doc::String(path)) => path,
        Some(other) => return Err(ParseError::wrong_type("_path", "a string", &other)),
        None => Cow::Borrowed(path_hint.unwrap_or_else(|| guess_path(&record))),
    };
    let path = sanitise_path(&path);
    let mut out = EcsBuilder::new();
    let zeek = Fields::new(&record, "");
    map_common(zeek, &path, ctx, &mut out)?;
    match path.as_str() {
        "conn" => map_conn(zeek, &mut out)?,
        "dns" => map_dns(zeek, &mut out)?,
        "http" => map_http(zeek, &mut out)?,
        "ssl" => map_ssl(zeek, &mut out)?,
        "files" => map_files(zeek, &mut out)?,
        "notice" => map_notice(zeek, &mut out)?,
        "weird" => map_weird(zeek, &mut out)?,
        "x509" => map_x509(zeek, &mut out)?,
        "ssh" => map_ssh(zeek, &mut out)?,
        _ => {}
    }
    if let Some(original) = original {
        out.put_str(ecs!("event.original"), original);
    }
    out.put_under(ecs!("zeek"), path, Node::Dotted(&record));
    Ok(out.finish())
}

/// A path fit to be one key of `zeek.<path>` and an `event.dataset` suffix.
fn sanitise_path(path: &str) -> String {
    let clean = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if !path.is_empty() && path.len() <= 64 && path.bytes().all(clean) {
        return path.to_owned();
    }
    let clean: String = path
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if clean.is_empty() {
        "unknown".to_owned()
    } else {
        clean
    }
}

/// A log's path from the fields only it has, for JSON logs written without `_path` and
/// read without a file name that tells.
fn guess_path(record: &Members<'_>) -> &'static str {
    let has = |key: &str| record.contains_key(key);
    if has("conn_state") || has("orig_ip_bytes") {
        "conn"
    } else if has("qtype_name") || (has("query") && has("trans_id")) {
        "dns"
    } else if has("method") || has("status_code") || has("user_agent") {
        "http"
    } else if has("cipher") || has("server_name") || has("established") {
        "ssl"
    } else if has("certificate.serial") || has("certificate.subject") {
        "x509"
    } else if has("note") {
        "notice"
    } else if has("fuid") && (has("mime_type") || has("seen_bytes") || has("source")) {
        "files"
    } else if has("auth_success") || has("hassh") {
        "ssh"
    } else if has("name") && has("peer") {
        "weird"
    } else {
        "unknown"
    }
}

/// The log path a file name implies: `conn.log`, `conn.00:00:00-01:00:00.log.gz` and
/// `/var/log/zeek/current/dns.log` name conn, conn and dns.
pub(crate) fn path_from_file_name(origin: &str) -> Option<String> {
    let name = origin.rsplit(['/', '\\']).next()?;
    let stem = name.split('.').next()?;
    let looks_like_path =
        !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    (looks_like_path && name.contains(".log")).then(|| stem.to_owned())
}

fn map_common<'t>(
    zeek: Fields<'t>,
    path: &str,
    ctx: &'t ParseContext,
    out: &mut EcsBuilder<'t>,
) -> Result<(), ParseError> {
    let ts = zeek
        .present_value("ts")
        .ok_or(ParseError::MissingField { field: "ts" })?;
    out.put(ecs!("@timestamp"), zeek_time("ts", ts)?);
    out.put(ecs!("event.kind"), "event");
    out.put(ecs!("event.module"), "zeek");
    out.put(ecs!("event.dataset"), dataset(path));
    out.put_str(ecs!("observer.name"), &ctx.sensor);
    out.put(ecs!("observer.product"), "Zeek");
    out.put(ecs!("observer.vendor"), "Zeek");
    out.put(ecs!("observer.type"), "ids");
    if let Some(uid) = zeek.str("uid")? {
        out.put_str(ecs!("zeek.session_id"), uid);
    }
    map_endpoints(
        zeek,
        &EndpointFields {
            source_ip: "id.orig_h",
            destination_ip: "id.resp_h",
            source_port: "id.orig_p",
            destination_port: "id.resp_p",
            transport: "proto",
        },
        out,
    )?;
    if let Some(id) = zeek.str("community_id")? {
        out.put_str(ecs!("network.community_id"), id);
    }
    Ok(())
}

/// `zeek.<path>`, without building it for the logs Kastell maps.
fn dataset(path: &str) -> Cow<'static, str> {
    Cow::Borrowed(match path {
        "conn" => "zeek.conn",
        "dns" => "zeek.dns",
        "http" => "zeek.http",
        "ssl" => "zeek.ssl",
        "files" => "zeek.files",
        "notice" => "zeek.notice",
        "weird" => "zeek.weird",
        "x509" => "zeek.x509",
        "ssh" => "zeek.ssh",
        _ => return Cow::Owned(format!("{DATASET_PREFIX}.{path}")),
    })
}

fn map_conn<'t>(zeek: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    out.put_constants(ecs!("event.category"), &["network"]);
    out.put_constants(ecs!("event.type"), &["connection", "end"]);
    if let Some(service) = zeek.str("service")? {
        // Zeek lists every analyser that confirmed, `ssl,http`; ECS wants one protocol.
        if let Some(first) = service.split(',').next().filter(|s| !s.is_empty()) {
            out.put(ecs!("network.protocol"), crate::ecs::ascii_lowercase(first));
        }
    }
    if let Some(duration) = zeek.seconds("duration")? {
        out.put(ecs!("event.duration"), seconds_to_nanos(duration));
    }
    let bytes_out = zeek.u64("orig_ip_bytes")?;
    let bytes_in = zeek.u64("resp_ip_bytes")?;
    let packets_out = zeek.u64("orig_pkts")?;
    let packets_in = zeek.u64("resp_pkts")?;
    put_pair(out, "bytes", bytes_out, bytes_in);
    put_pair(out, "packets", packets_out, packets_in);
    if let Some(state) = zeek.str("conn_state")? {
        out.put_str(ecs!("network.connection.state"), state);
    }
    Ok(())
}

fn put_pair<'t>(
    out: &mut EcsBuilder<'t>,
    what: &str,
    to_server: Option<u64>,
    to_client: Option<u64>,
) {
    let (source, destination, network) = match what {
        "bytes" => (
            ecs!("source.bytes"),
            ecs!("destination.bytes"),
            ecs!("network.bytes"),
        ),
        _ => (
            ecs!("source.packets"),
            ecs!("destination.packets"),
            ecs!("network.packets"),
        ),
    };
    if let Some(n) = to_server {
        out.put(source, n);
    }
    if let Some(n) = to_client {
        out.put(destination, n);
    }
    if let (Some(a), Some(b)) = (to_server, to_client) {
        out.put(network, a.saturating_add(b));
    }
}

fn map_dns<'t>(zeek: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    out.put_constants(ecs!("event.category"), &["network"]);
    out.put_constants(ecs!("event.type"), &["protocol", "info"]);
    out.put(ecs!("network.protocol"), "dns");
    if let Some(id) = zeek.u64("trans_id")? {
        out.put(ecs!("dns.id"), crate::ecs::decimal(id));
    }
    if let Some(name) = zeek.str("query")? {
        out.related_host(name);
        out.put_str(ecs!("dns.question.name"), name);
    }
    if let Some(qtype) = zeek.str("qtype_name")? {
        out.put_str(ecs!("dns.question.type"), qtype);
    }
    if let Some(class) = zeek.str("qclass_name")? {
        out.put_str(ecs!("dns.question.class"), class);
    }
    let rcode = zeek.str("rcode_name")?;
    out.put(
        ecs!("dns.type"),
        if rcode.is_some() { "answer" } else { "query" },
    );
    if let Some(rcode) = rcode {
        out.put_str(ecs!("dns.response_code"), rcode);
    }
    let mut flags = Vec::new();
    for flag in ["AA", "TC", "RD", "RA"] {
        if zeek.bool(flag)? == Some(true) {
            flags.push(flag);
        }
    }
    if !flags.is_empty() {
        out.put_strings(ecs!("dns.header_flags"), &flags);
    }
    let answers = zeek.strings("answers")?;
    if !answers.is_empty() {
        let mut resolved = Vec::new();
        let mut mapped = Vec::with_capacity(answers.len());
        for answer in answers {
            let mut item = Map::new();
            item.insert("data".to_owned(), answer.into());
            mapped.push(Value::Object(item));
            if let Ok(ip) = canonical_ip("answers", answer) {
                out.related_ip(ip.clone());
                resolved.push(ip);
            }
        }
        out.put(ecs!("dns.answers"), Value::Array(mapped));
        if !resolved.is_empty() {
            out.put(ecs!("dns.resolved_ip"), resolved);
        }
    }
    Ok(())
}

fn map_http<'t>(zeek: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    out.put_constants(ecs!("event.category"), &["network", "web"]);
    out.put_constants(ecs!("event.type"), &["connection", "protocol"]);
    out.put(ecs!("network.protocol"), "http");
    if let Some(method) = zeek.str("method")? {
        out.put_str(ecs!("http.request.method"), method);
    }
    if let Some(host) = zeek.str("host")? {
        out.related_host(host);
        out.put_str(ecs!("url.domain"), host);
        out.put_str(ecs!("destination.domain"), host);
    }
    if let Some(uri) = zeek.str("uri")? {
        out.put_str(ecs!("url.original"), uri);
    }
    if let Some(referrer) = zeek.str("referrer")? {
        out.put_str(ecs!("http.request.referrer"), referrer);
    }
    if let Some(version) = zeek.str("version")? {
        out.put_str(ecs!("http.version"), version);
    }
    if let Some(agent) = zeek.str("user_agent")? {
        out.put_str(ecs!("user_agent.original"), agent);
    }
    if let Some(n) = zeek.u64("request_body_len")? {
        out.put(ecs!("http.request.body.bytes"), n);
    }
    if let Some(n) = zeek.u64("response_body_len")? {
        out.put(ecs!("http.response.body.bytes"), n);
    }
    if let Some(status) = zeek.u64("status_code")? {
        out.put(ecs!("http.response.status_code"), status);
    }
    if let Some(user) = zeek.text("username")? {
        out.related_user(user);
        out.put_str(ecs!("user.name"), user);
    }
    let mime = zeek.strings("resp_mime_types")?;
    if let Some(first) = mime.first() {
        out.put_str(ecs!("http.response.mime_type"), first);
    }
    Ok(())
}

fn map_ssl<'t>(zeek: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    out.put_constants(ecs!("event.category"), &["network"]);
    out.put_constants(ecs!("event.type"), &["connection", "protocol"]);
    out.put(ecs!("network.protocol"), "tls");
    if let Some(version) = zeek.str("version")? {
        // `TLSv12`, `TLSv13`, `SSLv3`, `DTLSv12`: protocol name, then major and minor.
        let (protocol, number) = version
            .split_once('v')
            .map_or((version, ""), |(p, n)| (p, n));
        out.put(ecs!("tls.version_protocol"), protocol.to_ascii_lowercase());
        let dotted = match number.as_bytes() {
            [major, minor] => format!("{}.{}", *major as char, *minor as char),
            _ => number.to_owned(),
        };
        if !dotted.is_empty() {
            out.put(ecs!("tls.version"), dotted);
        }
    }
    if let Some(cipher) = zeek.str("cipher")? {
        out.put_str(ecs!("tls.cipher"), cipher);
    }
    if let Some(curve) = zeek.str("curve")? {
        out.put_str(ecs!("tls.curve"), curve);
    }
    if let Some(name) = zeek.str("server_name")? {
        out.related_host(name);
        out.put_str(ecs!("tls.client.server_name"), name);
        out.put_str(ecs!("destination.domain"), name);
    }
    if let Some(resumed) = zeek.bool("resumed")? {
        out.put(ecs!("tls.resumed"), resumed);
    }
    if let Some(established) = zeek.bool("established")? {
        out.put(ecs!("tls.established"), established);
    }
    if let Some(next) = zeek.str("next_protocol")? {
        out.put_str(ecs!("tls.next_protocol"), next);
    }
    if let Some(subject) = zeek.str("subject")? {
        out.put_str(ecs!("tls.server.subject"), subject);
    }
    if let Some(issuer) = zeek.str("issuer")? {
        out.put_str(ecs!("tls.server.issuer"), issuer);
    }
    if let Some(ja3) = zeek.str("ja3")? {
        out.put_str(ecs!("tls.client.ja3"), ja3);
    }
    if let Some(ja3s) = zeek.str("ja3s")? {
        out.put_str(ecs!("tls.server.ja3s"), ja3s);
    }
    Ok(())
}

fn map_files<'t>(zeek: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    out.put_constants(ecs!("event.category"), &["file"]);
    out.put_constants(ecs!("event.type"), &["info"]);
    if let Some(fuid) = zeek.str("fuid")? {
        out.put_str(ecs!("file.uid"), fuid);
    }
    if let Some(mime) = zeek.str("mime_type")? {
        out.put_str(ecs!("file.mime_type"), mime);
    }
    if let Some(name) = zeek.text("filename")? {
        out.put_str(ecs!("file.name"), name);
    }
    if let Some(size) = zeek.u64("total_bytes")?.or(zeek.u64("seen_bytes")?) {
        out.put(ecs!("file.size"), size);
    }
    for algorithm in ["md5", "sha1", "sha256"] {
        if let Some(hash) = zeek.str(algorithm)? {
            out.related_hash(hash);
            out.put_dyn(&format!("file.hash.{algorithm}"), hash);
        }
    }
    // Zeek before 5.0 named the endpoints of a transfer in sets rather than `id.*`.
    for (key, ecs) in [
        ("tx_hosts", ecs!("source.ip")),
        ("rx_hosts", ecs!("destination.ip")),
    ] {
        for (i, raw) in zeek.strings(key)?.into_iter().enumerate() {
            let ip = canonical_ip(&zeek.label(key), raw)?;
            out.related_ip(ip.clone());
            if i == 0 {
                out.put_str_if_absent(ecs, &ip);
            }
        }
    }
    Ok(())
}

fn map_notice<'t>(zeek: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    out.put(ecs!("event.kind"), "alert");
    out.put_constants(ecs!("event.category"), &["network", "intrusion_detection"]);
    out.put_constants(ecs!("event.type"), &["info"]);
    if let Some(note) = zeek.str("note")? {
        out.put_str(ecs!("rule.name"), note);
    }
    if let Some(msg) = zeek.str("msg")? {
        out.put_str(ecs!("message"), msg);
    }
    if let Some(ip) = zeek.ip("src")? {
        out.related_ip(ip.clone());
        out.put_str_if_absent(ecs!("source.ip"), &ip);
    }
    if let Some(ip) = zeek.ip("dst")? {
        out.related_ip(ip.clone());
        out.put_str_if_absent(ecs!("destination.ip"), &ip);
    }
    if let Some(port) = zeek.port("p")? {
        if !out.has("destination.port") {
            out.put(ecs!("destination.port"), port);
        }
    }
    Ok(())
}

fn map_weird<'t>(zeek: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    out.put(ecs!("event.kind"), "alert");
    out.put_constants(ecs!("event.category"), &["network"]);
    out.put_constants(ecs!("event.type"), &["info"]);
    if let Some(name) = zeek.str("name")? {
        out.put_str(ecs!("rule.name"), name);
    }
    Ok(())
}

fn map_x509<'t>(zeek: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    out.put_constants(ecs!("event.category"), &["network"]);
    out.put_constants(ecs!("event.type"), &["info"]);
    let strings = [
        ("certificate.serial", ecs!("x509.serial_number")),
        (
            "certificate.subject",
            ecs!("x509.subject.distinguished_name"),
        ),
        ("certificate.issuer", ecs!("x509.issuer.distinguished_name")),
        ("certificate.key_alg", ecs!("x509.public_key_algorithm")),
        ("certificate.sig_alg", ecs!("x509.signature_algorithm")),
        ("certificate.curve", ecs!("x509.public_key_curve")),
    ];
    for (key, ecs) in strings {
        if let Some(value) = zeek.str(key)? {
            out.put_str(ecs, value);
        }
    }
    if let Some(version) = zeek.u64("certificate.version")? {
        out.put(ecs!("x509.version_number"), version.to_string());
    }
    if let Some(bits) = zeek.u64("certificate.key_length")? {
        out.put(ecs!("x509.public_key_size"), bits);
    }
    for (key, ecs) in [
        ("certificate.not_valid_before", ecs!("x509.not_before")),
        ("certificate.not_valid_after", ecs!("x509.not_after")),
    ] {
        if let Some(value) = zeek.present_value(key) {
            out.put(ecs, zeek_time(key, value)?);
        }
    }
    let names = zeek.strings("san.dns")?;
    for name in &names {
        out.related_host(*name);
    }
    if !names.is_empty() {
        out.put_strings(ecs!("x509.alternative_names"), &names);
    }
    if let Some(fingerprint) = zeek.str("fingerprint")? {
        out.related_hash(fingerprint);
        out.put_str(ecs!("file.hash.sha256"), fingerprint);
    }
    Ok(())
}

fn map_ssh<'t>(zeek: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    out.put_constants(ecs!("event.category"), &["network"]);
    out.put_constants(ecs!("event.type"), &["connection", "protocol"]);
    out.put(ecs!("network.protocol"), "ssh");
    match zeek.bool("auth_success")? {
        Some(true) => out.put(ecs!("event.outcome"), "success"),
        Some(false) => out.put(ecs!("event.outcome"), "failure"),
        None => {}
    }
    if let Some(client) = zeek.str("client")? {
        out.put_str(ecs!("source.service.name"), client);
    }
    if let Some(server) = zeek.str("server")? {
        out.put_str(ecs!("destination.service.name"), server);
    }
    Ok(())
}

/// A Zeek `time`: epoch seconds (the default in both writers) or an ISO 8601 string
/// (`LogAscii::json_timestamps=JSON::TS_ISO8601`).
fn zeek_time(field: &str, value: &Doc<'_>) -> Result<String, ParseError> {
    match value {
        Doc::Number(n) => n
            .as_f64()
            .and_then(epoch_to_rfc3339)
            .ok_or_else(|| ParseError::invalid_timestamp(field, &n.to_string())),
        Doc::String(s) => utc_timestamp(field, s),
        other => Err(ParseError::wrong_type(field, "a time", other)),
    }
}

/// Epoch seconds with up to microsecond precision, as Zeek prints them.
pub(crate) fn epoch_to_rfc3339(seconds: f64) -> Option<String> {
    if !seconds.is_finite() {
        return None;
    }
    let micros = (seconds * 1e6).round();
    // Beyond chrono's range (and any real log) the cast would saturate silently.
    if micros.abs() > 8.0e18 {
        return None;
    }
    let time = chrono::DateTime::from_timestamp_micros(micros as i64)?;
    Some(crate::ecs::rfc3339_utc(&time))
}

fn seconds_to_nanos(seconds: f64) -> u64 {
    let nanos = (seconds * 1e9).round();
    if nanos.is_finite() && nanos > 0.0 && nanos < 1.8e19 {
        nanos as u64
    } else {
        0
    }
}

impl<'a> Fields<'a> {
    /// A Zeek interval: seconds as a JSON number.
    fn seconds(&self, key: &str) -> Result<Option<f64>, ParseError> {
        match self.present_value(key) {
            None => Ok(None),
            Some(Doc::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(ParseError::wrong_type(&self.label(key), "a number", other)),
        }
    }
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    &line[..end]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Splits on a (possibly multi-byte) separator; an empty separator yields the whole value.
fn split<'a>(value: &'a [u8], separator: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let current = rest?;
        match find(current, separator) {
            Some(at) => {
                rest = Some(&current[at + separator.len()..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// Why a `#fields` list cannot name a record's members: an empty name, or one twice.
fn names_problem(names: &[String]) -> Option<ParseError> {
    if let Some(at) = names.iter().position(String::is_empty) {
        return Some(ParseError::invalid_value(
            "#fields",
            &format!("column {}", at + 1),
            "has no name",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let twice = names.iter().find(|name| !seen.insert(name.as_str()))?;
    Some(ParseError::invalid_value(
        "#fields",
        twice,
        "is declared twice",
    ))
}

/// [`unescape_bytes`] that refuses a backslash not starting a `\xNN` escape.
fn strict_unescape(value: &[u8]) -> Option<Vec<u8>> {
    let mut from = 0;
    while let Some(at) = memchr::memchr(b'\\', &value[from..]) {
        hex_escape_at(value, from + at)?;
        from += at + 4;
    }
    Some(unescape_bytes(value))
}

/// Decodes the `\xNN` escapes of a header value (`#separator \x09`).
fn unescape_bytes(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if let Some(byte) = hex_escape_at(value, i) {
            out.push(byte);
            i += 4;
        } else {
            out.push(value[i]);
            i += 1;
        }
    }
    out
}

fn hex_escape_at(value: &[u8], i: usize) -> Option<u8> {
    match value.get(i..i + 4)? {
        [b'\\', b'x', hi, lo] => {
            let digit = |d: u8| (d as char).to_digit(16);
            Some(u8::try_from(digit(*hi)? * 16 + digit(*lo)?).ok()?)
        }
        _ => None,
    }
}

/// A TSV value as text. Zeek's `\xNN` escapes are decoded where the bytes they stand for
/// are printable UTF-8 (a tab or comma escaped because it is a separator, a multi-byte
/// character); bytes that would not make valid, printable text, and raw invalid UTF-8, are
/// written `\xNN`, which is how Zeek's JSON writer shows them, so a log reads the same
/// whichever writer produced it.
pub(crate) fn lossy_escaped(value: &[u8]) -> String {
    if !value.contains(&b'\\') {
        if let Ok(text) = std::str::from_utf8(value) {
            return text.to_owned();
        }
    }
    let mut bytes = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if let Some(byte) = hex_escape_at(value, i) {
            bytes.push(byte);
            i += 4;
        } else {
            bytes.push(value[i]);
            i += 1;
        }
    }
    escape_bytes(&bytes)
}

/// Valid UTF-8 passes as it is, except control characters other than tab; everything else
/// becomes `\xNN`.
fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() && c != '\t' {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    push_hex(&mut out, b);
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            push_hex(&mut out, *b);
        }
    }
    out
}

fn push_hex(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('\\');
    out.push('x');
    out.push(HEX[usize::from(byte >> 4)] as char);
    out.push(HEX[usize::from(byte & 0xf)] as char);
}

/// Rewrites each invalid UTF-8 byte of a JSON text as the JSON escape of `\xNN`. Such
/// bytes can only be inside strings in a record that is otherwise valid JSON, where a
/// `\\xNN` is a legal escape; in a broken record the JSON parser still reports the break.
fn escape_invalid_utf8_in_json(line: &[u8]) -> String {
    let mut out = String::with_capacity(line.len() + 16);
    for chunk in line.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push('\\');
            push_hex(&mut out, *b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_decode_to_text_only_where_the_bytes_are_text() {
        assert_eq!(lossy_escaped(b"a\\x09b\\x2cc"), "a\tb,c");
        assert_eq!(lossy_escaped(b"caf\\xc3\\xa9"), "café");
        assert_eq!(lossy_escaped(b"bad\\xf9byte"), "bad\\xf9byte");
        assert_eq!(lossy_escaped(b"raw\xffbyte"), "raw\\xffbyte");
        assert_eq!(lossy_escaped(b"nul\\x00"), "nul\\x00");
        assert_eq!(lossy_escaped(b"\\x4"), "\\x4");
    }

    #[test]
    fn epoch_times_keep_microseconds() {
        assert_eq!(
            epoch_to_rfc3339(1_773_760_507.074_261).unwrap(),
            "2026-03-17T15:15:07.074261Z"
        );
        assert_eq!(epoch_to_rfc3339(0.0).unwrap(), "1970-01-01T00:00:00Z");
        assert!(epoch_to_rfc3339(f64::NAN).is_none());
        assert!(epoch_to_rfc3339(1e300).is_none());
    }

    #[test]
    fn file_names_name_their_log() {
        assert_eq!(path_from_file_name("/x/conn.log").as_deref(), Some("conn"));
        assert_eq!(
            path_from_file_name("dns.00:00:00-01:00:00.log.gz").as_deref(),
            Some("dns")
        );
        assert_eq!(path_from_file_name("eve.json"), None);
        assert_eq!(path_from_file_name("-"), None);
    }

    #[test]
    fn nesting_never_overwrites() {
        use crate::ecs::nest;
        let mut flat = Map::new();
        flat.insert("id.orig_h".into(), "10.0.0.1".into());
        flat.insert("a".into(), 1.into());
        flat.insert("a.b".into(), 2.into());
        flat.insert("c".into(), serde_json::json!({"d": 3}));
        flat.insert("c.e".into(), 4.into());
        flat.insert("c.d.f".into(), 5.into());
        let flat = Members::from_map(flat);
        let written = |node: &Node<'_>| {
            let mut out = Vec::new();
            crate::ecs::write_node(&mut out, node);
            String::from_utf8(out).unwrap()
        };
        let nested: Value = serde_json::from_str(&written(&nest(&flat))).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&written(&Node::Dotted(&flat))).unwrap(),
            nested
        );
        assert_eq!(nested["id"]["orig_h"], "10.0.0.1");
        assert_eq!(nested["a"], 1);
        assert_eq!(nested["a.b"], 2);
        assert_eq!(nested["c"], serde_json::json!({"d": 3, "e": 4}));
        assert_eq!(nested["c.d.f"], 5);
        // Written in key order, as the event's maps are.
        let mut node = nest(&flat);
        node.sort();
        assert_eq!(
            written(&node),
            r#"{"a":1,"a.b":2,"c":{"d":3,"e":4},"c.d.f":5,"id":{"orig_h":"10.0.0.1"}}"#
        );
    }
}
