//! Rules as the correlate stage holds them: one compiled rule per DetectionRule, and the
//! [`RuleSet`] that routes each event to the rules of its source and evaluates them.

use std::collections::HashMap;

use kastell_core::{Event, Level, RuleRef, RuleSource};
use serde_json::{Map, Value};

use crate::compile::compile_detection;
use crate::error::{ErrorKind, RuleError};
use crate::logsource::{self, Route, SURICATA_DATASET, WAZUH_DATASET};
use crate::matcher::Detector;
use crate::rule::{parse_rule, SigmaRule};

/// What a DetectionRule resource says about its rule, without depending on the resource
/// types: where it came from, the Sigma YAML, and the two overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDocument {
    /// `namespace/name` of the DetectionRule.
    pub resource: String,
    /// The file the resource was read from.
    pub path: Option<String>,
    /// The git commit the resource came from.
    pub commit: Option<String>,
    /// `spec.sigma`: the Sigma rule, verbatim.
    pub sigma: String,
    /// `spec.level`: replaces the rule's own level on its alerts.
    pub level: Option<Level>,
    /// `spec.enabled`: a disabled rule is compiled (so it is validated) but not evaluated.
    pub enabled: bool,
}

impl RuleDocument {
    /// An enabled rule without a level override.
    pub fn new(resource: impl Into<String>, sigma: impl Into<String>) -> Self {
        RuleDocument {
            resource: resource.into(),
            path: None,
            commit: None,
            sigma: sigma.into(),
            level: None,
            enabled: true,
        }
    }

    pub fn with_level(mut self, level: Option<Level>) -> Self {
        self.level = level;
        self
    }

    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    pub fn with_commit(mut self, commit: impl Into<String>) -> Self {
        self.commit = Some(commit.into());
        self
    }

    /// Parses and compiles the rule.
    ///
    /// # Errors
    ///
    /// A [`RuleError`] naming the resource and rule: the YAML is not a Sigma rule, or it
    /// asks for something this engine does not evaluate (see `docs/detection.md`).
    pub fn compile(&self) -> Result<CompiledRule, RuleError> {
        let named = |mut e: RuleError| {
            e.resource = Some(self.resource.as_str().into());
            e
        };
        let rule = parse_rule(&self.sigma).map_err(named)?;
        let fail = |kind: ErrorKind| {
            named(RuleError {
                resource: None,
                rule_id: rule.reference().map(Into::into),
                title: Some(rule.title.as_str().into()),
                kind,
            })
        };
        let routing = logsource::route(&rule.logsource)
            .ok_or_else(|| fail(ErrorKind::UnsupportedLogsource(rule.logsource.to_string())))?;
        let detector = compile_detection(&rule.detection, &routing).map_err(fail)?;
        Ok(CompiledRule {
            rule: self.rule_ref(&rule),
            routes: routing.routes,
            detector,
            enabled: self.enabled,
        })
    }

    /// Parses and compiles the rule for raw events: logsource routing is off and every
    /// field is looked up by its Sigma name on the event as given. The compiled rule has no
    /// routes, so only [`CompiledRule::matches_raw`] and [`RuleSet::evaluate_raw`] apply it.
    ///
    /// # Errors
    ///
    /// As [`RuleDocument::compile`], except that no logsource is refused.
    pub fn compile_raw(&self) -> Result<CompiledRule, RuleError> {
        let named = |mut e: RuleError| {
            e.resource = Some(self.resource.as_str().into());
            e
        };
        let rule = parse_rule(&self.sigma).map_err(named)?;
        let routing = logsource::Routing {
            routes: Vec::new(),
            fields: logsource::FieldMapping::Raw,
            strict: false,
        };
        let detector = compile_detection(&rule.detection, &routing).map_err(|kind| {
            named(RuleError {
                resource: None,
                rule_id: rule.reference().map(Into::into),
                title: Some(rule.title.as_str().into()),
                kind,
            })
        })?;
        Ok(CompiledRule {
            rule: self.rule_ref(&rule),
            routes: Vec::new(),
            detector,
            enabled: self.enabled,
        })
    }

    fn rule_ref(&self, rule: &SigmaRule) -> RuleRef {
        RuleRef {
            id: rule
                .reference()
                .map_or_else(|| self.resource.clone(), str::to_owned),
            title: rule.title.clone(),
            level: self.level.or(rule.level).unwrap_or_default(),
            tags: rule.tags.clone(),
            author: rule.author.clone(),
            source: Some(RuleSource {
                resource: self.resource.clone(),
                path: self.path.clone(),
                commit: self.commit.clone(),
            }),
        }
    }
}

/// Compiles the rule of one DetectionRule resource: its `namespace/name`, `spec.sigma`,
/// `spec.level` and `spec.enabled`. What a resource's status reports as valid or not.
///
/// # Errors
///
/// As [`RuleDocument::compile`].
pub fn compile_rule(
    resource: &str,
    sigma: &str,
    level: Option<Level>,
    enabled: bool,
) -> Result<CompiledRule, RuleError> {
    RuleDocument::new(resource, sigma)
        .with_level(level)
        .with_enabled(enabled)
        .compile()
}

/// One rule, ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    rule: RuleRef,
    routes: Vec<Route>,
    detector: Detector,
    enabled: bool,
}

