//! One IntelFeed (or a path or URL given on the command line) loaded into a store,
//! whatever its kind: the dispatch between the MISP, STIX, TAXII and list loaders, the
//! API key (a file, or a Secret mounted under [`SECRETS_DIR`]), the TLP ceiling, the
//! allowlists, and a summary of what was loaded.

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

/// Where the enrich stage reads the Secrets IntelFeeds name in `spec.apiKeySecret`: the
/// Secret `name` mounted as a directory, each key a file (`<dir>/<name>/<key>`), as
/// Kubernetes mounts a Secret volume. `KASTELL_SECRETS_DIR` moves it (standalone mode).
pub const SECRETS_DIR: &str = "/etc/kastell/secrets";

/// The secrets directory of this process: `KASTELL_SECRETS_DIR`, else [`SECRETS_DIR`].
pub fn secrets_dir() -> PathBuf {
    std::env::var_os("KASTELL_SECRETS_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| PathBuf::from(SECRETS_DIR), PathBuf::from)
}

/// A feed to load: its name, spec, and the directories relative paths and mounted
/// Secrets are read from.
#[derive(Debug, Clone)]
pub struct FeedDef {
    pub name: String,
    pub spec: IntelFeedSpec,
    pub base_dir: PathBuf,
    /// Where `spec.apiKeySecret` is read (see [`SECRETS_DIR`]).
    pub secrets_dir: PathBuf,
}

impl FeedDef {
    /// A feed whose Secrets are read from this process's [`secrets_dir`].
    pub fn new(name: impl Into<String>, spec: IntelFeedSpec, base_dir: impl Into<PathBuf>) -> Self {
        FeedDef {
            name: name.into(),
            spec,
            base_dir: base_dir.into(),
            secrets_dir: secrets_dir(),
        }
    }
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
    #[error("feed type {0:?} needs an API key: set spec.apiKeySecret or spec.apiKeyFile")]
    NoApiKey(FeedKind),
    #[error("spec.apiKeySecret {name:?}/{key:?} is not a Secret name and key")]
    SecretRef { name: String, key: String },
    #[error(
        "spec.apiKeySecret {name}/{key}: no key file at {path} (the Secret {name} must be \
         mounted as a volume at {dir}/{name})"
    )]
    SecretMissing {
        name: String,
        key: String,
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spec.sightings is for misp-api feeds (a MISP instance); this feed is {0:?}")]
    SightingsNeedMispApi(FeedKind),
    #[error("the API key in {0} is empty")]
    EmptyApiKey(PathBuf),
    #[error("{0} is not a text feed (binary content: NUL or control bytes, or not UTF-8)")]
    NotText(String),
    #[error(
        "{source_name}: none of its {entries} entries is an indicator (is it a {kind:?} feed?)"
    )]
    NoIndicators {
        source_name: String,
        entries: u64,
        kind: FeedKind,
    },
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
    /// Indicators left out because their TLP marking is above `spec.tlpCeiling`.
    pub above_tlp_ceiling: u64,
}

impl Loaded {
    fn new(store: IndicatorStore) -> Self {
        Loaded {
            store,
            skipped: BTreeMap::new(),
            warnings: Vec::new(),
            validators: Validators::default(),
            above_tlp_ceiling: 0,
        }
    }
}

/// Pages of MISP REST and TAXII answers read at most per load.
const MAX_PAGES: u32 = 10_000;
const PAGE_LIMIT: u32 = 1_000;

/// What a feed keeps between loads so that a refresh fetches only what changed: the
/// events of a remote MISP feed, the objects of a TAXII collection.
#[derive(Debug, Clone, Default)]
pub struct FeedCache {
    pub misp: crate::misp_remote::FeedCache,
    pub taxii: taxii::TaxiiCache,
}

/// Loads one feed. The allowlists of the spec are applied while the store is built.
///
/// # Errors
///
/// A missing required field, an unreadable source, a refused URL, or an answer that is
/// not of the feed's kind. Problems with single entries are in [`Loaded`] instead.
pub async fn load(feed: &FeedDef, http: &Http) -> Result<Loaded, FeedError> {
    load_cached(feed, http, &mut FeedCache::default()).await
}

