//! One ServiceAccount per stage, with a Role granting only what that stage needs: its own
//! configuration ConfigMap, for the cases stage the Case resources it mirrors, and for the
//! respond stage the pods and NetworkPolicies of quarantine-pod.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use super::bundle::config_map_name;
use super::{stage_metadata, BuildInput, Stage};

pub(super) fn service_account(input: &BuildInput, stage: Stage) -> ServiceAccount {
    ServiceAccount {
        metadata: stage_metadata(input, stage),
        // The token is mounted explicitly by the pod only when its Role grants anything,
        // which every stage's does; keeping it off here stops other pods borrowing it.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

pub(super) fn role(input: &BuildInput, stage: Stage) -> Role {
    let mut rules = vec![PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".into()]),
        resource_names: Some(vec![config_map_name(input, stage)]),
        verbs: vec!["get".into(), "watch".into()],
        ..PolicyRule::default()
    }];
    if stage == Stage::Cases {
        rules.push(PolicyRule {
            api_groups: Some(vec![kastell_crds::GROUP.into()]),
            resources: Some(vec!["cases".into(), "cases/status".into()]),
            verbs: ["get", "list", "watch", "create", "patch"]
                .map(String::from)
                .to_vec(),
            ..PolicyRule::default()
        });
    }
    if stage == Stage::Respond {
        // quarantine-pod labels the pod and applies the namespace's quarantine
        // NetworkPolicy; its release removes the label and deletes the policy once no pod
        // of the namespace is quarantined. Granted in the platform's namespace only: a
        // playbook quarantining elsewhere needs a RoleBinding there (docs/operator.md).
        rules.push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".into()]),
            verbs: ["get", "list", "patch"].map(String::from).to_vec(),
            ..PolicyRule::default()
        });
        rules.push(PolicyRule {
            api_groups: Some(vec!["networking.k8s.io".into()]),
            resources: Some(vec!["networkpolicies".into()]),
            verbs: ["get", "create", "patch", "delete"]
                .map(String::from)
                .to_vec(),
            ..PolicyRule::default()
        });
    }
    Role {
        metadata: stage_metadata(input, stage),
        rules: Some(rules),
    }
}

pub(super) fn role_binding(input: &BuildInput, stage: Stage) -> RoleBinding {
    let metadata = stage_metadata(input, stage);
    let name = metadata.name.clone().unwrap_or_default();
    RoleBinding {
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name,
            namespace: metadata.namespace.clone(),
            ..Subject::default()
        }]),
        metadata,
    }
}
