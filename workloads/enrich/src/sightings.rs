//! MISP sightings: when an indicator of a `misp-api` feed with `spec.sightings` matches,
//! the value is reported back to that MISP instance (`POST /sightings/add`), so analysts
//! there see which indicators are live in this SOC.
//!
//! The enrich loop never waits for MISP: [`Sightings::offer`] puts the value on a bounded
//! channel with `try_send` and returns; a full channel drops the sighting and counts it.
//! A task of its own ([`start`]) gathers the values per feed, each value once per batch,
//! and sends one request per batch (MISP's `values` form), at most `batchSize` values and
//! `maxRequestsPerMinute` requests per feed. Values waiting beyond four batches are
//! dropped and counted too: a sighting is a courtesy to the intel team, never a reason
//! to hold memory or hammer their instance. A failed request is logged and counted, and
//! its values are not retried (a later match sends them again).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kastell_crds::intel::MispSightings;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::http::Http;
use crate::store::Hit;

/// Sightings a feed may have waiting, in batches.
const BACKLOG_BATCHES: usize = 4;
/// How long a stopping sender keeps sending what is still waiting, at the feed's rate.
const GRACE: Duration = Duration::from_secs(5);
/// Sightings on their way from the enrich loop to the sender.
pub const CHANNEL: usize = 4_096;

/// One MISP instance sightings are sent to, for one feed.
#[derive(Debug, Clone)]
pub struct SightingTarget {
    /// The IntelFeed whose matches are reported.
    pub feed: String,
    /// The instance's base URL (the feed's `spec.url`).
    pub url: String,
    /// The `Authorization` header value.
    pub key: String,
    pub settings: MispSightings,
}

/// Counters of the sightings sent (all feeds).
#[derive(Debug, Default)]
pub struct SightingStats {
    offered: AtomicU64,
    sent: AtomicU64,
    requests: AtomicU64,
    failed_requests: AtomicU64,
    dropped: AtomicU64,
}

/// A snapshot of [`SightingStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SightingReport {
    /// Matches offered by the enrich loop for a feed that sends sightings.
    pub offered: u64,
    /// Values MISP accepted, in `requests` requests.
    pub sent: u64,
    pub requests: u64,
    pub failed_requests: u64,
    /// Values dropped: the channel or a feed's backlog was full, or the sender stopped.
    pub dropped: u64,
}

impl SightingStats {
    pub fn snapshot(&self) -> SightingReport {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SightingReport {
            offered: read(&self.offered),
            sent: read(&self.sent),
            requests: read(&self.requests),
            failed_requests: read(&self.failed_requests),
            dropped: read(&self.dropped),
        }
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The enrich loop's end of the sightings channel. Dropping every clone stops the
/// sender once it has sent (within a few seconds) what is waiting.
#[derive(Debug, Clone)]
pub struct Sightings {
    tx: mpsc::Sender<(Arc<str>, String)>,
    feeds: Arc<HashMap<String, Arc<str>>>,
    stats: Arc<SightingStats>,
}

impl Sightings {
    /// Reports a hit when its feed sends sightings; never waits.
    pub fn offer(&self, hit: &Hit) {
        let indicator = &hit.indicator;
        let Some(feed) = self.feeds.get(indicator.feed()) else {
            return;
        };
        SightingStats::add(&self.stats.offered, 1);
        // MISP finds a sighted value among value1 and value2 of its attributes: a
        // composite attribute (`ip-dst|port`, `filename|sha256`) is sighted by the part
        // that matched, anything else by the value exactly as MISP holds it.
        let value = if indicator.attribute_type.contains('|') {
            indicator.value.clone()
        } else {
            indicator.attribute_value.clone()
        };
        if self.tx.try_send((Arc::clone(feed), value)).is_err() {
            SightingStats::add(&self.stats.dropped, 1);
        }
    }

    /// Whether any feed sends sightings.
    pub fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }

    pub fn stats(&self) -> SightingReport {
        self.stats.snapshot()
    }
}

/// Starts the sender for `targets`, with a channel of `capacity` sightings.
pub fn start(
    targets: Vec<SightingTarget>,
    http: Http,
    capacity: usize,
) -> (Sightings, JoinHandle<SightingReport>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let stats = Arc::new(SightingStats::default());
    let feeds = targets
        .iter()
        .map(|t| (t.feed.clone(), Arc::<str>::from(t.feed.as_str())))
        .collect();
    let sightings = Sightings {
        tx,
        feeds: Arc::new(feeds),
        stats: Arc::clone(&stats),
    };
    let task = tokio::spawn(run(rx, targets, http, stats));
    (sightings, task)
}

/// One feed's waiting values and when it may send next.
struct Pending {
    target: SightingTarget,
    values: Vec<String>,
    seen: HashSet<String>,
    next_request: Instant,
}

impl Pending {
    fn spacing(&self) -> Duration {
        Duration::from_secs(60) / self.target.settings.max_requests_per_minute.max(1)
    }

