//! DetectionRule resources into the correlate stage's rule set.

use kastell_core::Level;
use kastell_correlate::{RuleDocument, RuleSet};
use kastell_crds::common::parse_duration;
use kastell_crds::{DetectionRule, Loaded};

/// Compiles every DetectionRule; a rule that does not compile becomes a problem line with
/// its file and the compiler's reason, and the others still load.
pub fn compile_rules(rules: &[Loaded<DetectionRule>]) -> (RuleSet, Vec<String>) {
    let mut problems = Vec::new();
    let documents = rule_documents(rules, &mut problems);
    let (set, errors) = RuleSet::compile(documents);
    problems.extend(errors.iter().map(ToString::to_string));
    (set, problems)
}

/// The rule documents of DetectionRule resources, with their level override, enabled
/// flag, suppression window and file; a bad suppression window is added to `problems`.
pub fn rule_documents(
    rules: &[Loaded<DetectionRule>],
    problems: &mut Vec<String>,
) -> Vec<RuleDocument> {
    rules
        .iter()
        .map(|rule| {
            let spec = &rule.object.spec;
            // Both enums spell Sigma's five levels the same way.
            let level = spec.level.and_then(|l| l.as_str().parse::<Level>().ok());
            let suppression = spec.suppression_window.as_deref().and_then(|text| {
                parse_duration(text)
                    .map_err(|e| {
                        problems.push(format!(
                            "DetectionRule {}: spec.suppressionWindow: {e}",
                            rule.key()
                        ))
                    })
                    .ok()
            });
            RuleDocument::new(rule.key(), spec.sigma.clone())
                .with_level(level)
                .with_enabled(spec.enabled)
                .with_suppression(suppression)
                .with_path(rule.file.display().to_string())
        })
        .collect()
}
