//! Arbitrary text as a Sigma rule: reading and compiling may refuse it, never panic, and
//! every refusal must say why.

#![no_main]

use kastell_correlate::{parse_documents, parse_rule, RuleDocument, RuleSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_rule(text) {
        Ok(rule) => assert!(!rule.detection.selections.is_empty()),
        Err(error) => assert!(!error.to_string().is_empty()),
    }
    match RuleDocument::new("fuzz/rule", text).compile() {
        Ok(rule) => assert_eq!(
            rule.rule_ref().source.as_ref().map(|s| s.resource.as_str()),
            Some("fuzz/rule")
        ),
        Err(error) => assert!(!error.kind.label().is_empty()),
    }
    // The whole file as a rule set: multi-document YAML, correlations and filters.
    for document in parse_documents(text) {
        if let Err(error) = document {
            assert!(!error.to_string().is_empty());
        }
    }
    let (_, errors) = RuleSet::compile_raw([RuleDocument::new("fuzz/rule", text)]);
    assert!(errors.iter().all(|e| !e.to_string().is_empty()));
});