/// [`load`] with the cache of the feed's earlier loads, which it updates.
///
/// # Errors
///
/// As [`load`].
pub async fn load_cached(
    feed: &FeedDef,
    http: &Http,
    cache: &mut FeedCache,
) -> Result<Loaded, FeedError> {
    let spec = &feed.spec;
    let mut loaded = load_source(feed, http, cache).await?;
    if let Some(ceiling) = spec.tlp_ceiling {
        let (kept, withheld) = crate::tlp::withhold_above(loaded.store, ceiling);
        loaded.store = kept;
        loaded.above_tlp_ceiling = withheld;
        if withheld > 0 {
            loaded.skipped.insert("above tlp ceiling".into(), withheld);
            tracing::info!(feed = %feed.name, withheld, ceiling = ?ceiling, "indicators above the TLP ceiling not loaded");
        }
    }
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

async fn load_source(
    feed: &FeedDef,
    http: &Http,
    cache: &mut FeedCache,
) -> Result<Loaded, FeedError> {
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
                    crate::misp_remote::fetch(http, name, url, &mut cache.misp).await?;
                Ok(from_misp_report(store, &report))
            }
            (None, None) => Err(FeedError::Missing(spec.kind, "path or spec.url")),
        },
        FeedKind::MispApi => {
            let url = spec
                .url
                .as_deref()
                .ok_or(FeedError::Missing(spec.kind, "url"))?;
            let key = api_key(feed)?.ok_or(FeedError::NoApiKey(spec.kind))?;
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
            let (bytes, validators, _) = read_source(feed, http).await?;
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
            let (objects, progress) = taxii::fetch_objects(
                http,
                url,
                key.as_deref(),
                spec.collection.as_deref(),
                cache.taxii.added_after(),
                PAGE_LIMIT,
                MAX_PAGES,
            )
            .await?;
            let new_objects = objects.len();
            cache.taxii.absorb(objects, &progress);
            let (store, report) = taxii::read_objects(name, cache.taxii.objects());
            tracing::info!(
                feed = name,
                collection = %progress.collection,
                pages = progress.pages,
                new_objects,
                added_last = progress.added_last.as_deref().unwrap_or(""),
                indicators = report.indicators,
                "TAXII collection fetched"
            );
            Ok(from_stix_report(store, &report))
        }
        FeedKind::Csv => {
            let (bytes, validators, source) = read_source(feed, http).await?;
            text_content(&bytes, &source)?;
            let mapping = csv_mapping(spec)?;
            let (store, report) = list::load_csv(name, &bytes, &mapping)?;
            some_indicator(&report, &source, spec.kind)?;
            let mut loaded = from_list_report(store, &report);
            loaded.validators = validators;
            Ok(loaded)
        }
        FeedKind::PlainList => {
            let (bytes, validators, source) = read_source(feed, http).await?;
            let text = text_content(&bytes, &source)?;
            let (store, report) = list::load_plain_list(name, &text, value_type(spec)?);
            some_indicator(&report, &source, spec.kind)?;
            let mut loaded = from_list_report(store, &report);
            loaded.validators = validators;
            Ok(loaded)
        }
    }
}

/// The file at `spec.path`, or the body at `spec.url`, and the path or URL to name in
/// errors.
async fn read_source(
    feed: &FeedDef,
    http: &Http,
) -> Result<(Vec<u8>, Validators, String), FeedError> {
    let spec = &feed.spec;
    if let Some(path) = &spec.path {
        let path = resolve(&feed.base_dir, path);
        let bytes = std::fs::read(&path).map_err(|source| FeedError::Read {
            path: path.clone(),
            source,
        })?;
        return Ok((bytes, Validators::default(), path.display().to_string()));
    }
    let url = spec
        .url
        .as_deref()
        .ok_or(FeedError::Missing(spec.kind, "path or spec.url"))?;
    match http.get(url, None, Default::default()).await? {
        Fetched::Body { bytes, validators } => Ok((bytes, validators, url.to_owned())),
        Fetched::NotModified => Err(FeedError::NotModified(url.to_owned())),
    }
}

