//! Checking the typed steps (`notify`, `http`, `wazuh-active-response`, `enrich`,
//! `case`, `quarantine-pod`) and splitting each into the part kept as written and the
//! part rendered from the alert. URLs, secret names, commands, the case operation and
//! the chat channel are fixed at load: alert data, which an attacker partly controls,
//! never picks where a request goes, which credential it carries or what it runs.

use kastell_crds::playbook::{CaseOp, NotifyChannel, Step, StepKind};
use serde_json::{json, Map, Value};

use crate::playbook::DEFAULT_TEXT;
use crate::runner::check_url;

/// The subject of an e-mail without one.
const DEFAULT_SUBJECT: &str = "Kastell case {{ case.id }}: {{ alert.rule.title }}";

/// `(fixed, templated)` for a typed step; `None` (with problems) when it is unusable.
pub(crate) fn compile(
    step: &Step,
    problems: &mut Vec<String>,
) -> Option<(Map<String, Value>, Value)> {
    let before = problems.len();
    let compiled = match step.kind {
        StepKind::Notify => notify(step, problems),
        StepKind::Http => http(step, problems),
        StepKind::WazuhActiveResponse => wazuh(step, problems),
        StepKind::Enrich => enrich(step, problems),
        StepKind::Case => case(step, problems),
        StepKind::QuarantinePod => quarantine(step, problems),
        StepKind::Log | StepKind::Webhook => None,
    };
    compiled.filter(|_| problems.len() == before)
}

fn missing(step: &Step, block: &str, problems: &mut Vec<String>) {
    problems.push(format!(
        "a {} step needs {block}",
        crate::playbook::step_type(step.kind)
    ));
}

fn url(field: &str, text: &str, problems: &mut Vec<String>) -> Value {
    match check_url(text) {
        Ok(url) => Value::String(url.to_string()),
        Err(reason) => {
            problems.push(format!("{field}: {reason}"));
            Value::Null
        }
    }
}

fn notify(step: &Step, problems: &mut Vec<String>) -> Option<(Map<String, Value>, Value)> {
    let Some(n) = &step.notify else {
        missing(step, "notify", problems);
        return None;
    };
    let mut fixed = Map::new();
    let channel = match n.channel {
        NotifyChannel::Mattermost => "mattermost",
        NotifyChannel::Slack => "slack",
        NotifyChannel::Matrix => "matrix",
        NotifyChannel::Teams => "teams",
        NotifyChannel::Email => "email",
    };
    fixed.insert("channel".into(), channel.into());
    let text = step
        .message
        .clone()
        .unwrap_or_else(|| DEFAULT_TEXT.to_owned());
    let mut templated = json!({ "text": text });
    if n.channel == NotifyChannel::Email {
        let Some(smtp) = &n.smtp else {
            missing(step, "notify.smtp for e-mail", problems);
            return None;
        };
        if n.to.is_empty() {
            missing(step, "notify.to for e-mail", problems);
        }
        if smtp.host.is_empty() || smtp.from.is_empty() {
            problems.push("notify.smtp needs host and from".into());
        }
        if smtp.username_secret.is_some() != smtp.password_secret.is_some() {
            problems.push("notify.smtp: usernameSecret and passwordSecret go together".into());
        }
        fixed.insert(
            "smtp".into(),
            json!({
                "host": smtp.host, "port": smtp.port, "from": smtp.from,
                "username_secret": smtp.username_secret, "password_secret": smtp.password_secret,
            }),
        );
        templated["to"] = json!(n.to);
        templated["subject"] = json!(n.subject.clone().unwrap_or_else(|| DEFAULT_SUBJECT.into()));
        return Some((fixed, templated));
    }
    let Some(target) = &n.url else {
        missing(step, "notify.url for a chat message", problems);
        return None;
    };
    fixed.insert("url".into(), url("notify.url", target, problems));
    if n.channel == NotifyChannel::Matrix {
        match (&n.room, &n.token_secret) {
            (Some(room), Some(token)) if !room.is_empty() => {
                fixed.insert("room".into(), room.clone().into());
                fixed.insert("token_secret".into(), token.clone().into());
            }
            _ => missing(
                step,
                "notify.room and notify.tokenSecret for Matrix",
                problems,
            ),
        }
    }
    Some((fixed, templated))
}

