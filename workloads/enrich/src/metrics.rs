//! The enrich stage's Prometheus gauges: indicators held per IntelFeed, so the threat
//! intel dashboard can show each feed's size next to the alerts it matched.

use std::collections::BTreeMap;

use prometheus::{IntGaugeVec, Opts, Registry};

use crate::IndicatorStore;

/// Indicator counts by feed. Cloning shares the same gauges.
#[derive(Clone)]
pub struct IntelMetrics {
    indicators: IntGaugeVec,
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
        Ok(IntelMetrics { indicators })
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
