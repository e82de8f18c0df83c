//! NetworkPolicies: every pod of the platform denies all traffic except the pipeline's own
//! (pod to pod inside the platform) and DNS; the ingest stage accepts its Sensors'
//! listener ports from anywhere; the stages that reach out (enrich, respond, cases) may
//! open connections to the residency policy's allowed networks; every stage may reach the
//! NATS servers of `spec.bus.url` and the stages holding the case store its PostgreSQL
//! server; `spec.network` lets chosen peers in to the case API and to `/metrics`.
//!
//! A NetworkPolicy matches addresses, not host names: `allowedHosts` are enforced by the
//! operator's endpoint checks, `allowedNetworks` additionally here.

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use kastell_crds::platform::StorageKind;

use super::{metadata, platform_labels, platform_name, BuildInput, Stage, HTTP_PORT};

pub(super) fn policies(input: &BuildInput) -> Vec<NetworkPolicy> {
    let mut policies = vec![pipeline_only(input)];
    policies.extend(sensor_ingress(input));
    policies.extend(allowed_egress(input));
    policies.extend(bus_egress(input));
    policies.extend(store_egress(input));
    policies.extend(cases_api_ingress(input));
    policies.extend(metrics_ingress(input));
    policies
}

fn platform_pods(input: &BuildInput) -> LabelSelector {
    LabelSelector {
        match_labels: Some(platform_labels(&platform_name(input))),
        ..LabelSelector::default()
    }
}

fn same_platform(input: &BuildInput) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(platform_pods(input)),
        ..NetworkPolicyPeer::default()
    }
}

fn pipeline_only(input: &BuildInput) -> NetworkPolicy {
    let dns = ["UDP", "TCP"].map(|protocol| NetworkPolicyPort {
        port: Some(IntOrString::Int(53)),
        protocol: Some(protocol.into()),
        ..NetworkPolicyPort::default()
    });
    NetworkPolicy {
        metadata: metadata(
            input,
            format!("{}-pipeline", platform_name(input)),
            Stage::Ingest,
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(platform_pods(input)),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![same_platform(input)]),
                ..NetworkPolicyIngressRule::default()
            }]),
            egress: Some(vec![
                NetworkPolicyEgressRule {
                    to: Some(vec![same_platform(input)]),
                    ..NetworkPolicyEgressRule::default()
                },
                NetworkPolicyEgressRule {
                    ports: Some(dns.to_vec()),
                    ..NetworkPolicyEgressRule::default()
                },
            ]),
        }),
    }
}

fn stage_pods(input: &BuildInput, stages: &[Stage]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(platform_labels(&platform_name(input))),
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "app.kubernetes.io/component".into(),
            operator: "In".into(),
            values: Some(stages.iter().map(|s| s.as_str().to_owned()).collect()),
        }]),
    }
}

fn sensor_ingress(input: &BuildInput) -> Option<NetworkPolicy> {
    let ports = input.sensor_ports();
    if ports.is_empty() {
        return None;
    }
    Some(NetworkPolicy {
        metadata: metadata(
            input,
            format!("{}-sensors", platform_name(input)),
            Stage::Ingest,
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(stage_pods(input, &[Stage::Ingest])),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                ports: Some(
                    ports
                        .into_iter()
                        .map(|p| NetworkPolicyPort {
                            port: Some(IntOrString::Int(p.port)),
                            protocol: Some(p.protocol.into()),
                            ..NetworkPolicyPort::default()
                        })
                        .collect(),
                ),
                ..NetworkPolicyIngressRule::default()
            }]),
            ..NetworkPolicySpec::default()
        }),
    })
}

fn allowed_egress(input: &BuildInput) -> Option<NetworkPolicy> {
    let networks = allowed_networks(input);
    if networks.is_empty() {
        return None;
    }
    let reaching_out: Vec<Stage> = Stage::ALL.into_iter().filter(|s| s.reaches_out()).collect();
    Some(NetworkPolicy {
        metadata: metadata(
            input,
            format!("{}-allowed-egress", platform_name(input)),
            Stage::Enrich,
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(stage_pods(input, &reaching_out)),
            policy_types: Some(vec!["Egress".into()]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(networks),
                ..NetworkPolicyEgressRule::default()
            }]),
            ..NetworkPolicySpec::default()
        }),
    })
}

/// A server the stages connect to: its host as written in the spec, and its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// The NATS servers of `spec.bus.url` (a comma-separated list, as the stages read it);
/// the port defaults to 4222. A URL that does not parse is left out here: the stages
/// report it when they cannot connect.
pub fn bus_endpoints(input: &BuildInput) -> Vec<Endpoint> {
    match &input.platform.spec.bus.url {
        Some(urls) => bus_url_endpoints(urls),
        None => Vec::new(),
    }
}

