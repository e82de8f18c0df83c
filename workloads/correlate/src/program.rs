//! A detection's condition laid out as a branch program, the form a rule set's candidates
//! are evaluated in.
//!
//! The tree a detection compiles to ([`Detector`]: the condition over selections, each a
//! list of conjunctions of checks) is walked by recursion, through a vector per level and
//! a check of a hundred bytes per test. Most of a candidate's tests are read from the index
//! walk's bits ([`Decided`]), so its evaluation was mostly that walk through the tree,
//! waiting on memory the rule had not touched since it was last a candidate.
//!
//! The program is the same condition as a flat array of steps, each a test and the step
//! to go to when it holds and when it does not: the usual translation of short-circuit
//! `and`/`or`/`not` into jumps. Evaluating it is a loop over a few cache lines; a decided
//! test is read from the bits in place, any other test runs the tree's check.

use serde_json::{Map, Value};

use crate::matcher::{Check, Decided, Detector, Expr, SelectionMatcher, Slots};

/// Where a step goes next: another step, or the answer.
type Target = u16;
const ACCEPT: Target = u16::MAX;
const REJECT: Target = u16::MAX - 1;
/// Programs at most this long; a longer detection (none in SigmaHQ comes near) is
/// evaluated through its tree.
const STEPS_MAX: usize = (u16::MAX - 2) as usize;

/// A detection's condition as steps; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Program {
    steps: Box<[Step]>,
    entry: Target,
}

#[derive(Debug, Clone, Copy)]
struct Step {
    test: Test,
    on_true: Target,
    on_false: Target,
}

#[derive(Debug, Clone, Copy)]
enum Test {
    /// A check the index walk decided: the bits `first .. first + count` (see
    /// [`Decided`]), which answer it unless the walk met `slot`'s path more than once
    /// (`Slots::MANY`). [`Test::NO_SLOT`] for keywords, whose bits always answer.
    Bits { slot: u32, first: u32, count: u16 },
    /// Any other check, run from the tree: `selections[selection].any_of[conjunction]
    /// [check]`.
    Check {
        selection: u16,
        conjunction: u16,
        check: u16,
    },
}

impl Test {
    const NO_SLOT: u32 = u32::MAX;

    fn of(check: &Check, selection: usize, conjunction: usize, at: usize) -> Option<Test> {
        let bits = |slot, decided: Decided| {
            Some(Test::Bits {
                slot,
                first: decided.first,
                count: u16::try_from(decided.count).ok()?,
            })
        };
        let decided = match check {
            Check::Field(check) => match (check.decided, check.field.slots.as_slice()) {
                (Some(decided), &[slot]) => bits(slot, decided),
                _ => None,
            },
            Check::Keywords(_, Some(decided)) => bits(Test::NO_SLOT, *decided),
            Check::Keywords(_, None) => None,
        };
        decided.or_else(|| {
            Some(Test::Check {
                selection: u16::try_from(selection).ok()?,
                conjunction: u16::try_from(conjunction).ok()?,
                check: u16::try_from(at).ok()?,
            })
        })
    }
}

impl Program {
    /// The detection's condition (not its filters) as a program; `None` where it does not
    /// fit one (more steps, selections or checks than a `u16` counts).
    pub(crate) fn of(detector: &Detector) -> Option<Program> {
        let mut builder = Builder {
            selections: &detector.selections,
            steps: Vec::new(),
        };
        let entry = builder.emit(&detector.condition, ACCEPT, REJECT)?;
        // Emitted last to first (a step needs its targets' positions); reversed, the
        // evaluation moves forward through memory.
        let last = builder.steps.len().checked_sub(1);
        let flip = |target: Target| match (target, last) {
            (ACCEPT | REJECT, _) | (_, None) => target,
            (at, Some(last)) => (last - usize::from(at)) as Target,
        };
        let steps = builder
            .steps
            .iter()
            .rev()
            .map(|step| Step {
                on_true: flip(step.on_true),
                on_false: flip(step.on_false),
                ..*step
            })
            .collect();
        Some(Program {
            steps,
            entry: flip(entry),
        })
    }

    /// Whether the event satisfies the condition; `None` when the tree must answer.
    pub(crate) fn run(
        &self,
        selections: &[SelectionMatcher],
        event: &Map<String, Value>,
        slots: &Slots,
    ) -> Option<bool> {
        let mut at = self.entry;
        loop {
            match at {
                ACCEPT => return Some(true),
                REJECT => return Some(false),
                _ => {}
            }
            let step = self.steps.get(usize::from(at))?;
            let holds = match step.test {
                Test::Bits { slot, first, count } => Self::bits(slots, slot, first, count)?,
                Test::Check {
                    selection,
                    conjunction,
                    check,
                } => selections
                    .get(usize::from(selection))?
                    .any_of
                    .get(usize::from(conjunction))?
                    .get(usize::from(check))?
                    .matches(event, Some(slots)),
            };
            at = if holds { step.on_true } else { step.on_false };
        }
    }

    /// A decided test's answer; `None` when the walk met its field more than once in the
    /// event (the tree then looks the field up by name).
    fn bits(slots: &Slots, slot: u32, first: u32, count: u16) -> Option<bool> {
        if slot != Test::NO_SLOT && !slots.decides_slot(slot) {
            return None;
        }
        Some(slots.decided(Decided {
            first,
            count: u32::from(count),
        }))
    }
}

struct Builder<'a> {
    selections: &'a [SelectionMatcher],
    steps: Vec<Step>,
}

impl Builder<'_> {
    /// Emits `expr` so that it continues at `on_true` when it holds and at `on_false` when
    /// it does not, and gives where it starts (a target itself where it has no test: an
    /// empty `and` holds, an empty `or` does not).
    fn emit(&mut self, expr: &Expr, on_true: Target, on_false: Target) -> Option<Target> {
        match expr {
            Expr::Not(inner) => self.emit(inner, on_false, on_true),
            // The last operand first: each earlier one continues into the one after it.
            Expr::And(all) => all
                .iter()
                .rev()
                .try_fold(on_true, |next, e| self.emit(e, next, on_false)),
            Expr::Or(any) => any
                .iter()
                .rev()
                .try_fold(on_false, |next, e| self.emit(e, on_true, next)),
            Expr::Selection(i) => {
                let selection = self.selections.get(*i)?;
                let mut next = on_false;
                for (c, conjunction) in selection.any_of.iter().enumerate().rev() {
                    let mut entry = on_true;
                    for (k, check) in conjunction.iter().enumerate().rev() {
                        entry = self.step(Test::of(check, *i, c, k)?, entry, next)?;
                    }
                    next = entry;
                }
                Some(next)
            }
        }
    }

    fn step(&mut self, test: Test, on_true: Target, on_false: Target) -> Option<Target> {
        if self.steps.len() >= STEPS_MAX {
            return None;
        }
        self.steps.push(Step {
            test,
            on_true,
            on_false,
        });
        Some((self.steps.len() - 1) as Target)
    }
}
