//! What a playbook would do for one alert, without doing it: the steps it would start,
//! whether their condition holds, their rendered inputs (secrets redacted), which wait
//! for approval, what each would send, and what the platform's safety policy refuses.
//! `kastell playbook test` prints it as JSON lines.

use kastell_core::store::{ActionRecord, ActionStatus};
use kastell_core::Alert;
use kastell_crds::playbook::TriggerEvent;
use serde::Serialize;
use serde_json::Value;

use crate::playbook::{template_context, with_step, CompiledPlaybook};
use crate::redact;
use crate::runner::Runners;
use crate::safety::{targets, Safety};
use crate::trigger::TriggeringEvent;

/// One planned step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedStep {
    pub playbook: String,
    pub step: String,
    #[serde(rename = "type")]
    pub step_type: String,
    /// Whether the trigger matched the alert (on `case-opened`).
    pub triggered: bool,
    /// Whether the step's condition holds.
    pub condition: bool,
    pub approval_required: bool,
    /// The playbook's own dry-run flag.
    pub dry_run: bool,
    /// The rendered parameters, redacted; absent when rendering failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Value>,
    /// What the runner would send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would: Option<Value>,
    /// The release action recorded beside a containment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<Value>,
    /// Protected assets the step would touch: it would be refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub protected: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Plans every step of `playbook` for `alert` as the opening alert of case `case_id`.
pub fn plan(
    playbook: &CompiledPlaybook,
    alert: &Alert,
    case_id: i64,
    runners: &Runners,
    safety: &Safety,
) -> Vec<PlannedStep> {
    let event = TriggeringEvent::for_alert(TriggerEvent::CaseOpened, case_id, alert);
    let triggered = playbook.trigger.matches(&playbook.key, &event);
    let context = template_context(alert, case_id, None, &playbook.key);
    playbook
        .steps
        .iter()
        .map(|step| {
            let context = with_step(context.clone(), &step.name);
            let mut planned = PlannedStep {
                playbook: playbook.key.clone(),
                step: step.name.clone(),
                step_type: step.step_type().to_owned(),
                triggered,
                condition: true,
                approval_required: step.approval.required_at(alert.rule.level),
                dry_run: playbook.dry_run,
                inputs: None,
                would: None,
                release: None,
                protected: Vec::new(),
                error: None,
            };
            let rendered = step.condition_holds(&context).and_then(|holds| {
                planned.condition = holds;
                step.render_params(&context, true)
            });
            match rendered {
                Ok(params) => {
                    let action = draft(
                        playbook,
                        step.name.clone(),
                        step.step_type(),
                        alert,
                        case_id,
                        &params,
                    );
                    if let Some(runner) = runners.get(step.step_type()) {
                        planned.would = Some(runner.describe(&action));
                        planned.release = runner.release(&action);
                    }
                    planned.protected = safety.protected_among(&targets(step.step_type(), &params));
                    planned.inputs = Some(redact::json(&params));
                }
                Err(e) => planned.error = Some(e.to_string()),
            }
            planned
        })
        .collect()
}

/// The action the step would record, for the runner to describe.
fn draft(
    playbook: &CompiledPlaybook,
    step: String,
    step_type: &str,
    alert: &Alert,
    case_id: i64,
    params: &Value,
) -> ActionRecord {
    let now = chrono::Utc::now();
    ActionRecord {
        id: 0,
        case_id,
        alert_id: alert.id.clone(),
        playbook: playbook.key.clone(),
        step,
        step_type: step_type.to_owned(),
        approval_required: false,
        status: ActionStatus::Pending,
        params: params.clone(),
        reason: None,
        decided_by: None,
        result: None,
        created_at: now,
        updated_at: now,
    }
}
