//! Detection items the index walk decides (one bit per item, set by the shared per-field
//! automata and exact-value tables) must give what running the rule's own matchers gives.
//! Each case compiles a rule in raw mode beside companion rules (so that the rule's values
//! are atoms of the index, which is when the walk decides them), evaluates small events
//! shaped after the specification's examples and Sysmon process-creation fields through
//! the index and without it, and checks both the expected answer and that the two agree.

use kastell_correlate::{RuleDocument, RuleSet};
use serde_json::{json, Map, Value};

fn document(id: &str, detection: &str) -> RuleDocument {
    let rule =
        format!("title: {id}\nid: {id}\nlogsource: {{product: windows}}\ndetection:\n{detection}");
    RuleDocument::new(format!("test/{id}"), rule)
}

/// A detection of one selection holding one check.
fn one(check: &str) -> String {
    format!("  sel:\n    {check}\n  condition: sel\n")
}

fn compile(documents: Vec<RuleDocument>) -> RuleSet {
    let (set, errors) = RuleSet::compile_raw(documents);
    assert!(errors.is_empty(), "{errors:?}");
    set
}

fn companions(checks: &[&str]) -> Vec<RuleDocument> {
    checks
        .iter()
        .enumerate()
        .map(|(i, check)| document(&format!("c-{i}"), &one(check)))
        .collect()
}

/// The rule under test (`t-1`) and one companion rule per check in `indexed`.
fn set(detection: &str, indexed: &[&str]) -> RuleSet {
    let mut documents = companions(indexed);
    documents.push(document("t-1", detection));
    compile(documents)
}

/// How many items of the rule under test the walk decides.
fn decided(detection: &str, indexed: &[&str]) -> usize {
    set(detection, indexed).index_stats().decided_items
        - compile(companions(indexed)).index_stats().decided_items
}

