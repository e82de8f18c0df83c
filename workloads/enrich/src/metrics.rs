//! The enrich stage's Prometheus gauges: indicators held per IntelFeed, so the threat
//! intel dashboard can show each feed's size next to the alerts it matched, and those a
//! feed's TLP ceiling kept out. The refresher sets them after every round.

use std::collections::BTreeMap;

use prometheus::{IntGaugeVec, Opts, Registry};

use crate::IndicatorStore;

/// Indicator counts by feed. Cloning shares the same gauges.
#[derive(Clone)]
pub struct IntelMetrics {
    indicators: IntGaugeVec,
    above_tlp_ceiling: IntGaugeVec,
}

impl IntelMetrics {
    /// Registers the gauges in `registry`, the one the workload serves on `/metrics`.
    ///
    /// # Errors
    /// When the registry already holds metrics of the same names.
    pub fn register_in(registry: &Registry) -> Result<Self, prometheus::Error> {
        let indicators = IntGaugeVec::new(
            Opts::new(
                "kastell_enrich_indicators",
                "Indicators held in the IOC store, by the IntelFeed they came from.",
            ),
            &["feed"],
        )?;
        registry.register(Box::new(indicators.clone()))?;
        let above_tlp_ceiling = IntGaugeVec::new(
            Opts::new(
                "kastell_enrich_indicators_above_tlp_ceiling",
                "Indicators the IntelFeed's last load left out: marked above its tlpCeiling.",
            ),
            &["feed"],
        )?;
        registry.register(Box::new(above_tlp_ceiling.clone()))?;
        Ok(IntelMetrics {
            indicators,
            above_tlp_ceiling,
        })
    }

    /// Sets one feed's gauges (the refresher calls it with each feed's last good load).
    pub fn set_feed(&self, feed: &str, indicators: usize, above_tlp_ceiling: u64) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.indicators
            .with_label_values(&[feed])
            .set(gauge(indicators as u64));
        self.above_tlp_ceiling
            .with_label_values(&[feed])
            .set(gauge(above_tlp_ceiling));
    }

    /// One feed's indicator gauge now (for tests and the stats endpoint).
    pub fn indicators(&self, feed: &str) -> i64 {
        self.indicators.with_label_values(&[feed]).get()
    }

    /// One feed's above-ceiling gauge now.
    pub fn above_tlp_ceiling(&self, feed: &str) -> i64 {
        self.above_tlp_ceiling.with_label_values(&[feed]).get()
    }

    /// Sets the gauges to the store's contents; a feed no longer loaded loses its series.
    pub fn set_from(&self, store: &IndicatorStore) {
        let mut by_feed: BTreeMap<String, i64> = BTreeMap::new();
        for feed in store.feeds() {
            by_feed.insert(feed.to_owned(), 0);
        }
        // The store hands indicators out rebuilt (it keeps them compact), so the feed
        // names are owned here.
        for indicator in store.indicators() {
            let feed = indicator.context.feed.as_str();
            match by_feed.get_mut(feed) {
                Some(count) => *count += 1,
                None => {
                    by_feed.insert(feed.to_owned(), 1);
                }
            }
        }
        self.indicators.reset();
        for (feed, count) in &by_feed {
            self.indicators
                .with_label_values(&[feed.as_str()])
                .set(*count);
        }
    }
}
