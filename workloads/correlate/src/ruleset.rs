//! Rules as the correlate stage holds them: one compiled rule per DetectionRule, and the
//! [`RuleSet`] that routes each event to the rules of its source and evaluates them.

use std::collections::HashMap;

use kastell_core::{Event, Level, RuleRef, RuleSource};
use serde_json::{Map, Value};

use crate::compile::compile_detection;
use crate::correlation::{
    CorrelationHit, CorrelationRule, CorrelationState, Correlations, Referable, WindowLimits,
};
use crate::error::{ErrorKind, RuleError};
use crate::expand::{expand_placeholders, Placeholders};
use crate::logsource::{self, FieldMapping, Route, SURICATA_DATASET, WAZUH_DATASET};
use crate::matcher::{Detector, WithoutFields};
use crate::prefilter::{rule_requirement, IndexStats, Items, RuleIndex};
use crate::rule::{parse_documents, parse_rule, FilterRule, SigmaDocument, SigmaRule};

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
    /// `spec.suppressionWindow`: repeats of an alert within it are dropped.
    pub suppression: Option<std::time::Duration>,
    /// The document is a Sigma rule file read as it is (`resource` is its path), not a
    /// DetectionRule resource: errors name it as a file.
    pub file: bool,
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
            suppression: None,
            file: false,
        }
    }

    /// A Sigma rule file as it is (not a resource), named by its path.
    pub fn sigma_file(path: impl Into<String>, sigma: impl Into<String>) -> Self {
        let path = path.into();
        RuleDocument {
            file: true,
            ..RuleDocument::new(path.clone(), sigma).with_path(path)
        }
    }

    pub fn with_suppression(mut self, window: Option<std::time::Duration>) -> Self {
        self.suppression = window;
        self
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

    /// Parses and compiles the rule: one detection rule (a file holding correlations or
    /// filters needs [`RuleSet::compile`], which resolves the rules they name).
    ///
    /// # Errors
    ///
    /// A [`RuleError`] naming the resource and rule: the YAML is not a Sigma rule, or it
    /// asks for something this engine does not evaluate (see `docs/detection.md`).
    pub fn compile(&self) -> Result<CompiledRule, RuleError> {
        let rule = parse_rule(&self.sigma).map_err(|e| self.named(e))?;
        self.compile_sigma(&rule, &CompileOptions::default(), &[])
    }

    /// Parses and compiles the rule for raw events: logsource routing is off and every
    /// field is looked up by its Sigma name on the event as given. The compiled rule has no
    /// routes, so only [`CompiledRule::matches_raw`] and [`RuleSet::evaluate_raw`] apply it.
    ///
    /// # Errors
    ///
    /// As [`RuleDocument::compile`].
    pub fn compile_raw(&self) -> Result<CompiledRule, RuleError> {
        let rule = parse_rule(&self.sigma).map_err(|e| self.named(e))?;
        let options = CompileOptions {
            mode: Mode::Raw,
            ..CompileOptions::default()
        };
        self.compile_sigma(&rule, &options, &[])
    }

    fn named(&self, mut e: RuleError) -> RuleError {
        e.resource = Some(self.resource.as_str().into());
        e.file = self.file;
        e
    }

    /// Compiles one detection rule of this document with the filters that apply to it.
    fn compile_sigma(
        &self,
        rule: &SigmaRule,
        options: &CompileOptions,
        filters: &[&FilterRule],
    ) -> Result<CompiledRule, RuleError> {
        let fail = |kind: ErrorKind| {
            self.named(RuleError {
                resource: None,
                file: false,
                rule_id: rule.reference().map(Into::into),
                title: Some(rule.title.as_str().into()),
                kind,
            })
        };
        let routing = match options.mode {
            // A logsource no source of this build produces still compiles (so the rule is
            // validated); without routes it applies to no event of the pipeline.
            Mode::Routed => logsource::route(&rule.logsource).unwrap_or(logsource::Routing {
                routes: Vec::new(),
                fields: FieldMapping::Raw,
                strict: false,
            }),
            Mode::Raw => logsource::Routing {
                routes: Vec::new(),
                fields: logsource::FieldMapping::Raw,
                strict: false,
            },
        };
        let expanded;
        let detection = if uses_expand(&rule.detection) {
            let mut copy = rule.detection.clone();
            expand_placeholders(&mut copy, &options.placeholders).map_err(fail)?;
            expanded = copy;
            &expanded
        } else {
            &rule.detection
        };
        let (routing, mut detector) = match compile_detection(detection, &routing) {
            Ok(detector) => (routing, detector),
            // A field the routed source does not carry (a Zeek field absent from the
            // Suricata records Zeek logsources are read from): the rule is valid Sigma, so
            // it compiles, but without routes it applies to no event of the pipeline.
            Err(ErrorKind::UnmappedField { path, field }) => {
                tracing::info!(rule = %rule.title, path = %path, field = %field,
                    "rule compiled without routes: its field is not in the routed source");
                let unrouted = logsource::Routing {
                    routes: Vec::new(),
                    fields: FieldMapping::Raw,
                    strict: false,
                };
                let detector = compile_detection(detection, &unrouted).map_err(fail)?;
                (unrouted, detector)
            }
            Err(kind) => return Err(fail(kind)),
        };
        for filter in filters {
            let compiled = compile_detection(&filter.detection, &routing).map_err(|kind| {
                fail(ErrorKind::invalid(
                    format!("filter {}", filter.id.as_deref().unwrap_or(&filter.title)),
                    kind.to_string(),
                ))
            })?;
            detector.filters.push(compiled);
        }
        Ok(CompiledRule {
            rule: self.rule_ref(rule),
            name: rule.name.clone(),
            fields: routing.fields,
            routes: routing.routes,
            detector,
            enabled: self.enabled,
            emits: true,
            file: self.file,
        })
    }

    fn correlation_ref(&self, rule: &CorrelationRule) -> RuleRef {
        RuleRef {
            id: rule
                .reference()
                .map_or_else(|| self.resource.clone(), str::to_owned),
            title: rule.title.clone(),
            level: self.level.or(rule.level).unwrap_or_default(),
            tags: rule.tags.clone(),
            author: rule.author.clone(),
            source: Some(self.source()),
        }
    }

    fn source(&self) -> RuleSource {
        RuleSource {
            resource: self.resource.clone(),
            path: self.path.clone(),
            commit: self.commit.clone(),
        }
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
            source: Some(self.source()),
        }
    }
}

