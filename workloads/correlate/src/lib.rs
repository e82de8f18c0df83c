//! Kastell's correlate stage: Sigma detection rules read into a typed tree, compiled into
//! matchers, and evaluated against every event ingest publishes.
//!
//! The pipeline, named after the specification's terms:
//!
//! - [`parse_rule`] reads a rule's YAML into a [`SigmaRule`]: metadata, [`LogSource`],
//!   search identifiers ([`Selection`]) with their [`FieldMatch`]es, and conditions
//!   parsed by [`condition::parse`] into a [`Condition`] tree.
//! - [`RuleDocument::compile`] (or [`compile_rule`]) routes the logsource to the events
//!   it means (`logsource`), resolves field names through the logsource's field mapping
//!   and compiles values, modifiers and conditions into a [`CompiledRule`].
//! - A [`RuleSet`] holds the enabled rules indexed by source and evaluates an event
//!   against the rules of that source only.
//! - [`run_correlate`] is the stage: events in, a [`kastell_core::Detection`] out for
//!   every event.
//!
//! What is supported, the routing and field-mapping tables, and the limitations are in
//! `docs/detection.md`.

mod compile;
pub mod condition;
pub mod correlation;
mod detect;
mod error;
mod expand;
pub mod logsource;
mod matcher;
mod modifier;
mod needle_dfa;
mod partition;
mod prefilter;
mod program;
mod rule;
mod ruleset;
mod scan_memo;
mod stage;
mod string;

pub use condition::{Condition, ConditionError, Target};
pub use correlation::{
    CorrelationHit, CorrelationRule, CorrelationState, CorrelationType, WindowCounters,
    WindowLimits,
};
pub use detect::{
    detect_events, detect_events_reporting, detect_to_jsonl, event_time_ms, flatten_event,
    load_rules, rule_files, write_match, DetectError, DetectMatch, DetectStats, RoutedDetector,
    SkippedEvent,
};
pub use error::{ErrorKind, RuleError};
pub use expand::Placeholders;
pub use modifier::{Modifier, UnknownModifier};
pub use partition::PartitionPlan;
pub use prefilter::IndexStats;
pub use rule::{
    parse_documents, parse_rule, Detection, FieldMatch, FilterRule, LogSource, Selection,
    SigmaDocument, SigmaRule, SigmaValue,
};
pub use ruleset::{
    compile_rule, CompileOptions, CompiledRule, Evaluation, Mode, RuleDocument, RuleSet,
};
pub use stage::{
    correlate_event, run_correlate, run_correlate_on, subscribe_events, CorrelateError,
    CorrelateReport, CorrelateStats, DeadLetter, GROUP,
};
pub use string::{Piece, SigmaString};
