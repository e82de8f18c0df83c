//! Rule semantics, tried on real events: the bundled Suricata and Wazuh samples
//! (`examples/soc/data`) and the Wazuh EventChannel alerts in `tests/fixtures`, each read
//! through the ingest crate's parsers exactly as the pipeline reads them.

use std::path::{Path, PathBuf};

use kastell_core::Event;
use kastell_correlate::{compile_rule, CompiledRule, ErrorKind, Modifier, RuleError};
use kastell_ingest::{parse_line, Format, ParseContext};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

fn line(path: PathBuf, format: Format, n: usize) -> Event {
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text.lines().nth(n - 1).unwrap();
    parse_line(format, line.as_bytes(), &ParseContext::new("test-sensor")).unwrap()
}

/// Line `n` of the bundled Suricata sample.
fn eve(n: usize) -> Event {
    let path = root().join("../../examples/soc/data/suricata/eve.json");
    line(path, Format::SuricataEve, n)
}

/// Line `n` of the bundled Wazuh sample.
fn wazuh(n: usize) -> Event {
    let path = root().join("../../examples/soc/data/wazuh/alerts.json");
    line(path, Format::WazuhAlerts, n)
}

/// Line `n` of the Wazuh EventChannel fixture (1 Sysmon 1, 2 Sysmon 3, 3 Sysmon 11,
/// 4 Security 4624).
fn windows(n: usize) -> Event {
    let path = root().join("tests/fixtures/wazuh-eventchannel-alerts.jsonl");
    line(path, Format::WazuhAlerts, n)
}

/// The IPv6 flow record (see tests/fixtures/SOURCE.txt).
fn ipv6_flow() -> Event {
    line(
        root().join("tests/fixtures/suricata-ipv6-flow.json"),
        Format::SuricataEve,
        1,
    )
}

fn yaml(logsource: &str, detection: &str) -> String {
    format!(
        "title: test\nid: test-rule\nauthor: tester\nlogsource: {logsource}\ndetection:\n{}",
        detection
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    )
}

