//! Correlations compiled against a rule set: each referenced rule resolved (by id or
//! name, detection rule or correlation), group-by fields and aliases resolved through
//! the referenced rule's field mapping, and the chain order checked for cycles. Feeding a
//! rule match through [`Correlations::feed_rule`] updates the windows of every
//! correlation that references the rule, and a correlation that fires feeds the
//! correlations that reference it in turn.

use std::collections::{BTreeMap, HashMap};

use kastell_core::RuleRef;
use serde_json::{Map, Value};

use super::rule::{CorrelationRule, CorrelationType, CountCondition};
use super::window::{
    Aggregate, Closed, CorrelationWindows, Fired, Measure, WindowCounters, WindowLimits,
};
use crate::error::ErrorKind;
use crate::logsource::FieldMapping;
use crate::matcher::FieldRef;

/// What a correlation's referenced rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Producer {
    Rule(usize),
    Correlation(usize),
}

/// A referenced detection rule, as name resolution sees it.
pub(crate) struct Referable<'a> {
    pub id: Option<&'a str>,
    pub name: Option<&'a str>,
    pub fields: FieldMapping,
}

/// Where a group-by or aggregated value comes from on one input.
#[derive(Debug, Clone)]
enum Extract {
    /// A field of the matched event.
    Field(FieldRef),
    /// A group-by value of the correlation that fired.
    Group(String),
}

/// One referenced rule of one correlation.
#[derive(Debug, Clone)]
struct Input {
    correlation: usize,
    slot: usize,
    group: Vec<Extract>,
    value: Vec<Extract>,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledCorrelation {
    pub(crate) rule: RuleRef,
    kind: CorrelationType,
    condition: CountCondition,
    expression: Option<crate::condition::Condition>,
    /// The referenced rules by slot, as written (for `expression`).
    names: Vec<String>,
    percentile: Option<f64>,
    timespan_ms: i64,
    slots: usize,
    group_names: Vec<String>,
    /// Raises alerts: not referenced by another correlation, or by one with `generate`.
    pub(crate) emits: bool,
    /// Judged when a window closes (see `window.rs`), not as inputs arrive.
    closes_at_end: bool,
}

/// Every correlation of a rule set, and which inputs each rule match feeds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Correlations {
    list: Vec<CompiledCorrelation>,
    by_rule: HashMap<usize, Vec<Input>>,
    by_correlation: Vec<Vec<Input>>,
    /// Correlations whose condition is judged at window end; event time moves their
    /// watermark on every event, not only on their own inputs.
    at_end: Vec<usize>,
}

/// A correlation that fired.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationHit<'a, P> {
    pub rule: &'a RuleRef,
    /// Group-by field (or alias) → the group's value.
    pub group: BTreeMap<String, String>,
    /// What was fed with each event of the window, in event-time order.
    pub payload: Vec<P>,
    /// Event time (ms since the epoch) of the window's last event.
    pub time_ms: i64,
}

/// The windows of every correlation of a rule set, owned by whoever feeds events (the
/// stage's loop, one `kastell detect` run).
#[derive(Debug)]
pub struct CorrelationState<P> {
    windows: Vec<CorrelationWindows<P>>,
    limits: WindowLimits,
    /// Suppression: alert key → event time (ms) of the last alert let through.
    pub(crate) last_alert: HashMap<String, i64>,
    /// Alerts suppressed so far.
    pub(crate) suppressed: u64,
}

impl<P> CorrelationState<P> {
    /// Alerts dropped by a rule's suppression window so far.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// Whether an alert with `key` at event time `time_ms` repeats one let through less
    /// than `window_ms` before; if not, it becomes the one later repeats are measured
    /// from. Keys older than the longest window are forgotten as the map grows, so the
    /// map stays bounded by the alerts of one window.
    pub(crate) fn suppress(
        &mut self,
        key: String,
        time_ms: i64,
        window_ms: i64,
        longest_ms: i64,
    ) -> bool {
        if let Some(last) = self.last_alert.get(&key) {
            if time_ms >= *last && time_ms - *last < window_ms {
                self.suppressed += 1;
                return true;
            }
        }
        if self.last_alert.len() >= SUPPRESSION_SWEEP_AT && self.last_alert.len().is_power_of_two()
        {
            self.last_alert
                .retain(|_, last| time_ms.saturating_sub(*last) < longest_ms);
        }
        self.last_alert.insert(key, time_ms);
        false
    }

