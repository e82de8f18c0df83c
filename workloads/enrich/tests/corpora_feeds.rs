//! Every feed sample of the shared corpora (../shared/corpora/misp and stix) loads, with
//! the counts checked against the files themselves: the test counts events, attributes,
//! indicator objects and rows from the JSON and CSV independently of the loaders.
//! Skipped, with a message, when the shared corpora are not beside the checkout.

use std::fs;
use std::path::{Path, PathBuf};

use kastell_enrich::list::{self, Column, CsvMapping};
use kastell_enrich::misp::{load_misp_feed_dir, SkipReason};
use kastell_enrich::stix;
use serde_json::Value;

fn shared() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpora");
    if path.is_dir() {
        Some(path)
    } else {
        println!("skipped: shared corpora not found at {}", path.display());
        None
    }
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Attributes of an event file, top-level and inside objects.
fn attribute_count(event: &Value) -> u64 {
    let top = event["Attribute"].as_array().map_or(0, Vec::len);
    let nested: usize = event["Object"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| o["Attribute"].as_array().map_or(0, Vec::len))
        .sum();
    (top + nested) as u64
}

#[test]
fn misp_feed_directories_load_every_listed_event_and_attribute() {
    let Some(corpora) = shared() else { return };
    for dir in [
        "misp/feed-sample-misp-tests/misp",
        "misp/feed-tweetfeed/misp",
    ] {
        let dir = corpora.join(dir);
        let manifest = json(&dir.join("manifest.json"));
        let listed = manifest.as_object().unwrap();
        let attributes: u64 = listed
            .keys()
            .map(|uuid| attribute_count(&json(&dir.join(format!("{uuid}.json")))["Event"]))
            .sum();
        let (store, report) = load_misp_feed_dir("corpus", &dir).unwrap();
        assert_eq!(report.events_listed, listed.len(), "{}", dir.display());
        assert_eq!(report.events_loaded, listed.len(), "{}", dir.display());
        assert_eq!(report.attributes, attributes, "{}", dir.display());
        let skipped: u64 = report.skipped.values().sum();
        // Every attribute became one indicator, a duplicate, or a counted skip, except
        // that `domain|ip` gives two indicators.
        assert!(report.indicators + report.duplicates + skipped >= attributes);
        assert_eq!(store.len() as u64, report.indicators);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
    }
}

#[test]
fn every_pymisp_event_loads_as_a_one_event_feed() {
    let Some(corpora) = shared() else { return };
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in [
        "misp/pymisp-tests",
        "misp/pymisp-tests/reportlab_testfiles",
        "misp/pymisp-tests/mispevent_testfiles",
    ] {
        for entry in fs::read_dir(corpora.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut events = 0;
    for path in files {
        let value = json(&path);
        // PyMISP writes events wrapped ({"Event": {...}}) or bare ({"info", "Attribute"...}).
        let event = match value.get("Event") {
            Some(event) => event.clone(),
            None if value.get("Attribute").is_some() || value.get("Object").is_some() => {
                value.clone()
            }
            None => continue,
        };
        events += 1;
        let feed = tempfile::tempdir().unwrap();
        let uuid = "00000000-0000-4000-8000-000000000001";
        fs::write(
            feed.path().join("manifest.json"),
            format!("{{\"{uuid}\": {{}}}}"),
        )
        .unwrap();
        fs::write(
            feed.path().join(format!("{uuid}.json")),
            serde_json::to_vec(&serde_json::json!({"Event": event})).unwrap(),
        )
        .unwrap();
        let (store, report) = load_misp_feed_dir("pymisp", feed.path()).unwrap();
        assert_eq!(report.events_loaded, 1, "{}", path.display());
        assert_eq!(
            report.attributes,
            attribute_count(&event),
            "{}",
            path.display()
        );
        let to_ids_supported = report.indicators + report.duplicates;
        assert!(to_ids_supported + report.skipped.values().sum::<u64>() >= report.attributes);
        assert_eq!(store.len() as u64, report.indicators);
        assert_eq!(
            report.skipped(SkipReason::Malformed),
            0,
            "{}",
            path.display()
        );
    }
    println!("{events} PyMISP events loaded");
    assert!(events > 0, "no PyMISP event found");
}

/// Indicator objects of a bundle, an envelope list or a medallion collection.
fn indicator_objects(value: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if map.get("type").and_then(Value::as_str) == Some("indicator") {
                    out.push(v.clone());
                } else {
                    stack.extend(map.values());
                }
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    out
}

#[test]
fn every_stix_sample_loads_with_each_indicator_taken_or_explained() {
    let Some(corpora) = shared() else { return };
    let mut files: Vec<PathBuf> = walk(&corpora.join("stix"))
        .into_iter()
        .filter(|p| {
            !p.to_string_lossy().contains("/schemas/") && !p.to_string_lossy().contains("/interop/")
        })
        .collect();
    files.push(corpora.join("misp/pymisp-tests/stix2.json"));
    let mut taken_total = 0;
    for path in files {
        let value = json(&path);
        let objects = indicator_objects(&value);
        let (store, report) = stix::load_bundle(
            "stix",
            &serde_json::to_vec(&serde_json::json!({"objects": objects})).unwrap(),
        )
        .unwrap();
        assert_eq!(
            report.indicator_objects as usize,
            objects.len(),
            "{}",
            path.display()
        );
        let used = report.indicator_objects
            - report.skipped.len() as u64
            - report.expired
            - report.superseded;
        // Each used indicator object gives at least one indicator (an OR gives more),
        // unless all its values repeat ones already held.
        assert!(
            report.indicators + report.duplicates >= used,
            "{}",
            path.display()
        );
        assert_eq!(store.len() as u64, report.indicators);
        taken_total += report.indicators;
    }
    assert!(taken_total > 0);
}

#[test]
fn tweetfeed_bundle_counts_match_the_file() {
    let Some(corpora) = shared() else { return };
    let bytes = fs::read(corpora.join("stix/tweetfeed/today.bundle.json")).unwrap();
    let (store, report) = stix::load_bundle("tweetfeed", &bytes).unwrap();
    // 59 indicators: url 29, domain-name 28, file 1, ipv4-addr 1; all simple.
    assert_eq!(report.indicator_objects, 59);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.indicators + report.duplicates, 59);
    let first = store.lookup_value(
        kastell_core::ObservableKind::Domain,
        "cvqgs36nhw-wtrkblpw-3i2d0e-cvq79c.pages.dev",
    );
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].tlp(), Some("clear"));
    assert_eq!(first[0].context.organisation.as_deref(), Some("TweetFeed"));
}

