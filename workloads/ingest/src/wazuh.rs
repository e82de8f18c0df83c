//! Wazuh `alerts.json`: one alert per line, mapped to ECS with the whole alert kept under
//! `wazuh` (`wazuh.rule`, `wazuh.agent`, `wazuh.data`…) so nothing is lost.
//!
//! Beyond the envelope (rule, agent, manager, log), two payloads get their own mapping:
//! Windows EventChannel data (`data.win`, Sysmon and Security events) and file-integrity
//! results (`syscheck`).

use std::borrow::Cow;

use crate::ecs::{base_name, canonical_ip, ecs, EcsBuilder, Fields, Output};
use crate::error::ParseError;
use crate::format::ParseContext;
use crate::json::Members;

pub(crate) const DATASET: &str = "wazuh.alerts";

/// `rule.groups` values that mark an authentication outcome.
const AUTH_FAILURE_GROUPS: [&str; 3] = [
    "authentication_failed",
    "authentication_failures",
    "win_authentication_failed",
];
const AUTH_SUCCESS_GROUPS: [&str; 1] = ["authentication_success"];

/// Maps one alert. `original` is the raw line when the caller keeps it.
pub(crate) fn normalise<O: Output>(
    record: Members<'_>,
    original: Option<&str>,
    ctx: &ParseContext,
) -> Result<O, ParseError> {
    let mut out = EcsBuilder::new();
    map_alert(Fields::new(&record, ""), ctx, &mut out)?;
    if let Some(original) = original {
        out.put_str(ecs!("event.original"), original);
    }
    out.put(ecs!("wazuh"), &record);
    Ok(out.finish())
}

/// `event.category`, `event.type` and `event.outcome` as the alert's parts reveal them.
struct Classification {
    categories: Vec<&'static str>,
    types: Vec<&'static str>,
    outcome: Option<&'static str>,
}

impl Classification {
    fn new() -> Self {
        Classification {
            categories: vec!["intrusion_detection"],
            types: vec!["info"],
            outcome: None,
        }
    }

    fn add(&mut self, category: &'static str, kind: &'static str) {
        if !self.categories.contains(&category) {
            self.categories.push(category);
        }
        if !self.types.contains(&kind) {
            self.types.push(kind);
        }
    }

    fn write<'t>(self, out: &mut EcsBuilder<'t>) {
        out.put_strings(ecs!("event.category"), &self.categories);
        out.put_strings(ecs!("event.type"), &self.types);
        if let Some(outcome) = self.outcome {
            out.put(ecs!("event.outcome"), outcome);
        }
    }
}

fn map_alert<'t>(
    alert: Fields<'t>,
    ctx: &'t ParseContext,
    out: &mut EcsBuilder<'t>,
) -> Result<(), ParseError> {
    let timestamp = alert
        .timestamp("timestamp")?
        .ok_or(ParseError::MissingField { field: "timestamp" })?;
    out.put(ecs!("@timestamp"), timestamp);
    // Without its rule an alert says neither what fired nor how bad it is.
    let rule = alert
        .object("rule", "rule")?
        .ok_or(ParseError::MissingField { field: "rule" })?;

    out.put(ecs!("event.kind"), "alert");
    out.put(ecs!("event.dataset"), DATASET);
    out.put(ecs!("event.module"), "wazuh");
    if let Some(id) = alert.scalar("id")? {
        out.put(ecs!("event.id"), id);
    }
    let mut class = Classification::new();
    map_rule(rule, &mut class, out)?;
    map_agent(alert, ctx, out)?;
    if let Some(full_log) = alert.str("full_log")? {
        out.put_str(ecs!("message"), full_log);
    }
    if let Some(location) = alert.text("location")? {
        out.put_str(ecs!("log.file.path"), location);
    }
    if let Some(data) = alert.object("data", "data")? {
        map_data(data, &mut class, out)?;
    }
    if let Some(syscheck) = alert.object("syscheck", "syscheck")? {
        map_syscheck(syscheck, &mut class, out)?;
    }
    class.write(out);
    Ok(())
}

