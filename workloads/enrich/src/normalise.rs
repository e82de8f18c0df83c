//! Normalisation: every feed value and every event observable is brought to one spelling
//! by these functions before the two are compared.
//!
//! - [`refang`] undoes the defanging analysts apply so a value cannot be clicked
//!   (`hxxp://evil[.]example`, `user[@]evil(dot)example`);
//! - domains are lower-cased and international names turned into punycode (`idna`);
//! - URLs are canonicalised by the `url` crate (WHATWG URL parsing: scheme and host
//!   lower-cased, default port dropped, empty path made `/`, fragment removed);
//! - addresses and CIDR networks for IPv4 and IPv6;
//! - composite MISP attributes split on their last `|`;
//! - the hash kind guessed from the length of a hex string.

use std::borrow::Cow;

use idna::AsciiDenyList;
use ipnet::IpNet;
use kastell_core::ObservableKind;
use url::Url;

use crate::indicator::{normalise_hash, normalise_ip_or_network, IpOrNetwork};

/// Defanging notations and what they stand for, matched case-insensitively. Brackets
/// around a separator are the usual form; the bare words only inside brackets, so a
/// domain such as `dotnet.example` is left alone.
const BRACKETED: &[(&str, &str)] = &[
    ("[.]", "."),
    ("(.)", "."),
    ("{.}", "."),
    ("[dot]", "."),
    ("(dot)", "."),
    ("{dot}", "."),
    ("[@]", "@"),
    ("(@)", "@"),
    ("{@}", "@"),
    ("[at]", "@"),
    ("(at)", "@"),
    ("{at}", "@"),
    ("[:]", ":"),
    ("[://]", "://"),
    ("[/]", "/"),
    ("[:/]", ":/"),
];

/// Defanged schemes, matched at the start of a value, case-insensitively.
const SCHEMES: &[(&str, &str)] = &[
    ("hxxps", "https"),
    ("hxxp", "http"),
    ("hxtps", "https"),
    ("hxtp", "http"),
    ("hxps", "https"),
    ("hxp", "http"),
    ("fxp", "ftp"),
    ("meows", "https"),
    ("meow", "http"),
];

/// Undoes defanging. A value with nothing defanged is returned borrowed.
///
/// Backslashes are only touched in the `evil\.example` notation, and only when every
/// backslash of the value is followed by a dot: `C:\Users\a.exe` or a registry key keep
/// theirs, since there a backslash is part of the value.
pub fn refang(raw: &str) -> Cow<'_, str> {
    let trimmed = raw.trim();
    let needs_work = trimmed.contains(['[', '(', '{', '\\'])
        || SCHEMES
            .iter()
            .any(|(from, _)| starts_with_ignore_case(trimmed, from));
    if !needs_work {
        return Cow::Borrowed(trimmed);
    }
    let mut out = String::with_capacity(trimmed.len());
    let mut rest = trimmed;
    if let Some((from, to)) = SCHEMES
        .iter()
        .find(|(from, _)| starts_with_ignore_case(rest, from) && is_scheme_end(&rest[from.len()..]))
    {
        out.push_str(to);
        rest = &rest[from.len()..];
    }
    let backslash_dots_only = rest
        .match_indices('\\')
        .all(|(i, _)| rest[i + 1..].starts_with('.'));
    'outer: while !rest.is_empty() {
        for (from, to) in BRACKETED {
            if starts_with_ignore_case(rest, from) {
                out.push_str(to);
                rest = &rest[from.len()..];
                continue 'outer;
            }
        }
        if backslash_dots_only && rest.starts_with("\\.") {
            out.push('.');
            rest = &rest[2..];
            continue;
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    if out == trimmed {
        Cow::Borrowed(trimmed)
    } else {
        Cow::Owned(out)
    }
}

/// What follows a defanged scheme must be the rest of a URL (`://`, `[://]`, `[:]//`),
/// so a domain that merely starts with `hxp` is not rewritten.
fn is_scheme_end(rest: &str) -> bool {
    rest.starts_with("://") || rest.starts_with("[:") || rest.starts_with("[://]")
}

