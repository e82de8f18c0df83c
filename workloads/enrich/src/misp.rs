//! The MISP feed loader: a directory in MISP's own feed format (`manifest.json` keyed by
//! event uuid, one `<uuid>.json` per event, optionally `hashes.csv`) read into an
//! [`IndicatorStore`].
//!
//! Only attributes marked `to_ids` become indicators: MISP uses that flag for "fit for
//! automatic detection", and everything else in an event (links, comments, context
//! observables) would raise false alerts. Attributes inside objects count the same as
//! top-level ones. Producers disagree on JSON types (MISP writes `threat_level_id` as a
//! number in manifests and a string in events; TweetFeed writes strings everywhere), so
//! numbers and booleans are accepted in either spelling.
//!
//! Bad parts of a feed cost only themselves: an attribute that cannot be used is counted
//! by reason, an event file that is missing or malformed is reported and skipped, and the
//! rest of the feed loads. Only a missing or unreadable manifest fails the whole feed.
//! `hashes.csv` is a digest MISP keeps for its own correlation cache; the event files
//! hold everything it lists, so it is not read.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kastell_core::ObservableKind;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::indicator::{
    attack_techniques, normalise_domain, normalise_email, normalise_hash, normalise_url,
    seen_window, Indicator, IndicatorContext, IpOrNetwork, ThreatLevel,
};
use crate::normalise;
use crate::store::{IndicatorStore, Inserted};

/// The whole feed could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading MISP feed manifest {path}")]
    ReadManifest {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("MISP feed manifest {path} is not a JSON object keyed by event uuid")]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// One event of a feed could not be loaded; the others still are.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event {uuid}: manifest entry is malformed")]
    ManifestEntry {
        uuid: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("event {uuid}: the uuid is not a safe file name")]
    UnsafeName { uuid: String },
    #[error("event {uuid}: event file {path} is missing")]
    Missing {
        uuid: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("event {uuid}: reading event file {path}")]
    Read {
        uuid: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("event {uuid}: {path} is not a MISP event ({{\"Event\": {{...}}}})")]
    Malformed {
        uuid: String,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl EventError {
    /// The manifest key of the event.
    pub fn uuid(&self) -> &str {
        match self {
            Self::ManifestEntry { uuid, .. }
            | Self::UnsafeName { uuid }
            | Self::Missing { uuid, .. }
            | Self::Read { uuid, .. }
            | Self::Malformed { uuid, .. } => uuid,
        }
    }
}

/// Why an attribute did not become an indicator. None of these is an error: feeds are
/// full of context attributes that are not meant for detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// Not an object, or without a `type` or `value`.
    Malformed,
    /// Marked `deleted` (soft-deleted in MISP).
    Deleted,
    /// `to_ids` false or absent.
    NotToIds,
    /// A type the matcher does not support yet (see [`SUPPORTED_TYPES`]).
    UnsupportedType,
    /// The value does not parse as its type says (an IP type holding a host name, a
    /// sha256 of the wrong length).
    InvalidValue,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Deleted => "deleted",
            Self::NotToIds => "not-to-ids",
            Self::UnsupportedType => "unsupported-type",
            Self::InvalidValue => "invalid-value",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The MISP attribute types that become indicators.
pub const SUPPORTED_TYPES: &[&str] = &[
    "ip-src",
    "ip-dst",
    "ip-src|port",
    "ip-dst|port",
    "domain",
    "hostname",
    "domain|ip",
    "url",
    "md5",
    "sha1",
    "sha256",
    "sha512",
    "filename|md5",
    "filename|sha1",
    "filename|sha256",
    "email-src",
    "email-dst",
];

/// What loading one feed did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// The IntelFeed resource name the indicators were filed under.
    pub feed: String,
    pub path: PathBuf,
    /// Entries in `manifest.json`.
    pub events_listed: usize,
    /// Event files read and used (possibly with no indicator in them).
    pub events_loaded: usize,
    /// Attributes looked at, top-level and inside objects, in loaded events.
    pub attributes: u64,
    /// Indicators added; `domain|ip` adds two for one attribute.
    pub indicators: u64,
    /// Indicators not added because the feed listed them already (same event, type
    /// and value).
    pub duplicates: u64,
    /// Attributes that gave no indicator, by reason.
    pub skipped: BTreeMap<SkipReason, u64>,
    /// Attributes with `to_ids` set but of an unsupported type, by type.
    pub unsupported_types: BTreeMap<String, u64>,
    /// Events that could not be loaded.
    pub errors: Vec<EventError>,
}

