//! The playbook set the stage runs: Playbook resources checked and compiled (trigger,
//! step templates, webhook targets), and the rendering of a step into the parameters of
//! the action that records it.
//!
//! A playbook that fails a check is reported with its file, name and every reason, and
//! left out; the others load.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use kastell_core::approval::ApprovalTerms;
use kastell_core::store::CaseRecord;
use kastell_core::{Alert, Level};
use kastell_crds::playbook::{ApprovalPolicy, Step, StepKind};
use kastell_crds::{Loaded, Playbook};
use reqwest::header::HeaderName;
use reqwest::Url;
use serde_json::{json, Map, Value};

use crate::runner::webhook::check_url;
use crate::template::{JsonTemplate, Template, TemplateError};
use crate::trigger::{CompiledTrigger, TriggeringEvent};

/// The longest step name, as the CRD schema allows.
const MAX_STEP_NAME: usize = 63;
/// The longest time a step may take, as the CRD schema allows.
const MAX_TIMEOUT_SECONDS: u32 = 3600;
/// The most retries a step may ask for, as the CRD schema allows.
const MAX_RETRIES: u32 = 10;
/// The longest first backoff, as the CRD schema allows.
const MAX_BACKOFF_SECONDS: u32 = 600;

/// The `text` of a webhook step without a `message`.
pub(crate) const DEFAULT_TEXT: &str = "Kastell case {{ case.id }}: {{ alert.rule.title }} \
     ({{ alert.rule.level }}) on {{ alert.host | default('unknown host') }}";

/// A playbook that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: playbook {key}: {reason}", file.display())]
pub struct InvalidPlaybook {
    /// The file the playbook was read from.
    pub file: PathBuf,
    /// `namespace/name`.
    pub key: String,
    /// Every problem found, separated by `; `.
    pub reason: String,
}

/// The playbooks the stage runs, in the order they were loaded.
#[derive(Debug, Clone, Default)]
pub struct PlaybookSet {
    playbooks: Vec<CompiledPlaybook>,
}

impl PlaybookSet {
    /// Compiles every valid playbook; the invalid ones are logged and returned.
    pub fn compile(
        loaded: impl IntoIterator<Item = Loaded<Playbook>>,
    ) -> (Self, Vec<InvalidPlaybook>) {
        let mut playbooks: Vec<CompiledPlaybook> = Vec::new();
        let mut invalid = Vec::new();
        for resource in loaded {
            let key = resource.key();
            let result = match playbooks.iter().find(|p| p.key == key) {
                Some(first) => Err(format!(
                    "a playbook of the same namespace/name was loaded from {}",
                    first.file.display()
                )),
                None => CompiledPlaybook::compile(&key, &resource),
            };
            match result {
                Ok(playbook) => playbooks.push(playbook),
                Err(reason) => {
                    let error = InvalidPlaybook {
                        file: resource.file.clone(),
                        key,
                        reason,
                    };
                    tracing::warn!(
                        file = %error.file.display(),
                        playbook = %error.key,
                        reason = %error.reason,
                        "invalid playbook skipped"
                    );
                    invalid.push(error);
                }
            }
        }
        (PlaybookSet { playbooks }, invalid)
    }

    pub fn len(&self) -> usize {
        self.playbooks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.playbooks.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &CompiledPlaybook> {
        self.playbooks.iter()
    }

    /// The loaded playbooks as the case API checks manual runs against them
    /// (`ApiState::with_playbooks`).
    pub fn catalog(&self) -> kastell_core::response::PlaybookCatalog {
        let mut catalog = kastell_core::response::PlaybookCatalog::default();
        for playbook in &self.playbooks {
            catalog.insert(playbook.key.clone(), playbook.trigger.manual_trigger());
        }
        catalog
    }

    /// The playbook with this `namespace/name`.
    pub fn get(&self, key: &str) -> Option<&CompiledPlaybook> {
        self.playbooks.iter().find(|p| p.key == key)
    }

    /// The playbooks the event starts, in load order.
    pub fn triggered_by<'a>(
        &'a self,
        event: &'a TriggeringEvent<'a>,
    ) -> impl Iterator<Item = &'a CompiledPlaybook> + 'a {
        self.playbooks
            .iter()
            .filter(|p| p.trigger.matches(&p.key, event))
    }
}