impl CompiledRule {
    /// What alerts of this rule carry: id, title, level (after the override), tags,
    /// author and source.
    pub fn rule_ref(&self) -> &RuleRef {
        &self.rule
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the event is of the rule's logsource and satisfies its detection.
    /// Ignores `enabled`, so a disabled rule can still be tried out.
    pub fn matches(&self, event: &Event) -> bool {
        let fields = event.as_map();
        self.accepts(event.dataset(), fields) && self.detector.matches(fields)
    }

    /// Whether the flat event satisfies the detection, without logsource routing.
    pub fn matches_raw(&self, event: &Map<String, Value>) -> bool {
        self.detector.matches(event)
    }

    fn accepts(&self, dataset: Option<&str>, fields: &Map<String, Value>) -> bool {
        self.routes
            .iter()
            .any(|route| Some(route.dataset()) == dataset && route.accepts(fields))
    }
}

/// The enabled rules, indexed by the events they apply to.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<CompiledRule>,
    /// Rules for Suricata records, by EVE `event_type`.
    suricata_by_type: HashMap<&'static str, Vec<usize>>,
    /// Rules for every Suricata record.
    suricata_all: Vec<usize>,
    /// Rules for Wazuh alerts; each checks its own filter.
    wazuh: Vec<usize>,
    disabled: usize,
}

impl RuleSet {
    /// Compiles every document; a rule that fails is reported and the others are kept.
    pub fn compile(documents: impl IntoIterator<Item = RuleDocument>) -> (RuleSet, Vec<RuleError>) {
        let mut compiled = Vec::new();
        let mut errors = Vec::new();
        for document in documents {
            match document.compile() {
                Ok(rule) => compiled.push(rule),
                Err(error) => errors.push(error),
            }
        }
        let (set, duplicates) = RuleSet::from_rules(compiled);
        errors.extend(duplicates);
        (set, errors)
    }

    /// Builds the set from compiled rules. A rule whose id an earlier rule already uses
    /// is refused, because alert ids and the audit trail rely on rule ids being unique.
    pub fn from_rules(rules: impl IntoIterator<Item = CompiledRule>) -> (RuleSet, Vec<RuleError>) {
        let mut set = RuleSet::default();
        let mut errors = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        for rule in rules {
            let resource = rule
                .rule
                .source
                .as_ref()
                .map(|s| s.resource.clone())
                .unwrap_or_default();
            if let Some(other) = seen.get(&rule.rule.id) {
                errors.push(RuleError {
                    resource: Some(resource.into()),
                    rule_id: Some(rule.rule.id.as_str().into()),
                    title: Some(rule.rule.title.as_str().into()),
                    kind: ErrorKind::DuplicateId {
                        id: rule.rule.id.clone(),
                        other: format!("DetectionRule {other}"),
                    },
                });
                continue;
            }
            seen.insert(rule.rule.id.clone(), resource);
            set.add(rule);
        }
        (set, errors)
    }

    /// Compiles every document in raw mode ([`RuleDocument::compile_raw`]); a rule that
    /// fails is reported and the others are kept.
    pub fn compile_raw(
        documents: impl IntoIterator<Item = RuleDocument>,
    ) -> (RuleSet, Vec<RuleError>) {
        let mut compiled = Vec::new();
        let mut errors = Vec::new();
        for document in documents {
            match document.compile_raw() {
                Ok(rule) => compiled.push(rule),
                Err(error) => errors.push(error),
            }
        }
        let (set, duplicates) = RuleSet::from_rules(compiled);
        errors.extend(duplicates);
        (set, errors)
    }

    /// Every enabled rule whose detection the flat event satisfies, in the order added.
    /// No logsource routing: the mode of `kastell detect` and the regression data.
    pub fn evaluate_raw<'a>(
        &'a self,
        event: &'a Map<String, Value>,
    ) -> impl Iterator<Item = &'a RuleRef> + 'a {
        self.rules
            .iter()
            .filter(move |rule| rule.detector.matches(event))
            .map(|rule| &rule.rule)
    }

    fn add(&mut self, rule: CompiledRule) {
        if !rule.enabled {
            self.disabled += 1;
            return;
        }
        let index = self.rules.len();
        let push = |list: &mut Vec<usize>| {
            if list.last() != Some(&index) {
                list.push(index);
            }
        };
        for route in &rule.routes {
            match route {
                Route::Suricata { event_types } if event_types.is_empty() => {
                    push(&mut self.suricata_all)
                }
                Route::Suricata { event_types } => {
                    for event_type in event_types {
                        push(self.suricata_by_type.entry(event_type).or_default());
                    }
                }
                Route::Wazuh(_) => push(&mut self.wazuh),
            }
        }
        self.rules.push(rule);
    }

    /// Enabled rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Rules that compiled but are disabled.
    pub fn disabled(&self) -> usize {
        self.disabled
    }

    /// The enabled rules, in the order they were added.
    pub fn rules(&self) -> impl Iterator<Item = &RuleRef> {
        self.rules.iter().map(|r| &r.rule)
    }

    /// The rules the event matches, in the order they were added within each index
    /// bucket. Only the rules routed to the event's source are tried.
    pub fn evaluate<'a>(&'a self, event: &'a Event) -> impl Iterator<Item = &'a RuleRef> + 'a {
        let fields = event.as_map();
        let dataset = event.dataset();
        let (specific, general): (&[usize], &[usize]) = match dataset {
            Some(SURICATA_DATASET) => (
                logsource::eve_event_type(fields)
                    .and_then(|t| self.suricata_by_type.get(t))
                    .map_or(&[], Vec::as_slice),
                &self.suricata_all,
            ),
            Some(WAZUH_DATASET) => (&self.wazuh, &[]),
            _ => (&[], &[]),
        };
        specific
            .iter()
            .chain(general)
            .map(move |&i| &self.rules[i])
            .filter(move |rule| rule.accepts(dataset, fields) && rule.detector.matches(fields))
            .map(|rule| &rule.rule)
    }
}