    /// What the eviction policy did, summed over all correlations.
    pub fn counters(&self) -> WindowCounters {
        self.windows
            .iter()
            .fold(WindowCounters::default(), |mut sum, w| {
                sum.late += w.counters.late;
                sum.evicted_events += w.counters.evicted_events;
                sum.evicted_groups += w.counters.evicted_groups;
                sum
            })
    }
}

/// Suppression keys kept before expired ones are swept (again at each doubling).
const SUPPRESSION_SWEEP_AT: usize = 4_096;

/// A correlation that failed to compile, by its position in the input.
pub(crate) type Rejected = (usize, ErrorKind);

impl Correlations {
    /// Compiles `correlations` (each with the RuleRef its alerts carry) against the
    /// detection rules `rules` (indexed as the rule set indexes them). Correlations that
    /// fail are returned with the reason; the others are kept.
    pub(crate) fn compile(
        correlations: Vec<(CorrelationRule, RuleRef)>,
        rules: &[Referable<'_>],
        limits: WindowLimits,
    ) -> (Correlations, Vec<Rejected>, Vec<bool>) {
        let mut rejected = Vec::new();
        // Names are resolved among the correlations that are themselves well-formed;
        // a chain through a rejected one is rejected in turn.
        let mut alive: Vec<bool> = vec![true; correlations.len()];
        for (i, (rule, _)) in correlations.iter().enumerate() {
            if let Some(error) = window_error(rule, limits) {
                rejected.push((i, error));
                alive[i] = false;
            }
        }
        let resolve = |reference: &str, alive: &[bool]| -> Option<Producer> {
            let correlation = correlations.iter().enumerate().find(|(i, (c, _))| {
                alive[*i]
                    && (c.id.as_deref() == Some(reference) || c.name.as_deref() == Some(reference))
            });
            if let Some((i, _)) = correlation {
                return Some(Producer::Correlation(i));
            }
            rules
                .iter()
                .position(|r| r.id == Some(reference) || r.name == Some(reference))
                .map(Producer::Rule)
        };
        // Resolve until nothing changes, since rejecting one correlation can leave a
        // reference to it dangling.
        let mut producers: Vec<Vec<Producer>> = vec![Vec::new(); correlations.len()];
        loop {
            let mut changed = false;
            for (i, (rule, _)) in correlations.iter().enumerate() {
                if !alive[i] {
                    continue;
                }
                let resolved: Result<Vec<Producer>, ErrorKind> = rule
                    .rules
                    .iter()
                    .map(|r| {
                        resolve(r, &alive).ok_or_else(|| ErrorKind::UnknownRuleReference(r.clone()))
                    })
                    .collect();
                let checked = resolved.and_then(|list| {
                    for (slot, (reference, producer)) in rule.rules.iter().zip(&list).enumerate() {
                        let detection = match producer {
                            Producer::Rule(r) => Some(&rules[*r]),
                            Producer::Correlation(_) => None,
                        };
                        build_input(rule, reference, detection, i, slot)?;
                    }
                    Ok(list)
                });
                match checked {
                    Ok(list) => producers[i] = list,
                    Err(error) => {
                        rejected.push((i, error));
                        alive[i] = false;
                        changed = true;
                    }
                }
            }
            if let Some(i) = first_cycle(&producers, &alive) {
                rejected.push((
                    i,
                    ErrorKind::CorrelationCycle(correlations[i].0.title.clone()),
                ));
                alive[i] = false;
                changed = true;
            }
            if !changed {
                break;
            }
        }

        let mut set = Correlations::default();
        // Compiled positions of the surviving correlations.
        let position: Vec<Option<usize>> = alive
            .iter()
            .scan(0, |next, &ok| {
                Some(ok.then(|| {
                    *next += 1;
                    *next - 1
                }))
            })
            .collect();
        let mut none_generate: Vec<bool> = vec![true; rules.len()];
        let mut referenced_rule = vec![false; rules.len()];
        let mut inputs_by_rule: HashMap<usize, Vec<Input>> = HashMap::new();
        let mut inputs_by_correlation: Vec<Vec<Input>> =
            vec![Vec::new(); alive.iter().filter(|a| **a).count()];
        let mut correlation_referenced = vec![false; correlations.len()];
        let mut correlation_generates = vec![false; correlations.len()];
        for (i, (rule, rule_ref)) in correlations.iter().enumerate() {
            let Some(me) = position[i] else { continue };
            // Every input was built once while resolving, so this cannot fail now.
            let inputs: Vec<(Producer, Input)> = rule
                .rules
                .iter()
                .zip(&producers[i])
                .enumerate()
                .filter_map(|(slot, (reference, producer))| {
                    let detection = match producer {
                        Producer::Rule(r) => Some(&rules[*r]),
                        Producer::Correlation(_) => None,
                    };
                    build_input(rule, reference, detection, me, slot)
                        .ok()
                        .map(|input| (*producer, input))
                })
                .collect();
            for (producer, input) in inputs {
                match producer {
                    Producer::Rule(r) => {
                        referenced_rule[r] = true;
                        none_generate[r] &= !rule.generate;
                        inputs_by_rule.entry(r).or_default().push(input);
                    }
                    Producer::Correlation(c) => {
                        correlation_referenced[c] = true;
                        correlation_generates[c] |= rule.generate;
                        if let Some(p) = position[c] {
                            inputs_by_correlation[p].push(input);
                        }
                    }
                }
            }
            set.list.push(CompiledCorrelation {
                rule: rule_ref.clone(),
                kind: rule.kind,
                condition: rule.condition.clone(),
                expression: rule.expression.clone(),
                names: rule.rules.clone(),
                percentile: rule.percentile,
                timespan_ms: rule.timespan_ms,
                slots: rule.rules.len(),
                group_names: rule.group_by.clone(),
                emits: true,
                closes_at_end: false,
            });
        }
        set.by_rule = inputs_by_rule;
        set.by_correlation = inputs_by_correlation;
        for correlation in &mut set.list {
            correlation.closes_at_end = correlation.aggregate().closes_at_end();
        }
        set.at_end = (0..set.list.len())
            .filter(|&c| set.list[c].closes_at_end)
            .collect();
        for (i, compiled_at) in position.iter().enumerate() {
            if let Some(p) = compiled_at {
                if let Some(c) = set.list.get_mut(*p) {
                    c.emits = !correlation_referenced[i] || correlation_generates[i];
                }
            }
        }
        let silent: Vec<bool> = referenced_rule
            .iter()
            .zip(&none_generate)
            .map(|(referenced, generates)| *referenced && *generates)
            .collect();
        (set, rejected, silent)
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn rules(&self) -> impl Iterator<Item = &RuleRef> {
        self.list.iter().filter(|c| c.emits).map(|c| &c.rule)
    }

    pub(crate) fn state<P>(&self, limits: WindowLimits) -> CorrelationState<P> {
        CorrelationState {
            windows: (0..self.list.len())
                .map(|_| CorrelationWindows::default())
                .collect(),
            limits,
            last_alert: HashMap::new(),
            suppressed: 0,
        }
    }

    /// Whether any correlation is judged at window end (and so needs every event's time).
    pub(crate) fn closes_at_window_end(&self) -> bool {
        !self.at_end.is_empty()
    }

    /// For every correlation, the group-by fields that every one of its inputs reads from
    /// the same event paths: two events in one group of that correlation agree on the text
    /// of each of them. A field fed by another correlation's group, or read through
    /// different paths by different referenced rules (aliases, field mappings), is left
    /// out. Correlations without inputs (they never fire) are left out.
    pub(crate) fn uniform_group_fields(&self) -> Vec<Vec<FieldRef>> {
        let mut per_correlation: Vec<Vec<&Input>> = vec![Vec::new(); self.list.len()];
        let fed_by_rules = self.by_rule.values().flatten();
        let fed_by_correlations = self.by_correlation.iter().flatten();
        for input in fed_by_rules.chain(fed_by_correlations) {
            if let Some(inputs) = per_correlation.get_mut(input.correlation) {
                inputs.push(input);
            }
        }
        per_correlation
            .into_iter()
            .zip(&self.list)
            .filter(|(inputs, _)| !inputs.is_empty())
            .map(|(inputs, correlation)| {
                (0..correlation.group_names.len())
                    .filter_map(|slot| {
                        let mut fields = inputs.iter().map(|input| match input.group.get(slot) {
                            Some(Extract::Field(field)) => Some(field),
                            _ => None,
                        });
                        let first = fields.next()??;
                        fields
                            .all(|field| field == Some(first))
                            .then(|| first.clone())
                    })
                    .collect()
            })
            .collect()
    }

    /// Whether any correlation takes matches of detection rule `rule`.
    pub(crate) fn wants(&self, rule: usize) -> bool {
        self.by_rule.contains_key(&rule)
    }

    /// Feeds a match of detection rule `rule` on `event` at event time `time_ms`; every
    /// correlation that fires and raises alerts is pushed to `out`.
    pub(crate) fn feed_rule<'a, P: Clone>(
        &'a self,
        state: &mut CorrelationState<P>,
        rule: usize,
        event: &Map<String, Value>,
        time_ms: i64,
        payload: P,
        out: &mut Vec<CorrelationHit<'a, P>>,
    ) {
        let Some(inputs) = self.by_rule.get(&rule) else {
            return;
        };
        for input in inputs {
            let source = Source::Event(event);
            self.feed(state, input, &source, time_ms, vec![payload.clone()], out);
        }
    }

    /// Moves event time to `time_ms` for the correlations judged at window end and
    /// pushes those whose windows closed and fired (and what they feed) to `out`.
    pub(crate) fn advance<'a, P: Clone>(
        &'a self,
        state: &mut CorrelationState<P>,
        time_ms: i64,
        out: &mut Vec<CorrelationHit<'a, P>>,
    ) {
        for &c in &self.at_end {
            if let Some(window) = state.windows.get_mut(c) {
                window.advance(time_ms);
            }
            self.close_windows(state, c, false, out);
        }
    }

