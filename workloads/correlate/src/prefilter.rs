//! The rule set's prefilter: every rule's literal needles gathered into one index per
//! event path, so that an event is run through a few hash lookups and one Aho-Corasick
//! pass per indexed field instead of through every rule.
//!
//! Each rule is reduced, at compile time, to a *necessary condition* in conjunctive form:
//! clauses of [`Atom`]s (a value at a path equals a literal, contains a literal, reads as a
//! number, or the path is present), where a rule can only match an event on which every
//! clause has a true atom. The condition is derived from the compiled detection and the
//! rule's logsource routes, never from the rule's text, so it follows the evaluator's
//! semantics: a negation requires nothing, an `and` requires what each operand requires, an
//! `or` requires one clause of each branch. A rule whose condition requires nothing (only
//! negations, keyword searches, `null` tests) is tried on every event.
//!
//! At evaluation time the event is walked once. Every node is looked up by its dotted path
//! (lists keep their parent's path, the way field lookups enter them); an indexed scalar
//! is lower-cased once into a reused buffer, looked up in the path's exact-value and
//! number tables and scanned by the path's automaton. Each true atom marks its clause in
//! the rules that hold it; the rules with all clauses marked are the candidates, and only
//! they are evaluated in full. Skipping a rule is therefore only ever a proof that it
//! cannot match: `tests/prefilter.rs` checks the candidates' results against trying every
//! rule, over the real corpora.
//!
//! The same atoms also decide detection items ([`Items`]): a check whose values the walk
//! can answer exactly on the folded text gets item bits that its atoms set, and the
//! candidates read those bits instead of running the check's matchers.

use std::cell::RefCell;
use std::collections::HashMap as StdHashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aho_corasick::automaton::{Automaton, Prefilter, StateID};
use aho_corasick::{Anchored, MatchKind, Span};
use foldhash::HashMap;
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Hir, HirKind};
use serde_json::{Map, Value};
use smallvec::SmallVec;

use crate::logsource::{Route, WazuhFilter};
use crate::matcher::{
    numeric, with_text, Check, Decided, Detector, Expr, FieldCheck, FieldTest, Number,
    SelectionMatcher, Slots, TextMatcher, ValueMatcher, ValueTest,
};
use crate::needle_dfa::{self, NeedleDfa};
use crate::scan_memo::ScanMemo;

/// At most this many clauses are kept per rule (and per `or` branch while deriving).
/// More clauses filter a little better but cost a mark per true atom each.
const MAX_CLAUSES: usize = 4;

/// At most this many clauses are kept for a rule.
const RULE_CLAUSES: usize = 2;

/// Clauses at most this strong are dropped from a rule that has a stronger one.
const WEAK_CLAUSE: usize = 2;

/// Paths with at most this many needles get a DFA, the others aho-corasick's choice.
const DFA_NEEDLES: usize = 2_000;

/// One fact about an event, true or not, that a rule may require.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Atom {
    /// Something (a value, null, a list, an object) is at the path.
    Present(String),
    /// A scalar at the path, as text and ASCII-lower-cased, equals the bytes.
    Exact(String, Vec<u8>),
    /// A scalar at the path reads as this number ([`number_key`]).
    Number(String, u64),
    /// A scalar at the path, as text and ASCII-lower-cased, contains the bytes.
    Substring(String, Vec<u8>),
    /// A scalar at the path, as text and ASCII-lower-cased, starts with the bytes.
    Prefix(String, Vec<u8>),
    /// A scalar at the path, as text and ASCII-lower-cased, ends with the bytes.
    Suffix(String, Vec<u8>),
}

impl Atom {
    /// How rarely the atom is expected to be true: a longer literal is rarer than a
    /// short one, any literal rarer than a field's mere presence. An exact value counts a
    /// little more than a substring of its length, but a short one (`IntegrityLevel:
    /// High`) less than a long needle: the few values such fields take are common.
    fn strength(&self) -> usize {
        match self {
            Atom::Present(_) => 1,
            Atom::Number(..) => 6,
            Atom::Exact(_, bytes) => 4 + bytes.len().min(12),
            Atom::Substring(_, bytes) | Atom::Prefix(_, bytes) | Atom::Suffix(_, bytes) => {
                bytes.len().min(12)
            }
        }
    }

    /// The bytes a text must equal or hold for the atom to be true; `None` for presence
    /// and number atoms.
    fn text(&self) -> Option<&[u8]> {
        match self {
            Atom::Present(_) | Atom::Number(..) => None,
            Atom::Exact(_, bytes)
            | Atom::Substring(_, bytes)
            | Atom::Prefix(_, bytes)
            | Atom::Suffix(_, bytes) => Some(bytes),
        }
    }

    fn path(&self) -> &str {
        match self {
            Atom::Present(p)
            | Atom::Exact(p, _)
            | Atom::Number(p, _)
            | Atom::Substring(p, _)
            | Atom::Prefix(p, _)
            | Atom::Suffix(p, _) => p,
        }
    }
}

/// Atoms of which at least one is true whenever the rule matches.
type Clause = Vec<Atom>;
/// Clauses that all hold whenever the rule matches; empty when nothing is known.
type Requirement = Vec<Clause>;

fn clause_strength(clause: &Clause) -> usize {
    clause.iter().map(Atom::strength).min().unwrap_or(0)
}

/// Keeps the strongest clauses, each sorted and free of repeats.
fn normalize(mut requirement: Requirement) -> Requirement {
    for clause in &mut requirement {
        clause.sort();
        clause.dedup();
    }
    // NB: an empty clause would mean "never true"; it cannot arise from the derivation
    // below, and dropping it keeps the requirement necessary in any case.
    requirement.retain(|c| !c.is_empty());
    requirement.sort_by(|a, b| clause_strength(b).cmp(&clause_strength(a)).then(a.cmp(b)));
    requirement.dedup();
    requirement.truncate(MAX_CLAUSES);
    requirement
}

/// What an `or` of the branches requires: one clause of each branch, united, is true
/// whenever any branch holds. Several such unions are formed from the branches' best,
/// second best… clauses.
fn any_of(branches: Vec<Requirement>) -> Requirement {
    if branches.is_empty() || branches.iter().any(Vec::is_empty) {
        return Vec::new();
    }
    let branches: Vec<Requirement> = branches.into_iter().map(normalize).collect();
    let width = branches.iter().map(Vec::len).max().unwrap_or(0);
    normalize(
        (0..width)
            .map(|j| {
                branches
                    .iter()
                    .flat_map(|b| b[j.min(b.len() - 1)].iter().cloned())
                    .collect()
            })
            .collect(),
    )
}

/// What an `and` requires: what every operand requires.
fn all_of(operands: impl IntoIterator<Item = Requirement>) -> Requirement {
    normalize(operands.into_iter().flatten().collect())
}

/// The necessary condition of a rule: its detection's and its routes'.
pub(crate) fn rule_requirement(detector: &Detector, routes: &[Route]) -> Requirement {
    let mut requirement = all_of([detection_requirement(detector), routes_requirement(routes)]);
    // Keyword needles are scanned over every scalar of every event, field needles only
    // over their field: a rule that can be indexed by its fields leaves the keyword
    // automaton out.
    let keyword = |clause: &Clause| clause.iter().any(|atom| atom.path() == KEYWORDS);
    if requirement.iter().any(|clause| !keyword(clause)) {
        requirement.retain(|clause| !keyword(clause));
    }
    // A weak clause (a field's presence, a one- or two-byte needle) next to a stronger one
    // costs marks or scanned matches on most events while hardly narrowing the candidates.
    if let Some(best) = requirement.first().map(clause_strength) {
        let floor = best.min(WEAK_CLAUSE + 1);
        requirement.retain(|c| clause_strength(c) >= floor);
    }
    // Each kept clause puts its needles in the automata every event is scanned with; past
    // two, the candidates hardly shrink.
    requirement.truncate(RULE_CLAUSES);
    requirement
}

fn detection_requirement(detector: &Detector) -> Requirement {
    // NB: meta-filters only add conditions, so leaving them out keeps it necessary.
    expr_requirement(&detector.condition, &detector.selections)
}