fn map_rule<'t>(
    rule: Fields<'t>,
    class: &mut Classification,
    out: &mut EcsBuilder<'t>,
) -> Result<(), ParseError> {
    // Wazuh's 0 (ignored) to 15 (severe), kept as is.
    if let Some(level) = rule.u64_or_text("level")? {
        out.put(ecs!("event.severity"), level);
    }
    if let Some(id) = rule.scalar("id")? {
        out.put(ecs!("rule.id"), id);
    }
    // Wazuh rules have no separate name: the description is what analysts call them.
    if let Some(description) = rule.str("description")? {
        out.put_str(ecs!("rule.name"), description);
        out.put_str(ecs!("rule.description"), description);
    }
    let groups = rule.strings("groups")?;
    if groups.iter().any(|g| AUTH_FAILURE_GROUPS.contains(g)) {
        class.add("authentication", "info");
        class.outcome = Some("failure");
    } else if groups.iter().any(|g| AUTH_SUCCESS_GROUPS.contains(g)) {
        class.add("authentication", "info");
        class.outcome = Some("success");
    }
    if let Some(mitre) = rule.object("mitre", "rule.mitre")? {
        let ids = mitre.strings("id")?;
        if !ids.is_empty() {
            out.put(ecs!("threat.framework"), "MITRE ATT&CK");
            out.put_strings(ecs!("threat.technique.id"), &ids);
        }
        let techniques = mitre.strings("technique")?;
        if !techniques.is_empty() {
            out.put_strings(ecs!("threat.technique.name"), &techniques);
        }
        let tactics = mitre.strings("tactic")?;
        if !tactics.is_empty() {
            out.put_strings(ecs!("threat.tactic.name"), &tactics);
        }
    }
    Ok(())
}

fn map_agent<'t>(
    alert: Fields<'t>,
    ctx: &'t ParseContext,
    out: &mut EcsBuilder<'t>,
) -> Result<(), ParseError> {
    out.put_str(ecs!("observer.name"), &ctx.sensor);
    out.put(ecs!("observer.product"), "Wazuh");
    out.put(ecs!("observer.vendor"), "Wazuh");
    if let Some(manager) = alert.object("manager", "manager")? {
        if let Some(name) = manager.text("name")? {
            out.put_str(ecs!("observer.hostname"), name);
        }
    }
    let Some(agent) = alert.object("agent", "agent")? else {
        return Ok(());
    };
    out.put(ecs!("agent.type"), "wazuh");
    if let Some(id) = agent.scalar("id")? {
        out.put(ecs!("agent.id"), id);
    }
    if let Some(name) = agent.text("name")? {
        out.put_str(ecs!("agent.name"), name);
        out.put_str(ecs!("host.name"), name);
        out.related_host(name);
    }
    // ECS has no agent.ip: the agent's address is its host's.
    if let Some(ip) = agent.ip("ip")? {
        out.related_ip(ip.clone());
        out.put(ecs!("host.ip"), vec![ip]);
    }
    Ok(())
}

fn map_data<'t>(
    data: Fields<'t>,
    class: &mut Classification,
    out: &mut EcsBuilder<'t>,
) -> Result<(), ParseError> {
    if let Some(ip) = data.ip("srcip")? {
        out.related_ip(ip.clone());
        out.put(ecs!("source.ip"), ip);
    }
    if let Some(port) = data.port_or_text("srcport")? {
        out.put(ecs!("source.port"), port);
    }
    if let Some(ip) = data.ip("dstip")? {
        out.related_ip(ip.clone());
        out.put(ecs!("destination.ip"), ip);
    }
    if let Some(port) = data.port_or_text("dstport")? {
        out.put(ecs!("destination.port"), port);
    }
    // The target account is the one an analyst pivots on, so it wins `user.name`.
    if let Some(user) = data.text("dstuser")? {
        out.related_user(user);
        out.put_str(ecs!("destination.user.name"), user);
        out.put_str_if_absent(ecs!("user.name"), user);
    }
    if let Some(user) = data.text("srcuser")? {
        out.related_user(user);
        out.put_str(ecs!("source.user.name"), user);
        out.put_str_if_absent(ecs!("user.name"), user);
    }
    if let Some(url) = data.text("url")? {
        out.put_str(ecs!("url.original"), url);
    }
    if let Some(win) = data.object("win", "data.win")? {
        map_windows(win, class, out)?;
    }
    if let Some(misp) = data.object("misp", "data.misp")? {
        map_misp(misp, out)?;
    }
    Ok(())
}

