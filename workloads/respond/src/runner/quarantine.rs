//! The `quarantine-pod` step: the pod is labelled `kastell.eu/quarantine: "true"` (and
//! the case it is quarantined for), and a NetworkPolicy in its namespace selecting that
//! label allows no ingress and no egress. Release removes the labels, then deletes the
//! policy when no pod of the namespace carries the quarantine label any more (another
//! pod's quarantine must not end with this one's).
//!
//! The label patch and the policy are built by pure functions; applying them needs the
//! cluster, through the workload's service account (kube's in-cluster or kubeconfig
//! configuration). The role needs `patch` on pods and on networkpolicies.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kastell_core::store::ActionRecord;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{json, Value};

use super::{config, field, RunContext, StepOutcome, StepRunner};

/// The label that puts a pod under the quarantine policy.
pub const QUARANTINE_LABEL: &str = "kastell.eu/quarantine";
/// The label naming the case the pod is quarantined for.
pub const CASE_LABEL: &str = "kastell.eu/quarantine-case";
/// The policy's name, one per namespace.
pub const POLICY_NAME: &str = "kastell-quarantine";
/// The field manager of server-side apply.
const MANAGER: &str = "kastell-respond";

/// The merge patch that labels a pod for quarantine.
pub fn quarantine_patch(case_id: i64) -> Value {
    json!({ "metadata": { "labels": {
        QUARANTINE_LABEL: "true",
        CASE_LABEL: case_id.to_string(),
    }}})
}

/// The merge patch that releases it (a `null` removes a label).
pub fn release_patch() -> Value {
    json!({ "metadata": { "labels": { QUARANTINE_LABEL: null, CASE_LABEL: null } } })
}

/// The NetworkPolicy that cuts every quarantined pod of `namespace` off: both policy
/// types, no rules, so nothing in and nothing out (DNS included).
pub fn network_policy(namespace: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": POLICY_NAME,
            "namespace": namespace,
            "labels": { "app.kubernetes.io/managed-by": MANAGER },
        },
        "spec": {
            "podSelector": { "matchLabels": { QUARANTINE_LABEL: "true" } },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [],
        },
    })
}

/// Applies quarantines through the Kubernetes API.
#[derive(Clone, Default)]
pub struct QuarantineRunner {
    /// The cluster to talk to; `None` is kube's default (in-cluster, else kubeconfig).
    config: Option<kube::Config>,
}

impl QuarantineRunner {
    pub fn new() -> Self {
        QuarantineRunner { config: None }
    }

    /// A runner talking to the cluster `config` describes.
    pub fn with_config(config: kube::Config) -> Self {
        QuarantineRunner {
            config: Some(config),
        }
    }

    async fn client(&self) -> Result<kube::Client, String> {
        let client = match &self.config {
            Some(config) => kube::Client::try_from(config.clone()),
            None => kube::Client::try_default().await,
        };
        client.map_err(|e| format!("no Kubernetes client: {}", super::error_chain(&e)))
    }

