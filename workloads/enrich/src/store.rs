//! The indicator store: every loaded indicator, indexed so that one observable costs a
//! handful of hash probes whatever the number of indicators.
//!
//! - hashes, e-mail addresses and URLs: exact sets keyed by the normalised value;
//! - domains: an exact set probed with the observable and each of its parent domains
//!   (`a.b.evil.example`, `b.evil.example`, `evil.example`), so a feed's `evil.example`
//!   matches every subdomain; the parents are sub-slices of the observable, so the walk
//!   allocates nothing. A single label (a TLD) only ever matches exactly;
//! - addresses: an exact map, then the longest-prefix-match tries of `prefix-trie` for
//!   networks (one per family), which list every network containing the address;
//! - a URL observable is also looked up by its host in the domain set.
//!
//! The same value listed by several feeds or events is one key with several indicators
//! behind it (their contexts merged at lookup); an indicator that repeats one already
//! held (same feed, reference, type and value) is dropped as a duplicate.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use kastell_core::{Event, IntelMatch, Observable, ObservableKind};
use prefix_trie::PrefixMap;

use crate::allowlist::Allowlist;
use crate::indicator::{normalise_hash, normalise_ip, Indicator};
use crate::normalise;

/// Positions in the store's indicator list. Most keys have one indicator, so one is kept
/// inline and only a value listed several times pays for a vector.
#[derive(Debug, Clone)]
enum Slots {
    One(u32),
    Many(Vec<u32>),
}

impl Slots {
    fn as_slice(&self) -> &[u32] {
        match self {
            Slots::One(one) => std::slice::from_ref(one),
            Slots::Many(many) => many,
        }
    }

    fn push(&mut self, index: u32) {
        match self {
            Slots::One(first) => *self = Slots::Many(vec![*first, index]),
            Slots::Many(many) => many.push(index),
        }
    }
}

type StringIndex = HashMap<Box<str>, Slots>;

/// Every indicator of every loaded feed, ready for lookups.
#[derive(Debug, Default)]
pub struct IndicatorStore {
    indicators: Vec<Indicator>,
    feeds: Vec<String>,
    ips: HashMap<IpAddr, Slots>,
    v4_networks: PrefixMap<Ipv4Net, Slots>,
    v6_networks: PrefixMap<Ipv6Net, Slots>,
    domains: StringIndex,
    urls: StringIndex,
    md5: StringIndex,
    sha1: StringIndex,
    sha256: StringIndex,
    sha512: StringIndex,
    emails: StringIndex,
    allowlist: Option<Arc<Allowlist>>,
    duplicates: u64,
    suppressed: u64,
}

/// An indicator the store has no index for; the indicator is handed back.
#[derive(Debug, thiserror::Error)]
#[error("{} indicator {:?} cannot be indexed", .0.kind.as_str(), .0.value)]
pub struct UnindexableIndicator(pub Box<Indicator>);

/// What [`IndicatorStore::insert`] did with an indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    Added,
    /// The same feed already gave the same indicator from the same event or report.
    Duplicate,
    /// The allowlist (warning lists) names the value as benign.
    Suppressed,
}

