//! Case: an incident, mirrored between the cluster and the case store.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CommonStatus, Severity, Tlp};

/// An incident under investigation.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kastell.eu",
    version = "v1alpha1",
    kind = "Case",
    namespaced,
    status = "CaseStatus",
    category = "kastell",
    doc = "An incident in Kastell's case store",
    printcolumn(name = "Severity", type_ = "string", json_path = ".spec.severity"),
    printcolumn(name = "Status", type_ = "string", json_path = ".spec.status"),
    printcolumn(name = "Assignee", type_ = "string", json_path = ".spec.assignee")
)]
#[serde(rename_all = "camelCase")]
pub struct CaseSpec {
    /// One-line summary.
    #[schemars(length(min = 1, max = 512))]
    pub title: String,
    /// Longer description (Markdown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How bad it is.
    pub severity: Severity,
    /// Traffic Light Protocol marking, which limits who may read the case.
    #[serde(default = "default_tlp")]
    pub tlp: Tlp,
    /// Permissible Actions Protocol marking.
    #[serde(default = "default_pap")]
    pub pap: Pap,
    /// Where the case is in its life.
    #[serde(default)]
    pub status: CaseState,
    /// The analyst working the case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// How the case ended; required with `status: closed`, which closes the case in the
    /// store with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<CaseResolution>,
    /// What was found and done; required with `status: closed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub summary: Option<String>,
}

/// How a case ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CaseResolution {
    TruePositive,
    FalsePositive,
    Benign,
    Duplicate,
}

fn default_tlp() -> Tlp {
    Tlp::Amber
}

fn default_pap() -> Pap {
    Pap::Amber
}

/// Permissible Actions Protocol levels.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Pap {
    Clear,
    White,
    Green,
    Amber,
    Red,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CaseState {
    #[default]
    Open,
    InProgress,
    Closed,
}

/// Observed state of a Case.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaseStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// The case's id in the case store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<i64>,
    /// Alerts attached to the case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_count: Option<i64>,
    /// The case's status in the store (`open`, `in_progress`, `closed`), which analysts
    /// may have changed since the Case was last mirrored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_status: Option<String>,
    /// Observables recorded on the case in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observable_count: Option<i64>,
    /// When the case last changed in the store (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// The metadata.generation whose spec was last written to the store; a newer
    /// generation is written again, over analysts' edits of the same fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrored_generation: Option<i64>,
}