fn rule(logsource: &str, detection: &str) -> CompiledRule {
    compile_rule("test/rule", &yaml(logsource, detection), None, true)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn error(logsource: &str, detection: &str) -> RuleError {
    match compile_rule("test/rule", &yaml(logsource, detection), None, true) {
        Ok(_) => panic!("compiled: {detection}"),
        Err(e) => e,
    }
}

const EVE: &str = "{product: suricata}";
const DNS: &str = "{category: dns}";

// eve.json line 3: dns query for vgiragdoffy.com, A, 172.16.0.153:52054 -> 172.16.0.12:53.
// eve.json line 16: alert "ET MALWARE Win32/IcedID Requesting Encoded Binary M4", severity
//   1, 172.16.0.153:57580 -> 67.205.184.237:80, http hostname vgiragdoffy.com, url "/".
// eve.json line 711: SMB2 tree connect to \\172.16.0.12\c$, STATUS_ACCESS_DENIED.

#[test]
fn plain_values_match_the_whole_value_case_insensitively() {
    let r = rule(DNS, "sel:\n  query: VGIRAGDOFFY.COM\ncondition: sel");
    assert!(r.matches(&eve(3)));
    let r = rule(DNS, "sel:\n  query: vgiragdoffy\ncondition: sel");
    assert!(
        !r.matches(&eve(3)),
        "a plain value is not a substring search"
    );
    let r = rule(DNS, "sel:\n  query|cased: VGIRAGDOFFY.COM\ncondition: sel");
    assert!(!r.matches(&eve(3)));
    let r = rule(DNS, "sel:\n  query|cased: vgiragdoffy.com\ncondition: sel");
    assert!(r.matches(&eve(3)));
}

#[test]
fn contains_startswith_endswith() {
    let matches = |d: &str| rule(DNS, &format!("sel:\n  {d}\ncondition: sel")).matches(&eve(3));
    assert!(matches("query|contains: IRAGDOF"));
    assert!(!matches("query|contains: iragdofz"));
    assert!(matches("query|startswith: VGIRAG"));
    assert!(!matches("query|startswith: giragd"));
    assert!(matches("query|endswith: .COM"));
    assert!(!matches("query|endswith: .org"));
    assert!(matches("query|contains|cased: iragdof"));
    assert!(!matches("query|contains|cased: IRAGDOF"));
    assert!(!matches("query|startswith|cased: VGIRAG"));
    // A value list is ORed; one substring automaton serves the whole list.
    assert!(matches("query|contains: [zzz, yyy, doffy]"));
    assert!(!matches("query|contains: [zzz, yyy]"));
}

#[test]
fn all_ands_the_values() {
    let matches = |d: &str| rule(DNS, &format!("sel:\n  {d}\ncondition: sel")).matches(&eve(3));
    assert!(matches("query|contains|all: [vgir, doffy, .com]"));
    assert!(!matches("query|contains|all: [vgir, doffy, .org]"));
    assert!(matches("query|all: ['vgiragdoffy.com']"));
}

#[test]
fn re_is_an_unanchored_case_sensitive_search() {
    let matches = |d: &str| rule(DNS, &format!("sel:\n  {d}\ncondition: sel")).matches(&eve(3));
    assert!(matches("query|re: 'ragdo'"));
    assert!(matches("query|re: '^vgir[a-z]+\\.com$'"));
    assert!(!matches("query|re: 'RAGDO'"));
    assert!(matches("query|re|i: 'RAGDO'"));
    // `re` reads the value raw: `\.` is the regex escape, not Sigma's.
    assert!(!matches("query|re: 'vgiragdoffy\\.org'"));
    // A regex meets numbers as their text.
    let r = rule(EVE, "sel:\n  dest_port|re: '^5[0-9]$'\ncondition: sel");
    assert!(r.matches(&eve(3)));
}

#[test]
fn cidr_for_v4_and_v6() {
    let firewall = "{category: firewall}";
    let r = rule(
        firewall,
        "sel:\n  dst_ip|cidr: 67.205.184.0/24\ncondition: sel",
    );
    assert!(r.matches(&eve(16)));
    let r = rule(
        firewall,
        "sel:\n  dst_ip|cidr: [10.0.0.0/8, 192.168.0.0/16]\ncondition: sel",
    );
    assert!(!r.matches(&eve(16)));
    let r = rule(
        firewall,
        "sel:\n  src_ip|cidr: '2001:db8::/32'\ncondition: sel",
    );
    assert!(r.matches(&ipv6_flow()));
    let r = rule(
        firewall,
        "sel:\n  src_ip|cidr: '2001:db9::/32'\ncondition: sel",
    );
    assert!(!r.matches(&ipv6_flow()));
    // A v4 network never contains a v6 address.
    let r = rule(firewall, "sel:\n  src_ip|cidr: 0.0.0.0/0\ncondition: sel");
    assert!(!r.matches(&ipv6_flow()));
}

#[test]
fn integers_match_numbers_and_numeric_strings() {
    // dest_port is a JSON number in EVE.
    let r = rule(DNS, "sel:\n  dst_port: 53\ncondition: sel");
    assert!(r.matches(&eve(3)));
    let r = rule(DNS, "sel:\n  dst_port: '53'\ncondition: sel");
    assert!(
        r.matches(&eve(3)),
        "a string value meets a number as its text"
    );
    let r = rule(DNS, "sel:\n  dst_port: [80, 443]\ncondition: sel");
    assert!(!r.matches(&eve(3)));
    // Wazuh writes data.srcport as the string "56404".
    let r = rule(
        "{product: linux, service: sshd}",
        "sel:\n  srcport: 56404\ncondition: sel",
    );
    assert!(r.matches(&wazuh(3)));
    let r = rule(
        EVE,
        "sel:\n  dest_port|gte: 53\n  src_port|lt: 60000\ncondition: sel",
    );
    assert!(r.matches(&eve(3)));
    let r = rule(EVE, "sel:\n  dest_port|gt: 53\ncondition: sel");
    assert!(!r.matches(&eve(3)));
}

#[test]
fn null_exists_and_empty() {
    // The IcedID request (line 125) sends no User-Agent; the BITS request (272) does.
    let proxy = "{category: proxy}";
    let missing = rule(proxy, "sel:\n  c-useragent: null\ncondition: sel");
    assert!(missing.matches(&eve(125)));
    assert!(!missing.matches(&eve(272)));
    let empty = rule(proxy, "sel:\n  c-useragent: ''\ncondition: sel");
    assert!(!empty.matches(&eve(125)), "missing is not empty");
    let exists = rule(proxy, "sel:\n  c-useragent|exists: true\ncondition: sel");
    assert!(!exists.matches(&eve(125)));
    assert!(exists.matches(&eve(272)));
    let absent = rule(proxy, "sel:\n  c-useragent|exists: false\ncondition: sel");
    assert!(absent.matches(&eve(125)));
    // `not` of a test on a missing field is true.
    let not = rule(
        proxy,
        "sel:\n  c-useragent|contains: BITS\ncondition: not sel",
    );
    assert!(not.matches(&eve(125)));
}

#[test]
fn wildcards_and_their_escapes() {
    // The share is \\172.16.0.12\c$ (two leading backslashes).
    let matches = |value: &str| {
        rule(
            EVE,
            &format!("sel:\n  smb.share: '{value}'\ncondition: sel"),
        )
        .matches(&eve(711))
    };
    assert!(
        matches(r"\\\\172.16.0.12\c$"),
        "\\\\ is one backslash, \\c a literal one"
    );
    assert!(!matches(r"\\172.16.0.12\c$"), "only one leading backslash");
    assert!(matches(r"\\*\c$"), "\\\\* is a backslash and a wildcard");
    assert!(
        !matches(r"\\\*\c$"),
        "\\\\\\* is a backslash and a literal star"
    );
    assert!(matches(r"\\\\172.16.0.1?\c$"), "? is one character");
    assert!(!matches(r"\\\\172.16.0.?\c$"), "? is exactly one character");
    assert!(matches(r"*.16.*"));
    assert!(!matches(r"\*.16.\*"), "escaped stars are literal");
}

#[test]
fn a_trailing_backslash_keeps_the_modifier_wildcard() {
    // `startswith` of a value ending in `\` is a prefix test for that backslash: the
    // modifier's wildcard is a wildcard, not an escaped star.
    let r = rule(
        EVE,
        "sel:\n  smb.share|startswith: '\\\\\\\\172.16.0.12\\'\ncondition: sel",
    );
    assert!(r.matches(&eve(711)));
    let r = rule(EVE, "sel:\n  smb.share|contains: '.12\\'\ncondition: sel");
    assert!(r.matches(&eve(711)));
    let r = rule(EVE, "sel:\n  smb.share|contains: '.13\\'\ncondition: sel");
    assert!(!r.matches(&eve(711)));
}

#[test]
fn condition_precedence() {
    // a: true (dns), b: false, c: true; `a or b and not c` is `a or (b and not c)`.
    let detection = "a:\n  event_type: dns\nb:\n  event_type: http\nc:\n  proto: UDP\n";
    let r = rule(EVE, &format!("{detection}condition: a or b and not c"));
    assert!(r.matches(&eve(3)));
    let r = rule(EVE, &format!("{detection}condition: (a or b) and not c"));
    assert!(!r.matches(&eve(3)));
    let r = rule(EVE, &format!("{detection}condition: not a or c"));
    assert!(r.matches(&eve(3)), "`not` binds tighter than `or`");
    let r = rule(EVE, &format!("{detection}condition: not (a or c)"));
    assert!(!r.matches(&eve(3)));
    let r = rule(EVE, &format!("{detection}condition:\n  - b\n  - c"));
    assert!(r.matches(&eve(3)), "a list of conditions is ORed");
}

#[test]
fn one_of_a_pattern_over_multi_field_maps() {
    // Each selection is a map whose fields are ANDed; `1 of` ORs the selections.
    let detection = "\
selection_tls:
  event_type: tls
  dest_port: 443
selection_dns:
  event_type: dns
  dest_port: 53
  proto: UDP
selection_half:
  event_type: dns
  dest_port: 5353
filter:
  event_type: dns
";
    let one = rule(EVE, &format!("{detection}condition: 1 of selection*"));
    assert!(
        one.matches(&eve(3)),
        "selection_dns holds with all three fields"
    );
    let all = rule(EVE, &format!("{detection}condition: all of selection_*"));
    assert!(!all.matches(&eve(3)));
    let without_dns = rule(
        EVE,
        "selection_tls:\n  event_type: tls\n  dest_port: 443\nselection_half:\n  event_type: dns\n  \
         dest_port: 5353\ncondition: 1 of selection*",
    );
    assert!(!without_dns.matches(&eve(3)), "a map needs every field");
    let them = rule(
        EVE,
        &format!("{detection}condition: 1 of them and not filter"),
    );
    assert!(!them.matches(&eve(3)));
    assert!(!them.matches(&eve(16)));
    let all_them = rule(
        EVE,
        "a:\n  event_type: dns\n_b:\n  event_type: http\ncondition: all of them",
    );
    assert!(
        all_them.matches(&eve(3)),
        "`them` leaves out names starting with _"
    );
}

#[test]
fn a_list_of_maps_is_ored() {
    let r = rule(
        EVE,
        "sel:\n  - event_type: http\n    dest_port: 80\n  - event_type: dns\n    dest_port: 53\ncondition: sel",
    );
    assert!(r.matches(&eve(3)));
    let r = rule(
        EVE,
        "sel:\n  - event_type: http\n  - event_type: dns\n    dest_port: 54\ncondition: sel",
    );
    assert!(!r.matches(&eve(3)));
}

#[test]
fn array_fields_match_when_any_element_does() {
    // Wazuh's rule.groups is ["syslog", "sshd", "authentication_failures"].
    let sshd = "{product: linux, service: sshd}";
    let r = rule(sshd, "sel:\n  wazuh.rule.groups: sshd\ncondition: sel");
    assert!(r.matches(&wazuh(3)));
    let r = rule(sshd, "sel:\n  wazuh.rule.groups: misp\ncondition: sel");
    assert!(!r.matches(&wazuh(3)));
    let r = rule(
        sshd,
        "sel:\n  wazuh.rule.groups|all: [syslog, sshd]\ncondition: sel",
    );
    assert!(
        r.matches(&wazuh(3)),
        "`all` may be met by different elements"
    );
    // The IcedID alert's metadata.malware_family is ["IcedID"].
    let r = rule(
        EVE,
        "sel:\n  alert.metadata.malware_family: icedid\ncondition: sel",
    );
    assert!(r.matches(&eve(16)));
    // ECS dns.answers is a list of objects; the answer record (line 4) resolved
    // vgiragdoffy.com to 67.205.184.237.
    let r = rule(DNS, "sel:\n  answer: 67.205.184.237\ncondition: sel");
    assert!(r.matches(&eve(4)));
    assert!(!r.matches(&eve(3)), "the query record has no answers");
}

#[test]
fn keywords_search_every_value_of_the_event() {
    // full_log: "May 11 12:29:18 localhost sshd[17584]: Invalid user paco from 172.17.1.1 ..."
    let sshd = "{product: linux, service: sshd}";
    let r = rule(
        sshd,
        "keywords:\n  - 'invalid user paco'\n  - 'no such thing'\ncondition: keywords",
    );
    assert!(r.matches(&wazuh(3)));
    let r = rule(
        sshd,
        "keywords:\n  '|all':\n    - 'Invalid user'\n    - 'port 56404'\ncondition: keywords",
    );
    assert!(r.matches(&wazuh(3)));
    let r = rule(
        sshd,
        "keywords:\n  '|all':\n    - 'Invalid user'\n    - 'port 1'\ncondition: keywords",
    );
    assert!(!r.matches(&wazuh(3)));
    let r = rule(
        sshd,
        "keywords:\n  - 'user * from 172.17.'\ncondition: keywords",
    );
    assert!(r.matches(&wazuh(3)), "wildcards work inside keywords");
}

#[test]
fn a_rule_fires_only_on_events_of_its_logsource() {
    // The same address test in a dns and a firewall rule: the dns query record (line 3)
    // and the IcedID alert (line 16) both come from 172.16.0.153.
    let dns = rule(DNS, "sel:\n  src_ip: 172.16.0.153\ncondition: sel");
    let firewall = rule(
        "{category: firewall}",
        "sel:\n  src_ip: 172.16.0.153\ncondition: sel",
    );
    assert!(dns.matches(&eve(3)) && !dns.matches(&eve(16)));
    assert!(firewall.matches(&eve(16)) && !firewall.matches(&eve(3)));
    // Suricata rules never see Wazuh alerts and the other way round, whatever the fields.
    let any_event = rule(EVE, "sel:\n  '@timestamp|exists': true\ncondition: sel");
    assert!(any_event.matches(&eve(3)));
    assert!(!any_event.matches(&wazuh(3)));
    let sshd = rule(
        "{product: linux, service: sshd}",
        "sel:\n  '@timestamp|exists': true\ncondition: sel",
    );
    assert!(sshd.matches(&wazuh(3)));
    assert!(
        !sshd.matches(&wazuh(1)),
        "the MISP alerts are not from sshd"
    );
    assert!(!sshd.matches(&eve(3)));
    let auth = rule(
        "{product: linux, service: auth}",
        "sel:\n  '@timestamp|exists': true\ncondition: sel",
    );
    assert!(
        auth.matches(&wazuh(3)),
        "the sshd alert was read from /var/log/secure"
    );
    // Windows categories follow the Sysmon event id; services the channel.
    let process_creation = rule(
        "{product: windows, category: process_creation}",
        "sel:\n  '@timestamp|exists': true\ncondition: sel",
    );
    let security = rule(
        "{product: windows, service: security}",
        "sel:\n  EventID: 4624\n  LogonType: 3\ncondition: sel",
    );
    assert!(process_creation.matches(&windows(1)));
    assert!(!process_creation.matches(&windows(2)) && !process_creation.matches(&windows(4)));
    assert!(security.matches(&windows(4)));
    assert!(!security.matches(&windows(1)));
}

#[test]
fn sigmahq_windows_rules_fire_on_wazuh_eventchannel_alerts() {
    let load = |file: &str| {
        let text =
            std::fs::read_to_string(root().join("tests/fixtures/sigmahq").join(file)).unwrap();
        compile_rule("test/sigmahq", &text, None, true).unwrap_or_else(|e| panic!("{e}"))
    };
    // Line 1: wscript.exe runs starter.vbs, started by cscript.exe.
    let script = load("proc_creation_win_wscript_cscript_script_exec.yml");
    assert!(script.matches(&windows(1)));
    assert!(
        !script.matches(&windows(3)),
        "Sysmon 11 is not process creation"
    );
    // Line 2: powershell.exe connects to 192.168.0.57:135 as EXCHANGETEST\Administrator;
    // the private-address filter also needs an AUTHORI(TY) user, so it does not apply.
    let powershell = load("net_connection_win_powershell_network_connection.yml");
    assert!(powershell.matches(&windows(2)));
    assert!(!powershell.matches(&windows(1)));
    assert_eq!(
        powershell.rule_ref().author.as_deref(),
        Some("Florian Roth (Nextron Systems)")
    );
}

#[test]
fn unsupported_features_are_compile_errors_naming_rule_and_reason() {
    let e = error(
        DNS,
        "sel:\n  query|windash|contains|all: '-x'\ncondition: sel",
    );
    assert_eq!(e.rule_id.as_deref(), Some("test-rule"));
    assert_eq!(e.resource.as_deref(), Some("test/rule"));
    assert_eq!(
        e.kind,
        ErrorKind::UnsupportedModifier {
            path: "detection.sel.query|windash|contains|all".to_owned(),
            modifier: Modifier::Windash
        }
    );
    // UTF-16 bytes are only matchable once base64 makes them text.
    let e = error(DNS, "sel:\n  query|utf16le: x\ncondition: sel");
    assert!(
        matches!(e.kind, ErrorKind::UnsupportedModifier { .. }),
        "{e}"
    );
    // `expand` without configured values for its placeholder is refused, as the
    // specification requires.
    let e = error(DNS, "sel:\n  query|expand: '%Servers%'\ncondition: sel");
    assert!(
        e.to_string()
            .contains("`%Servers%` has no configured values"),
        "{e}"
    );
    let e = error(DNS, "sel:\n  query|hour|contains: 1\ncondition: sel");
    assert!(e.to_string().contains("time-part"), "{e}");
    let e = error(DNS, "sel:\n  query|contans: x\ncondition: sel");
    assert!(matches!(e.kind, ErrorKind::UnknownModifier { .. }), "{e}");
    let e = error(DNS, "sel:\n  query: x\ncondition: sel and filter");
    assert_eq!(e.kind, ErrorKind::UnknownIdentifier("filter".to_owned()));
    let e = error(DNS, "sel:\n  query: x\ncondition: 1 of filter_*");
    assert_eq!(e.kind, ErrorKind::EmptyPattern("filter_*".to_owned()));
    let e = error(
        DNS,
        "sel:\n  query: x\ncondition: sel | count() by src_ip > 5",
    );
    assert!(matches!(e.kind, ErrorKind::Condition { .. }), "{e}");
    let e = error(DNS, "sel:\n  query: [x, null]\ncondition: sel");
    assert!(
        e.to_string().contains("null cannot be part of a list"),
        "{e}"
    );
    let e = error(DNS, "sel:\n  query|contains|startswith: x\ncondition: sel");
    assert!(e.to_string().contains("cannot be combined"), "{e}");
    let e = error(DNS, "sel:\n  query|re: '(unclosed'\ncondition: sel");
    assert!(matches!(e.kind, ErrorKind::Regex { .. }), "{e}");
    let e = error(DNS, "sel:\n  src_ip|cidr: 10.0.0.0/33\ncondition: sel");
    assert!(e.to_string().contains("not a network"), "{e}");
    // A logsource no source of this build produces compiles, and applies to nothing.
    let unrouted = rule(
        "{product: aws, service: cloudtrail}",
        "sel:\n  eventName: x\ncondition: sel",
    );
    assert!(!unrouted.routed());
    // A Zeek field Suricata does not have cannot be evaluated on Suricata records: the
    // rule compiles without routes.
    let zeek = rule(
        "{product: zeek, service: dns}",
        "sel:\n  Z: 0\ncondition: not sel",
    );
    assert!(!zeek.routed());
    let correlation = "title: many failures\nid: c-1\ncorrelation:\n  type: event_count\n  \
                       rules: [a]\n  group-by: [src_ip]\n  timespan: 5m\n  condition: {gte: 10}\n";
    let e = compile_rule("test/corr", correlation, None, true).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Correlation("event_count".to_owned()));
    assert_eq!(
        e.to_string(),
        "rule c-1 (DetectionRule test/corr): a correlation rule (type `event_count`) is not a \
         detection rule; load it with the rules it names through a rule set"
    );
}
