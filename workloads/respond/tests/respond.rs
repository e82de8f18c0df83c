//! The respond stage against the real SQLite case store, the in-process bus and a local
//! webhook receiver, triggered by real Wazuh and Suricata alerts (tests/fixtures).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use kastell_core::bus::publish_json;
use kastell_core::store::{ActionFilter, ActionRecord, ActionStatus, Decision, NewCase};
use kastell_core::{
    Alert, Bus, BusError, CaseEvent, CaseStore, Event, InProcessBus, Level, Message, RuleRef,
    SqliteStore, Subscription, Topic,
};
use kastell_respond::{
    run_respond, DeadLetter, PlaybookSet, RespondReport, RespondStats, Responder, RunnerSettings,
    Runners, RATE_LIMITED,
};
use serde_json::{json, Value};
use tokio::sync::Notify;

// ---- real alerts -------------------------------------------------------------------

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

/// Wazuh and Suricata write `+0000`, which is not RFC 3339.
fn sensor_time(raw: &str) -> DateTime<Utc> {
    DateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f%z")
        .unwrap()
        .with_timezone(&Utc)
}

/// The Wazuh sshd brute-force alert (rule 5712, level 10, T1110) as the alert a
/// DetectionRule would raise on it.
fn wazuh_alert() -> Alert {
    let raw = fixture("wazuh-sshd-brute-force.json");
    let event = Event::from_value(json!({
        "@timestamp": sensor_time(raw["timestamp"].as_str().unwrap()).to_rfc3339(),
        "host": {"name": raw["agent"]["name"]},
        "source": {
            "ip": raw["data"]["srcip"],
            "port": raw["data"]["srcport"].as_str().unwrap().parse::<u16>().unwrap(),
        },
        "user": {"name": raw["data"]["srcuser"]},
        "event": {"original": raw["full_log"], "dataset": "wazuh.alerts"},
        "observer": {"name": "wazuh"},
    }))
    .unwrap();
    let rule = &raw["rule"];
    let mut tags: Vec<String> = rule["mitre"]["id"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| format!("attack.{}", id.as_str().unwrap().to_lowercase()))
        .collect();
    tags.push("attack.credential-access".into());
    let rule = RuleRef {
        id: format!("wazuh-{}", rule["id"].as_str().unwrap()),
        title: rule["description"].as_str().unwrap().into(),
        level: Level::High,
        tags,
        ..Default::default()
    };
    Alert::from_event(rule, event, Utc::now())
}

/// The Suricata IcedID alert (ET signature 2030053) as a medium alert.
fn suricata_alert() -> Alert {
    let raw = fixture("suricata-icedid-alert.json");
    let event = Event::from_value(json!({
        "@timestamp": sensor_time(raw["timestamp"].as_str().unwrap()).to_rfc3339(),
        "source": {"ip": raw["src_ip"], "port": raw["src_port"]},
        "destination": {"ip": raw["dest_ip"], "port": raw["dest_port"]},
        "url": {"domain": raw["http"]["hostname"], "path": raw["http"]["url"]},
        "event": {"dataset": "suricata.eve"},
        "observer": {"name": "suricata"},
    }))
    .unwrap();
    let alert = &raw["alert"];
    let rule = RuleRef {
        id: format!("suricata-{}", alert["signature_id"]),
        title: alert["signature"].as_str().unwrap().into(),
        level: Level::Medium,
        tags: vec![alert["metadata"]["malware_family"][0]
            .as_str()
            .unwrap()
            .to_lowercase()],
        ..Default::default()
    };
    Alert::from_event(rule, event, Utc::now())
}

/// The same alert seen at another time: a different alert id, as a new event gives.
fn again(alert: &Alert, n: i64) -> Alert {
    let mut event = alert.events[0].clone();
    let at = alert.timestamp + chrono::Duration::seconds(n);
    event.set("@timestamp", Value::String(at.to_rfc3339()));
    Alert::from_event(alert.rule.clone(), event, Utc::now())
}

// ---- playbooks ---------------------------------------------------------------------

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

// ---- the local webhook receiver ----------------------------------------------------

