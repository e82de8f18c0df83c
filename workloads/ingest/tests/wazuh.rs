//! Wazuh alerts from real managers and Wazuh's own test data, checked field by field
//! against the values in the source line (each expectation names its alert field).

mod common;

use common::*;
use kastell_ingest::{Format, ParseError, RejectReason};
use serde_json::json;

#[test]
fn sshd_brute_force_alert() {
    let e = wazuh(&nth_line("wazuh/sshd-5712.jsonl", 1));

    // timestamp 2022-05-11T12:29:19.905+0000
    assert_eq!(s(&e, "@timestamp"), "2022-05-11T12:29:19.905Z");
    assert_eq!(s(&e, "event.kind"), "alert");
    assert_eq!(s(&e, "event.dataset"), "wazuh.alerts");
    assert_eq!(s(&e, "event.module"), "wazuh");
    // id "1652272159.1549653"
    assert_eq!(s(&e, "event.id"), "1652272159.1549653");
    // rule.level 10, rule.id "5712", rule.description
    assert_eq!(u(&e, "event.severity"), 10);
    assert_eq!(s(&e, "rule.id"), "5712");
    let description = "sshd: brute force trying to get access to the system. Non existent user.";
    assert_eq!(s(&e, "rule.name"), description);
    assert_eq!(s(&e, "rule.description"), description);
    // rule.mitre {id [T1110], tactic [Credential Access], technique [Brute Force]}
    assert_eq!(strings(&e, "threat.technique.id"), ["T1110"]);
    assert_eq!(strings(&e, "threat.technique.name"), ["Brute Force"]);
    assert_eq!(strings(&e, "threat.tactic.name"), ["Credential Access"]);
    assert_eq!(s(&e, "threat.framework"), "MITRE ATT&CK");
    // rule.groups contains authentication_failures
    assert_eq!(
        strings(&e, "event.category"),
        ["intrusion_detection", "authentication"]
    );
    assert_eq!(strings(&e, "event.type"), ["info"]);
    assert_eq!(s(&e, "event.outcome"), "failure");

    // data.srcip 172.17.1.1, data.srcport "56404", data.srcuser "paco"
    assert_eq!(s(&e, "source.ip"), "172.17.1.1");
    assert_eq!(u(&e, "source.port"), 56404);
    assert_eq!(s(&e, "user.name"), "paco");
    assert_eq!(s(&e, "source.user.name"), "paco");
    // full_log, location
    assert_eq!(
        s(&e, "message"),
        "May 11 12:29:18 localhost sshd[17584]: Invalid user paco from 172.17.1.1 port 56404"
    );
    assert_eq!(s(&e, "log.file.path"), "/var/log/secure");
    // agent {id "000", name "localhost.localdomain"}, manager.name
    assert_eq!(s(&e, "host.name"), "localhost.localdomain");
    assert_eq!(s(&e, "agent.id"), "000");
    assert_eq!(s(&e, "agent.name"), "localhost.localdomain");
    assert_eq!(s(&e, "observer.hostname"), "localhost.localdomain");
    assert_eq!(s(&e, "observer.name"), SENSOR);
    assert_eq!(s(&e, "observer.product"), "Wazuh");

    assert_eq!(strings(&e, "related.ip"), ["172.17.1.1"]);
    assert_eq!(strings(&e, "related.user"), ["paco"]);
    assert_eq!(strings(&e, "related.hosts"), ["localhost.localdomain"]);

    // Nothing lost: the alert as Wazuh wrote it under `wazuh`.
    assert_eq!(
        e.get("wazuh.rule.pci_dss"),
        Some(&json!(["11.4", "10.2.4", "10.2.5"]))
    );
    assert_eq!(s(&e, "wazuh.decoder.name"), "sshd");
    assert!(s(&e, "wazuh.previous_output").starts_with("May 11 12:29:16"));
    assert_eq!(u(&e, "wazuh.rule.frequency"), 8);

    assert_eq!(e.host_name(), Some("localhost.localdomain"));
    assert_eq!(e.user_name(), Some("paco"));
    assert_eq!(e.source_port(), Some(56404));
}