    async fn quarantine(&self, action: &ActionRecord, ctx: &RunContext) -> Result<Value, String> {
        let key = ctx.call_key("quarantine");
        if let Some(done) = ctx.journal.get(&key) {
            return Ok(done);
        }
        let config = config(&action.params)?;
        let namespace = field(config, "namespace")?;
        let pod = field(config, "pod")?;
        if namespace.is_empty() || pod.is_empty() {
            return Err("namespace and pod must not render empty".into());
        }
        let policy: NetworkPolicy = serde_json::from_value(network_policy(namespace))
            .map_err(|e| format!("building the NetworkPolicy: {e}"))?;
        let client = self.client().await?;
        // The policy first: a labelled pod without it would look contained and not be.
        Api::<NetworkPolicy>::namespaced(client.clone(), namespace)
            .patch(
                POLICY_NAME,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&policy),
            )
            .await
            .map_err(|e| format!("applying NetworkPolicy {namespace}/{POLICY_NAME}: {e}"))?;
        Api::<Pod>::namespaced(client, namespace)
            .patch(
                pod,
                &PatchParams::default(),
                &Patch::Merge(quarantine_patch(action.case_id)),
            )
            .await
            .map_err(|e| format!("labelling pod {namespace}/{pod}: {e}"))?;
        let result = json!({ "namespace": namespace, "pod": pod, "policy": POLICY_NAME });
        ctx.journal.record(&key, result.clone());
        Ok(result)
    }

    async fn unquarantine(&self, action: &ActionRecord, ctx: &RunContext) -> Result<Value, String> {
        let key = ctx.call_key("release");
        if let Some(done) = ctx.journal.get(&key) {
            return Ok(done);
        }
        let config = config(&action.params)?;
        let namespace = field(config, "namespace")?;
        let pod = field(config, "pod")?;
        let client = self.client().await?;
        let pods = Api::<Pod>::namespaced(client.clone(), namespace);
        match pods
            .patch(pod, &PatchParams::default(), &Patch::Merge(release_patch()))
            .await
        {
            Ok(_) => {}
            // A pod deleted since has nothing left to release; the policy may still go.
            Err(kube::Error::Api(e)) if e.code == 404 => {
                tracing::info!(
                    namespace,
                    pod,
                    "quarantined pod is gone, nothing to unlabel"
                );
            }
            Err(e) => return Err(format!("unlabelling pod {namespace}/{pod}: {e}")),
        }
        let selector = format!("{QUARANTINE_LABEL}=true");
        let still = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| format!("listing quarantined pods of {namespace}: {e}"))?;
        let policy_deleted = if still.items.is_empty() {
            match Api::<NetworkPolicy>::namespaced(client, namespace)
                .delete(POLICY_NAME, &DeleteParams::default())
                .await
            {
                Ok(_) => true,
                Err(kube::Error::Api(e)) if e.code == 404 => false,
                Err(e) => {
                    return Err(format!(
                        "deleting NetworkPolicy {namespace}/{POLICY_NAME}: {e}"
                    ))
                }
            }
        } else {
            false
        };
        let result = json!({
            "namespace": namespace,
            "pod": pod,
            "released": true,
            "policy_deleted": policy_deleted,
            "still_quarantined": still.items.len(),
        });
        ctx.journal.record(&key, result.clone());
        Ok(result)
    }
}

#[async_trait]
impl StepRunner for QuarantineRunner {
    fn step_type(&self) -> &'static str {
        "quarantine-pod"
    }

    async fn run(&self, action: &ActionRecord, ctx: &RunContext) -> StepOutcome {
        match self.quarantine(action, ctx).await {
            Ok(result) => StepOutcome::succeeded(result),
            Err(error) => StepOutcome::failed(error),
        }
    }

    fn describe(&self, action: &ActionRecord) -> Value {
        let config = action.params.get("config").cloned().unwrap_or(Value::Null);
        let namespace = config
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        json!({
            "type": self.step_type(),
            "pod": config.get("pod"),
            "namespace": namespace,
            "pod_patch": quarantine_patch(action.case_id),
            "network_policy": network_policy(namespace),
        })
    }

    async fn run_release(&self, action: &ActionRecord, ctx: &RunContext) -> Option<StepOutcome> {
        Some(match self.unquarantine(action, ctx).await {
            Ok(result) => StepOutcome::succeeded(result),
            Err(error) => StepOutcome::failed(error),
        })
    }

    fn release(&self, action: &ActionRecord) -> Option<Value> {
        let config = action.params.get("config")?;
        Some(json!({
            "type": "quarantine-pod-release",
            "namespace": config.get("namespace"),
            "pod": config.get("pod"),
            "pod_patch": release_patch(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_denies_all_traffic_of_labelled_pods_and_parses_as_a_network_policy() {
        let value = network_policy("shop");
        let policy: NetworkPolicy = serde_json::from_value(value).unwrap();
        let spec = policy.spec.unwrap();
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap()[QUARANTINE_LABEL],
            "true"
        );
        assert_eq!(spec.policy_types.unwrap(), ["Ingress", "Egress"]);
        assert!(spec.ingress.unwrap().is_empty() && spec.egress.unwrap().is_empty());
        assert_eq!(policy.metadata.namespace.as_deref(), Some("shop"));
    }

    #[test]
    fn the_patch_labels_the_pod_and_the_release_removes_the_labels() {
        let patch = quarantine_patch(42);
        assert_eq!(patch["metadata"]["labels"][QUARANTINE_LABEL], "true");
        assert_eq!(patch["metadata"]["labels"][CASE_LABEL], "42");
        let release = release_patch();
        assert!(release["metadata"]["labels"][QUARANTINE_LABEL].is_null());
        assert!(release["metadata"]["labels"]
            .as_object()
            .unwrap()
            .contains_key(CASE_LABEL));
    }
}
