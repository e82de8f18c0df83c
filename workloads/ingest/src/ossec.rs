//! OSSEC alerts in both of ossec-analysisd's outputs: `alerts.json` (`jsonout_output`,
//! one object per line) and the classic `alerts.log`, where each alert is a block of
//! lines opened by `** Alert <epoch>.<offset>:`. A block is turned into the record the
//! JSON output would have written for it, so one mapping serves both, and the record is
//! kept under `ossec`.

use chrono::NaiveDateTime;
use serde_json::{Map, Value};

use crate::decoder::Decoded;
use crate::ecs::{base_name, ecs, EcsBuilder, Fields, Output};
use crate::error::ParseError;
use crate::format::{parse_record, Format, ParseContext};
use crate::json::{Doc, Members};
use crate::zeek::epoch_to_rfc3339;

pub(crate) const DATASET: &str = "ossec.alerts";

const ALERT_OPENER: &[u8] = b"** Alert ";

/// The alerts.log block being read.
#[derive(Debug, Default)]
pub(crate) struct Block {
    start: u64,
    lines: Vec<String>,
    bytes: usize,
    /// Set once the block outgrew the line limit: it is rejected, not kept.
    overflow: bool,
    open: bool,
}

impl Block {
    /// Takes one line of an OSSEC stream. A JSON line is an alert of its own; an
    /// `** Alert` line opens a block and a blank line closes it.
    pub(crate) fn push<O: Output>(
        &mut self,
        number: u64,
        line: &[u8],
        ctx: &ParseContext,
        out: &mut Vec<Decoded<O>>,
    ) {
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            self.flush(ctx, out);
            return;
        }
        if line.starts_with(ALERT_OPENER) {
            self.flush(ctx, out);
            *self = Block {
                start: number,
                open: true,
                ..Block::default()
            };
        } else if !self.open {
            let result = if trimmed.first() == Some(&b'{') {
                parse_record(Format::Ossec, line, ctx)
            } else {
                Err(ParseError::MissingField {
                    field: "the ** Alert header of an alerts.log block",
                })
            };
            out.push(Decoded {
                line: number,
                result,
            });
            return;
        }
        self.bytes = self.bytes.saturating_add(line.len() + 1);
        if self.bytes > ctx.options.max_line_bytes {
            self.overflow = true;
            self.lines.clear();
            return;
        }
        if !self.overflow {
            self.lines.push(String::from_utf8_lossy(line).into_owned());
        }
    }

    /// Parses the open block, if any.
    pub(crate) fn flush<O: Output>(&mut self, ctx: &ParseContext, out: &mut Vec<Decoded<O>>) {
        if !self.open {
            return;
        }
        let block = std::mem::take(self);
        let result = if block.overflow {
            Err(ParseError::TooLong {
                len: block.bytes,
                max: ctx.options.max_line_bytes,
            })
        } else {
            parse_block(&block.lines, ctx)
        };
        out.push(Decoded {
            line: block.start,
            result,
        });
    }
}

/// One alerts.log block as the record `alerts.json` would hold.
fn parse_block<O: Output>(lines: &[String], ctx: &ParseContext) -> Result<O, ParseError> {
    let mut record = Map::new();
    let mut rest = lines.iter().map(String::as_str);
    let header = rest.next().unwrap_or_default();
    read_header(header, &mut record)?;
    let origin = rest.next().ok_or(ParseError::MissingField {
        field: "the date and location line of an alerts.log block",
    })?;
    read_origin(origin, &mut record, ctx)?;
    let mut rule = Map::new();
    if let Some(groups) = record.remove("group") {
        rule.insert("group".to_owned(), groups);
    }
    let rule_line = rest.next().ok_or(ParseError::MissingField {
        field: "the Rule: line of an alerts.log block",
    })?;
    read_rule(rule_line, &mut rule)?;
    record.insert("rule".to_owned(), Value::Object(rule));

    let mut log = Vec::new();
    for line in rest {
        match line.split_once(": ").and_then(|(key, value)| {
            let field = match key {
                "Src IP" => "srcip",
                "Src Port" => "srcport",
                "Dst IP" => "dstip",
                "Dst Port" => "dstport",
                "User" => "dstuser",
                "Src User" => "srcuser",
                _ => return None,
            };
            Some((field, value))
        }) {
            Some((field, value)) if log.is_empty() => {
                record.insert(field.to_owned(), value.trim().into());
            }
            _ => log.push(line),
        }
    }
    if !log.is_empty() {
        record.insert("full_log".to_owned(), log.join("\n").into());
    }
    let original = ctx.options.keep_original.then(|| lines.join("\n"));
    normalise_json(Members::from_map(record), original.as_deref(), ctx)
}

