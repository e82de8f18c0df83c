//! One correlation's state: a sliding window of event time per group-by key, with the
//! eviction policy that bounds its memory (documented in `docs/detection.md`).
//!
//! Entries are kept sorted by event time. An event older than the newest event time its
//! group has seen minus the lateness allowance is dropped as late. Entries older than that
//! watermark minus the timespan can never be part of a future window and are evicted. A
//! group holds at most `max_events_per_group` entries (the oldest go first) and a
//! correlation at most `max_groups` groups (the group updated longest ago goes first).
//!
//! NB: lateness and expiry are judged per group, not against the newest time of the whole
//! correlation. A group's inputs arrive in the same order however the events topic is
//! partitioned (one group is always in one partition, and a partition keeps its order),
//! but how partitions interleave on a replica depends on timing: with one correlation-wide
//! watermark, a partition read ahead made the inputs of another look late, and
//! correlations were lost or raised depending on the interleaving (docs/cluster.md).
//! Only closing windows judged at their end still follows the correlation-wide time.

use std::collections::{HashMap, HashSet, VecDeque};

use super::rule::{expression_holds, expression_negates, CorrelationType, CountCondition};
use crate::condition::Condition;

/// Limits and the lateness allowance of every correlation window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimits {
    /// How far (ms) an event may be older than the newest event seen and still count.
    pub lateness_ms: i64,
    /// Entries kept per group; beyond it the oldest entry is evicted.
    pub max_events_per_group: usize,
    /// Groups kept per correlation; beyond it the least recently updated group goes.
    pub max_groups: usize,
}

impl Default for WindowLimits {
    fn default() -> Self {
        WindowLimits {
            lateness_ms: 60_000,
            max_events_per_group: 10_000,
            max_groups: 100_000,
        }
    }
}

/// What a correlation aggregates from one input, besides its time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Measure {
    None,
    /// value_count: the (composite) value.
    Key(String),
    /// value_sum/avg/percentile/median: the number.
    Number(f64),
}

#[derive(Debug, Clone)]
struct Entry<P> {
    time: i64,
    /// Which referenced rule (position in `rules`) the input came from.
    slot: usize,
    measure: Measure,
    payload: Vec<P>,
}

/// The aggregate a correlation type computes over a window and compares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Aggregate<'a> {
    pub kind: CorrelationType,
    pub condition: &'a CountCondition,
    /// `temporal` with a boolean condition over the rules (SEP #198), and the rules'
    /// names by slot.
    pub expression: Option<&'a Condition>,
    pub names: &'a [String],
    pub percentile: Option<f64>,
    pub timespan_ms: i64,
    pub slots: usize,
}

impl Aggregate<'_> {
    /// Whether windows are judged when they close rather than as inputs arrive.
    pub(crate) fn closes_at_end(&self) -> bool {
        self.condition.closes_at_window_end() || self.expression.is_some_and(expression_negates)
    }

    /// Whether the window satisfies the correlation.
    fn holds<P>(&self, window: &[&Entry<P>]) -> bool {
        match self.expression {
            Some(expression) => expression_holds(expression, self.names, &|slot| {
                window.iter().any(|e| e.slot == slot)
            }),
            None => metric(window, *self).is_some_and(|m| self.condition.holds(m)),
        }
    }
}

/// A window that satisfied its condition: its inputs' payloads, in time order, and the
/// event time of its end.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fired<P> {
    pub payload: Vec<P>,
    pub time: i64,
}

/// Counts of what the eviction policy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounters {
    pub late: u64,
    pub evicted_events: u64,
    pub evicted_groups: u64,
}

/// One group's window and watermark.
#[derive(Debug)]
struct Group<P> {
    entries: VecDeque<Entry<P>>,
    /// The newest event time of the group's inputs, from which lateness and expiry are
    /// measured. Kept when the entries are gone (after a firing), so that a straggler
    /// from before the firing is still late.
    newest: i64,
}

impl<P> Default for Group<P> {
    fn default() -> Self {
        Group {
            entries: VecDeque::new(),
            newest: i64::MIN,
        }
    }
}

