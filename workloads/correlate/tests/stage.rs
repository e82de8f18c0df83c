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

/// The bundled Suricata rule's Sigma, with `extra` YAML documents appended.
fn suricata_bundle(extra: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc/rules");
    let text = std::fs::read_to_string(dir.join("kastell-suricata-alert-high.yaml")).unwrap();
    let resource: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    format!(
        "{}---\n{extra}",
        resource["spec"]["sigma"].as_str().unwrap()
    )
}

fn alerts_of(set: &RuleSet, events: &[Event]) -> Vec<kastell_core::Alert> {
    let mut state = set.correlation_state();
    events
        .iter()
        .flat_map(|event| {
            kastell_correlate::correlate_event(set, &mut state, event.clone(), chrono::Utc::now())
                .alerts
        })
        .collect()
}

#[test]
fn correlation_alerts_carry_their_group_and_events() {
    // Two high-severity Suricata alerts against one destination within a minute (the
    // sample's eve.json lines 16 and 17).
    let bundle = suricata_bundle(
        "title: Repeated high severity alerts on one target\nid: corr-eve\nlevel: critical\n\
         correlation:\n  type: event_count\n  rules: [9507d32f-0b57-4312-ae66-2a48f00081c2]\n  \
         group-by: [destination.ip]\n  timespan: 1m\n  condition: {gte: 2}\n",
    );
    let (set, errors) = RuleSet::compile([RuleDocument::new("soc/bundle", bundle)]);
    assert!(errors.is_empty(), "{errors:?}");
    let alerts = alerts_of(&set, &events("suricata/eve.json", Format::SuricataEve));
    let correlated: Vec<_> = alerts.iter().filter(|a| a.rule.id == "corr-eve").collect();
    assert!(!correlated.is_empty());
    // Without `generate`, the single-event rule raises nothing of its own.
    assert_eq!(correlated.len(), alerts.len());
    for alert in correlated {
        assert_eq!(alert.rule.level, Level::Critical);
        let target = &alert.group["destination.ip"];
        assert!(alert.events.len() >= 2);
        for event in &alert.events {
            assert_eq!(event.destination_ip().unwrap().to_string(), *target);
        }
        let first = alert.events[0].timestamp().unwrap();
        let last = alert.events.last().unwrap().timestamp().unwrap();
        assert!(last - first <= chrono::Duration::minutes(1));
        assert_eq!(alert.timestamp, last);
        assert_eq!(alert.rule.source.as_ref().unwrap().resource, "soc/bundle");
    }
}

#[test]
fn a_suppression_window_drops_repeats_per_rule_and_host() {
    let sigma = suricata_bundle("");
    let events = events("suricata/eve.json", Format::SuricataEve);
    let plain = RuleSet::compile([RuleDocument::new("soc/a", sigma.clone())]).0;
    let all = alerts_of(&plain, &events);
    let window = std::time::Duration::from_secs(86_400);
    let suppressed =
        RuleSet::compile([RuleDocument::new("soc/a", sigma).with_suppression(Some(window))]).0;
    let kept = alerts_of(&suppressed, &events);
    let hosts: std::collections::BTreeSet<_> = all.iter().map(|a| a.host.clone()).collect();
    // The capture spans less than the day: one alert per host remains.
    assert!(all.len() > hosts.len(), "the sample repeats hosts");
    assert_eq!(kept.len(), hosts.len());
}
