//! Playbook: what the respond stage does when alerts and cases appear, and who must
//! approve it first.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CommonStatus, Severity};

/// Ordered response steps run on matching alerts and cases, with human approval where
/// the playbook asks for it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kastell.eu",
    version = "v1alpha1",
    kind = "Playbook",
    namespaced,
    status = "PlaybookStatus",
    shortname = "pb",
    category = "kastell",
    doc = "A response playbook run by Kastell's respond stage",
    printcolumn(name = "DryRun", type_ = "boolean", json_path = ".spec.dryRun")
)]
#[serde(rename_all = "camelCase")]
pub struct PlaybookSpec {
    /// When the playbook runs.
    pub trigger: Trigger,
    /// The steps, run in order.
    #[schemars(length(min = 1))]
    pub steps: Vec<Step>,
    /// Record what would be done without doing it.
    #[serde(default)]
    pub dry_run: bool,
    /// Upper bound on actions started by this playbook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// What makes a playbook run. All given criteria must hold; a list matches when any of
/// its entries does.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// Case events that start the playbook; defaults to `case-opened`.
    #[serde(default = "default_trigger_events")]
    pub events: Vec<TriggerEvent>,
    /// Sigma rule ids the alert must come from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rule_ids: Vec<String>,
    /// Rule tags (e.g. `attack.t1110`), compared case-insensitively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rule_tags: Vec<String>,
    /// The lowest alert level that triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_level: Option<Severity>,
}

fn default_trigger_events() -> Vec<TriggerEvent> {
    vec![TriggerEvent::CaseOpened]
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerEvent {
    /// A new case was opened.
    CaseOpened,
    /// An alert joined an existing case.
    AlertAttached,
}

/// One step of a playbook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Name of the step, unique within the playbook.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// What the step does.
    #[serde(rename = "type")]
    pub kind: StepKind,
    /// Whether a person must approve the step before it runs.
    #[serde(default)]
    pub approval: Approval,
    /// For `log`: the message, a template over the alert and case (`{{ alert.rule.title }}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For `webhook`: where and what to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    /// Time allowed for the step.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: u32,
}

fn default_timeout() -> u32 {
    10
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// Write a structured log record (and the action's result) with a templated message.
    Log,
    /// POST a JSON document to an HTTPS endpoint.
    Webhook,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Approval {
    /// The step runs as soon as it is triggered.
    #[default]
    None,
    /// The step waits on its case until a person approves it.
    Required,
}

/// An HTTP call made by a `webhook` step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// HTTPS URL (plain HTTP only to loopback addresses).
    #[schemars(length(min = 1))]
    pub url: String,
    /// Extra request headers; values are templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The JSON body; string values are templates. Defaults to a summary of the alert
    /// and case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub body: Option<serde_json::Value>,
}

/// Limits on how often a playbook acts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Actions started per hour at most; later ones fail with a rate-limit reason.
    #[schemars(range(min = 1))]
    pub max_actions_per_hour: u32,
}

/// Observed state of a Playbook.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlaybookStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
}
