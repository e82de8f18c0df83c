//! IntelFeed: one threat-intelligence source for the enrich stage.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CommonStatus, SecretKeyRef, Tlp};

/// A threat-intelligence source whose indicators the enrich stage matches.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kastell.eu",
    version = "v1alpha1",
    kind = "IntelFeed",
    namespaced,
    status = "IntelFeedStatus",
    category = "kastell",
    doc = "A threat-intelligence feed loaded by Kastell's enrich stage",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Indicators",
        type_ = "integer",
        json_path = ".status.indicatorCount"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IntelFeedSpec {
    /// The kind of source.
    #[serde(rename = "type")]
    pub kind: FeedKind,
    /// HTTPS URL of the source (MISP instance, feed, bundle, TAXII collection or list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A local file or directory instead of a URL, relative to the resource's directory
    /// when not absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Secret key holding the API key (MISP `Authorization` header, TAXII credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret: Option<SecretKeyRef>,
    /// How often the feed is fetched again, e.g. `1h`.
    #[serde(default = "default_refresh")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub refresh_interval: String,
    /// Indicators marked above this TLP level are not loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tlp_ceiling: Option<Tlp>,
}

fn default_refresh() -> String {
    "1h".into()
}

/// Supported feed kinds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FeedKind {
    /// A MISP instance's REST API.
    MispApi,
    /// A MISP feed: manifest.json plus one file per event.
    MispFeed,
    /// A STIX 2.1 bundle.
    StixBundle,
    /// A TAXII 2.1 collection.
    Taxii,
    /// A CSV file with a column mapping.
    Csv,
    /// One indicator per line.
    PlainList,
}

/// Observed state of an IntelFeed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntelFeedStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Indicators loaded at the last successful fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indicator_count: Option<i64>,
    /// Time of the last successful fetch (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    /// The last fetch error, cleared by a successful fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
