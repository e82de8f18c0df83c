//! What the stages hand each other after ingest: detections, alerts and their intel
//! matches, and the case events the respond stage acts on.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::{Event, ObservableKind};

/// Sigma's rule levels, ordered from least to most severe.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Informational,
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Informational,
        Level::Low,
        Level::Medium,
        Level::High,
        Level::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Informational => "informational",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of Sigma's five levels.
#[derive(Debug, thiserror::Error)]
#[error("unknown level {0:?}: expected informational, low, medium, high or critical")]
pub struct UnknownLevel(pub String);

impl FromStr for Level {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownLevel(s.to_owned()))
    }
}

/// Where a rule came from, so an auditor can trace an alert back to a reviewed change.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RuleSource {
    /// `namespace/name` of the DetectionRule resource.
    pub resource: String,
    /// The file the resource was read from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The git commit the resource came from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// The rule an alert was raised by. `author` is kept because the Detection Rule License
/// requires it on every alert produced from a SigmaHQ rule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RuleRef {
    pub id: String,
    pub title: String,
    pub level: Level,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RuleSource>,
}

/// An observable of an event that equals an indicator in a threat-intel feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntelMatch {
    /// The observable's value as seen on the event.
    pub observable: String,
    #[serde(rename = "type")]
    pub kind: ObservableKind,
    /// The event field the observable was read from.
    pub field: String,
    /// The IntelFeed resource that holds the indicator.
    pub feed: String,
    /// The indicator as the feed wrote it (its MISP attribute type and value).
    pub indicator: String,
    /// MISP event uuid or STIX object id the indicator belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Human context: the MISP event's info line, the STIX report name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// A finding that needs an analyst's eye.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id: the same rule on the same event always gives the same id, which makes
    /// replays and redeliveries idempotent in the case store.
    pub id: String,
    pub rule: RuleRef,
    /// When the (last) matching event happened.
    pub timestamp: DateTime<Utc>,
    /// When the rule fired.
    pub detected_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensor: Option<String>,
    /// The host the alert is about, used to group alerts into cases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The matched event(s); one for a detection rule, several for a correlation.
    pub events: Vec<Event>,
    /// Group-by values of a correlation rule.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intel: Vec<IntelMatch>,
}

impl Alert {
    /// Builds the alert a rule raises on one event.
    pub fn from_event(rule: RuleRef, event: Event, detected_at: DateTime<Utc>) -> Self {
        let timestamp = event.timestamp().unwrap_or(detected_at);
        let id = alert_id(&rule.id, &[&event]);
        Alert {
            id,
            timestamp,
            detected_at,
            sensor: event.sensor().map(str::to_owned),
            host: alert_host(&event),
            rule,
            events: vec![event],
            group: BTreeMap::new(),
            intel: Vec::new(),
        }
    }
}

/// The host an alert is about: the endpoint's name, else the network source address.
pub fn alert_host(event: &Event) -> Option<String> {
    event
        .host_name()
        .map(str::to_owned)
        .or_else(|| event.source_ip().map(|ip| ip.to_string()))
}

/// Hash of the rule id and the events' canonical JSON, hex-encoded and cut to 32 chars.
pub fn alert_id(rule_id: &str, events: &[&Event]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(rule_id.as_bytes());
    for event in events {
        hasher.update([0u8]);
        // Serialising a JSON map cannot fail.
        hasher.update(serde_json::to_vec(event).unwrap_or_default());
    }
    let digest = hasher.finalize();
    hex::encode(&digest[..16])
}

/// What the correlate stage publishes for every event: the event and the alerts it raised
/// (possibly none). The enrich stage needs every event, because an intel hit on an event
/// that no rule matched is a finding too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub event: Event,
    #[serde(default)]
    pub alerts: Vec<Alert>,
}

/// What the cases stage tells the respond stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CaseEvent {
    /// A new case was opened for this alert.
    CaseOpened { case_id: i64, alert: Box<Alert> },
    /// An alert joined an existing case.
    AlertAttached { case_id: i64, alert: Box<Alert> },
    /// An analyst approved a pending action.
    ActionApproved { action_id: i64 },
    /// An analyst rejected a pending action; it will never run.
    ActionRejected { action_id: i64 },
    /// A case's severity went up (an attached alert, an analyst, a playbook).
    SeverityRaised {
        case_id: i64,
        from: Level,
        to: Level,
    },
    /// An observable was added to a case.
    ObservableAdded {
        case_id: i64,
        #[serde(rename = "type")]
        kind: String,
        value: String,
    },
    /// A case was closed.
    CaseClosed { case_id: i64, resolution: String },
    /// A person asked for a playbook to run on a case (and, optionally, one observable).
    RunPlaybook(RunPlaybook),
}

/// A manual run of a playbook, requested through the case API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPlaybook {
    pub case_id: i64,
    /// `namespace/name` of the playbook.
    pub playbook: String,
    /// The observable to run it on, when one was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observable: Option<ObservableRef>,
    /// Who asked, as the audit log names them.
    pub requested_by: String,
    /// Unique per request: the run's actions are idempotent on it, so a redelivered
    /// request runs nothing twice and a second request runs the playbook again.
    pub request_id: String,
}

/// An observable named by type and value (`ip`, `203.0.113.7`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservableRef {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

impl CaseEvent {
    /// The case the event is about; `None` for approvals and rejections, which name an
    /// action.
    pub fn case_id(&self) -> Option<i64> {
        match self {
            CaseEvent::CaseOpened { case_id, .. }
            | CaseEvent::AlertAttached { case_id, .. }
            | CaseEvent::SeverityRaised { case_id, .. }
            | CaseEvent::ObservableAdded { case_id, .. }
            | CaseEvent::CaseClosed { case_id, .. } => Some(*case_id),
            CaseEvent::RunPlaybook(run) => Some(run.case_id),
            CaseEvent::ActionApproved { .. } | CaseEvent::ActionRejected { .. } => None,
        }
    }
}