impl LoadReport {
    /// Attributes skipped for one reason.
    pub fn skipped(&self, reason: SkipReason) -> u64 {
        self.skipped.get(&reason).copied().unwrap_or(0)
    }
}

/// Loads a MISP feed directory as the feed `name` (the IntelFeed resource's name).
///
/// # Errors
///
/// Only when `manifest.json` cannot be read or is not a JSON object; problems with
/// single events are in the report's `errors`.
pub fn load_misp_feed_dir(
    name: &str,
    dir: impl AsRef<Path>,
) -> Result<(IndicatorStore, LoadReport), LoadError> {
    let dir = dir.as_ref();
    let manifest_path = dir.join("manifest.json");
    let manifest = read_manifest(&manifest_path)?;
    let mut store = IndicatorStore::new();
    let mut report = LoadReport {
        feed: name.to_owned(),
        path: dir.to_owned(),
        events_listed: manifest.len(),
        ..LoadReport::default()
    };
    let span = tracing::info_span!("misp_feed", feed = name, path = %dir.display());
    let _entered = span.enter();

    for (uuid, entry) in manifest {
        match load_event(name, dir, &uuid, entry) {
            Ok(event) => {
                report.events_loaded += 1;
                add_event(&mut store, &mut report, event);
            }
            Err(error) => {
                tracing::warn!(event = %uuid, reason = %error, "skipped feed event");
                report.errors.push(error);
            }
        }
    }

    tracing::info!(
        events = report.events_loaded,
        errors = report.errors.len(),
        attributes = report.attributes,
        indicators = report.indicators,
        "feed loaded"
    );
    Ok((store, report))
}

fn read_manifest(path: &Path) -> Result<Map<String, Value>, LoadError> {
    let bytes = fs::read(path).map_err(|source| LoadError::ReadManifest {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| LoadError::Manifest {
        path: path.to_owned(),
        source,
    })
}

/// One event read from its file, with the manifest entry as a fallback for its context.
#[derive(Clone)]
pub(crate) struct LoadedEvent {
    pub(crate) context: Arc<IndicatorContext>,
    pub(crate) attributes: Vec<Value>,
}

fn load_event(feed: &str, dir: &Path, uuid: &str, entry: Value) -> Result<LoadedEvent, EventError> {
    let entry: ManifestEntry =
        serde_json::from_value(entry).map_err(|source| EventError::ManifestEntry {
            uuid: uuid.to_owned(),
            source,
        })?;
    // The key becomes a path: refuse anything that could leave the feed directory.
    if uuid.is_empty()
        || uuid.starts_with('.')
        || uuid.contains(['/', '\\', '\0'])
        || Path::new(uuid).components().count() != 1
    {
        return Err(EventError::UnsafeName {
            uuid: uuid.to_owned(),
        });
    }
    let path = dir.join(format!("{uuid}.json"));
    let bytes = fs::read(&path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => EventError::Missing {
            uuid: uuid.to_owned(),
            path: path.clone(),
            source,
        },
        _ => EventError::Read {
            uuid: uuid.to_owned(),
            path: path.clone(),
            source,
        },
    })?;
    parse_event(feed, uuid, entry, &bytes, &path)
}