/// `** Alert 1565277360.1234: mail  - syslog,sshd,authentication_failed,`
fn read_header(line: &str, record: &mut Map<String, Value>) -> Result<(), ParseError> {
    let rest = line.strip_prefix("** Alert ").unwrap_or(line);
    let (id, rest) = rest.split_once(':').ok_or_else(|| {
        ParseError::invalid_value("** Alert", line, "has no `:` after the alert id")
    })?;
    record.insert("id".to_owned(), id.trim().into());
    if let Some((_, groups)) = rest.split_once("- ") {
        record.insert("group".to_owned(), groups.trim().into());
    }
    Ok(())
}

/// `2019 Aug 08 15:16:00 (agent) 10.0.0.5->/var/log/secure` or
/// `2019 Aug 08 15:16:00 host->/var/log/secure`.
fn read_origin(
    line: &str,
    record: &mut Map<String, Value>,
    ctx: &ParseContext,
) -> Result<(), ParseError> {
    let date = line.get(..20).unwrap_or(line);
    let local = NaiveDateTime::parse_from_str(date, "%Y %b %d %H:%M:%S")
        .map_err(|_| ParseError::invalid_timestamp("alerts.log date", date))?;
    let zoned = ctx
        .options
        .timezone
        .to_utc(local)
        .ok_or_else(|| ParseError::invalid_timestamp("alerts.log date", date))?;
    record.insert(
        "timestamp".to_owned(),
        zoned
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            .into(),
    );
    let origin = line.get(20..).unwrap_or_default().trim();
    let (host, location) = origin.split_once("->").unwrap_or((origin, ""));
    let host = host.trim();
    if let Some(agent) = host.strip_prefix('(') {
        let (name, ip) = agent.split_once(')').unwrap_or((agent, ""));
        record.insert("hostname".to_owned(), name.into());
        let ip = ip.trim();
        if !ip.is_empty() && ip != "any" {
            record.insert("agent_ip".to_owned(), ip.into());
        }
    } else if !host.is_empty() {
        record.insert("hostname".to_owned(), host.into());
    }
    if !location.is_empty() {
        record.insert("location".to_owned(), location.into());
    }
    Ok(())
}

/// `Rule: 5716 (level 5) -> 'SSHD authentication failed.'`
fn read_rule(line: &str, rule: &mut Map<String, Value>) -> Result<(), ParseError> {
    let bad = |problem| ParseError::invalid_value("Rule", line, problem);
    let rest = line
        .strip_prefix("Rule: ")
        .ok_or_else(|| bad("is not a Rule: line"))?;
    let (id, rest) = rest.split_once(' ').ok_or_else(|| bad("has no rule id"))?;
    let id: u64 = id.parse().map_err(|_| bad("has no numeric rule id"))?;
    rule.insert("sidid".to_owned(), id.into());
    let level = rest
        .strip_prefix("(level ")
        .and_then(|r| r.split_once(')'))
        .and_then(|(level, _)| level.parse::<u64>().ok())
        .ok_or_else(|| bad("has no (level N)"))?;
    rule.insert("level".to_owned(), level.into());
    if let Some((_, comment)) = rest.split_once("-> ") {
        let comment = comment.trim().trim_matches('\'');
        rule.insert("comment".to_owned(), comment.into());
    }
    Ok(())
}

/// Maps one `alerts.json` record (or a block read as one).
pub(crate) fn normalise_json<O: Output>(
    record: Members<'_>,
    original: Option<&str>,
    ctx: &ParseContext,
) -> Result<O, ParseError> {
    let mut out = EcsBuilder::new();
    map_alert(Fields::new(&record, ""), ctx, &mut out)?;
    if let Some(original) = original {
        out.put_str(ecs!("event.original"), original);
    }
    out.put(ecs!("ossec"), &record);
    Ok(out.finish())
}