fn expr_requirement(expr: &Expr, selections: &[SelectionMatcher]) -> Requirement {
    match expr {
        Expr::Selection(i) => selections
            .get(*i)
            .map_or_else(Vec::new, selection_requirement),
        // A negation holds on events that lack what it names: nothing is required.
        Expr::Not(_) => Vec::new(),
        Expr::And(all) => all_of(all.iter().map(|e| expr_requirement(e, selections))),
        Expr::Or(any) => any_of(
            any.iter()
                .map(|e| expr_requirement(e, selections))
                .collect(),
        ),
    }
}

fn selection_requirement(selection: &SelectionMatcher) -> Requirement {
    any_of(
        selection
            .any_of
            .iter()
            .map(|checks| all_of(checks.iter().map(check_requirement)))
            .collect(),
    )
}

/// The path keyword atoms are indexed under: every scalar of the event is read there as
/// well as at its own path. A real path spelled the same only adds candidates.
const KEYWORDS: &str = "\u{0}keywords";

fn check_requirement(check: &Check) -> Requirement {
    let (field, test) = match check {
        Check::Field(FieldCheck { field, test, .. }) => (field, test),
        Check::Keywords(values, _) => {
            return values_requirement(&[KEYWORDS.to_owned()], values).unwrap_or_default()
        }
    };
    let present = || {
        vec![field
            .paths
            .iter()
            .map(|p| Atom::Present(p.clone()))
            .collect()]
    };
    match test {
        FieldTest::Values(values) if !values.matchers.is_empty() => {
            values_requirement(&field.paths, values).unwrap_or_else(present)
        }
        _ if test.needs_value() => present(),
        _ => Vec::new(),
    }
}

/// The literal clauses of a value list read at `paths`, or `None` when some value that
/// satisfies it may hold none of them.
fn values_requirement(paths: &[String], values: &ValueTest) -> Option<Requirement> {
    let on_paths = |literals: Vec<Literal>| -> Clause {
        paths
            .iter()
            .flat_map(|path| literals.iter().map(move |l| l.at(path)))
            .collect()
    };
    if values.matchers.is_empty() {
        return None;
    }
    if values.all {
        // Each matcher must be satisfied: each one with literals is a clause.
        let clauses: Requirement = values
            .matchers
            .iter()
            .filter_map(literals)
            .map(on_paths)
            .collect();
        (!clauses.is_empty()).then_some(clauses)
    } else {
        let all = values
            .matchers
            .iter()
            .map(literals)
            .collect::<Option<Vec<_>>>()?;
        Some(vec![on_paths(all.into_iter().flatten().collect())])
    }
}

/// A literal requirement on one value, before it is placed at a path.
enum Literal {
    Exact(Vec<u8>),
    Number(u64),
    Substring(Vec<u8>),
    Prefix(Vec<u8>),
    Suffix(Vec<u8>),
}

impl Literal {
    fn at(&self, path: &str) -> Atom {
        let path = path.to_owned();
        match self {
            Literal::Exact(bytes) => Atom::Exact(path, bytes.clone()),
            Literal::Number(key) => Atom::Number(path, *key),
            Literal::Substring(bytes) => Atom::Substring(path, bytes.clone()),
            Literal::Prefix(bytes) => Atom::Prefix(path, bytes.clone()),
            Literal::Suffix(bytes) => Atom::Suffix(path, bytes.clone()),
        }
    }
}

/// Integers at most this large (in magnitude) are exact in an `f64`, so comparing them
/// through [`number_key`] gives what the matcher's integer comparison gives.
const EXACT_INTEGER: i128 = 1 << 53;

/// Literals of which a scalar has one exactly when it satisfies the matcher, on the walk's
/// ASCII-lower-cased text (or its number), or `None` when the walk cannot decide it.
///
/// Only case-insensitive text tests qualify: their needles are ASCII (the compile step
/// turns others into regexes), and comparing ASCII-lower-cased bytes is what
/// `eq_ignore_ascii_case` and an ASCII-case-insensitive automaton do. `|cased` tests
/// (base64 and UTF-16 ones included), regexes, `*`, networks and comparisons stay with
/// their rule.
fn deciding_literals(matcher: &ValueMatcher) -> Option<Vec<Literal>> {
    match matcher {
        ValueMatcher::Text(TextMatcher::Exact {
            needle,
            cased: false,
        }) => Some(vec![Literal::Exact(fold(needle.as_bytes()))]),
        ValueMatcher::Text(TextMatcher::Prefix {
            needle,
            cased: false,
        }) => Some(vec![Literal::Prefix(fold(needle.as_bytes()))]),
        ValueMatcher::Text(TextMatcher::Suffix {
            needle,
            cased: false,
        }) => Some(vec![Literal::Suffix(fold(needle.as_bytes()))]),
        ValueMatcher::Text(TextMatcher::Contains {
            needles,
            cased: false,
            ..
        }) if needles.iter().all(|n| !n.is_empty()) => Some(
            needles
                .iter()
                .map(|n| Literal::Substring(fold(n.as_bytes())))
                .collect(),
        ),
        ValueMatcher::Number(Number::Integer(i)) if i.abs() < EXACT_INTEGER => {
            Some(vec![Literal::Number(number_key(*i as f64))])
        }
        ValueMatcher::Number(Number::Float(f)) if f.is_finite() => {
            Some(vec![Literal::Number(number_key(*f))])
        }
        ValueMatcher::Bool(b) => Some(vec![Literal::Exact(if *b {
            b"true".to_vec()
        } else {
            b"false".to_vec()
        })]),
        _ => None,
    }
}

/// The detection items of a rule set (see [`Decided`]): for each, the atoms of which one
/// is true exactly when the item holds.
///
/// Only items whose atoms the index holds anyway, as atoms of some rule's clauses, are
/// decided, and every decidable item of the rules tried on every event: the walk then
/// looks up and scans next to nothing more for them (a prefix or suffix needle shares the
/// clause's automaton pattern and only checks where the occurrence lies). Deciding every
/// decidable item of every rule was measured slower: its needles (filters' lists above
/// all) cost a scan and marks on every event carrying the field, while a rule's own
/// matchers run only on the few events where the rule is a candidate
/// (`docs/performance.md`, 5 December 2026).
#[derive(Debug, Default)]
pub(crate) struct Items {
    atoms: Vec<(Atom, u32)>,
    count: u32,
    /// The atoms of all rules' clauses, which the walk reads anyway.
    indexed: std::collections::HashSet<Atom>,
    /// Whether the rule being given items is evaluated on every event.
    every_event: bool,
}

impl Items {
    /// Items over the atoms of the rules' clauses.
    pub(crate) fn over(requirements: &[Requirement]) -> Items {
        Items {
            indexed: requirements.iter().flatten().flatten().cloned().collect(),
            ..Items::default()
        }
    }

    /// Whether the walk reads the atom without being given anything new: the clause atom
    /// itself, or the substring a prefix or suffix atom shares a pattern with.
    fn free(&self, atom: &Atom) -> bool {
        // A rule without a requirement runs on every event: its items cost the walk no
        // more than its own matchers would.
        if self.every_event {
            return true;
        }
        match atom {
            Atom::Prefix(path, bytes) | Atom::Suffix(path, bytes) => self
                .indexed
                .contains(&Atom::Substring(path.clone(), bytes.clone())),
            other => self.indexed.contains(other),
        }
    }

    /// Gives the checks of the detection (and its filters) that the walk can decide their
    /// items. A field check qualifies when its field has one path, or every path is a
    /// spelling of it (`any`): with a first-present-path field a hit on a later path
    /// would not say what the check reads.
    pub(crate) fn decide_rule(&mut self, detector: &mut Detector, every_event: bool) {
        self.every_event = every_event;
        self.decide(detector);
        self.every_event = false;
    }

    fn decide(&mut self, detector: &mut Detector) {
        for check in detector
            .selections
            .iter_mut()
            .flat_map(|s| s.any_of.iter_mut().flatten())
        {
            match check {
                Check::Field(check) => {
                    let FieldTest::Values(values) = &check.test else {
                        continue;
                    };
                    if check.field.paths.len() == 1 || check.field.any {
                        check.decided = self.add(&check.field.paths, values);
                    }
                }
                Check::Keywords(values, decided) => {
                    *decided = self.add(&[KEYWORDS.to_owned()], values);
                }
            }
        }
        for filter in &mut detector.filters {
            self.decide(filter);
        }
    }

