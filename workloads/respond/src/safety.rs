//! Platform-wide response safety: the assets no action may touch, the kill switch and
//! the global action budget, from the SecOpsPlatform's `response` section.
//!
//! An action's targets are read from its rendered parameters: the agents, address and
//! arguments of a Wazuh active response; the namespace of a quarantine; every string
//! value of an `http` call's body, extra variables and headers that is an address, a
//! CIDR range or a host name. The URL a call goes to is not a target (the Wazuh manager
//! or AWX may well sit in a protected range). Notifications (`notify`, and `webhook`,
//! whose default body names the alert's host), lookups and case operations act on no
//! asset and are not checked: an alert about a protected host must still reach people.

use std::net::IpAddr;

use ipnet::IpNet;
use kastell_crds::playbook::ResponsePolicy;
use kastell_crds::ResourceSet;
use serde_json::Value;

/// The checked policy.
#[derive(Debug, Clone, Default)]
pub struct Safety {
    pub kill_switch: bool,
    pub max_actions_per_hour: Option<u32>,
    networks: Vec<IpNet>,
    /// Lower-cased; a leading `*.` matches any subdomain.
    hosts: Vec<String>,
    namespaces: Vec<String>,
    agents: Vec<String>,
}

/// What an action would touch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    pub addresses: Vec<String>,
    pub hosts: Vec<String>,
    pub namespaces: Vec<String>,
    pub agents: Vec<String>,
}

impl Safety {
    /// Checks the policy.
    ///
    /// # Errors
    /// Every network that is not an address or CIDR range, and a zero budget.
    pub fn compile(policy: &ResponsePolicy) -> Result<Self, String> {
        let mut problems = Vec::new();
        let mut networks = Vec::new();
        for text in &policy.protected.networks {
            match parse_net(text) {
                Some(net) => networks.push(net),
                None => problems.push(format!(
                    "response.protected.networks: {text:?} is not an address or CIDR range"
                )),
            }
        }
        if policy.max_actions_per_hour == Some(0) {
            problems.push("response.maxActionsPerHour must be at least 1".into());
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let lower = |v: &Vec<String>| v.iter().map(|s| s.trim().to_lowercase()).collect();
        Ok(Safety {
            kill_switch: policy.kill_switch,
            max_actions_per_hour: policy.max_actions_per_hour,
            networks,
            hosts: lower(&policy.protected.hosts),
            namespaces: policy.protected.namespaces.clone(),
            agents: lower(&policy.protected.agents),
        })
    }

    /// The protected assets among the targets, each as `kind value`; empty when the
    /// action may run.
    pub fn protected_among(&self, targets: &Targets) -> Vec<String> {
        let mut hits = Vec::new();
        for address in &targets.addresses {
            if let Some(net) = parse_net(address) {
                if self
                    .networks
                    .iter()
                    .any(|p| p.contains(&net) || net.contains(p))
                {
                    hits.push(format!("address {address}"));
                }
            }
        }
        for host in &targets.hosts {
            if self.host_protected(host) {
                hits.push(format!("host {host}"));
            }
        }
        for namespace in &targets.namespaces {
            if self.namespaces.iter().any(|n| n == namespace) {
                hits.push(format!("namespace {namespace}"));
            }
        }
        for agent in &targets.agents {
            if self.agents.contains(&agent.trim().to_lowercase()) {
                hits.push(format!("agent {agent}"));
            }
        }
        hits
    }

    fn host_protected(&self, host: &str) -> bool {
        let host = host.trim().trim_end_matches('.').to_lowercase();
        self.hosts.iter().any(|p| match p.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => *p == host,
        })
    }
}

/// The targets of an action of `step_type` with these rendered parameters.
pub fn targets(step_type: &str, params: &Value) -> Targets {
    let mut targets = Targets::default();
    let config = params.get("config").unwrap_or(&Value::Null);
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    match step_type {
        "wazuh-active-response" => {
            targets.agents = strings(config.get("agents"));
            if let Some(ip) = config.get("srcip").and_then(Value::as_str) {
                targets.addresses.push(ip.to_owned());
            }
            for argument in strings(config.get("arguments")) {
                classify(&argument, &mut targets);
            }
        }
        "quarantine-pod" => {
            if let Some(ns) = config.get("namespace").and_then(Value::as_str) {
                targets.namespaces.push(ns.to_owned());
            }
        }
        "http" => {
            for key in ["body", "extra_vars", "headers"] {
                walk_strings(config.get(key), &mut |s| classify(s, &mut targets));
            }
        }
        _ => {}
    }
    targets
}