/// The state of one correlation: its groups' windows.
#[derive(Debug)]
pub(crate) struct CorrelationWindows<P> {
    groups: HashMap<Vec<String>, Group<P>>,
    /// The newest event time of any input or event: the watermark that closes windows
    /// judged at their end, and the horizon of the group limit's sweep.
    newest: i64,
    /// For conditions judged at window end: the earliest end of an open window, so
    /// that [`CorrelationWindows::close_due`] scans the groups only when one is due.
    next_close: i64,
    pub(crate) counters: WindowCounters,
}

impl<P> Default for CorrelationWindows<P> {
    fn default() -> Self {
        CorrelationWindows {
            groups: HashMap::new(),
            newest: i64::MIN,
            next_close: i64::MAX,
            counters: WindowCounters::default(),
        }
    }
}

/// A window closed at its end that fired: its group, and what fired.
pub(crate) type Closed<P> = (Vec<String>, Fired<P>);

impl<P: Clone> CorrelationWindows<P> {
    /// Adds one input and returns the window it completes, if any. A window that fires
    /// gives up its entries, so the same events do not raise the correlation again.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add(
        &mut self,
        aggregate: Aggregate<'_>,
        limits: WindowLimits,
        group: Vec<String>,
        time: i64,
        slot: usize,
        measure: Measure,
        payload: Vec<P>,
    ) -> Option<Fired<P>> {
        if let Some(known) = self.groups.get(&group) {
            if known.newest != i64::MIN && time < known.newest.saturating_sub(limits.lateness_ms) {
                self.counters.late += 1;
                return None;
            }
        } else if self.groups.len() >= limits.max_groups {
            let horizon = self
                .newest
                .max(time)
                .saturating_sub(limits.lateness_ms)
                .saturating_sub(aggregate.timespan_ms);
            self.make_room(horizon);
        }
        self.newest = self.newest.max(time);
        let at_end = aggregate.closes_at_end();
        let state = self.groups.entry(group.clone()).or_default();
        state.newest = state.newest.max(time);
        let horizon = state
            .newest
            .saturating_sub(limits.lateness_ms)
            .saturating_sub(aggregate.timespan_ms);
        let entries = &mut state.entries;
        // Windows judged at their end give up their entries in `close_due`.
        while !at_end && entries.front().is_some_and(|e| e.time < horizon) {
            entries.pop_front();
        }
        // Sorted by time; equal times keep arrival order.
        let at = entries.partition_point(|e| e.time <= time);
        entries.insert(
            at,
            Entry {
                time,
                slot,
                measure,
                payload,
            },
        );
        if entries.len() > limits.max_events_per_group {
            entries.pop_front();
            self.counters.evicted_events += 1;
        }
        if at_end {
            let end = entries
                .front()
                .map_or(time, |e| e.time)
                .saturating_add(aggregate.timespan_ms);
            self.next_close = self.next_close.min(end);
            return None;
        }
        // A group left empty keeps its watermark until the group limit sweeps it.
        fire(entries, aggregate, time)
    }

    /// Moves the watermark to event time `time` without an input, so windows judged at
    /// their end close even when their own rules stop matching.
    pub(crate) fn advance(&mut self, time: i64) {
        self.newest = self.newest.max(time);
    }

    /// Closes every window judged at its end whose end the watermark has passed (every
    /// open window when `flush`, at the end of a finite input), oldest first per group,
    /// and returns those whose condition held, ordered by end time then group.
    pub(crate) fn close_due(
        &mut self,
        aggregate: Aggregate<'_>,
        limits: WindowLimits,
        flush: bool,
    ) -> Vec<Closed<P>> {
        let watermark = if flush {
            i64::MAX
        } else {
            self.newest.saturating_sub(limits.lateness_ms)
        };
        if self.groups.is_empty() || (!flush && watermark <= self.next_close) {
            return Vec::new();
        }
        let mut closed = Vec::new();
        let mut next_close = i64::MAX;
        self.groups.retain(|group, state| {
            let entries = &mut state.entries;
            while let Some(front) = entries.front() {
                let end = front.time.saturating_add(aggregate.timespan_ms);
                if !flush && end >= watermark {
                    next_close = next_close.min(end);
                    break;
                }
                let inside = entries.partition_point(|e| e.time <= end);
                let window: Vec<Entry<P>> = entries.drain(..inside).collect();
                let refs: Vec<&Entry<P>> = window.iter().collect();
                if aggregate.holds(&refs) {
                    let payload = window.into_iter().flat_map(|e| e.payload).collect();
                    closed.push((group.clone(), Fired { payload, time: end }));
                }
            }
            !entries.is_empty()
        });
        self.next_close = next_close;
        // The groups' map has no order; alerts should not depend on it.
        closed.sort_by(|(a, x), (b, y)| x.time.cmp(&y.time).then_with(|| a.cmp(b)));
        closed
    }

    /// Drops groups with nothing inside the horizon; if none, the group whose newest
    /// entry is oldest.
    fn make_room(&mut self, horizon: i64) {
        let before = self.groups.len();
        self.groups
            .retain(|_, group| group.entries.back().is_some_and(|e| e.time >= horizon));
        if self.groups.len() == before {
            let stalest = self
                .groups
                .iter()
                .min_by_key(|(_, group)| group.entries.back().map_or(i64::MIN, |e| e.time))
                .map(|(key, _)| key.clone());
            if let Some(key) = stalest {
                self.groups.remove(&key);
            }
        }
        self.counters.evicted_groups += (before - self.groups.len()) as u64;
    }

    /// Groups held now.
    #[cfg(test)]
    pub(crate) fn group_count(&self) -> usize {
        self.groups.len()
    }
}

