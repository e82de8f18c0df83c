//! The compile step: a [`SigmaRule`] and its logsource's field mapping turned into a
//! [`Detector`], with every modifier, value and condition checked.
//!
//! Anything the engine cannot evaluate is an error here, naming where in the rule it is;
//! nothing a rule asks for is silently dropped.

use std::cmp::Ordering;
use std::net::IpAddr;

use ipnet::IpNet;
use regex::RegexBuilder;

use crate::condition::{Condition, Target};
use crate::error::ErrorKind;
use crate::logsource::Routing;
use crate::matcher::{
    Check, Detector, Expr, FieldCheck, FieldRef, FieldTest, NeedleSearch, Number, Position,
    SelectionMatcher, TextMatcher, TimePart, ValueMatcher, ValueTest,
};
use crate::modifier::Modifier;
use crate::prefilter::{regex_literals, RegexFlags};
use crate::rule::{Detection, FieldMatch, Selection, SigmaValue};
use crate::string::{Piece, SigmaString};

/// Upper bound on one compiled regex, so a hostile rule cannot exhaust memory. SigmaHQ's
/// largest (a `re` list of svchost flags) needs between 1 and 2 MiB.
const REGEX_SIZE_LIMIT: usize = 16 << 20;

/// Upper bound on one regex's lazy DFA cache (per thread; it grows only as states are
/// built). The regex crate's default, 2 MiB, is below the minimum some SigmaHQ patterns
/// need (a Unicode `\w{1,64}` in the svchost rules): their lazy DFA is then never used and
/// every search runs the bounded backtracker, a hundred times slower (3.5 µs against
/// 30 ns on a 60-byte command line).
const REGEX_DFA_CACHE_LIMIT: usize = 16 << 20;

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
        filters: Vec::new(),
        without_fields: None,
        program: None,
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
    /// `windash`: each string value stands for all its dash permutations.
    windash: bool,
    /// `utf16le`, `utf16be`, `utf16` or `wide`: the value's bytes before `base64`.
    utf16: Option<Modifier>,
    /// `base64` or `base64offset`.
    base64: Option<Modifier>,
    /// `neq`: the field is present and the comparison fails.
    neq: bool,
    /// `fieldref`: the values name other fields of the same event.
    fieldref: bool,
    /// `minute` … `year`: the field's date is reduced to that number first.
    time_part: Option<Modifier>,
    /// `expand`: `%placeholder%`s are replaced from configuration.
    expand: bool,
}

/// The value's text as the bytes an encoding modifier starts from.
fn encode_utf16(text: &str, how: Option<Modifier>) -> Vec<u8> {
    let units = text.encode_utf16();
    match how {
        Some(Modifier::Utf16Be) => units.flat_map(u16::to_be_bytes).collect(),
        // `utf16` prepends the little-endian byte order mark, as the specification shows.
        Some(Modifier::Utf16) => [0xFF, 0xFE]
            .into_iter()
            .chain(units.flat_map(u16::to_le_bytes))
            .collect(),
        Some(_) => units.flat_map(u16::to_le_bytes).collect(),
        None => text.as_bytes().to_vec(),
    }
}

/// `base64`: the encoding. `base64offset`: the three spellings of the value inside a longer
/// encoded text, one per byte offset, without the characters its neighbours change
/// (pySigma's reference algorithm).
fn base64_variants(bytes: &[u8], offset: bool) -> Vec<String> {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    if !offset {
        return vec![engine.encode(bytes)];
    }
    (0..3)
        .map(|shift| {
            let mut shifted = vec![b' '; shift];
            shifted.extend_from_slice(bytes);
            let encoded = engine.encode(&shifted);
            let start = [0, 2, 3][shift];
            let cut = [0, 3, 2][(bytes.len() + shift) % 3];
            encoded[start..encoded.len() - cut].to_owned()
        })
        .collect()
}

/// The characters `windash` treats as interchangeable, as the specification lists them.
const DASHES: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];

/// At most this many dashes in one `windash` value: each multiplies the variants by five.
const WINDASH_MAX_DASHES: u32 = 4;

