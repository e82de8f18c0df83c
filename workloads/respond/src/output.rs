//! What the stage tells the rest of the platform besides the action records: each
//! step's result for the case timeline and the audit log, and the case operations the
//! cases stage carries out. They go to an [`Outbox`]; `kastell run` logs them until the
//! bus has a topic for them (the cases stage will consume them from there).

use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One message of the respond stage, tagged with `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RespondOutput {
    /// A step finished (or was refused, rate limited, dry-run): for the case timeline
    /// and the audit log. Secrets are redacted.
    StepResult(StepResult),
    /// A change the cases stage makes to a case.
    CaseAction(CaseAction),
}

/// A finished step, as the case timeline shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub action_id: i64,
    pub case_id: i64,
    pub alert_id: String,
    pub playbook: String,
    pub step: String,
    pub step_type: String,
    /// `succeeded` or `failed`.
    pub status: String,
    /// Why it did not run as asked: `dry-run`, `kill-switch`, `protected-asset`,
    /// `rate-limited`; absent when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<String>,
    pub attempts: u32,
    /// Each request: method, redacted URL, status or error, `duration_ms`, attempt.
    pub requests: Vec<Value>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub duration_ms: u64,
    /// The action's result, redacted.
    pub result: Value,
    /// For a containment: the action that undoes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Value>,
}

/// A change to a case, made by the cases stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseAction {
    pub case_id: i64,
    /// The action that asked for it.
    pub action_id: i64,
    /// Repeats of one request carry the same key, so the cases stage applies it once.
    pub idempotency_key: String,
    pub operation: CaseOperation,
}

/// What to change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum CaseOperation {
    SetSeverity {
        severity: String,
    },
    Assign {
        assignee: String,
    },
    AddTask {
        title: String,
    },
    AddObservable {
        r#type: String,
        value: String,
    },
    CloseFalsePositive {
        reason: String,
    },
    /// Analyzer taxonomies (`level`, `namespace`, `predicate`, `value`) for an
    /// observable, from an `enrich` step.
    AttachTaxonomies {
        r#type: String,
        value: String,
        source: String,
        taxonomies: Vec<Value>,
    },
}

/// Where the stage's messages go.
#[async_trait]
pub trait Outbox: Send + Sync {
    async fn publish(&self, output: RespondOutput);
}

/// Messages written to the log as structured events (`respond output`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOutbox;

#[async_trait]
impl Outbox for LogOutbox {
    async fn publish(&self, output: RespondOutput) {
        let text = serde_json::to_string(&output).unwrap_or_default();
        tracing::info!(output = %text, "respond output");
    }
}

/// Messages kept in memory, in order: for tests and `kastell playbook test`.
#[derive(Debug, Default)]
pub struct MemoryOutbox {
    messages: Mutex<Vec<RespondOutput>>,
}

impl MemoryOutbox {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn messages(&self) -> Vec<RespondOutput> {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl Outbox for MemoryOutbox {
    async fn publish(&self, output: RespondOutput) {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(output);
    }
}
