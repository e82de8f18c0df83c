//! Suricata EVE JSON: one record per line, mapped to ECS the way Elastic's Suricata module
//! maps it, with the whole record kept under `suricata.eve` so nothing is lost.
//!
//! Every record gets the common fields (time, addresses, ports, transport, observer);
//! each app-layer object present (`alert`, `flow`, `dns`, `http`, `tls`, `fileinfo`, `smb`,
//! `krb5`) adds its own, whichever `event_type` carries it, because alerts and fileinfo
//! records embed the app-layer object of their transaction.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::ecs::{
    ascii_lowercase, base_name, ecs, map_endpoints, naive_utc_timestamp, try_canonical_ip,
    EcsBuilder, EndpointFields, Fields, Node, Output,
};
use crate::error::ParseError;
use crate::format::ParseContext;
use crate::json::{self, Doc};

pub(crate) const DATASET: &str = "suricata.eve";

/// Maps one EVE line. `original` is the raw line when the caller keeps it.
///
/// The record is kept under `suricata.eve` as the text Suricata wrote (surrounding
/// whitespace trimmed), not rebuilt: only the members the mapping reads
/// ([`is_mapped`]) are built into a document, the others are checked and skipped.
pub(crate) fn normalise<O: Output>(
    text: &str,
    original: Option<&str>,
    ctx: &ParseContext,
) -> Result<O, ParseError> {
    let record = json::members_of(json::selected_from_str(text, is_mapped))?;
    let mut out = EcsBuilder::new();
    map_record(Fields::new(&record, ""), ctx, &mut out)?;
    if let Some(original) = original {
        out.put_str(ecs!("event.original"), original);
    }
    out.put(
        ecs!("suricata.eve"),
        Node::Raw(text.trim_matches([' ', '\t', '\n', '\r'])),
    );
    Ok(out.finish())
}

/// The top-level members of an EVE record that [`map_record`] reads. A member the mapping
/// starts reading must be added here, or it reads as absent;
/// `selection_keeps_what_the_mapping_reads` checks this over the corpora.
pub(crate) fn is_mapped(key: &str) -> bool {
    matches!(
        key,
        "timestamp"
            | "event_type"
            | "in_iface"
            | "src_ip"
            | "dest_ip"
            | "src_port"
            | "dest_port"
            | "proto"
            | "app_proto"
            | "community_id"
            | "flow"
            | "alert"
            | "dns"
            | "http"
            | "tls"
            | "fileinfo"
            | "smb"
            | "krb5"
            | "ssh"
            | "smtp"
            | "email"
    )
}

