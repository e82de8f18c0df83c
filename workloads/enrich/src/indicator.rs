//! Indicators: one matchable value from a threat-intel feed, in normalised form, with the
//! context an analyst needs to judge a match (feed, MISP event, tags, threat level).
//!
//! This module also owns normalisation, so that a feed's value and an event's observable
//! are brought to the same spelling by the same functions before they are compared.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

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
    pub context: Arc<IndicatorContext>,
}

impl Indicator {
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
    lower_domain(raw.trim()).map(Cow::into_owned)
}

/// Lower-cases and drops one trailing dot, borrowing when the value is already in form;
/// lookups call this for every domain observable.
fn lower_domain(raw: &str) -> Option<Cow<'_, str>> {
    let value = raw.strip_suffix('.').unwrap_or(raw);
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | ':' | '@'))
    {
        return None;
    }
    if value.chars().any(char::is_uppercase) {
        Some(Cow::Owned(value.to_lowercase()))
    } else {
        Some(Cow::Borrowed(value))
    }
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
    lower_email(raw.trim()).map(Cow::into_owned)
}

fn lower_email(raw: &str) -> Option<Cow<'_, str>> {
    let (local, domain) = raw.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || raw.chars().any(char::is_whitespace) {
        return None;
    }
    if raw.chars().any(char::is_uppercase) {
        Some(Cow::Owned(raw.to_lowercase()))
    } else {
        Some(Cow::Borrowed(raw))
    }
}

/// URLs are matched exactly as written, only trimmed of surrounding whitespace.
pub fn normalise_url(raw: &str) -> Option<String> {
    let value = raw.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// Brings an observable's value to the spelling the store keys by, borrowing when it is
/// already in that form. `None` when the value cannot be of that kind. IP observables are
/// parsed by the store itself.
pub fn normalise_observable(kind: ObservableKind, value: &str) -> Option<Cow<'_, str>> {
    match kind {
        ObservableKind::Domain => lower_domain(value),
        ObservableKind::Md5
        | ObservableKind::Sha1
        | ObservableKind::Sha256
        | ObservableKind::Sha512 => lower_hash(kind, value),
        ObservableKind::Email => lower_email(value),
        ObservableKind::Url | ObservableKind::Filename => {
            (!value.is_empty()).then_some(Cow::Borrowed(value))
        }
        ObservableKind::Ip => normalise_ip(value).map(|ip| Cow::Owned(ip.to_string())),
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