#[derive(Debug, Clone)]
struct Received {
    hook: String,
    headers: HeaderMap,
    body: Value,
}

#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn hook(
    State(receiver): State<Receiver>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    receiver.received.lock().unwrap().push(Received {
        hook: name.clone(),
        headers,
        body,
    });
    match name.as_str() {
        "fail" => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (StatusCode::OK, "late").into_response()
        }
        "redirect" => (
            StatusCode::FOUND,
            [("location", "http://127.0.0.1:1/hooks/elsewhere")],
            "",
        )
            .into_response(),
        "big" => (StatusCode::OK, "x".repeat(5000)).into_response(),
        _ => (StatusCode::OK, "accepted").into_response(),
    }
}

/// Starts a receiver on 127.0.0.1 and returns its base URL.
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

/// A loopback address where nothing listens.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

// ---- store and stage ---------------------------------------------------------------

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    stats: RespondStats,
    responder: Responder,
}

async fn harness(playbooks: Arc<PlaybookSet>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open_dir(dir.path()).await.unwrap());
    let runners = Arc::new(Runners::new(&RunnerSettings::default()).unwrap());
    let responder = Responder::new(store.clone(), playbooks, runners);
    Harness {
        _dir: dir,
        store,
        stats: RespondStats::new(),
        responder,
    }
}

impl Harness {
    /// Stores the alert and opens its case, as the cases stage does.
    async fn open_case(&self, alert: &Alert) -> CaseEvent {
        self.store.insert_alert(alert).await.unwrap();
        let case = self
            .store
            .open_case(
                &NewCase {
                    title: alert.rule.title.clone(),
                    group_key: format!("{}|{:?}", alert.rule.id, alert.host),
                    rule_id: alert.rule.id.clone(),
                    host: alert.host.clone(),
                },
                alert,
            )
            .await
            .unwrap();
        CaseEvent::CaseOpened {
            case_id: case.id,
            alert: Box::new(alert.clone()),
        }
    }

    async fn handle(&self, event: &CaseEvent) {
        self.responder.handle(event, &self.stats).await.unwrap();
    }

    async fn actions(&self) -> Vec<ActionRecord> {
        self.store
            .list_actions(&ActionFilter::default())
            .await
            .unwrap()
    }

    async fn action(&self, step: &str) -> ActionRecord {
        let actions = self.actions().await;
        actions
            .into_iter()
            .find(|a| a.step == step)
            .unwrap_or_else(|| panic!("no action of step {step}"))
    }
}