/// How a rule set is compiled.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    pub mode: Mode,
    /// Bounds and lateness of the correlation windows.
    pub limits: WindowLimits,
    /// Values of the `%placeholder%`s `expand` values name.
    pub placeholders: Placeholders,
}

fn uses_expand(detection: &crate::rule::Detection) -> bool {
    detection.selections.iter().any(|(_, selection)| {
        let maps: Vec<&Vec<crate::rule::FieldMatch>> = match selection {
            crate::rule::Selection::Fields(m) => vec![m],
            crate::rule::Selection::AnyOf(maps) => maps.iter().collect(),
            crate::rule::Selection::Keywords(_) => Vec::new(),
        };
        maps.iter()
            .flat_map(|m| m.iter())
            .any(|m| m.modifiers.contains(&crate::modifier::Modifier::Expand))
    })
}

/// Whether rules are routed by logsource (the pipeline) or see raw events as given
/// (`kastell detect`, the regression data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Routed,
    Raw,
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
    /// The `name` correlations may refer to the rule by.
    name: Option<String>,
    /// How the rule's field names are read, for correlations' group-by fields.
    fields: FieldMapping,
    routes: Vec<Route>,
    detector: Detector,
    enabled: bool,
    /// Raises its own alerts: false when only correlations use it (no `generate`).
    emits: bool,
    /// Read from a bare Sigma file rather than a DetectionRule (for error messages).
    file: bool,
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

    /// Whether the rule's logsource is routed to a source this build ingests; a rule
    /// that is not compiles but applies to no event of the pipeline.
    pub fn routed(&self) -> bool {
        !self.routes.is_empty()
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

/// The enabled rules, indexed by the events they apply to, and the correlations over them.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<CompiledRule>,
    /// Rules for Suricata records, by EVE `event_type`.
    suricata_by_type: HashMap<&'static str, Vec<usize>>,
    /// Rules for every Suricata record.
    suricata_all: Vec<usize>,
    /// Rules for Wazuh alerts; each checks its own filter.
    wazuh: Vec<usize>,
    /// The prefilter: which rules an event can match, from literals and fields (see
    /// `prefilter`).
    index: RuleIndex,
    disabled: usize,
    correlations: Correlations,
    limits: WindowLimits,
    /// Rule id → suppression window (ms), for the rules of documents that set one.
    suppression: HashMap<String, i64>,
}