    /// Closes every open window judged at its end, as at the end of a finite input;
    /// correlations fed by one that fires are closed in turn.
    pub(crate) fn flush<'a, P: Clone>(
        &'a self,
        state: &mut CorrelationState<P>,
        out: &mut Vec<CorrelationHit<'a, P>>,
    ) {
        // Each round empties the windows it closes; a chain feeds the next round. The
        // rounds end because chains have no cycles.
        loop {
            let before = out.len();
            for &c in &self.at_end {
                self.close_windows(state, c, true, out);
            }
            if out.len() == before {
                break;
            }
        }
    }

    fn close_windows<'a, P: Clone>(
        &'a self,
        state: &mut CorrelationState<P>,
        correlation: usize,
        flush: bool,
        out: &mut Vec<CorrelationHit<'a, P>>,
    ) {
        let Some(compiled) = self.list.get(correlation) else {
            return;
        };
        let limits = state.limits;
        let closed: Vec<Closed<P>> = match state.windows.get_mut(correlation) {
            Some(window) => window.close_due(compiled.aggregate(), limits, flush),
            None => return,
        };
        for (group, fired) in closed {
            self.emit(state, correlation, group, fired, out);
        }
    }

    fn feed<'a, P: Clone>(
        &'a self,
        state: &mut CorrelationState<P>,
        input: &Input,
        source: &Source<'_>,
        time_ms: i64,
        payload: Vec<P>,
        out: &mut Vec<CorrelationHit<'a, P>>,
    ) {
        let Some(correlation) = self.list.get(input.correlation) else {
            return;
        };
        // An input without every group-by value belongs to no group.
        let Some(group) = input
            .group
            .iter()
            .map(|e| source.text(e))
            .collect::<Option<Vec<String>>>()
        else {
            return;
        };
        let measure = match correlation.kind {
            CorrelationType::EventCount
            | CorrelationType::Temporal
            | CorrelationType::TemporalOrdered => Measure::None,
            CorrelationType::ValueCount => match input
                .value
                .iter()
                .map(|e| source.text(e))
                .collect::<Option<Vec<String>>>()
            {
                Some(values) => Measure::Key(values.join("\u{1f}")),
                None => return,
            },
            _ => match input.value.first().and_then(|e| source.number(e)) {
                Some(n) => Measure::Number(n),
                None => return,
            },
        };
        let limits = state.limits;
        let Some(window) = state.windows.get_mut(input.correlation) else {
            return;
        };
        let fired = window.add(
            correlation.aggregate(),
            limits,
            group.clone(),
            time_ms,
            input.slot,
            measure,
            payload,
        );
        match fired {
            Some(fired) => self.emit(state, input.correlation, group, fired, out),
            None if correlation.closes_at_end => {
                self.close_windows(state, input.correlation, false, out)
            }
            None => {}
        }
    }

    /// A window of `correlation` fired: feeds the correlations that reference it, and
    /// pushes the hit when the correlation raises alerts.
    fn emit<'a, P: Clone>(
        &'a self,
        state: &mut CorrelationState<P>,
        correlation_at: usize,
        group: Vec<String>,
        fired: Fired<P>,
        out: &mut Vec<CorrelationHit<'a, P>>,
    ) {
        let Some(correlation) = self.list.get(correlation_at) else {
            return;
        };
        let group: BTreeMap<String, String> =
            correlation.group_names.iter().cloned().zip(group).collect();
        if let Some(next) = self.by_correlation.get(correlation_at) {
            let source = Source::Group(&group);
            for input in next {
                self.feed(
                    state,
                    input,
                    &source,
                    fired.time,
                    fired.payload.clone(),
                    out,
                );
            }
        }
        if correlation.emits {
            out.push(CorrelationHit {
                rule: &correlation.rule,
                group,
                payload: fired.payload,
                time_ms: fired.time,
            });
        }
    }
}