/// A checked playbook.
#[derive(Debug, Clone)]
pub struct CompiledPlaybook {
    /// `namespace/name`, written on every action.
    pub key: String,
    pub file: PathBuf,
    pub trigger: CompiledTrigger,
    pub steps: Vec<CompiledStep>,
    pub dry_run: bool,
    pub max_actions_per_hour: Option<u32>,
}

impl CompiledPlaybook {
    fn compile(key: &str, resource: &Loaded<Playbook>) -> Result<Self, String> {
        let spec = &resource.object.spec;
        let mut reasons = Vec::new();
        let trigger = CompiledTrigger::compile(&spec.trigger).map_err(|r| reasons.push(r));
        if spec.steps.is_empty() {
            reasons.push("steps is empty".into());
        }
        let mut names = HashSet::new();
        let mut steps = Vec::new();
        for step in &spec.steps {
            if !names.insert(step.name.as_str()) {
                reasons.push(format!("step name {:?} is used twice", step.name));
            }
            match CompiledStep::compile(step) {
                Ok(compiled) => steps.push(compiled),
                Err(problems) => reasons.extend(
                    problems
                        .into_iter()
                        .map(|p| format!("step {:?}: {p}", step.name)),
                ),
            }
        }
        if spec
            .rate_limit
            .as_ref()
            .is_some_and(|r| r.max_actions_per_hour == 0)
        {
            reasons.push("rateLimit.maxActionsPerHour must be at least 1".into());
        }
        match trigger {
            Ok(trigger) if reasons.is_empty() => Ok(CompiledPlaybook {
                key: key.to_owned(),
                file: resource.file.clone(),
                trigger,
                steps,
                dry_run: spec.dry_run,
                max_actions_per_hour: spec.rate_limit.as_ref().map(|r| r.max_actions_per_hour),
            }),
            _ => Err(reasons.join("; ")),
        }
    }
}

/// A step's approval policy, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRule {
    pub policy: ApprovalPolicy,
    pub min_level: Option<Level>,
    pub roles: Vec<String>,
    pub expires_after: Option<Duration>,
}

impl ApprovalRule {
    fn compile(step: &Step, problems: &mut Vec<String>) -> Self {
        let approval = &step.approval;
        let min_level = approval
            .min_level
            .and_then(|severity| severity.as_str().parse::<Level>().ok());
        match (approval.policy, min_level) {
            (ApprovalPolicy::MinLevel, None) => {
                problems.push("approval.policy min-level needs approval.minLevel".into())
            }
            (ApprovalPolicy::Always | ApprovalPolicy::Never, Some(_)) => problems
                .push("approval.minLevel is only read with approval.policy min-level".into()),
            _ => {}
        }
        let expires_after = approval.expires_after.as_deref().and_then(|text| {
            match kastell_crds::common::parse_duration(text) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => {
                    problems.push("approval.expiresAfter must be longer than zero".into());
                    None
                }
                Err(e) => {
                    problems.push(format!("approval.expiresAfter: {e}"));
                    None
                }
            }
        });
        if approval.policy == ApprovalPolicy::Never
            && (!approval.roles.is_empty() || expires_after.is_some())
        {
            problems.push("approval.roles and expiresAfter need a policy other than never".into());
        }
        ApprovalRule {
            policy: approval.policy,
            min_level,
            roles: approval
                .roles
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect(),
            expires_after,
        }
    }

    /// Whether the step waits for a person when the trigger has `level`.
    pub fn required_at(&self, level: Level) -> bool {
        match self.policy {
            ApprovalPolicy::Never => false,
            ApprovalPolicy::Always => true,
            ApprovalPolicy::MinLevel => self.min_level.is_some_and(|min| level >= min),
        }
    }

    /// The terms written on an action that waits, from `now`.
    pub fn terms(&self, level: Level, now: chrono::DateTime<chrono::Utc>) -> ApprovalTerms {
        ApprovalTerms {
            policy: match self.policy {
                ApprovalPolicy::Never => "never",
                ApprovalPolicy::Always => "always",
                ApprovalPolicy::MinLevel => "min-level",
            }
            .to_owned(),
            level: Some(level.as_str().to_owned()),
            roles: self.roles.clone(),
            expires_at: self
                .expires_after
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .and_then(|d| now.checked_add_signed(d)),
        }
    }
}

