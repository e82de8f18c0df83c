//! A MISP instance over its REST API: `POST /attributes/restSearch` with the feed's
//! filters, page by page, the attributes grouped by the event they belong to.
//!
//! MISP's answers vary by version and configuration: numbers arrive as strings or ints
//! (read by the same lenient deserialisers as feeds), and some servers ignore `page` and
//! return everything (or the same page) every time. Paging therefore stops on a short
//! page, on a page that brings no attribute not seen before, or after `max_pages`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{FetchError, Http};
use crate::indicator::{attack_techniques, IndicatorContext, ThreatLevel};
use crate::misp::{add_event, opt_number, opt_string, tag_names, LoadReport, LoadedEvent};
use crate::store::IndicatorStore;

/// The `restSearch` filters of an IntelFeed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestFilters {
    /// Tags to require; a leading `!` excludes the tag (MISP's own negation syntax).
    pub tags: Vec<String>,
    pub to_ids: Option<bool>,
    pub published: Option<bool>,
    /// MISP attribute types, e.g. `ip-dst`, `domain`.
    pub types: Vec<String>,
    /// Only attributes of events published within this window, e.g. `7d`.
    pub last: Option<String>,
    /// Only attributes of events dated from this day (`YYYY-MM-DD`).
    pub from: Option<String>,
    /// Ask MISP to drop values on its warning lists.
    pub enforce_warninglist: bool,
}

impl RestFilters {
    /// The request body for one page.
    pub fn body(&self, page: u32, limit: u32) -> Value {
        let mut body = json!({
            "returnFormat": "json",
            "includeEventTags": true,
            "includeContext": true,
            "enforceWarninglist": self.enforce_warninglist,
            "page": page,
            "limit": limit,
        });
        if !self.tags.is_empty() {
            body["tags"] = json!(self.tags);
        }
        if !self.types.is_empty() {
            body["type"] = json!(self.types);
        }
        if let Some(to_ids) = self.to_ids {
            body["to_ids"] = json!(to_ids);
        }
        if let Some(published) = self.published {
            body["published"] = json!(published);
        }
        if let Some(last) = &self.last {
            body["last"] = json!(last);
        }
        if let Some(from) = &self.from {
            body["from"] = json!(from);
        }
        body
    }
}

/// Why the instance could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("the API key is not a valid header value")]
    Key,
    #[error("page {page}: not a restSearch answer ({{\"response\": {{\"Attribute\": [...]}}}})")]
    Answer {
        page: u32,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Deserialize)]
struct Answer {
    response: Response,
}

#[derive(Deserialize)]
struct Response {
    #[serde(rename = "Attribute", default)]
    attributes: Vec<Value>,
}

/// The `Event` an attribute carries with `includeContext`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct EventRef {
    #[serde(deserialize_with = "opt_string")]
    id: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    uuid: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    info: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    date: Option<String>,
    #[serde(deserialize_with = "opt_number")]
    threat_level_id: Option<u64>,
    #[serde(rename = "Tag", deserialize_with = "tag_names")]
    tags: Vec<String>,
}

/// What a paged search did, besides the usual load report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Paging {
    pub pages: u32,
    /// Attributes returned again on a later page (a server that ignores `page`).
    pub repeated: u64,
}

/// Searches the instance at `base` (e.g. `https://misp.example.eu`) and loads the
/// attributes as the feed `name`.
///
/// # Errors
///
/// A refused URL, a failed request, or an answer that is not a restSearch answer.
pub async fn search(
    http: &Http,
    name: &str,
    base: &str,
    key: &str,
    filters: &RestFilters,
    limit: u32,
    max_pages: u32,
) -> Result<(IndicatorStore, LoadReport, Paging), RestError> {
    let url = format!("{}/attributes/restSearch", base.trim_end_matches('/'));
    let mut headers = HeaderMap::new();
    // MISP wants the bare key, no "Bearer".
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(key.trim()).map_err(|_| RestError::Key)?,
    );
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));

    let mut seen: HashSet<String> = HashSet::new();
    let mut by_event: Vec<(String, Vec<Value>)> = Vec::new();
    let mut events: HashMap<String, (usize, EventRef)> = HashMap::new();
    let mut paging = Paging::default();
    for page in 1..=max_pages.max(1) {
        let bytes = http
            .post_json(&url, headers.clone(), &filters.body(page, limit))
            .await?;
        let answer: Answer =
            serde_json::from_slice(&bytes).map_err(|source| RestError::Answer { page, source })?;
        paging.pages = page;
        let returned = answer.response.attributes.len();
        let mut new = 0usize;
        for mut attribute in answer.response.attributes {
            let id = attribute_key(&attribute);
            if !seen.insert(id) {
                paging.repeated += 1;
                continue;
            }
            new += 1;
            let event: EventRef = attribute
                .get_mut("Event")
                .map(Value::take)
                .and_then(|e| serde_json::from_value(e).ok())
                .unwrap_or_default();
            let key = event
                .uuid
                .clone()
                .or_else(|| event.id.clone())
                .unwrap_or_default();
            let slot = match events.get(&key) {
                Some((slot, _)) => *slot,
                None => {
                    by_event.push((key.clone(), Vec::new()));
                    events.insert(key.clone(), (by_event.len() - 1, event));
                    by_event.len() - 1
                }
            };
            by_event[slot].1.push(attribute);
        }
        tracing::debug!(page, returned, new, "MISP restSearch page");
        if returned < limit as usize || new == 0 {
            break;
        }
    }

    let mut store = IndicatorStore::new();
    let mut report = LoadReport {
        feed: name.to_owned(),
        path: base.into(),
        ..LoadReport::default()
    };
    for (key, attributes) in by_event {
        let event = events.remove(&key).map(|(_, e)| e).unwrap_or_default();
        report.events_listed += 1;
        report.events_loaded += 1;
        let context = IndicatorContext {
            feed: name.to_owned(),
            reference: event.uuid.or(event.id),
            info: event.info,
            date: event.date,
            organisation: None,
            threat_level: event
                .threat_level_id
                .and_then(ThreatLevel::from_id)
                .unwrap_or_default(),
            techniques: attack_techniques(event.tags.iter().map(String::as_str)),
            tags: event.tags,
        };
        add_event(
            &mut store,
            &mut report,
            LoadedEvent {
                context: Arc::new(context),
                attributes,
            },
        );
    }
    tracing::info!(
        feed = name,
        pages = paging.pages,
        repeated = paging.repeated,
        indicators = report.indicators,
        "MISP instance searched"
    );
    Ok((store, report, paging))
}

/// An attribute's identity across pages: its uuid, else its id, else its text.
fn attribute_key(attribute: &Value) -> String {
    ["uuid", "id"]
        .iter()
        .find_map(|k| match attribute.get(*k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| attribute.to_string())
}