fn http(step: &Step, problems: &mut Vec<String>) -> Option<(Map<String, Value>, Value)> {
    let Some(h) = &step.http else {
        missing(step, "http", problems);
        return None;
    };
    let mut fixed = Map::new();
    fixed.insert("url".into(), url("http.url", &h.url, problems));
    fixed.insert("method".into(), json!(h.method));
    for name in h.headers.keys().chain(h.secret_headers.keys()) {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push(format!("http.headers: {name:?} is not a header name"));
        }
    }
    if !h.secret_headers.is_empty() {
        fixed.insert("secret_headers".into(), json!(h.secret_headers));
    }
    let mut templated = json!({ "headers": h.headers });
    if let Some(body) = &h.body {
        templated["body"] = body.clone();
    }
    if let Some(awx) = &h.awx {
        if h.body.is_some() {
            problems.push("http: an awx launch takes extraVars, not body".into());
        }
        fixed.insert(
            "awx".into(),
            json!({ "job_template": awx.job_template, "token_secret": awx.token_secret,
                    "poll_seconds": awx.poll_seconds }),
        );
        templated["extra_vars"] = awx.extra_vars.clone().unwrap_or(json!({}));
    }
    if let Some(release) = &h.release {
        if h.awx.is_some() {
            problems.push("http: an awx launch has no release request".into());
        }
        for name in release.headers.keys().chain(release.secret_headers.keys()) {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(format!(
                    "http.release.headers: {name:?} is not a header name"
                ));
            }
        }
        // Where and how are fixed; what is sent is rendered with the step, so the
        // release sends what the person saw recorded beside the containment.
        fixed.insert(
            "release_target".into(),
            json!({
                "url": url("http.release.url", &release.url, problems),
                "method": release.method,
                "secret_headers": release.secret_headers,
            }),
        );
        templated["release"] = json!({
            "headers": release.headers,
            "body": release.body.clone().unwrap_or(Value::Null),
        });
    }
    Some((fixed, templated))
}

fn wazuh(step: &Step, problems: &mut Vec<String>) -> Option<(Map<String, Value>, Value)> {
    let Some(w) = &step.wazuh else {
        missing(step, "wazuh", problems);
        return None;
    };
    if w.agents.is_empty() {
        problems.push("wazuh.agents is empty".into());
    }
    if w.command.is_empty() {
        problems.push("wazuh.command is empty".into());
    }
    let mut fixed = Map::new();
    fixed.insert("url".into(), url("wazuh.url", &w.url, problems));
    fixed.insert("command".into(), w.command.clone().into());
    fixed.insert("username_secret".into(), w.username_secret.clone().into());
    fixed.insert("password_secret".into(), w.password_secret.clone().into());
    let templated = json!({ "agents": w.agents, "srcip": w.srcip, "arguments": w.arguments });
    Some((fixed, templated))
}

fn enrich(step: &Step, problems: &mut Vec<String>) -> Option<(Map<String, Value>, Value)> {
    let Some(e) = &step.enrich else {
        missing(step, "enrich", problems);
        return None;
    };
    if e.observables.is_empty() {
        problems.push("enrich.observables is empty".into());
    }
    let mut fixed = Map::new();
    if let Some(c) = &e.cortex {
        fixed.insert(
            "cortex".into(),
            json!({ "url": url("enrich.cortex.url", &c.url, problems), "analyzer": c.analyzer,
                    "api_key_secret": c.api_key_secret, "poll_seconds": c.poll_seconds }),
        );
    }
    let observables: Vec<Value> = e
        .observables
        .iter()
        .map(|o| json!({ "type": o.kind, "value": o.value }))
        .collect();
    Some((fixed, json!({ "observables": observables })))
}

fn case(step: &Step, problems: &mut Vec<String>) -> Option<(Map<String, Value>, Value)> {
    let Some(c) = &step.case else {
        missing(step, "case", problems);
        return None;
    };
    let (op, needs) = match c.op {
        CaseOp::SetSeverity => (
            "set-severity",
            c.severity.is_some().then_some(()).ok_or("severity"),
        ),
        CaseOp::Assign => (
            "assign",
            c.assignee.is_some().then_some(()).ok_or("assignee"),
        ),
        CaseOp::AddTask => ("add-task", c.task.is_some().then_some(()).ok_or("task")),
        CaseOp::AddObservable => (
            "add-observable",
            c.observable.is_some().then_some(()).ok_or("observable"),
        ),
        CaseOp::CloseFalsePositive => (
            "close-false-positive",
            c.reason.is_some().then_some(()).ok_or("reason"),
        ),
    };
    if let Err(field) = needs {
        problems.push(format!("case: {op} needs case.{field}"));
    }
    let mut fixed = Map::new();
    fixed.insert("op".into(), op.into());
    if let Some(severity) = c.severity {
        fixed.insert("severity".into(), severity.as_str().into());
    }
    let observable = c
        .observable
        .as_ref()
        .map(|o| json!({ "type": o.kind, "value": o.value }));
    let templated = json!({
        "assignee": c.assignee, "task": c.task, "observable": observable, "reason": c.reason,
    });
    Some((fixed, templated))
}

fn quarantine(step: &Step, problems: &mut Vec<String>) -> Option<(Map<String, Value>, Value)> {
    let Some(q) = &step.quarantine else {
        missing(step, "quarantine", problems);
        return None;
    };
    if q.namespace.is_empty() || q.pod.is_empty() {
        problems.push("quarantine needs namespace and pod".into());
    }
    Some((
        Map::new(),
        json!({ "namespace": q.namespace, "pod": q.pod }),
    ))
}
