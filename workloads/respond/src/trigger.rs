//! Deciding whether a case event starts a playbook: the trigger's event kinds, rule ids,
//! tags, ATT&CK techniques, sensors, intel matches, observable types and lowest level,
//! compiled once and checked against each event.

use std::str::FromStr;

use kastell_core::{Alert, CaseEvent, Level, ObservableRef};
use kastell_crds::playbook::{Trigger, TriggerEvent};
use serde_json::{json, Value};

/// A case event that can start playbooks, with the case and the alert it is about.
///
/// Events that carry no alert (severity raised, observable added, case closed, a manual
/// run) are matched and rendered against the case's latest alert, which the stage looks
/// up: `alert` is always there.
#[derive(Debug, Clone)]
pub struct TriggeringEvent<'a> {
    pub kind: TriggerEvent,
    pub case_id: i64,
    pub alert: &'a Alert,
    /// What the event's actions are idempotent on, in place of an alert id: the alert's
    /// id for alert events, the change for case events (`case-7:severity:critical`), the
    /// request for a manual run (`manual:<request id>`).
    pub trigger_id: String,
    /// The level `minLevel` compares: the alert's for alert events, the case's severity
    /// for the others.
    pub level: Level,
    /// The observable of `observable-added`, or the one a manual run was asked for.
    pub observable: Option<&'a ObservableRef>,
    /// A manual run starts only this playbook (`namespace/name`).
    pub playbook: Option<&'a str>,
    /// What the templates see as `trigger`: the event's kind and its own fields.
    pub details: Value,
}

impl<'a> TriggeringEvent<'a> {
    /// An alert's own event: a case opened by it or its joining a case.
    pub fn for_alert(kind: TriggerEvent, case_id: i64, alert: &'a Alert) -> Self {
        TriggeringEvent {
            kind,
            case_id,
            alert,
            trigger_id: alert.id.clone(),
            level: alert.rule.level,
            observable: None,
            playbook: None,
            details: json!({ "event": kind_name(kind) }),
        }
    }

    /// The triggering part of a case event: for events that carry no alert, `latest`
    /// (the case's latest alert) stands in, and `severity` is the case's. `None` for
    /// events that start nothing (approvals, rejections) and when there is no alert to
    /// match against.
    pub fn of(event: &'a CaseEvent, latest: Option<&'a Alert>, severity: Level) -> Option<Self> {
        let (kind, case_id, details, observable, playbook, trigger_id) = match event {
            CaseEvent::CaseOpened { case_id, alert } => {
                return Some(Self::for_alert(TriggerEvent::CaseOpened, *case_id, alert))
            }
            CaseEvent::AlertAttached { case_id, alert } => {
                return Some(Self::for_alert(
                    TriggerEvent::AlertAttached,
                    *case_id,
                    alert,
                ))
            }
            CaseEvent::ActionApproved { .. } | CaseEvent::ActionRejected { .. } => return None,
            CaseEvent::SeverityRaised { case_id, from, to } => (
                TriggerEvent::SeverityRaised,
                *case_id,
                json!({ "from": from, "to": to }),
                None,
                None,
                format!("case-{case_id}:severity:{to}"),
            ),
            CaseEvent::ObservableAdded {
                case_id,
                kind,
                value,
            } => (
                TriggerEvent::ObservableAdded,
                *case_id,
                json!({ "observable": { "type": kind, "value": value } }),
                None,
                None,
                format!("case-{case_id}:observable:{kind}:{value}"),
            ),
            CaseEvent::CaseClosed {
                case_id,
                resolution,
            } => (
                TriggerEvent::CaseClosed,
                *case_id,
                json!({ "resolution": resolution }),
                None,
                None,
                format!("case-{case_id}:closed"),
            ),
            CaseEvent::RunPlaybook(run) => (
                TriggerEvent::Manual,
                run.case_id,
                json!({ "observable": run.observable, "requested_by": run.requested_by }),
                run.observable.as_ref(),
                Some(run.playbook.as_str()),
                format!("manual:{}", run.request_id),
            ),
        };
        let mut details = details;
        if let Value::Object(map) = &mut details {
            map.insert("event".into(), kind_name(kind).into());
        }
        Some(TriggeringEvent {
            kind,
            case_id,
            alert: latest?,
            trigger_id,
            level: severity,
            observable,
            playbook,
            details,
        })
    }

