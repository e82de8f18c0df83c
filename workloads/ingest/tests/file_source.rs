//! Files through the whole ingest path: events on the bus in order, rejections reported,
//! counted and dead-lettered, and the real Suricata corpus without a single rejection.

mod common;

use std::collections::BTreeMap;
use std::io::Write;

use common::*;
use kastell_core::{Bus, Event, InProcessBus, Topic};
use kastell_ingest::{
    detect_file_format, detect_format, ingest_file, DeadLetter, FileSource, Format, IngestError,
    IngestStats, Ingestor, RejectReason, Source, DEFAULT_MAX_LINE_BYTES,
};

struct Drained {
    events: Vec<(Option<String>, Event)>,
    dead: Vec<DeadLetter>,
}

/// Runs `run` with subscribers on both topics, then drains them.
async fn with_bus<F, Fut, T>(run: F) -> (T, Drained)
where
    F: FnOnce(std::sync::Arc<InProcessBus>) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let bus = std::sync::Arc::new(InProcessBus::new(100_000));
    let mut events = bus.subscribe(Topic::Events, "test").await.unwrap();
    let mut dead = bus.subscribe(Topic::DeadLetters, "test").await.unwrap();
    let out = run(bus.clone()).await;
    bus.close(Topic::Events).await;
    bus.close(Topic::DeadLetters).await;
    let mut drained = Drained {
        events: Vec::new(),
        dead: Vec::new(),
    };
    while let Some(d) = events.next().await {
        let id = d.message.id.clone();
        drained.events.push((id, d.message.decode().unwrap()));
    }
    while let Some(d) = dead.next().await {
        drained.dead.push(d.message.decode().unwrap());
    }
    (out, drained)
}

fn temp_file(lines: &[Vec<u8>]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for line in lines {
        file.write_all(line).unwrap();
        file.write_all(b"\n").unwrap();
    }
    file.flush().unwrap();
    file
}