fn map_record<'t>(
    eve: Fields<'t>,
    ctx: &'t ParseContext,
    out: &mut EcsBuilder<'t>,
) -> Result<(), ParseError> {
    let timestamp = eve
        .timestamp("timestamp")?
        .ok_or(ParseError::MissingField { field: "timestamp" })?;
    out.put(ecs!("@timestamp"), timestamp);
    let event_type = eve.str("event_type")?.ok_or(ParseError::MissingField {
        field: "event_type",
    })?;

    map_event(event_type, out);
    map_observer(eve, ctx, out)?;
    map_network(eve, out)?;

    // One walk over the record finds the app-layer objects it carries (usually one or
    // two of the eleven); they are then mapped, and checked, in a fixed order.
    let mut layers: [Option<&Doc<'t>>; APP_LAYERS.len()] = [None; APP_LAYERS.len()];
    for (key, value) in eve.members() {
        if let Some(slot) = app_layer(key) {
            layers[slot] = Some(value);
        }
    }
    for (slot, value) in layers.into_iter().enumerate() {
        let Some(value) = value else {
            continue;
        };
        let name = APP_LAYERS[slot];
        let Some(object) = eve.object_value(name, value, name)? else {
            continue;
        };
        match slot {
            0 => map_flow(object, event_type == "flow", out)?,
            1 => map_alert(object, out)?,
            2 => map_dns(object, out)?,
            3 => map_http(object, out)?,
            4 => map_tls(object, out)?,
            5 => map_fileinfo(object, out)?,
            6 => map_smb(object, out)?,
            7 => map_krb5(object, out)?,
            8 => map_ssh(object, out)?,
            9 => map_smtp(object, out)?,
            _ => map_email(object, out)?,
        }
    }
    Ok(())
}

/// The app-layer objects of an EVE record, in the order they are mapped: alerts and
/// fileinfo records embed the objects of their transaction, and where two write the same
/// ECS field the later one wins.
const APP_LAYERS: [&str; 11] = [
    "flow", "alert", "dns", "http", "tls", "fileinfo", "smb", "krb5", "ssh", "smtp", "email",
];

/// The place of `key` in [`APP_LAYERS`].
fn app_layer(key: &str) -> Option<usize> {
    Some(match key {
        "flow" => 0,
        "alert" => 1,
        "dns" => 2,
        "http" => 3,
        "tls" => 4,
        "fileinfo" => 5,
        "smb" => 6,
        "krb5" => 7,
        "ssh" => 8,
        "smtp" => 9,
        "email" => 10,
        _ => return None,
    })
}

/// `event.kind`, `event.category` and `event.type` by EVE `event_type`.
fn classify(
    event_type: &str,
) -> (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
) {
    match event_type {
        // The alert's type comes from its action, see `map_alert`.
        "alert" => ("alert", &["network", "intrusion_detection"], &[]),
        "anomaly" => ("event", &["network"], &["info"]),
        // Flow records are written when the flow ends or times out.
        "flow" | "netflow" => ("event", &["network"], &["connection", "end"]),
        "fileinfo" => ("event", &["network", "file"], &["info"]),
        "krb5" => (
            "event",
            &["network", "authentication"],
            &["protocol", "info"],
        ),
        "drop" => ("event", &["network"], &["denied"]),
        // An SMTP transaction is one message handed over: ECS's email category.
        "smtp" => ("event", &["network", "email"], &["protocol", "info"]),
        // Engine counters describe the sensor, not the network: no category applies.
        "stats" => ("metric", &[], &[]),
        _ => ("event", &["network"], &["protocol"]),
    }
}

fn map_event<'t>(event_type: &str, out: &mut EcsBuilder<'t>) {
    let (kind, category, types) = classify(event_type);
    out.put(ecs!("event.kind"), kind);
    if !category.is_empty() {
        out.put_constants(ecs!("event.category"), category);
    }
    if !types.is_empty() {
        out.put_constants(ecs!("event.type"), types);
    }
    out.put(ecs!("event.dataset"), DATASET);
    out.put(ecs!("event.module"), "suricata");
}

fn map_observer<'t>(
    eve: Fields<'t>,
    ctx: &'t ParseContext,
    out: &mut EcsBuilder<'t>,
) -> Result<(), ParseError> {
    out.put_str(ecs!("observer.name"), &ctx.sensor);
    out.put(ecs!("observer.product"), "Suricata");
    out.put(ecs!("observer.vendor"), "OISF");
    out.put(ecs!("observer.type"), "ids");
    if let Some(iface) = eve.str("in_iface")? {
        out.put_str(ecs!("observer.ingress.interface.name"), iface);
    }
    Ok(())
}

fn map_network<'t>(eve: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    map_endpoints(
        eve,
        &EndpointFields {
            source_ip: "src_ip",
            destination_ip: "dest_ip",
            source_port: "src_port",
            destination_port: "dest_port",
            transport: "proto",
        },
        out,
    )?;
    // "failed" means detection gave up, which is not a protocol name.
    if let Some(app) = eve
        .str("app_proto")?
        .filter(|p| !matches!(*p, "failed" | "unknown"))
    {
        out.put(ecs!("network.protocol"), ascii_lowercase(app));
    }
    if let Some(id) = eve.str("community_id")? {
        out.put_str(ecs!("network.community_id"), id);
    }
    Ok(())
}