fn object(event: Value) -> Map<String, Value> {
    match event {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Checks every event's expected answer for `t-1` through the index and by trying every
/// rule.
fn expect(set: &RuleSet, cases: &[(Value, bool)]) {
    for (event, want) in cases {
        let event = object(event.clone());
        let indexed = set.evaluate_raw(&event).any(|r| r.id == "t-1");
        let every = set.evaluate_raw_exhaustive(&event).any(|r| r.id == "t-1");
        assert_eq!(every, *want, "the rule's matchers on {event:?}");
        assert_eq!(indexed, *want, "the index's bits on {event:?}");
    }
}

#[test]
fn exact_prefix_suffix_and_contains_are_decided_case_insensitively() {
    let detection = concat!(
        "  sel:\n",
        "    Image|endswith: '\\whoami.exe'\n",
        "    CommandLine|startswith: 'cmd /c'\n",
        "    User: 'NT AUTHORITY\\SYSTEM'\n",
        "    ParentImage|contains: ['\\explorer', '\\services']\n",
        "  condition: sel\n",
    );
    let indexed = [
        r"Image|endswith: '\whoami.exe'",
        r"CommandLine|startswith: 'cmd /c'",
        r"User: 'NT AUTHORITY\SYSTEM'",
        r"ParentImage|contains: ['\explorer', '\services']",
    ];
    assert_eq!(decided(detection, &indexed), 4);
    let s = set(detection, &indexed);
    let event = |image: &str, command: &str, user: &str, parent: &str| json!({"Image": image, "CommandLine": command, "User": user, "ParentImage": parent});
    expect(
        &s,
        &[
            (
                event(
                    "C:\\Windows\\System32\\WHOAMI.EXE",
                    "CMD /C whoami",
                    "nt authority\\system",
                    "C:\\Windows\\Explorer.exe",
                ),
                true,
            ),
            // The suffix occurs, but not at the end; the prefix, but not at the start.
            (
                event(
                    "C:\\whoami.exe.bak",
                    "cmd /c x",
                    "NT AUTHORITY\\SYSTEM",
                    "\\explorer",
                ),
                false,
            ),
            (
                event(
                    "C:\\whoami.exe",
                    " cmd /c x",
                    "NT AUTHORITY\\SYSTEM",
                    "\\explorer",
                ),
                false,
            ),
            // Exact means the whole value.
            (
                event(
                    "C:\\whoami.exe",
                    "cmd /c x",
                    "NT AUTHORITY\\SYSTEM ",
                    "\\explorer",
                ),
                false,
            ),
            (
                event(
                    "C:\\whoami.exe",
                    "cmd /c x",
                    "NT AUTHORITY\\SYSTEM",
                    "C:\\Windows\\System32\\services.exe",
                ),
                true,
            ),
        ],
    );
}

#[test]
fn a_needle_that_is_prefix_suffix_and_substring_at_once_keeps_each_meaning() {
    // One automaton pattern serves three atoms with different anchors.
    let detection = concat!(
        "  a:\n    CommandLine|startswith: 'net'\n",
        "  b:\n    CommandLine|endswith: 'net'\n",
        "  c:\n    CommandLine|contains: 'net'\n",
        "  condition: (a and b) or (c and not a and not b)\n",
    );
    let indexed = [r"CommandLine|contains: 'net'"];
    assert_eq!(decided(detection, &indexed), 3);
    let s = set(detection, &indexed);
    expect(
        &s,
        &[
            (json!({"CommandLine": "net user /domain net"}), true),
            (json!({"CommandLine": "NET"}), true),
            (json!({"CommandLine": "net user"}), false),
            (json!({"CommandLine": "user net"}), false),
            (json!({"CommandLine": "a net b"}), true),
            (json!({"CommandLine": "a ne t b"}), false),
        ],
    );
}

#[test]
fn cased_values_stay_with_their_rule_and_keep_their_case() {
    let detection = concat!(
        "  sel:\n",
        "    CommandLine|cased|contains: 'Invoke-Mimikatz'\n",
        "    User|cased: 'SYSTEM'\n",
        "    Image|cased|endswith: '\\PsExec.exe'\n",
        "  condition: sel\n",
    );
    let indexed = [
        r"CommandLine|cased|contains: 'Invoke-Mimikatz'",
        r"User|cased: 'SYSTEM'",
        r"Image|cased|endswith: '\PsExec.exe'",
    ];
    assert_eq!(
        decided(detection, &indexed),
        0,
        "cased tests are not decided by the folded walk"
    );
    let s = set(detection, &indexed);
    expect(
        &s,
        &[
            (
                json!({"CommandLine": "x Invoke-Mimikatz y", "User": "SYSTEM", "Image": "C:\\PsExec.exe"}),
                true,
            ),
            (
                json!({"CommandLine": "x invoke-mimikatz y", "User": "SYSTEM", "Image": "C:\\PsExec.exe"}),
                false,
            ),
            (
                json!({"CommandLine": "x Invoke-Mimikatz y", "User": "system", "Image": "C:\\PsExec.exe"}),
                false,
            ),
            (
                json!({"CommandLine": "x Invoke-Mimikatz y", "User": "SYSTEM", "Image": "C:\\psexec.exe"}),
                false,
            ),
        ],
    );
}

#[test]
fn all_lists_need_every_value_and_plain_lists_any() {
    let detection = concat!(
        "  all:\n    CommandLine|contains|all: [' -enc ', 'bypass', 'hidden']\n",
        "  any:\n    Image|endswith: ['\\powershell.exe', '\\pwsh.exe']\n",
        "  condition: all and any\n",
    );
    let indexed = [
        r"CommandLine|contains: ' -enc '",
        r"CommandLine|contains: 'bypass'",
        r"CommandLine|contains: 'hidden'",
        r"Image|endswith: ['\powershell.exe', '\pwsh.exe']",
    ];
    // Three items for the `all` list, one for the plain list.
    assert_eq!(decided(detection, &indexed), 4);
    let s = set(detection, &indexed);
    let event = |command: &str| json!({"Image": "C:\\pwsh.exe", "CommandLine": command});
    expect(
        &s,
        &[
            (event("powershell -ep Bypass -w Hidden -enc AAA"), true),
            (event("powershell -ep Bypass -enc AAA"), false),
            (event("powershell -ep bypass -w hidden"), false),
            (
                json!({"Image": "C:\\cmd.exe", "CommandLine": "x -enc bypass hidden"}),
                false,
            ),
        ],
    );
}

#[test]
fn wildcards_in_the_middle_mix_with_decided_items() {
    let detection = concat!(
        "  sel:\n",
        "    CommandLine: '*\\\\*\\admin$*'\n",
        "    Image|endswith: '\\net.exe'\n",
        "    ParentImage: 'C:\\Windows\\\\*\\cmd.exe'\n",
        "  condition: sel\n",
    );
    let indexed = [r"Image|endswith: '\net.exe'"];
    // Only the plain suffix is decided; the wildcard values run as regexes.
    assert_eq!(decided(detection, &indexed), 1);
    let s = set(detection, &indexed);
    let event = |command: &str, parent: &str| json!({"CommandLine": command, "Image": "C:\\Windows\\System32\\NET.exe", "ParentImage": parent});
    expect(
        &s,
        &[
            (
                event(
                    "net use \\\\host\\ADMIN$ /user:x",
                    "C:\\Windows\\System32\\cmd.exe",
                ),
                true,
            ),
            (
                event("net use \\\\host\\c$", "C:\\Windows\\System32\\cmd.exe"),
                false,
            ),
            (
                event("net use \\\\host\\admin$", "D:\\Windows\\System32\\cmd.exe"),
                false,
            ),
        ],
    );
}

#[test]
fn windash_spellings_outside_ascii_keep_the_list_with_its_rule() {
    let detection = concat!(
        "  sel:\n    CommandLine|windash|contains: ' -s '\n",
        "  psexec:\n    Image|endswith: '\\psexec.exe'\n",
        "  condition: sel and psexec\n",
    );
    let indexed = [
        r"CommandLine|windash|contains: ' -s '",
        r"Image|endswith: '\psexec.exe'",
    ];
    // The dashes outside ASCII make their spellings regexes (Unicode case folding), so
    // the list stays with its rule; the suffix is decided.
    assert_eq!(decided(detection, &indexed), 1);
    let s = set(detection, &indexed);
    expect(
        &s,
        &[
            (
                json!({"Image": "C:\\PsExec.exe", "CommandLine": "psexec.exe -s cmd"}),
                true,
            ),
            (
                json!({"Image": "C:\\PsExec.exe", "CommandLine": "psexec.exe /s cmd"}),
                true,
            ),
            (
                json!({"Image": "C:\\PsExec.exe", "CommandLine": "psexec.exe \u{2013}s cmd"}),
                true,
            ),
            (
                json!({"Image": "C:\\PsExec.exe", "CommandLine": "psexec.exe \u{2014}S cmd"}),
                true,
            ),
            (
                json!({"Image": "C:\\PsExec.exe", "CommandLine": "psexec.exe s cmd"}),
                false,
            ),
            (
                json!({"Image": "C:\\cmd.exe", "CommandLine": "psexec.exe -s cmd"}),
                false,
            ),
        ],
    );
}

#[test]
fn base64offset_values_are_cased_and_stay_with_their_rule() {
    let detection = concat!(
        "  sel:\n    CommandLine|base64offset|contains: 'Invoke-Expression'\n",
        "  other:\n    Image|endswith: '\\powershell.exe'\n",
        "  condition: sel and other\n",
    );
    let indexed = [
        r"CommandLine|base64offset|contains: 'Invoke-Expression'",
        r"Image|endswith: '\powershell.exe'",
    ];
    // The suffix is decided; base64 text is case-sensitive, so its needles are not.
    assert_eq!(decided(detection, &indexed), 1);
    let s = set(detection, &indexed);
    let encoded = |text: &str| {
        use std::fmt::Write;
        // The three offsets' encodings, as an attacker's command line would carry them.
        let mut out = String::new();
        for offset in 0..3 {
            let padded = format!("{}{text}", &"xx"[..offset]);
            let _ = write!(out, " {}", base64(padded.as_bytes()));
        }
        out
    };
    let matching = encoded("Invoke-Expression");
    expect(
        &s,
        &[
            (
                json!({"Image": "C:\\powershell.exe", "CommandLine": format!("powershell -e{matching}")}),
                true,
            ),
            (
                json!({"Image": "C:\\powershell.exe", "CommandLine": format!("powershell -e{}", matching.to_lowercase())}),
                false,
            ),
            (
                json!({"Image": "C:\\powershell.exe", "CommandLine": format!("powershell -e{}", encoded("Invoke-Command"))}),
                false,
            ),
        ],
    );
}

/// Standard base64 with padding, enough to write the test's command lines.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn empty_values_null_and_missing_fields() {
    let detection = concat!(
        "  blank:\n    OriginalFileName: ''\n",
        "  nothing:\n    Description: null\n",
        "  condition: blank and nothing\n",
    );
    let indexed = [r"OriginalFileName: ''"];
    assert_eq!(
        decided(detection, &indexed),
        1,
        "the empty value is decided, `null` is not"
    );
    let s = set(detection, &indexed);
    expect(
        &s,
        &[
            (json!({"OriginalFileName": "", "Description": null}), true),
            (json!({"OriginalFileName": ""}), true),
            (json!({"OriginalFileName": "", "Description": []}), true),
            (json!({"OriginalFileName": "", "Description": "x"}), false),
            (json!({"OriginalFileName": null}), false),
            (json!({"OriginalFileName": " "}), false),
            (json!({"Description": null}), false),
        ],
    );
}

#[test]
fn array_valued_fields_are_matched_element_by_element() {
    let detection = concat!(
        "  sel:\n",
        "    Tags|contains: 'attack.t1059'\n",
        "    Hashes: 'SHA256=ABC'\n",
        "  filter:\n    Users: 'guest'\n",
        "  condition: sel and not filter\n",
    );
    let indexed = [
        r"Tags|contains: 'attack.t1059'",
        r"Hashes: 'SHA256=ABC'",
        r"Users: 'guest'",
    ];
    assert_eq!(decided(detection, &indexed), 3);
    let s = set(detection, &indexed);
    expect(
        &s,
        &[
            (
                json!({"Tags": ["x", ["attack.T1059.001"]], "Hashes": ["MD5=1", "sha256=abc"], "Users": ["admin"]}),
                true,
            ),
            (
                json!({"Tags": ["attack.t1059"], "Hashes": ["sha256=abc"], "Users": ["admin", "GUEST"]}),
                false,
            ),
            (
                json!({"Tags": [], "Hashes": ["sha256=abc"], "Users": []}),
                false,
            ),
            (
                json!({"Tags": [{"name": "attack.t1059"}], "Hashes": "sha256=abc"}),
                false,
            ),
        ],
    );
}

#[test]
fn numbers_and_booleans_compare_by_value() {
    let detection = concat!(
        "  sel:\n    EventID: [4688, 1]\n    Elevated: true\n    Ratio: 0.5\n",
        "  condition: sel\n",
    );
    let indexed = [r"EventID: [4688, 1]", r"Elevated: true", r"Ratio: 0.5"];
    assert_eq!(decided(detection, &indexed), 3);
    let s = set(detection, &indexed);
    expect(
        &s,
        &[
            (
                json!({"EventID": 4688, "Elevated": true, "Ratio": 0.5}),
                true,
            ),
            (
                json!({"EventID": "4688", "Elevated": "TRUE", "Ratio": "0.50"}),
                true,
            ),
            (
                json!({"EventID": 4688.0, "Elevated": "true", "Ratio": 0.5}),
                true,
            ),
            (
                json!({"EventID": "1e0", "Elevated": true, "Ratio": 0.5}),
                true,
            ),
            (
                json!({"EventID": 46880, "Elevated": true, "Ratio": 0.5}),
                false,
            ),
            (
                json!({"EventID": 4688, "Elevated": "yes", "Ratio": 0.5}),
                false,
            ),
            (json!({"EventID": 4688, "Elevated": 1, "Ratio": 0.5}), false),
        ],
    );
    // Past 2^53 an integer is not exact as a float: such values stay with the rule.
    let detection = "  sel:\n    Id: 9007199254740993\n  condition: sel\n";
    let indexed = [r"Id: 9007199254740993"];
    assert_eq!(decided(detection, &indexed), 0);
    let large = set(detection, &indexed);
    expect(
        &large,
        &[
            (json!({"Id": 9007199254740993u64}), true),
            (json!({"Id": 9007199254740992u64}), false),
        ],
    );
}

#[test]
fn a_path_met_twice_is_read_by_name() {
    // A flat dotted key beside the nested object spelling the same path: a lookup reads
    // the flat key only, so the walk's bits (set by both) must not answer.
    let detection = "  sel:\n    process.name: 'cmd.exe'\n  condition: sel\n";
    assert_eq!(decided(detection, &[]), 1);
    let s = set(detection, &[]);
    expect(
        &s,
        &[
            (json!({"process": {"name": "cmd.exe"}}), true),
            (json!({"process.name": "cmd.exe"}), true),
            (
                json!({"process.name": "notepad.exe", "process": {"name": "cmd.exe"}}),
                false,
            ),
            (
                json!({"process": [{"name": "notepad.exe"}, {"name": "CMD.EXE"}]}),
                true,
            ),
        ],
    );
}

#[test]
fn keywords_are_decided_over_every_scalar() {
    let detection = concat!(
        "  keywords:\n    - 'mimikatz'\n    - 'sekurlsa::'\n",
        "  filter:\n    Image|endswith: '\\defender.exe'\n",
        "  condition: keywords and not filter\n",
    );
    let indexed = [r"Image|endswith: '\defender.exe'"];
    assert_eq!(decided(detection, &indexed), 2);
    let s = set(detection, &indexed);
    expect(
        &s,
        &[
            (
                json!({"CommandLine": "x.exe SEKURLSA::logonpasswords"}),
                true,
            ),
            (
                json!({"Nested": {"Deep": ["a", {"b": "Mimikatz.exe"}]}}),
                true,
            ),
            (json!({"Count": 5, "Name": "mimi katz"}), false),
            (
                json!({"Image": "C:\\Defender.exe", "CommandLine": "scan mimikatz"}),
                false,
            ),
        ],
    );
}

#[test]
fn a_rule_tried_on_every_event_has_all_its_items_decided() {
    // Nothing is required of an event for `not filter`: the rule runs on every event, so
    // its items are decided even though no other rule indexes their atoms.
    let detection = concat!(
        "  filter:\n    Image|endswith: ['\\explorer.exe', '\\svchost.exe']\n",
        "  condition: not filter\n",
    );
    assert_eq!(decided(detection, &[]), 1);
    let s = set(detection, &[]);
    expect(
        &s,
        &[
            (json!({"Image": "C:\\Windows\\explorer.exe"}), false),
            (json!({"Image": "C:\\Windows\\SVCHOST.EXE"}), false),
            (json!({"Image": "C:\\Windows\\svchost.exe.tmp"}), true),
            (json!({"User": "x"}), true),
        ],
    );
}

#[test]
fn a_suffix_is_found_only_at_the_end_of_the_text() {
    // SigmaHQ's b6e2a2e3 (a trailing space), beside a rule that makes ' ' a substring
    // needle of the same path.
    let detection = "  selection1:\n    CommandLine|endswith: ' '\n  selection2:\n    Image|endswith: ' '\n  condition: 1 of selection*\n";
    // The companions make ' ' a substring needle of both paths (so the item is decided)
    // and put longer suffix needles that end in ' ' beside it: the automaton's state for
    // "exe.erolpxei " (reversed) also holds " ", which must not count there.
    let indexed = [
        "CommandLine|contains: ' '",
        "Image|contains: ' '",
        "Image|endswith: ' iexplore.exe'",
        "CommandLine|endswith: ' /c'",
    ];
    assert_eq!(decided(detection, &indexed), 2);
    let set = set(detection, &indexed);
    expect(
        &set,
        &[
            (
                json!({"CommandLine": "\"C:\\Program Files (x86)\\Internet Explorer\\iexplore.exe\"", "Image": "C:\\Program Files (x86)\\Internet Explorer\\iexplore.exe"}),
                false,
            ),
            (
                json!({"CommandLine": "cmd /c", "Image": "C:\\Users\\x\\my iexplore.exe"}),
                false,
            ),
            (
                json!({"CommandLine": "cmd.exe /c ", "Image": "C:\\x.exe"}),
                true,
            ),
            (
                json!({"CommandLine": "x", "Image": "C:\\Program Files\\x.exe "}),
                true,
            ),
            (json!({"CommandLine": " x"}), false),
        ],
    );
}

/// The walk remembers, per thread, what a value at a path made true. Two rule sets used
/// in turn on one thread (a reload, or several sets) must each answer with their own
/// atoms, and a value met again, or at another path, must answer as the first time.
#[test]
fn a_remembered_value_answers_only_for_its_own_rule_set_and_path() {
    let first = compile(vec![document(
        "t-1",
        &one("CommandLine|contains: 'vssadmin delete'"),
    )]);
    let second = compile(vec![document(
        "t-1",
        &one("CommandLine|contains: 'wevtutil cl'"),
    )]);
    let vss = object(json!({"CommandLine": "vssadmin delete shadows /all"}));
    let wevtutil = object(json!({"CommandLine": "wevtutil cl Security"}));
    let elsewhere = object(json!({"ParentCommandLine": "vssadmin delete shadows /all"}));
    let matches = |set: &RuleSet, event: &Map<String, Value>| set.evaluate_raw(event).count();
    for _ in 0..3 {
        assert_eq!(matches(&first, &vss), 1);
        assert_eq!(matches(&second, &vss), 0);
        assert_eq!(matches(&first, &wevtutil), 0);
        assert_eq!(matches(&second, &wevtutil), 1);
        assert_eq!(matches(&first, &elsewhere), 0);
    }
}

#[test]
fn a_rule_tried_on_every_event_answers_the_same_without_its_fields() {
    // Only negations: the index can require nothing, so the rule is tried on every event,
    // and on an event holding none of its fields it answers from its slots.
    let detection = concat!(
        "  known:\n    Image|endswith: '.exe'\n",
        "  filter_null:\n    Image: null\n",
        "  filter_parent:\n    ParentImage|contains: '\\Windows\\'\n",
        "  condition: not known and not 1 of filter_*\n",
    );
    let s = set(detection, &[]);
    assert_eq!(s.index_stats().always, 1);
    expect(
        &s,
        &[
            // No field of the rule: `Image: null` holds, so the filter drops it.
            (json!({"EventID": 4624, "TargetUserName": "bob"}), false),
            (json!({"Image": "C:\\Temp\\payload.scr"}), true),
            (json!({"Image": "C:\\Temp\\payload.EXE"}), false),
            (
                json!({"Image": "C:\\Temp\\payload.scr", "ParentImage": "C:\\Windows\\x.exe"}),
                false,
            ),
            // The parent alone, outside \Windows\: the image is still missing.
            (json!({"ParentImage": "C:\\Temp\\p.exe"}), false),
            (json!({"Image": null}), false),
        ],
    );
    // Without the null filter, the event lacking every field matches.
    let detection = concat!(
        "  known:\n    Image|endswith: '.exe'\n",
        "  condition: not known\n",
    );
    let s = set(detection, &[]);
    expect(
        &s,
        &[
            (json!({"EventID": 4624}), true),
            (json!({}), true),
            (json!({"Image": "a.exe"}), false),
            // A list matches when one element does.
            (json!({"Image": ["a.dll", "b.exe"]}), false),
            (json!({"Image": ["a.dll", "b.sys"]}), true),
        ],
    );
}

#[test]
fn numbers_and_short_texts_are_read_only_where_an_atom_can_hold_them() {
    // A needle made of digits is found in a number's text, at its own path and as a
    // keyword; a needle with a letter never is, and a text shorter than every needle is
    // not read at all (the walk skips it).
    let detection = concat!(
        "  sel:\n    ProcessId|contains: '46'\n",
        "  keywords:\n    - '4625'\n",
        "  condition: sel or keywords\n",
    );
    let s = set(
        detection,
        &[
            "ProcessId|contains: 'x4'",
            "Channel: 'security'",
            "Flag: true",
        ],
    );
    expect(
        &s,
        &[
            (json!({"ProcessId": 1467}), true),
            (json!({"ProcessId": "1467"}), true),
            (json!({"ProcessId": -46.5}), true),
            (json!({"ProcessId": 1407}), false),
            (json!({"EventID": 4625}), true),
            (json!({"EventID": 46250, "Channel": "Security"}), true),
            (json!({"EventID": 4624, "Channel": "Security"}), false),
            (json!({"Flag": true, "Channel": "46"}), false),
        ],
    );
    let keywords = concat!(
        "  keywords:\n    - 'true'\n    - 'al'\n",
        "  condition: keywords\n",
    );
    let s = set(keywords, &["Image|contains: 'cmd'"]);
    expect(
        &s,
        &[
            (json!({"Flag": true}), true),
            (json!({"Flag": false}), true),
            (json!({"Name": "a"}), false),
            (json!({"Name": "AL"}), true),
            (json!({"Count": 1e300}), false),
        ],
    );
}

/// Candidates are evaluated through a branch program of their condition (steps that jump
/// on a test's answer); it must answer as the condition's tree does, with `not`, `and`,
/// `or`, `1 of`, `all of`, lists of maps, decided and undecided (regex) checks, and
/// missing fields mixed.
#[test]
fn nested_conditions_answer_as_the_tree_does() {
    let detection = concat!(
        "  sel:\n",
        "    Image|endswith: '\\cmd.exe'\n",
        "  filter:\n",
        "    - CommandLine|contains: 'echo'\n",
        "    - User: 'SYSTEM'\n",
        "  x_a:\n",
        "    CommandLine|re: 'whoami\\s+/all'\n",
        "  x_b:\n",
        "    Image|endswith: '\\whoami.exe'\n",
        "    User|startswith: 'adm'\n",
        "  y_a:\n",
        "    CommandLine|contains: 'priv'\n",
        "  y_b:\n",
        "    User: 'admin'\n",
        "  condition: (sel and not filter) or (1 of x_* and not all of y_*)\n",
    );
    let indexed = [
        r"Image|endswith: '\cmd.exe'",
        r"CommandLine|contains: 'echo'",
        r"User: 'SYSTEM'",
        r"Image|endswith: '\whoami.exe'",
        r"User|startswith: 'adm'",
        r"CommandLine|contains: 'priv'",
        r"User: 'admin'",
    ];
    let s = set(detection, &indexed);
    let images = [
        Some(r"C:\Windows\System32\CMD.EXE"),
        Some(r"C:\Tools\whoami.exe"),
        Some(r"C:\x.exe"),
        None,
    ];
    let commands = [
        Some("cmd /c echo hi"),
        Some("whoami /all /priv"),
        Some("whoami  /all"),
        Some("WHOAMI /ALL"),
        None,
    ];
    let users = [
        Some("system"),
        Some("admin"),
        Some("Administrator"),
        Some("bob"),
        None,
    ];
    let mut cases = Vec::new();
    for image in images {
        for command in commands {
            for user in users {
                let ends =
                    |suffix: &str| image.is_some_and(|i| i.to_ascii_lowercase().ends_with(suffix));
                let has =
                    |needle: &str| command.is_some_and(|c| c.to_ascii_lowercase().contains(needle));
                let user_is = |name: &str| user.is_some_and(|u| u.eq_ignore_ascii_case(name));
                let sel = ends(r"\cmd.exe");
                let filter = has("echo") || user_is("SYSTEM");
                // `re` is case-sensitive unless its `i` flag is given.
                let x_a = command
                    .is_some_and(|c| c.contains("whoami /all") || c.contains("whoami  /all"));
                let x_b = ends(r"\whoami.exe")
                    && user.is_some_and(|u| u.to_ascii_lowercase().starts_with("adm"));
                let y_all = has("priv") && user_is("admin");
                let want = (sel && !filter) || ((x_a || x_b) && !y_all);
                let mut event = Map::new();
                for (key, value) in [("Image", image), ("CommandLine", command), ("User", user)] {
                    if let Some(value) = value {
                        event.insert(key.to_owned(), Value::from(value));
                    }
                }
                cases.push((Value::Object(event), want));
            }
        }
    }
    expect(&s, &cases);
}
