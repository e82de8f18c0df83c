//! The respond stage with the cases stage and the cases API around it, as `kastell run`
//! wires them: real Wazuh alerts go in on the alerts topic, cases open, playbooks
//! trigger, approvals go through the HTTP API, the cases stage applies the case
//! operations from the response-outputs topic and announces the changes, which trigger
//! further playbooks. Plus a crash after a side effect and a restart on the durable
//! journal. Everything listens on 127.0.0.1.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use kastell_cases::auth::Role;
use kastell_cases::{ApiState, CaseSettings, CasesStats, Metrics, OutputStats};
use kastell_core::bus::publish_json;
use kastell_core::response::{CaseAction, CaseOperation, RespondOutput};
use kastell_core::store::*;
use kastell_core::{
    Alert, AuditEntry, Bus, CaseEvent, CaseStore, Event, InProcessBus, Level, RuleRef, SqliteStore,
    StoreError, Subscription, Tlp, Topic,
};
use kastell_respond::{
    BusOutbox, Journal, MapSecrets, PlaybookSet, RespondStats, Responder, RunnerSettings, Runners,
};
use prometheus::Registry;
use serde_json::{json, Value};

/// The secret the `http` steps send; it must never reach an action, the audit log or a
/// published message.
const SECRET: &str = "kst-lifecycle-9f8e7d6c5b4a3921";

// ---- a real alert ------------------------------------------------------------------

/// The Wazuh sshd brute-force alert (rule 5712, level 10, T1110; tests/fixtures,
/// see SOURCE.txt) as the high alert a DetectionRule raises on it, from sensor `wazuh`.
fn wazuh_alert() -> Alert {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wazuh-sshd-brute-force.json");
    let text = std::fs::read_to_string(path).unwrap();
    let raw: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let at = DateTime::parse_from_str(raw["timestamp"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S%.f%z")
        .unwrap()
        .with_timezone(&Utc);
    let event = Event::from_value(json!({
        "@timestamp": at.to_rfc3339(),
        "host": {"name": raw["agent"]["name"]},
        "source": {"ip": raw["data"]["srcip"]},
        "user": {"name": raw["data"]["srcuser"]},
        "event": {"original": raw["full_log"], "dataset": "wazuh.alerts"},
        "observer": {"name": "wazuh"},
    }))
    .unwrap();
    let rule = &raw["rule"];
    let tags = rule["mitre"]["id"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| format!("attack.{}", id.as_str().unwrap().to_lowercase()))
        .collect();
    let rule = RuleRef {
        id: format!("wazuh-{}", rule["id"].as_str().unwrap()),
        title: rule["description"].as_str().unwrap().into(),
        level: Level::High,
        tags,
        ..Default::default()
    };
    Alert::from_event(rule, event, Utc::now())
}

fn playbooks(yaml: &str) -> Arc<PlaybookSet> {
    let mut set = kastell_crds::ResourceSet::default();
    let mut errors = Vec::new();
    kastell_crds::load::load_text(
        Path::new("/repo/playbooks.yaml"),
        yaml,
        &mut set,
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let (compiled, invalid) = PlaybookSet::compile(set.playbooks);
    assert!(invalid.is_empty(), "{invalid:?}");
    Arc::new(compiled)
}

fn playbook(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: kastell.eu/v1alpha1\nkind: Playbook\n\
         metadata: {{name: {name}, namespace: soc}}\nspec:\n{spec}\n---\n"
    )
}

fn runners() -> Arc<Runners> {
    let secrets = MapSecrets([("BLOCK_API_KEY".to_owned(), SECRET.to_owned())].into());
    let settings = RunnerSettings {
        native_roots: false,
        secrets: Arc::new(secrets),
        ..RunnerSettings::default()
    };
    Arc::new(Runners::new(&settings).unwrap())
}

// ---- a receiver standing in for the firewall API ------------------------------------

#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
}

impl Receiver {
    fn received(&self) -> Vec<(HeaderMap, Value)> {
        self.received.lock().unwrap().clone()
    }
}

async fn hook(
    State(receiver): State<Receiver>,
    UrlPath(_name): UrlPath<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> &'static str {
    receiver.received.lock().unwrap().push((headers, body));
    "accepted"
}

async fn start_receiver() -> (String, Receiver) {
    let receiver = Receiver::default();
    let app = Router::new()
        .route("/hooks/{name}", post(hook))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, receiver)
}

// ---- the platform ------------------------------------------------------------------

struct Platform {
    _dir: tempfile::TempDir,
    store: Arc<dyn CaseStore>,
    bus: Arc<InProcessBus>,
    registry: Registry,
    api: String,
    http: reqwest::Client,
    keys: Vec<(Role, String)>,
    dead_letters: Box<dyn Subscription>,
}

async fn start_platform(set: Arc<PlaybookSet>) -> Platform {
    start_platform_with(set, runners()).await
}

async fn start_platform_with(set: Arc<PlaybookSet>, runners: Arc<Runners>) -> Platform {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn CaseStore> = Arc::new(SqliteStore::open_dir(dir.path()).await.unwrap());
    let bus = Arc::new(InProcessBus::new(256));
    let dyn_bus: Arc<dyn Bus> = bus.clone();

    // Every group subscribes before anything is published, as the in-process bus needs.
    let alerts = kastell_cases::subscribe_alerts(bus.as_ref()).await.unwrap();
    let case_events = kastell_respond::subscribe_case_events(bus.as_ref())
        .await
        .unwrap();
    let outputs = kastell_cases::subscribe_response_outputs(bus.as_ref())
        .await
        .unwrap();
    let dead_letters = bus.subscribe(Topic::DeadLetters, "test").await.unwrap();

    let registry = Registry::new();
    let respond_stats = Arc::new(RespondStats::new());
    respond_stats.register(&registry).unwrap();
    let output_stats = OutputStats::new();
    output_stats.register(&registry).unwrap();

    let (b, s) = (dyn_bus.clone(), store.clone());
    tokio::spawn(async move {
        let settings = CaseSettings::default();
        kastell_cases::run_cases_on(b.as_ref(), alerts, s, settings, &CasesStats::new()).await
    });
    let catalog = Arc::new(set.catalog());
    let responder = Responder::new(store.clone(), set, runners)
        .with_expiry_sweep(Duration::from_millis(50))
        .with_outbox(Arc::new(BusOutbox::new(dyn_bus.clone())))
        .with_journal(Arc::new(
            Journal::open(&dir.path().join("journal.jsonl")).unwrap(),
        ));
    let (b, s, stats) = (dyn_bus.clone(), store.clone(), respond_stats.clone());
    tokio::spawn(async move {
        kastell_respond::run_responder_on(b.as_ref(), case_events, responder, s, &stats).await
    });
    let (b, s) = (dyn_bus.clone(), store.clone());
    tokio::spawn(async move {
        kastell_cases::run_response_outputs_on(b.as_ref(), outputs, s, &output_stats).await
    });

    let state =
        ApiState::new(store.clone(), dyn_bus, Metrics::new().unwrap()).with_playbooks(catalog);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let router = kastell_cases::router(state);
    tokio::spawn(async move { axum::serve(listener, router).await });

    let mut keys = Vec::new();
    for role in [Role::Analyst, Role::Responder, Role::Lead] {
        let new = kastell_cases::auth::apikey::generate(role.as_str(), role, Tlp::Red).unwrap();
        store.create_api_key(&new.record, "cli:test").await.unwrap();
        keys.push((role, new.key));
    }
    Platform {
        _dir: dir,
        store,
        bus,
        registry,
        api,
        http: reqwest::Client::new(),
        keys,
        dead_letters,
    }
}