fn map_flow<'t>(
    flow: Fields<'t>,
    is_flow_record: bool,
    out: &mut EcsBuilder<'t>,
) -> Result<(), ParseError> {
    let bytes_out = flow.u64("bytes_toserver")?;
    let bytes_in = flow.u64("bytes_toclient")?;
    let packets_out = flow.u64("pkts_toserver")?;
    let packets_in = flow.u64("pkts_toclient")?;
    if let Some(n) = bytes_out {
        out.put(ecs!("source.bytes"), n);
    }
    if let Some(n) = bytes_in {
        out.put(ecs!("destination.bytes"), n);
    }
    if let (Some(a), Some(b)) = (bytes_out, bytes_in) {
        out.put(ecs!("network.bytes"), a.saturating_add(b));
    }
    if let Some(n) = packets_out {
        out.put(ecs!("source.packets"), n);
    }
    if let Some(n) = packets_in {
        out.put(ecs!("destination.packets"), n);
    }
    if let (Some(a), Some(b)) = (packets_out, packets_in) {
        out.put(ecs!("network.packets"), a.saturating_add(b));
    }
    // An alert's embedded flow is the flow so far, not the event's own span.
    if is_flow_record {
        if let Some(start) = flow.timestamp("start")? {
            out.put(ecs!("event.start"), start);
        }
        if let Some(end) = flow.timestamp("end")? {
            out.put(ecs!("event.end"), end);
        }
    }
    Ok(())
}

fn map_alert<'t>(alert: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    if let Some(id) = alert.u64("signature_id")? {
        out.put(ecs!("rule.id"), crate::ecs::decimal(id));
    }
    if let Some(name) = alert.str("signature")? {
        out.put_str(ecs!("rule.name"), name);
    }
    if let Some(category) = alert.str("category")? {
        out.put_str(ecs!("rule.category"), category);
    }
    if let Some(rev) = alert.u64("rev")? {
        out.put(ecs!("rule.version"), crate::ecs::decimal(rev));
    }
    // Suricata's 1 (high) to 4 (low), kept as is, as Elastic's module does.
    if let Some(severity) = alert.u64("severity")? {
        out.put(ecs!("event.severity"), severity);
    }
    let event_type = match alert.str("action")? {
        Some("allowed") => "allowed",
        Some("blocked") => "denied",
        _ => "info",
    };
    out.put_strings(ecs!("event.type"), &[event_type]);
    Ok(())
}

/// DNS in all three shapes Suricata writes: v2 records (`rrname`/`rrtype` at the top, one
/// record per query or answer), v3 records and alerts (`queries`/`answers` arrays), and
/// v2 inside alerts (`query` array and an `answer` object).
fn map_dns<'t>(dns: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    match dns.str("type")? {
        Some("query" | "request") => out.put(ecs!("dns.type"), "query"),
        Some("answer" | "response") => out.put(ecs!("dns.type"), "answer"),
        _ => {}
    }
    if let Some(id) = dns.u64("id")? {
        out.put(ecs!("dns.id"), crate::ecs::decimal(id));
    }
    if let Some(rcode) = dns.str("rcode")? {
        out.put_str(ecs!("dns.response_code"), rcode);
    }
    let mut flags = Vec::new();
    for (key, flag) in [("aa", "AA"), ("tc", "TC"), ("rd", "RD"), ("ra", "RA")] {
        if dns.bool(key)? == Some(true) {
            flags.push(flag);
        }
    }
    if !flags.is_empty() {
        out.put_strings(ecs!("dns.header_flags"), &flags);
    }

    let question = match first_object(dns, "queries", "dns.queries")? {
        Some(query) => query,
        None => first_object(dns, "query", "dns.query")?.unwrap_or(dns),
    };
    if let Some(name) = question.str("rrname")? {
        out.related_host(name);
        out.put_str(ecs!("dns.question.name"), name);
    }
    if let Some(rtype) = question.str("rrtype")? {
        out.put_str(ecs!("dns.question.type"), rtype);
    }

    let mut resolved = Vec::new();
    if let Some(answers) = dns.array("answers")? {
        let mut mapped = Vec::with_capacity(answers.len());
        for item in answers {
            let answer = as_object(item, "dns.answers")?;
            mapped.push(map_dns_answer(answer, &mut resolved)?);
        }
        out.put(ecs!("dns.answers"), Value::Array(mapped));
    } else if let Some(grouped) = dns.object("grouped", "dns.grouped")? {
        for rtype in ["A", "AAAA"] {
            for raw in grouped.strings(rtype)? {
                let ip = try_canonical_ip(raw)
                    .ok_or_else(|| ParseError::invalid_ip(&grouped.label(rtype), raw))?;
                resolved.push(ip);
            }
        }
    }
    if !resolved.is_empty() {
        for ip in &resolved {
            out.related_ip(ip.clone());
        }
        out.put(ecs!("dns.resolved_ip"), resolved);
    }

    if let Some(answer) = dns.object("answer", "dns.answer")? {
        map_dns(answer, out)?;
    }
    Ok(())
}

