//! SecOpsPlatform: one SOC instance in a namespace.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CommonStatus, SecretKeyRef};

/// One Kastell SOC instance: where it stores cases, how its stages talk, where its data
/// may live and where its configuration comes from.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kastell.eu",
    version = "v1alpha1",
    kind = "SecOpsPlatform",
    namespaced,
    status = "SecOpsPlatformStatus",
    shortname = "soc",
    category = "kastell",
    doc = "A Kastell security-operations platform instance",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Residency",
        type_ = "string",
        json_path = ".status.residencyCompliant"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SecOpsPlatformSpec {
    /// Where cases, alerts and the audit log are stored.
    #[serde(default)]
    pub storage: Storage,
    /// How the stages exchange events.
    #[serde(default)]
    pub bus: BusSpec,
    /// Where the platform's workloads and data may live.
    pub residency: Residency,
    /// TLS for listeners and for traffic between stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// A git repository the operator syncs the platform's resources from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    /// How long data is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// How alerts are grouped into cases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cases: Option<CaseGrouping>,
    /// The case store's API the operator mirrors the namespace's Case resources into;
    /// without it Cases are not mirrored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_store: Option<CaseStoreSpec>,
    /// Response safety: protected assets, kill switch, global rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<crate::playbook::ResponsePolicy>,
    /// The image, replicas and resources of the five stage workloads the operator runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<WorkloadsSpec>,
    /// Traffic from outside the platform that its NetworkPolicies let in: analysts' tools
    /// to the case API, a Prometheus to `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSpec>,
}

/// Who outside the platform's own pods may reach its endpoints. Without it the platform's
/// NetworkPolicies admit only the platform's pods (and the Sensors' listener ports).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// Peers (as in a NetworkPolicy's `from`: namespace and pod selectors, IP blocks) that
    /// may reach the cases stage's API on port 8080: the analysts' web page, an ingress
    /// controller, the operator's case mirroring.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cases_api_from: Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>,
    /// Namespace whose pods may scrape `/metrics` on port 8080 of every stage, e.g.
    /// `monitoring`. The port also serves `/healthz`, `/readyz` and, on the cases stage, the
    /// case API, which a NetworkPolicy cannot tell apart from `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_namespace: Option<String>,
    /// The scraping pods inside `metricsNamespace` (e.g. `app.kubernetes.io/name:
    /// prometheus`); default: every pod of that namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_pod_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
}

/// How the operator runs the platform's stages in the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadsSpec {
    /// Container image of the stages; default: the operator's `--stage-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Settings of the ingest stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest: Option<StageSettings>,
    /// Settings of the correlate (detection) stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlate: Option<StageSettings>,
    /// Settings of the enrich stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrich: Option<StageSettings>,
    /// Settings of the cases stage (one replica with `sqlite` storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cases: Option<StageSettings>,
    /// Settings of the respond stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respond: Option<StageSettings>,
}

/// Replicas and compute resources of one stage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageSettings {
    /// Number of pods; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: Option<i32>,
    /// CPU and memory requests and limits; default: requests 100m CPU and 128Mi memory,
    /// a 512Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// Where the ingest and respond stages keep their `--data` (ingest's file-tail
    /// checkpoints, respond's side-effect journal); default: a persistent volume per
    /// replica (the stage runs as a StatefulSet). Ignored on the other stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_volume: Option<DataVolume>,
}

/// The volume behind a stage's `--data` directory.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataVolume {
    /// `persistent` (a PersistentVolumeClaim per replica, kept across pod restarts and
    /// deleted with the stage) or `emptyDir` (lost with the pod).
    #[serde(default, rename = "type")]
    pub kind: DataVolumeKind,
    /// Size of each claim; default 1Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    /// StorageClass of the claims; default: the cluster's default class. Choose one whose
    /// volumes are in the allowed regions (ResidencyCompliant checks the bound volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DataVolumeKind {
    #[default]
    Persistent,
    EmptyDir,
}

