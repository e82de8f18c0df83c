//! Correlation rules end to end through `kastell detect`'s raw mode: rule files with
//! several YAML documents, events with their own time, and the printed matches. The
//! rules are the specification's own examples where it has them
//! (`sigma-correlation-rules-specification.md`), with the thresholds made small.

use kastell_correlate::{detect_events, DetectMatch, RuleDocument, RuleSet};
use serde_json::{json, Value};

/// Runs `rules` (one file, any number of documents) over `events`, returning every match.
fn run(rules: &str, events: &[Value]) -> Vec<DetectMatch> {
    let (set, errors) = RuleSet::compile_raw([RuleDocument::new("test/rules", rules)]);
    assert!(errors.is_empty(), "{errors:?}");
    let input: String = events.iter().map(|e| format!("{e}\n")).collect();
    let mut matches = Vec::new();
    detect_events(&set, input.as_bytes(), |m| {
        matches.push(m);
        Ok(())
    })
    .unwrap();
    matches
}

fn correlations(matches: &[DetectMatch]) -> Vec<&DetectMatch> {
    matches
        .iter()
        .filter(|m| m.event_indices.is_some())
        .collect()
}

/// A detection rule named `name` matching `EventID: id`.
fn base(name: &str, id: u32) -> String {
    format!(
        "title: {name}\nid: {name}-id\nname: {name}\nlogsource: {{product: windows, service: \
         security}}\ndetection:\n  selection:\n    EventID: {id}\n  condition: selection\n"
    )
}

fn at(seconds: i64, fields: Value) -> Value {
    let mut event = fields;
    let time = chrono::DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap();
    event["@timestamp"] = json!(time.to_rfc3339());
    event
}

fn correlation(body: &str) -> String {
    format!("title: correlation\nid: corr-1\nlevel: high\ncorrelation:\n{body}")
}

#[test]
fn the_specification_brute_force_chain_fires_once_in_order() {
    // The specification's "Failed Logins Followed by Successful Login", verbatim except
    // for `gte: 10` lowered to 3.
    let rules = r#"
title: Correlation - Multiple Failed Logins Followed by Successful Login
id: b180ead8-d58f-40b2-ae54-c8940995b9b6
status: experimental
description: Detects multiple failed logins by a single user followed by a successful login of that user
references:
    - https://reference.com
author: Florian Roth (Nextron Systems)
date: 2023-06-16
correlation:
    type: temporal_ordered
    rules:
        - multiple_failed_login
        - successful_login
    group-by:
        - User
    timespan: 10m
falsepositives:
    - Unlikely
level: high
---
title: Multiple failed logons
id: a8418a5a-5fc4-46b5-b23b-6c73beb19d41
description: Detects multiple failed logins within a certain amount of time
name: multiple_failed_login
correlation:
    type: event_count
    rules:
        - failed_login
    group-by:
        - User
    timespan: 10m
    condition:
        gte: 3
---
title: Single failed login
id: 53ba33fd-3a50-4468-a5ef-c583635cfa92
name: failed_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 529
            - 4625
    condition: selection
---
title: Successful login
id: 4d0a2c83-c62c-4ed4-b475-c7e23a9269b8
description: Detects a successful login
name: successful_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 528
            - 4624
    condition: selection
"#;
    let events = [
        at(0, json!({"EventID": 4625, "User": "alice"})),
        at(10, json!({"EventID": 4625, "User": "alice"})),
        at(20, json!({"EventID": 4625, "User": "bob"})),
        at(30, json!({"EventID": 4625, "User": "alice"})),
        at(40, json!({"EventID": 4624, "User": "bob"})),
        at(50, json!({"EventID": 4624, "User": "alice"})),
    ];
    let matches = run(rules, &events);
    // Only the outermost correlation alerts: its rules have no `generate`.
    assert_eq!(matches.len(), 1, "{matches:?}");
    let m = &matches[0];
    assert_eq!(m.rule_id, "b180ead8-d58f-40b2-ae54-c8940995b9b6");
    assert_eq!(m.level, "high");
    assert_eq!(m.group.as_ref().unwrap()["User"], "alice");
    assert_eq!(m.event_indices.as_deref(), Some(&[0, 1, 3, 5][..]));
    assert_eq!(m.event_index, None);
    let line = serde_json::to_value(m).unwrap();
    let mut keys: Vec<&str> = line
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["event_indices", "group", "level", "rule_id", "rule_title"]
    );
}