/// Tries the windows the new input at `time` belongs to: the one ending at it, and (for a
/// late input) those ending at later entries that now include it.
fn fire<P: Clone>(
    entries: &mut VecDeque<Entry<P>>,
    aggregate: Aggregate<'_>,
    time: i64,
) -> Option<Fired<P>> {
    let ends: Vec<usize> = (0..entries.len())
        .filter(|&i| {
            let t = entries[i].time;
            t >= time && t <= time.saturating_add(aggregate.timespan_ms)
        })
        .collect();
    for end in ends {
        // The last entry at the end time closes the window.
        let last = (end..entries.len())
            .take_while(|&i| entries[i].time == entries[end].time)
            .last()
            .unwrap_or(end);
        let end_time = entries[last].time;
        let first = entries.partition_point(|e| e.time < end_time - aggregate.timespan_ms);
        let window: Vec<&Entry<P>> = entries.range(first..=last).collect();
        if aggregate.holds(&window) {
            let payload = window.iter().flat_map(|e| e.payload.clone()).collect();
            entries.drain(first..=last);
            return Some(Fired {
                payload,
                time: end_time,
            });
        }
    }
    None
}

/// The number the condition is compared with; `None` when the window has nothing to
/// aggregate (no numeric value for the value_* types).
fn metric<P>(window: &[&Entry<P>], aggregate: Aggregate<'_>) -> Option<f64> {
    let numbers = || -> Vec<f64> {
        window
            .iter()
            .filter_map(|e| match e.measure {
                Measure::Number(n) => Some(n),
                _ => None,
            })
            .collect()
    };
    match aggregate.kind {
        CorrelationType::EventCount => Some(window.len() as f64),
        CorrelationType::ValueCount => {
            let distinct: HashSet<&str> = window
                .iter()
                .filter_map(|e| match &e.measure {
                    Measure::Key(k) => Some(k.as_str()),
                    _ => None,
                })
                .collect();
            Some(distinct.len() as f64)
        }
        CorrelationType::Temporal => {
            let distinct: HashSet<usize> = window.iter().map(|e| e.slot).collect();
            Some(distinct.len() as f64)
        }
        CorrelationType::TemporalOrdered => Some(ordered_prefix(window, aggregate.slots) as f64),
        CorrelationType::ValueSum => {
            let n = numbers();
            (!n.is_empty()).then(|| n.iter().sum())
        }
        CorrelationType::ValueAvg => {
            let n = numbers();
            (!n.is_empty()).then(|| n.iter().sum::<f64>() / n.len() as f64)
        }
        CorrelationType::ValuePercentile => {
            percentile(numbers(), aggregate.percentile.unwrap_or(50.0))
        }
        CorrelationType::ValueMedian => percentile(numbers(), 50.0),
    }
}

/// How many of the rules, in their listed order, fired one after another in the window
/// (each strictly after the previous one's event in event order). Greedy earliest
/// matching finds the longest such chain.
fn ordered_prefix<P>(window: &[&Entry<P>], slots: usize) -> usize {
    let mut next = 0;
    for entry in window {
        if next < slots && entry.slot == next {
            next += 1;
        }
    }
    next
}

