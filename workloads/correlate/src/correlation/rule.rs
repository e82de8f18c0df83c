//! The correlation document (`correlation:` section) read into a typed
//! [`CorrelationRule`]: type, referenced rules, group-by, timespan, condition, aliases and
//! `generate`, checked against the specification's requirements per type.

use std::collections::BTreeMap;
use std::fmt;

use kastell_core::Level;
use serde_yaml::{Mapping, Value};

use crate::condition::Condition;
use crate::error::ErrorKind;

/// A Sigma correlation rule.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationRule {
    pub title: String,
    pub id: Option<String>,
    pub name: Option<String>,
    pub author: Option<String>,
    pub level: Option<Level>,
    pub tags: Vec<String>,
    pub kind: CorrelationType,
    /// The rules (ids or names) whose matches are correlated; may be correlations.
    pub rules: Vec<String>,
    /// Fields (or aliases) whose values must be equal across the correlated events.
    pub group_by: Vec<String>,
    /// The sliding window, in milliseconds of event time.
    pub timespan_ms: i64,
    pub condition: CountCondition,
    /// `temporal` with a string condition (SEP #198, as pySigma reads it): a boolean
    /// expression over the referenced rules' names, e.g. `failed and not success`; each
    /// name is true when that rule fired in the window. `condition` then has no
    /// comparisons.
    pub expression: Option<Condition>,
    /// value_* types: the field(s) aggregated; several are one composite value.
    pub fields: Vec<String>,
    /// value_percentile: which percentile (0-100).
    pub percentile: Option<f64>,
    /// `aliases`: alias name → (rule id or name → that rule's field).
    pub aliases: BTreeMap<String, BTreeMap<String, String>>,
    /// `generate: true`: the referenced rules also raise their own alerts.
    pub generate: bool,
}

impl CorrelationRule {
    /// The id alerts carry: `id`, else `name`.
    pub fn reference(&self) -> Option<&str> {
        self.id.as_deref().or(self.name.as_deref())
    }
}

/// The correlation types of Sigma 2.1, plus pySigma's `value_median`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorrelationType {
    EventCount,
    ValueCount,
    Temporal,
    TemporalOrdered,
    ValueSum,
    ValueAvg,
    ValuePercentile,
    ValueMedian,
}

impl CorrelationType {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "event_count" => CorrelationType::EventCount,
            "value_count" => CorrelationType::ValueCount,
            "temporal" => CorrelationType::Temporal,
            "temporal_ordered" => CorrelationType::TemporalOrdered,
            "value_sum" => CorrelationType::ValueSum,
            "value_avg" => CorrelationType::ValueAvg,
            "value_percentile" => CorrelationType::ValuePercentile,
            "value_median" => CorrelationType::ValueMedian,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CorrelationType::EventCount => "event_count",
            CorrelationType::ValueCount => "value_count",
            CorrelationType::Temporal => "temporal",
            CorrelationType::TemporalOrdered => "temporal_ordered",
            CorrelationType::ValueSum => "value_sum",
            CorrelationType::ValueAvg => "value_avg",
            CorrelationType::ValuePercentile => "value_percentile",
            CorrelationType::ValueMedian => "value_median",
        }
    }

    /// Whether the type aggregates a field named in `condition.field`.
    pub fn needs_field(self) -> bool {
        !matches!(
            self,
            CorrelationType::EventCount
                | CorrelationType::Temporal
                | CorrelationType::TemporalOrdered
        )
    }

    fn is_temporal(self) -> bool {
        matches!(
            self,
            CorrelationType::Temporal | CorrelationType::TemporalOrdered
        )
    }
}