/// EventChannel records as the Wazuh agent forwards them: `system` is the event header,
/// `eventdata` its named fields, camel-cased and with backslashes and quotes escaped once
/// more than in the event itself.
fn map_windows<'t>(
    win: Fields<'t>,
    class: &mut Classification,
    out: &mut EcsBuilder<'t>,
) -> Result<(), ParseError> {
    let mut event_id: Option<Cow<'_, str>> = None;
    let mut sysmon = false;
    let mut security = false;
    if let Some(system) = win.object("system", "data.win.system")? {
        event_id = system.scalar("eventID")?;
        if let Some(id) = &event_id {
            out.put(ecs!("event.code"), id.clone());
        }
        if let Some(provider) = system.text("providerName")? {
            sysmon = provider == "Microsoft-Windows-Sysmon";
            security = provider == "Microsoft-Windows-Security-Auditing";
            out.put_str(ecs!("event.provider"), provider);
        }
    }
    let event_id = event_id.as_deref();
    if sysmon {
        match event_id {
            Some("1") => class.add("process", "start"),
            Some("3") => class.add("network", "connection"),
            Some("11") => class.add("file", "creation"),
            Some("22") => class.add("network", "protocol"),
            Some("23" | "26") => class.add("file", "deletion"),
            _ => {}
        }
    }
    if security {
        match event_id {
            Some("4624") => {
                class.add("authentication", "start");
                class.outcome = Some("success");
            }
            Some("4625") => {
                class.add("authentication", "start");
                class.outcome = Some("failure");
            }
            _ => {}
        }
    }
    let Some(data) = win.object("eventdata", "data.win.eventdata")? else {
        return Ok(());
    };
    let read = |key: &str| read_unescaped(data, key);

    if let Some(image) = read("image")? {
        if let Some(name) = base_name_of(&image) {
            out.put(ecs!("process.name"), name);
        }
        out.put(ecs!("process.executable"), image);
    }
    if let Some(command_line) = read("commandLine")? {
        out.put(ecs!("process.command_line"), command_line.into_owned());
    }
    if let Some(pid) = windows_pid(data, "processId")? {
        out.put(ecs!("process.pid"), pid);
    }
    if let Some(guid) = read("processGuid")? {
        out.put(ecs!("process.entity_id"), guid.into_owned());
    }
    if let Some(directory) = read("currentDirectory")? {
        out.put(ecs!("process.working_directory"), directory.into_owned());
    }
    if let Some(original) = read("originalFileName")? {
        out.put(ecs!("process.pe.original_file_name"), original.into_owned());
    }
    if let Some(image) = read("parentImage")? {
        if let Some(name) = base_name_of(&image) {
            out.put(ecs!("process.parent.name"), name);
        }
        out.put(ecs!("process.parent.executable"), image);
    }
    if let Some(command_line) = read("parentCommandLine")? {
        out.put(
            ecs!("process.parent.command_line"),
            command_line.into_owned(),
        );
    }
    if let Some(pid) = windows_pid(data, "parentProcessId")? {
        out.put(ecs!("process.parent.pid"), pid);
    }
    if let Some(guid) = read("parentProcessGuid")? {
        out.put(ecs!("process.parent.entity_id"), guid.into_owned());
    }
    if let Some(hashes) = data.text("hashes")? {
        // Sysmon 1 hashes the new process's image; 6, 7, 23 and 26 hash a file.
        let target = if sysmon && event_id == Some("1") {
            "process"
        } else {
            "file"
        };
        map_sysmon_hashes(&data.label("hashes"), hashes, target, out)?;
    }
    if let Some(account) = read("user")? {
        let (domain, name) = match account.split_once('\\') {
            Some((domain, name)) => (Some(domain), name),
            None => (None, account.as_ref()),
        };
        out.related_user(name.to_owned());
        out.put_str_if_absent(ecs!("user.name"), name);
        if let Some(domain) = domain {
            out.put_str_if_absent(ecs!("user.domain"), domain);
        }
    }
    if let Some(name) = read("targetUserName")? {
        out.related_user(name.clone());
        out.put_str_if_absent(ecs!("user.name"), &name);
    }
    if let Some(domain) = read("targetDomainName")? {
        out.put_str_if_absent(ecs!("user.domain"), &domain);
    }
    if let Some(path) = read("targetFilename")? {
        if let Some(name) = base_name_of(&path) {
            out.put(ecs!("file.name"), name);
        }
        out.put(ecs!("file.path"), path);
    }
    map_windows_endpoint(data, "sourceIp", "sourcePort", "source", out)?;
    map_windows_endpoint(data, "ipAddress", "ipPort", "source", out)?;
    map_windows_endpoint(data, "destinationIp", "destinationPort", "destination", out)?;
    if let Some(host) = read("destinationHostname")? {
        out.related_host(host.clone());
        out.put_str_if_absent(ecs!("destination.domain"), &host);
    }
    if let Some(protocol) = data.text("protocol")? {
        out.put(ecs!("network.transport"), protocol.to_ascii_lowercase());
    }
    if let Some(query) = read("queryName")? {
        out.related_host(query.clone());
        out.put(ecs!("dns.question.name"), query.into_owned());
    }
    Ok(())
}