fn starts_with_ignore_case(haystack: &str, prefix: &str) -> bool {
    haystack
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// A domain in the form the store keys by: refanged, without the root's trailing dot,
/// lower-case ASCII, international labels in punycode (`bücher.example` →
/// `xn--bcher-kva.example`). `None` for anything that is not a host name (whitespace,
/// `/`, `:`, `@`, or a name IDNA refuses).
///
/// A value already in that form is returned borrowed, so lookups of ordinary DNS names
/// do not allocate.
pub fn domain(raw: &str) -> Option<Cow<'_, str>> {
    let value = refang(raw);
    let stripped = match &value {
        Cow::Borrowed(v) => Cow::Borrowed(v.strip_suffix('.').unwrap_or(v)),
        Cow::Owned(v) => Cow::Owned(v.strip_suffix('.').unwrap_or(v).to_owned()),
    };
    let text = stripped.as_ref();
    if text.is_empty()
        || text.starts_with('.')
        || text.contains("..")
        || text
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | ':' | '@' | '\\'))
    {
        return None;
    }
    if text
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_'))
        && !text.contains("xn--")
    {
        return Some(stripped);
    }
    // Underscores occur in real DNS names (`_ldap._tcp`), so no ASCII character is
    // denied; punycode labels are checked by the same call.
    let ascii = idna::domain_to_ascii_cow(text.as_bytes(), AsciiDenyList::EMPTY).ok()?;
    if ascii.is_empty() {
        return None;
    }
    Some(Cow::Owned(ascii.into_owned()))
}

/// An e-mail address: refanged, lower-cased, the domain part in punycode.
pub fn email(raw: &str) -> Option<Cow<'_, str>> {
    let value = refang(raw);
    let rewritten = {
        let (local, host) = value.rsplit_once('@')?;
        if local.is_empty() || value.chars().any(char::is_whitespace) {
            return None;
        }
        let normal_host = domain(host)?;
        let in_form = normal_host.as_ref() == host && !local.chars().any(char::is_uppercase);
        (!in_form).then(|| format!("{}@{}", local.to_lowercase(), normal_host))
    };
    match rewritten {
        Some(owned) => Some(Cow::Owned(owned)),
        None => Some(value),
    }
}

/// A URL in canonical form. A value without a scheme is read as `http://`, as browsers
/// and proxies log it. `None` when it does not parse or names no host.
pub fn url(raw: &str) -> Option<Url> {
    let value = refang(raw);
    let value = value.as_ref();
    if value.is_empty() || value.chars().any(char::is_whitespace) {
        return None;
    }
    let parsed = match Url::parse(value) {
        Ok(url) => url,
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            Url::parse(&format!("http://{value}")).ok()?
        }
        Err(_) => return None,
    };
    let mut parsed = parsed;
    parsed.host_str().filter(|h| !h.is_empty())?;
    parsed.set_fragment(None);
    Some(parsed)
}

/// The canonical text of a URL (see [`url`]).
pub fn url_text(raw: &str) -> Option<String> {
    url(raw).map(String::from)
}

/// The host of a URL as the domain index keys it: punycode, lower-case; `None` for
/// an address host.
pub fn url_host(url: &Url) -> Option<&str> {
    match url.host()? {
        url::Host::Domain(host) => Some(host.strip_suffix('.').unwrap_or(host)),
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => None,
    }
}

/// An address or network, after refanging (`192.0.2[.]1`).
pub fn ip_or_network(raw: &str) -> Option<IpOrNetwork> {
    normalise_ip_or_network(&refang(raw))
}

/// The hash kind a hex string's length says: 32 md5, 40 sha1, 64 sha256, 128 sha512.
pub fn hash_kind(raw: &str) -> Option<ObservableKind> {
    let raw = raw.trim();
    if !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match raw.len() {
        32 => Some(ObservableKind::Md5),
        40 => Some(ObservableKind::Sha1),
        64 => Some(ObservableKind::Sha256),
        128 => Some(ObservableKind::Sha512),
        _ => None,
    }
}

/// One value read from a feed: its kind and the normalised text the store keys it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    pub kind: ObservableKind,
    pub value: String,
    /// Set for an address range.
    pub network: Option<IpNet>,
}

impl Normalised {
    fn new(kind: ObservableKind, value: impl Into<String>) -> Self {
        Normalised {
            kind,
            value: value.into(),
            network: None,
        }
    }
}