impl fmt::Display for CorrelationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `gt`, `gte`, `lt`, `lte`, `eq`, `neq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
    Neq,
}

/// The condition map: every comparison holds (several make a range).
#[derive(Debug, Clone, PartialEq)]
pub struct CountCondition {
    pub comparisons: Vec<(CompareOp, f64)>,
}

impl CountCondition {
    pub fn holds(&self, value: f64) -> bool {
        self.comparisons.iter().all(|&(op, bound)| match op {
            CompareOp::Gt => value > bound,
            CompareOp::Gte => value >= bound,
            CompareOp::Lt => value < bound,
            CompareOp::Lte => value <= bound,
            CompareOp::Eq => value == bound,
            CompareOp::Neq => value != bound,
        })
    }

    /// Whether the condition can only be judged once the window is complete: with an upper
    /// bound or an equality (`lt`, `lte`, `eq`, `neq`), a window that holds now may stop
    /// holding when another event arrives, so such windows are evaluated when event time
    /// passes their end. Conditions of only `gt`/`gte` are judged as each input arrives.
    pub fn closes_at_window_end(&self) -> bool {
        self.comparisons
            .iter()
            .any(|(op, _)| !matches!(op, CompareOp::Gt | CompareOp::Gte))
    }

    /// The smallest count that can satisfy every comparison, when there is an upper
    /// bound on it from `gt`/`gte`/`eq` (used to check a window can ever hold enough).
    pub fn minimum(&self) -> f64 {
        self.comparisons
            .iter()
            .map(|&(op, bound)| match op {
                CompareOp::Gt => bound.floor() + 1.0,
                CompareOp::Gte | CompareOp::Eq => bound,
                _ => 0.0,
            })
            .fold(0.0, f64::max)
    }
}

/// Reads the correlation document `map` (which has a `correlation` key).
pub(crate) fn read_correlation(map: &Mapping) -> Result<CorrelationRule, ErrorKind> {
    let section = match map.get("correlation") {
        Some(Value::Mapping(section)) => section,
        _ => return Err(ErrorKind::invalid("correlation", "expected a mapping")),
    };
    let title = text(map, "title")?.ok_or(ErrorKind::Missing("title"))?;
    let type_text = text(section, "type")?.ok_or(ErrorKind::Missing("correlation.type"))?;
    let kind = CorrelationType::parse(&type_text).ok_or_else(|| {
        ErrorKind::invalid(
            "correlation.type",
            format!("unknown correlation type `{type_text}`"),
        )
    })?;
    let rules = strings(section, "rules", "correlation.rules")?;
    if rules.is_empty() {
        return Err(ErrorKind::Missing("correlation.rules"));
    }
    if kind.is_temporal() && rules.len() < 2 {
        return Err(ErrorKind::invalid(
            "correlation.rules",
            format!("`{kind}` correlates at least two rules"),
        ));
    }
    let group_by = strings(section, "group-by", "correlation.group-by")?;
    let timespan_text =
        text(section, "timespan")?.ok_or(ErrorKind::Missing("correlation.timespan"))?;
    let timespan_ms = parse_timespan(&timespan_text).ok_or_else(|| {
        ErrorKind::invalid(
            "correlation.timespan",
            format!("`{timespan_text}` is not a number followed by s, m, h, d, w, M or y"),
        )
    })?;
    let (condition, fields, percentile, expression) = match section.get("condition") {
        Some(Value::String(text)) => (
            CountCondition {
                comparisons: Vec::new(),
            },
            Vec::new(),
            None,
            Some(read_expression(text, kind, &rules)?),
        ),
        other => {
            let (condition, fields, percentile) = read_condition(other, kind, rules.len())?;
            (condition, fields, percentile, None)
        }
    };
    let level = match text(map, "level")? {
        Some(l) => Some(
            l.parse::<Level>()
                .map_err(|e| ErrorKind::invalid("level", e.to_string()))?,
        ),
        None => None,
    };
    let author = match map.get("author") {
        Some(Value::Sequence(_)) => Some(strings(map, "author", "author")?.join(", ")),
        _ => text(map, "author")?,
    };
    let generate = match map.get("generate").or_else(|| section.get("generate")) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ErrorKind::invalid("generate", "expected true or false")),
    };
    Ok(CorrelationRule {
        title,
        id: text(map, "id")?,
        name: text(map, "name")?,
        author,
        level,
        tags: strings(map, "tags", "tags")?,
        kind,
        rules,
        group_by,
        timespan_ms,
        condition,
        expression,
        fields,
        percentile,
        aliases: read_aliases(section.get("aliases"))?,
        generate,
    })
}

/// Reads a `temporal` correlation's string condition (SEP #198): the detection-condition
/// grammar over the referenced rules' names; every name and pattern must name one.
fn read_expression(
    text: &str,
    kind: CorrelationType,
    rules: &[String],
) -> Result<Condition, ErrorKind> {
    if kind != CorrelationType::Temporal {
        return Err(ErrorKind::invalid(
            "correlation.condition",
            format!("a boolean condition (SEP #198) is read for `temporal` only, not `{kind}`"),
        ));
    }
    let expression = crate::condition::parse(text)
        .map_err(|e| ErrorKind::invalid("correlation.condition", e.to_string()))?;
    check_names(&expression, rules)?;
    Ok(expression)
}

fn check_names(expression: &Condition, rules: &[String]) -> Result<(), ErrorKind> {
    let unknown = |what: String| {
        ErrorKind::invalid(
            "correlation.condition",
            format!(
                "{what} names none of the correlated rules ({})",
                rules.join(", ")
            ),
        )
    };
    match expression {
        Condition::Selection(name) if rules.contains(name) => Ok(()),
        Condition::Selection(name) => Err(unknown(format!("`{name}`"))),
        Condition::OneOf(target) | Condition::AllOf(target) => {
            if rules.iter().any(|r| target.matches(r)) {
                Ok(())
            } else {
                Err(unknown(format!("`{target}`")))
            }
        }
        Condition::Not(inner) => check_names(inner, rules),
        Condition::And(all) | Condition::Or(all) => {
            all.iter().try_for_each(|c| check_names(c, rules))
        }
    }
}

/// Whether a `temporal` expression holds when `fired(slot)` says which of `rules` fired.
pub(crate) fn expression_holds(
    expression: &Condition,
    rules: &[String],
    fired: &dyn Fn(usize) -> bool,
) -> bool {
    let named = |name: &str| {
        rules
            .iter()
            .enumerate()
            .any(|(slot, rule)| rule == name && fired(slot))
    };
    match expression {
        Condition::Selection(name) => named(name),
        Condition::Not(inner) => !expression_holds(inner, rules, fired),
        Condition::And(all) => all.iter().all(|c| expression_holds(c, rules, fired)),
        Condition::Or(any) => any.iter().any(|c| expression_holds(c, rules, fired)),
        Condition::OneOf(target) => rules.iter().any(|r| target.matches(r) && named(r)),
        Condition::AllOf(target) => rules.iter().filter(|r| target.matches(r)).all(|r| named(r)),
    }
}

/// Whether an expression can stop holding when another rule fires (it negates one), so
/// that it must be judged when the window closes.
pub(crate) fn expression_negates(expression: &Condition) -> bool {
    match expression {
        Condition::Not(_) => true,
        Condition::And(all) | Condition::Or(all) => all.iter().any(expression_negates),
        _ => false,
    }
}

type ConditionParts = (CountCondition, Vec<String>, Option<f64>);

fn read_condition(
    value: Option<&Value>,
    kind: CorrelationType,
    rule_count: usize,
) -> Result<ConditionParts, ErrorKind> {
    let map = match value {
        None | Some(Value::Null) if kind.is_temporal() => {
            // The default (pySigma's): every referenced rule fires inside the window.
            let all = CountCondition {
                comparisons: vec![(CompareOp::Gte, rule_count as f64)],
            };
            return Ok((all, Vec::new(), None));
        }
        None | Some(Value::Null) => return Err(ErrorKind::Missing("correlation.condition")),
        Some(Value::Mapping(map)) => map,
        Some(_) => {
            return Err(ErrorKind::invalid(
                "correlation.condition",
                "expected a mapping such as {gte: 10}",
            ))
        }
    };
    let mut comparisons = Vec::new();
    let mut fields = Vec::new();
    let mut percentile = None;
    for (key, value) in map {
        let key = key.as_str().unwrap_or_default();
        let path = format!("correlation.condition.{key}");
        let op = match key {
            "gt" => CompareOp::Gt,
            "gte" => CompareOp::Gte,
            "lt" => CompareOp::Lt,
            "lte" => CompareOp::Lte,
            "eq" => CompareOp::Eq,
            "neq" => CompareOp::Neq,
            "field" => {
                fields = match value {
                    Value::String(s) => vec![s.clone()],
                    Value::Sequence(items) => items
                        .iter()
                        .map(|i| i.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| ErrorKind::invalid(&path, "expected field names"))?,
                    _ => return Err(ErrorKind::invalid(&path, "expected a field name")),
                };
                continue;
            }
            "percentile" => {
                let p = value
                    .as_f64()
                    .filter(|p| (0.0..=100.0).contains(p))
                    .ok_or_else(|| ErrorKind::invalid(&path, "expected a number from 0 to 100"))?;
                percentile = Some(p);
                continue;
            }
            other => {
                return Err(ErrorKind::invalid(
                    "correlation.condition",
                    format!("unknown condition key `{other}`"),
                ))
            }
        };
        let bound = value
            .as_f64()
            .ok_or_else(|| ErrorKind::invalid(&path, "expected a number"))?;
        comparisons.push((op, bound));
    }
    if comparisons.is_empty() {
        return Err(ErrorKind::invalid(
            "correlation.condition",
            "needs one of gt, gte, lt, lte, eq, neq",
        ));
    }
    if kind.needs_field() && fields.is_empty() {
        return Err(ErrorKind::Missing("correlation.condition.field"));
    }
    if !kind.needs_field() && !fields.is_empty() {
        return Err(ErrorKind::invalid(
            "correlation.condition.field",
            format!("`{kind}` takes no field"),
        ));
    }
    if percentile.is_some() && kind != CorrelationType::ValuePercentile {
        return Err(ErrorKind::invalid(
            "correlation.condition.percentile",
            "only `value_percentile` takes a percentile",
        ));
    }
    Ok((CountCondition { comparisons }, fields, percentile))
}

fn read_aliases(
    value: Option<&Value>,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, ErrorKind> {
    let mut aliases = BTreeMap::new();
    let map = match value {
        None | Some(Value::Null) => return Ok(aliases),
        Some(Value::Mapping(map)) => map,
        Some(_) => {
            return Err(ErrorKind::invalid(
                "correlation.aliases",
                "expected a mapping",
            ))
        }
    };
    for (alias, per_rule) in map {
        let alias = alias.as_str().unwrap_or_default().to_owned();
        let path = format!("correlation.aliases.{alias}");
        let Value::Mapping(per_rule) = per_rule else {
            return Err(ErrorKind::invalid(&path, "expected rule name: field"));
        };
        let mut fields = BTreeMap::new();
        for (rule, field) in per_rule {
            match (rule.as_str(), field.as_str()) {
                (Some(rule), Some(field)) => {
                    fields.insert(rule.to_owned(), field.to_owned());
                }
                _ => return Err(ErrorKind::invalid(&path, "expected rule name: field")),
            }
        }
        aliases.insert(alias, fields);
    }
    Ok(aliases)
}

/// `<int><unit>`: s, m, h, d as the specification lists, and pySigma's w, M (30 days)
/// and y (365 days).
pub fn parse_timespan(text: &str) -> Option<i64> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let number: i64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let seconds: i64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        'M' => 30 * 86_400,
        'y' => 365 * 86_400,
        _ => return None,
    };
    number
        .checked_mul(seconds)?
        .checked_mul(1_000)
        .filter(|ms| *ms > 0)
}

fn text(map: &Mapping, key: &str) -> Result<Option<String>, ErrorKind> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(ErrorKind::invalid(key, "expected a string")),
    }
}

fn strings(map: &Mapping, key: &str, path: &str) -> Result<Vec<String>, ErrorKind> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(ErrorKind::invalid(path, "expected a list of strings")),
            })
            .collect(),
        Some(_) => Err(ErrorKind::invalid(path, "expected a list of strings")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<CorrelationRule, ErrorKind> {
        let Value::Mapping(map) = serde_yaml::from_str::<Value>(text).unwrap() else {
            unreachable!()
        };
        read_correlation(&map)
    }

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("90m"), Some(90 * 60_000));
        assert_eq!(parse_timespan("1h"), Some(3_600_000));
        assert_eq!(parse_timespan("10s"), Some(10_000));
        assert_eq!(parse_timespan("1d"), Some(86_400_000));
        assert_eq!(parse_timespan("0s"), None);
        assert_eq!(parse_timespan("h"), None);
        assert_eq!(parse_timespan("5x"), None);
    }

    #[test]
    fn the_specification_value_count_example() {
        let rule = read(
            "title: Failed login\nid: 0e95725d-7320-415d-80f7-004da920fc12\ncorrelation:\n  \
             type: value_count\n  rules:\n    - 5638f7c0-ac70-491d-8465-2a65075e0d86\n  \
             group-by:\n    - ComputerName\n    - WorkstationName\n  timespan: 1d\n  \
             condition:\n    field: User\n    gte: 100\n",
        )
        .unwrap();
        assert_eq!(rule.kind, CorrelationType::ValueCount);
        assert_eq!(rule.group_by, ["ComputerName", "WorkstationName"]);
        assert_eq!(rule.fields, ["User"]);
        assert!(rule.condition.holds(100.0) && !rule.condition.holds(99.0));
    }

    #[test]
    fn ranges_defaults_and_errors() {
        let range = read(
            "title: r\ncorrelation:\n  type: event_count\n  rules: [a]\n  timespan: 1h\n  \
             condition: {gt: 100, lte: 200}\n",
        )
        .unwrap();
        assert!(!range.condition.holds(100.0));
        assert!(range.condition.holds(101.0) && range.condition.holds(200.0));
        assert!(!range.condition.holds(201.0));
        assert_eq!(range.condition.minimum(), 101.0);
        let temporal =
            read("title: t\ncorrelation:\n  type: temporal\n  rules: [a, b, c]\n  timespan: 5m\n")
                .unwrap();
        assert_eq!(temporal.condition.comparisons, [(CompareOp::Gte, 3.0)]);
        assert!(temporal.group_by.is_empty());
        for (bad, why) in [
            (
                "type: event_count\n  rules: [a]\n  timespan: 1h\n",
                "condition",
            ),
            (
                "type: value_sum\n  rules: [a]\n  timespan: 1h\n  condition: {gt: 1}\n",
                "field",
            ),
            (
                "type: nope\n  rules: [a]\n  timespan: 1h\n",
                "unknown correlation type",
            ),
            (
                "type: event_count\n  rules: [a]\n  timespan: 1q\n  condition: {gt: 1}\n",
                "timespan",
            ),
            (
                "type: temporal\n  rules: [a]\n  timespan: 1h\n",
                "at least two",
            ),
            (
                "type: event_count\n  rules: [a]\n  timespan: 1h\n  condition: {over: 1}\n",
                "over",
            ),
        ] {
            let e = read(&format!("title: x\ncorrelation:\n  {bad}")).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }
}
