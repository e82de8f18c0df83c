//! Indicators: one matchable value from a threat-intel feed, in normalised form, with the
//! context an analyst needs to judge a match (feed, MISP event, tags, threat level).
//!
//! This module also owns normalisation, so that a feed's value and an event's observable
//! are brought to the same spelling by the same functions before they are compared.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use kastell_core::{Level, ObservableKind};

/// MISP's threat levels (`threat_level_id` 1 to 4) of the event an indicator belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum ThreatLevel {
    High,
    Medium,
    Low,
    /// MISP's "undefined" (4), also used when a feed gives no threat level.
    #[default]
    Undefined,
}

impl ThreatLevel {
    /// Reads MISP's `threat_level_id`; anything outside 1 to 4 is not a threat level.
    pub fn from_id(id: u64) -> Option<Self> {
        match id {
            1 => Some(Self::High),
            2 => Some(Self::Medium),
            3 => Some(Self::Low),
            4 => Some(Self::Undefined),
            _ => None,
        }
    }

    /// The alert level an intel-only alert gets: 1 → high, 2 → medium, 3 → low,
    /// 4 → informational.
    pub fn level(self) -> Level {
        match self {
            Self::High => Level::High,
            Self::Medium => Level::Medium,
            Self::Low => Level::Low,
            Self::Undefined => Level::Informational,
        }
    }
}

/// What every indicator of one MISP event shares. Held behind an [`Arc`] so a feed of a
/// million attributes in a few events keeps one copy of it per event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndicatorContext {
    /// The IntelFeed resource the indicator was loaded from.
    pub feed: String,
    /// The MISP event uuid.
    pub reference: Option<String>,
    /// The MISP event's `info` line.
    pub info: Option<String>,
    /// The MISP event's `date` (`YYYY-MM-DD`).
    pub date: Option<String>,
    /// The creating organisation (`Orgc.name`).
    pub organisation: Option<String>,
    pub threat_level: ThreatLevel,
    /// Event tags, then the tags of the event's galaxy clusters, without duplicates.
    pub tags: Vec<String>,
    /// MITRE ATT&CK technique ids (`T1566.001`) from galaxy clusters, tags or STIX kill
    /// chains of the event or report.
    pub techniques: Vec<String>,
}

/// One indicator: a normalised value of a kind that event observables can equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indicator {
    /// The kind of observable this indicator matches.
    pub kind: ObservableKind,
    /// The normalised value observables are compared with; a network in CIDR form.
    pub value: String,
    /// Set when the indicator is an address range rather than one address.
    pub network: Option<IpNet>,
    /// The MISP attribute type, e.g. `ip-dst|port` or `filename|sha256`.
    pub attribute_type: String,
    /// The attribute value exactly as the feed wrote it.
    pub attribute_value: String,
    /// The MISP attribute uuid.
    pub attribute_id: Option<String>,
    /// The port of an `ip-src|port` / `ip-dst|port` attribute (context only, not matched).
    pub port: Option<u16>,
    /// The file name of a `filename|<hash>` attribute (context only, not matched).
    pub filename: Option<String>,
    /// The attribute's comment; TweetFeed puts the source tweet's URL there.
    pub comment: Option<String>,
    /// Tags set on the attribute itself (and its galaxy clusters).
    pub tags: Vec<String>,
    /// When the indicator was first and last seen active (MISP `first_seen` /
    /// `last_seen`, STIX `valid_from`); a `last_seen` before `first_seen` is dropped.
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    /// After this the indicator should no longer match (STIX `valid_until`).
    pub valid_until: Option<DateTime<Utc>>,
    pub context: Arc<IndicatorContext>,
}

impl Indicator {
    /// An indicator of an already normalised value, described by that value alone; the
    /// loaders fill in what their source says about it.
    pub fn new(
        kind: ObservableKind,
        value: impl Into<String>,
        context: Arc<IndicatorContext>,
    ) -> Self {
        let value = value.into();
        Indicator {
            kind,
            attribute_type: kind.as_str().to_owned(),
            attribute_value: value.clone(),
            value,
            network: None,
            attribute_id: None,
            port: None,
            filename: None,
            comment: None,
            tags: Vec::new(),
            first_seen: None,
            last_seen: None,
            valid_until: None,
            context,
        }
    }

