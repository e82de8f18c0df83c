//! Case resources mirrored into a real cases API (the cases stage's router, served on
//! 127.0.0.1 over a SQLite store in a temporary directory) by the operator running
//! against a real kube-apiserver (tests/control-plane, or KASTELL_KUBECONFIG): the case
//! opened from the Case, analysts' changes in the store reported in status and not
//! reverted until the Case changes, a changed Case written over them, closing, the
//! refusals, and cases opened in the store staying out of the cluster.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kastell_cases::auth::Role;
use kastell_cases::{router, ApiState, Metrics as ApiMetrics};
use kastell_core::store::CaseFilter;
use kastell_core::{Bus, CaseStore, InProcessBus, SqliteStore, Tlp};
use kastell_crds::{Case, SecOpsPlatform};
use kastell_kube_harness::{setup, TestEnv};
use kastell_operator::controller::{self, Context, Metrics};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(60);

/// A cases API on 127.0.0.1 and its store, with the operator's lead key (cleared to RED)
/// and an analyst's.
struct CasesApi {
    url: String,
    store: Arc<dyn CaseStore>,
    operator_key: String,
    lead_key: String,
    _dir: tempfile::TempDir,
}

async fn key(store: &Arc<dyn CaseStore>, name: &str, role: Role, tlp: Tlp) -> String {
    let new = kastell_cases::auth::apikey::generate(name, role, tlp).expect("key generated");
    store
        .create_api_key(&new.record, "cli:test")
        .await
        .expect("key stored");
    new.key
}

async fn start_cases_api() -> CasesApi {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn CaseStore> = Arc::new(
        SqliteStore::open_dir(&dir.path().join("data"))
            .await
            .expect("SQLite store opens"),
    );
    let bus: Arc<dyn Bus> = Arc::new(InProcessBus::new(64));
    let state = ApiState::new(store.clone(), bus, ApiMetrics::new().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(kastell_cases::serve(
        listener,
        router(state),
        std::future::pending(),
    ));
    CasesApi {
        url,
        operator_key: key(&store, "kastell-operator", Role::Lead, Tlp::Red).await,
        lead_key: key(&store, "carol", Role::Lead, Tlp::Amber).await,
        store,
        _dir: dir,
    }
}

fn start_operator(env: &TestEnv) -> tokio::task::JoinHandle<()> {
    let metrics = Arc::new(Metrics::new().expect("metrics register"));
    let context = Arc::new(Context::new(
        env.client(),
        metrics,
        "ghcr.io/kastell-eu/kastell:test".into(),
        "casemirror-test".into(),
    ));
    tokio::spawn(controller::run(context))
}

async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) if tokio::time::Instant::now() > deadline => {
                panic!("{what}: not reached; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn status_of(case: &Case) -> Value {
    serde_json::to_value(case).unwrap()["status"].clone()
}

fn ready(status: &Value) -> Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
        .unwrap_or(Value::Null)
}

/// Waits until the Case's status satisfies `check`, and returns it.
async fn wait_status(cases: &Api<Case>, name: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(&format!("status of Case {name}"), || async {
        let case = cases.get(name).await.map_err(|e| e.to_string())?;
        let status = status_of(&case);
        if check(&status) {
            Ok(status)
        } else {
            Err(status.to_string())
        }
    })
    .await
}

async fn apply_case(cases: &Api<Case>, yaml: &str) {
    let case: Value = serde_yaml::from_str(yaml).unwrap();
    let name = case["metadata"]["name"].as_str().unwrap().to_owned();
    cases
        .patch(
            &name,
            &PatchParams::apply("casemirror-test").force(),
            &Patch::Apply(&case),
        )
        .await
        .expect("applying the Case");
}

/// A change that is not a new generation, so that the controller reads the store again.
async fn touch(cases: &Api<Case>, name: &str, n: u32) {
    let patch = json!({"metadata": {"annotations": {"test.kastell.eu/touch": n.to_string()}}});
    cases
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotating the Case");
}

async fn platform_with_store(env: &TestEnv, api: &CasesApi) {
    let secrets: Api<Secret> = env.api();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "soc-cases-key"},
        "stringData": {"key": api.operator_key},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let platform: SecOpsPlatform = serde_yaml::from_str(&format!(
        r#"
apiVersion: kastell.eu/v1alpha1
kind: SecOpsPlatform
metadata: {{name: soc}}
spec:
  residency: {{jurisdiction: EU}}
  caseStore:
    url: {}
    apiKeySecret: {{name: soc-cases-key, key: key}}
"#,
        api.url
    ))
    .unwrap();
    let platforms: Api<SecOpsPlatform> = env.api();
    platforms
        .create(&PostParams::default(), &platform)
        .await
        .unwrap();
}

