//! Zeek, OSSEC, syslog (with CEF), JSON lines and Greenbone: golden mappings of one
//! representative record of each kind, the edge cases real sensors produce, and every
//! file of the shared corpora through the format it is in.

mod common;

use std::path::Path;

use common::{corpora, fixture, pretty, s, strings, u, SENSOR};
use kastell_core::Event;
use kastell_ingest::{
    decode_reader, parse_line, parse_timezone, Decoded, Decoder, Format, ParseContext, ParseError,
    ParseOptions, RejectReason,
};
use serde_json::{json, Value};

fn ctx() -> ParseContext {
    ParseContext::new(SENSOR)
}

fn decode_with(format: Format, bytes: &[u8], origin: &str, ctx: ParseContext) -> Vec<Decoded> {
    let mut decoder = Decoder::new(format, ctx).with_origin(origin);
    let mut out = Vec::new();
    decode_reader(bytes, &mut decoder, |d| out.push(d)).unwrap();
    out
}

fn decode(format: Format, bytes: &[u8], origin: &str) -> Vec<Decoded> {
    decode_with(format, bytes, origin, ctx())
}

/// Every record as an event; fails naming the first reject.
fn events(format: Format, bytes: &[u8], origin: &str) -> Vec<Event> {
    decode(format, bytes, origin)
        .into_iter()
        .map(|d| {
            d.result
                .unwrap_or_else(|e| panic!("{origin} line {}: {e}", d.line))
        })
        .collect()
}

fn fixture_events(format: Format, name: &str) -> Vec<Event> {
    let bytes = std::fs::read(fixture(name)).unwrap();
    events(format, &bytes, name)
}

fn rejects(decoded: &[Decoded]) -> Vec<(u64, RejectReason)> {
    decoded
        .iter()
        .filter_map(|d| d.result.as_ref().err().map(|e| (d.line, e.reason())))
        .collect()
}

fn v<'a>(event: &'a Event, path: &str) -> &'a Value {
    event
        .get(path)
        .unwrap_or_else(|| panic!("{path} missing in {}", pretty(event)))
}

// ---- Zeek ------------------------------------------------------------------------

#[test]
fn zeek_conn_tsv_row_golden() {
    let all = fixture_events(Format::Zeek, "zeek/cchostak-conn.log");
    assert_eq!(all.len(), 76);
    let e = &all[1];
    assert_eq!(s(e, "@timestamp"), "2026-03-17T15:15:07.077147Z");
    assert_eq!(s(e, "event.kind"), "event");
    assert_eq!(s(e, "event.dataset"), "zeek.conn");
    assert_eq!(s(e, "event.module"), "zeek");
    assert_eq!(strings(e, "event.category"), ["network"]);
    assert_eq!(strings(e, "event.type"), ["connection", "end"]);
    assert_eq!(u(e, "event.duration"), 1_367_000);
    assert_eq!(s(e, "observer.name"), SENSOR);
    assert_eq!(s(e, "observer.product"), "Zeek");
    assert_eq!(s(e, "source.ip"), "45.112.92.14");
    assert_eq!(u(e, "source.port"), 53001);
    assert_eq!(s(e, "destination.ip"), "77.88.8.8");
    assert_eq!(u(e, "destination.port"), 53);
    assert_eq!(s(e, "network.transport"), "udp");
    assert_eq!(s(e, "network.protocol"), "dns");
    assert_eq!(s(e, "network.type"), "ipv4");
    assert_eq!(s(e, "network.connection.state"), "SF");
    assert_eq!(u(e, "source.bytes"), 56);
    assert_eq!(u(e, "destination.bytes"), 94);
    assert_eq!(u(e, "network.bytes"), 150);
    assert_eq!(u(e, "network.packets"), 2);
    assert_eq!(s(e, "zeek.session_id"), "Cy5QbN3dSL6keVRnj8");
    assert_eq!(strings(e, "related.ip"), ["45.112.92.14", "77.88.8.8"]);
    // The row is kept under zeek.conn, typed as Zeek's JSON writer types it, unset
    // fields (`-`) left out.
    assert_eq!(s(e, "zeek.conn.id.orig_h"), "45.112.92.14");
    assert_eq!(v(e, "zeek.conn.duration"), &json!(0.001367));
    assert_eq!(u(e, "zeek.conn.orig_bytes"), 28);
    assert_eq!(s(e, "zeek.conn.history"), "Dd");
    assert!(e.get("zeek.conn.local_orig").is_none());
    assert!(e.get("zeek.conn.tunnel_parents").is_none());
}

#[test]
fn zeek_dns_http_files_notice_weird_goldens() {
    let dns = &fixture_events(Format::Zeek, "zeek/cchostak-dns.log")[1];
    assert_eq!(s(dns, "event.dataset"), "zeek.dns");
    assert_eq!(s(dns, "dns.question.name"), "openai.com");
    assert_eq!(s(dns, "dns.question.type"), "AAAA");
    assert_eq!(s(dns, "dns.question.class"), "C_INTERNET");
    assert_eq!(s(dns, "dns.response_code"), "NOERROR");
    assert_eq!(s(dns, "dns.type"), "answer");
    assert_eq!(s(dns, "dns.id"), "5001");
    assert_eq!(strings(dns, "dns.header_flags"), ["AA", "RD", "RA"]);
    assert_eq!(
        strings(dns, "dns.resolved_ip"),
        ["2606:2800:220:1:248:1893:25c8:1946"]
    );
    assert_eq!(v(dns, "zeek.dns.TTLs"), &json!([300.0]));

    let http = &fixture_events(Format::Zeek, "zeek/cchostak-http.log")[1];
    assert_eq!(s(http, "event.dataset"), "zeek.http");
    assert_eq!(strings(http, "event.category"), ["network", "web"]);
    assert_eq!(s(http, "http.request.method"), "POST");
    assert_eq!(u(http, "http.response.status_code"), 201);
    assert_eq!(u(http, "http.request.body.bytes"), 31);
    assert_eq!(u(http, "http.response.body.bytes"), 19);
    assert_eq!(s(http, "http.version"), "1.1");
    assert_eq!(s(http, "url.domain"), "www.search.example");
    assert_eq!(s(http, "url.original"), "/api/v1/users");
    assert_eq!(s(http, "user_agent.original"), "Zeek-Learn/2.0");
    assert_eq!(s(http, "http.response.mime_type"), "text/plain");
    assert_eq!(strings(http, "zeek.http.orig_fuids"), ["FRdB7q7Y8uxFD9uUf"]);
    assert_eq!(v(http, "zeek.http.tags"), &json!([]));

    let files = &fixture_events(Format::Zeek, "zeek/cchostak-files.log")[1];
    assert_eq!(s(files, "event.dataset"), "zeek.files");
    assert_eq!(strings(files, "event.category"), ["file"]);
    assert_eq!(s(files, "file.uid"), "FRdB7q7Y8uxFD9uUf");
    assert_eq!(s(files, "file.mime_type"), "text/json");
    assert_eq!(u(files, "file.size"), 31);
    assert_eq!(s(files, "source.ip"), "189.18.222.9");
    assert_eq!(s(files, "destination.ip"), "172.217.14.206");

    let notice = &fixture_events(Format::Zeek, "zeek/cchostak-notice.log")[1];
    assert_eq!(s(notice, "event.kind"), "alert");
    assert_eq!(s(notice, "event.dataset"), "zeek.notice");
    assert_eq!(s(notice, "rule.name"), "Local::High_Connection_Volume");
    assert_eq!(
        s(notice, "message"),
        "source 73.162.21.44 crossed 10 closed connections"
    );
    assert_eq!(u(notice, "destination.port"), 80);

    let weird = &fixture_events(Format::Zeek, "zeek/cchostak-weird.log")[1];
    assert_eq!(s(weird, "event.dataset"), "zeek.weird");
    assert_eq!(s(weird, "event.kind"), "alert");
    assert_eq!(s(weird, "rule.name"), "DNS_truncated_quest_too_short");
    assert_eq!(v(weird, "zeek.weird.notice"), &json!(false));
}