/// Normalises a value of a known kind.
pub fn value_of_kind(kind: ObservableKind, raw: &str) -> Option<Normalised> {
    match kind {
        ObservableKind::Ip => Some(match ip_or_network(raw)? {
            IpOrNetwork::Ip(ip) => Normalised::new(kind, ip.to_string()),
            IpOrNetwork::Network(net) => Normalised {
                kind,
                value: net.to_string(),
                network: Some(net),
            },
        }),
        ObservableKind::Domain => domain(raw).map(|d| Normalised::new(kind, d.into_owned())),
        ObservableKind::Url => url_text(raw).map(|u| Normalised::new(kind, u)),
        ObservableKind::Email => email(raw).map(|e| Normalised::new(kind, e.into_owned())),
        ObservableKind::Md5
        | ObservableKind::Sha1
        | ObservableKind::Sha256
        | ObservableKind::Sha512 => normalise_hash(kind, raw).map(|h| Normalised::new(kind, h)),
        ObservableKind::Filename => None,
    }
}

/// Guesses the kind of a bare token from a freetext or plain-list feed, after
/// refanging: an address or network, a URL (has `://`), an e-mail address, a hash by
/// its length, else a domain whose last label is alphabetic or punycode.
pub fn guess(raw: &str) -> Option<Normalised> {
    let value = refang(raw);
    let value = value.as_ref();
    if value.is_empty() {
        return None;
    }
    if let Some(found) = value_of_kind(ObservableKind::Ip, value) {
        return Some(found);
    }
    if value.contains("://") {
        return value_of_kind(ObservableKind::Url, value);
    }
    if value.contains('@') {
        return value_of_kind(ObservableKind::Email, value);
    }
    if let Some(kind) = hash_kind(value) {
        return value_of_kind(kind, value);
    }
    if let Some((host, _)) = value.split_once('/') {
        // A URL without its scheme only when what precedes the path is a host a feed
        // would list (`evil.example/a`, `192.0.2.1:8080/x`): prose has `and/or`.
        let host = match host.rsplit_once(':') {
            Some((name, port))
                if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name
            }
            _ => host,
        };
        let host_kind = guess(host).map(|found| found.kind);
        if !matches!(host_kind, Some(ObservableKind::Ip | ObservableKind::Domain)) {
            return None;
        }
        return value_of_kind(ObservableKind::Url, value);
    }
    let name = domain(value)?;
    let tld = name.rsplit('.').next()?;
    let plausible = name.contains('.')
        && (tld.starts_with("xn--")
            || (tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic())));
    plausible.then(|| Normalised::new(ObservableKind::Domain, name.into_owned()))
}

