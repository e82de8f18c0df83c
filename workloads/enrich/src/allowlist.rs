//! Values known to be benign, never kept as indicators: MISP warning lists (the JSON
//! files of MISP's `misp-warninglists` project: `{"name", "type", "list": [...]}` with
//! type `string`, `hostname` or `cidr`) or a plain allowlist file, one value per line.
//!
//! A feed that lists `8.8.8.8`, `google.com` or `1.1.1.1` (MISP's own feed fixture does)
//! would otherwise raise an alert for every DNS lookup of a healthy network.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use kastell_core::ObservableKind;
use serde::Deserialize;

use crate::indicator::{Indicator, IpOrNetwork};
use crate::normalise;

/// The benign values of one or more lists.
#[derive(Debug, Default, Clone)]
pub struct Allowlist {
    /// Exact values: hashes, URLs, e-mail addresses, addresses.
    exact: HashSet<String>,
    /// Host names; each also covers its subdomains when the list says `hostname`.
    hosts: HashSet<String>,
    networks: Vec<IpNet>,
    /// How many entries could not be read as any value.
    pub unreadable: usize,
}

/// An allowlist file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AllowlistError {
    #[error("reading allowlist {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a MISP warning list ({{\"name\", \"type\", \"list\"}})")]
    Warninglist {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Deserialize)]
struct Warninglist {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    list: Vec<String>,
}

impl Allowlist {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a file: a MISP warning list when it ends in `.json`, else one value per
    /// line (`#` starts a comment).
    ///
    /// # Errors
    ///
    /// When the file cannot be read, or a `.json` file is not a warning list.
    pub fn add_file(&mut self, path: &Path) -> Result<(), AllowlistError> {
        let text = std::fs::read_to_string(path).map_err(|source| AllowlistError::Read {
            path: path.to_owned(),
            source,
        })?;
        if path.extension().is_some_and(|e| e == "json") {
            let list: Warninglist =
                serde_json::from_str(&text).map_err(|source| AllowlistError::Warninglist {
                    path: path.to_owned(),
                    source,
                })?;
            let hostnames = list.kind.as_deref() == Some("hostname");
            for value in &list.list {
                self.add(value, hostnames);
            }
        } else {
            for line in text.lines() {
                let value = line.split('#').next().unwrap_or("").trim();
                if !value.is_empty() {
                    self.add(value, true);
                }
            }
        }
        Ok(())
    }

    /// Adds one value, typed by its form. With `subdomains`, a host name also covers
    /// every name below it.
    pub fn add(&mut self, raw: &str, subdomains: bool) {
        match normalise::guess(raw) {
            Some(found) if found.kind == ObservableKind::Domain && subdomains => {
                self.hosts.insert(found.value);
            }
            Some(found) => match found.network {
                Some(network) => self.networks.push(network),
                None => {
                    self.exact.insert(found.value);
                }
            },
            None => self.unreadable += 1,
        }
    }

    /// Whether the list names the indicator's value (a network indicator is covered
    /// only by a list network containing all of it). A URL is covered only when listed
    /// itself: a phishing page on a benign host is still worth an alert.
    pub fn covers(&self, indicator: &Indicator) -> bool {
        if self.exact.contains(&indicator.value) {
            return true;
        }
        match indicator.kind {
            ObservableKind::Domain => self.covers_host(&indicator.value),
            ObservableKind::Ip => match normalise::ip_or_network(&indicator.value) {
                Some(IpOrNetwork::Ip(ip)) => self.networks.iter().any(|n| n.contains(&ip)),
                Some(IpOrNetwork::Network(net)) => self.networks.iter().any(|n| n.contains(&net)),
                None => false,
            },
            _ => false,
        }
    }

    fn covers_host(&self, name: &str) -> bool {
        let mut rest = name;
        loop {
            if self.hosts.contains(rest) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) => rest = parent,
                None => return false,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.hosts.len() + self.networks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::indicator::IndicatorContext;

    fn indicator(kind: ObservableKind, value: &str) -> Indicator {
        let mut indicator = Indicator::new(kind, value, Arc::new(IndicatorContext::default()));
        if let Some(IpOrNetwork::Network(net)) = normalise::ip_or_network(value) {
            indicator.network = Some(net);
        }
        indicator
    }

    #[test]
    fn warning_lists_and_plain_files_cover_their_values() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("list.json");
        std::fs::write(
            &json,
            r#"{"name": "resolvers", "type": "cidr", "list": ["8.8.8.8/32", "1.1.1.0/24", "2001:4860::/32"]}"#,
        )
        .unwrap();
        let plain = dir.path().join("allow.txt");
        std::fs::write(
            &plain,
            "# benign\ngoogle.com\nhttp://example.com/ok  # one page\n???\n",
        )
        .unwrap();
        let mut list = Allowlist::new();
        list.add_file(&json).unwrap();
        list.add_file(&plain).unwrap();
        assert_eq!((list.len(), list.unreadable), (5, 1));
        for (kind, value, covered) in [
            (ObservableKind::Ip, "8.8.8.8", true),
            (ObservableKind::Ip, "1.1.1.7", true),
            (ObservableKind::Ip, "1.1.1.0/25", true),
            (ObservableKind::Ip, "1.1.0.0/16", false),
            (ObservableKind::Ip, "2001:4860::8888", true),
            (ObservableKind::Domain, "www.google.com", true),
            (ObservableKind::Domain, "notgoogle.com", false),
            (ObservableKind::Url, "http://example.com/ok", true),
            (ObservableKind::Url, "http://google.com/phish", false),
        ] {
            assert_eq!(list.covers(&indicator(kind, value)), covered, "{value}");
        }
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "[1, 2]").unwrap();
        assert!(matches!(
            list.add_file(&broken),
            Err(AllowlistError::Warninglist { .. })
        ));
    }
}
