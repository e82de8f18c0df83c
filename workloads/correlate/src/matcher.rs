//! The compiled form of a detection and its evaluation over an event's JSON.
//!
//! Everything a rule needs at match time is prepared by the compile step: field names
//! resolved to candidate paths, string values classified into exact/prefix/suffix/
//! substring tests (substring lists share one Aho-Corasick automaton), wildcards and
//! `re` values compiled to regular expressions, networks parsed. Evaluation walks the
//! event's JSON in place and allocates nothing for string, boolean or integer values.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use aho_corasick::AhoCorasick;
use ipnet::IpNet;
use memchr::memmem;
use regex::Regex;
use serde_json::{Map, Value};
use smallvec::SmallVec;

use crate::program::Program;

/// A detection ready to run: selections and the condition over them.
#[derive(Debug, Clone)]
pub(crate) struct Detector {
    pub(crate) selections: Vec<SelectionMatcher>,
    pub(crate) condition: Expr,
    /// Meta-filters applied to the rule: each must hold as well.
    pub(crate) filters: Vec<Detector>,
    /// Set by the rule set for a rule its index tries on every event: the answer on
    /// events that hold none of the fields the detection reads.
    pub(crate) without_fields: Option<WithoutFields>,
    /// Set by the rule set once its index has decided the checks it can: the condition as
    /// the branch program candidates are evaluated by.
    pub(crate) program: Option<Program>,
}

/// A detection's answer on an event where none of the fields it reads is present, known
/// from evaluating it once on an empty event. A rule that requires no field (a rule of
/// negations, such as "no `Image` under a known folder") is tried on every event, and on
/// most events none of its fields is there; its slots say so at the cost of a few array
/// reads instead of a walk through its selections.
#[derive(Debug, Clone)]
pub(crate) struct WithoutFields {
    slots: Box<[u32]>,
    answer: bool,
}

impl WithoutFields {
    /// `None` when the detection reads more than named fields with slots (keywords read
    /// every value of the event).
    pub(crate) fn of(detector: &Detector) -> Option<WithoutFields> {
        if detector.reads_keywords() {
            return None;
        }
        let mut slots = Vec::new();
        let mut every_field_slotted = true;
        detector.clone().field_refs_mut(&mut |field| {
            every_field_slotted &= !field.slots.is_empty();
            slots.extend_from_slice(&field.slots);
        });
        slots.sort_unstable();
        slots.dedup();
        every_field_slotted.then(|| WithoutFields {
            slots: slots.into(),
            answer: detector.matches(&Map::new()),
        })
    }
}

impl Detector {
    /// Evaluates the detection, every field looked up on the event itself.
    pub(crate) fn matches(&self, event: &Map<String, Value>) -> bool {
        self.matches_in(event, None)
    }

    /// Evaluates the detection, reading fields from the event's slot table where it has
    /// them (see [`Slots`]); the result is the same as [`Detector::matches`].
    pub(crate) fn matches_in(&self, event: &Map<String, Value>, slots: Option<&Slots>) -> bool {
        if let (Some(without), Some(table)) = (&self.without_fields, slots) {
            if without.slots.iter().all(|&slot| table.absent(slot)) {
                return without.answer;
            }
        }
        let program = match (&self.program, slots) {
            (Some(program), Some(table)) => program.run(&self.selections, event, table),
            _ => None,
        };
        let condition =
            program.unwrap_or_else(|| self.condition.eval(&self.selections, event, slots));
        condition && self.filters.iter().all(|f| f.matches_in(event, slots))
    }

    /// Lays out the detection's condition, and its filters', as branch programs (see
    /// [`Program`]), once the rule set has given its checks their slots and bits.
    pub(crate) fn build_programs(&mut self) {
        self.program = Program::of(self);
        for filter in &mut self.filters {
            filter.build_programs();
        }
    }

    fn reads_keywords(&self) -> bool {
        let keywords = self.selections.iter().any(|selection| {
            selection
                .any_of
                .iter()
                .flatten()
                .any(|check| matches!(check, Check::Keywords(..)))
        });
        keywords || self.filters.iter().any(Detector::reads_keywords)
    }

    /// Every field reference of the detection and its filters, for slot assignment.
    pub(crate) fn field_refs_mut(&mut self, f: &mut dyn FnMut(&mut FieldRef)) {
        for selection in &mut self.selections {
            for check in selection.any_of.iter_mut().flatten() {
                if let Check::Field(check) = check {
                    f(&mut check.field);
                    check.test.field_refs_mut(f);
                }
            }
        }
        for filter in &mut self.filters {
            filter.field_refs_mut(f);
        }
    }
}