#[test]
fn zeek_ssl_json_golden_with_the_path_from_the_file_name_or_the_fields() {
    let ssl = &fixture_events(Format::Zeek, "zeek/simir-ssl.json.log")[1];
    assert_eq!(s(ssl, "event.dataset"), "zeek.ssl");
    assert_eq!(s(ssl, "@timestamp"), "2025-10-07T22:24:04.051753Z");
    assert_eq!(s(ssl, "tls.version"), "1.3");
    assert_eq!(s(ssl, "tls.version_protocol"), "tls");
    assert_eq!(s(ssl, "tls.cipher"), "TLS_AES_256_GCM_SHA384");
    assert_eq!(s(ssl, "tls.curve"), "secp384r1");
    assert_eq!(
        s(ssl, "tls.client.server_name"),
        "mobile.events.data.microsoft.com"
    );
    assert_eq!(v(ssl, "tls.established"), &json!(true));
    assert_eq!(v(ssl, "tls.resumed"), &json!(false));
    assert_eq!(s(ssl, "zeek.ssl.ssl_history"), "CjiICs");

    // Read without a file name, the fields tell the log.
    let line = common::nth_line("zeek/simir-ssl.json.log", 2);
    let alone = parse_line(Format::Zeek, line.as_bytes(), &ctx()).unwrap();
    assert_eq!(s(&alone, "event.dataset"), "zeek.ssl");
}

#[test]
fn zeek_json_streaming_path_and_iso_timestamps() {
    let line = br#"{"_path":"conn","_write_ts":"2024-05-01T10:00:01.000000Z","ts":"2024-05-01T10:00:00.123456Z","uid":"C1","id.orig_h":"10.0.0.1","id.orig_p":1,"id.resp_h":"10.0.0.2","id.resp_p":2,"proto":"tcp"}"#;
    let e = parse_line(Format::Zeek, line, &ctx()).unwrap();
    assert_eq!(s(&e, "event.dataset"), "zeek.conn");
    assert_eq!(s(&e, "@timestamp"), "2024-05-01T10:00:00.123456Z");
    assert_eq!(s(&e, "zeek.conn._write_ts"), "2024-05-01T10:00:01.000000Z");
    assert!(e.get("zeek.conn._path").is_none());
}

#[test]
fn zeek_x509_golden_and_masked_btest_times_are_rejected_as_timestamps() {
    let raw = std::fs::read_to_string(fixture("zeek/btest-x509.log")).unwrap();
    let decoded = decode(Format::Zeek, raw.as_bytes(), "x509.log");
    assert_eq!(
        rejects(&decoded),
        [
            (10, RejectReason::InvalidTimestamp),
            (11, RejectReason::InvalidTimestamp),
            (12, RejectReason::InvalidTimestamp)
        ]
    );
    let unmasked = raw.replace("XXXXXXXXXX.XXXXXX", "1300000000.000000");
    let all = events(Format::Zeek, unmasked.as_bytes(), "x509.log");
    let e = &all[0];
    assert_eq!(s(e, "event.dataset"), "zeek.x509");
    assert_eq!(s(e, "@timestamp"), "2011-03-13T07:06:40Z");
    assert_eq!(s(e, "x509.version_number"), "3");
    assert!(s(e, "x509.subject.distinguished_name").contains("CN=*.google.com"));
    assert!(s(e, "x509.issuer.distinguished_name").contains("Google"));
    assert_eq!(s(e, "x509.public_key_algorithm"), "rsaEncryption");
    assert!(strings(e, "x509.alternative_names").contains(&"youtube.com".to_owned()));
    assert!(e.get("x509.not_before").is_some() && e.get("x509.not_after").is_some());
    assert_eq!(
        s(e, "file.hash.sha256"),
        "a97a22b691caf62c1623d14abf8a31ac915f14d87f77d8a37c47eb4785b484ad"
    );
}