    /// The observable's type, from a manual run's request or the added observable.
    fn observable_type(&self) -> Option<&str> {
        self.observable.map(|o| o.kind.as_str()).or_else(|| {
            self.details
                .pointer("/observable/type")
                .and_then(Value::as_str)
        })
    }
}

/// The event's name as playbooks write it.
pub fn kind_name(kind: TriggerEvent) -> &'static str {
    match kind {
        TriggerEvent::CaseOpened => "case-opened",
        TriggerEvent::AlertAttached => "alert-attached",
        TriggerEvent::SeverityRaised => "severity-raised",
        TriggerEvent::ObservableAdded => "observable-added",
        TriggerEvent::CaseClosed => "case-closed",
        TriggerEvent::Manual => "manual",
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
    /// As tags: `attack.t1110`, lower-cased.
    techniques: Vec<String>,
    sensors: Vec<String>,
    intel: Option<IntelCriteria>,
    observable_types: Vec<String>,
    min_level: Option<Level>,
}

#[derive(Debug, Clone, PartialEq)]
struct IntelCriteria {
    feeds: Vec<String>,
    types: Vec<String>,
}

impl CompiledTrigger {
    /// Checks and compiles a trigger.
    ///
    /// # Errors
    /// A reason a person can act on when the trigger could never fire.
    /// What the case API checks a manual run of this trigger's playbook against.
    pub fn manual_trigger(&self) -> kastell_core::response::ManualTrigger {
        kastell_core::response::ManualTrigger {
            manual: self.events.contains(&TriggerEvent::Manual),
            observable_types: self.observable_types.clone(),
        }
    }

    pub fn compile(trigger: &Trigger) -> Result<Self, String> {
        if trigger.events.is_empty() {
            return Err("trigger.events is empty, so the playbook would never run".into());
        }
        let min_level = trigger
            .min_level
            .map(|severity| Level::from_str(severity.as_str()))
            .transpose()
            .map_err(|e| format!("trigger.minLevel: {e}"))?;
        let mut techniques = Vec::new();
        for technique in lowercase_non_empty(&trigger.techniques) {
            if !is_technique_id(&technique) {
                return Err(format!(
                    "trigger.techniques: {technique:?} is not an ATT&CK technique id like                      T1110 or T1110.001"
                ));
            }
            techniques.push(format!("attack.{technique}"));
        }
        Ok(CompiledTrigger {
            events: trigger.events.clone(),
            rule_ids: lowercase_non_empty(&trigger.rule_ids),
            rule_tags: lowercase_non_empty(&trigger.rule_tags),
            techniques,
            sensors: lowercase_non_empty(&trigger.sensors),
            intel: trigger.intel_match.as_ref().map(|intel| IntelCriteria {
                feeds: lowercase_non_empty(&intel.feeds),
                types: lowercase_non_empty(&intel.types),
            }),
            observable_types: lowercase_non_empty(&trigger.observable_types),
            min_level,
        })
    }

    /// Whether the event starts the playbook `key`.
    pub fn matches(&self, key: &str, event: &TriggeringEvent<'_>) -> bool {
        let alert = event.alert;
        let rule = &alert.rule;
        self.events.contains(&event.kind)
            && event.playbook.is_none_or(|wanted| wanted == key)
            && self.min_level.is_none_or(|min| event.level >= min)
            && any_or_empty(&self.rule_ids, |id| id.eq_ignore_ascii_case(&rule.id))
            && any_or_empty(&self.rule_tags, |wanted| {
                rule.tags.iter().any(|tag| wanted.eq_ignore_ascii_case(tag))
            })
            && any_or_empty(&self.techniques, |technique| {
                rule.tags.iter().any(|tag| is_technique_tag(tag, technique))
            })
            && any_or_empty(&self.sensors, |sensor| {
                alert
                    .sensor
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(sensor))
            })
            && self.intel.as_ref().is_none_or(|intel| {
                alert.intel.iter().any(|hit| {
                    any_or_empty(&intel.feeds, |feed| feed.eq_ignore_ascii_case(&hit.feed))
                        && any_or_empty(&intel.types, |t| t.eq_ignore_ascii_case(hit.kind.as_str()))
                })
            })
            && any_or_empty(&self.observable_types, |wanted| {
                event
                    .observable_type()
                    .is_some_and(|t| t.eq_ignore_ascii_case(wanted))
            })
    }
}