#[test]
fn temporal_ordered_with_events_out_of_order_raises_nothing() {
    let rules = [
        base("a", 1),
        base("b", 2),
        correlation(
            "  type: temporal_ordered\n  rules: [a, b]\n  group-by: [Host]\n  timespan: 5m\n",
        ),
    ]
    .join("---\n");
    let reversed = [
        at(0, json!({"EventID": 2, "Host": "h"})),
        at(10, json!({"EventID": 1, "Host": "h"})),
    ];
    assert!(run(&rules, &reversed).is_empty());
    let ordered = [
        at(0, json!({"EventID": 1, "Host": "h"})),
        at(10, json!({"EventID": 2, "Host": "h"})),
    ];
    assert_eq!(correlations(&run(&rules, &ordered)).len(), 1);
}

#[test]
fn temporal_across_different_group_values_raises_nothing() {
    let rules = [
        base("a", 1),
        base("b", 2),
        correlation("  type: temporal\n  rules: [a, b]\n  group-by: [Host]\n  timespan: 5m\n"),
    ]
    .join("---\n");
    let apart = [
        at(0, json!({"EventID": 2, "Host": "one"})),
        at(10, json!({"EventID": 1, "Host": "two"})),
    ];
    assert!(run(&rules, &apart).is_empty());
    // Any order, same group: it fires.
    let together = [
        at(0, json!({"EventID": 2, "Host": "one"})),
        at(10, json!({"EventID": 1, "Host": "one"})),
    ];
    let matches = run(&rules, &together);
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0].event_indices.as_deref(), Some(&[0, 1][..]));
}

#[test]
fn value_count_does_not_count_an_event_just_outside_the_timespan() {
    let rules = [
        base("fail", 4625),
        correlation(
            "  type: value_count\n  rules: [fail]\n  group-by: [Host]\n  timespan: 60s\n  \
             condition:\n    field: User\n    gte: 3\n",
        ),
    ]
    .join("---\n");
    // u1 is 61 s before u3: outside the 60 s window that ends at u3.
    let outside = [
        at(0, json!({"EventID": 4625, "Host": "h", "User": "u1"})),
        at(30, json!({"EventID": 4625, "Host": "h", "User": "u2"})),
        at(61, json!({"EventID": 4625, "Host": "h", "User": "u3"})),
    ];
    assert!(run(&rules, &outside).is_empty());
    // Exactly 60 s apart is inside.
    let inside = [
        at(0, json!({"EventID": 4625, "Host": "h", "User": "u1"})),
        at(30, json!({"EventID": 4625, "Host": "h", "User": "u2"})),
        at(60, json!({"EventID": 4625, "Host": "h", "User": "u3"})),
    ];
    assert_eq!(run(&rules, &inside).len(), 1);
    // The same user three times is one value.
    let same = [
        at(0, json!({"EventID": 4625, "Host": "h", "User": "u1"})),
        at(1, json!({"EventID": 4625, "Host": "h", "User": "u1"})),
        at(2, json!({"EventID": 4625, "Host": "h", "User": "u1"})),
    ];
    assert!(run(&rules, &same).is_empty());
}

#[test]
fn a_correlation_without_group_by_counts_every_event() {
    let rules = [
        base("fail", 4625),
        correlation(
            "  type: event_count\n  rules: [fail]\n  timespan: 1m\n  condition: {gte: 3}\n",
        ),
    ]
    .join("---\n");
    let events = [
        at(0, json!({"EventID": 4625, "Host": "a"})),
        at(5, json!({"EventID": 4625, "Host": "b"})),
        at(6, json!({"EventID": 4624, "Host": "b"})),
        at(9, json!({"EventID": 4625})),
    ];
    let matches = run(&rules, &events);
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0].group, Some(Default::default()));
    assert_eq!(matches[0].event_indices.as_deref(), Some(&[0, 1, 3][..]));
}

#[test]
fn event_count_fires_once_per_window_and_honours_ranges() {
    let rules = [
        base("fail", 4625),
        correlation(
            "  type: event_count\n  rules: [fail]\n  group-by: [User]\n  timespan: 1m\n  \
             condition: {gt: 1, lte: 2}\n",
        ),
    ]
    .join("---\n");
    // A range with an upper bound is judged when the window closes: the window opened by
    // event 0 spans a minute. Four failures inside it are more than two, so nothing fires;
    // two failures a little later (75 s and 80 s, a new window) are in the range.
    let mut events: Vec<Value> = (0..4)
        .map(|i| at(i, json!({"EventID": 4625, "User": "u"})))
        .collect();
    events.push(at(75, json!({"EventID": 4625, "User": "u"})));
    events.push(at(80, json!({"EventID": 4625, "User": "u"})));
    let matches = run(&rules, &events);
    let indices: Vec<_> = matches
        .iter()
        .map(|m| m.event_indices.clone().unwrap())
        .collect();
    assert_eq!(indices, [vec![4, 5]]);
}