#[test]
fn zeek_tsv_honours_the_declared_separators_and_placeholders() {
    let log = "#separator \\x7c\n#set_separator|;\n#empty_field|EMPTY\n#unset_field|NONE\n#path|dns\n#fields|ts|uid|id.orig_h|id.orig_p|id.resp_h|id.resp_p|proto|query|answers|TTLs|rejected\n#types|time|string|addr|port|addr|port|enum|string|vector[string]|vector[interval]|bool\n1700000000.5|C9|2001:db8::1|5353|2001:0db8:0000:0000:0000:0000:0000:0002|53|udp|a\\x7cb.example|x;y|EMPTY|NONE\n#close|2024\n";
    let all = events(Format::Zeek, log.as_bytes(), "-");
    assert_eq!(all.len(), 1);
    let e = &all[0];
    assert_eq!(s(e, "event.dataset"), "zeek.dns");
    assert_eq!(s(e, "@timestamp"), "2023-11-14T22:13:20.500Z");
    assert_eq!(s(e, "dns.question.name"), "a|b.example");
    assert_eq!(strings(e, "zeek.dns.answers"), ["x", "y"]);
    assert_eq!(v(e, "zeek.dns.TTLs"), &json!([]));
    assert!(e.get("zeek.dns.rejected").is_none());
    // IPv6 in both address fields, re-printed compressed.
    assert_eq!(s(e, "source.ip"), "2001:db8::1");
    assert_eq!(s(e, "destination.ip"), "2001:db8::2");
    assert_eq!(s(e, "network.type"), "ipv6");
    assert_eq!(
        s(e, "zeek.dns.id.resp_h"),
        "2001:0db8:0000:0000:0000:0000:0000:0002"
    );
}

#[test]
fn broken_zeek_header_lines_are_rejected_on_their_own_line() {
    let reason = |d: &Decoded| d.result.as_ref().unwrap_err().to_string();
    // A separator that cannot be read: reported, and the default tab reads the rows.
    let log = "#separator \\xZZ\n#fields\tts\tuid\n#types\ttime\tstring\n1700000000.0\tC1\n";
    let decoded = decode(Format::Zeek, log.as_bytes(), "-");
    assert_eq!(rejects(&decoded), [(1, RejectReason::InvalidValue)]);
    assert!(
        reason(&decoded[0]).contains("#separator"),
        "{}",
        reason(&decoded[0])
    );
    assert!(decoded[1].result.is_ok());

    // Fewer types than fields: reported on the #types line; the untyped column is a string.
    let log = "#fields\tts\tuid\n#types\ttime\n1700000000.0\tC1\n";
    let decoded = decode(Format::Zeek, log.as_bytes(), "-");
    assert_eq!(rejects(&decoded), [(2, RejectReason::InvalidValue)]);
    assert!(reason(&decoded[0]).contains("1 types for 2 #fields"));
    let event = decoded[1].result.as_ref().unwrap();
    assert_eq!(event.get_str("zeek.unknown.uid"), Some("C1"), "{event:?}");

    // No names, an empty name, a name twice: the header line is the reject, and the rows
    // after it have no usable header.
    for (fields, problem) in [
        ("#fields", "has no name"),
        ("#fields\tts\t\tuid", "has no name"),
        ("#fields\tts\tuid\tts", "\"ts\" is declared twice"),
    ] {
        let log = format!("{fields}\n1700000000.0\tC1\n");
        let decoded = decode(Format::Zeek, log.as_bytes(), "-");
        assert_eq!(decoded.len(), 2, "{fields}");
        assert_eq!(decoded[0].line, 1);
        assert!(
            reason(&decoded[0]).contains(problem),
            "{fields}: {}",
            reason(&decoded[0])
        );
        assert!(reason(&decoded[1]).contains("#fields header"), "{fields}");
    }
}

#[test]
fn zeek_tsv_rows_without_a_header_or_with_the_wrong_width_are_rejected() {
    let decoded = decode(Format::Zeek, b"1700000000.0\tC1\n", "-");
    assert_eq!(rejects(&decoded), [(1, RejectReason::MissingField)]);
    let log = "#separator \\x09\n#fields\tts\tuid\n#types\ttime\tstring\n1700000000.0\n1700000000.0\tC1\n";
    let decoded = decode(Format::Zeek, log.as_bytes(), "-");
    assert_eq!(rejects(&decoded), [(4, RejectReason::InvalidValue)]);
    assert!(decoded[0]
        .result
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("1 columns, the #fields header declares 2"));
    assert!(decoded[1].result.is_ok());
}

