//! The compile step: a [`SigmaRule`] and its logsource's field mapping turned into a
//! [`Detector`], with every modifier, value and condition checked.
//!
//! Anything the engine cannot evaluate is an error here, naming where in the rule it is;
//! nothing a rule asks for is silently dropped.

use std::cmp::Ordering;
use std::net::IpAddr;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder};
use ipnet::IpNet;
use regex::RegexBuilder;

use crate::condition::{Condition, Target};
use crate::error::ErrorKind;
use crate::logsource::Routing;
use crate::matcher::{
    Check, Detector, Expr, FieldCheck, FieldRef, FieldTest, Number, SelectionMatcher, TextMatcher,
    ValueMatcher, ValueTest,
};
use crate::modifier::Modifier;
use crate::rule::{Detection, FieldMatch, Selection, SigmaValue};
use crate::string::{Piece, SigmaString};

/// Upper bound on one compiled regex, so a hostile rule cannot exhaust memory. SigmaHQ's
/// largest (a `re` list of svchost flags) needs between 1 and 2 MiB.
const REGEX_SIZE_LIMIT: usize = 16 << 20;

/// Compiles a rule's detection for events read through `fields`.
pub(crate) fn compile_detection(
    detection: &Detection,
    fields: &Routing,
) -> Result<Detector, ErrorKind> {
    let selections = detection
        .selections
        .iter()
        .map(|(_, selection)| compile_selection(selection, fields))
        .collect::<Result<Vec<_>, _>>()?;
    let names: Vec<&str> = detection
        .selections
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    let mut conditions = detection
        .conditions
        .iter()
        .map(|c| resolve(c, &names))
        .collect::<Result<Vec<_>, _>>()?;
    let condition = if conditions.len() == 1 {
        conditions.pop().expect("one condition")
    } else {
        Expr::Or(conditions)
    };
    Ok(Detector {
        selections,
        condition,
    })
}

fn resolve(condition: &Condition, names: &[&str]) -> Result<Expr, ErrorKind> {
    Ok(match condition {
        Condition::Selection(name) => Expr::Selection(
            names
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| ErrorKind::UnknownIdentifier(name.clone()))?,
        ),
        Condition::Not(inner) => Expr::Not(Box::new(resolve(inner, names)?)),
        Condition::And(all) => Expr::And(
            all.iter()
                .map(|c| resolve(c, names))
                .collect::<Result<_, _>>()?,
        ),
        Condition::Or(any) => Expr::Or(
            any.iter()
                .map(|c| resolve(c, names))
                .collect::<Result<_, _>>()?,
        ),
        Condition::OneOf(target) => Expr::Or(expand(target, names)?),
        Condition::AllOf(target) => Expr::And(expand(target, names)?),
    })
}

fn expand(target: &Target, names: &[&str]) -> Result<Vec<Expr>, ErrorKind> {
    let matched: Vec<Expr> = names
        .iter()
        .enumerate()
        .filter(|(_, name)| target.matches(name))
        .map(|(i, _)| Expr::Selection(i))
        .collect();
    if matched.is_empty() {
        return Err(ErrorKind::EmptyPattern(target.to_string()));
    }
    Ok(matched)
}

fn compile_selection(
    selection: &Selection,
    fields: &Routing,
) -> Result<SelectionMatcher, ErrorKind> {
    let conjunction = |matches: &[FieldMatch]| {
        matches
            .iter()
            .map(|m| compile_field_match(m, fields))
            .collect::<Result<Vec<_>, _>>()
    };
    let any_of = match selection {
        Selection::Fields(matches) => vec![conjunction(matches)?],
        Selection::AnyOf(maps) => maps
            .iter()
            .map(|m| conjunction(m))
            .collect::<Result<_, _>>()?,
        Selection::Keywords(values) => {
            let keyword = FieldMatch {
                field: None,
                modifiers: Vec::new(),
                values: values.clone(),
                path: "keywords".to_owned(),
            };
            vec![vec![compile_field_match(&keyword, fields)?]]
        }
    };
    Ok(SelectionMatcher { any_of })
}

