//! STIX 2.1: indicators of a bundle (or of TAXII envelopes) read into an
//! [`IndicatorStore`].
//!
//! Only patterns that are plain equality comparisons on the observable types the store
//! matches are taken: `ipv4-addr:value`, `ipv6-addr:value`, `domain-name:value`,
//! `url:value`, `email-addr:value`, `file:hashes.<MD5|SHA-1|SHA-256|SHA-512>`, several of
//! them joined by `OR` inside or between observation brackets. Anything else (`AND`,
//! `MATCHES`, `LIKE`, `!=`, qualifiers such as `WITHIN`, `FOLLOWEDBY`, other object
//! types) cannot be reduced to a set of values without changing its meaning, so the
//! indicator is skipped and the report says why.
//!
//! The pattern subset is parsed by hand: the Rust STIX crates on crates.io are young
//! (0.1 releases) and full-grammar, while the subset needs a tokenizer for quoted
//! strings and three keywords.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kastell_core::ObservableKind;
use serde::Deserialize;
use serde_json::Value;

use crate::indicator::{attack_techniques, parse_time, Indicator, IndicatorContext};
use crate::normalise;
use crate::store::{IndicatorStore, Inserted};

/// One comparison of a pattern, reduced to what the store matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub kind: ObservableKind,
    /// The STIX object path, e.g. `file:hashes.'SHA-256'`.
    pub path: String,
    pub value: String,
}

/// Why a pattern was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("pattern_type {0:?} is not stix")]
    NotStix(String),
    #[error("uses {0}, which is not a set of values")]
    Operator(String),
    #[error("compares {0}, which the store does not match")]
    Path(String),
    #[error("value {value:?} is not a valid {kind}")]
    Value { kind: &'static str, value: String },
    #[error("syntax: {0}")]
    Syntax(String),
}

