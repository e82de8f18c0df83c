//! What `kastell run` reports: counted from the stages' own reports and from an observer
//! that reads every alert on the bus, so the numbers are those of this run.

use std::collections::BTreeMap;
use std::fmt::Write;

use kastell_core::{Alert, Level};
use serde::Serialize;

/// One rejected input record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedRecord {
    pub file: String,
    pub line: u64,
    pub reason: String,
}

/// Alerts of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleCount {
    pub rule_id: String,
    pub title: String,
    pub level: Level,
    pub author: Option<String>,
    pub count: u64,
}

/// The run's summary; `--output json` prints it as one object.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Records read from the replayed files (accepted and rejected).
    pub events_in: u64,
    /// Records rejected by ingest; `rejections` says which and why.
    pub events_rejected: u64,
    pub rejections: Vec<RejectedRecord>,
    /// Alerts that reached the case store: rule alerts and intel-only alerts.
    pub alerts: u64,
    /// Alerts by level, every level present, most severe first.
    pub alerts_by_level: LevelCounts,
    pub alerts_by_rule: Vec<RuleCount>,
    /// Observables that equalled an indicator, counted once per event.
    pub intel_matches: u64,
    /// Alerts raised for intel matches on events no rule matched.
    pub intel_alerts: u64,
    pub cases_opened: u64,
    /// Cases opened and later merged into another when an alert linked them (closed as
    /// duplicates): the cases holding alerts are `cases_opened - cases_merged`.
    pub cases_merged: u64,
    pub alerts_attached_to_cases: u64,
    /// Response actions waiting for a person's approval.
    pub actions_pending: u64,
    pub actions_executed: u64,
    /// Messages a stage could not process, written to the data directory.
    pub dead_letters: u64,
    pub rules_loaded: u64,
    pub indicators_loaded: u64,
    pub playbooks_loaded: u64,
    /// Resources or inputs that could not be used.
    pub problems: Vec<String>,
    /// Where the case store is; absent when the run used a temporary directory.
    pub data_dir: Option<String>,
}

const VARIED_TITLES: &str = " (title varies per alert)";

/// Alerts per Sigma level; the fields serialise in this order, most severe first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LevelCounts {
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
    pub informational: u64,
}

impl LevelCounts {
    /// (level, count) pairs, most severe first.
    pub fn pairs(&self) -> [(Level, u64); 5] {
        [
            (Level::Critical, self.critical),
            (Level::High, self.high),
            (Level::Medium, self.medium),
            (Level::Low, self.low),
            (Level::Informational, self.informational),
        ]
    }
}

/// Counts alerts by level and by rule as they pass on the bus.
#[derive(Debug, Default)]
pub struct AlertTally {
    pub total: u64,
    by_level: BTreeMap<Level, u64>,
    by_rule: BTreeMap<String, RuleCount>,
}

impl AlertTally {
    pub fn add(&mut self, alert: &Alert) {
        self.total += 1;
        *self.by_level.entry(alert.rule.level).or_default() += 1;
        let entry = self
            .by_rule
            .entry(alert.rule.id.clone())
            .or_insert_with(|| RuleCount {
                rule_id: alert.rule.id.clone(),
                title: alert.rule.title.clone(),
                level: alert.rule.level,
                author: alert.rule.author.clone(),
                count: 0,
            });
        entry.count += 1;
        // Intel alerts name their observable in the title; one line per rule needs a
        // title that holds for all of its alerts.
        if entry.title != alert.rule.title && !entry.title.ends_with(VARIED_TITLES) {
            entry.title = format!("{}{VARIED_TITLES}", alert.rule.id);
        }
    }

    pub fn by_level(&self) -> LevelCounts {
        let count = |level| self.by_level.get(&level).copied().unwrap_or(0);
        LevelCounts {
            critical: count(Level::Critical),
            high: count(Level::High),
            medium: count(Level::Medium),
            low: count(Level::Low),
            informational: count(Level::Informational),
        }
    }

    /// Rules by descending count, then id, so the output is stable.
    pub fn by_rule(&self) -> Vec<RuleCount> {
        let mut rules: Vec<RuleCount> = self.by_rule.values().cloned().collect();
        rules.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.rule_id.cmp(&b.rule_id))
        });
        rules
    }
}

impl Summary {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "events read        {:>7}", self.events_in);
        let _ = writeln!(out, "events rejected    {:>7}", self.events_rejected);
        for r in &self.rejections {
            let _ = writeln!(out, "  {}:{}: {}", r.file, r.line, r.reason);
        }
        let _ = writeln!(out, "alerts             {:>7}", self.alerts);
        for (level, count) in self.alerts_by_level.pairs() {
            let _ = writeln!(out, "  {:<16} {count:>7}", level.as_str());
        }
        if !self.alerts_by_rule.is_empty() {
            let _ = writeln!(out, "alerts by rule");
            for r in &self.alerts_by_rule {
                let _ = writeln!(
                    out,
                    "  {:>5}  {:<8}  {}",
                    r.count,
                    r.level.as_str(),
                    r.title
                );
            }
        }
        let _ = writeln!(out, "intel matches      {:>7}", self.intel_matches);
        let _ = writeln!(out, "  intel-only alerts{:>7}", self.intel_alerts);
        let _ = writeln!(out, "cases opened       {:>7}", self.cases_opened);
        if self.cases_merged > 0 {
            let _ = writeln!(out, "  merged into one  {:>7}", self.cases_merged);
        }
        let _ = writeln!(out, "actions pending    {:>7}", self.actions_pending);
        let _ = writeln!(out, "actions executed   {:>7}", self.actions_executed);
        let _ = writeln!(out, "dead letters       {:>7}", self.dead_letters);
        let _ = writeln!(
            out,
            "loaded: {} rules, {} indicators, {} playbooks",
            self.rules_loaded, self.indicators_loaded, self.playbooks_loaded
        );
        if !self.problems.is_empty() {
            let _ = writeln!(out, "problems");
            for p in &self.problems {
                let _ = writeln!(out, "  {p}");
            }
        }
        match &self.data_dir {
            Some(dir) => {
                let _ = writeln!(out, "case store: {dir}");
            }
            None => {
                let _ = writeln!(
                    out,
                    "case store: temporary, removed at exit (pass --data DIR to keep it)"
                );
            }
        }
        out
    }
}
