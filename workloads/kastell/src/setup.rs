//! Turning a directory of resources into what the stages run: replay sources from
//! Sensors, a compiled rule set from DetectionRules, an indicator store from IntelFeeds
//! and a playbook set from Playbooks. Every resource that cannot be used becomes a
//! problem line naming its file, and the rest still runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use kastell_crds::sensor::TransportKind;
use kastell_crds::{parse_duration, ResourceSet};
use kastell_enrich::IndicatorStore;
use kastell_ingest::{
    detect_file_format, parse_timezone, Format, ParseOptions, DEFAULT_MAX_LINE_BYTES,
};
use kastell_respond::PlaybookSet;

use crate::detection;

/// One file to replay and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaySource {
    pub path: PathBuf,
    pub format: Format,
    /// The Sensor resource the events are attributed to.
    pub sensor: String,
    /// The Sensor's `timestampField` and `timezone`.
    pub options: ParseOptions,
    /// The Sensor also follows the file (`follow: true`): when the listeners run, the
    /// tailer reads it and the replay leaves it out, so no record is ingested twice.
    pub follow: bool,
}

/// Everything `kastell run` needs, compiled from the resources.
pub struct Setup {
    pub config_dir: PathBuf,
    /// The resources as loaded, for what is started later (listeners, feed refresh).
    pub resources: ResourceSet,
    pub resource_count: usize,
    pub sources: Vec<ReplaySource>,
    pub rules: Arc<kastell_correlate::RuleSet>,
    pub rule_count: usize,
    pub indicators: Arc<IndicatorStore>,
    pub playbooks: Arc<PlaybookSet>,
    pub response: kastell_respond::Safety,
    pub grouping_window: chrono::Duration,
    /// The platform's `spec.retention.personalData`, when it sets one.
    pub personal_data_retention: Option<chrono::Duration>,
    /// Resources and inputs that could not be used, one readable line each.
    pub problems: Vec<String>,
    /// Host criticality of the Greenbone Sensors, for remediation cases.
    pub criticality: kastell_cases::remediation::CriticalitySettings,
}

/// Loads and compiles the resources in `config_dir`; `replay` files replace the Sensors'
/// own files when given.
pub async fn prepare(config_dir: &Path, replay: &[PathBuf]) -> anyhow::Result<Setup> {
    let (resources, mut problems) = crate::resources::load(config_dir)?;

    let sources = if replay.is_empty() {
        sensor_sources(&resources, &mut problems)
    } else {
        replay_sources(&resources, replay).await?
    };

    let (rules, rule_problems) = detection::compile_rules(&resources.rules);
    problems.extend(rule_problems);
    let rule_count = rules.len();

    let indicators = load_feeds(&resources, &mut problems).await;

    let (playbooks, invalid) = PlaybookSet::compile(resources.playbooks.iter().cloned());
    problems.extend(invalid.iter().map(ToString::to_string));

    let grouping_window = grouping_window(&resources, &mut problems);
    let personal_data_retention = crate::gdpr::personal_data_retention(&resources, &mut problems);
    let response = kastell_respond::safety::response_safety(&resources, &mut problems);

    Ok(Setup {
        config_dir: config_dir.to_owned(),
        resource_count: resources.len(),
        resources: resources.clone(),
        sources,
        rules: Arc::new(rules),
        rule_count,
        indicators: Arc::new(indicators),
        playbooks: Arc::new(playbooks),
        response,
        grouping_window,
        personal_data_retention,
        problems,
        criticality: criticality(&resources),
    })
}