/// A checked step: its templates parsed, its targets allowed.
#[derive(Debug, Clone)]
pub struct CompiledStep {
    pub name: String,
    pub kind: StepKind,
    pub approval: ApprovalRule,
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    condition: Option<Template>,
    action: StepTemplate,
}

#[derive(Debug, Clone)]
enum StepTemplate {
    Log {
        message: Template,
    },
    Webhook {
        url: Url,
        headers: Vec<(HeaderName, Template)>,
        body: Option<JsonTemplate>,
        text: Template,
    },
    /// The typed steps: `fixed` is kept as written (URLs, secret names, commands: what
    /// alert data must never choose), `templated` is rendered, and both together are
    /// the action's `config`.
    Typed {
        fixed: Map<String, Value>,
        templated: JsonTemplate,
    },
}

impl CompiledStep {
    fn compile(step: &Step) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        if step.name.is_empty() || step.name.len() > MAX_STEP_NAME {
            problems.push(format!("name must be 1 to {MAX_STEP_NAME} characters"));
        }
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&step.timeout_seconds) {
            problems.push(format!(
                "timeoutSeconds must be 1 to {MAX_TIMEOUT_SECONDS}, not {}",
                step.timeout_seconds
            ));
        }
        let message = step
            .message
            .as_deref()
            .map(Template::parse)
            .transpose()
            .map_err(|e| problems.push(format!("message: {e}")))
            .ok()
            .flatten();
        let condition = step
            .condition
            .as_deref()
            .map(|c| Template::parse(&format!("{{% if ({c}) %}}true{{% endif %}}")))
            .transpose()
            .map_err(|e| problems.push(format!("condition: {e}")))
            .ok()
            .flatten();
        if step.retries > MAX_RETRIES {
            problems.push(format!("retries must be at most {MAX_RETRIES}"));
        }
        if !(1..=MAX_BACKOFF_SECONDS).contains(&step.backoff_seconds) {
            problems.push(format!("backoffSeconds must be 1 to {MAX_BACKOFF_SECONDS}"));
        }
        check_blocks(step, &mut problems);
        let approval = ApprovalRule::compile(step, &mut problems);
        let action = match step.kind {
            StepKind::Log => compile_log(step, message, &mut problems),
            StepKind::Webhook => compile_webhook(step, message, &mut problems),
            _ => crate::steps::compile(step, &mut problems).and_then(|(fixed, templated)| {
                JsonTemplate::parse(&templated)
                    .map_err(|e| problems.push(e.to_string()))
                    .ok()
                    .map(|templated| StepTemplate::Typed { fixed, templated })
            }),
        };
        match action {
            Some(action) if problems.is_empty() => Ok(CompiledStep {
                name: step.name.clone(),
                kind: step.kind,
                approval,
                timeout: Duration::from_secs(step.timeout_seconds.into()),
                retries: step.retries,
                backoff: Duration::from_secs(step.backoff_seconds.into()),
                condition,
                action,
            }),
            _ => Err(problems),
        }
    }

    /// Whether the step's condition holds over `context`; `true` without one.
    ///
    /// # Errors
    /// When the condition fails to render.
    pub fn condition_holds(&self, context: &Value) -> Result<bool, TemplateError> {
        match &self.condition {
            Some(condition) => Ok(condition.render(context)? == "true"),
            None => Ok(true),
        }
    }

    /// The `step_type` written on the step's actions, which picks the runner.
    pub fn step_type(&self) -> &'static str {
        step_type(self.kind)
    }

    /// Renders the step's templates over `context` (see [`template_context`]) into the
    /// parameters of its action: everything the runner needs, so an action approved
    /// hours later runs exactly what the analyst saw.
    ///
    /// # Errors
    /// The first template that failed to render.
    pub fn render_params(&self, context: &Value, dry_run: bool) -> Result<Value, TemplateError> {
        let mut params = Map::new();
        params.insert("dry_run".into(), dry_run.into());
        params.insert("timeout_seconds".into(), self.timeout.as_secs().into());
        params.insert("retries".into(), self.retries.into());
        params.insert("backoff_seconds".into(), self.backoff.as_secs().into());
        match &self.action {
            StepTemplate::Typed { fixed, templated } => {
                // The template is always an object (built by `steps::compile`).
                let mut config = match templated.render(context)? {
                    Value::Object(config) => config,
                    _ => Map::new(),
                };
                config.extend(fixed.clone());
                params.insert("config".into(), config.into());
            }
            StepTemplate::Log { message } => {
                params.insert("message".into(), message.render(context)?.into());
            }
            StepTemplate::Webhook {
                url,
                headers,
                body,
                text,
            } => {
                let mut rendered = Map::new();
                for (name, value) in headers {
                    rendered.insert(name.as_str().to_owned(), value.render(context)?.into());
                }
                let text = text.render(context)?;
                let body = match body {
                    Some(body) => body.render(context)?,
                    None => default_body(context, &text),
                };
                params.insert("url".into(), url.as_str().into());
                params.insert("headers".into(), rendered.into());
                params.insert("body".into(), body);
            }
        }
        Ok(params.into())
    }
}