/// Parses a pattern into its comparisons when it is a disjunction of equalities.
///
/// # Errors
///
/// A [`PatternError`] naming the first construct outside the subset.
pub fn parse_pattern(pattern: &str) -> Result<Vec<Comparison>, PatternError> {
    let tokens = tokenize(pattern)?;
    let mut out = Vec::new();
    let mut i = 0;
    let mut expect_term = true;
    let mut depth = 0usize;
    while i < tokens.len() {
        match (&tokens[i], expect_term) {
            (Token::Open, true) => {
                depth += 1;
                i += 1;
            }
            (Token::Close, false) if depth > 0 => {
                depth -= 1;
                i += 1;
            }
            (Token::Word(word), false) if word.eq_ignore_ascii_case("OR") => {
                expect_term = true;
                i += 1;
            }
            (Token::Word(path), true) if depth > 0 => {
                let (Some(Token::Op(op)), Some(Token::Str(value))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                else {
                    return Err(match tokens.get(i + 1) {
                        Some(Token::Word(w)) => PatternError::Operator(w.to_ascii_uppercase()),
                        Some(Token::Op(op)) => PatternError::Operator(op.clone()),
                        _ => PatternError::Syntax(format!(
                            "comparison on {path} has no quoted value"
                        )),
                    });
                };
                if op != "=" {
                    return Err(PatternError::Operator(op.clone()));
                }
                out.push(comparison(path, value)?);
                expect_term = false;
                i += 3;
            }
            (Token::Word(word), _) => {
                return Err(PatternError::Operator(word.to_ascii_uppercase()))
            }
            (other, _) => return Err(PatternError::Syntax(format!("unexpected {other:?}"))),
        }
    }
    if depth != 0 || expect_term || out.is_empty() {
        return Err(PatternError::Syntax(
            "unbalanced brackets or a dangling OR".into(),
        ));
    }
    Ok(out)
}

fn comparison(path: &str, raw: &str) -> Result<Comparison, PatternError> {
    let compact: String = path.chars().filter(|c| !c.is_whitespace()).collect();
    let kind = match compact.to_ascii_lowercase().as_str() {
        "ipv4-addr:value" | "ipv6-addr:value" => ObservableKind::Ip,
        "domain-name:value" => ObservableKind::Domain,
        "url:value" => ObservableKind::Url,
        "email-addr:value" => ObservableKind::Email,
        "file:hashes.md5" | "file:hashes.'md5'" => ObservableKind::Md5,
        "file:hashes.'sha-1'" | "file:hashes.sha1" | "file:hashes.'sha1'" => ObservableKind::Sha1,
        "file:hashes.'sha-256'" | "file:hashes.sha256" | "file:hashes.'sha256'" => {
            ObservableKind::Sha256
        }
        "file:hashes.'sha-512'" | "file:hashes.sha512" | "file:hashes.'sha512'" => {
            ObservableKind::Sha512
        }
        _ => return Err(PatternError::Path(compact)),
    };
    let normal = normalise::value_of_kind(kind, raw).ok_or_else(|| PatternError::Value {
        kind: kind.as_str(),
        value: raw.to_owned(),
    })?;
    Ok(Comparison {
        kind,
        path: compact,
        value: normal.value,
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Word(String),
    Op(String),
    Str(String),
}

fn tokenize(pattern: &str) -> Result<Vec<Token>, PatternError> {
    let mut tokens = Vec::new();
    let mut chars = pattern.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '[' => tokens.push(Token::Open),
            ']' => tokens.push(Token::Close),
            '(' | ')' => return Err(PatternError::Operator("parentheses".into())),
            '\'' => {
                let mut value = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, escaped)) => value.push(escaped),
                            None => break,
                        },
                        '\'' => {
                            closed = true;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                if !closed {
                    return Err(PatternError::Syntax("unterminated string".into()));
                }
                tokens.push(Token::Str(value));
            }
            '=' | '!' | '<' | '>' => {
                let mut op = c.to_string();
                if let Some((_, '=')) = chars.peek() {
                    op.push('=');
                    chars.next();
                }
                tokens.push(Token::Op(op));
            }
            _ => {
                // A path (`file:hashes.'SHA-256'`, quotes included) or a keyword.
                let mut end = start + c.len_utf8();
                let mut in_quote = false;
                while let Some(&(i, next)) = chars.peek() {
                    let ends = !in_quote
                        && (next.is_whitespace()
                            || matches!(next, '[' | ']' | '=' | '!' | '<' | '>'));
                    if ends {
                        break;
                    }
                    if next == '\'' {
                        in_quote = !in_quote;
                    }
                    end = i + next.len_utf8();
                    chars.next();
                }
                tokens.push(Token::Word(pattern[start..end].to_owned()));
            }
        }
    }
    Ok(tokens)
}

/// What loading one bundle did.
#[derive(Debug, Default)]
pub struct StixReport {
    pub feed: String,
    /// `indicator` objects seen.
    pub indicator_objects: u64,
    /// Indicators added (an `OR` of three values adds three).
    pub indicators: u64,
    pub duplicates: u64,
    /// Indicator objects not used: their id, pattern and why.
    pub skipped: Vec<SkippedPattern>,
    /// Indicator objects whose `valid_until` has passed (kept out of the store).
    pub expired: u64,
    /// Older versions of an indicator whose newer version (`modified`) is also present.
    pub superseded: u64,
}