/// How the string values of one field match are to be compared.
#[derive(Debug, Default)]
struct Plan {
    /// `contains`, `startswith` or `endswith`, if any.
    position: Option<Modifier>,
    all: bool,
    cased: bool,
    exists: bool,
    cidr: bool,
    re: bool,
    re_flags: Vec<Modifier>,
    compare: Option<Modifier>,
}

fn plan(m: &FieldMatch) -> Result<Plan, ErrorKind> {
    let mut plan = Plan::default();
    let conflict = |a: Modifier, b: Modifier| {
        ErrorKind::invalid(
            &m.path,
            format!("modifiers `{a}` and `{b}` cannot be combined"),
        )
    };
    for &modifier in &m.modifiers {
        match modifier {
            Modifier::Contains | Modifier::StartsWith | Modifier::EndsWith => {
                if let Some(other) = plan.position {
                    return Err(conflict(other, modifier));
                }
                plan.position = Some(modifier);
            }
            Modifier::All => plan.all = true,
            Modifier::Cased => plan.cased = true,
            Modifier::Exists => plan.exists = true,
            Modifier::Cidr => plan.cidr = true,
            Modifier::Re => plan.re = true,
            Modifier::ReIgnoreCase | Modifier::ReMultiline | Modifier::ReDotAll => {
                plan.re_flags.push(modifier)
            }
            Modifier::Lt | Modifier::Lte | Modifier::Gt | Modifier::Gte => {
                if let Some(other) = plan.compare {
                    return Err(conflict(other, modifier));
                }
                plan.compare = Some(modifier);
            }
            Modifier::Neq
            | Modifier::Windash
            | Modifier::Base64
            | Modifier::Base64Offset
            | Modifier::Utf16Le
            | Modifier::Utf16Be
            | Modifier::Utf16
            | Modifier::Wide
            | Modifier::Minute
            | Modifier::Hour
            | Modifier::Day
            | Modifier::Week
            | Modifier::Month
            | Modifier::Year
            | Modifier::Expand
            | Modifier::FieldRef => {
                return Err(ErrorKind::UnsupportedModifier {
                    path: m.path.clone(),
                    modifier,
                })
            }
        }
    }
    if !plan.re_flags.is_empty() && !plan.re {
        return Err(ErrorKind::invalid(
            &m.path,
            format!("modifier `{}` is a flag of `re`", plan.re_flags[0]),
        ));
    }
    // Each of these decides how a value is read, so none combines with a string position.
    let exclusive = [
        (plan.exists, Modifier::Exists),
        (plan.cidr, Modifier::Cidr),
        (plan.re, Modifier::Re),
        (plan.compare.is_some(), plan.compare.unwrap_or(Modifier::Lt)),
    ];
    let set: Vec<Modifier> = exclusive
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, m)| *m)
        .collect();
    if let (Some(first), Some(second)) = (set.first(), set.get(1).copied().or(plan.position)) {
        return Err(conflict(*first, second));
    }
    if plan.exists && (plan.all || plan.cased) {
        return Err(ErrorKind::invalid(
            &m.path,
            "`exists` takes no other modifier",
        ));
    }
    Ok(plan)
}

fn compile_field_match(m: &FieldMatch, fields: &Routing) -> Result<Check, ErrorKind> {
    let plan = plan(m)?;

    if m.values.contains(&SigmaValue::Null) {
        if m.values.len() > 1 {
            return Err(ErrorKind::invalid(
                &m.path,
                "null cannot be part of a list of values; write it as its own selection",
            ));
        }
        if !m.modifiers.is_empty() {
            return Err(ErrorKind::invalid(&m.path, "null takes no modifiers"));
        }
    }

    let Some(name) = &m.field else {
        if plan.exists || m.values.contains(&SigmaValue::Null) {
            return Err(ErrorKind::invalid(
                &m.path,
                "keywords need a value to search for",
            ));
        }
        return Ok(Check::Keywords(value_test(m, &plan, true)?));
    };
    let resolved = fields.fields.resolve(name);
    if fields.strict && !resolved.mapped {
        return Err(ErrorKind::UnmappedField {
            path: m.path.clone(),
            field: name.clone(),
        });
    }
    let field = FieldRef {
        paths: resolved.paths,
        any: resolved.any,
    };

    let test = if plan.exists {
        match m.values.as_slice() {
            [SigmaValue::Bool(want)] => FieldTest::Exists(*want),
            _ => {
                return Err(ErrorKind::invalid(
                    &m.path,
                    "`exists` takes one value, true or false",
                ))
            }
        }
    } else if m.values == [SigmaValue::Null] {
        FieldTest::Null
    } else {
        FieldTest::Values(value_test(m, &plan, false)?)
    };
    Ok(Check::Field(FieldCheck { field, test }))
}

