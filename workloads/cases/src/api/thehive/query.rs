//! TheHive's Query API over lists read from the store: the `filter`, `sort`, `page` and
//! `count` operations, evaluated on the TheHive-shaped JSON of each item so that every
//! field a client can see can be filtered and sorted on.
//!
//! A `page` that comes first (before any filter or sort) is run by the store as its
//! LIMIT/OFFSET ([`take_leading_page`]), so paging through cases reads one page. Any
//! other query is evaluated in memory over at most [`MAX_SCAN`] items, and refused with
//! a 422 when more are visible, rather than read a whole store into memory. A page may
//! hold at most [`MAX_PAGE`] items.
//!
//! Hand-written because TheHive's filter language exists only in TheHive (Scala); no
//! crate implements it.

use std::cmp::Ordering;

use serde_json::Value;

use crate::api::error::ApiError;

/// What a query selects first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Cases,
    Alerts,
    /// `getCase` then `observables`: the case's observables.
    CaseObservables(String),
    /// `getCase` then `tasks`.
    CaseTasks(String),
    /// `getAlert` then `observables`.
    AlertObservables(String),
}

/// A parsed query: its source, then the operations to run on the list.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub source: Source,
    pub steps: Vec<Step>,
    pub count: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Filter(Value),
    Sort(Vec<(String, bool)>),
    Page { from: usize, to: usize },
}

/// The most items one `page` may ask for, as for the Kastell lists.
pub const MAX_PAGE: usize = crate::api::MAX_LIMIT as usize;

/// The most items a query that the store cannot page is evaluated over.
pub const MAX_SCAN: usize = 10_000;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::invalid_body(message)
}

