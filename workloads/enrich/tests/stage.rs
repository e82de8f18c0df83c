//! The enrich stage over the in-process bus, with the demo feed and real Suricata events
//! parsed by the ingest crate.

mod support;

use std::sync::Arc;

use chrono::Utc;
use kastell_core::bus::publish_json;
use kastell_core::{Alert, Bus, Detection, Event, InProcessBus, Level, Message, RuleRef, Topic};
use kastell_enrich::{
    enrich_detection, load_misp_feed_dir, run_enrich, run_enrich_on, subscribe_detections,
    DeadLetter, EnrichReport, EnrichStats, IndicatorStore,
};
use serde_json::json;

use support::suricata;

fn demo_store() -> IndicatorStore {
    load_misp_feed_dir("tweetfeed", support::demo_feed())
        .unwrap()
        .0
}

fn eve_event(needle: &str, pick: impl Fn(&Event) -> bool) -> Event {
    let text = std::fs::read_to_string(suricata::eve_path()).unwrap();
    text.lines()
        .filter(|l| l.contains(needle))
        .filter_map(suricata::ecs_event)
        .find(pick)
        .unwrap_or_else(|| panic!("no EVE line with {needle}"))
}

/// The IcedID HTTP alert line, with the Sigma-style alert a rule would raise on it.
fn icedid_detection() -> Detection {
    let event = eve_event("ET MALWARE Win32/IcedID Request Cookie", |_| true);
    let rule = RuleRef {
        id: "0a3f5ff9-6f1c-4c55-a1b0-25e5e3c27cb0".into(),
        title: "Suricata alert from a malware signature".into(),
        level: Level::High,
        tags: vec!["attack.command-and-control".into()],
        author: Some("Kastell tests".into()),
        source: None,
    };
    let alert = Alert::from_event(rule, event.clone(), Utc::now());
    Detection {
        event,
        alerts: vec![alert],
    }
}

/// A DNS query for an IcedID C2 domain: no rule matches it, the feed does.
fn c2_dns_detection() -> Detection {
    let event = eve_event("\"rrname\":\"ringashopsu.com\"", |e| {
        e.get_str("dns.question.name") == Some("ringashopsu.com")
    });
    Detection {
        event,
        alerts: vec![],
    }
}

/// A flow between two internal hosts: nothing to match.
fn internal_flow_detection(with_alert: bool) -> Detection {
    let event = eve_event("\"event_type\":\"flow\"", |e| {
        e.get_str("destination.ip") == Some("172.16.0.12")
    });
    let alerts = if with_alert {
        let rule = RuleRef {
            id: "kastell-test-internal-flow".into(),
            title: "Internal flow".into(),
            level: Level::Low,
            ..RuleRef::default()
        };
        vec![Alert::from_event(rule, event.clone(), Utc::now())]
    } else {
        vec![]
    };
    Detection { event, alerts }
}

/// Runs the stage on the messages, returning what it published and its report.
async fn run(
    store: IndicatorStore,
    messages: Vec<Message>,
) -> (Vec<Alert>, Vec<DeadLetter>, EnrichReport) {
    let bus = Arc::new(InProcessBus::new(1024));
    let mut alerts = bus.subscribe(Topic::Alerts, "cases").await.unwrap();
    let mut dead = bus.subscribe(Topic::DeadLetters, "audit").await.unwrap();
    let subscription = subscribe_detections(bus.as_ref()).await.unwrap();
    let stage = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move {
            let stats = EnrichStats::new();
            run_enrich_on(bus.as_ref(), subscription, Arc::new(store), &stats).await
        })
    };
    for message in messages {
        bus.publish(Topic::Detections, message).await.unwrap();
    }
    bus.close(Topic::Detections).await;

    let mut published = Vec::new();
    while let Some(delivery) = alerts.next().await {
        assert_eq!(
            delivery.message.id.as_deref(),
            Some(delivery.message.decode::<Alert>().unwrap().id.as_str())
        );
        published.push(delivery.message.decode::<Alert>().unwrap());
    }
    let report = stage.await.unwrap().unwrap();
    bus.close(Topic::DeadLetters).await;
    let mut letters = Vec::new();
    while let Some(delivery) = dead.next().await {
        letters.push(delivery.message.decode::<DeadLetter>().unwrap());
    }
    (published, letters, report)
}

fn message(detection: &Detection) -> Message {
    Message::json(detection).unwrap()
}

