//! Pure functions from a SecOpsPlatform (and the configuration bundles compiled from its
//! resources) to the Kubernetes objects that run it. Nothing here talks to the API
//! server, so every object can be checked in unit tests and by `kubernetes-validate`.

mod bundle;
pub mod network;
mod pod;
mod rbac;
mod service;
pub mod wiring;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kastell_crds::platform::StageSettings;
use kastell_crds::SecOpsPlatform;

pub use bundle::{bundle_hash, Bundle, BundleEntry, CONFIG_HASH_ANNOTATION, RULE_KEY_PREFIX};
pub use pod::{runs_as_stateful_set, Workload};

/// The five stages of the pipeline, each one Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Ingest,
    Correlate,
    Enrich,
    Cases,
    Respond,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Ingest,
        Stage::Correlate,
        Stage::Enrich,
        Stage::Cases,
        Stage::Respond,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Correlate => "correlate",
            Stage::Enrich => "enrich",
            Stage::Cases => "cases",
            Stage::Respond => "respond",
        }
    }

    /// Stages that open connections outside the cluster: feeds, webhooks, PostgreSQL.
    fn reaches_out(self) -> bool {
        matches!(self, Stage::Enrich | Stage::Respond | Stage::Cases)
    }

    fn settings(self, platform: &SecOpsPlatform) -> Option<&StageSettings> {
        let workloads = platform.spec.workloads.as_ref()?;
        match self {
            Stage::Ingest => workloads.ingest.as_ref(),
            Stage::Correlate => workloads.correlate.as_ref(),
            Stage::Enrich => workloads.enrich.as_ref(),
            Stage::Cases => workloads.cases.as_ref(),
            Stage::Respond => workloads.respond.as_ref(),
        }
    }
}

/// The port every stage serves its API, `/healthz`, `/readyz` and `/metrics` on.
pub const HTTP_PORT: i32 = 8080;
/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "kastell-operator";

/// What the builders need besides the platform itself.
#[derive(Debug, Clone)]
pub struct BuildInput<'a> {
    pub platform: &'a SecOpsPlatform,
    /// The owner reference every built object carries (the platform's controller ref).
    pub owner: OwnerReference,
    /// Image used when the platform does not name one.
    pub default_image: &'a str,
    /// The regions the pods may be placed in; never empty (the platform is refused first).
    pub regions: &'a BTreeSet<String>,
    /// The compiled configuration of each stage.
    pub bundles: &'a BTreeMap<Stage, Bundle>,
}

/// Everything one platform consists of.
#[derive(Debug, Clone, Default)]
pub struct PlatformObjects {
    pub config_maps: Vec<ConfigMap>,
    pub service_accounts: Vec<ServiceAccount>,
    pub roles: Vec<Role>,
    pub role_bindings: Vec<RoleBinding>,
    pub services: Vec<Service>,
    /// One per stage, in [`Stage::ALL`] order: a Deployment or a StatefulSet.
    pub workloads: Vec<Workload>,
    pub network_policies: Vec<NetworkPolicy>,
    pub volume_claims: Vec<PersistentVolumeClaim>,
}

/// Builds every object of a platform.
pub fn platform_objects(input: &BuildInput) -> PlatformObjects {
    let mut objects = PlatformObjects::default();
    let empty = Bundle::default();
    for stage in Stage::ALL {
        let bundle = input.bundles.get(&stage).unwrap_or(&empty);
        objects
            .config_maps
            .push(bundle::config_map(input, stage, bundle));
        objects
            .service_accounts
            .push(rbac::service_account(input, stage));
        objects.roles.push(rbac::role(input, stage));
        objects.role_bindings.push(rbac::role_binding(input, stage));
        objects.services.push(service::service(input, stage));
        objects.workloads.push(pod::workload(input, stage, bundle));
    }
    objects.volume_claims.extend(pod::cases_volume_claim(input));
    objects.network_policies = network::policies(input);
    objects
}

/// `<platform>-<stage>`: the name of every per-stage object.
pub fn stage_object_name(platform: &str, stage: Stage) -> String {
    format!("{platform}-{}", stage.as_str())
}

fn platform_name(input: &BuildInput) -> String {
    input.platform.metadata.name.clone().unwrap_or_default()
}

/// Labels that select one stage's pods.
pub fn selector_labels(platform: &str, stage: Stage) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "kastell".into()),
        ("app.kubernetes.io/instance".into(), platform.into()),
        ("app.kubernetes.io/component".into(), stage.as_str().into()),
    ])
}

/// Labels that select every pod of one platform.
fn platform_labels(platform: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "kastell".into()),
        ("app.kubernetes.io/instance".into(), platform.into()),
    ])
}

fn object_labels(platform: &str, stage: Stage) -> BTreeMap<String, String> {
    let mut labels = selector_labels(platform, stage);
    labels.insert("app.kubernetes.io/part-of".into(), "kastell".into());
    labels.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
    labels
}

fn metadata(input: &BuildInput, name: String, stage: Stage) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: input.platform.metadata.namespace.clone(),
        labels: Some(object_labels(&platform_name(input), stage)),
        owner_references: Some(vec![input.owner.clone()]),
        ..ObjectMeta::default()
    }
}

fn stage_metadata(input: &BuildInput, stage: Stage) -> ObjectMeta {
    metadata(
        input,
        stage_object_name(&platform_name(input), stage),
        stage,
    )
}

#[cfg(test)]
pub(crate) mod tests;