    /// Whether the two come from the same place: same feed, event or report, type,
    /// value and composite context (a feed listing one attribute twice). One hash under
    /// two file names is two indicators: the names are worth keeping.
    pub fn same_source(&self, other: &Indicator) -> bool {
        self.kind == other.kind
            && self.value == other.value
            && self.filename == other.filename
            && self.port == other.port
            && self.attribute_type == other.attribute_type
            && self.context.feed == other.context.feed
            && self.context.reference == other.context.reference
    }

    /// Whether the indicator has expired at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.valid_until.is_some_and(|until| until <= now)
    }
    /// The IntelFeed resource the indicator came from.
    pub fn feed(&self) -> &str {
        &self.context.feed
    }

    /// Event tags followed by attribute tags, each once.
    pub fn all_tags(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(self.context.tags.len() + self.tags.len());
        for tag in self.context.tags.iter().chain(&self.tags) {
            if !out.contains(tag) {
                out.push(tag.clone());
            }
        }
        out
    }

    /// The TLP marking: an attribute's own `tlp:` tag wins over its event's.
    pub fn tlp(&self) -> Option<&str> {
        let tlp_of = |tags: &'_ [String]| -> Option<usize> {
            // `get` rather than slicing: a tag may start with a multi-byte character.
            tags.iter().position(|t| {
                t.len() > 4 && t.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("tlp:"))
            })
        };
        if let Some(i) = tlp_of(&self.tags) {
            return Some(&self.tags[i][4..]);
        }
        tlp_of(&self.context.tags).map(|i| &self.context.tags[i][4..])
    }

    /// The alert level a match on this indicator alone deserves.
    pub fn level(&self) -> Level {
        self.context.threat_level.level()
    }

    /// The indicator as its feed wrote it: `<attribute type>=<attribute value>`.
    pub fn describe(&self) -> String {
        format!("{}={}", self.attribute_type, self.attribute_value)
    }
}

/// Parses an address into its canonical form: IPv4-mapped IPv6 addresses become IPv4, so
/// `::ffff:192.0.2.1` and `192.0.2.1` are the same observable.
pub fn normalise_ip(raw: &str) -> Option<IpAddr> {
    raw.trim()
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

/// An address or a CIDR network. A network with host bits set is truncated to its
/// network address; a /32 or /128 is one address.
pub fn normalise_ip_or_network(raw: &str) -> Option<IpOrNetwork> {
    let raw = raw.trim();
    if !raw.contains('/') {
        return normalise_ip(raw).map(IpOrNetwork::Ip);
    }
    let net: IpNet = raw.parse().ok()?;
    let net = net.trunc();
    if net.prefix_len() == net.max_prefix_len() {
        return Some(IpOrNetwork::Ip(net.addr().to_canonical()));
    }
    Some(IpOrNetwork::Network(net))
}

/// An address or network read from a feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpOrNetwork {
    Ip(IpAddr),
    Network(IpNet),
}

/// Domains compare case-insensitively and without the root's trailing dot. A value with
/// whitespace, a slash, a colon or an `@` is not a domain (it is a URL, an address with
/// a port or an e-mail address that was filed under the wrong type).
pub fn normalise_domain(raw: &str) -> Option<String> {
    crate::normalise::domain(raw).map(Cow::into_owned)
}

/// The hex length each hash kind must have.
pub fn hash_len(kind: ObservableKind) -> Option<usize> {
    match kind {
        ObservableKind::Md5 => Some(32),
        ObservableKind::Sha1 => Some(40),
        ObservableKind::Sha256 => Some(64),
        ObservableKind::Sha512 => Some(128),
        _ => None,
    }
}

/// Hashes are hex of the kind's length, compared lower-case.
pub fn normalise_hash(kind: ObservableKind, raw: &str) -> Option<String> {
    lower_hash(kind, raw.trim()).map(Cow::into_owned)
}

