//! NetworkPolicies: every pod of the platform denies all traffic except the pipeline's own
//! (pod to pod inside the platform) and DNS; the ingest stage accepts its Sensors'
//! listener ports from anywhere; the stages that reach out (enrich, respond, cases) may
//! open connections to the residency policy's allowed networks.
//!
//! A NetworkPolicy matches addresses, not host names: `allowedHosts` are enforced by the
//! operator's endpoint checks, `allowedNetworks` additionally here.

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{metadata, platform_labels, platform_name, BuildInput, Stage};

pub(super) fn policies(input: &BuildInput) -> Vec<NetworkPolicy> {
    let mut policies = vec![pipeline_only(input)];
    policies.extend(sensor_ingress(input));
    policies.extend(allowed_egress(input));
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
    let networks: Vec<NetworkPolicyPeer> = input
        .platform
        .spec
        .residency
        .allowed_networks
        .iter()
        .filter(|cidr| cidr.parse::<ipnet::IpNet>().is_ok())
        .map(|cidr| NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.clone(),
                except: None,
            }),
            ..NetworkPolicyPeer::default()
        })
        .collect();
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