fn map_dns_answer<'t>(
    answer: Fields<'t>,
    resolved: &mut Vec<Cow<'t, str>>,
) -> Result<Value, ParseError> {
    let mut mapped = Map::new();
    let rtype = answer.str("rrtype")?;
    if let Some(name) = answer.str("rrname")? {
        mapped.insert("name".to_owned(), name.into());
    }
    if let Some(rtype) = rtype {
        mapped.insert("type".to_owned(), rtype.into());
    }
    if let Some(ttl) = answer.u64("ttl")? {
        mapped.insert("ttl".to_owned(), ttl.into());
    }
    if let Some(data) = answer.str("rdata")? {
        if matches!(rtype, Some("A" | "AAAA")) {
            let ip = try_canonical_ip(data)
                .ok_or_else(|| ParseError::invalid_ip(&answer.label("rdata"), data))?;
            mapped.insert("data".to_owned(), ip.as_ref().into());
            resolved.push(ip);
        } else {
            mapped.insert("data".to_owned(), data.into());
        }
    }
    Ok(Value::Object(mapped))
}

fn first_object<'a>(
    parent: Fields<'a>,
    key: &str,
    prefix: &'a str,
) -> Result<Option<Fields<'a>>, ParseError> {
    match parent.array(key)?.and_then(|items| items.first()) {
        Some(item) => as_object(item, prefix).map(Some),
        None => Ok(None),
    }
}

fn as_object<'a>(item: &'a Doc<'a>, prefix: &'a str) -> Result<Fields<'a>, ParseError> {
    match item {
        Doc::Object(map) => Ok(Fields::new(map, prefix)),
        other => Err(ParseError::wrong_type(prefix, "objects", other)),
    }
}

fn map_http<'t>(http: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    let host = http.str("hostname")?;
    if let Some(host) = host {
        out.related_host(host);
        out.put_str(ecs!("url.domain"), host);
        out.put_str_if_absent(ecs!("destination.domain"), host);
    }
    if let Some(url) = http.str("url")? {
        out.put_str(ecs!("url.original"), url);
        let (path, query) = path_and_query(url);
        if !path.is_empty() {
            out.put_str(ecs!("url.path"), path);
        }
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            out.put_str(ecs!("url.query"), query);
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            out.put_str(ecs!("url.full"), url);
        } else if let (Some(host), true) = (host, url.starts_with('/')) {
            // EVE only sees cleartext HTTP, so the scheme is http.
            let full = match http.port("http_port")?.filter(|p| *p != 80) {
                Some(port) => format!("http://{host}:{port}{url}"),
                None => format!("http://{host}{url}"),
            };
            out.put(ecs!("url.full"), full);
        }
    }
    if let Some(method) = http.str("http_method")? {
        out.put_str(ecs!("http.request.method"), method);
    }
    if let Some(status) = http.u64("status")? {
        out.put(ecs!("http.response.status_code"), status);
    }
    if let Some(protocol) = http.str("protocol")? {
        if let Some(version) = protocol.strip_prefix("HTTP/") {
            out.put_str(ecs!("http.version"), version);
        }
    }
    if let Some(agent) = http.str("http_user_agent")? {
        out.put_str(ecs!("user_agent.original"), agent);
    }
    if let Some(referrer) = http.str("http_refer")? {
        out.put_str(ecs!("http.request.referrer"), referrer);
    }
    if let Some(mime) = http.str("http_content_type")? {
        out.put_str(ecs!("http.response.mime_type"), mime);
    }
    if let Some(length) = http.u64("length")? {
        out.put(ecs!("http.response.body.bytes"), length);
    }
    Ok(())
}

