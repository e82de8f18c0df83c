//! The indicator store: every loaded indicator, indexed by the normalised value an
//! observable must equal, and the matching of whole events against it.
//!
//! Each kind has its own hash index keyed by the normalised value, so a lookup is one
//! normalisation (borrowed when the value is already in form) and one hash probe.
//! Networks are kept per prefix length: an address is truncated to each length present
//! and probed, which costs one probe per distinct prefix length, not per network.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use kastell_core::{Event, IntelMatch, Observable, ObservableKind};

use crate::indicator::{normalise_ip, normalise_observable, Indicator};

/// Every indicator of every loaded feed, ready for lookups.
#[derive(Debug, Default)]
pub struct IndicatorStore {
    indicators: Vec<Indicator>,
    feeds: Vec<String>,
    ips: HashMap<IpAddr, Vec<usize>>,
    /// Sorted by prefix length, longest first, so lookups list the most specific first.
    networks: Vec<NetworkIndex>,
    domains: HashMap<Box<str>, Vec<usize>>,
    urls: HashMap<Box<str>, Vec<usize>>,
    md5: HashMap<Box<str>, Vec<usize>>,
    sha1: HashMap<Box<str>, Vec<usize>>,
    sha256: HashMap<Box<str>, Vec<usize>>,
    sha512: HashMap<Box<str>, Vec<usize>>,
    emails: HashMap<Box<str>, Vec<usize>>,
}

#[derive(Debug)]
struct NetworkIndex {
    prefix_len: u8,
    v6: bool,
    networks: HashMap<IpNet, Vec<usize>>,
}

/// An indicator the store has no index for; the indicator is handed back.
#[derive(Debug, thiserror::Error)]
#[error("{} indicator {:?} cannot be indexed", .0.kind.as_str(), .0.value)]
pub struct UnindexableIndicator(pub Box<Indicator>);

/// One observable of an event that equals one indicator.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit<'a> {
    pub observable: Observable,
    pub indicator: &'a Indicator,
}

impl Hit<'_> {
    /// The match in the form alerts carry it.
    pub fn intel_match(&self) -> IntelMatch {
        let context = &self.indicator.context;
        IntelMatch {
            observable: self.observable.value.clone(),
            kind: self.observable.kind,
            field: self.observable.field.clone(),
            feed: context.feed.clone(),
            indicator: self.indicator.describe(),
            reference: context.reference.clone(),
            context: context.info.clone(),
            tags: self.indicator.all_tags(),
        }
    }
}

