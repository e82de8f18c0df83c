//! The `log` step: a structured log record carrying the rendered message, and the
//! message as the action's result.

use async_trait::async_trait;
use kastell_core::store::ActionRecord;
use serde_json::{json, Value};

use super::{StepOutcome, StepRunner};

/// Writes the action's `message` parameter as an `info` event.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogRunner;

#[async_trait]
impl StepRunner for LogRunner {
    fn step_type(&self) -> &'static str {
        "log"
    }

    async fn run(&self, action: &ActionRecord, _ctx: &super::RunContext) -> StepOutcome {
        let Some(message) = action.params.get("message").and_then(Value::as_str) else {
            return StepOutcome::failed("the action has no message parameter");
        };
        tracing::info!(
            action_id = action.id,
            playbook = %action.playbook,
            step = %action.step,
            case_id = action.case_id,
            alert_id = %action.alert_id,
            message,
            "playbook log"
        );
        StepOutcome::succeeded(json!({ "message": message }))
    }
}