impl StixReport {
    /// Skipped patterns counted by reason (the error text).
    pub fn skipped_by_reason(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for skipped in &self.skipped {
            *out.entry(skipped.reason.to_string()).or_insert(0) += 1;
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct SkippedPattern {
    pub id: String,
    pub pattern: String,
    pub reason: PatternError,
}

/// A bundle could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum StixError {
    #[error("not a STIX bundle ({{\"type\": \"bundle\", \"objects\": [...]}})")]
    NotABundle(#[source] serde_json::Error),
}

#[derive(Deserialize)]
struct Bundle {
    #[serde(default)]
    objects: Vec<Value>,
}

/// Loads the indicators of a bundle's bytes as the feed `name`.
///
/// # Errors
///
/// When the bytes are not a JSON object with an `objects` list.
pub fn load_bundle(name: &str, bytes: &[u8]) -> Result<(IndicatorStore, StixReport), StixError> {
    let bundle: Bundle = serde_json::from_slice(bytes).map_err(StixError::NotABundle)?;
    let mut store = IndicatorStore::new();
    let mut report = StixReport {
        feed: name.to_owned(),
        ..StixReport::default()
    };
    add_objects(&mut store, &mut report, &bundle.objects, chrono::Utc::now());
    tracing::info!(
        feed = name,
        indicator_objects = report.indicator_objects,
        indicators = report.indicators,
        skipped = report.skipped.len(),
        "STIX bundle loaded"
    );
    Ok((store, report))
}

/// Adds the indicators among `objects` (a bundle's or a TAXII envelope's), with the
/// context the other objects give: the report listing each, TLP markings, ATT&CK
/// techniques of the attack patterns it `indicates`.
pub fn add_objects(
    store: &mut IndicatorStore,
    report: &mut StixReport,
    objects: &[Value],
    now: chrono::DateTime<chrono::Utc>,
) {
    let links = Links::of(objects);
    let latest = latest_versions(objects);
    for object in objects {
        if object.get("type").and_then(Value::as_str) != Some("indicator") {
            continue;
        }
        report.indicator_objects += 1;
        let id_and_version = (str_field(object, "id"), str_field(object, "modified"));
        if let (Some(id), Some(modified)) = id_and_version {
            if latest.get(id).is_some_and(|newest| *newest > modified) {
                report.superseded += 1;
                continue;
            }
        }
        let id = str_field(object, "id").unwrap_or_default().to_owned();
        let pattern = str_field(object, "pattern").unwrap_or_default().to_owned();
        let pattern_type = str_field(object, "pattern_type").unwrap_or("stix");
        let parsed = if pattern_type == "stix" {
            parse_pattern(&pattern)
        } else {
            Err(PatternError::NotStix(pattern_type.to_owned()))
        };
        let comparisons = match parsed {
            Ok(comparisons) => comparisons,
            Err(reason) => {
                tracing::debug!(indicator = %id, %pattern, %reason, "STIX pattern skipped");
                report.skipped.push(SkippedPattern {
                    id,
                    pattern,
                    reason,
                });
                continue;
            }
        };
        let valid_until = str_field(object, "valid_until").and_then(parse_time);
        if valid_until.is_some_and(|until| until <= now) {
            report.expired += 1;
            continue;
        }
        let context = Arc::new(links.context(&report.feed, object, &id));
        for comparison in comparisons {
            let mut indicator =
                Indicator::new(comparison.kind, comparison.value, Arc::clone(&context));
            if let Some(normalise::Normalised {
                network: Some(net), ..
            }) = normalise::value_of_kind(ObservableKind::Ip, &indicator.value)
            {
                indicator.network = Some(net);
            }
            indicator.attribute_type = comparison.path;
            indicator.attribute_id = Some(id.clone());
            indicator.first_seen = str_field(object, "valid_from").and_then(parse_time);
            indicator.valid_until = valid_until;
            indicator.tags = labels(object);
            match store.insert(indicator) {
                Ok(Inserted::Added) => report.indicators += 1,
                Ok(_) => report.duplicates += 1,
                Err(e) => tracing::warn!(reason = %e, "STIX indicator not indexed"),
            }
        }
    }
}

/// The newest `modified` of each object id: TAXII collections hold every version.
fn latest_versions(objects: &[Value]) -> HashMap<&str, &str> {
    let mut latest: HashMap<&str, &str> = HashMap::new();
    for object in objects {
        if let (Some(id), Some(modified)) = (str_field(object, "id"), str_field(object, "modified"))
        {
            let newest = latest.entry(id).or_insert(modified);
            // RFC 3339 timestamps in UTC compare correctly as text.
            if modified > *newest {
                *newest = modified;
            }
        }
    }
    latest
}

fn str_field<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

fn strings(object: &Value, key: &str) -> Vec<String> {
    object
        .get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `labels` and `indicator_types`, each once.
fn labels(object: &Value) -> Vec<String> {
    let mut out = strings(object, "labels");
    for kind in strings(object, "indicator_types") {
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    out
}

/// What the other objects of a bundle say about an indicator.
struct Links<'a> {
    /// Indicator id → the reports listing it.
    reports: HashMap<&'a str, Vec<&'a Value>>,
    /// Marking-definition id → TLP name.
    tlp: HashMap<&'a str, String>,
    /// Indicator id → ATT&CK ids of the attack patterns it indicates.
    techniques: HashMap<&'a str, Vec<String>>,
    /// Identity id → name.
    identities: HashMap<&'a str, &'a str>,
}

impl<'a> Links<'a> {
    fn of(objects: &'a [Value]) -> Self {
        let by_id: HashMap<&str, &Value> = objects
            .iter()
            .filter_map(|o| Some((str_field(o, "id")?, o)))
            .collect();
        let mut links = Links {
            reports: HashMap::new(),
            tlp: HashMap::new(),
            techniques: HashMap::new(),
            identities: HashMap::new(),
        };
        for object in objects {
            let id = str_field(object, "id").unwrap_or_default();
            match str_field(object, "type") {
                Some("report") | Some("grouping") => {
                    for target in object
                        .get("object_refs")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                    {
                        links.reports.entry(target).or_default().push(object);
                    }
                }
                Some("marking-definition") => {
                    if let Some(name) = tlp_name(object) {
                        links.tlp.insert(id, name);
                    }
                }
                Some("identity") => {
                    if let Some(name) = str_field(object, "name") {
                        links.identities.insert(id, name);
                    }
                }
                Some("relationship")
                    if str_field(object, "relationship_type") == Some("indicates") =>
                {
                    let (Some(source), Some(target)) = (
                        str_field(object, "source_ref"),
                        str_field(object, "target_ref"),
                    ) else {
                        continue;
                    };
                    if let Some(pattern) = by_id
                        .get(target)
                        .filter(|t| str_field(t, "type") == Some("attack-pattern"))
                    {
                        let ids = external_ids(pattern);
                        links
                            .techniques
                            .entry(source)
                            .or_default()
                            .extend(attack_techniques(ids.iter().map(String::as_str)));
                    }
                }
                _ => {}
            }
        }
        links
    }

    fn context(&self, feed: &str, indicator: &Value, id: &str) -> IndicatorContext {
        let report = self.reports.get(id).and_then(|r| r.first());
        let mut tags: Vec<String> = strings(indicator, "object_marking_refs")
            .iter()
            .filter_map(|m| self.tlp.get(m.as_str()))
            .map(|tlp| format!("tlp:{tlp}"))
            .collect();
        let mut phases: Vec<String> = indicator
            .get("kill_chain_phases")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| str_field(p, "phase_name"))
            .map(str::to_owned)
            .collect();
        let mut techniques = self.techniques.get(id).cloned().unwrap_or_default();
        for technique in attack_techniques(phases.iter().map(String::as_str)) {
            if !techniques.contains(&technique) {
                techniques.push(technique);
            }
        }
        tags.append(&mut phases);
        IndicatorContext {
            feed: feed.to_owned(),
            reference: Some(
                report
                    .and_then(|r| str_field(r, "id"))
                    .unwrap_or(id)
                    .to_owned(),
            ),
            info: report
                .and_then(|r| str_field(r, "name"))
                .or_else(|| str_field(indicator, "name"))
                .or_else(|| str_field(indicator, "description"))
                .map(str::to_owned),
            date: str_field(indicator, "created").map(|c| c.chars().take(10).collect()),
            organisation: str_field(indicator, "created_by_ref")
                .and_then(|r| self.identities.get(r))
                .map(|n| (*n).to_owned()),
            threat_level: Default::default(),
            tags,
            techniques,
        }
    }
}

/// The TLP of a marking definition: TLP 2.0's extension (`tlp_2_0: "clear"`) or TLP 1.0's
/// `definition_type: "tlp"`.
fn tlp_name(object: &Value) -> Option<String> {
    if let Some(extensions) = object.get("extensions").and_then(Value::as_object) {
        if let Some(tlp) = extensions.values().find_map(|e| str_field(e, "tlp_2_0")) {
            return Some(tlp.to_ascii_lowercase());
        }
    }
    if str_field(object, "definition_type") == Some("tlp") {
        return object
            .get("definition")
            .and_then(|d| str_field(d, "tlp"))
            .map(str::to_ascii_lowercase);
    }
    None
}

fn external_ids(object: &Value) -> Vec<String> {
    object
        .get("external_references")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| str_field(r, "external_id"))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pattern: &str) -> Result<Vec<(ObservableKind, String)>, PatternError> {
        parse_pattern(pattern).map(|c| c.into_iter().map(|c| (c.kind, c.value)).collect())
    }

    #[test]
    fn simple_comparisons_and_ors_are_taken() {
        assert_eq!(
            values("[ ipv4-addr:value = '10.0.0.0' ]").unwrap(),
            vec![(ObservableKind::Ip, "10.0.0.0".into())]
        );
        assert_eq!(
            values("[domain-name:value = 'www.Evil.example' OR ipv4-addr:value = '198.51.100.0/24'] OR [url:value = 'http://x.example']").unwrap(),
            vec![
                (ObservableKind::Domain, "www.evil.example".into()),
                (ObservableKind::Ip, "198.51.100.0/24".into()),
                (ObservableKind::Url, "http://x.example/".into()),
            ]
        );
        let sha = "ef537f25c895bfa782526529a9b63d97aa631564d5d789c2b765448c8635fb6c";
        assert_eq!(
            values(&format!("[file:hashes.'SHA-256' = '{sha}']")).unwrap(),
            vec![(ObservableKind::Sha256, sha.into())]
        );
        assert_eq!(
            values("[email-addr:value = 'o\\'brien@evil.example']").unwrap(),
            vec![(ObservableKind::Email, "o'brien@evil.example".into())]
        );
    }

    #[test]
    fn everything_else_is_skipped_with_its_reason() {
        for (pattern, want) in [
            (
                "[email-message:subject MATCHES '^x']",
                PatternError::Operator("MATCHES".into()),
            ),
            (
                "[ipv4-addr:value = '1.2.3.4' AND domain-name:value = 'a.example']",
                PatternError::Operator("AND".into()),
            ),
            (
                "[ipv4-addr:value != '1.2.3.4']",
                PatternError::Operator("!=".into()),
            ),
            (
                "[ipv4-addr:value = '1.2.3.4'] WITHIN 5 SECONDS",
                PatternError::Operator("WITHIN".into()),
            ),
            (
                "[process:name = 'x.exe']",
                PatternError::Path("process:name".into()),
            ),
            (
                "[ipv4-addr:value = 'evil.example']",
                PatternError::Value {
                    kind: "ip",
                    value: "evil.example".into(),
                },
            ),
            (
                "[ipv4-addr:value = '1.2.3.4'",
                PatternError::Syntax("unbalanced brackets or a dangling OR".into()),
            ),
            (
                "[ipv4-addr:value = '1.2.3.4]",
                PatternError::Syntax("unterminated string".into()),
            ),
        ] {
            assert_eq!(parse_pattern(pattern).unwrap_err(), want, "{pattern}");
        }
    }
}