#[test]
fn misp_integration_alerts_relate_the_indicator() {
    let e = wazuh(&nth_line("wazuh/misp-integration-alerts.jsonl", 1));
    // agent {id "020", name "WIN-7FK8M79Q5R6", ip "192.168.252.105"}, rule.level 12
    assert_eq!(s(&e, "host.name"), "WIN-7FK8M79Q5R6");
    assert_eq!(strings(&e, "host.ip"), ["192.168.252.105"]);
    assert_eq!(s(&e, "agent.id"), "020");
    assert_eq!(s(&e, "rule.id"), "100622");
    assert_eq!(u(&e, "event.severity"), 12);
    assert_eq!(s(&e, "log.file.path"), "misp");
    // data.misp {type "hostname", value "detail43.myfirewall.org"}
    assert_eq!(
        strings(&e, "related.hosts"),
        ["WIN-7FK8M79Q5R6", "detail43.myfirewall.org"]
    );
    assert_eq!(s(&e, "wazuh.data.misp.event_id"), "25");
    assert_eq!(s(&e, "wazuh.agent.labels.customer"), "d827");
    assert!(e.get("event.outcome").is_none());

    // data.misp {type "ip-dst", value "95.154.195.159"}
    let e = wazuh(&nth_line("wazuh/misp-integration-alerts.jsonl", 2));
    assert_eq!(
        strings(&e, "related.ip"),
        ["192.168.252.191", "95.154.195.159"]
    );
}

#[test]
fn linux_file_integrity_alert() {
    let e = wazuh(&nth_line(
        "wazuh/syscheck-alerts-from-schema-examples.jsonl",
        1,
    ));
    // syscheck.path "/testdir0/example", event "modified", size_after "8"
    assert_eq!(s(&e, "file.path"), "/testdir0/example");
    assert_eq!(s(&e, "file.name"), "example");
    assert_eq!(u(&e, "file.size"), 8);
    assert_eq!(s(&e, "event.action"), "modified");
    assert_eq!(
        strings(&e, "event.category"),
        ["intrusion_detection", "file"]
    );
    assert_eq!(strings(&e, "event.type"), ["info", "change"]);
    // md5_after / sha1_after / sha256_after
    assert_eq!(s(&e, "file.hash.md5"), "35e0c8c0b180c95d4e122e55ed62cc64");
    assert_eq!(
        s(&e, "file.hash.sha1"),
        "19a532c8bc61c311f583455c80ffe37067bbc9bb"
    );
    assert_eq!(
        s(&e, "file.hash.sha256"),
        "e8ce5dcaf408935ff76747226d2e8bee4319a2f593c1d7a838115e56183d1f37"
    );
    // uname_after "bin", gname_after "bin", uid_after "1", gid_after "1", inode_after 1184275
    assert_eq!(s(&e, "file.owner"), "bin");
    assert_eq!(s(&e, "file.group"), "bin");
    assert_eq!(s(&e, "file.uid"), "1");
    assert_eq!(s(&e, "file.gid"), "1");
    assert_eq!(s(&e, "file.inode"), "1184275");
    // rule.id "550", level 7, mitre.id [T1120]
    assert_eq!(s(&e, "rule.id"), "550");
    assert_eq!(u(&e, "event.severity"), 7);
    assert_eq!(strings(&e, "threat.technique.id"), ["T1120"]);
    assert_eq!(e.file_hashes().len(), 3);
    assert_eq!(strings(&e, "related.hash").len(), 3);
}

#[test]
fn windows_file_integrity_alert() {
    let e = wazuh(&nth_line(
        "wazuh/syscheck-alerts-from-schema-examples.jsonl",
        2,
    ));
    // syscheck.path "c:\testdir0\example", uname_after "jmv74211", agent.ip "10.0.4.15"
    assert_eq!(s(&e, "file.path"), r"c:\testdir0\example");
    assert_eq!(s(&e, "file.name"), "example");
    assert_eq!(s(&e, "file.owner"), "jmv74211");
    assert_eq!(strings(&e, "host.ip"), ["10.0.4.15"]);
    assert_eq!(s(&e, "@timestamp"), "2020-02-14T12:29:26.550Z");
}