/// Where the rule set's index walk found each field of one event, by slot number (a
/// number per distinct event path any rule reads, given when the set is built). Reading a
/// field through its slot replaces a lookup by name (a hash of the key in the event's
/// map) for every check of every candidate rule with one array access.
///
/// A slot says what a lookup of its path would find: nothing, or the one node at the path.
/// Where the walk met the path more than once (objects inside a list, or a flat dotted key
/// beside nested objects spelling the same path) it holds `MANY`, and the field is looked
/// up by name as before, so the result never differs from [`lookup`]'s.
pub(crate) struct Slots<'a> {
    pub(crate) generation: u32,
    /// Per slot: the generation (event) it was last written in, and the node's position
    /// in `nodes` or [`Slots::MANY`].
    pub(crate) at: &'a [(u32, u32)],
    pub(crate) nodes: &'a [&'a Value],
    /// The detection items the walk decided (see [`Decided`]), one bit per item.
    pub(crate) items: &'a [u64],
}

enum SlotRead<'a> {
    Absent,
    One(&'a Value),
    /// Not known from the walk: look the path up.
    Unknown,
}

impl<'a> Slots<'a> {
    pub(crate) const MANY: u32 = u32::MAX;

    fn item(&self, item: u32) -> bool {
        self.items
            .get(item as usize / 64)
            .is_some_and(|word| word & (1 << (item % 64)) != 0)
    }

    /// The walk's answer for a decided item list: every item set (`all`) or the one.
    pub(crate) fn decided(&self, decided: Decided) -> bool {
        (decided.first..decided.first + decided.count).all(|item| self.item(item))
    }

    /// Whether the walk's bits answer a check on `field` for this event: not when it met
    /// one of the field's paths more than once, where a lookup by name reads only one of
    /// the nodes (see [`Slots`]).
    fn decides(&self, field: &FieldRef) -> bool {
        !field.slots.is_empty() && field.slots.iter().all(|&slot| self.decides_slot(slot))
    }

    /// Whether the walk's bits answer a check on the one path of `slot` (see
    /// [`Slots::decides`]).
    pub(crate) fn decides_slot(&self, slot: u32) -> bool {
        self.at
            .get(slot as usize)
            .is_some_and(|&(generation, node)| generation != self.generation || node != Self::MANY)
    }

    /// Whether the walk met no node at the slot's path in this event.
    fn absent(&self, slot: u32) -> bool {
        matches!(self.read(slot), SlotRead::Absent)
    }

    fn read(&self, slot: u32) -> SlotRead<'a> {
        match self.at.get(slot as usize) {
            Some(&(generation, _)) if generation != self.generation => SlotRead::Absent,
            Some(&(_, Self::MANY)) | None => SlotRead::Unknown,
            Some(&(_, node)) => self
                .nodes
                .get(node as usize)
                .map_or(SlotRead::Unknown, |n| SlotRead::One(n)),
        }
    }
}

/// The condition with selection names replaced by their index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    Selection(usize),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    fn eval(
        &self,
        selections: &[SelectionMatcher],
        event: &Map<String, Value>,
        slots: Option<&Slots>,
    ) -> bool {
        match self {
            Expr::Selection(i) => selections[*i].matches(event, slots),
            Expr::Not(inner) => !inner.eval(selections, event, slots),
            Expr::And(all) => all.iter().all(|e| e.eval(selections, event, slots)),
            Expr::Or(any) => any.iter().any(|e| e.eval(selections, event, slots)),
        }
    }
}

/// A search identifier: any of its conjunctions holds (one for a map, one per map of a
/// list of maps).
#[derive(Debug, Clone)]
pub(crate) struct SelectionMatcher {
    pub(crate) any_of: Vec<Vec<Check>>,
}

impl SelectionMatcher {
    fn matches(&self, event: &Map<String, Value>, slots: Option<&Slots>) -> bool {
        self.any_of
            .iter()
            .any(|checks| checks.iter().all(|c| c.matches(event, slots)))
    }
}

/// One test of a selection.
#[derive(Debug, Clone)]
pub(crate) enum Check {
    Field(FieldCheck),
    /// Values searched in every scalar of the event, and the items deciding them.
    Keywords(ValueTest, Option<Decided>),
}