/// The path and query of an origin-form (`/a?b`) or absolute-form (`http://h/a?b`) URL.
fn path_and_query(url: &str) -> (&str, Option<&str>) {
    let rest = match url.split_once("://") {
        Some((scheme, after)) if !scheme.contains('/') => {
            after.find('/').map_or("", |slash| &after[slash..])
        }
        _ => url,
    };
    let rest = rest.split('#').next().unwrap_or(rest);
    match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    }
}

fn map_tls<'t>(tls: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    if let Some(sni) = tls.str("sni")? {
        out.related_host(sni);
        out.put_str(ecs!("tls.client.server_name"), sni);
        out.put_str_if_absent(ecs!("destination.domain"), sni);
    }
    if let Some((protocol, version)) = tls.str("version")?.and_then(tls_version) {
        out.put(ecs!("tls.version_protocol"), protocol);
        out.put(ecs!("tls.version"), version);
    }
    if let Some(ja3) = tls.object("ja3", "tls.ja3")? {
        if let Some(hash) = ja3.str("hash")? {
            out.related_hash(hash);
            out.put_str(ecs!("tls.client.ja3"), hash);
        }
    }
    if let Some(ja3s) = tls.object("ja3s", "tls.ja3s")? {
        if let Some(hash) = ja3s.str("hash")? {
            out.related_hash(hash);
            out.put_str(ecs!("tls.server.ja3s"), hash);
        }
    }
    if let Some(subject) = tls.str("subject")? {
        out.put_str(ecs!("tls.server.subject"), subject);
    }
    if let Some(issuer) = tls.str("issuerdn")? {
        out.put_str(ecs!("tls.server.issuer"), issuer);
    }
    // ECS wants certificate digests and serials as upper-case hex without separators.
    if let Some(fingerprint) = tls.str("fingerprint")? {
        let sha1 = plain_hex(fingerprint);
        out.related_hash(sha1.clone());
        out.put(ecs!("tls.server.hash.sha1"), sha1);
    }
    if let Some(serial) = tls.str("serial")? {
        out.put(ecs!("tls.server.x509.serial_number"), plain_hex(serial));
    }
    if let Some(raw) = tls.str("notbefore")? {
        let time = naive_utc_timestamp(|| tls.label("notbefore"), raw)?;
        out.put(ecs!("tls.server.not_before"), time);
    }
    if let Some(raw) = tls.str("notafter")? {
        let time = naive_utc_timestamp(|| tls.label("notafter"), raw)?;
        out.put(ecs!("tls.server.not_after"), time);
    }
    if let Some(resumed) = tls.bool("session_resumed")? {
        out.put(ecs!("tls.resumed"), resumed);
    }
    Ok(())
}

/// `TLS 1.2` → (`tls`, `1.2`); `SSLv3` → (`ssl`, `3.0`).
fn tls_version(raw: &str) -> Option<(&'static str, String)> {
    if let Some(version) = raw.strip_prefix("TLS ") {
        return Some(("tls", version.to_owned()));
    }
    match raw {
        "SSLv2" => Some(("ssl", "2.0".to_owned())),
        "SSLv3" => Some(("ssl", "3.0".to_owned())),
        _ => None,
    }
}

fn plain_hex(raw: &str) -> String {
    raw.chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn map_fileinfo<'t>(fileinfo: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    if let Some(filename) = fileinfo.str("filename")? {
        if let Some(name) = base_name(filename) {
            out.put_str(ecs!("file.name"), name);
        }
        if filename.contains(['/', '\\']) {
            out.put_str(ecs!("file.path"), filename);
        }
    }
    if let Some(size) = fileinfo.u64("size")? {
        out.put(ecs!("file.size"), size);
    }
    for algorithm in ["md5", "sha1", "sha256"] {
        if let Some(hash) = fileinfo.str(algorithm)? {
            out.related_hash(hash);
            out.put_dyn(&format!("file.hash.{algorithm}"), hash);
        }
    }
    Ok(())
}