    fn add(&mut self, paths: &[String], values: &ValueTest) -> Option<Decided> {
        if values.matchers.is_empty() {
            return None;
        }
        let literals = values
            .matchers
            .iter()
            .map(deciding_literals)
            .collect::<Option<Vec<_>>>()?;
        let first = self.count;
        let count = if values.all { literals.len() as u32 } else { 1 };
        let mut atoms = Vec::new();
        for (i, literals) in literals.iter().enumerate() {
            let item = if values.all { first + i as u32 } else { first };
            for path in paths {
                atoms.extend(literals.iter().map(|l| (l.at(path), item)));
            }
        }
        if !atoms.iter().all(|(atom, _)| self.free(atom)) {
            return None;
        }
        self.atoms.extend(atoms);
        self.count += count;
        Some(Decided { first, count })
    }

    pub(crate) fn len(&self) -> usize {
        self.count as usize
    }

    /// Takes back what [`Items::decide`] gave, for a set whose index was not built.
    pub(crate) fn undecide(detector: &mut Detector) {
        for check in detector
            .selections
            .iter_mut()
            .flat_map(|s| s.any_of.iter_mut().flatten())
        {
            match check {
                Check::Field(check) => check.decided = None,
                Check::Keywords(_, decided) => *decided = None,
            }
        }
        for filter in &mut detector.filters {
            Items::undecide(filter);
        }
    }
}

fn fold(bytes: &[u8]) -> Vec<u8> {
    bytes.to_ascii_lowercase()
}

/// Literals of which a value satisfying the matcher has one, or `None` when the matcher
/// can be satisfied without any (`*`, networks, comparisons, regexes without a literal).
///
/// Every test below implies its literal on the ASCII-lower-cased text: equality implies
/// equality, a prefix, suffix or substring (case-insensitive in ASCII, or exact) implies
/// containment, and lower-casing ASCII byte by byte keeps containment.
fn literals(matcher: &ValueMatcher) -> Option<Vec<Literal>> {
    let substring = |needle: &[u8]| (!needle.is_empty()).then(|| Literal::Substring(fold(needle)));
    match matcher {
        ValueMatcher::Text(text) => match text {
            TextMatcher::Any => None,
            TextMatcher::Exact { needle, .. } => {
                Some(vec![Literal::Exact(fold(needle.as_bytes()))])
            }
            TextMatcher::Prefix { needle, .. } | TextMatcher::Suffix { needle, .. } => {
                substring(needle.as_bytes()).map(|l| vec![l])
            }
            TextMatcher::Contains { needles, .. } => {
                needles.iter().map(|n| substring(n.as_bytes())).collect()
            }
            TextMatcher::Regex { literals, .. } => literals
                .as_ref()
                .map(|all| all.iter().map(|l| Literal::Substring(fold(l))).collect()),
        },
        ValueMatcher::Number(number) => Some(vec![Literal::Number(number_key(match number {
            crate::matcher::Number::Integer(i) => *i as f64,
            crate::matcher::Number::Float(f) => *f,
        }))]),
        // A boolean matches `true`/`false` as a boolean or as text in any case.
        ValueMatcher::Bool(b) => Some(vec![Literal::Exact(if *b {
            b"true".to_vec()
        } else {
            b"false".to_vec()
        })]),
        ValueMatcher::Cidr(_) | ValueMatcher::Compare(..) => None,
    }
}

/// The number's key in the number tables. Two numbers that compare equal get the same
/// key: integers compare through their `f64` value (the same rounding on both sides),
/// and the two zeros are one.
fn number_key(n: f64) -> u64 {
    if n == 0.0 {
        0
    } else {
        n.to_bits()
    }
}

/// The flags a regex is built with, which decide its literals (case-insensitivity adds
/// every case variant of each letter, including `K` for the Kelvin sign).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RegexFlags {
    pub(crate) case_insensitive: bool,
    pub(crate) multi_line: bool,
    pub(crate) dot_matches_new_line: bool,
}

/// Literals of which every match of the pattern contains one: regex-syntax's prefix
/// literals (every match starts with one), suffix literals (every match ends with one), or
/// the prefix literals of a part of a concatenation (every match holds a match of each
/// part, so one of that part's prefixes: the backquote of `\w+`(?:\w+|-|.)`…`), whichever
/// set has the longest shortest literal. `None` when no set is finite and free of the empty
/// string.
pub(crate) fn regex_literals(pattern: &str, flags: RegexFlags) -> Option<Vec<Vec<u8>>> {
    let hir = regex_syntax::ParserBuilder::new()
        .case_insensitive(flags.case_insensitive)
        .multi_line(flags.multi_line)
        .dot_matches_new_line(flags.dot_matches_new_line)
        .build()
        .parse(pattern)
        .ok()?;
    let mut sets: Vec<(usize, Vec<Vec<u8>>)> = [ExtractKind::Prefix, ExtractKind::Suffix]
        .into_iter()
        .filter_map(|kind| literal_set(&hir, kind))
        .collect();
    inner_literal_sets(&hir, &mut sets);
    sets.into_iter()
        .max_by_key(|(shortest, literals)| (*shortest, std::cmp::Reverse(literals.len())))
        .map(|(_, literals)| literals)
}

/// The folded literals regex-syntax extracts of `kind` and their shortest length, when
/// the set is finite and holds no empty literal.
fn literal_set(hir: &Hir, kind: ExtractKind) -> Option<(usize, Vec<Vec<u8>>)> {
    let seq = Extractor::new().kind(kind).extract(hir);
    let shortest = seq.min_literal_len()?;
    let literals = seq.literals()?;
    (shortest > 0).then(|| {
        let mut folded: Vec<Vec<u8>> = literals.iter().map(|l| fold(l.as_bytes())).collect();
        folded.sort();
        folded.dedup();
        (shortest, folded)
    })
}

/// The prefix literal sets of every tail of every concatenation every match passes
/// through (not under an alternation, an optional repetition or a look-around).
fn inner_literal_sets(hir: &Hir, sets: &mut Vec<(usize, Vec<Vec<u8>>)>) {
    match hir.kind() {
        HirKind::Capture(capture) => inner_literal_sets(&capture.sub, sets),
        HirKind::Repetition(repetition) if repetition.min >= 1 => {
            inner_literal_sets(&repetition.sub, sets)
        }
        HirKind::Concat(parts) => {
            for at in 1..parts.len() {
                sets.extend(literal_set(
                    &Hir::concat(parts[at..].to_vec()),
                    ExtractKind::Prefix,
                ));
            }
            for part in parts {
                inner_literal_sets(part, sets);
            }
        }
        _ => {}
    }
}

fn routes_requirement(routes: &[Route]) -> Requirement {
    // Without routes the rule sees raw events as given (or none): nothing to add.
    if routes.is_empty() {
        return Vec::new();
    }
    any_of(routes.iter().map(route_requirement).collect())
}

/// What a route's `accepts` reads, as atoms on the same paths of the ECS event.
fn route_requirement(route: &Route) -> Requirement {
    let exact = |path: &str, values: &[&str]| -> Clause {
        values
            .iter()
            .map(|v| Atom::Exact(path.to_owned(), fold(v.as_bytes())))
            .collect()
    };
    match route {
        Route::Suricata { event_types } if !event_types.is_empty() => {
            vec![exact("suricata.eve.event_type", event_types)]
        }
        Route::Suricata { .. } => Vec::new(),
        Route::Wazuh(filter) => match filter {
            WazuhFilter::Any => Vec::new(),
            WazuhFilter::Program(programs) => vec![[
                "wazuh.predecoder.program_name",
                "wazuh.decoder.parent",
                "wazuh.decoder.name",
            ]
            .iter()
            .flat_map(|path| exact(path, programs))
            .collect()],
            WazuhFilter::Location(suffixes) if suffixes.iter().all(|s| !s.is_empty()) => {
                vec![suffixes
                    .iter()
                    .map(|s| Atom::Substring("wazuh.location".to_owned(), fold(s.as_bytes())))
                    .collect()]
            }
            WazuhFilter::Location(_) => Vec::new(),
            WazuhFilter::Group(group) => vec![exact("wazuh.rule.groups", &[group])],
            WazuhFilter::Windows {
                channels,
                event_ids,
            } => {
                let mut clauses = vec![exact("wazuh.data.win.system.channel", channels)];
                if !event_ids.is_empty() {
                    clauses.push(exact("wazuh.data.win.system.eventID", event_ids));
                }
                clauses
            }
        },
    }
}