impl CompiledCorrelation {
    fn aggregate(&self) -> Aggregate<'_> {
        Aggregate {
            kind: self.kind,
            condition: &self.condition,
            expression: self.expression.as_ref(),
            names: &self.names,
            percentile: self.percentile,
            timespan_ms: self.timespan_ms,
            slots: self.slots,
        }
    }
}

/// What an input's values are read from.
enum Source<'e> {
    Event(&'e Map<String, Value>),
    Group(&'e BTreeMap<String, String>),
}

impl Source<'_> {
    fn text(&self, extract: &Extract) -> Option<String> {
        match (self, extract) {
            (Source::Event(event), Extract::Field(field)) => field.first_text(event),
            (Source::Group(group), Extract::Group(name)) => group.get(name).cloned(),
            _ => None,
        }
    }

    fn number(&self, extract: &Extract) -> Option<f64> {
        match (self, extract) {
            (Source::Event(event), Extract::Field(field)) => field.first_number(event),
            (Source::Group(group), Extract::Group(name)) => {
                group.get(name).and_then(|v| v.trim().parse().ok())
            }
            _ => None,
        }
    }
}

/// A window that cannot hold enough events to reach the condition would never fire.
fn window_error(rule: &CorrelationRule, limits: WindowLimits) -> Option<ErrorKind> {
    let counts_events = matches!(
        rule.kind,
        CorrelationType::EventCount | CorrelationType::ValueCount
    );
    let needed = rule.condition.minimum();
    (counts_events && needed > limits.max_events_per_group as f64).then(|| {
        ErrorKind::invalid(
            "correlation.condition",
            format!(
                "needs {needed} events in one window, more than the {} a window keeps",
                limits.max_events_per_group
            ),
        )
    })
}

