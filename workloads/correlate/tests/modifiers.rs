//! The Sigma 2.1 modifiers that compare within an event or against configuration:
//! `neq`, `fieldref` (and its chains), the time-part modifiers and `expand`, tried in raw
//! mode on small JSON events written after the specification's examples
//! (`sigma-appendix-modifiers.md`).

use kastell_correlate::{
    CompileOptions, ErrorKind, Mode, Placeholders, RuleDocument, RuleError, RuleSet,
};
use serde_json::{json, Map, Value};

fn rule(detection: &str) -> String {
    format!("title: t\nid: t-1\nlogsource: {{product: windows}}\ndetection:\n{detection}")
}

fn compile_with(detection: &str, placeholders: Placeholders) -> Result<RuleSet, RuleError> {
    let options = CompileOptions {
        mode: Mode::Raw,
        placeholders,
        ..CompileOptions::default()
    };
    let (set, mut errors) =
        RuleSet::compile_with([RuleDocument::new("test/t", rule(detection))], &options);
    match errors.pop() {
        Some(e) => Err(e),
        None => Ok(set),
    }
}

fn set(detection: &str) -> RuleSet {
    compile_with(detection, Placeholders::new()).unwrap_or_else(|e| panic!("{e}"))
}

fn hits(set: &RuleSet, event: Value) -> bool {
    let Value::Object(map) = event else {
        unreachable!()
    };
    let map: Map<String, Value> = map;
    set.evaluate_raw(&map).count() == 1
}

#[test]
fn neq_negates_the_comparison_of_a_present_field() {
    let s = set("  sel:\n    User|neq: SYSTEM\n  condition: sel\n");
    assert!(hits(&s, json!({"User": "bob"})));
    assert!(!hits(&s, json!({"User": "system"})));
    assert!(
        !hits(&s, json!({"Other": 1})),
        "a missing field is not unequal"
    );
    let list = set("  sel:\n    User|neq: [a, b]\n  condition: sel\n");
    assert!(hits(&list, json!({"User": "c"})));
    assert!(!hits(&list, json!({"User": "b"})));
    let contains = set("  sel:\n    CommandLine|contains|neq: ' -enc '\n  condition: sel\n");
    assert!(hits(&contains, json!({"CommandLine": "powershell -nop"})));
    assert!(!hits(
        &contains,
        json!({"CommandLine": "powershell -enc AAA"})
    ));
}

