//! The Sigma rule document: YAML read into a typed tree of metadata, logsource,
//! search identifiers and conditions.
//!
//! This step checks shape only (a field value is a scalar or a list of scalars, a
//! modifier is one the specification defines, a condition parses). Whether the engine can
//! evaluate what the rule asks for is the compile step's question.

use kastell_core::Level;
use serde_yaml::{Mapping, Value};

use crate::condition::{self, Condition};
use crate::correlation::{read_correlation, CorrelationRule};
use crate::error::{ErrorKind, RuleError};
use crate::modifier::Modifier;
use crate::string::SigmaString;

/// A Sigma detection rule.
#[derive(Debug, Clone, PartialEq)]
pub struct SigmaRule {
    pub title: String,
    pub id: Option<String>,
    /// The `name` attribute correlation rules refer to.
    pub name: Option<String>,
    pub status: Option<String>,
    pub description: Option<String>,
    pub author: Option<String>,
    pub level: Option<Level>,
    pub tags: Vec<String>,
    pub logsource: LogSource,
    pub detection: Detection,
}

impl SigmaRule {
    /// The id alerts carry: `id`, else `name`.
    pub fn reference(&self) -> Option<&str> {
        self.id.as_deref().or(self.name.as_deref())
    }
}

/// Which logs a rule is written for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSource {
    pub category: Option<String>,
    pub product: Option<String>,
    pub service: Option<String>,
    pub definition: Option<String>,
}

impl std::fmt::Display for LogSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            ("product", &self.product),
            ("category", &self.category),
            ("service", &self.service),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}: {v}")))
        .collect();
        write!(f, "{{{}}}", parts.join(", "))
    }
}

/// The `detection` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Search identifiers in the order the rule lists them.
    pub selections: Vec<(String, Selection)>,
    /// One or more conditions; several are ORed.
    pub conditions: Vec<Condition>,
}

/// One search identifier.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// A map: every field match holds.
    Fields(Vec<FieldMatch>),
    /// A list of maps: any one of them holds.
    AnyOf(Vec<Vec<FieldMatch>>),
    /// A list of plain values searched across the whole event: any one of them.
    Keywords(Vec<SigmaValue>),
}

/// `field|modifier|…: value or values`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldMatch {
    /// `None` for a field-less key such as `'|all'`, which searches keywords.
    pub field: Option<String>,
    pub modifiers: Vec<Modifier>,
    pub values: Vec<SigmaValue>,
    /// Where the match is in the rule, e.g. `detection.selection.Image|endswith`.
    pub path: String,
}

/// A value in a detection.
#[derive(Debug, Clone, PartialEq)]
pub enum SigmaValue {
    String(SigmaString),
    Integer(i128),
    Float(f64),
    Bool(bool),
    Null,
}

/// One YAML document of a rule file.
#[derive(Debug, Clone, PartialEq)]
pub enum SigmaDocument {
    Rule(SigmaRule),
    Correlation(CorrelationRule),
    Filter(FilterRule),
}

/// A meta-filter: a detection ANDed into the condition of the rules it names, when their
/// logsource matches its own.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterRule {
    pub title: String,
    pub id: Option<String>,
    pub logsource: LogSource,
    /// Ids or names of the rules the filter applies to.
    pub rules: Vec<String>,
    pub detection: Detection,
}

impl FilterRule {
    /// Whether the filter applies to `rule`: it names the rule, and every logsource
    /// attribute the filter sets is the rule's.
    pub fn applies_to(&self, rule: &SigmaRule) -> bool {
        let named = self.rules.iter().any(|r| {
            Some(r.as_str()) == rule.id.as_deref() || Some(r.as_str()) == rule.name.as_deref()
        });
        let same = |filter: &Option<String>, rule: &Option<String>| {
            filter.is_none()
                || filter.as_deref().map(str::to_lowercase)
                    == rule.as_deref().map(str::to_lowercase)
        };
        let (f, r) = (&self.logsource, &rule.logsource);
        named
            && same(&f.product, &r.product)
            && same(&f.category, &r.category)
            && same(&f.service, &r.service)
    }
}