impl Check {
    pub(crate) fn matches(&self, event: &Map<String, Value>, slots: Option<&Slots>) -> bool {
        match self {
            Check::Field(check) => match (check.decided, slots) {
                (Some(decided), Some(slots)) if slots.decides(&check.field) => {
                    slots.decided(decided)
                }
                _ => check.holds(&check.test, event, slots),
            },
            Check::Keywords(test, decided) => match (decided, slots) {
                // NB: the walk reads every scalar when there are keyword items, as the
                // search below does, so its bits always answer.
                (Some(decided), Some(slots)) => slots.decided(*decided),
                _ => test.matches_with(|predicate| any_leaf_in_map(event, predicate)),
            },
        }
    }
}

/// Detection items (a value list of one check, or each value of an `|all` list) whose
/// answer the rule set's index walk computes for every event, one bit each: the check is
/// then read from the bits instead of running its matchers (see `prefilter`). Items
/// `first .. first + count` belong to the check; with `|all` each must be set, else the
/// list is one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decided {
    pub(crate) first: u32,
    pub(crate) count: u32,
}

/// A field and what its value must be.
#[derive(Debug, Clone)]
pub(crate) struct FieldCheck {
    pub(crate) field: FieldRef,
    pub(crate) test: FieldTest,
    /// Set by the rule set when its index decides the test (only `Values` tests).
    pub(crate) decided: Option<Decided>,
}

impl FieldCheck {
    fn holds(&self, test: &FieldTest, event: &Map<String, Value>, slots: Option<&Slots>) -> bool {
        match test {
            FieldTest::Exists(want) => self.field.present(event, slots) == *want,
            // Missing, JSON null and an empty list all mean "no value".
            FieldTest::Null => !self.field.any_value_in(event, slots, &mut |v| !v.is_null()),
            FieldTest::Values(test) => {
                test.matches_with(|predicate| self.field.any_value_in(event, slots, predicate))
            }
            // `neq`: the field has a value, and the test does not hold.
            FieldTest::Not(inner) => {
                self.field.any_value_in(event, slots, &mut |v| !v.is_null())
                    && !self.holds(inner, event, slots)
            }
            FieldTest::FieldRef {
                others,
                position,
                cased,
            } => others.iter().any(|other| {
                self.field.any_value_in(event, slots, &mut |mine| {
                    with_text(mine, |mine| {
                        other.any_value_in(event, slots, &mut |theirs| {
                            with_text(theirs, |theirs| position.holds(mine, theirs, *cased))
                        })
                    })
                })
            }),
            FieldTest::TimePart(part, test) => test.matches_with(|predicate| {
                self.field.any_value_in(event, slots, &mut |v| {
                    part.of(v).is_some_and(|n| predicate(&Value::from(n)))
                })
            }),
        }
    }
}

/// Where `fieldref` looks for the other field's value in this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    Whole,
    Contains,
    StartsWith,
    EndsWith,
}

impl Position {
    /// Without allocating when the comparison is cased or both texts are ASCII (where
    /// ASCII folding is Unicode lower-casing); the rule tried most often of all SigmaHQ
    /// (an image run by itself, `Image|fieldref: ParentImage`) compares on every process
    /// creation.
    fn holds(self, mine: &str, theirs: &str, cased: bool) -> bool {
        if cased || (mine.is_ascii() && theirs.is_ascii()) {
            self.holds_bytes(mine.as_bytes(), theirs.as_bytes(), cased)
        } else {
            let (mine, theirs) = (mine.to_lowercase(), theirs.to_lowercase());
            self.holds_bytes(mine.as_bytes(), theirs.as_bytes(), true)
        }
    }

    /// The comparison with the value matchers' [`same`] and [`contains`].
    fn holds_bytes(self, mine: &[u8], theirs: &[u8], cased: bool) -> bool {
        if theirs.len() > mine.len() {
            return false;
        }
        match self {
            Position::Whole => mine.len() == theirs.len() && same(mine, theirs, cased),
            Position::Contains => contains(mine, theirs, cased),
            Position::StartsWith => same(&mine[..theirs.len()], theirs, cased),
            Position::EndsWith => same(&mine[mine.len() - theirs.len()..], theirs, cased),
        }
    }
}

/// The part of a date the time modifiers take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimePart {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl TimePart {
    /// The part of the date `value` holds (RFC 3339, or `YYYY-MM-DD[ T]hh:mm:ss`), in
    /// the timezone written in it; ISO week number for `week`.
    fn of(self, value: &Value) -> Option<i64> {
        use chrono::{Datelike, Timelike};
        let text = value.as_str()?;
        let time = chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.naive_local())
            .ok()
            .or_else(|| {
                ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                    .iter()
                    .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
            })?;
        Some(i64::from(match self {
            TimePart::Minute => time.minute(),
            TimePart::Hour => time.hour(),
            TimePart::Day => time.day(),
            TimePart::Week => time.iso_week().week(),
            TimePart::Month => time.month(),
            TimePart::Year => return Some(i64::from(time.year())),
        }))
    }
}