/// Where one rule's clause is marked: the rule's position and the clause's number (at
/// most [`MAX_CLAUSES`]), packed in 32 bits so that most posting lists fit in the posting
/// itself.
#[derive(Debug, Clone, Copy)]
struct Mark(u32);

impl Mark {
    fn new(rule: usize, clause: usize) -> Mark {
        debug_assert!(clause < MAX_CLAUSES && rule < (1 << 29));
        Mark((rule as u32) << 3 | clause as u32)
    }

    fn rule(self) -> usize {
        (self.0 >> 3) as usize
    }

    fn bit(self) -> u8 {
        1 << (self.0 & 7)
    }
}

/// What one atom being true sets: rules' clauses and detection items. Short lists (most
/// are) are kept inline, so marking an atom reads the posting and not two more
/// allocations.
#[derive(Debug, Default)]
struct Posting {
    marks: SmallVec<[Mark; 4]>,
    items: SmallVec<[u32; 4]>,
}

/// Per automaton pattern, the postings it marks and where its occurrence must lie.
type PatternHits = Box<[(u32, Anchor)]>;

/// Needles in one automaton and, by pattern id, what each occurrence marks.
#[derive(Debug)]
struct Scanner {
    automaton: NeedleAutomaton,
    hits: Vec<PatternHits>,
}

/// The automata built by aho-corasick, searched by the walk's own loop rather than behind
/// `AhoCorasick`: the loop keeps the state and position in registers, reports every
/// pattern ending at a place in one go (the crate's iterator re-enters its search once per
/// occurrence), and can step two automata through one text together
/// ([`Scanner::scan_beside`]). A DFA is stepped as [`NeedleDfa`] lays it out.
#[derive(Debug)]
enum NeedleAutomaton {
    Dfa(NeedleDfa),
    Nfa(aho_corasick::nfa::contiguous::NFA),
}

/// What the scan loops need of an automaton, so one loop serves both kinds.
trait Steps {
    type State: Copy + PartialEq;
    fn first(&self) -> Option<Self::State>;
    fn step(&self, state: Self::State, byte: u8) -> Self::State;
    /// Whether some needle ends in `state`.
    fn ends_needles(&self, state: Self::State) -> bool;
    /// Calls `f` with the pattern id and length of each needle ending in `state`.
    fn each_end(&self, state: Self::State, f: impl FnMut(usize, usize));
    fn skip(&self) -> Option<&Prefilter>;
}

impl Steps for NeedleDfa {
    type State = needle_dfa::State;

    fn first(&self) -> Option<Self::State> {
        Some(self.start())
    }

    #[inline(always)]
    fn step(&self, state: Self::State, byte: u8) -> Self::State {
        self.next(state, byte)
    }

    #[inline(always)]
    fn ends_needles(&self, state: Self::State) -> bool {
        NeedleDfa::is_match(state)
    }

    fn each_end(&self, state: Self::State, mut f: impl FnMut(usize, usize)) {
        for &(pattern, length) in self.ends(state) {
            f(pattern as usize, length as usize);
        }
    }

    fn skip(&self) -> Option<&Prefilter> {
        self.prefilter()
    }
}

impl Steps for aho_corasick::nfa::contiguous::NFA {
    type State = StateID;

    fn first(&self) -> Option<Self::State> {
        self.start_state(Anchored::No).ok()
    }

    #[inline(always)]
    fn step(&self, state: Self::State, byte: u8) -> Self::State {
        self.next_state(Anchored::No, state, byte)
    }

    #[inline(always)]
    fn ends_needles(&self, state: Self::State) -> bool {
        // An unanchored standard search never reaches the dead state.
        self.is_special(state) && self.is_match(state)
    }

    fn each_end(&self, state: Self::State, mut f: impl FnMut(usize, usize)) {
        for index in 0..self.match_len(state) {
            let pattern = self.match_pattern(state, index);
            f(pattern.as_usize(), self.pattern_len(pattern));
        }
    }

    fn skip(&self) -> Option<&Prefilter> {
        self.prefilter()
    }
}

impl Scanner {
    fn build(
        patterns: Vec<Box<[u8]>>,
        hits: Vec<PatternHits>,
    ) -> Result<Scanner, aho_corasick::BuildError> {
        // Needles are folded (ASCII lower case), so matching them without regard to ASCII
        // case on the text as it is finds what they would find in the folded text, at the
        // same places, without folding a copy first. A DFA scans fastest but grows with
        // the needles; past a few thousand it costs more memory and build time than it
        // saves.
        let dfa = if patterns.len() <= DFA_NEEDLES {
            let dfa = aho_corasick::dfa::Builder::new()
                .match_kind(MatchKind::Standard)
                .ascii_case_insensitive(true)
                .build(&patterns)?;
            NeedleDfa::of(&dfa, &patterns)
        } else {
            None
        };
        let automaton = match dfa {
            Some(dfa) => NeedleAutomaton::Dfa(dfa),
            None => NeedleAutomaton::Nfa(
                aho_corasick::nfa::contiguous::Builder::new()
                    .match_kind(MatchKind::Standard)
                    .ascii_case_insensitive(true)
                    .build(&patterns)?,
            ),
        };
        Ok(Scanner { automaton, hits })
    }

    /// Pushes the postings the text's needle occurrences make true.
    fn scan(&self, text: &str, found: &mut Vec<u32>) {
        match &self.automaton {
            NeedleAutomaton::Dfa(dfa) => self.scan_with(dfa, text.as_bytes(), found),
            NeedleAutomaton::Nfa(nfa) => self.scan_with(nfa, text.as_bytes(), found),
        }
    }

    /// The standard (every occurrence) overlapping search: each state holds every pattern
    /// ending where it is entered. Where the automaton has a prefilter, the search skips
    /// from the start state to the next place a needle may begin, as the crate's does.
    #[inline]
    fn scan_with<A: Steps>(&self, automaton: &A, text: &[u8], found: &mut Vec<u32>) {
        let Some(start) = automaton.first() else {
            return;
        };
        let mut state = start;
        let mut at = 0;
        let prefilter = automaton.skip();
        while at < text.len() {
            if let Some(prefilter) = prefilter.filter(|_| state == start) {
                match prefilter
                    .find_in(text, Span::from(at..text.len()))
                    .into_option()
                {
                    Some(next) => at = next.max(at),
                    None => return,
                }
                if at >= text.len() {
                    return;
                }
            }
            state = automaton.step(state, text[at]);
            at += 1;
            if automaton.ends_needles(state) {
                self.report(automaton, state, at, text.len(), found);
            }
        }
    }

    /// [`Scanner::scan`] of this scanner and `other` in one pass over the text. Each
    /// step of an automaton waits on the load of its previous one; two automata stepped
    /// side by side wait together, so the second scan costs little more than reading the
    /// byte. Prefilters are not used here.
    fn scan_beside(&self, other: &Scanner, text: &str, found: &mut Vec<u32>) {
        use NeedleAutomaton::{Dfa, Nfa};
        let text = text.as_bytes();
        match (&self.automaton, &other.automaton) {
            (Dfa(a), Dfa(b)) => self.scan_pair(a, other, b, text, found),
            (Dfa(a), Nfa(b)) => self.scan_pair(a, other, b, text, found),
            (Nfa(a), Dfa(b)) => self.scan_pair(a, other, b, text, found),
            (Nfa(a), Nfa(b)) => self.scan_pair(a, other, b, text, found),
        }
    }

    #[inline]
    fn scan_pair<A: Steps, B: Steps>(
        &self,
        mine: &A,
        other: &Scanner,
        theirs: &B,
        text: &[u8],
        found: &mut Vec<u32>,
    ) {
        let (Some(mut a), Some(mut b)) = (mine.first(), theirs.first()) else {
            return;
        };
        for (at, &byte) in text.iter().enumerate() {
            a = mine.step(a, byte);
            b = theirs.step(b, byte);
            if mine.ends_needles(a) {
                self.report(mine, a, at + 1, text.len(), found);
            }
            if theirs.ends_needles(b) {
                other.report(theirs, b, at + 1, text.len(), found);
            }
        }
    }

