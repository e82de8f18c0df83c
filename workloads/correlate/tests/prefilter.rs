//! The guard of the rule index: with all SigmaHQ rules loaded, evaluating an event through
//! the index (only the candidate rules tried) gives exactly the rules that trying every
//! rule gives, in the same order. Raw mode over the real Windows events of the shared
//! corpora and every SigmaHQ regression event; routed mode over the bundled Suricata and
//! Wazuh samples and the Wazuh EventChannel fixture, read through the ingest parsers.

use std::path::{Path, PathBuf};

use kastell_correlate::{flatten_event, load_rules, rule_files, RuleDocument, RuleSet};
use kastell_ingest::{parse_line, Format, ParseContext};
use serde_json::{Map, Value};

/// `$KASTELL_CORPORA`, or the shared corpora beside the repository.
fn corpora() -> PathBuf {
    std::env::var_os("KASTELL_CORPORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpora"))
}

fn rule_folders(sigma: &Path) -> Vec<PathBuf> {
    ["rules", "rules-emerging-threats", "rules-threat-hunting"]
        .iter()
        .map(|f| sigma.join(f))
        .collect()
}

/// Every JSON value in the files under `dir` (the regression data's `*.json`).
fn json_events(dir: &Path, out: &mut Vec<Map<String, Value>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            json_events(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.extend(
                serde_json::Deserializer::from_str(&text)
                    .into_iter::<Value>()
                    .map(|v| {
                        flatten_event(v.unwrap_or_else(|e| panic!("{}: {e}", path.display())))
                    }),
            );
        }
    }
}

fn ids<'a>(rules: impl Iterator<Item = &'a kastell_core::RuleRef>) -> Vec<&'a str> {
    rules.map(|r| r.id.as_str()).collect()
}

#[test]
fn raw_evaluation_through_the_index_equals_trying_every_rule() {
    let sigma = corpora().join("sigma");
    let windows = corpora().join("windows-events/EVTX-ATTACK-SAMPLES.jsonl");
    if !sigma.is_dir() || !windows.is_file() {
        println!(
            "SKIPPED: {} or {} not found",
            sigma.display(),
            windows.display()
        );
        return;
    }
    let (rules, _) = load_rules(&rule_folders(&sigma)).unwrap();
    let mut events: Vec<Map<String, Value>> = std::fs::read_to_string(&windows)
        .unwrap()
        .lines()
        .map(|l| flatten_event(serde_json::from_str(l).unwrap()))
        .collect();
    json_events(&sigma.join("regression_data"), &mut events);

    let mut matches = 0;
    for (i, event) in events.iter().enumerate() {
        let indexed = ids(rules.evaluate_raw(event));
        let every = ids(rules.evaluate_raw_exhaustive(event));
        assert_eq!(indexed, every, "event {i}: {event:?}");
        matches += every.len();
    }
    println!(
        "{} events, {} rules, {matches} matches, all equal",
        events.len(),
        rules.len()
    );
    // The comparison means something only if rules do match.
    assert!(matches > 1_000, "only {matches} matches");
}

fn routed_events() -> Vec<kastell_core::Event> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let samples = [
        (
            "../../examples/soc/data/suricata/eve.json",
            Format::SuricataEve,
        ),
        (
            "../../examples/soc/data/wazuh/alerts.json",
            Format::WazuhAlerts,
        ),
        (
            "tests/fixtures/wazuh-eventchannel-alerts.jsonl",
            Format::WazuhAlerts,
        ),
        (
            "tests/fixtures/suricata-ipv6-flow.json",
            Format::SuricataEve,
        ),
    ];
    let context = ParseContext::new("test-sensor");
    let mut events = Vec::new();
    for (file, format) in samples {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        events.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .filter_map(|l| parse_line(format, l.as_bytes(), &context).ok()),
        );
    }
    events
}

#[test]
fn routed_evaluation_through_the_index_equals_trying_every_routed_rule() {
    let sigma = corpora().join("sigma");
    if !sigma.is_dir() {
        println!("SKIPPED: {} not found", sigma.display());
        return;
    }
    let documents: Vec<RuleDocument> = rule_files(&rule_folders(&sigma))
        .unwrap()
        .iter()
        .map(|f| RuleDocument::new(f.display().to_string(), std::fs::read_to_string(f).unwrap()))
        .collect();
    let (rules, _) = RuleSet::compile(documents);
    let events = routed_events();
    assert!(events.len() > 100, "only {} sample events", events.len());

    let mut matches = 0;
    for (i, event) in events.iter().enumerate() {
        let indexed = ids(rules.evaluate(event));
        let every = ids(rules.evaluate_exhaustive(event));
        assert_eq!(indexed, every, "event {i}: {:?}", event.as_map());
        matches += every.len();
    }
    println!(
        "{} events, {} rules, {matches} matches, all equal",
        events.len(),
        rules.len()
    );
    assert!(matches > 0, "no sample event matched a rule");
}