fn lower_hash(kind: ObservableKind, raw: &str) -> Option<Cow<'_, str>> {
    let len = hash_len(kind)?;
    if raw.len() != len || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(raw.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(raw))
    }
}

/// E-mail addresses compare lower-case; in practice mail systems treat the local part
/// case-insensitively too.
pub fn normalise_email(raw: &str) -> Option<String> {
    crate::normalise::email(raw).map(Cow::into_owned)
}

/// URLs are compared in canonical form (see [`crate::normalise::url`]).
pub fn normalise_url(raw: &str) -> Option<String> {
    crate::normalise::url_text(raw)
}

/// Brings an observable's value to the spelling the store keys by, borrowing when it is
/// already in that form. `None` when the value cannot be of that kind. IP observables are
/// parsed by the store itself.
pub fn normalise_observable(kind: ObservableKind, value: &str) -> Option<Cow<'_, str>> {
    match kind {
        ObservableKind::Domain => crate::normalise::domain(value),
        ObservableKind::Md5
        | ObservableKind::Sha1
        | ObservableKind::Sha256
        | ObservableKind::Sha512 => lower_hash(kind, value),
        ObservableKind::Email => crate::normalise::email(value),
        ObservableKind::Url => crate::normalise::url_text(value).map(Cow::Owned),
        ObservableKind::Filename => (!value.is_empty()).then_some(Cow::Borrowed(value)),
        ObservableKind::Ip => normalise_ip(value).map(|ip| Cow::Owned(ip.to_string())),
    }
}

/// The MITRE ATT&CK technique ids named in some texts: galaxy tags such as
/// `misp-galaxy:mitre-attack-pattern="Phishing - T1566"`, external ids, kill-chain
/// phases. Each id once, in order of appearance.
pub fn attack_techniques<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for text in texts {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let at_word_start = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
            let digits = |from: usize, n: usize| {
                bytes.len() >= from + n && bytes[from..from + n].iter().all(u8::is_ascii_digit)
            };
            if at_word_start && bytes[i] == b'T' && digits(i + 1, 4) {
                let mut end = i + 5;
                if bytes.get(end) == Some(&b'.') && digits(end + 1, 3) {
                    end += 4;
                }
                let followed_by_word = bytes.get(end).is_some_and(u8::is_ascii_alphanumeric);
                if !followed_by_word {
                    let id = &text[i..end];
                    if !out.iter().any(|t| t == id) {
                        out.push(id.to_owned());
                    }
                }
                i = end;
            } else {
                i += 1;
            }
        }
    }
    out
}

/// A feed's timestamp: RFC 3339, a plain `YYYY-MM-DD HH:MM:SS` (UTC), or epoch seconds
/// (MISP writes both). `"0"`, an empty string and anything unreadable mean "not set".
pub fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if raw.is_empty() || raw == "0" {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S") {
        return Some(t.and_utc());
    }
    let seconds: i64 = raw.parse().ok().filter(|s| *s > 0)?;
    DateTime::from_timestamp(seconds, 0)
}

