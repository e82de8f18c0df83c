//! The partition plan of a rule set: which event fields key the events topic so that every
//! group of every correlation stays on one partition, and the proof that matters — the
//! correlations raised by replicas that each see one partition's events are exactly those
//! one process raises on all of them.

use std::collections::BTreeSet;

use kastell_core::bus::Partition;
use kastell_core::Event;
use kastell_correlate::{detect_events, RuleDocument, RuleSet};
use serde_json::{json, Value};

fn compile(rules: &str) -> RuleSet {
    let (set, errors) = RuleSet::compile_raw([RuleDocument::new("test/rules", rules)]);
    assert!(errors.is_empty(), "{errors:?}");
    set
}

/// A detection rule named `name` matching `EventID: id`.
fn base(name: &str, id: u32) -> String {
    format!(
        "title: {name}\nid: {name}-id\nname: {name}\nlogsource: {{product: windows, service: \
         security}}\ndetection:\n  selection:\n    EventID: {id}\n  condition: selection\n"
    )
}

fn correlation(id: &str, body: &str) -> String {
    format!("title: {id}\nid: {id}\nlevel: high\ncorrelation:\n{body}")
}

fn event(value: Value) -> Event {
    Event::from_value(value).expect("an object")
}

#[test]
fn without_correlations_no_event_needs_a_partition() {
    let set = compile(&base("a", 1));
    let plan = set.partition_plan();
    assert!(plan.spreads());
    assert!(plan.fields().is_empty());
    assert_eq!(plan.fingerprint(), "by-id");
    assert_eq!(plan.key(&event(json!({"EventID": 1, "User": "x"}))), None);
}

#[test]
fn the_key_is_the_group_by_field_every_correlation_shares() {
    let rules = [
        base("failed", 4625),
        base("ok", 4624),
        correlation(
            "c1",
            "  type: event_count\n  rules: [failed]\n  group-by: [User, Computer]\n  \
             timespan: 1m\n  condition: {gte: 3}\n",
        ),
        correlation(
            "c2",
            "  type: temporal\n  rules: [failed, ok]\n  group-by: [User]\n  timespan: 1m\n",
        ),
    ]
    .join("---\n");
    let plan = compile(&rules).partition_plan();
    assert_eq!(plan.fields(), ["User"]);
    assert_eq!(plan.fingerprint(), "fields:User");
    let alice_a = plan.key(&event(json!({"User": "alice", "Computer": "a"})));
    let alice_b = plan.key(&event(json!({"User": "alice", "Computer": "b"})));
    let bob = plan.key(&event(json!({"User": "bob"})));
    assert_eq!(alice_a, alice_b);
    assert_ne!(alice_a, bob);
    // The windows group by the value's text, so 1 and "1" are one group and one key.
    assert_eq!(
        plan.key(&event(json!({"User": 1}))),
        plan.key(&event(json!({"User": "1"})))
    );
    // Without the field an event is in no group, so it may go anywhere.
    assert_eq!(plan.key(&event(json!({"Computer": "a"}))), None);
}

#[test]
fn correlations_sharing_no_field_keep_everything_on_one_partition() {
    let rules = [
        base("a", 1),
        correlation(
            "by-user",
            "  type: event_count\n  rules: [a]\n  group-by: [User]\n  timespan: 1m\n  \
             condition: {gte: 2}\n",
        ),
        correlation(
            "by-host",
            "  type: event_count\n  rules: [a]\n  group-by: [Computer]\n  timespan: 1m\n  \
             condition: {gte: 2}\n",
        ),
    ]
    .join("---\n");
    let plan = compile(&rules).partition_plan();
    assert!(!plan.spreads());
    assert_eq!(plan.fingerprint(), "single");
    let one = plan.key(&event(json!({"User": "x"})));
    assert_eq!(one, Some(String::new()));
    assert_eq!(plan.key(&event(json!({"Computer": "y"}))), one);
}

#[test]
fn an_alias_read_from_different_fields_is_not_a_key() {
    // The specification's alias example: internal_ip is destination.ip of one rule and
    // source.ip of the other, so no single event field keeps a group together.
    let rules = [
        base("a", 1),
        base("b", 2),
        correlation(
            "aliased",
            "  type: temporal\n  rules: [a, b]\n  group-by: [ip, User]\n  timespan: 1m\n  \
             aliases:\n    ip:\n      a: destination.ip\n      b: source.ip\n",
        ),
    ]
    .join("---\n");
    let plan = compile(&rules).partition_plan();
    assert_eq!(plan.fields(), ["User"]);
}