/// Compiles a value list. `keywords` makes plain strings substring searches, since a
/// keyword is searched for inside the event's values.
fn value_test(m: &FieldMatch, plan: &Plan, keywords: bool) -> Result<ValueTest, ErrorKind> {
    let mut matchers = Vec::with_capacity(m.values.len());
    let mut substrings = Vec::new();
    for (i, value) in m.values.iter().enumerate() {
        let at = || {
            if m.values.len() == 1 {
                m.path.clone()
            } else {
                format!("{}[{i}]", m.path)
            }
        };
        match value_matcher(value, plan, keywords, &at)? {
            Compiled::Ready(matcher) => matchers.push(matcher),
            // ANDed needles must each be found, so each keeps its own automaton.
            Compiled::Substring(needle) if plan.all => {
                let automaton = automaton(&[needle], plan.cased, &at)?;
                matchers.push(ValueMatcher::Text(TextMatcher::Contains(automaton)));
            }
            Compiled::Substring(needle) => substrings.push(needle),
        }
    }
    // An ORed list of substrings is one automaton: one pass over the text for all.
    if !substrings.is_empty() {
        let automaton = automaton(&substrings, plan.cased, &|| m.path.clone())?;
        matchers.push(ValueMatcher::Text(TextMatcher::Contains(automaton)));
    }
    Ok(ValueTest {
        matchers,
        all: plan.all,
    })
}

/// A compiled value, or a substring needle waiting to join its list's automaton.
enum Compiled {
    Ready(ValueMatcher),
    Substring(String),
}

fn value_matcher(
    value: &SigmaValue,
    plan: &Plan,
    keywords: bool,
    at: &dyn Fn() -> String,
) -> Result<Compiled, ErrorKind> {
    if plan.re {
        let SigmaValue::String(s) = value else {
            return Err(ErrorKind::invalid(at(), "`re` needs a string value"));
        };
        let regex = compile_regex(s.raw(), &plan.re_flags, at)?;
        return Ok(Compiled::Ready(ValueMatcher::Text(TextMatcher::Regex(
            regex,
        ))));
    }
    if plan.cidr {
        let SigmaValue::String(s) = value else {
            return Err(ErrorKind::invalid(
                at(),
                "`cidr` needs a network such as 10.0.0.0/8",
            ));
        };
        return parse_network(s.raw())
            .map(|net| Compiled::Ready(ValueMatcher::Cidr(net)))
            .ok_or_else(|| ErrorKind::invalid(at(), format!("`{}` is not a network", s.raw())));
    }
    if let Some(compare) = plan.compare {
        let bound = match value {
            SigmaValue::Integer(i) => *i as f64,
            SigmaValue::Float(f) => *f,
            SigmaValue::String(s) => s.raw().trim().parse().map_err(|_| {
                ErrorKind::invalid(at(), format!("`{compare}` needs a number, found `{s}`"))
            })?,
            _ => {
                return Err(ErrorKind::invalid(
                    at(),
                    format!("`{compare}` needs a number"),
                ))
            }
        };
        let (ordering, or_equal) = match compare {
            Modifier::Lt => (Ordering::Less, false),
            Modifier::Lte => (Ordering::Less, true),
            Modifier::Gt => (Ordering::Greater, false),
            _ => (Ordering::Greater, true),
        };
        return Ok(Compiled::Ready(ValueMatcher::Compare(
            ordering, or_equal, bound,
        )));
    }
    let textual = plan.position.is_some() || keywords || plan.cased;
    let mut text = match value {
        SigmaValue::String(s) => s.clone(),
        SigmaValue::Integer(i) if !textual => {
            return Ok(Compiled::Ready(ValueMatcher::Number(Number::Integer(*i))))
        }
        SigmaValue::Float(f) if !textual => {
            return Ok(Compiled::Ready(ValueMatcher::Number(Number::Float(*f))))
        }
        SigmaValue::Bool(b) if !textual => return Ok(Compiled::Ready(ValueMatcher::Bool(*b))),
        SigmaValue::Integer(i) => SigmaString::literal(&i.to_string()),
        SigmaValue::Float(f) => SigmaString::literal(&f.to_string()),
        SigmaValue::Bool(b) => SigmaString::literal(&b.to_string()),
        SigmaValue::Null => return Err(ErrorKind::invalid(at(), "null takes no modifiers")),
    };
    match plan.position {
        Some(Modifier::Contains) => {
            text.prepend_any_run();
            text.append_any_run();
        }
        Some(Modifier::StartsWith) => text.append_any_run(),
        Some(Modifier::EndsWith) => text.prepend_any_run(),
        _ if keywords => {
            text.prepend_any_run();
            text.append_any_run();
        }
        _ => {}
    }
    text_matcher(&text, plan.cased, at)
}

