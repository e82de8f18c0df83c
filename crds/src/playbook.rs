//! Playbook: what the respond stage does when alerts and cases appear, and who must
//! approve it first.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CommonStatus, Severity};

/// Ordered response steps run on matching alerts and cases, with human approval where
/// the playbook asks for it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kastell.eu",
    version = "v1alpha1",
    kind = "Playbook",
    namespaced,
    status = "PlaybookStatus",
    shortname = "pb",
    category = "kastell",
    doc = "A response playbook run by Kastell's respond stage",
    printcolumn(name = "DryRun", type_ = "boolean", json_path = ".spec.dryRun")
)]
#[serde(rename_all = "camelCase")]
pub struct PlaybookSpec {
    /// When the playbook runs.
    pub trigger: Trigger,
    /// The steps, run in order.
    #[schemars(length(min = 1))]
    pub steps: Vec<Step>,
    /// Record what would be done without doing it.
    #[serde(default)]
    pub dry_run: bool,
    /// Upper bound on actions started by this playbook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// What makes a playbook run. All given criteria must hold; a list matches when any of
/// its entries does. Events without an alert of their own (severity raised, observable
/// added, case closed, a manual run) are matched against the case's latest alert.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// Case events that start the playbook; defaults to `case-opened`. A playbook runs
    /// on a manual request from the case API only when it lists `manual`.
    #[serde(default = "default_trigger_events")]
    pub events: Vec<TriggerEvent>,
    /// Sigma rule ids the alert must come from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rule_ids: Vec<String>,
    /// Rule tags (e.g. `attack.t1110`), compared case-insensitively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rule_tags: Vec<String>,
    /// MITRE ATT&CK technique ids (`T1110`) the rule must be tagged with
    /// (`attack.t1110`); a technique also matches its sub-techniques (`attack.t1110.001`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub techniques: Vec<String>,
    /// Sensor resources (their name, as the alert's `sensor`) the alert must come from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensors: Vec<String>,
    /// When set, the alert must carry a threat-intel match (of one of `feeds`, of one of
    /// `types`, when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_match: Option<IntelMatchTrigger>,
    /// For `observable-added` and manual runs on an observable: its types (`ip`,
    /// `domain`, `url`, `sha256`...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observable_types: Vec<String>,
    /// The lowest alert level that triggers (for case events: the case's severity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_level: Option<Severity>,
}

/// The threat-intel matches an alert must carry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntelMatchTrigger {
    /// IntelFeed resources (`namespace/name`) the match must come from; any when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feeds: Vec<String>,
    /// Observable types the match must be on (`ip`, `domain`...); any when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
}

fn default_trigger_events() -> Vec<TriggerEvent> {
    vec![TriggerEvent::CaseOpened]
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerEvent {
    /// A new case was opened.
    CaseOpened,
    /// An alert joined an existing case.
    AlertAttached,
    /// A case's severity went up.
    SeverityRaised,
    /// An observable was added to a case.
    ObservableAdded,
    /// A case was closed.
    CaseClosed,
    /// A person asked for the playbook through the case API.
    Manual,
}

/// One step of a playbook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Name of the step, unique within the playbook.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// What the step does.
    #[serde(rename = "type")]
    pub kind: StepKind,
    /// Whether a person must approve the step before it runs, who, and until when.
    #[serde(default, deserialize_with = "approval_or_old_form")]
    pub approval: Approval,
    /// For `log`: the message, a template over the alert and case (`{{ alert.rule.title }}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For `webhook`: where and what to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    /// For `notify`: a chat message or an e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// For `http`: a generic HTTPS call, a StackStorm webhook or an AWX/AAP job launch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCall>,
    /// For `wazuh-active-response`: the Wazuh server API call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wazuh: Option<WazuhActiveResponse>,
    /// For `enrich`: observables looked up in the intel store or a Cortex analyzer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrich: Option<Enrich>,
    /// For `case`: an operation on the triggering case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<CaseOperation>,
    /// For `quarantine-pod`: the pod to isolate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<Quarantine>,
    /// A template condition (`alert.rule.level == "critical"`); the step runs only when
    /// it holds. Without one the step always runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Time allowed for one attempt of the step.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: u32,
    /// Further attempts after a failed one.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    pub retries: u32,
    /// Wait before the first retry, doubled before each next one.
    #[serde(default = "default_backoff")]
    #[schemars(range(min = 1, max = 600))]
    pub backoff_seconds: u32,
}

fn default_timeout() -> u32 {
    10
}