/// What one event raised: the detection rules that alert on it, and the correlations it
/// completed.
#[derive(Debug)]
pub struct Evaluation<'a, P> {
    pub rules: Vec<&'a RuleRef>,
    pub correlations: Vec<CorrelationHit<'a, P>>,
}

impl RuleSet {
    /// Compiles every document (each may hold several YAML documents: detection rules,
    /// correlations, filters); a rule that fails is reported and the others are kept.
    pub fn compile(documents: impl IntoIterator<Item = RuleDocument>) -> (RuleSet, Vec<RuleError>) {
        RuleSet::compile_with(documents, &CompileOptions::default())
    }

    /// [`RuleSet::compile`] in raw mode ([`RuleDocument::compile_raw`]).
    pub fn compile_raw(
        documents: impl IntoIterator<Item = RuleDocument>,
    ) -> (RuleSet, Vec<RuleError>) {
        let options = CompileOptions {
            mode: Mode::Raw,
            ..CompileOptions::default()
        };
        RuleSet::compile_with(documents, &options)
    }

    /// Compiles every document as `options` say. Filters apply to the rules they name in
    /// any document; correlations resolve the rules they name (by id or `name`) among all
    /// enabled rules and correlations.
    pub fn compile_with(
        documents: impl IntoIterator<Item = RuleDocument>,
        options: &CompileOptions,
    ) -> (RuleSet, Vec<RuleError>) {
        let documents: Vec<RuleDocument> = documents.into_iter().collect();
        let mut errors = Vec::new();
        let mut rules = Vec::new();
        let mut correlations = Vec::new();
        let mut filters = Vec::new();
        for (at, document) in documents.iter().enumerate() {
            for parsed in parse_documents(&document.sigma) {
                match parsed {
                    Ok(SigmaDocument::Rule(rule)) => rules.push((at, rule)),
                    Ok(SigmaDocument::Correlation(rule)) => correlations.push((at, rule)),
                    Ok(SigmaDocument::Filter(filter)) => filters.push(filter),
                    Err(error) => errors.push(document.named(error)),
                }
            }
        }
        let mut compiled = Vec::new();
        for (at, rule) in &rules {
            let applying: Vec<&FilterRule> =
                filters.iter().filter(|f| f.applies_to(rule)).collect();
            match documents[*at].compile_sigma(rule, options, &applying) {
                Ok(rule) => compiled.push(rule),
                Err(error) => errors.push(error),
            }
        }
        let (mut set, duplicates) = RuleSet::from_rules(compiled);
        errors.extend(duplicates);
        set.limits = options.limits;
        let windows: Vec<(usize, i64)> = documents
            .iter()
            .enumerate()
            .filter_map(|(at, d)| d.suppression.map(|w| (at, w.as_millis() as i64)))
            .collect();
        for (at, window) in windows {
            let resource = &documents[at].resource;
            let ids: Vec<String> = set
                .rules
                .iter()
                .filter(|r| resource_of(&r.rule) == *resource)
                .map(|r| r.rule.id.clone())
                .chain(
                    correlations
                        .iter()
                        .filter(|(c, _)| *c == at)
                        .map(|(_, rule)| documents[at].correlation_ref(rule).id),
                )
                .collect();
            for id in ids {
                set.suppression.insert(id, window);
            }
        }
        set.add_correlations(&documents, correlations, &mut errors);
        (set, errors)
    }