/// Classifies a Sigma string: a literal with `*` only at its ends becomes an exact,
/// prefix, suffix or substring test; anything else a regex.
fn text_matcher(
    text: &SigmaString,
    cased: bool,
    at: &dyn Fn() -> String,
) -> Result<Compiled, ErrorKind> {
    let mut pieces = text.pieces();
    let open_start = pieces.first() == Some(&Piece::AnyRun);
    if open_start {
        pieces = &pieces[1..];
    }
    let open_end = !pieces.is_empty() && pieces.last() == Some(&Piece::AnyRun);
    if open_end {
        pieces = &pieces[..pieces.len() - 1];
    }
    let literal = match pieces {
        [] => Some(""),
        [Piece::Literal(l)] => Some(l.as_str()),
        _ => None,
    };
    if let Some(literal) = literal {
        if cased || literal.is_ascii() {
            let needle = literal.to_owned();
            let text = match (open_start, open_end) {
                _ if needle.is_empty() && (open_start || open_end) => TextMatcher::Any,
                (false, false) => TextMatcher::Exact { needle, cased },
                (false, true) => TextMatcher::Prefix { needle, cased },
                (true, false) => TextMatcher::Suffix { needle, cased },
                (true, true) => return Ok(Compiled::Substring(needle)),
            };
            return Ok(Compiled::Ready(ValueMatcher::Text(text)));
        }
    }
    let mut pattern = String::from("(?s)");
    if !cased {
        pattern.push_str("(?i)");
    }
    if !open_start {
        pattern.push('^');
    }
    for piece in pieces {
        match piece {
            Piece::Literal(l) => pattern.push_str(&regex::escape(l)),
            Piece::AnyRun => pattern.push_str(".*"),
            Piece::AnyChar => pattern.push('.'),
        }
    }
    if !open_end {
        pattern.push('$');
    }
    RegexBuilder::new(&pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(|regex| Compiled::Ready(ValueMatcher::Text(TextMatcher::Regex(regex))))
        .map_err(|e| ErrorKind::Regex {
            path: at(),
            reason: e.to_string(),
        })
}

fn compile_regex(
    raw: &str,
    flags: &[Modifier],
    at: &dyn Fn() -> String,
) -> Result<regex::Regex, ErrorKind> {
    RegexBuilder::new(raw)
        .case_insensitive(flags.contains(&Modifier::ReIgnoreCase))
        .multi_line(flags.contains(&Modifier::ReMultiline))
        .dot_matches_new_line(flags.contains(&Modifier::ReDotAll))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| ErrorKind::Regex {
            path: at(),
            reason: e.to_string(),
        })
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a single address.
fn parse_network(raw: &str) -> Option<IpNet> {
    let raw = raw.trim();
    raw.parse::<IpNet>()
        .ok()
        .or_else(|| raw.parse::<IpAddr>().ok().map(IpNet::from))
}

fn automaton(
    needles: &[String],
    cased: bool,
    at: &dyn Fn() -> String,
) -> Result<AhoCorasick, ErrorKind> {
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(!cased)
        .build(needles)
        .map_err(|e| ErrorKind::invalid(at(), format!("cannot build a substring matcher: {e}")))
}