fn error_of(action: &ActionRecord) -> String {
    action.result.as_ref().unwrap()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// ---- tests -------------------------------------------------------------------------

#[tokio::test]
async fn only_matching_playbooks_start_and_log_steps_run_at_once() {
    let set = playbooks(&format!(
        "{}{}",
        playbook(
            "brute-force",
            "  trigger: {minLevel: high, ruleTags: [ATTACK.T1110]}\n  steps:\n\
             \x20 - {name: note, type: log, message: '{{ alert.rule.title }} by \
             {{ alert.events.0.user.name }} from {{ alert.events.0.source.ip }} \
             (case {{ case.id }}, {{ case.severity }}, {{ playbook }}/{{ step }})'}",
        ),
        playbook(
            "critical-only",
            "  trigger: {minLevel: critical}\n  steps:\n  - {name: note, type: log, message: m}",
        ),
    ));
    let h = harness(set).await;
    let wazuh = h.open_case(&wazuh_alert()).await;
    let suricata = h.open_case(&suricata_alert()).await;
    h.handle(&wazuh).await;
    h.handle(&suricata).await;

    let actions = h.actions().await;
    assert_eq!(actions.len(), 1, "{actions:?}");
    let note = &actions[0];
    assert_eq!(note.playbook, "soc/brute-force");
    assert_eq!(note.step_type, "log");
    assert_eq!(note.status, ActionStatus::Succeeded);
    let message = "sshd: brute force trying to get access to the system. Non existent user. \
                   by paco from 172.17.1.1 (case 1, high, soc/brute-force/note)";
    assert_eq!(note.params["message"], message);
    assert_eq!(
        note.result,
        Some(json!({ "message": message, "attempts": 1, "requests": [] }))
    );
    let report = h.stats.snapshot();
    assert_eq!(
        (report.playbook_runs, report.executed, report.succeeded),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn alert_attached_triggers_only_playbooks_that_ask_for_it() {
    let set = playbooks(&playbook(
        "attach",
        "  trigger: {events: [alert-attached]}\n  steps:\n  - {name: note, type: log, message: m}",
    ));
    let h = harness(set).await;
    let alert = wazuh_alert();
    let opened = h.open_case(&alert).await;
    h.handle(&opened).await;
    assert!(h.actions().await.is_empty());

    let second = again(&alert, 5);
    h.store.insert_alert(&second).await.unwrap();
    h.store.attach_alert(1, &second).await.unwrap();
    h.handle(&CaseEvent::AlertAttached {
        case_id: 1,
        alert: Box::new(second.clone()),
    })
    .await;
    let actions = h.actions().await;
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].alert_id, second.id);
}

#[tokio::test]
async fn a_replayed_case_event_runs_nothing_twice() {
    let (base, receiver) = start_receiver().await;
    let set = playbooks(&playbook(
        "notify",
        &format!(
            "  trigger: {{}}\n  steps:\n  - {{name: note, type: log, message: m}}\n\
             \x20 - {{name: hook, type: webhook, webhook: {{url: '{base}/hooks/ok'}}}}"
        ),
    ));
    let h = harness(set).await;
    let opened = h.open_case(&wazuh_alert()).await;
    h.handle(&opened).await;
    h.handle(&opened).await;

    assert_eq!(receiver.received().len(), 1);
    let actions = h.actions().await;
    assert_eq!(actions.len(), 2);
    assert!(actions.iter().all(|a| a.status == ActionStatus::Succeeded));
    let report = h.stats.snapshot();
    assert_eq!((report.actions_created, report.actions_existing), (2, 2));
    assert_eq!(report.executed, 2);
}

#[tokio::test]
async fn webhook_posts_rendered_headers_and_body_and_records_the_answer() {
    let (base, receiver) = start_receiver().await;
    let set = playbooks(&playbook(
        "ticket",
        &format!(
            "  trigger: {{}}\n  steps:\n\
             \x20 - name: open-ticket\n    type: webhook\n    webhook:\n\
             \x20     url: '{base}/hooks/big'\n\
             \x20     headers: {{X-Kastell-Case: '{{{{ case.id }}}}'}}\n\
             \x20     body: {{summary: '{{{{ alert.rule.title }}}}', ip: '{{{{ alert.events.0.source.ip }}}}',\n\
             \x20            missing: '{{{{ alert.events.0.destination.ip }}}}', priority: 2, tags: ['{{{{ alert.rule.tags.0 }}}}']}}"
        ),
    ));
    let h = harness(set).await;
    h.handle(&h.open_case(&wazuh_alert()).await).await;

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].headers["x-kastell-case"], "1");
    assert_eq!(received[0].headers["content-type"], "application/json");
    assert_eq!(
        received[0].body,
        json!({
            "summary": "sshd: brute force trying to get access to the system. Non existent user.",
            "ip": "172.17.1.1",
            "missing": "",
            "priority": 2,
            "tags": ["attack.t1110"],
        })
    );
    let action = h.action("open-ticket").await;
    assert_eq!(action.status, ActionStatus::Succeeded);
    let result = action.result.unwrap();
    assert_eq!(result["status"], 200);
    assert_eq!(result["body"].as_str().unwrap().len(), 1024);
    assert_eq!(result["body_truncated"], true);
}

