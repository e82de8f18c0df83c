//! The MISP feed loader against real feeds: MISP's own fixture, the TweetFeed sample, the
//! demo feed, and PyMISP's real test events laid out as a feed. Expected counts are
//! derived from the files and the derivation is written next to each assertion.

mod support;

use std::fs;
use std::path::Path;

use kastell_core::{Level, ObservableKind};
use kastell_enrich::{load_misp_feed_dir, EventError, LoadError, SkipReason, ThreatLevel};
use serde_json::{json, Value};

#[test]
fn misp_fixture_feed_has_one_event_and_no_detection_attribute() {
    // manifest.json lists one event (56bf399d…, CIRCL "OSINT - Hunting for Malware with
    // Machine Learning"); its only attribute is a `link` with to_ids false.
    let (store, report) = load_misp_feed_dir("misp-tests", support::misp_fixture_feed()).unwrap();
    assert_eq!((report.events_listed, report.events_loaded), (1, 1));
    assert_eq!(report.attributes, 1);
    assert_eq!(report.indicators, 0);
    assert_eq!(report.skipped(SkipReason::NotToIds), 1);
    assert!(report.errors.is_empty());
    assert!(store.is_empty());
}

#[test]
fn tweetfeed_feed_loads_every_attribute() {
    // Five event files with 60 + 17 + 59 + 122 + 216 = 474 attributes, every one to_ids
    // true and of a supported type: url 201, domain 149, ip-dst 61, sha256 47, md5 16.
    // TweetFeed writes every number as a string ("threat_level_id": "4").
    let (store, report) = load_misp_feed_dir("tweetfeed", support::tweetfeed_feed()).unwrap();
    assert_eq!((report.events_listed, report.events_loaded), (5, 5));
    assert_eq!(report.attributes, 474);
    // One URL is listed twice in 88391e76…: `https://github.com/sean100496` and the same
    // with a `#ThreatIntel` hashtag glued on; the canonical form drops the fragment.
    assert_eq!(report.indicators, 473);
    assert_eq!(report.duplicates, 1);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert!(report.errors.is_empty());
    let kinds = store.count_by_kind();
    assert_eq!(kinds[&ObservableKind::Url], 200);
    assert_eq!(kinds[&ObservableKind::Domain], 149);
    assert_eq!(kinds[&ObservableKind::Ip], 61);
    assert_eq!(kinds[&ObservableKind::Sha256], 47);
    assert_eq!(kinds[&ObservableKind::Md5], 16);

    // The first attribute of 07124362…: domain mu-hiqwnkesad.com, tag "phishing", the
    // source tweet in the comment.
    let found = store.lookup_value(ObservableKind::Domain, "MU-HIQWNKESAD.com.");
    assert_eq!(found.len(), 1);
    let indicator = &found[0];
    assert_eq!(indicator.feed(), "tweetfeed");
    let context = &indicator.context;
    assert_eq!(
        context.reference.as_deref(),
        Some("07124362-c14b-5868-b516-e5d8dd938050")
    );
    assert_eq!(context.info.as_deref(), Some("TweetFeed IOCs 2026-08-01"));
    assert_eq!(context.threat_level, ThreatLevel::Undefined);
    assert_eq!(indicator.level(), Level::Informational);
    assert_eq!(
        indicator.all_tags(),
        ["TweetFeed", "type:OSINT", "tlp:clear", "phishing"]
    );
    assert_eq!(indicator.tlp(), Some("clear"));
    assert_eq!(
        indicator.comment.as_deref(),
        Some("https://x.com/kubotaa3/status/2083367233183715611")
    );
    assert_eq!(indicator.describe(), "domain=mu-hiqwnkesad.com");

    // sqllq.com is listed by two events (07124362… and 88391e76…): both are kept.
    let mut references: Vec<_> = store
        .lookup_value(ObservableKind::Domain, "sqllq.com")
        .iter()
        .map(|i| i.context.reference.clone().unwrap())
        .collect();
    references.sort();
    assert_eq!(
        references,
        [
            "07124362-c14b-5868-b516-e5d8dd938050",
            "88391e76-0480-5c3e-a69e-44c22b13ebd0"
        ]
    );
}

