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
    /// The enrich stage reads it from the Secret mounted at
    /// `/etc/kastell/secrets/<name>/<key>`; `apiKeyFile` wins when both are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret: Option<SecretKeyRef>,
    /// A file holding the API key instead (a mounted Secret, or a local file in
    /// standalone mode), relative to the resource's directory when not absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<String>,
    /// How often the feed is fetched again, e.g. `1h`.
    #[serde(default = "default_refresh")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub refresh_interval: String,
    /// Indicators marked above this TLP level are not loaded (an unrecognised `tlp:`
    /// marking counts as above; unmarked indicators are loaded); status counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tlp_ceiling: Option<Tlp>,
    /// How to read a `csv` feed's rows; without it the first column is the value and
    /// each value's type is guessed from its form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvColumns>,
    /// The type of every value of a `plain-list` or `csv` feed (`ip`, `domain`, `url`,
    /// `md5`, `sha1`, `sha256`, `sha512`, `email`); guessed per value when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<String>,
    /// `POST /attributes/restSearch` filters of a `misp-api` feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misp_filters: Option<MispFilters>,
    /// The TAXII collection to read (id or title) of a `taxii` feed; the first readable
    /// one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// Files of values never to keep as indicators: MISP warning lists (`.json`) or
    /// plain allowlists (one value per line), relative to the resource's directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowlists: Vec<String>,
    /// Report matches back to the MISP instance of a `misp-api` feed as sightings
    /// (`POST /sightings/add`), batched and rate-limited; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sightings: Option<MispSightings>,
}

/// How sightings are sent back to a MISP instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MispSightings {
    /// Most `POST /sightings/add` requests per minute; matches wait in the next batch.
    #[serde(default = "default_sightings_per_minute")]
    #[schemars(range(min = 1))]
    pub max_requests_per_minute: u32,
    /// Most distinct values in one request.
    #[serde(default = "default_sightings_batch")]
    #[schemars(range(min = 1))]
    pub batch_size: u32,
    /// The `source` written on each sighting.
    #[serde(default = "default_sightings_source")]
    pub source: String,
}

impl Default for MispSightings {
    fn default() -> Self {
        MispSightings {
            max_requests_per_minute: default_sightings_per_minute(),
            batch_size: default_sightings_batch(),
            source: default_sightings_source(),
        }
    }
}

fn default_sightings_per_minute() -> u32 {
    6
}

fn default_sightings_batch() -> u32 {
    500
}

fn default_sightings_source() -> String {
    "kastell".into()
}

/// Column mapping of a CSV feed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CsvColumns {
    /// The field separator (one character).
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// Whether the first row names the columns.
    #[serde(default)]
    pub header: bool,
    /// The value's column: an index from 0 or a header name.
    #[serde(default = "default_value_column")]
    pub value_column: String,
    /// The column naming each row's type (index or header name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_column: Option<String>,
    /// A column kept as each indicator's comment, e.g. the source report's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment_column: Option<String>,
}

fn default_delimiter() -> String {
    ",".into()
}

fn default_value_column() -> String {
    "0".into()
}

/// MISP `restSearch` filters.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MispFilters {
    /// Tags required; a leading `!` excludes the tag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Only attributes marked (or not) for detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ids: Option<bool>,
    /// Only attributes of published (or unpublished) events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<bool>,
    /// MISP attribute types, e.g. `ip-dst`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// A window such as `7d`: only recent attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    /// Only attributes of events from this day on (`YYYY-MM-DD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Let MISP drop values on its warning lists.
    #[serde(default)]
    pub enforce_warninglist: bool,
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
    /// Indicators the last successful fetch left out because their TLP marking is
    /// above `spec.tlpCeiling`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above_tlp_ceiling: Option<i64>,
}
