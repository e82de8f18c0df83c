//! The residency evidence: the nodes the platform's pods landed on and the region label
//! of each, and the node affinity of the volumes bound to its claims.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kastell_crds::SecOpsPlatform;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::{Context, Error};
use crate::conditions::{Observed, CONDITION_RESIDENCY};

/// Where one pod or volume is, and whether that is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// `pod <name> on node <node>` or `volume <pv>`.
    pub what: String,
    /// The region label's value, when the node or volume has one.
    pub region: Option<String>,
    pub allowed: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub placed: Vec<Placed>,
    /// Pods not yet on a node.
    pub unscheduled: usize,
    pub label: String,
}

impl Placement {
    /// ResidencyCompliant from the evidence: False names each offender, True lists the
    /// evidence, Unknown while nothing has been placed.
    pub fn condition(&self) -> Observed {
        let describe = |p: &Placed| {
            format!(
                "{} ({}={})",
                p.what,
                self.label,
                p.region.as_deref().unwrap_or("<unset>")
            )
        };
        let outside: Vec<String> = self
            .placed
            .iter()
            .filter(|p| !p.allowed)
            .map(describe)
            .collect();
        if !outside.is_empty() {
            return Observed::new(
                CONDITION_RESIDENCY,
                false,
                "PlacedOutsideAllowedRegions",
                format!(
                    "outside the allowed regions: {}; label the nodes with {} or move the \
                     workloads, then delete the offending pods",
                    outside.join(", "),
                    self.label
                ),
            );
        }
        if self.placed.is_empty() {
            return Observed::unknown(
                CONDITION_RESIDENCY,
                "NothingPlacedYet",
                format!(
                    "no pod of the platform is on a node yet ({} waiting); pods may only be \
                     scheduled on nodes whose {} is an allowed region",
                    self.unscheduled, self.label
                ),
            );
        }
        let evidence: Vec<String> = self.placed.iter().map(describe).collect();
        Observed::new(
            CONDITION_RESIDENCY,
            true,
            "PlacedInAllowedRegions",
            evidence.join(", "),
        )
    }
}

pub async fn observe(
    context: &Context,
    platform: &SecOpsPlatform,
    regions: &BTreeSet<String>,
) -> Result<Placement, Error> {
    let namespace = platform.namespace().unwrap_or_default();
    let label = platform.spec.residency.region_label().to_owned();
    let selector = format!(
        "app.kubernetes.io/name=kastell,app.kubernetes.io/instance={}",
        platform.name_any()
    );
    let read = |what: String| move |source| Error::Read { what, source };
    let pods = Api::<Pod>::namespaced(context.client.clone(), &namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(read(format!(
            "the pods of {namespace}/{}",
            platform.name_any()
        )))?;
    let nodes = Api::<Node>::all(context.client.clone());
    let mut placement = Placement {
        label: label.clone(),
        ..Placement::default()
    };
    for pod in pods.items {
        let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            placement.unscheduled += 1;
            continue;
        };
        let node = nodes
            .get_opt(&node_name)
            .await
            .map_err(read(format!("node {node_name}")))?;
        let region = node.and_then(|n| n.labels().get(&label).cloned());
        placement.placed.push(Placed {
            what: format!("pod {} on node {node_name}", pod.name_any()),
            allowed: region.as_ref().is_some_and(|r| regions.contains(r)),
            region,
        });
    }
    placement
        .placed
        .extend(volumes(context, &namespace, &selector, &label, regions).await?);
    Ok(placement)
}

/// Bound volumes whose node affinity names the region label: every value must be allowed.
async fn volumes(
    context: &Context,
    namespace: &str,
    selector: &str,
    label: &str,
    regions: &BTreeSet<String>,
) -> Result<Vec<Placed>, Error> {
    let claims = Api::<PersistentVolumeClaim>::namespaced(context.client.clone(), namespace)
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|source| Error::Read {
            what: format!("the volume claims of namespace {namespace}"),
            source,
        })?;
    let volumes = Api::<PersistentVolume>::all(context.client.clone());
    let mut placed = Vec::new();
    for claim in claims.items {
        let Some(volume) = claim.spec.and_then(|s| s.volume_name) else {
            continue;
        };
        let found = volumes
            .get_opt(&volume)
            .await
            .map_err(|source| Error::Read {
                what: format!("volume {volume}"),
                source,
            })?;
        let values: Vec<String> = found
            .and_then(|pv| pv.spec?.node_affinity?.required)
            .map(|selector| {
                selector
                    .node_selector_terms
                    .into_iter()
                    .flat_map(|t| t.match_expressions.unwrap_or_default())
                    .filter(|e| e.key == label)
                    .flat_map(|e| e.values.unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        if values.is_empty() {
            continue;
        }
        placed.push(Placed {
            what: format!("volume {volume}"),
            allowed: values.iter().all(|v| regions.contains(v)),
            region: Some(values.join("|")),
        });
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_condition_names_offenders_or_lists_the_evidence() {
        let mut placement = Placement {
            label: "node-restriction.kubernetes.io/region".into(),
            ..Placement::default()
        };
        assert_eq!(placement.condition().status, "Unknown");
        placement.placed.push(Placed {
            what: "pod a on node n1".into(),
            region: Some("eu-central-1".into()),
            allowed: true,
        });
        let ok = placement.condition();
        assert_eq!(ok.status, "True");
        assert!(ok.message.contains("node n1"), "{}", ok.message);
        placement.placed.push(Placed {
            what: "pod b on node n2".into(),
            region: Some("us-east-1".into()),
            allowed: false,
        });
        let bad = placement.condition();
        assert_eq!(bad.status, "False");
        assert!(bad.message.contains("us-east-1"), "{}", bad.message);
        assert!(!bad.message.contains("node n1"), "{}", bad.message);
    }
}
