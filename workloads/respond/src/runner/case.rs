//! The `case` step: an operation on the triggering case (set severity, assign, add a
//! task, add an observable, close as false positive), published as a [`CaseAction`]
//! for the cases stage, which owns the case store's case records.

use async_trait::async_trait;
use kastell_core::store::ActionRecord;
use serde_json::{json, Map, Value};

use super::{config, field, RunContext, StepOutcome, StepRunner};
use crate::output::{CaseAction, CaseOperation, RespondOutput};

#[derive(Debug, Clone, Copy, Default)]
pub struct CaseRunner;

/// The operation a rendered `case` config asks for.
///
/// # Errors
/// An unknown operation, or one missing what it needs (or rendered empty).
pub fn operation(config: &Map<String, Value>) -> Result<CaseOperation, String> {
    let non_empty = |name: &str| -> Result<String, String> {
        let value = field(config, name)?.trim();
        if value.is_empty() {
            return Err(format!("{name} rendered empty"));
        }
        Ok(value.to_owned())
    };
    Ok(match field(config, "op")? {
        "set-severity" => CaseOperation::SetSeverity {
            severity: non_empty("severity")?,
        },
        "assign" => CaseOperation::Assign {
            assignee: non_empty("assignee")?,
        },
        "add-task" => CaseOperation::AddTask {
            title: non_empty("task")?,
        },
        "add-observable" => {
            let observable = config
                .get("observable")
                .and_then(Value::as_object)
                .ok_or("add-observable needs an observable")?;
            let value = field(observable, "value")?.trim();
            if value.is_empty() {
                return Err("observable.value rendered empty".into());
            }
            CaseOperation::AddObservable {
                r#type: field(observable, "type")?.to_owned(),
                value: value.to_owned(),
            }
        }
        "close-false-positive" => CaseOperation::CloseFalsePositive {
            reason: non_empty("reason")?,
        },
        other => return Err(format!("unknown case operation {other:?}")),
    })
}

#[async_trait]
impl StepRunner for CaseRunner {
    fn step_type(&self) -> &'static str {
        "case"
    }

    async fn run(&self, action: &ActionRecord, ctx: &RunContext) -> StepOutcome {
        let operation = match config(&action.params).and_then(operation) {
            Ok(operation) => operation,
            Err(error) => return StepOutcome::failed(error),
        };
        let message = CaseAction {
            case_id: action.case_id,
            action_id: action.id,
            idempotency_key: ctx.idempotency_key.clone(),
            operation,
        };
        let shown = serde_json::to_value(&message).unwrap_or(Value::Null);
        ctx.outbox.publish(RespondOutput::CaseAction(message)).await;
        StepOutcome::succeeded(json!({ "published": shown }))
    }
}
