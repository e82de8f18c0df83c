//! The stage workloads: pods that meet the "restricted" Pod Security Standard, pinned by a
//! required node affinity to the allowed regions, rolled when their bundle changes. A
//! stage runs as a Deployment, or as a StatefulSet when its replicas need an identity of
//! their own: correlate (each replica reads its own share of the events partitions) and
//! ingest and respond with a persistent `--data` (a volume per replica).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kastell_crds::platform::{DataVolumeKind, StorageKind};

use super::bundle::{bundle_hash, config_map_name, Bundle, CONFIG_HASH_ANNOTATION};
use super::{
    metadata, platform_name, selector_labels, stage_metadata, stage_object_name, BuildInput, Stage,
    HTTP_PORT,
};

/// Where a stage finds its bundle.
pub const CONFIG_DIR: &str = "/etc/kastell/config";
/// The stages' `--data` directory: the cases stage's SQLite store, ingest's checkpoints,
/// respond's journal.
pub const DATA_DIR: &str = "/var/lib/kastell";
/// The unprivileged user of the image (see the Dockerfile).
const RUN_AS_USER: i64 = 65532;

/// A stage's workload, of whichever kind the stage runs as.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    Deployment(Deployment),
    StatefulSet(StatefulSet),
}

impl Workload {
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Workload::Deployment(d) => &d.metadata,
            Workload::StatefulSet(s) => &s.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// `Deployment` or `StatefulSet`.
    pub fn kind(&self) -> &'static str {
        match self {
            Workload::Deployment(_) => "Deployment",
            Workload::StatefulSet(_) => "StatefulSet",
        }
    }

    pub fn template(&self) -> &PodTemplateSpec {
        match self {
            Workload::Deployment(d) => &d.spec.as_ref().expect("built with a spec").template,
            Workload::StatefulSet(s) => &s.spec.as_ref().expect("built with a spec").template,
        }
    }

    pub fn replicas(&self) -> Option<i32> {
        match self {
            Workload::Deployment(d) => d.spec.as_ref()?.replicas,
            Workload::StatefulSet(s) => s.spec.as_ref()?.replicas,
        }
    }
}

/// Which kind of workload a stage runs as.
pub fn runs_as_stateful_set(input: &BuildInput, stage: Stage) -> bool {
    stage == Stage::Correlate || persistent_data(input, stage)
}

/// Whether the stage keeps its `--data` on a volume of its own per replica: ingest and
/// respond unless the platform asks for an `emptyDir`.
fn persistent_data(input: &BuildInput, stage: Stage) -> bool {
    matches!(stage, Stage::Ingest | Stage::Respond)
        && has_data_dir(input, stage)
        && data_volume(input, stage).is_none_or(|v| v.kind == DataVolumeKind::Persistent)
}

fn data_volume<'a>(
    input: &BuildInput<'a>,
    stage: Stage,
) -> Option<&'a kastell_crds::platform::DataVolume> {
    stage.settings(input.platform)?.data_volume.as_ref()
}