/// The input of correlation `rule` from its referenced rule `reference` (a detection
/// rule, or `None` for a correlation): group-by names through aliases, then through the
/// detection rule's field mapping.
fn build_input(
    rule: &CorrelationRule,
    reference: &str,
    detection: Option<&Referable<'_>>,
    correlation: usize,
    slot: usize,
) -> Result<Input, ErrorKind> {
    let field_of = |name: &str| -> Result<String, ErrorKind> {
        let Some(per_rule) = rule.aliases.get(name) else {
            return Ok(name.to_owned());
        };
        let keys = [
            Some(reference),
            detection.and_then(|d| d.name),
            detection.and_then(|d| d.id),
        ];
        keys.iter()
            .flatten()
            .find_map(|k| per_rule.get(*k))
            .cloned()
            .ok_or_else(|| {
                ErrorKind::invalid(
                    format!("correlation.aliases.{name}"),
                    format!("no field for rule `{reference}`"),
                )
            })
    };
    let extract = |field: String| match detection {
        Some(d) => {
            let resolved = d.fields.resolve(&field);
            Extract::Field(FieldRef::new(resolved.paths, resolved.any))
        }
        None => Extract::Group(field),
    };
    let group = rule
        .group_by
        .iter()
        .map(|name| field_of(name).map(extract))
        .collect::<Result<Vec<_>, _>>()?;
    let value = rule.fields.iter().map(|f| extract(f.clone())).collect();
    Ok(Input {
        correlation,
        slot,
        group,
        value,
    })
}

/// A correlation that reaches itself through its references, if any.
fn first_cycle(producers: &[Vec<Producer>], alive: &[bool]) -> Option<usize> {
    fn visit(i: usize, producers: &[Vec<Producer>], alive: &[bool], marks: &mut [u8]) -> bool {
        if marks[i] == 1 {
            return true;
        }
        if marks[i] == 2 {
            return false;
        }
        marks[i] = 1;
        for p in &producers[i] {
            if let Producer::Correlation(c) = p {
                if alive[*c] && visit(*c, producers, alive, marks) {
                    return true;
                }
            }
        }
        marks[i] = 2;
        false
    }
    let mut marks = vec![0u8; producers.len()];
    (0..producers.len())
        .find(|&i| alive[i] && marks[i] == 0 && visit(i, producers, alive, &mut marks))
}