impl Platform {
    async fn call(&self, role: Role, path: &str, body: Option<Value>) -> (u16, Value) {
        let key = &self.keys.iter().find(|(r, _)| *r == role).unwrap().1;
        let url = format!("{}{path}", self.api);
        let request = match body {
            Some(body) => self.http.post(url).json(&body),
            None => self.http.get(url),
        };
        let answer = request.bearer_auth(key).send().await.unwrap();
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    async fn actions(&self) -> Vec<ActionRecord> {
        self.store
            .list_actions(&ActionFilter::default())
            .await
            .unwrap()
    }

    /// Waits (without a time limit of its own: the test harness has one) until the
    /// playbook's step has an action in `status`.
    async fn action(&self, playbook: &str, step: &str, status: ActionStatus) -> ActionRecord {
        for _ in 0..1000 {
            let found = self.actions().await.into_iter().find(|a| {
                a.playbook == format!("soc/{playbook}") && a.step == step && a.status == status
            });
            if let Some(action) = found {
                return action;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "{playbook}/{step} never became {status}: {:#?}",
            self.actions().await
        );
    }

    async fn audit(&self) -> Vec<AuditEntry> {
        self.store.audit_entries(0, 10_000).await.unwrap()
    }

    /// The sum of the counter's samples carrying all `labels`, read from the text
    /// exposition `/metrics` serves.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap();
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter(|line| {
                labels
                    .iter()
                    .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    }
}

// ---- the tests ---------------------------------------------------------------------

#[tokio::test]
async fn approval_flow_end_to_end_through_the_case_api() {
    let (base, receiver) = start_receiver().await;
    let set = playbooks(&format!(
        "{}{}",
        playbook(
            "contain",
            &format!(
                "  trigger: {{techniques: [T1110], sensors: [wazuh]}}\n  steps:\n\
                 \x20 - name: block\n    type: http\n\
                 \x20   approval: {{policy: min-level, minLevel: high, roles: [lead], expiresAfter: 4h}}\n\
                 \x20   http:\n      url: {base}/hooks/block\n\
                 \x20     secretHeaders: {{X-Api-Key: BLOCK_API_KEY}}\n\
                 \x20     body: {{ip: '{{{{ alert.events.0.source.ip }}}}'}}\n\
                 \x20 - {{name: raise, type: case, case: {{op: set-severity, severity: critical}}}}"
            ),
        ),
        playbook(
            "on-critical",
            "  trigger: {events: [severity-raised], minLevel: critical}\n  steps:\n\
             \x20 - {name: note, type: log, message: 'case {{ case.id }} is now {{ trigger.to }}'}",
        ),
    ));
    let p = start_platform(set).await;
    publish_json(p.bus.as_ref(), Topic::Alerts, &wazuh_alert())
        .await
        .unwrap();

    // The step waits on its case, showing everything it will do and who may decide.
    let pending = p.action("contain", "block", ActionStatus::Pending).await;
    let (status, case) = p
        .call(
            Role::Responder,
            &format!("/api/v1/cases/{}", pending.case_id),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let shown = case["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["step"] == "block")
        .unwrap();
    assert_eq!(shown["status"], "pending");
    assert_eq!(
        shown["params"]["config"]["body"],
        json!({"ip": "172.17.1.1"})
    );
    assert_eq!(
        shown["params"]["config"]["url"],
        format!("{base}/hooks/block")
    );
    assert_eq!(shown["params"]["approval"]["roles"], json!(["lead"]));
    assert_eq!(shown["params"]["approval"]["level"], "high");
    let expires: DateTime<Utc> =
        serde_json::from_value(shown["params"]["approval"]["expires_at"].clone()).unwrap();
    assert!(expires > Utc::now() + chrono::Duration::hours(3));
    assert!(
        receiver.received().is_empty(),
        "nothing is sent before approval"
    );

    // A responder's role is not among the step's approvers.
    let approve = format!("/api/v1/actions/{}/approve", pending.id);
    let (status, refused) = p.call(Role::Responder, &approve, Some(json!({}))).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (403, Some("role_not_allowed"))
    );
    assert!(refused["message"].as_str().unwrap().contains("lead"));
    let (status, _) = p
        .call(Role::Lead, &approve, Some(json!({"comment": "confirmed"})))
        .await;
    assert_eq!(status, 200);

    let done = p.action("contain", "block", ActionStatus::Succeeded).await;
    assert_eq!(done.decided_by.as_deref(), Some("apikey:lead"));
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].0["x-api-key"], SECRET);
    assert_eq!(received[0].1, json!({"ip": "172.17.1.1"}));

    // The case step raised the severity; the cases stage announced it and the
    // severity-raised playbook ran.
    let note = p
        .action("on-critical", "note", ActionStatus::Succeeded)
        .await;
    assert_eq!(
        note.alert_id,
        format!("case-{}:severity:critical", done.case_id)
    );
    assert_eq!(
        note.result.unwrap()["message"],
        format!("case {} is now critical", done.case_id)
    );
    let case = p.store.get_case(done.case_id).await.unwrap().unwrap();
    assert_eq!(case.severity, Level::Critical);

    // Every step result is in the case's audit log, with its request summary and
    // timing; the secret is nowhere in the log.
    let mut results = Vec::new();
    for _ in 0..500 {
        results = p
            .audit()
            .await
            .into_iter()
            .filter(|e| e.action == "respond.step_result")
            .collect();
        if results.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let block = results
        .iter()
        .find(|e| e.after.as_ref().unwrap()["step"] == "block")
        .unwrap();
    let after = block.after.as_ref().unwrap();
    assert_eq!(
        (block.object_kind.as_str(), block.actor.as_str()),
        ("case", "playbook:soc/contain")
    );
    assert_eq!(after["status"], "succeeded");
    assert_eq!(after["requests"][0]["method"], "POST");
    assert_eq!(after["requests"][0]["status"], 200);
    assert!(after["duration_ms"].is_u64());
    let audit = serde_json::to_string(&p.audit().await).unwrap();
    assert!(!audit.contains(SECRET), "the secret reached the audit log");
    let actions = serde_json::to_string(&p.actions().await).unwrap();
    assert!(!actions.contains(SECRET), "the secret reached an action");
    assert!(matches!(
        kastell_core::audit::verify(&p.audit().await),
        kastell_core::Verdict::Intact { .. }
    ));

    assert_eq!(p.metric("kastell_respond_approvals_total", &[]), 1.0);
    assert_eq!(
        p.metric("kastell_respond_awaiting_approval_total", &[]),
        1.0
    );
    let http_ok = [
        ("playbook", "soc/contain"),
        ("step_type", "http"),
        ("outcome", "succeeded"),
    ];
    assert_eq!(p.metric("kastell_respond_actions_total", &http_ok), 1.0);
    let runs = [
        ("playbook", "soc/on-critical"),
        ("event", "severity-raised"),
    ];
    assert_eq!(p.metric("kastell_respond_playbook_runs_total", &runs), 1.0);
    // The counters move once the key of each output is recorded, just after the audit
    // entry that the loop above waited for.
    for _ in 0..500 {
        if p.metric("kastell_cases_step_results_total", &[]) >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(p.metric("kastell_cases_step_results_total", &[]) >= 3.0);
    assert_eq!(
        p.metric("kastell_cases_case_actions_applied_total", &[]),
        1.0
    );
}

#[tokio::test]
async fn an_expired_approval_is_refused_and_a_rejection_is_counted() {
    let set = playbooks(&playbook(
        "ask",
        "  trigger: {minLevel: high}\n  steps:\n\
         \x20 - {name: late, type: log, message: m, approval: {policy: always, expiresAfter: 1ms}}\n\
         \x20 - {name: refuse, type: log, message: m, approval: {policy: always, roles: [lead]}}\n\
         \x20 - {name: low, type: log, message: m, approval: {policy: min-level, minLevel: critical}}",
    ));
    let p = start_platform(set).await;
    publish_json(p.bus.as_ref(), Topic::Alerts, &wazuh_alert())
        .await
        .unwrap();

    // A high alert does not reach the critical bar of `low`: it runs without a person.
    p.action("ask", "low", ActionStatus::Succeeded).await;
    // Its window closes; the stage's sweep moves it from pending to expired, on the
    // case's timeline and in the audit log.
    let late = p.action("ask", "late", ActionStatus::Expired).await;
    assert!(late
        .reason
        .as_deref()
        .unwrap()
        .starts_with("approval expired at "));
    assert_eq!(late.decided_by.as_deref(), Some("respond:expiry"));
    let (status, body) = p
        .call(
            Role::Lead,
            &format!("/api/v1/actions/{}/approve", late.id),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("approval_expired")),
        "{body}"
    );
    let still = p.store.get_action(late.id).await.unwrap().unwrap();
    assert_eq!(still.status, ActionStatus::Expired);
    let (status, pending) = p
        .call(Role::Lead, "/api/v1/actions?status=pending", None)
        .await;
    assert_eq!(status, 200);
    let pending: Vec<&str> = pending["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["step"].as_str().unwrap())
        .collect();
    assert_eq!(pending, ["refuse"]);
    let timeline = p.store.timeline(late.case_id, 0, 1000).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|t| t.kind == "action_expired" && t.actor == "respond:expiry"),
        "{timeline:#?}"
    );
    assert!(p.audit().await.iter().any(|e| e.action == "action.decide"
        && e.actor == "respond:expiry"
        && e.object_id == late.id.to_string()));
    assert_eq!(p.metric("kastell_respond_expired_total", &[]), 1.0);

    let refuse = p.action("ask", "refuse", ActionStatus::Pending).await;
    let reject = format!("/api/v1/actions/{}/reject", refuse.id);
    let (status, _) = p
        .call(Role::Responder, &reject, Some(json!({"reason": "no"})))
        .await;
    assert_eq!(status, 403, "rejecting needs an allowed role too");
    let (status, _) = p
        .call(Role::Lead, &reject, Some(json!({"reason": "scanner"})))
        .await;
    assert_eq!(status, 200);
    for _ in 0..500 {
        if p.metric("kastell_respond_rejections_total", &[]) == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(p.metric("kastell_respond_rejections_total", &[]), 1.0);
    let decided = p.store.get_action(refuse.id).await.unwrap().unwrap();
    assert_eq!(decided.status, ActionStatus::Rejected);
    let audit = p.audit().await;
    assert!(audit.iter().any(|e| e.action == "action.decide"
        && e.actor == "apikey:lead"
        && e.object_id == refuse.id.to_string()));
}

#[tokio::test]
async fn a_manual_run_through_the_case_api_runs_once_per_request() {
    let set = playbooks(&format!(
        "{}{}",
        playbook(
            "lookup",
            "  trigger: {events: [manual], observableTypes: [ip]}\n  steps:\n\
             \x20 - {name: note, type: log, message: 'look up {{ trigger.observable.value }} for {{ trigger.requested_by }}'}",
        ),
        playbook(
            "contain",
            "  trigger: {ruleIds: [none]}\n  steps:\n  - {name: n, type: log, message: m}",
        ),
    ));
    let p = start_platform(set).await;
    publish_json(p.bus.as_ref(), Topic::Alerts, &wazuh_alert())
        .await
        .unwrap();
    let case_id = loop {
        if let Some(case) = p.store.get_case(1).await.unwrap() {
            break case.id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        p.actions().await.is_empty(),
        "a manual playbook does not run on case-opened"
    );

    let path = format!("/api/v1/cases/{case_id}/run-playbook");
    let body = json!({
        "playbook": "soc/lookup",
        "observable": {"type": "ip", "value": "172.17.1.1"},
        "request_id": "req-1",
    });
    let (status, _) = p.call(Role::Analyst, &path, Some(body.clone())).await;
    assert_eq!(status, 403, "an analyst may not run playbooks");
    let (status, accepted) = p.call(Role::Responder, &path, Some(body.clone())).await;
    assert_eq!(
        (status, accepted["request_id"].as_str()),
        (202, Some("req-1"))
    );
    let (status, _) = p.call(Role::Responder, &path, Some(body)).await;
    assert_eq!(status, 202, "a repeat is accepted and runs nothing more");
    let (status, _) = p
        .call(
            Role::Responder,
            "/api/v1/cases/99/run-playbook",
            Some(json!({"playbook": "soc/lookup"})),
        )
        .await;
    assert_eq!(status, 404);
    // Runs that would start nothing are refused at once, with the reason.
    let refusals = [
        (
            json!({"playbook": "soc/nope"}),
            404,
            "playbook_not_found",
            "no playbook soc/nope is loaded",
        ),
        (
            json!({"playbook": "soc/contain"}),
            422,
            "playbook_not_manual",
            "does not list `manual`",
        ),
        (
            json!({"playbook": "soc/lookup", "observable": {"type": "domain", "value": "example.org"}}),
            422,
            "observable_type_not_accepted",
            "only on an observable of type ip; the request names one of type domain",
        ),
        (
            json!({"playbook": "soc/lookup"}),
            422,
            "observable_type_not_accepted",
            "the request names none",
        ),
    ];
    for (body, want, code, message) in refusals {
        let (status, answer) = p.call(Role::Responder, &path, Some(body)).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (want, Some(code)),
            "{answer}"
        );
        assert!(
            answer["message"].as_str().unwrap().contains(message),
            "{answer}"
        );
    }

    let note = p.action("lookup", "note", ActionStatus::Succeeded).await;
    assert_eq!(note.alert_id, "manual:req-1");
    assert_eq!(
        note.result.unwrap()["message"],
        "look up 172.17.1.1 for apikey:responder"
    );
    // A fresh request id runs the playbook again.
    let fresh =
        json!({"playbook": "soc/lookup", "observable": {"type": "ip", "value": "172.17.1.1"}});
    let (status, accepted) = p.call(Role::Responder, &path, Some(fresh)).await;
    assert_eq!(status, 202);
    let id = accepted["request_id"].as_str().unwrap().to_owned();
    for _ in 0..500 {
        if p.actions().await.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let actions = p.actions().await;
    assert_eq!(actions.len(), 2, "{actions:#?}");
    assert_eq!(actions[1].alert_id, format!("manual:{id}"));
}

#[tokio::test]
async fn case_operations_are_applied_and_trigger_case_event_playbooks() {
    let set = playbooks(&format!(
        "{}{}{}",
        playbook(
            "triage",
            "  trigger: {ruleIds: [wazuh-5712]}\n  steps:\n\
             \x20 - {name: observe, type: case, case: {op: add-observable, observable: {type: user-account, value: '{{ alert.events.0.user.name }}'}}}\n\
             \x20 - {name: assign, type: case, case: {op: assign, assignee: tier2}}\n\
             \x20 - {name: task, type: case, case: {op: add-task, task: 'Reset {{ alert.events.0.user.name }}'}}\n\
             \x20 - {name: close, type: case, case: {op: close-false-positive, reason: lab scanner}}",
        ),
        playbook(
            "on-observable",
            "  trigger: {events: [observable-added], observableTypes: [user-account]}\n  steps:\n\
             \x20 - {name: note, type: log, message: '{{ trigger.observable.value }}'}",
        ),
        playbook(
            "on-close",
            "  trigger: {events: [case-closed]}\n  steps:\n\
             \x20 - {name: note, type: log, message: 'closed as {{ trigger.resolution }}'}",
        ),
    ));
    let p = start_platform(set).await;
    publish_json(p.bus.as_ref(), Topic::Alerts, &wazuh_alert())
        .await
        .unwrap();

    let observed = p
        .action("on-observable", "note", ActionStatus::Succeeded)
        .await;
    assert_eq!(observed.result.unwrap()["message"], "paco");
    assert_eq!(observed.alert_id, "case-1:observable:user-account:paco");
    let closed = p.action("on-close", "note", ActionStatus::Succeeded).await;
    assert_eq!(
        closed.result.unwrap()["message"],
        "closed as false_positive"
    );

    let case = p.store.get_case(1).await.unwrap().unwrap();
    assert_eq!(case.status, CaseStatus::Closed);
    assert_eq!(case.resolution, Some(Resolution::FalsePositive));
    assert_eq!(case.assignee.as_deref(), Some("tier2"));
    let tasks = p.store.list_tasks(1).await.unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].title, "Reset paco");
    let observables = p
        .store
        .list_observables(&ObservableOwner::Case(1))
        .await
        .unwrap();
    assert!(
        observables
            .iter()
            .any(|o| o.kind == "user-account" && o.value == "paco"),
        "{observables:?}"
    );
    let audit = p.audit().await;
    for action in ["task.create", "observable.create", "case.close"] {
        assert!(
            audit
                .iter()
                .any(|e| e.action == action && e.actor == "playbook:soc/triage"),
            "no {action} by the playbook"
        );
    }
    // Every step result is on the case's timeline too.
    let timeline = p.store.timeline(1, 0, 1000).await.unwrap();
    let results = timeline
        .iter()
        .filter(|t| t.kind == "respond.step_result")
        .count();
    assert!(results >= 4, "{timeline:#?}");
}

#[tokio::test]
async fn an_observable_an_analyst_adds_through_the_api_triggers_observable_added_playbooks() {
    let set = playbooks(&playbook(
        "on-observable",
        "  trigger: {events: [observable-added], observableTypes: [ip]}\n  steps:\n\
         \x20 - {name: note, type: log, message: '{{ trigger.observable.value }}'}",
    ));
    let p = start_platform(set).await;
    publish_json(p.bus.as_ref(), Topic::Alerts, &wazuh_alert())
        .await
        .unwrap();
    let case_id = loop {
        if let Some(case) = p.store.get_case(1).await.unwrap() {
            break case.id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // The Kastell endpoint, then the same value again: merged (200), nothing new to run.
    let path = format!("/api/v1/cases/{case_id}/observables");
    let body = json!({"type": "ip", "value": "203.0.113.7"});
    let (status, _) = p.call(Role::Analyst, &path, Some(body.clone())).await;
    assert_eq!(status, 201);
    let (status, _) = p.call(Role::Analyst, &path, Some(body)).await;
    assert_eq!(status, 200);
    let note = p
        .action("on-observable", "note", ActionStatus::Succeeded)
        .await;
    assert_eq!(note.result.unwrap()["message"], "203.0.113.7");
    assert_eq!(
        note.alert_id,
        format!("case-{case_id}:observable:ip:203.0.113.7")
    );

    // TheHive's endpoint announces each new value of its list.
    let (status, _) = p
        .call(
            Role::Analyst,
            &format!("/api/v1/case/{case_id}/observable"),
            Some(json!({"dataType": "ip", "data": ["198.51.100.23", "203.0.113.7"]})),
        )
        .await;
    assert_eq!(status, 201);
    for _ in 0..500 {
        let done = p
            .actions()
            .await
            .iter()
            .filter(|a| a.status == ActionStatus::Succeeded)
            .count();
        if done == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut values: Vec<String> = p
        .actions()
        .await
        .into_iter()
        .filter(|a| a.status == ActionStatus::Succeeded)
        .map(|a| a.result.unwrap()["message"].as_str().unwrap().to_owned())
        .collect();
    values.sort();
    assert_eq!(values, ["198.51.100.23", "203.0.113.7"]);
}

#[tokio::test]
async fn a_redelivered_response_output_is_applied_once() {
    let p = start_platform(playbooks(&playbook(
        "none",
        "  trigger: {ruleIds: [none]}\n  steps:\n  - {name: n, type: log, message: m}",
    )))
    .await;
    publish_json(p.bus.as_ref(), Topic::Alerts, &wazuh_alert())
        .await
        .unwrap();
    let case_id = loop {
        if let Some(case) = p.store.get_case(1).await.unwrap() {
            break case.id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let task = RespondOutput::CaseAction(CaseAction {
        case_id,
        action_id: 7,
        idempotency_key: "kastell-redelivered:task".into(),
        operation: CaseOperation::AddTask {
            title: "Reset paco".into(),
        },
    });
    let taxonomies = RespondOutput::CaseAction(CaseAction {
        case_id,
        action_id: 7,
        idempotency_key: "kastell-redelivered:taxonomies:ip:172.17.1.1".into(),
        operation: CaseOperation::AttachTaxonomies {
            r#type: "ip".into(),
            value: "172.17.1.1".into(),
            source: "cortex:AbuseIPDB_1_0".into(),
            taxonomies: vec![json!({"level": "malicious", "namespace": "AbuseIPDB",
                "predicate": "Records", "value": "12"})],
        },
    });
    let result = RespondOutput::StepResult(kastell_core::response::StepResult {
        action_id: 7,
        case_id,
        alert_id: "a-1".into(),
        playbook: "soc/none".into(),
        step: "n".into(),
        step_type: "log".into(),
        status: "succeeded".into(),
        disposition: None,
        attempts: 1,
        requests: Vec::new(),
        started_at: Utc::now(),
        duration_ms: 3,
        result: json!({"message": "m"}),
        release: None,
        idempotency_key: Some("kastell-redelivered:result".into()),
    });
    // Each delivered twice, as a durable bus does when an acknowledgement is lost.
    for output in [&task, &taxonomies, &result, &task, &taxonomies, &result] {
        publish_json(p.bus.as_ref(), Topic::ResponseOutputs, output)
            .await
            .unwrap();
    }
    for _ in 0..500 {
        if p.metric("kastell_cases_response_outputs_repeated_total", &[]) == 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        p.metric("kastell_cases_response_outputs_repeated_total", &[]),
        3.0
    );
    let tasks = p.store.list_tasks(case_id).await.unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    let timeline = p.store.timeline(case_id, 0, 1000).await.unwrap();
    let count = |kind: &str| timeline.iter().filter(|t| t.kind == kind).count();
    assert_eq!(count("respond.taxonomies"), 1, "{timeline:#?}");
    assert_eq!(count("respond.step_result"), 1, "{timeline:#?}");
    assert_eq!(
        p.metric("kastell_cases_case_actions_applied_total", &[]),
        2.0
    );
    assert_eq!(p.metric("kastell_cases_step_results_total", &[]), 1.0);
}

// ---- releasing a containment --------------------------------------------------------

/// What the mock Kubernetes API was asked: method, path and query, body.
type KubeCalls = Arc<Mutex<Vec<(String, String, Value)>>>;

/// Answers like the Kubernetes API for the calls a quarantine and its release make: apply
/// of the NetworkPolicy, merge patch of the pod's labels (kept, so the label-selected
/// list sees them), list of pods by label, delete of the policy.
async fn kube_api(
    State(calls): State<KubeCalls>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> Json<Value> {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let target = match uri.query() {
        Some(query) if !query.is_empty() => format!("{}?{query}", uri.path()),
        _ => uri.path().to_owned(),
    };
    calls
        .lock()
        .unwrap()
        .push((method.to_string(), target, body.clone()));
    let quarantined = calls.lock().unwrap().iter().rev().find_map(|(m, p, b)| {
        (m == "PATCH" && p.contains("/pods/"))
            .then(|| !b["metadata"]["labels"]["kastell.eu/quarantine"].is_null())
    });
    let path = uri.path();
    if method == axum::http::Method::DELETE {
        return Json(
            json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}}),
        );
    }
    if path.contains("/networkpolicies/") {
        let mut policy = body;
        policy["metadata"]["uid"] = json!("0b6d-policy");
        return Json(policy);
    }
    if path.ends_with("/pods") {
        let items = if quarantined == Some(true) {
            vec![
                json!({"metadata": {"name": "checkout-7d9f8-abcde", "namespace": "shop",
                "labels": {"kastell.eu/quarantine": "true"}}}),
            ]
        } else {
            Vec::new()
        };
        return Json(
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}),
        );
    }
    // A merge patch's nulls remove labels: the pod comes back without them.
    let labels: serde_json::Map<String, Value> = body["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Json(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "checkout-7d9f8-abcde", "namespace": "shop", "uid": "7f1e-pod",
                     "labels": labels},
    }))
}