#[test]
fn upper_bounds_fire_when_event_time_passes_the_window_end() {
    // "Fewer than 3 heartbeats per host in 10 minutes": host a sends 1, host b sends 3.
    let rules = [
        base("beat", 4000),
        base("other", 1),
        correlation(
            "  type: event_count\n  rules: [beat]\n  group-by: [Host]\n  timespan: 10m\n  \
             condition: {lt: 3}\n",
        ),
    ]
    .join("---\n");
    let events = [
        at(0, json!({"EventID": 4000, "Host": "a"})),
        at(10, json!({"EventID": 4000, "Host": "b"})),
        at(20, json!({"EventID": 4000, "Host": "b"})),
        at(30, json!({"EventID": 4000, "Host": "b"})),
        // Not a heartbeat: moves event time past both windows' ends (plus the default
        // one-minute lateness), which closes them.
        at(12 * 60, json!({"EventID": 1, "Host": "c"})),
    ];
    let (set, errors) = RuleSet::compile_raw([RuleDocument::new("test/rules", rules.as_str())]);
    assert!(errors.is_empty(), "{errors:?}");
    let mut state = set.correlation_state::<usize>();
    let mut fired_at = Vec::new();
    for (index, event) in events.iter().enumerate() {
        let time_ms = (1_700_000_000 + [0, 10, 20, 30, 720][index]) * 1000;
        let flat = event.as_object().unwrap().clone();
        let evaluation = set.evaluate_raw_with(&mut state, &flat, time_ms, &|| index);
        for hit in evaluation.correlations {
            fired_at.push((index, hit.group["Host"].clone(), hit.payload.clone()));
        }
    }
    // Only host a, and only once event 4 moved time on: nothing fired on arrival.
    assert_eq!(fired_at, [(4, "a".to_owned(), vec![0])]);
    assert!(set.flush_correlations(&mut state).is_empty());
}

#[test]
fn the_end_of_a_finite_input_closes_open_windows() {
    let rules = [
        base("beat", 4000),
        correlation(
            "  type: event_count\n  rules: [beat]\n  group-by: [Host]\n  timespan: 10m\n  \
             condition: {eq: 2}\n",
        ),
    ]
    .join("---\n");
    let events = vec![
        at(0, json!({"EventID": 4000, "Host": "a"})),
        at(5, json!({"EventID": 4000, "Host": "b"})),
        at(6, json!({"EventID": 4000, "Host": "a"})),
    ];
    // `kastell detect` reads a file: at its end, every window closes with what it holds.
    let matches = run(&rules, &events);
    let groups: Vec<_> = correlations(&matches)
        .iter()
        .map(|m| (m.group.clone().unwrap(), m.event_indices.clone().unwrap()))
        .collect();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0].0["Host"], "a");
    assert_eq!(groups[0].1, [0, 2]);
}

#[test]
fn value_sum_avg_percentile_and_median() {
    let events: Vec<Value> = [100, 200, 300, 50]
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            at(
                i as i64,
                json!({"EventID": 3, "SourceIP": "10.0.0.1", "bytes_sent": bytes}),
            )
        })
        .collect();
    let case = |kind: &str, condition: &str| {
        let rules = [
            base("web", 3),
            correlation(&format!(
                "  type: {kind}\n  rules: [web]\n  group-by: [SourceIP]\n  timespan: 1h\n  \
                 condition:\n    field: bytes_sent\n{condition}"
            )),
        ]
        .join("---\n");
        run(&rules, &events)
            .iter()
            .map(|m| m.event_indices.clone().unwrap())
            .collect::<Vec<_>>()
    };
    // Sum 600 after the third event; the window then starts again and 50 is not enough.
    assert_eq!(case("value_sum", "    gte: 600\n"), [vec![0, 1, 2]]);
    // Average 150 after two events, then 300 alone; 50 alone is below.
    assert_eq!(case("value_avg", "    gte: 150\n"), [vec![0, 1], vec![2]]);
    // 75th percentile of 100, 200, 300 is 300; of 100, 200 it is 200.
    assert_eq!(
        case("value_percentile", "    percentile: 75\n    gte: 300\n"),
        [vec![0, 1, 2]]
    );
    // An equality is judged when the window closes (here at the end of the input): the
    // median (nearest rank) of all four, 50 100 200 300, is 100.
    assert_eq!(
        case("value_median", "    eq: 200\n"),
        Vec::<Vec<usize>>::new()
    );
    assert_eq!(case("value_median", "    eq: 100\n"), [vec![0, 1, 2, 3]]);
    // A string field that is not a number is not aggregated.
    let text = vec![at(
        0,
        json!({"EventID": 3, "SourceIP": "x", "bytes_sent": "many"}),
    )];
    let rules = [
        base("web", 3),
        correlation("  type: value_sum\n  rules: [web]\n  timespan: 1h\n  condition:\n    field: bytes_sent\n    gte: 0\n"),
    ]
    .join("---\n");
    assert!(run(&rules, &text).is_empty());
}

