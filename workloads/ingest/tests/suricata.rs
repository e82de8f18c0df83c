//! Suricata EVE records from real sensors, checked field by field against the values in
//! the source line (each expectation names the EVE field it comes from).

mod common;

use std::net::IpAddr;

use common::*;
use kastell_ingest::{parse_line, Format, ParseContext, ParseOptions};
use serde_json::{json, Value};

const SAMPLE: &str = "suricata/tr0llope-eve-mixed.sample.json";
const EXTRA: &str = "suricata/tr0llope-eve-mixed.extra.json";

#[test]
fn http_alert_maps_rule_addresses_url_and_flow() {
    let line = line_with(SAMPLE, &[r#""signature_id":2030053"#]);
    let e = suricata(&line);

    // timestamp 2022-10-31T15:47:28.168061+0100
    assert_eq!(s(&e, "@timestamp"), "2022-10-31T14:47:28.168061Z");
    assert_eq!(s(&e, "event.kind"), "alert");
    assert_eq!(
        strings(&e, "event.category"),
        ["network", "intrusion_detection"]
    );
    // alert.action "allowed"
    assert_eq!(strings(&e, "event.type"), ["allowed"]);
    assert_eq!(s(&e, "event.dataset"), "suricata.eve");
    assert_eq!(s(&e, "event.module"), "suricata");
    assert!(e.get("event.original").is_none(), "off by default");
    // alert.severity 1, signature_id, signature, category, rev
    assert_eq!(u(&e, "event.severity"), 1);
    assert_eq!(s(&e, "rule.id"), "2030053");
    assert_eq!(
        s(&e, "rule.name"),
        "ET MALWARE Win32/IcedID Requesting Encoded Binary M4"
    );
    assert_eq!(
        s(&e, "rule.category"),
        "Malware Command and Control Activity Detected"
    );
    assert_eq!(s(&e, "rule.version"), "10");

    assert_eq!(s(&e, "observer.name"), SENSOR);
    assert_eq!(s(&e, "observer.product"), "Suricata");
    assert_eq!(s(&e, "observer.vendor"), "OISF");

    // src_ip/src_port/dest_ip/dest_port/proto/app_proto
    assert_eq!(s(&e, "source.ip"), "172.16.0.153");
    assert_eq!(u(&e, "source.port"), 57580);
    assert_eq!(s(&e, "destination.ip"), "67.205.184.237");
    assert_eq!(u(&e, "destination.port"), 80);
    assert_eq!(s(&e, "network.transport"), "tcp");
    assert_eq!(s(&e, "network.protocol"), "http");
    assert_eq!(s(&e, "network.type"), "ipv4");

    // http.hostname "vgiragdoffy.com", http.url "/", method, status, protocol, length
    assert_eq!(s(&e, "url.domain"), "vgiragdoffy.com");
    assert_eq!(s(&e, "destination.domain"), "vgiragdoffy.com");
    assert_eq!(s(&e, "url.original"), "/");
    assert_eq!(s(&e, "url.path"), "/");
    assert_eq!(s(&e, "url.full"), "http://vgiragdoffy.com/");
    assert_eq!(s(&e, "http.request.method"), "GET");
    assert_eq!(u(&e, "http.response.status_code"), 200);
    assert_eq!(s(&e, "http.version"), "1.1");
    assert_eq!(u(&e, "http.response.body.bytes"), 3929);
    assert_eq!(s(&e, "http.response.mime_type"), "application/gzip");

    // flow.bytes_toserver 539, bytes_toclient 7196, pkts 4 / 7
    assert_eq!(u(&e, "source.bytes"), 539);
    assert_eq!(u(&e, "destination.bytes"), 7196);
    assert_eq!(u(&e, "network.bytes"), 7735);
    assert_eq!(u(&e, "source.packets"), 4);
    assert_eq!(u(&e, "destination.packets"), 7);
    assert_eq!(u(&e, "network.packets"), 11);
    assert!(
        e.get("event.start").is_none(),
        "an alert's flow start is not its own"
    );

    assert_eq!(
        strings(&e, "related.ip"),
        ["172.16.0.153", "67.205.184.237"]
    );
    assert_eq!(strings(&e, "related.hosts"), ["vgiragdoffy.com"]);

    // Nothing lost: the whole record under suricata.eve, flow_id an exact u64.
    assert_eq!(u(&e, "suricata.eve.flow_id"), 1996108827552885);
    assert_eq!(
        e.get("suricata.eve.alert.metadata.malware_family"),
        Some(&json!(["IcedID"]))
    );
    assert_eq!(
        e.get("suricata.eve.metadata.flowbits"),
        Some(&json!(["min.gethttp"]))
    );

    // The core accessors the later stages use see the same values.
    assert_eq!(e.sensor(), Some(SENSOR));
    assert_eq!(e.dataset(), Some("suricata.eve"));
    assert_eq!(e.source_ip(), Some("172.16.0.153".parse().unwrap()));
    assert_eq!(e.destination_port(), Some(80));
    assert_eq!(e.domains(), ["vgiragdoffy.com"]);
    assert_eq!(e.urls(), ["http://vgiragdoffy.com/", "/"]);
    assert_eq!(
        e.timestamp().unwrap().to_rfc3339(),
        "2022-10-31T14:47:28.168061+00:00"
    );
}

#[test]
fn flow_id_survives_serialisation_exactly() {
    let line = line_with(SAMPLE, &[r#""pcap_cnt":1,"event_type":"dns""#]);
    let e = suricata(&line);
    // flow_id 2203553309031545 > 2^53: an f64 round trip would change its last digits.
    let bytes = serde_json::to_vec(&e).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains(r#""flow_id":2203553309031545"#), "{text}");
    let back: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        back["suricata"]["eve"]["flow_id"].as_u64(),
        Some(2203553309031545)
    );
}

#[test]
fn tls_alert_maps_the_embedded_handshake() {
    let line = line_with(
        SAMPLE,
        &[r#""flow_id":474599912214891"#, r#""event_type":"alert""#],
    );
    let e = suricata(&line);
    // alert.severity 3, category "Not Suspicious Traffic"
    assert_eq!(u(&e, "event.severity"), 3);
    assert_eq!(s(&e, "rule.category"), "Not Suspicious Traffic");
    // src_ip 137.184.208.116:443 → dest_ip 172.16.0.153:57581 (direction to_client)
    assert_eq!(s(&e, "source.ip"), "137.184.208.116");
    assert_eq!(u(&e, "destination.port"), 57581);
    assert_eq!(s(&e, "network.protocol"), "tls");
    // tls.sni, tls.ja3.hash, tls.ja3s.hash, tls.fingerprint
    assert_eq!(s(&e, "tls.client.server_name"), "ringashopsu.com");
    assert_eq!(s(&e, "tls.client.ja3"), "3b5074b1b5d032e5620f69f9f700ff0e");
    assert_eq!(s(&e, "tls.server.ja3s"), "ec74a5c51106f0419184d0dd08fb05bc");
    assert_eq!(
        s(&e, "tls.server.hash.sha1"),
        "D14983ECBE0F97023721D0960F5DC98388809CC9"
    );
    assert_eq!(s(&e, "destination.domain"), "ringashopsu.com");
}

#[test]
fn tls_record_maps_version_certificate_and_hashes() {
    let line = line_with(
        SAMPLE,
        &[r#""flow_id":93781623886272"#, r#""event_type":"tls""#],
    );
    let e = suricata(&line);
    assert_eq!(s(&e, "event.kind"), "event");
    assert_eq!(strings(&e, "event.category"), ["network"]);
    assert_eq!(strings(&e, "event.type"), ["protocol"]);
    // tls.version "TLS 1.2"
    assert_eq!(s(&e, "tls.version_protocol"), "tls");
    assert_eq!(s(&e, "tls.version"), "1.2");
    assert_eq!(s(&e, "tls.client.server_name"), "airsaintol.beauty");
    // tls.subject / issuerdn
    assert_eq!(
        s(&e, "tls.server.subject"),
        "CN=localhost, C=AU, ST=Some-State, O=Internet Widgits Pty Ltd"
    );
    assert_eq!(
        s(&e, "tls.server.issuer"),
        "CN=localhost, C=AU, ST=Some-State, O=Internet Widgits Pty Ltd"
    );
    // tls.notbefore "2022-10-12T07:01:36", notafter "2023-10-12T07:01:36", serial "16:D6:C6:AD"
    assert_eq!(s(&e, "tls.server.not_before"), "2022-10-12T07:01:36Z");
    assert_eq!(s(&e, "tls.server.not_after"), "2023-10-12T07:01:36Z");
    assert_eq!(s(&e, "tls.server.x509.serial_number"), "16D6C6AD");
    assert_eq!(
        strings(&e, "related.hash"),
        [
            "a0e9f5d64349fb13191bc781f81f42e1",
            "ec74a5c51106f0419184d0dd08fb05bc",
            "E13DE126A13922C361FD390518883CBF9C257B01",
        ]
    );
}

#[test]
fn dns_v2_query_and_answer_records() {
    let query = suricata(&line_with(SAMPLE, &[r#""pcap_cnt":1,"event_type":"dns""#]));
    // dns.type "query", id 8547, rrname, rrtype
    assert_eq!(s(&query, "dns.type"), "query");
    assert_eq!(s(&query, "dns.id"), "8547");
    assert_eq!(s(&query, "dns.question.name"), "vgiragdoffy.com");
    assert_eq!(s(&query, "dns.question.type"), "A");
    assert!(query.get("dns.answers").is_none());
    assert_eq!(s(&query, "network.transport"), "udp");
    assert_eq!(u(&query, "destination.port"), 53);

    let answer = suricata(&line_with(SAMPLE, &[r#""pcap_cnt":2,"event_type":"dns""#]));
    // dns.type "answer", rcode NOERROR, rd/ra true, answers[0] A 67.205.184.237 ttl 899
    assert_eq!(s(&answer, "dns.type"), "answer");
    assert_eq!(s(&answer, "dns.response_code"), "NOERROR");
    assert_eq!(strings(&answer, "dns.header_flags"), ["RD", "RA"]);
    assert_eq!(
        answer.get("dns.answers"),
        Some(
            &json!([{"name": "vgiragdoffy.com", "type": "A", "ttl": 899, "data": "67.205.184.237"}])
        )
    );
    assert_eq!(strings(&answer, "dns.resolved_ip"), ["67.205.184.237"]);
    assert!(strings(&answer, "related.ip").contains(&"67.205.184.237".to_owned()));
    assert_eq!(answer.domains(), ["vgiragdoffy.com"]);
}

#[test]
fn dns_nxdomain_with_only_an_authority_has_no_answers() {
    let e = suricata(&line_with(EXTRA, &[r#""flow_id":1195401895956874"#]));
    // rcode NXDOMAIN, aa/rd/ra true, authorities[] but no answers[]
    assert_eq!(s(&e, "dns.response_code"), "NXDOMAIN");
    assert_eq!(strings(&e, "dns.header_flags"), ["AA", "RD", "RA"]);
    assert_eq!(s(&e, "dns.question.name"), "wpad.fashionkings.com");
    assert!(e.get("dns.answers").is_none());
    assert!(e.get("dns.resolved_ip").is_none());
}

#[test]
fn dns_v3_records_map_like_v2() {
    let request = suricata(&nth_line("suricata/derived.jsonl", 2));
    // dns.type "request", queries[0] {rrname, rrtype}
    assert_eq!(s(&request, "dns.type"), "query");
    assert_eq!(s(&request, "dns.question.name"), "vgiragdoffy.com");
    assert_eq!(s(&request, "dns.question.type"), "A");
    assert_eq!(strings(&request, "dns.header_flags"), ["RD"]);

    let response = suricata(&nth_line("suricata/derived.jsonl", 3));
    assert_eq!(s(&response, "dns.type"), "answer");
    assert_eq!(s(&response, "dns.question.name"), "vgiragdoffy.com");
    assert_eq!(strings(&response, "dns.resolved_ip"), ["67.205.184.237"]);
    assert_eq!(
        response.get("dns.answers"),
        Some(
            &json!([{"name": "vgiragdoffy.com", "type": "A", "ttl": 899, "data": "67.205.184.237"}])
        )
    );
}

#[test]
fn http_record_builds_the_full_url_with_its_query() {
    let e = suricata(&line_with(SAMPLE, &[r#""pcap_cnt":18367,"#]));
    let host = "msedge.b.tlu.dl.delivery.mp.microsoft.com";
    let url = "/filestreamingservice/files/c78f9967-7a8c-44b0-ad94-732b63c89638?P1=1667433251&P2=404&P3=2&P4=fbX3zBx%2fIq2gKXPIFhAO1khKVW870s3xAxlE258EDWJ957lZUZcZZu94FtL2hQlFHdMgiuLaFtWKDHomALjDJg%3d%3d";
    assert_eq!(s(&e, "url.original"), url);
    assert_eq!(s(&e, "url.full"), format!("http://{host}{url}"));
    assert_eq!(
        s(&e, "url.path"),
        "/filestreamingservice/files/c78f9967-7a8c-44b0-ad94-732b63c89638"
    );
    assert!(s(&e, "url.query").starts_with("P1=1667433251&P2=404"));
    // http.http_user_agent, status 206
    assert_eq!(s(&e, "user_agent.original"), "Microsoft BITS/7.8");
    assert_eq!(u(&e, "http.response.status_code"), 206);
    assert_eq!(strings(&e, "event.category"), ["network"]);
}

#[test]
fn fileinfo_records_map_file_name_size_and_hash() {
    // fileinfo.filename "/", size 102400, sha256 8c9aa6…
    let e = suricata(&line_with(SAMPLE, &[r#""file_id":1,"#]));
    assert_eq!(strings(&e, "event.category"), ["network", "file"]);
    assert_eq!(strings(&e, "event.type"), ["info"]);
    assert_eq!(u(&e, "file.size"), 102400);
    assert_eq!(
        s(&e, "file.hash.sha256"),
        "8c9aa62f6459b553ca6a5023214f9fdd52c145e3a236c01d0a6e39b4ed25ca08"
    );
    assert_eq!(s(&e, "file.path"), "/");
    assert!(e.get("file.name").is_none());
    assert_eq!(e.file_hashes().len(), 1);

    // fileinfo.filename "/filestreamingservice/files/c78f…"
    let e = suricata(&line_with(SAMPLE, &[r#""file_id":2,"#]));
    assert_eq!(s(&e, "file.name"), "c78f9967-7a8c-44b0-ad94-732b63c89638");
    assert_eq!(
        s(&e, "file.path"),
        "/filestreamingservice/files/c78f9967-7a8c-44b0-ad94-732b63c89638"
    );

    // suricata-verify: fileinfo.filename "eicar.com", size 68, http.hostname www.eicar.org
    let e = suricata(&nth_line("suricata/suricata-verify-fileinfo.json", 1));
    assert_eq!(s(&e, "@timestamp"), "2016-06-08T20:01:52.875791Z");
    assert_eq!(s(&e, "file.name"), "eicar.com");
    assert!(e.get("file.path").is_none());
    assert_eq!(u(&e, "file.size"), 68);
    assert_eq!(s(&e, "url.full"), "http://www.eicar.org/download/eicar.com");
    assert_eq!(s(&e, "user_agent.original"), "curl/7.43.0");
}

#[test]
fn flow_records_carry_their_span_and_volumes() {
    let e = suricata(&line_with(SAMPLE, &[r#""flow_id":1653002342589187"#]));
    assert_eq!(strings(&e, "event.type"), ["connection", "end"]);
    // flow.start/end with +0100 offsets
    assert_eq!(s(&e, "event.start"), "2022-10-31T14:54:45.515941Z");
    assert_eq!(s(&e, "event.end"), "2022-10-31T14:54:46.756158Z");
    // bytes 1452 / 4695, packets 12 / 10
    assert_eq!(u(&e, "network.bytes"), 6147);
    assert_eq!(u(&e, "network.packets"), 22);
    assert_eq!(s(&e, "network.protocol"), "tls");

    // app_proto "failed" is no protocol
    let e = suricata(&line_with(
        SAMPLE,
        &[r#""flow_id":543870343561176"#, r#""event_type":"flow""#],
    ));
    assert!(e.get("network.protocol").is_none());
}

#[test]
fn smb_and_krb5_name_the_user() {
    // smb.ntlmssp {domain FASHIONKINGS, user giorgio.armani}
    let e = suricata(&line_with(EXTRA, &[r#""flow_id":2221142026237300"#]));
    assert_eq!(s(&e, "user.name"), "giorgio.armani");
    assert_eq!(s(&e, "user.domain"), "FASHIONKINGS");
    assert_eq!(strings(&e, "related.user"), ["giorgio.armani"]);
    assert_eq!(e.user_name(), Some("giorgio.armani"));

    // krb5 KRB_TGS_REP cname giorgio.armani realm FASHIONKINGS.COM
    let e = suricata(&line_with(SAMPLE, &[r#""pcap_cnt":149290,"#]));
    assert_eq!(strings(&e, "event.category"), ["network", "authentication"]);
    assert_eq!(s(&e, "user.name"), "giorgio.armani");
    assert_eq!(s(&e, "user.domain"), "FASHIONKINGS.COM");

    // krb5 KRB_ERROR with cname "<empty>"
    let e = suricata(&line_with(SAMPLE, &[r#""pcap_cnt":110012,"#]));
    assert!(e.get("user.name").is_none());
}

#[test]
fn anomaly_dcerpc_and_stats_keep_their_payload() {
    let e = suricata(&line_with(SAMPLE, &[r#""event_type":"anomaly""#]));
    assert_eq!(s(&e, "event.kind"), "event");
    assert_eq!(strings(&e, "event.type"), ["info"]);
    assert_eq!(
        s(&e, "suricata.eve.anomaly.event"),
        "APPLAYER_DETECT_PROTOCOL_ONLY_ONE_DIRECTION"
    );

    let e = suricata(&line_with(SAMPLE, &[r#""pcap_cnt":1199,"#]));
    assert_eq!(strings(&e, "event.type"), ["protocol"]);
    assert_eq!(s(&e, "suricata.eve.dcerpc.request"), "BIND");

    // stats: timestamp 2023-11-21T13:26:50.053252+0100, no addresses, no category
    let e = suricata(&line_with(
        SAMPLE,
        &[r#""timestamp":"2023-11-21T13:26:50.053252+0100""#],
    ));
    assert_eq!(s(&e, "event.kind"), "metric");
    assert_eq!(s(&e, "@timestamp"), "2023-11-21T12:26:50.053252Z");
    assert!(e.get("event.category").is_none());
    assert!(e.get("source.ip").is_none());
    assert_eq!(u(&e, "suricata.eve.stats.uptime"), 0);
    assert_eq!(s(&e, "observer.name"), SENSOR);
}

const DERIVED_SSH_SMTP: &str = "suricata/derived-ssh-smtp.jsonl";

#[test]
fn ssh_records_relate_both_hassh_fingerprints() {
    let e = suricata(&line_with(DERIVED_SSH_SMTP, &[r#""event_type":"ssh""#]));
    assert_eq!(strings(&e, "event.category"), ["network"]);
    assert_eq!(strings(&e, "event.type"), ["protocol"]);
    assert_eq!(s(&e, "network.protocol"), "ssh");
    assert_eq!(u(&e, "destination.port"), 22);
    // ssh.client.hassh.hash, ssh.server.hassh.hash
    assert_eq!(
        strings(&e, "related.hash"),
        [
            "2c4dda2bd1f2a62d42d81bdb77cfa879",
            "8d3ddf84cdadec475d3dcd54452a43d3"
        ]
    );
    assert_eq!(
        s(&e, "suricata.eve.ssh.client.software_version"),
        "OpenSSH_8.9p1"
    );
    assert!(e.get("user_agent.original").is_none());
}

#[test]
fn smtp_records_map_the_envelope_and_the_headers() {
    let e = suricata(&line_with(DERIVED_SSH_SMTP, &[r#""event_type":"smtp""#]));
    assert_eq!(strings(&e, "event.category"), ["network", "email"]);
    assert_eq!(strings(&e, "event.type"), ["protocol", "info"]);
    // smtp.helo
    assert_eq!(s(&e, "source.domain"), "mail.example.org");
    assert_eq!(strings(&e, "related.hosts"), ["mail.example.org"]);
    // smtp.mail_from "<billing@example.org>" wins over the From header
    assert_eq!(s(&e, "email.from.address"), "billing@example.org");
    // smtp.rcpt_to, not the To header's single name
    assert_eq!(
        strings(&e, "email.to.address"),
        ["ann@example.net", "bob@example.net"]
    );
    assert_eq!(strings(&e, "email.cc.address"), ["carol@example.net"]);
    assert_eq!(s(&e, "email.subject"), "Invoice 2022-10");
    assert_eq!(
        s(&e, "email.message_id"),
        "<20221031144727.1@mail.example.org>"
    );
    assert_eq!(
        e.get("email.attachments"),
        Some(&json!([{ "file": { "name": "invoice.zip" } }]))
    );
    let observables: Vec<String> = e.observables().into_iter().map(|o| o.value).collect();
    for address in [
        "billing@example.org",
        "ann@example.net",
        "bob@example.net",
        "carol@example.net",
    ] {
        assert!(
            observables.iter().any(|v| v == address),
            "{address}: {observables:?}"
        );
    }
}

#[test]
fn xhpx_alert_keeps_interface_and_signature_text() {
    let e = suricata(&nth_line("suricata/xhpx-eve.json", 1));
    // timestamp 2019-11-26T16:41:02.504203+0800, in_iface ens33, signature "ssh test "
    assert_eq!(s(&e, "@timestamp"), "2019-11-26T08:41:02.504203Z");
    assert_eq!(s(&e, "observer.ingress.interface.name"), "ens33");
    assert_eq!(s(&e, "rule.id"), "100001");
    assert_eq!(s(&e, "rule.name"), "ssh test ");
    assert_eq!(u(&e, "event.severity"), 1);
    assert_eq!(u(&e, "destination.port"), 22);
}

#[test]
fn ipv6_addresses_are_compressed_and_community_id_kept() {
    let e = suricata(&nth_line("suricata/derived.jsonl", 1));
    // src_ip 2001:0db8:0000:0000:0000:0000:0000:0153, dest_ip ff02:0000:…:000c
    assert_eq!(s(&e, "source.ip"), "2001:db8::153");
    assert_eq!(s(&e, "destination.ip"), "ff02::c");
    assert_eq!(s(&e, "network.type"), "ipv6");
    assert_eq!(
        s(&e, "network.community_id"),
        "1:TlDqPVEuSU/+z67pc68PK2GL5tM="
    );
    assert_eq!(
        e.source_ip(),
        Some("2001:db8::153".parse::<IpAddr>().unwrap())
    );
    // The original spelling stays in the namespace.
    assert_eq!(
        s(&e, "suricata.eve.src_ip"),
        "2001:0db8:0000:0000:0000:0000:0000:0153"
    );
}

#[test]
fn event_original_is_kept_when_asked() {
    let line = nth_line("suricata/xhpx-eve.json", 1);
    let ctx = ParseContext::new(SENSOR).with_options(ParseOptions {
        keep_original: true,
        ..ParseOptions::default()
    });
    let e = parse_line(Format::SuricataEve, line.as_bytes(), &ctx).unwrap();
    assert_eq!(s(&e, "event.original"), line);
}

#[test]
fn every_line_of_the_fixtures_parses() {
    for file in [
        SAMPLE,
        EXTRA,
        "suricata/xhpx-eve.json",
        "suricata/suricata-verify-fileinfo.json",
        "suricata/derived.jsonl",
    ] {
        let text = std::fs::read_to_string(fixture(file)).unwrap();
        for (i, line) in text.lines().enumerate() {
            let e = suricata(line);
            assert!(e.timestamp().is_some(), "{file}:{}", i + 1);
        }
    }
}
