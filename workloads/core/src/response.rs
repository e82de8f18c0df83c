//! What the respond stage tells the cases stage on [`crate::Topic::ResponseOutputs`]:
//! each step's result, for the case's audit log, and the case operations playbooks ask
//! for. Defined here because both stages read them and neither depends on the other.

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
    /// The same for every delivery of this result, so the cases stage files it once:
    /// the action's idempotency key and `:result` (`:release` for the result of running
    /// its release). Absent in messages of earlier versions, which are filed as they come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl RespondOutput {
    /// The key the cases stage applies the output once by, the case it is about, and
    /// its kind (`step_result`, `case_action`).
    pub fn idempotency(&self) -> Option<(&str, i64, &'static str)> {
        match self {
            RespondOutput::StepResult(r) => r
                .idempotency_key
                .as_deref()
                .map(|key| (key, r.case_id, "step_result")),
            RespondOutput::CaseAction(a) => {
                Some((a.idempotency_key.as_str(), a.case_id, "case_action"))
            }
        }
    }
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