fn map_alert<'t>(
    alert: Fields<'t>,
    ctx: &'t ParseContext,
    out: &mut EcsBuilder<'t>,
) -> Result<(), ParseError> {
    out.put(ecs!("@timestamp"), alert_time(alert)?);
    out.put(ecs!("event.kind"), "alert");
    out.put(ecs!("event.module"), "ossec");
    out.put(ecs!("event.dataset"), DATASET);
    out.put_str(ecs!("observer.name"), &ctx.sensor);
    out.put(ecs!("observer.product"), "OSSEC");
    out.put(ecs!("observer.vendor"), "OSSEC");
    out.put(ecs!("observer.type"), "hids");
    if let Some(id) = alert.text("id")? {
        out.put_str(ecs!("event.id"), id);
    }
    let rule = alert
        .object("rule", "rule")?
        .ok_or(ParseError::MissingField { field: "rule" })?;
    if let Some(level) = rule.u64("level")? {
        out.put(ecs!("event.severity"), level);
    }
    if let Some(id) = rule.u64_or_text("sidid")? {
        out.put(ecs!("rule.id"), id.to_string());
    }
    if let Some(comment) = rule.text("comment")? {
        out.put_str(ecs!("rule.name"), comment);
        out.put_str(ecs!("rule.description"), comment);
    }
    let groups = match rule.present_value("groups") {
        Some(Doc::Array(_)) => rule.strings("groups")?,
        _ => rule
            .text("group")?
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
    };
    if !groups.is_empty() {
        out.put_strings(ecs!("rule.category"), &groups);
    }
    if let Some(cve) = rule.text("cve")? {
        out.put_str(ecs!("vulnerability.id"), cve);
    }
    map_data(alert, out)
}

/// `TimeStamp` (milliseconds, JSON output), the date an alerts.log block prints, or the
/// epoch seconds the alert id starts with, in that order.
fn alert_time(alert: Fields<'_>) -> Result<String, ParseError> {
    if let Some(value) = alert.present_value("TimeStamp") {
        return value
            .as_f64()
            .and_then(|ms| epoch_to_rfc3339(ms / 1000.0))
            .ok_or_else(|| {
                ParseError::invalid_timestamp("TimeStamp", &value.to_value().to_string())
            });
    }
    if let Some(timestamp) = alert.timestamp("timestamp")? {
        return Ok(timestamp);
    }
    let id = alert
        .text("id")?
        .ok_or(ParseError::MissingField { field: "TimeStamp" })?;
    id.split('.')
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .and_then(epoch_to_rfc3339)
        .ok_or_else(|| ParseError::invalid_timestamp("id", id))
}

fn map_data<'t>(alert: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    if let Some(log) = alert.str("full_log")? {
        out.put_str(ecs!("message"), log);
    }
    if let Some(location) = alert.text("location")? {
        out.put_str(ecs!("log.file.path"), location);
    }
    if let Some(host) = alert.text("hostname")? {
        out.related_host(host);
        out.put_str(ecs!("host.name"), host);
    }
    if let Some(ip) = alert.ip("agent_ip")? {
        out.related_ip(ip.clone());
        out.put(ecs!("host.ip"), vec![ip]);
    }
    for (key, side) in [("srcip", "source"), ("dstip", "destination")] {
        if let Some(ip) = alert.ip(key)? {
            out.related_ip(ip.clone());
            out.put_dyn(&format!("{side}.ip"), ip);
        }
    }
    for (key, side) in [("srcport", "source"), ("dstport", "destination")] {
        if let Some(port) = alert.port_or_text(key)? {
            out.put_dyn(&format!("{side}.port"), port);
        }
    }
    for (key, side) in [("srcuser", "source"), ("dstuser", "destination")] {
        if let Some(user) = alert.text(key)? {
            out.related_user(user);
            out.put_dyn(&format!("{side}.user.name"), user);
            out.put_str_if_absent(ecs!("user.name"), user);
        }
    }
    if let Some(program) = alert.text("program_name")? {
        out.put_str(ecs!("process.name"), program);
    }
    if let Some(action) = alert.text("action")? {
        out.put_str(ecs!("event.action"), action);
    }
    if let Some(protocol) = alert.text("protocol")? {
        out.put(ecs!("network.transport"), protocol.to_ascii_lowercase());
    }
    if let Some(url) = alert.text("url")? {
        out.put_str(ecs!("url.original"), url);
    }
    if let Some(file) = alert.object("SyscheckFile", "SyscheckFile")? {
        map_syscheck(file, out)?;
    }
    Ok(())
}

fn map_syscheck<'t>(file: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    out.put_constants(ecs!("event.category"), &["file"]);
    out.put_constants(ecs!("event.type"), &["change"]);
    if let Some(path) = file.text("path")? {
        if let Some(name) = base_name(path) {
            out.put_str(ecs!("file.name"), name);
        }
        out.put_str(ecs!("file.path"), path);
    }
    for (key, algorithm) in [("md5_after", "md5"), ("sha1_after", "sha1")] {
        if let Some(hash) = file.text(key)? {
            out.related_hash(hash);
            out.put_dyn(&format!("file.hash.{algorithm}"), hash);
        }
    }
    Ok(())
}