/// The name a step kind has in the resource, on actions and in the runner registry.
pub fn step_type(kind: StepKind) -> &'static str {
    match kind {
        StepKind::Log => "log",
        StepKind::Webhook => "webhook",
        StepKind::Notify => "notify",
        StepKind::Http => "http",
        StepKind::WazuhActiveResponse => "wazuh-active-response",
        StepKind::Enrich => "enrich",
        StepKind::Case => "case",
        StepKind::QuarantinePod => "quarantine-pod",
    }
}

/// A step carries the block of its own type and no other.
fn check_blocks(step: &Step, problems: &mut Vec<String>) {
    let blocks = [
        ("webhook", step.webhook.is_some(), StepKind::Webhook),
        ("notify", step.notify.is_some(), StepKind::Notify),
        ("http", step.http.is_some(), StepKind::Http),
        ("wazuh", step.wazuh.is_some(), StepKind::WazuhActiveResponse),
        ("enrich", step.enrich.is_some(), StepKind::Enrich),
        ("case", step.case.is_some(), StepKind::Case),
        (
            "quarantine",
            step.quarantine.is_some(),
            StepKind::QuarantinePod,
        ),
    ];
    for (name, present, kind) in blocks {
        if present && kind != step.kind {
            problems.push(format!("a {} step takes no {name}", step_type(step.kind)));
        }
    }
}

fn compile_log(
    step: &Step,
    message: Option<Template>,
    problems: &mut Vec<String>,
) -> Option<StepTemplate> {
    if step.message.is_none() {
        problems.push("a log step needs a message".into());
    }
    message.map(|message| StepTemplate::Log { message })
}

