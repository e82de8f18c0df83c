//! Deciding whether a case event starts a playbook: the trigger's event kinds, rule ids,
//! rule tags and lowest level, compiled once and checked against each alert.

use std::str::FromStr;

use kastell_core::{Alert, CaseEvent, Level};
use kastell_crds::playbook::{Trigger, TriggerEvent};

/// A case event that can start playbooks, with the case and alert it is about.
#[derive(Debug, Clone, Copy)]
pub struct TriggeringEvent<'a> {
    pub kind: TriggerEvent,
    pub case_id: i64,
    pub alert: &'a Alert,
}

impl<'a> TriggeringEvent<'a> {
    /// The triggering part of a case event; `None` for events that start nothing
    /// (approvals).
    pub fn of(event: &'a CaseEvent) -> Option<Self> {
        let (kind, case_id, alert) = match event {
            CaseEvent::CaseOpened { case_id, alert } => (TriggerEvent::CaseOpened, case_id, alert),
            CaseEvent::AlertAttached { case_id, alert } => {
                (TriggerEvent::AlertAttached, case_id, alert)
            }
            CaseEvent::ActionApproved { .. } => return None,
        };
        Some(TriggeringEvent {
            kind,
            case_id: *case_id,
            alert,
        })
    }
}

/// A playbook's trigger, ready to match: every criterion given must hold, and a list
/// holds when any of its entries does.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledTrigger {
    events: Vec<TriggerEvent>,
    /// Lower-cased: Sigma ids are UUIDs, whose case carries no meaning.
    rule_ids: Vec<String>,
    /// Lower-cased: SigmaHQ writes `attack.t1110`, ATT&CK writes `T1110`.
    rule_tags: Vec<String>,
    min_level: Option<Level>,
}

impl CompiledTrigger {
    /// Checks and compiles a trigger.
    ///
    /// # Errors
    /// A reason a person can act on when the trigger could never fire.
    pub fn compile(trigger: &Trigger) -> Result<Self, String> {
        if trigger.events.is_empty() {
            return Err("trigger.events is empty, so the playbook would never run".into());
        }
        let min_level = trigger
            .min_level
            .map(|severity| Level::from_str(severity.as_str()))
            .transpose()
            .map_err(|e| format!("trigger.minLevel: {e}"))?;
        Ok(CompiledTrigger {
            events: trigger.events.clone(),
            rule_ids: lowercase_non_empty(&trigger.rule_ids),
            rule_tags: lowercase_non_empty(&trigger.rule_tags),
            min_level,
        })
    }

    /// Whether the event starts the playbook.
    pub fn matches(&self, event: &TriggeringEvent<'_>) -> bool {
        let rule = &event.alert.rule;
        self.events.contains(&event.kind)
            && self.min_level.is_none_or(|min| rule.level >= min)
            && (self.rule_ids.is_empty()
                || self
                    .rule_ids
                    .iter()
                    .any(|id| id.eq_ignore_ascii_case(&rule.id)))
            && (self.rule_tags.is_empty()
                || rule.tags.iter().any(|tag| {
                    self.rule_tags
                        .iter()
                        .any(|wanted| wanted.eq_ignore_ascii_case(tag))
                }))
    }
}

fn lowercase_non_empty(values: &[String]) -> Vec<String> {
    values
        .iter()
        .map(|v| v.trim().to_lowercase())
        .filter(|v| !v.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kastell_core::{Event, RuleRef};
    use kastell_crds::Severity;

    fn alert(id: &str, level: Level, tags: &[&str]) -> Alert {
        let rule = RuleRef {
            id: id.into(),
            title: "t".into(),
            level,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        };
        let event = Event::from_value(serde_json::json!({"host": {"name": "h"}})).unwrap();
        Alert::from_event(rule, event, chrono::Utc::now())
    }

    fn opened(alert: &Alert) -> TriggeringEvent<'_> {
        TriggeringEvent {
            kind: TriggerEvent::CaseOpened,
            case_id: 1,
            alert,
        }
    }

    fn trigger(yaml: &str) -> CompiledTrigger {
        CompiledTrigger::compile(&serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn an_empty_trigger_fires_on_every_case_opened_but_not_on_attach() {
        let t = trigger("{}");
        let a = alert("r", Level::Informational, &[]);
        assert!(t.matches(&opened(&a)));
        let attached = TriggeringEvent {
            kind: TriggerEvent::AlertAttached,
            ..opened(&a)
        };
        assert!(!t.matches(&attached));
        let both = trigger("events: [case-opened, alert-attached]");
        assert!(both.matches(&attached));
    }

    #[test]
    fn min_level_compares_by_severity_name() {
        let t = trigger("minLevel: high");
        assert!(!t.matches(&opened(&alert("r", Level::Medium, &[]))));
        assert!(t.matches(&opened(&alert("r", Level::High, &[]))));
        assert!(t.matches(&opened(&alert("r", Level::Critical, &[]))));
        for severity in [Severity::Informational, Severity::Low, Severity::Critical] {
            let trigger = Trigger {
                min_level: Some(severity),
                ..serde_yaml::from_str("{}").unwrap()
            };
            let compiled = CompiledTrigger::compile(&trigger).unwrap();
            assert_eq!(compiled.min_level.unwrap().as_str(), severity.as_str());
        }
    }

    #[test]
    fn rule_ids_and_tags_are_any_of_and_case_insensitive() {
        let t = trigger(
            "ruleIds: [5BF1D5B3-0000-4000-8000-000000000001, other]\n\
             ruleTags: [ATTACK.T1110, attack.t1021]",
        );
        let hit = alert(
            "5bf1d5b3-0000-4000-8000-000000000001",
            Level::Low,
            &["attack.credential-access", "attack.t1110"],
        );
        assert!(t.matches(&opened(&hit)));
        let wrong_tag = alert("other", Level::Low, &["attack.t1059"]);
        assert!(!t.matches(&opened(&wrong_tag)));
        let wrong_id = alert("third", Level::Low, &["attack.t1021"]);
        assert!(!t.matches(&opened(&wrong_id)));
    }

    #[test]
    fn a_trigger_without_events_is_rejected() {
        let err = CompiledTrigger::compile(&serde_yaml::from_str("events: []").unwrap());
        assert!(err.unwrap_err().contains("never run"));
    }

    #[test]
    fn approvals_trigger_nothing() {
        assert!(TriggeringEvent::of(&CaseEvent::ActionApproved { action_id: 1 }).is_none());
        let a = alert("r", Level::High, &[]);
        let event = CaseEvent::AlertAttached {
            case_id: 9,
            alert: Box::new(a),
        };
        let t = TriggeringEvent::of(&event).unwrap();
        assert_eq!((t.kind, t.case_id), (TriggerEvent::AlertAttached, 9));
    }
}