/// One event's file, already read, with its manifest entry.
pub(crate) fn parse_event(
    feed: &str,
    uuid: &str,
    entry: ManifestEntry,
    bytes: &[u8],
    path: &Path,
) -> Result<LoadedEvent, EventError> {
    let file: EventFile =
        serde_json::from_slice(bytes).map_err(|source| EventError::Malformed {
            uuid: uuid.to_owned(),
            path: path.to_owned(),
            source,
        })?;
    let event = file.event;

    let mut tags = if event.tags.is_empty() {
        entry.tags
    } else {
        event.tags
    };
    for tag in event.galaxy_tags {
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    let threat_level = event
        .threat_level_id
        .or(entry.threat_level_id)
        .and_then(ThreatLevel::from_id)
        .unwrap_or_default();
    let techniques = attack_techniques(tags.iter().map(String::as_str));
    let context = IndicatorContext {
        techniques,
        feed: feed.to_owned(),
        reference: Some(event.uuid.unwrap_or_else(|| uuid.to_owned())),
        info: event.info.or(entry.info),
        date: event.date.or(entry.date),
        organisation: event.orgc.or(entry.orgc).and_then(|o| o.name),
        threat_level,
        tags,
    };

    let mut attributes = event.attributes;
    for object in event.objects {
        attributes.extend(object.attributes);
    }
    Ok(LoadedEvent {
        context: Arc::new(context),
        attributes,
    })
}

pub(crate) fn add_event(store: &mut IndicatorStore, report: &mut LoadReport, event: LoadedEvent) {
    for raw in event.attributes {
        report.attributes += 1;
        let attribute = match Attribute::deserialize(raw) {
            Ok(attribute) => attribute,
            Err(_) => {
                *report.skipped.entry(SkipReason::Malformed).or_insert(0) += 1;
                continue;
            }
        };
        match attribute_indicators(&attribute, &event.context) {
            Ok(indicators) => {
                for indicator in indicators {
                    match store.insert(indicator) {
                        Ok(Inserted::Added) => report.indicators += 1,
                        Ok(Inserted::Duplicate | Inserted::Suppressed) => report.duplicates += 1,
                        // The parsers below only build indexable kinds and values.
                        Err(e) => {
                            tracing::warn!(reason = %e, "indicator not indexed");
                            *report.skipped.entry(SkipReason::InvalidValue).or_insert(0) += 1;
                        }
                    }
                }
            }
            Err(reason) => {
                *report.skipped.entry(reason).or_insert(0) += 1;
                if reason == SkipReason::UnsupportedType {
                    *report
                        .unsupported_types
                        .entry(attribute.kind.clone())
                        .or_insert(0) += 1;
                }
            }
        }
    }
}

/// One matchable part of an attribute value.
struct Part {
    kind: ObservableKind,
    value: String,
    network: Option<ipnet::IpNet>,
}

fn attribute_indicators(
    attribute: &Attribute,
    context: &Arc<IndicatorContext>,
) -> Result<Vec<Indicator>, SkipReason> {
    if attribute.deleted {
        return Err(SkipReason::Deleted);
    }
    if !attribute.to_ids {
        return Err(SkipReason::NotToIds);
    }
    let parsed = parse_value(&attribute.kind, &attribute.value)?;
    let comment = attribute
        .comment
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    let mut tags = attribute.tags.clone();
    for tag in &attribute.galaxy_tags {
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    let (first_seen, last_seen) = seen_window(
        attribute.first_seen.as_deref(),
        attribute.last_seen.as_deref(),
    );
    Ok(parsed
        .parts
        .into_iter()
        .map(|part| Indicator {
            kind: part.kind,
            value: part.value,
            network: part.network,
            attribute_type: attribute.kind.clone(),
            attribute_value: attribute.value.clone(),
            attribute_id: attribute.uuid.clone(),
            port: parsed.port,
            filename: parsed.filename.clone(),
            comment: comment.clone(),
            tags: tags.clone(),
            first_seen,
            last_seen,
            valid_until: None,
            context: Arc::clone(context),
        })
        .collect())
}

struct ParsedValue {
    parts: Vec<Part>,
    port: Option<u16>,
    filename: Option<String>,
}

impl ParsedValue {
    fn one(part: Part) -> Self {
        ParsedValue {
            parts: vec![part],
            port: None,
            filename: None,
        }
    }
}

/// Splits and normalises a value by its MISP type. Composite values are split on the
/// last `|`, because a file name may itself contain `|` while a hash, port or address
/// never does.
fn parse_value(kind: &str, value: &str) -> Result<ParsedValue, SkipReason> {
    let composite = || normalise::split_composite(value).ok_or(SkipReason::InvalidValue);
    match kind {
        "ip-src" | "ip-dst" => ip_part(value).map(ParsedValue::one),
        "ip-src|port" | "ip-dst|port" => {
            let (ip, port) = composite()?;
            let port = port
                .trim()
                .parse::<u16>()
                .map_err(|_| SkipReason::InvalidValue)?;
            Ok(ParsedValue {
                port: Some(port),
                ..ParsedValue::one(ip_part(ip)?)
            })
        }
        "domain" | "hostname" => domain_part(value).map(ParsedValue::one),
        "domain|ip" => {
            let (domain, ip) = composite()?;
            Ok(ParsedValue {
                parts: vec![domain_part(domain)?, ip_part(ip)?],
                port: None,
                filename: None,
            })
        }
        "url" => normalise_url(value)
            .map(|value| {
                ParsedValue::one(Part {
                    kind: ObservableKind::Url,
                    value,
                    network: None,
                })
            })
            .ok_or(SkipReason::InvalidValue),
        "md5" => hash_part(ObservableKind::Md5, value).map(ParsedValue::one),
        "sha1" => hash_part(ObservableKind::Sha1, value).map(ParsedValue::one),
        "sha256" => hash_part(ObservableKind::Sha256, value).map(ParsedValue::one),
        "sha512" => hash_part(ObservableKind::Sha512, value).map(ParsedValue::one),
        "filename|md5" | "filename|sha1" | "filename|sha256" => {
            let hash_kind = match kind {
                "filename|md5" => ObservableKind::Md5,
                "filename|sha1" => ObservableKind::Sha1,
                _ => ObservableKind::Sha256,
            };
            let (filename, hash) = composite()?;
            Ok(ParsedValue {
                filename: Some(filename.to_owned()),
                ..ParsedValue::one(hash_part(hash_kind, hash)?)
            })
        }
        "email-src" | "email-dst" => normalise_email(value)
            .map(|value| {
                ParsedValue::one(Part {
                    kind: ObservableKind::Email,
                    value,
                    network: None,
                })
            })
            .ok_or(SkipReason::InvalidValue),
        _ => Err(SkipReason::UnsupportedType),
    }
}

fn ip_part(raw: &str) -> Result<Part, SkipReason> {
    match normalise::ip_or_network(raw).ok_or(SkipReason::InvalidValue)? {
        IpOrNetwork::Ip(ip) => Ok(Part {
            kind: ObservableKind::Ip,
            value: ip.to_string(),
            network: None,
        }),
        IpOrNetwork::Network(network) => Ok(Part {
            kind: ObservableKind::Ip,
            value: network.to_string(),
            network: Some(network),
        }),
    }
}

fn domain_part(raw: &str) -> Result<Part, SkipReason> {
    normalise_domain(raw)
        .map(|value| Part {
            kind: ObservableKind::Domain,
            value,
            network: None,
        })
        .ok_or(SkipReason::InvalidValue)
}

fn hash_part(kind: ObservableKind, raw: &str) -> Result<Part, SkipReason> {
    normalise_hash(kind, raw)
        .map(|value| Part {
            kind,
            value,
            network: None,
        })
        .ok_or(SkipReason::InvalidValue)
}

// The feed's JSON, read leniently: unknown fields are ignored and numbers and booleans
// come in either spelling.

#[derive(Deserialize)]
struct EventFile {
    #[serde(rename = "Event")]
    event: MispEvent,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MispEvent {
    #[serde(deserialize_with = "opt_string")]
    uuid: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    info: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    date: Option<String>,
    #[serde(deserialize_with = "opt_number")]
    threat_level_id: Option<u64>,
    #[serde(rename = "Orgc", deserialize_with = "opt_or_null")]
    orgc: Option<Org>,
    #[serde(rename = "Tag", deserialize_with = "tag_names")]
    tags: Vec<String>,
    #[serde(rename = "Galaxy", deserialize_with = "galaxy_tag_names")]
    galaxy_tags: Vec<String>,
    #[serde(rename = "Attribute", deserialize_with = "list_or_null")]
    attributes: Vec<Value>,
    #[serde(rename = "Object", deserialize_with = "list_or_null")]
    objects: Vec<MispObject>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub(crate) struct ManifestEntry {
    #[serde(deserialize_with = "opt_string")]
    pub(crate) timestamp: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    info: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    date: Option<String>,
    #[serde(deserialize_with = "opt_number")]
    threat_level_id: Option<u64>,
    #[serde(rename = "Orgc", deserialize_with = "opt_or_null")]
    orgc: Option<Org>,
    #[serde(rename = "Tag", deserialize_with = "tag_names")]
    tags: Vec<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct Org {
    #[serde(deserialize_with = "opt_string")]
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MispObject {
    #[serde(rename = "Attribute", deserialize_with = "list_or_null")]
    attributes: Vec<Value>,
}

#[derive(Deserialize)]
struct Attribute {
    #[serde(rename = "type")]
    kind: String,
    #[serde(deserialize_with = "scalar_string")]
    value: String,
    #[serde(default, deserialize_with = "flag")]
    to_ids: bool,
    #[serde(default, deserialize_with = "flag")]
    deleted: bool,
    #[serde(default, deserialize_with = "opt_string")]
    uuid: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    comment: Option<String>,
    #[serde(rename = "Tag", default, deserialize_with = "tag_names")]
    tags: Vec<String>,
    #[serde(rename = "Galaxy", default, deserialize_with = "galaxy_tag_names")]
    galaxy_tags: Vec<String>,
    #[serde(default, deserialize_with = "opt_string")]
    first_seen: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    last_seen: Option<String>,
}

fn list_or_null<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

fn opt_or_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)
}

/// A string, or a number written where a string was expected.
pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(de::Error::custom(format!("expected a string, got {other}"))),
    }
}

fn scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    opt_string(d)?.ok_or_else(|| de::Error::custom("value is null"))
}

/// A number, or its decimal spelling as a string; an empty string is no number.
pub(crate) fn opt_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_u64()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("expected a number, got {s:?}"))),
        Some(other) => Err(de::Error::custom(format!("expected a number, got {other}"))),
    }
}