fn read_unescaped<'a>(data: Fields<'a>, key: &str) -> Result<Option<Cow<'a, str>>, ParseError> {
    Ok(data.scalar(key)?.map(|value| match value {
        Cow::Borrowed(text) => unescape(text),
        owned => owned,
    }))
}

/// Sysmon writes process ids in decimal, Windows Security events in hex (`0x4fc`).
fn windows_pid(data: Fields<'_>, key: &str) -> Result<Option<u64>, ParseError> {
    let Some(raw) = data.scalar(key)? else {
        return Ok(None);
    };
    let raw = raw.as_ref();
    let parsed = match raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => raw.parse(),
    };
    parsed
        .map(Some)
        .map_err(|_| ParseError::invalid_value(&data.label(key), raw, "is not a process id"))
}

/// An address and port pair of the event data, written unless the alert's decoded
/// `data.srcip`/`data.dstip` already filled that side.
fn map_windows_endpoint<'t>(
    data: Fields<'t>,
    ip_key: &str,
    port_key: &str,
    side: &str,
    out: &mut EcsBuilder<'t>,
) -> Result<(), ParseError> {
    let ip_path = format!("{side}.ip");
    let Some(ip) = data.ip(ip_key)? else {
        return Ok(());
    };
    out.related_ip(ip.clone());
    if out.has(&ip_path) {
        return Ok(());
    }
    out.put_dyn(&ip_path, ip);
    if let Some(port) = data.port_or_text(port_key)? {
        out.put_dyn(&format!("{side}.port"), port);
    }
    Ok(())
}

/// `SHA1=…,MD5=…,SHA256=…,IMPHASH=…` into `<target>.hash.*` and `<target>.pe.imphash`.
fn map_sysmon_hashes<'t>(
    field: &str,
    hashes: &str,
    target: &str,
    out: &mut EcsBuilder<'t>,
) -> Result<(), ParseError> {
    for pair in hashes.split(',').filter(|p| !p.is_empty()) {
        let Some((algorithm, value)) = pair.split_once('=') else {
            return Err(ParseError::invalid_value(
                field,
                hashes,
                "is not a list of ALGORITHM=hash pairs",
            ));
        };
        let path = match algorithm.to_ascii_uppercase().as_str() {
            "MD5" => format!("{target}.hash.md5"),
            "SHA1" => format!("{target}.hash.sha1"),
            "SHA256" => format!("{target}.hash.sha256"),
            "SHA512" => format!("{target}.hash.sha512"),
            "IMPHASH" => format!("{target}.pe.imphash"),
            // Other algorithms Sysmon may be configured with have no ECS field.
            _ => continue,
        };
        // Sysmon prints upper case; intel feeds and ECS examples use lower case.
        let value = value.to_ascii_lowercase();
        out.related_hash(value.clone());
        out.put_dyn(&path, value);
    }
    Ok(())
}

