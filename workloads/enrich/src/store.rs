//! The indicator store: every loaded indicator, indexed so that one observable costs a
//! handful of hash probes whatever the number of indicators.
//!
//! - hashes, e-mail addresses and URLs: exact sets keyed by the normalised value;
//! - domains: an exact set probed with the observable and each of its parent domains
//!   (`a.b.evil.example`, `b.evil.example`, `evil.example`), so a feed's `evil.example`
//!   matches every subdomain; the parents are sub-slices of the observable, so the walk
//!   allocates nothing. The walk stops above the public suffix (the Public Suffix List
//!   of the `psl` crate): a feed's `co.uk` or `com` only ever matches exactly;
//! - addresses: an exact map, then the longest-prefix-match tries of `prefix-trie` for
//!   networks (one per family), which list every network containing the address;
//! - a URL observable is also looked up by its host in the domain set.
//!
//! The same value listed by several feeds or events is one key with several indicators
//! behind it (their contexts merged at lookup); an indicator that repeats one already
//! held (same feed, reference, type and value) is dropped as a duplicate.
//!
//! Memory: a million indicators must fit in a few hundred megabytes, so the store does not
//! keep [`Indicator`]s. Each is a compact [`Stored`] record: its value once (the string
//! indexes hold only the record's position and find the value through it), the feed's
//! spelling only when it differs, the attribute type and the context interned and named
//! by number, and the fields most feeds leave empty in one optional box. An [`Indicator`]
//! is rebuilt only for a hit, which is rare next to the lookups that miss.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use kastell_core::{Event, IntelMatch, Observable, ObservableKind};
use prefix_trie::PrefixMap;

use crate::allowlist::Allowlist;
use crate::indicator::{normalise_hash, normalise_ip, Indicator, IndicatorContext};
use crate::normalise;

/// The end of a chain of indicators sharing one key.
const END: u32 = u32::MAX;

/// The kinds held in string indexes, in the order of [`IndicatorStore::texts`].
const TEXT_KINDS: [ObservableKind; 7] = [
    ObservableKind::Domain,
    ObservableKind::Url,
    ObservableKind::Md5,
    ObservableKind::Sha1,
    ObservableKind::Sha256,
    ObservableKind::Sha512,
    ObservableKind::Email,
];

fn text_slot(kind: ObservableKind) -> Option<usize> {
    TEXT_KINDS.iter().position(|k| *k == kind)
}

/// One indicator as the store holds it (56 bytes plus its value).
#[derive(Debug, Clone)]
struct Stored {
    /// The normalised value, the key of the string indexes.
    value: Box<str>,
    /// The attribute value as the feed wrote it, when that is not `value`.
    original: Option<Box<str>>,
    /// The next indicator with the same key, in insertion order, or [`END`].
    next: u32,
    /// Position in [`IndicatorStore::attribute_types`].
    attribute_type: u32,
    /// Position in [`IndicatorStore::contexts`].
    context: u32,
    kind: ObservableKind,
    /// Whether `value` is the CIDR spelling of the indicator's network, so the network
    /// is read back from it; a network spelled otherwise is kept in `details`.
    network_in_value: bool,
    details: Option<Box<Details>>,
}

/// What MISP and STIX indicators carry and plain lists leave empty.
#[derive(Debug, Clone, Default, PartialEq)]
struct Details {
    network: Option<IpNet>,
    attribute_id: Option<String>,
    port: Option<u16>,
    filename: Option<String>,
    comment: Option<String>,
    tags: Vec<String>,
    first_seen: Option<chrono::DateTime<chrono::Utc>>,
    last_seen: Option<chrono::DateTime<chrono::Utc>>,
    valid_until: Option<chrono::DateTime<chrono::Utc>>,
}

impl Stored {
    fn filename(&self) -> Option<&str> {
        self.details.as_ref()?.filename.as_deref()
    }

    fn port(&self) -> Option<u16> {
        self.details.as_ref()?.port
    }

    fn network(&self) -> Option<IpNet> {
        if self.network_in_value {
            return self.value.parse().ok();
        }
        self.details.as_ref()?.network
    }
}

