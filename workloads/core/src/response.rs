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

/// The playbooks the respond stage loaded, as the case API checks a manual run against
/// them: a request naming a playbook that is not loaded, or one that would not start on
/// it, is refused at once instead of being accepted and starting nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlaybookCatalog {
    playbooks: std::collections::BTreeMap<String, ManualTrigger>,
}

/// What a manual run of one playbook needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManualTrigger {
    /// The trigger lists `manual` among its events.
    pub manual: bool,
    /// The trigger's `observableTypes`: when not empty, the run must name an observable
    /// of one of these types.
    pub observable_types: Vec<String>,
}

/// Why a manual run would start nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManualRunRefusal {
    #[error("no playbook {playbook} is loaded (a Playbook resource that failed its checks is not loaded either)")]
    Unknown { playbook: String },
    #[error("playbook {playbook} does not list `manual` among its trigger events")]
    NotManual { playbook: String },
    #[error("playbook {playbook} runs by hand only on an observable of type {}; {given}", types.join(", "))]
    ObservableType {
        playbook: String,
        types: Vec<String>,
        given: String,
    },
}

impl PlaybookCatalog {
    /// Adds or replaces the playbook `namespace/name`.
    pub fn insert(&mut self, key: impl Into<String>, trigger: ManualTrigger) {
        self.playbooks.insert(key.into(), trigger);
    }

    pub fn len(&self) -> usize {
        self.playbooks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.playbooks.is_empty()
    }

    /// Whether a manual run of `playbook` on `observable` would start it. The rest of
    /// the trigger (rule, level...) is matched by the respond stage against the case.
    ///
    /// # Errors
    /// Why it would not.
    pub fn check_manual(
        &self,
        playbook: &str,
        observable: Option<&crate::alert::ObservableRef>,
    ) -> Result<(), ManualRunRefusal> {
        let Some(trigger) = self.playbooks.get(playbook) else {
            return Err(ManualRunRefusal::Unknown {
                playbook: playbook.to_owned(),
            });
        };
        if !trigger.manual {
            return Err(ManualRunRefusal::NotManual {
                playbook: playbook.to_owned(),
            });
        }
        if trigger.observable_types.is_empty() {
            return Ok(());
        }
        let given = match observable {
            Some(o)
                if trigger
                    .observable_types
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(&o.kind)) =>
            {
                return Ok(())
            }
            Some(o) => format!("the request names one of type {}", o.kind),
            None => "the request names none".to_owned(),
        };
        Err(ManualRunRefusal::ObservableType {
            playbook: playbook.to_owned(),
            types: trigger.observable_types.clone(),
            given,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::ObservableRef;

    #[test]
    fn a_manual_run_is_checked_against_the_loaded_playbooks() {
        let mut catalog = PlaybookCatalog::default();
        catalog.insert(
            "soc/lookup",
            ManualTrigger {
                manual: true,
                observable_types: vec!["ip".into()],
            },
        );
        catalog.insert("soc/contain", ManualTrigger::default());
        catalog.insert(
            "soc/any",
            ManualTrigger {
                manual: true,
                observable_types: Vec::new(),
            },
        );
        let ip = ObservableRef {
            kind: "ip".into(),
            value: "203.0.113.7".into(),
        };
        let domain = ObservableRef {
            kind: "domain".into(),
            value: "example.org".into(),
        };
        assert_eq!(catalog.check_manual("soc/lookup", Some(&ip)), Ok(()));
        assert_eq!(catalog.check_manual("soc/any", None), Ok(()));
        assert!(matches!(
            catalog.check_manual("soc/nope", Some(&ip)),
            Err(ManualRunRefusal::Unknown { .. })
        ));
        assert!(matches!(
            catalog.check_manual("soc/contain", None),
            Err(ManualRunRefusal::NotManual { .. })
        ));
        let wrong = catalog
            .check_manual("soc/lookup", Some(&domain))
            .unwrap_err();
        assert_eq!(
            wrong.to_string(),
            "playbook soc/lookup runs by hand only on an observable of type ip; the request \
             names one of type domain"
        );
        assert!(catalog.check_manual("soc/lookup", None).is_err());
    }
}