/// Case-store backend.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// `sqlite` (embedded, one replica of the cases stage) or `postgresql`.
    #[serde(default, rename = "type")]
    pub kind: StorageKind,
    /// Connection settings when `type` is `postgresql`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgresql: Option<PostgresSpec>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    #[default]
    Sqlite,
    Postgresql,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSpec {
    /// Host name or IP address of the PostgreSQL server.
    #[schemars(regex(
        pattern = r"^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*|[0-9A-Fa-f:.]+)$"
    ))]
    pub host: String,
    /// Port of the PostgreSQL server.
    #[serde(default = "default_postgres_port")]
    pub port: u16,
    /// Database name.
    pub database: String,
    /// Secret key holding the connection password; the user is in `user`.
    pub password_secret: SecretKeyRef,
    /// Database user.
    pub user: String,
    /// How the server's certificate is checked; the connection is always TLS (sqlx with
    /// rustls, docs/cluster.md says which TLS versions).
    #[serde(default)]
    pub ssl_mode: PostgresSslMode,
    /// Secret whose `ca.crt` key holds the CA certificates (PEM) that signed the server's
    /// certificate; without it, the Mozilla roots bundled with the stages are trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<String>,
}

/// libpq's `sslmode`, restricted to the modes that verify the server.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresSslMode {
    /// The certificate chains to a trusted CA and names `host`.
    #[default]
    VerifyFull,
    /// The certificate chains to a trusted CA; its names are not checked.
    VerifyCa,
}

impl PostgresSslMode {
    /// The `sslmode` value of a connection URL.
    pub fn as_str(self) -> &'static str {
        match self {
            PostgresSslMode::VerifyFull => "verify-full",
            PostgresSslMode::VerifyCa => "verify-ca",
        }
    }
}

fn default_postgres_port() -> u16 {
    5432
}

/// Event-bus backend.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BusSpec {
    /// `in-process` (all stages in one process) or `nats` (JetStream).
    #[serde(default, rename = "type")]
    pub kind: BusKind,
    /// NATS server URL when `type` is `nats`, e.g. `tls://nats.soc.svc:4222`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Secret key holding NATS credentials (a .creds file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<SecretKeyRef>,
    /// Secret key holding `user:password` on its first line, for a NATS server that
    /// authenticates users by password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_password_secret: Option<SecretKeyRef>,
    /// Secret key holding a NATS authentication token on its first line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<SecretKeyRef>,
    /// TLS 1.3 to the NATS server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BusTls>,
    /// Partitions of the events topic on NATS (default 8): events are keyed by the
    /// correlation rules' shared `group-by` fields, and each correlate replica consumes
    /// its share of the partitions. Every stage must see the same number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub event_partitions: Option<u32>,
}

/// TLS to the NATS server, from a cert-manager compatible Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BusTls {
    /// Secret whose `ca.crt` key holds the CA certificates (PEM) that signed the NATS
    /// server's certificate.
    pub secret_name: String,
    /// Also present the Secret's `tls.crt` and `tls.key` as a client certificate, for a
    /// NATS server that verifies clients.
    #[serde(default)]
    pub client_certificate: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BusKind {
    #[default]
    InProcess,
    Nats,
}

/// Data-residency policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Residency {
    /// A jurisdiction whose built-in region catalogue applies (EU or EEA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<Jurisdiction>,
    /// Explicit region values (of the `regionLabel` node label) allowed, in addition to
    /// the jurisdiction's catalogue.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// Host names outbound connections may go to (feeds, webhooks, git remotes, mail
    /// servers, and NATS and PostgreSQL servers outside the cluster).
    /// A leading `*.` allows every subdomain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// CIDR networks outbound connections may go to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_networks: Vec<String>,
    /// The node label whose value is the node's region, on which every workload gets a
    /// required node affinity. The default lives under `node-restriction.kubernetes.io/`,
    /// which a kubelet cannot set on its own node, so a compromised node cannot claim to
    /// be in an allowed region; `topology.kubernetes.io/region` (set by cloud providers,
    /// but also settable by kubelets) is the weaker alternative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_label: Option<String>,
}

/// The node label holding the region when `spec.residency.regionLabel` is not set.
pub const DEFAULT_REGION_LABEL: &str = "node-restriction.kubernetes.io/region";