/// How an observable reached an indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The observable itself (a parent domain or a containing network included).
    Value,
    /// The host of a URL observable, in the domain set.
    UrlHost,
}

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

    /// A store that drops, at insertion, every indicator the allowlist names.
    pub fn with_allowlist(allowlist: Arc<Allowlist>) -> Self {
        IndicatorStore {
            allowlist: Some(allowlist),
            ..Self::default()
        }
    }

    /// Number of indicators held (an attribute that yields two, like `domain|ip`,
    /// counts twice; duplicates and suppressed values are not held).
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

    /// Indicators dropped because they repeated one already held.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Indicators dropped because the allowlist names their value.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// Distinct values held, whatever the number of feeds listing each.
    pub fn distinct_values(&self) -> usize {
        self.ips.len()
            + self.v4_networks.len()
            + self.v6_networks.len()
            + [
                &self.domains,
                &self.urls,
                &self.md5,
                &self.sha1,
                &self.sha256,
                &self.sha512,
                &self.emails,
            ]
            .iter()
            .map(|m| m.len())
            .sum::<usize>()
    }

    /// How many indicators of each kind the store holds.
    pub fn count_by_kind(&self) -> BTreeMap<ObservableKind, usize> {
        let mut counts = BTreeMap::new();
        for indicator in &self.indicators {
            *counts.entry(indicator.kind).or_insert(0) += 1;
        }
        counts
    }

    /// Adds one indicator. Its value must already be normalised, as the loaders do.
    ///
    /// # Errors
    ///
    /// An IP indicator whose value is not an address, or a kind the store has no index
    /// for (file names), is handed back unindexed.
    pub fn insert(&mut self, indicator: Indicator) -> Result<Inserted, UnindexableIndicator> {
        if self
            .allowlist
            .as_ref()
            .is_some_and(|list| list.covers(&indicator))
        {
            self.suppressed += 1;
            return Ok(Inserted::Suppressed);
        }
        let Ok(index) = u32::try_from(self.indicators.len()) else {
            return Err(UnindexableIndicator(Box::new(indicator)));
        };
        let slots = match self.slots_for(&indicator) {
            Ok(slots) => slots,
            Err(()) => return Err(UnindexableIndicator(Box::new(indicator))),
        };
        match slots {
            Some(slots) => {
                let existing = slots.as_slice();
                if existing
                    .iter()
                    .any(|&i| self.indicators[i as usize].same_source(&indicator))
                {
                    self.duplicates += 1;
                    return Ok(Inserted::Duplicate);
                }
                // Borrow again mutably: the check above needed the indicator list.
                if let Ok(Some(slots)) = self.slots_for_mut(&indicator) {
                    slots.push(index);
                }
            }
            None => self.add_key(&indicator, index),
        }
        if !self.feeds.iter().any(|f| *f == indicator.context.feed) {
            self.feeds.push(indicator.context.feed.clone());
        }
        self.indicators.push(indicator);
        Ok(Inserted::Added)
    }

    /// Moves every indicator of another store (another feed) into this one.
    pub fn merge(&mut self, other: IndicatorStore) {
        self.indicators.reserve(other.indicators.len());
        for indicator in other.indicators {
            if let Err(e) = self.insert(indicator) {
                // Every indicator of a store was indexable when it went in.
                tracing::warn!(reason = %e, "indicator not merged");
            }
        }
        self.duplicates += other.duplicates;
        self.suppressed += other.suppressed;
        for feed in other.feeds {
            if !self.feeds.contains(&feed) {
                self.feeds.push(feed);
            }
        }
    }

    /// A copy of the indicators in a new store (with no allowlist: they passed it).
    pub fn clone_indicators(&self) -> IndicatorStore {
        let mut copy = IndicatorStore::new();
        copy.indicators.reserve(self.indicators.len());
        for indicator in &self.indicators {
            if let Err(e) = copy.insert(indicator.clone()) {
                tracing::warn!(reason = %e, "indicator not copied");
            }
        }
        copy.duplicates = self.duplicates;
        copy.suppressed = self.suppressed;
        copy
    }

    /// Builds one store from several feeds' stores.
    pub fn from_stores(stores: impl IntoIterator<Item = IndicatorStore>) -> Self {
        let mut merged = IndicatorStore::new();
        for store in stores {
            merged.merge(store);
        }
        merged
    }

    /// The indicators an observable matches, most specific first: an address's own
    /// indicators then the networks containing it, longest prefix first; a domain's own
    /// then its parents', nearest first; a URL's own then its host's.
    pub fn lookup(&self, observable: &Observable) -> Vec<&Indicator> {
        self.lookup_value(observable.kind, &observable.value)
    }

    /// [`lookup`](Self::lookup) by kind and value, without building an [`Observable`].
    pub fn lookup_value(&self, kind: ObservableKind, value: &str) -> Vec<&Indicator> {
        let mut out = Vec::new();
        self.for_each_match(kind, value, |indicator, _| out.push(indicator));
        out
    }

    /// Whether anything matches the observable, without collecting the indicators.
    pub fn contains(&self, kind: ObservableKind, value: &str) -> bool {
        let mut found = false;
        self.for_each_match(kind, value, |_, _| found = true);
        found
    }

    /// How many indicators an observable matches; allocates nothing when the value is
    /// already in normal form (URLs excepted: canonicalising one builds a new string).
    pub fn count_matches(&self, kind: ObservableKind, value: &str) -> usize {
        let mut found = 0;
        self.for_each_match(kind, value, |_, _| found += 1);
        found
    }

    /// Every (observable, indicator) pair of an event, in observable order. An
    /// indicator reached through a URL's host is left out when the event's own domain
    /// observables already reached it.
    pub fn matches(&self, event: &Event) -> Vec<Hit<'_>> {
        let mut hits: Vec<Hit<'_>> = Vec::new();
        for observable in event.observables() {
            self.for_each_match(observable.kind, &observable.value, |indicator, via| {
                let repeated = via == Via::UrlHost
                    && hits.iter().any(|h| std::ptr::eq(h.indicator, indicator));
                if !repeated {
                    hits.push(Hit {
                        observable: observable.clone(),
                        indicator,
                    });
                }
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
        mut found: impl FnMut(&'s Indicator, Via),
    ) {
        let mut emit = |slots: &Slots, via: Via| {
            for &i in slots.as_slice() {
                found(&self.indicators[i as usize], via);
            }
        };
        match kind {
            ObservableKind::Ip => {
                let Some(ip) = normalise_ip(value) else {
                    return;
                };
                if let Some(slots) = self.ips.get(&ip) {
                    emit(slots, Via::Value);
                }
                self.for_each_network(ip, |slots| emit(slots, Via::Value));
            }
            ObservableKind::Domain => {
                if let Some(name) = normalise::domain(value) {
                    self.for_each_domain(&name, |slots| emit(slots, Via::Value));
                }
            }
            ObservableKind::Url => {
                let Some(url) = normalise::url(value) else {
                    return;
                };
                if let Some(slots) = self.urls.get(url.as_str()) {
                    emit(slots, Via::Value);
                }
                if let Some(host) = normalise::url_host(&url) {
                    self.for_each_domain(host, |slots| emit(slots, Via::UrlHost));
                }
            }
            ObservableKind::Email => {
                if let Some(address) = normalise::email(value) {
                    if let Some(slots) = self.emails.get(address.as_ref()) {
                        emit(slots, Via::Value);
                    }
                }
            }
            ObservableKind::Md5
            | ObservableKind::Sha1
            | ObservableKind::Sha256
            | ObservableKind::Sha512 => {
                let trimmed = value.trim();
                let key = if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
                    normalise_hash(kind, trimmed).map(std::borrow::Cow::Owned)
                } else {
                    Some(std::borrow::Cow::Borrowed(trimmed))
                };
                if let (Some(map), Some(key)) = (self.strings(kind), key) {
                    if let Some(slots) = map.get(key.as_ref()) {
                        emit(slots, Via::Value);
                    }
                }
            }
            ObservableKind::Filename => {}
        }
    }

    /// The domain itself, then each parent down to (not including) the top-level label.
    fn for_each_domain(&self, name: &str, mut emit: impl FnMut(&Slots)) {
        if self.domains.is_empty() {
            return;
        }
        if let Some(slots) = self.domains.get(name) {
            emit(slots);
        }
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            if !parent.contains('.') {
                break;
            }
            if let Some(slots) = self.domains.get(parent) {
                emit(slots);
            }
            rest = parent;
        }
    }

    /// Every network containing the address, longest prefix first. The trie walk
    /// allocates nothing; only an address that is in some network pays for the list
    /// that reverses the trie's shortest-first order.
    fn for_each_network(&self, ip: IpAddr, mut emit: impl FnMut(&Slots)) {
        match ip {
            IpAddr::V4(v4) => {
                let host = Ipv4Net::from(v4);
                if self.v4_networks.get_lpm(&host).is_none() {
                    return;
                }
                let covering: Vec<&Slots> = self.v4_networks.cover(&host).map(|(_, s)| s).collect();
                covering.into_iter().rev().for_each(&mut emit);
            }
            IpAddr::V6(v6) => {
                let host = Ipv6Net::from(v6);
                if self.v6_networks.get_lpm(&host).is_none() {
                    return;
                }
                let covering: Vec<&Slots> = self.v6_networks.cover(&host).map(|(_, s)| s).collect();
                covering.into_iter().rev().for_each(&mut emit);
            }
        }
    }

    /// The slots already held for the indicator's key; `Err` when it cannot be indexed.
    fn slots_for(&self, indicator: &Indicator) -> Result<Option<&Slots>, ()> {
        match (indicator.kind, indicator.network) {
            (ObservableKind::Ip, Some(IpNet::V4(net))) => Ok(self.v4_networks.get(&net.trunc())),
            (ObservableKind::Ip, Some(IpNet::V6(net))) => Ok(self.v6_networks.get(&net.trunc())),
            (ObservableKind::Ip, None) => {
                let ip = indicator.value.parse::<IpAddr>().map_err(|_| ())?;
                Ok(self.ips.get(&ip.to_canonical()))
            }
            (kind, _) => Ok(self.strings(kind).ok_or(())?.get(indicator.value.as_str())),
        }
    }

    fn slots_for_mut(&mut self, indicator: &Indicator) -> Result<Option<&mut Slots>, ()> {
        match (indicator.kind, indicator.network) {
            (ObservableKind::Ip, Some(IpNet::V4(net))) => {
                Ok(self.v4_networks.get_mut(&net.trunc()))
            }
            (ObservableKind::Ip, Some(IpNet::V6(net))) => {
                Ok(self.v6_networks.get_mut(&net.trunc()))
            }
            (ObservableKind::Ip, None) => {
                let ip = indicator.value.parse::<IpAddr>().map_err(|_| ())?;
                Ok(self.ips.get_mut(&ip.to_canonical()))
            }
            (kind, _) => Ok(self
                .strings_mut(kind)
                .ok_or(())?
                .get_mut(indicator.value.as_str())),
        }
    }

    /// Adds a key seen for the first time; [`slots_for`](Self::slots_for) has checked
    /// the indicator is indexable.
    fn add_key(&mut self, indicator: &Indicator, index: u32) {
        let slots = Slots::One(index);
        match (indicator.kind, indicator.network) {
            (ObservableKind::Ip, Some(IpNet::V4(net))) => {
                self.v4_networks.insert(net.trunc(), slots);
            }
            (ObservableKind::Ip, Some(IpNet::V6(net))) => {
                self.v6_networks.insert(net.trunc(), slots);
            }
            (ObservableKind::Ip, None) => {
                if let Ok(ip) = indicator.value.parse::<IpAddr>() {
                    self.ips.insert(ip.to_canonical(), slots);
                }
            }
            (kind, _) => {
                if let Some(map) = self.strings_mut(kind) {
                    map.insert(indicator.value.as_str().into(), slots);
                }
            }
        }
    }

    fn strings(&self, kind: ObservableKind) -> Option<&StringIndex> {
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

    fn strings_mut(&mut self, kind: ObservableKind) -> Option<&mut StringIndex> {
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
        let mut indicator = Indicator::new(
            kind,
            value,
            Arc::new(IndicatorContext {
                feed: "unit".into(),
                ..Default::default()
            }),
        );
        indicator.network = network.map(|n| n.parse().unwrap());
        indicator
    }

    fn values(found: Vec<&Indicator>) -> Vec<&str> {
        found.into_iter().map(|i| i.value.as_str()).collect()
    }

    #[test]
    fn addresses_match_exact_then_every_containing_network_longest_first() {
        let mut store = IndicatorStore::new();
        for (value, network) in [
            ("10.0.0.0/8", Some("10.0.0.0/8")),
            ("10.1.0.0/16", Some("10.1.0.0/16")),
            ("10.1.2.3", None),
            ("2001:db8::/32", Some("2001:db8::/32")),
            ("2001:db8:1::/48", Some("2001:db8:1::/48")),
        ] {
            store
                .insert(indicator(ObservableKind::Ip, value, network))
                .unwrap();
        }
        assert_eq!(
            values(store.lookup_value(ObservableKind::Ip, "10.1.2.3")),
            vec!["10.1.2.3", "10.1.0.0/16", "10.0.0.0/8"]
        );
        assert_eq!(
            values(store.lookup_value(ObservableKind::Ip, "10.2.0.1")),
            vec!["10.0.0.0/8"]
        );
        assert!(store
            .lookup_value(ObservableKind::Ip, "11.0.0.1")
            .is_empty());
        assert_eq!(
            values(store.lookup_value(ObservableKind::Ip, "2001:db8:1::9")),
            vec!["2001:db8:1::/48", "2001:db8::/32"]
        );
        assert_eq!(
            values(store.lookup_value(ObservableKind::Ip, "::ffff:10.9.9.9")),
            vec!["10.0.0.0/8"]
        );
        assert!(!store.contains(ObservableKind::Ip, "not an address"));
    }

    #[test]
    fn domains_match_their_subdomains_but_not_lookalikes() {
        let mut store = IndicatorStore::new();
        store
            .insert(indicator(ObservableKind::Domain, "evil.example", None))
            .unwrap();
        store
            .insert(indicator(ObservableKind::Domain, "b.evil.example", None))
            .unwrap();
        store
            .insert(indicator(ObservableKind::Domain, "example", None))
            .unwrap();
        assert_eq!(
            values(store.lookup_value(ObservableKind::Domain, "A.B.Evil.Example.")),
            vec!["b.evil.example", "evil.example"]
        );
        assert_eq!(
            values(store.lookup_value(ObservableKind::Domain, "evil.example")),
            vec!["evil.example"]
        );
        assert!(store
            .lookup_value(ObservableKind::Domain, "notevil.example")
            .is_empty());
        assert!(store
            .lookup_value(ObservableKind::Domain, "evil.example.org")
            .is_empty());
        // A single label listed in a feed is no wildcard for everything below it.
        assert_eq!(
            values(store.lookup_value(ObservableKind::Domain, "example")),
            vec!["example"]
        );
    }

    #[test]
    fn urls_match_canonically_and_by_host() {
        let mut store = IndicatorStore::new();
        store
            .insert(indicator(ObservableKind::Url, "http://eliece.vip/", None))
            .unwrap();
        store
            .insert(indicator(ObservableKind::Domain, "evil.example", None))
            .unwrap();
        assert!(store.contains(ObservableKind::Url, "HTTP://Eliece.VIP"));
        assert!(store.contains(ObservableKind::Url, "hxxp://eliece[.]vip:80/"));
        assert!(!store.contains(ObservableKind::Url, "http://eliece.vip/other"));
        assert_eq!(
            values(store.lookup_value(ObservableKind::Url, "https://cdn.evil.example/x")),
            vec!["evil.example"]
        );
    }

    #[test]
    fn hashes_and_emails_are_exact() {
        let mut store = IndicatorStore::new();
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        store
            .insert(indicator(ObservableKind::Md5, md5, None))
            .unwrap();
        store
            .insert(indicator(ObservableKind::Email, "bob@evil.example", None))
            .unwrap();
        assert!(store.contains(ObservableKind::Md5, &md5.to_uppercase()));
        assert!(!store.contains(ObservableKind::Sha1, md5));
        assert!(store.contains(ObservableKind::Email, "Bob@Evil.Example"));
        assert!(!store.contains(ObservableKind::Email, "alice@evil.example"));
    }

    #[test]
    fn unindexable_indicators_are_handed_back() {
        let mut store = IndicatorStore::new();
        assert!(store
            .insert(indicator(ObservableKind::Filename, "a.exe", None))
            .is_err());
        assert!(store
            .insert(indicator(ObservableKind::Ip, "a.exe", None))
            .is_err());
        assert!(store.is_empty());
    }

    #[test]
    fn feeds_listing_one_value_are_one_key_with_both_contexts() {
        let mut a = IndicatorStore::new();
        a.insert(indicator(ObservableKind::Domain, "a.example", None))
            .unwrap();
        assert_eq!(
            a.insert(indicator(ObservableKind::Domain, "a.example", None))
                .unwrap(),
            Inserted::Duplicate
        );
        let mut b_indicator = indicator(ObservableKind::Domain, "a.example", None);
        b_indicator.context = Arc::new(IndicatorContext {
            feed: "other".into(),
            ..Default::default()
        });
        let mut b = IndicatorStore::new();
        b.insert(b_indicator).unwrap();
        let store = IndicatorStore::from_stores([a, b]);
        assert_eq!(store.feeds(), ["unit", "other"]);
        assert_eq!(
            (store.len(), store.distinct_values(), store.duplicates()),
            (2, 1, 1)
        );
        let event = Event::from_value(json!({"dns": {"question": {"name": "a.example"}}})).unwrap();
        let matches = store.match_event(&event);
        let feeds: Vec<_> = matches.iter().map(|m| m.feed.as_str()).collect();
        assert_eq!(feeds, vec!["unit", "other"]);
        assert_eq!(matches[0].field, "dns.question.name");
    }

    #[test]
    fn a_url_host_hit_already_found_by_domain_is_not_repeated() {
        let mut store = IndicatorStore::new();
        store
            .insert(indicator(ObservableKind::Domain, "evil.example", None))
            .unwrap();
        let event = Event::from_value(json!({
            "url": {"domain": "evil.example", "full": "http://evil.example/a"}
        }))
        .unwrap();
        let fields: Vec<_> = store
            .matches(&event)
            .iter()
            .map(|h| h.observable.field.clone())
            .collect();
        assert_eq!(fields, vec!["url.domain"]);
        let only_url =
            Event::from_value(json!({"url": {"full": "http://x.evil.example/a"}})).unwrap();
        assert_eq!(store.matches(&only_url).len(), 1);
    }
}