    /// Pushes the postings of the patterns the match state holds, ending at `end`.
    fn report<A: Steps>(
        &self,
        automaton: &A,
        state: A::State,
        end: usize,
        len: usize,
        found: &mut Vec<u32>,
    ) {
        automaton.each_end(state, |pattern, pattern_len| {
            let start = end - pattern_len;
            for &(posting, anchor) in self.hits[pattern].iter() {
                let placed = match anchor {
                    Anchor::Anywhere => true,
                    Anchor::Start => start == 0,
                    Anchor::End => end == len,
                };
                if placed {
                    found.push(posting);
                }
            }
        });
    }
}

/// A path's substring needles before the automaton is built: bytes, posting, anchor.
type Needle<'a> = (&'a [u8], u32, Anchor);

/// Where in the text a needle's occurrence must lie for its posting to be marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Anchor {
    Anywhere,
    Start,
    End,
}

/// Everything indexed under one event path.
#[derive(Debug)]
struct FieldIndex {
    /// Postings of the path's presence atom.
    present: Option<u32>,
    /// Lower-cased text → postings of the equality atoms.
    exact: HashMap<Box<[u8]>, u32>,
    /// [`number_key`] → postings of the number atoms.
    numbers: HashMap<u64, u32>,
    /// All substring needles of the path and, by pattern id, their postings and where the
    /// occurrence must lie (one needle may be a substring, prefix and suffix atom).
    substrings: Option<Scanner>,
    /// The path's slot, when some rule reads the field (see [`Slots`]).
    slot: Option<u32>,
    /// Tells this path's entries apart in the scan memo (see [`ScanMemo`]).
    memo_id: u32,
    /// The length of the shortest text atom (exact value or needle): a shorter text makes
    /// none true. `usize::MAX` when the path has no text atoms.
    shortest_text: usize,
    /// Whether some text atom is made only of bytes a number's text holds, so that the
    /// text of a number can make it true.
    numeric_text: bool,
}

/// The bytes serde_json writes numbers with (see `matcher::with_text`).
fn numeric_byte(b: u8) -> bool {
    b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')
}

impl Default for FieldIndex {
    fn default() -> Self {
        FieldIndex {
            present: None,
            exact: HashMap::default(),
            numbers: HashMap::default(),
            substrings: None,
            slot: None,
            memo_id: 0,
            shortest_text: usize::MAX,
            numeric_text: false,
        }
    }
}

impl FieldIndex {
    /// Whether the scalar's text can make any of the path's text atoms true. Most numbers
    /// and short texts cannot, and skipping them spares writing, hashing and scanning
    /// their text: the walk meets about seven numbers an event that only keyword needles
    /// read, and none of those needles is made of digits.
    fn may_hold(&self, value: &Value) -> bool {
        match value {
            Value::String(text) => text.len() >= self.shortest_text,
            Value::Number(_) => self.numeric_text,
            Value::Bool(_) => self.shortest_text <= "false".len(),
            _ => false,
        }
    }

    /// Distinct substring needles of the path's automaton.
    fn needles(&self) -> usize {
        self.substrings
            .as_ref()
            .map_or(0, |scanner| scanner.hits.len())
    }

    /// Notes a text atom's bytes for [`FieldIndex::may_hold`].
    fn note_text(&mut self, bytes: &[u8]) {
        self.shortest_text = self.shortest_text.min(bytes.len());
        self.numeric_text |= bytes.iter().all(|&b| numeric_byte(b));
    }
}

/// How a rule set's index divides its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexStats {
    /// Rules evaluated only on events that satisfy their necessary condition.
    pub indexed: usize,
    /// Rules without a necessary condition, evaluated on every event.
    pub always: usize,
    /// Distinct atoms (path and literal, or path presence).
    pub atoms: usize,
    /// Event paths with an index.
    pub paths: usize,
    /// Substring needles over all paths' automata.
    pub needles: usize,
    /// Substring needles of the keyword automaton, scanned over every scalar of an event.
    pub keyword_needles: usize,
    /// The path with the most substring needles, and how many.
    pub largest: Option<(String, usize)>,
    /// Detection items the walk decides, so candidates read a bit instead of matching.
    pub decided_items: usize,
}

/// The compiled prefilter of a rule set.
#[derive(Debug, Default)]
pub(crate) struct RuleIndex {
    /// Boxed, so the table the walk probes for every key stays small (a few kilobytes)
    /// and a probe reads one bucket instead of a whole index.
    fields: HashMap<Box<str>, Box<FieldIndex>>,
    /// Paths under which some indexed path lies: the walk enters only these objects.
    parents: HashMap<Box<str>, ()>,
    /// The keyword atoms, read on every scalar of the event.
    keywords: Option<FieldIndex>,
    /// Posting lists: the clauses and items each atom marks.
    postings: Vec<Posting>,
    /// Number of detection items.
    items: usize,
    /// Per rule, the marks that make it a candidate (all its clauses); 0 for the rules
    /// tried on every event.
    full: Vec<u8>,
    /// Bitset of the rules tried on every event.
    always: Vec<u64>,
    /// Rules with a requirement, and all rules.
    filtered: usize,
    /// Number of slots (distinct paths the rules read).
    slots: usize,
    /// Unique per built index, so a thread's scan memo never answers for another index.
    id: u64,
}