/// Reads the operation list of a query body.
pub fn parse(operations: &[Value]) -> Result<Query, ApiError> {
    let name = |op: &Value| {
        op.get("_name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| bad("every query operation needs a _name"))
    };
    let Some((first, mut rest)) = operations.split_first() else {
        return Err(bad("the query is empty"));
    };
    let id = || {
        first
            .get("idOrName")
            .map(|id| match id {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .ok_or_else(|| bad("getCase and getAlert need idOrName"))
    };
    let start = name(first)?;
    let traversal = match rest.first() {
        Some(op) if start.starts_with("get") => {
            rest = &rest[1..];
            Some(name(op)?)
        }
        _ => None,
    };
    let source = match (start.as_str(), traversal.as_deref()) {
        ("listCase", _) => Source::Cases,
        ("listAlert", _) => Source::Alerts,
        ("getCase", Some("observables")) => Source::CaseObservables(id()?),
        ("getCase", Some("tasks")) => Source::CaseTasks(id()?),
        ("getAlert", Some("observables")) => Source::AlertObservables(id()?),
        (other, traversal) => {
            return Err(bad(format!(
                "unsupported query start {other:?}{}: supported are listCase, listAlert, \
                 getCase then observables or tasks, getAlert then observables",
                traversal
                    .map(|t| format!(" then {t:?}"))
                    .unwrap_or_default()
            )))
        }
    };
    let mut steps = Vec::new();
    let mut count = false;
    for (index, op) in rest.iter().enumerate() {
        if count {
            return Err(bad("count must be the last operation"));
        }
        match name(op)?.as_str() {
            "filter" => {
                let mut filter = op.clone();
                if let Some(fields) = filter.as_object_mut() {
                    fields.remove("_name");
                }
                check_filter(&filter)?;
                steps.push(Step::Filter(filter));
            }
            "sort" => steps.push(Step::Sort(sort_fields(op)?)),
            "page" => {
                let bound = |key: &str| {
                    op.get(key)
                        .and_then(Value::as_u64)
                        .map(|n| n as usize)
                        .ok_or_else(|| bad(format!("page needs a non-negative {key}")))
                };
                let (from, to) = (bound("from")?, bound("to")?);
                if to < from {
                    return Err(bad("page to must not be below from"));
                }
                if to - from > MAX_PAGE {
                    return Err(bad(format!(
                        "a page may hold at most {MAX_PAGE} items, not {}",
                        to - from
                    )));
                }
                steps.push(Step::Page { from, to });
            }
            "count" => count = true,
            other => {
                return Err(bad(format!(
                    "unsupported query operation {other:?} at position {}: supported are \
                     filter, sort, page and count",
                    index + 2
                )))
            }
        }
    }
    Ok(Query {
        source,
        steps,
        count,
    })
}

fn sort_fields(op: &Value) -> Result<Vec<(String, bool)>, ApiError> {
    let fields = op
        .get("_fields")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("sort needs _fields, a list of {field: asc|desc}"))?;
    let mut out = Vec::new();
    for field in fields {
        let object = field
            .as_object()
            .filter(|o| o.len() == 1)
            .ok_or_else(|| bad("each sort field is one {field: asc|desc}"))?;
        for (name, order) in object {
            let ascending = match order.as_str() {
                Some("asc") => true,
                Some("desc") => false,
                _ => return Err(bad(format!("sort order of {name} must be asc or desc"))),
            };
            out.push((name.clone(), ascending));
        }
    }
    Ok(out)
}

const COMPARISONS: &[&str] = &[
    "_eq",
    "_ne",
    "_lt",
    "_gt",
    "_lte",
    "_gte",
    "_startsWith",
    "_endsWith",
    "_like",
    "_match",
];

/// Refuses an operator this evaluator does not know, before anything is read.
fn check_filter(filter: &Value) -> Result<(), ApiError> {
    let object = filter
        .as_object()
        .ok_or_else(|| bad("a filter is a JSON object"))?;
    for (key, value) in object {
        match key.as_str() {
            "_and" | "_or" => {
                let items = value
                    .as_array()
                    .ok_or_else(|| bad(format!("{key} takes a list of filters")))?;
                items.iter().try_for_each(check_filter)?;
            }
            "_not" => check_filter(value)?,
            "_in" | "_between" | "_id" | "_contains" | "_has" => {}
            op if COMPARISONS.contains(&op) => {
                if value.get("_field").and_then(Value::as_str).is_none() {
                    return Err(bad(format!("{op} needs a _field")));
                }
            }
            // TheHive also takes the shorthand {"field": value} for equality.
            field if !field.starts_with('_') || field == "_id" => {}
            other => return Err(bad(format!("unsupported filter operator {other:?}"))),
        }
    }
    Ok(())
}

/// Removes a `page` that comes before any filter or sort and returns its `(offset,
/// limit)` for the store to run: on the store's own order (the one the items would have
/// in memory) the page selects the same items.
pub fn take_leading_page(query: &mut Query) -> Option<(usize, usize)> {
    match query.steps.first() {
        Some(&Step::Page { from, to }) => {
            query.steps.remove(0);
            Some((from, to - from))
        }
        _ => None,
    }
}

/// The 422 of a query over more than [`MAX_SCAN`] items the store could not page.
pub fn too_wide(what: &str) -> ApiError {
    bad(format!(
        "this query is evaluated in memory and more than {MAX_SCAN} {what} are visible to \
         you: start it with a page ({{\"_name\": \"page\", \"from\": 0, \"to\": 100}} before \
         any filter or sort), which the store runs, and filter or sort within pages"
    ))
}

/// Runs the steps on `items` (TheHive-shaped objects); the answer is the list, or its
/// length for a `count` query.
pub fn run(query: &Query, mut items: Vec<Value>) -> Value {
    for step in &query.steps {
        match step {
            Step::Filter(filter) => items.retain(|item| matches(filter, item)),
            Step::Sort(fields) => items.sort_by(|a, b| {
                for (field, ascending) in fields {
                    let order = compare(&a[field.as_str()], &b[field.as_str()]);
                    let order = if *ascending { order } else { order.reverse() };
                    if order != Ordering::Equal {
                        return order;
                    }
                }
                Ordering::Equal
            }),
            Step::Page { from, to } => {
                let end = (*to).min(items.len());
                let start = (*from).min(end);
                items = items.drain(start..end).collect();
            }
        }
    }
    if query.count {
        Value::from(items.len())
    } else {
        Value::Array(items)
    }
}

/// Whether `item` passes `filter`; every key of the filter object must hold.
pub fn matches(filter: &Value, item: &Value) -> bool {
    let Some(object) = filter.as_object() else {
        return false;
    };
    object.iter().all(|(key, value)| match key.as_str() {
        "_and" => value
            .as_array()
            .is_some_and(|all| all.iter().all(|f| matches(f, item))),
        "_or" => value
            .as_array()
            .is_some_and(|any| any.iter().any(|f| matches(f, item))),
        "_not" => !matches(value, item),
        "_id" => equals(&item["_id"], value),
        "_contains" | "_has" => {
            let field = value
                .as_str()
                .or_else(|| value.get("_field").and_then(Value::as_str));
            field.is_some_and(|f| !item[f].is_null())
        }
        "_in" => {
            let field = value.get("_field").and_then(Value::as_str).unwrap_or("");
            value
                .get("_values")
                .and_then(Value::as_array)
                .is_some_and(|values| values.iter().any(|v| equals(&item[field], v)))
        }
        "_between" => {
            let field = value.get("_field").and_then(Value::as_str).unwrap_or("");
            let actual = &item[field];
            compare(actual, &value["_from"]) != Ordering::Less
                && compare(actual, &value["_to"]) == Ordering::Less
        }
        op if COMPARISONS.contains(&op) => {
            let field = value.get("_field").and_then(Value::as_str).unwrap_or("");
            comparison(op, &item[field], &value["_value"])
        }
        field => equals(&item[field], value),
    })
}

fn comparison(op: &str, actual: &Value, expected: &Value) -> bool {
    let text = |v: &Value| v.as_str().map(str::to_lowercase);
    match op {
        "_eq" => equals(actual, expected),
        "_ne" => !equals(actual, expected),
        "_lt" => comparable(actual, expected) && compare(actual, expected) == Ordering::Less,
        "_gt" => comparable(actual, expected) && compare(actual, expected) == Ordering::Greater,
        "_lte" => comparable(actual, expected) && compare(actual, expected) != Ordering::Greater,
        "_gte" => comparable(actual, expected) && compare(actual, expected) != Ordering::Less,
        "_startsWith" => any_text(actual, |a| {
            text(expected).is_some_and(|e| a.to_lowercase().starts_with(&e))
        }),
        "_endsWith" => any_text(actual, |a| {
            text(expected).is_some_and(|e| a.to_lowercase().ends_with(&e))
        }),
        // TheHive's `_like` and `_match` are full-text; a case-insensitive substring
        // (`_like`) and a whole-word match (`_match`) are their closest plain meaning.
        "_like" => any_text(actual, |a| {
            text(expected).is_some_and(|e| a.to_lowercase().contains(&e))
        }),
        "_match" => any_text(actual, |a| {
            text(expected).is_some_and(|e| {
                a.to_lowercase()
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|word| word == e)
            })
        }),
        _ => false,
    }
}

/// A text field, or any text of a list field (tags), passes `test`.
fn any_text(actual: &Value, test: impl Fn(&str) -> bool) -> bool {
    match actual {
        Value::String(s) => test(s),
        Value::Array(items) => items.iter().filter_map(Value::as_str).any(test),
        _ => false,
    }
}

/// Equality as TheHive's filters mean it: a list field equals a value it contains;
/// numbers compare by value.
fn equals(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Array(items), _) if !expected.is_array() => {
            items.iter().any(|item| equals(item, expected))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => actual == expected,
    }
}