/// Reads every document of a rule file (YAML documents separated by `---`): detection
/// rules, correlation rules and filters. Each document succeeds or fails on its own; YAML
/// that does not parse fails as a whole.
pub fn parse_documents(text: &str) -> Vec<Result<SigmaDocument, RuleError>> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value: Value = match serde::Deserialize::deserialize(document) {
            Ok(value) => value,
            Err(e) => return vec![Err(RuleError::new(ErrorKind::Yaml(e.to_string())))],
        };
        if value.is_null() {
            continue;
        }
        documents.push(read_document(&value));
    }
    if documents.is_empty() {
        documents.push(Err(RuleError::new(ErrorKind::Empty)));
    }
    documents
}

fn read_document(value: &Value) -> Result<SigmaDocument, RuleError> {
    let Value::Mapping(map) = value else {
        return Err(RuleError::new(ErrorKind::NotAMapping));
    };
    let with_names = |kind: ErrorKind| RuleError {
        resource: None,
        file: false,
        rule_id: optional_string(map, "id")
            .or_else(|| optional_string(map, "name"))
            .map(String::into_boxed_str),
        title: optional_string(map, "title").map(String::into_boxed_str),
        kind,
    };
    if map.contains_key("correlation") {
        return read_correlation(map)
            .map(SigmaDocument::Correlation)
            .map_err(with_names);
    }
    if map.contains_key("filter") {
        return read_filter(map)
            .map(SigmaDocument::Filter)
            .map_err(with_names);
    }
    read_rule(map).map(SigmaDocument::Rule).map_err(with_names)
}

fn read_filter(map: &Mapping) -> Result<FilterRule, ErrorKind> {
    let title = string_field(map, "title")?.ok_or(ErrorKind::Missing("title"))?;
    let logsource = map
        .get("logsource")
        .ok_or(ErrorKind::Missing("logsource"))?;
    let Some(Value::Mapping(section)) = map.get("filter") else {
        return Err(ErrorKind::invalid("filter", "expected a mapping"));
    };
    let rules = string_list(section, "rules").map_err(|e| match e {
        ErrorKind::Invalid { reason, .. } => ErrorKind::invalid("filter.rules", reason),
        other => other,
    })?;
    if rules.is_empty() {
        return Err(ErrorKind::Missing("filter.rules"));
    }
    let mut detection = section.clone();
    detection.remove("rules");
    Ok(FilterRule {
        title,
        id: string_field(map, "id")?,
        logsource: read_logsource(logsource)?,
        rules,
        detection: read_detection(&Value::Mapping(detection))?,
    })
}

/// Reads one Sigma rule from YAML.
///
/// # Errors
///
/// A [`RuleError`] naming the rule (when it got far enough to have an id or title) for
/// YAML that is not a rule: syntax errors, missing `title`/`logsource`/`detection`, values
/// of the wrong shape, unknown modifiers, conditions that do not parse. Correlation and
/// filter documents are reported as not supported yet.
pub fn parse_rule(text: &str) -> Result<SigmaRule, RuleError> {
    let value = single_document(text).map_err(RuleError::new)?;
    let Value::Mapping(map) = value else {
        return Err(RuleError::new(ErrorKind::NotAMapping));
    };
    let title = optional_string(&map, "title").map(String::into_boxed_str);
    let id = optional_string(&map, "id")
        .or_else(|| optional_string(&map, "name"))
        .map(String::into_boxed_str);
    let with_names = |kind: ErrorKind| RuleError {
        resource: None,
        file: false,
        rule_id: id.clone(),
        title: title.clone(),
        kind,
    };
    read_rule(&map).map_err(with_names)
}

fn single_document(text: &str) -> Result<Value, ErrorKind> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(document)
            .map_err(|e| ErrorKind::Yaml(e.to_string()))?;
        // `---` at the start or end of a file leaves an empty document behind.
        if !value.is_null() {
            documents.push(value);
        }
    }
    match documents.len() {
        0 => Err(ErrorKind::NotAMapping),
        1 => Ok(documents.pop().expect("one document")),
        n => Err(ErrorKind::MultipleDocuments(n)),
    }
}