#[tokio::test]
async fn failed_webhooks_are_recorded_with_their_reason() {
    let (base, receiver) = start_receiver().await;
    let down = closed_port().await;
    let set = playbooks(&playbook(
        "hooks",
        &format!(
            "  trigger: {{}}\n  steps:\n\
             \x20 - {{name: down, type: webhook, webhook: {{url: '{down}/hooks/x'}}}}\n\
             \x20 - {{name: fail, type: webhook, webhook: {{url: '{base}/hooks/fail'}}}}\n\
             \x20 - {{name: slow, type: webhook, timeoutSeconds: 1, webhook: {{url: '{base}/hooks/slow'}}}}\n\
             \x20 - {{name: redirect, type: webhook, webhook: {{url: '{base}/hooks/redirect'}}}}\n\
             \x20 - {{name: after, type: log, message: still runs}}"
        ),
    ));
    let h = harness(set).await;
    h.handle(&h.open_case(&wazuh_alert()).await).await;

    let down = h.action("down").await;
    assert_eq!(down.status, ActionStatus::Failed);
    assert!(
        error_of(&down)
            .to_lowercase()
            .contains("connection refused"),
        "{down:?}"
    );

    let fail = h.action("fail").await;
    assert_eq!(fail.status, ActionStatus::Failed);
    assert_eq!(
        error_of(&fail),
        "webhook answered 500 Internal Server Error"
    );
    assert_eq!(fail.result.as_ref().unwrap()["body"], "boom");

    let slow = h.action("slow").await;
    assert_eq!(slow.status, ActionStatus::Failed);
    assert!(error_of(&slow).contains("no answer within 1s"), "{slow:?}");

    let redirect = h.action("redirect").await;
    assert_eq!(redirect.status, ActionStatus::Failed);
    assert!(
        error_of(&redirect).contains("redirects are not followed"),
        "{redirect:?}"
    );
    let hooks: Vec<String> = receiver.received().into_iter().map(|r| r.hook).collect();
    assert_eq!(hooks, ["fail", "slow", "redirect"]);

    assert_eq!(h.action("after").await.status, ActionStatus::Succeeded);
    let report = h.stats.snapshot();
    assert_eq!((report.succeeded, report.failed), (1, 4));
}

#[tokio::test]
async fn a_rejected_action_never_runs() {
    let (base, receiver) = start_receiver().await;
    let set = playbooks(&playbook(
        "block",
        &format!(
            "  trigger: {{}}\n  steps:\n\
             \x20 - {{name: block, type: webhook, approval: {{policy: always}}, webhook: {{url: '{base}/hooks/ok'}}}}"
        ),
    ));
    let h = harness(set).await;
    h.handle(&h.open_case(&wazuh_alert()).await).await;
    let action = h.action("block").await;
    assert_eq!(action.status, ActionStatus::Pending);

    let reject = Decision::Reject {
        reason: "the address is our VPN gateway".into(),
    };
    h.store
        .decide_action(action.id, &reject, "alice")
        .await
        .unwrap();
    // An approval event for a rejected action (a forged or confused message) runs nothing.
    h.handle(&CaseEvent::ActionApproved {
        action_id: action.id,
    })
    .await;
    assert!(receiver.received().is_empty());
    let action = h.action("block").await;
    assert_eq!(action.status, ActionStatus::Rejected);
    assert_eq!(action.result, None);
}

#[tokio::test]
async fn the_rate_limit_fails_actions_beyond_the_hourly_budget() {
    let set = playbooks(&playbook(
        "limited",
        "  trigger: {}\n  rateLimit: {maxActionsPerHour: 2}\n  steps:\n\
         \x20 - {name: note, type: log, message: '{{ alert.id }}'}",
    ));
    let h = harness(set).await;
    let first = wazuh_alert();
    for n in 0..3 {
        let alert = again(&first, n);
        h.handle(&h.open_case(&alert).await).await;
    }
    let actions = h.actions().await;
    let statuses: Vec<ActionStatus> = actions.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [
            ActionStatus::Succeeded,
            ActionStatus::Succeeded,
            ActionStatus::Failed
        ]
    );
    assert_eq!(error_of(&actions[2]), RATE_LIMITED);
    assert_eq!(
        actions[2].result.as_ref().unwrap()["max_actions_per_hour"],
        2
    );
    let report = h.stats.snapshot();
    assert_eq!((report.rate_limited, report.executed), (1, 2));
}

