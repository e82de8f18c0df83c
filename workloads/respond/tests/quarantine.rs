//! `quarantine-pod` against a server on 127.0.0.1 answering like the Kubernetes API
//! (server-side apply of the NetworkPolicy, merge patch of the pod), and a step whose
//! runner crashes after its side effect, retried by the stage without repeating it.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::routing::any;
use axum::{Json, Router};
use chrono::Utc;
use kastell_core::store::{ActionFilter, ActionRecord, ActionStatus, NewCase};
use kastell_core::{Alert, CaseEvent, CaseStore, Event, Level, RuleRef, SqliteStore};
use kastell_respond::runner::QuarantineRunner;
use kastell_respond::{
    MemoryOutbox, PlaybookSet, RespondOutput, RespondStats, Responder, RunContext, RunnerSettings,
    Runners, StepOutcome, StepRunner,
};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

type Recorded = Arc<Mutex<Vec<Request>>>;

/// Answers PATCH of networkpolicies and pods with the object as the API server would
/// return it: the patch applied to a minimal existing object.
async fn kube_api(
    State(recorded): State<Recorded>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Json<Value> {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path().to_owned();
    recorded.lock().unwrap().push(Request {
        method: method.to_string(),
        path: path.clone(),
        query: query.unwrap_or_default(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        body: body.clone(),
    });
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if path.contains("/networkpolicies/") {
        let mut policy = body;
        policy["metadata"]["uid"] = json!("0b6d-policy");
        return Json(policy);
    }
    let (namespace, pod) = (segments[3], segments[5]);
    Json(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod, "namespace": namespace, "uid": "7f1e-pod",
                     "labels": body["metadata"]["labels"]},
    }))
}

async fn start_kube_api() -> (String, Recorded) {
    let recorded = Recorded::default();
    let app = Router::new()
        .fallback(any(kube_api))
        .with_state(recorded.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, recorded)
}

/// An alert from a workload: Falco-style Kubernetes fields in ECS `orchestrator.*`.
fn pod_alert() -> Alert {
    let event = Event::from_value(json!({
        "@timestamp": "2026-11-30T09:12:44Z",
        "host": {"name": "worker-2"},
        "orchestrator": {"namespace": "shop", "resource": {"name": "checkout-7d9f8-abcde", "type": "pod"}},
        "process": {"name": "secretsdump.py"},
    }))
    .unwrap();
    let rule = RuleRef {
        id: "credential-dumping".into(),
        title: "Credential dumping in a pod".into(),
        level: Level::High,
        tags: vec!["attack.t1003.002".into()],
        ..Default::default()
    };
    Alert::from_event(rule, event, Utc::now())
}

fn playbooks(spec: &str) -> Arc<PlaybookSet> {
    let yaml = format!(
        "apiVersion: kastell.eu/v1alpha1\nkind: Playbook\n\
         metadata: {{name: pb, namespace: soc}}\nspec:\n  trigger: {{}}\n{spec}\n"
    );
    let mut set = kastell_crds::ResourceSet::default();
    let mut errors = Vec::new();
    kastell_crds::load::load_text(Path::new("/repo/pb.yaml"), &yaml, &mut set, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let (compiled, invalid) = PlaybookSet::compile(set.playbooks);
    assert!(invalid.is_empty(), "{invalid:?}");
    Arc::new(compiled)
}

async fn run(
    set: Arc<PlaybookSet>,
    runners: Runners,
    alert: &Alert,
) -> (Vec<ActionRecord>, Vec<RespondOutput>, RespondStats) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open_dir(dir.path()).await.unwrap());
    let outbox = Arc::new(MemoryOutbox::new());
    let responder =
        Responder::new(store.clone(), set, Arc::new(runners)).with_outbox(outbox.clone());
    store.insert_alert(alert).await.unwrap();
    let case = store
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
    let event = CaseEvent::CaseOpened {
        case_id: case.id,
        alert: Box::new(alert.clone()),
    };
    let stats = RespondStats::new();
    responder.handle(&event, &stats).await.unwrap();
    let actions = store.list_actions(&ActionFilter::default()).await.unwrap();
    (actions, outbox.messages(), stats)
}