/// Undoes the agent's extra escaping of `\` and `"` in EventChannel values.
fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&next @ ('\\' | '"')) = chars.peek() {
                out.push(next);
                chars.next();
                continue;
            }
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// Alerts written by the MISP integration carry the matched indicator; it is an
/// observable of the alert, so it goes to `related.*`.
fn map_misp<'t>(misp: Fields<'t>, out: &mut EcsBuilder<'t>) -> Result<(), ParseError> {
    let (Some(kind), Some(value)) = (misp.text("type")?, misp.text("value")?) else {
        return Ok(());
    };
    match kind {
        "ip-src" | "ip-dst" => {
            // MISP address attributes may be networks, which are not addresses.
            if let Ok(ip) = canonical_ip(&misp.label("value"), value) {
                out.related_ip(ip.clone());
            }
        }
        "domain" | "hostname" => out.related_host(value),
        "md5" | "sha1" | "sha256" | "sha512" => out.related_hash(value),
        _ => {}
    }
    Ok(())
}

fn map_syscheck<'t>(
    syscheck: Fields<'t>,
    class: &mut Classification,
    out: &mut EcsBuilder<'t>,
) -> Result<(), ParseError> {
    let registry = syscheck
        .text("path")?
        .is_some_and(|p| p.starts_with("HKEY_"));
    let category = if registry { "registry" } else { "file" };
    match syscheck.text("event")? {
        Some(action @ "added") => {
            class.add(category, "creation");
            out.put_str(ecs!("event.action"), action);
        }
        Some(action @ "modified") => {
            class.add(category, "change");
            out.put_str(ecs!("event.action"), action);
        }
        Some(action @ "deleted") => {
            class.add(category, "deletion");
            out.put_str(ecs!("event.action"), action);
        }
        _ => class.add(category, "info"),
    }
    if let Some(path) = syscheck.text("path")? {
        if registry {
            out.put_str(ecs!("registry.path"), path);
            if let Some(value) = syscheck.text("value_name")? {
                out.put_str(ecs!("registry.value"), value);
            }
            return Ok(());
        }
        if let Some(name) = base_name(path) {
            out.put_str(ecs!("file.name"), name);
        }
        out.put_str(ecs!("file.path"), path);
    }
    if let Some(size) = syscheck.u64_or_text("size_after")? {
        out.put(ecs!("file.size"), size);
    }
    for (key, algorithm) in [
        ("md5_after", "md5"),
        ("sha1_after", "sha1"),
        ("sha256_after", "sha256"),
    ] {
        if let Some(hash) = syscheck.text(key)? {
            out.related_hash(hash);
            out.put_dyn(&format!("file.hash.{algorithm}"), hash);
        }
    }
    for (key, field) in [
        ("uname_after", ecs!("file.owner")),
        ("gname_after", ecs!("file.group")),
        ("uid_after", ecs!("file.uid")),
        ("gid_after", ecs!("file.gid")),
    ] {
        if let Some(value) = syscheck.text(key)? {
            out.put_str(field, value);
        }
    }
    if let Some(inode) = syscheck.u64_or_text("inode_after")? {
        out.put(ecs!("file.inode"), inode.to_string());
    }
    Ok(())
}

/// [`base_name`] of a value that may borrow from the record: borrowed too, then.
fn base_name_of<'t>(path: &Cow<'t, str>) -> Option<Cow<'t, str>> {
    match path {
        Cow::Borrowed(path) => base_name(path).map(Cow::Borrowed),
        Cow::Owned(path) => base_name(path).map(|name| Cow::Owned(name.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventchannel_escapes_are_undone_once() {
        assert_eq!(
            unescape(r"C:\\Windows\\System32\\wscript.exe"),
            r"C:\Windows\System32\wscript.exe"
        );
        assert_eq!(
            unescape(r#"\"C:\\Windows\\System32\\notepad.exe\""#),
            r#""C:\Windows\System32\notepad.exe""#
        );
        assert_eq!(unescape(r"\\\\server\\share"), r"\\server\share");
        assert_eq!(unescape(r"trailing\"), r"trailing\");
        assert!(matches!(unescape("plain"), Cow::Borrowed("plain")));
    }
}