/// A composite MISP value split on its **last** `|`: a file name may contain `|`, a hash,
/// port or address never does. `None` when there is no `|`.
pub fn split_composite(value: &str) -> Option<(&str, &str)> {
    value.rsplit_once('|')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_makes_a_url_only_after_a_plausible_host() {
        for url in [
            "evil.example/a",
            "192.0.2.1:8080/x",
            "hxxp://evil[.]example/a",
        ] {
            assert_eq!(
                guess(url).map(|g| g.kind),
                Some(ObservableKind::Url),
                "{url}"
            );
        }
        for prose in ["and/or", "TCP/IP", "1/2", "N/A"] {
            assert_eq!(guess(prose), None, "{prose}");
        }
    }

    #[test]
    fn refang_undoes_the_common_notations() {
        let cases = [
            ("hxxp://evil[.]example/a", "http://evil.example/a"),
            ("hXXps[:]//evil(dot)example", "https://evil.example"),
            ("hxxps[://]evil{.}example", "https://evil.example"),
            ("user[@]evil[.]example", "user@evil.example"),
            ("user(at)evil(DOT)example", "user@evil.example"),
            ("192.0.2[.]1", "192.0.2.1"),
            ("evil\\.example\\.com", "evil.example.com"),
            ("fxp://files[.]example", "ftp://files.example"),
            ("  evil.example  ", "evil.example"),
        ];
        for (raw, want) in cases {
            assert_eq!(refang(raw), want, "{raw}");
        }
    }

    #[test]
    fn refang_keeps_legitimate_backslashes_and_lookalike_words() {
        assert_eq!(refang("C:\\Users\\a.exe"), "C:\\Users\\a.exe");
        assert_eq!(refang("HKLM\\Software\\.x"), "HKLM\\Software\\.x");
        assert_eq!(refang("dotnet.example"), "dotnet.example");
        assert_eq!(refang("hxpfarm.example"), "hxpfarm.example");
        assert!(matches!(refang("evil.example"), Cow::Borrowed(_)));
    }

    #[test]
    fn domains_become_lower_case_punycode() {
        assert_eq!(
            domain("Evil.Example.COM.").as_deref(),
            Some("evil.example.com")
        );
        assert_eq!(
            domain("bücher.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(
            domain("BÜCHER.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(
            domain("xn--bcher-kva.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(domain("evil[.]example").as_deref(), Some("evil.example"));
        assert_eq!(
            domain("_ldap._tcp.dc.example").as_deref(),
            Some("_ldap._tcp.dc.example")
        );
        assert!(matches!(domain("evil.example"), Some(Cow::Borrowed(_))));
        for bad in [
            "http://evil.example",
            "evil.example:443",
            ".",
            "",
            "a..b",
            "a b.example",
        ] {
            assert_eq!(domain(bad), None, "{bad}");
        }
    }

    #[test]
    fn emails_are_refanged_and_lower_cased_with_a_punycode_domain() {
        assert_eq!(
            email("Bob[@]Evil[.]Example").as_deref(),
            Some("bob@evil.example")
        );
        assert_eq!(
            email("a@bücher.example").as_deref(),
            Some("a@xn--bcher-kva.example")
        );
        assert!(matches!(email("a@evil.example"), Some(Cow::Borrowed(_))));
        assert_eq!(email("nobody"), None);
        assert_eq!(email("@evil.example"), None);
    }

    #[test]
    fn urls_are_canonical() {
        let cases = [
            ("http://eliece.vip", "http://eliece.vip/"),
            ("HTTP://Evil.Example:80/a#frag", "http://evil.example/a"),
            (
                "hxxps://evil[.]example:443/x?y=1",
                "https://evil.example/x?y=1",
            ),
            ("evil.example/path", "http://evil.example/path"),
            ("http://bücher.example/", "http://xn--bcher-kva.example/"),
            ("http://[2001:DB8::1]/", "http://[2001:db8::1]/"),
        ];
        for (raw, want) in cases {
            assert_eq!(url_text(raw).as_deref(), Some(want), "{raw}");
        }
        assert_eq!(url_text("not a url"), None);
        assert_eq!(url_text("mailto:a@b.example"), None);
        let parsed = url("http://Sub.Evil.Example./x").unwrap();
        assert_eq!(url_host(&parsed), Some("sub.evil.example"));
        assert_eq!(url_host(&url("http://192.0.2.1/").unwrap()), None);
    }

    #[test]
    fn ranges_for_both_families() {
        assert_eq!(
            value_of_kind(ObservableKind::Ip, "2001:db8::77/32").map(|n| n.value),
            Some("2001:db8::/32".to_owned())
        );
        let net = value_of_kind(ObservableKind::Ip, "198.51.100[.]7/24").unwrap();
        assert_eq!(net.value, "198.51.100.0/24");
        assert!(net.network.is_some());
    }

    #[test]
    fn hash_kind_by_length() {
        assert_eq!(hash_kind(&"a".repeat(32)), Some(ObservableKind::Md5));
        assert_eq!(hash_kind(&"A".repeat(40)), Some(ObservableKind::Sha1));
        assert_eq!(hash_kind(&"0".repeat(64)), Some(ObservableKind::Sha256));
        assert_eq!(hash_kind(&"f".repeat(128)), Some(ObservableKind::Sha512));
        assert_eq!(hash_kind(&"a".repeat(33)), None);
        assert_eq!(hash_kind(&"g".repeat(32)), None);
    }

    #[test]
    fn freetext_tokens_are_typed() {
        let kind = |t: &str| guess(t).map(|n| (n.kind, n.value));
        assert_eq!(
            kind("8.8.8.8"),
            Some((ObservableKind::Ip, "8.8.8.8".into()))
        );
        assert_eq!(
            kind("hxxp://evil[.]example"),
            Some((ObservableKind::Url, "http://evil.example/".into()))
        );
        assert_eq!(
            kind("evil[.]example"),
            Some((ObservableKind::Domain, "evil.example".into()))
        );
        assert_eq!(
            kind("x[@]evil.example"),
            Some((ObservableKind::Email, "x@evil.example".into()))
        );
        assert_eq!(
            kind(&"B".repeat(64)),
            Some((ObservableKind::Sha256, "b".repeat(64)))
        );
        assert_eq!(kind("1.2.3"), None);
        assert_eq!(kind("readme.txt1"), None);
    }

    #[test]
    fn composites_split_on_the_last_bar() {
        assert_eq!(split_composite("a|b.exe|abc"), Some(("a|b.exe", "abc")));
        assert_eq!(split_composite("192.0.2.1|443"), Some(("192.0.2.1", "443")));
        assert_eq!(split_composite("no-bar"), None);
    }
}
