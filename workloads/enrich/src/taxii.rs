//! A TAXII 2.1 collection: discovery, API root, collections, then the collection's
//! objects page by page (`limit`, `next`, `more`), only those added after the last
//! fetch (`added_after`, taken from the `X-TAXII-Date-Added-Last` header the server
//! sends with each page, or from the objects' `date_added`), their indicators read by
//! [`crate::stix`]. A [`TaxiiCache`] keeps the objects of earlier fetches, so a refresh
//! asks only for what was added since and still sees the whole collection.

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use serde::Deserialize;
use serde_json::Value;

use crate::http::{FetchError, Fetched, Http};
use crate::stix::{add_objects, StixReport};
use crate::store::IndicatorStore;

/// TAXII 2.1's media type; servers may refuse anything else.
pub const MEDIA_TYPE: &str = "application/taxii+json;version=2.1";

/// The header holding the `date_added` of the last object of a page (TAXII 2.1 §3.4.3).
pub const DATE_ADDED_LAST: &str = "X-TAXII-Date-Added-Last";

#[derive(Debug, thiserror::Error)]
pub enum TaxiiError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{url}: not a TAXII 2.1 {what}")]
    Answer {
        url: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{url} unexpectedly answered 304 Not Modified")]
    NotModified { url: String },
    #[error("the server lists no API root")]
    NoApiRoot,
    #[error("no readable collection {0:?} in the API root")]
    NoCollection(String),
    #[error("the credentials are not a valid header value")]
    Credentials,
}

#[derive(Deserialize)]
struct Discovery {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    api_roots: Vec<String>,
}

#[derive(Deserialize)]
struct Collections {
    #[serde(default)]
    collections: Vec<Collection>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Collection {
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub can_read: bool,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    more: bool,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    objects: Vec<Value>,
}

/// Where a fetch stopped, to continue from next time.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TaxiiProgress {
    pub collection: String,
    pub pages: u32,
    pub objects: u64,
    /// The latest `X-TAXII-Date-Added-Last` / object `date_added` seen; the next fetch
    /// asks for objects added after it.
    pub added_last: Option<String>,
}

struct Client<'a> {
    http: &'a Http,
    headers: HeaderMap,
}

impl Client<'_> {
    /// An objects page and its `X-TAXII-Date-Added-Last`.
    async fn page(&self, url: &str) -> Result<(Envelope, Option<String>), TaxiiError> {
        let (bytes, headers) = self
            .http
            .get_with_headers(url, self.headers.clone())
            .await?;
        let envelope = serde_json::from_slice(&bytes).map_err(|source| TaxiiError::Answer {
            url: url.to_owned(),
            what: "envelope",
            source,
        })?;
        let added_last = headers
            .get(DATE_ADDED_LAST)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        Ok((envelope, added_last))
    }

    async fn json<T: for<'de> Deserialize<'de>>(
        &self,
        url: &str,
        what: &'static str,
    ) -> Result<T, TaxiiError> {
        match self.http.get(url, None, self.headers.clone()).await? {
            Fetched::Body { bytes, .. } => {
                serde_json::from_slice(&bytes).map_err(|source| TaxiiError::Answer {
                    url: url.to_owned(),
                    what,
                    source,
                })
            }
            Fetched::NotModified => Err(TaxiiError::NotModified {
                url: url.to_owned(),
            }),
        }
    }
}

/// Fetches the indicators of one collection.
///
/// `url` is the server's discovery URL (ending in `/taxii2/`) or an API root;
/// `collection` the collection's id or title (the first readable one when `None`);
/// `added_after` the timestamp of the previous fetch.
///
/// # Errors
///
/// A refused URL, a failed request, an answer that is not TAXII 2.1, or no such
/// readable collection.
#[allow(clippy::too_many_arguments)]
pub async fn fetch(
    http: &Http,
    name: &str,
    url: &str,
    credentials: Option<&str>,
    collection: Option<&str>,
    added_after: Option<&str>,
    limit: u32,
    max_pages: u32,
) -> Result<(IndicatorStore, StixReport, TaxiiProgress), TaxiiError> {
    let (objects, progress) = fetch_objects(
        http,
        url,
        credentials,
        collection,
        added_after,
        limit,
        max_pages,
    )
    .await?;
    let (store, report) = read_objects(name, &objects);
    tracing::info!(feed = name, collection = %progress.collection, pages = progress.pages, indicators = report.indicators, "TAXII collection fetched");
    Ok((store, report, progress))
}

