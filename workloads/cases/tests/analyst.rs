//! The analyst's endpoints over real alerts (the IcedID capture and a Wazuh sshd alert):
//! cases opened by hand, alerts promoted and merged, observables with their enrichment,
//! tasks, comments and the timeline, the figures, the search, the observable filter of
//! the alert list, the body size limit, roles and the TLP ceiling, and every write in
//! the audit chain.

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use kastell_cases::auth::Role;
use kastell_cases::{router, ApiState, CaseSettings, Grouper, Metrics};
use kastell_core::{Alert, CaseStore, InProcessBus, IntelMatch, ObservableKind, Tlp, Verdict};
use serde_json::{json, Value};
use support::{api_key, eve_alert, sqlite_store, wazuh_sshd_alert, TR0LLOPE};
use tower::ServiceExt;

struct Api {
    router: Router,
    store: Arc<dyn CaseStore>,
    /// Keys by role: `lead` (RED), `analyst` (AMBER), `auditor` (RED).
    lead: String,
    analyst: String,
    auditor: String,
    /// `cookie` (tr0llope line 17, with its C2 address as an intel match), `m4` (16),
    /// `ca1` (29), `sshd` (Wazuh line 1).
    alerts: Vec<(&'static str, Alert)>,
    _dir: tempfile::TempDir,
}

impl Api {
    fn alert(&self, name: &str) -> &Alert {
        &self.alerts.iter().find(|(n, _)| *n == name).unwrap().1
    }
}

/// The IcedID cookie request of tr0llope line 17 goes to 67.205.184.237, the C2 that ET
/// signature 2032086 names; the match is what the enrich stage writes for an IntelFeed
/// holding that address (no public feed in the corpora lists it).
fn cookie_with_intel() -> Alert {
    let mut alert = eve_alert(TR0LLOPE, 17, 2032086);
    alert.intel.push(IntelMatch {
        observable: "67.205.184.237".into(),
        kind: ObservableKind::Ip,
        field: "destination.ip".into(),
        feed: "soc/icedid-c2".into(),
        indicator: "ip-dst|67.205.184.237".into(),
        reference: None,
        context: Some("IcedID C2 of the 2022-10-31 capture (ET 2032086)".into()),
        tags: vec!["icedid".into()],
    });
    alert
}

async fn api() -> Api {
    let (dir, store) = sqlite_store().await;
    let alerts = vec![
        ("cookie", cookie_with_intel()),
        ("m4", eve_alert(TR0LLOPE, 16, 2030053)),
        ("ca1", eve_alert(TR0LLOPE, 29, 2011540)),
        ("sshd", wazuh_sshd_alert()),
    ];
    let grouper = Grouper::new(Arc::clone(&store), CaseSettings::default().grouping_window);
    for (_, alert) in &alerts {
        grouper.file(alert).await.unwrap();
    }
    let bus = Arc::new(InProcessBus::new(16));
    let state = ApiState::new(Arc::clone(&store), bus, Metrics::new().unwrap());
    Api {
        router: router(state),
        lead: api_key(&store, "lead-1", Role::Lead, Tlp::Red).await,
        analyst: api_key(&store, "analyst-1", Role::Analyst, Tlp::Amber).await,
        auditor: api_key(&store, "auditor-1", Role::Auditor, Tlp::Red).await,
        store,
        alerts,
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    body: Value,
    text: String,
}

async fn call(api: &Api, key: &str, method: Method, uri: &str, body: Option<Value>) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {key}"));
    let body = match body {
        Some(json) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    let response = api
        .router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

fn expect(answer: &Answer, status: StatusCode) -> &Value {
    assert_eq!(answer.status, status, "{}", answer.text);
    &answer.body
}

fn expect_error(answer: &Answer, status: StatusCode, code: &str) -> String {
    assert_eq!(answer.status, status, "{}", answer.text);
    assert_eq!(answer.body["error"], code, "{}", answer.text);
    answer.body["message"].as_str().unwrap().to_owned()
}

async fn audit_actions(api: &Api) -> Vec<String> {
    api.store
        .audit_entries(0, i64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

async fn chain_intact(api: &Api) {
    let entries = api.store.audit_entries(0, i64::MAX).await.unwrap();
    assert!(
        matches!(
            kastell_core::audit::verify(&entries),
            Verdict::Intact { .. }
        ),
        "the audit chain is broken"
    );
}

#[tokio::test]
async fn a_case_is_created_by_hand_checked_and_audited() {
    let api = api().await;
    let body = json!({
        "title": "  Phishing wave against finance  ",
        "description": "Three users reported the same lure",
        "severity": "high",
        "tlp": "green",
        "pap": "amber",
        "tags": ["phishing", "finance", "phishing"],
        "assignee": "carol",
    });
    let created = call(
        &api,
        &api.lead,
        Method::POST,
        "/api/v1/cases",
        Some(body.clone()),
    )
    .await;
    let case = expect(&created, StatusCode::CREATED);
    assert_eq!(case["title"], "Phishing wave against finance");
    assert_eq!(case["severity"], "high");
    assert_eq!(case["tlp"], "green");
    assert_eq!(case["tags"], json!(["phishing", "finance"]));
    assert_eq!(case["assignee"], "carol");
    assert_eq!(case["alert_count"], 0);
    assert_eq!(case["status"], "open");
    assert_eq!(case["group_key"], "manual");
    assert_eq!(audit_actions(&api).await.last().unwrap(), "case.create");

    // An analyst may open a case but not name its assignee, nor set RED above AMBER.
    let analyst = call(
        &api,
        &api.analyst,
        Method::POST,
        "/api/v1/cases",
        Some(body),
    )
    .await;
    expect_error(&analyst, StatusCode::FORBIDDEN, "forbidden");
    let red = json!({"title": "x", "tlp": "red"});
    let red = call(&api, &api.analyst, Method::POST, "/api/v1/cases", Some(red)).await;
    assert!(expect_error(&red, StatusCode::FORBIDDEN, "forbidden").contains("ceiling"));
    // Without a TLP, a GREEN caller's case is GREEN, not AMBER they could not read.
    let green = api_key(&api.store, "analyst-green", Role::Analyst, Tlp::Green).await;
    let own = call(
        &api,
        &green,
        Method::POST,
        "/api/v1/cases",
        Some(json!({"title": "x"})),
    )
    .await;
    assert_eq!(expect(&own, StatusCode::CREATED)["tlp"], "green");
    let auditor = json!({"title": "x"});
    let auditor = call(
        &api,
        &api.auditor,
        Method::POST,
        "/api/v1/cases",
        Some(auditor),
    )
    .await;
    expect_error(&auditor, StatusCode::FORBIDDEN, "forbidden");

    for (bad, reason) in [
        (json!({"title": "   "}), "title must not be blank"),
        (json!({"title": "x", "severity": "severe"}), "severity"),
        (json!({"title": "x", "owner": "me"}), "owner"),
        (json!({"description": "no title"}), "title"),
        (json!({"title": "x", "tags": [""]}), "tag"),
    ] {
        let answer = call(&api, &api.lead, Method::POST, "/api/v1/cases", Some(bad)).await;
        let message = expect_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
        assert!(message.contains(reason), "{message}");
    }
    chain_intact(&api).await;
}

#[tokio::test]
async fn an_alert_is_promoted_then_another_merged_into_its_case() {
    let api = api().await;
    let cookie = api.alert("cookie").id.clone();
    let m4 = api.alert("m4").id.clone();
    let grouped = api
        .store
        .get_alert(&cookie)
        .await
        .unwrap()
        .unwrap()
        .case_id
        .unwrap();

    let uri = format!("/api/v1/alerts/{cookie}/promote");
    let promoted = call(&api, &api.analyst, Method::POST, &uri, None).await;
    let case = expect(&promoted, StatusCode::CREATED).clone();
    let case_id = case["id"].as_i64().unwrap();
    assert_ne!(case_id, grouped, "promotion opens a new case");
    assert_eq!(
        case["title"],
        "ET MALWARE Win32/IcedID Request Cookie on 172.16.0.153"
    );
    assert_eq!(case["severity"], "high");
    assert_eq!(case["alert_count"], 1);
    assert_eq!(case["first_seen"], "2022-10-31T14:47:28.168061Z");
    let alert = api.store.get_alert(&cookie).await.unwrap().unwrap();
    assert_eq!(alert.case_id, Some(case_id));
    assert_eq!(alert.status, "promoted");
    // The case the stage had grouped it in lost it.
    let old = api.store.get_case(grouped).await.unwrap().unwrap();
    assert_eq!(old.alert_count, 0);

    let titled = json!({"title": "IcedID on 172.16.0.153"});
    let uri = format!("/api/v1/alerts/{}/promote", api.alert("ca1").id);
    let answer = call(&api, &api.analyst, Method::POST, &uri, Some(titled)).await;
    assert_eq!(
        expect(&answer, StatusCode::CREATED)["title"],
        "IcedID on 172.16.0.153"
    );

    let uri = format!("/api/v1/alerts/{m4}/merge");
    let merged = call(
        &api,
        &api.analyst,
        Method::POST,
        &uri,
        Some(json!({"case_id": case_id})),
    )
    .await;
    let case = expect(&merged, StatusCode::OK);
    assert_eq!(case["id"], case_id);
    assert_eq!(case["alert_count"], 2);
    assert_eq!(
        api.store.get_alert(&m4).await.unwrap().unwrap().status,
        "merged"
    );
    // Again: nothing changes, nothing is audited.
    let before = audit_actions(&api).await.len();
    let again = call(
        &api,
        &api.analyst,
        Method::POST,
        &uri,
        Some(json!({"case_id": case_id})),
    )
    .await;
    assert_eq!(expect(&again, StatusCode::OK)["alert_count"], 2);
    assert_eq!(audit_actions(&api).await.len(), before);

    let missing = call(
        &api,
        &api.analyst,
        Method::POST,
        &uri,
        Some(json!({"case_id": 999})),
    )
    .await;
    expect_error(&missing, StatusCode::NOT_FOUND, "not_found");
    let nobody = call(
        &api,
        &api.analyst,
        Method::POST,
        "/api/v1/alerts/nope/promote",
        None,
    )
    .await;
    expect_error(&nobody, StatusCode::NOT_FOUND, "not_found");
    let bad = call(
        &api,
        &api.analyst,
        Method::POST,
        &uri,
        Some(json!({"case": 1})),
    )
    .await;
    expect_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let auditor = call(
        &api,
        &api.auditor,
        Method::POST,
        &uri,
        Some(json!({"case_id": 1})),
    )
    .await;
    expect_error(&auditor, StatusCode::FORBIDDEN, "forbidden");

    // A closed case takes no more alerts.
    let close = json!({"resolution": "true_positive", "summary": "C2 blocked"});
    let uri = format!("/api/v1/cases/{case_id}/close");
    expect(
        &call(&api, &api.lead, Method::POST, &uri, Some(close)).await,
        StatusCode::OK,
    );
    let uri = format!("/api/v1/alerts/{}/merge", api.alert("sshd").id);
    let closed = call(
        &api,
        &api.analyst,
        Method::POST,
        &uri,
        Some(json!({"case_id": case_id})),
    )
    .await;
    expect_error(&closed, StatusCode::CONFLICT, "conflict");

    let actions = audit_actions(&api).await;
    assert!(actions.contains(&"alert.promote".to_owned()));
    assert!(actions.contains(&"alert.merge".to_owned()));
    chain_intact(&api).await;
}

#[tokio::test]
async fn observables_merge_and_carry_the_intel_of_their_alerts() {
    let api = api().await;
    let cookie = api.alert("cookie").id.clone();
    let case_id = api
        .store
        .get_alert(&cookie)
        .await
        .unwrap()
        .unwrap()
        .case_id
        .unwrap();
    let uri = format!("/api/v1/cases/{case_id}/observables");

    // The stage copied the alert's observables (its event's addresses, the intel match
    // as an IOC) into the case.
    let listed = call(&api, &api.analyst, Method::GET, &uri, None).await;
    let observables = expect(&listed, StatusCode::OK).as_array().unwrap().clone();
    let c2 = observables
        .iter()
        .find(|o| o["value"] == "67.205.184.237")
        .expect("the C2 address is an observable");
    assert_eq!(c2["type"], "ip");
    assert_eq!(c2["ioc"], true);
    assert_eq!(c2["enrichment"][0]["feed"], "soc/icedid-c2");
    assert_eq!(c2["enrichment"][0]["indicator"], "ip-dst|67.205.184.237");
    let victim = observables
        .iter()
        .find(|o| o["value"] == "172.16.0.153")
        .unwrap();
    assert_eq!(victim["ioc"], false);
    assert_eq!(victim["enrichment"], json!([]));

    let new = json!({"type": "domain", "value": "airsaintol.beauty", "tags": ["icedid"], "sighted": true});
    let added = call(&api, &api.analyst, Method::POST, &uri, Some(new)).await;
    let domain = expect(&added, StatusCode::CREATED).clone();
    assert_eq!(domain["sighted"], true);
    assert_eq!(domain["ioc"], false);
    assert_eq!(domain["created_by"], "apikey:analyst-1");

    // The same type and value again merges: tags joined, flags raised, 200.
    let again =
        json!({"type": "domain", "value": "airsaintol.beauty", "tags": ["c2"], "ioc": true});
    let merged = call(&api, &api.analyst, Method::POST, &uri, Some(again)).await;
    let merged = expect(&merged, StatusCode::OK);
    assert_eq!(merged["id"], domain["id"]);
    assert_eq!(merged["tags"], json!(["icedid", "c2"]));
    assert_eq!(merged["ioc"], true);
    assert_eq!(merged["sighted"], true);
    // A merge that adds nothing is a 200 too, and is not audited.
    let before = audit_actions(&api).await.len();
    let same = json!({"type": "domain", "value": "airsaintol.beauty"});
    expect(
        &call(&api, &api.analyst, Method::POST, &uri, Some(same)).await,
        StatusCode::OK,
    );
    assert_eq!(audit_actions(&api).await.len(), before);

    for bad in [
        json!({"type": "IP", "value": "1.2.3.4"}),
        json!({"type": "ip", "value": " "}),
        json!({"type": "ip"}),
        json!({"type": "ip", "value": "1.2.3.4", "color": "red"}),
    ] {
        let answer = call(&api, &api.analyst, Method::POST, &uri, Some(bad)).await;
        expect_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    }
    let auditor = call(
        &api,
        &api.auditor,
        Method::POST,
        &uri,
        Some(json!({"type": "ip", "value": "1.1.1.1"})),
    )
    .await;
    expect_error(&auditor, StatusCode::FORBIDDEN, "forbidden");
    let missing = call(
        &api,
        &api.analyst,
        Method::GET,
        "/api/v1/cases/999/observables",
        None,
    )
    .await;
    expect_error(&missing, StatusCode::NOT_FOUND, "not_found");

    let actions = audit_actions(&api).await;
    assert!(actions.contains(&"observable.create".to_owned()));
    assert!(actions.contains(&"observable.update".to_owned()));
    chain_intact(&api).await;
}

#[tokio::test]
async fn alerts_are_found_by_observable_value() {
    let api = api().await;
    let uri = "/api/v1/alerts?observable=67.205.184.237";
    let found = call(&api, &api.analyst, Method::GET, uri, None).await;
    let items = expect(&found, StatusCode::OK)["items"]
        .as_array()
        .unwrap()
        .clone();
    let ids: Vec<&str> = items.iter().map(|a| a["id"].as_str().unwrap()).collect();
    // Lines 16 and 17 both go to the C2; the certificate alert of line 29 does not.
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&api.alert("cookie").id.as_str()));
    assert!(ids.contains(&api.alert("m4").id.as_str()));

    // The Wazuh alert's source address; combined with the other filters.
    let sshd = wazuh_sshd_alert();
    let ip = sshd.events[0].get_str("source.ip").unwrap().to_owned();
    let uri = format!("/api/v1/alerts?observable={ip}&level=high");
    let found = call(&api, &api.analyst, Method::GET, &uri, None).await;
    let items = &expect(&found, StatusCode::OK)["items"];
    assert_eq!(items.as_array().unwrap().len(), 1);
    assert_eq!(items[0]["id"], sshd.id);
    let none = call(
        &api,
        &api.analyst,
        Method::GET,
        "/api/v1/alerts?observable=67.205.184",
        None,
    )
    .await;
    assert_eq!(expect(&none, StatusCode::OK)["items"], json!([]));
}

#[tokio::test]
async fn tasks_comments_and_changes_make_the_timeline() {
    let api = api().await;
    let cookie = api.alert("cookie").id.clone();
    let case_id = api
        .store
        .get_alert(&cookie)
        .await
        .unwrap()
        .unwrap()
        .case_id
        .unwrap();
    let tasks = format!("/api/v1/cases/{case_id}/tasks");

    let created = call(
        &api,
        &api.analyst,
        Method::POST,
        &tasks,
        Some(json!({"title": "Pull the proxy logs", "assignee": "dave"})),
    )
    .await;
    let task = expect(&created, StatusCode::CREATED).clone();
    assert_eq!(task["status"], "open");
    assert_eq!(task["assignee"], "dave");
    let task_uri = format!("{tasks}/{}", task["id"]);
    let started = call(
        &api,
        &api.analyst,
        Method::PATCH,
        &task_uri,
        Some(json!({"status": "in_progress"})),
    )
    .await;
    assert_eq!(expect(&started, StatusCode::OK)["status"], "in_progress");
    let done = call(
        &api,
        &api.analyst,
        Method::PATCH,
        &task_uri,
        Some(json!({"status": "done", "assignee": ""})),
    )
    .await;
    let done = expect(&done, StatusCode::OK);
    assert_eq!(done["status"], "done");
    assert_eq!(done["assignee"], Value::Null);
    let listed = call(&api, &api.analyst, Method::GET, &tasks, None).await;
    assert_eq!(expect(&listed, StatusCode::OK).as_array().unwrap().len(), 1);

    let bad = call(
        &api,
        &api.analyst,
        Method::PATCH,
        &task_uri,
        Some(json!({"status": "closed"})),
    )
    .await;
    expect_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let other_case = format!("/api/v1/cases/{}/tasks/{}", case_id + 1, task["id"]);
    let wrong = call(
        &api,
        &api.analyst,
        Method::PATCH,
        &other_case,
        Some(json!({"status": "open"})),
    )
    .await;
    expect_error(&wrong, StatusCode::NOT_FOUND, "not_found");

    let comments = format!("/api/v1/cases/{case_id}/comments");
    let text = json!({"text": "Beacon every 5 minutes to 67.205.184.237"});
    let comment = call(&api, &api.analyst, Method::POST, &comments, Some(text)).await;
    assert_eq!(expect(&comment, StatusCode::CREATED)["kind"], "comment");
    let blank = call(
        &api,
        &api.analyst,
        Method::POST,
        &comments,
        Some(json!({"text": " "})),
    )
    .await;
    expect_error(&blank, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");

    let patch = json!({"severity": "critical", "tags": ["icedid"]});
    let uri = format!("/api/v1/cases/{case_id}");
    expect(
        &call(&api, &api.analyst, Method::PATCH, &uri, Some(patch)).await,
        StatusCode::OK,
    );

    let timeline = format!("/api/v1/cases/{case_id}/timeline");
    let answer = call(&api, &api.auditor, Method::GET, &timeline, None).await;
    let entries = expect(&answer, StatusCode::OK).as_array().unwrap().clone();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "task_created",
            "task_updated",
            "task_updated",
            "comment",
            "updated"
        ]
    );
    assert_eq!(entries[0]["actor"], "system:kastell");
    assert_eq!(entries[0]["details"]["alert_id"], cookie);
    assert_eq!(
        entries[3]["details"]["fields"]["status"],
        json!({"from": "in_progress", "to": "done"})
    );
    assert_eq!(
        entries[4]["details"]["text"],
        "Beacon every 5 minutes to 67.205.184.237"
    );
    assert_eq!(entries[4]["actor"], "apikey:analyst-1");
    let fields = &entries[5]["details"]["fields"];
    assert_eq!(
        fields["severity"],
        json!({"from": "high", "to": "critical"})
    );
    assert_eq!(fields["tags"], json!({"from": [], "to": ["icedid"]}));
    assert!(fields.get("title").is_none());

    let page = format!("{timeline}?after={}&limit=2", entries[1]["id"]);
    let answer = call(&api, &api.auditor, Method::GET, &page, None).await;
    let paged = expect(&answer, StatusCode::OK).as_array().unwrap().clone();
    assert_eq!(paged, entries[2..4]);

    let actions = audit_actions(&api).await;
    for action in ["task.create", "task.update", "case.comment", "case.update"] {
        assert!(
            actions.contains(&action.to_owned()),
            "{action} missing from {actions:?}"
        );
    }
    chain_intact(&api).await;
}

#[tokio::test]
async fn figures_measure_detection_acknowledgement_and_resolution_by_severity() {
    let api = api().await;
    let cookie = api.alert("cookie").clone();
    let uri = format!("/api/v1/alerts/{}/acknowledge", cookie.id);
    expect(
        &call(&api, &api.analyst, Method::POST, &uri, None).await,
        StatusCode::OK,
    );
    let case_id = api
        .store
        .get_alert(&cookie.id)
        .await
        .unwrap()
        .unwrap()
        .case_id
        .unwrap();
    let close = json!({"resolution": "true_positive", "summary": "C2 blocked"});
    let uri = format!("/api/v1/cases/{case_id}/close");
    expect(
        &call(&api, &api.lead, Method::POST, &uri, Some(close)).await,
        StatusCode::OK,
    );

    // The fixtures' alerts were all detected at 2024-06-01T00:00:00Z; cases close now.
    let uri = "/api/v1/figures?from=2024-05-01T00:00:00Z&to=2100-01-01T00:00:00Z";
    let answer = call(&api, &api.analyst, Method::GET, uri, None).await;
    let figures = expect(&answer, StatusCode::OK);
    let by_severity = figures["by_severity"].as_array().unwrap();
    let severities: Vec<&str> = by_severity
        .iter()
        .map(|f| f["severity"].as_str().unwrap())
        .collect();
    assert_eq!(severities, ["low", "high"]);
    let high = &by_severity[1];
    // cookie, m4 (tr0llope) and sshd (Wazuh) are high.
    assert_eq!(high["alerts"], 3);
    let expected: f64 = api
        .alerts
        .iter()
        .filter(|(_, a)| a.rule.level == kastell_core::Level::High)
        .map(|(_, a)| (a.detected_at - a.timestamp).num_milliseconds() as f64 / 1000.0)
        .sum::<f64>()
        / 3.0;
    let measured = high["mean_time_to_detect"].as_f64().unwrap();
    assert!(
        (measured - expected).abs() < 0.01,
        "{measured} != {expected}"
    );
    assert_eq!(high["acknowledged"], 1);
    assert!(high["mean_time_to_acknowledge"].as_f64().unwrap() > 0.0);
    assert_eq!(high["resolved"], 1);
    assert!(high["mean_time_to_resolve"].as_f64().unwrap() >= 0.0);
    let low = &by_severity[0];
    assert_eq!(low["acknowledged"], 0);
    assert_eq!(low["mean_time_to_acknowledge"], Value::Null);
    assert_eq!(low["resolved"], 0);

    let empty = "/api/v1/figures?from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z";
    let answer = call(&api, &api.analyst, Method::GET, empty, None).await;
    assert_eq!(expect(&answer, StatusCode::OK)["by_severity"], json!([]));
    for bad in [
        "/api/v1/figures?from=2024-05-01T00:00:00Z",
        "/api/v1/figures?from=2024-06-01T00:00:00Z&to=2024-05-01T00:00:00Z",
        "/api/v1/figures?from=yesterday&to=2024-05-01T00:00:00Z",
    ] {
        let answer = call(&api, &api.analyst, Method::GET, bad, None).await;
        expect_error(&answer, StatusCode::BAD_REQUEST, "invalid_query");
    }
}

#[tokio::test]
async fn search_finds_cases_and_observables_within_the_tlp_ceiling() {
    let api = api().await;
    let found = call(
        &api,
        &api.analyst,
        Method::GET,
        "/api/v1/search?q=icedid",
        None,
    )
    .await;
    let found = expect(&found, StatusCode::OK);
    let titles: Vec<&str> = found["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles.len(), 2, "{titles:?}");
    assert!(titles.iter().all(|t| t.contains("IcedID")));

    let found = call(
        &api,
        &api.analyst,
        Method::GET,
        "/api/v1/search?q=67.205.184",
        None,
    )
    .await;
    let observables = expect(&found, StatusCode::OK)["observables"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!observables.is_empty());
    assert!(observables.iter().all(|o| o["value"] == "67.205.184.237"));

    // A RED case is not found by an AMBER analyst, but is by the RED lead.
    let case_id = observables[0]["case_id"].as_i64().unwrap();
    let red = json!({"tlp": "red"});
    let uri = format!("/api/v1/cases/{case_id}");
    expect(
        &call(&api, &api.lead, Method::PATCH, &uri, Some(red)).await,
        StatusCode::OK,
    );
    let found = call(
        &api,
        &api.analyst,
        Method::GET,
        "/api/v1/search?q=67.205.184",
        None,
    )
    .await;
    let hidden = expect(&found, StatusCode::OK)["observables"]
        .as_array()
        .unwrap()
        .len();
    let found = call(
        &api,
        &api.lead,
        Method::GET,
        "/api/v1/search?q=67.205.184",
        None,
    )
    .await;
    let shown = expect(&found, StatusCode::OK)["observables"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(hidden + 1, shown);
    let uri = format!("/api/v1/cases/{case_id}/timeline");
    let answer = call(&api, &api.analyst, Method::GET, &uri, None).await;
    expect_error(&answer, StatusCode::NOT_FOUND, "not_found");

    // LIKE wildcards are plain characters.
    let found = call(
        &api,
        &api.analyst,
        Method::GET,
        "/api/v1/search?q=%25%25",
        None,
    )
    .await;
    assert_eq!(expect(&found, StatusCode::OK)["cases"], json!([]));
    let short = call(&api, &api.analyst, Method::GET, "/api/v1/search?q=a", None).await;
    expect_error(&short, StatusCode::BAD_REQUEST, "invalid_query");
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_refused_with_413() {
    let api = api().await;
    let huge = json!({"title": "x", "description": "a".repeat(1024 * 1024)});
    let answer = call(&api, &api.lead, Method::POST, "/api/v1/cases", Some(huge)).await;
    let message = expect_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert!(message.contains("1048576"), "{message}");
    let huge = json!({"comment": "a".repeat(1024 * 1024)});
    let answer = call(
        &api,
        &api.lead,
        Method::POST,
        "/api/v1/actions/1/approve",
        Some(huge),
    )
    .await;
    expect_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

#[tokio::test]
async fn every_new_route_is_in_the_openapi_document() {
    let document = serde_json::to_value(kastell_cases::openapi()).unwrap();
    let paths = document["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/cases", "post"),
        ("/api/v1/alerts/{id}/promote", "post"),
        ("/api/v1/alerts/{id}/merge", "post"),
        ("/api/v1/cases/{id}/observables", "get"),
        ("/api/v1/cases/{id}/observables", "post"),
        ("/api/v1/cases/{id}/tasks", "get"),
        ("/api/v1/cases/{id}/tasks", "post"),
        ("/api/v1/cases/{id}/tasks/{task_id}", "patch"),
        ("/api/v1/cases/{id}/timeline", "get"),
        ("/api/v1/cases/{id}/comments", "post"),
        ("/api/v1/figures", "get"),
        ("/api/v1/search", "get"),
        ("/api/v1/alert", "post"),
        ("/api/v1/alert/{id}", "get"),
        ("/api/v1/alert/{id}/case", "post"),
        ("/api/v1/alert/{id}/merge/{case_id}", "post"),
        ("/api/v1/alert/{id}/observable", "post"),
        ("/api/v1/case", "post"),
        ("/api/v1/case/{id}", "get"),
        ("/api/v1/case/{id}", "patch"),
        ("/api/v1/case/{id}/observable", "post"),
        ("/api/v1/case/{id}/task", "post"),
        ("/api/v1/case/{id}/comment", "post"),
        ("/api/v1/query", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not documented"
        );
    }
    let alerts = &paths["/api/v1/alerts"]["get"]["parameters"];
    assert!(alerts
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "observable"));
}
