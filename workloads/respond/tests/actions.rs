//! Every step type against servers on 127.0.0.1 that answer like the real APIs (Wazuh
//! server API, AWX, StackStorm, Cortex, Mattermost/Slack/Teams/Matrix, an SMTP server
//! with STARTTLS), driven through the stage with the real SQLite case store and the
//! real Wazuh alert of tests/fixtures. Also: protected assets, the kill switch, the
//! global budget, a burst of duplicate deliveries and a crashed step retried.

mod smtp_sink;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::any;
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, Utc};
use kastell_core::store::{ActionFilter, ActionRecord, ActionStatus, NewCase};
use kastell_core::{Alert, CaseEvent, CaseStore, Event, Level, RuleRef, SqliteStore};
use kastell_crds::playbook::ResponsePolicy;
use kastell_respond::{
    CaseOperation, MapSecrets, MemoryOutbox, PlaybookSet, RespondOutput, RespondStats, Responder,
    RunnerSettings, Runners, Safety,
};
use serde_json::{json, Value};

// ---- the real alert ----------------------------------------------------------------

/// The Wazuh sshd brute-force alert (rule 5712, agent 000, source 172.17.1.1).
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
        "agent": {"id": raw["agent"]["id"], "name": raw["agent"]["name"]},
        "source": {"ip": raw["data"]["srcip"]},
        "user": {"name": raw["data"]["srcuser"]},
        "event": {"original": raw["full_log"], "dataset": "wazuh.alerts"},
    }))
    .unwrap();
    let rule = RuleRef {
        id: format!("wazuh-{}", raw["rule"]["id"].as_str().unwrap()),
        title: raw["rule"]["description"].as_str().unwrap().into(),
        level: Level::High,
        tags: vec!["attack.t1110".into()],
        ..Default::default()
    };
    Alert::from_event(rule, event, Utc::now())
}

/// The same alert seen `n` seconds later: another alert id.
fn again(alert: &Alert, n: i64) -> Alert {
    let mut event = alert.events[0].clone();
    let at = alert.timestamp + chrono::Duration::seconds(n);
    event.set("@timestamp", Value::String(at.to_rfc3339()));
    Alert::from_event(alert.rule.clone(), event, Utc::now())
}

// ---- the fake-but-faithful APIs ----------------------------------------------------

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Value,
}

#[derive(Clone, Default)]
struct Apis {
    requests: Arc<Mutex<Vec<Request>>>,
    /// Polls of each AWX job / Cortex job so far.
    polls: Arc<Mutex<HashMap<String, u32>>>,
    /// When set, the first poll of an AWX job answers 500 (the step fails mid-way).
    flaky_awx: Arc<Mutex<bool>>,
}

impl Apis {
    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn to(&self, path_start: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(path_start))
            .collect()
    }

    fn poll(&self, key: &str) -> u32 {
        let mut polls = self.polls.lock().unwrap();
        let n = polls.entry(key.to_owned()).or_default();
        *n += 1;
        *n
    }
}

const WAZUH_BASIC: &str = "wazuh-wui:Wazuh-Pass.1";

