//! Kastell's respond stage: Playbook resources compiled into a [`PlaybookSet`], case
//! events matched against their triggers, and each step recorded as a response action
//! in the case store, run at once or after a person approves it.
//!
//! Where to look: [`playbook`] checks and compiles playbooks, [`trigger`] decides what
//! starts them, [`template`] renders their text, [`runner`] performs the steps,
//! [`ratelimit`] bounds how often, and [`stage`] is the loop between the bus and all of
//! it. The user-facing description is `docs/respond.md`.

pub mod output;
pub mod plan;
pub mod playbook;
pub mod ratelimit;
pub mod redact;
pub mod runner;
pub mod safety;
pub mod stage;
mod steps;
pub mod template;
pub mod trigger;

pub use output::{
    BusOutbox, CaseAction, CaseOperation, LogOutbox, MemoryOutbox, Outbox, RespondOutput,
    StepResult,
};
pub use playbook::{ApprovalRule, CompiledPlaybook, CompiledStep, InvalidPlaybook, PlaybookSet};
pub use runner::{
    IntelLookup, Journal, JournalError, MapSecrets, RunContext, RunnerError, RunnerSettings,
    Runners, SecretSource, StepOutcome, StepRunner,
};
pub use safety::{Safety, Targets};
pub use stage::{
    run_respond, run_respond_on, run_responder_on, subscribe_case_events, DeadLetter, HandleError,
    RespondError, RespondReport, RespondStats, Responder, GROUP, RATE_LIMITED,
};
pub use template::{JsonTemplate, Template, TemplateError};
pub use trigger::{kind_name, CompiledTrigger, TriggeringEvent};
