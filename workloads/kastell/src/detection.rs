//! DetectionRule resources into the correlate stage's rule set.

use kastell_core::Level;
use kastell_correlate::{RuleDocument, RuleSet};
use kastell_crds::{DetectionRule, Loaded};

/// Compiles every DetectionRule; a rule that does not compile becomes a problem line with
/// its file and the compiler's reason, and the others still load.
pub fn compile_rules(rules: &[Loaded<DetectionRule>]) -> (RuleSet, Vec<String>) {
    let documents = rules.iter().map(|rule| {
        let spec = &rule.object.spec;
        // Both enums spell Sigma's five levels the same way.
        let level = spec.level.and_then(|l| l.as_str().parse::<Level>().ok());
        RuleDocument::new(rule.key(), spec.sigma.clone())
            .with_level(level)
            .with_enabled(spec.enabled)
            .with_path(rule.file.display().to_string())
    });
    let (set, errors) = RuleSet::compile(documents);
    let problems = errors.iter().map(ToString::to_string).collect();
    (set, problems)
}