/// First and last seen as a feed wrote them; a `last_seen` earlier than `first_seen`
/// is a producer's mistake and is dropped, keeping the more trustworthy first sighting.
pub fn seen_window(
    first: Option<&str>,
    last: Option<&str>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let first = first.and_then(parse_time);
    let last = last.and_then(parse_time);
    match (first, last) {
        (Some(f), Some(l)) if l < f => {
            tracing::debug!(first_seen = %f, last_seen = %l, "last_seen before first_seen dropped");
            (Some(f), None)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_canonical() {
        assert_eq!(
            normalise_ip(" 2001:DB8:0::1 ").unwrap().to_string(),
            "2001:db8::1"
        );
        assert_eq!(
            normalise_ip("::ffff:192.0.2.7").unwrap().to_string(),
            "192.0.2.7"
        );
        // Leading zeros are ambiguous (octal in some parsers), so they are refused.
        assert_eq!(normalise_ip("010.1.1.1"), None);
    }

    #[test]
    fn networks_are_truncated_and_host_routes_are_addresses() {
        assert_eq!(
            normalise_ip_or_network("192.0.2.77/24"),
            Some(IpOrNetwork::Network("192.0.2.0/24".parse().unwrap()))
        );
        assert_eq!(
            normalise_ip_or_network("192.0.2.77/32"),
            Some(IpOrNetwork::Ip("192.0.2.77".parse().unwrap()))
        );
        assert_eq!(normalise_ip_or_network("192.0.2.0/33"), None);
    }

    #[test]
    fn domains_are_lower_case_without_root_dot() {
        assert_eq!(
            normalise_domain("Evil.Example.COM.").as_deref(),
            Some("evil.example.com")
        );
        assert_eq!(normalise_domain("http://evil.example"), None);
        assert_eq!(normalise_domain("evil.example:443"), None);
        assert_eq!(normalise_domain("."), None);
    }

    #[test]
    fn hashes_must_be_hex_of_their_length() {
        let md5 = "D41D8CD98F00B204E9800998ECF8427E";
        assert_eq!(
            normalise_hash(ObservableKind::Md5, md5).as_deref(),
            Some("d41d8cd98f00b204e9800998ecf8427e")
        );
        assert_eq!(normalise_hash(ObservableKind::Sha1, md5), None);
        assert_eq!(
            normalise_hash(ObservableKind::Md5, &md5.replace('D', "x")),
            None
        );
    }

    #[test]
    fn lookups_borrow_values_already_in_form() {
        let v = "evil.example";
        assert!(matches!(
            normalise_observable(ObservableKind::Domain, v),
            Some(Cow::Borrowed(_))
        ));
        assert!(matches!(
            normalise_observable(ObservableKind::Domain, "Evil.example"),
            Some(Cow::Owned(_))
        ));
    }

    #[test]
    fn the_attribute_tlp_wins_and_odd_tags_are_no_tlp() {
        let mut indicator = Indicator {
            kind: ObservableKind::Domain,
            value: "evil.example".into(),
            network: None,
            attribute_type: "domain".into(),
            attribute_value: "evil.example".into(),
            attribute_id: None,
            port: None,
            filename: None,
            comment: None,
            tags: vec!["tl€p:red".into(), "tlp:".into()],
            first_seen: None,
            last_seen: None,
            valid_until: None,
            context: Arc::new(IndicatorContext {
                tags: vec!["TLP:AMBER".into()],
                ..IndicatorContext::default()
            }),
        };
        assert_eq!(indicator.tlp(), Some("AMBER"));
        indicator.tags.push("tlp:red".into());
        assert_eq!(indicator.tlp(), Some("red"));
    }

    #[test]
    fn techniques_are_read_from_tags_and_ids() {
        let tags = [
            "misp-galaxy:mitre-attack-pattern=\"Spearphishing Attachment - T1193\"",
            "T1566.001",
            "mitre-attack:T1193",
            "NOT1234X",
            "T12345",
        ];
        assert_eq!(attack_techniques(tags), vec!["T1193", "T1566.001"]);
    }

    #[test]
    fn seen_times_accept_both_spellings_and_drop_nonsense() {
        let (first, last) = seen_window(Some("2024-01-02T03:04:05.000000+00:00"), Some("0"));
        assert_eq!(first.map(|t| t.timestamp()), Some(1_704_164_645));
        assert_eq!(last, None);
        let (first, last) = seen_window(Some("1704164645"), Some("2023-01-01T00:00:00Z"));
        assert!(first.is_some());
        assert_eq!(last, None, "a last_seen before first_seen is dropped");
        let (_, last) = seen_window(Some("2023-01-01 00:00:00"), Some("2024-01-01T00:00:00Z"));
        assert!(last.is_some());
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn threat_levels_map_to_alert_levels() {
        let levels: Vec<_> = (0..=5)
            .map(|id| ThreatLevel::from_id(id).map(ThreatLevel::level))
            .collect();
        assert_eq!(
            levels,
            vec![
                None,
                Some(Level::High),
                Some(Level::Medium),
                Some(Level::Low),
                Some(Level::Informational),
                None
            ]
        );
    }
}
