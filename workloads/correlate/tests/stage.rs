//! The stage over the in-process bus: every event leaves as a detection (with or without
//! alerts), a message that is not an event is dead-lettered and counted, and the
//! detections topic is closed at the end.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use kastell_core::bus::publish_json;
use kastell_core::{Bus, Detection, Event, InProcessBus, Level, Message, Topic};
use kastell_correlate::{
    run_correlate_on, subscribe_events, CorrelateStats, DeadLetter, RuleDocument, RuleSet,
};
use kastell_ingest::{parse_line, Format, ParseContext};

fn events(file: &str, format: Format) -> Vec<Event> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/soc/data")
        .join(file);
    let ctx = ParseContext::new("demo");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|line| parse_line(format, line.as_bytes(), &ctx).ok())
        .collect()
}

fn rules() -> Arc<RuleSet> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc/rules");
    let documents = [
        "kastell-suricata-alert-high",
        "kastell-wazuh-sshd-brute-force",
    ]
    .iter()
    .map(|name| {
        let text = std::fs::read_to_string(dir.join(format!("{name}.yaml"))).unwrap();
        let resource: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let sigma = resource["spec"]["sigma"].as_str().unwrap().to_owned();
        RuleDocument::new(format!("soc/{name}"), sigma)
    });
    let (set, errors) = RuleSet::compile(documents);
    assert!(errors.is_empty(), "{errors:?}");
    Arc::new(set)
}

#[tokio::test]
async fn every_event_becomes_a_detection_and_bad_messages_are_dead_letters() {
    let bus = Arc::new(InProcessBus::new(64));
    let mut detections = bus.subscribe(Topic::Detections, "test").await.unwrap();
    let mut dead_letters = bus.subscribe(Topic::DeadLetters, "test").await.unwrap();
    let subscription = subscribe_events(bus.as_ref()).await.unwrap();
    let stats = Arc::new(CorrelateStats::new());
    let stage = {
        let (bus, stats) = (Arc::clone(&bus), Arc::clone(&stats));
        tokio::spawn(
            async move { run_correlate_on(bus.as_ref(), subscription, rules(), &stats).await },
        )
    };

    // The first 20 Suricata records (alerts at lines 16 and 17) and the three Wazuh alerts
    // (the sshd brute force is the third); between them, two messages that are not events.
    let mut input = events("suricata/eve.json", Format::SuricataEve);
    input.truncate(20);
    input.extend(events("wazuh/alerts.json", Format::WazuhAlerts));
    assert_eq!(input.len(), 23);
    let producer = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move {
            for (i, event) in input.iter().enumerate() {
                if i == 5 {
                    let garbage = Message {
                        id: None,
                        key: None,
                        payload: Bytes::from_static(b"{\"truncated\": "),
                    };
                    bus.publish(Topic::Events, garbage).await.unwrap();
                    publish_json(bus.as_ref(), Topic::Events, &["not", "an", "object"])
                        .await
                        .unwrap();
                }
                publish_json(bus.as_ref(), Topic::Events, event)
                    .await
                    .unwrap();
            }
            bus.close(Topic::Events).await;
        })
    };

    let mut seen = Vec::new();
    while let Some(delivery) = detections.next().await {
        seen.push(delivery.message.decode::<Detection>().unwrap());
    }
    producer.await.unwrap();
    let report = stage.await.unwrap().unwrap();

    assert_eq!(seen.len(), 23, "one detection per event, alerts or not");
    let with_alerts: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, d)| !d.alerts.is_empty())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(with_alerts, [15, 16, 22]);
    let sshd = &seen[22].alerts[0];
    assert_eq!(sshd.rule.id, "d0229745-b977-4788-975e-4729fe25e99b");
    assert_eq!(sshd.events, [seen[22].event.clone()]);
    assert_eq!(sshd.host.as_deref(), Some("localhost.localdomain"));

    assert_eq!(report.events, 23);
    assert_eq!(report.alerts, 3);
    assert_eq!(report.dead_letters, 2);
    assert_eq!(report.alerts_by_level.get(&Level::High), Some(&3));
    assert_eq!(
        report
            .alerts_by_rule
            .get("9507d32f-0b57-4312-ae66-2a48f00081c2"),
        Some(&2)
    );
    assert_eq!(report, stats.snapshot());

    bus.close(Topic::DeadLetters).await;
    let mut letters = Vec::new();
    while let Some(delivery) = dead_letters.next().await {
        letters.push(delivery.message.decode::<DeadLetter>().unwrap());
    }
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].stage, "correlate");
    assert_eq!(letters[0].topic, "kastell.events");
    assert_eq!(letters[0].payload, "{\"truncated\": ");
    assert!(
        letters[0]
            .reason
            .starts_with("decoding a message from JSON: "),
        "{}",
        letters[0].reason
    );
    assert!(
        letters[1].reason.contains("invalid type: sequence"),
        "{}",
        letters[1].reason
    );
}

#[tokio::test]
async fn the_detections_topic_is_closed_when_the_events_end() {
    let bus = InProcessBus::new(4);
    let mut detections = bus.subscribe(Topic::Detections, "test").await.unwrap();
    let subscription = subscribe_events(&bus).await.unwrap();
    bus.close(Topic::Events).await;
    let report = run_correlate_on(&bus, subscription, rules(), &CorrelateStats::new())
        .await
        .unwrap();
    assert_eq!(report.events, 0);
    assert!(detections.next().await.is_none());
}