#[tokio::test]
async fn quarantine_applies_the_policy_then_labels_the_pod_and_records_the_release() {
    let (base, recorded) = start_kube_api().await;
    let mut runners = Runners::new(&RunnerSettings::default()).unwrap();
    let config = kube::Config::new(base.parse().unwrap());
    runners.register(Arc::new(QuarantineRunner::with_config(config)));
    let set = playbooks(
        r#"  steps:
    - name: isolate
      type: quarantine-pod
      quarantine:
        namespace: "{{ alert.events.0.orchestrator.namespace }}"
        pod: "{{ alert.events.0.orchestrator.resource.name }}""#,
    );
    let (actions, outputs, _) = run(set, runners, &pod_alert()).await;

    assert_eq!(
        actions[0].status,
        ActionStatus::Succeeded,
        "{:?}",
        actions[0].result
    );
    let requests = recorded.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let (policy, pod) = (&requests[0], &requests[1]);
    assert_eq!(
        (policy.method.as_str(), policy.path.as_str()),
        (
            "PATCH",
            "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/kastell-quarantine"
        )
    );
    assert_eq!(policy.content_type, "application/apply-patch+yaml");
    assert!(
        policy.query.contains("fieldManager=kastell-respond"),
        "{}",
        policy.query
    );
    assert!(policy.query.contains("force=true"), "{}", policy.query);
    assert_eq!(
        policy.body["spec"]["policyTypes"],
        json!(["Ingress", "Egress"])
    );
    assert_eq!(
        policy.body["spec"]["podSelector"]["matchLabels"]["kastell.eu/quarantine"],
        "true"
    );
    assert_eq!(
        (pod.method.as_str(), pod.path.as_str()),
        ("PATCH", "/api/v1/namespaces/shop/pods/checkout-7d9f8-abcde")
    );
    assert_eq!(pod.content_type, "application/merge-patch+json");
    assert_eq!(
        pod.body["metadata"]["labels"]["kastell.eu/quarantine-case"],
        "1"
    );

    let result = actions[0].result.clone().unwrap();
    assert_eq!(
        result["release"]["pod_patch"]["metadata"]["labels"]["kastell.eu/quarantine"],
        Value::Null
    );
    assert_eq!(result["release"]["pod"], "checkout-7d9f8-abcde");
    let RespondOutput::StepResult(step) = &outputs[0] else {
        panic!("{outputs:?}")
    };
    assert!(step.release.is_some());
}

/// A runner whose side effect (a call counted by `effects`) is journaled, and which
/// panics right after it on the first attempt, as a bug in a step type might.
struct CrashAfterEffect {
    effects: Arc<AtomicU32>,
}

#[async_trait]
impl StepRunner for CrashAfterEffect {
    fn step_type(&self) -> &'static str {
        "http"
    }

    async fn run(&self, _action: &ActionRecord, ctx: &RunContext) -> StepOutcome {
        let key = ctx.call_key("call");
        if ctx.journal.get(&key).is_none() {
            self.effects.fetch_add(1, Ordering::SeqCst);
            ctx.journal.record(&key, json!({"status": 202}));
        }
        if ctx.attempt() == 1 {
            panic!("crashed after the side effect");
        }
        StepOutcome::succeeded(ctx.journal.get(&key).unwrap())
    }
}

#[tokio::test]
async fn a_runner_that_crashes_after_its_side_effect_is_retried_without_repeating_it() {
    let effects = Arc::new(AtomicU32::new(0));
    let mut runners = Runners::empty();
    runners.register(Arc::new(CrashAfterEffect {
        effects: Arc::clone(&effects),
    }));
    let set = playbooks(
        "  steps:\n    - {name: call, type: http, retries: 1, backoffSeconds: 1, \
         http: {url: \"https://soar.example.eu/hooks/x\"}}",
    );
    let (actions, _, stats) = run(set, runners, &pod_alert()).await;

    assert_eq!(
        actions[0].status,
        ActionStatus::Succeeded,
        "{:?}",
        actions[0].result
    );
    assert_eq!(
        effects.load(Ordering::SeqCst),
        1,
        "the side effect happened once"
    );
    assert_eq!(actions[0].result.as_ref().unwrap()["attempts"], 2);
    assert_eq!(stats.snapshot().retried, 1);
}