fn read_rule(map: &Mapping) -> Result<SigmaRule, ErrorKind> {
    if let Some(correlation) = map.get("correlation") {
        let kind = correlation
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        return Err(ErrorKind::Correlation(kind.to_owned()));
    }
    if map.contains_key("filter") {
        return Err(ErrorKind::Filter);
    }
    let title = string_field(map, "title")?.ok_or(ErrorKind::Missing("title"))?;
    let level = match string_field(map, "level")? {
        Some(text) => Some(
            text.parse::<Level>()
                .map_err(|e| ErrorKind::invalid("level", e.to_string()))?,
        ),
        None => None,
    };
    let logsource = map
        .get("logsource")
        .ok_or(ErrorKind::Missing("logsource"))?;
    let detection = map
        .get("detection")
        .ok_or(ErrorKind::Missing("detection"))?;
    Ok(SigmaRule {
        title,
        id: string_field(map, "id")?,
        name: string_field(map, "name")?,
        status: string_field(map, "status")?,
        description: string_field(map, "description")?,
        author: author(map)?,
        level,
        tags: string_list(map, "tags")?,
        logsource: read_logsource(logsource)?,
        detection: read_detection(detection)?,
    })
}

fn optional_string(map: &Mapping, key: &str) -> Option<String> {
    map.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// A string field; numbers are accepted as their text, since YAML reads an unquoted
/// `id: 1234` as a number.
fn string_field(map: &Mapping, key: &str) -> Result<Option<String>, ErrorKind> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(ErrorKind::invalid(
            key,
            format!("expected a string, found {}", describe(other)),
        )),
    }
}

/// `author` is a string by the specification; a list of names is joined, because the
/// licence only asks that the authors are kept.
fn author(map: &Mapping) -> Result<Option<String>, ErrorKind> {
    match map.get("author") {
        Some(Value::Sequence(_)) => Ok(Some(string_list(map, "author")?.join(", "))),
        _ => string_field(map, "author"),
    }
}

fn string_list(map: &Mapping, key: &str) -> Result<Vec<String>, ErrorKind> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Sequence(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(ErrorKind::invalid(
                    format!("{key}[{i}]"),
                    format!("expected a string, found {}", describe(other)),
                )),
            })
            .collect(),
        Some(other) => Err(ErrorKind::invalid(
            key,
            format!("expected a list of strings, found {}", describe(other)),
        )),
    }
}

fn read_logsource(value: &Value) -> Result<LogSource, ErrorKind> {
    let Value::Mapping(map) = value else {
        return Err(ErrorKind::invalid(
            "logsource",
            format!("expected a mapping, found {}", describe(value)),
        ));
    };
    let field = |key: &str| {
        string_field(map, key).map_err(|e| match e {
            ErrorKind::Invalid { path, reason } => ErrorKind::Invalid {
                path: format!("logsource.{path}"),
                reason,
            },
            other => other,
        })
    };
    Ok(LogSource {
        category: field("category")?,
        product: field("product")?,
        service: field("service")?,
        definition: field("definition")?,
    })
}

fn read_detection(value: &Value) -> Result<Detection, ErrorKind> {
    let Value::Mapping(map) = value else {
        return Err(ErrorKind::invalid(
            "detection",
            format!("expected a mapping, found {}", describe(value)),
        ));
    };
    let mut selections = Vec::new();
    let mut conditions = None;
    for (key, value) in map {
        let Some(name) = key_text(key) else {
            return Err(ErrorKind::invalid(
                "detection",
                format!(
                    "search identifiers must be strings, found {}",
                    describe(key)
                ),
            ));
        };
        match name.as_str() {
            "condition" => conditions = Some(read_conditions(value)?),
            "timeframe" => {
                return Err(ErrorKind::invalid(
                    "detection.timeframe",
                    "`timeframe` belongs to the legacy aggregations; write a correlation rule",
                ))
            }
            _ => {
                let path = format!("detection.{name}");
                selections.push((name, read_selection(&path, value)?));
            }
        }
    }
    let conditions = conditions.ok_or(ErrorKind::Missing("detection.condition"))?;
    if selections.is_empty() {
        return Err(ErrorKind::invalid(
            "detection",
            "no search identifiers: a detection needs at least one selection",
        ));
    }
    Ok(Detection {
        selections,
        conditions,
    })
}