#[test]
fn aliases_join_different_fields_of_different_rules() {
    // The specification's field name alias example.
    let rules = r#"
title: internal error
name: internal_error
logsource: {category: webserver}
detection:
    selection:
        http.response.status_code: 500
    condition: selection
---
title: new connection
name: new_network_connection
logsource: {category: network_connection}
detection:
    selection:
        event.category: network
        event.type: connection
        event.outcome: success
    condition: selection
---
title: error then connection
id: alias-corr
correlation:
    type: temporal
    rules:
        - internal_error
        - new_network_connection
    group-by:
        - internal_ip
        - remote_ip
    timespan: 10s
    aliases:
        internal_ip:
            internal_error: destination.ip
            new_network_connection: source.ip
        remote_ip:
            internal_error: source.ip
            new_network_connection: destination.ip
"#;
    let error = |t, src: &str, dst: &str| {
        at(
            t,
            json!({"http": {"response": {"status_code": 500}}, "source": {"ip": src}, "destination": {"ip": dst}}),
        )
    };
    let connection = |t, src: &str, dst: &str| {
        at(
            t,
            json!({"event": {"category": "network", "type": "connection", "outcome": "success"},
                     "source": {"ip": src}, "destination": {"ip": dst}}),
        )
    };
    let swapped = [
        error(0, "1.1.1.1", "10.0.0.5"),
        connection(3, "10.0.0.5", "1.1.1.1"),
    ];
    let matches = run(rules, &swapped);
    assert_eq!(matches.len(), 1);
    let group = matches[0].group.clone().unwrap();
    assert_eq!(group["internal_ip"], "10.0.0.5");
    assert_eq!(group["remote_ip"], "1.1.1.1");
    let unrelated = [
        error(0, "1.1.1.1", "10.0.0.5"),
        connection(3, "10.0.0.6", "1.1.1.1"),
    ];
    assert!(run(rules, &unrelated).is_empty());
    let late = [
        error(0, "1.1.1.1", "10.0.0.5"),
        connection(11, "10.0.0.5", "1.1.1.1"),
    ];
    assert!(run(rules, &late).is_empty());
}

#[test]
fn generate_keeps_the_referenced_rules_alerting() {
    let rules = [
        base("fail", 4625),
        correlation(
            "  type: event_count\n  rules: [fail]\n  timespan: 1m\n  condition: {gte: 2}\ngenerate: true\n",
        ),
    ]
    .join("---\n");
    let events = [
        at(0, json!({"EventID": 4625})),
        at(1, json!({"EventID": 4625})),
    ];
    let matches = run(&rules, &events);
    let singles: Vec<_> = matches.iter().filter_map(|m| m.event_index).collect();
    assert_eq!(singles, [0, 1]);
    assert_eq!(correlations(&matches).len(), 1);
    // Without `generate`, the single rule is silent.
    let quiet = rules.replace("generate: true\n", "");
    assert_eq!(run(&quiet, &events).len(), 1);
}

