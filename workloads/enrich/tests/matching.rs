//! Matching real Suricata events, parsed by the ingest crate, against the demo feed.

mod support;

use kastell_core::{Event, ObservableKind};
use kastell_enrich::{ecs, load_misp_feed_dir, IndicatorStore};
use serde_json::json;

use support::suricata;

fn demo_store() -> IndicatorStore {
    load_misp_feed_dir("tweetfeed", support::demo_feed())
        .unwrap()
        .0
}

/// The EVE lines of the sample whose text contains `needle`, as ECS events.
fn eve_events(needle: &str) -> Vec<Event> {
    let text = std::fs::read_to_string(suricata::eve_path()).unwrap();
    text.lines()
        .filter(|l| l.contains(needle))
        .filter_map(suricata::ecs_event)
        .collect()
}

#[test]
fn icedid_http_alert_matches_domain_and_address() {
    let events = eve_events("ET MALWARE Win32/IcedID Request Cookie");
    assert_eq!(events.len(), 1);
    let matches = demo_store().match_event(&events[0]);
    let seen: Vec<_> = matches
        .iter()
        .map(|m| {
            (
                m.field.as_str(),
                m.observable.as_str(),
                m.indicator.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "destination.ip",
                "67.205.184.237",
                "ip-dst|port=67.205.184.237|80"
            ),
            ("url.domain", "vgiragdoffy.com", "domain=vgiragdoffy.com"),
            (
                "url.full",
                "http://vgiragdoffy.com/",
                "url=http://vgiragdoffy.com/"
            ),
        ]
    );
    for m in &matches {
        assert_eq!(m.feed, "tweetfeed");
        assert_eq!(m.reference.as_deref(), Some(support::DEMO_EVENT));
        assert!(m.context.as_deref().unwrap().starts_with("Kastell demo"));
        assert_eq!(m.tags[..2], ["tlp:clear", "kastell:demo"]);
    }
}

#[test]
fn tls_alert_matches_the_object_attributes() {
    // The server answers, so Suricata's alert has the C2 server as source.
    let events = eve_events("\"sni\":\"airsaintol.beauty\"");
    let alert = events
        .iter()
        .find(|e| e.get_str("rule.name").is_some())
        .unwrap();
    let matches = demo_store().match_event(alert);
    let seen: Vec<_> = matches
        .iter()
        .map(|m| (m.kind, m.field.as_str(), m.observable.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (ObservableKind::Ip, "source.ip", "66.63.168.75"),
            // Ingest copies the SNI to destination.domain too, which observables() reads
            // before tls.client.server_name.
            (
                ObservableKind::Domain,
                "destination.domain",
                "airsaintol.beauty"
            ),
        ]
    );
}

#[test]
fn fileinfo_hash_matches_and_is_written_as_ecs() {
    let sha = "8c9aa62f6459b553ca6a5023214f9fdd52c145e3a236c01d0a6e39b4ed25ca08";
    let mut event = eve_events(sha)
        .into_iter()
        .find(|e| e.get_str("file.hash.sha256") == Some(sha))
        .unwrap();
    let store = demo_store();
    let hits = store.matches(&event);
    let on_hash: Vec<_> = hits
        .iter()
        .filter(|h| h.observable.field == "file.hash.sha256")
        .collect();
    assert_eq!(on_hash.len(), 1);
    ecs::annotate(&mut event, &hits);
    let enrichments = event.get("threat.enrichments").unwrap().as_array().unwrap();
    assert_eq!(enrichments.len(), hits.len());
    let entry = enrichments
        .iter()
        .find(|e| e["matched"]["field"] == "file.hash.sha256")
        .unwrap();
    let indicator = &on_hash[0].indicator;
    assert_eq!(
        *entry,
        json!({
            "indicator": {
                "type": "file",
                "file": {"hash": {"sha256": sha}},
                "provider": "tweetfeed",
                "description": indicator.context.info.clone().unwrap(),
                "marking": {"tlp": "CLEAR"},
            },
            "matched": {
                "atomic": sha,
                "field": "file.hash.sha256",
                "type": "indicator_match_rule",
                "id": indicator.attribute_id.clone().unwrap(),
            },
        })
    );
    // Writing the same hits again adds nothing.
    ecs::annotate(&mut event, &hits);
    assert_eq!(
        event
            .get("threat.enrichments")
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        hits.len()
    );
}

#[test]
fn tweetfeed_reference_is_the_tweet_and_addresses_are_typed() {
    let store = demo_store();
    let event = Event::from_value(json!({
        "destination": {"ip": "192.238.160.133"},
        "url": {"domain": "Mu-Hiqwnkesad.com"},
    }))
    .unwrap();
    let hits = store.matches(&event);
    assert_eq!(hits.len(), 2);
    let entries: Vec<_> = hits.iter().map(ecs::enrichment).collect();
    assert_eq!(entries[0]["indicator"]["type"], "ipv4-addr");
    assert_eq!(entries[0]["indicator"]["ip"], "192.238.160.133");
    assert_eq!(entries[1]["indicator"]["type"], "domain-name");
    assert_eq!(
        entries[1]["indicator"]["url"]["domain"],
        "mu-hiqwnkesad.com"
    );
    assert_eq!(entries[1]["matched"]["atomic"], "Mu-Hiqwnkesad.com");
    assert_eq!(
        entries[1]["indicator"]["reference"],
        "https://x.com/kubotaa3/status/2083367233183715611"
    );
}

#[test]
fn the_whole_sample_matches_only_the_demo_event() {
    // Counted over the 1,814 EVE lines: 175 events have an address, server name, DNS
    // name, HTTP host or file hash of the demo event (76 dns, 35 flow, 33 alert, 29 tls,
    // 1 fileinfo, 1 http), with 232 distinct matches on those; 4 of these events (the two
    // IcedID alerts, their http and fileinfo records) also match the demo URL
    // http://vgiragdoffy.com/, which ingest builds as url.full: 236 in all. No TweetFeed
    // indicator occurs in the sample.
    let store = demo_store();
    let events = suricata::read_events(&suricata::eve_path());
    assert_eq!(events.len(), 1814);
    let mut with_matches = 0;
    let mut total = 0;
    for event in &events {
        let matches = store.match_event(event);
        if !matches.is_empty() {
            with_matches += 1;
        }
        total += matches.len();
        assert!(matches
            .iter()
            .all(|m| m.reference.as_deref() == Some(support::DEMO_EVENT)));
    }
    assert_eq!((with_matches, total), (175, 236));
}

#[test]
fn every_recipient_of_a_message_is_looked_up() {
    // A Suricata SMTP record (the ingest crate's fixture): two `rcpt_to`, one `cc`,
    // which ingest writes as the arrays `email.to.address` and `email.cc.address`.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ingest/tests/fixtures/suricata/derived-ssh-smtp.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    let event = text
        .lines()
        .filter(|l| l.contains("\"event_type\":\"smtp\""))
        .find_map(suricata::ecs_event)
        .unwrap();
    let (store, _) = kastell_enrich::list::load_plain_list(
        "phishing-recipients",
        "bob@example.net\ncarol@example.net\n",
        Some(ObservableKind::Email),
    );
    let seen: Vec<_> = store
        .match_event(&event)
        .into_iter()
        .map(|m| (m.field, m.observable))
        .collect();
    assert_eq!(
        seen,
        [
            ("email.to.address".to_owned(), "bob@example.net".to_owned()),
            (
                "email.cc.address".to_owned(),
                "carol@example.net".to_owned()
            ),
        ]
    );
}