#[derive(Debug, Clone)]
pub(crate) enum FieldTest {
    /// `|exists: true/false`.
    Exists(bool),
    /// `field: null`.
    Null,
    Values(ValueTest),
    /// `neq`: present, and the inner test fails.
    Not(Box<FieldTest>),
    /// `fieldref`: compared with other fields' values.
    FieldRef {
        others: Vec<FieldRef>,
        position: Position,
        cased: bool,
    },
    /// `minute` … `year`: the date's part, then the values.
    TimePart(TimePart, ValueTest),
}

impl FieldTest {
    fn field_refs_mut(&mut self, f: &mut dyn FnMut(&mut FieldRef)) {
        match self {
            FieldTest::Not(inner) => inner.field_refs_mut(f),
            FieldTest::FieldRef { others, .. } => others.iter_mut().for_each(f),
            FieldTest::Exists(_)
            | FieldTest::Null
            | FieldTest::Values(_)
            | FieldTest::TimePart(..) => {}
        }
    }

    /// Whether the test fails whenever the field has no value.
    pub(crate) fn needs_value(&self) -> bool {
        match self {
            FieldTest::Exists(want) => *want,
            FieldTest::Null => false,
            // Some matcher must be satisfied by a value (with `all`, each must).
            FieldTest::Values(test) | FieldTest::TimePart(_, test) => !test.matchers.is_empty(),
            // `neq` requires a non-null value before negating.
            FieldTest::Not(_) => true,
            FieldTest::FieldRef { others, .. } => !others.is_empty(),
        }
    }
}

/// A list of value matchers, ORed or (with `|all`) ANDed; each is satisfied by any one
/// value the field (or, for keywords, the event) has.
#[derive(Debug, Clone)]
pub(crate) struct ValueTest {
    pub(crate) matchers: Vec<ValueMatcher>,
    pub(crate) all: bool,
}

impl ValueTest {
    /// `any_value(predicate)` says whether some value satisfies the predicate.
    fn matches_with(
        &self,
        mut any_value: impl FnMut(&mut dyn FnMut(&Value) -> bool) -> bool,
    ) -> bool {
        if self.all {
            self.matchers
                .iter()
                .all(|m| any_value(&mut |v| m.matches(v)))
        } else {
            any_value(&mut |v| self.matchers.iter().any(|m| m.matches(v)))
        }
    }
}

/// A field name resolved to the event paths to try, in order: the first one present
/// holds the field's value, or, with `any`, every path is a spelling of the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldRef {
    pub(crate) paths: Vec<String>,
    pub(crate) any: bool,
    /// The slot of each path in its rule set's slot table; empty outside a set. Inline
    /// for the one or two paths of nearly every field: a candidate's decided checks read
    /// them first, and a pointer to a separate allocation was a cache miss of its own.
    pub(crate) slots: SmallVec<[u32; 2]>,
}

impl FieldRef {
    pub(crate) fn new(paths: Vec<String>, any: bool) -> FieldRef {
        FieldRef {
            paths,
            any,
            slots: SmallVec::new(),
        }
    }

    fn present(&self, event: &Map<String, Value>, slots: Option<&Slots>) -> bool {
        self.paths.iter().enumerate().any(|(i, path)| {
            let mut visit = Visit::default();
            self.visit_path(i, path, event, slots, &mut |_| true, &mut visit);
            visit.found
        })
    }

    /// Visits the values at the `i`th path: from its slot when the walk knows it, else
    /// by looking the path up.
    fn visit_path(
        &self,
        i: usize,
        path: &str,
        event: &Map<String, Value>,
        slots: Option<&Slots>,
        predicate: &mut dyn FnMut(&Value) -> bool,
        visit: &mut Visit,
    ) {
        let read = match (slots, self.slots.get(i)) {
            (Some(table), Some(&slot)) => table.read(slot),
            _ => SlotRead::Unknown,
        };
        match read {
            SlotRead::Absent => {}
            SlotRead::One(node) => {
                visit.found = true;
                leaves(node, predicate, visit);
            }
            SlotRead::Unknown => lookup(event, path, predicate, visit),
        }
    }

