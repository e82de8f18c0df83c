//! What the fuzz targets (`fuzz/`) check, run on fixed input in every test run: every
//! SigmaHQ rule, cut short at several points and with bytes flipped, plus hand-written
//! junk, goes through the rule parser, the multi-document reader, the rule-set compiler
//! and the condition parser; each may refuse the input, none may panic, and a refusal
//! says why.

use std::path::{Path, PathBuf};

use kastell_correlate::{condition, parse_documents, parse_rule, RuleDocument, RuleSet};

fn corpora() -> PathBuf {
    std::env::var_os("KASTELL_CORPORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpora"))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yml") {
            out.push(path);
        }
    }
}

/// Everything the fuzz target `rule_parser` does with one input.
fn read_rule_text(text: &str) {
    if let Err(error) = parse_rule(text) {
        assert!(!error.to_string().is_empty());
    }
    for document in parse_documents(text) {
        if let Err(error) = document {
            assert!(!error.to_string().is_empty());
        }
    }
    let (_, errors) = RuleSet::compile_raw([RuleDocument::new("test/junk", text)]);
    assert!(errors.iter().all(|e| !e.kind.label().is_empty()));
}

fn read_condition(text: &str) {
    if let Err(error) = condition::parse(text) {
        assert!(error.position <= text.len());
        assert!(!error.message.is_empty());
    }
}

const JUNK_RULES: &[&str] = &[
    "",
    "---\n---\n",
    "title: [",
    "title: t\nlogsource: 5\ndetection: {a: {b: {c: d}}}\n",
    "title: t\ncorrelation: {type: temporal, rules: a, timespan: 9999999999999999999d}\n",
    "title: t\ncorrelation: {type: value_percentile, rules: [a], timespan: 1s, condition: {field: x, percentile: 101, gt: 1}}\n",
    "title: f\nfilter: {rules: [x], condition: sel}\nlogsource: {}\n",
    "title: t\nlogsource: {}\ndetection: {s: {'a|expand': '%%%'}, condition: s}\n",
    "title: t\nlogsource: {}\ndetection: {s: {'a|hour|gt': x}, condition: s}\n",
    "title: t\nlogsource: {}\ndetection: {s: {'a|fieldref|contains': ''}, condition: s}\n",
    "title: t\nlogsource: {}\ndetection: {s: {'a|windash|contains': '-----'}, condition: s}\n",
    "\u{feff}title: \u{1F600}\nlogsource: {}\ndetection: {s: ['\\\\*'], condition: 'not not not s'}\n",
];

const JUNK_CONDITIONS: &[&str] = &[
    "",
    "(",
    ")",
    "((((((((((a))))))))))",
    "not",
    "1 of",
    "all of them and",
    "a and or b",
    "x | count() > 5",
    "3 of sel*",
    "a and (b or (c and not d)",
    "\u{1F600} or \u{0}",
];

#[test]
fn the_parsers_refuse_bad_input_without_panicking() {
    for text in JUNK_RULES {
        read_rule_text(text);
    }
    for text in JUNK_CONDITIONS {
        read_condition(text);
    }
    // Deep nesting must not overflow the stack.
    read_condition(&format!("{}a{}", "(".repeat(10_000), ")".repeat(10_000)));
    read_condition(&"not ".repeat(10_000));

    let sigma = corpora().join("sigma");
    if !sigma.is_dir() {
        println!("SKIPPED: {} not found", sigma.display());
        return;
    }
    let mut files = Vec::new();
    for folder in ["rules", "rules-emerging-threats", "rules-threat-hunting"] {
        yaml_files(&sigma.join(folder), &mut files);
    }
    files.sort();
    for (n, file) in files.iter().enumerate() {
        let text = std::fs::read_to_string(file).unwrap();
        // Compiling all of them is the corpus test's job; here every tenth is compiled.
        if n % 10 == 0 {
            read_rule_text(&text);
        } else {
            assert!(parse_documents(&text).iter().all(Result::is_ok));
        }
        // Each rule's conditions, whole and cut short.
        if let Ok(rule) = parse_rule(&text) {
            assert!(!rule.detection.conditions.is_empty());
        }
        for line in text
            .lines()
            .filter(|l| l.trim_start().starts_with("condition:"))
        {
            let condition = line.trim_start().trim_start_matches("condition:").trim();
            read_condition(condition);
            for cut in (0..condition.len()).step_by(7) {
                if condition.is_char_boundary(cut) {
                    read_condition(&condition[..cut]);
                }
            }
        }
        // A sample of the rules truncated and with a byte flipped, as a fuzzer would.
        if n % 10 == 0 {
            for cut in [text.len() / 3, text.len() / 2, text.len() * 9 / 10] {
                if text.is_char_boundary(cut) {
                    read_rule_text(&text[..cut]);
                }
            }
            let mut bytes = text.clone().into_bytes();
            let at = bytes.len() / 2;
            bytes[at] = b'|';
            if let Ok(flipped) = String::from_utf8(bytes) {
                read_rule_text(&flipped);
            }
        }
    }
}
