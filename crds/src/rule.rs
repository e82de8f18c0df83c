//! DetectionRule: one Sigma rule, as written, with Kastell's overrides.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CommonStatus, Severity};

/// A Sigma detection or correlation rule, held inline, compiled by the correlate stage.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kastell.eu",
    version = "v1alpha1",
    kind = "DetectionRule",
    namespaced,
    status = "DetectionRuleStatus",
    shortname = "dr",
    category = "kastell",
    doc = "A Sigma rule run by Kastell's correlate stage",
    printcolumn(name = "Rule", type_ = "string", json_path = ".status.ruleTitle"),
    printcolumn(name = "Enabled", type_ = "boolean", json_path = ".spec.enabled"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DetectionRuleSpec {
    /// The Sigma rule as YAML, verbatim (detection or correlation rule).
    #[schemars(length(min = 1))]
    pub sigma: String,
    /// Replaces the rule's own level on the alerts it raises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Severity>,
    /// A disabled rule is validated but raises no alerts.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Repeated alerts of this rule with the same grouping values within this window are
    /// suppressed, e.g. `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub suppression_window: Option<String>,
}

fn enabled_by_default() -> bool {
    true
}

/// Observed state of a DetectionRule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DetectionRuleStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// The Sigma rule's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
    /// The Sigma rule's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_title: Option<String>,
}