fn comparable(a: &Value, b: &Value) -> bool {
    matches!(
        (a, b),
        (Value::Number(_), Value::Number(_)) | (Value::String(_), Value::String(_))
    )
}

/// Numbers by value, texts by bytes, absent values first.
fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cases() -> Vec<Value> {
        vec![
            json!({"_id": "~1", "title": "IcedID beacon", "status": "New", "severity": 3, "tags": ["icedid"], "_createdAt": 30}),
            json!({"_id": "~2", "title": "ssh brute force", "status": "TruePositive", "severity": 2, "tags": [], "_createdAt": 10}),
            json!({"_id": "~3", "title": "OpenSSL demo CA", "status": "InProgress", "severity": 1, "tags": ["tls"], "_createdAt": 20}),
        ]
    }

    fn ids(answer: &Value) -> Vec<&str> {
        answer
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["_id"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn a_leading_page_goes_to_the_store_and_pages_are_capped() {
        let mut query = parse(&[
            json!({"_name": "listCase"}),
            json!({"_name": "page", "from": 10, "to": 30}),
            json!({"_name": "sort", "_fields": [{"title": "asc"}]}),
        ])
        .unwrap();
        assert_eq!(take_leading_page(&mut query), Some((10, 20)));
        assert_eq!(query.steps.len(), 1, "the sort stays");
        let mut sorted_first = parse(&[
            json!({"_name": "listCase"}),
            json!({"_name": "sort", "_fields": [{"title": "asc"}]}),
            json!({"_name": "page", "from": 0, "to": 10}),
        ])
        .unwrap();
        assert_eq!(take_leading_page(&mut sorted_first), None);
        let huge = parse(&[
            json!({"_name": "listAlert"}),
            json!({"_name": "page", "from": 0, "to": 1_000_000}),
        ]);
        assert!(huge.unwrap_err().message.contains("at most 1000"));
    }

    #[test]
    fn open_cases_sorted_and_paged() {
        let query = parse(&[
            json!({"_name": "listCase"}),
            json!({"_name": "filter", "_in": {"_field": "status", "_values": ["New", "InProgress"]}}),
            json!({"_name": "sort", "_fields": [{"_createdAt": "desc"}]}),
            json!({"_name": "page", "from": 0, "to": 1}),
        ])
        .unwrap();
        assert_eq!(query.source, Source::Cases);
        assert_eq!(ids(&run(&query, cases())), ["~1"]);
    }

    #[test]
    fn filters_combine_and_compare() {
        let filter = json!({"_and": [
            {"_gte": {"_field": "severity", "_value": 2}},
            {"_not": {"_eq": {"_field": "status", "_value": "TruePositive"}}},
        ]});
        let kept: Vec<_> = cases()
            .into_iter()
            .filter(|c| matches(&filter, c))
            .collect();
        assert_eq!(ids(&Value::Array(kept)), ["~1"]);
        assert!(matches(
            &json!({"_eq": {"_field": "tags", "_value": "tls"}}),
            &cases()[2]
        ));
        assert!(matches(
            &json!({"_like": {"_field": "title", "_value": "brute"}}),
            &cases()[1]
        ));
        assert!(matches(
            &json!({"_match": {"_field": "title", "_value": "ssh"}}),
            &cases()[1]
        ));
        assert!(!matches(
            &json!({"_match": {"_field": "title", "_value": "ss"}}),
            &cases()[1]
        ));
        assert!(matches(
            &json!({"_between": {"_field": "_createdAt", "_from": 10, "_to": 21}}),
            &cases()[2]
        ));
        assert!(matches(&json!({"status": "New"}), &cases()[0]));
    }

    #[test]
    fn count_answers_a_number() {
        let query = parse(&[
            json!({"_name": "listCase"}),
            json!({"_name": "filter", "_ne": {"_field": "status", "_value": "New"}}),
            json!({"_name": "count"}),
        ])
        .unwrap();
        assert_eq!(run(&query, cases()), json!(2));
    }

    #[test]
    fn unsupported_operations_are_refused_with_a_reason() {
        let err = parse(&[json!({"_name": "listObservable"})]).unwrap_err();
        assert!(err.message.contains("listCase"), "{}", err.message);
        let err = parse(&[
            json!({"_name": "getCase", "idOrName": "~1"}),
            json!({"_name": "pages"}),
        ])
        .unwrap_err();
        assert!(err.message.contains("pages"), "{}", err.message);
        let query = parse(&[
            json!({"_name": "getCase", "idOrName": 7}),
            json!({"_name": "observables"}),
            json!({"_name": "filter", "_eq": {"_field": "data", "_value": "67.205.184.237"}}),
        ])
        .unwrap();
        assert_eq!(query.source, Source::CaseObservables("7".into()));
        assert_eq!(query.steps.len(), 1);
        let err = parse(&[
            json!({"_name": "listCase"}),
            json!({"_name": "observables"}),
        ])
        .unwrap_err();
        assert!(err.message.contains("observables"));
        let err = parse(&[
            json!({"_name": "listCase"}),
            json!({"_name": "filter", "_regex": {}}),
        ])
        .unwrap_err();
        assert!(err.message.contains("_regex"));
        assert!(parse(&[]).is_err());
    }
}