/// See [`bus_endpoints`]; shared with the platform's residency check of the bus.
pub fn bus_url_endpoints(urls: &str) -> Vec<Endpoint> {
    let mut endpoints: Vec<Endpoint> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .filter_map(|u| {
            // A bare `host:port` is read as NATS reads it.
            let with_scheme = if u.contains("://") {
                u.to_owned()
            } else {
                format!("nats://{u}")
            };
            let url = url::Url::parse(&with_scheme).ok()?;
            let host = url.host_str()?.trim_matches(['[', ']']).to_owned();
            Some(Endpoint {
                host,
                port: url.port().unwrap_or(4222),
            })
        })
        .collect();
    endpoints.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
    endpoints.dedup();
    endpoints
}

/// Whether a host name is a Service of the cluster (`nats`, `nats.soc.svc`,
/// `nats.soc.svc.cluster.local`): its traffic goes to pods, which a policy matches by
/// selector rather than address.
pub fn in_cluster(host: &str) -> bool {
    !host.contains('.') || host.ends_with(".svc") || host.contains(".svc.")
}

/// Where an endpoint's traffic may go: its address when the host is one; every pod of
/// the cluster for a Service name; the allowed networks for another name. `None` (any
/// address, on the endpoint's port only) for a name outside the cluster when no network
/// is allowed: a NetworkPolicy cannot match a host name, so the operator's endpoint checks
/// are what hold such names to the residency policy.
fn endpoint_peers(input: &BuildInput, endpoint: &Endpoint) -> Option<Vec<NetworkPolicyPeer>> {
    if let Ok(ip) = endpoint.host.parse::<std::net::IpAddr>() {
        return Some(vec![ip_block(&ipnet::IpNet::from(ip).to_string())]);
    }
    if in_cluster(&endpoint.host) {
        return Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            ..NetworkPolicyPeer::default()
        }]);
    }
    let networks = allowed_networks(input);
    (!networks.is_empty()).then_some(networks)
}

fn ip_block(cidr: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_owned(),
            except: None,
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn allowed_networks(input: &BuildInput) -> Vec<NetworkPolicyPeer> {
    input
        .platform
        .spec
        .residency
        .allowed_networks
        .iter()
        .filter(|cidr| cidr.parse::<ipnet::IpNet>().is_ok())
        .map(|cidr| ip_block(cidr))
        .collect()
}

fn tcp_port(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

fn egress_to(
    input: &BuildInput,
    name: &str,
    stages: &[Stage],
    endpoints: &[Endpoint],
) -> Option<NetworkPolicy> {
    if endpoints.is_empty() {
        return None;
    }
    let rules = endpoints
        .iter()
        .map(|endpoint| NetworkPolicyEgressRule {
            to: endpoint_peers(input, endpoint),
            ports: Some(vec![tcp_port(i32::from(endpoint.port))]),
        })
        .collect();
    Some(NetworkPolicy {
        metadata: metadata(input, format!("{}-{name}", platform_name(input)), stages[0]),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(stage_pods(input, stages)),
            policy_types: Some(vec!["Egress".into()]),
            egress: Some(rules),
            ..NetworkPolicySpec::default()
        }),
    })
}

/// Every stage talks to NATS.
fn bus_egress(input: &BuildInput) -> Option<NetworkPolicy> {
    egress_to(input, "bus-egress", &Stage::ALL, &bus_endpoints(input))
}

/// The stages that hold the case store talk to PostgreSQL.
fn store_egress(input: &BuildInput) -> Option<NetworkPolicy> {
    let storage = &input.platform.spec.storage;
    let postgres = storage
        .postgresql
        .as_ref()
        .filter(|_| storage.kind == StorageKind::Postgresql)?;
    let endpoint = Endpoint {
        host: postgres.host.trim_matches(['[', ']']).to_owned(),
        port: postgres.port,
    };
    egress_to(
        input,
        "store-egress",
        &[Stage::Cases, Stage::Respond],
        &[endpoint],
    )
}

fn ingress_on_http(
    input: &BuildInput,
    name: &str,
    stages: &[Stage],
    from: Vec<NetworkPolicyPeer>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: metadata(input, format!("{}-{name}", platform_name(input)), stages[0]),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(stage_pods(input, stages)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(from),
                ports: Some(vec![tcp_port(HTTP_PORT)]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// `spec.network.casesApiFrom` to the cases stage's port.
fn cases_api_ingress(input: &BuildInput) -> Option<NetworkPolicy> {
    let from = &input.platform.spec.network.as_ref()?.cases_api_from;
    if from.is_empty() {
        return None;
    }
    Some(ingress_on_http(
        input,
        "cases-api",
        &[Stage::Cases],
        from.clone(),
    ))
}

/// The monitoring namespace's pods to every stage's port, where `/metrics` is served.
fn metrics_ingress(input: &BuildInput) -> Option<NetworkPolicy> {
    let network = input.platform.spec.network.as_ref()?;
    let namespace = network.metrics_namespace.as_ref()?;
    let peer = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(
                [("kubernetes.io/metadata.name".to_owned(), namespace.clone())].into(),
            ),
            ..LabelSelector::default()
        }),
        pod_selector: Some(network.metrics_pod_selector.clone().unwrap_or_default()),
        ..NetworkPolicyPeer::default()
    };
    Some(ingress_on_http(input, "metrics", &Stage::ALL, vec![peer]))
}
