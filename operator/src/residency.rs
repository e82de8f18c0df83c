//! The residency policy on outbound endpoints: a feed URL, a webhook or a git remote must
//! name a host or a network the SecOpsPlatform allows.

use std::net::IpAddr;

use ipnet::IpNet;
use kastell_crds::platform::Residency;
use url::Url;

/// The allowed hosts and networks of one platform.
#[derive(Debug, Clone, Default)]
pub struct EndpointPolicy {
    hosts: Vec<String>,
    networks: Vec<IpNet>,
}

/// Why an endpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotAUrl(String),
    NoHost,
    NotAllowed { host: String },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotAUrl(reason) => write!(f, "not a URL: {reason}"),
            Refusal::NoHost => f.write_str("the URL names no host"),
            Refusal::NotAllowed { host } => write!(
                f,
                "host {host} is outside the platform's residency policy \
                 (spec.residency.allowedHosts / allowedNetworks)"
            ),
        }
    }
}

impl EndpointPolicy {
    /// Reads the policy; entries of `allowedNetworks` that are not CIDR networks are
    /// returned as errors rather than silently ignored.
    pub fn from_residency(residency: &Residency) -> (Self, Vec<String>) {
        let mut errors = Vec::new();
        let networks = residency
            .allowed_networks
            .iter()
            .filter_map(|text| match text.parse::<IpNet>() {
                Ok(net) => Some(net),
                Err(_) => {
                    errors.push(format!(
                        "allowedNetworks entry {text:?} is not a CIDR network"
                    ));
                    None
                }
            })
            .collect();
        let hosts = residency
            .allowed_hosts
            .iter()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        (EndpointPolicy { hosts, networks }, errors)
    }

    /// Checks one endpoint URL. Loopback addresses are always allowed: they never leave
    /// the machine.
    pub fn check(&self, endpoint: &str) -> Result<(), Refusal> {
        let url = Url::parse(endpoint).map_err(|e| Refusal::NotAUrl(e.to_string()))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(Refusal::NoHost)?;
        self.check_host(host.trim_start_matches('[').trim_end_matches(']'))
    }

    /// Checks a bare host name or address (an IPv6 address without brackets), for
    /// endpoints configured as host and port rather than as a URL.
    pub fn check_host(&self, host: &str) -> Result<(), Refusal> {
        if host.is_empty() {
            return Err(Refusal::NoHost);
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            if ip.to_canonical().is_loopback() || self.networks.iter().any(|n| n.contains(&ip)) {
                return Ok(());
            }
        } else {
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            if host == "localhost"
                || self
                    .hosts
                    .iter()
                    .any(|allowed| host_matches(allowed, &host))
            {
                return Ok(());
            }
        }
        Err(Refusal::NotAllowed {
            host: host.to_owned(),
        })
    }
}

/// `*.example.eu` allows every subdomain of example.eu (not example.eu itself); any other
/// entry allows exactly that host.
fn host_matches(allowed: &str, host: &str) -> bool {
    match allowed.strip_prefix("*.") {
        Some(parent) => host
            .strip_suffix(parent)
            .is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1),
        None => allowed == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str], networks: &[&str]) -> EndpointPolicy {
        let residency = Residency {
            allowed_hosts: hosts.iter().map(|s| s.to_string()).collect(),
            allowed_networks: networks.iter().map(|s| s.to_string()).collect(),
            ..Residency::default()
        };
        let (policy, errors) = EndpointPolicy::from_residency(&residency);
        assert!(errors.is_empty(), "{errors:?}");
        policy
    }

    #[test]
    fn hosts_wildcards_and_networks() {
        let p = policy(
            &["misp.cert.example.eu", "*.soc.example.eu"],
            &["10.20.0.0/16"],
        );
        assert!(p.check("https://misp.cert.example.eu/feeds").is_ok());
        assert!(p.check("https://MISP.cert.example.eu./x").is_ok());
        assert!(p.check("https://chat.soc.example.eu/hook").is_ok());
        assert!(p.check("https://soc.example.eu/hook").is_err());
        assert!(p.check("https://evilsoc.example.eu/hook").is_err());
        assert!(p.check("https://10.20.3.4/api").is_ok());
        assert!(p.check("https://10.21.3.4/api").is_err());
        assert!(p.check("http://127.0.0.1:9099/x").is_ok());
        assert!(p.check("http://[::1]:9099/x").is_ok());
        assert_eq!(
            p.check("https://hooks.slack.com/services/x"),
            Err(Refusal::NotAllowed {
                host: "hooks.slack.com".into()
            })
        );
        assert!(matches!(p.check("not a url"), Err(Refusal::NotAUrl(_))));
    }

    #[test]
    fn bad_networks_are_reported() {
        let residency = Residency {
            allowed_networks: vec!["10.0.0.0/33".into()],
            ..Residency::default()
        };
        let (_, errors) = EndpointPolicy::from_residency(&residency);
        assert_eq!(errors.len(), 1);
    }
}