#[test]
fn poisonivy_report_skips_file_names_and_a_broken_domain() {
    let Some(corpora) = shared() else { return };
    let bytes = fs::read(
        corpora.join("stix/oasis-cti-stix2-json-schemas/examples/threat-reports/poisonivy.json"),
    )
    .unwrap();
    let (store, report) = stix::load_bundle("poisonivy", &bytes).unwrap();
    assert_eq!(report.indicator_objects, 25);
    let reasons = report.skipped_by_reason();
    assert_eq!(
        reasons.get("compares file:name, which the store does not match"),
        Some(&2)
    );
    assert_eq!(report.skipped.len(), 3, "{:?}", reasons);
    // The report object lists the indicators: their context names it.
    let found = store.lookup_value(kastell_core::ObservableKind::Ip, "219.76.208.163");
    assert!(found[0]
        .context
        .reference
        .as_deref()
        .unwrap_or("")
        .starts_with("report--"));
}

#[test]
fn csv_and_freetext_samples_load_every_row() {
    let Some(corpora) = shared() else { return };
    let misp_csv = fs::read(corpora.join("misp/feed-sample-misp-tests/csv/feed.csv")).unwrap();
    let (_, report) = list::load_csv("misp-csv", &misp_csv, &CsvMapping::default()).unwrap();
    assert_eq!((report.entries, report.indicators), (2, 2));
    let freetext =
        fs::read_to_string(corpora.join("misp/feed-sample-misp-tests/freetext/feed.txt")).unwrap();
    let (_, report) = list::load_plain_list("freetext", &freetext, None);
    assert_eq!((report.entries, report.indicators), (2, 2));

    // TweetFeed's own CSV: date,user,type,value,tags,tweet-url, no header.
    let mapping = CsvMapping {
        value_column: Column::Index(3),
        type_column: Some(Column::Index(2)),
        comment_column: Some(Column::Index(5)),
        ..CsvMapping::default()
    };
    for file in ["today.csv", "20260821.csv"] {
        let path = corpora.join("misp/feed-tweetfeed/csv").join(file);
        let text = fs::read_to_string(&path).unwrap();
        let rows = text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
        let (store, report) = list::load_csv("tweetfeed-csv", text.as_bytes(), &mapping).unwrap();
        assert_eq!(report.entries, rows, "{file}");
        assert_eq!(
            report.indicators + report.duplicates + report.skipped,
            rows,
            "{file}"
        );
        assert_eq!(
            report.skipped, 0,
            "{file}: every TweetFeed type is matchable"
        );
        assert_eq!(store.len() as u64, report.indicators);
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    out.sort();
    out
}