    /// The text of the field's first scalar value (for group-by keys).
    pub(crate) fn first_text(&self, event: &Map<String, Value>) -> Option<String> {
        let mut found = None;
        self.any_value(event, &mut |v| match v {
            Value::String(s) => {
                found = Some(s.clone());
                true
            }
            Value::Number(_) | Value::Bool(_) => {
                found = Some(v.to_string());
                true
            }
            _ => false,
        });
        found
    }

    /// The field's first numeric value (a number, or a string that reads as one).
    pub(crate) fn first_number(&self, event: &Map<String, Value>) -> Option<f64> {
        let mut found = None;
        self.any_value(event, &mut |v| {
            found = numeric(v);
            found.is_some()
        });
        found
    }

    /// Whether a value of the field satisfies `predicate`; list values count element by
    /// element.
    fn any_value(
        &self,
        event: &Map<String, Value>,
        predicate: &mut dyn FnMut(&Value) -> bool,
    ) -> bool {
        self.any_value_in(event, None, predicate)
    }

    fn any_value_in(
        &self,
        event: &Map<String, Value>,
        slots: Option<&Slots>,
        predicate: &mut dyn FnMut(&Value) -> bool,
    ) -> bool {
        for (i, path) in self.paths.iter().enumerate() {
            let mut visit = Visit::default();
            self.visit_path(i, path, event, slots, predicate, &mut visit);
            if visit.stopped || (visit.found && !self.any) {
                return visit.stopped;
            }
        }
        false
    }
}

#[derive(Default)]
struct Visit {
    /// Something exists at the path (possibly null or an empty list).
    found: bool,
    /// The predicate held for a value.
    stopped: bool,
}

/// Visits the values at a dotted path, trying the whole key first and then each split
/// point, so flat keys (`id.orig_h`) and nested objects both resolve; lists on the way
/// are entered element by element.
fn lookup(
    map: &Map<String, Value>,
    path: &str,
    predicate: &mut dyn FnMut(&Value) -> bool,
    visit: &mut Visit,
) {
    if let Some(value) = map.get(path) {
        visit.found = true;
        leaves(value, predicate, visit);
        return;
    }
    let mut from = 0;
    while let Some(offset) = path[from..].find('.') {
        let dot = from + offset;
        if let Some(inner) = map.get(&path[..dot]) {
            descend(inner, &path[dot + 1..], predicate, visit);
            if visit.found {
                return;
            }
        }
        from = dot + 1;
    }
}

fn descend(
    value: &Value,
    rest: &str,
    predicate: &mut dyn FnMut(&Value) -> bool,
    visit: &mut Visit,
) {
    match value {
        Value::Object(map) => lookup(map, rest, predicate, visit),
        Value::Array(items) => {
            for item in items {
                descend(item, rest, predicate, visit);
                if visit.stopped {
                    return;
                }
            }
        }
        _ => {}
    }
}

fn leaves(value: &Value, predicate: &mut dyn FnMut(&Value) -> bool, visit: &mut Visit) {
    match value {
        Value::Array(items) => {
            for item in items {
                leaves(item, predicate, visit);
                if visit.stopped {
                    return;
                }
            }
        }
        other => {
            if predicate(other) {
                visit.stopped = true;
            }
        }
    }
}

/// Whether any scalar anywhere in the event satisfies the predicate (keyword search).
fn any_leaf_in_map(map: &Map<String, Value>, predicate: &mut dyn FnMut(&Value) -> bool) -> bool {
    map.values().any(|v| any_leaf(v, predicate))
}

fn any_leaf(value: &Value, predicate: &mut dyn FnMut(&Value) -> bool) -> bool {
    match value {
        Value::Object(map) => any_leaf_in_map(map, predicate),
        Value::Array(items) => items.iter().any(|v| any_leaf(v, predicate)),
        Value::Null => false,
        scalar => predicate(scalar),
    }
}

/// One value of a rule, compiled.
#[derive(Debug, Clone)]
pub(crate) enum ValueMatcher {
    /// A string test on the text of strings, numbers and booleans.
    Text(TextMatcher),
    /// A plain integer or float: equal to a number, or to a string that reads as one.
    Number(Number),
    /// A plain boolean: equal to a boolean, or to the string `true`/`false`.
    Bool(bool),
    /// `|cidr`: an address (as text) inside one of the networks.
    Cidr(IpNet),
    /// `|lt`, `|lte`, `|gt`, `|gte` against a number or numeric string.
    Compare(Ordering, bool, f64),
}

/// A rule's number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Number {
    Integer(i128),
    Float(f64),
}