/// Every spelling of `raw` with each dash character replaced by any of [`DASHES`].
/// Permuting the raw text is safe because dashes have no meaning in Sigma's escaping.
fn windash_variants(raw: &str, at: &dyn Fn() -> String) -> Result<Vec<String>, ErrorKind> {
    let dashes = raw.chars().filter(|c| DASHES.contains(c)).count();
    if dashes > WINDASH_MAX_DASHES as usize {
        return Err(ErrorKind::invalid(
            at(),
            format!(
                "`windash` value has {dashes} dashes; at most {WINDASH_MAX_DASHES} are expanded"
            ),
        ));
    }
    let mut variants = vec![String::with_capacity(raw.len())];
    for c in raw.chars() {
        if DASHES.contains(&c) {
            variants = variants
                .into_iter()
                .flat_map(|v| {
                    DASHES.iter().map(move |d| {
                        let mut next = v.clone();
                        next.push(*d);
                        next
                    })
                })
                .collect();
        } else {
            variants.iter_mut().for_each(|v| v.push(c));
        }
    }
    Ok(variants)
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
            Modifier::Windash => plan.windash = true,
            Modifier::Utf16Le | Modifier::Utf16Be | Modifier::Utf16 | Modifier::Wide => {
                if let Some(other) = plan.utf16 {
                    return Err(conflict(other, modifier));
                }
                plan.utf16 = Some(modifier);
            }
            Modifier::Base64 | Modifier::Base64Offset => {
                if let Some(other) = plan.base64 {
                    return Err(conflict(other, modifier));
                }
                plan.base64 = Some(modifier);
            }
            Modifier::Neq => plan.neq = true,
            Modifier::FieldRef => plan.fieldref = true,
            Modifier::Expand => plan.expand = true,
            Modifier::Minute
            | Modifier::Hour
            | Modifier::Day
            | Modifier::Week
            | Modifier::Month
            | Modifier::Year => {
                if let Some(other) = plan.time_part {
                    return Err(conflict(other, modifier));
                }
                plan.time_part = Some(modifier);
            }
        }
    }
    // `fieldref` compares with another field's value: only a position and `cased` (and
    // `neq`, which negates the whole test) still make sense.
    if plan.fieldref
        && (plan.all
            || plan.exists
            || plan.cidr
            || plan.re
            || plan.compare.is_some()
            || plan.windash
            || plan.utf16.is_some()
            || plan.base64.is_some()
            || plan.time_part.is_some()
            || plan.expand)
    {
        return Err(ErrorKind::invalid(
            &m.path,
            "`fieldref` combines only with `contains`, `startswith`, `endswith`, `cased` and `neq`",
        ));
    }
    if plan.time_part.is_some()
        && (plan.position.is_some()
            || plan.exists
            || plan.cidr
            || plan.re
            || plan.windash
            || plan.base64.is_some())
    {
        return Err(ErrorKind::invalid(
            &m.path,
            "a time-part modifier combines only with `lt`, `lte`, `gt`, `gte`, `all` and `neq`",
        ));
    }
    if plan.neq && plan.exists {
        return Err(conflict(Modifier::Exists, Modifier::Neq));
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
    // Under `all` each value's variants would need their own OR group inside the AND.
    if plan.windash && (plan.all || plan.re || plan.cidr || plan.exists) {
        return Err(ErrorKind::UnsupportedModifier {
            path: m.path.clone(),
            modifier: Modifier::Windash,
        });
    }
    // UTF-16 bytes are not text to match until base64 makes them so.
    if let (Some(utf16), None) = (plan.utf16, plan.base64) {
        return Err(ErrorKind::UnsupportedModifier {
            path: m.path.clone(),
            modifier: utf16,
        });
    }
    let encoded = plan.base64.is_some();
    if encoded && plan.windash {
        return Err(conflict(
            Modifier::Windash,
            plan.base64.unwrap_or(Modifier::Base64),
        ));
    }
    // Base64 text is case-sensitive: folding case would match other bytes' encodings.
    plan.cased |= encoded;
    if encoded && (plan.all || plan.re || plan.cidr || plan.exists || plan.compare.is_some()) {
        return Err(ErrorKind::invalid(
            &m.path,
            "`base64`/`base64offset` combine only with `contains`, `startswith`, `endswith`, \
             `cased` and a UTF-16 modifier",
        ));
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
        if plan.neq || plan.fieldref || plan.time_part.is_some() {
            return Err(ErrorKind::invalid(
                &m.path,
                "`neq`, `fieldref` and the time-part modifiers need a field",
            ));
        }
        return Ok(Check::Keywords(value_test(m, &plan, true)?, None));
    };
    let resolved = fields.fields.resolve(name);
    if fields.strict && !resolved.mapped {
        return Err(ErrorKind::UnmappedField {
            path: m.path.clone(),
            field: name.clone(),
        });
    }
    let field = FieldRef::new(resolved.paths, resolved.any);

    let test = if plan.fieldref {
        fieldref_test(m, &plan, fields)?
    } else if let Some(part) = plan.time_part {
        let numeric = FieldMatch {
            values: m.values.clone(),
            ..m.clone()
        };
        FieldTest::TimePart(time_part(part), value_test(&numeric, &plan, false)?)
    } else if plan.exists {
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
    let test = if plan.neq {
        FieldTest::Not(Box::new(test))
    } else {
        test
    };
    Ok(Check::Field(FieldCheck {
        field,
        test,
        decided: None,
    }))
}

fn time_part(modifier: Modifier) -> TimePart {
    match modifier {
        Modifier::Minute => TimePart::Minute,
        Modifier::Hour => TimePart::Hour,
        Modifier::Day => TimePart::Day,
        Modifier::Week => TimePart::Week,
        Modifier::Month => TimePart::Month,
        _ => TimePart::Year,
    }
}

/// `field|fieldref: Other`: the field's value compared (as a plain value, or with a
/// position) with the value of `Other` in the same event, Other's name resolved through
/// the same field mapping.
fn fieldref_test(m: &FieldMatch, plan: &Plan, fields: &Routing) -> Result<FieldTest, ErrorKind> {
    let others = m
        .values
        .iter()
        .map(|value| match value {
            SigmaValue::String(name) if !name.raw().is_empty() => {
                let resolved = fields.fields.resolve(name.raw());
                Ok(FieldRef::new(resolved.paths, resolved.any))
            }
            _ => Err(ErrorKind::invalid(
                &m.path,
                "`fieldref` values are field names",
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let position = match plan.position {
        Some(Modifier::Contains) => Position::Contains,
        Some(Modifier::StartsWith) => Position::StartsWith,
        Some(Modifier::EndsWith) => Position::EndsWith,
        _ => Position::Whole,
    };
    Ok(FieldTest::FieldRef {
        others,
        position,
        cased: plan.cased,
    })
}

/// Compiles a value list. `keywords` makes plain strings substring searches, since a
/// keyword is searched for inside the event's values.
fn value_test(m: &FieldMatch, plan: &Plan, keywords: bool) -> Result<ValueTest, ErrorKind> {
    let mut matchers = Vec::with_capacity(m.values.len());
    let mut substrings = Vec::new();
    let mut folded = Vec::new();
    let mut expanded = Vec::new();
    for (i, value) in m.values.iter().enumerate() {
        let at = || {
            if m.values.len() == 1 {
                m.path.clone()
            } else {
                format!("{}[{i}]", m.path)
            }
        };
        match value {
            SigmaValue::String(s) if plan.base64.is_some() => {
                let text = match s.pieces() {
                    [] => "",
                    [Piece::Literal(text)] => text.as_str(),
                    _ => {
                        return Err(ErrorKind::invalid(
                            at(),
                            "a `base64` value cannot hold wildcards",
                        ))
                    }
                };
                let bytes = encode_utf16(text, plan.utf16);
                let offset = plan.base64 == Some(Modifier::Base64Offset);
                for variant in base64_variants(&bytes, offset) {
                    expanded.push((i, SigmaValue::String(SigmaString::literal(&variant))));
                }
            }
            SigmaValue::String(s) if plan.windash => {
                for variant in windash_variants(s.raw(), &at)? {
                    expanded.push((i, SigmaValue::String(SigmaString::parse(&variant))));
                }
            }
            other => expanded.push((i, other.clone())),
        }
    }
    for (i, value) in &expanded {
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
                let needles = vec![needle];
                matchers.push(ValueMatcher::Text(TextMatcher::Contains {
                    search: NeedleSearch::new(&needles, plan.cased),
                    needles,
                    cased: plan.cased,
                }));
            }
            Compiled::Substring(needle) => substrings.push(needle),
            // Alone under `|all`, each must be found.
            Compiled::FoldedSubstring(needle) if plan.all => {
                matchers.push(folded_substrings(&[needle], &at)?);
            }
            Compiled::FoldedSubstring(needle) => folded.push(needle),
        }
    }
    // The ORed substrings that need Unicode case folding are one regex: a `windash` list
    // spells each value with three non-ASCII dashes, and one search (and one lazy DFA) for
    // all of them replaces a regex per spelling (a list of six values held 18).
    if !folded.is_empty() {
        let at = || m.path.clone();
        matchers.push(folded_substrings(&folded, &at)?);
    }
    // An ORed list of substrings is one automaton: one pass over the text for all.
    if !substrings.is_empty() {
        matchers.push(ValueMatcher::Text(TextMatcher::Contains {
            search: NeedleSearch::new(&substrings, plan.cased),
            needles: substrings,
            cased: plan.cased,
        }));
    }
    Ok(ValueTest {
        matchers,
        all: plan.all,
    })
}

/// A compiled value, or a substring needle waiting to join its list's automaton, or a
/// substring outside ASCII, matched without regard to case, waiting to join its list's
/// regex.
enum Compiled {
    Ready(ValueMatcher),
    Substring(String),
    FoldedSubstring(String),
}

/// The regex finding any of the literals anywhere, without regard to case. Its literals
/// for the index are each alternative's, united: extracted from the whole alternation,
/// the case variants of many literals overflow the extractor's bounds and give none.
fn folded_substrings(
    literals: &[String],
    at: &dyn Fn() -> String,
) -> Result<ValueMatcher, ErrorKind> {
    let pattern = |alternatives: &[String]| {
        let escaped: Vec<String> = alternatives.iter().map(|l| regex::escape(l)).collect();
        format!("(?s)(?i)(?:{})", escaped.join("|"))
    };
    let regex = build_regex(&pattern(literals), RegexFlags::default(), at)?;
    let each = literals
        .iter()
        .map(|literal| {
            regex_literals(
                &pattern(std::slice::from_ref(literal)),
                RegexFlags::default(),
            )
        })
        .collect::<Option<Vec<_>>>();
    let literals = each.map(|sets| {
        let mut all: Vec<Vec<u8>> = sets.into_iter().flatten().collect();
        all.sort();
        all.dedup();
        all
    });
    Ok(ValueMatcher::Text(TextMatcher::Regex { regex, literals }))
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
        return compile_regex(s.raw(), &plan.re_flags, at).map(Compiled::Ready);
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
    if let (Some(literal), true, true, false) = (literal, open_start, open_end, cased) {
        if !literal.is_empty() {
            return Ok(Compiled::FoldedSubstring(literal.to_owned()));
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
    compile_regex(&pattern, &[], at).map(Compiled::Ready)
}

/// A regex matcher, with the literals the prefilter may require of its text.
fn compile_regex(
    raw: &str,
    flags: &[Modifier],
    at: &dyn Fn() -> String,
) -> Result<ValueMatcher, ErrorKind> {
    let flags = RegexFlags {
        case_insensitive: flags.contains(&Modifier::ReIgnoreCase),
        multi_line: flags.contains(&Modifier::ReMultiline),
        dot_matches_new_line: flags.contains(&Modifier::ReDotAll),
    };
    Ok(ValueMatcher::Text(TextMatcher::Regex {
        regex: build_regex(raw, flags, at)?,
        literals: regex_literals(raw, flags),
    }))
}

/// The regex of a rule's pattern, within the engine's size and cache bounds.
fn build_regex(
    raw: &str,
    flags: RegexFlags,
    at: &dyn Fn() -> String,
) -> Result<regex::Regex, ErrorKind> {
    RegexBuilder::new(raw)
        .case_insensitive(flags.case_insensitive)
        .multi_line(flags.multi_line)
        .dot_matches_new_line(flags.dot_matches_new_line)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_CACHE_LIMIT)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_follow_the_specification_examples() {
        // The specification's `cmd` examples.
        let le = encode_utf16("cmd", Some(Modifier::Utf16Le));
        assert_eq!(le, [0x63, 0, 0x6d, 0, 0x64, 0]);
        assert_eq!(encode_utf16("cmd", Some(Modifier::Wide)), le);
        let be = encode_utf16("cmd", Some(Modifier::Utf16Be));
        assert_eq!(be, [0, 0x63, 0, 0x6d, 0, 0x64]);
        let bom = encode_utf16("cmd", Some(Modifier::Utf16));
        assert_eq!(bom, [0xFF, 0xFE, 0x63, 0, 0x6d, 0, 0x64, 0]);
        assert_eq!(base64_variants(b"/bin/bash", false), ["L2Jpbi9iYXNo"]);
        // Sigma's documented `base64offset|contains: /bin/bash`.
        assert_eq!(
            base64_variants(b"/bin/bash", true),
            ["L2Jpbi9iYXNo", "9iaW4vYmFza", "vYmluL2Jhc2"]
        );
    }

    #[test]
    fn windash_spells_every_dash_every_way() {
        let at = || "detection.sel.CommandLine|windash".to_owned();
        let variants = windash_variants(" -f /x", &at).unwrap();
        assert_eq!(variants.len(), 25);
        assert!(variants.contains(&" /f -x".to_owned()));
        assert!(variants.contains(&" \u{2013}f \u{2015}x".to_owned()));
        assert_eq!(windash_variants("abc", &at).unwrap(), ["abc"]);
        assert!(windash_variants("-a-b-c-d-e", &at).is_err());
    }
}