#[test]
fn invalid_utf8_in_a_zeek_field_is_escaped_not_rejected() {
    let mut tsv = b"#separator \\x09\n#path\thttp\n#fields\tts\turi\tuser_agent\n#types\ttime\tstring\tstring\n1700000000.0\t/caf\xc3\xa9\t".to_vec();
    tsv.extend_from_slice(b"bad\xff\xfeagent \\xf9 \\x41\n");
    let all = events(Format::Zeek, &tsv, "-");
    assert_eq!(s(&all[0], "url.original"), "/café");
    assert_eq!(
        s(&all[0], "user_agent.original"),
        "bad\\xff\\xfeagent \\xf9 A"
    );

    let mut json = br#"{"_path":"http","ts":1700000000.0,"user_agent":"raw "#.to_vec();
    json.extend_from_slice(b"\xff\xc3");
    json.extend_from_slice(br#" end"}"#);
    let e = parse_line(Format::Zeek, &json, &ctx()).unwrap();
    assert_eq!(s(&e, "user_agent.original"), "raw \\xff\\xc3 end");
}

#[test]
fn zeeks_ambiguous_backslash_x_in_json_is_kept_verbatim() {
    // Zeek's JSON writer prints a byte it cannot show as `\xNN` and (since 6.0) a literal
    // backslash as `\\`; older versions left the backslash alone, so `\xf9` may be either.
    // Decoding would guess; the text is kept exactly as Zeek wrote it.
    let text = std::fs::read_to_string(fixture("zeek/btest-json-utf8.log")).unwrap();
    let mut seen = 0;
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let record: Value = serde_json::from_str(line).unwrap();
        let with_ts = line.replacen('{', r#"{"ts":1700000000.0,"_path":"ssh","#, 1);
        let e = parse_line(Format::Zeek, with_ts.as_bytes(), &ctx()).unwrap();
        assert_eq!(v(&e, "zeek.ssh.s"), &record["s"], "{line}");
        seen += 1;
    }
    assert_eq!(seen, 49);
    let line =
        br#"{"ts":1,"_path":"ssh","s":"byte 9f vs literal backslash x9f: \\xf9 vs \\\\xf9"}"#;
    let e = parse_line(Format::Zeek, line, &ctx()).unwrap();
    assert_eq!(
        s(&e, "zeek.ssh.s"),
        r"byte 9f vs literal backslash x9f: \xf9 vs \\xf9"
    );
    // The raw btest file has no ts: each line is rejected for it, by line number.
    let decoded = decode(Format::Zeek, text.as_bytes(), "-");
    assert_eq!(decoded.len(), 49);
    assert!(rejects(&decoded)
        .iter()
        .all(|(_, r)| *r == RejectReason::MissingField));
}

#[test]
fn every_zeek_corpus_file_parses() {
    let Some(corpora) = corpora() else {
        println!("skipped: ../shared/corpora not found");
        return;
    };
    let mut total = 0;
    for dir in [
        "zeek/tsv/cchostak",
        "zeek/tsv/zeek-btest",
        "zeek/json/simir",
    ] {
        for entry in std::fs::read_dir(corpora.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "log") {
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let raw = std::fs::read_to_string(&path).unwrap();
            let decoded = decode(Format::Zeek, raw.as_bytes(), &name);
            let expected_reject = known_broken_zeek(&name, &raw);
            for d in &decoded {
                match (&d.result, expected_reject) {
                    (Ok(_), None) => total += 1,
                    (Err(e), Some(reason)) => assert_eq!(e.reason(), reason, "{name}:{}", d.line),
                    (result, _) => panic!("{name} line {}: {result:?}", d.line),
                }
            }
            if expected_reject == Some(RejectReason::InvalidTimestamp) {
                // Everything but btest's masked times must map.
                let unmasked = raw.replace("XXXXXXXXXX.XXXXXX", "1300000000.000000");
                total += events(Format::Zeek, unmasked.as_bytes(), &name).len();
            }
        }
    }
    assert_eq!(total, 1238);
}

/// btest baselines mask every time (`XXXXXXXXXX.XXXXXX`) and its JSON-writer baselines
/// log test records without `ts`, one with the masked time as a bare JSON number.
fn known_broken_zeek(name: &str, raw: &str) -> Option<RejectReason> {
    if name.contains("ascii-json__") {
        Some(RejectReason::InvalidJson)
    } else if name.contains("ascii-json") {
        Some(RejectReason::MissingField)
    } else if raw.contains("XXXXXXXXXX.XXXXXX") {
        Some(RejectReason::InvalidTimestamp)
    } else {
        None
    }
}

// ---- Suricata and Wazuh corpora -----------------------------------------------------

#[test]
fn every_suricata_corpus_file_parses() {
    let Some(corpora) = corpora() else {
        println!("skipped: ../shared/corpora not found");
        return;
    };
    for file in [
        "suricata/tr0llope/eve-mixed.json",
        "suricata/tr0llope/eve-mixed.sample.json",
        "suricata/xhpx/eve.json",
        "suricata/suricata-verify/output-eve-fileinfo.expected.eve.json",
    ] {
        let bytes = std::fs::read(corpora.join(file)).unwrap();
        let decoded = decode(Format::SuricataEve, &bytes, file);
        assert_eq!(rejects(&decoded), [], "{file}");
        assert!(!decoded.is_empty());
    }
}

#[test]
fn every_wazuh_alert_corpus_file_parses_and_the_broken_ones_say_why() {
    let Some(corpora) = corpora() else {
        println!("skipped: ../shared/corpora not found");
        return;
    };
    let read = |f: &str| std::fs::read(corpora.join("wazuh/alerts").join(f)).unwrap();
    for good in [
        "misp-integration-alerts.jsonl",
        "wazuh-qa-integratord-samples.jsonl",
    ] {
        let decoded = decode(Format::WazuhAlerts, &read(good), good);
        assert_eq!(rejects(&decoded), [], "{good}");
    }
    // Comment lines and the sample missing its `rule` key are not JSON; the overlong
    // case's line is a valid alert.
    let malformed = decode(
        Format::WazuhAlerts,
        &read("wazuh-qa-integratord-malformed.txt"),
        "malformed",
    );
    assert_eq!(
        rejects(&malformed),
        [
            (1, RejectReason::InvalidJson),
            (2, RejectReason::InvalidJson),
            (3, RejectReason::InvalidJson)
        ]
    );
    assert_eq!(malformed.len(), 4);
    // The placeholder is pretty-printed (not one alert per line) and its timestamp is
    // the literal "year-month-dayThours:minuts:seconds+0000".
    let placeholder = read("wazuh-integrations-test-alert-placeholder.json");
    let decoded = decode(Format::WazuhAlerts, &placeholder, "placeholder");
    assert!(rejects(&decoded)
        .iter()
        .all(|(_, r)| *r == RejectReason::InvalidJson));
    let compact: Value = serde_json::from_slice(&placeholder).unwrap();
    let err = parse_line(Format::WazuhAlerts, compact.to_string().as_bytes(), &ctx()).unwrap_err();
    assert_eq!(err.reason(), RejectReason::InvalidTimestamp);
}

#[test]
fn a_wazuh_alert_over_64_kib_is_parsed_whole() {
    // integratord drops alerts over 64 KB; Kastell's limit is the 1 MiB line limit.
    // Built as wazuh-qa builds its overlong case: agent.name padded.
    let line = common::line_with("wazuh/sshd-5712.jsonl", &["5712"]);
    let mut alert: Value = serde_json::from_str(&line).unwrap();
    let padding = "a".repeat(70 * 1024);
    alert["agent"]["name"] = Value::String(padding.clone());
    let text = alert.to_string();
    assert!(text.len() > 64 * 1024);
    let e = parse_line(Format::WazuhAlerts, text.as_bytes(), &ctx()).unwrap();
    assert_eq!(s(&e, "agent.name"), padding);
    assert_eq!(s(&e, "rule.id"), "5712");
}

#[test]
fn a_partially_written_last_line_is_rejected_and_the_rest_flows() {
    let good = common::line_with("wazuh/sshd-5712.jsonl", &["5712"]);
    let input = format!("{good}\n{good}\n{}", &good[..good.len() / 2]);
    let decoded = decode(Format::WazuhAlerts, input.as_bytes(), "-");
    assert_eq!(rejects(&decoded), [(3, RejectReason::InvalidJson)]);
    assert_eq!(decoded.len(), 3);
}

// ---- OSSEC ----------------------------------------------------------------------

const ALERTS_LOG: &str = "** Alert 1565277360.1234: mail  - syslog,sshd,authentication_failed,
2019 Aug 08 15:16:00 (web-01) 2001:db8::10->/var/log/secure
Rule: 5716 (level 5) -> 'SSHD authentication failed.'
Src IP: 2001:db8::99
Src Port: 4242
User: root
Aug  8 15:15:59 web-01 sshd[1234]: Failed password for root from 2001:db8::99 port 4242 ssh2

** Alert 1565277400.1530: - ossec,syscheck,
2019 Aug 08 15:16:40 db-01->syscheck
Rule: 550 (level 7) -> 'Integrity checksum changed.'
Integrity checksum changed for: '/etc/passwd'
Old md5sum was: '1'
New md5sum was: '2'
";

#[test]
fn ossec_alerts_log_blocks_golden() {
    let all = events(Format::Ossec, ALERTS_LOG.as_bytes(), "alerts.log");
    assert_eq!(all.len(), 2);
    let e = &all[0];
    assert_eq!(s(e, "@timestamp"), "2019-08-08T15:16:00Z");
    assert_eq!(s(e, "event.kind"), "alert");
    assert_eq!(s(e, "event.dataset"), "ossec.alerts");
    assert_eq!(s(e, "event.id"), "1565277360.1234");
    assert_eq!(u(e, "event.severity"), 5);
    assert_eq!(s(e, "rule.id"), "5716");
    assert_eq!(s(e, "rule.name"), "SSHD authentication failed.");
    assert_eq!(
        strings(e, "rule.category"),
        ["syslog", "sshd", "authentication_failed"]
    );
    assert_eq!(s(e, "host.name"), "web-01");
    assert_eq!(strings(e, "host.ip"), ["2001:db8::10"]);
    assert_eq!(s(e, "source.ip"), "2001:db8::99");
    assert_eq!(u(e, "source.port"), 4242);
    assert_eq!(s(e, "user.name"), "root");
    assert_eq!(s(e, "log.file.path"), "/var/log/secure");
    assert!(s(e, "message").starts_with("Aug  8 15:15:59 web-01 sshd[1234]: Failed"));
    assert_eq!(
        s(e, "ossec.rule.group"),
        "syslog,sshd,authentication_failed,"
    );

    let syscheck = &all[1];
    assert_eq!(s(syscheck, "rule.id"), "550");
    assert_eq!(s(syscheck, "host.name"), "db-01");
    assert_eq!(
        s(syscheck, "message").lines().count(),
        3,
        "{}",
        pretty(syscheck)
    );

    // The printed date has no zone: it is the Sensor's.
    let options = ParseOptions {
        timezone: parse_timezone("+02:00").unwrap(),
        ..ParseOptions::default()
    };
    let zoned = decode_with(
        Format::Ossec,
        ALERTS_LOG.as_bytes(),
        "alerts.log",
        ctx().with_options(options),
    );
    let e = zoned[0].result.as_ref().unwrap();
    assert_eq!(s(e, "@timestamp"), "2019-08-08T13:16:00Z");
}

#[test]
fn ossec_json_output_golden() {
    let line = br#"{"rule":{"level":10,"comment":"Multiple authentication failures.","sidid":40111,"group":"syslog,attacks,authentication_failures,","firedtimes":2},"id":"1565277360.1234","TimeStamp":1565277360000,"decoder":"sshd","srcip":"192.0.2.7","srcport":"51234","dstuser":"admin","location":"/var/log/auth.log","full_log":"Failed password for admin","hostname":"web-01","program_name":"sshd","SyscheckFile":{"path":"/etc/shadow","md5_after":"d41d8cd98f00b204e9800998ecf8427e"}}"#;
    let e = parse_line(Format::Ossec, line, &ctx()).unwrap();
    assert_eq!(s(&e, "@timestamp"), "2019-08-08T15:16:00Z");
    assert_eq!(u(&e, "event.severity"), 10);
    assert_eq!(s(&e, "rule.id"), "40111");
    assert_eq!(
        strings(&e, "rule.category"),
        ["syslog", "attacks", "authentication_failures"]
    );
    assert_eq!(s(&e, "source.ip"), "192.0.2.7");
    assert_eq!(u(&e, "source.port"), 51234);
    assert_eq!(s(&e, "destination.user.name"), "admin");
    assert_eq!(s(&e, "process.name"), "sshd");
    assert_eq!(s(&e, "file.path"), "/etc/shadow");
    assert_eq!(s(&e, "file.hash.md5"), "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(u(&e, "ossec.rule.firedtimes"), 2);
    // The same stream may mix both outputs.
    let mut mixed = line.to_vec();
    mixed.push(b'\n');
    mixed.extend_from_slice(ALERTS_LOG.as_bytes());
    assert_eq!(events(Format::Ossec, &mixed, "-").len(), 3);
}

#[test]
fn ossec_lines_outside_a_block_and_oversized_blocks_are_rejected() {
    let decoded = decode(Format::Ossec, b"stray text\n", "-");
    assert_eq!(rejects(&decoded), [(1, RejectReason::MissingField)]);
    let options = ParseOptions {
        max_line_bytes: 200,
        ..ParseOptions::default()
    };
    let mut big = ALERTS_LOG.lines().take(3).collect::<Vec<_>>().join("\n");
    big.push('\n');
    big.push_str(&"x".repeat(150));
    big.push_str("\n\n");
    let decoded = decode_with(
        Format::Ossec,
        big.as_bytes(),
        "-",
        ctx().with_options(options),
    );
    assert_eq!(rejects(&decoded), [(1, RejectReason::TooLong)]);
}

// ---- syslog and CEF ---------------------------------------------------------------

#[test]
fn syslog_rfc5424_golden_with_structured_data() {
    let line = r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 8710 ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"] An application event log entry"#;
    let e = parse_line(Format::Syslog, line.as_bytes(), &ctx()).unwrap();
    assert_eq!(s(&e, "@timestamp"), "2003-10-11T22:14:15.003Z");
    assert_eq!(s(&e, "event.dataset"), "syslog");
    assert_eq!(u(&e, "log.syslog.priority"), 165);
    assert_eq!(u(&e, "log.syslog.facility.code"), 20);
    assert_eq!(s(&e, "log.syslog.facility.name"), "local4");
    assert_eq!(u(&e, "log.syslog.severity.code"), 5);
    assert_eq!(s(&e, "log.syslog.severity.name"), "notice");
    assert_eq!(s(&e, "log.syslog.version"), "1");
    assert_eq!(s(&e, "host.hostname"), "mymachine.example.com");
    assert_eq!(s(&e, "process.name"), "evntslog");
    assert_eq!(u(&e, "process.pid"), 8710);
    assert_eq!(s(&e, "log.syslog.msgid"), "ID47");
    assert_eq!(
        v(&e, "log.syslog.structured_data"),
        &json!({"exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"},
                "examplePriority@32473": {"class": "high"}})
    );
    assert_eq!(s(&e, "message"), "An application event log entry");

    let nil = "<34>1 2003-10-11T22:14:15.003-07:00 - - - - -";
    let e = parse_line(Format::Syslog, nil.as_bytes(), &ctx()).unwrap();
    assert_eq!(s(&e, "@timestamp"), "2003-10-12T05:14:15.003Z");
    assert!(e.get("message").is_none());
}

#[test]
fn syslog_rfc3164_golden_and_the_sensor_timezone() {
    let line = "<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed for lonvick on /dev/pts/8";
    let e = parse_line(Format::Syslog, line.as_bytes(), &ctx()).unwrap();
    assert!(
        s(&e, "@timestamp").ends_with("-10-11T22:14:15Z"),
        "{}",
        pretty(&e)
    );
    assert_eq!(s(&e, "log.syslog.facility.name"), "auth");
    assert_eq!(s(&e, "log.syslog.severity.name"), "critical");
    assert_eq!(s(&e, "host.hostname"), "mymachine");
    assert_eq!(s(&e, "process.name"), "su");
    assert_eq!(u(&e, "process.pid"), 230);
    assert_eq!(
        s(&e, "message"),
        "'su root' failed for lonvick on /dev/pts/8"
    );

    let options = ParseOptions {
        timezone: parse_timezone("+01:00").unwrap(),
        ..ParseOptions::default()
    };
    let e = parse_line(
        Format::Syslog,
        line.as_bytes(),
        &ctx().with_options(options),
    )
    .unwrap();
    assert!(s(&e, "@timestamp").ends_with("-10-11T21:14:15Z"));
}

#[test]
fn every_syslog_line_of_the_wazuh_logtest_vectors_parses() {
    let Some(corpora) = corpora() else {
        println!("skipped: ../shared/corpora not found");
        return;
    };
    let months = [
        "Jan ", "Feb ", "Mar ", "Apr ", "May ", "Jun ", "Jul ", "Aug ", "Sep ", "Oct ", "Nov ",
        "Dec ",
    ];
    let mut seen = 0;
    for file in ["sshd.ini", "auditd.ini"] {
        let text = std::fs::read_to_string(corpora.join("wazuh/ruleset-tests").join(file)).unwrap();
        for line in text.lines() {
            let Some((_, log)) = line.split_once(" pass = ") else {
                continue;
            };
            if !months.iter().any(|m| log.starts_with(m)) {
                continue;
            }
            let e = parse_line(Format::Syslog, log.as_bytes(), &ctx())
                .unwrap_or_else(|err| panic!("{err}: {log}"));
            assert!(e.get("process.name").is_some(), "{log}");
            seen += 1;
        }
    }
    assert!(seen > 30, "{seen}");
}

#[test]
fn cef_in_syslog_golden_with_equals_in_values() {
    let line = r"<134>Sep 19 08:26:10 fw01 CEF:0|Security|threatmanager|1.0|100|worm successfully stopped|10|src=10.0.0.1 dst=2001:0db8:0:0:0:0:0:2 spt=1232 dpt=443 suser=alice request=https://x.test/login?next=/a&b=c msg=key\=value pairs and a bare = sign act=blocked cs1Label=policy cs1=default deny";
    let e = parse_line(Format::Syslog, line.as_bytes(), &ctx()).unwrap();
    assert_eq!(s(&e, "event.module"), "cef");
    assert_eq!(s(&e, "observer.vendor"), "Security");
    assert_eq!(s(&e, "observer.product"), "threatmanager");
    assert_eq!(s(&e, "event.code"), "100");
    assert_eq!(u(&e, "event.severity"), 10);
    assert_eq!(s(&e, "message"), "worm successfully stopped");
    assert_eq!(s(&e, "source.ip"), "10.0.0.1");
    assert_eq!(s(&e, "destination.ip"), "2001:db8::2");
    assert_eq!(u(&e, "source.port"), 1232);
    assert_eq!(u(&e, "destination.port"), 443);
    assert_eq!(s(&e, "source.user.name"), "alice");
    assert_eq!(s(&e, "url.original"), "https://x.test/login?next=/a&b=c");
    assert_eq!(s(&e, "event.reason"), "key=value pairs and a bare = sign");
    assert_eq!(s(&e, "event.action"), "blocked");
    assert_eq!(s(&e, "cef.extensions.cs1"), "default deny");
    assert_eq!(s(&e, "cef.extensions.cs1Label"), "policy");
    assert_eq!(s(&e, "host.hostname"), "fw01");
}

#[test]
fn bad_syslog_and_cef_are_rejected_with_a_reason() {
    let cases: [(&str, RejectReason); 4] = [
        ("<999>Oct 11 22:14:15 h p: m", RejectReason::InvalidValue),
        ("<34>Oct 41 22:14:15 h p: m", RejectReason::InvalidTimestamp),
        (
            "<34>1 2003-10-11T22:14:15 h a p m -",
            RejectReason::InvalidTimestamp,
        ),
        (
            "<34>Oct 11 22:14:15 h CEF:0|only|three",
            RejectReason::InvalidValue,
        ),
    ];
    for (line, reason) in cases {
        let err = parse_line(Format::Syslog, line.as_bytes(), &ctx()).unwrap_err();
        assert_eq!(err.reason(), reason, "{line}: {err}");
    }
}

// ---- JSON lines -------------------------------------------------------------------

#[test]
fn json_lines_golden_with_the_sensor_timestamp_field() {
    let options = ParseOptions {
        timestamp_field: Some("meta.seen".into()),
        ..ParseOptions::default()
    };
    let ctx = ctx().with_options(options);
    let line =
        br#"{"meta":{"seen":"2024-05-01T12:00:00+02:00"},"message":"login ok","user":"bob"}"#;
    let e = parse_line(Format::JsonLines, line, &ctx).unwrap();
    assert_eq!(s(&e, "@timestamp"), "2024-05-01T10:00:00Z");
    assert_eq!(s(&e, "event.dataset"), "json");
    assert_eq!(s(&e, "message"), "login ok");
    assert_eq!(s(&e, "json.user"), "bob");

    let missing = parse_line(Format::JsonLines, br#"{"t":1}"#, &ctx).unwrap_err();
    assert_eq!(missing.reason(), RejectReason::MissingField);
    assert_eq!(
        missing.to_string(),
        "missing the Sensor's timestampField \"meta.seen\""
    );
    // Without a field named, the reason lists the fields that were looked for.
    let missing = parse_line(Format::JsonLines, br#"{"t":1}"#, &self::ctx()).unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("@timestamp, timestamp or time"),
        "{missing}"
    );

    // Without a field named, @timestamp, timestamp and time are tried; epoch numbers in
    // seconds or milliseconds are read.
    let e = parse_line(
        Format::JsonLines,
        br#"{"time":1714557600123}"#,
        &self::ctx(),
    )
    .unwrap();
    assert_eq!(s(&e, "@timestamp"), "2024-05-01T10:00:00.123Z");
}

#[test]
fn a_timestamp_without_a_timezone_is_utc_unless_the_sensor_sets_one() {
    let line = br#"{"timestamp":"2024-05-01 10:00:00.5"}"#;
    let e = parse_line(Format::JsonLines, line, &ctx()).unwrap();
    assert_eq!(s(&e, "@timestamp"), "2024-05-01T10:00:00.500Z");
    let options = ParseOptions {
        timezone: parse_timezone("-05:00").unwrap(),
        ..ParseOptions::default()
    };
    let e = parse_line(Format::JsonLines, line, &ctx().with_options(options)).unwrap();
    assert_eq!(s(&e, "@timestamp"), "2024-05-01T15:00:00.500Z");
}

#[test]
fn a_named_sensor_zone_follows_daylight_saving() {
    let berlin = || {
        ctx().with_options(ParseOptions {
            timezone: parse_timezone("Europe/Berlin").unwrap(),
            ..ParseOptions::default()
        })
    };
    let json_time = |raw: &str| {
        let line = format!(r#"{{"timestamp":"{raw}"}}"#);
        let e = parse_line(Format::JsonLines, line.as_bytes(), &berlin()).unwrap();
        s(&e, "@timestamp").to_owned()
    };
    // Winter (CET, +01:00) and summer (CEST, +02:00).
    assert_eq!(json_time("2024-01-15 12:00:00"), "2024-01-15T11:00:00Z");
    assert_eq!(
        json_time("2024-05-01 10:00:00.5"),
        "2024-05-01T08:00:00.500Z"
    );
    // 31 March 2024 skipped 02:00-03:00: a time in the gap is read with the winter offset.
    assert_eq!(json_time("2024-03-31T02:30:00"), "2024-03-31T01:30:00Z");
    assert_eq!(json_time("2024-03-31T03:00:00"), "2024-03-31T01:00:00Z");
    // 27 October 2024 repeated 02:00-03:00: the first (summer) 02:30 is taken.
    assert_eq!(json_time("2024-10-27T02:30:00"), "2024-10-27T00:30:00Z");
    assert_eq!(json_time("2024-10-27T03:30:00"), "2024-10-27T02:30:00Z");
    // A time with its own offset keeps it, whatever the Sensor says.
    assert_eq!(
        json_time("2024-10-27T02:30:00+01:00"),
        "2024-10-27T01:30:00Z"
    );

    // RFC 3164 has no year: 11 October is summer time in Berlin in every year.
    let line = "<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed for lonvick on /dev/pts/8";
    let e = parse_line(Format::Syslog, line.as_bytes(), &berlin()).unwrap();
    assert!(
        s(&e, "@timestamp").ends_with("-10-11T20:14:15Z"),
        "{}",
        pretty(&e)
    );
    let line = "<34>Jan 11 22:14:15 mymachine su[230]: 'su root' failed for lonvick on /dev/pts/8";
    let e = parse_line(Format::Syslog, line.as_bytes(), &berlin()).unwrap();
    assert!(
        s(&e, "@timestamp").ends_with("-01-11T21:14:15Z"),
        "{}",
        pretty(&e)
    );
}

// ---- Greenbone --------------------------------------------------------------------

#[test]
fn greenbone_report_golden() {
    let all = fixture_events(Format::Greenbone, "greenbone/gmp-report.xml");
    assert_eq!(all.len(), 3);
    let e = &all[0];
    assert_eq!(s(e, "@timestamp"), "2024-03-05T09:40:02Z");
    assert_eq!(s(e, "event.kind"), "state");
    assert_eq!(strings(e, "event.category"), ["vulnerability"]);
    assert_eq!(s(e, "event.dataset"), "greenbone.results");
    assert_eq!(s(e, "event.id"), "5c3d4e5f-0000-4000-8000-00000000c001");
    assert_eq!(strings(e, "host.ip"), ["192.0.2.10"]);
    assert_eq!(s(e, "host.hostname"), "bastion.example.org");
    assert_eq!(u(e, "destination.port"), 22);
    assert_eq!(s(e, "network.transport"), "tcp");
    assert_eq!(s(e, "rule.id"), "1.3.6.1.4.1.25623.1.0.104876");
    assert_eq!(
        s(e, "vulnerability.scanner.id"),
        "1.3.6.1.4.1.25623.1.0.104876"
    );
    assert_eq!(s(e, "rule.name"), "OpenSSH 9.3p2 Multiple Vulnerabilities");
    assert_eq!(strings(e, "vulnerability.id"), ["CVE-2023-38408"]);
    assert_eq!(v(e, "vulnerability.score.base"), &json!(9.8));
    assert_eq!(s(e, "vulnerability.score.version"), "3");
    assert_eq!(s(e, "vulnerability.severity"), "High");
    assert_eq!(strings(e, "vulnerability.category"), ["General"]);
    assert_eq!(s(e, "greenbone.qod.value"), "80");
    assert_eq!(s(e, "greenbone.qod.type"), "remote_banner");
    assert_eq!(
        s(e, "greenbone.nvt.solution"),
        "Update to version 9.3p2 or later."
    );
    assert_eq!(s(e, "greenbone.nvt.solution_type"), "VendorFix");
    assert_eq!(
        s(e, "greenbone.nvt.tags.impact"),
        "Remote code execution & information disclosure."
    );
    assert_eq!(s(e, "greenbone.report.task"), "Weekly DMZ scan");

    // Pre-GMP-8 CVE list, an IPv6 host re-printed compressed, an offset timestamp.
    let tls = &all[1];
    assert_eq!(
        strings(tls, "vulnerability.id"),
        ["CVE-2011-3389", "CVE-2015-0204"]
    );
    assert_eq!(strings(tls, "host.ip"), ["2001:db8::443"]);
    assert_eq!(s(tls, "@timestamp"), "2024-03-05T08:41:17Z");
    assert_eq!(s(tls, "vulnerability.severity"), "Medium");

    let log = &all[2];
    assert!(log.get("destination.port").is_none());
    assert!(log.get("vulnerability.id").is_none());
    assert_eq!(
        s(log, "vulnerability.description"),
        "Best matching OS: Debian GNU/Linux 12 <bookworm>"
    );
}

#[test]
fn greenbone_results_carry_the_line_they_start_on_and_broken_xml_is_rejected() {
    let bytes = std::fs::read(fixture("greenbone/gmp-report.xml")).unwrap();
    let decoded = decode(Format::Greenbone, &bytes, "report.xml");
    let lines: Vec<u64> = decoded.iter().map(|d| d.line).collect();
    assert_eq!(lines, [13, 57, 76]);

    let cut = &bytes[..bytes.len() / 2];
    let decoded = decode(Format::Greenbone, cut, "report.xml");
    assert_eq!(decoded.len(), 1);
    assert_eq!(
        decoded[0].result.as_ref().unwrap_err().reason(),
        RejectReason::InvalidValue
    );

    let options = ParseOptions {
        max_document_bytes: 1000,
        ..ParseOptions::default()
    };
    let decoded = decode_with(Format::Greenbone, &bytes, "-", ctx().with_options(options));
    assert!(matches!(
        decoded[0].result,
        Err(ParseError::TooLong { max: 1000, .. })
    ));

    // The limit counts the document without its last line end, which a stream may lack.
    assert_eq!(bytes.last(), Some(&b'\n'));
    let exact = bytes.len() - 1;
    for (input, max, fits) in [
        (&bytes[..], exact, true),
        (&bytes[..exact], exact, true),
        (&bytes[..exact], exact - 1, false),
    ] {
        let options = ParseOptions {
            max_document_bytes: max,
            ..ParseOptions::default()
        };
        let decoded = decode_with(Format::Greenbone, input, "-", ctx().with_options(options));
        match decoded[0].result {
            Err(ParseError::TooLong { len, .. }) => {
                assert!(!fits, "refused at max {max}");
                assert_eq!(len, exact);
            }
            _ => assert!(fits, "accepted at max {max}"),
        }
    }
}

#[test]
fn input_that_is_not_a_well_formed_report_is_rejected_not_dropped() {
    let bytes = std::fs::read(fixture("greenbone/gmp-report.xml")).unwrap();
    let report = String::from_utf8(bytes).unwrap();
    let bad_attribute = report.replacen("<result id=", "<result <<id=", 1);
    let json = b"{\"not\": \"xml\"}\n".repeat(1000);
    let cases: [(&str, &[u8], &str); 6] = [
        ("plain text", b"hello\n", "outside the report's elements"),
        ("JSON", &json, "outside the report's elements"),
        (
            "a declaration alone",
            b"<?xml version=\"1.0\"?>\n<!-- no report -->\n",
            "holds no XML element",
        ),
        (
            "a malformed attribute",
            bad_attribute.as_bytes(),
            "not well-formed XML",
        ),
        (
            "text after the root",
            b"<report id=\"r\"></report>\ntrailing words\n",
            "outside the report's elements",
        ),
        (
            "text before the root",
            b"words <report id=\"r\"></report>\n",
            "outside the report's elements",
        ),
    ];
    for (what, input, problem) in cases {
        let decoded = decode(Format::Greenbone, input, "report.xml");
        assert_eq!(decoded.len(), 1, "{what}: one reject");
        let error = decoded[0].result.as_ref().unwrap_err();
        assert_eq!(error.reason(), RejectReason::InvalidValue, "{what}");
        assert!(error.to_string().contains(problem), "{what}: {error}");
    }
    // White space alone is no report and no reject: an empty stream.
    assert!(decode(Format::Greenbone, b"\n  \n", "report.xml").is_empty());
    // A report without results is a scan that found nothing: no event, no reject.
    assert!(decode(
        Format::Greenbone,
        b"<report id=\"r\"><results/></report>\n",
        "r.xml"
    )
    .is_empty());
}

#[test]
fn one_greenbone_result_per_line_parses_alone() {
    let line = br#"<result id="r1"><creation_time>2024-01-01T00:00:00Z</creation_time><host>::1</host><port>80/tcp</port><nvt oid="1.2.3"><name>X</name></nvt><severity>5.0</severity></result>"#;
    let e = parse_line(Format::Greenbone, line, &ctx()).unwrap();
    assert_eq!(s(&e, "rule.id"), "1.2.3");
    assert_eq!(strings(&e, "host.ip"), ["::1"]);
}

#[test]
fn the_decoder_names_its_format() {
    let decoder = Decoder::new(Format::Zeek, ctx());
    assert_eq!(decoder.format(), Format::Zeek);
    assert!(!Format::Zeek.is_line_per_record());
    assert!(Path::new(&fixture("zeek")).is_dir());
}

/// A UTF-8 byte-order mark at the start of a stream is not part of its first record; one
/// anywhere else is data and stays.
#[test]
fn a_byte_order_mark_at_the_start_is_skipped() {
    let input = b"\xEF\xBB\xBF{\"timestamp\":\"2024-05-01T10:00:00Z\",\"n\":1}\n\
                  {\"timestamp\":\"2024-05-01T10:00:01Z\",\"n\":2}\n";
    let events = events(Format::JsonLines, input, "export.json");
    assert_eq!(events.len(), 2);
    let later = decode(
        Format::JsonLines,
        b"{\"timestamp\":\"2024-05-01T10:00:00Z\"}\n\xEF\xBB\xBF{\"timestamp\":\"2024-05-01T10:00:01Z\"}\n",
        "export.json",
    );
    assert!(later[0].result.is_ok());
    assert!(later[1].result.is_err());
}
