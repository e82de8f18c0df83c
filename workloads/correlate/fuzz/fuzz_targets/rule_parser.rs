//! Arbitrary text as a Sigma rule: reading and compiling may refuse it, never panic, and
//! every refusal must say why.

#![no_main]

use kastell_correlate::{parse_rule, RuleDocument};
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
});