/// Real failed and successful logons would be Windows Security events, which the corpora do
/// not hold for a small test; the shapes below are the specification's brute-force chain.
fn logons() -> Vec<Value> {
    let mut events = Vec::new();
    for i in 0..400i64 {
        let user = format!("user{}", i % 13);
        let computer = format!("host{}", i % 5);
        let id = if i % 7 == 0 { 4624 } else { 4625 };
        let time = chrono::DateTime::from_timestamp(1_700_000_000 + i * 3, 0).unwrap();
        events.push(json!({
            "EventID": id, "User": user, "Computer": computer, "@timestamp": time.to_rfc3339()
        }));
    }
    events
}

/// (rule id, group, original indices of the window's events) of every correlation match.
fn correlation_matches(set: &RuleSet, events: &[(usize, &Value)]) -> BTreeSet<String> {
    let input: String = events.iter().map(|(_, e)| format!("{e}\n")).collect();
    let mut found = BTreeSet::new();
    detect_events(set, input.as_bytes(), |m| {
        if let Some(indices) = &m.event_indices {
            let original: Vec<usize> = indices.iter().map(|i| events[*i].0).collect();
            found.insert(format!("{} {:?} {original:?}", m.rule_id, m.group));
        }
        Ok(())
    })
    .unwrap();
    found
}

#[test]
fn replicas_on_their_partitions_raise_exactly_the_correlations_of_one_process() {
    let rules = [
        base("failed", 4625),
        base("ok", 4624),
        correlation(
            "burst",
            "  type: event_count\n  rules: [failed]\n  group-by: [User, Computer]\n  \
             timespan: 1m\n  condition: {gte: 3}\n",
        ),
        correlation(
            "then-ok",
            "  type: temporal_ordered\n  rules: [failed, ok]\n  group-by: [User]\n  \
             timespan: 2m\n",
        ),
    ]
    .join("---\n");
    let set = compile(&rules);
    let plan = set.partition_plan();
    let events = logons();
    let all: Vec<(usize, &Value)> = events.iter().enumerate().collect();
    let whole = correlation_matches(&set, &all);
    assert!(whole.len() > 10, "the sample must raise correlations");

    for count in [2, 3, 8] {
        let mut merged = BTreeSet::new();
        for index in 0..count {
            let partition = Partition { index, count };
            let mine: Vec<(usize, &Value)> = all
                .iter()
                .copied()
                .filter(|(i, e)| {
                    let key = plan.key(&event((*e).clone()));
                    let key = key.unwrap_or_else(|| format!("event-{i}"));
                    Partition::of_key(&key, count) == partition
                })
                .collect();
            // Each replica has windows of its own.
            merged.extend(correlation_matches(&compile(&rules), &mine));
        }
        assert_eq!(merged, whole, "{count} partitions");
    }
}

/// One process reading several partitions sees them interleaved in whatever order the bus
/// delivers (a backlog on one partition is read ahead of another), while each partition
/// keeps its own order. The correlations must not depend on that interleaving: here every
/// partition is read to its end before the next, the worst case, 20 minutes of event time
/// ahead of the others against a lateness allowance of one minute.
#[test]
fn partitions_read_one_after_another_raise_exactly_the_correlations_in_order() {
    let rules = [
        base("failed", 4625),
        base("ok", 4624),
        correlation(
            "burst",
            "  type: event_count\n  rules: [failed]\n  group-by: [User, Computer]\n  \
             timespan: 1m\n  condition: {gte: 3}\n",
        ),
        correlation(
            "then-ok",
            "  type: temporal_ordered\n  rules: [failed, ok]\n  group-by: [User]\n  \
             timespan: 2m\n",
        ),
    ]
    .join("---\n");
    let set = compile(&rules);
    let plan = set.partition_plan();
    let events = logons();
    let all: Vec<(usize, &Value)> = events.iter().enumerate().collect();
    let whole = correlation_matches(&set, &all);

    for count in [2, 8] {
        let mut one_after_another: Vec<(usize, &Value)> = Vec::new();
        for index in 0..count {
            let partition = Partition { index, count };
            one_after_another.extend(all.iter().copied().filter(|(i, e)| {
                let key = plan.key(&event((*e).clone()));
                let key = key.unwrap_or_else(|| format!("event-{i}"));
                Partition::of_key(&key, count) == partition
            }));
        }
        assert_eq!(
            correlation_matches(&compile(&rules), &one_after_another),
            whole,
            "{count} partitions read one after another"
        );
    }
}
