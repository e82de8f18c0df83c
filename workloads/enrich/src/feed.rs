//! One IntelFeed (or a path or URL given on the command line) loaded into a store,
//! whatever its kind: the dispatch between the MISP, STIX, TAXII and list loaders, the
//! API key from a file, the allowlists, and a summary of what was loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kastell_core::ObservableKind;
use kastell_crds::intel::{FeedKind, IntelFeedSpec};

use crate::allowlist::{Allowlist, AllowlistError};
use crate::http::{FetchError, Fetched, Http, Validators};
use crate::list::{self, Column, CsvMapping};
use crate::misp::{self, load_misp_feed_dir};
use crate::misp_api::{self, RestFilters};
use crate::stix;
use crate::store::IndicatorStore;
use crate::taxii;

/// A feed to load: its name, spec, and the directory relative paths are read from.
#[derive(Debug, Clone)]
pub struct FeedDef {
    pub name: String,
    pub spec: IntelFeedSpec,
    pub base_dir: PathBuf,
}

/// Why a feed could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("feed type {0:?} needs spec.{1}")]
    Missing(FeedKind, &'static str),
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    MispFeed(#[from] misp::LoadError),
    #[error(transparent)]
    MispApi(#[from] misp_api::RestError),
    #[error(transparent)]
    Stix(#[from] stix::StixError),
    #[error(transparent)]
    Taxii(#[from] taxii::TaxiiError),
    #[error(transparent)]
    List(#[from] list::ListError),
    #[error(transparent)]
    Allowlist(#[from] AllowlistError),
    #[error("valueType {0:?} is not one of ip, domain, url, md5, sha1, sha256, sha512, email")]
    ValueType(String),
    #[error("csv.delimiter {0:?} is not one ASCII character")]
    Delimiter(String),
    #[error("a MISP feed over HTTP(S) is read from its directory URL; {0} gave no manifest.json")]
    RemoteMispFeed(String),
    #[error("{0} answered 304 Not Modified to an unconditional request")]
    NotModified(String),
}

/// What one load gave.
#[derive(Debug)]
pub struct Loaded {
    pub store: IndicatorStore,
    /// Entries the source offered that gave no indicator, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Per-event or per-page problems that did not stop the load.
    pub warnings: Vec<String>,
    /// The source's ETag / Last-Modified, for the next conditional request.
    pub validators: Validators,
}

impl Loaded {
    fn new(store: IndicatorStore) -> Self {
        Loaded {
            store,
            skipped: BTreeMap::new(),
            warnings: Vec::new(),
            validators: Validators::default(),
        }
    }
}

/// Pages of MISP REST and TAXII answers read at most per load.
const MAX_PAGES: u32 = 10_000;
const PAGE_LIMIT: u32 = 1_000;

/// Loads one feed. The allowlists of the spec are applied while the store is built.
///
/// # Errors
///
/// A missing required field, an unreadable source, a refused URL, or an answer that is
/// not of the feed's kind. Problems with single entries are in [`Loaded`] instead.
pub async fn load(feed: &FeedDef, http: &Http) -> Result<Loaded, FeedError> {
    let spec = &feed.spec;
    let mut loaded = load_source(feed, http).await?;
    if !spec.allowlists.is_empty() {
        let mut allow = Allowlist::new();
        for path in &spec.allowlists {
            allow.add_file(&resolve(&feed.base_dir, path))?;
        }
        let mut filtered = IndicatorStore::with_allowlist(Arc::new(allow));
        filtered.merge(loaded.store);
        if filtered.suppressed() > 0 {
            loaded
                .skipped
                .insert("allowlisted".into(), filtered.suppressed());
        }
        loaded.store = filtered;
    }
    Ok(loaded)
}

async fn load_source(feed: &FeedDef, http: &Http) -> Result<Loaded, FeedError> {
    let spec = &feed.spec;
    let name = feed.name.as_str();
    match spec.kind {
        FeedKind::MispFeed => match (&spec.path, &spec.url) {
            (Some(path), _) => {
                let (store, report) = load_misp_feed_dir(name, resolve(&feed.base_dir, path))?;
                Ok(from_misp_report(store, &report))
            }
            (None, Some(url)) => {
                let (store, report) =
                    crate::misp_remote::fetch(http, name, url, &mut Default::default()).await?;
                Ok(from_misp_report(store, &report))
            }
            (None, None) => Err(FeedError::Missing(spec.kind, "path or spec.url")),
        },
        FeedKind::MispApi => {
            let url = spec
                .url
                .as_deref()
                .ok_or(FeedError::Missing(spec.kind, "url"))?;
            let key = api_key(feed)?.unwrap_or_default();
            let filters = spec
                .misp_filters
                .as_ref()
                .map(|f| RestFilters {
                    tags: f.tags.clone(),
                    to_ids: f.to_ids,
                    published: f.published,
                    types: f.types.clone(),
                    last: f.last.clone(),
                    from: f.from.clone(),
                    enforce_warninglist: f.enforce_warninglist,
                })
                .unwrap_or_else(|| RestFilters {
                    to_ids: Some(true),
                    ..RestFilters::default()
                });
            let (store, report, paging) =
                misp_api::search(http, name, url, &key, &filters, PAGE_LIMIT, MAX_PAGES).await?;
            let mut loaded = from_misp_report(store, &report);
            if paging.repeated > 0 {
                loaded.warnings.push(format!(
                    "the server returned {} attributes again on later pages (it ignores paging)",
                    paging.repeated
                ));
            }
            Ok(loaded)
        }
        FeedKind::StixBundle => {
            let (bytes, validators) = read_source(feed, http).await?;
            let (store, report) = stix::load_bundle(name, &bytes)?;
            let mut loaded = from_stix_report(store, &report);
            loaded.validators = validators;
            Ok(loaded)
        }
        FeedKind::Taxii => {
            let url = spec
                .url
                .as_deref()
                .ok_or(FeedError::Missing(spec.kind, "url"))?;
            let key = api_key(feed)?;
            let (store, report, _) = taxii::fetch(
                http,
                name,
                url,
                key.as_deref(),
                spec.collection.as_deref(),
                None,
                PAGE_LIMIT,
                MAX_PAGES,
            )
            .await?;
            Ok(from_stix_report(store, &report))
        }
        FeedKind::Csv => {
            let (bytes, validators) = read_source(feed, http).await?;
            let mapping = csv_mapping(spec)?;
            let (store, report) = list::load_csv(name, &bytes, &mapping)?;
            let mut loaded = from_list_report(store, &report);
            loaded.validators = validators;
            Ok(loaded)
        }
        FeedKind::PlainList => {
            let (bytes, validators) = read_source(feed, http).await?;
            let text = String::from_utf8_lossy(&bytes);
            let (store, report) = list::load_plain_list(name, &text, value_type(spec)?);
            let mut loaded = from_list_report(store, &report);
            loaded.validators = validators;
            Ok(loaded)
        }
    }
}

/// The file at `spec.path`, or the body at `spec.url`.
async fn read_source(feed: &FeedDef, http: &Http) -> Result<(Vec<u8>, Validators), FeedError> {
    let spec = &feed.spec;
    if let Some(path) = &spec.path {
        let path = resolve(&feed.base_dir, path);
        let bytes = std::fs::read(&path).map_err(|source| FeedError::Read { path, source })?;
        return Ok((bytes, Validators::default()));
    }
    let url = spec
        .url
        .as_deref()
        .ok_or(FeedError::Missing(spec.kind, "path or spec.url"))?;
    match http.get(url, None, Default::default()).await? {
        Fetched::Body { bytes, validators } => Ok((bytes, validators)),
        Fetched::NotModified => Err(FeedError::NotModified(url.to_owned())),
    }
}

/// Whether the source at the feed's URL changed since `previous`, and its validators
/// now. A feed without a URL (or whose server sends no validators) counts as changed.
///
/// # Errors
///
/// A refused URL or a failed request.
pub async fn changed(
    feed: &FeedDef,
    http: &Http,
    previous: &Validators,
) -> Result<(bool, Validators), FeedError> {
    let Some(url) = feed.spec.url.as_deref() else {
        return Ok((true, Validators::default()));
    };
    if previous == &Validators::default() {
        return Ok((true, Validators::default()));
    }
    let probe = match feed.spec.kind {
        FeedKind::MispFeed => format!("{}/manifest.json", url.trim_end_matches('/')),
        FeedKind::StixBundle | FeedKind::Csv | FeedKind::PlainList => url.to_owned(),
        // Searches and collections are asked for what changed by their own filters.
        FeedKind::MispApi | FeedKind::Taxii => return Ok((true, Validators::default())),
    };
    match http.get(&probe, Some(previous), Default::default()).await? {
        Fetched::NotModified => Ok((false, previous.clone())),
        Fetched::Body { validators, .. } => Ok((true, validators)),
    }
}

fn api_key(feed: &FeedDef) -> Result<Option<String>, FeedError> {
    let Some(file) = &feed.spec.api_key_file else {
        return Ok(None);
    };
    let path = resolve(&feed.base_dir, file);
    let key = std::fs::read_to_string(&path).map_err(|source| FeedError::Read { path, source })?;
    Ok(Some(key.trim().to_owned()))
}

fn value_type(spec: &IntelFeedSpec) -> Result<Option<ObservableKind>, FeedError> {
    spec.value_type
        .as_deref()
        .map(|t| list::kind_from_name(t).ok_or_else(|| FeedError::ValueType(t.to_owned())))
        .transpose()
}

fn csv_mapping(spec: &IntelFeedSpec) -> Result<CsvMapping, FeedError> {
    let mut mapping = CsvMapping {
        default_type: value_type(spec)?,
        ..CsvMapping::default()
    };
    if let Some(columns) = &spec.csv {
        let delimiter = match columns.delimiter.as_bytes() {
            [one] => *one,
            _ if columns.delimiter == "\\t" => b'\t',
            _ => return Err(FeedError::Delimiter(columns.delimiter.clone())),
        };
        mapping.delimiter = delimiter;
        mapping.has_header = columns.header;
        mapping.value_column = Column::parse(&columns.value_column);
        mapping.type_column = columns.type_column.as_deref().map(Column::parse);
        mapping.comment_column = columns.comment_column.as_deref().map(Column::parse);
    }
    Ok(mapping)
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

fn from_misp_report(store: IndicatorStore, report: &misp::LoadReport) -> Loaded {
    let mut loaded = Loaded::new(store);
    for (reason, count) in &report.skipped {
        loaded.skipped.insert(reason.to_string(), *count);
    }
    if report.duplicates > 0 {
        loaded.skipped.insert("duplicate".into(), report.duplicates);
    }
    loaded.warnings = report.errors.iter().map(ToString::to_string).collect();
    loaded
}

fn from_stix_report(store: IndicatorStore, report: &stix::StixReport) -> Loaded {
    let mut loaded = Loaded::new(store);
    for (reason, count) in report.skipped_by_reason() {
        loaded.skipped.insert(format!("pattern {reason}"), count);
    }
    if report.expired > 0 {
        loaded.skipped.insert("expired".into(), report.expired);
    }
    if report.duplicates > 0 {
        loaded.skipped.insert("duplicate".into(), report.duplicates);
    }
    loaded.warnings = report
        .skipped
        .iter()
        .map(|s| format!("{} skipped: {} ({})", s.id, s.reason, s.pattern))
        .collect();
    loaded
}

fn from_list_report(store: IndicatorStore, report: &list::ListReport) -> Loaded {
    let mut loaded = Loaded::new(store);
    if report.skipped > 0 {
        loaded
            .skipped
            .insert("not an indicator".into(), report.skipped);
    }
    if report.duplicates > 0 {
        loaded.skipped.insert("duplicate".into(), report.duplicates);
    }
    loaded
}