/// A set of records found by their value: the table holds positions in the record list
/// only, hashed by the record's value, so the value string is stored once.
#[derive(Debug, Default, Clone)]
struct TextIndex {
    table: HashTable<u32>,
}

impl TextIndex {
    fn find(&self, hasher: &DefaultHashBuilder, stored: &[Stored], key: &str) -> Option<u32> {
        let hash = hasher.hash_one(key);
        self.table
            .find(hash, |&i| &*stored[i as usize].value == key)
            .copied()
    }

    /// Adds a key not yet held; `index` must already be in `stored`.
    fn insert(&mut self, hasher: &DefaultHashBuilder, stored: &[Stored], index: u32) {
        let hash = hasher.hash_one(&*stored[index as usize].value);
        self.table.insert_unique(hash, index, |&i| {
            hasher.hash_one(&*stored[i as usize].value)
        });
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// Every indicator of every loaded feed, ready for lookups.
#[derive(Debug, Default)]
pub struct IndicatorStore {
    stored: Vec<Stored>,
    /// Every distinct context, each once; records name theirs by position.
    contexts: Vec<Arc<IndicatorContext>>,
    /// Contexts by the address of their allocation: loaders share one [`Arc`] between
    /// the indicators of a feed or event, and `contexts` keeps it alive so the address
    /// is not reused.
    context_ids: HashMap<usize, u32>,
    attribute_types: Vec<Box<str>>,
    attribute_type_ids: HashMap<Box<str>, u32>,
    feeds: Vec<String>,
    /// foldhash (hashbrown's default): several times faster than SipHash on short keys,
    /// and seeded per process, which is enough for values chosen by feed publishers.
    hasher: DefaultHashBuilder,
    ips: HashMap<IpAddr, u32>,
    v4_networks: PrefixMap<Ipv4Net, u32>,
    v6_networks: PrefixMap<Ipv6Net, u32>,
    texts: [TextIndex; TEXT_KINDS.len()],
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
pub struct Hit {
    pub observable: Observable,
    pub indicator: Indicator,
}

impl Hit {
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

/// Where a record's key lives.
enum Key<'a> {
    Ip(IpAddr),
    V4(Ipv4Net),
    V6(Ipv6Net),
    Text(usize, &'a str),
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
        self.stored.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stored.is_empty()
    }

    /// Every indicator, in load order, each rebuilt from the store's compact form.
    pub fn indicators(&self) -> impl ExactSizeIterator<Item = Indicator> + '_ {
        (0..self.stored.len()).map(|i| self.indicator(i))
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
            + self.texts.iter().map(TextIndex::len).sum::<usize>()
    }

    /// How many indicators of each kind the store holds.
    pub fn count_by_kind(&self) -> BTreeMap<ObservableKind, usize> {
        let mut counts = BTreeMap::new();
        for stored in &self.stored {
            *counts.entry(stored.kind).or_insert(0) += 1;
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
        if u32::try_from(self.stored.len()).map_or(true, |n| n == END)
            || key_of(indicator.kind, &indicator.value, indicator.network).is_none()
        {
            return Err(UnindexableIndicator(Box::new(indicator)));
        }
        let context = self.context_id(&indicator.context);
        let attribute_type = self.attribute_type_id(&indicator.attribute_type);
        let record = compact(indicator, context, attribute_type);
        Ok(self.insert_record(record))
    }

    /// Moves every indicator of another store (another feed) into this one.
    pub fn merge(&mut self, other: IndicatorStore) {
        let empty = self.stored.is_empty() && self.contexts.is_empty() && self.feeds.is_empty();
        if empty && self.allowlist.is_none() {
            // The first store of `from_stores`: taken whole, its indexes as they are.
            let (duplicates, suppressed) = (self.duplicates, self.suppressed);
            *self = other;
            self.allowlist = None;
            self.duplicates += duplicates;
            self.suppressed += suppressed;
            return;
        }
        // Every indicator of a store passed that store's allowlist; this store's own is
        // checked on the rebuilt indicator, as `insert` does.
        let allowed: Vec<bool> = match &self.allowlist {
            Some(list) => (0..other.stored.len())
                .map(|i| !list.covers(&other.indicator(i)))
                .collect(),
            None => Vec::new(),
        };
        let left_out = self.merge_masked(other, &allowed);
        self.suppressed += left_out;
    }

    /// The store without the indicators `keep` refuses, given each indicator's own tags
    /// and its context's (event or report) tags, and how many were left out. Reads the
    /// compact records as they are, so filtering a large feed rebuilds no indicator.
    pub fn retain_by_tags(
        self,
        mut keep: impl FnMut(&[String], &[String]) -> bool,
    ) -> (IndicatorStore, u64) {
        let mask: Vec<bool> = self
            .stored
            .iter()
            .map(|record| {
                let own = record.details.as_ref().map_or(&[][..], |d| &d.tags[..]);
                keep(own, &self.contexts[record.context as usize].tags)
            })
            .collect();
        if mask.iter().all(|kept| *kept) {
            return (self, 0);
        }
        let mut kept = IndicatorStore {
            allowlist: self.allowlist.clone(),
            ..IndicatorStore::default()
        };
        let left_out = kept.merge_masked(self, &mask);
        (kept, left_out)
    }

    /// Moves the records of `other` whose `allowed` entry is true (all when `allowed` is
    /// empty) into this store; returns how many were left out.
    fn merge_masked(&mut self, other: IndicatorStore, allowed: &[bool]) -> u64 {
        let mut left_out = 0;
        self.stored.reserve(other.stored.len());
        let contexts: Vec<u32> = other
            .contexts
            .iter()
            .map(|context| self.context_id(context))
            .collect();
        let types: Vec<u32> = other
            .attribute_types
            .iter()
            .map(|name| self.attribute_type_id(name))
            .collect();
        // Moved, not cloned: merging a large feed must not hold its values twice.
        for (i, mut record) in other.stored.into_iter().enumerate() {
            if !allowed.get(i).copied().unwrap_or(true) {
                left_out += 1;
                continue;
            }
            if self.stored.len() >= END as usize {
                tracing::warn!(value = %record.value, "indicator not merged: the store is full");
                continue;
            }
            record.context = contexts[record.context as usize];
            record.attribute_type = types[record.attribute_type as usize];
            record.next = END;
            self.insert_record(record);
        }
        self.duplicates += other.duplicates;
        self.suppressed += other.suppressed;
        for feed in other.feeds {
            if !self.feeds.contains(&feed) {
                self.feeds.push(feed);
            }
        }
        left_out
    }

    /// A copy of the indicators in a new store (with no allowlist: they passed it).
    pub fn clone_indicators(&self) -> IndicatorStore {
        IndicatorStore {
            stored: self.stored.clone(),
            contexts: self.contexts.clone(),
            context_ids: self.context_ids.clone(),
            attribute_types: self.attribute_types.clone(),
            attribute_type_ids: self.attribute_type_ids.clone(),
            feeds: self.feeds.clone(),
            hasher: self.hasher.clone(),
            ips: self.ips.clone(),
            v4_networks: self.v4_networks.clone(),
            v6_networks: self.v6_networks.clone(),
            texts: self.texts.clone(),
            allowlist: None,
            duplicates: self.duplicates,
            suppressed: self.suppressed,
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

    /// The indicators an observable matches, most specific first: an address's own
    /// indicators then the networks containing it, longest prefix first; a domain's own
    /// then its parents', nearest first; a URL's own then its host's.
    pub fn lookup(&self, observable: &Observable) -> Vec<Indicator> {
        self.lookup_value(observable.kind, &observable.value)
    }

    /// [`lookup`](Self::lookup) by kind and value, without building an [`Observable`].
    pub fn lookup_value(&self, kind: ObservableKind, value: &str) -> Vec<Indicator> {
        let mut out = Vec::new();
        self.for_each_match(kind, value, |i, _| out.push(self.indicator(i as usize)));
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
    pub fn matches(&self, event: &Event) -> Vec<Hit> {
        let mut hits: Vec<Hit> = Vec::new();
        let mut reached: Vec<u32> = Vec::new();
        for observable in event.observables() {
            self.for_each_match(observable.kind, &observable.value, |i, via| {
                if via == Via::UrlHost && reached.contains(&i) {
                    return;
                }
                reached.push(i);
                hits.push(Hit {
                    observable: observable.clone(),
                    indicator: self.indicator(i as usize),
                });
            });
        }
        hits
    }

    /// The event's matches as alerts carry them, each distinct match once.
    pub fn match_event(&self, event: &Event) -> Vec<IntelMatch> {
        distinct_matches(&self.matches(event))
    }

    /// The record at `index` as an [`Indicator`].
    fn indicator(&self, index: usize) -> Indicator {
        let stored = &self.stored[index];
        let details = stored.details.as_deref().cloned().unwrap_or_default();
        Indicator {
            kind: stored.kind,
            value: stored.value.to_string(),
            network: stored.network(),
            attribute_type: self.attribute_types[stored.attribute_type as usize].to_string(),
            attribute_value: stored
                .original
                .as_deref()
                .unwrap_or(&stored.value)
                .to_owned(),
            attribute_id: details.attribute_id,
            port: details.port,
            filename: details.filename,
            comment: details.comment,
            tags: details.tags,
            first_seen: details.first_seen,
            last_seen: details.last_seen,
            valid_until: details.valid_until,
            context: Arc::clone(&self.contexts[stored.context as usize]),
        }
    }

    fn context_id(&mut self, context: &Arc<IndicatorContext>) -> u32 {
        let address = Arc::as_ptr(context) as usize;
        if let Some(&id) = self.context_ids.get(&address) {
            return id;
        }
        let id = u32::try_from(self.contexts.len()).unwrap_or(END);
        if !self.feeds.iter().any(|f| *f == context.feed) {
            self.feeds.push(context.feed.clone());
        }
        self.contexts.push(Arc::clone(context));
        self.context_ids.insert(address, id);
        id
    }

    fn attribute_type_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.attribute_type_ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.attribute_types.len()).unwrap_or(END);
        self.attribute_types.push(name.into());
        self.attribute_type_ids.insert(name.into(), id);
        id
    }

    /// Indexes a record whose key [`key_of`] accepts, unless it repeats one held.
    fn insert_record(&mut self, record: Stored) -> Inserted {
        let index = self.stored.len() as u32;
        let mut tail = None;
        let mut next = self.head(&record);
        while let Some(i) = next {
            let held = &self.stored[i as usize];
            if self.same_source(held, &record) {
                self.duplicates += 1;
                return Inserted::Duplicate;
            }
            tail = Some(i);
            next = (held.next != END).then_some(held.next);
        }
        let key = key_of(record.kind, &record.value, record.network()).map(owned_key);
        self.stored.push(record);
        match tail {
            Some(tail) => self.stored[tail as usize].next = index,
            None => match key {
                Some(OwnedKey::Ip(ip)) => {
                    self.ips.insert(ip, index);
                }
                Some(OwnedKey::V4(net)) => {
                    self.v4_networks.insert(net, index);
                }
                Some(OwnedKey::V6(net)) => {
                    self.v6_networks.insert(net, index);
                }
                Some(OwnedKey::Text(slot)) => {
                    self.texts[slot].insert(&self.hasher, &self.stored, index);
                }
                None => {}
            },
        }
        Inserted::Added
    }

    /// The first record held under the record's key.
    fn head(&self, record: &Stored) -> Option<u32> {
        match key_of(record.kind, &record.value, record.network())? {
            Key::Ip(ip) => self.ips.get(&ip).copied(),
            Key::V4(net) => self.v4_networks.get(&net).copied(),
            Key::V6(net) => self.v6_networks.get(&net).copied(),
            Key::Text(slot, value) => self.texts[slot].find(&self.hasher, &self.stored, value),
        }
    }

    /// Whether two records come from the same place, as [`Indicator::same_source`] says.
    fn same_source(&self, a: &Stored, b: &Stored) -> bool {
        let same_context = a.context == b.context || {
            let (x, y) = (
                &self.contexts[a.context as usize],
                &self.contexts[b.context as usize],
            );
            x.feed == y.feed && x.reference == y.reference
        };
        a.kind == b.kind
            && a.value == b.value
            && a.filename() == b.filename()
            && a.port() == b.port()
            && a.attribute_type == b.attribute_type
            && same_context
    }

    fn for_each_match(&self, kind: ObservableKind, value: &str, mut found: impl FnMut(u32, Via)) {
        let mut emit = |head: u32, via: Via| {
            let mut next = head;
            while next != END {
                found(next, via);
                next = self.stored[next as usize].next;
            }
        };
        match kind {
            ObservableKind::Ip => {
                let Some(ip) = normalise_ip(value) else {
                    return;
                };
                if let Some(&head) = self.ips.get(&ip) {
                    emit(head, Via::Value);
                }
                self.for_each_network(ip, |head| emit(head, Via::Value));
            }
            ObservableKind::Domain => {
                if let Some(name) = normalise::domain(value) {
                    self.for_each_domain(&name, |head| emit(head, Via::Value));
                }
            }
            ObservableKind::Url => {
                let Some(url) = normalise::url(value) else {
                    return;
                };
                if let Some(head) = self.find_text(ObservableKind::Url, url.as_str()) {
                    emit(head, Via::Value);
                }
                if let Some(host) = normalise::url_host(&url) {
                    self.for_each_domain(host, |head| emit(head, Via::UrlHost));
                }
            }
            ObservableKind::Email => {
                if let Some(address) = normalise::email(value) {
                    if let Some(head) = self.find_text(kind, &address) {
                        emit(head, Via::Value);
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
                if let Some(head) = key.and_then(|key| self.find_text(kind, &key)) {
                    emit(head, Via::Value);
                }
            }
            ObservableKind::Filename => {}
        }
    }

    fn find_text(&self, kind: ObservableKind, key: &str) -> Option<u32> {
        let index = &self.texts[text_slot(kind)?];
        index.find(&self.hasher, &self.stored, key)
    }

    /// The domain itself, then each parent down to its registrable domain: a parent
    /// that is a public suffix (`co.uk`, `com`, `github.io`) is never probed, so a feed
    /// listing one does not flag every name under it.
    fn for_each_domain(&self, name: &str, mut emit: impl FnMut(u32)) {
        let domains = &self.texts[0];
        if domains.is_empty() {
            return;
        }
        if let Some(head) = domains.find(&self.hasher, &self.stored, name) {
            emit(head);
        }
        if !name.contains('.') {
            return;
        }
        let suffix = public_suffix_len(name);
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            if parent.len() <= suffix {
                break;
            }
            if let Some(head) = domains.find(&self.hasher, &self.stored, parent) {
                emit(head);
            }
            rest = parent;
        }
    }

    /// Every network containing the address, longest prefix first. The trie walk
    /// allocates nothing; only an address that is in some network pays for the list
    /// that reverses the trie's shortest-first order.
    fn for_each_network(&self, ip: IpAddr, mut emit: impl FnMut(u32)) {
        match ip {
            IpAddr::V4(v4) => {
                let host = Ipv4Net::from(v4);
                if self.v4_networks.get_lpm(&host).is_none() {
                    return;
                }
                let covering: Vec<u32> = self.v4_networks.cover(&host).map(|(_, s)| *s).collect();
                covering.into_iter().rev().for_each(&mut emit);
            }
            IpAddr::V6(v6) => {
                let host = Ipv6Net::from(v6);
                if self.v6_networks.get_lpm(&host).is_none() {
                    return;
                }
                let covering: Vec<u32> = self.v6_networks.cover(&host).map(|(_, s)| *s).collect();
                covering.into_iter().rev().for_each(&mut emit);
            }
        }
    }
}

/// The length of the public suffix a (normalised) domain name ends with, by the Public
/// Suffix List compiled into the `psl` crate (ICANN and private sections; no network).
/// A name under a top-level label the list does not know (`.example`, `.internal`) gets
/// the list's default rule: its last label is the suffix.
fn public_suffix_len(name: &str) -> usize {
    let last_label = name.rsplit('.').next().map_or(0, str::len);
    psl::suffix(name.as_bytes()).map_or(last_label, |suffix| suffix.as_bytes().len())
}

/// A key without the borrow of the record it was read from.
enum OwnedKey {
    Ip(IpAddr),
    V4(Ipv4Net),
    V6(Ipv6Net),
    Text(usize),
}

fn owned_key(key: Key<'_>) -> OwnedKey {
    match key {
        Key::Ip(ip) => OwnedKey::Ip(ip),
        Key::V4(net) => OwnedKey::V4(net),
        Key::V6(net) => OwnedKey::V6(net),
        Key::Text(slot, _) => OwnedKey::Text(slot),
    }
}

/// The index key of an indicator; `None` when the store cannot index it.
fn key_of(kind: ObservableKind, value: &str, network: Option<IpNet>) -> Option<Key<'_>> {
    match (kind, network) {
        (ObservableKind::Ip, Some(IpNet::V4(net))) => Some(Key::V4(net.trunc())),
        (ObservableKind::Ip, Some(IpNet::V6(net))) => Some(Key::V6(net.trunc())),
        (ObservableKind::Ip, None) => value
            .parse::<IpAddr>()
            .ok()
            .map(|ip| Key::Ip(ip.to_canonical())),
        (kind, _) => text_slot(kind).map(|slot| Key::Text(slot, value)),
    }
}

/// The compact record of an indicator whose context and type are already interned.
fn compact(indicator: Indicator, context: u32, attribute_type: u32) -> Stored {
    let network_in_value = indicator
        .network
        .is_some_and(|net| indicator.value.parse::<IpNet>().ok() == Some(net));
    let original =
        (indicator.attribute_value != indicator.value).then(|| indicator.attribute_value.into());
    let details = Details {
        network: indicator.network.filter(|_| !network_in_value),
        attribute_id: indicator.attribute_id,
        port: indicator.port,
        filename: indicator.filename,
        comment: indicator.comment,
        tags: indicator.tags,
        first_seen: indicator.first_seen,
        last_seen: indicator.last_seen,
        valid_until: indicator.valid_until,
    };
    Stored {
        value: indicator.value.into_boxed_str(),
        original,
        next: END,
        attribute_type,
        context,
        kind: indicator.kind,
        network_in_value,
        details: (details != Details::default()).then(|| Box::new(details)),
    }
}

/// The distinct [`IntelMatch`]es of some hits, in hit order. Two attributes of one MISP
/// event with the same type and value give the same match, which is kept once.
pub fn distinct_matches(hits: &[Hit]) -> Vec<IntelMatch> {
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

    fn values(found: Vec<Indicator>) -> Vec<String> {
        found.into_iter().map(|i| i.value).collect()
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
    fn parent_domains_stop_at_the_public_suffix() {
        let mut store = IndicatorStore::new();
        for value in [
            "co.uk",
            "com",
            "github.io",
            "example.co.uk",
            "evil.example.co.uk",
        ] {
            store
                .insert(indicator(ObservableKind::Domain, value, None))
                .unwrap();
        }
        // `co.uk` and `com` are public suffixes: listed, they match only themselves.
        assert!(store
            .lookup_value(ObservableKind::Domain, "other.co.uk")
            .is_empty());
        assert!(store
            .lookup_value(ObservableKind::Domain, "www.shop.com")
            .is_empty());
        assert_eq!(
            values(store.lookup_value(ObservableKind::Domain, "co.uk")),
            vec!["co.uk"]
        );
        // A private-section suffix (GitHub Pages) is a suffix too.
        assert!(store
            .lookup_value(ObservableKind::Domain, "someone.github.io")
            .is_empty());
        // The registrable domain and the names under it still match, nearest first, and
        // a sibling under the same suffix does not.
        assert_eq!(
            values(store.lookup_value(ObservableKind::Domain, "a.evil.example.co.uk")),
            vec!["evil.example.co.uk", "example.co.uk"]
        );
        assert!(store
            .lookup_value(ObservableKind::Domain, "evil.other.co.uk")
            .is_empty());
        assert_eq!(
            values(store.lookup_value(ObservableKind::Url, "https://cdn.example.co.uk/x")),
            vec!["example.co.uk"]
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

    #[test]
    fn an_indicator_comes_back_whole_from_the_compact_form() {
        let mut full = indicator(ObservableKind::Ip, "192.0.2.0/24", Some("192.0.2.0/24"));
        full.attribute_type = "ip-dst|port".into();
        full.attribute_value = "192.0.2.7/24|443".into();
        full.attribute_id = Some("5b1c3e2a-0000-4000-8000-000000000001".into());
        full.port = Some(443);
        full.comment = Some("seen in a phishing run".into());
        full.tags = vec!["tlp:amber".into()];
        full.first_seen = crate::indicator::parse_time("2024-01-02T03:04:05Z");
        full.valid_until = crate::indicator::parse_time("2030-01-01T00:00:00Z");
        // A network whose value does not spell it is kept aside, not re-read from it.
        let mut odd = indicator(ObservableKind::Ip, "10.0.0.0/8", Some("10.0.0.0/8"));
        odd.value = "10.0.0.0/08".into();
        let plain = indicator(ObservableKind::Domain, "evil.example", None);
        let mut store = IndicatorStore::new();
        for one in [&full, &odd, &plain] {
            assert_eq!(store.insert(one.clone()).unwrap(), Inserted::Added);
        }
        let back: Vec<Indicator> = store.indicators().collect();
        assert_eq!(back, vec![full.clone(), odd, plain]);
        let copy = store.clone_indicators();
        assert_eq!(
            copy.lookup_value(ObservableKind::Ip, "192.0.2.9"),
            vec![full]
        );
    }

    #[test]
    fn merged_stores_keep_each_keys_indicators_in_load_order() {
        let context = |feed: &str, reference: &str| {
            Arc::new(IndicatorContext {
                feed: feed.into(),
                reference: Some(reference.into()),
                ..Default::default()
            })
        };
        let md5 = |feed: &str, reference: &str| {
            Indicator::new(
                ObservableKind::Md5,
                "d41d8cd98f00b204e9800998ecf8427e",
                context(feed, reference),
            )
        };
        let mut a = IndicatorStore::new();
        a.insert(md5("a", "e1")).unwrap();
        a.insert(md5("a", "e2")).unwrap();
        let mut b = IndicatorStore::new();
        b.insert(md5("b", "e1")).unwrap();
        b.insert(md5("a", "e2")).unwrap();
        let merged = IndicatorStore::from_stores([a, b]);
        let found: Vec<(String, Option<String>)> = merged
            .lookup_value(ObservableKind::Md5, "D41D8CD98F00B204E9800998ECF8427E")
            .into_iter()
            .map(|i| (i.context.feed.clone(), i.context.reference.clone()))
            .collect();
        let want = [("a", "e1"), ("a", "e2"), ("b", "e1")];
        let want: Vec<(String, Option<String>)> = want
            .iter()
            .map(|(f, r)| ((*f).to_owned(), Some((*r).to_owned())))
            .collect();
        assert_eq!(found, want);
        assert_eq!((merged.len(), merged.duplicates()), (3, 1));
    }

    #[test]
    fn a_stored_indicator_stays_small() {
        // 56 bytes is what keeps a million indicators well under DESIGN.md's 300 MB.
        assert!(
            std::mem::size_of::<Stored>() <= 56,
            "{}",
            std::mem::size_of::<Stored>()
        );
    }

    #[test]
    fn merging_into_an_allowlisted_store_drops_what_the_list_names() {
        let mut feed = IndicatorStore::new();
        for value in ["good.example", "evil.example"] {
            feed.insert(indicator(ObservableKind::Domain, value, None))
                .unwrap();
        }
        let mut allow = Allowlist::new();
        allow.add("good.example", false);
        let mut filtered = IndicatorStore::with_allowlist(Arc::new(allow));
        filtered.merge(feed);
        assert_eq!((filtered.len(), filtered.suppressed()), (1, 1));
        assert!(filtered.contains(ObservableKind::Domain, "evil.example"));
        assert!(!filtered.contains(ObservableKind::Domain, "good.example"));
        assert_eq!(filtered.feeds(), ["unit"]);
    }
}