#[test]
fn sysmon_process_creation() {
    let e = wazuh(&nth_line("wazuh/eventchannel-alerts.jsonl", 1));
    // system.eventID "1", providerName "Microsoft-Windows-Sysmon"
    assert_eq!(s(&e, "event.code"), "1");
    assert_eq!(s(&e, "event.provider"), "Microsoft-Windows-Sysmon");
    assert_eq!(
        strings(&e, "event.category"),
        ["intrusion_detection", "process"]
    );
    assert_eq!(strings(&e, "event.type"), ["info", "start"]);
    // eventdata.image "C:\\\\Windows\\\\System32\\\\wscript.exe" (escaped once more by the agent)
    assert_eq!(
        s(&e, "process.executable"),
        r"C:\Windows\System32\wscript.exe"
    );
    assert_eq!(s(&e, "process.name"), "wscript.exe");
    assert_eq!(
        s(&e, "process.command_line"),
        r#""C:\Windows\System32\WScript.exe" "C:\Users\AtomicRedTeamTest\AppData\Roaming\TransbaseOdbcDriver\starter.vbs""#
    );
    // processId "648", processGuid, currentDirectory, originalFileName
    assert_eq!(u(&e, "process.pid"), 648);
    assert_eq!(
        s(&e, "process.entity_id"),
        "{4dc16835-c18b-6089-a203-000000002e00}"
    );
    assert_eq!(
        s(&e, "process.working_directory"),
        r"C:\Users\AtomicRedTeamTest\Downloads\"
    );
    assert_eq!(s(&e, "process.pe.original_file_name"), "wscript.exe");
    // parentImage, parentCommandLine, parentProcessId "6876"
    assert_eq!(
        s(&e, "process.parent.executable"),
        r"C:\Windows\System32\cscript.exe"
    );
    assert_eq!(s(&e, "process.parent.name"), "cscript.exe");
    assert_eq!(
        s(&e, "process.parent.command_line"),
        r#""C:\Windows\system32\cscript.exe" .\drop-payloads.vbe"#
    );
    assert_eq!(u(&e, "process.parent.pid"), 6876);
    // hashes "SHA1=545E…,MD5=0639…,SHA256=CE9F…,IMPHASH=0F71…"
    assert_eq!(
        s(&e, "process.hash.sha1"),
        "545ec11dee642de633eb2c6f6ffc90cce4decf8d"
    );
    assert_eq!(
        s(&e, "process.hash.md5"),
        "0639b0a6f69b3265c1e42227d650b7d1"
    );
    assert_eq!(
        s(&e, "process.hash.sha256"),
        "ce9f70e104c07d92fc05fbd6000839fd6a87ff010e706396f87dd679244ed97b"
    );
    assert_eq!(
        s(&e, "process.pe.imphash"),
        "0f71d5f6f4cbb935ce1b09754102419c"
    );
    // user "DESKTOP-2QKFOBA\\\\AtomicRedTeamTest"
    assert_eq!(s(&e, "user.name"), "AtomicRedTeamTest");
    assert_eq!(s(&e, "user.domain"), "DESKTOP-2QKFOBA");
    assert_eq!(s(&e, "host.name"), "DESKTOP-2QKFOBA");
    assert_eq!(e.process_pid(), Some(648));
    assert_eq!(e.file_hashes().len(), 3);
    // The agent's spelling stays in the namespace.
    assert_eq!(
        s(&e, "wazuh.data.win.eventdata.image"),
        r"C:\\Windows\\System32\\wscript.exe"
    );
}

#[test]
fn sysmon_network_connection() {
    let e = wazuh(&nth_line("wazuh/eventchannel-alerts.jsonl", 2));
    // eventdata sourceIp 192.168.0.121:49815 → destinationIp 192.168.0.57:135, protocol tcp
    assert_eq!(s(&e, "source.ip"), "192.168.0.121");
    assert_eq!(u(&e, "source.port"), 49815);
    assert_eq!(s(&e, "destination.ip"), "192.168.0.57");
    assert_eq!(u(&e, "destination.port"), 135);
    assert_eq!(s(&e, "network.transport"), "tcp");
    assert_eq!(
        strings(&e, "event.category"),
        ["intrusion_detection", "network"]
    );
    assert_eq!(strings(&e, "event.type"), ["info", "connection"]);
    assert_eq!(
        s(&e, "process.executable"),
        r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"
    );
    assert_eq!(s(&e, "user.name"), "Administrator");
    assert_eq!(s(&e, "user.domain"), "EXCHANGETEST");
}