#[tokio::test]
async fn a_rule_alert_leaves_with_its_intel_matches() {
    let detection = icedid_detection();
    let original = detection.alerts[0].clone();
    let (alerts, letters, report) = run(demo_store(), vec![message(&detection)]).await;
    assert!(letters.is_empty());
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0];
    // The rule's alert keeps its identity and level; only intel and the event change.
    assert_eq!(alert.id, original.id);
    assert_eq!(alert.rule, original.rule);
    let matched: Vec<_> = alert.intel.iter().map(|m| m.observable.as_str()).collect();
    assert_eq!(
        matched,
        [
            "67.205.184.237",
            "vgiragdoffy.com",
            "http://vgiragdoffy.com/"
        ]
    );
    let enrichments = alert.events[0]
        .get("threat.enrichments")
        .unwrap()
        .as_array()
        .unwrap();
    let atomics: Vec<_> = enrichments
        .iter()
        .map(|e| e["matched"]["atomic"].as_str().unwrap())
        .collect();
    assert_eq!(
        atomics,
        [
            "67.205.184.237",
            "vgiragdoffy.com",
            "http://vgiragdoffy.com/"
        ]
    );
    assert_eq!(enrichments[0]["indicator"]["port"], 80);
    assert_eq!(
        enrichments[1]["indicator"]["url"]["domain"],
        "vgiragdoffy.com"
    );
    assert_eq!(
        report,
        EnrichReport {
            detections: 1,
            events_with_matches: 1,
            intel_matches: 3,
            intel_alerts: 0,
            alerts_forwarded: 1,
            dead_letters: 0,
        }
    );
}

#[tokio::test]
async fn an_event_no_rule_matched_raises_an_intel_alert() {
    let detection = c2_dns_detection();
    let (alerts, _, report) = run(demo_store(), vec![message(&detection)]).await;
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0];
    assert_eq!(alert.rule.id, "kastell-intel-tweetfeed");
    assert_eq!(alert.rule.author.as_deref(), Some("Kastell intel matcher"));
    // The demo event has threat_level_id 1.
    assert_eq!(alert.rule.level, Level::High);
    assert!(alert.rule.tags.contains(&"tlp:clear".to_owned()));
    assert!(alert
        .rule
        .tags
        .contains(&r#"misp-galaxy:mitre-attack-pattern="Web Protocols - T1071.001""#.to_owned()));
    let observables: Vec<_> = alert.intel.iter().map(|m| m.observable.as_str()).collect();
    assert_eq!(observables, ["ringashopsu.com"]);
    assert_eq!(
        alert.rule.title,
        "Threat intel match: ringashopsu.com in tweetfeed"
    );
    assert_eq!(
        alert.events[0]
            .get("threat.enrichments")
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The id depends on the rule and the event as it arrived, not on the time it ran.
    let again = enrich_detection(&demo_store(), detection, Utc::now());
    assert_eq!(again.alerts[0].id, alert.id);
    assert_eq!((report.intel_alerts, report.alerts_forwarded), (1, 1));
}

#[tokio::test]
async fn events_without_matches_pass_only_when_they_have_alerts() {
    let quiet = internal_flow_detection(false);
    let alerted = internal_flow_detection(true);
    let (alerts, _, report) = run(demo_store(), vec![message(&quiet), message(&alerted)]).await;
    assert_eq!(alerts, alerted.alerts);
    assert!(alerts[0].intel.is_empty());
    assert!(alerts[0].events[0].get("threat").is_none());
    assert_eq!(
        report,
        EnrichReport {
            detections: 2,
            alerts_forwarded: 1,
            ..EnrichReport::default()
        }
    );
}

#[tokio::test]
async fn undecodable_messages_are_dead_lettered_and_the_rest_flows() {
    let not_json = Message {
        id: None,
        key: None,
        payload: bytes::Bytes::from_static(b"{\"event\": {\"source\": "),
    };
    let not_an_object = Message::json(&json!({"event": ["not", "an", "event"]})).unwrap();
    let messages = vec![not_json, not_an_object, message(&c2_dns_detection())];
    let (alerts, letters, report) = run(demo_store(), messages).await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].stage, "enrich");
    assert_eq!(letters[0].topic, "kastell.detections");
    assert_eq!(letters[0].payload, "{\"event\": {\"source\": ");
    assert!(letters[0]
        .reason
        .starts_with("decoding a message from JSON: "));
    assert!(letters[0].reason.contains("EOF"), "{}", letters[0].reason);
    assert_eq!(report.dead_letters, 2);
    assert_eq!(report.detections, 1);
}