impl ValueMatcher {
    fn matches(&self, value: &Value) -> bool {
        match self {
            ValueMatcher::Text(text) => with_text(value, |s| text.matches(s)),
            ValueMatcher::Number(number) => number_equals(*number, value),
            ValueMatcher::Bool(want) => match value {
                Value::Bool(b) => b == want,
                Value::String(s) => s.eq_ignore_ascii_case(if *want { "true" } else { "false" }),
                _ => false,
            },
            ValueMatcher::Cidr(net) => value
                .as_str()
                .and_then(|s| s.parse::<IpAddr>().ok())
                .is_some_and(|ip| net.contains(&ip)),
            ValueMatcher::Compare(ordering, or_equal, bound) => {
                numeric(value).is_some_and(|n| match n.partial_cmp(bound) {
                    Some(Ordering::Equal) => *or_equal,
                    Some(o) => o == *ordering,
                    None => false,
                })
            }
        }
    }
}

fn number_equals(number: Number, value: &Value) -> bool {
    match (number, value) {
        (Number::Integer(want), Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                i128::from(i) == want
            } else if let Some(u) = n.as_u64() {
                i128::from(u) == want
            } else {
                n.as_f64() == Some(want as f64)
            }
        }
        (Number::Integer(want), Value::String(s)) => match s.trim().parse::<i128>() {
            Ok(i) => i == want,
            Err(_) => s.trim().parse::<f64>().is_ok_and(|f| f == want as f64),
        },
        (Number::Float(want), value) => numeric(value) == Some(want),
        _ => false,
    }
}

pub(crate) fn numeric(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Runs `f` on the text of a scalar: strings as they are, numbers as JSON writes them,
/// booleans as `true`/`false`. Null, objects and lists have no text.
pub(crate) fn with_text(value: &Value, f: impl FnOnce(&str) -> bool) -> bool {
    match value {
        Value::String(s) => f(s),
        Value::Bool(b) => f(if *b { "true" } else { "false" }),
        // Integers by itoa, as serde_json's `Display` writes them, without the formatting
        // machinery: the walk reads the text of every number of every event.
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                f(itoa::Buffer::new().format(u))
            } else if let Some(i) = n.as_i64() {
                f(itoa::Buffer::new().format(i))
            } else {
                let mut buf = StackText::default();
                if write!(buf, "{n}").is_ok() {
                    f(buf.as_str())
                } else {
                    f(&n.to_string())
                }
            }
        }
        _ => false,
    }
}

/// A small buffer for formatting numbers without allocating.
struct StackText {
    bytes: [u8; 48],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        StackText {
            bytes: [0; 48],
            len: 0,
        }
    }
}