    fn add_correlations(
        &mut self,
        documents: &[RuleDocument],
        correlations: Vec<(usize, CorrelationRule)>,
        errors: &mut Vec<RuleError>,
    ) {
        let mut taken: HashMap<String, String> = self
            .rules
            .iter()
            .map(|r| {
                (
                    r.rule.id.clone(),
                    origin_label(&resource_of(&r.rule), r.file),
                )
            })
            .collect();
        let mut accepted = Vec::new();
        let mut origin = Vec::new();
        for (at, rule) in correlations {
            let document = &documents[at];
            if !document.enabled {
                self.disabled += 1;
                continue;
            }
            let rule_ref = document.correlation_ref(&rule);
            if let Some(other) = taken.get(&rule_ref.id) {
                errors.push(correlation_error(
                    document,
                    &rule,
                    ErrorKind::DuplicateId {
                        id: rule_ref.id.clone(),
                        other: other.clone(),
                    },
                ));
                continue;
            }
            taken.insert(
                rule_ref.id.clone(),
                origin_label(&document.resource, document.file),
            );
            origin.push((at, rule.clone()));
            accepted.push((rule, rule_ref));
        }
        let referable: Vec<Referable<'_>> = self
            .rules
            .iter()
            .map(|r| Referable {
                id: Some(r.rule.id.as_str()),
                name: r.name.as_deref(),
                fields: r.fields,
            })
            .collect();
        let (compiled, rejected, silent) = Correlations::compile(accepted, &referable, self.limits);
        for (i, kind) in rejected {
            let (at, rule) = &origin[i];
            errors.push(correlation_error(&documents[*at], rule, kind));
        }
        for (rule, silent) in self.rules.iter_mut().zip(silent) {
            rule.emits = !silent;
        }
        self.correlations = compiled;
    }

    /// Builds the set from compiled rules. A rule whose id an earlier rule already uses
    /// is refused, because alert ids and the audit trail rely on rule ids being unique.
    pub fn from_rules(rules: impl IntoIterator<Item = CompiledRule>) -> (RuleSet, Vec<RuleError>) {
        let mut set = RuleSet::default();
        let mut errors = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        for rule in rules {
            let resource = resource_of(&rule.rule);
            if let Some(other) = seen.get(&rule.rule.id) {
                errors.push(RuleError {
                    resource: Some(resource.into()),
                    file: rule.file,
                    rule_id: Some(rule.rule.id.as_str().into()),
                    title: Some(rule.rule.title.as_str().into()),
                    kind: ErrorKind::DuplicateId {
                        id: rule.rule.id.clone(),
                        other: other.clone(),
                    },
                });
                continue;
            }
            seen.insert(rule.rule.id.clone(), origin_label(&resource, rule.file));
            set.add(rule);
        }
        set.build_index();
        (set, errors)
    }