impl IndicatorStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of indicators (an attribute that yields two, like `domain|ip`, counts twice).
    pub fn len(&self) -> usize {
        self.indicators.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indicators.is_empty()
    }

    /// Every indicator, in load order.
    pub fn indicators(&self) -> &[Indicator] {
        &self.indicators
    }

    /// The feeds whose indicators the store holds, in the order they were added.
    pub fn feeds(&self) -> &[String] {
        &self.feeds
    }

    /// How many indicators of each kind the store holds.
    pub fn count_by_kind(&self) -> BTreeMap<ObservableKind, usize> {
        let mut counts = BTreeMap::new();
        for indicator in &self.indicators {
            *counts.entry(indicator.kind).or_insert(0) += 1;
        }
        counts
    }

    /// Adds one indicator. Its value must already be normalised, as the loaders do; the
    /// same value may be added many times (one per feed event that lists it), and a
    /// lookup returns all of them.
    ///
    /// # Errors
    ///
    /// An IP indicator whose value is not an address, or a kind the store has no index
    /// for (file names), is handed back unindexed.
    pub fn insert(&mut self, indicator: Indicator) -> Result<(), UnindexableIndicator> {
        let index = self.indicators.len();
        match (indicator.kind, indicator.network) {
            (ObservableKind::Ip, Some(network)) => self.insert_network(network, index),
            (ObservableKind::Ip, None) => match indicator.value.parse::<IpAddr>() {
                Ok(ip) => self.ips.entry(ip.to_canonical()).or_default().push(index),
                Err(_) => return Err(UnindexableIndicator(Box::new(indicator))),
            },
            (kind, _) => match self.strings_mut(kind) {
                Some(map) => map
                    .entry(indicator.value.as_str().into())
                    .or_default()
                    .push(index),
                None => return Err(UnindexableIndicator(Box::new(indicator))),
            },
        }
        if !self.feeds.iter().any(|f| *f == indicator.context.feed) {
            self.feeds.push(indicator.context.feed.clone());
        }
        self.indicators.push(indicator);
        Ok(())
    }

    /// Moves every indicator of another store (another feed) into this one.
    pub fn merge(&mut self, other: IndicatorStore) {
        self.indicators.reserve(other.indicators.len());
        for indicator in other.indicators {
            // Every indicator of a store was indexable when it went in, so it is now.
            let indexed = self.insert(indicator);
            debug_assert!(indexed.is_ok());
        }
        for feed in other.feeds {
            if !self.feeds.contains(&feed) {
                self.feeds.push(feed);
            }
        }
    }

    /// Builds one store from several feeds' stores.
    pub fn from_stores(stores: impl IntoIterator<Item = IndicatorStore>) -> Self {
        let mut merged = IndicatorStore::new();
        for store in stores {
            merged.merge(store);
        }
        merged
    }

    /// The indicators an observable equals, in load order; for an address, exact
    /// indicators first, then the networks containing it, most specific first.
    pub fn lookup(&self, observable: &Observable) -> Vec<&Indicator> {
        self.lookup_value(observable.kind, &observable.value)
    }

    /// [`lookup`](Self::lookup) by kind and value, without building an [`Observable`].
    pub fn lookup_value(&self, kind: ObservableKind, value: &str) -> Vec<&Indicator> {
        let mut out = Vec::new();
        self.for_each_match(kind, value, |indicator| out.push(indicator));
        out
    }

    /// Whether anything equals the observable, without collecting the indicators.
    pub fn contains(&self, kind: ObservableKind, value: &str) -> bool {
        let mut found = false;
        self.for_each_match(kind, value, |_| found = true);
        found
    }

    /// Every (observable, indicator) pair of an event, in observable order.
    pub fn matches(&self, event: &Event) -> Vec<Hit<'_>> {
        let mut hits = Vec::new();
        for observable in event.observables() {
            self.for_each_match(observable.kind, &observable.value, |indicator| {
                hits.push(Hit {
                    observable: observable.clone(),
                    indicator,
                })
            });
        }
        hits
    }

    /// The event's matches as alerts carry them, each distinct match once.
    pub fn match_event(&self, event: &Event) -> Vec<IntelMatch> {
        distinct_matches(&self.matches(event))
    }

    fn for_each_match<'s>(
        &'s self,
        kind: ObservableKind,
        value: &str,
        mut found: impl FnMut(&'s Indicator),
    ) {
        let mut emit = |indices: &[usize]| {
            for &i in indices {
                found(&self.indicators[i]);
            }
        };
        if kind == ObservableKind::Ip {
            let Some(ip) = normalise_ip(value) else {
                return;
            };
            if let Some(indices) = self.ips.get(&ip) {
                emit(indices);
            }
            for index in &self.networks {
                if index.v6 != ip.is_ipv6() {
                    continue;
                }
                let Ok(network) = IpNet::new(ip, index.prefix_len) else {
                    continue;
                };
                if let Some(indices) = index.networks.get(&network.trunc()) {
                    emit(indices);
                }
            }
            return;
        }
        let Some(map) = self.strings(kind) else {
            return;
        };
        let Some(key) = normalise_observable(kind, value) else {
            return;
        };
        if let Some(indices) = map.get(key.as_ref()) {
            emit(indices);
        }
    }

    fn insert_network(&mut self, network: IpNet, index: usize) {
        let network = network.trunc();
        let prefix_len = network.prefix_len();
        let v6 = matches!(network, IpNet::V6(_));
        let position = self
            .networks
            .iter()
            .position(|n| n.prefix_len == prefix_len && n.v6 == v6);
        let slot = match position {
            Some(slot) => slot,
            None => {
                self.networks.push(NetworkIndex {
                    prefix_len,
                    v6,
                    networks: HashMap::new(),
                });
                self.networks
                    .sort_by(|a, b| b.prefix_len.cmp(&a.prefix_len).then(a.v6.cmp(&b.v6)));
                self.networks
                    .iter()
                    .position(|n| n.prefix_len == prefix_len && n.v6 == v6)
                    .expect("the index was just added")
            }
        };
        self.networks[slot]
            .networks
            .entry(network)
            .or_default()
            .push(index);
    }

    fn strings(&self, kind: ObservableKind) -> Option<&HashMap<Box<str>, Vec<usize>>> {
        match kind {
            ObservableKind::Domain => Some(&self.domains),
            ObservableKind::Url => Some(&self.urls),
            ObservableKind::Md5 => Some(&self.md5),
            ObservableKind::Sha1 => Some(&self.sha1),
            ObservableKind::Sha256 => Some(&self.sha256),
            ObservableKind::Sha512 => Some(&self.sha512),
            ObservableKind::Email => Some(&self.emails),
            ObservableKind::Ip | ObservableKind::Filename => None,
        }
    }

    fn strings_mut(&mut self, kind: ObservableKind) -> Option<&mut HashMap<Box<str>, Vec<usize>>> {
        match kind {
            ObservableKind::Domain => Some(&mut self.domains),
            ObservableKind::Url => Some(&mut self.urls),
            ObservableKind::Md5 => Some(&mut self.md5),
            ObservableKind::Sha1 => Some(&mut self.sha1),
            ObservableKind::Sha256 => Some(&mut self.sha256),
            ObservableKind::Sha512 => Some(&mut self.sha512),
            ObservableKind::Email => Some(&mut self.emails),
            ObservableKind::Ip | ObservableKind::Filename => None,
        }
    }
}