/// Gives each built [`RuleIndex`] its own [`RuleIndex::id`].
fn next_index_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl RuleIndex {
    /// Builds the index of rules given by their requirements, in rule order, and the
    /// slot table of `slot_paths` (slot `i` is the field at `slot_paths[i]`).
    ///
    /// # Errors
    ///
    /// The automaton of a path could not be built (more needles than aho-corasick
    /// supports); the caller then evaluates every rule.
    pub(crate) fn build(
        requirements: &[Requirement],
        slot_paths: &[String],
        items: &Items,
    ) -> Result<RuleIndex, aho_corasick::BuildError> {
        let mut index = RuleIndex {
            full: vec![0; requirements.len()],
            always: vec![0; requirements.len().div_ceil(64)],
            slots: slot_paths.len(),
            items: items.len(),
            id: next_index_id(),
            ..RuleIndex::default()
        };
        for (slot, path) in slot_paths.iter().enumerate() {
            index.fields.entry(path.as_str().into()).or_default().slot = Some(slot as u32);
            index.add_parents(path);
        }
        let mut posting_of: StdHashMap<&Atom, u32> = StdHashMap::new();
        let mut needles: StdHashMap<&str, Vec<Needle>> = StdHashMap::new();
        for (rule, requirement) in requirements.iter().enumerate() {
            if requirement.is_empty() {
                index.always[rule / 64] |= 1 << (rule % 64);
                continue;
            }
            index.filtered += 1;
            index.full[rule] = ((1u16 << requirement.len()) - 1) as u8;
            for (bit, clause) in requirement.iter().enumerate() {
                for atom in clause {
                    let posting = *posting_of.entry(atom).or_insert_with(|| {
                        index.postings.push(Posting::default());
                        (index.postings.len() - 1) as u32
                    });
                    index.postings[posting as usize]
                        .marks
                        .push(Mark::new(rule, bit));
                }
            }
        }
        for (atom, item) in &items.atoms {
            let posting = *posting_of.entry(atom).or_insert_with(|| {
                index.postings.push(Posting::default());
                (index.postings.len() - 1) as u32
            });
            index.postings[posting as usize].items.push(*item);
        }
        for (atom, &posting) in &posting_of {
            let path = atom.path();
            let field = index.fields.entry(path.into()).or_default();
            if let Some(bytes) = atom.text() {
                field.note_text(bytes);
            }
            match atom {
                Atom::Present(_) => field.present = Some(posting),
                Atom::Exact(_, bytes) => {
                    field.exact.insert(bytes.as_slice().into(), posting);
                }
                Atom::Number(_, key) => {
                    field.numbers.insert(*key, posting);
                }
                Atom::Substring(_, bytes) => {
                    needles
                        .entry(path)
                        .or_default()
                        .push((bytes, posting, Anchor::Anywhere))
                }
                Atom::Prefix(_, bytes) => {
                    needles
                        .entry(path)
                        .or_default()
                        .push((bytes, posting, Anchor::Start))
                }
                Atom::Suffix(_, bytes) => {
                    needles
                        .entry(path)
                        .or_default()
                        .push((bytes, posting, Anchor::End))
                }
            }
            index.add_parents(path);
        }
        // Keyword atoms get their own index, consulted on every scalar.
        index.keywords = index.fields.remove(KEYWORDS).map(|keywords| *keywords);
        for (path, mut list) in needles {
            // A stable pattern order keeps the built automaton the same from run to run.
            list.sort();
            // One pattern per distinct needle, however many atoms read it.
            let mut patterns: Vec<&[u8]> = Vec::new();
            let mut hits: Vec<Vec<(u32, Anchor)>> = Vec::new();
            for (bytes, posting, anchor) in list {
                if patterns.last() != Some(&bytes) {
                    patterns.push(bytes);
                    hits.push(Vec::new());
                }
                if let Some(last) = hits.last_mut() {
                    last.push((posting, anchor));
                }
            }
            let scanner = Scanner::build(
                patterns.into_iter().map(Box::from).collect(),
                hits.into_iter().map(Vec::into_boxed_slice).collect(),
            )?;
            let field = if path == KEYWORDS {
                index.keywords.as_mut()
            } else {
                index.fields.get_mut(path).map(|field| &mut **field)
            };
            if let Some(field) = field {
                field.substrings = Some(scanner);
            }
        }
        for (memo_id, field) in index.fields.values_mut().enumerate() {
            field.memo_id = memo_id as u32;
        }
        Ok(index)
    }

    /// Lets the walk enter every object a path lies under.
    fn add_parents(&mut self, path: &str) {
        let mut from = 0;
        while let Some(dot) = path[from..].find('.') {
            self.parents.insert(path[..from + dot].into(), ());
            from += dot + 1;
        }
    }

    /// An index that makes every rule a candidate.
    pub(crate) fn everything(rules: usize) -> RuleIndex {
        let mut always = vec![u64::MAX; rules.div_ceil(64)];
        if !rules.is_multiple_of(64) {
            if let Some(last) = always.last_mut() {
                *last = (1 << (rules % 64)) - 1;
            }
        }
        RuleIndex {
            full: vec![0; rules],
            always,
            id: next_index_id(),
            ..RuleIndex::default()
        }
    }

    pub(crate) fn stats(&self) -> IndexStats {
        IndexStats {
            indexed: self.filtered,
            always: self.full.len() - self.filtered,
            atoms: self.postings.len(),
            paths: self.fields.len(),
            needles: self.fields.values().map(|f| f.needles()).sum(),
            keyword_needles: self.keywords.as_ref().map_or(0, FieldIndex::needles),
            largest: self
                .fields
                .iter()
                .filter(|(_, f)| f.substrings.is_some())
                .map(|(path, f)| (path.to_string(), f.needles()))
                .max_by_key(|(_, n)| *n),
            decided_items: self.items,
        }
    }

    /// Runs `f` with the rules that can match the event and the event's slot table.
    /// Allocation-free once the thread's scratch space has grown to the set's size.
    pub(crate) fn with_candidates<R>(
        &self,
        event: &Map<String, Value>,
        f: impl FnOnce(&Candidates<'_>, &Slots<'_>) -> R,
    ) -> R {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let scratch = &mut *scratch;
            scratch.prepare(self);
            let mut nodes = recycle(std::mem::take(&mut scratch.nodes));
            let mut texts = recycle_texts(std::mem::take(&mut scratch.texts));
            self.walk_map(event, scratch, &mut nodes, &mut texts);
            for text in &texts {
                self.text_atoms(text, scratch);
            }
            let mut marking = std::mem::take(&mut scratch.marking);
            for &posting in &marking {
                self.mark(posting, &mut scratch.marks);
            }
            marking.clear();
            scratch.marking = marking;
            scratch.texts = recycle_texts(texts);
            let mut bits = std::mem::take(&mut scratch.candidates);
            bits.clear();
            bits.extend_from_slice(&self.always);
            let marks = &mut scratch.marks;
            for &rule in &marks.touched {
                let rule = rule as usize;
                if marks.masks[rule] == self.full[rule] {
                    bits[rule / 64] |= 1 << (rule % 64);
                }
                marks.masks[rule] = 0;
            }
            marks.touched.clear();
            let slots = Slots {
                generation: marks.generation,
                at: &scratch.slot_at,
                nodes: &nodes,
                items: &marks.items,
            };
            let result = f(&Candidates { bits: &bits }, &slots);
            for &word in &marks.items_touched {
                marks.items[word as usize] = 0;
            }
            marks.items_touched.clear();
            scratch.candidates = bits;
            scratch.nodes = recycle(nodes);
            result
        })
    }

    fn walk_map<'e>(
        &'e self,
        map: &'e Map<String, Value>,
        scratch: &mut Scratch,
        nodes: &mut Vec<&'e Value>,
        texts: &mut Vec<PendingText<'e>>,
    ) {
        let mut entries = map.iter();
        let mut ahead = entries.next();
        // The map's own memory (its keys' and values' slots) is asked for further ahead:
        // reading the next key's text needs its slot first.
        let mut far = map.iter().skip(PREFETCH_SLOTS_AHEAD);
        while let Some((key, value)) = ahead {
            ahead = entries.next();
            if let Some((key, value)) = far.next() {
                prefetch_at(key as *const String);
                prefetch_at(value as *const Value);
            }
            if let Some((key, value)) = ahead {
                prefetch(key.as_bytes());
                if let Value::String(text) = value {
                    prefetch(text.as_bytes());
                }
            }
            let at = scratch.path.len();
            // A top-level key is its own path: copied into the path buffer only when the
            // walk goes below it (the copy of every key was a twentieth of the walk).
            let field = if at == 0 {
                self.fields.get(key.as_str()).map(|field| &**field)
            } else {
                scratch.path.push('.');
                scratch.path.push_str(key);
                self.fields.get(scratch.path.as_str()).map(|field| &**field)
            };
            if let Some(slot) = field.and_then(|f| f.slot) {
                let entry = &mut scratch.slot_at[slot as usize];
                if entry.0 == scratch.marks.generation {
                    // Met again: the lookup by name decides (see `Slots`).
                    entry.1 = Slots::MANY;
                } else {
                    *entry = (scratch.marks.generation, nodes.len() as u32);
                    nodes.push(value);
                }
            }
            match value {
                // Most nodes: read here, without the recursive call.
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                    self.scalar(field, value, scratch, texts)
                }
                _ => {
                    if at == 0 {
                        scratch.path.push_str(key);
                    }
                    self.visit(value, field, scratch, nodes, texts);
                }
            }
            scratch.path.truncate(at);
        }
    }

    /// Marks what the node at `scratch.path` (indexed as `field`) makes true, then its
    /// children.
    fn visit<'e>(
        &'e self,
        value: &'e Value,
        field: Option<&'e FieldIndex>,
        scratch: &mut Scratch,
        nodes: &mut Vec<&'e Value>,
        texts: &mut Vec<PendingText<'e>>,
    ) {
        if let Some(posting) = field.and_then(|f| f.present) {
            self.mark(posting, &mut scratch.marks);
        }
        match value {
            // List elements are read at the list's own path.
            Value::Array(items) => {
                for item in items {
                    self.visit(item, field, scratch, nodes, texts);
                }
            }
            Value::Object(map) => {
                if self.keywords.is_some() || self.parents.contains_key(scratch.path.as_str()) {
                    self.walk_map(map, scratch, nodes, texts);
                }
            }
            Value::Null => {}
            scalar => self.scalar_atoms(field, scalar, scratch, texts),
        }
    }

    /// [`RuleIndex::visit`] of a scalar.
    #[inline]
    fn scalar<'e>(
        &'e self,
        field: Option<&'e FieldIndex>,
        value: &'e Value,
        scratch: &mut Scratch,
        texts: &mut Vec<PendingText<'e>>,
    ) {
        if let Some(posting) = field.and_then(|f| f.present) {
            self.mark(posting, &mut scratch.marks);
        }
        self.scalar_atoms(field, value, scratch, texts);
    }

    /// Marks the number atoms a scalar makes true at its path (`field`) and as a keyword,
    /// and puts its text aside for [`RuleIndex::text_atoms`] when some text atom can hold
    /// it, asking for its memo entry now. What a text marks is remembered per path and
    /// text (see [`ScanMemo`]), so a value met again costs a hash lookup instead of the
    /// lookups and scans.
    #[inline]
    fn scalar_atoms<'e>(
        &'e self,
        field: Option<&'e FieldIndex>,
        value: &'e Value,
        scratch: &mut Scratch,
        texts: &mut Vec<PendingText<'e>>,
    ) {
        if field.is_none() && self.keywords.is_none() {
            return;
        }
        let indexes = [field, self.keywords.as_ref()];
        for index in indexes.iter().flatten() {
            if !index.numbers.is_empty() {
                if let Some(posting) =
                    numeric(value).and_then(|n| index.numbers.get(&number_key(n)))
                {
                    self.mark(*posting, &mut scratch.marks);
                }
            }
        }
        let indexes = indexes.map(|index| index.filter(|index| index.may_hold(value)));
        if indexes.iter().all(Option::is_none) {
            return;
        }
        // The keyword atoms read every path alike: a path whose own atoms cannot hold the
        // text shares the keyword entries.
        let memo_field = indexes[0].map_or(ScanMemo::KEYWORDS_ONLY, |f| f.memo_id);
        // A number's or boolean's text is written out when it is read.
        let memo_key = match value {
            Value::String(text) => ScanMemo::key_of(memo_field, text.as_bytes()),
            _ => None,
        };
        if let Some(key) = memo_key {
            scratch.memo.prefetch(key);
        }
        texts.push(PendingText {
            indexes,
            memo_field,
            value,
            memo_key,
        });
    }

    /// Marks what a text the walk put aside makes true: what the memo remembers of it,
    /// or else what the lookups and scans find, then remembered.
    fn text_atoms(&self, pending: &PendingText<'_>, scratch: &mut Scratch) {
        let PendingText {
            indexes,
            memo_field,
            value,
            memo_key,
        } = *pending;
        // Borrowed apart, so the postings are taken while the memo is read.
        let Scratch {
            memo,
            marking,
            found,
            folded,
            ..
        } = scratch;
        // Marked once all the event's texts are read, each posting asked for here.
        let mut take = |posting: u32| {
            if let Some(at) = self.postings.get(posting as usize) {
                prefetch_at(at);
            }
            marking.push(posting);
        };
        with_text(value, |text| {
            let key = memo_key.or_else(|| ScanMemo::key_of(memo_field, text.as_bytes()));
            if let Some(postings) = key.and_then(|key| memo.get(key, memo_field, text.as_bytes())) {
                postings.iter().for_each(|&posting| take(posting));
            } else {
                found.clear();
                self.text_postings(&indexes, text, folded, found);
                found.iter().for_each(|&posting| take(posting));
                if let Some(key) = key {
                    memo.insert(key, memo_field, text.as_bytes(), found);
                }
            }
            false
        });
    }

    /// The postings `text` makes true in `indexes` (the path's and the keywords'), in no
    /// particular order and without repeats. `folded` is a reused buffer.
    fn text_postings(
        &self,
        indexes: &[Option<&FieldIndex>; 2],
        text: &str,
        folded: &mut Vec<u8>,
        found: &mut Vec<u32>,
    ) {
        folded.clear();
        for index in indexes.iter().flatten() {
            // Only the equality lookup needs the folded text; the automata ignore ASCII
            // case themselves.
            if !index.exact.is_empty() {
                if folded.is_empty() {
                    // Copied, then lowered in place: a loop the compiler vectorises.
                    folded.extend_from_slice(text.as_bytes());
                    folded.make_ascii_lowercase();
                }
                if let Some(posting) = index.exact.get(folded.as_slice()) {
                    found.push(*posting);
                }
            }
        }
        let scanners = indexes.map(|index| index.and_then(|i| i.substrings.as_ref()));
        match scanners {
            [Some(own), Some(words)] => own.scan_beside(words, text, found),
            [own, words] => {
                for scanner in [own, words].into_iter().flatten() {
                    scanner.scan(text, found);
                }
            }
        }
        found.sort_unstable();
        found.dedup();
    }

    fn mark(&self, posting: u32, marks: &mut Marks) {
        let seen = &mut marks.seen[posting as usize];
        if *seen == marks.generation {
            return;
        }
        *seen = marks.generation;
        let posting = &self.postings[posting as usize];
        for &mark in &posting.marks {
            let mask = &mut marks.masks[mark.rule()];
            if *mask == 0 {
                marks.touched.push(mark.rule() as u32);
            }
            *mask |= mark.bit();
        }
        for &item in &posting.items {
            let word = &mut marks.items[item as usize / 64];
            if *word == 0 {
                marks.items_touched.push(item / 64);
            }
            *word |= 1 << (item % 64);
        }
    }
}