    fn build_index(&mut self) {
        let requirements: Vec<_> = self
            .rules
            .iter()
            .map(|r| rule_requirement(&r.detector, &r.routes))
            .collect();
        // One slot per distinct path any rule reads: the index walk fills the slots once
        // per event, and every candidate's checks read them instead of looking fields up.
        let mut slot_of: HashMap<String, u32> = HashMap::new();
        let mut slot_paths: Vec<String> = Vec::new();
        for rule in &mut self.rules {
            rule.detector.field_refs_mut(&mut |field| {
                field.slots = field
                    .paths
                    .iter()
                    .map(|path| {
                        *slot_of.entry(path.clone()).or_insert_with(|| {
                            slot_paths.push(path.clone());
                            (slot_paths.len() - 1) as u32
                        })
                    })
                    .collect();
            });
        }
        // The checks the walk can answer read its bits instead of their matchers.
        let mut items = Items::over(&requirements);
        for (rule, requirement) in self.rules.iter_mut().zip(&requirements) {
            items.decide_rule(&mut rule.detector, requirement.is_empty());
        }
        self.index = match RuleIndex::build(&requirements, &slot_paths, &items) {
            Ok(index) => {
                // The rules tried on every event answer from their slots where none of
                // their fields is present.
                for (rule, requirement) in self.rules.iter_mut().zip(&requirements) {
                    if requirement.is_empty() {
                        rule.detector.without_fields = WithoutFields::of(&rule.detector);
                    }
                    rule.detector.build_programs();
                }
                index
            }
            Err(error) => {
                // Only more needles on one path than aho-corasick can hold gets here;
                // trying every rule is slower but still right.
                tracing::warn!(rules = self.rules.len(), %error,
                    "rule index not built, every rule is tried on every event");
                // NB: without the walk neither slots nor items are filled in.
                for rule in &mut self.rules {
                    Items::undecide(&mut rule.detector);
                    rule.detector
                        .field_refs_mut(&mut |field| field.slots.clear());
                }
                RuleIndex::everything(self.rules.len())
            }
        };
        let stats = self.index.stats();
        tracing::debug!(
            rules = self.rules.len(),
            indexed = stats.indexed,
            atoms = stats.atoms,
            paths = stats.paths,
            decided_items = stats.decided_items,
            "rule index built"
        );
    }

    /// Fresh correlation windows for this set, bounded by the set's limits. `P` is what
    /// each event is remembered by (the event itself, or its index in an input).
    pub fn correlation_state<P>(&self) -> CorrelationState<P> {
        self.correlations.state(self.limits)
    }

    /// Whether an alert of `rule_id` about `key` (its group-by values, host…) at event
    /// time `time_ms` repeats one inside the rule's suppression window, and is to be
    /// dropped. Rules without a window are never suppressed.
    pub fn suppress<P>(
        &self,
        state: &mut CorrelationState<P>,
        rule_id: &str,
        key: &str,
        time_ms: i64,
    ) -> bool {
        let Some(&window) = self.suppression.get(rule_id) else {
            return false;
        };
        let longest = self.suppression.values().copied().max().unwrap_or(window);
        state.suppress(format!("{rule_id}\u{1f}{key}"), time_ms, window, longest)
    }