/// Files a string value as an address or a host name when it is one.
fn classify(text: &str, targets: &mut Targets) {
    let text = text.trim();
    if parse_net(text).is_some() {
        targets.addresses.push(text.to_owned());
    } else if looks_like_host(text) {
        targets.hosts.push(text.to_owned());
    }
}

fn looks_like_host(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && text.chars().any(|c| c.is_ascii_alphabetic())
}

fn walk_strings(value: Option<&Value>, visit: &mut dyn FnMut(&str)) {
    match value {
        Some(Value::String(s)) => visit(s),
        Some(Value::Array(items)) => items.iter().for_each(|v| walk_strings(Some(v), visit)),
        Some(Value::Object(map)) => map.values().for_each(|v| walk_strings(Some(v), visit)),
        _ => {}
    }
}

fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// The platform's response safety policy (`spec.response` of the first
/// SecOpsPlatform); an invalid one is reported and replaced by a kill switch, so a
/// typo in a protected range never lets actions through to it.
pub fn response_safety(resources: &ResourceSet, problems: &mut Vec<String>) -> Safety {
    let Some(platform) = resources.platforms.first() else {
        return Safety::default();
    };
    let Some(policy) = &platform.object.spec.response else {
        return Safety::default();
    };
    Safety::compile(policy).unwrap_or_else(|reason| {
        problems.push(format!(
            "{}: platform {}: {reason}; every action runs as a dry run (kill switch)",
            platform.file.display(),
            platform.key()
        ));
        Safety::compile(&ResponsePolicy {
            kill_switch: true,
            ..Default::default()
        })
        .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn safety() -> Safety {
        let policy: ResponsePolicy = serde_json::from_value(json!({
            "protected": {
                "networks": ["10.0.0.0/8", "192.0.2.10"],
                "hosts": ["dc01.corp.example.eu", "*.prod.example.eu"],
                "namespaces": ["kube-system"],
                "agents": ["000", "DC01"],
            }
        }))
        .unwrap();
        Safety::compile(&policy).unwrap()
    }

    #[test]
    fn wazuh_targets_in_protected_ranges_or_agents_are_found() {
        let params = json!({"config": {"agents": ["001", "dc01"], "srcip": "10.1.2.3",
                                        "arguments": ["192.0.2.10"]}});
        let hits = safety().protected_among(&targets("wazuh-active-response", &params));
        assert_eq!(
            hits,
            ["address 10.1.2.3", "address 192.0.2.10", "agent dc01"]
        );
        let params = json!({"config": {"agents": ["001"], "srcip": "203.0.113.9"}});
        assert!(safety()
            .protected_among(&targets("wazuh-active-response", &params))
            .is_empty());
    }

    #[test]
    fn http_bodies_hosts_and_namespaces_are_checked() {
        let params = json!({"config": {"body": {"host": "web.prod.example.eu",
            "list": ["10.9.9.0/24"], "note": "block 10.1.1.1 now"}}});
        let hits = safety().protected_among(&targets("http", &params));
        assert_eq!(hits, ["address 10.9.9.0/24", "host web.prod.example.eu"]);
        let params = json!({"config": {"namespace": "kube-system", "pod": "x"}});
        assert_eq!(
            safety().protected_among(&targets("quarantine-pod", &params)),
            ["namespace kube-system"]
        );
        assert!(safety()
            .protected_among(&targets("notify", &json!({"config": {"text": "10.1.1.1"}})))
            .is_empty());
    }

    #[test]
    fn a_bad_network_is_refused_when_the_policy_loads() {
        let policy: ResponsePolicy =
            serde_json::from_value(json!({"protected": {"networks": ["10.0.0.0/33"]}})).unwrap();
        assert!(Safety::compile(&policy)
            .unwrap_err()
            .contains("10.0.0.0/33"));
    }
}