#[test]
fn fieldref_compares_two_fields_of_the_event() {
    // SigmaHQ's cross-user process spawn filter: `User|fieldref: ParentUser`.
    let s = set("  sel:\n    User|fieldref: ParentUser\n  condition: sel\n");
    assert!(hits(
        &s,
        json!({"User": "NT AUTHORITY\\SYSTEM", "ParentUser": "nt authority\\system"})
    ));
    assert!(!hits(&s, json!({"User": "a", "ParentUser": "b"})));
    assert!(!hits(&s, json!({"User": "a"})));
    let neq = set("  sel:\n    User|fieldref|neq: ParentUser\n  condition: sel\n");
    assert!(hits(&neq, json!({"User": "a", "ParentUser": "b"})));
    assert!(!hits(&neq, json!({"User": "a", "ParentUser": "A"})));
    let ends = set("  sel:\n    Image|fieldref|endswith: OriginalFileName\n  condition: sel\n");
    assert!(hits(
        &ends,
        json!({"Image": "C:\\x\\cmd.exe", "OriginalFileName": "Cmd.Exe"})
    ));
    assert!(!hits(
        &ends,
        json!({"Image": "C:\\x\\cmd.exe.bak", "OriginalFileName": "cmd.exe"})
    ));
    let cased = set("  sel:\n    User|fieldref|cased: ParentUser\n  condition: sel\n");
    assert!(!hits(&cased, json!({"User": "a", "ParentUser": "A"})));
    assert!(hits(&cased, json!({"User": "Aé", "ParentUser": "Aé"})));
    // Case folds beyond ASCII too, and a longer other value is never inside this one.
    assert!(hits(&s, json!({"User": "ÄRGER", "ParentUser": "ärger"})));
    let contains = set("  sel:\n    CommandLine|fieldref|contains: Image\n  condition: sel\n");
    assert!(hits(
        &contains,
        json!({"CommandLine": "\"C:\\Tools\\Run.EXE\" -x", "Image": "c:\\tools\\run.exe"})
    ));
    assert!(hits(
        &contains,
        json!({"CommandLine": "ÖL.exe /q", "Image": "öl.EXE"})
    ));
    assert!(!hits(
        &contains,
        json!({"CommandLine": "run", "Image": "run.exe"})
    ));
    let starts = set("  sel:\n    CommandLine|fieldref|startswith: Image\n  condition: sel\n");
    assert!(hits(
        &starts,
        json!({"CommandLine": "RUN.exe -x", "Image": "run.EXE"})
    ));
    assert!(!hits(
        &starts,
        json!({"CommandLine": "x run.exe", "Image": "run.exe"})
    ));
    let e = compile_with(
        "  sel:\n    User|fieldref|re: x\n  condition: sel\n",
        Placeholders::new(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("`fieldref` combines only"), "{e}");
}

#[test]
fn time_parts_read_the_date_then_compare() {
    let hour = set("  sel:\n    Time|hour|gte: 22\n  condition: sel\n");
    assert!(hits(&hour, json!({"Time": "2024-03-05T23:10:00Z"})));
    assert!(!hits(&hour, json!({"Time": "2024-03-05T08:10:00Z"})));
    assert!(!hits(&hour, json!({"Time": "not a date"})));
    let month = set("  sel:\n    Time|month: 3\n  condition: sel\n");
    assert!(hits(&month, json!({"Time": "2024-03-05 08:10:00.123"})));
    let year = set("  sel:\n    Time|year|lt: 2000\n  condition: sel\n");
    assert!(hits(&year, json!({"Time": "1999-12-31T23:59:59+01:00"})));
    let week = set("  sel:\n    Time|week: 1\n  condition: sel\n");
    assert!(hits(&week, json!({"Time": "2024-01-03T00:00:00Z"})));
    let minute = set("  sel:\n    Time|minute: [0, 30]\n  condition: sel\n");
    assert!(hits(&minute, json!({"Time": "2024-01-03T10:30:00Z"})));
    let day = set("  sel:\n    Time|day|neq: 1\n  condition: sel\n");
    assert!(!hits(&day, json!({"Time": "2024-01-01T10:30:00Z"})));
}

#[test]
fn expand_takes_placeholder_values_from_configuration() {
    // SigmaHQ's `Attributes|contains|expand: '%DomainControllers%'` shape.
    let detection = "  sel:\n    Host|expand: '%DomainControllers%'\n  condition: sel\n";
    let mut placeholders = Placeholders::new();
    placeholders.insert(
        "DomainControllers".into(),
        vec!["dc1".into(), "dc2*".into()],
    );
    let s = compile_with(detection, placeholders).unwrap();
    assert!(hits(&s, json!({"Host": "DC1"})));
    assert!(hits(&s, json!({"Host": "dc2.corp"})));
    assert!(!hits(&s, json!({"Host": "web"})));
    let e = compile_with(detection, Placeholders::new()).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Invalid { .. }), "{e}");
    assert!(e.to_string().contains("%DomainControllers%"), "{e}");
}

#[test]
fn a_hex_string_value_stays_a_string() {
    // SigmaHQ #6215: `'0x3e7'` (the SYSTEM logon id) must not become the number 999.
    let s = set("  sel:\n    SubjectLogonId: '0x3e7'\n  condition: sel\n");
    assert!(hits(&s, json!({"SubjectLogonId": "0x3e7"})));
    assert!(hits(&s, json!({"SubjectLogonId": "0X3E7"})));
    assert!(!hits(&s, json!({"SubjectLogonId": 999})));
    assert!(!hits(&s, json!({"SubjectLogonId": "999"})));
}

/// `lt`/`lte`/`gt`/`gte` take any number, odd ones included (zero, negative, a float, a
/// numeric string); anything else is a compile error that names the rule and the value.
#[test]
fn comparisons_take_any_number_and_refuse_other_values() {
    let zero = set("  sel:\n    Count|lt: 0\n  condition: sel\n");
    assert!(hits(&zero, json!({"Count": -1})));
    assert!(!hits(&zero, json!({"Count": 0})));
    let odd = set("  sel:\n    Count|gte: -2.5\n  condition: sel\n");
    assert!(hits(&odd, json!({"Count": "-2.5"})) && !hits(&odd, json!({"Count": -3})));
    let text = set("  sel:\n    Count|lte: '10'\n  condition: sel\n");
    assert!(hits(&text, json!({"Count": 10})) && !hits(&text, json!({"Count": 11})));

    for (modifier, value) in [
        ("lt", "abc"),
        ("gt", "'1O'"),
        ("gte", "true"),
        ("lte", "[3, 'ten']"),
    ] {
        let detection = format!("  sel:\n    Count|{modifier}: {value}\n  condition: sel\n");
        let error = compile_with(&detection, Placeholders::new())
            .map(|_| ())
            .expect_err(&detection);
        let message = error.to_string();
        assert_eq!(error.rule_id.as_deref(), Some("t-1"), "{message}");
        assert!(
            message.starts_with("rule t-1 (DetectionRule test/t): `detection.sel.Count|"),
            "{message}"
        );
        assert!(message.contains(&format!("`{modifier}`")), "{message}");
    }
}