fn any_or_empty(wanted: &[String], hit: impl Fn(&str) -> bool) -> bool {
    wanted.is_empty() || wanted.iter().any(|w| hit(w))
}

/// `t1110` or `t1110.001`, lower-cased.
fn is_technique_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix('t') else {
        return false;
    };
    let (main, sub) = rest.split_once('.').unwrap_or((rest, ""));
    main.len() == 4
        && main.bytes().all(|b| b.is_ascii_digit())
        && (sub.is_empty() || (sub.len() == 3 && sub.bytes().all(|b| b.is_ascii_digit())))
}

/// Whether a rule tag names the technique (`attack.t1110`) or one of its sub-techniques
/// (`attack.t1110.001`); a sub-technique asked for matches only itself.
fn is_technique_tag(tag: &str, technique: &str) -> bool {
    let tag = tag.to_ascii_lowercase();
    tag == technique
        || tag
            .strip_prefix(technique)
            .is_some_and(|rest| rest.starts_with('.'))
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
        TriggeringEvent::for_alert(TriggerEvent::CaseOpened, 1, alert)
    }

    fn trigger(yaml: &str) -> CompiledTrigger {
        CompiledTrigger::compile(&serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn an_empty_trigger_fires_on_every_case_opened_but_not_on_attach() {
        let t = trigger("{}");
        let a = alert("r", Level::Informational, &[]);
        assert!(t.matches("p", &opened(&a)));
        let attached = TriggeringEvent::for_alert(TriggerEvent::AlertAttached, 1, &a);
        assert!(!t.matches("p", &attached));
        let both = trigger("events: [case-opened, alert-attached]");
        assert!(both.matches("p", &attached));
    }

    #[test]
    fn min_level_compares_by_severity_name() {
        let t = trigger("minLevel: high");
        assert!(!t.matches("p", &opened(&alert("r", Level::Medium, &[]))));
        assert!(t.matches("p", &opened(&alert("r", Level::High, &[]))));
        assert!(t.matches("p", &opened(&alert("r", Level::Critical, &[]))));
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
        assert!(t.matches("p", &opened(&hit)));
        let wrong_tag = alert("other", Level::Low, &["attack.t1059"]);
        assert!(!t.matches("p", &opened(&wrong_tag)));
        let wrong_id = alert("third", Level::Low, &["attack.t1021"]);
        assert!(!t.matches("p", &opened(&wrong_id)));
    }

    #[test]
    fn a_trigger_without_events_is_rejected() {
        let err = CompiledTrigger::compile(&serde_yaml::from_str("events: []").unwrap());
        assert!(err.unwrap_err().contains("never run"));
    }

    #[test]
    fn approvals_trigger_nothing() {
        let a = alert("r", Level::High, &[]);
        for event in [
            CaseEvent::ActionApproved { action_id: 1 },
            CaseEvent::ActionRejected { action_id: 1 },
        ] {
            assert!(TriggeringEvent::of(&event, Some(&a), Level::High).is_none());
        }
        let event = CaseEvent::AlertAttached {
            case_id: 9,
            alert: Box::new(a),
        };
        let t = TriggeringEvent::of(&event, None, Level::Low).unwrap();
        assert_eq!((t.kind, t.case_id), (TriggerEvent::AlertAttached, 9));
        assert_eq!(
            t.level,
            Level::High,
            "an alert event compares the alert's level"
        );
    }

    #[test]
    fn techniques_match_their_tag_and_sub_techniques() {
        let t = trigger("techniques: [T1110]");
        assert!(t.matches("p", &opened(&alert("r", Level::Low, &["attack.t1110"]))));
        assert!(t.matches("p", &opened(&alert("r", Level::Low, &["attack.T1110.001"]))));
        assert!(!t.matches("p", &opened(&alert("r", Level::Low, &["attack.t11100"]))));
        assert!(!t.matches("p", &opened(&alert("r", Level::Low, &["attack.t1021"]))));
        let sub = trigger("techniques: [t1110.003]");
        assert!(!sub.matches("p", &opened(&alert("r", Level::Low, &["attack.t1110"]))));
        assert!(sub.matches("p", &opened(&alert("r", Level::Low, &["attack.t1110.003"]))));
        let bad = CompiledTrigger::compile(&serde_yaml::from_str("techniques: [brute]").unwrap());
        assert!(bad.unwrap_err().contains("ATT&CK technique id"));
    }

    #[test]
    fn sensors_and_intel_matches_are_checked_on_the_alert() {
        let mut a = alert("r", Level::Low, &[]);
        let t = trigger("sensors: [wazuh-manager]");
        assert!(!t.matches("p", &opened(&a)), "an alert without a sensor");
        a.sensor = Some("Wazuh-Manager".into());
        assert!(t.matches("p", &opened(&a)));

        let any = trigger("intelMatch: {}");
        let feed = trigger("intelMatch: {feeds: [soc/misp-circl], types: [ip]}");
        assert!(!any.matches("p", &opened(&a)));
        a.intel.push(kastell_core::IntelMatch {
            observable: "203.0.113.7".into(),
            kind: kastell_core::ObservableKind::Ip,
            field: "source.ip".into(),
            feed: "soc/abuse-ch".into(),
            indicator: "ip-src|203.0.113.7".into(),
            reference: None,
            context: None,
            tags: Vec::new(),
        });
        assert!(any.matches("p", &opened(&a)));
        assert!(!feed.matches("p", &opened(&a)), "another feed");
        a.intel[0].feed = "soc/misp-circl".into();
        assert!(feed.matches("p", &opened(&a)));
    }

    #[test]
    fn case_events_use_the_case_severity_and_their_own_idempotency() {
        let a = alert("r", Level::Low, &[]);
        let raised = CaseEvent::SeverityRaised {
            case_id: 3,
            from: Level::Low,
            to: Level::Critical,
        };
        let t = TriggeringEvent::of(&raised, Some(&a), Level::Critical).unwrap();
        assert_eq!(t.trigger_id, "case-3:severity:critical");
        let wants = trigger("events: [severity-raised]\nminLevel: high");
        assert!(
            wants.matches("p", &t),
            "the case is critical though its alert is low"
        );
        assert!(
            !trigger("minLevel: high").matches("p", &t),
            "not a severity-raised playbook"
        );
        assert!(
            TriggeringEvent::of(&raised, None, Level::Critical).is_none(),
            "a case without an alert has nothing to match"
        );

        let added = CaseEvent::ObservableAdded {
            case_id: 3,
            kind: "ip".into(),
            value: "203.0.113.7".into(),
        };
        let t = TriggeringEvent::of(&added, Some(&a), Level::Low).unwrap();
        assert!(trigger("events: [observable-added]\nobservableTypes: [IP]").matches("p", &t));
        assert!(!trigger("events: [observable-added]\nobservableTypes: [domain]").matches("p", &t));
        assert_eq!(t.details["observable"]["value"], "203.0.113.7");

        let closed = CaseEvent::CaseClosed {
            case_id: 3,
            resolution: "false-positive".into(),
        };
        let t = TriggeringEvent::of(&closed, Some(&a), Level::Low).unwrap();
        assert_eq!(
            (t.kind, t.trigger_id.as_str()),
            (TriggerEvent::CaseClosed, "case-3:closed")
        );
    }

    #[test]
    fn a_manual_run_starts_only_the_named_playbook_that_allows_it() {
        let a = alert("r", Level::Low, &[]);
        let run = CaseEvent::RunPlaybook(kastell_core::RunPlaybook {
            case_id: 4,
            playbook: "soc/block".into(),
            observable: Some(ObservableRef {
                kind: "ip".into(),
                value: "203.0.113.7".into(),
            }),
            requested_by: "alice".into(),
            request_id: "r1".into(),
        });
        let t = TriggeringEvent::of(&run, Some(&a), Level::Low).unwrap();
        assert_eq!(t.trigger_id, "manual:r1");
        let manual = trigger("events: [manual]\nobservableTypes: [ip]");
        assert!(manual.matches("soc/block", &t));
        assert!(!manual.matches("soc/other", &t));
        assert!(
            !trigger("{}").matches("soc/block", &t),
            "the playbook must list manual"
        );
    }
}