fn map_smb<'t>(smb: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    if let Some(ntlmssp) = smb.object("ntlmssp", "smb.ntlmssp")? {
        if let Some(user) = ntlmssp.text("user")? {
            out.related_user(user);
            out.put_str_if_absent(ecs!("user.name"), user);
        }
        if let Some(domain) = ntlmssp.text("domain")? {
            out.put_str_if_absent(ecs!("user.domain"), domain);
        }
    }
    Ok(())
}

fn map_krb5<'t>(krb5: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    if let Some(user) = named(krb5.str("cname")?) {
        out.related_user(user);
        out.put_str_if_absent(ecs!("user.name"), user);
    }
    if let Some(realm) = named(krb5.str("realm")?) {
        out.put_str_if_absent(ecs!("user.domain"), realm);
    }
    Ok(())
}

/// ECS has no SSH fields; what it can hold is the HASSH fingerprints, hashes an analyst
/// pivots on like JA3. Versions and software banners stay under `suricata.eve.ssh`.
fn map_ssh<'t>(ssh: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    let sides = [
        ("client", "ssh.client", "ssh.client.hassh"),
        ("server", "ssh.server", "ssh.server.hassh"),
    ];
    for (side, path, hassh_path) in sides {
        let Some(end) = ssh.object(side, path)? else {
            continue;
        };
        if let Some(hassh) = end.object("hassh", hassh_path)? {
            if let Some(hash) = hassh.text("hash")? {
                out.related_hash(hash);
            }
        }
    }
    Ok(())
}

/// The SMTP envelope: the HELO name is what the client calls itself, the envelope
/// addresses are where the message really goes (headers can say anything).
fn map_smtp<'t>(smtp: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    if let Some(helo) = smtp.text("helo")? {
        out.related_host(helo);
        out.put_str_if_absent(ecs!("source.domain"), helo);
    }
    if let Some(from) = smtp.str("mail_from")?.and_then(mail_address) {
        out.put_str(ecs!("email.from.address"), from);
    }
    let to: Vec<&str> = smtp
        .strings("rcpt_to")?
        .into_iter()
        .filter_map(mail_address)
        .collect();
    if !to.is_empty() {
        out.put_strings(ecs!("email.to.address"), &to);
    }
    Ok(())
}

/// The message headers Suricata's email logger adds to SMTP records. The envelope, when
/// present, wins for the addresses.
fn map_email<'t>(email: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    if let Some(from) = email.str("from")?.and_then(mail_address) {
        out.put_str_if_absent(ecs!("email.from.address"), from);
    }
    for (key, path) in [
        ("to", ecs!("email.to.address")),
        ("cc", ecs!("email.cc.address")),
    ] {
        let addresses: Vec<&str> = email
            .strings(key)?
            .into_iter()
            .filter_map(mail_address)
            .collect();
        if !addresses.is_empty() && !out.has(path.text()) {
            out.put_strings(path, &addresses);
        }
    }
    if let Some(subject) = email.str("subject")? {
        out.put_str(ecs!("email.subject"), subject);
    }
    if let Some(id) = email.text("message_id")? {
        out.put_str(ecs!("email.message_id"), id);
    }
    if let Some(mailer) = email.text("x_mailer")? {
        out.put_str(ecs!("email.x_mailer"), mailer);
    }
    let attachments: Vec<Value> = email
        .strings("attachment")?
        .into_iter()
        .map(|name| serde_json::json!({ "file": { "name": name } }))
        .collect();
    if !attachments.is_empty() {
        out.put(ecs!("email.attachments"), Value::Array(attachments));
    }
    Ok(())
}