#[tokio::test]
async fn a_dry_run_records_what_would_happen_and_sends_nothing() {
    let (base, receiver) = start_receiver().await;
    let set = playbooks(&playbook(
        "rehearsal",
        &format!(
            "  trigger: {{}}\n  dryRun: true\n  steps:\n\
             \x20 - {{name: hook, type: webhook, message: 'case {{{{ case.id }}}}', \
             webhook: {{url: '{base}/hooks/ok'}}}}"
        ),
    ));
    let h = harness(set).await;
    h.handle(&h.open_case(&suricata_alert()).await).await;
    assert!(receiver.received().is_empty());
    let action = h.action("hook").await;
    assert_eq!(action.status, ActionStatus::Succeeded);
    let result = action.result.unwrap();
    assert_eq!(result["dry_run"], true);
    assert_eq!(result["would"]["method"], "POST");
    assert_eq!(result["would"]["url"], format!("{base}/hooks/ok"));
    assert_eq!(result["would"]["body"]["text"], "case 1");
    assert_eq!(
        result["would"]["body"]["alert"]["rule"]["id"],
        "suricata-2030053"
    );
}

/// An in-process bus that says when the stage has subscribed, so a test publishes only
/// once someone listens (the in-process bus keeps nothing for late groups).
struct SignallingBus {
    inner: InProcessBus,
    subscribed: Notify,
}

#[async_trait]
impl Bus for SignallingBus {
    async fn publish(&self, topic: Topic, message: Message) -> Result<(), BusError> {
        self.inner.publish(topic, message).await
    }

    async fn subscribe(
        &self,
        topic: Topic,
        group: &str,
    ) -> Result<Box<dyn Subscription>, BusError> {
        let subscription = self.inner.subscribe(topic, group).await;
        self.subscribed.notify_one();
        subscription
    }

    async fn close(&self, topic: Topic) {
        self.inner.close(topic).await
    }
}

struct Stage {
    bus: Arc<SignallingBus>,
    dead_letters: Box<dyn Subscription>,
    task: tokio::task::JoinHandle<RespondReport>,
}

async fn start_stage(h: &Harness, set: Arc<PlaybookSet>) -> Stage {
    let bus = Arc::new(SignallingBus {
        inner: InProcessBus::new(16),
        subscribed: Notify::new(),
    });
    let dead_letters = bus.subscribe(Topic::DeadLetters, "test").await.unwrap();
    bus.subscribed.notified().await;
    let task = {
        let bus = Arc::clone(&bus);
        let store: Arc<dyn CaseStore> = h.store.clone();
        let runners = Arc::new(Runners::new(&RunnerSettings::default()).unwrap());
        tokio::spawn(async move {
            let stats = RespondStats::new();
            run_respond(bus.as_ref(), store, set, runners, &stats)
                .await
                .unwrap()
        })
    };
    bus.subscribed.notified().await;
    Stage {
        bus,
        dead_letters,
        task,
    }
}

