//! Refreshing feeds: each feed on its own `refreshInterval`, a conditional request
//! first so an unchanged source costs a 304, the new indicators built aside and the
//! merged store swapped in atomically (`arc-swap`), so matching never waits and never
//! sees half a feed. A failed fetch keeps the feed's last good indicators and records
//! the error in the feed's status (indicator count, last success, last error); the
//! `kastell_enrich_indicators{feed}` gauges follow every round, a failed feed keeping
//! its last good count.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{SecondsFormat, Utc};
use kastell_crds::intel::IntelFeedStatus;
use tokio::time::Instant;

use crate::feed::{self, FeedDef};
use crate::http::{Http, Validators};
use crate::metrics::IntelMetrics;
use crate::store::IndicatorStore;

/// Reads `1h`, `30m`, `1h30m`, `500ms`, `1d` (the CRD's pattern); `None` otherwise.
pub fn parse_interval(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else {
            let seconds = match rest.chars().next()? {
                's' => 1,
                'm' => 60,
                'h' => 3_600,
                'd' => 86_400,
                _ => return None,
            };
            (Duration::from_secs(seconds), 1)
        };
        total = total.checked_add(unit.checked_mul(u32::try_from(number).ok()?)?)?;
        rest = &rest[len..];
    }
    (total > Duration::ZERO).then_some(total)
}

/// One feed's refresh state.
#[derive(Debug)]
pub struct FeedState {
    pub def: FeedDef,
    pub status: IntelFeedStatus,
    last_good: Option<Arc<IndicatorStore>>,
    /// Indicators of the last good load left out by the TLP ceiling.
    above_tlp_ceiling: u64,
    /// Remote MISP events and TAXII objects of earlier loads.
    cache: feed::FeedCache,
    validators: Validators,
    interval: Duration,
    due: Instant,
}

/// Every feed of the platform, and the merged store the enrich stage reads.
pub struct Refresher {
    feeds: Vec<FeedState>,
    current: Arc<ArcSwap<IndicatorStore>>,
    http: Http,
    metrics: Option<IntelMetrics>,
}

impl Refresher {
    /// Feeds with an unreadable interval are refreshed hourly, and say so in their
    /// status.
    pub fn new(defs: Vec<FeedDef>, http: Http) -> Self {
        let now = Instant::now();
        let feeds = defs
            .into_iter()
            .map(|def| {
                let mut status = IntelFeedStatus::default();
                let interval = parse_interval(&def.spec.refresh_interval).unwrap_or_else(|| {
                    status.last_error = Some(format!(
                        "refreshInterval {:?} is unreadable; refreshing hourly",
                        def.spec.refresh_interval
                    ));
                    Duration::from_secs(3_600)
                });
                FeedState {
                    def,
                    status,
                    last_good: None,
                    above_tlp_ceiling: 0,
                    cache: feed::FeedCache::default(),
                    validators: Validators::default(),
                    interval,
                    due: now,
                }
            })
            .collect();
        Refresher {
            feeds,
            current: Arc::new(ArcSwap::from_pointee(IndicatorStore::new())),
            http,
            metrics: None,
        }
    }

    /// Sets `metrics`' per-feed gauges after every refresh round.
    #[must_use]
    pub fn with_metrics(mut self, metrics: IntelMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The store the stage matches against; always a complete set.
    pub fn current(&self) -> Arc<ArcSwap<IndicatorStore>> {
        Arc::clone(&self.current)
    }

    pub fn feeds(&self) -> &[FeedState] {
        &self.feeds
    }

    /// Refreshes the feeds that are due and swaps in a new merged store when any of
    /// them changed. Returns how many feeds were loaded anew.
    pub async fn refresh_due(&mut self) -> usize {
        let now = Instant::now();
        let mut reloaded = 0;
        for state in self.feeds.iter_mut().filter(|s| s.due <= now) {
            state.due = now + state.interval;
            if refresh_one(state, &self.http).await {
                reloaded += 1;
            }
        }
        if reloaded > 0 {
            let merged = IndicatorStore::from_stores(
                self.feeds
                    .iter()
                    .filter_map(|s| s.last_good.as_deref())
                    .map(IndicatorStore::clone_indicators),
            );
            tracing::info!(
                indicators = merged.len(),
                feeds = reloaded,
                "indicator set swapped"
            );
            self.current.store(Arc::new(merged));
        }
        self.update_metrics();
        reloaded
    }

    /// Each feed's gauges from its last good load; a feed that never loaded has none
    /// set here (the set it had at start, if any, is still what enrich holds for it).
    fn update_metrics(&self) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        for state in &self.feeds {
            if let Some(store) = &state.last_good {
                metrics.set_feed(&state.def.name, store.len(), state.above_tlp_ceiling);
            }
        }
    }

    /// When the next feed is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.feeds.iter().map(|s| s.due).min()
    }

    /// Refreshes until `stop` resolves.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            self.refresh_due().await;
            let Some(due) = self.next_due() else {
                return;
            };
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep_until(due) => {}
            }
        }
    }
}

/// Loads one feed if its source changed; `true` when it gave a new set.
async fn refresh_one(state: &mut FeedState, http: &Http) -> bool {
    let name = state.def.name.clone();
    let outcome = async {
        if state.last_good.is_some() {
            let (changed, validators) = feed::changed(&state.def, http, &state.validators).await?;
            if !changed {
                return Ok(None);
            }
            state.validators = validators;
        }
        feed::load_cached(&state.def, http, &mut state.cache)
            .await
            .map(Some)
    }
    .await;
    match outcome {
        Ok(None) => {
            tracing::debug!(feed = %name, "feed unchanged (304)");
            state.status.last_success = Some(now_text());
            false
        }
        Ok(Some(loaded)) => {
            if loaded.validators != Validators::default() {
                state.validators = loaded.validators.clone();
            }
            let count = loaded.store.len();
            state.status.indicator_count = i64::try_from(count).ok();
            state.above_tlp_ceiling = loaded.above_tlp_ceiling;
            state.status.above_tlp_ceiling = i64::try_from(loaded.above_tlp_ceiling).ok();
            state.status.last_success = Some(now_text());
            state.status.last_error = None;
            state.last_good = Some(Arc::new(loaded.store));
            tracing::info!(feed = %name, indicators = count, "feed refreshed");
            true
        }
        Err(error) => {
            let text = kastell_core::error_chain(&error);
            tracing::warn!(feed = %name, reason = %text, "feed refresh failed; keeping the last good set");
            state.status.last_error = Some(text);
            false
        }
    }
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_follow_the_crd_pattern() {
        assert_eq!(parse_interval("1h"), Some(Duration::from_secs(3_600)));
        assert_eq!(parse_interval("1h30m"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_interval("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_interval("1d"), Some(Duration::from_secs(86_400)));
        for bad in ["", "h", "10", "5x", "0s"] {
            assert_eq!(parse_interval(bad), None, "{bad}");
        }
    }
}