/// The address of a mailbox as SMTP and mail headers write it: `<a@b>`,
/// `"Name" <a@b>` or a bare `a@b`. The null sender `<>` of bounces is no address.
fn mail_address(raw: &str) -> Option<&str> {
    let raw = raw.trim();
    let address = match (raw.rfind('<'), raw.rfind('>')) {
        (Some(open), Some(close)) if open < close => &raw[open + 1..close],
        _ => raw,
    };
    let address = address.trim();
    (!address.is_empty()).then_some(address)
}

/// Suricata writes "<empty>" where a Kerberos message has no client name or realm.
fn named(value: Option<&str>) -> Option<&str> {
    value.filter(|v| *v != "<empty>" && !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::EventJson;

    #[test]
    fn app_layers_are_found_in_their_slots() {
        for (slot, name) in APP_LAYERS.iter().enumerate() {
            assert_eq!(app_layer(name), Some(slot));
            assert!(is_mapped(name), "{name}");
        }
        assert_eq!(app_layer("flow_id"), None);
    }
    use crate::json::Members;

    #[test]
    fn url_paths_and_queries_split_in_both_forms() {
        assert_eq!(path_and_query("/"), ("/", None));
        assert_eq!(path_and_query("/a/b?x=1&y=2"), ("/a/b", Some("x=1&y=2")));
        assert_eq!(path_and_query("http://h.example/p?q#f"), ("/p", Some("q")));
        assert_eq!(path_and_query("http://h.example"), ("", None));
    }

    #[test]
    fn mail_addresses_in_envelope_and_header_forms() {
        assert_eq!(mail_address("<a@example.org>"), Some("a@example.org"));
        assert_eq!(
            mail_address("\"Ann B\" <ann@example.org>"),
            Some("ann@example.org")
        );
        assert_eq!(mail_address(" bare@example.org "), Some("bare@example.org"));
        assert_eq!(mail_address("<>"), None);
        assert_eq!(mail_address(""), None);
    }

    /// What [`map_record`] makes of a record's members, as JSON (or its error).
    fn mapped(record: &Members<'_>) -> String {
        let ctx = ParseContext::new("s");
        let mut out = EcsBuilder::new();
        match map_record(Fields::new(record, ""), &ctx, &mut out) {
            Ok(()) => String::from_utf8(out.finish::<EventJson>().into_bytes()).unwrap(),
            Err(e) => e.to_string(),
        }
    }

    /// Every record of the fixtures and the corpora maps the same from the members
    /// [`is_mapped`] selects as from the whole record: a member the mapping reads and
    /// the selection drops would read as absent and change the event.
    #[test]
    fn selection_keeps_what_the_mapping_reads() {
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut dirs = vec![manifest.join("tests/fixtures/suricata")];
        let corpora = manifest.join("../../../shared/corpora/suricata");
        let with_corpora = corpora.is_dir();
        if with_corpora {
            dirs.push(corpora);
        } else {
            println!("SKIPPED the corpora: {} is absent", corpora.display());
        }
        let mut records = 0;
        let mut files = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path
                    .extension()
                    .is_some_and(|e| e == "json" || e == "jsonl")
                    && !path.ends_with("eve-schema.json")
                {
                    files.push(path);
                }
            }
        }
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                let (Ok(Doc::Object(whole)), Ok(Doc::Object(selected))) = (
                    json::doc_from_str(line),
                    json::selected_from_str(line, is_mapped),
                ) else {
                    continue;
                };
                assert_eq!(
                    mapped(&whole),
                    mapped(&selected),
                    "{}: {line}",
                    path.display()
                );
                records += 1;
            }
        }
        // The fixtures alone hold 94 records; with the corpora, thousands.
        let least = if with_corpora { 1000 } else { 90 };
        assert!(records > least, "{records} records compared");
    }

    #[test]
    fn tls_versions() {
        assert_eq!(tls_version("TLS 1.3"), Some(("tls", "1.3".to_owned())));
        assert_eq!(tls_version("SSLv3"), Some(("ssl", "3.0".to_owned())));
        assert_eq!(tls_version("UNDETERMINED"), None);
    }
}