    fn batch_size(&self) -> usize {
        self.target.settings.batch_size.max(1) as usize
    }
}

async fn run(
    mut rx: mpsc::Receiver<(Arc<str>, String)>,
    targets: Vec<SightingTarget>,
    http: Http,
    stats: Arc<SightingStats>,
) -> SightingReport {
    let now = Instant::now();
    let mut pending: HashMap<String, Pending> = targets
        .into_iter()
        .map(|target| {
            let pending = Pending {
                target,
                values: Vec::new(),
                seen: HashSet::new(),
                next_request: now,
            };
            (pending.target.feed.clone(), pending)
        })
        .collect();
    loop {
        let due = pending
            .values()
            .filter(|p| !p.values.is_empty())
            .map(|p| p.next_request)
            .min();
        tokio::select! {
            received = rx.recv() => match received {
                Some((feed, value)) => add(&mut pending, &feed, value, &stats),
                None => break,
            },
            () = sleep_until(due) => send_due(&mut pending, &http, &stats).await,
        }
    }
    let give_up = Instant::now() + GRACE;
    while let Some(due) = pending
        .values()
        .filter(|p| !p.values.is_empty())
        .map(|p| p.next_request)
        .min()
    {
        if due > give_up {
            break;
        }
        tokio::time::sleep_until(due).await;
        send_due(&mut pending, &http, &stats).await;
    }
    let left: usize = pending.values().map(|p| p.values.len()).sum();
    if left > 0 {
        tracing::warn!(
            sightings = left,
            "sightings not sent before the stage stopped"
        );
        SightingStats::add(&stats.dropped, left);
    }
    let report = stats.snapshot();
    tracing::info!(
        offered = report.offered,
        sent = report.sent,
        requests = report.requests,
        failed_requests = report.failed_requests,
        dropped = report.dropped,
        "sightings sender stopped"
    );
    report
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

fn add(pending: &mut HashMap<String, Pending>, feed: &str, value: String, stats: &SightingStats) {
    let Some(feed) = pending.get_mut(feed) else {
        return;
    };
    if feed.seen.contains(&value) {
        return;
    }
    if feed.values.len() >= feed.batch_size() * BACKLOG_BATCHES {
        SightingStats::add(&stats.dropped, 1);
        return;
    }
    feed.seen.insert(value.clone());
    feed.values.push(value);
}

/// Sends one batch of every feed whose turn it is.
async fn send_due(pending: &mut HashMap<String, Pending>, http: &Http, stats: &SightingStats) {
    let now = Instant::now();
    for feed in pending.values_mut() {
        if feed.values.is_empty() || feed.next_request > now {
            continue;
        }
        let take = feed.values.len().min(feed.batch_size());
        let batch: Vec<String> = feed.values.drain(..take).collect();
        for value in &batch {
            feed.seen.remove(value);
        }
        feed.next_request = now + feed.spacing();
        SightingStats::add(&stats.requests, 1);
        match post(http, &feed.target, &batch).await {
            Ok(()) => {
                SightingStats::add(&stats.sent, batch.len());
                tracing::debug!(feed = %feed.target.feed, values = batch.len(), "sightings sent");
            }
            Err(reason) => {
                SightingStats::add(&stats.failed_requests, 1);
                tracing::warn!(feed = %feed.target.feed, values = batch.len(), reason = %reason, "sightings not accepted");
            }
        }
    }
}

async fn post(http: &Http, target: &SightingTarget, values: &[String]) -> Result<(), String> {
    let url = format!("{}/sightings/add", target.url.trim_end_matches('/'));
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(target.key.trim()).map_err(|_| "the API key is no header value")?,
    );
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    // type 0: a sighting (1 is a false positive, 2 an expiration), as MISP defines it.
    let body = json!({
        "values": values,
        "source": target.settings.source,
        "type": "0",
        "timestamp": chrono::Utc::now().timestamp(),
    });
    http.post_json(&url, headers, &body)
        .await
        .map(|_| ())
        .map_err(|e| kastell_core::error_chain(&e))
}