#[tokio::test]
async fn bad_lines_in_the_middle_are_reported_and_good_lines_still_flow_in_order() {
    let good: Vec<String> = std::fs::read_to_string(fixture("suricata/xhpx-eve.json"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut invalid_utf8 = good[2].clone().into_bytes();
    invalid_utf8[20] = 0xFF;
    let too_long = format!(
        "{{\"pad\":\"{}\"}}",
        "x".repeat(DEFAULT_MAX_LINE_BYTES + 10)
    );
    let lines: Vec<Vec<u8>> = vec![
        good[0].clone().into(),                                  // 1
        good[1].clone().into(),                                  // 2
        b"{\"timestamp\":\"2019-11-26T16:41".to_vec(),           // 3 truncated
        good[2].clone().into(),                                  // 4
        b"".to_vec(),                                            // 5 blank
        b"[1,2]".to_vec(),                                       // 6 not an object
        invalid_utf8,                                            // 7
        good[3].clone().into(),                                  // 8
        too_long.into_bytes(),                                   // 9
        good[4].replace("10.8.8.66", "10.8.8.666").into_bytes(), // 10 invalid IP
        good[5].clone().into(),                                  // 11
    ];
    let file = temp_file(&lines);
    let path = file.path().to_owned();
    let stats = IngestStats::new();

    let (report, drained) = with_bus(|bus| {
        let path = path.clone();
        let stats = &stats;
        async move {
            ingest_file(&path, Format::SuricataEve, "edge-1", bus.as_ref(), stats)
                .await
                .unwrap()
        }
    })
    .await;

    let shown = path.display().to_string();
    let rejected: Vec<(u64, RejectReason)> =
        report.rejections.iter().map(|r| (r.line, r.kind)).collect();
    assert_eq!(
        rejected,
        [
            (3, RejectReason::InvalidJson),
            (6, RejectReason::NotAnObject),
            (7, RejectReason::InvalidUtf8),
            (9, RejectReason::TooLong),
            (10, RejectReason::InvalidIp),
        ]
    );
    assert_eq!(
        report.rejections[4].reason,
        "field dest_ip: \"10.8.8.666\" is not an IP address"
    );
    assert!(report.rejections.iter().all(|r| r.path == shown));
    assert_eq!(
        (report.lines, report.blank_lines, report.records),
        (11, 1, 10)
    );
    assert_eq!((report.published, report.rejected), (5, 5));

    // Good lines arrive in file order with `<sensor>:<path>:<line>` ids.
    let ids: Vec<String> = drained
        .events
        .iter()
        .map(|(id, _)| id.clone().unwrap())
        .collect();
    let want: Vec<String> = [1, 2, 4, 8, 11]
        .iter()
        .map(|n| format!("edge-1:{shown}:{n}"))
        .collect();
    assert_eq!(ids, want);
    let flow_ids: Vec<u64> = drained
        .events
        .iter()
        .filter_map(|(_, e)| e.get("suricata.eve.flow_id").and_then(|v| v.as_u64()))
        .collect();
    assert_eq!(flow_ids.len(), 4, "the stats record has no flow_id");
    assert!(drained
        .events
        .iter()
        .all(|(_, e)| e.sensor() == Some("edge-1")));

    // Every rejection is dead-lettered with its reason and a bounded copy of the line.
    let dead: Vec<(u64, RejectReason)> = drained.dead.iter().map(|d| (d.line, d.kind)).collect();
    assert_eq!(dead, rejected);
    let letter = &drained.dead[3];
    assert_eq!(letter.stage, "ingest");
    assert_eq!(letter.sensor, "edge-1");
    assert_eq!(letter.format, Format::SuricataEve);
    assert_eq!(letter.path, shown);
    assert_eq!(letter.raw.len(), 4096);
    // {"pad":"…"} with DEFAULT_MAX_LINE_BYTES + 10 x's
    let len = DEFAULT_MAX_LINE_BYTES + 20;
    assert_eq!(letter.raw_bytes, len);
    assert!(letter.raw_truncated);
    assert_eq!(
        letter.reason,
        format!("line is {len} bytes, over the {DEFAULT_MAX_LINE_BYTES}-byte limit")
    );
    assert!(drained.dead[2].raw.contains('\u{FFFD}'));
    assert!(!drained.dead[0].raw_truncated);

    let snap = stats.snapshot();
    assert_eq!(snap.events_in, 10);
    assert_eq!(snap.events_published, 5);
    assert_eq!(snap.events_rejected, 5);
    assert_eq!(snap.rejected_by_reason.get("invalid_json"), Some(&1));
    assert_eq!(snap.rejected_by_reason.get("too_long"), Some(&1));
}

#[tokio::test]
async fn whole_tr0llope_corpus_ingests_without_a_rejection() {
    let Some(corpora) = corpora() else {
        println!("skipped: ../shared/corpora not found");
        return;
    };
    let path = corpora.join("suricata/tr0llope/eve-mixed.json");
    let stats = IngestStats::new();
    let (report, drained) = with_bus(|bus| {
        let path = path.clone();
        let stats = &stats;
        async move {
            ingest_file(&path, Format::SuricataEve, "tr0llope", bus.as_ref(), stats)
                .await
                .unwrap()
        }
    })
    .await;
    assert_eq!(report.rejections, []);
    assert_eq!((report.records, report.published), (1814, 1814));
    assert_eq!(stats.events_rejected(), 0);

    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    for (_, e) in &drained.events {
        let event_type = e.get_str("suricata.eve.event_type").unwrap();
        *by_type.entry(event_type.to_owned()).or_default() += 1;
        assert!(e.timestamp().is_some());
    }
    // Counts of event_type in eve-mixed.json.
    let want: BTreeMap<String, u64> = [
        ("flow", 572),
        ("smb", 371),
        ("dns", 360),
        ("tls", 297),
        ("dcerpc", 78),
        ("fileinfo", 45),
        ("http", 41),
        ("alert", 34),
        ("krb5", 12),
        ("stats", 3),
        ("anomaly", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(by_type, want);
    let alerts = drained
        .events
        .iter()
        .filter(|(_, e)| e.get_str("event.kind") == Some("alert"))
        .count();
    assert_eq!(alerts, 34);
}

#[tokio::test]
async fn every_wazuh_logtest_eventchannel_vector_maps_without_rejection() {
    // Each real EventChannel record of the wazuh-logtest vectors, wrapped as the json
    // decoder wraps it in an alert, must map: it exercises every eventdata spelling
    // (hex pids, "-" placeholders, IPv6 sources) the Windows rules test.
    let Some(corpora) = corpora() else {
        println!("skipped: ../shared/corpora not found");
        return;
    };
    let mut seen = 0;
    for entry in std::fs::read_dir(corpora.join("wazuh/ruleset-tests")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for raw in text
            .lines()
            .filter_map(|l| l.split_once(" pass = ").map(|p| p.1))
        {
            let Ok(data) = serde_json::from_str::<serde_json::Value>(raw) else {
                continue;
            };
            if data.get("win").is_none() {
                continue;
            }
            let alert = serde_json::json!({
                "timestamp": "2021-04-28T20:11:55.364+0000",
                "rule": {"level": 3, "id": "60000", "description": "logtest vector"},
                "agent": {"id": "001", "name": "logtest"},
                "data": data,
            });
            let line = alert.to_string();
            if let Err(e) = parse(Format::WazuhAlerts, &line) {
                panic!("{}: {e}: {raw}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen > 150, "only {seen} EventChannel vectors found");
}

#[tokio::test]
async fn wazuh_fixtures_through_a_file_source() {
    let stats = IngestStats::new();
    let ingestor = Ingestor::new(Format::WazuhAlerts, "manager-1");
    let source = FileSource::new(fixture("wazuh/integratord-malformed.txt"));
    let (report, drained) = with_bus(|bus| {
        let source = &source;
        let ingestor = &ingestor;
        let stats = &stats;
        async move { source.run(ingestor, bus.as_ref(), stats).await.unwrap() }
    })
    .await;
    // Lines 1 and 3 are `#` comments, line 2 the broken alert, line 4 a good one.
    let kinds: Vec<(u64, RejectReason)> =
        report.rejections.iter().map(|r| (r.line, r.kind)).collect();
    assert_eq!(
        kinds,
        [
            (1, RejectReason::InvalidJson),
            (2, RejectReason::InvalidJson),
            (3, RejectReason::InvalidJson),
        ]
    );
    assert_eq!(drained.events.len(), 1);
    assert_eq!(drained.events[0].1.host_name(), Some("padding_input"));
    assert_eq!(drained.dead.len(), 3);
    assert_eq!(drained.dead[1].format, Format::WazuhAlerts);
}

#[tokio::test]
async fn rejections_kept_in_detail_are_capped_but_all_are_counted() {
    let lines: Vec<Vec<u8>> = (0..10).map(|_| b"not json".to_vec()).collect();
    let file = temp_file(&lines);
    let stats = IngestStats::new();
    let ingestor = Ingestor::new(Format::SuricataEve, "s").with_max_rejections_kept(3);
    let (report, drained) = with_bus(|bus| {
        let source = FileSource::new(file.path());
        let ingestor = &ingestor;
        let stats = &stats;
        async move { source.run(ingestor, bus.as_ref(), stats).await.unwrap() }
    })
    .await;
    assert_eq!(report.rejections.len(), 3);
    assert_eq!((report.rejected, report.rejections_not_kept), (10, 7));
    assert_eq!(drained.dead.len(), 10);
    assert_eq!(stats.rejected(RejectReason::InvalidJson), 10);
}

#[tokio::test]
async fn a_missing_file_is_an_error_naming_it() {
    let bus = InProcessBus::new(1);
    let stats = IngestStats::new();
    let path = std::path::Path::new("/nonexistent/eve.json");
    let err = ingest_file(path, Format::SuricataEve, "s", &bus, &stats)
        .await
        .unwrap_err();
    assert!(matches!(err, IngestError::Open { .. }));
    assert_eq!(err.to_string(), "opening /nonexistent/eve.json");
}

#[tokio::test]
async fn a_closed_bus_stops_ingest_with_the_line_it_was_on() {
    let bus = InProcessBus::new(1);
    bus.close(Topic::Events).await;
    let stats = IngestStats::new();
    let err = ingest_file(
        &fixture("suricata/xhpx-eve.json"),
        Format::SuricataEve,
        "s",
        &bus,
        &stats,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().starts_with("publishing line 1 of ")
            && err.to_string().ends_with(" to kastell.events"),
        "{err}"
    );
    assert_eq!(stats.events_published(), 0);
}

#[tokio::test]
async fn formats_are_detected_from_the_first_non_blank_line() {
    assert_eq!(
        detect_format(nth_line("suricata/xhpx-eve.json", 2).as_bytes()),
        Some(Format::SuricataEve)
    );
    assert_eq!(
        detect_format(nth_line("wazuh/misp-integration-alerts.jsonl", 1).as_bytes()),
        Some(Format::WazuhAlerts)
    );
    assert_eq!(detect_format(b"{\"rule\":{}}"), None);
    assert_eq!(detect_format(b"not json"), None);

    let max = DEFAULT_MAX_LINE_BYTES;
    let detect = |name: &str| {
        let path = fixture(name);
        async move { detect_file_format(&path, max).await.unwrap() }
    };
    assert_eq!(
        detect("suricata/tr0llope-eve-mixed.sample.json").await,
        Some(Format::SuricataEve)
    );
    assert_eq!(
        detect("wazuh/sshd-5712.jsonl").await,
        Some(Format::WazuhAlerts)
    );
    let blank_first = temp_file(&[
        b"".to_vec(),
        b"  ".to_vec(),
        nth_line("wazuh/sshd-5712.jsonl", 1).into_bytes(),
    ]);
    assert_eq!(
        detect_file_format(blank_first.path(), max).await.unwrap(),
        Some(Format::WazuhAlerts)
    );
    let empty = temp_file(&[]);
    assert_eq!(detect_file_format(empty.path(), max).await.unwrap(), None);
}

#[tokio::test]
async fn a_source_can_be_used_as_a_trait_object() {
    let sources: Vec<Box<dyn Source>> = vec![Box::new(FileSource::new(fixture(
        "suricata/suricata-verify-fileinfo.json",
    )))];
    let ingestor = Ingestor::new(Format::SuricataEve, "s");
    let stats = IngestStats::new();
    let bus = InProcessBus::new(10);
    for source in &sources {
        assert!(source.describe().ends_with("suricata-verify-fileinfo.json"));
        let report = source.run(&ingestor, &bus, &stats).await.unwrap();
        assert_eq!(report.published, 1);
    }
}

/// Every file of the corpora whose format its first lines tell is detected as that
/// format, as `kastell run --replay` detects it.
#[tokio::test]
async fn replay_detection_tells_every_corpus_format() {
    let corpora = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpora");
    if !corpora.is_dir() {
        println!("SKIPPED: {} is absent", corpora.display());
        return;
    }
    let max = DEFAULT_MAX_LINE_BYTES;
    let mut expected: Vec<(std::path::PathBuf, Format)> = Vec::new();
    let files_in = |dir: &str| -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(corpora.join(dir))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "log" || e == "json" || e == "jsonl")
            })
            .collect();
        files.sort();
        files
    };
    for dir in ["zeek/tsv/cchostak", "zeek/tsv/zeek-btest"] {
        for path in files_in(dir) {
            // Some btest baselines are Zeek's JSON writer with `XXXXXXXXXX` for times:
            // not JSON, so nothing tells their format.
            if std::fs::read_to_string(&path)
                .unwrap()
                .contains("#separator ")
            {
                expected.push((path, Format::Zeek));
            }
        }
    }
    for path in files_in("zeek/json/simir") {
        expected.push((path, Format::Zeek));
    }
    for dir in [
        "suricata/tr0llope",
        "suricata/xhpx",
        "suricata/suricata-verify",
    ] {
        for path in files_in(dir) {
            expected.push((path, Format::SuricataEve));
        }
    }
    for name in [
        "misp-integration-alerts.jsonl",
        "wazuh-qa-integratord-samples.jsonl",
    ] {
        expected.push((corpora.join("wazuh/alerts").join(name), Format::WazuhAlerts));
    }
    expected.push((fixture("greenbone/gmp-report.xml"), Format::Greenbone));
    assert!(expected.len() > 20, "{expected:?}");
    for (path, format) in &expected {
        assert_eq!(
            detect_file_format(path, max).await.unwrap(),
            Some(*format),
            "{}",
            path.display()
        );
    }

    // Syslog: the real sshd lines of Wazuh's ruleset tests, as a relay writes them (no
    // `<PRI>`), one file of them.
    let ini = std::fs::read_to_string(corpora.join("wazuh/ruleset-tests/sshd.ini")).unwrap();
    let lines: Vec<Vec<u8>> = ini
        .lines()
        .filter_map(|line| {
            line.split_once(" pass = ")
                .map(|(_, log)| log.as_bytes().to_vec())
        })
        .filter(|log| log.len() > 16 && log[3] == b' ')
        .collect();
    assert!(!lines.is_empty());
    let syslog = temp_file(&lines);
    assert_eq!(
        detect_file_format(syslog.path(), max).await.unwrap(),
        Some(Format::Syslog)
    );

    // A Greenbone report written on one line longer than the line limit is still told
    // by its root element.
    let report = std::fs::read_to_string(fixture("greenbone/gmp-report.xml")).unwrap();
    let one_line = report.replace('\n', " ");
    let file = temp_file(&[one_line.into_bytes()]);
    assert_eq!(
        detect_file_format(file.path(), 256).await.unwrap(),
        Some(Format::Greenbone)
    );
}

#[tokio::test]
async fn replay_detection_tells_an_ossec_alerts_log() {
    // The opener of the alerts.log blocks in the `formats` tests (the corpora hold no
    // real alerts.log).
    let file = temp_file(&[
        b"** Alert 1565277360.1234: mail  - syslog,sshd,authentication_failed,".to_vec(),
        b"2019 Aug 08 15:16:00 (web-01) 10.0.0.5->/var/log/secure".to_vec(),
    ]);
    assert_eq!(
        detect_file_format(file.path(), DEFAULT_MAX_LINE_BYTES)
            .await
            .unwrap(),
        Some(Format::Ossec)
    );
}
