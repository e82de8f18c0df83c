//! The HTTP API over a SQLite store filled with real Suricata and Wazuh alerts: every
//! endpoint, its filters and paging, the error shape of every failure, approvals reaching
//! the bus, the metrics, and the OpenAPI document covering every served route.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use kastell_cases::api::model;
use kastell_cases::auth::Role;
use kastell_cases::{router, ApiState, CaseSettings, Grouper, Metrics};
use kastell_core::store::{AlertFilter, CaseRecord, NewAction};
use kastell_core::Tlp;
use kastell_core::{Alert, Bus, CaseEvent, CaseStore, InProcessBus, Subscription, Topic};
use serde_json::{json, Value};
use support::{api_key, eve_alert, sqlite_store, wazuh_sshd_alert, FailingStore, TR0LLOPE};
use tower::ServiceExt;

struct Api {
    /// The API as the lead `lead-1` (cleared to RED) calls it, unless a request names
    /// its own credentials.
    router: Router,
    /// The key of `responder-1` (AMBER).
    responder: String,
    store: Arc<dyn CaseStore>,
    case_events: Box<dyn Subscription>,
    metrics: Metrics,
    /// By name: `m4` (line 16), `cookie` (17), `ca1`..`ca4` (29, 165, 119, 265),
    /// `ca_other` (22), `sshd` (Wazuh).
    alerts: Vec<(&'static str, Alert)>,
    cases: Vec<CaseRecord>,
    /// The pending `block-c2` action and the approval-free `notify` action of the cookie
    /// case.
    pending: i64,
    approved: i64,
    _dir: tempfile::TempDir,
}

impl Api {
    fn alert(&self, name: &str) -> &Alert {
        &self.alerts.iter().find(|(n, _)| *n == name).unwrap().1
    }

    fn case_of(&self, name: &str) -> i64 {
        let alert = self.alert(name);
        let key = kastell_cases::group_key(alert);
        self.cases.iter().find(|c| c.group_key == key).unwrap().id
    }
}

/// The router over real alerts filed the way the stage files them, with two actions the
/// respond stage would have recorded for the IcedID cookie alert.
async fn api() -> Api {
    let (dir, store) = sqlite_store().await;
    // tr0llope lines 16 and 17: IcedID C2 requests of 172.16.0.153 (severity 1, high);
    // 29, 165, 119, 265: the OpenSSL demo certificate of 66.63.168.75 (severity 3, low);
    // 22: the same certificate on 138.68.255.102. Wazuh line 1: sshd brute force (high).
    let alerts = vec![
        ("m4", eve_alert(TR0LLOPE, 16, 2030053)),
        ("cookie", eve_alert(TR0LLOPE, 17, 2032086)),
        ("ca1", eve_alert(TR0LLOPE, 29, 2011540)),
        ("ca2", eve_alert(TR0LLOPE, 165, 2011540)),
        ("ca3", eve_alert(TR0LLOPE, 119, 2011540)),
        ("ca4", eve_alert(TR0LLOPE, 265, 2011540)),
        ("ca_other", eve_alert(TR0LLOPE, 22, 2011540)),
        ("sshd", wazuh_sshd_alert()),
    ];
    let grouper = Grouper::new(Arc::clone(&store), CaseSettings::default().grouping_window);
    for (_, alert) in &alerts {
        grouper.file(alert).await.unwrap();
    }
    let cases = store.list_cases(&Default::default()).await.unwrap();
    assert_eq!(cases.len(), 5);

    let cookie = &alerts[1].1;
    let cookie_case = cases
        .iter()
        .find(|c| c.rule_id == "suricata-2032086")
        .unwrap()
        .id;
    let action = |step: &str, approval_required| NewAction {
        case_id: cookie_case,
        alert_id: cookie.id.clone(),
        playbook: "soc/icedid-containment".into(),
        step: step.into(),
        step_type: "webhook".into(),
        approval_required,
        params: json!({ "url": "http://127.0.0.1:9/block", "ip": "67.205.184.237" }),
    };
    let (pending, _) = store
        .create_action(&action("block-c2", true))
        .await
        .unwrap();
    let (approved, _) = store.create_action(&action("notify", false)).await.unwrap();

    let bus = Arc::new(InProcessBus::new(64));
    let case_events = bus.subscribe(Topic::CaseEvents, "respond").await.unwrap();
    let metrics = Metrics::new().unwrap();
    let state = ApiState::new(Arc::clone(&store), bus, metrics.clone());
    let lead = api_key(&store, "lead-1", Role::Lead, Tlp::Red).await;
    let responder = api_key(&store, "responder-1", Role::Responder, Tlp::Amber).await;
    Api {
        router: as_caller(router(state), &lead),
        responder,
        store,
        case_events,
        metrics,
        alerts,
        cases,
        pending: pending.id,
        approved: approved.id,
        _dir: dir,
    }
}

/// The router with `key` sent on every request that sends no credentials itself.
fn as_caller(router: Router, key: &str) -> Router {
    let value = header::HeaderValue::from_str(&format!("Bearer {key}")).unwrap();
    router.layer(axum::middleware::map_request(
        move |mut request: Request<Body>| {
            let value = value.clone();
            async move {
                let headers = request.headers_mut();
                if !headers.contains_key(header::AUTHORIZATION) {
                    headers.insert(header::AUTHORIZATION, value);
                }
                request
            }
        },
    ))
}

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
    text: String,
}