fn default_backoff() -> u32 {
    2
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// Write a structured log record (and the action's result) with a templated message.
    Log,
    /// POST a JSON document to an HTTPS endpoint.
    Webhook,
    /// Send a chat message (Mattermost, Slack, Matrix, Microsoft Teams) or an e-mail.
    Notify,
    /// Call an HTTPS API: generic, StackStorm webhook, AWX/AAP job-template launch.
    Http,
    /// Run a Wazuh active response (block an address, run a command) on agents.
    WazuhActiveResponse,
    /// Look observables up in the intel store or run a Cortex analyzer on them.
    Enrich,
    /// Change the triggering case: severity, assignee, task, observable, close.
    Case,
    /// Label a pod and cut its traffic with a NetworkPolicy.
    QuarantinePod,
}

/// Whether a step waits for a person, who may decide, and until when.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// `never` (the default): the step runs at once; `always`: it waits for a person;
    /// `min-level`: it waits when the triggering level is at least `minLevel`, else runs.
    #[serde(default)]
    pub policy: ApprovalPolicy,
    /// For `min-level`: the lowest level that needs a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_level: Option<Severity>,
    /// The roles that may approve or reject the step; when empty, every role the case API
    /// lets decide on actions (responder, lead, admin).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<ApproverRole>,
    /// How long the step may wait (`30m`, `4h`); approving it later is refused. Without
    /// one a pending step waits until someone decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_after: Option<String>,
}

/// Reads `approval` as the object it is, and answers the scalar form of earlier versions
/// (`approval: required` / `approval: none`) with the object to write instead. The old
/// form is refused rather than accepted as an alias: the CRD's structural schema can only
/// declare one type for the field, so a cluster's API server would reject it anyway, and
/// `kastell validate` should fail where the cluster would.
fn approval_or_old_form<'de, D>(deserializer: D) -> Result<Approval, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(old) => {
            let instead = match old.as_str() {
                "required" | "always" => "`approval: {policy: always}`",
                "none" | "never" => "`approval: {policy: never}` (or no `approval` at all)",
                _ => "`approval: {policy: always | min-level | never, ...}`",
            };
            Err(D::Error::custom(format!(
                "`approval: {old}` is no longer accepted; approval is an object now: write \
                 {instead}"
            )))
        }
        value => Approval::deserialize(value).map_err(D::Error::custom),
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalPolicy {
    /// The step runs as soon as it is triggered.
    #[default]
    Never,
    /// The step waits on its case until a person approves it.
    Always,
    /// The step waits when the triggering alert's level (a case event's: the case's
    /// severity) is at least `minLevel`.
    MinLevel,
}

/// A case-API role that may decide on a step.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ApproverRole {
    Responder,
    Lead,
    Admin,
}

impl ApproverRole {
    /// The role's name, as the case API's keys and tokens carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            ApproverRole::Responder => "responder",
            ApproverRole::Lead => "lead",
            ApproverRole::Admin => "admin",
        }
    }
}

/// An HTTP call made by a `webhook` step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// HTTPS URL (plain HTTP only to loopback addresses).
    #[schemars(length(min = 1))]
    pub url: String,
    /// Extra request headers; values are templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The JSON body; string values are templates. Defaults to a summary of the alert
    /// and case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub body: Option<serde_json::Value>,
}

/// A secret a step uses, resolved when the step runs and never written to actions,
/// results or logs: the name of an environment variable of the respond workload (set
/// from a Kubernetes Secret with `envFrom`).
pub type SecretName = String;

/// A notification.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notify {
    /// The message format.
    pub channel: NotifyChannel,
    /// Chat: the incoming-webhook URL (Mattermost, Slack, Teams) or the homeserver's
    /// base URL (Matrix). Not a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Matrix: the room id (`!abc:example.eu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Matrix: the access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<SecretName>,
    /// E-mail: the SMTP submission server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<Smtp>,
    /// E-mail: recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// E-mail: the subject, a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyChannel {
    Mattermost,
    Slack,
    Matrix,
    Teams,
    Email,
}

/// An SMTP submission server; the connection is upgraded with STARTTLS (required).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Smtp {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// The sender address.
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_secret: Option<SecretName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretName>,
}

fn default_smtp_port() -> u16 {
    587
}