pub(super) fn workload(input: &BuildInput, stage: Stage, bundle: &Bundle) -> Workload {
    let platform = platform_name(input);
    let selector = LabelSelector {
        match_labels: Some(selector_labels(&platform, stage)),
        ..LabelSelector::default()
    };
    let stateful = runs_as_stateful_set(input, stage);
    let uses_volume_claim = needs_volume_claim(input, stage);
    let template = pod_template(input, stage, bundle, uses_volume_claim, stateful);
    if !stateful {
        return Workload::Deployment(Deployment {
            metadata: stage_metadata(input, stage),
            spec: Some(DeploymentSpec {
                replicas: Some(replicas(input, stage)),
                selector,
                // A ReadWriteOnce store cannot be attached to the new pod while the old one
                // still holds it.
                strategy: uses_volume_claim.then(|| DeploymentStrategy {
                    type_: Some("Recreate".into()),
                    ..DeploymentStrategy::default()
                }),
                template,
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        });
    }
    let claims = persistent_data(input, stage).then(|| vec![data_claim_template(input, stage)]);
    Workload::StatefulSet(StatefulSet {
        metadata: stage_metadata(input, stage),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas(input, stage)),
            selector,
            service_name: Some(stage_object_name(&platform, stage)),
            // The replicas do not depend on each other: start and replace them together.
            pod_management_policy: Some("Parallel".into()),
            persistent_volume_claim_retention_policy: claims.as_ref().map(|_| {
                // Deleted with the stage (and so with the platform); kept when scaling
                // down, so a replica scaled back up finds its journal or checkpoints.
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".into()),
                    when_scaled: Some("Retain".into()),
                }
            }),
            volume_claim_templates: claims,
            template,
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

fn pod_template(
    input: &BuildInput,
    stage: Stage,
    bundle: &Bundle,
    uses_volume_claim: bool,
    stateful: bool,
) -> PodTemplateSpec {
    let platform = platform_name(input);
    let mut pod_labels = stage_metadata(input, stage).labels.unwrap_or_default();
    pod_labels.extend(selector_labels(&platform, stage));
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(BTreeMap::from([(
                CONFIG_HASH_ANNOTATION.to_owned(),
                rollout_hash(stage, bundle),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(pod_spec(input, stage, uses_volume_claim, stateful)),
    }
}

/// The hash that rolls the stage's pods. Ingest carries the DetectionRules only to key
/// events by the correlations' group-by fields, and reloads its mounted bundle by itself
/// when they change; rolling it on every rule edit would restart its listeners and replay
/// its file Sensors for nothing more.
fn rollout_hash(stage: Stage, bundle: &Bundle) -> String {
    if stage != Stage::Ingest {
        return bundle_hash(bundle);
    }
    let without_rules = Bundle {
        entries: bundle
            .entries
            .iter()
            .filter(|(key, _)| !key.starts_with(super::bundle::RULE_KEY_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    bundle_hash(&without_rules)
}

/// One claim per replica, `data-<stage object>-<index>`, labelled like the platform's other
/// objects so the residency check finds the volumes bound to it.
fn data_claim_template(input: &BuildInput, stage: Stage) -> PersistentVolumeClaim {
    let settings = data_volume(input, stage);
    let size = settings
        .and_then(|v| v.size.clone())
        .unwrap_or_else(|| Quantity("1Gi".into()));
    let mut metadata = stage_metadata(input, stage);
    metadata.name = Some("data".into());
    metadata.namespace = None;
    // The StatefulSet owns the claims it makes (the retention policy); an owner on the
    // template would be copied into them and point at the platform instead.
    metadata.owner_references = None;
    PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: settings.and_then(|v| v.storage_class_name.clone()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), size)])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The embedded SQLite store allows one writer: one replica, whatever was asked.
fn replicas(input: &BuildInput, stage: Stage) -> i32 {
    let asked = stage
        .settings(input.platform)
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    if needs_volume_claim(input, stage) {
        asked.min(1)
    } else {
        asked
    }
}

/// Whether the stage gets a writable `--data`. Not respond on SQLite: the cases stage's
/// store is on a ReadWriteOnce claim it cannot share, and a store of its own would leave
/// it blind to the approvals made through the case API; failing to open the store says so
/// in its log instead.
fn has_data_dir(input: &BuildInput, stage: Stage) -> bool {
    !(stage == Stage::Respond && input.platform.spec.storage.kind == StorageKind::Sqlite)
}

fn needs_volume_claim(input: &BuildInput, stage: Stage) -> bool {
    stage == Stage::Cases && input.platform.spec.storage.kind == StorageKind::Sqlite
}

fn pod_spec(input: &BuildInput, stage: Stage, uses_volume_claim: bool, stateful: bool) -> PodSpec {
    let name = stage_object_name(&platform_name(input), stage);
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(input, stage),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    volumes.extend(
        super::wiring::secret_mounts(input, stage)
            .into_iter()
            .map(|m| m.volume),
    );
    if uses_volume_claim {
        volumes.push(Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: format!("{name}-data"),
                ..PersistentVolumeClaimVolumeSource::default()
            }),
            ..Volume::default()
        });
    } else if has_data_dir(input, stage) && !persistent_data(input, stage) {
        // The root filesystem is read-only and every stage may write to --data; without a
        // persistent volume what is kept there lives as long as the pod (docs/operator.md).
        volumes.push(Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
    }
    PodSpec {
        service_account_name: Some(name),
        automount_service_account_token: Some(true),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            fs_group: Some(RUN_AS_USER),
            seccomp_profile: Some(runtime_default()),
            ..PodSecurityContext::default()
        }),
        affinity: Some(region_affinity(input)),
        containers: vec![container(input, stage, stateful)],
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

/// Required, not preferred: a pod that cannot be placed in an allowed region stays
/// Pending, which is visible, rather than running somewhere it must not.
pub fn region_affinity(input: &BuildInput) -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: input.platform.spec.residency.region_label().to_owned(),
                        operator: "In".into(),
                        values: Some(input.regions.iter().cloned().collect()),
                    }]),
                    ..NodeSelectorTerm::default()
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn container(input: &BuildInput, stage: Stage, stateful: bool) -> Container {
    let image = input
        .platform
        .spec
        .workloads
        .as_ref()
        .and_then(|w| w.image.clone())
        .unwrap_or_else(|| input.default_image.to_owned());
    let mut ports = vec![ContainerPort {
        name: Some("http".into()),
        container_port: HTTP_PORT,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }];
    if stage == Stage::Ingest {
        ports.extend(input.sensor_ports().into_iter().map(|p| ContainerPort {
            name: Some(p.name),
            container_port: p.port,
            protocol: Some(p.protocol.into()),
            ..ContainerPort::default()
        }));
    }
    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    ];
    let secrets = super::wiring::secret_mounts(input, stage);
    let mut env = super::wiring::plain_env(input, stage);
    if stage == Stage::Correlate && stateful {
        env.extend(replica_binding(replicas(input, stage)));
    }
    for secret in secrets {
        mounts.push(secret.mount);
        env.extend(secret.env);
    }
    if has_data_dir(input, stage) {
        mounts.push(VolumeMount {
            name: "data".into(),
            mount_path: DATA_DIR.into(),
            ..VolumeMount::default()
        });
    }
    // With spec.tls the endpoint, probes included, is HTTPS only; the kubelet does not
    // verify the certificate and presents none, which the stage allows on the probe paths.
    let scheme = input.platform.spec.tls.as_ref().map(|_| "HTTPS");
    Container {
        name: stage.as_str().into(),
        image: Some(image),
        args: Some(
            [
                stage.as_str(),
                "--config",
                CONFIG_DIR,
                "--listen",
                "0.0.0.0:8080",
            ]
            .map(String::from)
            .to_vec(),
        ),
        ports: Some(ports),
        resources: Some(resources(input, stage)),
        env: (!env.is_empty()).then_some(env),
        liveness_probe: Some(probe("/healthz", scheme)),
        readiness_probe: Some(probe("/readyz", scheme)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            seccomp_profile: Some(runtime_default()),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

/// The correlate replica's share of the events partitions: its StatefulSet index (the
/// pod-index label, Kubernetes 1.28 and later) of the replica count (docs/cluster.md,
/// "Binding a replica"). A changed replica count changes the template, so every replica
/// restarts with its new share.
fn replica_binding(replicas: i32) -> [EnvVar; 2] {
    [
        EnvVar {
            name: "KASTELL_REPLICA_INDEX".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: "metadata.labels['apps.kubernetes.io/pod-index']".into(),
                }),
                ..EnvVarSource::default()
            }),
        },
        EnvVar {
            name: "KASTELL_REPLICAS".into(),
            value: Some(replicas.max(1).to_string()),
            value_from: None,
        },
    ]
}

fn resources(input: &BuildInput, stage: Stage) -> ResourceRequirements {
    if let Some(asked) = stage
        .settings(input.platform)
        .and_then(|s| s.resources.clone())
    {
        return asked;
    }
    let quantity = |q: &str| Quantity(q.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), quantity("100m")),
            ("memory".to_owned(), quantity("128Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), quantity("512Mi"))])),
        ..ResourceRequirements::default()
    }
}

fn probe(path: &str, scheme: Option<&str>) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            scheme: scheme.map(String::from),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// The cases stage's SQLite store, when the platform uses SQLite.
pub(super) fn cases_volume_claim(input: &BuildInput) -> Option<PersistentVolumeClaim> {
    if !needs_volume_claim(input, Stage::Cases) {
        return None;
    }
    let name = format!(
        "{}-data",
        stage_object_name(&platform_name(input), Stage::Cases)
    );
    Some(PersistentVolumeClaim {
        metadata: metadata(input, name, Stage::Cases),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity("1Gi".into()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    })
}