fn compile_webhook(
    step: &Step,
    message: Option<Template>,
    problems: &mut Vec<String>,
) -> Option<StepTemplate> {
    let Some(webhook) = &step.webhook else {
        problems.push("a webhook step needs webhook.url".into());
        return None;
    };
    let url = check_url(&webhook.url)
        .map_err(|reason| problems.push(format!("webhook.url: {reason}")))
        .ok();
    let mut headers = Vec::new();
    for (name, value) in &webhook.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| problems.push(format!("webhook.headers: {name:?} is not a header name")));
        let value =
            Template::parse(value).map_err(|e| problems.push(format!("webhook.headers: {e}")));
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.push((name, value));
        }
    }
    let body = webhook
        .body
        .as_ref()
        .map(JsonTemplate::parse)
        .transpose()
        .map_err(|e| problems.push(format!("webhook.body: {e}")))
        .ok()
        .flatten();
    let default_text = Template::parse(DEFAULT_TEXT).expect("the default text is a valid template");
    Some(StepTemplate::Webhook {
        url: url?,
        headers,
        body,
        text: message.unwrap_or(default_text),
    })
}

/// The variables a step's templates see: `alert` (the alert as JSON), `case` (the case
/// record, or just its id when the store has none), `playbook` (`namespace/name`) and
/// `step` (the step's name, set by [`with_step`]).
pub fn template_context(
    alert: &Alert,
    case_id: i64,
    case: Option<&CaseRecord>,
    playbook: &str,
) -> Value {
    let case = case
        .and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or_else(|| json!({ "id": case_id }));
    json!({
        "alert": serde_json::to_value(alert).unwrap_or(Value::Null),
        "case": case,
        "playbook": playbook,
    })
}

/// The context with `step` set.
pub fn with_step(mut context: Value, step: &str) -> Value {
    if let Value::Object(map) = &mut context {
        map.insert("step".into(), step.into());
    }
    context
}