fn read_conditions(value: &Value) -> Result<Vec<Condition>, ErrorKind> {
    let texts: Vec<&str> = match value {
        Value::String(s) => vec![s.as_str()],
        Value::Sequence(items) if !items.is_empty() => items
            .iter()
            .map(|item| {
                item.as_str().ok_or_else(|| {
                    ErrorKind::invalid(
                        "detection.condition",
                        format!("expected condition strings, found {}", describe(item)),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(ErrorKind::invalid(
                "detection.condition",
                format!(
                    "expected a string or a list of strings, found {}",
                    describe(other)
                ),
            ))
        }
    };
    texts
        .into_iter()
        .map(|text| {
            condition::parse(text).map_err(|error| ErrorKind::Condition {
                condition: text.to_owned(),
                error,
            })
        })
        .collect()
}

fn read_selection(path: &str, value: &Value) -> Result<Selection, ErrorKind> {
    match value {
        Value::Mapping(map) => Ok(Selection::Fields(read_field_map(path, map)?)),
        Value::Sequence(items) if items.is_empty() => {
            Err(ErrorKind::invalid(path, "an empty list matches nothing"))
        }
        Value::Sequence(items) if items.iter().all(Value::is_mapping) => {
            let maps = items
                .iter()
                .filter_map(Value::as_mapping)
                .enumerate()
                .map(|(i, map)| read_field_map(&format!("{path}[{i}]"), map))
                .collect::<Result<_, _>>()?;
            Ok(Selection::AnyOf(maps))
        }
        Value::Sequence(items) => {
            let values = items
                .iter()
                .enumerate()
                .map(|(i, item)| read_value(&format!("{path}[{i}]"), item))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Selection::Keywords(values))
        }
        Value::String(_) | Value::Number(_) => {
            Ok(Selection::Keywords(vec![read_value(path, value)?]))
        }
        other => Err(ErrorKind::invalid(
            path,
            format!(
                "a search identifier is a map, a list of maps or a list of keywords, \
                 found {}",
                describe(other)
            ),
        )),
    }
}

fn read_field_map(path: &str, map: &Mapping) -> Result<Vec<FieldMatch>, ErrorKind> {
    if map.is_empty() {
        return Err(ErrorKind::invalid(path, "an empty map matches nothing"));
    }
    let mut matches = Vec::with_capacity(map.len());
    for (key, value) in map {
        let Some(key) = key_text(key) else {
            return Err(ErrorKind::invalid(
                path,
                format!("field names must be strings, found {}", describe(key)),
            ));
        };
        let here = format!("{path}.{key}");
        let mut parts = key.split('|');
        let field = parts.next().unwrap_or_default();
        let modifiers = parts
            .map(|name| {
                name.parse::<Modifier>()
                    .map_err(|e| ErrorKind::UnknownModifier {
                        path: here.clone(),
                        modifier: e.0,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let values = match value {
            Value::Sequence(items) if items.is_empty() => {
                return Err(ErrorKind::invalid(
                    &here,
                    "an empty list of values matches nothing",
                ))
            }
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| read_value(&format!("{here}[{i}]"), item))
                .collect::<Result<Vec<_>, _>>()?,
            single => vec![read_value(&here, single)?],
        };
        matches.push(FieldMatch {
            field: (!field.is_empty()).then(|| field.to_owned()),
            modifiers,
            values,
            path: here,
        });
    }
    Ok(matches)
}

fn read_value(path: &str, value: &Value) -> Result<SigmaValue, ErrorKind> {
    match value {
        Value::String(s) => Ok(SigmaValue::String(SigmaString::parse(s))),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(SigmaValue::Integer(i128::from(i)))
            } else if let Some(u) = n.as_u64() {
                Ok(SigmaValue::Integer(i128::from(u)))
            } else {
                n.as_f64()
                    .map(SigmaValue::Float)
                    .ok_or_else(|| ErrorKind::invalid(path, format!("unreadable number {n}")))
            }
        }
        Value::Bool(b) => Ok(SigmaValue::Bool(*b)),
        Value::Null => Ok(SigmaValue::Null),
        other => Err(ErrorKind::invalid(
            path,
            format!(
                "a value must be a string, number, boolean or null, found {}",
                describe(other)
            ),
        )),
    }
}

/// Mapping keys as text; YAML reads an unquoted numeric key as a number.
fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::Target;

    const RULE: &str = r#"
title: Test
id: 4a4b6e4c-0000-4000-8000-000000000001
author: Someone
level: high
tags: [attack.t1110]
logsource:
    product: linux
    service: sshd
detection:
    selection:
        Image|endswith:
            - '\cmd.exe'
            - 12
        Flag: null
    alt:
        - A: 1
        - B|contains|all: [x, y]
    keywords:
        - 'error'
    condition: 1 of selection* or (alt and not keywords)
"#;

    #[test]
    fn reads_metadata_selections_and_conditions() {
        let rule = parse_rule(RULE).unwrap();
        assert_eq!(rule.title, "Test");
        assert_eq!(
            rule.reference(),
            Some("4a4b6e4c-0000-4000-8000-000000000001")
        );
        assert_eq!(rule.level, Some(Level::High));
        assert_eq!(rule.logsource.service.as_deref(), Some("sshd"));
        let names: Vec<&str> = rule
            .detection
            .selections
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(names, ["selection", "alt", "keywords"]);
        let Selection::Fields(fields) = &rule.detection.selections[0].1 else {
            panic!("a map")
        };
        assert_eq!(fields[0].field.as_deref(), Some("Image"));
        assert_eq!(fields[0].modifiers, [Modifier::EndsWith]);
        assert_eq!(fields[0].values[1], SigmaValue::Integer(12));
        assert_eq!(fields[1].values, [SigmaValue::Null]);
        assert_eq!(fields[0].path, "detection.selection.Image|endswith");
        assert!(matches!(&rule.detection.selections[1].1, Selection::AnyOf(m) if m.len() == 2));
        assert!(matches!(&rule.detection.selections[2].1, Selection::Keywords(k) if k.len() == 1));
        assert!(matches!(
            &rule.detection.conditions[0],
            Condition::Or(ops) if ops[0] == Condition::OneOf(Target::Pattern("selection*".into()))
        ));
    }

    #[test]
    fn errors_carry_the_rule_id_and_the_path() {
        let text = RULE.replace("Image|endswith", "Image|endswiths");
        let e = parse_rule(&text).unwrap_err();
        assert_eq!(
            e.rule_id.as_deref(),
            Some("4a4b6e4c-0000-4000-8000-000000000001")
        );
        assert_eq!(
            e.kind,
            ErrorKind::UnknownModifier {
                path: "detection.selection.Image|endswiths".to_owned(),
                modifier: "endswiths".to_owned()
            }
        );
        let text = RULE.replace("Flag: null", "Flag: {a: 1}");
        let e = parse_rule(&text).unwrap_err();
        assert!(e.to_string().contains("detection.selection.Flag"), "{e}");
        let text = RULE.replace("(alt and not keywords)", "(alt and not keywords");
        assert!(matches!(
            parse_rule(&text).unwrap_err().kind,
            ErrorKind::Condition { .. }
        ));
    }

    #[test]
    fn shape_errors() {
        assert!(matches!(
            parse_rule("a: [").unwrap_err().kind,
            ErrorKind::Yaml(_)
        ));
        assert_eq!(parse_rule("- a").unwrap_err().kind, ErrorKind::NotAMapping);
        assert_eq!(parse_rule("").unwrap_err().kind, ErrorKind::NotAMapping);
        assert_eq!(
            parse_rule("title: t\nlogsource: {}\n").unwrap_err().kind,
            ErrorKind::Missing("detection")
        );
        assert_eq!(
            parse_rule("title: t\nlogsource: {}\ndetection: {sel: {a: 1}}\n")
                .unwrap_err()
                .kind,
            ErrorKind::Missing("detection.condition")
        );
        assert_eq!(
            parse_rule("title: a\n---\ntitle: b\n").unwrap_err().kind,
            ErrorKind::MultipleDocuments(2)
        );
        let correlation = "title: c\nid: x\ncorrelation:\n  type: event_count\n  rules: [a]\n";
        let e = parse_rule(correlation).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Correlation("event_count".to_owned()));
        assert_eq!(e.rule_id.as_deref(), Some("x"));
        assert_eq!(
            parse_rule("title: f\nfilter: {}\n").unwrap_err().kind,
            ErrorKind::Filter
        );
        assert!(matches!(
            parse_rule("title: t\nlevel: severe\nlogsource: {}\ndetection: {}\n")
                .unwrap_err()
                .kind,
            ErrorKind::Invalid { .. }
        ));
    }
}