/// The objects of every page of one collection added after `added_after`, and where
/// the fetch got to.
///
/// # Errors
///
/// As [`fetch`].
#[allow(clippy::too_many_arguments)]
pub async fn fetch_objects(
    http: &Http,
    url: &str,
    credentials: Option<&str>,
    collection: Option<&str>,
    added_after: Option<&str>,
    limit: u32,
    max_pages: u32,
) -> Result<(Vec<Value>, TaxiiProgress), TaxiiError> {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static(MEDIA_TYPE));
    if let Some(credentials) = credentials {
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(credentials.trim()).map_err(|_| TaxiiError::Credentials)?,
        );
    }
    let client = Client { http, headers };
    let base = with_slash(url);
    let api_root = if base.trim_end_matches('/').ends_with("/taxii2") {
        let discovery: Discovery = client.json(&base, "discovery").await?;
        let root = discovery
            .default
            .or_else(|| discovery.api_roots.into_iter().next())
            .ok_or(TaxiiError::NoApiRoot)?;
        with_slash(&resolve(&base, &root))
    } else {
        base
    };
    let _: Value = client.json(&api_root, "API root").await?;
    let collections: Collections = client
        .json(&format!("{api_root}collections/"), "collection list")
        .await?;
    let chosen = collections
        .collections
        .into_iter()
        .filter(|c| c.can_read)
        .find(|c| collection.is_none_or(|want| c.id == want || c.title == want))
        .ok_or_else(|| TaxiiError::NoCollection(collection.unwrap_or("(any)").to_owned()))?;

    let mut progress = TaxiiProgress {
        collection: chosen.id.clone(),
        added_last: added_after.map(str::to_owned),
        ..TaxiiProgress::default()
    };
    let objects_url = format!("{api_root}collections/{}/objects/", chosen.id);
    let mut next: Option<String> = None;
    // Versions of one object may come on different pages: read every page first.
    let mut objects: Vec<Value> = Vec::new();
    for _ in 0..max_pages.max(1) {
        let page_url = {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair("limit", &limit.to_string());
            if let Some(after) = added_after {
                query.append_pair("added_after", after);
            }
            if let Some(next) = &next {
                query.append_pair("next", next);
            }
            format!("{objects_url}?{}", query.finish())
        };
        let (envelope, header_last) = client.page(&page_url).await?;
        progress.pages += 1;
        progress.objects += envelope.objects.len() as u64;
        let object_dates = envelope
            .objects
            .iter()
            .filter_map(|object| object.get("date_added").and_then(Value::as_str));
        // Timestamps of one server share a format (RFC 3339 UTC), so the latest is the
        // greatest string.
        for added in object_dates.chain(header_last.as_deref()) {
            if progress
                .added_last
                .as_deref()
                .is_none_or(|last| added > last)
            {
                progress.added_last = Some(added.to_owned());
            }
        }
        let more = envelope.more;
        let token = envelope.next;
        objects.extend(envelope.objects);
        match (more, token) {
            (true, Some(token)) if Some(&token) != next.as_ref() => next = Some(token),
            _ => break,
        }
    }
    Ok((objects, progress))
}

/// The indicators of a collection's objects (versions resolved across all of them).
pub fn read_objects(name: &str, objects: &[Value]) -> (IndicatorStore, StixReport) {
    let mut store = IndicatorStore::new();
    let mut report = StixReport {
        feed: name.to_owned(),
        ..StixReport::default()
    };
    add_objects(&mut store, &mut report, objects, chrono::Utc::now());
    (store, report)
}

/// The objects a feed's earlier fetches of one collection gave, and the
/// `added_after` of the next.
#[derive(Debug, Clone, Default)]
pub struct TaxiiCache {
    collection: Option<String>,
    added_last: Option<String>,
    objects: Vec<Value>,
    /// `(id, modified)` of each object held, so a page read twice adds nothing.
    held: std::collections::HashSet<(String, String)>,
}

impl TaxiiCache {
    /// What the next fetch asks for: objects added after this.
    pub fn added_after(&self) -> Option<&str> {
        self.added_last.as_deref()
    }

    /// Every object held, oldest fetch first.
    pub fn objects(&self) -> &[Value] {
        &self.objects
    }

    /// Adds a fetch's objects; a fetch of another collection starts the cache anew.
    pub fn absorb(&mut self, objects: Vec<Value>, progress: &TaxiiProgress) {
        if self.collection.as_deref() != Some(progress.collection.as_str()) {
            *self = TaxiiCache {
                collection: Some(progress.collection.clone()),
                ..TaxiiCache::default()
            };
        }
        for object in objects {
            let key = |field: &str| {
                object
                    .get(field)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            if self.held.insert((key("id"), key("modified"))) {
                self.objects.push(object);
            }
        }
        if progress.added_last.is_some() {
            self.added_last.clone_from(&progress.added_last);
        }
    }
}

fn with_slash(url: &str) -> String {
    if url.ends_with('/') {
        url.to_owned()
    } else {
        format!("{url}/")
    }
}

/// An API root is listed as an absolute URL or a path on the discovery server.
fn resolve(base: &str, root: &str) -> String {
    url::Url::parse(base)
        .and_then(|b| b.join(root))
        .map(String::from)
        .unwrap_or_else(|_| root.to_owned())
}