async fn wait_for_action(h: &Harness, step: &str, status: ActionStatus) -> ActionRecord {
    for _ in 0..500 {
        if let Some(action) = h.actions().await.into_iter().find(|a| a.step == step) {
            if action.status == status {
                return action;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "action {step} never became {status}: {:?}",
        h.actions().await
    );
}

#[tokio::test]
async fn an_approval_required_step_waits_for_approval_and_then_runs() {
    let (base, receiver) = start_receiver().await;
    let set = playbooks(&playbook(
        "contain",
        &format!(
            "  trigger: {{minLevel: high}}\n  steps:\n\
             \x20 - {{name: block, type: webhook, approval: {{policy: always}},\n\
             \x20    message: 'block {{{{ alert.events.0.source.ip }}}}', \
             webhook: {{url: '{base}/hooks/soc-chat'}}}}\n\
             \x20 - {{name: record, type: log, message: 'case {{{{ case.id }}}} opened'}}"
        ),
    ));
    let h = harness(Arc::clone(&set)).await;
    let stage = start_stage(&h, set).await;
    let alert = wazuh_alert();
    let opened = h.open_case(&alert).await;
    publish_json(stage.bus.as_ref(), Topic::CaseEvents, &opened)
        .await
        .unwrap();

    // The pending step does not hold back the step after it.
    wait_for_action(&h, "record", ActionStatus::Succeeded).await;
    let pending = wait_for_action(&h, "block", ActionStatus::Pending).await;
    assert!(
        receiver.received().is_empty(),
        "nothing is sent before approval"
    );
    assert_eq!(pending.params["url"], format!("{base}/hooks/soc-chat"));

    // What the cases API does on POST /api/v1/actions/{id}/approve.
    h.store
        .decide_action(pending.id, &Decision::Approve, "alice")
        .await
        .unwrap();
    let approved = CaseEvent::ActionApproved {
        action_id: pending.id,
    };
    publish_json(stage.bus.as_ref(), Topic::CaseEvents, &approved)
        .await
        .unwrap();
    // A second delivery of the same approval runs nothing again.
    publish_json(stage.bus.as_ref(), Topic::CaseEvents, &approved)
        .await
        .unwrap();
    stage.bus.close(Topic::CaseEvents).await;
    let report = stage.task.await.unwrap();

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].body,
        json!({
            "case_id": 1,
            "alert": {
                "id": alert.id,
                "rule": {
                    "id": "wazuh-5712",
                    "title": "sshd: brute force trying to get access to the system. Non existent user.",
                    "level": "high",
                },
                "host": "localhost.localdomain",
                "timestamp": "2022-05-11T12:29:19.905Z",
            },
            "playbook": "soc/contain",
            "step": "block",
            "text": "block 172.17.1.1",
        })
    );
    let done = h.action("block").await;
    assert_eq!(done.status, ActionStatus::Succeeded);
    assert_eq!(done.decided_by.as_deref(), Some("alice"));
    assert_eq!(done.result.as_ref().unwrap()["status"], 200);
    assert_eq!(done.result.as_ref().unwrap()["body"], "accepted");
    assert_eq!(report.case_events, 3);
    assert_eq!(report.actions_created, 2);
    assert_eq!(report.awaiting_approval, 1);
    assert_eq!(
        (report.executed, report.succeeded, report.failed),
        (2, 2, 0)
    );
    assert_eq!(report.pending, 0);
    drop(stage.dead_letters);
}

#[tokio::test]
async fn bad_messages_are_dead_lettered_and_the_stage_goes_on() {
    let set = playbooks(&playbook(
        "note",
        "  trigger: {}\n  steps:\n  - {name: note, type: log, message: m}\n\
         \x20 - {name: ask, type: log, approval: {policy: always}, message: m}",
    ));
    let h = harness(Arc::clone(&set)).await;
    let mut stage = start_stage(&h, set).await;
    let bus = stage.bus.as_ref();
    bus.publish(
        Topic::CaseEvents,
        Message {
            id: None,
            key: None,
            payload: b"{\"kind\":\"case_opened\",\"case_id\":\"one\"}"
                .to_vec()
                .into(),
        },
    )
    .await
    .unwrap();
    bus.publish(
        Topic::CaseEvents,
        Message {
            id: None,
            key: None,
            payload: vec![0xff, 0xfe, b'{'].into(),
        },
    )
    .await
    .unwrap();
    publish_json(
        bus,
        Topic::CaseEvents,
        &CaseEvent::ActionApproved { action_id: 4242 },
    )
    .await
    .unwrap();
    let opened = h.open_case(&wazuh_alert()).await;
    publish_json(bus, Topic::CaseEvents, &opened).await.unwrap();
    bus.close(Topic::CaseEvents).await;
    let report = stage.task.await.unwrap();

    let mut letters = Vec::new();
    for _ in 0..3 {
        let delivery = stage.dead_letters.next().await.unwrap();
        letters.push(delivery.message.decode::<DeadLetter>().unwrap());
    }
    assert!(letters
        .iter()
        .all(|l| l.stage == "respond" && l.topic == "kastell.case-events"));
    assert!(
        letters[0].reason.starts_with("undecodable case event"),
        "{letters:?}"
    );
    assert!(letters[0].payload.contains("\"one\""));
    assert!(
        letters[1].reason.starts_with("undecodable case event"),
        "{letters:?}"
    );
    assert!(letters[2].reason.contains("action 4242"), "{letters:?}");

    assert_eq!(h.action("note").await.status, ActionStatus::Succeeded);
    assert_eq!(report.dead_letters, 3);
    assert_eq!(report.errors, 1);
    assert_eq!(report.case_events, 2);
    assert_eq!(
        report.pending, 1,
        "the approval-required step is left pending"
    );
}