/// A boolean as `true`/`false`, `1`/`0` or their string spellings.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(Value::Number(n)) => Ok(n.as_u64() == Some(1)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" => Ok(true),
            "0" | "false" | "" => Ok(false),
            _ => Err(de::Error::custom(format!("expected a flag, got {s:?}"))),
        },
        Some(other) => Err(de::Error::custom(format!("expected a flag, got {other}"))),
    }
}

/// The names of a `Tag` list; entries without a name are ignored.
pub(crate) fn tag_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    struct Tag {
        #[serde(default, deserialize_with = "opt_string")]
        name: Option<String>,
    }
    let tags: Vec<Tag> = list_or_null(d)?;
    let mut names: Vec<String> = Vec::with_capacity(tags.len());
    for name in tags.into_iter().filter_map(|t| t.name) {
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// The `tag_name` of every cluster of a `Galaxy` list, e.g.
/// `misp-galaxy:mitre-attack-pattern="Spearphishing Attachment - T1193"`.
fn galaxy_tag_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    struct Galaxy {
        #[serde(rename = "GalaxyCluster", default, deserialize_with = "list_or_null")]
        clusters: Vec<Cluster>,
    }
    #[derive(Deserialize)]
    struct Cluster {
        #[serde(default, deserialize_with = "opt_string")]
        tag_name: Option<String>,
    }
    let galaxies: Vec<Galaxy> = list_or_null(d)?;
    let mut names: Vec<String> = Vec::new();
    for name in galaxies
        .into_iter()
        .flat_map(|g| g.clusters)
        .filter_map(|c| c.tag_name)
    {
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(kind: &str, value: &str) -> Result<Vec<(ObservableKind, String)>, SkipReason> {
        parse_value(kind, value).map(|p| p.parts.into_iter().map(|p| (p.kind, p.value)).collect())
    }

    #[test]
    fn composites_split_on_the_last_bar() {
        let sha = "7a200c4df99887991c638fe625d07a4a3fc2bdc887112437752b3df5c8da79b6";
        let parsed = parse_value(
            "filename|sha256",
            &format!("a|b.exe|{}", sha.to_uppercase()),
        )
        .ok()
        .unwrap();
        assert_eq!(parsed.filename.as_deref(), Some("a|b.exe"));
        assert_eq!(parsed.parts[0].value, sha);
        assert_eq!(
            parts("domain|ip", "Evil.Example|192.0.2.1").unwrap(),
            vec![
                (ObservableKind::Domain, "evil.example".to_owned()),
                (ObservableKind::Ip, "192.0.2.1".to_owned())
            ]
        );
        let parsed = parse_value("ip-dst|port", "2001:db8::1|443").ok().unwrap();
        assert_eq!(
            (parsed.parts[0].value.as_str(), parsed.port),
            ("2001:db8::1", Some(443))
        );
        assert_eq!(
            parts("ip-dst|port", "192.0.2.1|http").unwrap_err(),
            SkipReason::InvalidValue
        );
        assert_eq!(
            parts("ip-dst|port", "192.0.2.1").unwrap_err(),
            SkipReason::InvalidValue
        );
    }

    #[test]
    fn wrong_values_and_types_are_skip_reasons() {
        assert_eq!(
            parts("ip-dst", "evil.example").unwrap_err(),
            SkipReason::InvalidValue
        );
        assert_eq!(
            parts("sha256", "abc").unwrap_err(),
            SkipReason::InvalidValue
        );
        assert_eq!(
            parts("email-src", "nobody").unwrap_err(),
            SkipReason::InvalidValue
        );
        assert_eq!(
            parts("regkey|value", "HKLM\\x|1").unwrap_err(),
            SkipReason::UnsupportedType
        );
        let net = parse_value("ip-src", "198.51.100.9/24").ok().unwrap();
        assert_eq!(net.parts[0].value, "198.51.100.0/24");
        assert!(net.parts[0].network.is_some());
    }

    #[test]
    fn every_supported_type_parses_a_value_of_its_own() {
        let sha = |n: usize| "a".repeat(n);
        for kind in SUPPORTED_TYPES {
            let value = match *kind {
                "ip-src" | "ip-dst" => "192.0.2.1".to_owned(),
                "ip-src|port" | "ip-dst|port" => "192.0.2.1|80".to_owned(),
                "domain" | "hostname" => "evil.example".to_owned(),
                "domain|ip" => "evil.example|192.0.2.1".to_owned(),
                "url" => "http://evil.example/x".to_owned(),
                "md5" => sha(32),
                "sha1" => sha(40),
                "sha256" => sha(64),
                "sha512" => sha(128),
                "filename|md5" => format!("x.exe|{}", sha(32)),
                "filename|sha1" => format!("x.exe|{}", sha(40)),
                "filename|sha256" => format!("x.exe|{}", sha(64)),
                "email-src" | "email-dst" => "a@evil.example".to_owned(),
                other => panic!("no sample value for {other}"),
            };
            assert!(parse_value(kind, &value).is_ok(), "{kind} {value}");
        }
    }

    #[test]
    fn flags_and_numbers_come_in_either_spelling() {
        let attribute: Attribute = serde_json::from_value(serde_json::json!({
            "type": "domain", "value": "a.example", "to_ids": "1", "deleted": 0
        }))
        .unwrap();
        assert!(attribute.to_ids && !attribute.deleted);
        let entry: ManifestEntry =
            serde_json::from_value(serde_json::json!({"threat_level_id": "2"})).unwrap();
        assert_eq!(entry.threat_level_id, Some(2));
        let entry: ManifestEntry =
            serde_json::from_value(serde_json::json!({"threat_level_id": 3})).unwrap();
        assert_eq!(entry.threat_level_id, Some(3));
        assert!(serde_json::from_value::<Attribute>(serde_json::json!({
            "type": "domain", "value": "a.example", "to_ids": "maybe"
        }))
        .is_err());
    }
}