async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = body
        .map(|b| Body::from(b.to_owned()))
        .unwrap_or_else(Body::empty);
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        content_type,
        body,
        text,
    }
}

async fn get(router: &Router, uri: &str) -> Answer {
    call(router, Method::GET, uri, &[], None).await
}

async fn post_json(router: &Router, uri: &str, body: &str) -> Answer {
    let json = [("content-type", "application/json")];
    call(router, Method::POST, uri, &json, Some(body)).await
}

/// The answer is the API's error shape with this status and code; returns the message.
fn error(answer: &Answer, status: StatusCode, code: &str) -> String {
    assert_eq!(answer.status, status, "{}", answer.text);
    assert_eq!(answer.content_type, "application/json", "{}", answer.text);
    let object = answer.body.as_object().expect("an error is a JSON object");
    let keys: Vec<_> = object.keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["error", "message"], "{}", answer.text);
    assert_eq!(object["error"], code, "{}", answer.text);
    let message = object["message"].as_str().unwrap().to_owned();
    assert!(!message.is_empty());
    message
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| match &item["id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

async fn next_case_event(api: &mut Api) -> Option<CaseEvent> {
    let delivery = tokio::time::timeout(Duration::from_millis(200), api.case_events.next())
        .await
        .ok()??;
    Some(delivery.message.decode().unwrap())
}

#[tokio::test]
async fn alerts_are_listed_oldest_first_in_pages() {
    let api = api().await;
    let all = get(&api.router, "/api/v1/alerts").await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.body["limit"], 100);
    assert_eq!(all.body["offset"], 0);
    let all_ids = ids(&all.body);
    assert_eq!(all_ids.len(), 8);
    // The Wazuh alert (2022-05-11) is oldest; the IcedID pair (15:47:28) is next.
    assert_eq!(all_ids[0], api.alert("sshd").id);
    let times: Vec<&str> = all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["timestamp"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    let first = get(&api.router, "/api/v1/alerts?limit=3").await;
    let second = get(&api.router, "/api/v1/alerts?limit=3&offset=3").await;
    let rest = get(&api.router, "/api/v1/alerts?limit=3&offset=6").await;
    assert_eq!(first.body["limit"], 3);
    assert_eq!(second.body["offset"], 3);
    let paged: Vec<String> = [&first, &second, &rest]
        .iter()
        .flat_map(|a| ids(&a.body))
        .collect();
    assert_eq!(paged, all_ids);
    assert_eq!(
        ids(&get(&api.router, "/api/v1/alerts?offset=8").await.body).len(),
        0
    );
}

#[tokio::test]
async fn an_alert_reads_back_with_its_case_and_event() {
    let api = api().await;
    let alert = api.alert("cookie");
    let answer = get(&api.router, &format!("/api/v1/alerts/{}", alert.id)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = &answer.body;
    assert_eq!(body["id"], alert.id.as_str());
    assert_eq!(body["case_id"], api.case_of("cookie"));
    assert_eq!(body["status"], "new");
    assert_eq!(body["rule"]["id"], "suricata-2032086");
    assert_eq!(
        body["rule"]["title"],
        "ET MALWARE Win32/IcedID Request Cookie"
    );
    assert_eq!(body["rule"]["level"], "high");
    assert_eq!(body["host"], "172.16.0.153");
    assert_eq!(body["sensor"], "suricata");
    assert_eq!(body["timestamp"], "2022-10-31T14:47:28.168061Z");
    assert_eq!(body["events"][0]["destination"]["ip"], "67.205.184.237");
    assert_eq!(body["events"][0]["url"]["domain"], "vgiragdoffy.com");

    let missing = get(&api.router, "/api/v1/alerts/0123456789abcdef").await;
    let message = error(&missing, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(message, "alert 0123456789abcdef not found");
}

#[tokio::test]
async fn alerts_filter_by_level_rule_case_and_time() {
    let api = api().await;
    let names = |answer: &Answer| -> BTreeSet<&'static str> {
        ids(&answer.body)
            .iter()
            .map(|id| api.alerts.iter().find(|(_, a)| &a.id == id).unwrap().0)
            .collect()
    };

    let high = get(&api.router, "/api/v1/alerts?level=high").await;
    assert_eq!(names(&high), BTreeSet::from(["m4", "cookie", "sshd"]));
    let low = get(&api.router, "/api/v1/alerts?level=low").await;
    assert_eq!(
        ids(&low.body).len(),
        8,
        "low is the minimum, not the exact level"
    );
    let critical = get(&api.router, "/api/v1/alerts?level=critical").await;
    assert!(ids(&critical.body).is_empty());

    let rule = get(&api.router, "/api/v1/alerts?rule=suricata-2011540").await;
    assert_eq!(
        names(&rule),
        BTreeSet::from(["ca1", "ca2", "ca3", "ca4", "ca_other"])
    );

    let case = api.case_of("ca1");
    let of_case = get(&api.router, &format!("/api/v1/alerts?case={case}")).await;
    assert_eq!(
        names(&of_case),
        BTreeSet::from(["ca1", "ca2", "ca3", "ca4"])
    );

    // 15:48:32+01:00 (ca1) up to, not including, 15:58:32+01:00 (ca3).
    let window = get(
        &api.router,
        "/api/v1/alerts?since=2022-10-31T14:48:32.380722Z&until=2022-10-31T14:58:32.699219Z",
    )
    .await;
    assert_eq!(names(&window), BTreeSet::from(["ca1", "ca2"]));
    // An offset written as %2B is the same instant.
    let offset = get(
        &api.router,
        "/api/v1/alerts?since=2022-10-31T15:48:32.380722%2B01:00&until=2022-10-31T14:58:32.699219Z",
    )
    .await;
    assert_eq!(names(&offset), BTreeSet::from(["ca1", "ca2"]));

    let combined = get(
        &api.router,
        "/api/v1/alerts?level=high&since=2022-10-01T00:00:00Z&rule=suricata-2030053",
    )
    .await;
    assert_eq!(names(&combined), BTreeSet::from(["m4"]));
}

#[tokio::test]
async fn bad_alert_queries_answer_400_with_a_reason() {
    let api = api().await;
    let cases = [
        ("level=severe", "unknown variant `severe`"),
        ("limit=0", "limit must be between 1 and 1000, got 0"),
        ("limit=1001", "limit must be between 1 and 1000, got 1001"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("case=abc", "case"),
        ("since=yesterday", "since"),
        // An unescaped `+` in a query string is a space.
        ("since=2022-10-31T15:48:32+01:00", "since"),
        ("levle=high", "unknown field `levle`"),
        (
            "since=2022-10-31T15:00:00Z&until=2022-10-31T14:00:00Z",
            "must be before until",
        ),
    ];
    for (query, expected) in cases {
        let answer = get(&api.router, &format!("/api/v1/alerts?{query}")).await;
        let message = error(&answer, StatusCode::BAD_REQUEST, "invalid_query");
        assert!(message.contains(expected), "{query}: {message}");
    }
}

#[tokio::test]
async fn cases_list_and_read_with_their_alerts_and_actions() {
    let api = api().await;
    let all = get(&api.router, "/api/v1/cases").await;
    assert_eq!(all.status, StatusCode::OK);
    let items = all.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    let demo = items
        .iter()
        .find(|c| c["group_key"] == "suricata-2011540|66.63.168.75")
        .unwrap();
    assert_eq!(
        demo["title"],
        "ET POLICY OpenSSL Demo CA - Internet Widgits Pty (O) on 66.63.168.75"
    );
    assert_eq!(demo["alert_count"], 4);
    assert_eq!(demo["severity"], "low");
    assert_eq!(demo["status"], "open");
    assert_eq!(demo["first_seen"], "2022-10-31T14:48:32.380722Z");
    assert_eq!(demo["last_seen"], "2022-10-31T15:03:33.785052Z");

    let open = get(&api.router, "/api/v1/cases?status=open").await;
    assert_eq!(ids(&open.body).len(), 5);
    let closed = get(&api.router, "/api/v1/cases?status=closed").await;
    assert!(ids(&closed.body).is_empty());
    let page = get(&api.router, "/api/v1/cases?limit=2&offset=4").await;
    assert_eq!(ids(&page.body), ids(&all.body)[4..].to_vec());
    let bad = get(&api.router, "/api/v1/cases?status=pending").await;
    error(&bad, StatusCode::BAD_REQUEST, "invalid_query");

    let cookie_case = api.case_of("cookie");
    let detail = get(&api.router, &format!("/api/v1/cases/{cookie_case}")).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert_eq!(detail.body["id"], cookie_case);
    assert_eq!(
        detail.body["title"],
        "ET MALWARE Win32/IcedID Request Cookie on 172.16.0.153"
    );
    let alerts = detail.body["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["id"], api.alert("cookie").id.as_str());
    let actions = detail.body["actions"].as_array().unwrap();
    let steps: Vec<_> = actions
        .iter()
        .map(|a| (a["step"].clone(), a["status"].clone()))
        .collect();
    assert_eq!(
        steps,
        vec![
            (json!("block-c2"), json!("pending")),
            (json!("notify"), json!("approved"))
        ]
    );

    let demo_case = api.case_of("ca1");
    let detail = get(&api.router, &format!("/api/v1/cases/{demo_case}")).await;
    assert_eq!(detail.body["alerts"].as_array().unwrap().len(), 4);
    assert!(detail.body["actions"].as_array().unwrap().is_empty());
    // The case read copies each stored event out as it is; it answers what the alert read,
    // which builds the whole alert, answers.
    for alert in detail.body["alerts"].as_array().unwrap() {
        let id = alert["id"].as_str().unwrap();
        let one = get(&api.router, &format!("/api/v1/alerts/{id}")).await;
        assert_eq!(one.status, StatusCode::OK);
        assert_eq!(&one.body, alert);
    }
    // `events=false` answers the same case and alerts, each with its events left out.
    let light = get(
        &api.router,
        &format!("/api/v1/cases/{demo_case}?events=false"),
    )
    .await;
    assert_eq!(light.status, StatusCode::OK, "{}", light.text);
    let mut expected = detail.body.clone();
    for alert in expected["alerts"].as_array_mut().unwrap() {
        assert!(!alert["events"].as_array().unwrap().is_empty());
        alert["events"] = json!([]);
    }
    assert_eq!(light.body, expected);
    assert!(light.text.len() < detail.text.len());
    let full = get(
        &api.router,
        &format!("/api/v1/cases/{demo_case}?events=true"),
    )
    .await;
    assert_eq!(full.body, detail.body);
    let bad = get(
        &api.router,
        &format!("/api/v1/cases/{demo_case}?events=some"),
    )
    .await;
    error(&bad, StatusCode::BAD_REQUEST, "invalid_query");
    let unknown = get(&api.router, &format!("/api/v1/cases/{demo_case}?limit=1")).await;
    error(&unknown, StatusCode::BAD_REQUEST, "invalid_query");

    let missing = get(&api.router, "/api/v1/cases/999").await;
    assert_eq!(
        error(&missing, StatusCode::NOT_FOUND, "not_found"),
        "case 999 not found"
    );
    let not_a_number = get(&api.router, "/api/v1/cases/first").await;
    error(&not_a_number, StatusCode::BAD_REQUEST, "invalid_path");
}

#[tokio::test]
async fn actions_list_by_status_and_case() {
    let api = api().await;
    let cookie_case = api.case_of("cookie");
    let pending = get(
        &api.router,
        &format!("/api/v1/actions?status=pending&case={cookie_case}"),
    )
    .await;
    assert_eq!(pending.status, StatusCode::OK);
    assert_eq!(ids(&pending.body), vec![api.pending.to_string()]);
    let item = &pending.body["items"][0];
    assert_eq!(item["playbook"], "soc/icedid-containment");
    assert_eq!(item["approval_required"], true);
    assert_eq!(item["params"]["ip"], "67.205.184.237");
    assert_eq!(item["alert_id"], api.alert("cookie").id.as_str());

    let all = get(&api.router, "/api/v1/actions").await;
    assert_eq!(
        ids(&all.body),
        vec![api.pending.to_string(), api.approved.to_string()]
    );
    let second = get(&api.router, "/api/v1/actions?limit=1&offset=1").await;
    assert_eq!(ids(&second.body), vec![api.approved.to_string()]);
    let other_case = get(
        &api.router,
        &format!("/api/v1/actions?case={}", api.case_of("m4")),
    )
    .await;
    assert!(ids(&other_case.body).is_empty());

    let one = get(&api.router, &format!("/api/v1/actions/{}", api.pending)).await;
    assert_eq!(one.body["step"], "block-c2");
    assert_eq!(one.body["status"], "pending");
    error(
        &get(&api.router, "/api/v1/actions/424242").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    error(
        &get(&api.router, "/api/v1/actions?status=done").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
}

#[tokio::test]
async fn approving_records_the_actor_and_tells_the_respond_stage() {
    let mut api = api().await;
    let uri = format!("/api/v1/actions/{}/approve", api.pending);
    let headers = [("content-type", "application/json")];
    let body = r#"{"comment": "C2 confirmed in the pcap"}"#;
    let answer = call(&api.router, Method::POST, &uri, &headers, Some(body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["status"], "approved");
    assert_eq!(answer.body["decided_by"], "apikey:lead-1");
    assert_eq!(
        next_case_event(&mut api).await,
        Some(CaseEvent::ActionApproved {
            action_id: api.pending
        })
    );
    let stored = api.store.get_action(api.pending).await.unwrap().unwrap();
    assert_eq!(stored.decided_by.as_deref(), Some("apikey:lead-1"));
    let audit = api.store.audit_entries(0, 1000).await.unwrap();
    let decided = audit.last().unwrap();
    assert_eq!(decided.action, "action.decide");
    assert_eq!(decided.actor, "apikey:lead-1");
    assert_eq!(decided.object_id, api.pending.to_string());
    assert_eq!(decided.before.as_ref().unwrap()["status"], "pending");
    assert_eq!(decided.after.as_ref().unwrap()["status"], "approved");

    // A second decision conflicts, says why, and announces nothing.
    let again = call(&api.router, Method::POST, &uri, &[], None).await;
    let message = error(&again, StatusCode::CONFLICT, "not_pending");
    assert!(message.contains("is approved"), "{message}");
    let reject = post_json(
        &api.router,
        &format!("/api/v1/actions/{}/reject", api.pending),
        r#"{"reason": "too late"}"#,
    )
    .await;
    error(&reject, StatusCode::CONFLICT, "not_pending");
    assert_eq!(next_case_event(&mut api).await, None);
}

#[tokio::test]
async fn a_bare_approval_is_made_by_the_key() {
    let mut api = api().await;
    let uri = format!("/api/v1/actions/{}/approve", api.pending);
    // curl -X POST with `-H 'Content-Type: application/json'` and no body.
    let headers = [("content-type", "application/json")];
    let answer = call(&api.router, Method::POST, &uri, &headers, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["decided_by"], "apikey:lead-1");
    assert!(matches!(
        next_case_event(&mut api).await,
        Some(CaseEvent::ActionApproved { .. })
    ));
}

#[tokio::test]
async fn bad_approvals_are_refused_before_deciding() {
    let mut api = api().await;
    let uri = format!("/api/v1/actions/{}/approve", api.pending);
    error(
        &post_json(&api.router, &uri, "{comment}").await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    );
    error(
        &post_json(&api.router, &uri, r#"{"comment": 7}"#).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    error(
        &post_json(&api.router, &uri, r#"{"note": "x"}"#).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    // serde would read an array positionally into the body's fields.
    for (body, kind) in [
        ("[]", "an array"),
        (r#"["x"]"#, "an array"),
        ("\"x\"", "a string"),
    ] {
        let message = error(
            &post_json(&api.router, &uri, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        );
        assert_eq!(
            message,
            format!("the body must be a JSON object, not {kind}")
        );
    }
    let form = [("content-type", "application/x-www-form-urlencoded")];
    error(
        &call(&api.router, Method::POST, &uri, &form, Some("comment=x")).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    // A compressed body is named as such, not reported as malformed JSON.
    let gzipped = [
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ];
    let message = error(
        &call(
            &api.router,
            Method::POST,
            &uri,
            &gzipped,
            Some("\u{1f}\u{8b}x"),
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    assert_eq!(
        message,
        "the API reads request bodies uncompressed; send no Content-Encoding (got \"gzip\")"
    );
    error(
        &post_json(&api.router, "/api/v1/actions/424242/approve", "{}").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    error(
        &post_json(&api.router, "/api/v1/actions/one/approve", "{}").await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
    );
    let action = api.store.get_action(api.pending).await.unwrap().unwrap();
    assert_eq!(action.status.as_str(), "pending");
    assert_eq!(next_case_event(&mut api).await, None);
}

#[tokio::test]
async fn rejecting_needs_a_reason_and_announces_the_rejection() {
    let mut api = api().await;
    let uri = format!("/api/v1/actions/{}/reject", api.pending);
    let blank = post_json(&api.router, &uri, r#"{"reason": "   "}"#).await;
    assert_eq!(
        error(&blank, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        "reason must not be blank"
    );
    let missing = post_json(&api.router, &uri, "{}").await;
    let message = error(&missing, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    assert!(message.contains("missing field `reason`"), "{message}");
    let no_body = call(&api.router, Method::POST, &uri, &[], None).await;
    error(
        &no_body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let long = format!(r#"{{"reason": "{}"}}"#, "x".repeat(4097));
    error(
        &post_json(&api.router, &uri, &long).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );

    let bearer = format!("Bearer {}", api.responder);
    let headers = [
        ("content-type", "application/json"),
        ("authorization", bearer.as_str()),
    ];
    let body = r#"{"reason": "67.205.184.237 is the customer's proxy"}"#;
    let answer = call(&api.router, Method::POST, &uri, &headers, Some(body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["status"], "rejected");
    assert_eq!(
        answer.body["reason"],
        "67.205.184.237 is the customer's proxy"
    );
    assert_eq!(answer.body["decided_by"], "apikey:responder-1");
    // Only counted by the respond stage: a rejected action never runs either way.
    assert_eq!(
        next_case_event(&mut api).await,
        Some(CaseEvent::ActionRejected {
            action_id: api.pending
        })
    );
    assert_eq!(next_case_event(&mut api).await, None);

    // The approval-free action was never pending.
    let approved = post_json(
        &api.router,
        &format!("/api/v1/actions/{}/reject", api.approved),
        r#"{"reason": "no"}"#,
    )
    .await;
    let message = error(&approved, StatusCode::CONFLICT, "not_pending");
    assert!(message.contains("is approved"), "{message}");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let api = api().await;
    let answer = get(&api.router, "/api/v1/incidents").await;
    assert_eq!(
        error(&answer, StatusCode::NOT_FOUND, "not_found"),
        "no route for GET /api/v1/incidents"
    );
    let answer = call(&api.router, Method::DELETE, "/api/v1/cases/1", &[], None).await;
    error(
        &answer,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let answer = call(
        &api.router,
        Method::GET,
        "/api/v1/actions/1/approve",
        &[],
        None,
    )
    .await;
    error(
        &answer,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn a_failing_store_answers_503_but_the_process_is_alive() {
    let (_dir, inner) = sqlite_store().await;
    let key = api_key(&inner, "analyst-1", Role::Analyst, Tlp::Amber).await;
    let store: Arc<dyn CaseStore> = Arc::new(FailingStore {
        inner,
        rule_id: String::new(),
        all: true,
    });
    let bus: Arc<dyn Bus> = Arc::new(InProcessBus::new(4));
    let router = as_caller(
        router(ApiState::new(store, bus, Metrics::new().unwrap())),
        &key,
    );
    let answer = get(&router, "/api/v1/cases").await;
    let message = error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
    );
    assert!(message.contains("test fault"), "{message}");
    error(
        &get(&router, "/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
    );
    let alive = get(&router, "/healthz").await;
    assert_eq!(alive.status, StatusCode::OK);
    assert_eq!(alive.body, json!({ "status": "ok" }));
}

#[tokio::test]
async fn an_approval_the_bus_cannot_carry_is_reported() {
    let api = api().await;
    // A bus whose case-events topic is closed, as after a shutdown.
    let bus = Arc::new(InProcessBus::new(4));
    bus.close(Topic::CaseEvents).await;
    let router = router(ApiState::new(
        Arc::clone(&api.store),
        bus,
        Metrics::new().unwrap(),
    ));
    let bearer = format!("Bearer {}", api.responder);
    let answer = call(
        &router,
        Method::POST,
        &format!("/api/v1/actions/{}/approve", api.pending),
        &[("authorization", bearer.as_str())],
        None,
    )
    .await;
    let message = error(&answer, StatusCode::SERVICE_UNAVAILABLE, "bus_unavailable");
    assert!(message.contains("is approved"), "{message}");
}

#[tokio::test]
async fn health_and_readiness() {
    let api = api().await;
    let ready = get(&api.router, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body, json!({ "status": "ready" }));
    assert_eq!(get(&api.router, "/healthz").await.body["status"], "ok");
}

#[tokio::test]
async fn metrics_count_the_stage_and_the_requests() {
    let api = api().await;
    // The stage, run with the API's counters, files two real alerts into one case.
    let bus = InProcessBus::new(16);
    let subscription = kastell_cases::subscribe_alerts(&bus).await.unwrap();
    for n in [733, 737] {
        let alert = eve_alert(TR0LLOPE, n, 2011540);
        kastell_core::bus::publish_json(&bus, Topic::Alerts, &alert)
            .await
            .unwrap();
    }
    bus.close(Topic::Alerts).await;
    let (_dir, store) = sqlite_store().await;
    kastell_cases::run_cases_on(
        &bus,
        subscription,
        store,
        CaseSettings::default(),
        api.metrics.stage(),
    )
    .await
    .unwrap();

    get(&api.router, "/api/v1/cases/999").await;
    get(&api.router, "/api/v1/cases/998").await;
    get(&api.router, "/api/v1/cases").await;
    get(&api.router, "/nowhere/at/all").await;
    let answer = get(&api.router, "/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.content_type.starts_with("text/plain"),
        "{}",
        answer.content_type
    );
    let text = answer.text;
    for line in [
        "kastell_cases_alerts_stored_total 2",
        "kastell_cases_opened_total 1",
        "kastell_cases_alerts_attached_total 1",
        r#"kastell_cases_api_requests_total{method="GET",route="/api/v1/cases/{id}",status="404"} 2"#,
        r#"kastell_cases_api_requests_total{method="GET",route="/api/v1/cases",status="200"} 1"#,
        r#"kastell_cases_api_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"kastell_cases_api_request_duration_seconds_count{route="/api/v1/cases/{id}"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}

/// Every (path, method) the router serves: the paths from the router's own route table
/// (its `Debug` form, the only listing axum offers), each probed with every method; a
/// method is served unless the answer is 405.
async fn served_routes(router: &Router) -> BTreeSet<(String, String)> {
    let debug = format!("{router:?}");
    // The fallback router's own paths ("/" and a catch-all) are not routes.
    let (_, routes) = debug
        .split_once("path_router:")
        .expect("Router's Debug form");
    let (routes, _) = routes
        .split_once("fallback_router:")
        .expect("Router's Debug form");
    let mut paths = BTreeSet::new();
    for piece in routes.split('"').skip(1).step_by(2) {
        // The analyst web page's files are served beside the API, not part of it.
        let page = piece == kastell_webui::CONFIG_PATH
            || kastell_webui::ASSETS
                .iter()
                .any(|asset| asset.path == piece);
        if piece.starts_with('/') && !piece.contains("__private__") && !page {
            paths.insert(piece.to_owned());
        }
    }
    let mut served = BTreeSet::new();
    for path in &paths {
        let concrete = path.replace("{id}", "1");
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            let answer = call(router, method.clone(), &concrete, &[], None).await;
            if answer.status != StatusCode::METHOD_NOT_ALLOWED {
                served.insert((path.clone(), method.as_str().to_lowercase()));
            }
        }
    }
    served
}

#[tokio::test]
async fn the_openapi_document_describes_every_served_route() {
    let api = api().await;
    let answer = get(&api.router, "/api/openapi.json").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type, "application/json");
    let doc = answer.body;
    assert_eq!(doc["openapi"], "3.1.0");

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((path.clone(), method.clone()));
        }
    }
    let served = served_routes(&api.router).await;
    assert!(
        served.len() >= 12,
        "the route table was not read from the router: {served:?}"
    );
    assert_eq!(served, documented);
    // The page is on the API's own origin.
    for asset in kastell_webui::ASSETS {
        let answer = get(&api.router, asset.path).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", asset.path);
        assert_eq!(answer.content_type, asset.content_type);
    }
    // The probe notices a route added past the OpenAPI router.
    let extended = api.router.clone().route(
        "/api/v1/undocumented",
        axum::routing::delete(|| async { "" }),
    );
    let extra: Vec<_> = served_routes(&extended)
        .await
        .difference(&documented)
        .cloned()
        .collect();
    assert_eq!(
        extra,
        vec![("/api/v1/undocumented".into(), "delete".into())]
    );

    // Every path parameter, and every $ref, resolves.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let text = serde_json::to_string(&doc).unwrap();
    for piece in text.split("\"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for operation in item.as_object().unwrap().values() {
            let params: Vec<&str> = operation["parameters"]
                .as_array()
                .map(|ps| ps.iter().map(|p| p["name"].as_str().unwrap()).collect())
                .unwrap_or_default();
            if path.contains("{id}") {
                assert!(params.contains(&"id"), "{path} does not describe its id");
            }
        }
    }
    let alert_params = &doc["paths"]["/api/v1/alerts"]["get"]["parameters"];
    let names: Vec<&str> = alert_params
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "level",
            "status",
            "rule",
            "case",
            "observable",
            "since",
            "until",
            "limit",
            "offset"
        ]
    );
    assert!(schemas.contains_key("ErrorBody"));
    assert!(schemas.contains_key("CaseDetail"));
}

#[tokio::test]
async fn serve_answers_on_loopback_and_stops_gracefully() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = api().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kastell_cases::serve(listener, api.router.clone(), async {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::new();
    let health: Value = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({ "status": "ok" }));
    let case = api.case_of("sshd");
    let response = client
        .get(format!("http://{addr}/api/v1/cases/{case}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["group_key"], "wazuh-5712|localhost.localdomain");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    assert!(client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .is_err());
}

/// Collects what a fmt subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn each_request_runs_in_a_span_with_method_path_and_status() {
    let api = api().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    // Other tests run on other threads with no subscriber; a callsite first seen there is
    // cached as uninteresting, so the cache is rebuilt for this thread's subscriber.
    tracing::callsite::rebuild_interest_cache();
    get(&api.router, "/api/v1/cases/999").await;
    drop(guard);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("request{method=GET path=/api/v1/cases/999 status=404}"),
        "{text}"
    );
}

#[tokio::test]
async fn an_analyst_raising_severity_or_closing_tells_the_respond_stage() {
    let mut api = api().await;
    let low = api
        .cases
        .iter()
        .find(|case| case.severity < kastell_core::Level::Critical)
        .expect("a case below critical")
        .clone();
    let json = [("content-type", "application/json")];
    let uri = format!("/api/v1/cases/{}", low.id);

    // Lowering (or keeping) the severity announces nothing.
    let same = format!(r#"{{"severity":"{}"}}"#, low.severity.as_str());
    let answer = call(&api.router, Method::PATCH, &uri, &json, Some(&same)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert!(next_case_event(&mut api).await.is_none());

    let answer = call(
        &api.router,
        Method::PATCH,
        &uri,
        &json,
        Some(r#"{"severity":"critical"}"#),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    match next_case_event(&mut api).await {
        Some(CaseEvent::SeverityRaised { case_id, from, to }) => {
            assert_eq!(case_id, low.id);
            assert_eq!(from, low.severity);
            assert_eq!(to, kastell_core::Level::Critical);
        }
        other => panic!("expected severity_raised, got {other:?}"),
    }

    let answer = post_json(
        &api.router,
        &format!("{uri}/close"),
        r#"{"resolution":"false_positive","summary":"lab traffic"}"#,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    match next_case_event(&mut api).await {
        Some(CaseEvent::CaseClosed {
            case_id,
            resolution,
        }) => {
            assert_eq!(case_id, low.id);
            assert_eq!(resolution, "false_positive");
        }
        other => panic!("expected case_closed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stored_alert_answers_byte_for_byte_as_the_built_one() {
    let api = api().await;
    let filter = AlertFilter::default();
    let built = api.store.list_alerts(&filter).await.unwrap();
    let stored = api.store.list_stored_alerts(&filter).await.unwrap();
    assert_eq!(built.len(), api.alerts.len());
    assert_eq!(stored.len(), built.len());
    for (record, stored) in built.into_iter().zip(stored) {
        let expected = serde_json::to_string(&model::Alert::from(record)).unwrap();
        let answer = model::AlertAnswer::try_from(stored).unwrap();
        assert_eq!(serde_json::to_string(&answer).unwrap(), expected);
    }
}