/// Nearest-rank percentile.
fn percentile(mut numbers: Vec<f64>, p: f64) -> Option<f64> {
    if numbers.is_empty() {
        return None;
    }
    numbers.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * numbers.len() as f64).ceil() as usize;
    numbers
        .get(rank.saturating_sub(1).min(numbers.len() - 1))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlation::rule::CompareOp;

    fn gte(n: f64) -> CountCondition {
        CountCondition {
            comparisons: vec![(CompareOp::Gte, n)],
        }
    }

    fn aggregate(kind: CorrelationType, condition: &CountCondition, slots: usize) -> Aggregate<'_> {
        Aggregate {
            kind,
            condition,
            expression: None,
            names: &[],
            percentile: None,
            timespan_ms: 10_000,
            slots,
        }
    }

    #[test]
    fn late_events_are_dropped_and_counted() {
        let condition = gte(2.0);
        let agg = aggregate(CorrelationType::EventCount, &condition, 1);
        let limits = WindowLimits {
            lateness_ms: 1_000,
            ..WindowLimits::default()
        };
        let mut w = CorrelationWindows::default();
        assert!(w
            .add(agg, limits, vec![], 100_000, 0, Measure::None, vec![1])
            .is_none());
        // 2 s late with a 1 s allowance.
        assert!(w
            .add(agg, limits, vec![], 98_000, 0, Measure::None, vec![2])
            .is_none());
        assert_eq!(w.counters.late, 1);
        // Half a second late: inside the allowance, and completes the window.
        let fired = w
            .add(agg, limits, vec![], 99_500, 0, Measure::None, vec![3])
            .unwrap();
        assert_eq!(fired.payload, [3, 1]);
        assert_eq!(fired.time, 100_000);
    }

    #[test]
    fn lateness_is_measured_within_the_group() {
        let condition = gte(2.0);
        let agg = aggregate(CorrelationType::EventCount, &condition, 1);
        let limits = WindowLimits {
            lateness_ms: 1_000,
            ..WindowLimits::default()
        };
        let mut w = CorrelationWindows::default();
        let (a, b) = (vec!["a".to_owned()], vec!["b".to_owned()]);
        // Group b (another partition, read ahead) is far ahead in event time.
        assert!(w
            .add(agg, limits, b.clone(), 500_000, 0, Measure::None, vec![0])
            .is_none());
        // Group a's inputs are in order among themselves: neither is late, and they fire.
        assert!(w
            .add(agg, limits, a.clone(), 100_000, 0, Measure::None, vec![1])
            .is_none());
        let fired = w
            .add(agg, limits, a.clone(), 105_000, 0, Measure::None, vec![2])
            .unwrap();
        assert_eq!(fired.payload, [1, 2]);
        assert_eq!(w.counters.late, 0);
        // A straggler of group a from before its firing is still late for a.
        assert!(w
            .add(agg, limits, a, 103_000, 0, Measure::None, vec![3])
            .is_none());
        assert_eq!(w.counters.late, 1);
    }

    #[test]
    fn groups_and_entries_are_bounded() {
        let condition = gte(1_000.0);
        let agg = aggregate(CorrelationType::EventCount, &condition, 1);
        let limits = WindowLimits {
            lateness_ms: 0,
            max_events_per_group: 3,
            max_groups: 2,
        };
        let mut w = CorrelationWindows::default();
        for t in 0..5 {
            w.add(agg, limits, vec!["a".into()], t, 0, Measure::None, vec![t]);
        }
        assert_eq!(w.counters.evicted_events, 2);
        w.add(agg, limits, vec!["b".into()], 6, 0, Measure::None, vec![6]);
        w.add(agg, limits, vec!["c".into()], 7, 0, Measure::None, vec![7]);
        assert_eq!(w.group_count(), 2);
        assert_eq!(w.counters.evicted_groups, 1);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(
            percentile(vec![15.0, 20.0, 35.0, 40.0, 50.0], 30.0),
            Some(20.0)
        );
        assert_eq!(
            percentile(vec![15.0, 20.0, 35.0, 40.0, 50.0], 50.0),
            Some(35.0)
        );
        assert_eq!(percentile(vec![3.0, 1.0], 100.0), Some(3.0));
        assert_eq!(percentile(vec![], 50.0), None);
    }
}