/// The rules an event may match, as a bitset over rule positions.
pub(crate) struct Candidates<'a> {
    bits: &'a [u64],
}

impl Candidates<'_> {
    pub(crate) fn contains(&self, rule: usize) -> bool {
        self.bits
            .get(rule / 64)
            .is_some_and(|word| word & (1 << (rule % 64)) != 0)
    }

    /// The candidates in rule order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter().enumerate().flat_map(|(at, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                (word != 0).then(|| {
                    let bit = word.trailing_zeros() as usize;
                    word &= word - 1;
                    at * 64 + bit
                })
            })
        })
    }
}

/// Per-thread working space of [`RuleIndex::with_candidates`], reused from event to
/// event so the walk allocates nothing.
#[derive(Default)]
struct Scratch {
    path: String,
    folded: Vec<u8>,
    marks: Marks,
    candidates: Vec<u64>,
    /// Per slot: generation written and node position (see [`Slots`]).
    slot_at: Vec<(u32, u32)>,
    /// The nodes the slots point at, emptied between events (see [`recycle`]).
    nodes: Vec<&'static Value>,
    /// The texts the walk put aside, emptied between events (see [`recycle_texts`]).
    texts: Vec<PendingText<'static>>,
    /// The postings the texts made true, marked after all are read.
    marking: Vec<u32>,
    /// What texts marked, per path (see [`ScanMemo`]).
    memo: ScanMemo,
    /// The postings of the text being scanned, reused.
    found: Vec<u32>,
}

/// What the event's true atoms marked so far, apart from the rest of [`Scratch`] so that
/// marking can go on while the scan memo is borrowed (taking the memo out and putting it
/// back for every scalar cost a tenth of the walk).
#[derive(Default)]
struct Marks {
    /// Per posting list, the generation (event) it was last marked in.
    seen: Vec<u32>,
    generation: u32,
    /// Per rule, the clauses marked so far; reset through `touched`.
    masks: Vec<u8>,
    touched: Vec<u32>,
    /// The decided items of this event, one bit each; emptied through `items_touched`
    /// (the words set) so clearing costs what the event set, not the set's size.
    items: Vec<u64>,
    items_touched: Vec<u32>,
}

/// Asks the processor to bring the start of `bytes` into cache while the walk works on
/// the node before: an event's keys and texts are separate allocations, and most of the
/// walk's own time went on waiting for them.
#[inline(always)]
fn prefetch(bytes: &[u8]) {
    prefetch_at(bytes.as_ptr());
}

/// How many entries ahead of the walk [`RuleIndex::walk_map`] prefetches a map's slots.
const PREFETCH_SLOTS_AHEAD: usize = 4;

#[inline(always)]
pub(crate) fn prefetch_at<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing and faults on no address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// A scalar whose text the walk reads after the event's walk (see
/// [`RuleIndex::scalar_atoms`]): its memo entry is asked for when it is met, and read
/// when all of the event's are on their way, so the waits for them overlap instead of
/// following one another.
#[derive(Clone, Copy)]
struct PendingText<'e> {
    indexes: [Option<&'e FieldIndex>; 2],
    memo_field: u32,
    value: &'e Value,
    memo_key: Option<u64>,
}

