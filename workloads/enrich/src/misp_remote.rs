//! A MISP feed over HTTPS: `manifest.json` fetched, then only the `<uuid>.json` events
//! that are new or whose manifest `timestamp` changed since the previous fetch; the
//! others come from the cache kept between fetches.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::http::{Fetched, Http};
use crate::misp::{
    add_event, parse_event, EventError, LoadError, LoadReport, LoadedEvent, ManifestEntry,
};
use crate::store::IndicatorStore;

/// The events of the previous fetch, by uuid, with the manifest timestamp they had.
#[derive(Clone, Default)]
pub struct FeedCache {
    events: HashMap<String, (Option<String>, LoadedEvent)>,
    /// Event files fetched by the last call (the rest came from the cache).
    pub fetched: usize,
}

impl std::fmt::Debug for FeedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedCache")
            .field("events", &self.events.len())
            .field("fetched", &self.fetched)
            .finish()
    }
}

/// Fetches the feed at `url` (its directory URL) as the feed `name`.
///
/// # Errors
///
/// When `manifest.json` cannot be fetched or is not a JSON object; a missing or
/// malformed event is a per-event error in the report, as on disk.
pub async fn fetch(
    http: &Http,
    name: &str,
    url: &str,
    cache: &mut FeedCache,
) -> Result<(IndicatorStore, LoadReport), crate::feed::FeedError> {
    let base = url.trim_end_matches('/');
    let manifest_url = format!("{base}/manifest.json");
    let bytes = match http.get(&manifest_url, None, Default::default()).await? {
        Fetched::Body { bytes, .. } => bytes,
        Fetched::NotModified => return Err(crate::feed::FeedError::RemoteMispFeed(manifest_url)),
    };
    let manifest: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|source| LoadError::Manifest {
            path: manifest_url.clone().into(),
            source,
        })?;
    let mut report = LoadReport {
        feed: name.to_owned(),
        path: base.into(),
        events_listed: manifest.len(),
        ..LoadReport::default()
    };
    let mut store = IndicatorStore::new();
    let mut kept: HashMap<String, (Option<String>, LoadedEvent)> = HashMap::new();
    cache.fetched = 0;
    for (uuid, raw_entry) in manifest {
        let entry: ManifestEntry = match serde_json::from_value(raw_entry) {
            Ok(entry) => entry,
            Err(source) => {
                report
                    .errors
                    .push(EventError::ManifestEntry { uuid, source });
                continue;
            }
        };
        let unchanged = cache
            .events
            .get(&uuid)
            .filter(|(timestamp, _)| timestamp.is_some() && *timestamp == entry.timestamp)
            .map(|(_, event)| event.clone());
        let event = match unchanged {
            Some(event) => event,
            None => {
                // A uuid is hex and dashes; anything else could change the path.
                if uuid.is_empty() || !uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                    report.errors.push(EventError::UnsafeName { uuid });
                    continue;
                }
                let event_url = format!("{base}/{uuid}.json");
                cache.fetched += 1;
                let bytes = match http.get(&event_url, None, Default::default()).await {
                    Ok(Fetched::Body { bytes, .. }) => bytes,
                    Ok(Fetched::NotModified) => Vec::new(),
                    Err(error) => {
                        tracing::warn!(event = %uuid, reason = %error, "feed event not fetched");
                        report.errors.push(EventError::Missing {
                            uuid,
                            path: event_url.into(),
                            source: std::io::Error::other(error.to_string()),
                        });
                        continue;
                    }
                };
                let timestamp = entry.timestamp.clone();
                match parse_event(name, &uuid, entry, &bytes, std::path::Path::new(&event_url)) {
                    Ok(event) => {
                        kept.insert(uuid.clone(), (timestamp, event.clone()));
                        report.events_loaded += 1;
                        add_event(&mut store, &mut report, event);
                        continue;
                    }
                    Err(error) => {
                        report.errors.push(error);
                        continue;
                    }
                }
            }
        };
        kept.insert(uuid, (entry.timestamp, event.clone()));
        report.events_loaded += 1;
        add_event(&mut store, &mut report, event);
    }
    cache.events = kept;
    Ok((store, report))
}