#[test]
fn demo_resource_points_at_the_demo_feed() {
    let resource = support::demo_resource();
    let text = fs::read_to_string(&resource).unwrap();
    let mut set = kastell_crds::load::ResourceSet::default();
    let mut errors = Vec::new();
    kastell_crds::load::load_text(&resource, &text, &mut set, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(set.feeds.len(), 1);
    let feed = &set.feeds[0];
    assert_eq!(feed.key(), "soc/tweetfeed");
    assert_eq!(
        feed.object.spec.kind,
        kastell_crds::intel::FeedKind::MispFeed
    );
    let dir = feed.resolve(feed.object.spec.path.as_deref().unwrap());
    assert_eq!(
        fs::canonicalize(&dir).unwrap(),
        fs::canonicalize(support::demo_feed()).unwrap()
    );

    // The five TweetFeed events (474 indicators) plus the Kastell demo event: 12
    // attributes, one `text` with to_ids false, and eleven to_ids attributes giving twelve
    // indicators because `domain|ip` gives two.
    let name = feed.object.metadata.name.as_deref().unwrap();
    let (store, report) = load_misp_feed_dir(name, &dir).unwrap();
    assert_eq!((report.events_listed, report.events_loaded), (6, 6));
    assert_eq!(report.attributes, 474 + 12);
    assert_eq!(report.indicators, 473 + 12);
    assert_eq!(report.skipped(SkipReason::NotToIds), 1);
    let demo: Vec<_> = store
        .indicators()
        .filter(|i| i.context.reference.as_deref() == Some(support::DEMO_EVENT))
        .collect();
    assert_eq!(demo.len(), 12);
    assert!(demo.iter().all(|i| i.level() == Level::High));

    // Inside the domain-ip object: airsaintol.beauty and 66.63.168.75.
    let object_ip = store.lookup_value(ObservableKind::Ip, "66.63.168.75");
    assert_eq!(object_ip.len(), 1);
    assert!(object_ip[0]
        .all_tags()
        .contains(&r#"misp-galaxy:mitre-attack-pattern="Web Protocols - T1071.001""#.to_owned()));
    let with_port = store.lookup_value(ObservableKind::Ip, "137.74.104.108");
    assert_eq!(with_port[0].port, Some(8080));
}

/// Lays real PyMISP events out as a MISP feed: each `<uuid>.json` copied as is, and a
/// manifest written from the events' own fields with numbers as JSON numbers, as MISP's
/// feed fixture has them.
fn pymisp_feed(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = serde_json::Map::new();
    for name in names {
        let text = fs::read_to_string(support::pymisp_event(name)).unwrap();
        let event: Value = serde_json::from_str(&text).unwrap();
        let event = &event["Event"];
        let uuid = event["uuid"].as_str().unwrap();
        fs::write(dir.path().join(format!("{uuid}.json")), &text).unwrap();
        let number = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok());
        manifest.insert(
            uuid.to_owned(),
            json!({
                "info": event["info"],
                "date": event["date"],
                "threat_level_id": number(&event["threat_level_id"]),
                "timestamp": number(&event["timestamp"]),
                "Orgc": event["Orgc"],
                "Tag": event["Tag"],
            }),
        );
    }
    fs::write(
        dir.path().join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    dir
}

#[test]
fn pymisp_events_load_with_objects_galaxies_and_composites() {
    // Counted from the files (top-level and object attributes):
    //   long_event        370 attributes: 250 to_ids of supported types, 112 not to_ids,
    //                     8 to_ids of unsupported types (filename 4, imphash, pehash,
    //                     ssdeep, email-attachment);
    //   mainly_objects_1   74, all inside objects: 17 indicators, 53 not to_ids,
    //                     4 to_ids `filename`;
    //   galaxy_1           10: 4 to_ids attributes (3 inside a file object), 6 not;
    //   HTML_event         13: 4 indicators, 8 not to_ids, 1 to_ids `malware-sample`.
    let feed = pymisp_feed(&[
        "long_event.json",
        "mainly_objects_1.json",
        "galaxy_1.json",
        "HTML_event.json",
    ]);
    let (store, report) = load_misp_feed_dir("pymisp", feed.path()).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.events_loaded, 4);
    assert_eq!(report.attributes, 370 + 74 + 10 + 13);
    // galaxy_1 lists one sha256 twice (at the top and inside its file object): one
    // indicator, one duplicate.
    assert_eq!(report.indicators, 250 + 17 + 3 + 4);
    assert_eq!(report.duplicates, 1);
    assert_eq!(store.len(), 274);
    assert_eq!(report.skipped(SkipReason::NotToIds), 112 + 53 + 6 + 8);
    assert_eq!(report.skipped(SkipReason::UnsupportedType), 8 + 4 + 1);
    assert_eq!(report.unsupported_types["filename"], 8);
    assert_eq!(report.unsupported_types["malware-sample"], 1);
    assert_eq!(report.skipped(SkipReason::InvalidValue), 0);

    // long_event: filename|sha256 "IEChecker.exe|7a200c4d…".
    let sha = "7a200c4df99887991c638fe625d07a4a3fc2bdc887112437752b3df5c8da79b6";
    let composite: Vec<_> = store
        .lookup_value(ObservableKind::Sha256, sha)
        .into_iter()
        .filter(|i| i.attribute_type == "filename|sha256")
        .collect();
    assert_eq!(composite[0].filename.as_deref(), Some("IEChecker.exe"));
    assert_eq!(composite[0].context.threat_level, ThreatLevel::Medium);

    // galaxy_1: a sha1 inside a file object, with an ATT&CK galaxy tag on the attribute;
    // the event's tags (tlp:white first) come before it.
    let found = store.lookup_value(
        ObservableKind::Sha1,
        "D63FF86F05B6F2FB86ABF0DCD16CD2008FA3C158",
    );
    assert_eq!(found.len(), 1);
    let tags = found[0].all_tags();
    assert_eq!(tags[0], "tlp:white");
    assert!(tags.contains(
        &r#"misp-galaxy:mitre-enterprise-attack-attack-pattern="Account Manipulation - T1098""#
            .to_owned()
    ));
    assert!(tags.contains(&r#"misp-galaxy:mitre-intrusion-set="APT1 - G0006""#.to_owned()));
    assert_eq!(found[0].tlp(), Some("white"));
    assert_eq!(found[0].level(), Level::Low);
}

#[test]
fn a_file_name_with_a_bar_is_split_on_the_last_one() {
    // long_event's real "IEChecker.exe|7a200c4d…" attribute, with the file name changed
    // to contain a bar, as Windows allows in alternate data stream listings and as MISP
    // users paste.
    let feed = pymisp_feed(&["long_event.json"]);
    let file = fs::read_dir(feed.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap() != "manifest.json")
        .unwrap();
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.contains("\"IEChecker.exe|7a200c4d"));
    fs::write(
        &file,
        text.replace("\"IEChecker.exe|7a200c4d", "\"IE|Checker.exe|7a200c4d"),
    )
    .unwrap();
    let (store, report) = load_misp_feed_dir("pymisp", feed.path()).unwrap();
    assert_eq!(report.indicators, 250);
    let sha = "7a200c4df99887991c638fe625d07a4a3fc2bdc887112437752b3df5c8da79b6";
    let composite: Vec<_> = store
        .lookup_value(ObservableKind::Sha256, sha)
        .into_iter()
        .filter(|i| i.attribute_type == "filename|sha256")
        .collect();
    assert_eq!(composite.len(), 1);
    assert_eq!(composite[0].filename.as_deref(), Some("IE|Checker.exe"));
    assert_eq!(
        composite[0].attribute_value,
        format!("IE|Checker.exe|{sha}")
    );
}

#[test]
fn a_missing_event_file_is_reported_and_the_rest_loads() {
    let feed = support::copy_feed(&support::tweetfeed_feed());
    fs::remove_file(
        feed.path()
            .join("181b5be4-a1f6-53a4-8436-4d4cd3e272a3.json"),
    )
    .unwrap();
    let (store, report) = load_misp_feed_dir("tweetfeed", feed.path()).unwrap();
    // 181b5be4… held 17 of the 474 attributes.
    assert_eq!((report.events_listed, report.events_loaded), (5, 4));
    assert_eq!(store.len(), 473 - 17);
    assert_eq!(report.errors.len(), 1);
    let error = &report.errors[0];
    assert!(matches!(error, EventError::Missing { .. }), "{error}");
    assert_eq!(error.uuid(), "181b5be4-a1f6-53a4-8436-4d4cd3e272a3");
}

#[test]
fn a_malformed_event_file_is_reported_and_the_rest_loads() {
    let feed = support::copy_feed(&support::tweetfeed_feed());
    let path = feed
        .path()
        .join("fbd854da-9574-5fb6-b297-c483f9d5daf0.json");
    let text = fs::read(&path).unwrap();
    fs::write(&path, &text[..text.len() / 2]).unwrap();
    // A valid JSON document that is not an event ({"Event": …} missing).
    let other = feed
        .path()
        .join("67317f07-5461-555f-9491-d7685196f614.json");
    fs::write(&other, b"[]").unwrap();
    let (store, report) = load_misp_feed_dir("tweetfeed", feed.path()).unwrap();
    // fbd854da… held 216 attributes and 67317f07… 59.
    assert_eq!(report.events_loaded, 3);
    assert_eq!(store.len(), 474 - 216 - 59);
    let mut failed: Vec<_> = report.errors.iter().map(EventError::uuid).collect();
    failed.sort();
    assert_eq!(
        failed,
        [
            "67317f07-5461-555f-9491-d7685196f614",
            "fbd854da-9574-5fb6-b297-c483f9d5daf0"
        ]
    );
    assert!(report
        .errors
        .iter()
        .all(|e| matches!(e, EventError::Malformed { .. })));
}

#[test]
fn manifest_keys_cannot_leave_the_feed_directory() {
    let feed = support::copy_feed(&support::misp_fixture_feed());
    let manifest_path = feed.path().join("manifest.json");
    let mut manifest: serde_json::Map<String, Value> =
        serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
    let entry = manifest.values().next().unwrap().clone();
    manifest.insert("../manifest".to_owned(), entry.clone());
    manifest.insert("sub/dir".to_owned(), entry);
    fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let (_, report) = load_misp_feed_dir("misp-tests", feed.path()).unwrap();
    assert_eq!((report.events_listed, report.events_loaded), (3, 1));
    assert!(report
        .errors
        .iter()
        .all(|e| matches!(e, EventError::UnsafeName { .. })));
}

#[test]
fn a_feed_without_a_readable_manifest_fails_as_a_whole() {
    let empty = tempfile::tempdir().unwrap();
    let error = load_misp_feed_dir("none", empty.path()).unwrap_err();
    assert!(matches!(error, LoadError::ReadManifest { .. }), "{error}");

    fs::write(empty.path().join("manifest.json"), b"[\"not\", \"a map\"]").unwrap();
    let error = load_misp_feed_dir("none", empty.path()).unwrap_err();
    assert!(matches!(error, LoadError::Manifest { .. }), "{error}");
    assert!(error
        .to_string()
        .contains(&empty.path().join("manifest.json").display().to_string()));
}

#[test]
fn both_spellings_of_numbers_give_the_same_threat_level() {
    // MISP's fixture writes threat_level_id 3 in the manifest and "3" in the event; drop
    // it from the event so the manifest's number is the one read.
    let feed = support::copy_feed(&support::misp_fixture_feed());
    let event_path = feed
        .path()
        .join("56bf399d-c46c-4fdb-a9cf-d9bb02de0b81.json");
    let mut event: Value = serde_json::from_slice(&fs::read(&event_path).unwrap()).unwrap();
    assert_eq!(event["Event"]["threat_level_id"], json!("3"));
    let attributes = event["Event"]["Attribute"].as_array_mut().unwrap();
    // Mark the link as to_ids with the string spelling MISP exports in CSV-derived feeds,
    // and give it a detection type, so the event yields one indicator to look at.
    attributes[0]["to_ids"] = json!("1");
    attributes[0]["type"] = json!("url");
    let from_event = load_first(feed.path(), &event_path, &event);
    event["Event"]
        .as_object_mut()
        .unwrap()
        .remove("threat_level_id");
    let from_manifest = load_first(feed.path(), &event_path, &event);
    assert_eq!(from_event, ThreatLevel::Low);
    assert_eq!(from_manifest, ThreatLevel::Low);
}

fn load_first(dir: &Path, event_path: &Path, event: &Value) -> ThreatLevel {
    fs::write(event_path, serde_json::to_vec(event).unwrap()).unwrap();
    let (store, report) = load_misp_feed_dir("misp-tests", dir).unwrap();
    assert_eq!(report.indicators, 1);
    let first = store.indicators().next().unwrap();
    first.context.threat_level
}