/// [`recycle`] for the texts put aside.
fn recycle_texts<'a, 'b>(mut texts: Vec<PendingText<'a>>) -> Vec<PendingText<'b>> {
    texts.clear();
    texts
        .into_iter()
        .map(|_| -> PendingText<'b> { unreachable!("the vector is empty") })
        .collect()
}

/// The same vector, emptied, for nodes of another lifetime: the allocation is kept (the
/// standard library collects in place when the element layout is the same), so the slot
/// table's node list is not allocated again for every event.
fn recycle<'a, 'b>(mut nodes: Vec<&'a Value>) -> Vec<&'b Value> {
    nodes.clear();
    nodes
        .into_iter()
        .map(|_| -> &'b Value { unreachable!("the vector is empty") })
        .collect()
}

impl Scratch {
    fn prepare(&mut self, index: &RuleIndex) {
        let marks = &mut self.marks;
        if marks.seen.len() < index.postings.len() {
            marks.seen.resize(index.postings.len(), 0);
        }
        if marks.masks.len() < index.full.len() {
            marks.masks.resize(index.full.len(), 0);
        }
        if self.slot_at.len() < index.slots {
            self.slot_at.resize(index.slots, (0, 0));
        }
        if marks.items.len() < index.items.div_ceil(64) {
            marks.items.resize(index.items.div_ceil(64), 0);
        }
        marks.generation = marks.generation.wrapping_add(1);
        // After a wrap, old generations could be taken for this event's.
        if marks.generation == 0 {
            marks.seen.iter_mut().for_each(|s| *s = 0);
            self.slot_at.iter_mut().for_each(|s| *s = (0, 0));
            marks.generation = 1;
        }
        self.memo.serve(index.id);
        self.path.clear();
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Empties this thread's [`ScanMemo`].
pub(crate) fn forget_scanned_values() {
    SCRATCH.with(|scratch| scratch.borrow_mut().memo.clear());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literals_of(pattern: &str, case_insensitive: bool) -> Option<Vec<String>> {
        regex_literals(
            pattern,
            RegexFlags {
                case_insensitive,
                ..RegexFlags::default()
            },
        )
        .map(|all| {
            all.into_iter()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .collect()
        })
    }

    #[test]
    fn regex_literals_are_required_and_folded() {
        assert_eq!(
            literals_of(r"(?i)\\cmd\.exe$", false).unwrap(),
            [r"\cmd.exe"]
        );
        assert_eq!(
            literals_of("mimikatz|kiwi", false).unwrap(),
            ["kiwi", "mimikatz"]
        );
        // Inside: every match holds a backquote, or both `"{` and `"` and `-f`.
        assert_eq!(
            literals_of(r"\w+`(?:\w+|-|.)`[\w+|\s]", false).unwrap(),
            ["`"]
        );
        // The longest: `user` (and its long-s spelling, which `(?i)s` also matches).
        assert_eq!(
            literals_of(r"(?i)\d+\s+net\s+user", false).unwrap(),
            ["user", "u\u{17f}er"]
        );
        // Under an optional repetition or an alternation a literal is not required.
        assert!(literals_of(r"\d+(?:abc)?\d", false).is_none());
        assert!(literals_of(r"\d(?:abc|\d)\d", false).is_none());
        // Neither every match's start nor its end is a literal.
        assert!(literals_of(r".*\d+.*", false).is_none());
        assert!(literals_of("a?", false).is_none());
    }

    #[test]
    fn case_insensitive_literals_keep_the_kelvin_sign() {
        // `(?i)k` also matches U+212A, which ASCII lower-casing leaves as it is.
        let found = literals_of("kb", true).unwrap();
        assert!(found.contains(&"kb".to_owned()), "{found:?}");
        assert!(found.contains(&"\u{212a}b".to_owned()), "{found:?}");
    }

    #[test]
    fn candidates_iterate_in_rule_order() {
        let bits = [0b1010u64, 1 << 63];
        let candidates = Candidates { bits: &bits };
        assert_eq!(candidates.iter().collect::<Vec<_>>(), [1, 3, 127]);
        assert!(candidates.contains(127) && !candidates.contains(2) && !candidates.contains(500));
        let index = RuleIndex::everything(70);
        assert_eq!(index.always, [u64::MAX, 0b11_1111]);
    }

    /// A scanner of the needles (postings numbered from `first`), with `extra` needles
    /// that never occur (past `DFA_NEEDLES` they make it an NFA).
    fn scanner(needles: &[(&str, Anchor)], first: u32, extra: usize) -> Scanner {
        let mut list: Vec<(Vec<u8>, u32, Anchor)> = needles
            .iter()
            .zip(first..)
            .map(|((needle, anchor), posting)| (needle.as_bytes().to_vec(), posting, *anchor))
            .collect();
        list.extend((0..extra).map(|n| {
            (
                format!("\u{1}{n:05}\u{1}").into_bytes(),
                u32::MAX,
                Anchor::Anywhere,
            )
        }));
        list.sort();
        let (patterns, hits): (Vec<Box<[u8]>>, Vec<PatternHits>) = list
            .into_iter()
            .map(|(bytes, posting, anchor)| {
                (
                    bytes.into_boxed_slice(),
                    vec![(posting, anchor)].into_boxed_slice(),
                )
            })
            .unzip();
        Scanner::build(patterns, hits).unwrap()
    }

    #[test]
    fn two_scanners_side_by_side_find_what_each_finds() {
        let own = [
            ("cmd", Anchor::Start),
            (".exe", Anchor::End),
            ("mimikatz", Anchor::Anywhere),
        ];
        let words = [
            ("mimikatz", Anchor::Anywhere),
            ("sekurlsa", Anchor::Anywhere),
            ("z", Anchor::Anywhere),
        ];
        let texts = [
            "CMD /c mimikatz.exe",
            "sekurlsa::logonpasswords",
            "zz cmd",
            "",
            "notepad.EXE",
        ];
        for (own_extra, words_extra) in [(0, 0), (DFA_NEEDLES + 1, 0), (0, DFA_NEEDLES + 1)] {
            let (a, b) = (
                scanner(&own, 0, own_extra),
                scanner(&words, 10, words_extra),
            );
            for text in texts {
                let mut apart = Vec::new();
                a.scan(text, &mut apart);
                b.scan(text, &mut apart);
                let mut beside = Vec::new();
                a.scan_beside(&b, text, &mut beside);
                for found in [&mut apart, &mut beside] {
                    found.sort_unstable();
                    found.dedup();
                }
                assert_eq!(beside, apart, "{text:?}");
            }
        }
        let (a, b) = (scanner(&own, 0, 0), scanner(&words, 10, 0));
        let mut found = Vec::new();
        a.scan_beside(&b, "CMD /c mimikatz.exe", &mut found);
        found.sort_unstable();
        assert_eq!(found, [0, 1, 2, 10, 12]);
    }

    #[test]
    fn scanners_report_every_occurrence_of_every_needle_in_place() {
        let scan = |needles: &[(&str, Anchor)], extra: usize, text: &str| {
            let scanner = scanner(needles, 0, extra);
            let mut found = Vec::new();
            scanner.scan(text, &mut found);
            found.sort_unstable();
            found.dedup();
            found
        };
        let needles = [
            ("abc", Anchor::Anywhere),
            ("bc", Anchor::Anywhere),
            ("c", Anchor::End),
            ("ab", Anchor::Start),
            ("zz", Anchor::Anywhere),
            ("b", Anchor::Start),
        ];
        for extra in [0, DFA_NEEDLES + 1] {
            assert_eq!(scan(&needles, extra, "ABC"), [0, 1, 2, 3], "{extra}");
            assert_eq!(scan(&needles, extra, "xabcx"), [0, 1], "{extra}");
            assert_eq!(scan(&needles, extra, "bcbc"), [1, 2, 5], "{extra}");
            assert_eq!(scan(&needles, extra, "q z zz"), [4], "{extra}");
            assert!(scan(&needles, extra, "").is_empty());
        }
        // One needle: aho-corasick gives the automaton a prefilter to skip ahead with.
        assert_eq!(scan(&[("kiwi", Anchor::Anywhere)], 0, "mimi KIWI"), [0]);
        assert_eq!(
            scan(&[("kiwi", Anchor::End)], 0, "kiwi kiwi!"),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn an_or_requires_one_clause_of_each_branch() {
        let exact = |p: &str, v: &str| Atom::Exact(p.into(), v.as_bytes().to_vec());
        let or = any_of(vec![
            vec![vec![exact("a", "x")], vec![exact("b", "y")]],
            vec![vec![exact("c", "z")]],
        ]);
        assert_eq!(
            or,
            [
                vec![exact("a", "x"), exact("c", "z")],
                vec![exact("b", "y"), exact("c", "z")]
            ]
        );
        assert!(any_of(vec![vec![vec![exact("a", "x")]], Vec::new()]).is_empty());
    }
}