/// The content of a list or CSV feed as text, refused when it is binary: a NUL byte, or
/// more than one byte in a hundred that is a control character or not UTF-8. Lists are
/// read leniently otherwise (a Latin-1 comment costs one replaced character), but random
/// bytes would be split into "tokens", none an indicator, and the feed would load empty
/// without a word.
fn text_content<'a>(bytes: &'a [u8], source: &str) -> Result<std::borrow::Cow<'a, str>, FeedError> {
    if bytes.contains(&0) {
        return Err(FeedError::NotText(source.to_owned()));
    }
    let text = String::from_utf8_lossy(bytes);
    let odd = text
        .chars()
        .filter(|c| {
            *c == char::REPLACEMENT_CHARACTER
                || (c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c'))
        })
        .count();
    if odd * 100 > bytes.len() {
        return Err(FeedError::NotText(source.to_owned()));
    }
    Ok(text)
}

/// Refuses a list whose entries are all no indicator: a feed of another kind or format
/// read as a list. An empty list (or one of comments only) is an empty feed.
fn some_indicator(
    report: &list::ListReport,
    source: &str,
    kind: FeedKind,
) -> Result<(), FeedError> {
    if report.entries > 0 && report.indicators == 0 && report.duplicates == 0 {
        return Err(FeedError::NoIndicators {
            source_name: source.to_owned(),
            entries: report.entries,
            kind,
        });
    }
    Ok(())
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

/// The feed's API key: `spec.apiKeyFile` when set, else the key file of
/// `spec.apiKeySecret` under the secrets directory; `None` when neither is set.
fn api_key(feed: &FeedDef) -> Result<Option<String>, FeedError> {
    let spec = &feed.spec;
    let (path, key) = match (&spec.api_key_file, &spec.api_key_secret) {
        (Some(file), _) => {
            let path = resolve(&feed.base_dir, file);
            let key = std::fs::read_to_string(&path).map_err(|source| FeedError::Read {
                path: path.clone(),
                source,
            })?;
            (path, key)
        }
        (None, Some(secret)) => {
            // Kubernetes allows `[-._a-zA-Z0-9]` in keys and DNS names for Secrets; a
            // separator or `..` would read outside the Secret's directory.
            let plain = |part: &str| {
                !part.is_empty()
                    && !part.starts_with("..")
                    && part != "."
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            };
            if !plain(&secret.name) || !plain(&secret.key) {
                return Err(FeedError::SecretRef {
                    name: secret.name.clone(),
                    key: secret.key.clone(),
                });
            }
            let path = feed.secrets_dir.join(&secret.name).join(&secret.key);
            let key =
                std::fs::read_to_string(&path).map_err(|source| FeedError::SecretMissing {
                    name: secret.name.clone(),
                    key: secret.key.clone(),
                    path: path.clone(),
                    dir: feed.secrets_dir.clone(),
                    source,
                })?;
            (path, key)
        }
        (None, None) => return Ok(None),
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(FeedError::EmptyApiKey(path));
    }
    Ok(Some(key.to_owned()))
}

/// Where a feed's sightings go: `None` unless `spec.sightings` is set.
///
/// # Errors
///
/// Sightings asked of a feed that is not `misp-api` (only a MISP instance takes them),
/// or a missing URL or API key.
pub fn sighting_target(
    feed: &FeedDef,
) -> Result<Option<crate::sightings::SightingTarget>, FeedError> {
    let spec = &feed.spec;
    let Some(settings) = &spec.sightings else {
        return Ok(None);
    };
    if spec.kind != FeedKind::MispApi {
        return Err(FeedError::SightingsNeedMispApi(spec.kind));
    }
    let url = spec
        .url
        .clone()
        .ok_or(FeedError::Missing(spec.kind, "url"))?;
    let key = api_key(feed)?.ok_or(FeedError::NoApiKey(spec.kind))?;
    Ok(Some(crate::sightings::SightingTarget {
        feed: feed.name.clone(),
        url,
        key,
        settings: settings.clone(),
    }))
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