async fn api(
    State(apis): State<Apis>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let path = uri.path().to_owned();
    let query = query.unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    apis.requests.lock().unwrap().push(Request {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        // Wazuh server API 4.x
        ("POST", ["security", "user", "authenticate"]) => {
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(WAZUH_BASIC)
            );
            if auth != expected {
                return (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"title": "Unauthorized", "error": 401})),
                )
                    .into_response();
            }
            Json(json!({"data": {"token": "eyJ-wazuh-jwt"}, "error": 0})).into_response()
        }
        ("PUT", ["active-response"]) => {
            if auth != "Bearer eyJ-wazuh-jwt" {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            let agents: Vec<&str> = query
                .strip_prefix("agents_list=")
                .map(|list| list.split("%2C").flat_map(|a| a.split(',')).collect())
                .unwrap_or_default();
            Json(json!({
                "data": {"affected_items": agents, "total_affected_items": agents.len(),
                         "total_failed_items": 0, "failed_items": []},
                "message": "AR command was sent to all agents", "error": 0,
            }))
            .into_response()
        }
        // AWX / AAP controller API v2
        ("POST", ["api", "v2", "job_templates", id, "launch"]) => {
            if auth != "Bearer awx-token" {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            let job = 40 + id.parse::<u64>().unwrap_or(0);
            (
                StatusCode::CREATED,
                Json(json!({"job": job, "id": job, "status": "pending",
                "extra_vars": body["extra_vars"].to_string()})),
            )
                .into_response()
        }
        ("GET", ["api", "v2", "jobs", id]) => {
            let n = apis.poll(&format!("awx-{id}"));
            if n == 1 && *apis.flaky_awx.lock().unwrap() {
                return (StatusCode::BAD_GATEWAY, "upstream reset").into_response();
            }
            let status = if n < 2 { "running" } else { "successful" };
            Json(json!({"id": id.parse::<u64>().unwrap_or(0), "status": status, "elapsed": 1.5}))
                .into_response()
        }
        // StackStorm webhooks
        ("POST", ["api", "v1", "webhooks", _]) => {
            if headers.get("st2-api-key").and_then(|v| v.to_str().ok()) != Some("st2-key") {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            (
                StatusCode::ACCEPTED,
                Json(json!({"trace_tag": "t1", "payload": body})),
            )
                .into_response()
        }
        // Cortex 3
        ("POST", ["api", "analyzer", _, "run"]) => {
            Json(json!({"id": "job-AbuseIPDB-1", "status": "Waiting", "data": body["data"]}))
                .into_response()
        }
        ("GET", ["api", "job", id, "report"]) => {
            let status = if apis.poll(id) < 2 {
                "InProgress"
            } else {
                "Success"
            };
            Json(json!({"id": id, "status": status, "report": {
                "success": true,
                "summary": {"taxonomies": [{"level": "malicious", "namespace": "AbuseIPDB",
                                              "predicate": "Score", "value": "100"}]},
                "full": {"abuseConfidenceScore": 100}}}))
            .into_response()
        }
        // Matrix client-server API
        ("PUT", ["_matrix", "client", "v3", "rooms", _, "send", "m.room.message", _]) => {
            if auth != "Bearer matrix-token" {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            Json(json!({"event_id": "$kastell-event"})).into_response()
        }
        // Mattermost, Slack, Teams incoming webhooks
        ("POST", ["hooks", _]) => (StatusCode::OK, "ok").into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn start_apis() -> (String, Apis) {
    let apis = Apis::default();
    let app = Router::new().fallback(any(api)).with_state(apis.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, apis)
}

// ---- the stage ---------------------------------------------------------------------

fn secrets() -> MapSecrets {
    MapSecrets(
        [
            ("WAZUH_USER", "wazuh-wui"),
            ("WAZUH_PASSWORD", "Wazuh-Pass.1"),
            ("AWX_TOKEN", "awx-token"),
            ("ST2_API_KEY", "st2-key"),
            ("CORTEX_KEY", "cortex-key"),
            ("MATRIX_TOKEN", "matrix-token"),
            ("SMTP_USER", "soc-bot"),
            ("SMTP_PASSWORD", "smtp-pass"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    )
}

fn playbooks(yaml: &str) -> Arc<PlaybookSet> {
    let mut set = kastell_crds::ResourceSet::default();
    let mut errors = Vec::new();
    kastell_crds::load::load_text(Path::new("/repo/pb.yaml"), yaml, &mut set, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let (compiled, invalid) = PlaybookSet::compile(set.playbooks);
    assert!(invalid.is_empty(), "{invalid:?}");
    Arc::new(compiled)
}

fn playbook(spec: &str) -> Arc<PlaybookSet> {
    playbooks(&format!(
        "apiVersion: kastell.eu/v1alpha1\nkind: Playbook\n\
         metadata: {{name: pb, namespace: soc}}\nspec:\n  trigger: {{events: [case-opened]}}\n{spec}\n"
    ))
}

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    stats: RespondStats,
    outbox: Arc<MemoryOutbox>,
    responder: Responder,
}

async fn harness_with(
    set: Arc<PlaybookSet>,
    policy: ResponsePolicy,
    settings: RunnerSettings,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open_dir(dir.path()).await.unwrap());
    let runners = Arc::new(Runners::new(&settings).unwrap());
    let outbox = Arc::new(MemoryOutbox::new());
    let responder = Responder::new(store.clone(), set, runners)
        .with_safety(Safety::compile(&policy).unwrap())
        .with_outbox(outbox.clone());
    Harness {
        _dir: dir,
        store,
        stats: RespondStats::new(),
        outbox,
        responder,
    }
}

/// Runners that trust only the test servers' certificates and read the test secrets.
fn test_settings() -> RunnerSettings {
    RunnerSettings {
        native_roots: false,
        secrets: Arc::new(secrets()),
        ..RunnerSettings::default()
    }
}

async fn harness(set: Arc<PlaybookSet>) -> Harness {
    let settings = test_settings();
    harness_with(set, ResponsePolicy::default(), settings).await
}

/// The stage with the default policy and a playbook whose steps (`  steps:` and on) reach
/// the API servers, started first on 127.0.0.1: `steps` gets their base URL.
async fn harness_on_apis(steps: impl FnOnce(&str) -> String) -> (Harness, Apis) {
    let (base, apis) = start_apis().await;
    (harness(playbook(&steps(&base))).await, apis)
}

impl Harness {
    async fn open_case(&self, alert: &Alert) -> CaseEvent {
        self.store.insert_alert(alert).await.unwrap();
        let case = self
            .store
            .open_case(
                &NewCase {
                    title: alert.rule.title.clone(),
                    group_key: alert.id.clone(),
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

    async fn run(&self, alert: &Alert) {
        let event = self.open_case(alert).await;
        self.responder.handle(&event, &self.stats).await.unwrap();
    }

    async fn actions(&self) -> Vec<ActionRecord> {
        self.store
            .list_actions(&ActionFilter::default())
            .await
            .unwrap()
    }

    async fn action(&self, step: &str) -> ActionRecord {
        self.actions()
            .await
            .into_iter()
            .find(|a| a.step == step)
            .unwrap()
    }

    /// The step's action, which must have succeeded.
    async fn succeeded(&self, step: &str) -> ActionRecord {
        let action = self.action(step).await;
        assert_eq!(
            action.status,
            ActionStatus::Succeeded,
            "{step}: {:?}",
            action.result
        );
        action
    }

    fn outputs(&self) -> Vec<RespondOutput> {
        self.outbox.messages()
    }

    /// The disposition of every step result published, in order.
    fn dispositions(&self) -> Vec<String> {
        self.outputs()
            .into_iter()
            .filter_map(|o| match o {
                RespondOutput::StepResult(r) => r.disposition,
                _ => None,
            })
            .collect()
    }

    /// Records and approves the release of `action` as `POST /api/v1/actions/{id}/release`
    /// and an approval do; the approval event tells the stage to run it. Returns the
    /// release's id and that event.
    async fn approve_release(&self, action: &ActionRecord, release: Value) -> (i64, CaseEvent) {
        let release = kastell_core::store::NewAction {
            case_id: action.case_id,
            alert_id: format!("release:{}", action.id),
            playbook: action.playbook.clone(),
            step: action.step.clone(),
            step_type: action.step_type.clone(),
            approval_required: true,
            params: json!({
                "release_of": action.id,
                "release": release,
                "config": action.params["config"],
                "timeout_seconds": action.params["timeout_seconds"],
                "dry_run": false,
                "retries": 0,
            }),
        };
        let (release, _) = self.store.create_action(&release).await.unwrap();
        self.store
            .decide_action(
                release.id,
                &kastell_core::store::Decision::Approve,
                "apikey:lead",
            )
            .await
            .unwrap();
        let approved = CaseEvent::ActionApproved {
            action_id: release.id,
        };
        (release.id, approved)
    }
}

fn result(action: &ActionRecord) -> Value {
    action.result.clone().unwrap_or(Value::Null)
}

/// Nothing a secret's value ever reaches: actions, results, published messages.
async fn assert_no_secret_leaks(h: &Harness) {
    let everything = format!(
        "{:?}{:?}",
        h.actions().await,
        serde_json::to_string(&h.outputs()).unwrap()
    );
    for (_, value) in secrets().0 {
        assert!(
            !everything.contains(&value),
            "secret {value:?} leaked: {everything}"
        );
    }
    assert!(
        !everything.contains("eyJ-wazuh-jwt"),
        "the Wazuh token leaked"
    );
}

// ---- tests -------------------------------------------------------------------------

#[tokio::test]
async fn wazuh_active_response_authenticates_then_blocks_the_source_on_the_agent() {
    let (h, apis) = harness_on_apis(|base| {
        format!(
            r#"  steps:
    - name: block-source
      type: wazuh-active-response
      wazuh:
        url: {base}
        command: "!firewall-drop"
        agents: ["{{{{ alert.events.0.agent.id }}}}"]
        srcip: "{{{{ alert.events.0.source.ip }}}}"
        usernameSecret: WAZUH_USER
        passwordSecret: WAZUH_PASSWORD"#
        )
    })
    .await;
    h.run(&wazuh_alert()).await;

    let action = h.succeeded("block-source").await;
    let requests = apis.requests();
    assert_eq!(
        requests
            .iter()
            .map(|r| (r.method.as_str(), r.path.as_str()))
            .collect::<Vec<_>>(),
        [
            ("POST", "/security/user/authenticate"),
            ("PUT", "/active-response")
        ]
    );
    assert_eq!(requests[1].query, "agents_list=000");
    assert_eq!(
        requests[1].body,
        json!({"command": "!firewall-drop", "arguments": [], "alert": {"data": {"srcip": "172.17.1.1"}}})
    );
    let result = result(&action);
    assert_eq!(result["affected"], json!(["000"]));
    assert_eq!(result["release"]["arguments"], json!(["delete"]));
    assert_eq!(result["requests"][1]["status"], 200);
    assert!(result["requests"][1]["url"]
        .as_str()
        .unwrap()
        .ends_with("/active-response?agents_list=000"));

    let outputs = h.outputs();
    let RespondOutput::StepResult(step) = &outputs[0] else {
        panic!("{outputs:?}")
    };
    assert_eq!(
        (step.status.as_str(), step.attempts, step.requests.len()),
        ("succeeded", 1, 2)
    );
    assert!(step.release.is_some());
    assert_no_secret_leaks(&h).await;

    // The release, recorded and approved as `POST /api/v1/actions/{id}/release` does:
    // the same command on the same agent and address, with the release's arguments.
    let (release, approved) = h.approve_release(&action, result["release"].clone()).await;
    h.responder.handle(&approved, &h.stats).await.unwrap();
    let released = h.store.get_action(release).await.unwrap().unwrap();
    assert_eq!(
        released.status,
        ActionStatus::Succeeded,
        "{:?}",
        released.result
    );
    let requests = apis.requests();
    assert_eq!(requests.len(), 4, "a new token, then the release");
    assert_eq!(
        (
            requests[3].method.as_str(),
            requests[3].path.as_str(),
            requests[3].query.as_str()
        ),
        ("PUT", "/active-response", "agents_list=000")
    );
    assert_eq!(
        requests[3].body,
        json!({"command": "!firewall-drop", "arguments": ["delete"], "alert": {"data": {"srcip": "172.17.1.1"}}})
    );
    assert!(released.result.unwrap().get("release").is_none());
    // Told again (a redelivered approval): it ran once.
    h.responder.handle(&approved, &h.stats).await.unwrap();
    assert_eq!(apis.requests().len(), 4);
}

#[tokio::test]
async fn protected_assets_are_refused_and_recorded_without_any_request() {
    let (base, apis) = start_apis().await;
    let policy: ResponsePolicy = serde_json::from_value(json!({
        "protected": {"networks": ["172.16.0.0/12"], "agents": ["002"]}
    }))
    .unwrap();
    let settings = test_settings();
    let h = harness_with(
        playbook(&format!(
            r#"  steps:
    - name: block-source
      type: wazuh-active-response
      wazuh: {{url: "{base}", command: "!firewall-drop", agents: ["001"],
               srcip: "{{{{ alert.events.0.source.ip }}}}",
               usernameSecret: WAZUH_USER, passwordSecret: WAZUH_PASSWORD}}
    - name: isolate-on-agent
      type: wazuh-active-response
      wazuh: {{url: "{base}", command: "!host-deny", agents: ["002"],
               usernameSecret: WAZUH_USER, passwordSecret: WAZUH_PASSWORD}}
    - name: st2-block
      type: http
      http:
        url: {base}/api/v1/webhooks/block_ip
        secretHeaders: {{St2-Api-Key: ST2_API_KEY}}
        body: {{ip: "{{{{ alert.events.0.source.ip }}}}"}}"#
        )),
        policy,
        settings,
    )
    .await;
    h.run(&wazuh_alert()).await;

    for (step, hit) in [
        ("block-source", "address 172.17.1.1"),
        ("isolate-on-agent", "agent 002"),
        ("st2-block", "address 172.17.1.1"),
    ] {
        let action = h.action(step).await;
        assert_eq!(action.status, ActionStatus::Failed, "{step}");
        assert_eq!(result(&action)["error"], "protected asset", "{step}");
        assert_eq!(result(&action)["protected"], json!([hit]), "{step}");
    }
    assert!(apis.requests().is_empty(), "{:?}", apis.requests());
    assert_eq!(h.stats.snapshot().refused, 3);
    assert_eq!(h.dispositions(), ["protected-asset"; 3]);
}

#[tokio::test]
async fn awx_job_template_is_launched_with_extra_vars_and_waited_for() {
    let (h, apis) = harness_on_apis(|base| {
        format!(
            r#"  steps:
    - name: reset-credentials
      type: http
      timeoutSeconds: 30
      http:
        url: {base}
        awx:
          jobTemplate: 2
          tokenSecret: AWX_TOKEN
          pollSeconds: 1
          extraVars:
            target_host: "{{{{ alert.host }}}}"
            user: "{{{{ alert.events.0.user.name }}}}"
            case: "{{{{ case.id }}}}""#
        )
    })
    .await;
    h.run(&wazuh_alert()).await;

    let action = h.succeeded("reset-credentials").await;
    let launches = apis.to("/api/v2/job_templates/2/launch/");
    assert_eq!(launches.len(), 1);
    assert_eq!(
        launches[0].body,
        json!({"extra_vars": {"target_host": "localhost.localdomain", "user": "paco", "case": "1"}})
    );
    assert_eq!(
        apis.to("/api/v2/jobs/42/").len(),
        2,
        "one poll while running, one when done"
    );
    assert_eq!(result(&action)["job"], 42);
    assert_eq!(result(&action)["job_status"], "successful");
    assert_no_secret_leaks(&h).await;
}

#[tokio::test]
async fn a_step_failing_after_its_side_effect_is_retried_without_repeating_it() {
    let (h, apis) = harness_on_apis(|base| {
        format!(
            r#"  steps:
    - name: contain-host
      type: http
      retries: 2
      backoffSeconds: 1
      timeoutSeconds: 30
      http:
        url: {base}
        awx: {{jobTemplate: 2, tokenSecret: AWX_TOKEN, pollSeconds: 1}}"#
        )
    })
    .await;
    *apis.flaky_awx.lock().unwrap() = true;
    h.run(&wazuh_alert()).await;

    let action = h.succeeded("contain-host").await;
    // The first attempt launched the job and failed on its first poll (502); the
    // retry resumed polling the same job instead of launching a second one.
    assert_eq!(apis.to("/api/v2/job_templates/").len(), 1);
    assert_eq!(result(&action)["attempts"], 2);
    assert_eq!(h.stats.snapshot().retried, 1);
    let statuses: Vec<_> = result(&action)["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["attempt"].as_u64().unwrap(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(statuses, [(1, 201), (1, 502), (2, 200)]);
}

#[tokio::test]
async fn stackstorm_webhook_carries_its_api_key_from_a_secret_and_never_records_it() {
    let (h, apis) = harness_on_apis(|base| {
        format!(
            r#"  steps:
    - name: st2-block
      type: http
      http:
        url: {base}/api/v1/webhooks/kastell_block
        secretHeaders: {{St2-Api-Key: ST2_API_KEY}}
        headers: {{X-Kastell-Case: "{{{{ case.id }}}}"}}
        body: {{ip: "{{{{ alert.events.0.source.ip }}}}", rule: "{{{{ alert.rule.id }}}}"}}"#
        )
    })
    .await;
    h.run(&wazuh_alert()).await;

    let action = h.succeeded("st2-block").await;
    let hooks = apis.to("/api/v1/webhooks/kastell_block");
    assert_eq!(
        hooks[0].body,
        json!({"ip": "172.17.1.1", "rule": "wazuh-5712"})
    );
    assert_eq!(hooks[0].headers["x-kastell-case"], "1");
    assert!(hooks[0].headers["idempotency-key"]
        .to_str()
        .unwrap()
        .starts_with("kastell-"));
    assert_eq!(result(&action)["status"], 202);
    assert_no_secret_leaks(&h).await;
}

#[tokio::test]
async fn an_http_block_is_released_with_its_declared_undo_request_once() {
    let (h, apis) = harness_on_apis(|base| {
        format!(
            r#"  steps:
    - name: st2-block
      type: http
      http:
        url: {base}/api/v1/webhooks/kastell_block
        secretHeaders: {{St2-Api-Key: ST2_API_KEY}}
        body: {{ip: "{{{{ alert.events.0.source.ip }}}}"}}
        release:
          url: {base}/api/v1/webhooks/kastell_unblock
          secretHeaders: {{St2-Api-Key: ST2_API_KEY}}
          body: {{ip: "{{{{ alert.events.0.source.ip }}}}", case: "{{{{ case.id }}}}"}}"#
        )
    })
    .await;
    h.run(&wazuh_alert()).await;
    let action = h.succeeded("st2-block").await;
    let recorded = result(&action)["release"].clone();
    assert_eq!(
        (recorded["type"].as_str(), recorded["method"].as_str()),
        (Some("http-release"), Some("POST"))
    );
    assert_eq!(recorded["body"], json!({"ip": "172.17.1.1", "case": "1"}));
    assert!(apis.to("/api/v1/webhooks/kastell_unblock").is_empty());

    let (release, approved) = h.approve_release(&action, recorded).await;
    h.responder.handle(&approved, &h.stats).await.unwrap();
    h.responder.handle(&approved, &h.stats).await.unwrap();
    let released = h.store.get_action(release).await.unwrap().unwrap();
    assert_eq!(
        released.status,
        ActionStatus::Succeeded,
        "{:?}",
        released.result
    );
    let undo = apis.to("/api/v1/webhooks/kastell_unblock");
    assert_eq!(undo.len(), 1, "sent once");
    assert_eq!(undo[0].body, json!({"ip": "172.17.1.1", "case": "1"}));
    assert_eq!(undo[0].headers["st2-api-key"], "st2-key");
    assert_eq!(apis.to("/api/v1/webhooks/kastell_block").len(), 1);
    assert_no_secret_leaks(&h).await;
}

#[tokio::test]
async fn chat_notifications_use_each_systems_message_format() {
    let (base, apis) = start_apis().await;
    let step = |name: &str, channel: &str, extra: &str| {
        format!(
            "    - name: {name}\n      type: notify\n      message: \"case {{{{ case.id }}}}: {{{{ alert.rule.title }}}}\"\n      notify: {{channel: {channel}, {extra}}}\n"
        )
    };
    let steps = [
        step(
            "mattermost",
            "mattermost",
            &format!("url: \"{base}/hooks/mm\""),
        ),
        step("slack", "slack", &format!("url: \"{base}/hooks/slack\"")),
        step("teams", "teams", &format!("url: \"{base}/hooks/teams\"")),
        step(
            "matrix",
            "matrix",
            &format!("url: \"{base}\", room: \"!soc:example.eu\", tokenSecret: MATRIX_TOKEN"),
        ),
    ]
    .concat();
    let h = harness(playbook(&format!("  steps:\n{steps}"))).await;
    let alert = wazuh_alert();
    h.run(&alert).await;

    let text = format!("case 1: {}", alert.rule.title);
    assert_eq!(
        apis.to("/hooks/mm")[0].body,
        json!({"text": text, "username": "Kastell"})
    );
    let slack = &apis.to("/hooks/slack")[0].body;
    assert_eq!(slack["text"], text);
    assert_eq!(slack["blocks"][0]["text"]["text"], text);
    let teams = &apis.to("/hooks/teams")[0].body;
    assert_eq!(
        teams["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(teams["attachments"][0]["content"]["body"][0]["text"], text);
    let matrix = &apis.to("/_matrix/")[0];
    assert_eq!(matrix.method, "PUT");
    assert_eq!(matrix.body, json!({"msgtype": "m.text", "body": text}));
    // The transaction id is the idempotency key: Matrix itself drops a repeat.
    let txn = matrix.path.rsplit('/').next().unwrap();
    assert!(txn.starts_with("kastell-"), "{}", matrix.path);
    assert!(
        matrix
            .path
            .contains("/rooms/!soc:example.eu/send/m.room.message/"),
        "{}",
        matrix.path
    );
    for step in ["mattermost", "slack", "teams", "matrix"] {
        assert_eq!(
            h.action(step).await.status,
            ActionStatus::Succeeded,
            "{step}"
        );
    }
    assert_eq!(
        result(&h.action("matrix").await)["event_id"],
        "$kastell-event"
    );
    assert_no_secret_leaks(&h).await;
}

#[tokio::test]
async fn email_goes_over_smtp_with_starttls_and_authentication() {
    let sink = smtp_sink::start().await;
    let settings = RunnerSettings {
        extra_roots: vec![sink.cert.clone()],
        ..test_settings()
    };
    let h = harness_with(
        playbook(&format!(
            r#"  steps:
    - name: mail-soc
      type: notify
      message: "Brute force by {{{{ alert.events.0.user.name }}}} on {{{{ alert.host }}}}"
      notify:
        channel: email
        to: ["soc@example.eu"]
        subject: "[Kastell] case {{{{ case.id }}}}"
        smtp: {{host: "127.0.0.1", port: {port}, from: "kastell@example.eu",
               usernameSecret: SMTP_USER, passwordSecret: SMTP_PASSWORD}}"#,
            port = sink.port
        )),
        ResponsePolicy::default(),
        settings,
    )
    .await;
    h.run(&wazuh_alert()).await;

    let action = h.succeeded("mail-soc").await;
    let sessions = sink.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let session = &sessions[0];
    assert!(session.tls_before_mail, "{session:?}");
    assert_eq!(session.auth.as_deref(), Some("\0soc-bot\0smtp-pass"));
    assert_eq!(session.rcpt, ["<soc@example.eu>"]);
    assert!(
        session.data.contains("Subject: [Kastell] case 1"),
        "{}",
        session.data
    );
    assert!(
        session
            .data
            .contains("Brute force by paco on localhost.localdomain"),
        "{}",
        session.data
    );
    assert!(
        session.data.contains("Message-ID: <kastell-"),
        "{}",
        session.data
    );
    assert_eq!(result(&action)["smtp_code"], "250");
    assert_no_secret_leaks(&h).await;
}

#[tokio::test]
async fn cortex_analyzer_report_taxonomies_are_attached_to_the_case() {
    let (h, apis) = harness_on_apis(|base| {
        format!(
            r#"  steps:
    - name: abuseipdb
      type: enrich
      timeoutSeconds: 30
      enrich:
        observables: [{{type: ip, value: "{{{{ alert.events.0.source.ip }}}}"}}]
        cortex: {{url: "{base}", analyzer: AbuseIPDB_1_0, apiKeySecret: CORTEX_KEY, pollSeconds: 1}}"#
        )
    })
    .await;
    h.run(&wazuh_alert()).await;

    h.succeeded("abuseipdb").await;
    let runs = apis.to("/api/analyzer/AbuseIPDB_1_0/run");
    assert_eq!(runs[0].body["data"], "172.17.1.1");
    assert_eq!(runs[0].body["dataType"], "ip");
    assert_eq!(runs[0].headers["authorization"], "Bearer cortex-key");
    assert_eq!(apis.to("/api/job/job-AbuseIPDB-1/report").len(), 2);
    let attached: Vec<_> = h
        .outputs()
        .into_iter()
        .filter_map(|o| match o {
            RespondOutput::CaseAction(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(attached.len(), 1);
    let CaseOperation::AttachTaxonomies {
        value,
        taxonomies,
        source,
        ..
    } = &attached[0].operation
    else {
        panic!("{attached:?}")
    };
    assert_eq!(
        (value.as_str(), source.as_str()),
        ("172.17.1.1", "cortex:AbuseIPDB_1_0")
    );
    assert_eq!(taxonomies[0]["level"], "malicious");
    assert_no_secret_leaks(&h).await;
}

#[tokio::test]
async fn case_operations_are_published_for_the_cases_stage() {
    let h = harness(playbook(
        r#"  steps:
    - {name: raise, type: case, case: {op: set-severity, severity: critical}}
    - {name: assign, type: case, case: {op: assign, assignee: "tier2"}}
    - {name: task, type: case, case: {op: add-task, task: "Reset password of {{ alert.events.0.user.name }}"}}
    - name: observable
      type: case
      case: {op: add-observable, observable: {type: ip, value: "{{ alert.events.0.source.ip }}"}}
    - name: close
      type: case
      condition: alert.events[0].source.ip == "10.0.0.1"
      case: {op: close-false-positive, reason: "scanner"}"#,
    ))
    .await;
    h.run(&wazuh_alert()).await;

    let operations: Vec<_> = h
        .outputs()
        .into_iter()
        .filter_map(|o| match o {
            RespondOutput::CaseAction(a) => Some((a.case_id, a.operation)),
            _ => None,
        })
        .collect();
    assert_eq!(
        operations,
        [
            (
                1,
                CaseOperation::SetSeverity {
                    severity: "critical".into()
                }
            ),
            (
                1,
                CaseOperation::Assign {
                    assignee: "tier2".into()
                }
            ),
            (
                1,
                CaseOperation::AddTask {
                    title: "Reset password of paco".into()
                }
            ),
            (
                1,
                CaseOperation::AddObservable {
                    r#type: "ip".into(),
                    value: "172.17.1.1".into()
                }
            ),
        ]
    );
    // The close step's condition did not hold: no action at all.
    assert_eq!(h.actions().await.len(), 4);
    assert_eq!(h.stats.snapshot().skipped, 1);
}

#[tokio::test]
async fn a_burst_of_duplicate_deliveries_acts_once_and_the_budget_holds() {
    let (base, apis) = start_apis().await;
    let h = Arc::new(
        harness(playbook(&format!(
            r#"  rateLimit: {{maxActionsPerHour: 3}}
  steps:
    - name: st2-block
      type: http
      http:
        url: {base}/api/v1/webhooks/block
        secretHeaders: {{St2-Api-Key: ST2_API_KEY}}
        body: {{ip: "{{{{ alert.events.0.source.ip }}}}"}}"#
        )))
        .await,
    );
    let alert = wazuh_alert();
    let event = h.open_case(&alert).await;
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (h, event) = (Arc::clone(&h), event.clone());
        burst.spawn(async move { h.responder.handle(&event, &h.stats).await.unwrap() });
    }
    while burst.join_next().await.is_some() {}
    assert_eq!(
        apis.to("/api/v1/webhooks/block").len(),
        1,
        "one delivery of 20 acted"
    );
    assert_eq!(h.actions().await.len(), 1);
    assert_eq!(h.stats.snapshot().actions_existing, 19);

    // Ten distinct alerts: three more fit in the hourly budget (one is spent).
    for n in 1..=10 {
        h.run(&again(&alert, n)).await;
    }
    assert_eq!(apis.to("/api/v1/webhooks/block").len(), 3);
    assert_eq!(h.stats.snapshot().rate_limited, 8);
}

#[tokio::test]
async fn the_kill_switch_and_dry_run_record_what_would_have_happened() {
    let (base, apis) = start_apis().await;
    let policy: ResponsePolicy =
        serde_json::from_value(json!({"killSwitch": true, "maxActionsPerHour": 100})).unwrap();
    let settings = test_settings();
    let h = harness_with(
        playbook(&format!(
            r#"  steps:
    - name: block-source
      type: wazuh-active-response
      wazuh: {{url: "{base}", command: "!firewall-drop", agents: ["001"],
               srcip: "{{{{ alert.events.0.source.ip }}}}",
               usernameSecret: WAZUH_USER, passwordSecret: WAZUH_PASSWORD}}
    - name: isolate-pod
      type: quarantine-pod
      quarantine: {{namespace: shop, pod: "{{{{ alert.host }}}}"}}"#
        )),
        policy,
        settings,
    )
    .await;
    h.run(&wazuh_alert()).await;

    assert!(apis.requests().is_empty());
    let block = result(&h.action("block-source").await);
    assert_eq!(block["kill_switch"], true);
    assert_eq!(block["would"]["params"]["config"]["srcip"], "172.17.1.1");
    assert_eq!(
        block["would"]["params"]["config"]["password_secret"],
        "WAZUH_PASSWORD"
    );
    let isolate = result(&h.action("isolate-pod").await);
    assert_eq!(
        isolate["would"]["network_policy"]["spec"]["policyTypes"],
        json!(["Ingress", "Egress"])
    );
    assert_eq!(isolate["would"]["pod"], "localhost.localdomain");
    assert_eq!(isolate["release"]["type"], "quarantine-pod-release");
    assert_eq!(h.dispositions(), ["kill-switch", "kill-switch"]);
}