impl StackText {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever written, so the bytes are UTF-8.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.bytes.len() {
            return Err(std::fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A string test. Case-insensitive tests hold ASCII needles and compare without
/// allocating; a case-insensitive needle with other letters is compiled to a regex,
/// which folds Unicode case.
#[derive(Debug, Clone)]
pub(crate) enum TextMatcher {
    /// Any text at all (`*`).
    Any,
    Exact {
        needle: String,
        cased: bool,
    },
    Prefix {
        needle: String,
        cased: bool,
    },
    Suffix {
        needle: String,
        cased: bool,
    },
    /// Any of the needles occurs. The needles are kept for the rule set's prefilter.
    Contains {
        search: NeedleSearch,
        needles: Vec<String>,
        cased: bool,
    },
    /// `literals`: byte strings of which a matching text holds at least one, when the
    /// pattern has such a set (see `prefilter::regex_literals`).
    Regex {
        regex: Regex,
        literals: Option<Vec<Vec<u8>>>,
    },
}

impl TextMatcher {
    fn matches(&self, text: &str) -> bool {
        match self {
            TextMatcher::Any => true,
            TextMatcher::Exact { needle, cased } => {
                if *cased {
                    text == needle
                } else {
                    text.eq_ignore_ascii_case(needle)
                }
            }
            TextMatcher::Prefix { needle, cased } => {
                let (text, needle) = (text.as_bytes(), needle.as_bytes());
                text.len() >= needle.len() && same(&text[..needle.len()], needle, *cased)
            }
            TextMatcher::Suffix { needle, cased } => {
                let (text, needle) = (text.as_bytes(), needle.as_bytes());
                text.len() >= needle.len()
                    && same(&text[text.len() - needle.len()..], needle, *cased)
            }
            TextMatcher::Contains {
                search,
                needles,
                cased,
            } => search.is_match(text, needles, *cased),
            TextMatcher::Regex { regex, .. } => regex.is_match(text),
        }
    }
}

/// How a value list's needles are searched. A short list is searched needle by needle
/// with memchr's SIMD substring search, on the text lower-cased once when the search
/// ignores case; a longer list by one Aho-Corasick automaton. The lists a candidate rule
/// searches itself (its filters' paths above all) are mostly one to a few needles over
/// short texts, where an automaton's per-byte transitions through a table that is cold for
/// all but the busiest rules cost several times the SIMD scans (`docs/performance.md`,
/// 6 December 2026).
#[derive(Debug, Clone)]
pub(crate) enum NeedleSearch {
    /// The needles, ASCII-lower-cased when the search ignores case; built with the
    /// matcher, so that a search reads them without following one more pointer.
    Finders(Box<[memmem::Finder<'static>]>),
    Automaton(LazyAutomaton),
}

impl NeedleSearch {
    /// Above this many needles one automaton pass beats a SIMD scan per needle.
    pub(crate) const FINDERS_MAX: usize = 8;

    pub(crate) fn new(needles: &[String], cased: bool) -> NeedleSearch {
        if needles.len() > Self::FINDERS_MAX {
            return NeedleSearch::Automaton(LazyAutomaton::default());
        }
        let finders = needles.iter().map(|needle| {
            let needle = if cased {
                needle.as_bytes().to_vec()
            } else {
                needle.as_bytes().to_ascii_lowercase()
            };
            memmem::Finder::new(&needle).into_owned()
        });
        NeedleSearch::Finders(finders.collect())
    }

    fn is_match(&self, text: &str, needles: &[String], cased: bool) -> bool {
        match self {
            NeedleSearch::Finders(finders) if cased => {
                finders.iter().any(|f| f.find(text.as_bytes()).is_some())
            }
            NeedleSearch::Finders(finders) => FOLDED.with(|folded| {
                let mut folded = folded.borrow_mut();
                folded.clear();
                folded.extend_from_slice(text.as_bytes());
                folded.make_ascii_lowercase();
                finders.iter().any(|f| f.find(&folded).is_some())
            }),
            NeedleSearch::Automaton(automaton) => automaton.is_match(text, needles, cased),
        }
    }
}

thread_local! {
    /// The lower-cased text a case-insensitive needle search reads, reused so that it
    /// allocates only when a text is longer than any before it on the thread.
    static FOLDED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The Aho-Corasick automaton of a long value list's needles, built the first time the
/// list is searched, and shared by the matcher's clones.
///
/// Lazily because most lists are never searched: the rule set's index decides their
/// items from its own per-field automata (`prefilter`), and building one automaton per
/// list of all SigmaHQ rules up front took over a third of the rule set's compile time.
/// Should the build fail (aho-corasick refuses only automata past its size limits, far
/// beyond a rule's value list), the needles are searched one by one: slower, same answer.
#[derive(Debug, Clone, Default)]
pub(crate) struct LazyAutomaton(Arc<OnceLock<Option<AhoCorasick>>>);

impl LazyAutomaton {
    fn is_match(&self, text: &str, needles: &[String], cased: bool) -> bool {
        let automaton = self.0.get_or_init(|| {
            aho_corasick::AhoCorasickBuilder::new()
                .ascii_case_insensitive(!cased)
                .build(needles)
                .inspect_err(|e| {
                    tracing::warn!(needles = needles.len(), reason = %e, "substring automaton not built; searching needle by needle");
                })
                .ok()
        });
        match automaton {
            Some(automaton) => automaton.is_match(text),
            None => needles
                .iter()
                .any(|needle| contains(text.as_bytes(), needle.as_bytes(), cased)),
        }
    }
}

fn contains(text: &[u8], needle: &[u8], cased: bool) -> bool {
    needle.is_empty()
        || text
            .windows(needle.len())
            .any(|window| same(window, needle, cased))
}

fn same(a: &[u8], b: &[u8], cased: bool) -> bool {
    if cased {
        a == b
    } else {
        a.eq_ignore_ascii_case(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn values_at(event: &Map<String, Value>, path: &str) -> Vec<Value> {
        let mut seen = Vec::new();
        let field = FieldRef::new(vec![path.to_owned()], false);
        field.any_value(event, &mut |v| {
            seen.push(v.clone());
            false
        });
        seen
    }

    #[test]
    fn substring_lists_match_needle_by_needle_or_by_an_automaton_built_on_first_use() {
        let short = vec!["\\Temp\\".to_owned(), "mimikatz".to_owned()];
        // Past `FINDERS_MAX` the list is one automaton.
        let mut long: Vec<String> = (0..NeedleSearch::FINDERS_MAX)
            .map(|i| format!("never-{i}"))
            .collect();
        long.extend(short.iter().cloned());
        let texts = [
            "C:\\Users\\x\\AppData\\Local\\TEMP\\a.exe",
            "MimiKatz.exe",
            "",
            "notepad.exe",
            "mimikat",
        ];
        for (needles, automaton) in [(&short, false), (&long, true)] {
            for cased in [false, true] {
                let matcher = TextMatcher::Contains {
                    search: NeedleSearch::new(needles, cased),
                    needles: needles.clone(),
                    cased,
                };
                let copy = matcher.clone();
                // Some(built) for the automaton, None for the finders.
                let automaton_built = |m: &TextMatcher| match m {
                    TextMatcher::Contains {
                        search: NeedleSearch::Automaton(lazy),
                        ..
                    } => Some(lazy.0.get().is_some()),
                    TextMatcher::Contains { .. } => None,
                    _ => unreachable!("a substring list"),
                };
                let before = automaton.then_some(false);
                assert_eq!(
                    automaton_built(&copy),
                    before,
                    "built before the first search"
                );
                for text in texts {
                    let by_hand = needles
                        .iter()
                        .any(|n| contains(text.as_bytes(), n.as_bytes(), cased));
                    assert_eq!(matcher.matches(text), by_hand, "{text:?} cased={cased}");
                    assert_eq!(copy.matches(text), by_hand, "{text:?} cased={cased}");
                }
                let after = automaton.then_some(true);
                assert_eq!(
                    automaton_built(&copy),
                    after,
                    "the clone shares the automaton"
                );
            }
        }
        assert!(contains(b"abc", b"", false));
        assert!(contains(b"xABCy", b"abc", false));
        assert!(!contains(b"xABCy", b"abc", true));
        assert!(!contains(b"ab", b"abc", false));
        for needles in [vec![String::new()], {
            let mut many = long.clone();
            many.push(String::new());
            many
        }] {
            let any = TextMatcher::Contains {
                search: NeedleSearch::new(&needles, false),
                needles,
                cased: false,
            };
            assert!(any.matches("anything"), "an empty needle is in every text");
            assert!(any.matches(""), "an empty needle is in the empty text");
        }
    }

    #[test]
    fn lookup_enters_lists_and_flat_dotted_keys() {
        let event = map(json!({
            "dns": {"answers": [{"data": "1.2.3.4"}, {"data": "5.6.7.8"}]},
            "zeek": {"id.orig_h": "10.0.0.1"},
            "tags": ["a", ["b"]],
            "x.y": {"z": 1},
        }));
        assert_eq!(
            values_at(&event, "dns.answers.data"),
            [json!("1.2.3.4"), json!("5.6.7.8")]
        );
        assert_eq!(values_at(&event, "zeek.id.orig_h"), [json!("10.0.0.1")]);
        assert_eq!(values_at(&event, "tags"), [json!("a"), json!("b")]);
        assert_eq!(values_at(&event, "x.y.z"), [json!(1)]);
        assert!(values_at(&event, "dns.answers.missing").is_empty());
    }

    #[test]
    fn the_first_present_path_wins() {
        let event = map(json!({"a": "one", "b": "two"}));
        let mut field = FieldRef::new(vec!["missing".into(), "a".into(), "b".into()], false);
        assert!(field.any_value(&event, &mut |v| v == "one"));
        assert!(!field.any_value(&event, &mut |v| v == "two"));
        field.any = true;
        assert!(field.any_value(&event, &mut |v| v == "two"));
    }

    #[test]
    fn numbers_have_text_without_allocating() {
        assert!(with_text(&json!(443), |s| s == "443"));
        assert!(with_text(&json!(-1.5), |s| s == "-1.5"));
        assert!(with_text(&json!(true), |s| s == "true"));
        assert!(!with_text(&json!(null), |_| true));
    }

    #[test]
    fn numbers_compare_by_value() {
        let eighty = ValueMatcher::Number(Number::Integer(80));
        assert!(eighty.matches(&json!(80)));
        assert!(eighty.matches(&json!("80")));
        assert!(eighty.matches(&json!(80.0)));
        assert!(!eighty.matches(&json!("8080")));
        assert!(!eighty.matches(&json!(true)));
        let gt = ValueMatcher::Compare(Ordering::Greater, true, 10.0);
        assert!(gt.matches(&json!(10)) && gt.matches(&json!("11")) && !gt.matches(&json!(9)));
    }
}