#[tokio::test]
async fn the_demo_playbook_compiles() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc");
    let mut set = kastell_crds::ResourceSet::default();
    let mut errors = Vec::new();
    let file = dir.join("playbook.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    kastell_crds::load::load_text(&file, &text, &mut set, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let (compiled, invalid) = PlaybookSet::compile(set.playbooks);
    assert!(invalid.is_empty(), "{invalid:?}");
    let playbook = compiled.iter().next().unwrap();
    assert!(playbook.key.starts_with("soc/"));
    let steps: Vec<(&str, bool)> = playbook
        .steps
        .iter()
        .map(|s| {
            (
                s.step_type(),
                s.approval.required_at(kastell_core::Level::Informational),
            )
        })
        .collect();
    assert_eq!(steps, [("log", false), ("webhook", true)]);
}

#[test]
fn the_old_scalar_approval_is_refused_with_what_to_write_instead() {
    let load = |approval: &str| {
        let yaml = playbook(
            "old",
            &format!(
                "  trigger: {{minLevel: high}}\n  steps:\n  - {{name: ask, type: log, message: m, approval: {approval}}}"
            ),
        );
        let mut set = kastell_crds::ResourceSet::default();
        let mut errors = Vec::new();
        kastell_crds::load::load_text(Path::new("/repo/old.yaml"), &yaml, &mut set, &mut errors);
        (
            set,
            errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        )
    };

    let (set, errors) = load("required");
    assert!(set.playbooks.is_empty());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("Playbook old"), "{}", errors[0]);
    assert!(
        errors[0].contains("`approval: required` is no longer accepted")
            && errors[0].contains("write `approval: {policy: always}`"),
        "{}",
        errors[0]
    );
    let (_, errors) = load("none");
    assert!(
        errors[0].contains("`approval: {policy: never}`"),
        "{}",
        errors[0]
    );

    // The object form still loads, and a mistake inside it is still named.
    let (set, errors) = load("{policy: always, roles: [lead]}");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(set.playbooks.len(), 1);
    let (_, errors) = load("{policy: sometimes}");
    assert!(
        errors[0].contains("unknown variant `sometimes`"),
        "{}",
        errors[0]
    );
}

#[test]
fn an_http_release_request_is_checked_like_the_call() {
    let yaml = playbook(
        "undo",
        "  trigger: {minLevel: high}\n  steps:\n\
         \x20 - name: block\n    type: http\n    http:\n\
         \x20     url: https://soar.example.eu/hooks/block\n\
         \x20     release: {url: 'http://soar.example.eu/hooks/unblock', headers: {'bad header': x}}\n\
         \x20 - name: launch\n    type: http\n    http:\n\
         \x20     url: https://awx.example.eu\n\
         \x20     awx: {jobTemplate: 12, tokenSecret: AWX_TOKEN}\n\
         \x20     release: {url: 'https://awx.example.eu/api/v2/job_templates/13/launch/'}",
    );
    let mut set = kastell_crds::ResourceSet::default();
    let mut errors = Vec::new();
    kastell_crds::load::load_text(Path::new("/repo/undo.yaml"), &yaml, &mut set, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let (compiled, invalid) = PlaybookSet::compile(set.playbooks);
    assert!(compiled.is_empty());
    let message = invalid[0].to_string();
    for problem in [
        "http.release.url",
        "http.release.headers: \"bad header\" is not a header name",
        "an awx launch has no release request",
    ] {
        assert!(message.contains(problem), "{problem} not in {message}");
    }
}