#[tokio::test]
async fn a_quarantine_is_released_through_the_case_api_once_under_its_roles() {
    let calls = KubeCalls::default();
    let app = Router::new()
        .fallback(axum::routing::any(kube_api))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let kube = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut runners = Runners::new(&RunnerSettings {
        native_roots: false,
        ..RunnerSettings::default()
    })
    .unwrap();
    runners.register(Arc::new(
        kastell_respond::runner::QuarantineRunner::with_config(kube::Config::new(
            kube.parse().unwrap(),
        )),
    ));
    let set = playbooks(&playbook(
        "isolate",
        "  trigger: {ruleIds: [wazuh-5712]}\n  steps:\n\
         \x20 - name: isolate\n    type: quarantine-pod\n\
         \x20   approval: {policy: always, roles: [lead]}\n\
         \x20   quarantine: {namespace: shop, pod: checkout-7d9f8-abcde}\n\
         \x20 - {name: note, type: log, message: m}",
    ));
    let p = start_platform_with(set, Arc::new(runners)).await;
    publish_json(p.bus.as_ref(), Topic::Alerts, &wazuh_alert())
        .await
        .unwrap();
    let pending = p.action("isolate", "isolate", ActionStatus::Pending).await;
    let note = p.action("isolate", "note", ActionStatus::Succeeded).await;
    let release = |id: i64| format!("/api/v1/actions/{id}/release");

    // Nothing contained yet, or nothing to contain.
    let (status, body) = p
        .call(Role::Lead, &release(pending.id), Some(json!({})))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("nothing_to_release")),
        "{body}"
    );
    let (status, body) = p.call(Role::Lead, &release(note.id), Some(json!({}))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("nothing_to_release")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("contains nothing"),
        "{body}"
    );

    let (status, _) = p
        .call(
            Role::Lead,
            &format!("/api/v1/actions/{}/approve", pending.id),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    let contained = p
        .action("isolate", "isolate", ActionStatus::Succeeded)
        .await;
    assert_eq!(
        calls.lock().unwrap().len(),
        2,
        "policy applied, pod labelled"
    );

    // The roles that decide on the step decide on its release.
    let (status, body) = p
        .call(Role::Responder, &release(contained.id), Some(json!({})))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("role_not_allowed")),
        "{body}"
    );
    let (status, first) = p
        .call(
            Role::Lead,
            &release(contained.id),
            Some(json!({"comment": "pod rebuilt"})),
        )
        .await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["alert_id"], format!("release:{}", contained.id));
    assert_eq!(first["status"], "approved");

    let mut released = None;
    for _ in 0..500 {
        released = p.actions().await.into_iter().find(|a| {
            a.alert_id == format!("release:{}", contained.id)
                && matches!(a.status, ActionStatus::Succeeded | ActionStatus::Failed)
        });
        if released.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let released = released.unwrap_or_else(|| panic!("never finished: {:#?}", calls.lock()));
    assert_eq!(
        released.status,
        ActionStatus::Succeeded,
        "{:?}",
        released.result
    );
    let result = released.result.clone().unwrap();
    assert_eq!(
        (
            result["released"].as_bool(),
            result["policy_deleted"].as_bool()
        ),
        (Some(true), Some(true)),
        "{result}"
    );
    assert!(
        result.get("release").is_none(),
        "a release has no release of its own"
    );
    let calls_now = calls.lock().unwrap().clone();
    let shown: Vec<(&str, &str)> = calls_now[2..]
        .iter()
        .map(|(m, p, _)| (m.as_str(), p.as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            ("PATCH", "/api/v1/namespaces/shop/pods/checkout-7d9f8-abcde"),
            (
                "GET",
                "/api/v1/namespaces/shop/pods?&labelSelector=kastell.eu%2Fquarantine%3Dtrue"
            ),
            (
                "DELETE",
                "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/kastell-quarantine"
            ),
        ]
    );
    assert!(calls_now[2].2["metadata"]["labels"]["kastell.eu/quarantine"].is_null());

    // Asking again returns the release recorded; nothing is released twice.
    let (status, again) = p
        .call(Role::Lead, &release(contained.id), Some(json!({})))
        .await;
    assert_eq!(
        (status, again["id"].clone()),
        (200, first["id"].clone()),
        "{again}"
    );
    let (status, body) = p
        .call(Role::Lead, &release(released.id), Some(json!({})))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("nothing_to_release")),
        "{body}"
    );
    let releases = p
        .actions()
        .await
        .into_iter()
        .filter(|a| a.alert_id.starts_with("release:"))
        .count();
    assert_eq!(releases, 1);

    // Who asked, and what it did, are in the audit log and on the case's timeline.
    let audit = p.audit().await;
    assert!(audit.iter().any(|e| e.action == "action.decide"
        && e.actor == "apikey:lead"
        && e.object_id == released.id.to_string()));
    let mut filed = false;
    for _ in 0..500 {
        let timeline = p.store.timeline(released.case_id, 0, 1000).await.unwrap();
        filed = timeline
            .iter()
            .any(|t| t.kind == "respond.step_result" && t.details["action_id"] == released.id);
        if filed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(filed, "the release's result reached the case timeline");

    // The endpoint is in the OpenAPI document with its answers.
    let doc: Value = p
        .http
        .get(format!("{}/api/openapi.json", p.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let answers = &doc["paths"]["/api/v1/actions/{id}/release"]["post"]["responses"];
    for code in ["200", "202", "403", "404", "409"] {
        assert!(answers.get(code).is_some(), "{code} missing: {answers}");
    }
}

#[tokio::test]
async fn an_invalid_case_action_is_dead_lettered() {
    let mut p = start_platform(playbooks(&playbook(
        "none",
        "  trigger: {ruleIds: [none]}\n  steps:\n  - {name: n, type: log, message: m}",
    )))
    .await;
    let bad = RespondOutput::CaseAction(CaseAction {
        case_id: 1,
        action_id: 1,
        idempotency_key: "kastell-0".into(),
        operation: CaseOperation::SetSeverity {
            severity: "urgent".into(),
        },
    });
    publish_json(p.bus.as_ref(), Topic::ResponseOutputs, &bad)
        .await
        .unwrap();
    let letter = p.dead_letters.next().await.unwrap();
    let letter: Value = letter.message.decode().unwrap();
    assert_eq!(letter["topic"], "kastell.response-outputs");
    assert!(
        letter["reason"].as_str().unwrap().contains("not found"),
        "{letter}"
    );
}

// ---- a crash after a side effect ---------------------------------------------------

/// The SQLite store, whose `finish_action` fails while `crash` is set: the process
/// "stops" after the step had its side effect and before the action was finished.
struct CrashingStore {
    inner: Arc<SqliteStore>,
    crash: AtomicBool,
}

#[async_trait]
impl CaseStore for CrashingStore {
    async fn insert_alert(&self, a: &Alert) -> Result<bool, StoreError> {
        self.inner.insert_alert(a).await
    }
    async fn get_alert(&self, id: &str) -> Result<Option<AlertRecord>, StoreError> {
        self.inner.get_alert(id).await
    }
    async fn list_alerts(&self, f: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
        self.inner.list_alerts(f).await
    }
    async fn find_open_case(
        &self,
        k: &str,
        s: DateTime<Utc>,
    ) -> Result<Option<CaseRecord>, StoreError> {
        self.inner.find_open_case(k, s).await
    }
    async fn open_case(&self, n: &NewCase, a: &Alert) -> Result<CaseRecord, StoreError> {
        self.inner.open_case(n, a).await
    }
    async fn attach_alert(&self, id: i64, a: &Alert) -> Result<CaseRecord, StoreError> {
        self.inner.attach_alert(id, a).await
    }
    async fn open_cases_near(
        &self,
        k: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<CaseRecord>, StoreError> {
        self.inner.open_cases_near(k, from, to).await
    }
    async fn merge_cases(&self, into: i64, from: i64, by: &str) -> Result<CaseRecord, StoreError> {
        self.inner.merge_cases(into, from, by).await
    }
    async fn get_case(&self, id: i64) -> Result<Option<CaseRecord>, StoreError> {
        self.inner.get_case(id).await
    }
    async fn list_cases(&self, f: &CaseFilter) -> Result<Vec<CaseRecord>, StoreError> {
        self.inner.list_cases(f).await
    }
    async fn create_action(&self, n: &NewAction) -> Result<(ActionRecord, bool), StoreError> {
        self.inner.create_action(n).await
    }
    async fn get_action(&self, id: i64) -> Result<Option<ActionRecord>, StoreError> {
        self.inner.get_action(id).await
    }
    async fn list_actions(&self, f: &ActionFilter) -> Result<Vec<ActionRecord>, StoreError> {
        self.inner.list_actions(f).await
    }
    async fn decide_action(
        &self,
        id: i64,
        d: &Decision,
        by: &str,
    ) -> Result<ActionRecord, StoreError> {
        self.inner.decide_action(id, d, by).await
    }
    async fn finish_action(
        &self,
        id: i64,
        s: ActionStatus,
        r: &Value,
    ) -> Result<ActionRecord, StoreError> {
        if self.crash.load(Ordering::SeqCst) {
            return Err(StoreError::Query {
                what: "finish action (the process stopped)",
                source: sqlx::Error::PoolClosed,
            });
        }
        self.inner.finish_action(id, s, r).await
    }
    async fn update_case(
        &self,
        id: i64,
        u: &CaseUpdate,
        by: &str,
    ) -> Result<CaseRecord, StoreError> {
        self.inner.update_case(id, u, by).await
    }
    async fn create_api_key(&self, k: &ApiKeyRecord, by: &str) -> Result<(), StoreError> {
        self.inner.create_api_key(k, by).await
    }
    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.inner.get_api_key(id).await
    }
    async fn triage_alert(
        &self,
        id: &str,
        t: &AlertTriage,
        by: &str,
    ) -> Result<AlertRecord, StoreError> {
        self.inner.triage_alert(id, t, by).await
    }
    async fn close_case(
        &self,
        id: i64,
        r: Resolution,
        s: &str,
        by: &str,
    ) -> Result<CaseRecord, StoreError> {
        self.inner.close_case(id, r, s, by).await
    }
    async fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit_entries(after, limit).await
    }
    async fn append_case_note(
        &self,
        id: i64,
        k: &'static str,
        d: &Value,
        by: &str,
    ) -> Result<(), StoreError> {
        self.inner.append_case_note(id, k, d, by).await
    }
    async fn create_case(&self, d: &CaseDraft, by: &str) -> Result<CaseRecord, StoreError> {
        self.inner.create_case(d, by).await
    }
    async fn promote_alert(
        &self,
        a: &str,
        d: &CaseDraft,
        by: &str,
    ) -> Result<CaseRecord, StoreError> {
        self.inner.promote_alert(a, d, by).await
    }
    async fn merge_alert(&self, a: &str, c: i64, by: &str) -> Result<CaseRecord, StoreError> {
        self.inner.merge_alert(a, c, by).await
    }
    async fn add_observable(
        &self,
        o: &ObservableOwner,
        n: &NewObservable,
        by: &str,
    ) -> Result<(ObservableRecord, bool), StoreError> {
        self.inner.add_observable(o, n, by).await
    }
    async fn list_observables(
        &self,
        o: &ObservableOwner,
    ) -> Result<Vec<ObservableRecord>, StoreError> {
        self.inner.list_observables(o).await
    }
    async fn create_task(&self, c: i64, n: &NewTask, by: &str) -> Result<TaskRecord, StoreError> {
        self.inner.create_task(c, n, by).await
    }
    async fn list_tasks(&self, c: i64) -> Result<Vec<TaskRecord>, StoreError> {
        self.inner.list_tasks(c).await
    }
    async fn update_task(
        &self,
        c: i64,
        t: i64,
        u: &TaskUpdate,
        by: &str,
    ) -> Result<TaskRecord, StoreError> {
        self.inner.update_task(c, t, u, by).await
    }
    async fn add_comment(&self, c: i64, t: &str, by: &str) -> Result<TimelineEntry, StoreError> {
        self.inner.add_comment(c, t, by).await
    }
    async fn timeline(&self, c: i64, a: i64, l: i64) -> Result<Vec<TimelineEntry>, StoreError> {
        self.inner.timeline(c, a, l).await
    }
    async fn figures(
        &self,
        f: DateTime<Utc>,
        t: DateTime<Utc>,
    ) -> Result<Vec<SeverityFigures>, StoreError> {
        self.inner.figures(f, t).await
    }
    async fn search(&self, t: &str, m: Tlp, l: i64) -> Result<SearchHits, StoreError> {
        self.inner.search(t, m, l).await
    }
    async fn set_significant_incident(
        &self,
        case_id: i64,
        significant: bool,
        by: &str,
    ) -> Result<bool, StoreError> {
        self.inner
            .set_significant_incident(case_id, significant, by)
            .await
    }
    async fn significant_incident(&self, case_id: i64) -> Result<bool, StoreError> {
        self.inner.significant_incident(case_id).await
    }
    async fn significant_incidents(&self) -> Result<Vec<i64>, StoreError> {
        self.inner.significant_incidents().await
    }

    async fn response_output_applied(&self, k: &str) -> Result<bool, StoreError> {
        self.inner.response_output_applied(k).await
    }
    async fn record_response_output(&self, k: &str, c: i64, n: &str) -> Result<bool, StoreError> {
        self.inner.record_response_output(k, c, n).await
    }
}

#[tokio::test]
async fn a_step_that_crashed_after_its_side_effect_is_not_repeated_after_a_restart() {
    let (base, receiver) = start_receiver().await;
    let set = playbooks(&playbook(
        "block",
        &format!(
            "  trigger: {{minLevel: high}}\n  steps:\n\
             \x20 - {{name: block, type: webhook, webhook: {{url: '{base}/hooks/block'}}}}\n\
             \x20 - {{name: call, type: http, http: {{url: '{base}/hooks/call', \
             secretHeaders: {{X-Api-Key: BLOCK_API_KEY}}, body: {{case: '{{{{ case.id }}}}'}}}}}}"
        ),
    ));
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteStore::open_dir(dir.path()).await.unwrap());
    let journal_file = dir.path().join("respond-journal.jsonl");
    let alert = wazuh_alert();
    sqlite.insert_alert(&alert).await.unwrap();
    let new = NewCase {
        title: "t".into(),
        group_key: kastell_cases::group_key(&alert),
        rule_id: alert.rule.id.clone(),
        host: alert.host.clone(),
    };
    let case = sqlite.open_case(&new, &alert).await.unwrap();
    let opened = CaseEvent::CaseOpened {
        case_id: case.id,
        alert: Box::new(alert),
    };

    // First life: both calls are answered, then finishing the first action fails as if
    // the process had died.
    let crashing = Arc::new(CrashingStore {
        inner: sqlite.clone(),
        crash: AtomicBool::new(true),
    });
    let journal = Arc::new(Journal::open(&journal_file).unwrap());
    let first = Responder::new(crashing, set.clone(), runners()).with_journal(journal);
    let stats = RespondStats::new();
    assert!(first.handle(&opened, &stats).await.is_err());
    drop(first);
    assert_eq!(
        receiver.received().len(),
        1,
        "the webhook had its side effect"
    );
    let unfinished = sqlite.list_actions(&ActionFilter::default()).await.unwrap();
    assert_eq!(unfinished.len(), 1, "the second step was never reached");
    assert_eq!(unfinished[0].status, ActionStatus::Approved);

    // A torn last line, as a crash in mid-write leaves, is skipped on reading.
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&journal_file)
        .unwrap();
    file.write_all(b"{\"key\": \"kastell-torn").unwrap();
    drop(file);

    // Second life: the journal is read back from its file; the redelivered event
    // resumes the unfinished action without calling again, and runs the next step.
    let journal = Arc::new(Journal::open(&journal_file).unwrap());
    assert_eq!(journal.len(), 1);
    let second = Responder::new(sqlite.clone(), set, runners()).with_journal(journal);
    second.handle(&opened, &stats).await.unwrap();
    second.handle(&opened, &stats).await.unwrap();

    let received = receiver.received();
    assert_eq!(
        received.len(),
        2,
        "one webhook post and one http call, none repeated"
    );
    let actions = sqlite.list_actions(&ActionFilter::default()).await.unwrap();
    assert_eq!(actions.len(), 2);
    for action in &actions {
        assert_eq!(action.status, ActionStatus::Succeeded, "{action:?}");
    }
    let block = actions.iter().find(|a| a.step == "block").unwrap();
    assert_eq!(block.result.as_ref().unwrap()["status"], 200);
    assert!(
        block.result.as_ref().unwrap()["requests"]
            .as_array()
            .unwrap()
            .is_empty(),
        "the resumed run made no request"
    );
    let journal = std::fs::read_to_string(&journal_file).unwrap();
    assert!(
        !journal.contains(SECRET),
        "the journal keeps answers, not credentials"
    );
}

#[test]
fn every_example_playbook_compiles_and_each_trigger_kind_has_one() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/playbooks");
    let mut set = kastell_crds::ResourceSet::default();
    let mut errors = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            kastell_crds::load::load_text(&path, &text, &mut set, &mut errors);
        }
    }
    assert!(errors.is_empty(), "{errors:?}");
    let triggers: Vec<kastell_crds::playbook::Trigger> = set
        .playbooks
        .iter()
        .map(|p| p.object.spec.trigger.clone())
        .collect();
    let (compiled, invalid) = PlaybookSet::compile(set.playbooks);
    assert!(invalid.is_empty(), "{invalid:?}");
    assert!(compiled.len() >= 6);
    use kastell_crds::playbook::TriggerEvent::*;
    for kind in [
        CaseOpened,
        AlertAttached,
        SeverityRaised,
        ObservableAdded,
        CaseClosed,
        Manual,
    ] {
        assert!(
            triggers.iter().any(|t| t.events.contains(&kind)),
            "no example for {kind:?}"
        );
    }
    assert!(triggers.iter().any(|t| !t.techniques.is_empty()));
    assert!(triggers.iter().any(|t| !t.sensors.is_empty()));
    assert!(triggers.iter().any(|t| t.intel_match.is_some()));
}
