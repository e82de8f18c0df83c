//! The template engine for playbook text: `{{ alert.rule.title }}` in messages, header
//! values and webhook bodies, rendered over the triggering alert and its case.
//!
//! It is MiniJinja (Jinja2 syntax) locked down for text that a playbook author writes
//! and an attacker partly fills: there is no loader, so `include`/`import`/`extends`
//! find nothing; nothing is HTML-escaped (the output is not HTML); every rendering runs
//! on a fixed amount of fuel, so a loop over a large alert field ends in an error
//! instead of stalling the stage; and values from the alert are data, never evaluated
//! as templates themselves. A path that does not exist (`alert.events.0.source.ip` on
//! an event without a source) renders as an empty string, as does a JSON `null`,
//! because alerts from different sensors carry different fields and a notification
//! with a blank is more useful than none. `{{ x | default("unknown", true) }}` fills
//! blanks (missing and null alike).

use std::sync::LazyLock;

use minijinja::value::{Serde, ValueKind};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::Value;

/// The work one rendering may do (roughly one unit per instruction). Playbook
/// templates are a few lookups; this leaves room for a short loop and no more.
const FUEL: u64 = 50_000;

/// Nesting depth of blocks and expressions a template may have.
const RECURSION_LIMIT: usize = 64;

/// A template failed to parse or to render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {source_text:?}: {reason}")]
pub struct TemplateError {
    /// The template's text, cut to 120 characters.
    pub source_text: String,
    pub reason: String,
}

impl TemplateError {
    fn new(source: &str, error: &minijinja::Error) -> Self {
        let mut reason = error.to_string();
        let mut cause = std::error::Error::source(error);
        while let Some(inner) = cause {
            reason.push_str(": ");
            reason.push_str(&inner.to_string());
            cause = inner.source();
        }
        TemplateError {
            source_text: source.chars().take(120).collect(),
            reason,
        }
    }

    /// The same error, saying where in a JSON document the template was.
    fn at(mut self, pointer: &str) -> Self {
        self.reason = format!("at {pointer}: {}", self.reason);
        self
    }
}

fn environment<'s>() -> Environment<'s> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_formatter(|out, state, value| {
        if value.is_undefined() || value.is_none() {
            return Ok(());
        }
        // JSON spelling rather than Python's `True`/`False`: the data came as JSON and
        // often goes back out as JSON.
        if value.kind() == ValueKind::Bool {
            return Ok(out.write_str(if value.is_true() { "true" } else { "false" })?);
        }
        minijinja::escape_formatter(out, state, value)
    });
    env
}

static RENDER_ENV: LazyLock<Environment<'static>> = LazyLock::new(environment);

/// A template that parsed; rendering it can still fail (out of fuel, a filter error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
}