    /// Closes every correlation window still open whose condition is judged at window
    /// end (`lt`, `lte`, `eq`, `neq`), as at the end of a finite input such as a file,
    /// and returns those that fired. A running stage does not call it: its windows close
    /// as event time passes them.
    pub fn flush_correlations<'a, P: Clone>(
        &'a self,
        state: &mut CorrelationState<P>,
    ) -> Vec<CorrelationHit<'a, P>> {
        let mut hits = Vec::new();
        self.correlations.flush(state, &mut hits);
        hits
    }

    /// How to key the events topic so that every group of this set's correlations stays on
    /// one partition (see [`PartitionPlan`]).
    pub fn partition_plan(&self) -> crate::PartitionPlan {
        crate::PartitionPlan::from_group_fields(self.correlations.uniform_group_fields())
    }

    /// Correlation rules compiled (including those only other correlations use).
    pub fn correlation_count(&self) -> usize {
        self.correlations.len()
    }

    /// Every enabled rule whose detection the flat event satisfies, in the order added.
    /// No logsource routing: the mode of `kastell detect` and the regression data. Rules
    /// only correlations use are left out; see [`RuleSet::evaluate_raw_with`].
    pub fn evaluate_raw<'a>(
        &'a self,
        event: &'a Map<String, Value>,
    ) -> impl Iterator<Item = &'a RuleRef> + 'a {
        self.matching_raw(event)
            .into_iter()
            .filter(|&i| self.rules[i].emits)
            .map(|i| &self.rules[i].rule)
    }

    /// The rules the index leaves as candidates whose detection the event satisfies, in
    /// the order added.
    fn matching_raw(&self, event: &Map<String, Value>) -> Matched {
        self.index.with_candidates(event, |candidates, slots| {
            candidates
                .iter()
                .filter(|&i| self.rules[i].detector.matches_in(event, Some(slots)))
                .collect()
        })
    }

    /// [`RuleSet::evaluate_raw`] without the index: every rule is tried. The reference
    /// the index is checked against (`tests/prefilter.rs`); the results are the same, only
    /// slower.
    pub fn evaluate_raw_exhaustive<'a>(
        &'a self,
        event: &'a Map<String, Value>,
    ) -> impl Iterator<Item = &'a RuleRef> + 'a {
        self.rules
            .iter()
            .filter(move |r| r.emits && r.detector.matches(event))
            .map(|r| &r.rule)
    }

    /// [`RuleSet::evaluate_raw`] with correlations: matches feed `state` at event time
    /// `time_ms`, each remembered by what `payload` makes (called only when a correlation
    /// takes the match).
    pub fn evaluate_raw_with<'a, P: Clone>(
        &'a self,
        state: &mut CorrelationState<P>,
        event: &Map<String, Value>,
        time_ms: i64,
        payload: &dyn Fn() -> P,
    ) -> Evaluation<'a, P> {
        let matched = self.matching_raw(event);
        self.correlate(state, &matched, event, time_ms, payload)
    }

    /// [`RuleSet::evaluate`] with correlations: matches feed `state` at event time
    /// `time_ms`, each remembered by what `payload` makes (called only when a correlation
    /// takes the match).
    pub fn evaluate_with<'a, P: Clone>(
        &'a self,
        state: &mut CorrelationState<P>,
        event: &Event,
        time_ms: i64,
        payload: &dyn Fn() -> P,
    ) -> Evaluation<'a, P> {
        let matched = self.matching(event);
        self.correlate(state, &matched, event.as_map(), time_ms, payload)
    }

    fn correlate<'a, P: Clone>(
        &'a self,
        state: &mut CorrelationState<P>,
        matched: &[usize],
        event: &Map<String, Value>,
        time_ms: i64,
        payload: &dyn Fn() -> P,
    ) -> Evaluation<'a, P> {
        let mut correlations = Vec::new();
        for &i in matched {
            if self.correlations.wants(i) {
                self.correlations
                    .feed_rule(state, i, event, time_ms, payload(), &mut correlations);
            }
        }
        if self.correlations.closes_at_window_end() {
            self.correlations.advance(state, time_ms, &mut correlations);
        }
        Evaluation {
            rules: matched
                .iter()
                .filter(|&&i| self.rules[i].emits)
                .map(|&i| &self.rules[i].rule)
                .collect(),
            correlations,
        }
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

    /// How the rule index divides the rules (for benchmarks and logs).
    pub fn index_stats(&self) -> IndexStats {
        self.index.stats()
    }

    /// Empties the calling thread's memo of scanned values (`docs/detection.md`, "Scan
    /// memo"), so that a benchmark's next pass over the same events reads them as new
    /// instead of remembering every value from the pass before.
    pub fn forget_scanned_values(&self) {
        crate::prefilter::forget_scanned_values();
    }

    /// How many rules the index leaves to evaluate in full on the flat event; the others
    /// cannot match it. A measure of the index, for benchmarks.
    pub fn raw_candidates(&self, event: &Map<String, Value>) -> usize {
        self.index
            .with_candidates(event, |candidates, _| candidates.iter().count())
    }

    /// The rules the index leaves to evaluate in full on the flat event, in order.
    pub fn raw_candidate_rules(&self, event: &Map<String, Value>) -> Vec<&RuleRef> {
        self.index.with_candidates(event, |candidates, _| {
            candidates.iter().map(|i| &self.rules[i].rule).collect()
        })
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

    /// The enabled rules that raise alerts (detection rules, then correlations), in the
    /// order they were added.
    pub fn rules(&self) -> impl Iterator<Item = &RuleRef> {
        self.rules
            .iter()
            .filter(|r| r.emits)
            .map(|r| &r.rule)
            .chain(self.correlations.rules())
    }

    /// The rules the event matches and that raise alerts of their own, in the order they
    /// were added within each index bucket. Only the rules routed to the event's source
    /// are tried. Correlations need state: see [`RuleSet::evaluate_with`].
    pub fn evaluate<'a>(&'a self, event: &'a Event) -> impl Iterator<Item = &'a RuleRef> + 'a {
        self.matching(event)
            .into_iter()
            .filter(|&i| self.rules[i].emits)
            .map(|i| &self.rules[i].rule)
    }

    /// The rules routed to the event's source, in bucket order.
    fn routed<'a>(&'a self, event: &'a Event) -> impl Iterator<Item = usize> + 'a {
        let fields = event.as_map();
        let (specific, general): (&[usize], &[usize]) = match event.dataset() {
            Some(SURICATA_DATASET) => (
                logsource::eve_event_type(fields)
                    .and_then(|t| self.suricata_by_type.get(t))
                    .map_or(&[], Vec::as_slice),
                &self.suricata_all,
            ),
            Some(WAZUH_DATASET) => (&self.wazuh, &[]),
            _ => (&[], &[]),
        };
        specific.iter().chain(general).copied()
    }

    fn matching(&self, event: &Event) -> Matched {
        let fields = event.as_map();
        let dataset = event.dataset();
        let mut routed = self.routed(event).peekable();
        if routed.peek().is_none() {
            return Matched::new();
        }
        self.index.with_candidates(fields, |candidates, slots| {
            routed
                .filter(|&i| {
                    let rule = &self.rules[i];
                    candidates.contains(i)
                        && rule.accepts(dataset, fields)
                        && rule.detector.matches_in(fields, Some(slots))
                })
                .collect()
        })
    }

    /// [`RuleSet::evaluate`] without the index: every rule routed to the event's source is
    /// tried. The reference the index is checked against.
    pub fn evaluate_exhaustive<'a>(
        &'a self,
        event: &'a Event,
    ) -> impl Iterator<Item = &'a RuleRef> + 'a {
        let fields = event.as_map();
        self.routed(event)
            .filter(move |&i| {
                let rule = &self.rules[i];
                rule.emits && rule.accepts(event.dataset(), fields) && rule.detector.matches(fields)
            })
            .map(|i| &self.rules[i].rule)
    }
}

/// The positions of the rules an event matches: a few at most, so they stay inline.
type Matched = smallvec::SmallVec<[usize; 8]>;

/// How messages name where a rule came from: a DetectionRule resource, or a bare file.
fn origin_label(resource: &str, file: bool) -> String {
    if file {
        format!("file {resource}")
    } else {
        format!("DetectionRule {resource}")
    }
}

fn resource_of(rule: &RuleRef) -> String {
    rule.source
        .as_ref()
        .map(|s| s.resource.clone())
        .unwrap_or_default()
}

fn correlation_error(
    document: &RuleDocument,
    rule: &CorrelationRule,
    kind: ErrorKind,
) -> RuleError {
    RuleError {
        resource: Some(document.resource.as_str().into()),
        file: document.file,
        rule_id: rule.reference().map(Into::into),
        title: Some(rule.title.as_str().into()),
        kind,
    }
}