#[tokio::test]
async fn each_feed_that_matched_raises_its_own_alert() {
    // The corpus TweetFeed feed and the demo feed (which includes the same five events)
    // both list mu-hiqwnkesad.com; TweetFeed events have threat level 4.
    let corpus = load_misp_feed_dir("tweetfeed-corpus", support::tweetfeed_feed())
        .unwrap()
        .0;
    let store = IndicatorStore::from_stores([corpus, demo_store()]);
    let event = Event::from_value(json!({
        "@timestamp": "2026-08-01T10:00:00Z",
        "dns": {"question": {"name": "mu-hiqwnkesad.com"}},
    }))
    .unwrap();
    let detection = Detection {
        event,
        alerts: vec![],
    };
    let (alerts, _, report) = run(store, vec![message(&detection)]).await;
    let rules: Vec<_> = alerts.iter().map(|a| a.rule.id.as_str()).collect();
    assert_eq!(
        rules,
        ["kastell-intel-tweetfeed-corpus", "kastell-intel-tweetfeed"]
    );
    assert!(alerts.iter().all(|a| a.rule.level == Level::Informational));
    assert!(alerts.iter().all(|a| a.intel.len() == 1));
    assert_eq!(
        alerts[0].timestamp.to_rfc3339(),
        "2026-08-01T10:00:00+00:00"
    );
    assert_ne!(alerts[0].id, alerts[1].id);
    assert_eq!(report.intel_matches, 2);
}

#[tokio::test]
async fn the_alerts_topic_is_closed_when_the_stage_cannot_subscribe() {
    let bus = InProcessBus::new(4);
    let mut alerts = bus.subscribe(Topic::Alerts, "cases").await.unwrap();
    bus.close(Topic::Detections).await;
    let stats = EnrichStats::new();
    let error = run_enrich(&bus, Arc::new(demo_store()), &stats)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("kastell.detections"), "{error}");
    assert!(alerts.next().await.is_none());
    let closed = publish_json(&bus, Topic::Alerts, &1).await;
    assert!(closed.is_err());
}

/// A MISP `/sightings/add` on 127.0.0.1 that keeps every body it is sent.
async fn sightings_server() -> (String, Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    use axum::routing::post;
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = Arc::clone(&bodies);
    let app = axum::Router::new().route(
        "/sightings/add",
        post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let kept = Arc::clone(&kept);
            async move {
                kept.lock().unwrap().push(body);
                axum::Json(json!({"message": "Sighting added"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, bodies)
}

#[tokio::test]
async fn the_stage_offers_its_hits_as_sightings_of_the_feeds_that_send_them() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (url, bodies) = sightings_server().await;
    let http = kastell_enrich::http::Http::new(None, std::time::Duration::from_secs(10)).unwrap();
    let target = kastell_enrich::sightings::SightingTarget {
        feed: "tweetfeed".into(),
        url,
        key: "kastell-test-key".into(),
        settings: kastell_crds::intel::MispSightings::default(),
    };
    let (sightings, sender) = kastell_enrich::sightings::start(vec![target], http, 64);

    let bus = Arc::new(InProcessBus::new(1024));
    let mut alerts = bus.subscribe(Topic::Alerts, "cases").await.unwrap();
    let subscription = subscribe_detections(bus.as_ref()).await.unwrap();
    let store = Arc::new(arc_swap::ArcSwap::from_pointee(demo_store()));
    bus.publish(Topic::Detections, message(&c2_dns_detection()))
        .await
        .unwrap();
    bus.publish(Topic::Detections, message(&internal_flow_detection(false)))
        .await
        .unwrap();
    bus.close(Topic::Detections).await;
    let stats = EnrichStats::new();
    let report = kastell_enrich::run_enrich_sighted(
        bus.as_ref(),
        subscription,
        store,
        &stats,
        Some(&sightings),
    )
    .await
    .unwrap();
    while alerts.next().await.is_some() {}
    assert_eq!(report.intel_alerts, 1);
    assert_eq!(sightings.stats().offered, 1, "the DNS query's one hit");

    drop(sightings);
    let sent = sender.await.unwrap();
    assert_eq!((sent.sent, sent.dropped), (1, 0));
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["values"], json!(["ringashopsu.com"]));
}