/// The body of a webhook step that gives none: what a chat or ticket hook needs to say
/// which case, which rule, which host.
fn default_body(context: &Value, text: &str) -> Value {
    let at = |pointer: &str| context.pointer(pointer).cloned().unwrap_or(Value::Null);
    json!({
        "case_id": at("/case/id"),
        "alert": {
            "id": at("/alert/id"),
            "rule": {
                "id": at("/alert/rule/id"),
                "title": at("/alert/rule/title"),
                "level": at("/alert/rule/level"),
            },
            "host": at("/alert/host"),
            "timestamp": at("/alert/timestamp"),
        },
        "playbook": at("/playbook"),
        "step": at("/step"),
        "text": text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(yaml: &str) -> (PlaybookSet, Vec<InvalidPlaybook>) {
        let mut set = kastell_crds::ResourceSet::default();
        let mut errors = Vec::new();
        kastell_crds::load::load_text(Path::new("/repo/pb.yaml"), yaml, &mut set, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        PlaybookSet::compile(set.playbooks)
    }

    fn playbook(name: &str, steps: &str) -> String {
        format!(
            "apiVersion: kastell.eu/v1alpha1\nkind: Playbook\n\
             metadata: {{name: {name}, namespace: soc}}\n\
             spec:\n  trigger: {{minLevel: high}}\n  steps:\n{steps}---\n"
        )
    }

    #[test]
    fn valid_playbooks_load_and_invalid_ones_are_reported_with_every_reason() {
        let good = playbook(
            "good",
            "  - {name: note, type: log, message: 'case {{ case.id }}'}\n\
             \x20 - {name: hook, type: webhook, approval: {policy: always},\n\
             \x20    webhook: {url: 'https://chat.example.eu/hooks/1'}}\n",
        );
        let bad = playbook(
            "bad",
            "  - {name: note, type: log}\n\
             \x20 - {name: note, type: webhook, webhook: {url: 'http://chat.example.eu/x'}}\n\
             \x20 - {name: t, type: log, message: '{{ alert.rule.title'}\n\
             \x20 - {name: h, type: webhook, webhook: {url: 'https://x.eu', \
             headers: {'bad header': v}, body: {a: '{% if %}'}}}\n",
        );
        let (set, invalid) = load(&format!("{good}{bad}"));
        assert_eq!(set.len(), 1);
        assert_eq!(set.get("soc/good").unwrap().steps.len(), 2);
        assert_eq!(invalid.len(), 1);
        let message = invalid[0].to_string();
        assert!(
            message.starts_with("/repo/pb.yaml: playbook soc/bad: "),
            "{message}"
        );
        for expected in [
            "step \"note\": a log step needs a message",
            "step name \"note\" is used twice",
            "plain http is allowed only to a loopback address",
            "step \"t\": message: template",
            "\"bad header\" is not a header name",
            "webhook.body: template \"{% if %}\"",
        ] {
            assert!(
                message.contains(expected),
                "missing {expected:?} in {message}"
            );
        }
    }

    #[test]
    fn a_webhook_needs_its_url_and_a_log_step_no_webhook() {
        let (_, invalid) = load(&playbook(
            "p",
            "  - {name: a, type: webhook}\n\
             \x20 - {name: b, type: log, message: m, webhook: {url: 'https://x.eu'}}\n\
             \x20 - {name: c, type: webhook, webhook: {url: 'ftp://x.eu/'}}\n\
             \x20 - {name: d, type: log, message: m, timeoutSeconds: 0}\n",
        ));
        let message = invalid[0].to_string();
        for expected in [
            "step \"a\": a webhook step needs webhook.url",
            "step \"b\": a log step takes no webhook",
            "step \"c\": webhook.url: scheme ftp is not allowed",
            "step \"d\": timeoutSeconds must be 1 to 3600, not 0",
        ] {
            assert!(
                message.contains(expected),
                "missing {expected:?} in {message}"
            );
        }
    }

    #[test]
    fn a_second_playbook_of_the_same_name_is_reported() {
        let one = playbook("same", "  - {name: a, type: log, message: m}\n");
        let (set, invalid) = load(&format!("{one}{one}"));
        assert_eq!(set.len(), 1);
        assert!(
            invalid[0].reason.contains("same namespace/name"),
            "{}",
            invalid[0]
        );
    }

    #[test]
    fn webhook_params_carry_rendered_headers_and_the_default_body() {
        let (set, invalid) = load(&playbook(
            "p",
            "  - {name: hook, type: webhook, timeoutSeconds: 3,\n\
             \x20    webhook: {url: 'http://127.0.0.1:9/x', headers: {X-Case: '{{ case.id }}'}}}\n",
        ));
        assert!(invalid.is_empty(), "{invalid:?}");
        let step = &set.get("soc/p").unwrap().steps[0];
        let context = with_step(
            json!({
                "alert": {"id": "a1", "host": "web-1", "timestamp": "2022-05-11T10:29:19Z",
                          "rule": {"id": "r1", "title": "sshd brute force", "level": "high"}},
                "case": {"id": 4},
                "playbook": "soc/p",
            }),
            "hook",
        );
        let params = step.render_params(&context, true).unwrap();
        assert_eq!(step.step_type(), "webhook");
        assert_eq!(params["url"], "http://127.0.0.1:9/x");
        assert_eq!(params["timeout_seconds"], 3);
        assert_eq!(params["dry_run"], true);
        assert_eq!(params["headers"], json!({"x-case": "4"}));
        assert_eq!(
            params["body"],
            json!({
                "case_id": 4,
                "alert": {"id": "a1", "rule": {"id": "r1", "title": "sshd brute force",
                          "level": "high"}, "host": "web-1", "timestamp": "2022-05-11T10:29:19Z"},
                "playbook": "soc/p",
                "step": "hook",
                "text": "Kastell case 4: sshd brute force (high) on web-1",
            })
        );
    }
}
