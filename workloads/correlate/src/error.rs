//! Errors of reading and compiling rules: each names the rule (its id, else its title) and
//! the DetectionRule resource it came from, and says what is wrong where.

use std::fmt;

use crate::condition::ConditionError;
use crate::modifier::Modifier;

/// What is wrong with a rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ErrorKind {
    #[error("not valid YAML: {0}")]
    Yaml(String),
    #[error("the YAML holds {0} documents; a file with several (a correlation bundle) is compiled through a rule set")]
    MultipleDocuments(usize),
    #[error("a rule must be a YAML mapping")]
    NotAMapping,
    #[error("no rule: the text is empty or holds only YAML comments and empty documents")]
    Empty,
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("`{path}`: {reason}")]
    Invalid { path: String, reason: String },
    #[error("`{path}`: unknown modifier `{modifier}`")]
    UnknownModifier { path: String, modifier: String },
    #[error("`{path}`: modifier `{modifier}` is not supported yet")]
    UnsupportedModifier { path: String, modifier: Modifier },
    #[error("condition `{condition}`: {error}")]
    Condition {
        condition: String,
        error: ConditionError,
    },
    #[error("condition names `{0}`, which is not a search identifier of the detection")]
    UnknownIdentifier(String),
    #[error("condition pattern `{0}` matches no search identifier")]
    EmptyPattern(String),
    #[error("`{path}`: invalid regular expression: {reason}")]
    Regex { path: String, reason: String },
    #[error(
        "`{path}`: field `{field}` has no counterpart in the Suricata records this Zeek \
         logsource is read from"
    )]
    UnmappedField { path: String, field: String },
    #[error("a correlation rule (type `{0}`) is not a detection rule; load it with the rules it names through a rule set")]
    Correlation(String),
    #[error(
        "a filter is not a detection rule; load it with the rules it names through a rule set"
    )]
    Filter,
    #[error("correlation references `{0}`, which is no enabled rule or correlation of the set")]
    UnknownRuleReference(String),
    #[error("correlation `{0}` references itself through its chain")]
    CorrelationCycle(String),
    #[error("rule id `{id}` is already used by {other}")]
    DuplicateId { id: String, other: String },
}

impl ErrorKind {
    /// A short label that groups errors of the same cause, for counting them: the
    /// variant, with the modifier or logsource that is unsupported.
    pub fn label(&self) -> String {
        match self {
            ErrorKind::Yaml(_) => "invalid YAML".to_owned(),
            ErrorKind::MultipleDocuments(_) => "multi-document YAML".to_owned(),
            ErrorKind::NotAMapping => "not a mapping".to_owned(),
            ErrorKind::Empty => "empty".to_owned(),
            ErrorKind::Missing(field) => format!("missing `{field}`"),
            ErrorKind::Invalid { reason, .. } => format!("invalid: {reason}"),
            ErrorKind::UnknownModifier { modifier, .. } => format!("unknown modifier `{modifier}`"),
            ErrorKind::UnsupportedModifier { modifier, .. } => {
                format!("unsupported modifier `{modifier}`")
            }
            ErrorKind::Condition { error, .. } => format!("condition: {}", error.message),
            ErrorKind::UnknownIdentifier(_) => "condition names an unknown identifier".to_owned(),
            ErrorKind::EmptyPattern(_) => "condition pattern matches nothing".to_owned(),
            ErrorKind::Regex { .. } => "invalid regular expression".to_owned(),
            ErrorKind::UnmappedField { field, .. } => format!("Zeek field `{field}` unmapped"),
            ErrorKind::Correlation(kind) => format!("correlation rule `{kind}`"),
            ErrorKind::Filter => "filter rule".to_owned(),
            ErrorKind::UnknownRuleReference(_) => {
                "correlation references an unknown rule".to_owned()
            }
            ErrorKind::CorrelationCycle(_) => "correlation cycle".to_owned(),
            ErrorKind::DuplicateId { .. } => "duplicate rule id".to_owned(),
        }
    }

    pub(crate) fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ErrorKind::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// A rule that cannot be used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    /// The DetectionRule resource (`namespace/name`) the rule came from, when known.
    /// (These three are boxed strings so every `Result<_, RuleError>` stays small.)
    pub resource: Option<Box<str>>,
    /// The rule's `id` (else its `name`), when the YAML got far enough to have one.
    pub rule_id: Option<Box<str>>,
    /// The rule's `title`, when known.
    pub title: Option<Box<str>>,
    /// `resource` is a Sigma rule file read as it is (`kastell detect`), not a
    /// DetectionRule resource.
    pub file: bool,
    pub kind: ErrorKind,
}

impl RuleError {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        RuleError {
            resource: None,
            rule_id: None,
            title: None,
            file: false,
            kind,
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rule")?;
        match (&self.rule_id, &self.title) {
            (Some(id), _) => write!(f, " {id}")?,
            (None, Some(title)) => write!(f, " {title:?}")?,
            (None, None) => {}
        }
        match (&self.resource, self.file) {
            (Some(file), true) => write!(f, " (file {file})")?,
            (Some(resource), false) => write!(f, " (DetectionRule {resource})")?,
            (None, _) => {}
        }
        write!(f, ": {}", self.kind)
    }
}

// The kind is part of the message already, so it is not offered again as a source.
impl std::error::Error for RuleError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_rule_resource_and_reason() {
        let mut e = RuleError::new(ErrorKind::UnsupportedModifier {
            path: "detection.selection.CommandLine|windash".to_owned(),
            modifier: Modifier::Windash,
        });
        e.rule_id = Some("abc".into());
        e.resource = Some("soc/rule-a".into());
        assert_eq!(
            e.to_string(),
            "rule abc (DetectionRule soc/rule-a): `detection.selection.CommandLine|windash`: \
             modifier `windash` is not supported yet"
        );
        e.file = true;
        assert!(e.to_string().starts_with("rule abc (file soc/rule-a): "));
        e.rule_id = None;
        e.title = Some("T".into());
        e.resource = None;
        assert!(e.to_string().starts_with("rule \"T\": "));
    }
}