/// The distinct [`IntelMatch`]es of some hits, in hit order. Two attributes of one MISP
/// event with the same type and value give the same match, which is kept once.
pub fn distinct_matches(hits: &[Hit<'_>]) -> Vec<IntelMatch> {
    let mut out: Vec<IntelMatch> = Vec::with_capacity(hits.len());
    for hit in hits {
        let candidate = hit.intel_match();
        if !out.contains(&candidate) {
            out.push(candidate);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::indicator::IndicatorContext;

    fn indicator(kind: ObservableKind, value: &str, network: Option<&str>) -> Indicator {
        Indicator {
            kind,
            value: value.to_owned(),
            network: network.map(|n| n.parse().unwrap()),
            attribute_type: "test".into(),
            attribute_value: value.to_owned(),
            attribute_id: None,
            port: None,
            filename: None,
            comment: None,
            tags: vec![],
            context: Arc::new(IndicatorContext {
                feed: "unit".into(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn addresses_match_exact_and_every_containing_network_most_specific_first() {
        let mut store = IndicatorStore::new();
        for (value, network) in [
            ("10.0.0.0/8", Some("10.0.0.0/8")),
            ("10.1.0.0/16", Some("10.1.0.0/16")),
            ("10.1.2.3", None),
            ("2001:db8::/32", Some("2001:db8::/32")),
        ] {
            store
                .insert(indicator(ObservableKind::Ip, value, network))
                .unwrap();
        }
        let found: Vec<_> = store
            .lookup_value(ObservableKind::Ip, "10.1.2.3")
            .into_iter()
            .map(|i| i.value.as_str())
            .collect();
        assert_eq!(found, vec!["10.1.2.3", "10.1.0.0/16", "10.0.0.0/8"]);
        assert_eq!(store.lookup_value(ObservableKind::Ip, "11.0.0.1").len(), 0);
        assert_eq!(
            store
                .lookup_value(ObservableKind::Ip, "2001:db8:1::9")
                .len(),
            1
        );
        assert!(!store.contains(ObservableKind::Ip, "not an address"));
    }

    #[test]
    fn observables_are_normalised_before_the_probe() {
        let mut store = IndicatorStore::new();
        store
            .insert(indicator(ObservableKind::Domain, "evil.example", None))
            .unwrap();
        assert!(store
            .insert(indicator(ObservableKind::Filename, "a.exe", None))
            .is_err());
        assert!(store
            .insert(indicator(ObservableKind::Ip, "a.exe", None))
            .is_err());
        assert_eq!(store.len(), 1);
        assert!(store.contains(ObservableKind::Domain, "EVIL.example."));
        assert!(!store.contains(ObservableKind::Url, "evil.example"));
    }

    #[test]
    fn merged_stores_answer_for_both_feeds() {
        let mut a = IndicatorStore::new();
        a.insert(indicator(ObservableKind::Domain, "a.example", None))
            .unwrap();
        let mut b_indicator = indicator(ObservableKind::Domain, "a.example", None);
        b_indicator.context = Arc::new(IndicatorContext {
            feed: "other".into(),
            ..Default::default()
        });
        let mut b = IndicatorStore::new();
        b.insert(b_indicator).unwrap();
        let store = IndicatorStore::from_stores([a, b]);
        assert_eq!(store.feeds(), ["unit", "other"]);
        let event = Event::from_value(json!({"dns": {"question": {"name": "a.example"}}})).unwrap();
        let matches = store.match_event(&event);
        let feeds: Vec<_> = matches.iter().map(|m| m.feed.as_str()).collect();
        assert_eq!(feeds, vec!["unit", "other"]);
        assert_eq!(matches[0].field, "dns.question.name");
    }
}