async fn http(api: &CasesApi, method: reqwest::Method, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .request(method, format!("{}{path}", api.url))
        .bearer_auth(&api.lead_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

const PHISHING: &str = r#"
apiVersion: kastell.eu/v1alpha1
kind: Case
metadata: {name: phishing-wave}
spec:
  title: Phishing wave against finance
  description: Three users reported the same lure
  severity: high
  tlp: green
  tags: [phishing]
"#;

/// One test, one operator: operators in parallel tests would each reconcile every
/// namespace (there is no leader election here) and race to open the same case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_are_mirrored_into_the_store() {
    let Some(env) = setup("cases_are_mirrored_into_the_store").await else {
        return;
    };
    let Some(refusals) = setup("cases_are_mirrored_into_the_store_refusals").await else {
        return;
    };
    let operator = start_operator(&env);
    a_case_in_the_cluster_is_opened_kept_and_closed_in_the_store(&env).await;
    a_case_the_store_cannot_take_is_refused_with_the_reason(&refusals).await;
    operator.abort();
}

async fn a_case_in_the_cluster_is_opened_kept_and_closed_in_the_store(env: &TestEnv) {
    let api = start_cases_api().await;
    platform_with_store(env, &api).await;
    let cases: Api<Case> = env.api();

    // Opened in the store with what the Case declares.
    apply_case(&cases, PHISHING).await;
    let status = wait_status(&cases, "phishing-wave", |s| {
        ready(s)["status"] == "True" && s["caseId"].is_i64()
    })
    .await;
    let id = status["caseId"].as_i64().unwrap();
    assert_eq!(status["storeStatus"], "open");
    assert_eq!(status["observableCount"], 0);
    assert_eq!(status["alertCount"], 0);
    assert_eq!(status["mirroredGeneration"], 1);
    let stored = api.store.get_case(id).await.unwrap().unwrap();
    assert_eq!(stored.title, "Phishing wave against finance");
    assert_eq!(stored.description, "Three users reported the same lure");
    assert_eq!(serde_json::to_value(stored.severity).unwrap(), "high");
    assert_eq!(stored.tlp, Tlp::Green);
    assert_eq!(stored.pap, Tlp::Amber);
    let key = format!("kastell.eu/case={}/phishing-wave", env.namespace());
    assert_eq!(stored.tags, ["phishing".to_owned(), key.clone()]);
    assert_eq!(stored.group_key, "manual");

    // An analyst works the case in the store: the status reports it, nothing is reverted
    // while the Case is unchanged.
    http(
        &api,
        reqwest::Method::PATCH,
        &format!("/api/v1/cases/{id}"),
        json!({"assignee": "carol", "severity": "medium"}),
    )
    .await;
    http(
        &api,
        reqwest::Method::POST,
        &format!("/api/v1/cases/{id}/observables"),
        json!({"type": "domain", "value": "vgiragdoffy.com", "ioc": true}),
    )
    .await;
    touch(&cases, "phishing-wave", 1).await;
    wait_status(&cases, "phishing-wave", |s| s["observableCount"] == 1).await;
    let stored = api.store.get_case(id).await.unwrap().unwrap();
    assert_eq!(serde_json::to_value(stored.severity).unwrap(), "medium");
    assert_eq!(stored.assignee.as_deref(), Some("carol"));

    // A new generation writes what it declares over the analyst's edit; the assignee,
    // which the Case does not declare, stays.
    apply_case(
        &cases,
        &PHISHING
            .replace("severity: high", "severity: critical")
            .replace(
                "tags: [phishing]",
                "tags: [phishing]\n  status: in-progress",
            ),
    )
    .await;
    let status = wait_status(&cases, "phishing-wave", |s| {
        s["mirroredGeneration"] == 2 && s["storeStatus"] == "in_progress"
    })
    .await;
    assert_eq!(status["caseId"], id);
    let stored = api.store.get_case(id).await.unwrap().unwrap();
    assert_eq!(serde_json::to_value(stored.severity).unwrap(), "critical");
    assert_eq!(stored.assignee.as_deref(), Some("carol"));

    // Closing without a resolution is refused on the Case; with one, the case closes.
    apply_case(
        &cases,
        &PHISHING.replace("tags: [phishing]", "tags: [phishing]\n  status: closed"),
    )
    .await;
    let refused = wait_status(&cases, "phishing-wave", |s| {
        ready(s)["reason"] == "InvalidSpec"
    })
    .await;
    assert_eq!(ready(&refused)["status"], "False");
    assert!(ready(&refused)["message"]
        .as_str()
        .unwrap()
        .contains("spec.resolution"));
    assert_eq!(
        refused["caseId"], id,
        "a refusal keeps the case's id: {refused}"
    );
    apply_case(
        &cases,
        &PHISHING.replace(
            "tags: [phishing]",
            "tags: [phishing]\n  status: closed\n  resolution: false-positive\n  \
             summary: a phishing simulation by the awareness team",
        ),
    )
    .await;
    wait_status(&cases, "phishing-wave", |s| {
        s["storeStatus"] == "closed" && ready(s)["status"] == "True"
    })
    .await;
    let stored = api.store.get_case(id).await.unwrap().unwrap();
    assert_eq!(
        stored.summary.as_deref(),
        Some("a phishing simulation by the awareness team")
    );

    // One case in the store for the Case, however many reconciles ran; a case an analyst
    // opens in the store does not become a Case resource.
    http(
        &api,
        reqwest::Method::POST,
        "/api/v1/cases",
        json!({"title": "Analyst's own case", "severity": "low"}),
    )
    .await;
    touch(&cases, "phishing-wave", 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = api.store.list_cases(&CaseFilter::default()).await.unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let names: Vec<String> = cases
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(names, ["phishing-wave"]);

    // The Case restored from a backup without its status (deleted, then applied again: a
    // new object, a new UID, no status.caseId) finds its case by the key tag: no second
    // case, and the spec (open again) written to it.
    cases
        .delete("phishing-wave", &Default::default())
        .await
        .unwrap();
    eventually("the Case deleted", || async {
        match cases.get_opt("phishing-wave").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    apply_case(&cases, PHISHING).await;
    let status = wait_status(&cases, "phishing-wave", |s| {
        ready(s)["status"] == "True" && s["mirroredGeneration"] == 1
    })
    .await;
    assert_eq!(status["caseId"], id, "{status}");
    assert_eq!(status["storeStatus"], "open");
    let all = api.store.list_cases(&CaseFilter::default()).await.unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let stored = api.store.get_case(id).await.unwrap().unwrap();
    assert_eq!(serde_json::to_value(stored.severity).unwrap(), "high");
    assert!(stored.tags.contains(&key), "{:?}", stored.tags);
}

async fn a_case_the_store_cannot_take_is_refused_with_the_reason(env: &TestEnv) {
    let api = start_cases_api().await;
    let cases: Api<Case> = env.api();

    // Without a platform naming a store, a Case is only recorded.
    apply_case(&cases, PHISHING).await;
    let status = wait_status(&cases, "phishing-wave", |s| ready(s)["status"] == "True").await;
    assert!(status.get("caseId").is_none(), "{status}");
    assert!(ready(&status)["message"]
        .as_str()
        .unwrap()
        .contains("not mirrored"));

    // The platform names a store whose key Secret does not exist yet.
    let platforms: Api<SecOpsPlatform> = env.api();
    let platform: SecOpsPlatform = serde_yaml::from_str(&format!(
        "apiVersion: kastell.eu/v1alpha1\nkind: SecOpsPlatform\nmetadata: {{name: soc}}\n\
         spec:\n  residency: {{jurisdiction: EU}}\n  caseStore:\n    url: {}\n    \
         apiKeySecret: {{name: soc-cases-key, key: key}}\n",
        api.url
    ))
    .unwrap();
    platforms
        .create(&PostParams::default(), &platform)
        .await
        .unwrap();
    let refused = wait_status(&cases, "phishing-wave", |s| {
        ready(s)["reason"] == "SecretNotFound"
    })
    .await;
    assert!(ready(&refused)["message"]
        .as_str()
        .unwrap()
        .contains("soc-cases-key"));

    // A key cleared to AMBER cannot open a case marked RED: the API's refusal is shown.
    let amber = key(&api.store, "amber-only", Role::Lead, Tlp::Amber).await;
    let secrets: Api<Secret> = env.api();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "soc-cases-key"},
        "stringData": {"key": amber},
    }))
    .unwrap();
    // Marked RED before the key exists, so no reconcile sees the key with a lower TLP.
    apply_case(&cases, &PHISHING.replace("tlp: green", "tlp: red")).await;
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let refused = wait_status(&cases, "phishing-wave", |s| {
        ready(s)["reason"] == "CaseStoreRefused"
    })
    .await;
    assert!(
        ready(&refused)["message"].as_str().unwrap().contains("403"),
        "{refused}"
    );
    assert!(api
        .store
        .list_cases(&CaseFilter::default())
        .await
        .unwrap()
        .is_empty());

    // A store URL outside the residency policy is refused before anything is sent.
    let patch = json!({"spec": {"caseStore": {"url": "https://cases.example.com"}}});
    platforms
        .patch("soc", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let refused = wait_status(&cases, "phishing-wave", |s| {
        ready(s)["reason"] == "EndpointNotAllowed"
    })
    .await;
    assert!(ready(&refused)["message"]
        .as_str()
        .unwrap()
        .contains("cases.example.com"));
}