#[test]
fn rule_references_are_checked() {
    let compile = |text: &str| RuleSet::compile_raw([RuleDocument::new("test/c", text)]).1;
    let unknown = [
        base("a", 1),
        correlation(
            "  type: event_count\n  rules: [nope]\n  timespan: 1m\n  condition: {gte: 2}\n",
        ),
    ]
    .join("---\n");
    let errors = compile(&unknown);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].to_string().contains("references `nope`"),
        "{}",
        errors[0]
    );
    assert_eq!(errors[0].rule_id.as_deref(), Some("corr-1"));
    let cycle = "title: x\nname: x\ncorrelation:\n  type: event_count\n  rules: [y]\n  timespan: 1m\n  condition: {gte: 2}\n---\n\
                 title: y\nname: y\ncorrelation:\n  type: event_count\n  rules: [x]\n  timespan: 1m\n  condition: {gte: 2}\n";
    let errors = compile(cycle);
    assert!(!errors.is_empty());
    assert!(
        errors.iter().all(|e| e.to_string().contains("references")),
        "{errors:?}"
    );
    let alias = [base("a", 1), base("b", 2), correlation("  type: temporal\n  rules: [a, b]\n  group-by: [ip]\n  timespan: 1m\n  aliases:\n    ip:\n      a: src\n")].join("---\n");
    let errors = compile(&alias);
    assert!(
        errors[0].to_string().contains("no field for rule `b`"),
        "{}",
        errors[0]
    );
    let huge = [
        base("a", 1),
        correlation(
            "  type: event_count\n  rules: [a]\n  timespan: 1m\n  condition: {gt: 1000000}\n",
        ),
    ]
    .join("---\n");
    assert!(
        compile(&huge)[0].to_string().contains("more than"),
        "window bound"
    );
}

#[test]
fn filters_apply_to_the_rules_they_name_with_a_matching_logsource() {
    // A meta-filter in the specification's shape, written the pySigma way (`not`).
    let rules = format!(
        "{}---\n{}---\n\
         title: Not the admin host\nid: f-1\nlogsource: {{product: windows, service: security}}\n\
         filter:\n  rules: [a-id]\n  selection:\n    Host: admin\n  condition: not selection\n",
        base("a", 1),
        base("b", 1)
    );
    let events = [
        at(0, json!({"EventID": 1, "Host": "admin"})),
        at(1, json!({"EventID": 1, "Host": "web"})),
    ];
    let fired: Vec<(String, usize)> = run(&rules, &events)
        .into_iter()
        .map(|m| (m.rule_id, m.event_index.unwrap()))
        .collect();
    assert_eq!(
        fired,
        [
            ("b-id".to_owned(), 0),
            ("a-id".to_owned(), 1),
            ("b-id".to_owned(), 1)
        ]
    );
    // A filter for another logsource leaves the rule alone.
    let other = rules.replace(
        "logsource: {product: windows, service: security}\nfilter",
        "logsource: {product: linux}\nfilter",
    );
    assert_eq!(run(&other, &events).len(), 4);
}

#[test]
fn temporal_takes_a_boolean_condition_over_its_rules() {
    // SEP #198: a failed logon that no successful logon of the same user follows within
    // five minutes. The `not` makes it a condition judged when the window closes.
    let rules = [
        base("failed", 4625),
        base("success", 4624),
        correlation(
            "  type: temporal\n  rules: [failed, success]\n  group-by: [User]\n  \
             timespan: 5m\n  condition: failed and not success\n",
        ),
    ]
    .join("---\n");
    let events = [
        at(0, json!({"EventID": 4625, "User": "alice"})),
        at(30, json!({"EventID": 4624, "User": "alice"})),
        at(40, json!({"EventID": 4625, "User": "bob"})),
        // Only bob's failure stays without a success: it fires once time has moved on.
        at(20 * 60, json!({"EventID": 4624, "User": "carol"})),
    ];
    let fired: Vec<_> = correlations(&run(&rules, &events))
        .iter()
        .map(|m| (m.group.clone().unwrap(), m.event_indices.clone().unwrap()))
        .collect();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].0["User"], "bob");
    assert_eq!(fired[0].1, [2]);

    // Without a negation the expression is judged as inputs arrive.
    let either = rules.replace("failed and not success", "1 of them");
    let fired = correlations(&run(&either, &events)).len();
    assert_eq!(fired, 4, "every input satisfies `1 of them` on its own");
}

#[test]
fn a_boolean_condition_must_name_the_correlated_rules() {
    let compile = |body: &str| {
        let rules = [
            base("failed", 4625),
            base("success", 4624),
            correlation(body),
        ]
        .join("---\n");
        RuleSet::compile_raw([RuleDocument::new("test/rules", rules.as_str())]).1
    };
    let errors = compile(
        "  type: temporal\n  rules: [failed, success]\n  timespan: 5m\n  \
         condition: failed and not logoff\n",
    );
    assert_eq!(errors.len(), 1);
    assert!(errors[0].to_string().contains("`logoff`"), "{}", errors[0]);
    let errors = compile(
        "  type: temporal_ordered\n  rules: [failed, success]\n  timespan: 5m\n  \
         condition: failed and success\n",
    );
    assert_eq!(errors.len(), 1);
    assert!(errors[0].to_string().contains("temporal"), "{}", errors[0]);
}