/// The Greenbone Sensors' host criticality merged: a host named by several Sensors gets
/// the highest, and hosts named by none the highest of their defaults.
fn criticality(resources: &ResourceSet) -> kastell_cases::remediation::CriticalitySettings {
    use kastell_cases::remediation::Criticality;
    use kastell_crds::sensor::{HostCriticality, SensorFormat};
    let convert = |c: HostCriticality| match c {
        HostCriticality::Low => Criticality::Low,
        HostCriticality::Medium => Criticality::Medium,
        HostCriticality::High => Criticality::High,
        HostCriticality::Critical => Criticality::Critical,
    };
    let mut settings = kastell_cases::remediation::CriticalitySettings::default();
    let scanners = resources
        .sensors
        .iter()
        .map(|s| &s.object.spec)
        .filter(|spec| spec.format == SensorFormat::Greenbone);
    for (i, spec) in scanners.enumerate() {
        let default = spec.criticality.map_or(Criticality::Medium, convert);
        settings.default = if i == 0 {
            default
        } else {
            settings.default.max(default)
        };
        for (host, c) in &spec.host_criticality {
            let entry = settings.hosts.entry(host.clone()).or_insert(convert(*c));
            *entry = (*entry).max(convert(*c));
        }
    }
    settings
}

/// The files named by Sensors with a `file` transport. Listening transports are served
/// by the listeners (see [`crate::listeners`]), not by a replay, so they are left out.
pub fn sensor_sources(resources: &ResourceSet, problems: &mut Vec<String>) -> Vec<ReplaySource> {
    let mut sources = Vec::new();
    for sensor in &resources.sensors {
        let spec = &sensor.object.spec;
        let name = sensor.object.metadata.name.clone().unwrap_or_default();
        let format = match spec.format.as_str().parse::<Format>() {
            Ok(format) => format,
            Err(e) => {
                problems.push(format!(
                    "{}: sensor {}: {e}",
                    sensor.file.display(),
                    sensor.key()
                ));
                continue;
            }
        };
        let mut options = ParseOptions {
            timestamp_field: spec.timestamp_field.clone(),
            ..ParseOptions::default()
        };
        if let Some(zone) = &spec.timezone {
            match parse_timezone(zone) {
                Some(offset) => options.timezone = offset,
                None => {
                    problems.push(format!(
                        "{}: sensor {}: timezone {zone:?} is not UTC or an offset like +01:00",
                        sensor.file.display(),
                        sensor.key()
                    ));
                    continue;
                }
            }
        }
        match (spec.transport.kind, &spec.transport.path) {
            (TransportKind::File, Some(path)) => sources.push(ReplaySource {
                path: sensor.resolve(path),
                format,
                sensor: name,
                options,
                follow: spec.transport.follow,
            }),
            (TransportKind::File, None) => problems.push(format!(
                "{}: sensor {}: transport type file needs spec.transport.path",
                sensor.file.display(),
                sensor.key()
            )),
            (_, _) => {}
        }
    }
    sources
}

/// `--replay` files: each file's format is detected from its first record, and its
/// events are attributed to the one Sensor of that format when there is exactly one.
async fn replay_sources(
    resources: &ResourceSet,
    files: &[PathBuf],
) -> anyhow::Result<Vec<ReplaySource>> {
    let mut sources = Vec::new();
    for path in files {
        // Detection reads the file once and ingest reads it again, which a pipe or a
        // device cannot give twice: only regular files are replayed.
        let meta = std::fs::metadata(path)
            .with_context(|| format!("reading replay file {}", path.display()))?;
        anyhow::ensure!(
            meta.is_file(),
            "replay file {} is not a regular file; pipes and devices cannot be replayed \
             (copy the data to a file first)",
            path.display()
        );
        let format = detect_file_format(path, DEFAULT_MAX_LINE_BYTES)
            .await
            .with_context(|| format!("reading replay file {}", path.display()))?
            .with_context(|| {
                format!(
                    "cannot tell the format of {}: none of its first records is Suricata EVE \
                     or a Wazuh alert (or it has no record at all)",
                    path.display()
                )
            })?;
        let matching: Vec<&str> = resources
            .sensors
            .iter()
            .filter(|s| s.object.spec.format.as_str() == format.as_str())
            .filter_map(|s| s.object.metadata.name.as_deref())
            .collect();
        let sensor = match matching.as_slice() {
            [only] => (*only).to_owned(),
            _ => format!("replay-{}", format.as_str()),
        };
        sources.push(ReplaySource {
            path: path.clone(),
            format,
            sensor,
            options: ParseOptions::default(),
            follow: false,
        });
    }
    Ok(sources)
}