impl Template {
    /// Checks the syntax of `source`.
    ///
    /// # Errors
    /// The syntax error, with its position, when `source` is not a valid template.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let env = environment();
        env.template_from_str(source)
            .map_err(|e| TemplateError::new(source, &e))?;
        Ok(Template {
            source: source.to_owned(),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the template over `context` (a JSON object whose keys are the template's
    /// variables).
    ///
    /// # Errors
    /// When rendering runs out of fuel or a filter or test fails.
    pub fn render(&self, context: &Value) -> Result<String, TemplateError> {
        // Re-parsing on every rendering keeps the environment free of borrowed sources;
        // actions are rare enough that the microseconds do not matter.
        RENDER_ENV
            .render_str(&self.source, Serde(context))
            .map_err(|e| TemplateError::new(&self.source, &e))
    }
}

/// A JSON document whose string values are templates. Keys, numbers, booleans and
/// nulls are kept as written, so the document's shape never depends on alert data.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonTemplate {
    document: Value,
}

impl JsonTemplate {
    /// Checks every string value of `document` as a template.
    ///
    /// # Errors
    /// The first string that is not a valid template, with its JSON pointer.
    pub fn parse(document: &Value) -> Result<Self, TemplateError> {
        check_strings(document, &mut String::new())?;
        Ok(JsonTemplate {
            document: document.clone(),
        })
    }

    /// The document with each string value rendered over `context`.
    ///
    /// # Errors
    /// The first string whose rendering failed, with its JSON pointer.
    pub fn render(&self, context: &Value) -> Result<Value, TemplateError> {
        render_strings(&self.document, context, &mut String::new())
    }
}

fn check_strings(value: &Value, pointer: &mut String) -> Result<(), TemplateError> {
    walk(value, pointer, &mut |text, pointer| {
        Template::parse(text).map(drop).map_err(|e| e.at(pointer))
    })
}

fn render_strings(
    value: &Value,
    context: &Value,
    pointer: &mut String,
) -> Result<Value, TemplateError> {
    Ok(match value {
        Value::String(text) => Value::String(
            Template {
                source: text.clone(),
            }
            .render(context)
            .map_err(|e| e.at(pointer_or_root(pointer)))?,
        ),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = push_segment(pointer, &i.to_string());
                out.push(render_strings(item, context, pointer)?);
                pointer.truncate(len);
            }
            Value::Array(out)
        }
        Value::Object(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (key, item) in map {
                let len = push_segment(pointer, key);
                out.insert(key.clone(), render_strings(item, context, pointer)?);
                pointer.truncate(len);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

fn walk(
    value: &Value,
    pointer: &mut String,
    visit: &mut dyn FnMut(&str, &str) -> Result<(), TemplateError>,
) -> Result<(), TemplateError> {
    match value {
        Value::String(text) => visit(text, pointer_or_root(pointer)),
        Value::Array(items) => items.iter().enumerate().try_for_each(|(i, item)| {
            let len = push_segment(pointer, &i.to_string());
            let result = walk(item, pointer, visit);
            pointer.truncate(len);
            result
        }),
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            let len = push_segment(pointer, key);
            let result = walk(item, pointer, visit);
            pointer.truncate(len);
            result
        }),
        _ => Ok(()),
    }
}

/// Appends an RFC 6901 segment and returns the length to truncate back to.
fn push_segment(pointer: &mut String, segment: &str) -> usize {
    let len = pointer.len();
    pointer.push('/');
    pointer.push_str(&segment.replace('~', "~0").replace('/', "~1"));
    len
}

fn pointer_or_root(pointer: &str) -> &str {
    if pointer.is_empty() {
        "/"
    } else {
        pointer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context() -> Value {
        json!({
            "alert": {
                "id": "a1",
                "rule": {"title": "sshd brute force", "level": "high", "tags": ["attack.t1110"]},
                "events": [
                    {"@timestamp": "2022-05-11T10:29:19.905Z", "source": {"ip": "172.17.1.1"}},
                    {"source": {"ip": "10.0.0.2"}}
                ],
                "host": null,
                "count": 3,
                "blocked": false
            },
            "case": {"id": 7},
            "playbook": "soc/notify",
            "step": "log"
        })
    }

    fn render(source: &str) -> Result<String, TemplateError> {
        Template::parse(source)?.render(&context())
    }

    #[test]
    fn substitutes_nested_paths_and_array_indexes() {
        assert_eq!(
            render("{{ alert.rule.title }} from {{ alert.events.0.source.ip }}").unwrap(),
            "sshd brute force from 172.17.1.1"
        );
        assert_eq!(
            render("{{ alert.events[1].source.ip }}").unwrap(),
            "10.0.0.2"
        );
        assert_eq!(
            render("{{ alert.events.0[\"@timestamp\"] }}").unwrap(),
            "2022-05-11T10:29:19.905Z"
        );
        assert_eq!(
            render("case {{case.id}} via {{ playbook }}").unwrap(),
            "case 7 via soc/notify"
        );
    }

    #[test]
    fn renders_values_in_their_string_form() {
        assert_eq!(
            render("{{ alert.count }} {{ alert.blocked }}").unwrap(),
            "3 false"
        );
        assert_eq!(
            render("{{ alert.rule.tags | join(',') }}").unwrap(),
            "attack.t1110"
        );
        assert_eq!(
            render("{{ alert.rule.tags | tojson }}").unwrap(),
            "[\"attack.t1110\"]"
        );
    }

    #[test]
    fn missing_paths_and_nulls_render_empty() {
        assert_eq!(render("[{{ alert.nothing }}]").unwrap(), "[]");
        assert_eq!(render("[{{ alert.nothing.deeper.still }}]").unwrap(), "[]");
        assert_eq!(render("[{{ alert.events.5.source.ip }}]").unwrap(), "[]");
        assert_eq!(render("[{{ alert.host }}]").unwrap(), "[]");
        assert_eq!(
            render("{{ alert.nothing | default('unknown') }}").unwrap(),
            "unknown"
        );
        assert_eq!(
            render("{{ alert.host | default('unknown', true) }}").unwrap(),
            "unknown"
        );
    }

    #[test]
    fn text_without_markers_is_kept_verbatim() {
        assert_eq!(
            render("plain } text { here").unwrap(),
            "plain } text { here"
        );
        assert_eq!(render("").unwrap(), "");
    }

    #[test]
    fn syntax_errors_are_reported_at_parse_time() {
        for bad in [
            "{{ alert.rule.title",
            "{{ }}",
            "{% if %}",
            "{{ alert..id }}",
        ] {
            let err = Template::parse(bad).unwrap_err();
            assert_eq!(err.source_text, bad);
            assert!(!err.reason.is_empty(), "{bad}: {err}");
        }
        // A literal "{{" is written as an expression.
        assert_eq!(render("{{ '{{' }}").unwrap(), "{{");
    }

    #[test]
    fn alert_data_is_never_evaluated_as_a_template() {
        let ctx = json!({"alert": {"user": "{{ 7 * 7 }}{% for x in range(99999) %}x{% endfor %}"}});
        let out = Template::parse("{{ alert.user }}")
            .unwrap()
            .render(&ctx)
            .unwrap();
        assert_eq!(out, "{{ 7 * 7 }}{% for x in range(99999) %}x{% endfor %}");
    }

    #[test]
    fn html_is_not_escaped() {
        let ctx = json!({"alert": {"url": "/a?b=1&c=<x>"}});
        let out = Template::parse("{{ alert.url }}")
            .unwrap()
            .render(&ctx)
            .unwrap();
        assert_eq!(out, "/a?b=1&c=<x>");
    }

    #[test]
    fn nothing_can_be_loaded_and_runaway_loops_run_out_of_fuel() {
        for statement in [
            "{% include 'x' %}",
            "{% import 'x' as y %}",
            "{% extends 'x' %}",
        ] {
            let err = Template::parse(statement).unwrap_err();
            assert!(err.reason.contains("unknown statement"), "{err}");
        }
        let busy = Template::parse(
            "{% for a in range(1000) %}{% for b in range(1000) %}.{% endfor %}{% endfor %}",
        )
        .unwrap();
        let err = busy.render(&context()).unwrap_err();
        assert!(err.reason.contains("fuel"), "{err}");
    }

    #[test]
    fn json_templates_render_only_string_values() {
        let body = json!({
            "text": "{{ alert.rule.title }}",
            "{{ not.a.key }}": 1,
            "tags": ["{{ alert.rule.level }}", true, null, 2.5],
            "nested": {"ip": "{{ alert.events.0.source.ip }}"}
        });
        let out = JsonTemplate::parse(&body)
            .unwrap()
            .render(&context())
            .unwrap();
        assert_eq!(
            out,
            json!({
                "text": "sshd brute force",
                "{{ not.a.key }}": 1,
                "tags": ["high", true, null, 2.5],
                "nested": {"ip": "172.17.1.1"}
            })
        );
    }

    #[test]
    fn json_template_errors_name_the_pointer() {
        let body = json!({"a": [{"b/c": "{{ oops"}]});
        let err = JsonTemplate::parse(&body).unwrap_err();
        assert!(err.reason.starts_with("at /a/0/b~1c: "), "{err}");
    }
}