impl Residency {
    /// The node label the region is read from.
    pub fn region_label(&self) -> &str {
        self.region_label.as_deref().unwrap_or(DEFAULT_REGION_LABEL)
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Jurisdiction {
    #[serde(rename = "EU")]
    Eu,
    #[serde(rename = "EEA")]
    Eea,
}

/// TLS of the stages' HTTP endpoints (the case API, /healthz, /readyz, /metrics).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret of type kubernetes.io/tls with the serving certificate and key (`tls.crt`,
    /// `tls.key`) and, for `mutual`, the CA that signs client certificates (`ca.crt`), as
    /// cert-manager writes it. Rotated files are served without a restart.
    pub secret_name: String,
    /// Require a client certificate signed by the Secret's `ca.crt` on every path except
    /// `/healthz` and `/readyz` (which the kubelet's probes reach without one).
    #[serde(default)]
    pub mutual: bool,
}

/// A git repository holding the platform's resources.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSource {
    /// Repository URL: `https://`, `ssh://user@host/path` or `file://`.
    pub url: String,
    /// Branch to follow; ignored when `tag` or `commit` is set; without any of the three,
    /// the remote's `HEAD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Tag to follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Exact commit to apply (found in the remote's branches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Directory inside the repository whose `.yaml`/`.yml` files (all of them, in every
    /// subdirectory) are applied; default: the whole repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How often to fetch and re-apply (which also takes back drift), e.g. `1m`; at
    /// least 5s.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub interval: String,
    /// Secret with HTTPS (`username`, `password`; a token goes in `password`) or SSH
    /// (`identity`, a private key; `known_hosts`, the server's keys) credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// The keys one of which must have signed the commit: SSH public keys, as
    /// `allowed_signers` lines (`principal ssh-ed25519 AAAA...`) or bare `ssh-ed25519
    /// AAAA...` keys (`git commit -S` with `gpg.format=ssh`), and OpenPGP public keys, one
    /// armored block (`gpg --armor --export`) per entry (`git commit -S` with gpg); a commit
    /// that is unsigned or signed by another key is not applied. Empty means signatures are
    /// not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_signers: Vec<String>,
    /// Secret whose `token` key is the shared secret of the push webhook
    /// (`/hooks/git/{namespace}/{name}` on the operator); without it the webhook is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// What happens to the resources the sync applied when `spec.git` is removed: `true`
    /// (the default) deletes them, `false` leaves them in place, no longer tracked. The
    /// value of the last successful sync counts, since the removed `spec.git` is gone.
    #[serde(default = "default_prune_on_removal")]
    pub prune_on_removal: bool,
}

fn default_prune_on_removal() -> bool {
    true
}

fn default_interval() -> String {
    "1m".into()
}

/// Retention periods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// How long alerts are kept, e.g. `90d`.
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub alerts: String,
    /// How long closed cases are kept.
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub cases: String,
    /// How long the personal fields of a closed case (user names, e-mail addresses, host
    /// owners, free-text descriptions, in the case, its alerts, actions and audit states)
    /// are kept after it closes; then they are erased (docs/gdpr.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub personal_data: Option<String>,
}

/// How alerts become cases.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaseGrouping {
    /// Alerts of the same rule on the same host within this window of event time join
    /// one case.
    #[serde(default = "default_grouping_window")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub grouping_window: String,
}

fn default_grouping_window() -> String {
    "1h".into()
}

/// How the operator reaches the cases API to mirror Case resources into the store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaseStoreSpec {
    /// Base URL of the cases API; default: the platform's cases stage Service,
    /// `https://<platform>-cases.<namespace>.svc:8080`. Plain `http://` only to loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Secret key holding an API key (`kastell apikey create --role lead --tlp red`): the
    /// lead role may assign, set TLP/PAP and close, which a Case may declare.
    pub api_key_secret: SecretKeyRef,
    /// Secret key holding the PEM CA certificate(s) the API's certificate is checked
    /// against, in addition to the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKeyRef>,
}

/// Observed state of a SecOpsPlatform.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecOpsPlatformStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Whether every workload and outbound endpoint satisfies the residency policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency_compliant: Option<bool>,
    /// What the operator's git sync last did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSyncStatus>,
    /// The case store whose case ids the namespace's Cases hold; kept while
    /// `CaseStoreChanged` is True (docs/operator.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_store_url: Option<String>,
}

/// The state of the operator's git sync of a platform.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSyncStatus {
    /// The commit last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// When that commit was last applied (RFC 3339); every interval re-applies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    /// How many resources the last apply holds in its inventory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<u32>,
    /// Why the last sync failed; absent after a successful one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