/// Every IntelFeed, of any kind, loaded by the enrich crate; URLs are held against the
/// platform's residency policy.
pub async fn load_feeds(resources: &ResourceSet, problems: &mut Vec<String>) -> IndicatorStore {
    let http = match feed_http(resources) {
        Ok(http) => http,
        Err(e) => {
            problems.push(format!("intel feeds: {e}"));
            return IndicatorStore::new();
        }
    };
    let mut stores = Vec::new();
    for (feed, def) in resources.feeds.iter().zip(feed_defs(resources)) {
        let name = def.name.clone();
        let where_ = format!("{}: intel feed {}", feed.file.display(), feed.key());
        match kastell_enrich::feed::load(&def, &http).await {
            Ok(loaded) => {
                tracing::info!(feed = %name, indicators = loaded.store.len(), "intel feed loaded");
                problems.extend(loaded.warnings.iter().map(|w| format!("{where_}: {w}")));
                stores.push(loaded.store);
            }
            Err(e) => problems.push(format!("{where_}: {}", kastell_core::error_chain(&e))),
        }
    }
    IndicatorStore::from_stores(stores)
}

/// The HTTP client feeds are fetched with, holding every URL against the platform's
/// residency policy.
///
/// # Errors
///
/// When the TLS client cannot be built.
pub fn feed_http(
    resources: &ResourceSet,
) -> Result<kastell_enrich::http::Http, kastell_enrich::http::FetchError> {
    let check = resources.platforms.first().map(|platform| {
        let (policy, _) =
            kastell_operator::EndpointPolicy::from_residency(&platform.object.spec.residency);
        let check: kastell_enrich::http::EndpointCheck =
            Arc::new(move |url: &str| policy.check(url).map_err(|r| r.to_string()));
        check
    });
    kastell_enrich::http::Http::new(check, std::time::Duration::from_secs(60))
}

/// Starts the sender of MISP sightings for the feeds that ask for it (`spec.sightings`);
/// `None` when none does. A feed whose sightings cannot be sent (not `misp-api`, no
/// key) is logged and left out: matching goes on without its sightings.
pub fn start_sightings(
    defs: &[kastell_enrich::feed::FeedDef],
    http: &kastell_enrich::http::Http,
) -> Option<(
    kastell_enrich::sightings::Sightings,
    tokio::task::JoinHandle<kastell_enrich::sightings::SightingReport>,
)> {
    let mut targets = Vec::new();
    for def in defs {
        match kastell_enrich::feed::sighting_target(def) {
            Ok(Some(target)) => targets.push(target),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                feed = %def.name,
                reason = %kastell_core::error_chain(&e),
                "MISP sightings not sent"
            ),
        }
    }
    (!targets.is_empty()).then(|| {
        kastell_enrich::sightings::start(targets, http.clone(), kastell_enrich::sightings::CHANNEL)
    })
}

/// The IntelFeeds as the enrich crate loads and refreshes them, in resource order.
pub fn feed_defs(resources: &ResourceSet) -> Vec<kastell_enrich::feed::FeedDef> {
    resources
        .feeds
        .iter()
        .map(|feed| {
            kastell_enrich::feed::FeedDef::new(
                feed.object.metadata.name.clone().unwrap_or_default(),
                feed.object.spec.clone(),
                feed.resolve("."),
            )
        })
        .collect()
}

pub fn grouping_window(resources: &ResourceSet, problems: &mut Vec<String>) -> chrono::Duration {
    let default = chrono::Duration::hours(1);
    let Some(platform) = resources.platforms.first() else {
        return default;
    };
    let Some(cases) = &platform.object.spec.cases else {
        return default;
    };
    match parse_duration(&cases.grouping_window)
        .map_err(|e| e.to_string())
        .and_then(|d| chrono::Duration::from_std(d).map_err(|e| e.to_string()))
    {
        Ok(window) => window,
        Err(e) => {
            problems.push(format!(
                "{}: platform {}: spec.cases.groupingWindow: {e}; using 1h",
                platform.file.display(),
                platform.key()
            ));
            default
        }
    }
}