#[test]
fn sysmon_file_creation() {
    let e = wazuh(&nth_line("wazuh/eventchannel-alerts.jsonl", 3));
    // eventdata.targetFilename "C:\\\\Users\\\\st9\\\\AppData\\\\Local\\\\stager.ps1"
    assert_eq!(s(&e, "file.path"), r"C:\Users\st9\AppData\Local\stager.ps1");
    assert_eq!(s(&e, "file.name"), "stager.ps1");
    assert_eq!(
        s(&e, "process.executable"),
        r"C:\Users\st9\AppData\Local\adb156.exe"
    );
    assert_eq!(u(&e, "process.pid"), 6988);
    assert_eq!(
        strings(&e, "event.category"),
        ["intrusion_detection", "file"]
    );
    assert_eq!(strings(&e, "event.type"), ["info", "creation"]);
}

#[test]
fn windows_security_logon() {
    let e = wazuh(&nth_line("wazuh/eventchannel-alerts.jsonl", 4));
    // system.eventID 4624; eventdata targetUserName, targetDomainName, ipAddress, ipPort
    assert_eq!(s(&e, "event.code"), "4624");
    assert_eq!(s(&e, "event.outcome"), "success");
    assert_eq!(
        strings(&e, "event.category"),
        ["intrusion_detection", "authentication"]
    );
    assert_eq!(s(&e, "user.name"), "Administrator");
    assert_eq!(s(&e, "user.domain"), "EXCHANGETEST");
    assert_eq!(s(&e, "source.ip"), "192.168.0.218");
    assert_eq!(u(&e, "source.port"), 51588);
    // processId "0x0": Security events write ids in hex
    assert_eq!(u(&e, "process.pid"), 0);
}

#[test]
fn missing_rule_is_rejected() {
    // The sshd alert without its rule: an alert that says neither what fired nor how bad.
    let mut alert: serde_json::Value =
        serde_json::from_str(&nth_line("wazuh/sshd-5712.jsonl", 1)).unwrap();
    alert.as_object_mut().unwrap().remove("rule");
    let err = parse(Format::WazuhAlerts, &alert.to_string()).unwrap_err();
    assert_eq!(err, ParseError::MissingField { field: "rule" });
    assert_eq!(err.to_string(), "missing rule");
    assert_eq!(err.reason(), RejectReason::MissingField);
}

#[test]
fn integratord_malformed_alert_is_rejected_as_invalid_json() {
    // Line 2: the upstream "invalid JSON alert" case, whose rule key was lost.
    let err = parse(
        Format::WazuhAlerts,
        &nth_line("wazuh/integratord-malformed.txt", 2),
    )
    .unwrap_err();
    assert_eq!(err.reason(), RejectReason::InvalidJson);
    assert!(err.to_string().starts_with("not JSON: "), "{err}");
    // Line 4: its well-formed sibling parses.
    let e = wazuh(&nth_line("wazuh/integratord-malformed.txt", 4));
    assert_eq!(s(&e, "host.name"), "padding_input");
}

#[test]
fn placeholder_alert_with_a_template_timestamp_is_rejected() {
    // timestamp "year-month-dayThours:minuts:seconds+0000": no time is invented.
    let err = parse(
        Format::WazuhAlerts,
        &nth_line("wazuh/placeholder-alert.json", 1),
    )
    .unwrap_err();
    assert_eq!(err.reason(), RejectReason::InvalidTimestamp);
    assert_eq!(
        err.to_string(),
        "field timestamp: \"year-month-dayThours:minuts:seconds+0000\" is not a timestamp with a UTC offset"
    );
}

#[test]
fn invalid_source_address_is_rejected_with_its_field() {
    let line = nth_line("wazuh/sshd-5712.jsonl", 1).replace("172.17.1.1\",", "172.17.1.300\",");
    let err = parse(Format::WazuhAlerts, &line).unwrap_err();
    assert_eq!(err.reason(), RejectReason::InvalidIp);
    assert_eq!(
        err.to_string(),
        "field data.srcip: \"172.17.1.300\" is not an IP address"
    );
}

#[test]
fn numbers_where_wazuh_writes_strings_are_accepted() {
    // The MISP alert with its rule.id "100622" and agent.id "020" written as numbers, as
    // a producer going through the json decoder may write them.
    let line = nth_line("wazuh/misp-integration-alerts.jsonl", 2)
        .replace("\"id\":\"100622\"", "\"id\":100622")
        .replace("\"id\":\"017\"", "\"id\":17");
    let e = wazuh(&line);
    assert_eq!(s(&e, "rule.id"), "100622");
    assert_eq!(s(&e, "agent.id"), "17");
}