/// An HTTPS call.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCall {
    /// HTTPS URL (plain HTTP only to loopback addresses); for `awx`, the controller's
    /// base URL. Not a template.
    #[schemars(length(min = 1))]
    pub url: String,
    #[serde(default)]
    pub method: HttpMethod,
    /// Request headers; values are templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Request headers whose values are secrets: header name to secret name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_headers: BTreeMap<String, SecretName>,
    /// The JSON body; string values are templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub body: Option<serde_json::Value>,
    /// Launch an Ansible AWX/AAP job template and wait for the job instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awx: Option<AwxLaunch>,
    /// The request that undoes this call (unblocking what it blocked), recorded beside the
    /// action and sent when a person releases it through the case API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<HttpRelease>,
}

/// The undo request of an `http` step: rendered with the step, sent on release.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRelease {
    /// HTTPS URL (plain HTTP only to loopback addresses). Not a template.
    #[schemars(length(min = 1))]
    pub url: String,
    #[serde(default)]
    pub method: HttpMethod,
    /// Request headers; values are templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Request headers whose values are secrets: header name to secret name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_headers: BTreeMap<String, SecretName>,
    /// The JSON body; string values are templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub body: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    #[default]
    Post,
    Put,
    Patch,
    Delete,
}

/// `POST /api/v2/job_templates/{id}/launch/`, then `GET /api/v2/jobs/{job}/` until
/// the job finishes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwxLaunch {
    #[schemars(range(min = 1))]
    pub job_template: u32,
    /// Extra variables for the job; string values are templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub extra_vars: Option<serde_json::Value>,
    /// The OAuth2 / personal access token.
    pub token_secret: SecretName,
    /// Seconds between polls of the job.
    #[serde(default = "default_poll")]
    #[schemars(range(min = 1, max = 300))]
    pub poll_seconds: u32,
}

fn default_poll() -> u32 {
    2
}

/// A Wazuh active response: `PUT /active-response?agents_list=...`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WazuhActiveResponse {
    /// The Wazuh server API (`https://wazuh-manager:55000`). Not a template.
    pub url: String,
    /// The command, as configured on the manager (`!firewall-drop`).
    pub command: String,
    /// Agent ids; templates (`{{ alert.events.0.agent.id }}`).
    #[schemars(length(min = 1))]
    pub agents: Vec<String>,
    /// The address the command acts on, a template; sent as the alert's `srcip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srcip: Option<String>,
    /// Command arguments; templates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arguments: Vec<String>,
    pub username_secret: SecretName,
    pub password_secret: SecretName,
}

/// Observables to enrich.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Enrich {
    /// The observables, each a type and a templated value.
    #[schemars(length(min = 1))]
    pub observables: Vec<ObservableTemplate>,
    /// Submit them to a Cortex analyzer instead of the intel store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cortex: Option<Cortex>,
}

/// An observable: a type (`ip`, `domain`, `hash`, `url`, ...) and a value template.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservableTemplate {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// A Cortex analyzer run: `POST /api/analyzer/{id}/run`, then the job's report.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cortex {
    /// Cortex's base URL. Not a template.
    pub url: String,
    /// The analyzer id.
    pub analyzer: String,
    pub api_key_secret: SecretName,
    /// Seconds between polls of the job.
    #[serde(default = "default_poll")]
    #[schemars(range(min = 1, max = 300))]
    pub poll_seconds: u32,
}

/// An operation on the case, carried out by the cases stage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaseOperation {
    pub op: CaseOp,
    /// `set-severity`: the new severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// `assign`: the assignee, a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// `add-task`: the task's title, a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// `add-observable`: the observable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observable: Option<ObservableTemplate>,
    /// `close-false-positive`: the reason, a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CaseOp {
    SetSeverity,
    Assign,
    AddTask,
    AddObservable,
    CloseFalsePositive,
}

/// The pod to quarantine; both are templates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quarantine {
    pub namespace: String,
    pub pod: String,
}

/// Platform-wide response safety: what no action may touch, the kill switch and the
/// global budget.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResponsePolicy {
    /// Every action runs as a dry run, recording what it would have done.
    #[serde(default)]
    pub kill_switch: bool,
    /// Actions started per hour by all playbooks together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_actions_per_hour: Option<u32>,
    /// Assets no action ever touches.
    #[serde(default)]
    pub protected: ProtectedAssets,
}

/// Assets refused as action targets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProtectedAssets {
    /// Address ranges in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Host names, compared case-insensitively; `*.example.eu` matches subdomains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Kubernetes namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Wazuh agent ids or names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
}

/// Limits on how often a playbook acts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Actions started per hour at most; later ones fail with a rate-limit reason.
    #[schemars(range(min = 1))]
    pub max_actions_per_hour: u32,
}

/// Observed state of a Playbook.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlaybookStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
}
